"""``tokenforge generate`` for LinFusion: text-to-image on a local Stable Diffusion folder, fully offline.

    tokenforge generate --official linfusion --model LINFUSION_DIR --base LOCAL_SD_FOLDER --prompt "a lighthouse" \\
        --height 1024 --width 2048 [--ladder 0.4 0.3] --n 1 --out samples/

LinFusion's checkpoint holds only its attention modules, so it generates its own way (`Method.verbs`): the base
pipeline comes from ``--base`` (``local_files_only``), LinFusion is mounted on its UNet (`LinFusion.attach_pipeline`),
and the samples go through ``Pipeline(tokenizer, linfusion)`` like every generator's, with the base's VAE as the
tokenizer (``from_official("diffusers_vae", BASE/vae)``; ``--tokenizer`` overrides). The recipes (direct, SDEdit
ladder) are in `tokenforge.generators.linfusion.render`. ``--model`` is a `tokenforge fit` checkpoint of the
distillation, or with ``--official linfusion`` a released folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tokenforge import console
from tokenforge.errors import UsageError
from tokenforge.generators.linfusion.linfusion import LinFusion
from tokenforge.generators.linfusion.render import TILING_ABOVE, generate, save_png  # noqa: F401  (re-exported)


@contextmanager
def loading_bars(show: bool) -> Iterator[None]:
    """diffusers' and transformers' loading bars on or off (``--quiet``, no terminal) while the context is open."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    shown = [diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()]
    for library, before in zip((diffusers_logging, transformers_logging), shown):
        (library.enable_progress_bar if show else library.disable_progress_bar)()
    try:
        yield
    finally:
        for library, before in zip((diffusers_logging, transformers_logging), shown):
            (library.enable_progress_bar if before else library.disable_progress_bar)()


def require_diffusers_folder(base: str) -> None:
    """`UsageError` unless ``base`` is a pipeline folder saved by diffusers."""
    if not Path(base, "model_index.json").is_file():
        raise UsageError(f"--base {base} is not a local diffusers folder (no model_index.json); give the folder of a "
                         "Stable Diffusion pipeline saved with diffusers")


def load_pipeline(base: str, linfusion: LinFusion | str | None = None, dtype: torch.dtype = torch.float32,
                  device: str = "cpu", chunk_size: int | None = None) -> Any:
    """A local diffusers SD / SDXL folder (``local_files_only``) with LinFusion mounted: ``linfusion`` (a module,
    or a released folder; random modules when None)."""
    from diffusers import DiffusionPipeline

    require_diffusers_folder(base)
    index = json.loads(Path(base, "model_index.json").read_text())
    absent = {name: None for name, entry in index.items() if isinstance(entry, list) and entry[0] is None}
    with loading_bars(console.progress_enabled()):
        pipe = DiffusionPipeline.from_pretrained(base, torch_dtype=dtype, local_files_only=True, **{
            "safety_checker": None, "requires_safety_checker": False, "low_cpu_mem_usage": False, **absent})
    pipe.to(device)
    if isinstance(linfusion, LinFusion):
        if chunk_size is not None:
            for module in linfusion.modules_dict.values():
                module.chunk_size = chunk_size
        pipe.linfusion = linfusion.attach_pipeline(pipe)
    else:
        pipe.linfusion = LinFusion.construct_for(pipe, pretrained=linfusion, chunk_size=chunk_size)
        pipe.linfusion.attach_pipeline(pipe)
    return pipe


def main(argv: list[str]) -> int:
    """The ``generate`` verb for LinFusion (see the module docstring); errors are one line (`tokenforge.errors`)."""
    from tokenforge.devices import resolve_device
    from tokenforge.generate import parse, require_tokenizer, sample_to_files
    from tokenforge.generators.base import Pipeline
    from tokenforge.generators.linfusion.method import METHOD
    from tokenforge.hub import from_official
    from tokenforge.model_arg import load_model
    from tokenforge.model_spec import load_model as load_generator

    args, options = parse(argv, METHOD)
    base = options.pop("base", None)
    if not base:
        raise UsageError("LinFusion samples on a Stable Diffusion pipeline: give --base LOCAL_SD_FOLDER")
    if args.classes:
        raise UsageError("LinFusion is text-conditioned: give --prompt TEXT, not --class")
    require_diffusers_folder(base)
    dtype, chunk_size = getattr(torch, options.pop("dtype", "float32")), options.pop("chunk_size", None)
    linfusion = load_generator(args)
    if not isinstance(linfusion, LinFusion):
        raise UsageError(f"--model {args.model} holds a {type(linfusion).__name__}, not LinFusion modules")
    device = resolve_device(args.device)
    load_pipeline(base, linfusion.eval(), dtype, str(device), chunk_size)
    if args.tokenizer:
        tokenizer = load_model(args.tokenizer, what="--tokenizer")
        require_tokenizer(tokenizer, args.tokenizer)
    else:
        tokenizer = from_official("diffusers_vae", Path(base) / "vae")
    pipeline = Pipeline(tokenizer.to(device).eval(), linfusion)
    progress = not args.no_progress and console.progress_enabled()
    summary = sample_to_files(pipeline, args.n, Path(args.out), batch_size=args.batch_size, seed=args.seed,
                              device=device, progress=progress, **options)
    print(json.dumps(summary))
    return 0
