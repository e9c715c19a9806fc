"""`Generator.nll` (and `LatentLoss.nll`) give exactly what `tokenforge evaluate`'s former per-class ladder gave.

`reference_loss` is that ladder, kept here as the reference: it re-implements each generator's held-out loss.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tokenforge.generators.autoregressive.gpt import GPT, IGNORE
from tokenforge.generators.autoregressive.var import VAR, split_scales
from tokenforge.generators.ecar.dit import FlowDiT
from tokenforge.generators.ecar.mar import MAR
from tokenforge.generators.ecar.model import ECAR
from tokenforge.generators.enat.model import ENAT, random_mask
from tokenforge.hub import from_official


def _condition(model: nn.Module, batch: dict[str, Any]) -> Any:
    if getattr(model, "caption_embedding", None) is not None:
        return batch["caption"]
    if getattr(model, "num_classes", 0) == 0:
        return None
    return batch.get("cls")


def reference_loss(model: nn.Module, batch: dict[str, Any], index: int, opts: dict[str, Any],
                   quantizer: nn.Module | None = None) -> tuple[float, int]:
    """The former `evaluate_generators.token_loss`, verbatim but for the E-CAR branch's inlined module loss."""
    if isinstance(model, GPT):
        ids = batch["ids"].long()
        logits = model(ids, _condition(model, batch))
        targets = model.targets(ids, batch.get("lengths")).flatten()
        total = F.cross_entropy(logits.flatten(0, 1), targets, ignore_index=IGNORE, reduction="sum")
        return float(total), int((targets != IGNORE).sum())
    if isinstance(model, VAR):
        ids = batch["ids"].long().reshape(len(batch["ids"]), -1)
        scales = split_scales(ids, model.lengths)
        logits = model(_condition(model, batch), quantizer.idx_to_var_input(scales))
        target = torch.cat(scales, dim=1).flatten()
        return float(F.cross_entropy(logits.flatten(0, 1), target, reduction="sum")), int(target.numel())
    if isinstance(model, ENAT):
        ids = batch["ids"].reshape(len(batch["ids"]), -1).long()
        cls = batch.get("cls")
        labels = (cls.reshape(-1).long() if cls is not None
                  else torch.full((len(ids),), model.null_class, dtype=torch.long, device=ids.device))
        count = min(max(round(float(opts.get("mask_ratio", 0.8)) * ids.shape[1]), 1), ids.shape[1] - 1)
        gen = torch.Generator(device=ids.device).manual_seed(int(opts.get("seed", 0)) + index)
        masking = random_mask(len(ids), ids.shape[1], count, generator=gen, device=ids.device)
        logits = model(ids.masked_fill(masking, model.mask_token_id), labels).logits
        return float(F.cross_entropy(logits[masking].float(), ids[masking], reduction="sum")), int(masking.sum())
    state = torch.random.get_rng_state()
    torch.manual_seed(int(opts.get("seed", 0)) + index)
    try:
        latents, labels = batch["latents"].float(), batch.get("cls")
        if isinstance(model, MAR) and labels is None:
            labels = torch.zeros(len(latents), dtype=torch.long)
        loss = model(latents, labels)
    finally:
        torch.random.set_rng_state(state)
    return float(loss) * len(batch["latents"]), len(batch["latents"])


def _new(model: nn.Module, batch: dict[str, Any], index: int, opts: dict[str, Any]) -> tuple[float, int]:
    options = {k: opts[k] for k in model.nll_options if k in opts}
    total, count = model.nll(batch, seed=int(opts.get("seed", 0)) + index, **options)
    return float(total), count


def _cases(fixtures_dir) -> list[tuple[nn.Module, dict[str, Any], dict[str, Any]]]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    gpt = GPT(vocab_size=32, seq_len=16, layout="grid", dim=32, depth=1, num_heads=2, multiple_of=32,
              num_classes=3).eval()
    grid = {"ids": torch.randint(0, 32, (3, 4, 4), generator=g), "cls": torch.tensor([0, 2, 1])}
    seq = GPT(vocab_size=32, seq_len=12, layout="sequence", dim=32, depth=1, num_heads=2, multiple_of=32,
              eos=True).eval()
    padded = torch.randint(0, 32, (3, 12), generator=g)
    padded[1, 7:] = -1
    sequence = {"ids": padded, "lengths": torch.tensor([12, 7, 12])}
    vqvae = from_official("var_vqvae", fixtures_dir / "var_msrq")
    var = VAR(vocab_size=64, cvae=8, patch_nums=[1, 2, 3, 4, 5, 6, 8], depth=2, embed_dim=32, num_heads=2,
              num_classes=10).eval()
    var.attach_tokenizer(vqvae)
    scales = {"ids": torch.randint(0, 64, (2, 155), generator=g), "cls": torch.tensor([4, 5])}
    enat = ENAT(seq_len=16, hidden_size=32, num_heads=4, enc_depth=1, dec_depth=1, codebook_size=32,
                num_classes=3).eval()
    enat_batch = {"ids": torch.randint(0, 32, (3, 4, 4), generator=g)}
    ecar = ECAR(latent_channels=4, scales=[2, 4, 8], dim=32, depth=2, num_heads=2, num_classes=3, head_width=32,
                head_depth=2, batch_mul=2).eval()
    latents = {"latents": torch.randn(3, 4, 8, 8, generator=g).half(), "cls": torch.tensor([0, 1, 2])}
    dit = FlowDiT(4, 8, 2, dim=32, depth=2, num_heads=2, num_classes=3).eval()
    mar = MAR(img_size=64, vae_stride=8, encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2,
              decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, vae_embed_dim=4, buffer_size=4,
              class_num=3, diffloss_d=1, diffloss_w=32, diffusion_batch_mul=2).eval()
    return [(gpt, grid, {}), (seq, sequence, {"seed": 3}), (var, scales, {"quantizer": vqvae.quantizer}),
            (enat, enat_batch, {"seed": 4, "mask_ratio": 0.5}), (enat, {**enat_batch, "cls": grid["cls"]}, {}),
            (ecar, latents, {"seed": 5}), (dit, latents, {}), (mar, {"latents": latents["latents"]}, {"seed": 1})]


@torch.no_grad()
def test_nll_equals_the_former_evaluate_ladder(fixtures_dir) -> None:
    for model, batch, opts in _cases(fixtures_dir):
        quantizer = opts.pop("quantizer", None)
        for index in (0, 2):
            expected = reference_loss(model, batch, index, opts, quantizer)
            assert _new(model, batch, index, opts) == expected, type(model).__name__
            assert expected[1] > 0 and expected[0] > 0


def test_nll_reports_its_metric_and_protocol() -> None:
    assert GPT.nll_metric == VAR.nll_metric == ENAT.nll_metric == "nll_nats_per_token"
    assert ECAR.nll_metric == FlowDiT.nll_metric == MAR.nll_metric == "loss"
    assert ENAT.nll_options == ("mask_ratio",) and VAR.needs_tokenizer and not GPT.needs_tokenizer
    with pytest.raises(KeyError, match="latents"):
        FlowDiT(4, 8, 2, dim=32, depth=2, num_heads=2, num_classes=3).training_loss({"ids": torch.zeros(1)})
