"""E-CAR (arXiv 2412.14170): continuous stage-wise AR over growing token maps + a multistage flow head.

Item by item (spec nat_car.md §3/§3b; the paper's method section was not retrievable, so only the structure is
E-CAR's and every number/rule marked "chosen" comes from a named public peer):

1. Token maps (paper): S maps M_1..M_S at growing resolutions ``scales`` (h_s = w_s), M_S at the full latent
   size; all tokens of a stage come out in parallel, earlier maps condition later ones.
   Chosen (FlowAR): M_s = area-downsampled latents (not VAR residuals); default scales (1, 2, 4, 8, 16) on a
   16x16 latent (FlowAR's powers of two; VAR uses 10 scales).
2. Hierarchical AR transformer (paper: VAR-like next-stage prediction). Chosen (VAR): the input of stage s is
   Linear(Up(M_{s-1})) (nearest up-sampling; stage 1 reads a learned start map), plus learned positions and a
   stage embedding; adaLN-zero blocks (DiT order) conditioned on the class embedding; a block-causal mask
   across stages (a token sees its own and all earlier stages). No KV cache: generation re-runs the prefix
   (S forward passes).
3. Multistage flow head (paper: flow-based, each stage only partially denoises, at that stage's resolution;
   token-to-image cost divided by S). Chosen: MAR's per-token `SimpleMLPAdaLN` conditioned on the
   transformer output z of that token, predicting a rectified-flow velocity (FlowAR's loss), time in
   [0, 1] from noise (0) to data (1), fed to the sinusoid as 1000*tau. Stage s owns the segment
   [a_s, b_s] = [bounds[s-1], bounds[s]] (default uniform s/S: Pyramidal Flow's equal windows).
   Within stage s (Pyramidal Flow's piecewise flow, same noise eps at both ends):
   start = a_s * Up(M_{s-1}) + (1 - a_s) * eps,  end = b_s * M_s + (1 - b_s) * eps,
   x_u = (1 - u) start + u end,  target velocity = end - start,  u ~ U(0, 1) per token.
4. Stage transition (paper silent; Pyramidal Flow re-noises at resolution jumps). Chosen: after the Euler
   steps of stage s, the clean map is recovered exactly from the end state and the noise that started the
   stage, M_s = (x_end - (1 - b_s) eps_s) / b_s (eps_s = (start - a_s Up(M_{s-1})) / (1 - a_s) is known), then
   up-sampled and re-noised with FRESH i.i.d. noise to level a_{s+1} (so the next start has exactly the
   training distribution, where Pyramidal Flow corrects correlated up-sampled noise approximately).
5. CFG (paper silent; MAR/DiT): class dropout ``class_dropout`` to a null class; velocity
   v_u + cfg * (v_c - v_u) on a doubled batch.
6. Loss averaging (chosen, VAR): the mean over all tokens of all stages, with MAR's ``batch_mul`` repeats.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.generators.base import Generator
from tokenforge.generators.ecar.latent_loss import LatentLoss
from tokenforge.generators.ecar.diffloss import SimpleMLPAdaLN
from tokenforge.nn.attention import block_causal_mask
from tokenforge.nn.norms import LayerNorm
from tokenforge.nn.transformer import Transformer
from tokenforge.tokenizers.base import Tokens


def random_labels(model: nn.Module, n: int, condition: Tensor | None, generator: torch.Generator | None,
                  device: torch.device) -> Tensor:
    """Class ids ``[n]`` on ``device``: ``condition`` (one id or ``n``), or random classes drawn with ``generator``
    (the null class for a model without classes)."""
    if condition is not None:
        labels = torch.as_tensor(condition, device=device).long().reshape(-1)
        return labels.expand(n) if labels.numel() == 1 else labels
    if model.num_classes <= 0:
        return torch.full((n,), model.num_classes, dtype=torch.long, device=device)
    where = generator.device if generator is not None else device
    return torch.randint(0, model.num_classes, (n,), generator=generator, device=where).to(device)


def resize(x: Tensor, size: int) -> Tensor:
    """Down-sample by area averaging, up-sample by nearest neighbour (identity at the same size)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="area" if size < x.shape[-1] else "nearest")


class ECAR(LatentLoss, Generator):
    """E-CAR generator over latents ``(B, C, H, W)`` with ``H = W = scales[-1]``; see the module docstring."""

    def __init__(
        self,
        latent_channels: int = 16,
        scales: Sequence[int] = (1, 2, 4, 8, 16),
        bounds: Sequence[float] | None = None,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        num_classes: int = 1000,
        class_dropout: float = 0.1,
        head_width: int = 1024,
        head_depth: int = 6,
        batch_mul: int = 4,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.scales = [int(s) for s in scales]
        if any(b <= a for a, b in zip(self.scales, self.scales[1:])):
            raise ValueError(f"scales must increase, got {self.scales}")
        n = len(self.scales)
        self.bounds = [float(b) for b in bounds] if bounds is not None else [s / n for s in range(n + 1)]
        if len(self.bounds) != n + 1 or self.bounds[0] != 0.0 or self.bounds[-1] != 1.0 or any(
                b <= a for a, b in zip(self.bounds, self.bounds[1:])):
            raise ValueError(f"bounds must be {n + 1} increasing times from 0 to 1, got {self.bounds}")
        self.c, self.num_classes, self.class_dropout, self.batch_mul = latent_channels, num_classes, class_dropout, batch_mul
        self.lengths = [s * s for s in self.scales]
        total = sum(self.lengths)
        self.class_emb = nn.Embedding(num_classes + 1, dim)  # the last row is the null class (CFG)
        self.start = nn.Parameter(torch.randn(1, self.lengths[0], dim) * 0.02)
        self.in_proj = nn.Linear(latent_channels, dim)
        self.pos = nn.Parameter(torch.randn(1, total, dim) * 0.02)
        self.stage_emb = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.transformer = Transformer(dim, depth, num_heads, adaln=True, drop_path=drop_path,
                                       block_options={"cond_dim": dim, "order": "shift_scale_gate", "attn_options": {
                                           "qkv_bias": True, "out_bias": True}})
        self.norm = LayerNorm(dim, eps=1e-6, affine=True)
        self.head = SimpleMLPAdaLN(latent_channels, head_width, head_depth, dim, latent_channels)
        self.register_buffer("stage_ids", torch.repeat_interleave(torch.arange(n), torch.tensor(self.lengths)),
                             persistent=False)
        self.register_buffer("mask", block_causal_mask(self.lengths), persistent=False)

    # ------------------------------------------------------------------ pieces
    def maps(self, latents: Tensor) -> list[Tensor]:
        if latents.dim() != 4 or latents.shape[1] != self.c or latents.shape[-1] != self.scales[-1] or \
                latents.shape[-2] != self.scales[-1]:
            raise ValueError(f"ECAR expects latents (B, {self.c}, {self.scales[-1]}, {self.scales[-1]}), "
                             f"got {tuple(latents.shape)}; match latent_channels/scales to the tokenizer")
        return [resize(latents, s) for s in self.scales]

    def condition(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if labels is None:
            labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        labels = labels.reshape(-1).long()
        if self.training and self.class_dropout > 0:
            labels = torch.where(torch.rand(batch, device=device) < self.class_dropout, self.num_classes, labels)
        return self.class_emb(labels)

    def transformer_out(self, prev: list[Tensor], cond: Tensor) -> Tensor:
        """``prev`` = maps M_1..M_{k-1} (k <= S stages are run); returns z for stages 1..k ``(B, sum L, D)``."""
        b = cond.shape[0]
        parts = [self.start.expand(b, -1, -1)]
        for m, size in zip(prev, self.scales[1:]):
            parts.append(self.in_proj(resize(m, size).flatten(2).transpose(1, 2)))
        x = torch.cat(parts, dim=1)
        n = x.shape[1]
        x = x + self.pos[:, :n] + self.stage_emb[self.stage_ids[:n]]
        x = self.transformer(x, cond, mask=self.mask[:n, :n])
        return self.norm(x)

    def velocity(self, x: Tensor, tau: Tensor, z: Tensor) -> Tensor:
        """Head on tokens: ``x (N, C)``, global flow time ``tau (N,)`` in [0, 1], conditions ``z (N, D)``."""
        return self.head(x, tau * 1000.0, z)

    def _tokens(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1])

    # ------------------------------------------------------------------ training
    def forward(self, latents: Tensor, labels: Tensor | None = None) -> Tensor:
        """Flow-matching loss (mean squared velocity error per token) on latents, teacher-forced over stages."""
        maps = self.maps(latents)
        b = latents.shape[0]
        z = self.transformer_out(maps[:-1], self.condition(labels, b, latents.device))
        starts, ends, stage_of = [], [], []
        for s, (m, size) in enumerate(zip(maps, self.scales)):
            a, e = self.bounds[s], self.bounds[s + 1]
            prev = resize(maps[s - 1], size) if s else torch.zeros_like(m)
            eps = torch.randn_like(m)
            starts.append(self._tokens(a * prev + (1 - a) * eps).reshape(b, -1, self.c))
            ends.append(self._tokens(e * m + (1 - e) * eps).reshape(b, -1, self.c))
        start, end = torch.cat(starts, 1).reshape(-1, self.c), torch.cat(ends, 1).reshape(-1, self.c)
        a = torch.tensor(self.bounds[:-1], device=latents.device)[self.stage_ids].repeat(b)
        e = torch.tensor(self.bounds[1:], device=latents.device)[self.stage_ids].repeat(b)
        z = z.reshape(-1, z.shape[-1])
        if self.batch_mul > 1:
            start, end, a, e, z = (t.repeat(self.batch_mul, *([1] * (t.dim() - 1))) for t in (start, end, a, e, z))
        u = torch.rand(start.shape[0], device=start.device, dtype=start.dtype)
        x_u = start + u[:, None] * (end - start)
        v = self.velocity(x_u, a + u * (e - a), z)
        return (v.float() - (end - start).float()).pow(2).mean()

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | None = None, *, steps: int | Sequence[int] = 10, cfg: float = 1.0,
                 stages: int | None = None, generator: torch.Generator | None = None,
                 progress: bool = False) -> Tokens:
        """The Generator contract: ``n`` latents for class ids ``condition`` (None: random classes) in
        ``Tokens.latents``; `sample_latents` with ``stages`` stages."""
        labels = random_labels(self, n, condition, generator, self.class_emb.weight.device)
        latents = self.sample_latents(labels, steps, cfg, stages, generator)
        return Tokens(latents=latents, meta={"layout": "continuous", "labels": labels})

    @torch.no_grad()
    def sample_latents(self, labels: Tensor, steps: int | Sequence[int] = 10, cfg: float = 1.0,
                       num_stages: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Latents ``(B, C, H, W)``: S stages, ``steps`` Euler steps each (an int or one per stage), CFG ``cfg``.

        ``num_stages < S`` stops early and returns the last clean map up-sampled to full size (a preview).
        """
        n = num_stages or len(self.scales)
        if not 1 <= n <= len(self.scales):
            raise ValueError(f"num_stages must be in 1..{len(self.scales)}, got {n}")
        if not isinstance(steps, int) and len(steps) == 1:
            steps = steps[0]
        steps = [int(steps)] * len(self.scales) if isinstance(steps, int) else [int(s) for s in steps]
        if len(steps) != len(self.scales) or min(steps) < 1:
            raise ValueError(f"steps must be a positive int or one per stage ({len(self.scales)}), got {steps}")
        b, device = labels.shape[0], labels.device
        guided = cfg != 1.0
        cond = self.condition(labels, b, device)
        if guided:
            cond = torch.cat([cond, self.condition(None, b, device)])
        maps: list[Tensor] = []
        offset = 0
        for s in range(n):
            size, a, e = self.scales[s], self.bounds[s], self.bounds[s + 1]
            z_all = self.transformer_out([torch.cat([m, m]) if guided else m for m in maps], cond)
            z = z_all[:, offset: offset + self.lengths[s]].reshape(-1, z_all.shape[-1])
            offset += self.lengths[s]
            prev = resize(maps[-1], size) if maps else torch.zeros(b, self.c, size, size, device=device)
            eps = torch.randn(b, self.c, size, size, device=device, generator=generator)
            x = self._tokens(a * prev + (1 - a) * eps)
            for k in range(steps[s]):
                u = k / steps[s]
                tau = torch.full((x.shape[0],), a + u * (e - a), device=device)
                if guided:
                    v_c, v_u = self.velocity(torch.cat([x, x]), torch.cat([tau, tau]), z).chunk(2)
                    v = v_u + cfg * (v_c - v_u)
                else:
                    v = self.velocity(x, tau, z)
                x = x + v / steps[s]
            end = x.reshape(b, size * size, self.c).transpose(1, 2).reshape(b, self.c, size, size)
            maps.append((end - (1 - e) * eps) / e)  # the clean map; eps is exactly the noise that started it
        return resize(maps[-1], self.scales[-1])
