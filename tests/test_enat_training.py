"""ENAT end to end on real data: face crops -> image shards -> VQGAN tokens -> token shards -> `tokenforge fit`
ENAT (tiny config, reuse training on) -> `tokenforge generate` -> decodable PNG grids.

The tokenizer is this repository's `VQGAN` with a k-means-fitted 16-code codebook (any grid tokenizer works
through token shards; ENAT's own MAGE VQGAN is checked against the official fixture in test_enat.py).
"""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from tokenforge.cli import lightning_cli
from tokenforge.data.tokens import Decoder as TokenDecoder
from tokenforge.data.tokens import encode_shards
from tokenforge.cli import main as tokenforge_main
from tokenforge.generators.enat.model import ENAT
from tokenforge.generators.enat.module import ENATModule, random_mask
from tokenforge.hub import from_pretrained, save_pretrained
from tokenforge.config_models import fit_args
from conftest import make_face_shards
from token_shards import fit_kmeans_vqgan

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/generators/enat/tiny.yaml"
CODES = 16


def enat_generate_main(argv: list[str]) -> int:
    """`tokenforge generate` with ``argv``, as the console runs it."""
    return tokenforge_main(["generate", *argv])


def read_tokens(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    decode = TokenDecoder()
    samples = list(wds.WebDataset(sorted(glob.glob(str(folder / f"{split}-*.tar"))), shardshuffle=False))
    return torch.stack([decode(s)["ids"] for s in samples]), torch.tensor([int(s["cls"]) for s in samples])


@torch.no_grad()
def masked_nll(model: ENAT, ids: torch.Tensor, labels: torch.Tensor) -> float:
    ids = ids.reshape(ids.shape[0], -1)
    masking = random_mask(*ids.shape, count=int(0.8 * ids.shape[1]), generator=torch.Generator().manual_seed(0))
    logits = model.eval()(ids.masked_fill(masking, model.mask_token_id), labels).logits
    return float(torch.nn.functional.cross_entropy(logits[masking], ids[masking]))


def test_reuse_training_step_uses_the_ema_state():
    torch.manual_seed(0)
    model = ENAT(seq_len=16, hidden_size=32, num_heads=4, enc_depth=1, dec_depth=1, codebook_size=8, num_classes=2)
    module = ENATModule(model, ema_decay=0.5, warmup_steps=1)
    batch = {"ids": torch.randint(0, 8, (4, 4, 4)), "cls": torch.tensor([0, 1, 0, 1])}
    loss, ratio = module.step_loss(batch, reuse=True)
    loss.backward()
    assert 0 < ratio < 1 and torch.isfinite(loss)
    assert model.prev_proj.mlp.fc1.weight.grad is not None  # the reuse path was trained
    assert all(p.grad is None for p in module.ema.parameters())
    model.zero_grad()
    module.step_loss(batch, reuse=False)[0].backward()
    assert model.prev_proj.mlp.fc1.weight.grad is None
    assert module.partial_backward  # so DDP is told to expect parameters a step leaves unused (test_gan_ddp.py)


@pytest.mark.learning
def test_tokens_to_enat_fit_to_pngs(shared_data, tmp_path, monkeypatch, one_thread):
    faces = make_face_shards(shared_data, tmp_path)
    assert len(faces) == 200
    tokenizer = fit_kmeans_vqgan(tmp_path / "raw", CODES)  # tiny VQGAN, k-means codebook
    save_pretrained(tokenizer, tmp_path / "vqgan")
    encode_shards(str(tmp_path / "vqgan"), tmp_path / "raw", tmp_path / "tokens", image_size=32, device="cpu",
                  progress=False)
    val_ids, val_cls = read_tokens(tmp_path / "tokens", "val")
    assert val_ids.shape == (40, 8, 8)

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    untrained = ENAT(seq_len=64, hidden_size=64, num_heads=4, enc_depth=2, dec_depth=1, codebook_size=CODES,
                     num_classes=2)
    before = masked_nll(untrained, val_ids, val_cls)
    lightning_cli(args=["fit", *fit_args(CONFIG), "--data.init_args.train", str(tmp_path / "tokens"),
                        "--data.init_args.val", str(tmp_path / "tokens"),
                        "--model.init_args.model.init_args.codebook_size", str(CODES),
                        "--trainer.enable_progress_bar", "false"])
    ckpt = next((tmp_path / "logs").rglob("last.ckpt"))
    model = from_pretrained(ckpt)
    assert isinstance(model, ENAT)
    after = masked_nll(model, val_ids, val_cls)
    p = torch.bincount(val_ids.flatten(), minlength=CODES).double() / val_ids.numel()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    assert after < before - 0.15 and after < entropy - 0.1, (before, after, entropy)
    rows = list(csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv")))))
    train = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(train) >= 4 and np.mean(train[-2:]) < train[0] - 0.1, train
    assert any(r.get("val/loss") for r in rows)

    args = ["--generator", str(ckpt), "--tokens", str(tmp_path / "tokens"), "--n", "4", "--classes", "0", "1",
            "--steps", "6", "--seed", "3", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    assert enat_generate_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert enat_generate_main([*args, "--out", str(tmp_path / "b")]) == 0
    assert enat_generate_main([*args, "--no-reuse", "--out", str(tmp_path / "c")]) == 0
    ids_a, ids_b = np.load(tmp_path / "a" / "ids.npy"), np.load(tmp_path / "b" / "ids.npy")
    assert ids_a.shape == (4, 64) and ids_a.min() >= 0 and ids_a.max() < CODES
    assert np.array_equal(ids_a, ids_b)
    assert np.load(tmp_path / "c" / "ids.npy").shape == (4, 64)
    assert json.loads((tmp_path / "a" / "labels.json").read_text()) == [0, 1, 0, 1]
    from PIL import Image

    assert Image.open(tmp_path / "a" / "grid.png").size == (64, 64)
    expected = tokenizer.decode(torch.from_numpy(ids_a[:1]).long().reshape(1, 8, 8))
    png = torch.from_numpy(np.asarray(Image.open(tmp_path / "a" / "sample_0000.png"))).permute(2, 0, 1).float()
    assert (png / 127.5 - 1 - expected[0]).abs().max() <= 1.0 / 127.5 + 1e-6
