"""The demo's static HTML report: ``index.html`` next to ``summary.json`` in the demo's output folder.

Per method, a ``<section id="method-NAME">`` with: the config used (inlined YAML), loss curves (PNG drawn with
matplotlib from the fit's CSV log), originals vs reconstructions (image pairs/strips, ``<audio controls>``
WAV players, mesh previews), generated samples, the metrics table and every stage's status. All links are
relative to the page, so the folder can be copied or served as is.

    python -m tokenforge.report outputs/demo      # rebuild the page from an existing run
"""

from __future__ import annotations

import csv
import html
import json
import sys
from pathlib import Path
from typing import Any

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{margin-bottom:4px}section{border-top:2px solid #ccc;margin-top:28px;padding-top:8px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
img.pic{image-rendering:pixelated;height:96px;margin:2px;border:1px solid #ddd}img.curve{width:360px}
.ok{color:#080}.failed{color:#b00}.skipped{color:#a60}details pre{font-size:12px;background:#f6f6f6;padding:8px}
.audio{display:flex;gap:12px;align-items:center;font-size:13px}
.claim{background:#eef5ff;border-left:4px solid #36c;padding:4px 12px;margin:8px 0}.note{font-size:12px;color:#555}
.expect{background:#fff6e0;border-left:4px solid #e90;padding:4px 10px;font-size:13px}td.base{color:#555}"""


def loss_curves(metrics_csv: Path, png: Path) -> Path | None:
    """Plot every ``*loss*`` / ``*nll*`` column of a Lightning CSV log against the step; None when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(metrics_csv)))
    columns = [c for c in (rows[0].keys() if rows else []) if c != "step" and ("loss" in c or "nll" in c)]
    series = {}
    for column in columns:
        points = [(int(r["step"]), float(r[column])) for r in rows if r.get(column) and r.get("step")]
        if points:
            series[column] = points
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
    for column, points in sorted(series.items()):
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=column)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(metrics_csv.parent.parent.name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def _rel(path: str | Path, root: Path) -> str:
    return html.escape(Path(path).resolve().relative_to(root).as_posix(), quote=True)


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else html.escape("" if value is None else str(value))


def _metrics_table(rows: list[tuple[str, str, Any, Any]], baseline_name: str = "") -> str:
    """Model values beside the trivial baseline's (scored with the same protocol), one row per metric."""
    if not rows:
        return "<p>no metrics</p>"
    body = "".join(f"<tr><td>{html.escape(s)}</td><td>{html.escape(k)}</td><td>{_value(v)}</td>"
                   f"<td class='base'>{_value(b)}</td></tr>" for s, k, v, b in rows)
    head = f"trivial baseline: {html.escape(baseline_name)}" if baseline_name else "trivial baseline"
    return (f"<table class='metrics'><tr><th>stage</th><th>metric</th><th>model</th><th>{head}</th></tr>"
            f"{body}</table>")


def _claim_box(claim: dict[str, Any]) -> str:
    """The paper's claim, the rows measured here and the verdict (or why the claim stage did not run)."""
    if claim.get("status") != "ok":
        why = claim.get("error") or claim.get("reason") or ""
        return (f"<div class='claim'><h3>paper claim, measured here</h3><p class='{claim.get('status')}'>"
                f"{html.escape(str(claim.get('status')))}: {html.escape(why)}</p></div>")
    rows = claim.get("rows") or []
    keys = list(rows[0]) if rows else []
    table = ("<table><tr>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{_value(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows) + "</table>"
             if rows else "")
    note = f"<p class='note'>{html.escape(claim['note'])}</p>" if claim.get("note") else ""
    return (f"<div class='claim'><h3>paper claim, measured here</h3><p><b>claim:</b> {html.escape(claim['claim'])}"
            f"</p>{table}<p><b>measured:</b> {html.escape(claim.get('verdict', ''))}</p>{note}</div>")


INTRO = ("Every model here is a tiny config trained for seconds on a CPU: the pictures and sounds show that each "
         "chain runs end to end, not what the method reaches. Each section gives the paper's claim measured on this "
         "machine (compute claims on tiny random-weight models) and puts a trivial baseline beside every held-out "
         "number. Numbers vary slightly across CPUs.")


def metric_rows(summary: dict[str, Any], method: str) -> list[tuple[str, str, float, float | None]]:
    """(stage, metric, model value, trivial-baseline value or None) for every quality number of ``method``.

    The baseline is scored with evaluate's protocol, so it sits beside the evaluate stage's numbers, or beside
    the stage its result names under ``beside`` (a baseline its generate stage scores).
    """
    baseline = summary["stages"].get(f"{method}/baseline") or {}
    beside = baseline.get("beside", "evaluate")
    rows = []
    for stage in ("evaluate", "reconstruct", "generate"):
        result = summary["stages"].get(f"{method}/{stage}", {})
        for key, value in (result.get("metrics") or {}).items():
            rows.append((stage, key, value, (baseline.get("metrics") or {}).get(key) if stage == beside else None))
    return rows


def method_section(method: str, modality: str, stages: dict[str, dict[str, Any]], root: Path,
                   expect_text: str = "") -> str:
    """One method's section; ``stages`` holds that method's stage results (keyed 'fit', 'reconstruct', ...);
    ``expect_text`` says what its pictures or sounds look like after seconds of training."""
    parts = [f"<section id='method-{method}'><h2>{method} <small>({html.escape(modality)})</small></h2>"]
    status = " ".join(f"<span class='{r['status']}'>{html.escape(name)}: {r['status']}"
                      f"{' (' + html.escape(r.get('error') or r.get('reason') or '') + ')' if r['status'] != 'ok' else ''}"
                      f"{' ' + str(r['seconds']) + ' s' if 'seconds' in r else ''}</span>;" for name, r in stages.items())
    parts.append(f"<p class='stages'>{status}</p>")
    if "claim" in stages:
        parts.append(_claim_box(stages["claim"]))
    base = stages.get("baseline", {})
    rows = metric_rows({"stages": {f"{method}/{name}": result for name, result in stages.items()}}, method)
    parts.append("<h3>held-out metrics, model vs trivial baseline</h3>" + _metrics_table(rows, base.get("baseline", "")))
    expect = f"<p class='expect'>{html.escape(expect_text)}</p>" if expect_text else ""
    rec = stages.get("reconstruct", {})
    if rec.get("pictures"):
        parts.append("<h3>originals | reconstructions (held-out)</h3>" + expect + "<div>" + "".join(
            f"<img class='pic' src='{_rel(p, root)}' alt='{html.escape(Path(p).stem)}' title='{html.escape(Path(p).stem)}'>"
            for p in rec["pictures"]) + "</div>")
    if rec.get("audio"):
        parts.append("<h3>originals | reconstructions (held-out)</h3>" + expect + "".join(
            f"<div class='audio'>{html.escape(Path(o).stem)}: original <audio controls src='{_rel(o, root)}'></audio>"
            f" reconstruction <audio controls src='{_rel(r, root)}'></audio></div>" for o, r in rec["audio"]))
    gen = stages.get("generate", {})
    if gen.get("samples"):
        caption = f"<p class='expect'>{html.escape(gen['caption'])}</p>" if gen.get("caption") else expect
        labels = gen.get("labels") or gen.get("prompts") or []
        parts.append("<h3>generated samples</h3>" + caption + "<div>" + "".join(
            f"<img class='pic' src='{_rel(p, root)}' title='{html.escape(str(labels[i]) if i < len(labels) else '')}'"
            f" alt='sample {i}'>" for i, p in enumerate(gen["samples"])) + "</div>")
    fit = stages.get("fit", {})
    if fit.get("config"):
        text = Path(fit["config"]).read_text() if Path(fit["config"]).is_file() else ""
        parts.append(f"<details><summary>config: {html.escape(Path(fit['config']).name)} "
                     f"({fit.get('steps', '?')} steps)</summary><pre>{html.escape(text)}</pre></details>")
    if fit.get("metrics_csv") and Path(fit["metrics_csv"]).is_file():
        png = loss_curves(Path(fit["metrics_csv"]), root / "curves" / f"{method}.png")
        if png:
            parts.append(f"<h3>loss curves</h3><img class='curve' src='{_rel(png, root)}' alt='{method} loss'>")
    return "".join(parts) + "</section>"


def write_report(out: str | Path) -> Path:
    """Build ``out/index.html`` (and ``out/curves/*.png``) from ``out/summary.json``; return the page's path.

    Each method's heading and what-to-expect note come from the summary's ``modalities`` and ``expect`` (what
    each method's demo part declared).
    """
    root = Path(out).resolve()
    summary = json.loads((root / "summary.json").read_text())
    stages: dict[str, dict[str, Any]] = summary["stages"]
    data = "".join(f"<li>{html.escape(name)}: <span class='{r['status']}'>{r['status']}</span> "
                   f"{html.escape(json.dumps(r.get('splits', r.get('error', ''))))}</li>"
                   for name, r in stages.items() if name.startswith(("data/", "encode/")))
    if (root / "leaderboard" / "index.html").is_file():  # tokenforge.leaderboard: every tokenizer, per modality
        data += "<li><a href='leaderboard/index.html'>leaderboard: quality vs bytes per item, per modality</a></li>"
    toc = " · ".join(f"<a href='#method-{m}'>{m}</a>" for m in summary["methods"])
    results = (root / "results.md").read_text() if (root / "results.md").is_file() else ""
    modality, expect = summary.get("modalities", {}), summary.get("expect", {})
    sections = "".join(method_section(m, modality.get(m, ""), {k.split("/", 1)[1]: v for k, v in stages.items()
                                                               if k.split("/", 1)[0] == m}, root, expect.get(m, ""))
                       for m in summary["methods"])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tokenforge demo</title>"
            f"<style>{STYLE}</style></head><body><h1>tokenforge demo</h1>"
            f"<p><code>{html.escape(summary['command'])}</code> on {html.escape(summary['device'])}, "
            f"steps preset {html.escape(summary['steps_preset'])}, wall time {summary['wall_seconds']:.0f} s.</p>"
            f"<p class='expect'>{html.escape(INTRO)}</p>"
            f"<p>{toc}</p><section id='data'><h2>data and token shards</h2><ul>{data}</ul>"
            f"<details><summary>results.md</summary><pre>{html.escape(results)}</pre></details></section>"
            f"{sections}</body></html>\n")
    (root / "index.html").write_text(page)
    return root / "index.html"


if __name__ == "__main__":
    print(write_report(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo"))
