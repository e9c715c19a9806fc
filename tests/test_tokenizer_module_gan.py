"""`GANModule`, the one GAN step under `TokenizerModule`: phase order (generator first or discriminator first),
the GAN start counted in generator steps and kept in checkpoints, the linear GAN ramp, schedulers stepped per
batch (the discriminator's only once it trains), and the run length in generator steps."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from test_vqgan import load_images, tiny_vqgan  # tests/ is on sys.path (pytest's default import mode)
from torch.utils.data import DataLoader

from tokenforge.tokenizers.base import TokenizerModule
from tokenforge.tokenizers.gan_module import GANModule
from tokenforge.tokenizers.losses.patch import NLayerDiscriminator


@pytest.fixture(scope="module")
def images(shared_data: Path) -> torch.Tensor:
    return load_images(shared_data / "images", 16)


def loader(images: torch.Tensor, steps: int) -> DataLoader:
    return DataLoader([{"image": images}] * steps, batch_size=None)


def trainer(steps: int, **kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


def disc_weights(module: TokenizerModule) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.discriminator.parameters()])


class Phases(TokenizerModule):
    """Notes each phase and the discriminator's weights the generator phase is judged by."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.phases: list[str] = []
        self.judged_by: list[torch.Tensor] = []
        self.batch_start: list[torch.Tensor] = []

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.batch_start.append(disc_weights(self))

    def generator_losses(self, x, out, adversarial):
        self.phases.append("g")
        self.judged_by.append(disc_weights(self))
        return super().generator_losses(x, out, adversarial)

    def discriminator_losses(self, x, out):
        self.phases.append("d")
        return super().discriminator_losses(x, out)


def make(cls=TokenizerModule, **kw) -> TokenizerModule:
    torch.manual_seed(0)
    return cls(tiny_vqgan(), NLayerDiscriminator(ndf=8, n_layers=2), perceptual=None, **kw)


@pytest.mark.parametrize("discriminator_first", [False, True])
def test_phase_order(images: torch.Tensor, discriminator_first: bool, one_thread) -> None:
    module = make(Phases, disc_start=1, discriminator_first=discriminator_first)
    t = trainer(5)  # 1 + 2 + 2 optimiser steps = 3 batches
    t.fit(module, loader(images, 3))
    assert int(module.generator_step) == 3 and t.global_step == 5
    if discriminator_first:  # WavTokenizer / Vocos: the generator is judged by the updated discriminator
        assert module.phases == ["g", "d", "g", "d", "g"]
        assert not torch.equal(module.judged_by[2], module.batch_start[2])
    else:  # taming / LlamaGen: both phases see the batch's starting discriminator
        assert module.phases == ["g", "g", "d", "g", "d"]
        assert torch.equal(module.judged_by[2], module.batch_start[2])
    assert module.phases.count("g") == 3 and all(torch.isfinite(w).all() for w in module.judged_by)


def test_gan_start_is_kept_in_checkpoints(images: torch.Tensor, tmp_path: Path, one_thread) -> None:
    module = make(disc_start=2)
    t = trainer(4)  # 1 + 1 + 2: the GAN is on in the third batch
    t.fit(module, loader(images, 5))
    assert int(module.generator_step) == 3 and module.gan_active
    t.save_checkpoint(tmp_path / "gan.ckpt")
    state = torch.load(tmp_path / "gan.ckpt", weights_only=True)["state_dict"]
    assert int(state["generator_step"]) == 3
    fresh = make(disc_start=2)
    assert not fresh.gan_active
    fresh.load_state_dict(state)
    assert int(fresh.generator_step) == 3 and fresh.gan_active


def test_linear_gan_ramp(images: torch.Tensor) -> None:
    module = make(disc_start=2, gan_ramp_steps=4, adversarial_weight=0.5).train()
    weights = []
    for step in range(8):
        module.generator_step.fill_(step)
        weights.append((module.gan_active, module.gan_weight))
    assert weights == [(False, 0.0), (False, 0.0), (True, 0.25), (True, 0.5), (True, 0.75), (True, 1.0),
                       (True, 1.0), (True, 1.0)]
    module.generator_step.fill_(3)  # ramp 0.5: total = reconstruction + aux + 0.5 * 0.5 * adversarial
    x, out = module.training_forward({"image": images})
    g = module.generator_losses(x, out, True)
    assert torch.allclose(g["loss"], g["l2"] + g["aux"] + 0.25 * g["adversarial"], atol=1e-6)
    assert abs(g["adversarial"].item()) > 1e-4  # the ramp's factor shows in the total


def test_schedulers_step_per_batch_and_run_length_counts_generator_steps(images: torch.Tensor, one_thread) -> None:
    def halve(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    module = make(disc_start=2, lr_scheduler=halve, disc_lr_scheduler=halve)
    t = trainer(8)  # 1 + 1 + 2 + 2 + 2: 5 batches, the discriminator trains in 3
    t.fit(module, loader(images, 6))
    generator, discriminator = (opt.param_groups[0]["lr"] for opt in t.optimizers)
    assert int(module.generator_step) == 5
    assert generator == pytest.approx(1e-4 * 0.5 ** 5) and discriminator == pytest.approx(1e-4 * 0.5 ** 3)
    assert module.run_length() == 2 + (8 - 2) // 2  # schedules get their length in generator steps
    alone = TokenizerModule(tiny_vqgan(), perceptual=None, disc_start=2)
    alone._trainer = t
    assert alone.run_length() == 8 and not alone.gan_active  # no discriminator: one optimiser step per batch


def test_subclasses_override_only_their_losses() -> None:
    overridden = {name for name in vars(TokenizerModule) if callable(getattr(GANModule, name, None))}
    assert "training_step" not in vars(TokenizerModule) and "configure_optimizers" not in vars(TokenizerModule)
    assert {"generator_losses", "discriminator_losses", "discriminator_parameters"} <= overridden
    with pytest.raises(ValueError, match="disc_start"):
        make(disc_start=-1)
