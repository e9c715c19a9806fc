"""Generator half of `tokenforge evaluate`: token NLL (or the training loss) on held-out token shards, and FID.

See `tokenforge.evaluate` for the protocol; every generator scores itself through one method, ``nll(batch)``
(`tokenforge.generators.base.HeldOutLoss`), so this module names none. `tokenforge.evaluate` imports it; what
both use is in `tokenforge.evaluate_protocol`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokenforge.evaluate_protocol import SKIPPED, batches, check_modality, finish, limited, load_model
from tokenforge.hub import load_tokenizer
from tokenforge.metrics.image import FIDMetric
from tokenforge.metrics.weights import WeightsUnavailable


def _tokenizer(manifest: dict[str, Any] | None, opts: dict[str, Any], device: str, who: str) -> nn.Module:
    """The tokenizer that wrote the ids: ``tokenizer=`` or the token manifest's."""
    name = opts.get("tokenizer") or ((manifest or {}).get("tokenizer") or {}).get("name")
    if not name:
        raise ValueError(f"a {who} needs its tokenizer: pass tokenizer=<checkpoint> (the token manifest names none)")
    return load_tokenizer(str(name)).to(device).eval()


@torch.no_grad()
def evaluate_generator(model: nn.Module | str, shards: str | Path, out_dir: str | Path, *, split: str = "val",
                       batch_size: int = 8, device: str = "cpu", max_items: int | None = None,
                       **opts: Any) -> dict[str, Any]:
    """Token NLL (or the training loss for continuous generators) on held-out token shards; ``metrics.json``.

    ``opts``: seed (per batch: seed + batch index) and the generator's own ``nll_options`` (a mask ratio),
    tokenizer (for a generator that ``needs_tokenizer``, and FID decoding), fid_weights + reference (raw image
    shards) + fid_samples for FID, progress.
    """
    started = time.perf_counter()
    name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    model = load_model(model, device)
    manifest = check_modality(shards, "tokens", f"the generator {type(model).__name__}")
    if not callable(getattr(model, "nll", None)):
        raise TypeError(f"{type(model).__name__} has no nll(batch): not a generator tokenforge evaluate can score")
    if model.needs_tokenizer:
        model.attach_tokenizer(_tokenizer(manifest, opts, device, type(model).__name__))
    options = {key: opts[key] for key in model.nll_options if key in opts}
    seed = int(opts.get("seed", 0))
    total, count, items = 0.0, 0, 0
    loader = batches(shards, split, "tokens", batch_size)
    for index, batch in enumerate(limited(loader, max_items, "evaluate tokens", opts.get("progress", True))):
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        loss, n = model.nll(batch, seed=seed + index, **options)
        total, count = total + float(loss), count + int(n)
        items += len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
    protocol = {"kind": "generator", "model": name, "class": type(model).__name__, "shards": str(shards),
                "split": split, "device": device, "batch_size": batch_size, "max_items": max_items,
                "n_items": items, "tokens": count, "seed": int(opts.get("seed", 0)),
                "weights": {"fid": opts.get("fid_weights")}}
    metrics: dict[str, Any] = {"protocol": protocol}
    mean = total / max(count, 1)
    metrics[model.nll_metric] = mean
    if model.nll_metric == "nll_nats_per_token":
        metrics["nll_bits_per_token"] = mean / math.log(2)
    protocol.update(model.nll_protocol(**options))
    if model.nll_note:
        metrics["note"] = model.nll_note
    found = _generator_fid(model, manifest, device, opts) if items else SKIPPED
    metrics["fid"] = found.pop("fid") if isinstance(found, dict) else found  # the number, or why there is none
    metrics["fid_protocol"] = found if isinstance(found, dict) else None  # protocol name, hashes, sample counts
    return finish(out_dir, metrics, started)


def _generator_fid(model: nn.Module, manifest: dict[str, Any] | None, device: str, opts: dict[str, Any]) -> Any:
    """FID of ``fid_samples`` generated images (decoded by the manifest's tokenizer) against ``reference``: the
    protocol's record (`FIDAccumulator.compute`), or the reason it was skipped."""
    if not opts.get("fid_weights"):
        return SKIPPED
    if not opts.get("reference"):
        return "skipped: no reference image shards (reference=DIR)"
    try:
        fid = FIDMetric(opts["fid_weights"], device, protocol=opts.get("fid_protocol") or "pytorch-fid")
    except (ImportError, WeightsUnavailable) as error:
        return f"skipped: {error}"
    tokenizer = load_tokenizer(str(opts.get("tokenizer") or manifest["tokenizer"]["name"])).to(device).eval()
    size = int((manifest or {}).get("input", {}).get("image_size") or 256)
    wanted = int(opts.get("fid_samples") or 1000)
    seen = 0
    for batch in batches(opts["reference"], opts.get("reference_split", "val"), "image", 16, image_size=size,
                         random_crop=False, hflip=False):
        fid.update(batch["image"].to(device), real=True)
        seen += len(batch["image"])
    torch.manual_seed(int(opts.get("seed", 0)))
    for start in range(0, wanted, 16):
        tokens = model.generate(min(16, wanted - start))
        fid.update(tokenizer.decode(tokens).float(), real=False)
    return fid.result()
