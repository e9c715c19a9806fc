"""End to end on real data: face crops -> image shards -> VQGAN tokens -> token shards -> `tokenforge fit` GPT
-> held-out NLL below the unigram entropy -> `tokenforge generate` -> decoded PNGs (deterministic under a seed).

The tokenizer is this repository's `VQGAN` with its codebook fitted by k-means on the training images (the
quantizer's ``kmeans_init`` on one training-mode pass): cheap, data-dependent tokens. 200 LFW crops (faces and
non-faces, two classes) give 160 training and 40 held-out 8x8 token grids.
"""

from __future__ import annotations

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
from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.hub import from_pretrained, save_pretrained
from tokenforge.config_models import fit_args
from conftest import make_face_shards
from token_shards import fit_kmeans_vqgan

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/generators/autoregressive/tiny.yaml"
CODES = 16


def generate_main(argv: list[str]) -> int:
    """`tokenforge generate` with ``argv``, as the console runs it."""
    return tokenforge_main(["generate", *argv])


def read_tokens(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    decode = TokenDecoder()
    samples = list(wds.WebDataset(sorted(glob.glob(str(folder / f"{split}-*.tar"))), shardshuffle=False))
    ids = torch.stack([decode(s)["ids"] for s in samples])
    return ids, torch.tensor([int(s["cls"]) for s in samples])


def unigram_entropy(ids: torch.Tensor) -> float:
    p = torch.bincount(ids.flatten(), minlength=CODES).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


@pytest.mark.learning
def test_images_to_tokens_to_gpt_to_pngs(shared_data, tmp_path, monkeypatch, one_thread):
    faces = make_face_shards(shared_data, tmp_path)
    assert len(faces) == 200

    tokenizer = fit_kmeans_vqgan(tmp_path / "raw", CODES, seed=None)  # tiny VQGAN, k-means codebook
    save_pretrained(tokenizer, tmp_path / "vqgan")
    manifest = encode_shards(str(tmp_path / "vqgan"), tmp_path / "raw", tmp_path / "tokens", image_size=32,
                             device="cpu", progress=False)
    assert manifest["splits"]["train"]["count"] == 160 and manifest["splits"]["val"]["count"] == 40

    train_ids, _ = read_tokens(tmp_path / "tokens", "train")
    val_ids, val_cls = read_tokens(tmp_path / "tokens", "val")
    assert train_ids.shape == (160, 8, 8) and val_ids.shape == (40, 8, 8)
    entropy = unigram_entropy(train_ids)
    assert entropy > 2.0  # the tokens are not trivial

    monkeypatch.chdir(tmp_path)
    lightning_cli(args=["fit", *fit_args(CONFIG), "--data.init_args.train", str(tmp_path / "tokens"),
                        "--data.init_args.val", str(tmp_path / "tokens"),
                        "--model.init_args.model.init_args.vocab_size", str(CODES),
                        "--trainer.enable_progress_bar", "false"])
    ckpt = next((tmp_path / "logs").rglob("last.ckpt"))
    model = from_pretrained(ckpt)
    assert isinstance(model, GPT) and not model.training
    with torch.no_grad():
        held_out = float(model.loss(val_ids, val_cls))
    assert held_out < entropy - 0.05, (held_out, entropy)
    metrics = (next((tmp_path / "logs").rglob("metrics.csv"))).read_text()
    assert "val/nll" in metrics and "train/loss" in metrics

    args = ["--generator", str(ckpt), "--tokens", str(tmp_path / "tokens"), "--n", "6", "--classes", "0", "1",
            "--cfg", "2.0", "--top-k", "8", "--seed", "3", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    assert generate_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert generate_main([*args, "--out", str(tmp_path / "b")]) == 0
    ids_a, ids_b = np.load(tmp_path / "a" / "ids.npy"), np.load(tmp_path / "b" / "ids.npy")
    assert ids_a.shape == (6, 64) and ids_a.min() >= 0 and ids_a.max() < CODES
    assert np.array_equal(ids_a, ids_b)  # deterministic under a seed
    assert json.loads((tmp_path / "a" / "labels.json").read_text()) == [0, 1, 0, 1, 0, 1]
    from PIL import Image

    pngs = sorted((tmp_path / "a").glob("sample_*.png"))
    assert len(pngs) == 6 and Image.open(pngs[0]).size == (32, 32)
    assert Image.open(tmp_path / "a" / "grid.png").size == (96, 64)
    # decoded PNGs are the tokenizer's decode of the saved ids
    expected = tokenizer.decode(torch.from_numpy(ids_a[:1]).long().reshape(1, 8, 8))
    png = torch.from_numpy(np.asarray(Image.open(pngs[0]))).permute(2, 0, 1).float() / 127.5 - 1
    assert (png - expected[0]).abs().max() <= 1.0 / 127.5 + 1e-6
