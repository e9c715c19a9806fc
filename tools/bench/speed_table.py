"""docs/speed.md's rows from a side-by-side run: ``python speed_table.py BENCH.jsonl [--env ENV.json]``.

One Markdown row per measurement of ours: the workload and setting, the official figure it is compared with
(the official row of the same workload, metric, batch and precision, and the same variant when the official
side has it, e.g. compiled vs compiled; else the official's fastest), ours, the ratio (higher is better for
ours: rates are divided ours / official, times official / ours), both peak memories, the GPU and the commit of
the measured tokenforge tree. Rows of a failed measurement say so instead of a number.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def precision(row: dict[str, Any]) -> str:
    return str(row.get("dtype") or "").split()[0]


def setting(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["workload"], row["metric"], row["batch"], precision(row), row.get("resolution")


def is_rate(row: dict[str, Any]) -> bool:
    return str(row.get("unit") or "").endswith("/s")


def reference(ours: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The official row `ours` is compared with (module docstring)."""
    same = [r for r in rows if r.get("impl") == "official" and r.get("value") and setting(r) == setting(ours)]
    if not same:
        return None
    kind = str(ours.get("variant") or "").split("_")[0]  # compile_fused is compared with compile
    matched = [r for r in same if r.get("variant") in (ours.get("variant"), kind)]
    pool = matched or same
    return max(pool, key=lambda r: r["value"]) if is_rate(ours) else min(pool, key=lambda r: r["value"])


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "failed"
    text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def rows_markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> list[str]:
    gpu = env.get("gpu") or next((r.get("gpu") for r in rows if r.get("gpu")), "?")
    commit = str(env.get("commit_proj") or "?")[:7]
    lines = ["| workload | setting | official | tokenforge | ratio | peak GiB official / ours | GPU | commit |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("impl") != "ours":
            continue
        ref = reference(row, rows) if row.get("value") else None
        where = f"b{row['batch']} {precision(row)} {row['metric']}"
        if row.get("resolution"):
            where += f" {row['resolution']} px"
        ratio = "-"
        if ref and row.get("value"):
            speed = row["value"] / ref["value"] if is_rate(row) else ref["value"] / row["value"]
            ratio = f"{speed:.2f}x"
        official = f"{fmt(ref['value'], ref['unit'])} ({ref.get('variant')})" if ref else "-"
        ours = f"{fmt(row.get('value'), row.get('unit') or '')} ({row.get('variant')})"
        if row.get("error"):
            ours += f": {row['error'][:80]}"
        peaks = " / ".join("-" if r is None or r.get("peak_gib") is None else f"{r['peak_gib']:.2f}"
                           for r in (ref, row))
        lines.append(f"| {row['workload']} | {where} | {official} | {ours} | {ratio} | {peaks} | {gpu} | {commit} |")
    lines += [f"| {r['workload']} | {r['status']} | | | | | {gpu} | {commit} |" for r in rows
              if "impl" not in r and r.get("status") not in (None, "done")]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jsonl")
    p.add_argument("--env", default=None, help="env.json of the run (GPU, commits)")
    args = p.parse_args()
    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.startswith("{")]
    try:
        env = json.loads(Path(args.env).read_text()) if args.env else {}
    except (OSError, ValueError):  # env.json missing or empty (its writer failed): GPU and commit from the rows
        env = {}
    print("\n".join(rows_markdown(rows, env)))


if __name__ == "__main__":
    main()
