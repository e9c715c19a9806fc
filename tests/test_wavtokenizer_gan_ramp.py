"""WavTokenizer short runs (issue 4): held-out mel must keep falling when the GANs join after the mel-only warm-up.

Cause (CPU diagnosis, docs/methods/wavtokenizer.md "Short runs"): when the discriminators join, the DAC
feature-matching term (L1 summed over every layer of 8 untrained sub-discriminators, not averaged) sends the shared
decoder a gradient 1.2-1.35x (tiny size, after the warm-up) to 3.2x (paper size) that of 45 x mel, almost orthogonal
to it (cosine -0.07..0.04); every other GAN term is < 2 % of mel. Adam normalises the sum, so the first GAN steps
mostly follow feature matching of random features and the held-out mel gets worse. ``gan_ramp_steps`` raises
the adversarial and feature-matching weights linearly from 0 to the paper's values instead.
The test: the same tiny model, warmed up on mel only, then continued with the GANs at once (the old short
recipe) and with the ramp, on real speech; held-out mel on clips of other files. The discriminators use the
decoder's lr (5e-4): the jump comes from their features at initialisation, so it does not depend on it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from test_wavtokenizer_codebook import batches, speech_clips  # tests/ is on sys.path

from tokenforge.config import build
from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule
from tokenforge.config_models import compose

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tokenizers" / "wavtokenizer"
CROP, MEL_STEPS, GAN_STEPS, EVERY, RAMP = 12000, 40, 12, 4, 200

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.learning]  # tests/conftest.py, tests/README.md


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> tuple[list[torch.Tensor], torch.Tensor]:
    return speech_clips(shared_data, 100)


@torch.no_grad()
def held_out_mel(m: WavTokenizerModule, clips: torch.Tensor) -> float:
    m.eval()
    mel = float(m.mel_loss(m.model(clips).x_hat, clips))
    m.train()
    return mel


def update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler) -> None:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def step(m: WavTokenizerModule, x: torch.Tensor, optimizers: list, schedulers: list) -> None:
    """`WavTokenizerModule.training_step` without a Trainer: discriminator step, then generator step."""
    bw = torch.zeros(1, dtype=torch.long)
    adversarial = m.gan_active
    out = m.model(x, bw)
    if adversarial:
        update(m.discriminator_phase(x, out.x_hat.detach(), bw).loss, optimizers[1], schedulers[1])
    for disc in m.discriminators:
        disc.requires_grad_(False)
    update(m.generator_phase(x, out.x_hat, out.aux_loss, bw, adversarial).loss, optimizers[0], schedulers[0])
    for disc in m.discriminators:
        disc.requires_grad_(True)
    m.generator_step += 1


def curves(speech, ramps: tuple[int, ...]) -> dict[int, list[float]]:
    """Held-out mel every EVERY batches after the GANs join (the warm-up's end first), per ``gan_ramp_steps``."""
    data, clips = speech
    cfg = compose(CONFIGS / "tiny.yaml")["model"]["init_args"]
    torch.manual_seed(0)
    warm = WavTokenizerModule(build(cfg["model"]), build(cfg["multiperiod_disc"]), build(cfg["multiresolution_disc"]),
                              build(cfg["dac_disc"]), learning_rate=5e-4, encoder_lr_scale=0.04, num_warmup_steps=10,
                              num_training_steps=20000, pretrain_mel_steps=MEL_STEPS, evaluate_pesq=False)
    optimizers, schedulers = warm.configure_optimizers()
    schedulers = [s["scheduler"] for s in schedulers]
    for x in batches(data, MEL_STEPS, seed=0):
        step(warm, x, optimizers, schedulers)
    out = {}
    for ramp in ramps:
        m = copy.deepcopy(warm)
        m.hparams.gan_ramp_steps = m.gan_ramp_steps = ramp  # GANModule reads the attribute
        opts, scheds = m.configure_optimizers()
        opts[0].load_state_dict(optimizers[0].state_dict())
        scheds = [s["scheduler"] for s in scheds]
        scheds[0].load_state_dict(schedulers[0].state_dict())
        curve = [held_out_mel(m, clips)]
        torch.manual_seed(1)
        for i, x in enumerate(batches(data, GAN_STEPS, seed=1), 1):
            step(m, x, opts, scheds)
            if i % EVERY == 0:
                curve.append(held_out_mel(m, clips))
        out[ramp] = curve
    return out


def test_gan_weight_ramps_from_zero_to_the_paper_weights() -> None:
    cfg = compose(CONFIGS / "tiny.yaml")["model"]["init_args"]
    m = WavTokenizerModule(build(cfg["model"]), build(cfg["multiperiod_disc"]), pretrain_mel_steps=5,
                           gan_ramp_steps=4, evaluate_pesq=False)
    weights = []
    for k in range(11):
        m.generator_step.fill_(k)
        weights.append((m.gan_active, m.gan_weight))
    assert weights[:5] == [(False, 0.0)] * 5
    assert weights[5:] == [(True, 0.25), (True, 0.5), (True, 0.75), (True, 1.0), (True, 1.0), (True, 1.0)]
    x = torch.randn(2, CROP) * 0.1
    m.generator_step.fill_(6)  # weight 0.5: total = 45 mel + 1000 commit + 0.5 * (adversarial + feature matching)
    terms = m.generator_phase(x, x.flip(-1), torch.tensor(1e-4), torch.zeros(1, dtype=torch.long), True).named()
    gan = terms["g_mpd"] + terms["fm_mpd"]
    expected = float((45 * terms["mel"] + 0.1 + 0.5 * gan).detach())
    assert float(terms["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    assert WavTokenizerModule(build(cfg["model"]), build(cfg["multiperiod_disc"])).gan_weight == 1.0  # the paper
    short = compose(CONFIGS / "short_75.yaml")["model"]["init_args"]
    assert short["gan_ramp_steps"] > 0 and short["mel_loss_coeff"] == 45.0  # the paper's weights stay the end point


def test_held_out_mel_keeps_falling_when_the_gans_join(speech) -> None:
    """Margins, not the curve: the warm-up's float rounding moves the whole curve by up to 0.06 between CPUs and
    instruction sets (tests/README.md). Measured after the discriminators' last feature map gained the conditional
    term (official; wavtokenizer_train fixture), warm-up end then every 4 batches, GANs at once / ramped:
    default kernels (AVX-512) [1.674, 1.691, 1.712, 1.691] / [1.674, 1.662, 1.657, 1.647];
    AVX2 [1.669, 1.670, 1.682, 1.658] / [1.669, 1.650, 1.638, 1.650];
    no vectorisation (ATEN_CPU_CAPABILITY=default) [1.669, 1.688, 1.704, 1.681] / [1.669, 1.656, 1.651, 1.652].
    The ramped curve is not monotone everywhere (AVX2: +0.012 at the last point, within one batch's noise), so the
    test asserts what holds under all three: after the join it never comes back to where it was, ends lower, and
    the GANs-at-once curve is worse."""
    result = curves(speech, (0, RAMP))
    old, ramp = result[0], result[RAMP]
    print("held-out mel, GANs at once:", [round(v, 4) for v in old], "ramped:", [round(v, 4) for v in ramp])
    assert old[0] == ramp[0]  # the same warmed-up model
    assert max(ramp[1:]) < ramp[0] - 0.005, ramp  # ramped: below the join point throughout (0.012 / 0.019 / 0.013)
    assert ramp[-1] < ramp[0] - 0.01, ramp  # ... and down overall (by 0.027 / 0.019 / 0.017)
    gap = sum(old[1:]) / len(old[1:]) - sum(ramp[1:]) / len(ramp[1:])
    assert gap > 0.01, (old, ramp)  # GANs at once: worse than the ramp after the join (by 0.043 / 0.024 / 0.038)
