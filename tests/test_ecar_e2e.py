"""E-CAR end to end on real data: face crops -> image shards -> KL-autoencoder latent shards (latents.npy) ->
`tokenforge fit` (tiny config, EMA) with the flow loss falling -> `tokenforge generate` -> decodable PNGs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from tokenforge.cli import lightning_cli
from tokenforge.data.tokens import encode_shards
from tokenforge.cli import main as tokenforge_main
from tokenforge.generators.ecar.model import ECAR
from tokenforge.hub import from_pretrained, save_pretrained
from tokenforge.tokenizers.klvae import KLAutoencoder
from tokenforge.config_models import fit_args
from conftest import make_face_shards

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/generators/ecar/tiny.yaml"


def generate_main(argv: list[str]) -> int:
    """`tokenforge generate` with ``argv``, as the console runs it."""
    return tokenforge_main(["generate", *argv])


def test_faces_to_latents_to_ecar_to_pngs(shared_data, tmp_path, monkeypatch, one_thread):
    make_face_shards(shared_data, tmp_path)
    torch.manual_seed(0)
    kl = KLAutoencoder([16, 16], 1, 4, 8, scaling_factor=1.0, mid_block_add_attention=False).eval()
    save_pretrained(kl, tmp_path / "kl")
    manifest = encode_shards(str(tmp_path / "kl"), tmp_path / "raw", tmp_path / "latents", image_size=16,
                             device="cpu", latents=True, progress=False)
    assert manifest["latents"] and manifest["splits"]["train"]["count"] == 160

    monkeypatch.chdir(tmp_path)
    lightning_cli(args=["fit", *fit_args(CONFIG), "--data.init_args.train", str(tmp_path / "latents"),
                        "--data.init_args.val", str(tmp_path / "latents"), "--trainer.max_steps", "40",
                        "--trainer.enable_progress_bar", "false"])
    ckpt = next((tmp_path / "logs").rglob("last.ckpt"))
    model = from_pretrained(ckpt)
    assert isinstance(model, ECAR)
    rows = list(csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv")))))
    train = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(train) >= 3 and train[-1] < 0.8 * train[0], train
    assert any(r.get("val/loss") for r in rows)

    args = ["--generator", str(ckpt), "--tokens", str(tmp_path / "latents"), "--n", "4", "--classes", "0", "1",
            "--steps", "2", "--cfg", "1.5", "--seed", "3", "--device", "cpu"]
    assert generate_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert generate_main([*args, "--out", str(tmp_path / "b")]) == 0
    lat_a, lat_b = np.load(tmp_path / "a" / "latents.npy"), np.load(tmp_path / "b" / "latents.npy")
    assert lat_a.shape == (4, 4, 8, 8) and np.isfinite(lat_a).all() and np.array_equal(lat_a, lat_b)
    assert json.loads((tmp_path / "a" / "labels.json").read_text()) == [0, 1, 0, 1]
    from PIL import Image

    png = Image.open(tmp_path / "a" / "sample_0000.png")
    assert png.size == (16, 16)
    expected = kl.decode(torch.from_numpy(lat_a[:1]))[0].clamp(-1, 1)
    got = torch.from_numpy(np.asarray(png.convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1
    assert (got - expected).abs().max() <= 1.0 / 127.5 + 1e-5
    assert generate_main([*args[:2], "--tokens", str(tmp_path / "latents"), "--steps", "1", "2",
                          "--out", str(tmp_path / "c")]) == 2  # 2 step counts for 3 stages: refused
