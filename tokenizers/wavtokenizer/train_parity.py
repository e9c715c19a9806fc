"""Training-step parity with the official WavTokenizer recipe (fixture ``wavtokenizer_train``).

The fixture records one batch of the official ``VocosExp.training_step``: the generator phase (every loss
term, logits, the EMA codebook after its forward, raw gradients of named parameters) and the discriminator
phase (hinge / least-squares terms and gradients), plus the codebook after both training forwards of one
official batch. `training_parity` recomputes all of it with `WavTokenizerModule`'s own step functions
(`generator_phase`, `discriminator_phase`, `batch_forwards`) on the module `official_training_module`
builds: the generator through the official loader (`official.load_official`), the discriminators from the
same checkpoint's ``multiperioddisc.*``, ``multiresddisc.*`` and ``dacdiscriminator.discriminator.*`` keys
(the DAC copy the official losses use; the never-stepped ``dac.*`` copy is not read).

Switches (``official=True``, the fixture's setting; False is our default recipe):
- ``train_dac_discriminator=False``: the official losses' DAC discriminator is never stepped;
- ``second_forward=True``: the discriminator phase runs its own training forward (EMA updated twice a batch);
- ``VectorQuantizer.dead_code_expiry_overwritten=True``: the official expiry is overwritten in the same call.
Only the last two change what one batch computes; with ours, ``ema_after_batch`` equals one EMA update and
dead codes are restarted (the test checks both ways).

Every size and weight comes from the fixture's ``config.json`` (official YAML nesting plus
``hardcoded_in_official_code_overridden`` and ``training_step``); nothing is tuned to one fixture.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from tokenforge.hub import CheckpointError, load_mapped_state_dict, read_state_dict
from tokenforge.nn.conv1d import convert_weight_norm_keys
from tokenforge.parity import Result, register_parity
from tokenforge.tokenizers.wavtokenizer.discriminators import (
    DACDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule
from tokenforge.tokenizers.wavtokenizer.official import KEY_RULES, load_official, read_config

OVERRIDES = "hardcoded_in_official_code_overridden"
#: official discriminator keys -> ours (module attributes ``mpd``, ``mrd``, ``dac``); ``dac.*`` (the official
#: never-stepped copy) and ``melspec_loss.*`` (recomputed) are not read
DISC_KEY_RULES = [
    (r"^multiperioddisc\.", "mpd."),
    (r"^multiresddisc\.", "mrd."),
    (r"^dacdiscriminator\.discriminator\.", "dac."),
]
GENERATOR_PREFIXES = ("feature_extractor.", "backbone.", "head.")


def our_name(official: str) -> str | None:
    """An official parameter / buffer name -> the `WavTokenizerModule` name (None: not part of our module)."""
    if official.startswith(GENERATOR_PREFIXES):
        rules, prefix = KEY_RULES, "model."
    elif official.startswith(("multiperioddisc.", "multiresddisc.", "dacdiscriminator.discriminator.")):
        rules, prefix = DISC_KEY_RULES, ""
    else:
        return None
    key = official
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return prefix + next(iter(convert_weight_norm_keys({key: None})))


def read_state(folder: Path) -> dict[str, Tensor]:
    """The whole official Lightning state dict of a fixture folder (the file the official loader reads first)."""
    weights = next((folder / n for n in ("model.ckpt", "state_dict.safetensors") if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder} holds no model.ckpt or state_dict.safetensors")
    return read_state_dict(weights, nested=("state_dict",))


def _discriminators(overrides: Mapping[str, Any]) -> tuple[MultiPeriodDiscriminator, MultiResolutionDiscriminator,
                                                            DACDiscriminator]:
    mpd, mrd, dac = (overrides.get(k, {}) for k in ("MultiPeriodDiscriminator", "MultiResolutionDiscriminator",
                                                     "DACDiscriminator"))
    if dac.get("rates"):
        raise CheckpointError("DAC multi-scale discriminators (rates) are not implemented; WavTokenizer uses none")
    kwargs: dict[str, Any] = {}
    if "conv_channels" in mpd:
        kwargs["widths"] = mpd["conv_channels"]
    period = MultiPeriodDiscriminator(periods=mpd.get("periods", (2, 3, 5, 7, 11)),
                                      num_embeddings=mpd.get("num_embeddings", 4), **kwargs)
    resolution = MultiResolutionDiscriminator(
        resolutions=[tuple(r) for r in mrd.get("resolutions", ((1024, 256, 1024), (2048, 512, 2048), (512, 128, 512)))],
        channels=mrd.get("channels", 64), num_embeddings=mrd.get("num_embeddings", 4))
    dac_kwargs: dict[str, Any] = {}
    if "mpd_conv_channels" in dac:
        dac_kwargs["widths"] = dac["mpd_conv_channels"]
    if "bands" in dac:
        dac_kwargs["bands"] = [tuple(b) for b in dac["bands"]]
    dac_disc = DACDiscriminator(periods=dac.get("periods", (2, 3, 5, 7, 11)),
                                fft_sizes=dac.get("fft_sizes", (2048, 1024, 512)),
                                band_channels=dac.get("mrd_channels", 32), **dac_kwargs)
    return period, resolution, dac_disc


def official_training_module(folder: str | Path, official: bool = True) -> WavTokenizerModule:
    """A `WavTokenizerModule` holding a fixture's (or an official training run's) generator and discriminators,
    in training mode; ``official`` turns on the three official-behaviour switches (module docstring)."""
    folder = Path(folder)
    config = read_config(folder / "config.json")
    overrides = config.get(OVERRIDES, {})
    if overrides and "hardcoded_in_EncodecFeatures_overridden" not in config:  # the loader's name for the block
        config = {**config, "hardcoded_in_EncodecFeatures_overridden": overrides}
    model = load_official(folder, config)
    step = config.get("training_step", {})
    init = config["model"].get("init_args", config["model"])
    mel = step.get("melspec", {})
    if not step.get("train_discriminator", True):  # the official generator phase fails before the GAN starts
        raise CheckpointError("training_step.train_discriminator is false: the official step is not defined then")
    if mel.get("power", 1) != 1 or not mel.get("center", True):
        raise CheckpointError(f"mel loss settings {mel} differ from Vocos' (power 1, center): not supported")
    q = model.quantizer
    q.beta = float(step.get("commitment_weight", 1.0))
    q.decay, q.epsilon = float(step.get("vq_decay", q.decay)), float(step.get("vq_epsilon", q.epsilon))
    q.dead_code_threshold = float(step.get("threshold_ema_dead_code", q.dead_code_threshold))
    q.dead_code_expiry_overwritten = official
    dropout = overrides.get("VocosBackbone.pos_net dropout", {}).get("p")
    if dropout is not None:  # the fixture turns the pos_net's hard-coded Dropout(0.1) off
        for layer in model.backbone.pos_net.modules():
            if isinstance(layer, torch.nn.Dropout):
                layer.p = float(dropout)
    mpd, mrd, dac = _discriminators(overrides)
    module = WavTokenizerModule(
        model, mpd, mrd, dac,
        mel_loss_coeff=float(init.get("mel_loss_coeff", step.get("mel_loss_coeff", 45.0))),  # what the official
        mrd_loss_coeff=float(init.get("mrd_loss_coeff", step.get("mrd_loss_coeff", 1.0))),  # step reads
        commit_loss_coeff=float(step.get("commit_loss_weight", 1000.0)),
        mel_n_fft=int(mel.get("n_fft", 1024)), mel_hop_length=int(mel.get("hop_length", 256)),
        n_mels=int(mel.get("n_mels", 100)), evaluate_pesq=False,
        train_dac_discriminator=not official, second_forward=official)
    if int(mel.get("sample_rate", model.sample_rate)) != model.sample_rate:
        raise CheckpointError("the mel loss sample rate differs from the model's: not supported")
    state = {k: v for k, v in read_state(folder).items() if k.startswith(("multiperioddisc.", "multiresddisc.",
                                                                          "dacdiscriminator.discriminator."))}
    discs = torch.nn.ModuleDict({"mpd": mpd, "mrd": mrd, "dac": dac})
    load_mapped_state_dict(discs, convert_weight_norm_keys(state), DISC_KEY_RULES, source=str(folder))
    return module.train()


def _grad_norm(params: list[torch.nn.Parameter]) -> Tensor:
    grads = [p.grad.detach().double().flatten() for p in params if p.grad is not None]
    return torch.cat(grads).norm().float() if grads else torch.zeros(())


def _codebook(module: WavTokenizerModule) -> dict[str, Tensor]:
    q = module.model.quantizer
    return {"cluster_size": q.cluster_size.clone(), "embed_avg": q.embed_avg.clone(),
            "embed": q.embedding.weight.detach().clone()}


def training_parity(folder: str | Path, official: bool = True) -> dict[str, Tensor]:
    """Every output of the fixture, recomputed by `WavTokenizerModule`'s step functions (module docstring)."""
    folder = Path(folder)
    module = official_training_module(folder, official)
    inputs = load_file(str(folder / "inputs.safetensors"))
    expected_names = list(load_file(str(folder / "outputs.safetensors")))
    step = read_config(folder / "config.json").get("training_step", {})
    bandwidth_id = inputs.get("bandwidth_id", torch.tensor([int(step.get("bandwidth_id", 0))]))
    audio, bandwidth_id = inputs["audio"], bandwidth_id.reshape(-1).long()
    stored = copy.deepcopy(module.state_dict())
    params = dict(module.named_parameters())
    out: dict[str, Tensor] = {}

    # generator phase: one training forward (encoder latent caught at the quantizer's input) and its losses
    latent: list[Tensor] = []
    hook = module.model.quantizer.register_forward_pre_hook(lambda _m, args: latent.append(args[0].detach()))
    try:
        forward = module.model(audio, bandwidth_id)
    finally:
        hook.remove()
    g = module.generator_phase(audio, forward.x_hat, forward.aux_loss, bandwidth_id, module.gan_active)
    module.zero_grad(set_to_none=True)
    g.loss.backward()
    out.update(audio_hat=forward.x_hat, encoder_out=latent[0], features=forward.tokens.latents,
               codes=forward.tokens.ids[None], loss_generator=g.loss)
    out.update({f"ema_after_one_forward.{k}": v for k, v in _codebook(module).items()})
    names = {"mel_loss": "mel", "commit_loss": "commit", "gen_loss_mp": "g_mpd", "gen_loss_mrd": "g_mrd",
             "fm_mp": "fm_mpd", "fm_mrd": "fm_mrd", "gen_loss_dac": "g_dac", "fm_dac": "fm_dac"}
    out.update({k: g.terms[v] for k, v in names.items() if v in g.terms})
    out.update({k: g.parts[v] for k, v in (("gen_losses_mp", "g_mpd"), ("gen_losses_mrd", "g_mrd")) if v in g.parts})
    for family, official_name in (("mpd", "mpd"), ("mrd", "mrd"), ("dac", "dac")):
        if family not in g.judged:
            continue
        (real, fake), _ = g.judged[family]
        for i, (r, f) in enumerate(zip(real, fake)):
            if family == "dac":  # the DAC's last feature map as it is (official loss code indexes it so)
                out[f"dac_real_logits.{i}"], out[f"dac_fake_logits.{i}"] = r, f
            else:  # Vocos' discriminators return flattened logits
                out[f"{official_name}_real_logits.{i}"] = r.flatten(1)
                out[f"{official_name}_fake_logits.{i}"] = f.flatten(1)
    generator = [p for n, p in params.items() if n.startswith("model.")]
    out["grad_norm_generator"] = _grad_norm(generator)
    out.update(_grads("grad_generator.", expected_names, params))

    # one batch from the stored state as the module runs it: its training forwards (with second_forward, the
    # discriminator step's own forward first, then the generator step's) and the discriminator phase
    module.load_state_dict(stored)
    module.zero_grad(set_to_none=True)
    batch, fake = module.batch_forwards(audio, bandwidth_id, module.gan_active)
    d = module.discriminator_phase(audio, fake, bandwidth_id)
    d.loss.backward()
    out["loss_discriminator"] = d.loss
    out.update({k: d.terms[v] for k, v in (("disc_loss_mp", "mpd"), ("disc_loss_mrd", "mrd"),
                                             ("disc_loss_dac", "dac")) if v in d.terms})
    for family, short in (("mpd", "mp"), ("mrd", "mrd")):
        for side in ("real", "fake"):
            if f"{family}_{side}" in d.parts:
                out[f"disc_losses_{short}_{side}"] = d.parts[f"{family}_{side}"]
    for family in ("mpd", "mrd", "dac"):
        out[f"grad_norm_{family}"] = _grad_norm([p for n, p in params.items() if n.startswith(f"{family}.")])
    out.update(_grads("grad_discriminator.", expected_names, params))
    out["codes_second_forward"] = batch.tokens.ids[None]  # the generator step's codes (ours: the only forward)
    out.update({f"ema_after_batch.{k}": v for k, v in _codebook(module).items()})
    return {k: v.detach() for k, v in out.items()}


def _grads(prefix: str, names: list[str], params: Mapping[str, torch.nn.Parameter]) -> dict[str, Tensor]:
    grads = {}
    for name in names:
        if not name.startswith(prefix):
            continue
        ours = our_name(name.removeprefix(prefix))
        param = params.get(ours) if ours else None
        if param is not None and param.grad is not None:
            grads[name] = param.grad.clone()
    return grads


def _tolerance(name: str, reference: Tensor) -> float:
    """The fixture README's tolerances: exact codes; scalars relative 1e-5 (absolute 1e-6 at least); tensors
    1e-5 x max(1, max |ref|); gradients 1e-4 x max |ref|."""
    peak = float(reference.abs().max()) if reference.numel() else 0.0
    if name.startswith("codes"):
        return 0.0
    if name.startswith("grad_") and reference.ndim:
        return 1e-4 * peak
    if reference.ndim == 0:
        return max(1e-5 * peak, 1e-6)
    if name.startswith(("gen_losses_", "disc_losses_")):
        return max(1e-5 * peak, 1e-6)
    return 1e-5 * max(1.0, peak)


def wavtokenizer_train_parity(folder: Path) -> dict[str, Result]:
    """Parity function registered for ``wavtokenizer_train`` (official behaviour switched on)."""
    expected = load_file(str(Path(folder) / "outputs.safetensors"))
    values = training_parity(folder, official=True)
    return {name: Result(values[name], _tolerance(name, expected[name])) for name in expected if name in values}


register_parity("wavtokenizer_train", wavtokenizer_train_parity)
