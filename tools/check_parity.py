#!/usr/bin/env python
"""Check tokenforge against an official parity fixture: one line per output, exit 0 only if all are ok.

    tools/check_parity.py ../shared/fixtures/var_msrq          # method taken from the folder name
    tools/check_parity.py FIXTURE_DIR --method var_msrq        # same layout under another name
    tools/check_parity.py --all [--root ../shared/fixtures]    # every fixture whose method is implemented

Output lines: ``<name> <max_abs_diff> <tolerance> ok|FAIL`` or ``<name> - - missing`` for an output whose
method part is not implemented yet.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tokenforge.parity import check, parity_sources

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def run_one(folder: Path, method: str | None) -> bool:
    lines = check(folder, method)
    for line in lines:
        print(line)
    return all(line.status == "ok" for line in lines)


def run_all(root: Path) -> bool:
    if not root.is_dir():
        message = f"fixture folder {root} not found (expected ../shared/fixtures beside the checkout)"
        if os.environ.get("CI", "").lower() == "true":
            print(f"FAIL: {message}", file=sys.stderr)
            return False
        print(f"skip: {message}")
        return True
    ok = True
    known = parity_sources()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in known:
            print(f"# {folder.name}: not implemented yet")
            continue
        print(f"# {folder.name}")
        ok &= run_one(folder, None)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", nargs="?", type=Path, help="fixture folder (inputs/outputs.safetensors inside)")
    parser.add_argument("--method", help="parity method to use instead of the folder's name")
    parser.add_argument("--all", action="store_true", help="check every implemented fixture under --root")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"fixtures root (default {DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    if args.all:
        return 0 if run_all(args.root) else 1
    if args.fixture is None:
        parser.error("give a FIXTURE folder or --all")
    if not args.fixture.is_dir():
        parser.error(f"{args.fixture} is not a folder")
    return 0 if run_one(args.fixture, args.method) else 1


if __name__ == "__main__":
    sys.exit(main())
