"""WavTokenizerModule on the one GAN base: the official optimisers and schedule are the defaults, the deprecated
module arguments still set them, the encoder lr scale works with any optimiser callable, and the module
overrides only its losses, forwards and parameter choices (the step is `GANModule`'s)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from tokenforge.lr_schedulers import WarmupCosine, WarmupCosineLR
from tokenforge.tokenizers.gan_module import GANModule
from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule

from test_wavtokenizer_train_parity import tiny_module  # tests/ is on sys.path


def configured(module: WavTokenizerModule, max_steps: int = 100) -> tuple[list, list]:
    module.trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    optimizers, schedulers = module.configure_optimizers()
    return optimizers, [s["scheduler"] for s in schedulers]


def rebuilt(module: WavTokenizerModule, **kwargs: object) -> WavTokenizerModule:
    return WavTokenizerModule(module.model, module.mpd, module.mrd, module.dac, evaluate_pesq=False, **kwargs)


def test_the_step_is_the_gan_base_and_only_losses_are_overridden() -> None:
    assert issubclass(WavTokenizerModule, GANModule)
    own = set(vars(WavTokenizerModule))
    assert {"training_step", "configure_optimizers", "gan_weight", "gan_active"}.isdisjoint(own)
    assert {"generator_losses", "discriminator_losses", "training_forward"} <= own


def test_official_optimisers_and_schedule_by_default() -> None:
    module = rebuilt(tiny_module(False))
    optimizers, schedulers = configured(module, max_steps=100)
    assert len(optimizers) == 2 and all(isinstance(o, torch.optim.AdamW) for o in optimizers)
    for optimizer in optimizers:
        assert optimizer.defaults["lr"] == 2e-4 and optimizer.defaults["betas"] == (0.9, 0.999)
        assert optimizer.defaults["weight_decay"] == 0.01
    for scheduler in schedulers:  # transformers' cosine with warm-up from 0, over max_steps // 2 batches
        assert isinstance(scheduler, WarmupCosineLR) and scheduler.factor.total_steps == 50
        assert scheduler.factor.warmup_from_zero and scheduler.factor.warmup_steps == 0
    assert module.discriminator_first and module.disc_start == 0


def test_deprecated_arguments_and_encoder_lr_scale() -> None:
    module = rebuilt(tiny_module(False), learning_rate=5e-4, disc_learning_rate=5e-5, encoder_lr_scale=0.1,
                     num_warmup_steps=10, num_training_steps=40)
    (gen, disc), schedulers = configured(module)
    encoder = {id(p) for p in module.model.encoder.parameters()}
    assert [g["initial_lr"] for g in gen.param_groups] == pytest.approx([5e-4, 5e-5])
    assert {id(p) for p in gen.param_groups[1]["params"]} == encoder
    assert disc.param_groups[0]["initial_lr"] == pytest.approx(5e-5)
    assert [(s.factor.total_steps, s.factor.warmup_steps) for s in schedulers] == [(40, 10), (40, 10)]
    assert gen.param_groups[0]["lr"] == 0.0  # warm-up from 0, as transformers' schedule


@pytest.mark.parametrize("official", [True, False], ids=["official", "ours"])
def test_dac_discriminator_in_the_optimiser_only_when_trained(official: bool) -> None:
    module = tiny_module(official)
    (_, disc), _ = configured(module)
    held = {id(p) for g in disc.param_groups for p in g["params"]}
    assert {id(p) for p in module.mpd.parameters()} <= held
    assert ({id(p) for p in module.dac.parameters()} <= held) != official
    with pytest.raises(ValueError, match="no discriminator to train"):
        WavTokenizerModule(module.model, dac_disc=module.dac, train_dac_discriminator=False)


def test_default_schedule_is_transformers_cosine_with_warmup() -> None:
    """The official ``get_cosine_schedule_with_warmup`` factor (then held at 0 after the run, where transformers'
    would rise again)."""
    f = WarmupCosine(100, warmup_from_zero=True)
    assert f(0) == 1.0 and math.isclose(f(50), 0.5, abs_tol=1e-12) and f(100) == 0.0 and f(150) == 0.0
    assert math.isclose(f(25), 0.5 * (1 + math.cos(math.pi / 4)))
    warm = WarmupCosine(100, 10, warmup_from_zero=True)
    assert warm(5) == 0.5 and warm(10) == 1.0
