"""Training-step parity with LlamaGen's VQ recipe (fixture ``llamagen_vq_train``): our `VQGANModule`, term by term.

The fixture holds one step of LlamaGen's ``vq_train.py`` (``VQModel`` in training mode, ``VQLoss`` for the
generator and the discriminator update) on stored weights and a real batch. `build_module` turns its
``config.json`` and weight files into the `VQGANModule` that ``tokenforge fit`` would train, with the three
LlamaGen switches on (``ignore_aux_weight``, ``swapped_bce_arguments``, ``disc_start_counts_from_one``);
`llamagen_vq_train_parity` then runs that module's own ``training_forward``, ``generator_losses`` and
``discriminator_losses`` (the functions `GANModule.training_step` calls) and reads the tensors the fixture
records: the quantizer's input and output and the PatchGAN logits through forward hooks, the loss terms from
the returned dicts and the quantizer metrics, gradients after ``backward``, gradient norms with the step's own
`clip_gradient_norm`. Every size and weight comes from the fixture's files.

The step runs in float64 (the quantizer's lookup stays float32, as always). In float32 the gradients of this
step are ill-conditioned: the shared fixture has a discriminator pre-activation of 7e-9 at a LeakyReLU kink, so
kernel-order noise of 1e-6 (one thread or four, AVX2 or AVX-512) flips it and moves a recorded gradient by up to
5e-3 of its maximum, 50x the fixture's tolerance, in either direction. In float64 our side is exact maths to
1e-12 and only the official float32 rounding remains (within each tolerance; closest: the adaptive weight, 0.7).

Official ``global_step`` g (1-based, ``train_steps + 1``) is our ``generator_step`` g - 1 (steps completed).
Before the GAN start the official step still computes the discriminator loss times 0; our step takes no
discriminator update then, which is a loss of 0 as well.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from tokenforge.parity import Result, load_inputs, register_parity
from tokenforge.tokenizers.losses.patch import NLayerDiscriminator
from tokenforge.tokenizers.losses.perceptual import LPIPS
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.vqgan.module import VQGANModule
from tokenforge.tokenizers.vqgan.official import llamagen_key_map, load_llamagen_vq
from tokenforge.training import clip_gradient_norm

FIXTURE = "llamagen_vq_train"
USAGE_WINDOW = 65536  # LlamaGen's codebook_used buffer length (hard-coded in its VectorQuantizer)
GEN_ADV = {"hinge": "hinge", "non-saturating": "non_saturating"}  # VQLoss gen_adv_loss -> ours
DISC = {"hinge": "hinge", "vanilla": "vanilla", "non-saturating": "non_saturating"}  # VQLoss disc_loss -> ours

EXACT = ("codes", "codebook_usage")
TENSORS = ("recons", "z", "z_q", "logits_real", "logits_fake")


def tolerance(name: str, reference: Tensor) -> float:
    """The fixture README's tolerance for ``name`` as a max-abs-diff bound, from the reference's magnitude."""
    peak = float(reference.double().abs().max()) if reference.numel() else 0.0
    if name in EXACT:
        return 0.0
    if name.startswith("grad_") and not name.startswith("grad_norm"):
        return 1e-4 * peak
    if name in TENSORS:
        return 1e-5 * max(1.0, peak)
    return max(1e-6, 1e-5 * peak)  # loss scalars, per-image LPIPS, adaptive weight, gradient norms


def build_module(folder: Path, config: dict[str, Any]) -> VQGANModule:
    """The `VQGANModule` the fixture describes: LlamaGen's model, PatchGAN and LPIPS from its files, VQLoss's
    weights from ``config.json``, the official quirks switched on."""
    args, loss = config["vq_model"]["model_args"], config["vq_loss"]["vq_loss_args"]
    if loss.get("disc_type", "patchgan") != "patchgan":
        raise ValueError(f"{folder}: disc_type {loss['disc_type']!r}; only LlamaGen's PatchGAN is implemented")
    model = load_llamagen_vq(folder / "checkpoint.pt", {"dropout": float(args.get("dropout_p", 0.0))})
    old = model.quantizer
    model.quantizer = VectorQuantizer(
        old.codebook_size, old.dim, l2_normalize=bool(args["codebook_l2_norm"]), beta=float(args["commit_loss_beta"]),
        entropy_loss_ratio=float(args.get("entropy_loss_ratio", 0.0)),
        usage_window=USAGE_WINDOW if args.get("codebook_show_usage", True) else 0)
    model.quantizer.load_state_dict(old.state_dict())
    state = load_file(str(folder / "state_dict.safetensors"))
    if hasattr(model.quantizer, "codebook_used") and "quantize.codebook_used" in state:
        model.quantizer.codebook_used.copy_(state["quantize.codebook_used"].long())  # the official window's state
    discriminator = NLayerDiscriminator(int(loss.get("disc_in_channels", 3)), int(loss["disc_dim"]),
                                        int(loss["disc_num_layers"]))
    discriminator.load_state_dict(load_file(str(folder / "discriminator.safetensors")))
    rec_weight, rec = float(loss["reconstruction_weight"]), loss["reconstruction_loss"]
    if rec not in ("l1", "l2"):
        raise ValueError(f"{folder}: reconstruction_loss {rec!r}; LlamaGen's are l1 and l2")
    return VQGANModule(
        model, discriminator, LPIPS(str(folder / "lpips.safetensors")),
        l1_weight=rec_weight if rec == "l1" else 0.0, l2_weight=rec_weight if rec == "l2" else 0.0,
        perceptual_weight=float(loss["perceptual_weight"]), aux_weight=float(loss["codebook_weight"]),
        adversarial_weight=float(loss["disc_weight"]), disc_loss_weight=float(loss["disc_weight"]),
        adversarial_loss=GEN_ADV[loss["gen_adv_loss"]], disc_adversarial_loss=DISC[loss["disc_loss"]],
        adaptive_weight=bool(loss.get("disc_adaptive_weight", False)), disc_start=int(loss["disc_start"]),
        ignore_aux_weight=True, swapped_bce_arguments=True, disc_start_counts_from_one=True)


@contextmanager
def recording(module: nn.Module, sink: list[tuple[Tensor, Any]]):
    """Append ``(input, output)`` of every call of ``module`` to ``sink`` while the block runs."""
    handle = module.register_forward_hook(lambda _m, args, output: sink.append((args[0], output)))
    try:
        yield sink
    finally:
        handle.remove()


def _at_step(module: VQGANModule, official_global_step: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with the module's generator counter at the official (1-based) ``global_step``."""
    saved = module.generator_step.clone()
    module.generator_step.fill_(official_global_step - 1)
    try:
        return fn()
    finally:
        module.generator_step.copy_(saved)


def llamagen_vq_train_parity(folder: Path) -> dict[str, Result]:
    """Recompute every output of a ``llamagen_vq_train`` fixture with `VQGANModule`'s training functions."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    expected = load_file(str(folder / "outputs.safetensors"))
    inputs = load_inputs(folder)
    images, global_step = inputs["images"].double(), int(inputs["global_step"].reshape(-1)[0])
    disc_start = int(config["vq_loss"]["vq_loss_args"]["disc_start"])
    module = build_module(folder, config).double().train()  # float64: see the module docstring
    model, disc = module.model, module.discriminator
    values: dict[str, Tensor] = {}

    # the official step runs the discriminator and the adaptive weight even before the GAN start (weight 0): read
    # them, when the fixture's step is before it, at the first step where our module computes them
    active_step = max(global_step, disc_start)
    quantizer_calls: list = []
    fake_calls: list = []
    with recording(model.quantizer, quantizer_calls):
        x, out = _at_step(module, global_step, lambda: module.training_forward(images))
    g = _at_step(module, global_step, lambda: module.generator_losses(x, out, module.gan_active))
    with recording(disc, fake_calls):
        g_on = _at_step(module, active_step, lambda: module.generator_losses(x, out, module.gan_active))
    configured = module.adaptive_weight
    module.adaptive_weight = True  # the fixture records the official adaptive weight whatever the config says
    adaptive = _at_step(module, global_step, lambda: module.generator_losses(x, out, module.gan_active))
    weight = _at_step(module, active_step, lambda: module.generator_losses(x, out, True))["adaptive_weight"]
    module.adaptive_weight = configured
    before = _at_step(module, disc_start - 1, lambda: module.generator_losses(x, out, module.gan_active))
    z, q = quantizer_calls[0]
    reconstruction = {"l1": torch.nn.functional.l1_loss, "l2": torch.nn.functional.mse_loss}
    rec = config["vq_loss"]["vq_loss_args"]["reconstruction_loss"]
    per_image = module.perceptual(x, out.x_hat)  # LPIPS(images, recons), per image
    values.update(recons=out.x_hat, z=z, z_q=q.quantized, codes=out.tokens.ids, lpips=per_image,
                  rec_loss=g[rec] if rec in g else reconstruction[rec](out.x_hat, x),  # unweighted; read out at 0
                  p_loss=g["perceptual"] if "perceptual" in g else per_image.mean(),
                  gen_adv_loss=g_on["adversarial"], logits_fake=fake_calls[0][1],
                  loss_gen=g["loss"], loss_gen_adaptive=adaptive["loss"], adaptive_disc_weight=weight,
                  loss_gen_before_disc_start=before["loss"],
                  disc_weight=torch.tensor(_at_step(module, global_step,
                                                    lambda: module.weights["adversarial"] * module.gan_weight)))
    zero = torch.zeros(())
    values.update(vq_loss=out.metrics.get("codebook_loss", zero), commit_loss=out.metrics.get("commitment_loss", zero),
                  entropy_loss=out.metrics.get("entropy_loss", zero), codebook_usage=out.metrics["codebook_usage"])

    module.zero_grad(set_to_none=True)
    g["loss"].backward()
    official = {llamagen_key_map(k): k for k in (n[len("grad_generator."):] for n in expected
                                                  if n.startswith("grad_generator."))}
    for name, p in model.named_parameters():  # recorded under the official parameter names
        values[f"grad_generator.{official.get(name, name)}"] = p.grad.clone() if p.grad is not None else zero
    values["grad_norm_generator"] = clip_gradient_norm(module.generator_parameters(), None)

    disc.zero_grad(set_to_none=True)  # optimizer_disc.zero_grad()
    real_calls: list = []
    with recording(disc, real_calls):
        d_on = _at_step(module, active_step, lambda: module.discriminator_losses(x, out))
    d_loss = _at_step(module, global_step, lambda: d_on["loss"] if module.gan_active else zero)  # no D step: 0
    d_before = _at_step(module, disc_start - 1, lambda: d_on["loss"] if module.gan_active else zero)
    values.update(logits_real=real_calls[0][1], loss_disc=d_loss, loss_disc_before_disc_start=d_before)
    if d_loss.requires_grad:
        d_loss.backward()
    for name, p in disc.named_parameters():
        values[f"grad_discriminator.{name}"] = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
    values["grad_norm_discriminator"] = clip_gradient_norm(module.discriminator_parameters(), None)
    return {name: Result(values[name].detach().reshape(expected[name].shape) if values[name].numel() ==
                         expected[name].numel() else values[name].detach(), tolerance(name, expected[name]))
            for name in expected if name in values}


register_parity(FIXTURE, llamagen_vq_train_parity)
