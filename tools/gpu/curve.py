"""Print a training run's curves from its CSVLogger folder: every validation row, first/last of the train losses.

    python tools/gpu/curve.py LOGS_DIR [--keys val/nll,val/loss]
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def main() -> None:
    logs = Path(sys.argv[1])
    files = sorted(logs.rglob("metrics.csv"))
    if not files:
        sys.exit(f"no metrics.csv under {logs}")
    rows = list(csv.DictReader(open(files[-1])))
    columns = list(rows[0]) if rows else []
    val = [c for c in columns if c.startswith("val/")]
    train = [c for c in columns if c.startswith("train/")]
    print("step," + ",".join(val))
    for row in rows:
        if any(row.get(c) for c in val):
            print(row.get("step", "") + "," + ",".join(f"{float(row[c]):.4f}" if row.get(c) else "" for c in val))
    for c in train:
        values = [float(r[c]) for r in rows if r.get(c)]
        if values:
            head = sum(values[:5]) / len(values[:5])
            tail = sum(values[-5:]) / len(values[-5:])
            print(f"{c}: first-5 mean {head:.4f}, last-5 mean {tail:.4f} ({len(values)} logged)")


if __name__ == "__main__":
    main()
