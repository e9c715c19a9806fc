"""Lightning module that trains `TokenFlow`: the shared `TokenizerModule` step plus semantic distillation.

Generator loss (spec tokenflow.md §3.4): ``l2 * MSE(x_hat, x) + perceptual * LPIPS + aux (vq + beta*commit
[+ entropy], averaged over scales) + adversarial * hinge_G`` (after ``disc_start`` generator steps) ``+ semantic *
mean_tokens(1 - cos(semantic_decoder(quant), teacher(x)))``; all weights 1 except adversarial 0.5, beta 0.25.
The discriminator (PatchGAN, hinge) trains from ``disc_start`` on. Adam lr 1e-4 betas (0.9, 0.95), clip 1.0.

Teacher: ``teacher_path`` (a transformers CLIP/SigLIP folder or an official TokenFlow file, see
`tokenforge.tokenizers.tokenflow.teacher`); with ``init_semantic_from_teacher`` the model's semantic encoder starts
from the teacher's weights (as the official training starts from the pretrained CLIP/SigLIP). Without a path the
teacher is a frozen copy of the model's own semantic encoder at construction, which is what the official setup
amounts to when the encoder is initialised from the teacher (tiny configs; CPU tests). The teacher is frozen,
kept in eval mode and saved with the Lightning checkpoint (never in the inference module).

Without LPIPS weights (``perceptual: null``) the perceptual term is off, logged once at the start of training.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.tokenizers.base import AutoencoderOutput, TokenizerModule
from tokenforge.tokenizers.tokenflow.model import TokenFlow
from tokenforge.tokenizers.tokenflow.teacher import Teacher, load_teacher

_log = logging.getLogger(__name__)


def semantic_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over tokens of ``1 - cos(pred, target)`` (BEiT-v2 VQ-KD / TokenFlow distillation)."""
    if pred.shape != target.shape:
        raise ValueError(f"semantic decoder output {tuple(pred.shape)} does not match the teacher's "
                         f"{tuple(target.shape)}; set the model's decoder_out_dim to the teacher width and train "
                         "at the teacher's grid")
    return (1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()


class TokenFlowModule(TokenizerModule):
    """`TokenizerModule` for `TokenFlow` with a frozen semantic teacher; see the module docstring."""

    def __init__(
        self,
        model: TokenFlow,
        discriminator: nn.Module | None = None,
        perceptual: nn.Module | None = None,
        teacher_path: str | None = None,
        init_semantic_from_teacher: bool = True,
        semantic_weight: float = 1.0,
        *,
        disc_start: int = 20000,
        **kwargs: Any,
    ) -> None:
        """TokenFlow's own arguments; every other one is `TokenizerModule`'s (LlamaGen defaults, late GAN)."""
        if not isinstance(model, TokenFlow):
            raise TypeError(f"TokenFlowModule trains a TokenFlow, got {type(model).__name__}")
        super().__init__(model, discriminator, perceptual, disc_start=disc_start, **kwargs)
        self.weights["semantic"] = semantic_weight
        if teacher_path:
            self.teacher = load_teacher(teacher_path)
            if init_semantic_from_teacher:
                self._init_from(self.teacher.tower)
        else:
            scaling = copy.deepcopy(model.scaling_layer) if model.scaling_layer is not None else None
            self.teacher = Teacher(copy.deepcopy(model.semantic_encoder), scaling)
        out = model.decode_task_layer[2].out_features
        if semantic_weight and self.teacher.out_dim != out:
            raise ValueError(f"the teacher's features are {self.teacher.out_dim}-d but the model's decode_task_layer "
                             f"gives {out}; set model.decoder_out_dim: {self.teacher.out_dim}")

    def _init_from(self, tower: nn.Module) -> None:
        own = self.model.semantic_encoder.state_dict()
        source = {k: v for k, v in tower.state_dict().items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(own) - set(source))
        if skipped:
            raise ValueError(f"cannot initialise the semantic encoder from the teacher: {len(skipped)} keys missing "
                             f"or mis-shaped (e.g. {skipped[:5]}); build the model's tower with the teacher's sizes")
        self.model.semantic_encoder.load_state_dict(source)
        _log.info("TokenFlowModule: semantic encoder initialised from the teacher (%d tensors)", len(source))

    def generator_losses(self, x: Tensor, out: AutoencoderOutput, adversarial: bool) -> dict[str, Tensor]:
        terms = super().generator_losses(x, out, adversarial)
        if self.weights["semantic"]:
            target = self.teacher(x)
            terms["semantic"] = semantic_loss(out.semantic, target)
            terms["loss"] = terms["loss"] + self.weights["semantic"] * terms["semantic"]
        return terms

    def validation_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        result = super().validation_step(batch, batch_idx)
        if self.weights["semantic"]:
            x = self.inputs(batch)
            quant = self.model.encode(x).latents
            cos = 1.0 - semantic_loss(self.model.decode_semantic_latents(quant), self.teacher(x))
            self.log("val/semantic_cos", cos, batch_size=x.shape[0])
        return result

    @torch.no_grad()
    def teacher_features(self, x: Tensor) -> Tensor:
        return self.teacher(x)
