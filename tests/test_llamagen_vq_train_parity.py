"""LlamaGen VQ training-step parity (fixture ``llamagen_vq_train``) and the LlamaGen switches of `VQGANModule`.

- the shared fixture: every recorded output ok through the parity registration (as tools/check_parity.py);
- an unseen variant written here (other widths, codebook, LPIPS widths, discriminator, loss weights and loss
  families, adaptive weight on, other images and image size), whose expected outputs come from a transcription
  of the official ``VQLoss`` formulas in this file, checked by the same parity function;
- each switch both ways: the official behaviour reproduces the fixture, our default differs exactly as documented.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tokenforge.parity import check
from tokenforge.tokenizers.losses.patch import NLayerDiscriminator
from tokenforge.tokenizers.losses.perceptual import LPIPS, VGG16_CONVS
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.vqgan.model import VQGAN
from tokenforge.tokenizers.vqgan.module import VQGANModule
from tokenforge.tokenizers.vqgan.official import to_llamagen_state
from tokenforge.tokenizers.vqgan.train_parity import build_module

FIXTURE = "llamagen_vq_train"


def test_shared_fixture_every_output_ok(fixtures_dir: Path, one_thread) -> None:
    lines = check(fixtures_dir / FIXTURE)
    assert len(lines) == 34 and [str(line) for line in lines if line.status != "ok"] == []


# ----------------------------------------------------------------------------- the switches, both ways


@pytest.fixture(scope="module")
def fixture_step(fixtures_dir: Path):
    folder = fixtures_dir / FIXTURE
    images = load_file(str(folder / "inputs.safetensors"))["images"]
    return folder, images, load_file(str(folder / "outputs.safetensors"))


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())  # a fresh copy: tests change the weights


def _losses(module, images, generator_step: int, adversarial: bool | None = None):
    module.train().generator_step.fill_(generator_step)
    x, out = module.training_forward(images)
    return out, module.generator_losses(x, out, module.gan_active if adversarial is None else adversarial)


def test_ignore_aux_weight_both_ways(fixture_step) -> None:
    folder, images, expected = fixture_step
    config = _config(folder)
    config["vq_loss"]["vq_loss_args"]["codebook_weight"] = 3.0
    official = build_module(folder, config)  # ignore_aux_weight=True: LlamaGen's unused codebook_weight
    out, g = _losses(official, images, 20000)
    assert abs(g["loss"].item() - expected["loss_gen"].item()) < 1e-5
    official.ignore_aux_weight = False  # ours: aux_weight weights the quantizer's losses
    _, ours = _losses(official, images, 20000)
    aux = expected["vq_loss"] + expected["commit_loss"] + expected["entropy_loss"]
    assert abs(ours["loss"].item() - (expected["loss_gen"] + 2.0 * aux).item()) < 1e-5
    assert abs(aux.item() - out.aux_loss.item()) < 1e-6


def test_swapped_bce_arguments_both_ways(fixture_step) -> None:
    folder, images, expected = fixture_step
    config = _config(folder)
    args = config["vq_loss"]["vq_loss_args"]
    args["gen_adv_loss"], args["disc_loss"] = "non-saturating", "non-saturating"
    module = build_module(folder, config)  # swapped_bce_arguments=True
    logits_fake, logits_real = expected["logits_fake"], expected["logits_real"]
    constant = 1.0 + math.log1p(math.exp(-1.0))
    x, out = module.train().training_forward(images)
    g = module.generator_losses(x, out, True)["adversarial"]
    d = module.discriminator_losses(x, out)["loss"]
    # official: the hinge generator loss plus a constant; the fake term of D a constant log 2
    assert abs(g.item() - (expected["gen_adv_loss"].item() + constant)) < 1e-5
    assert abs(d.item() - 0.5 * 0.5 * (constant - logits_real.mean().item() + math.log(2.0))) < 1e-5
    fresh = build_module(folder, config)  # same networks; our default losses instead of the switch
    default = VQGANModule(fresh.model, fresh.discriminator, fresh.perceptual, adversarial_loss="non_saturating")
    x, out = default.train().training_forward(images)
    g = default.generator_losses(x, out, True)["adversarial"]
    d = default.discriminator_losses(x, out)["loss"]
    assert abs(g.item() - F.softplus(-logits_fake).mean().item()) < 1e-5  # -log sigmoid D(x_hat)
    assert abs(d.item() - 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()).item()) < 1e-5


def test_disc_start_counts_from_one_both_ways(fixture_step) -> None:
    folder, _, _ = fixture_step
    config = _config(folder)
    module = build_module(folder, config)
    start = module.disc_start
    on = []
    for switch in (True, False):
        module.disc_start_counts_from_one = switch
        for completed in (start - 2, start - 1, start):
            module.generator_step.fill_(completed)
            on.append(module.gan_active)
    # official: global_step = completed + 1 >= disc_start; ours: completed >= disc_start
    assert on == [False, True, True, False, False, True]


def test_adaptive_weight_both_ways(fixture_step) -> None:
    folder, images, expected = fixture_step
    config = _config(folder)
    module = build_module(folder, config)
    assert module.adaptive_weight is False  # vq_train.py never sets disc_adaptive_weight
    _, g = _losses(module, images, 20000)
    assert "adaptive_weight" not in g and abs(g["loss"].item() - expected["loss_gen"].item()) < 1e-5
    module.adaptive_weight = True
    _, g = _losses(module, images, 20000)
    assert abs(g["adaptive_weight"].item() - expected["adaptive_disc_weight"].item()) < 1e-5
    assert abs(g["loss"].item() - expected["loss_gen_adaptive"].item()) < 1e-5
    _, before = _losses(module, images, 20000 - 2)
    assert "adaptive_weight" not in before and abs(before["loss"].item() - expected["loss_gen_before_disc_start"]
                                                   .item()) < 1e-5


# ----------------------------------------------------------------------------- an unseen variant


def _lpips_state(widths: list[int]) -> dict[str, torch.Tensor]:
    """A random LPIPS module state in the official key layout (net.slice{k}.{i}, lin{k}.model.1, scaling_layer)."""
    slices = {0: 1, 4: 2, 9: 3, 16: 4, 23: 5}
    state, previous = {}, 3
    for i, width in zip(VGG16_CONVS, widths):
        k = max(s for start, s in slices.items() if i >= start)
        state[f"net.slice{k}.{i}.weight"] = torch.randn(width, previous, 3, 3) * (2.0 / (9 * previous)) ** 0.5
        state[f"net.slice{k}.{i}.bias"] = torch.randn(width) * 0.05
        previous = width
    for k, n in enumerate((1, 3, 6, 9, 12)):
        state[f"lin{k}.model.1.weight"] = torch.rand(1, widths[n], 1, 1)
    state["scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    state["scaling_layer.scale"] = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    return state


def _official_step(model: VQGAN, disc: NLayerDiscriminator, lpips: LPIPS, images: torch.Tensor, args: dict,
                   loss_args: dict, global_step: int) -> dict[str, torch.Tensor]:
    """The official VQModel/VQLoss step transcribed from LlamaGen (vq_model.py, vq_loss.py): expected outputs."""
    z = model.quant_conv(model.encoder(images))
    zc = z.permute(0, 2, 3, 1)
    zn = F.normalize(zc, dim=-1)
    flat = zn.reshape(-1, zn.shape[-1])
    emb = F.normalize(model.quantizer.embedding.weight, dim=-1)
    d = flat.pow(2).sum(1, keepdim=True) + emb.pow(2).sum(1) - 2 * flat @ emb.t()
    codes = d.argmin(1)
    zq = emb[codes].view(zn.shape)
    vq_loss, commit = ((zq - zn.detach()) ** 2).mean(), args["commit_loss_beta"] * ((zq.detach() - zn) ** 2).mean()
    aff = -d / 0.01
    probs, log_probs = aff.softmax(-1), (aff + 1e-5).log_softmax(-1)
    avg = probs.mean(0)
    entropy = args["entropy_loss_ratio"] * (-(probs * log_probs).sum(-1).mean() + (avg * torch.log(avg + 1e-5)).sum())
    used = torch.cat([torch.zeros(65536 - codes.numel()), codes.float()])
    zq = (zn + (zq - zn).detach()).permute(0, 3, 1, 2)
    recons = model.decoder(model.post_quant_conv(zq))
    rec = F.l1_loss(images, recons)
    per_image = lpips(images, recons)
    p_loss = per_image.mean()
    logits_fake = disc(recons)
    g_adv = F.binary_cross_entropy_with_logits(torch.ones_like(logits_fake), logits_fake)  # as written officially
    nll = loss_args["reconstruction_weight"] * rec + loss_args["perceptual_weight"] * p_loss
    last = model.decoder.conv_out.weight
    g1 = torch.autograd.grad(nll, last, retain_graph=True)[0]
    g2 = torch.autograd.grad(g_adv, last, retain_graph=True)[0]
    adaptive = (g1.norm() / (g2.norm() + 1e-4)).clamp(0, 1e4).detach()
    weight = loss_args["disc_weight"] if global_step >= loss_args["disc_start"] else 0.0
    loss_gen = nll + adaptive * weight * g_adv + vq_loss + commit + entropy
    model.zero_grad()
    loss_gen.backward()
    out = {"recons": recons, "z": z, "z_q": zq, "codes": codes.view(zq.shape[0], *zq.shape[2:]), "rec_loss": rec,
           "lpips": per_image, "p_loss": p_loss, "vq_loss": vq_loss, "commit_loss": commit, "entropy_loss": entropy,
           "codebook_usage": torch.tensor(used.unique().numel() / emb.shape[0]), "logits_fake": logits_fake,
           "gen_adv_loss": g_adv, "disc_weight": torch.tensor(weight), "loss_gen": loss_gen,
           "adaptive_disc_weight": adaptive, "loss_gen_adaptive": loss_gen,
           "loss_gen_before_disc_start": nll + vq_loss + commit + entropy,
           "grad_norm_generator": torch.cat([p.grad.flatten() for p in model.parameters()]).norm()}
    for name in ("encoder.conv_in.weight", "quantize.embedding.weight", "decoder.conv_out.weight"):
        out[f"grad_generator.{name}"] = dict(model.named_parameters())[name.replace("quantize.", "quantizer.")].grad
    disc.zero_grad()
    logits_real = disc(images)
    fake = disc(recons.detach())
    loss_disc = weight * 0.5 * (F.softplus(-logits_real).mean() + F.softplus(fake).mean())  # "vanilla"
    loss_disc.backward()
    out.update(logits_real=logits_real, loss_disc=loss_disc, loss_disc_before_disc_start=torch.tensor(0.0),
               grad_norm_discriminator=torch.cat([p.grad.flatten() for p in disc.parameters()]).norm())
    out["grad_discriminator.main.0.weight"] = disc.main[0].weight.grad
    return {k: v.detach().clone().float() if v.is_floating_point() else v.clone() for k, v in out.items()}


@pytest.mark.parametrize("global_step", [51, 30])  # after the GAN start, and before it (weight 0, no D update)
def test_unseen_variant_other_sizes_weights_and_data(tmp_path: Path, shared_data: Path, global_step: int,
                                                     one_thread) -> None:
    from test_vqgan import load_images  # tests/ is on sys.path

    torch.manual_seed(7)
    args = {"codebook_size": 32, "codebook_embed_dim": 4, "codebook_l2_norm": True, "codebook_show_usage": True,
            "commit_loss_beta": 0.5, "entropy_loss_ratio": 0.1, "dropout_p": 0.0}
    loss_args = {"disc_start": 50, "disc_loss": "vanilla", "disc_dim": 8, "disc_type": "patchgan", "image_size": 16,
                 "disc_num_layers": 2, "disc_in_channels": 3, "disc_weight": 0.8, "disc_adaptive_weight": True,
                 "gen_adv_loss": "non-saturating", "reconstruction_loss": "l1", "reconstruction_weight": 0.7,
                 "codebook_weight": 2.0, "perceptual_weight": 0.3}
    model = VQGAN(VectorQuantizer(32, 4, l2_normalize=True), ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=8)
    with torch.no_grad():
        model.quantizer.embedding.weight.normal_()
    disc = NLayerDiscriminator(3, 8, 2)
    lpips_state = _lpips_state([2, 2, 4, 4, 6, 6, 6, 8, 8, 8, 8, 8, 8])
    torch.save({"model": {**to_llamagen_state(model), "quantize.codebook_used": torch.zeros(65536)},
                "discriminator": disc.state_dict(), "steps": 50}, tmp_path / "checkpoint.pt")
    save_file({**to_llamagen_state(model), "quantize.codebook_used": torch.zeros(65536)},
              str(tmp_path / "state_dict.safetensors"))
    save_file({k: v.contiguous() for k, v in disc.state_dict().items()}, str(tmp_path / "discriminator.safetensors"))
    save_file(lpips_state, str(tmp_path / "lpips.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"vq_model": {"model_args": args},
                                                      "vq_loss": {"vq_loss_args": loss_args}}))
    images = load_images(shared_data / "images", 16, ("camera.png", "coins.png", "flower.jpg"))
    save_file({"images": images, "global_step": torch.tensor([global_step])}, str(tmp_path / "inputs.safetensors"))
    lpips = LPIPS(str(tmp_path / "lpips.safetensors"))
    # in float64, as the parity function runs (float32 kinks make float32 gradients differ at random, see it)
    expected = _official_step(model.double().train(), disc.double().train(), lpips.double(), images.double(), args,
                              loss_args, global_step)
    save_file({k: v.contiguous() for k, v in expected.items()}, str(tmp_path / "outputs.safetensors"))

    lines = check(tmp_path, FIXTURE)
    assert len(lines) == len(expected) and [str(line) for line in lines if line.status != "ok"] == []
    assert expected["codes"].unique().numel() > 4  # a real assignment, not one code


def test_usage_window_and_entropy_terms_of_the_quantizer() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, l2_normalize=True, entropy_loss_ratio=0.1, usage_window=6).train()
    z = torch.randn(1, 4, 2, 2)
    out = vq(z)
    seen = out.indices.unique().numel()
    # a fresh window is empty (-1), so only this batch's codes count (LlamaGen's zeros count code 0 as used)
    assert out.metrics["codebook_usage"].item() == pytest.approx(seen / 16)
    assert vq.codebook_used[:2].tolist() == [-1, -1] and "codebook_used" not in vq.state_dict()
    terms = out.metrics["codebook_loss"] + out.metrics["commitment_loss"] + out.metrics["entropy_loss"]
    assert torch.allclose(out.loss, terms) and out.metrics["entropy_loss"].item() != 0.0
    before = vq.codebook_used.clone()
    vq.eval()(z)
    assert torch.equal(vq.codebook_used, before)  # eval calls leave the window alone
