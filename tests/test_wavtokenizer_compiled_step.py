"""WavTokenizerModule ``compile`` switch: compiled training forwards give the eager step's losses.

The switch (docs/speed.md) runs the encoder, backbone, mel loss and discriminators through
``torch.compile`` in training only. Here the tiny config trains 2 GAN batches (discriminator step, then generator
step, AdamW) twice from the same weights and random state: eagerly and compiled. Dynamo traces the same
graphs on any backend; the CPU test uses ``aot_eager`` (Dynamo + AOTAutograd, the forward and backward graphs
inductor would receive, run by eager kernels) so it takes seconds; inductor's kernels are checked on a GPU by
tools/bench/wavtokenizer_train.py (first losses of each variant). Measured on CPU (torch 2.11): the losses are
identical; the test allows 1e-4 relative for other kernel sets. About 50 s of CPU, almost all Dynamo tracing.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tokenforge.config_models import build_training_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tokenizers" / "wavtokenizer"
CROP, BATCH, STEPS = 6400, 2, 2
OPTIONS = {"backend": "aot_eager"}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    torch.manual_seed(0)
    return build_training_module([CONFIGS / "base.yaml", CONFIGS / "tiny.yaml"],
                                 {"evaluate_pesq": False, "pretrain_mel_steps": 0, **overrides})


def audio(seed: int) -> torch.Tensor:
    """Deterministic speech-like crops: a few harmonics with a moving pitch plus noise, peak 0.5."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(CROP) / 24000
    f0 = 120 + 80 * torch.rand(BATCH, 1, generator=g)
    x = sum(torch.sin(2 * torch.pi * k * f0 * t * (1 + 0.1 * t)) / k for k in (1, 2, 3))
    x = x + 0.05 * torch.randn(BATCH, CROP, generator=g)
    return 0.5 * x / x.abs().amax(dim=1, keepdim=True)


def train(module, steps: int = STEPS) -> list[dict[str, float]]:
    """GANModule's step without a Trainer: forward, discriminator update, generator update (discriminators
    frozen), per batch; the named losses of every step."""
    module.train()
    gen = torch.optim.AdamW([p for p in module.model.parameters() if p.requires_grad], lr=1e-3)
    disc = torch.optim.AdamW(module.discriminator_parameters(), lr=1e-3)
    bw = torch.tensor([1])
    torch.manual_seed(1)
    history = []
    for i in range(steps):
        x = audio(i)
        out, fake = module.batch_forwards(x, bw, adversarial=True)
        d = module.discriminator_phase(x, fake, bw)
        disc.zero_grad()
        d.loss.backward()
        disc.step()
        for net in module.discriminators:
            net.requires_grad_(False)
        g = module.generator_phase(x, out.x_hat, out.aux_loss, bw, adversarial=True)
        gen.zero_grad()
        g.loss.backward()
        gen.step()
        for net in module.discriminators:
            net.requires_grad_(True)
        history.append({"d": float(d.loss.detach()), **{k: float(v.detach()) for k, v in g.named().items()}})
    return history


def test_compiled_step_gives_the_eager_losses() -> None:
    eager = train(tiny())
    compiled_module = tiny(compile=True, compile_options=OPTIONS)
    compiled = train(compiled_module)
    assert set(compiled_module._compiled) == {"encoder", "backbone", "mel", "mpd", "mrd", "dac"}
    for step, (a, b) in enumerate(zip(eager, compiled)):
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), (step, name, a[name], b[name])
    worst = max(abs(b[k] - a[k]) / max(abs(a[k]), 1e-6) for a, b in zip(eager, compiled) for k in a)
    print(f"compiled vs eager: largest relative loss difference {worst:.2e}")
    # the run moved: losses of the last step differ from the first (the comparison is not of a frozen model)
    assert eager[-1]["loss"] != pytest.approx(eager[0]["loss"], rel=1e-3)


def test_compile_switch_keeps_checkpoints_and_inference_eager() -> None:
    module = tiny(compile=True, compile_options=OPTIONS)
    plain = tiny()
    assert list(module.state_dict()) == list(plain.state_dict())  # no _orig_mod keys: wrappers are not submodules
    module.train()
    assert module.net("mpd", module.mpd) is not module.mpd
    module.eval()
    assert module.net("mpd", module.mpd) is module.mpd  # validation and inference run the eager networks
    copied = copy.deepcopy(module)
    assert copied._compiled == {} and module._compiled  # copies rebuild their own wrappers
    assert module.hparams.compile is True and module.hparams.compile_options == OPTIONS


def test_compile_parts_choose_the_networks() -> None:
    module = tiny(compile=True, compile_options=OPTIONS, compile_parts=["encoder", "backbone", "mpd"]).train()
    assert module.net("mpd", module.mpd) is not module.mpd
    assert module.net("dac", module.dac) is module.dac and module.net("mel", module.mel_loss) is module.mel_loss
    with pytest.raises(ValueError, match="unknown"):
        tiny(compile=True, compile_parts=["head"])
