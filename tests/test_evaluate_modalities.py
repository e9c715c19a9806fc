"""`evaluate_tokenizer` on real speech (tiny WavTokenizer) and real meshes (tiny VAT): the metrics equal direct
computations with `tokenforge.metrics.*`, bytes per second / per item follow the packing rule, and the
protocol records what was measured."""

from __future__ import annotations

import glob
import math
from pathlib import Path

import pytest
import torch
import webdataset as wds

from tokenforge.config import build
from tokenforge.data.audio import Decoder as AudioDecoder
from tokenforge.data.mesh import Decoder as MeshDecoder
from tokenforge.data.shards import make_shards
from tokenforge.evaluate import evaluate_tokenizer
from tokenforge.metrics.audio import mel_distance, si_snr
from tokenforge.metrics.mesh import occupancy_iou
from tokenforge.tokenizers.vat.cli import packed_bytes
from tokenforge.tokenizers.vat.model import VAT
from tokenforge.tokenizers.vat.module import VATModule, mesh_inputs
from tokenforge.config_models import compose

REPO = Path(__file__).resolve().parents[1]
VAT_TINY = dict(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, num_latents=16, latent_dim=8,
                codebook_size=64, scales=[1, 2, 4, 8, 16], triplane_resolution=8, triplane_channels=16,
                triplane_upsample=1, mlp_hidden=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def samples(folder: Path, split: str) -> list[dict]:
    return list(wds.WebDataset(sorted(glob.glob(str(folder / f"{split}-*.tar"))), shardshuffle=False))


def test_audio_tokenizer(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for path in sorted((shared_data / "speech24k").glob("*.flac"))[:4]:
        (src / path.name).write_bytes(path.read_bytes())
    make_shards("audio", src, tmp_path / "raw", val_fraction=0.5, sample_rate=24000, segment_seconds=1.0,
                progress=False)
    torch.manual_seed(0)
    model = build(compose(REPO / "configs/tokenizers/wavtokenizer/tiny.yaml")
                  ["model"]["init_args"]["model"]).eval()
    metrics = evaluate_tokenizer(model, tmp_path / "raw", tmp_path / "eval", max_items=3, progress=False)
    clips = [AudioDecoder(24000, None, train=False)(s)["audio"] for s in samples(tmp_path / "raw", "val")][:3]
    assert metrics["protocol"]["n_items"] == len(clips) >= 1
    assert metrics["protocol"]["sizes"]["sample_rate"] == model.sample_rate == 24000
    with torch.no_grad():
        recon = [model.decode(model.encode(c[None])).reshape(1, -1) for c in clips]
        mel = [float(mel_distance(r, c[None], 24000)) for r, c in zip(recon, clips)]
        snr = [float(si_snr(r, c[None])) for r, c in zip(recon, clips)]
        frames = [model.encode(c[None]).ids[0].numel() for c in clips]
    assert metrics["mel_distance"]["mean"] == pytest.approx(sum(mel) / len(mel), rel=1e-4)
    assert metrics["si_snr_db"]["mean"] == pytest.approx(sum(snr) / len(snr), rel=1e-4, abs=1e-3)
    bits = math.ceil(math.log2(model.vocab_size))
    expected = sum(f * bits / 8 / (c.shape[-1] / 24000) for f, c in zip(frames, clips)) / len(clips)
    assert metrics["bytes_per_second"] == pytest.approx(expected, rel=1e-6)
    assert metrics["stft_distance"]["mean"] > 0 and "pesq" in metrics and "stoi" in metrics


def test_mesh_tokenizer(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ["icosahedron", "3torus", "eight", "sphere966"]:
        (src / f"{name}.ply").write_bytes((shared_data / "meshes" / f"{name}.ply").read_bytes())
    make_shards("meshes", src, tmp_path / "raw", shard_size=2, val_fraction=0.5, progress=False, num_surface=512,
                num_vol=512, num_near=512)
    torch.manual_seed(0)
    module = VATModule(VAT(**VAT_TINY))
    from tokenforge.data.datamodule import ShardDataModule

    dm = ShardDataModule(train=str(tmp_path / "raw"), val=str(tmp_path / "raw"), modality="mesh", num_points=256,
                         num_queries=256, batch_size=2)
    dm.setup()
    train = next(iter(dm.loader(dm.train_urls, train=False)))
    opt = torch.optim.AdamW(module.model.parameters(), lr=3e-3)
    for step in range(30):  # a little fitting so that the decoded field has a surface to extract
        loss = module.losses(train, quantize=step >= 20)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = module.model.eval()
    metrics = evaluate_tokenizer(model, tmp_path / "raw", tmp_path / "eval", batch_size=2, num_points=256,
                                 num_queries=256, resolution=16, progress=False)
    decode = MeshDecoder(256, 256, train=False)
    batch = [decode(s) for s in samples(tmp_path / "raw", "val")]
    batch = {k: torch.stack([b[k] for b in batch]) for k in ("points", "normals", "queries", "occupancy", "near")}
    with torch.no_grad():
        planes = model.decode(model.encode(mesh_inputs(batch, model.use_normals)))
        iou = occupancy_iou(model.occupancy(planes, batch["queries"]) >= 0, batch["occupancy"] > 0.5)
    n = len(batch["points"])
    assert metrics["protocol"]["n_items"] == n >= 1 and metrics["protocol"]["sizes"]["queries"] == 256
    assert metrics["iou"]["mean"] == pytest.approx(float(iou.mean()), abs=1e-6)
    assert metrics["tokens_per_item"] == 31  # 1 + 2 + 4 + 8 + 16
    assert metrics["bytes_per_item"] == packed_bytes([1, 2, 4, 8, 16], 64) == 24
    chamfer = metrics["chamfer"]
    assert metrics["no_surface"] + chamfer["n"] == n and chamfer["n"] >= 1
    assert 0 < chamfer["mean"] < 2 and 0 <= metrics["f_score"]["mean"] <= 1
    assert metrics["iou"]["mean"] > 0


def test_ecar_reports_its_seeded_training_loss(tmp_path: Path) -> None:
    import json

    import numpy as np

    from tokenforge.data.shards import npy_bytes
    from tokenforge.evaluate import evaluate_generator
    from tokenforge.generators.ecar.model import ECAR

    rng = np.random.default_rng(0)
    latents = rng.normal(size=(6, 4, 8, 8)).astype(np.float16)
    with wds.TarWriter(str(tmp_path / "val-000000.tar")) as sink:
        for i, lat in enumerate(latents):
            sink.write({"__key__": f"k{i}", "latents.npy": npy_bytes(lat), "cls": str(i % 3).encode()})
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "tokens", "modality": "tokens", "latents": True}))
    torch.manual_seed(0)
    model = ECAR(latent_channels=4, scales=[2, 4, 8], dim=32, depth=2, num_heads=2, num_classes=3, head_width=32,
                 head_depth=2, batch_mul=2).eval()
    metrics = evaluate_generator(model, tmp_path, tmp_path / "eval", batch_size=4, seed=5, progress=False)
    x = torch.from_numpy(latents.astype(np.float32))
    labels = torch.tensor([i % 3 for i in range(6)])
    expected = 0.0
    with torch.no_grad():
        for index, start in enumerate(range(0, 6, 4)):
            torch.manual_seed(5 + index)
            expected += float(model(x[start:start + 4], labels[start:start + 4])) * len(x[start:start + 4])
    assert metrics["protocol"]["n_items"] == 6 and "nll_nats_per_token" not in metrics
    assert metrics["loss"] == pytest.approx(expected / 6, rel=1e-4) and "not a likelihood" in metrics["note"]
