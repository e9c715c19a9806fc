"""LinFusion distillation: both distillation losses fall on real photos, only LinFusion trains, `tokenforge fit`
runs the tiny config on real shards and its checkpoint restores the LinFusion modules."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from test_vqgan import load_images  # tests/ is on sys.path
from torch.utils.data import DataLoader

from tokenforge import hub
from tokenforge.generators.linfusion import LinFusion
from tokenforge.generators.linfusion.module import LinFusionDistillModule
from tokenforge.config_models import build_training_module, fit_args

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs/generators/linfusion/tiny.yaml"
CAPTIONS = ["an astronaut", "a cat", "a cup of coffee", "a motorcycle"]


@pytest.fixture(scope="module")
def batch(shared_data: Path) -> dict:
    names = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png")
    return {"image": load_images(shared_data / "images", 32, names), "txt": CAPTIONS, "__key__": list(names)}


def fixed_losses(module: LinFusionDistillModule, batch: dict) -> dict[str, float]:
    torch.manual_seed(123)  # same latents sample, noise and timesteps every call
    with torch.no_grad():
        return {k: v.item() for k, v in module.losses(batch).items()}


def train(module: LinFusionDistillModule, batch: dict, steps: int) -> None:
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader([batch] * steps, batch_size=None))


@pytest.mark.learning
def test_distillation_losses_fall_and_only_linfusion_trains(batch: dict) -> None:
    module = build_training_module(TINY_CONFIG)
    frozen = {k: v.clone() for k, v in module.parts.unet.state_dict().items() if ".attn1." not in k}
    teacher = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    assert all(p.requires_grad for p in module.model.parameters())
    assert not any(p.requires_grad for n, p in module.parts.unet.named_parameters() if ".attn1." not in n)
    before = fixed_losses(module, batch)
    train(module, batch, 25)
    after = fixed_losses(module, batch)
    # official weights: the noise term dominates a random teacher; it and the per-layer term both fall
    assert after["loss_noise"] < 0.97 * before["loss_noise"], (before, after)
    assert after["loss_feat"] < 0.8 * before["loss_feat"], (before, after)
    assert after["loss"] < before["loss"]
    state = module.parts.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert all(torch.equal(module.teacher.state_dict()[k], v) for k, v in teacher.items())
    assert set(module.state_dict()) == {f"model.{k}" for k in module.model.state_dict()}


@pytest.mark.learning
def test_pure_distillation_brings_the_student_to_the_teacher(batch: dict) -> None:
    module = build_training_module(TINY_CONFIG, {"loss_weights": {"loss_noise": 0.0}})
    before = fixed_losses(module, batch)
    train(module, batch, 25)
    after = fixed_losses(module, batch)
    assert after["loss_kd"] < 0.7 * before["loss_kd"], (before, after)
    assert after["loss_feat"] < 0.7 * before["loss_feat"], (before, after)


def test_fit_tiny_config_through_the_cli(tmp_path: Path, shared_data: Path) -> None:
    from tokenforge.cli import lightning_cli
    from tokenforge.data.shards import make_shards

    make_shards("images", str(shared_data / "images" / "*.png"), tmp_path / "shards", max_side=64,
                val_fraction=0.25, progress=False)
    cli = lightning_cli(args=[
        "fit", *fit_args(REPO / "configs/generators/linfusion/tiny.yaml"),
        "--data.init_args.train", str(tmp_path / "shards"), "--data.init_args.val", str(tmp_path / "shards"),
        "--trainer.max_steps", "4", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.enable_progress_bar", "false",
    ])
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    restored = hub.from_pretrained(ckpts[-1])
    assert isinstance(restored, LinFusion)
    trained = cli.model.model.state_dict()
    assert all(torch.equal(restored.state_dict()[k], v.cpu()) for k, v in trained.items())
