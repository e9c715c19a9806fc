"""TokenizerModule / VQGANModule training: loss goes down on real images, the GAN switches on at disc_start,
gradients are clipped, validation logs PSNR, and `tokenforge fit` with the tiny config writes a checkpoint
that `hub.from_pretrained` restores exactly."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from test_vqgan import load_images, tiny_vqgan  # tests/ is on sys.path (pytest's default import mode)
from torch.utils.data import DataLoader

from tokenforge import hub
from tokenforge.tokenizers.base import TokenizerModule
from tokenforge.tokenizers.losses.patch import NLayerDiscriminator
from tokenforge.tokenizers.vqgan import VQGAN
from tokenforge.tokenizers.vqgan.module import VQGANModule
from tokenforge.config_models import fit_args

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(shared_data: Path) -> torch.Tensor:
    return load_images(shared_data / "images")


def loader(images: torch.Tensor, steps: int) -> DataLoader:
    return DataLoader([{"image": images, "__key__": ["k"] * len(images)}] * steps, batch_size=None)


def trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


class Record(pl.Callback):
    """Keeps every training_step output and a copy of the discriminator's weights after each batch."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, torch.Tensor]] = []
        self.disc: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.outputs.append(outputs)
        if module.discriminator is not None:
            self.disc.append(torch.cat([p.detach().flatten().clone() for p in module.discriminator.parameters()]))


@pytest.mark.learning
def test_reconstruction_loss_decreases_on_real_images(images: torch.Tensor) -> None:
    module = TokenizerModule(tiny_vqgan(), perceptual_weight=0.0,
                             optimizer=lambda params: torch.optim.Adam(params, lr=2e-3, betas=(0.9, 0.95)))
    record = Record()
    t = trainer(25)
    t.callbacks.append(record)
    module.eval()
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(module.model(images).x_hat, images).item()
    module.train()  # Lightning 2.6 keeps the mode it is given
    t.fit(module, loader(images, 25))
    module.eval()
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(module.model(images).x_hat, images).item()
    l2 = [o["l2"].item() for o in record.outputs]
    assert len(l2) == 25 and int(module.generator_step) == 25 and t.global_step == 25
    assert after < 0.5 * before, (before, after)
    assert sum(l2[-5:]) / 5 < 0.5 * sum(l2[:5]) / 5, l2
    assert set(record.outputs[0]) == {"aux", "l2", "loss"}  # no discriminator, no perceptual network


def test_discriminator_trains_only_after_disc_start(images: torch.Tensor) -> None:
    module = VQGANModule(tiny_vqgan(), NLayerDiscriminator(ndf=16, n_layers=2), perceptual=None, disc_start=2,
                         adversarial_weight=0.5, feature_matching_weight=1.0)
    initial = torch.cat([p.detach().flatten().clone() for p in module.discriminator.parameters()])
    record = Record()
    t = trainer(6)  # optimiser steps: 1 + 1 (generator only) + 2 + 2 (generator and discriminator)
    t.callbacks.append(record)
    t.fit(module, loader(images, 10))
    assert int(module.generator_step) == 4 and t.global_step == 6
    assert torch.equal(record.disc[0], initial) and torch.equal(record.disc[1], initial)
    assert not torch.equal(record.disc[2], initial) and not torch.equal(record.disc[3], record.disc[2])
    assert ["adversarial" in o for o in record.outputs] == [False, False, True, True]
    late = record.outputs[2]
    expected = late["l2"] + late["aux"] + 0.5 * late["adversarial"] + 1.0 * late["feature_matching"]
    assert torch.allclose(late["loss"], expected)
    assert "train/d_loss" in t.callback_metrics and "train/d_logits_real" in t.callback_metrics


class RecordingAdam(torch.optim.Adam):
    """Adam that notes the global gradient norm it is asked to apply."""

    norms: list[float] = []

    def step(self, closure=None):
        grads = [p.grad.flatten() for g in self.param_groups for p in g["params"] if p.grad is not None]
        RecordingAdam.norms.append(torch.cat(grads).norm().item())
        return super().step(closure)


@pytest.mark.parametrize("clip", [1e-3, None])
def test_gradients_are_clipped_inside_the_step(images: torch.Tensor, clip: float | None) -> None:
    RecordingAdam.norms = []
    module = VQGANModule(tiny_vqgan(), NLayerDiscriminator(ndf=16, n_layers=2), disc_start=0,
                         gradient_clip_val=clip, optimizer=RecordingAdam, disc_optimizer=RecordingAdam)
    trainer(4).fit(module, loader(images, 4))  # 2 batches x (generator + discriminator)
    assert len(RecordingAdam.norms) == 4
    if clip is None:
        assert min(RecordingAdam.norms) > 1e-2
    else:
        assert max(RecordingAdam.norms) <= clip * (1 + 1e-3)


def test_validation_logs_psnr(images: torch.Tensor) -> None:
    module = TokenizerModule(tiny_vqgan(), perceptual_weight=0.0)
    t = trainer(1)
    t.validate(module, loader(images, 1), verbose=False)
    module.eval()
    with torch.no_grad():
        x_hat = module.model(images).x_hat.clamp(-1, 1)
    mse01 = ((x_hat - images) / 2).pow(2).flatten(1).mean(1)
    expected = (10 * torch.log10(1 / mse01)).mean()
    assert torch.allclose(t.callback_metrics["val/psnr"], expected, atol=1e-4)
    assert {"val/l2", "val/aux", "val/usage", "val/perplexity"} <= set(t.callback_metrics)


def test_batch_without_the_modality_key_is_explained(images: torch.Tensor) -> None:
    module = TokenizerModule(tiny_vqgan())
    with pytest.raises(KeyError, match=r"batch\['image'\].*audio"):
        module.inputs({"audio": images})


def test_fit_tiny_config_through_the_cli(tmp_path: Path, shared_data: Path) -> None:
    from tokenforge.cli import lightning_cli
    from tokenforge.data.shards import make_shards

    make_shards("images", str(shared_data / "images" / "*.png"), tmp_path / "shards", max_side=64,
                val_fraction=0.25, progress=False)
    cli = lightning_cli(args=[
        "fit", *fit_args(REPO / "configs/tokenizers/vqgan/tiny.yaml"),
        "--data.init_args.train", str(tmp_path / "shards"), "--data.init_args.val", str(tmp_path / "shards"),
        "--trainer.max_steps", "5", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.enable_progress_bar", "false",
    ])
    assert cli.trainer.global_step >= 5 and int(cli.model.generator_step) == 4  # disc_start 2: 1+1+2+2 steps
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints, "fit wrote no checkpoint"
    restored = hub.from_pretrained(checkpoints[-1])
    assert isinstance(restored, VQGAN) and restored.init_args == cli.model.model.init_args
    trained = cli.model.model.eval()
    x = load_images(shared_data / "images")
    with torch.no_grad():
        a, b = trained(x), restored(x)
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.tokens.ids, b.tokens.ids)
    assert "discriminator.main.0.weight" in torch.load(checkpoints[-1], weights_only=True)["state_dict"]


def test_llamagen_ds16_config_builds_the_paper_model(tmp_path: Path) -> None:
    from tokenforge.cli import lightning_cli

    cli = lightning_cli(args=[
        *fit_args(REPO / "configs/tokenizers/vqgan/llamagen_ds16.yaml"), "--model.init_args.perceptual", "null",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
    ], run=False)
    model, quantizer = cli.model.model, cli.model.model.quantizer
    assert (quantizer.codebook_size, quantizer.dim, quantizer.l2_normalize) == (16384, 8, True)
    assert model.downsample_factor == 16 and model.quant_conv.weight.shape == (8, 256, 1, 1)
    assert sum(p.numel() for p in model.parameters()) == 71_883_403  # LlamaGen reports 72M for vq_ds16
    assert cli.model.disc_start == 20000 and cli.model.weights["adversarial"] == 0.5
