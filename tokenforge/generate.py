"""`tokenforge generate`: sample with any generator and decode with its tokenizer, ``Pipeline(tokenizer, generator)``.

    tokenforge generate --model CKPT|DIR [--official NAME] [--tokenizer CKPT|DIR | --tokens SHARD_DIR] \\
        --n 16 --class 3 7 --seed 0 --out samples/ [method options]

``--model`` (alias ``--generator``): a `tokenforge fit` checkpoint, a `save_pretrained` folder or a name; with
``--official NAME`` the file or folder of that official release (`tokenforge.model_spec`, as every verb takes
it). ``--tokenizer``: the tokenizer that decodes
the samples (same forms, ``official:NAME:PATH`` for a release); left out, the one named by ``--tokens
SHARD_DIR/manifest.json`` (the token shards the generator trained on), else the ``tokenizer`` its fit checkpoint
trained with (a VAR's). The generator's method adds its own
options (``tokenforge generate --model CKPT --help`` lists them); they reach ``generator.generate(n, condition,
**options)``, and a method that generates its own way (`tokenforge.methods.Method.verbs`) takes the whole
command. Writes, by the tokenizer's modality, ``sample_NNNN.png`` + ``grid.png`` (images), ``sample_NNNN.flac``
(audio) or ``sample_NNNN.ply`` (meshes, marching cubes on a ``--resolution`` grid; a shape without surface, empty
or filling the cube, is a result: one ``empty: NAME: reason`` line, no file, as the tokenizer verbs do), with ``ids.npy`` (flat ids per sample, -1 = padding) or ``latents.npy``, and
``labels.json``. The same arguments and seed give the same files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from tokenforge.errors import UsageError
from tokenforge.methods import Method, add_options, load_target, registry
from tokenforge.model_arg import load_model as load_named
from tokenforge.model_spec import add_model_arguments, load_model, method_in_argv

ALIAS = "--generator"  # the former name of --model


def model_alias(argv: list[str]) -> list[str]:
    """``argv`` with ``--generator`` spelt ``--model``."""
    return ["--model" if a == ALIAS else "--model=" + a[len(ALIAS) + 1:] if a.startswith(ALIAS + "=") else a
            for a in argv]


def build_parser(method: Method | None = None) -> tuple[argparse.ArgumentParser, list[str]]:
    """The verb's parser with ``method``'s generate options; returns it and the dests of those options."""
    p = argparse.ArgumentParser(prog="tokenforge generate", description=__doc__.split("\n\n")[0],
                                epilog=_method_epilog(method), formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_model_arguments(p, "generator (alias --generator)")
    p.add_argument("--tokenizer", default=None, help="tokenizer checkpoint / folder / name, or official:NAME:PATH")
    p.add_argument("--tokens", default=None, help="token-shard folder whose manifest names the tokenizer")
    p.add_argument("--n", type=int, default=16, help="number of samples (16)")
    p.add_argument("--class", "--classes", dest="classes", type=int, nargs="*", default=None,
                   help="class ids, cycled over the samples (default: random classes; unconditional models: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--resolution", type=int, default=128, help="meshes: marching-cubes grid, cells per axis (128)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (also: tokenforge --quiet)")
    p.add_argument("--out", required=True, help="output folder")
    dests = add_options(p, method, "generate") if method is not None else []
    return p, dests


def _method_epilog(method: Method | None) -> str:
    if method is not None:
        return ""
    lines = ["method options (shown in full with --model):"]
    for m in registry().values():
        flags = [o.flags[0] for o in m.options if "generate" in o.verbs]
        if m.kind == "generator" and (flags or "generate" in m.verbs):
            lines.append(f"  {m.name}: {' '.join(flags) or '(its own command)'}")
    return "\n".join(lines)


def foreign_options(unknown: list[str], method: Method | None) -> UsageError:
    """One line for arguments the verb does not take, naming the methods whose options they are."""
    flags = [a.split("=", 1)[0] for a in unknown if a.startswith("-")]
    owners = {flag: sorted(m.name for m in registry().values() for o in m.options
                           if "generate" in o.verbs and flag in o.flags) for flag in flags}
    named = [f"{flag} is an option of {', '.join(who)}" for flag, who in owners.items() if who]
    mine = f"the generator is {method.name}'s" if method else "the generator's method is unknown"
    if named:
        return UsageError(f"{'; '.join(named)}, not of this generator ({mine}); `tokenforge generate --model "
                          f"MODEL --help` lists its options")
    return UsageError(f"unrecognised arguments: {' '.join(unknown)} ({mine}; `tokenforge generate --model MODEL "
                      "--help` lists its options)")


def parse(argv: list[str], method: Method | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``argv`` with ``method``'s options; returns the arguments and the method options given."""
    parser, dests = build_parser(method)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise foreign_options(unknown, method)
    if args.n < 1 or args.batch_size < 1 or args.resolution < 2:
        raise UsageError(f"--n and --batch-size must be >= 1 and --resolution >= 2 (got {args.n}, {args.batch_size}, "
                         f"{args.resolution})")
    return args, {dest: getattr(args, dest) for dest in dests if getattr(args, dest) is not None}


def require_generator(module: Any, spec: str) -> None:
    """`UsageError` unless ``module`` (loaded from ``--model spec``) is a generator."""
    from tokenforge.generators.base import Generator

    if isinstance(module, Generator):
        return
    name = type(module).__name__
    if callable(getattr(module, "encode", None)) and callable(getattr(module, "decode", None)):
        raise UsageError(f"--model {spec} holds a {name}, which is a tokenizer, not a generator: pass a generator "
                         f"checkpoint as --model and {spec} as --tokenizer")
    raise UsageError(f"--model {spec} holds a {name}, which `tokenforge generate` cannot sample")


def require_tokenizer(module: Any, spec: str) -> None:
    """`UsageError` unless ``module`` (loaded from ``--tokenizer spec``) can decode tokens."""
    from tokenforge.tokenizers.base import Tokenizer

    if not isinstance(module, Tokenizer):
        raise UsageError(f"--tokenizer {spec} holds a {type(module).__name__}, which cannot decode tokens: pass the "
                         "tokenizer the generator was trained on (or --tokens SHARD_DIR to use its manifest's)")


def checkpoint_tokenizer(model: str) -> str | None:
    """The tokenizer a `tokenforge fit` checkpoint of a generator names (its module's ``tokenizer`` argument), read
    without loading the weights; None for a folder, a release, or a checkpoint that names none."""
    from tokenforge.hub import load_checkpoint, resolve

    try:
        path = resolve(model)
        if path.is_dir() or path.suffix != ".ckpt":
            return None
        checkpoint = load_checkpoint(path, mmap=True)
    except (OSError, ValueError, UsageError):
        return None
    name = (checkpoint.get("hyper_parameters") or {}).get("tokenizer") if isinstance(checkpoint, dict) else None
    return name if isinstance(name, str) and name else None


def tokenizer_name(args: argparse.Namespace) -> str:
    """``--tokenizer``, else the tokenizer named by the ``--tokens`` manifest, else the one the generator's fit
    checkpoint trained with."""
    if args.tokenizer:
        return args.tokenizer
    if args.tokens:
        manifest_file = Path(args.tokens) / "manifest.json"
        if not manifest_file.is_file():
            raise UsageError(f"--tokens {args.tokens} has no manifest.json: give a token-shard folder written by "
                             "`tokenforge shards encode`, or --tokenizer")
        name = (json.loads(manifest_file.read_text()).get("tokenizer") or {}).get("name")
        if name:
            return str(name)
    name = checkpoint_tokenizer(args.model) if not args.official else None
    if name:
        return name
    raise UsageError("say which tokenizer decodes the samples: --tokenizer DIR|NAME (or --tokens SHARD_DIR)")


def labels_for(classes: list[int] | None, n: int, generator: Any, seed: int) -> list[int] | None:
    """Class ids for ``n`` samples: ``classes`` cycled, or random ones (seeded); None for a model without
    classes (unconditional, or text-conditioned)."""
    import torch

    count = int(getattr(generator, "num_classes", 0) or 0)
    if count <= 0 or getattr(generator, "caption_embedding", None) is not None:
        if classes:
            raise UsageError(f"--class given, but {type(generator).__name__} has no classes to condition on")
        return None
    if classes:
        bad = [c for c in classes if not 0 <= c < count]
        if bad:
            raise UsageError(f"--class {bad} outside [0, {count - 1}] (the generator has {count} classes)")
        return [classes[i % len(classes)] for i in range(n)]
    return torch.randint(0, count, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def image_grid(out: Path, count: int) -> None:
    """``grid.png``: the ``count`` samples in a near-square grid."""
    from PIL import Image

    tiles = [Image.open(out / f"sample_{i:04d}.png") for i in range(count)]
    cols = math.ceil(math.sqrt(count))
    width, height = tiles[0].size
    grid = Image.new(tiles[0].mode, (cols * width, math.ceil(count / cols) * height))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % cols) * width, (i // cols) * height))
    grid.save(out / "grid.png")


def save_decoded(tokenizer: Any, data: Any, out: Path, start: int, resolution: int = 128) -> dict[str, str]:
    """Write decoded samples by the tokenizer's modality with the tokenizer verbs' writers (`tokenforge.
    tokenizer_verbs`): PNG (images in [-1, 1]), FLAC (audio at the tokenizer's rate), PLY (meshes: each decoded field
    through marching cubes); returns the samples without surface (file name -> reason), which get no file."""
    from tokenforge.tokenizer_verbs import AudioFiles, ImageFiles, MeshFiles

    empty: dict[str, str] = {}
    modality = getattr(tokenizer, "modality", "image")
    if modality == "image":
        for i, image in enumerate(data.float()):
            ImageFiles.write(image, out / f"sample_{start + i:04d}.png")
    elif modality == "audio":
        rate = int(getattr(tokenizer, "sample_rate", 24000))
        for i, wave in enumerate(data.float().reshape(data.shape[0], -1).cpu()):
            AudioFiles.write(wave, out / f"sample_{start + i:04d}.flac", rate)
    elif modality == "mesh":
        from tokenforge.mesh_files import field_to_mesh

        for i in range(len(data)):
            name = f"sample_{start + i:04d}.ply"
            try:
                MeshFiles.write(field_to_mesh(tokenizer, data[i:i + 1], resolution), out / name)
            except ValueError as error:  # an empty or full field: no surface to write
                empty[name] = str(error)
    else:
        raise UsageError(f"{type(tokenizer).__name__} decodes {modality!r} data, which `tokenforge generate` cannot "
                         "write (image, audio, mesh)")
    return empty


def flat_ids(ids: Any) -> Any:
    """Ids of one batch as ``[B, L]`` numpy (per-scale ids concatenated)."""
    import torch

    if isinstance(ids, (list, tuple)):
        ids = torch.cat([i.reshape(i.shape[0], -1) for i in ids], dim=1)
    return ids.reshape(ids.shape[0], -1).cpu().numpy()


def sample_to_files(pipeline: Any, n: int, out: Path, *, labels: list[int] | None = None, batch_size: int = 64,
                    seed: int = 0, device: Any = "cpu", progress: bool = True, resolution: int = 128,
                    **options: Any) -> dict[str, Any]:
    """Sample ``n`` items through ``pipeline`` (`Pipeline`) in batches and write them under ``out``; the summary's
    ``empty`` maps samples without surface (meshes) to the reason (one ``empty:`` line each on stderr)."""
    import numpy as np
    import torch

    from tokenforge import console

    out.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator(device=device).manual_seed(seed)
    ids, latents, empty = [], [], {}
    for start in console.progress(range(0, n, batch_size), desc="batches", disable=not progress):
        count = min(batch_size, n - start)
        condition = torch.tensor(labels[start:start + count], device=device) if labels is not None else None
        try:
            tokens, data = pipeline.sample(count, condition, with_tokens=True, generator=rng, progress=progress,
                                           **options)
        except ValueError as error:  # a generator's refusal of its options (a count per stage, a size...)
            raise UsageError(f"{type(pipeline.generator).__name__}: {error}") from error
        for name, reason in save_decoded(pipeline.tokenizer, data, out, start, resolution).items():
            print(f"empty: {name}: {reason}", file=sys.stderr)
            empty[name] = reason
        if tokens.ids is not None:
            ids.append(flat_ids(tokens.ids))
        elif tokens.latents is not None:
            latents.append(tokens.latents.float().cpu().numpy())
    summary: dict[str, Any] = {"out": str(out), "n": n, "labels": labels, "empty": empty}
    if ids:
        width = max(a.shape[1] for a in ids)
        flat = np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=-1) for a in ids])
        np.save(out / "ids.npy", flat)
        summary["ids_shape"] = list(flat.shape)
    if latents:
        stacked = np.concatenate(latents)
        np.save(out / "latents.npy", stacked)
        summary["latents_shape"] = list(stacked.shape)
    (out / "labels.json").write_text(json.dumps(labels) + "\n")
    if getattr(pipeline.tokenizer, "modality", "image") == "image":
        image_grid(out, n)
    return summary


def run(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Load the generator and its tokenizer, build the `Pipeline` and write the samples."""
    from tokenforge import console
    from tokenforge.devices import resolve_device
    from tokenforge.generators.base import Pipeline

    device = resolve_device(args.device)
    generator = load_model(args)
    require_generator(generator, args.model)
    spec = tokenizer_name(args)
    tokenizer = load_named(spec, what="--tokenizer")
    require_tokenizer(tokenizer, spec)
    pipeline = Pipeline(tokenizer.to(device).eval(), generator.to(device).eval())
    labels = labels_for(args.classes, args.n, generator, args.seed)
    progress = not args.no_progress and console.progress_enabled()
    return sample_to_files(pipeline, args.n, Path(args.out), labels=labels, batch_size=args.batch_size,
                           seed=args.seed, device=device, progress=progress, resolution=args.resolution, **options)


def main(argv: list[str] | None = None) -> int:
    """``tokenforge generate``; wrong input raises `UsageError` (one line and exit 2 through `tokenforge.cli`)."""
    argv = model_alias(list(sys.argv[1:] if argv is None else argv))
    method = method_in_argv(argv)
    if method is not None and "generate" in method.verbs:
        return int(load_target(method.verbs["generate"])(argv) or 0)
    args, options = parse(argv, method)
    print(json.dumps(run(args, options)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
