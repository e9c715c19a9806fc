"""VAT training on real mesh shards: occupancy loss falls, the tiny config fits through the CLI, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenforge import hub
from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.shards import make_shards
from tokenforge.tokenizers.vat.model import VAT
from tokenforge.tokenizers.vat.module import VATModule, mesh_inputs
from tokenforge.config_models import fit_args

REPO = Path(__file__).resolve().parents[1]
MESHES = ["icosahedron", "3torus", "eight", "sphere966"]
TINY = dict(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, num_latents=16, latent_dim=8, codebook_size=64,
            scales=[1, 2, 4, 8, 16], triplane_resolution=8, triplane_channels=16, triplane_upsample=1, mlp_hidden=32)


@pytest.fixture(scope="module")
def shards(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("vat_src")
    for name in MESHES:
        (src / f"{name}.ply").write_bytes((shared_data / "meshes" / f"{name}.ply").read_bytes())
    out = tmp_path_factory.mktemp("vat_shards")
    make_shards("meshes", src, out, shard_size=2, val_fraction=0.5, progress=False, num_surface=512, num_vol=512, num_near=512)
    return out


def real_batch(shards: Path) -> dict:
    dm = ShardDataModule(train=str(shards), val=str(shards), modality="mesh", num_points=256, num_queries=256,
                         batch_size=2)
    dm.setup()
    return next(iter(dm.val_dataloader()))


@pytest.mark.learning
def test_occupancy_loss_decreases_on_a_real_batch(shards: Path) -> None:
    torch.manual_seed(0)
    batch = real_batch(shards)
    module = VATModule(VAT(**TINY), quantize_start=10)
    opt = torch.optim.AdamW(module.model.parameters(), lr=2e-3)
    history = []
    for step in range(40):
        terms = module.losses(batch, quantize=step >= 10)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        history.append((terms["bce_vol"].item(), terms["vq"].item()))
    assert history[0][1] == 0.0 and history[-1][1] > 0.0  # continuous warm-up, then the quantizer
    first = sum(h[0] for h in history[:3]) / 3
    last = sum(h[0] for h in history[-3:]) / 3
    assert last < 0.8 * first, (first, last)


def test_mesh_inputs_and_refusals(shards: Path) -> None:
    batch = real_batch(shards)
    x = mesh_inputs(batch, use_normals=True)
    assert x.shape == (2, 256, 6) and torch.equal(x[..., 3:], batch["normals"])
    model = VAT(**TINY).eval()
    with pytest.raises(ValueError, match="no normals"):
        model.encode(batch["points"])
    with pytest.raises(ValueError, match="empty point cloud"):
        model.encode(torch.zeros(1, 0, 6))
    with pytest.raises(KeyError, match="occupancy"):
        mesh_inputs({"points": batch["points"]}, True)
    no_normals = VAT(**{**TINY, "use_normals": False}).eval()
    assert [t.shape[1] for t in no_normals.encode(batch["points"]).ids] == [1, 2, 4, 8, 16]


def test_fit_tiny_config_through_the_cli(shards: Path, tmp_path: Path) -> None:
    from tokenforge.cli import lightning_cli

    cli = lightning_cli(args=[
        "fit", *fit_args(REPO / "configs/tokenizers/vat/tiny.yaml"),
        "--data.init_args.train", str(shards), "--data.init_args.num_points", "128",
        "--data.init_args.num_queries", "128", "--data.init_args.epoch_samples", "8",
        "--trainer.max_steps", "4", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.enable_progress_bar", "false",
    ])
    assert cli.trainer.global_step == 4
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints, "fit wrote no checkpoint"
    restored = hub.from_pretrained(checkpoints[-1])
    assert isinstance(restored, VAT)
    batch = real_batch(shards)
    x = mesh_inputs(batch, True)
    trained = cli.model.model.eval()
    with torch.no_grad():
        a, b = trained.encode(x), restored.eval().encode(x)
    assert all(torch.equal(i, j) for i, j in zip(a.ids, b.ids))
