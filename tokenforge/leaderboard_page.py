"""The leaderboard's HTML page: per modality a sortable table and quality-vs-bytes scatter plots.

One self-contained file (inline CSS, SVG and a few lines of JavaScript; no network asset), so it opens from disk
or any static server. Each table (`tokenforge.leaderboard`'s ``leaderboard.json``) becomes a
``<section id="leaderboard-<modality>">`` with:

- the table: one row per model, a header per column with its protocol as a tooltip; clicking a header sorts the
  rows best first, clicking again reverses; ``page.html#sort=KEY`` sorts on load, ascending (``#sort=-KEY``:
  descending; a key is a column's ``data-key``, e.g. ``psnr_db``). A metric that is unavailable shows
  "unavailable" with the reason as a tooltip, and the reasons are listed under the table;
- one scatter per quality column: x = bytes per item (log scale when the sizes span 10x or more), y = the
  metric, one labelled point per model (``<circle class="point" data-model data-x data-y>``).

    python -m tokenforge.leaderboard_page OUT/leaderboard.json [MORE.json ...] PAGE.html
"""

from __future__ import annotations

import html
import json
import math
import sys
from pathlib import Path
from typing import Any

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
section{border-top:2px solid #ccc;margin-top:24px;padding-top:8px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f2f2f2;cursor:pointer;user-select:none}th.sorted{background:#dde8ff}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.unavailable{color:#a60;font-style:italic}
td.failed{color:#b00}.reasons{font-size:12px;color:#555}.plots{display:flex;flex-wrap:wrap;gap:12px}
svg.scatter{border:1px solid #ddd;background:#fff}svg text{font-size:10px;fill:#333}.note{font-size:12px;color:#555}"""

SCRIPT = """function sortTable(table, key, desc) {
  const heads = [...table.tHead.rows[0].cells];
  const col = heads.findIndex(th => th.dataset.key === key);
  if (col < 0) return;
  const body = table.tBodies[0];
  const value = row => row.cells[col].dataset.value;
  const rows = [...body.rows];
  rows.sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === undefined && y === undefined) {
      const c = a.cells[col].textContent.localeCompare(b.cells[col].textContent);
      return desc ? -c : c;
    }
    if (x === undefined) return 1;
    if (y === undefined) return -1;
    return desc ? Number(y) - Number(x) : Number(x) - Number(y);
  });
  rows.forEach(row => body.appendChild(row));
  heads.forEach(th => th.classList.toggle('sorted', th.dataset.key === key));
  table.dataset.sorted = (desc ? '-' : '') + key;
}
document.querySelectorAll('table.leaderboard').forEach(table => {
  table.tHead.rows[0].querySelectorAll('th').forEach(th => th.addEventListener('click', () => {
    const best = th.dataset.better === 'higher';
    const again = table.dataset.sorted === (best ? '-' : '') + th.dataset.key;
    sortTable(table, th.dataset.key, again ? !best : best);
  }));
});
const wanted = decodeURIComponent(location.hash).match(/^#sort=(-?)(.+)$/);
if (wanted) document.querySelectorAll('table.leaderboard').forEach(t => sortTable(t, wanted[2], wanted[1] === '-'));
"""

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
WIDTH, HEIGHT, MARGIN = 350, 240, (56, 14, 16, 36)  # margins: left, right, top, bottom


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value) else None


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def _cell(value: Any, label: bool = False) -> str:
    """A numeric cell (``data-value`` sorts it), a label, or a reason shown by its first word (tooltip: all)."""
    if label:
        return f"<td>{html.escape(str(value or ''))}</td>"
    number = _number(value)
    if number is not None:
        return f"<td class='num' data-value='{number!r}'>{_fmt(number)}</td>"
    if value is None:
        return "<td></td>"
    text = str(value)
    kind = "failed" if text.startswith("failed") else "unavailable"
    return f"<td class='{kind}' title='{html.escape(text, quote=True)}'>{html.escape(text.split(':', 1)[0])}</td>"


def table_html(table: dict[str, Any]) -> str:
    """The sortable table and the list of reasons for the unavailable cells."""
    unit = table["unit"]
    size = [("image_size", "image side", "side the images were centre-cropped to", "none")] \
        if table["modality"] == "image" else []
    fixed = [("model", "model", "label given on the command line (LABEL=MODEL) or the model argument", "none"),
             ("method", "method", "the model's method (class when no method owns it)", "none"), *size,
             ("codes_per_item", f"codes per {unit}", "token ids (or continuous latent values) per item", "none"),
             ("bits_per_code", "bits per code", "log2(vocabulary), or 16 for a float16 latent value", "none"),
             ("bytes_per_item", f"bytes per {unit}", "codes x bits per code / 8", "lower")]
    heads = [(key, label, tip, better) for key, label, tip, better in fixed]
    heads += [(c["key"], f"{c['label']} {'↑' if c['higher_is_better'] else '↓'}", c["protocol"],
               "higher" if c["higher_is_better"] else "lower") for c in table["columns"]]
    head = "".join(f"<th data-key='{html.escape(k, quote=True)}' data-better='{b}' "
                   f"title='{html.escape(t, quote=True)}'>{html.escape(label)}</th>" for k, label, t, b in heads)
    body, reasons = [], {}
    for r in table["rows"]:
        if "error" in r:
            cells = [_cell(r["model"], True)] + [_cell(f"failed: {r['error']}")] * (len(heads) - 1)
        else:
            cells = [_cell(r["model"], True), _cell(r.get("method") or r.get("class"), True),
                     *[_cell(r.get(k)) for k, *_ in fixed[2:]]]
            for column in table["columns"]:
                value = r["cells"].get(column["key"])
                cells.append(_cell(value))
                if isinstance(value, str):
                    reasons.setdefault(value, []).append(column["label"])
        body.append(f"<tr data-model='{html.escape(r['model'], quote=True)}'>{''.join(cells)}</tr>")
    notes = "".join(f"<li>{html.escape(', '.join(dict.fromkeys(labels)))}: {html.escape(reason)}</li>"
                    for reason, labels in reasons.items())
    return (f"<table class='leaderboard' id='table-{table['modality']}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>" + (f"<ul class='reasons'>{notes}</ul>" if notes else ""))


def _scale(values: list[float], low: float, high: float, log: bool) -> list[float]:
    """Map ``values`` to pixel positions between ``low`` and ``high`` (the middle when they are all equal)."""
    points = [math.log10(v) for v in values] if log else list(values)
    lo, hi = min(points), max(points)
    if hi - lo < 1e-12:
        return [(low + high) / 2] * len(points)
    pad = (hi - lo) * 0.08
    return [low + (p - lo + pad) / (hi - lo + 2 * pad) * (high - low) for p in points]


def scatter(table: dict[str, Any], column: dict[str, Any]) -> str:
    """One quality column against bytes per item as an inline SVG ('' when no model has both numbers)."""
    found = [(i, r["model"], _number(r.get("bytes_per_item")), _number(r["cells"].get(column["key"])))
             for i, r in enumerate(table["rows"]) if "error" not in r]
    found = [(i, m, x, y) for i, m, x, y in found if x is not None and y is not None]
    if not found:
        return ""
    left, right, top, bottom = MARGIN
    xs, ys = [x for _, _, x, _ in found], [y for _, _, _, y in found]
    log = min(xs) > 0 and max(xs) / min(xs) >= 10
    px = _scale(xs, left, WIDTH - right, log)
    py = _scale(ys, HEIGHT - bottom, top, False)
    arrow = "↑ better" if column["higher_is_better"] else "↓ better"
    unit = table["unit"]
    parts = [f"<svg class='scatter' xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
             f"data-key='{html.escape(column['key'], quote=True)}' role='img'>",
             f"<title>{html.escape(column['label'])} vs bytes per {html.escape(unit)}</title>",
             f"<line x1='{left}' y1='{HEIGHT - bottom}' x2='{WIDTH - right}' y2='{HEIGHT - bottom}' stroke='#888'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{HEIGHT - bottom}' stroke='#888'/>",
             f"<text x='{(left + WIDTH - right) / 2}' y='{HEIGHT - 6}' text-anchor='middle'>bytes per "
             f"{html.escape(unit)}{' (log scale)' if log else ''}</text>",
             f"<text x='12' y='{(top + HEIGHT - bottom) / 2}' text-anchor='middle' transform='rotate(-90 12 "
             f"{(top + HEIGHT - bottom) / 2})'>{html.escape(column['label'])} ({arrow})</text>"]
    for value, x in ((min(xs), min(px)), (max(xs), max(px))):
        parts.append(f"<text x='{x:.1f}' y='{HEIGHT - bottom + 12}' text-anchor='middle'>{_fmt(value)}</text>")
    for value, y in ((min(ys), max(py)), (max(ys), min(py))):
        parts.append(f"<text x='{left - 3}' y='{y + 3:.1f}' text-anchor='end'>{_fmt(value)}</text>")
    for (i, model, x, y), cx, cy in zip(found, px, py):
        name = html.escape(model, quote=True)
        parts.append(f"<circle class='point' cx='{cx:.1f}' cy='{cy:.1f}' r='5' fill='{PALETTE[i % len(PALETTE)]}' "
                     f"data-model='{name}' data-x='{x!r}' data-y='{y!r}'><title>{name}: {_fmt(y)} at "
                     f"{_fmt(x)} bytes</title></circle>")
        anchor = "end" if cx > WIDTH * 0.7 else "start"
        parts.append(f"<text x='{cx + (-7 if anchor == 'end' else 7):.1f}' y='{cy - 6:.1f}' text-anchor='{anchor}'>"
                     f"{name}</text>")
    return "".join(parts) + "</svg>"


def section(table: dict[str, Any]) -> str:
    """One modality's section: heading, what was measured, the table and the scatter plots."""
    modality, unit = table["modality"], table["unit"]
    plots = "".join(scatter(table, column) for column in table["columns"])
    first = f", first {table['max_items']} items" if table.get("max_items") else ""
    return (f"<section id='leaderboard-{modality}'><h2>{html.escape(modality)} tokenizers</h2>"
            f"<p class='note'>{len(table['rows'])} model(s) on <code>{html.escape(table['shards'])}</code> (split "
            f"{html.escape(str(table['split']))}{first}"
            f", device {html.escape(str(table.get('device', '')))}). Bytes per {html.escape(unit)} = codes x bits per "
            f"code / 8. Click a header to sort (best first).</p>"
            f"{table_html(table)}<div class='plots'>{plots or '<p>no model has both a size and a score</p>'}</div>"
            "</section>")


def write_page(tables: list[dict[str, Any]], path: str | Path, title: str = "tokenforge leaderboard") -> Path:
    """Write the page of ``tables`` (one section each) to ``path``; return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    toc = " · ".join(f"<a href='#leaderboard-{t['modality']}'>{t['modality']}</a>" for t in tables)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{toc}</p>"
            f"{''.join(section(t) for t in tables)}<script>{SCRIPT}</script></body></html>\n")
    path.write_text(page)
    return path


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m tokenforge.leaderboard_page TABLE.json [MORE.json ...] PAGE.html")
    print(write_page([json.loads(Path(p).read_text()) for p in sys.argv[1:-1]], sys.argv[-1]))
