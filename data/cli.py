"""``tokenforge shards make {images,audio,meshes} SRC OUT`` and ``tokenforge shards encode --tokenizer T IN OUT``.

Thin argparse front ends over `tokenforge.data.shards.make_shards` and `tokenforge.data.tokens.encode_shards`;
``tools/make_shards.py`` and ``tools/encode_shards.py`` call the same functions.

Exit codes (`tokenforge.errors`): 0 done; 1 the run failed (no shard could be read, or ``make`` rejected
every source file); 2 a usage error, one line (e.g. OUT is not empty: pass ``--overwrite`` or choose another
folder); 3 finished but skipped some inputs: ``make`` rejected source files (unreadable, malformed, too
small, silent; one ``skipped: FILE: reason`` line each on stderr, all of them in ``OUT/rejected.jsonl``),
``encode`` skipped unreadable shards or samples (counted in its manifest); 130 Ctrl-C, one line saying what
was kept and the command that continues.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any


LAYOUT_HELP = {
    "images": "imagenet: train class folders nXXXXXXXX/ (cls by sorted wnid) and/or the validation folder with "
              "LOC_val_solution.csv or 'FILE LABEL' lines; txt = class name",
    "audio": "librispeech / libritts: speaker/chapter/*.flac|wav with *.trans.txt / *.normalized.txt; "
             "txt = transcript, cls = speaker",
    "meshes": "shapenet: CATEGORY/MODEL/ folders (taxonomy.json names); objaverse: UID.glb with metadata JSON; "
              "cls = category, txt = name",
}


def _common(parser: argparse.ArgumentParser, kind: str) -> None:
    from tokenforge.data.layouts import choices

    parser.add_argument("src", help="folder tree (class = sub-folder), a glob, or a CSV/JSONL manifest "
                                    "with path[,label][,caption]; or a dataset's own folder (see --layout)")
    parser.add_argument("out", help="output folder for {split}-NNNNNN.tar, manifest.json, rejected.jsonl")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of files held out as val (0)")
    parser.add_argument("--shard-size", type=int, default=1000, help="max samples per shard (1000)")
    parser.add_argument("--max-shard-bytes", type=float, default=1e9, help="max bytes per shard (1e9)")
    parser.add_argument("--workers", type=int, default=0, help="parallel preprocessing processes (0: inline)")
    parser.add_argument("--resume", action="store_true", help="keep finished shards of an interrupted run")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT's contents (written beside it, then swapped in at the end)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle/split seed (0)")
    parser.add_argument("--labels", choices=("auto", "folder", "none"), default="auto")
    parser.add_argument("--layout", choices=choices(kind), default="auto",
                        help=f"the folder's layout (auto: detected; files: a plain tree). {LAYOUT_HELP[kind]}")
    parser.add_argument("--label-file", default=None,
                        help="ImageNet validation labels, Objaverse metadata JSON or ShapeNet taxonomy.json, "
                             "when not found in SRC")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenforge shards", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="raw shards from files")
    kinds = make.add_subparsers(dest="kind", required=True)

    images = kinds.add_parser("images", help="PIL-readable images -> jpg/png samples")
    _common(images, "images")
    images.add_argument("--max-side", type=int, default=None, help="downscale so the longer side is at most this")
    images.add_argument("--format", choices=("jpg", "png"), default="jpg")
    images.add_argument("--quality", type=int, default=95, help="JPEG quality (95)")
    images.add_argument("--min-side", type=int, default=8, help="reject images whose shorter side is below this")

    audio = kinds.add_parser("audio", help="wav/flac/ogg -> mono flac samples at one sample rate")
    _common(audio, "audio")
    audio.add_argument("--sample-rate", type=int, default=24000, help="target rate in Hz (24000)")
    audio.add_argument("--segment-seconds", type=float, default=None, help="split into segments of this length")
    audio.add_argument("--min-seconds", type=float, default=0.5, help="reject clips/segments shorter than this")
    audio.add_argument("--silence-db", type=float, default=-60.0, help="reject clips whose RMS is below this dBFS")

    meshes = kinds.add_parser("meshes", help="trimesh-loadable meshes -> normalised ply + 3D training targets")
    _common(meshes, "meshes")
    meshes.add_argument("--num-surface", type=int, default=8192, help="surface points with normals (8192)")
    meshes.add_argument("--num-vol", type=int, default=4096, help="uniform queries in [-1,1]^3 (4096)")
    meshes.add_argument("--num-near", type=int, default=4096, help="near-surface queries (4096)")
    meshes.add_argument("--near-sigma", type=float, default=0.01, help="near-surface jitter std (0.01)")
    meshes.add_argument("--margin", type=float, default=0.05, help="normalised half-extent is 1 - margin")
    meshes.add_argument("--no-repair", action="store_true", help="reject non-watertight meshes without repair")

    encode = commands.add_parser("encode", help="token shards from raw shards with a tokenizer")
    encode.add_argument("--tokenizer", required=True, help="checkpoint folder, Lightning .ckpt, or name")
    encode.add_argument("inp", metavar="IN", help="raw shard folder (or brace pattern / tar)")
    encode.add_argument("out", metavar="OUT", help="output folder for token shards")
    encode.add_argument("--batch-size", type=int, default=32)
    encode.add_argument("--device", default=None, help="cuda when available, else cpu")
    encode.add_argument("--bf16", action="store_true", help="autocast to bfloat16 while encoding")
    encode.add_argument("--latents", action="store_true", help="also store latents.npy (float16)")
    encode.add_argument("--image-size", type=int, default=256, help="centre-crop size for image tokenizers")
    encode.add_argument("--sample-rate", type=int, default=None, help="audio rate (default: the shards')")
    encode.add_argument("--num-points", type=int, default=2048, help="surface points for mesh tokenizers")
    encode.add_argument("--shard-size", type=int, default=1000)
    encode.add_argument("--splits", default="train,val", help="comma-separated splits to encode")
    encode.add_argument("--overwrite", action="store_true",
                        help="replace OUT's contents (written beside it, then swapped in at the end)")
    encode.add_argument("--retries", type=int, default=2, help="extra attempts for an unreadable shard (2)")
    encode.add_argument("--no-progress", action="store_true")
    return parser


MAKE_OPTIONS = {
    "images": ("max_side", "format", "quality", "min_side"),
    "audio": ("sample_rate", "segment_seconds", "min_seconds", "silence_db"),
    "meshes": ("num_surface", "num_vol", "num_near", "near_sigma", "margin"),
}


def run_make(args: argparse.Namespace) -> dict[str, Any]:
    from tokenforge.data.shards import make_shards

    options = {name: getattr(args, name) for name in MAKE_OPTIONS[args.kind]}
    if args.kind == "meshes":
        options["repair"] = not args.no_repair
    return make_shards(args.kind, args.src, args.out, val_fraction=args.val_fraction, shard_size=args.shard_size,
                       max_shard_bytes=args.max_shard_bytes, workers=args.workers, resume=args.resume,
                       overwrite=args.overwrite, seed=args.seed, labels=args.labels, progress=not args.no_progress,
                       layout=args.layout, label_file=args.label_file, **options)


def run_encode(args: argparse.Namespace) -> dict[str, Any]:
    from tokenforge.data.tokens import encode_shards

    return encode_shards(args.tokenizer, args.inp, args.out, batch_size=args.batch_size, device=args.device,
                         bf16=args.bf16, latents=args.latents, image_size=args.image_size,
                         sample_rate=args.sample_rate, num_points=args.num_points, shard_size=args.shard_size,
                         splits=tuple(s for s in args.splits.split(",") if s), progress=not args.no_progress,
                         overwrite=args.overwrite, retries=args.retries)


def interrupted_message(args: argparse.Namespace, argv: list[str], staged: bool) -> str:
    """The one line printed on Ctrl-C: what is left in OUT and the whole command that continues."""
    if args.command == "encode" or staged:
        return f"tokenforge shards: interrupted; {args.out} is unchanged (the new shards were being written beside it)"
    again = [a for a in argv if a != "--overwrite"] + ([] if args.resume else ["--resume"])
    return (f"tokenforge shards: interrupted; the finished shards in {args.out} are kept but unused until the run "
            f"ends (no manifest.json yet); continue with: tokenforge shards {shlex.join(again)}")


def main(argv: list[str] | None = None) -> int:
    from tokenforge.data.output import is_nonempty_dir
    from tokenforge.errors import RunFailedError, UsageError, exit_code_for

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    staged = args.command == "encode" or (args.overwrite and not args.resume and is_nonempty_dir(Path(args.out)))
    try:
        manifest = run_make(args) if args.command == "make" else run_encode(args)
    except (UsageError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"tokenforge shards: {error}", file=sys.stderr)
        return 2
    except RunFailedError as error:
        print(f"tokenforge shards: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted_message(args, argv, staged), file=sys.stderr)
        return 130
    summary = {"out": args.out, "count": manifest["count"],
               "splits": {k: v["count"] for k, v in manifest["splits"].items()},
               "rejected": manifest.get("rejected", 0)}
    if args.command == "encode":
        summary.update(skipped=manifest.get("skipped", 0), skipped_shards=manifest.get("skipped_shards", 0))
    print(json.dumps(summary))
    if args.command == "encode":  # skipped samples or shards: finished, but not with every input (exit 3)
        return exit_code_for(summary["skipped"] + summary["skipped_shards"])
    report_rejected(Path(args.out))
    if summary["rejected"] and not summary["count"]:  # every file rejected: nothing usable was written
        print(f"tokenforge shards: no sample made: all {summary['rejected']} source files were rejected (reasons "
              f"above and in {Path(args.out) / 'rejected.jsonl'}); check the source and the options", file=sys.stderr)
    # rejected source files: finished without them (exit 3); all of them rejected: nothing written (exit 1)
    return exit_code_for(summary["rejected"], summary["rejected"] + summary["count"])


def report_rejected(out: Path, limit: int = 20) -> None:
    """One ``skipped: FILE: reason`` line on stderr per file in ``OUT/rejected.jsonl`` (the first ``limit``,
    then how many more): the rejections of the whole dataset, an earlier run's too when it was resumed."""
    path = out / "rejected.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    for line in lines[:limit]:
        entry = json.loads(line)
        reason = " ".join(str(entry["reason"]).split())  # one line even for a library's multi-line message
        print(f"skipped: {entry['file']}: {reason}", file=sys.stderr)
    if len(lines) > limit:
        print(f"skipped: {len(lines) - limit} more files, listed with their reasons in {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
