"""`tokenforge generate`: sample tokens with a trained generator and decode them with their tokenizer.

    tokenforge generate --generator CKPT --tokenizer DIR|NAME --n 16 --classes 3 7 --cfg 4 --top-k 2000 \\
        --seed 0 --out samples/

``--generator``: a `tokenforge fit` checkpoint / `save_pretrained` folder / name, or ``official:llamagen:PATH``
/ ``official:var:PATH``. ``--tokenizer``: same forms (``official:var_vqvae:PATH``, ``official:llamagen_vq:PATH``);
left out, the ``tokenizer.name`` of ``--tokens DIR/manifest.json`` (the token shards it was trained on).
Writes ``ids.npy`` (flat ids per sample, -1 = padding; per-scale ids concatenated), ``labels.json``, and
decoded data: ``sample_NNNN.png`` + ``grid.png`` (images), ``sample_NNNN.wav`` (audio), ``sample_NNNN.ply``
(meshes). The same arguments and seed give the same files; batches of ``--batch-size`` show a progress bar.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tokenforge import console
from tokenforge.devices import resolve_device
from tokenforge.errors import UsageError
from tokenforge.generators.sampling import CFG_SCHEDULES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokenforge generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", required=True, help="checkpoint / folder / name, or official:<method>:<path>")
    p.add_argument("--tokenizer", default=None, help="tokenizer checkpoint / name, or official:<method>:<path>")
    p.add_argument("--tokens", default=None, help="token-shard folder whose manifest names the tokenizer")
    p.add_argument("--n", type=int, default=16, help="number of samples (16)")
    p.add_argument("--classes", type=int, nargs="*", default=None,
                   help="class ids, cycled over the samples (default: random classes; unconditional models: none)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (GPT default 1 = off; VAR default 1.5)")
    p.add_argument("--cfg-schedule", choices=CFG_SCHEDULES, default=None,
                   help="constant (GPT default) | linear | var (VAR default: w = 1 + cfg * s/(K-1))")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=None, help="off unless in (0, 1)")
    p.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cuda when available, else cpu")
    p.add_argument("--bf16", action="store_true", help="cast the generator to bfloat16")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each whole GPT sampling step (one CUDA graph per token on GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (also: tokenforge --quiet)")
    p.add_argument("--out", required=True, help="output folder")
    return p


def load_module(name: str) -> torch.nn.Module:
    """A generator or tokenizer by name; non-finite weights (a diverged run) are refused with one line, rather
    than sampled into all-zero ids."""
    from tokenforge.errors import UsageError
    from tokenforge.hub import load_tokenizer
    from tokenforge.nonfinite_guard import nonfinite_weights

    module = load_tokenizer(name)
    bad = nonfinite_weights(module)
    if bad:
        raise UsageError(f"{name} holds non-finite weights ({', '.join(bad)}): the run that wrote it diverged; "
                         "use an earlier checkpoint or retrain with a lower learning rate")
    return module


def tokenizer_name(args: argparse.Namespace) -> str:
    if args.tokenizer:
        return args.tokenizer
    if args.tokens:
        manifest = json.loads((Path(args.tokens) / "manifest.json").read_text())
        name = (manifest.get("tokenizer") or {}).get("name")
        if name:
            return name
    raise UsageError("say which tokenizer decodes the ids: --tokenizer DIR|NAME (or --tokens SHARD_DIR)")


def require_generator(module: Any, spec: str, command: str = "generate") -> None:
    """`UsageError` unless ``module`` (loaded from ``--generator spec``) samples with ``tokenforge generate``."""
    from tokenforge.generators.base import Generator

    if isinstance(module, Generator):
        return
    name = type(module).__name__
    if callable(getattr(module, "encode", None)) and callable(getattr(module, "decode", None)):
        raise UsageError(f"--generator {spec} holds a {name}, which is a tokenizer, not a generator: pass a generator "
                         f"checkpoint (GPT, VAR, ENAT) as --generator and {spec} as --tokenizer")
    hint = ("; E-CAR and DiT checkpoints sample with `tokenforge ecar-generate`"
            if callable(getattr(module, "generate", None)) else "")
    raise UsageError(f"--generator {spec} holds a {name}, which `tokenforge {command}` cannot sample{hint}")


def require_tokenizer(module: Any, spec: str) -> None:
    """`UsageError` unless ``module`` (loaded from ``--tokenizer spec``) can decode tokens."""
    if not callable(getattr(module, "decode", None)) or callable(getattr(module, "generate", None)):
        raise UsageError(f"--tokenizer {spec} holds a {type(module).__name__}, which cannot decode tokens: pass the "
                         "tokenizer the generator was trained on (or --tokens SHARD_DIR to use its manifest's)")


def flat_ids(ids: Tensor | list[Tensor]) -> Tensor:
    if isinstance(ids, (list, tuple)):
        return torch.cat([i.reshape(i.shape[0], -1) for i in ids], dim=1)
    return ids.reshape(ids.shape[0], -1)


def save_images(images: Tensor, out: Path, start: int) -> None:
    from PIL import Image

    arrays = images.float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    for i, a in enumerate(arrays):
        Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a).save(out / f"sample_{start + i:04d}.png")


def image_grid(out: Path, count: int) -> None:
    from PIL import Image

    tiles = [Image.open(out / f"sample_{i:04d}.png") for i in range(count)]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    w, h = tiles[0].size
    grid = Image.new(tiles[0].mode, (cols * w, rows * h))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % cols) * w, (i // cols) * h))
    grid.save(out / "grid.png")


def save_decoded(tokenizer: Any, data: Any, out: Path, start: int) -> None:
    modality = getattr(tokenizer, "modality", "image")
    if modality == "image":
        save_images(data, out, start)
    elif modality == "audio":
        import soundfile as sf

        rate = int(getattr(tokenizer, "sample_rate", 24000))
        for i, wave in enumerate(data.float().reshape(data.shape[0], -1).cpu().numpy()):
            sf.write(out / f"sample_{start + i:04d}.wav", wave, rate)
    else:
        for i, mesh in enumerate(data):
            if not hasattr(mesh, "export"):
                raise TypeError(f"{type(tokenizer).__name__}.decode returned {type(mesh).__name__}, not a mesh")
            mesh.export(out / f"sample_{start + i:04d}.ply")


def labels_for(args: argparse.Namespace, generator: Any, rng: torch.Generator) -> list[int] | None:
    classes = getattr(generator, "num_classes", 0)
    if classes <= 0 or getattr(generator, "caption_embedding", None) is not None:
        return None
    if args.classes:
        bad = [c for c in args.classes if not 0 <= c < classes]
        if bad:
            raise UsageError(f"--classes {bad} outside [0, {classes - 1}] (the generator has {classes} classes)")
        return [args.classes[i % len(args.classes)] for i in range(args.n)]
    return torch.randint(0, classes, (args.n,), generator=rng).tolist()


def run(args: argparse.Namespace, command: str = "generate") -> dict[str, Any]:
    from tokenforge.generators.autoregressive.var import VAR

    device = resolve_device(args.device)
    generator = load_module(args.generator)
    require_generator(generator, args.generator, command)
    generator = generator.to(device).eval()
    tokenizer_spec = tokenizer_name(args)
    tokenizer = load_module(tokenizer_spec)
    require_tokenizer(tokenizer, tokenizer_spec)
    tokenizer = tokenizer.to(device).eval()
    show_progress = not args.no_progress and console.progress_enabled()
    if args.bf16:
        generator = generator.to(torch.bfloat16)
    is_var = isinstance(generator, VAR)
    rng = torch.Generator(device=device).manual_seed(args.seed)
    labels = labels_for(args, generator, torch.Generator().manual_seed(args.seed))
    sampling: dict[str, Any] = {"temperature": args.temperature, "top_k": args.top_k, "greedy": args.greedy,
                                "generator": rng, "progress": show_progress}
    sampling["cfg"] = args.cfg if args.cfg is not None else (1.5 if is_var else 1.0)
    sampling["cfg_schedule"] = args.cfg_schedule or ("var" if is_var else "constant")
    if args.top_p is not None:
        sampling["top_p"] = args.top_p
    if is_var:
        sampling["quantizer"] = tokenizer.quantizer
    else:
        sampling["compile"] = args.compile
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_ids: list[np.ndarray] = []
    for start in console.progress(range(0, args.n, args.batch_size), desc="batches", disable=not show_progress):
        count = min(args.batch_size, args.n - start)
        cond = torch.tensor(labels[start:start + count], device=device) if labels is not None else None
        with torch.no_grad():
            tokens = generator.generate(count, cond, **sampling)
            data = tokenizer.decode(tokens.to(device))
        save_decoded(tokenizer, data, out, start)
        all_ids.append(flat_ids(tokens.ids).cpu().numpy())
    width = max(a.shape[1] for a in all_ids)
    ids = np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=-1) for a in all_ids])
    np.save(out / "ids.npy", ids)
    (out / "labels.json").write_text(json.dumps(labels) + "\n")
    if getattr(tokenizer, "modality", "image") == "image":
        image_grid(out, args.n)
    return {"out": str(out), "n": args.n, "ids_shape": list(ids.shape), "labels": labels}


def main(argv: list[str] | None = None, command: str = "generate") -> int:
    """``tokenforge generate``; wrong input ends as one line and exit 2 (`tokenforge.errors`)."""
    from tokenforge.failure import one_line

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.n < 1 or args.batch_size < 1:
            raise UsageError(f"--n and --batch-size must be >= 1 (got {args.n} and {args.batch_size})")
        summary = run(args, command)
    except (UsageError, FileNotFoundError, ValueError) as error:
        print(f"tokenforge {command}: {one_line(error)}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
