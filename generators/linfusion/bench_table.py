"""The resolution table of `tokenforge bench linfusion`: skip rules, growth ratios, crossover, Markdown.

Rows are dicts ``{"attention", "dtype", "resolution", "tokens", "forward_ms" (float) | missing, "peak_gib",
"status"}`` with status ``"ok"``, ``"OOM"``, ``"skipped (...)"`` or a note such as ``"timeout after 120 s"``.
A series is one (attention, dtype) pair. Growth is judged per series against the previous measured resolution:
time ∝ pixels means ×4 per doubling of the side, time ∝ pixels² means ×16.
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]


def series(rows: list[Row], attention: str, dtype: str) -> list[Row]:
    """The rows of one (attention, dtype) series, by resolution."""
    return sorted((r for r in rows if r["attention"] == attention and r["dtype"] == dtype),
                  key=lambda r: r["resolution"])


def measured(row: Row) -> bool:
    return row.get("status") == "ok" and isinstance(row.get("forward_ms"), (int, float))


def growth_exponent(attention: str) -> int:
    """Expected time growth in pixels: SDPA self-attention is quadratic, everything else linear."""
    return 2 if attention.split("+")[0] == "sdpa" else 1


def predict_seconds(rows: list[Row], attention: str, dtype: str, resolution: int) -> float | None:
    """Extrapolate from the largest smaller measured resolution (quadratic for SDPA, linear otherwise)."""
    prev = [r for r in series(rows, attention, dtype) if measured(r) and r["resolution"] < resolution]
    if not prev:
        return None
    last = prev[-1]
    pixels = (resolution / last["resolution"]) ** 2
    return last["forward_ms"] / 1000 * pixels ** growth_exponent(attention)


def blocked(rows: list[Row], attention: str, dtype: str, resolution: int, max_predicted_s: float) -> str | None:
    """Why this cell should not run: a smaller size ran out of memory / time, or the prediction is too slow."""
    for r in series(rows, attention, dtype):
        if r["resolution"] < resolution and (r.get("status") == "OOM" or str(r.get("status", "")).startswith("timeout")):
            return f"skipped ({r['status'].split()[0]} at {r['resolution']})"
    predicted = predict_seconds(rows, attention, dtype, resolution)
    if predicted is not None and predicted > max_predicted_s:
        return f"skipped (predicted {predicted:.0f} s)"
    return None


def merge(old: list[Row], new: list[Row]) -> list[Row]:
    """New rows replace old ones of the same (attention, dtype, resolution)."""
    key = lambda r: (r["attention"], r["dtype"], r["resolution"])  # noqa: E731
    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + new


def crossover(rows: list[Row], dtype: str, fast: str = "linfusion", slow: str = "sdpa") -> int | None:
    """Smallest resolution from which ``fast`` beats ``slow`` at every size where both were measured
    (a size where ``slow`` did not complete but ``fast`` did also counts as a win)."""
    a = {r["resolution"]: r for r in series(rows, fast, dtype)}
    b = {r["resolution"]: r for r in series(rows, slow, dtype)}
    wins = {}
    for res in sorted(set(a) & set(b)):
        if measured(a[res]) and measured(b[res]):
            wins[res] = a[res]["forward_ms"] < b[res]["forward_ms"]
        elif measured(a[res]):
            wins[res] = True
    best = None
    for res in sorted(wins, reverse=True):
        if not wins[res]:
            break
        best = res
    return best


def _cell(row: Row, prev: Row | None) -> list[str]:
    if not measured(row):
        return [row.get("status", "?"), "", ""]
    ratio = ""
    if prev is not None:
        pixels = (row["resolution"] / prev["resolution"]) ** 2
        ratio = f"×{row['forward_ms'] / prev['forward_ms']:.2f} (pixels ×{pixels:.0f})"
    peak = row.get("peak_gib")
    peak_text = f"{peak:.2f}" if isinstance(peak, (int, float)) and peak == peak else "n/a"
    return [f"{row['forward_ms']:.1f}", ratio, peak_text]


def render(rows: list[Row]) -> str:
    """Markdown table (per series, ratio to the previous measured size) plus crossover / largest-size lines."""
    lines = ["| attention | dtype | resolution | latent tokens | forward ms | vs previous size | peak GiB | note |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    keys = sorted({(r["attention"], r["dtype"]) for r in rows}, key=lambda k: (k[1], k[0] != "sdpa", k[0]))
    for attention, dtype in keys:
        prev = None
        for r in series(rows, attention, dtype):
            ms, ratio, peak = _cell(r, prev)
            note = r.get("note", "")
            if measured(r):
                prev = r
            else:
                ms, note = "—", r.get("status", "?")
            lines.append(f"| {attention} | {dtype} | {r['resolution']} | {r.get('tokens', '')} | {ms} | {ratio} | "
                         f"{peak} | {note} |")
    lines.append("")
    for dtype in sorted({d for _, d in keys}):
        for attention in sorted({a for a, d in keys if d == dtype}):
            done = [r["resolution"] for r in series(rows, attention, dtype) if measured(r)]
            lines.append(f"- largest resolution completed, {attention} {dtype}: {max(done) if done else 'none'}")
        cross = crossover(rows, dtype)
        if any(a == "linfusion" for a, d in keys if d == dtype) and any(a == "sdpa" for a, d in keys if d == dtype):
            lines.append(f"- crossover {dtype}: LinFusion faster than SDPA from "
                         f"{cross if cross is not None else '(never, in the sizes measured)'} px on")
    return "\n".join(lines)
