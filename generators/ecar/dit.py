"""`FlowDiT`: the DiT baseline E-CAR is compared against, built from tokenforge blocks, on the same latents.

DiT (Peebles & Xie) layout: patchify (p x p latent patches, Linear), learned positions, adaLN-zero blocks (DiT
order) conditioned on timestep + class embeddings, final adaLN layer back to patches. Deliberate deviation
from DiT: it is trained with the SAME rectified-flow objective and Euler sampler as `ECAR` (time 0 = noise,
1 = data, velocity target data - noise) instead of DDPM eps + learned variance, so the comparison measures
the architectures (one full-resolution transformer per step vs. stage-wise AR + per-token flow head), not the
loss. Class dropout to a null class for CFG, as DiT.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenforge.generators.base import Generator
from tokenforge.generators.ecar.latent_loss import LatentLoss
from tokenforge.generators.ecar.diffloss import TimestepEmbedder
from tokenforge.generators.ecar.mar import patchify, unpatchify
from tokenforge.generators.ecar.model import random_labels
from tokenforge.nn.norms import AdaLNModulation, LayerNorm, modulate
from tokenforge.nn.transformer import Transformer
from tokenforge.tokenizers.base import Tokens


class FlowDiT(LatentLoss, Generator):
    def __init__(self, latent_channels: int = 16, latent_size: int = 16, patch_size: int = 1, dim: int = 768,
                 depth: int = 12, num_heads: int = 12, num_classes: int = 1000, class_dropout: float = 0.1) -> None:
        super().__init__()
        if latent_size % patch_size:
            raise ValueError(f"latent_size {latent_size} is not a multiple of patch_size {patch_size}")
        self.c, self.size, self.p = latent_channels, latent_size, patch_size
        self.num_classes, self.class_dropout = num_classes, class_dropout
        n = (latent_size // patch_size) ** 2
        self.x_embed = nn.Linear(latent_channels * patch_size**2, dim)
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.t_embed = TimestepEmbedder(dim)
        self.class_emb = nn.Embedding(num_classes + 1, dim)
        self.transformer = Transformer(dim, depth, num_heads, adaln=True, block_options={
            "cond_dim": dim, "order": "shift_scale_gate", "attn_options": {"qkv_bias": True, "out_bias": True}})
        self.final_norm = LayerNorm(dim, eps=1e-6)
        self.final_adaln = AdaLNModulation(dim, dim, ("shift", "scale"))
        self.out = nn.Linear(dim, latent_channels * patch_size**2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def velocity(self, x: Tensor, tau: Tensor, labels: Tensor) -> Tensor:
        """``x (B, C, H, W)`` at flow time ``tau (B,)`` in [0, 1] -> velocity of the same shape."""
        h = self.x_embed(patchify(x, self.p)) + self.pos
        cond = self.t_embed(tau * 1000.0) + self.class_emb(labels)
        h = self.transformer(h, cond)
        m = self.final_adaln(cond)
        h = self.out(modulate(self.final_norm(h), m["shift"], m["scale"]))
        return unpatchify(h, self.p, self.size, self.size)

    def _labels(self, labels: Tensor | None, b: int, device: torch.device) -> Tensor:
        if labels is None:
            return torch.full((b,), self.num_classes, dtype=torch.long, device=device)
        labels = labels.reshape(-1).long()
        if self.training and self.class_dropout > 0:
            labels = torch.where(torch.rand(b, device=device) < self.class_dropout, self.num_classes, labels)
        return labels

    def forward(self, latents: Tensor, labels: Tensor | None = None) -> Tensor:
        if latents.shape[1:] != (self.c, self.size, self.size):
            raise ValueError(f"FlowDiT expects latents (B, {self.c}, {self.size}, {self.size}), got {tuple(latents.shape)}")
        b = latents.shape[0]
        eps = torch.randn_like(latents)
        tau = torch.rand(b, device=latents.device, dtype=latents.dtype)
        x = tau[:, None, None, None] * latents + (1 - tau[:, None, None, None]) * eps
        v = self.velocity(x, tau, self._labels(labels, b, latents.device))
        return (v.float() - (latents - eps).float()).pow(2).mean()

    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | None = None, *, steps: int | list[int] = 50, cfg: float = 1.0,
                 stages: int | None = None, generator: torch.Generator | None = None,
                 progress: bool = False) -> Tokens:
        """The Generator contract (E-CAR's options): ``steps`` Euler steps at full resolution; a DiT has no
        stages, so ``stages`` must stay unset."""
        if stages is not None:
            raise ValueError("a FlowDiT samples at full resolution in one schedule: it has no --stages")
        if not isinstance(steps, int):
            if len(steps) != 1:
                raise ValueError(f"a FlowDiT takes one --steps value (one schedule), got {list(steps)}")
            steps = steps[0]
        labels = random_labels(self, n, condition, generator, self.class_emb.weight.device)
        return Tokens(latents=self.sample_latents(labels, int(steps), cfg, generator),
                      meta={"layout": "continuous", "labels": labels})

    @torch.no_grad()
    def sample_latents(self, labels: Tensor, steps: int = 50, cfg: float = 1.0,
                       generator: torch.Generator | None = None) -> Tensor:
        """Latents ``(B, C, H, W)`` for class ids ``labels``: ``steps`` Euler steps, CFG ``cfg``."""
        b, device = labels.shape[0], labels.device
        x = torch.randn(b, self.c, self.size, self.size, device=device, generator=generator)
        cond = self._labels(labels, b, device)
        null = self._labels(None, b, device)
        for k in range(steps):
            tau = torch.full((b,), k / steps, device=device)
            if cfg != 1.0:
                v_c, v_u = self.velocity(torch.cat([x, x]), torch.cat([tau, tau]), torch.cat([cond, null])).chunk(2)
                v = v_u + cfg * (v_c - v_u)
            else:
                v = self.velocity(x, tau, cond)
            x = x + v / steps
        return x
