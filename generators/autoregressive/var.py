"""Next-scale transformer (VAR, FoundationVision/VAR ``models/var.py``) over multi-scale residual ids.

Input at scale s > 0 is the teacher-forcing feature map of the multi-scale quantizer (the cumulative f_hat
after scale s-1, area-downsampled to scale s: ``quantizer.idx_to_var_input``), projected by ``word_embed``;
the first scale is the class embedding + ``pos_start``. Every token adds a learned absolute position
(``pos_1LC``) and its scale's ``lvl_embed``. Blocks are adaLN (VAR's 6-way gamma/scale/shift order) with
L2-normalised q, k and a learned per-head scale capped at 100, q/v biases (k bias fixed 0), GELU-tanh MLP;
attention is block-causal across scales. Head: affine-free LayerNorm modulated by the class (``head_ada``),
then a linear layer to the codebook.

Sampling (``autoregressive_infer_cfg``): batch doubled with the null class, scale by scale through a KV
cache; guidance ``(1 + t) cond - t uncond`` with ``t = cfg * s / (K - 1)``; top-k / top-p; the next input
comes from the quantizer (``next_autoregressive_input``). The quantizer is NOT part of this module (as
VAR's ``vae_proxy``): pass it to `generate` or `attach_quantizer` it. ``spatial_dims=1`` serves 1D
multi-scale sequences (VAT): a scale of size p then has p tokens instead of p*p. A multi-scale quantizer without
VAR's two input functions (TokenFlow's dual codebook) serves through its own ``next_scale_inputs(ids)``
(`scale_inputs`); sampling then computes the next scale's input from the ids drawn so far.

Deviations: label dropout happens only in training mode (the official forward drops labels even in eval);
VAR's ``shared_aln`` (d36 only) and ``more_smooth`` Gumbel sampling are not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.generators.sampling import cfg_weight, guide, sample
from tokenforge.generators.base import Generator
from tokenforge.nn.attention import block_causal_mask
from tokenforge.nn.norms import AdaLNModulation, LayerNorm, modulate
from tokenforge.nn.transformer import AdaLNBlock, Transformer
from tokenforge.tokenizers.base import Tokens


def scale_inputs(quantizer: nn.Module, ids: Sequence[Tensor]) -> Tensor:
    """Teacher-forcing inputs ``[B, L - l_0, C]`` of per-scale ids: VAR's ``idx_to_var_input`` when the quantizer
    has it, else its ``next_scale_inputs`` (the input of scale s + 1 from the codes of scales <= s)."""
    if hasattr(quantizer, "idx_to_var_input"):
        return quantizer.idx_to_var_input(list(ids))
    return quantizer.next_scale_inputs(list(ids))


def split_scales(ids: Tensor, lengths: list[int]) -> list[Tensor]:
    """Flattened multi-scale ids ``[B, sum l_s]`` -> per-scale ``[B, l_s]``."""
    ids = ids.reshape(ids.shape[0], -1)
    if ids.shape[1] != sum(lengths):
        raise ValueError(f"got {ids.shape[1]} ids per sample; the model's scales hold {sum(lengths)} ({lengths})")
    return list(ids.split(lengths, dim=1))


class VAR(Generator):
    """VAR-style next-scale generator; defaults are var_d16 on the released 256 px VQVAE."""

    needs_tokenizer = True  # nll teacher-forces through the tokenizer's quantizer
    block_types = (AdaLNBlock,)  # FSDP / activation-checkpointing units (tokenforge.fsdp)

    def __init__(
        self,
        vocab_size: int = 4096,
        cvae: int = 32,
        patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
        spatial_dims: int = 2,
        depth: int = 16,
        embed_dim: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        num_classes: int = 1000,
        cond_drop_rate: float = 0.1,
        attn_l2_norm: bool = True,
        drop_path_rate: float | None = None,
        init_adaln: float = 0.5,
        init_adaln_gamma: float = 1e-5,
        init_head: float = 0.02,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims must be 1 (sequences) or 2 (grids), got {spatial_dims}")
        dim = embed_dim or 64 * depth
        heads = num_heads or depth
        self.vocab_size, self.cvae, self.dim, self.depth = vocab_size, cvae, dim, depth
        self.patch_nums, self.spatial_dims = [int(p) for p in patch_nums], spatial_dims
        self.lengths = [p**spatial_dims for p in self.patch_nums]
        self.num_classes, self.cond_drop_rate = num_classes, cond_drop_rate
        total = sum(self.lengths)
        self.word_embed = nn.Linear(cvae, dim)
        self.class_emb = nn.Embedding(num_classes + 1, dim)  # last row: the null class
        self.lvl_embed = nn.Embedding(len(self.lengths), dim)
        self.pos_start = nn.Parameter(torch.empty(1, self.lengths[0], dim))
        self.pos_1LC = nn.Parameter(torch.empty(1, total, dim))
        self.transformer = Transformer(
            dim, depth, heads, adaln=True,
            drop_path=0.1 * depth / 24 if drop_path_rate is None else drop_path_rate,
            block_options={"order": "gates_scales_shifts", "norm_eps": norm_eps, "mlp": "gelu_tanh",
                           "mlp_ratio": mlp_ratio,
                           "attn_options": {"qkv": "fused", "qv_bias": True, "out_bias": True,
                                            "l2_norm_qk": attn_l2_norm}},
        )
        self.head_norm = LayerNorm(dim, eps=norm_eps)
        self.head_ada = AdaLNModulation(dim, order="scale_shift")
        self.head = nn.Linear(dim, vocab_size)
        levels = torch.repeat_interleave(torch.arange(len(self.lengths)), torch.tensor(self.lengths))
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("mask", block_causal_mask(self.lengths), persistent=False)
        self._init_weights(init_adaln, init_adaln_gamma, init_head)
        self._quantizer: tuple[nn.Module, ...] = ()

    @property
    def seq_len(self) -> int:
        return sum(self.lengths)

    @classmethod
    def token_defaults(cls, facts: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """Scale sides, map dimensionality and code width from token shards' layout facts
        (`tokenforge.manifest_defaults`): ``spatial_dims`` 2 when every scale holds a square number of ids, else
        1 (set it for 1D scales that are all squares); ``patch_nums`` the sides; ``cvae`` the code width."""
        lengths = facts.get("scale_lengths")
        if not lengths:
            return {}
        dims = given.get("spatial_dims") or (2 if all(math.isqrt(n) ** 2 == n for n in lengths) else 1)
        out = {"spatial_dims": dims, "patch_nums": [math.isqrt(n) if dims == 2 else n for n in lengths]}
        if facts.get("code_dim"):
            out["cvae"] = facts["code_dim"]
        return out

    def _init_weights(self, init_adaln: float, init_adaln_gamma: float, init_head: float) -> None:
        """VAR's ``init_weights``: truncated normal std sqrt(1/(3C)), small head, adaLN gates scaled down."""
        std = math.sqrt(1 / self.dim / 3)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        with torch.no_grad():
            self.head.weight.mul_(init_head)
            self.head_ada.linear.weight.mul_(init_adaln)
            for block in self.transformer.blocks:
                block.attn.proj.weight.div_(math.sqrt(2 * self.depth))
                block.mlp.fc2.weight.div_(math.sqrt(2 * self.depth))
                w = block.adaln.linear.weight  # rows: gamma1, gamma2 | scale1, scale2, shift1, shift2
                w[2 * self.dim:].mul_(init_adaln)
                w[: 2 * self.dim].mul_(init_adaln_gamma)

    # ------------------------------------------------------------------ quantizer (not a submodule)

    def attach_quantizer(self, quantizer: nn.Module) -> VAR:
        """Remember the multi-scale quantizer that sampling uses (kept outside the state dict, as VAR)."""
        self._check_quantizer(quantizer)
        self._quantizer = (quantizer,)
        return self

    def _check_quantizer(self, quantizer: nn.Module) -> nn.Module:
        inputs = ("next_autoregressive_input", "idx_to_var_input")
        for name in ("embed_scale", "tokens_per_scale", "dim"):
            if not hasattr(quantizer, name):
                raise TypeError(f"{type(quantizer).__name__} lacks .{name}: VAR needs a multi-scale quantizer "
                                "(tokenforge.tokenizers.quantizers.residual.MultiScaleResidualQuantizer)")
        if not all(hasattr(quantizer, n) for n in inputs) and not hasattr(quantizer, "next_scale_inputs"):
            raise TypeError(f"{type(quantizer).__name__} has neither {' nor '.join(inputs)} nor next_scale_inputs: "
                            "VAR cannot form its next-scale inputs")
        sizes = [int(n) for n in quantizer.tokens_per_scale]
        if sizes != self.lengths or quantizer.dim != self.cvae:
            raise ValueError(f"quantizer has scales of {sizes} tokens and dim {quantizer.dim}; this VAR expects "
                             f"{self.lengths} and cvae {self.cvae}")
        return quantizer

    # ------------------------------------------------------------------ training

    def condition(self, labels: Tensor | int | None, batch: int) -> Tensor:
        device = self.class_emb.weight.device
        if labels is None:
            labels = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        labels = torch.as_tensor(labels, device=device).long().reshape(-1)
        labels = labels.expand(batch) if labels.numel() == 1 else labels
        if labels.shape[0] != batch or int(labels.min()) < 0 or int(labels.max()) > self.num_classes:
            raise ValueError(f"need {batch} class labels in [0, {self.num_classes}] ({self.num_classes} = null)")
        return labels

    def logits(self, h: Tensor, cond: Tensor) -> Tensor:
        m = self.head_ada(cond)
        return self.head(modulate(self.head_norm(h.float()), m["shift1"], m["scale1"])).float()

    def forward(self, labels: Tensor | None, x_wo_first: Tensor) -> Tensor:
        """Teacher forcing: labels ``[B]``, quantizer input ``[B, L - n_0, cvae]`` -> logits ``[B, L, V]``."""
        batch = x_wo_first.shape[0]
        labels = self.condition(labels, batch)
        if self.training and self.cond_drop_rate > 0:
            drop = torch.rand(batch, device=labels.device) < self.cond_drop_rate
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        cond = self.class_emb(labels)
        length = self.lengths[0] + x_wo_first.shape[1]
        x = torch.cat([cond[:, None] + self.pos_start, self.word_embed(x_wo_first.float())], dim=1)
        x = x + self.lvl_embed(self.levels[:length])[None] + self.pos_1LC[:, :length]
        h = self.transformer(x, cond, mask=self.mask[:length, :length])
        return self.logits(h, cond)

    def loss(self, labels: Tensor | None, ids: list[Tensor], quantizer: nn.Module | None = None) -> Tensor:
        """Mean cross-entropy over all scales' tokens (VAR weights every token 1/L)."""
        quantizer = self._check_quantizer(quantizer or self.quantizer)
        with torch.no_grad():
            x = scale_inputs(quantizer, ids)
        logits = self(labels, x)
        target = torch.cat([i.reshape(i.shape[0], -1) for i in ids], dim=1)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    def batch_condition(self, batch: dict[str, Any]) -> Tensor | None:
        """The class ids a token batch trains with (None: the null class)."""
        return None if self.num_classes == 0 else batch.get("cls")

    def attach_tokenizer(self, tokenizer: nn.Module) -> None:
        """Teacher forcing reads the tokenizer's multi-scale quantizer."""
        self.attach_quantizer(tokenizer.quantizer)

    def teacher_forcing(self, batch: dict[str, Any], forward: Any = None) -> tuple[Tensor, Tensor]:
        """(logits ``[B, L, V]``, flat targets) of flattened multi-scale ids through the attached quantizer."""
        scales = split_scales(batch["ids"].long(), self.lengths)
        with torch.no_grad():
            x = scale_inputs(self.quantizer, scales)
        logits = (self if forward is None else forward)(self.batch_condition(batch), x)
        return logits, torch.cat(scales, dim=1).flatten()

    def nll(self, batch: dict[str, Any], *, seed: int = 0, **options: Any) -> tuple[Tensor, int]:
        """(summed cross-entropy in nats over every scale's tokens, number of tokens)."""
        logits, target = self.teacher_forcing(batch)
        return F.cross_entropy(logits.flatten(0, 1), target, reduction="sum"), int(target.numel())

    @property
    def quantizer(self) -> nn.Module:
        if not self._quantizer:
            raise RuntimeError("no quantizer: pass quantizer=... or call attach_quantizer(tokenizer.quantizer)")
        return self._quantizer[0]

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def generate(
        self,
        n: int,
        condition: Tensor | int | None = None,
        *,
        quantizer: nn.Module | None = None,
        cfg: float = 1.5,
        cfg_schedule: str = "var",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.0,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        progress: bool = False,
        **unused: Any,
    ) -> Tokens:
        """Sample ``n`` multi-scale id lists. ``condition``: class ids ``[n]`` / int / None (random classes).

        ``cfg`` with ``cfg_schedule="var"`` is VAR's ramp (0 switches guidance off); ids come back as a list of
        ``[n, l_s]`` tensors, ``meta["fhat"]`` holds the final cumulative feature map.
        """
        quantizer = self._check_quantizer(quantizer or self.quantizer)
        device = self.class_emb.weight.device
        if condition is None and self.num_classes > 0:
            where = generator.device if generator is not None else device
            condition = torch.randint(0, self.num_classes, (n,), generator=generator, device=where)
        labels = self.condition(condition, n)
        guided = not (cfg_schedule == "var" and cfg == 0) and not (cfg_schedule != "var" and cfg == 1.0)
        if guided:
            labels = torch.cat([labels, torch.full_like(labels, self.num_classes)])
        rows = labels.shape[0]
        cond = self.class_emb(labels)
        lvl_pos = self.lvl_embed(self.levels)[None] + self.pos_1LC
        first = self.lengths[0]
        x = cond[:, None].expand(rows, first, -1) + self.pos_start + lvl_pos[:, :first]
        native = hasattr(quantizer, "next_autoregressive_input")  # else: inputs from the ids so far
        f_hat = cond.new_zeros(n, quantizer.dim, *quantizer.scale_sizes[-1]) if native else None
        ids, start = [], 0
        self.transformer.setup_kv_cache(rows, self.seq_len, device=device)
        scales = range(len(self.lengths))
        if progress:
            from tqdm.auto import tqdm

            scales = tqdm(scales, desc="scales", leave=False)
        try:
            for si in scales:
                end = start + self.lengths[si]
                h = self.transformer(x, cond, input_pos=torch.arange(start, end, device=device))
                logits = self.logits(h, cond)
                if guided:
                    logits = guide(logits[:n], logits[n:], cfg_weight(cfg_schedule, cfg, si, len(self.lengths)))
                idx = sample(logits, temperature, top_k, top_p, greedy, generator)
                ids.append(idx)
                if native:
                    f_hat, nxt = quantizer.next_autoregressive_input(si, f_hat, quantizer.embed_scale(idx, si))
                if si + 1 < len(self.lengths):
                    nxt = nxt.reshape(n, quantizer.dim, -1).transpose(1, 2) if native else self._prefix_input(
                        quantizer, ids)
                    x = (self.word_embed(nxt) + lvl_pos[:, end:end + self.lengths[si + 1]]).repeat(rows // n, 1, 1)
                start = end
        finally:
            self.transformer.clear_kv_cache()
        return Tokens(ids=ids, meta={"layout": "scales", **({"fhat": f_hat} if native else {})})

    def _prefix_input(self, quantizer: nn.Module, ids: list[Tensor]) -> Tensor:
        """Input ``[n, l_{s+1}, C]`` of the scale after the ``s + 1`` drawn ones, from `scale_inputs` of the ids
        padded with zeros (an input depends only on coarser scales, so the padding never reaches it)."""
        done = len(ids)
        padded = ids + [ids[0].new_zeros(ids[0].shape[0], n) for n in self.lengths[done:]]
        begin = sum(self.lengths[1:done])
        return scale_inputs(quantizer, padded)[:, begin:begin + self.lengths[done]]
