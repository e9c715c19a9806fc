"""MAR peer parity (E-CAR's diffusion head): the fixture passes, and the diffusion math matches hand values."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from tokenforge.generators.ecar.diffloss import DiffLoss, SimpleMLPAdaLN, timestep_embedding
from tokenforge.generators.ecar.diffusion import GaussianDiffusion, cosine_betas, space_timesteps
from tokenforge.generators.ecar.mar import patchify, unpatchify
from tokenforge.hub import from_official
from tokenforge.parity import check, parity_function


def test_fixture_passes(fixtures_dir):
    lines = check(fixtures_dir / "mar")
    assert len(lines) == len(load_file(str(fixtures_dir / "mar" / "outputs.safetensors")))
    for line in lines:
        assert line.status == "ok", str(line)
    assert parity_function("mar") is not None


def test_loader_rebuilds_sizes_from_weights(fixtures_dir):
    model = from_official("mar", fixtures_dir / "mar")
    assert model.seq_len == 16 and model.buffer_size == 4 and len(model.encoder_blocks) == 2
    assert len(model.diffloss.net.res_blocks) == 2 and model.diffloss.gen_diffusion.num_timesteps == 10


def test_space_timesteps_by_hand():
    assert space_timesteps(1000, "10") == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert space_timesteps(10, "3") == [0, 4, 9]  # stride 4.5: round(4.5) = 4 (banker's), round(9.0) = 9
    assert space_timesteps(10, "") == list(range(10))


def test_cosine_schedule_and_respacing_keep_alphas_cumprod():
    betas = cosine_betas(1000)
    ac = torch.cumprod(1 - betas, 0)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abs(ac[499].item() - f(0.5) / f(0.0)) < 1e-12
    spaced = GaussianDiffusion(1000, "cosine", "10")
    assert torch.allclose(torch.cumprod(1 - spaced.betas, 0), ac[spaced.timestep_map], atol=1e-12, rtol=0)


def test_fixed_large_variance_without_learned_sigma():
    d = GaussianDiffusion(50, "linear", "", learn_sigma=False)
    x, t = torch.randn(2, 3), torch.tensor([0, 7])
    p = d.p_mean_variance(torch.zeros(2, 3), x, t)
    post_var1 = d.betas[1] * (1 - torch.cumprod(1 - d.betas, 0)[0]) / (1 - torch.cumprod(1 - d.betas, 0)[1])
    assert torch.allclose(p["log_variance"][0], torch.log(post_var1).float().expand(3))
    assert torch.allclose(p["log_variance"][1], torch.log(d.betas[7]).float().expand(3))
    net = SimpleMLPAdaLN(3, 16, 1, 4, out_channels=3)
    terms = d.training_losses(net, x, t, torch.zeros(2, 3), c=torch.zeros(2, 4))
    assert set(terms) == {"loss", "mse"} and torch.equal(terms["loss"], terms["mse"])


def test_timestep_embedding_is_cos_then_sin():
    e = timestep_embedding(torch.tensor([0.0, 3.0]), 8)
    assert torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert torch.allclose(e[1, 0], torch.tensor(math.cos(3.0))) and torch.allclose(e[1, 4], torch.tensor(math.sin(3.0)))


def test_p_sample_at_t0_is_the_mean_and_q_sample_by_hand():
    d = GaussianDiffusion(100, "cosine", "")
    x0, noise = torch.randn(3, 4), torch.randn(3, 4)
    t = torch.tensor([0, 50, 99])
    xt = d.q_sample(x0, t, noise)
    i = 50
    assert torch.allclose(xt[1], d.sqrt_ac[i].float() * x0[1] + d.sqrt_1m_ac[i].float() * noise[1])
    net = SimpleMLPAdaLN(4, 16, 1, 8)  # zero-init output: eps = 0, variance mid-range
    out = d.p_sample(net, xt, torch.zeros(3, dtype=torch.long), noise=torch.randn(3, 4), c=torch.randn(3, 8))
    assert torch.allclose(out["sample"], d.q_posterior(out["pred_xstart"], xt, torch.zeros(3, dtype=torch.long))[0])


def test_patchify_round_trip():
    x = torch.randn(2, 3, 4, 6)
    assert torch.equal(unpatchify(patchify(x, 2), 2, 4, 6), x)
    assert torch.equal(patchify(x, 1), x.flatten(2).transpose(1, 2))


def test_reverse_chain_with_an_oracle_eps_recovers_the_data_point():
    """With the exact eps of a point-mass data distribution, the respaced chain must land on that point."""
    d = GaussianDiffusion(1000, "cosine", "25")
    base_ac = torch.cumprod(1 - cosine_betas(1000), 0)
    x_star = torch.tensor([[0.7, -0.3, 0.1]])

    def oracle(x, t, c):  # t arrives as the ORIGINAL timestep; variance output -1 = posterior variance
        a = base_ac[t].float()[:, None]
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return torch.cat([eps, -torch.ones_like(eps)], dim=1)

    torch.manual_seed(0)
    out = d.sample(oracle, torch.randn(4, 3), temperature=1.0, c=None)
    assert torch.allclose(out, x_star.expand(4, 3), atol=1e-3)


@pytest.mark.learning
def test_diffloss_training_lowers_the_loss():
    torch.manual_seed(0)
    head = DiffLoss(token_dim=2, cond_dim=4, width=64, depth=2, num_sampling_steps="20")
    z = torch.eye(4)[torch.arange(64) % 4]
    target = z[:, :2] * 2 - 0.5  # the token is a function of its condition
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        torch.manual_seed(len(losses))
        t = torch.randint(0, 1000, (256,))
        terms = head.train_diffusion.training_losses(head.net, target.repeat(4, 1), t, c=z.repeat(4, 1))
        loss = terms["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(terms["mse"].mean().item())
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20
    assert head(target, z, batch_mul=2).isfinite()
    assert head.sample(z[:8]).shape == (8, 2)


def test_released_checkpoint_layout_uses_the_ema_weights(fixtures_dir, tmp_path):
    import json
    import shutil

    state = load_file(str(fixtures_dir / "mar" / "state_dict.safetensors"))
    live = {k: torch.zeros_like(v) for k, v in state.items()}
    torch.save({"model": live, "model_ema": state, "epoch": 3}, tmp_path / "checkpoint-last.pth")
    shutil.copy(fixtures_dir / "mar" / "config.json", tmp_path / "config.json")
    model = from_official("mar", tmp_path)
    assert torch.equal(model.class_emb.weight, state["class_emb.weight"])
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert model.diffloss.gen_diffusion.num_timesteps == int(cfg["num_sampling_steps"])
