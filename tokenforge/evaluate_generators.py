"""Generator half of `tokenforge evaluate`: token NLL (or the training loss) on held-out token shards, and FID.

See `tokenforge.evaluate` for the protocol; this module holds the generator-specific code so each file reads
top to bottom. `tokenforge.evaluate` imports it; what both use is in `tokenforge.evaluate_protocol`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokenforge.evaluate_protocol import SKIPPED, batches, check_modality, finish, limited, load_model
from tokenforge.metrics.image import FIDMetric


def _condition(model: nn.Module, batch: dict[str, Any]) -> Any:
    """The condition a generator was trained with (as `ARModule`): caption features, class ids or None."""
    if getattr(model, "caption_embedding", None) is not None:
        return batch["caption"]
    if getattr(model, "num_classes", 0) == 0:
        return None
    return batch.get("cls")


def _var_quantizer(manifest: dict[str, Any] | None, opts: dict[str, Any], device: str) -> nn.Module:
    from tokenforge.generators.autoregressive.module import load_tokenizer

    name = opts.get("tokenizer") or ((manifest or {}).get("tokenizer") or {}).get("name")
    if not name:
        raise ValueError("a VAR needs its tokenizer's quantizer: pass tokenizer=<checkpoint> (the token manifest "
                         "names none)")
    return load_tokenizer(str(name)).quantizer.to(device).eval()


def token_loss(model: nn.Module, batch: dict[str, Any], index: int, opts: dict[str, Any],
               quantizer: nn.Module | None = None) -> tuple[float, int]:
    """(summed loss, number of tokens it covers) of one batch; see the module docstring per generator."""
    from tokenforge.generators.autoregressive.gpt import GPT, IGNORE
    from tokenforge.generators.autoregressive.var import VAR

    if isinstance(model, GPT):
        ids = batch["ids"].long()
        logits = model(ids, _condition(model, batch))
        targets = model.targets(ids, batch.get("lengths")).flatten()
        total = F.cross_entropy(logits.flatten(0, 1), targets, ignore_index=IGNORE, reduction="sum")
        return float(total), int((targets != IGNORE).sum())
    if isinstance(model, VAR):
        from tokenforge.generators.autoregressive.module import split_scales

        ids = batch["ids"].long().reshape(len(batch["ids"]), -1)
        scales = split_scales(ids, model.lengths)
        logits = model(_condition(model, batch), quantizer.idx_to_var_input(scales))
        target = torch.cat(scales, dim=1).flatten()
        return float(F.cross_entropy(logits.flatten(0, 1), target, reduction="sum")), int(target.numel())
    from tokenforge.generators.enat.model import ENAT

    if isinstance(model, ENAT):
        from tokenforge.generators.enat.module import random_mask

        ids = batch["ids"].reshape(len(batch["ids"]), -1).long()
        cls = batch.get("cls")
        labels = (cls.reshape(-1).long() if cls is not None
                  else torch.full((len(ids),), model.null_class, dtype=torch.long, device=ids.device))
        count = min(max(round(float(opts.get("mask_ratio", 0.8)) * ids.shape[1]), 1), ids.shape[1] - 1)
        gen = torch.Generator(device=ids.device).manual_seed(int(opts.get("seed", 0)) + index)
        masking = random_mask(len(ids), ids.shape[1], count, generator=gen, device=ids.device)
        logits = model(ids.masked_fill(masking, model.mask_token_id), labels).logits
        return float(F.cross_entropy(logits[masking].float(), ids[masking], reduction="sum")), int(masking.sum())
    if "latents" in batch:  # E-CAR / MAR / DiT: the training loss, seeded per batch
        from tokenforge.generators.ecar.module import ECARModule

        state = torch.random.get_rng_state()
        torch.manual_seed(int(opts.get("seed", 0)) + index)
        try:
            loss = ECARModule.loss(None, model, batch)  # loss() reads only its arguments
        finally:
            torch.random.set_rng_state(state)
        return float(loss) * len(batch["latents"]), len(batch["latents"])
    raise TypeError(f"no token likelihood for {type(model).__name__} on a batch with {sorted(batch)}")


@torch.no_grad()
def evaluate_generator(model: nn.Module | str, shards: str | Path, out_dir: str | Path, *, split: str = "val",
                       batch_size: int = 8, device: str = "cpu", max_items: int | None = None,
                       **opts: Any) -> dict[str, Any]:
    """Token NLL (or the training loss for continuous generators) on held-out token shards; ``metrics.json``.

    ``opts``: mask_ratio / seed (ENAT, E-CAR), tokenizer (VAR's quantizer, FID decoding), fid_weights +
    reference (raw image shards) + fid_samples for FID, progress.
    """
    from tokenforge.generators.autoregressive.var import VAR

    started = time.perf_counter()
    name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    model = load_model(model, device)
    manifest = check_modality(shards, "tokens", f"the generator {type(model).__name__}")
    quantizer = _var_quantizer(manifest, opts, device) if isinstance(model, VAR) else None
    total, count, items = 0.0, 0, 0
    loader = batches(shards, split, "tokens", batch_size)
    for index, batch in enumerate(limited(loader, max_items, "evaluate tokens", opts.get("progress", True))):
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        loss, n = token_loss(model, batch, index, opts, quantizer)
        total, count = total + loss, count + n
        items += len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
    protocol = {"kind": "generator", "model": name, "class": type(model).__name__, "shards": str(shards),
                "split": split, "device": device, "batch_size": batch_size, "max_items": max_items,
                "n_items": items, "tokens": count, "seed": int(opts.get("seed", 0)),
                "weights": {"fid": opts.get("fid_weights")}}
    metrics: dict[str, Any] = {"protocol": protocol}
    mean = total / max(count, 1)
    if not _discrete(model):
        metrics["loss"] = mean
        metrics["note"] = "training (diffusion/flow) loss with a seeded RNG per batch; not a likelihood"
    else:
        metrics.update(nll_nats_per_token=mean, nll_bits_per_token=mean / math.log(2))
        if type(model).__name__ == "ENAT":
            protocol["mask_ratio"] = float(opts.get("mask_ratio", 0.8))
            metrics["note"] = "masked-token cross-entropy at a fixed mask ratio with a seeded mask per batch"
    metrics["fid"] = _generator_fid(model, manifest, device, opts) if items else SKIPPED
    return finish(out_dir, metrics, started)


def _discrete(model: nn.Module) -> bool:
    return type(model).__name__ in ("GPT", "VAR", "ENAT")


def _generator_fid(model: nn.Module, manifest: dict[str, Any] | None, device: str, opts: dict[str, Any]) -> Any:
    """FID of ``fid_samples`` generated images (decoded by the manifest's tokenizer) against ``reference``."""
    if not opts.get("fid_weights"):
        return SKIPPED
    if not opts.get("reference"):
        return "skipped: no reference image shards (reference=DIR)"
    try:
        fid = FIDMetric(opts["fid_weights"], device)
    except ImportError as error:
        return f"skipped: {error}"
    from tokenforge.generators.autoregressive.module import load_tokenizer

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
    return fid.compute()
