"""`tokenforge convert`: write a model in tokenforge's checkpoint format (``config.json`` + ``model.safetensors``),
or check a parity fixture.

    tokenforge convert --official llamagen_vq --model vq_ds16_c2i.pt --out models/llamagen-vq16   # a release
    tokenforge convert --model logs/.../last.ckpt --out models/mine      # a fit checkpoint -> a folder
    tokenforge convert --check ../shared/fixtures/NAME                   # recompute a parity fixture's outputs

``--model`` is what every verb takes: a `tokenforge fit` checkpoint, a saved folder or a name, or with
``--official NAME`` the file or folder of that official release (``--official-config FILE``: settings the
release lacks; ``--trust-pickle``: the release pickles Python objects and you trust it). ``convert NAME SOURCE
OUT`` is short for ``--official NAME --model SOURCE --out OUT``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenforge.errors import UsageError
from tokenforge.hub import TRUST_KEYS, official_methods, save_pretrained
from tokenforge.parity import check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenforge convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("positional", nargs="*", metavar="NAME SOURCE OUT",
                        help="short form of --official NAME --model SOURCE --out OUT")
    parser.add_argument("--model", help="fit .ckpt / folder / name; with --official: the release's file or folder")
    parser.add_argument("--official", metavar="NAME", help=f"--model is this official release: "
                                                            f"{', '.join(official_methods())}")
    parser.add_argument("--official-config", "--config", dest="config", type=Path, metavar="FILE",
                        help="JSON settings the official release lacks (constructor settings only)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow official files that pickle Python objects (e.g. training args); this can run code")
    parser.add_argument("--out", type=Path, help="folder to write config.json + model.safetensors into")
    parser.add_argument("--check", type=Path, metavar="FIXTURE", help="run the parity check of a fixture folder")
    parser.add_argument("--parity-method", help="with --check: parity method (default: the folder's name)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check is not None:
        if not args.check.is_dir():
            raise UsageError(f"--check {args.check} is not a folder; give a parity fixture folder (one holding "
                             "inputs.safetensors and outputs.safetensors)")
        lines = check(args.check, args.parity_method)
        for line in lines:
            print(line)
        return 0 if all(line.status == "ok" for line in lines) else 1
    if args.positional:
        if len(args.positional) != 3 or args.model or args.official or args.out:
            parser.error("give NAME SOURCE OUT, or --official NAME --model SOURCE --out OUT (not both)")
        args.official, args.model, out = args.positional
        args.out = Path(out)
    if not (args.model and args.out):
        parser.error("give --model (with --official NAME for a release) and --out, or --check FIXTURE")
    if args.official and args.official not in official_methods():
        raise UsageError(f"no official format {args.official!r}; choose one of: {', '.join(official_methods())}")
    if not args.official and (args.config or args.trust_pickle):
        raise UsageError("--official-config and --trust-pickle go with --official NAME (an official release); "
                         "tokenforge checkpoints need neither")
    if args.official and not Path(args.model).exists():
        raise UsageError(f"{args.model} does not exist; give the {args.official} release's checkpoint file or folder")
    from tokenforge.model_arg import load_model

    settings = _read_settings(args.config) if args.config else None
    module = load_model(args.model, args.official, config=settings, trust_pickle=args.trust_pickle)
    folder = save_pretrained(module, args.out)
    params = sum(p.numel() for p in module.parameters())
    print(f"wrote {folder} ({type(module).__name__}, {params / 1e6:.2f} M parameters)")
    return 0


def _read_settings(path: Path) -> dict:
    """``--official-config``: constructor settings only; trust is the ``--trust-pickle`` flag, never a key in a
    file."""
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
