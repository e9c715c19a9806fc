"""`tokenforge convert`: turn an official release into tokenforge's checkpoint format, or check parity.

    tokenforge convert llamagen_vq vq_ds16_c2i.pt out/llamagen-vq16      # official file -> config.json + safetensors
    tokenforge convert --check ../shared/fixtures/var_msrq               # recompute a parity fixture's outputs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenforge.errors import UsageError
from tokenforge.hub import TRUST_KEYS, from_official, official_methods, save_pretrained
from tokenforge.parity import check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tokenforge convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("method", nargs="?", help=f"official format: {', '.join(official_methods())}")
    parser.add_argument("source", nargs="?", type=Path, help="the released checkpoint file or folder")
    parser.add_argument("out", nargs="?", type=Path, help="folder to write config.json + model.safetensors into")
    parser.add_argument("--config", type=Path, help="JSON with constructor settings when the release has none")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow official files that pickle Python objects (e.g. training args); this can run code")
    parser.add_argument("--check", type=Path, metavar="FIXTURE", help="run the parity check of a fixture folder")
    parser.add_argument("--parity-method", help="with --check: parity method (default: the folder's name)")
    args = parser.parse_args(argv)

    if args.check is not None:
        if not args.check.is_dir():
            raise UsageError(f"--check {args.check} is not a folder; give a parity fixture folder "
                             "(e.g. ../shared/fixtures/var_msrq)")
        lines = check(args.check, args.parity_method)
        for line in lines:
            print(line)
        return 0 if all(line.status == "ok" for line in lines) else 1
    if not (args.method and args.source and args.out):
        parser.error("give METHOD SOURCE OUT, or --check FIXTURE")
    if args.method not in official_methods():
        raise UsageError(f"no official format {args.method!r}; choose one of: {', '.join(official_methods())}")
    if not args.source.exists():
        raise UsageError(f"{args.source} does not exist; give the {args.method} release's checkpoint file or folder")
    config = _read_settings(args.config) if args.config else None
    module = from_official(args.method, args.source, config, trust_pickle=args.trust_pickle)
    folder = save_pretrained(module, args.out)
    params = sum(p.numel() for p in module.parameters())
    print(f"wrote {folder} ({type(module).__name__}, {params / 1e6:.2f} M parameters)")
    return 0


def _read_settings(path: Path) -> dict:
    """``--config``: constructor settings only; trust is the ``--trust-pickle`` flag, never a key in a file."""
    if not path.is_file():
        raise UsageError(f"--config {path} does not exist; give a JSON file of constructor settings")
    try:
        settings = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"--config {path} is not valid JSON ({error}); fix the file") from None
    if not isinstance(settings, dict):
        raise UsageError(f"--config {path} must hold a JSON object of constructor settings")
    if any(key in settings for key in TRUST_KEYS):
        raise UsageError(f"--config {path} sets trust_pickle; remove it and pass --trust-pickle on the command line "
                         "if you trust the checkpoint")
    return settings
