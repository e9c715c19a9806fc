"""E-CAR model: block-causal stages, the multistage flow reproduces data under an oracle velocity, training lowers
the flow loss on real-image latents, CFG / stage-count / step options, hub round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_vqgan import load_images  # tests/ is on sys.path

from tokenforge import hub
from tokenforge.generators.ecar.model import ECAR, resize

TINY = {"latent_channels": 4, "scales": [2, 4, 8], "dim": 32, "depth": 2, "num_heads": 2, "num_classes": 3,
        "head_width": 32, "head_depth": 2, "batch_mul": 2}


def test_block_causal_stages_and_shapes() -> None:
    torch.manual_seed(0)
    model = ECAR(**TINY).eval()
    x = torch.randn(2, 4, 8, 8)
    maps = model.maps(x)
    assert [m.shape[-1] for m in maps] == [2, 4, 8] and torch.allclose(maps[0][0, 0, 0, 0], x[0, 0, :4, :4].mean())
    cond = model.condition(torch.tensor([0, 1]), 2, x.device)
    z = model.transformer_out(maps[:-1], cond)
    assert z.shape == (2, 4 + 16 + 64, 32)
    z2 = model.transformer_out([maps[0], maps[1] + 1.0], cond)  # M_2 only feeds stage 3
    assert torch.allclose(z[:, :20], z2[:, :20], atol=1e-6) and not torch.allclose(z[:, 20:], z2[:, 20:])


def test_oracle_velocity_recovers_the_data_point() -> None:
    """The stage segments, the exact clean-map recovery and the re-noised transitions are consistent."""
    model = ECAR(**TINY).eval()
    target = torch.randn(1, 4, 8, 8)
    maps = model.maps(target)

    def oracle(x, tau, z):
        s = max(i for i in range(3) if tau[0] >= model.bounds[i] - 1e-9)
        a, e, size = model.bounds[s], model.bounds[s + 1], model.scales[s]
        prev = resize(maps[s - 1], size) if s else torch.zeros(1, 4, size, size)
        tok = lambda m: m.flatten(2).transpose(1, 2).reshape(-1, 4)  # noqa: E731
        u = (tau[:, None] - a) / (e - a)
        eps = (x - (1 - u) * a * tok(prev) - u * e * tok(maps[s])) / (1 - tau[:, None])
        return e * tok(maps[s]) - a * tok(prev) - (e - a) * eps

    model.velocity = oracle
    out = model.sample_latents(torch.tensor([1]), steps=[2, 3, 4])
    assert torch.allclose(out, target, atol=1e-4)
    preview = model.sample_latents(torch.tensor([1]), steps=2, num_stages=2)
    assert torch.allclose(preview, resize(maps[1], 8), atol=1e-4)


@pytest.mark.learning
def test_training_lowers_the_flow_loss_on_real_latents(shared_data: Path) -> None:
    torch.manual_seed(0)
    images = load_images(shared_data / "images", size=16)  # real photos as 4x8x8 "latents": pixel-unshuffle
    latents = torch.nn.functional.pixel_unshuffle(images, 2)[:, :4]
    model = ECAR(**TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        loss = model(latents, torch.arange(len(latents)) % 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


def test_options_and_errors(tmp_path: Path) -> None:
    model = ECAR(**TINY).eval()
    torch.manual_seed(1)
    a = model.sample_latents(torch.tensor([0, 2]), steps=2, cfg=3.0)
    assert a.shape == (2, 4, 8, 8) and a.isfinite().all()
    with pytest.raises(ValueError, match="latents"):
        model(torch.randn(1, 4, 4, 4))
    with pytest.raises(ValueError, match="steps"):
        model.sample_latents(torch.tensor([0]), steps=[1, 2])
    with pytest.raises(ValueError, match="bounds"):
        ECAR(**{**TINY, "bounds": [0.0, 0.5, 0.4, 1.0]})
    hub.save_pretrained(model, tmp_path / "ecar")
    again = hub.from_pretrained(tmp_path / "ecar").eval()
    g = torch.Generator().manual_seed(3)
    h = torch.Generator().manual_seed(3)
    assert torch.equal(model.sample_latents(torch.tensor([1]), 2, generator=g), again.sample_latents(torch.tensor([1]), 2, generator=h))
