"""LinFusion distillation losses (official ``src/train/distill.py``), shared by training and the parity check.

total = MSE(student, target) + 0.5 MSE(student, teacher) + 0.5 mean_l MSE(student attn1_l, teacher attn1_l),
target = noise for epsilon models, ``scheduler.get_velocity(x0, noise, t)`` for v-prediction. Layer outputs
are captured by forward hooks on the ``attn1`` modules named in ``modules_list`` (execution order on both sides).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS = {"loss_noise": 1.0, "loss_kd": 0.5, "loss_feat": 0.5}


@contextmanager
def capture_outputs(unet: nn.Module, names: list[str]) -> Iterator[list[Tensor]]:
    """Collect the outputs of the named submodules (in call order) while the context is open."""
    outputs: list[Tensor] = []
    handles = [unet.get_submodule(n).register_forward_hook(lambda m, i, o: outputs.append(o)) for n in names]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def noise_target(scheduler, clean: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")


@dataclass
class DistillOutput:
    total: Tensor
    loss_noise: Tensor
    loss_kd: Tensor
    loss_feat: Tensor
    student_pred: Tensor
    teacher_pred: Tensor
    target: Tensor
    noisy: Tensor


def distill_losses(
    student: nn.Module,
    teacher: nn.Module,
    names: list[str],
    scheduler,
    clean: Tensor,
    noise: Tensor,
    timesteps: Tensor,
    encoder_hidden_states: Tensor,
    added_cond_kwargs: dict | None = None,
    weights: dict[str, float] = WEIGHTS,
) -> DistillOutput:
    """One distillation step's losses; the teacher runs without gradients."""
    noisy = scheduler.add_noise(clean, noise, timesteps)
    kwargs = {"added_cond_kwargs": added_cond_kwargs} if added_cond_kwargs else {}
    with torch.no_grad(), capture_outputs(teacher, names) as teacher_feats:
        teacher_pred = teacher(noisy, timesteps, encoder_hidden_states, **kwargs).sample
    with capture_outputs(student, names) as student_feats:
        student_pred = student(noisy, timesteps, encoder_hidden_states, **kwargs).sample
    target = noise_target(scheduler, clean, noise, timesteps)
    loss_noise = F.mse_loss(student_pred.float(), target.float())
    loss_kd = F.mse_loss(student_pred.float(), teacher_pred.float())
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise RuntimeError(f"captured {len(student_feats)} student vs {len(teacher_feats)} teacher attn1 outputs")
    loss_feat = sum(F.mse_loss(s.float(), t.float()) for s, t in zip(student_feats, teacher_feats)) / len(student_feats)
    total = weights["loss_noise"] * loss_noise + weights["loss_kd"] * loss_kd + weights["loss_feat"] * loss_feat
    return DistillOutput(total, loss_noise, loss_kd, loss_feat, student_pred, teacher_pred, target, noisy)
