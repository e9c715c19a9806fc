"""``from_official("linfusion", folder)`` (released diffusers layout) and the parity check of its fixture.

The parity function rebuilds the base UNet from ``FIXTURE/unet`` with diffusers, recomputes the base and
LinFusion UNet outputs, each module's attn1 input/outputs (forward hooks), the standalone module-0 calls and
one distillation-loss step (scheduler from ``config.json``'s ``scheduler`` or ``scheduler/scheduler_config.json``,
loss weights from ``config.json``; v-prediction and SDXL-style added conditions, ``text_embeds`` / ``time_ids``
inputs, supported when the fixture provides them). Nothing is specific to one fixture: sub-folders, module
names, sizes and the prediction type all come from the folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from tokenforge.generators.linfusion.distill import WEIGHTS, capture_outputs, distill_losses
from tokenforge.generators.linfusion.linfusion import LinFusion
from tokenforge.hub import register_official
from tokenforge.parity import Result, load_inputs, register_parity

MODULE_TOL, UNET_TOL, LOSS_REL = 1e-5, 1e-4, 1e-5


def load_official(path: Path, config: dict[str, Any] | None = None) -> LinFusion:
    """A released LinFusion folder, or a fixture folder (its ``linfusion_config_file``, default ``linfusion/``)."""
    config = config or {}
    sub = Path(config.get("linfusion_config_file", "linfusion/config.json")).parent
    folder = path / sub if (path / sub / "config.json").is_file() else path
    return LinFusion.load_official(folder, chunk_size=config.get("chunk_size"))


def fixture_scheduler(folder: Path, config: dict[str, Any]):
    """DDPM scheduler of a fixture: ``config["scheduler"]``, else ``scheduler/scheduler_config.json``, else
    diffusers' defaults; unknown keys (``_class_name`` ...) are ignored by ``from_config``."""
    from diffusers import DDPMScheduler

    if "scheduler" in config:
        return DDPMScheduler.from_config(config["scheduler"])
    file = folder / config.get("scheduler_config_file", "scheduler/scheduler_config.json")
    return DDPMScheduler.from_config(json.loads(file.read_text()) if file.is_file() else {})


register_official("linfusion", load_official)


def _added_cond(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    text = next((inputs[k] for k in ("text_embeds", "add_text_embeds", "added_text_embeds") if k in inputs), None)
    time = next((inputs[k] for k in ("time_ids", "add_time_ids", "added_time_ids") if k in inputs), None)
    if text is None and time is None:
        return None
    return {"text_embeds": text, "time_ids": time}


@torch.no_grad()
def parity(folder: Path) -> dict[str, Result]:
    from diffusers import UNet2DConditionModel

    config = json.loads((folder / "config.json").read_text())
    inputs = load_inputs(folder)
    unet = UNet2DConditionModel.from_pretrained(str((folder / config.get("unet_config_file", "unet/config.json")).parent))
    unet = unet.eval()
    teacher = copy.deepcopy(unet)
    lin = load_official(folder, {k: v for k, v in config.items() if k == "linfusion_config_file"}).eval()
    names = [m["module_name"] for m in lin.modules_list]
    added = _added_cond(inputs)
    kw = {"added_cond_kwargs": added} if added else {}
    sample, t, ctx = inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"]

    out: dict[str, Result] = {}
    with capture_outputs(unet, names) as teacher_feats:
        out["unet_base_out"] = Result(unet(sample, t, ctx, **kw).sample, UNET_TOL)
    lin.mount_to(unet)
    ins: list[torch.Tensor] = []
    hooks = [unet.get_submodule(n).register_forward_pre_hook(lambda m, a, k: ins.append(a[0] if a else k["hidden_states"]), with_kwargs=True) for n in names]
    with capture_outputs(unet, names) as student_feats:
        out["unet_linfusion_out"] = Result(unet(sample, t, ctx, **kw).sample, UNET_TOL)
    for h in hooks:
        h.remove()
    # hooks fire in execution order (down, mid, up); map back to modules_list order by module identity
    order = _execution_order(unet, names, sample, t, ctx, kw)
    for pos, i in enumerate(order):
        out[f"attn1_in.{i}"] = Result(ins[pos], MODULE_TOL)
        out[f"attn1_out_linfusion.{i}"] = Result(student_feats[pos], MODULE_TOL)
        out[f"attn1_out_teacher.{i}"] = Result(teacher_feats[pos], UNET_TOL)
    module0 = lin._modules["0"]
    for key in ("module0_hidden_states", "module0_hidden_states_long"):
        if key in inputs:
            out[key.replace("hidden_states", "out")] = Result(module0(inputs[key]), MODULE_TOL)

    if "clean_latents" in inputs:
        sched = fixture_scheduler(folder, config)
        weights = config.get("loss_weights", WEIGHTS)
        d = distill_losses(unet, teacher, names, sched, inputs["clean_latents"], inputs["noise"], t, ctx, added, weights)
        out["noisy_latents"] = Result(d.noisy, UNET_TOL)
        out["loss_teacher_pred"] = Result(d.teacher_pred, UNET_TOL)
        out["loss_student_pred"] = Result(d.student_pred, UNET_TOL)
        out["loss_target"] = Result(d.target, UNET_TOL)
        expected = _expected(folder)
        for name in ("loss_noise", "loss_kd", "loss_feat", "loss_total"):
            value = getattr(d, "total" if name == "loss_total" else name).reshape(1)
            scale = float(expected[name].abs().max()) if name in expected else 1.0
            out[name] = Result(value, LOSS_REL * max(scale, 1e-12))
    lin.unmount()
    return out


def _execution_order(unet, names, sample, t, ctx, kw) -> list[int]:
    calls: list[int] = []
    hooks = [unet.get_submodule(n).register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, n in enumerate(names)]
    try:
        unet(sample[:1], t[:1], ctx[:1], **{k: {a: b[:1] for a, b in v.items()} for k, v in kw.items()})
    finally:
        for h in hooks:
            h.remove()
    return calls


def _expected(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "outputs.safetensors"))


register_parity("linfusion", parity)
