"""ENAT: a non-autoregressive (masked-token) generator with visible/mask disentangling and computation reuse.

Layout and maths follow the official ``libs/models.py`` DiT class (spec nat_car.md §1.2-1.3), with official
parameter names so released weights load unchanged:

- ``x_embedder`` (word + learned 1-D position embeddings -> LayerNorm(1e-6) -> dropout), ``y_embedder``
  (class table with a null row used for CFG / label dropout), ``prev_proj`` (``x + mlp(norm(x))``).
- ``blocks``: the encoder blocks first, then the decoder blocks, all `ENATBlock` (8 adaLN outputs, one query
  projection, two key/value projections: ``kv.A`` for context tokens and ``kv.B`` for the block's own tokens).
- The encoder runs on the **visible** tokens only; the decoder runs on the **mask** tokens and attends to
  the encoded visible tokens (context) and to itself.
- Reuse (``prev=`` the previous step's output): only newly revealed tokens go through the encoder, attending
  to ``prev_proj`` of the previous step's features (the same context in every encoder layer); the old
  visible positions are represented by that projection.
- Head: final LayerNorm(1e-5) -> fc -> exact GELU -> LayerNorm(1e-5) -> ``@ word_embeddings.detach().T +
  bias``, the [MASK] logit dropped.

Deviation: the official model also builds ``prev_embedder`` (an MLP never used in forward); it is not built
here and its keys are dropped by the loader. Every row of a batch must have the same number of mask tokens
(as in the official code), which keeps the encoder/decoder split a plain reshape with no padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.generators.base import Generator
from tokenforge.nn.mlp import GeluMLP
from tokenforge.nn.norms import LayerNorm, modulate
from tokenforge.tokenizers.base import Tokens


class Multiway(nn.Module):
    """Two same-shaped linears: ``A`` for context tokens, ``B`` for the block's own tokens (official names)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.A = nn.Linear(dim, out_dim)
        self.B = nn.Linear(dim, out_dim)


class ENATAttention(nn.Module):
    """Queries from the block's tokens; keys/values from ``[kv.A(context) ; kv.B(self)]``. Plain softmax attention."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = Multiway(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, ctx: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        h = self.num_heads
        kv = self.kv.B(x)
        if ctx is not None and ctx.shape[1]:
            kv = torch.cat([self.kv.A(ctx), kv], dim=1)
        k, v = kv.reshape(b, kv.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class ENATBlock(nn.Module):
    """adaLN block with 8 modulation outputs (shift/scale for own tokens, shift/scale for context, gate, MLP x3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-6)
        self.norm1_ = LayerNorm(dim, eps=1e-6)
        self.norm2 = LayerNorm(dim, eps=1e-6)
        self.attn = ENATAttention(dim, num_heads)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio), approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 8 * dim))

    def forward(self, x: Tensor, c: Tensor, ctx: Tensor | None = None) -> Tensor:
        mods = self.adaLN_modulation(c).unsqueeze(1).chunk(8, dim=-1)
        shift, scale, shift_ctx, scale_ctx, gate, shift_mlp, scale_mlp, gate_mlp = mods
        ctx_mod = modulate(self.norm1_(ctx), shift_ctx, scale_ctx) if ctx is not None else None
        x = x + gate * self.attn(modulate(self.norm1(x), shift, scale), ctx_mod)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class TokenEmbedding(nn.Module):
    """BERT-style embeddings: word + learned absolute position, LayerNorm(1e-6), dropout."""

    def __init__(self, vocab: int, seq_len: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(seq_len, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor) -> Tensor:
        return self.dropout(self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings.weight[: ids.shape[1]]))


class LabelEmbedding(nn.Module):
    """Class table with a null row (index ``num_classes``); in training a label is dropped with ``dropout_prob``."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor) -> Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class PrevProj(nn.Module):
    """``x + mlp(norm(x))``: maps the previous step's features into the current step (the reuse path)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio), approximate="tanh")

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


class MlmHead(nn.Module):
    """fc -> GELU -> LayerNorm -> tied (stop-gradient) word embeddings + bias."""

    def __init__(self, dim: int, vocab: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim, eps=1e-5)
        self.bias = nn.Parameter(torch.zeros(1, 1, vocab))

    def forward(self, x: Tensor, word_embeddings: Tensor) -> Tensor:
        h = self.ln(F.gelu(self.fc(x)))
        return h @ word_embeddings.detach().transpose(0, 1) + self.bias


@dataclass
class ENATState:
    """One forward's output; ``feat`` and ``masking`` are what the next step reuses."""

    logits: Tensor  # [B, L, codebook_size]
    feat: Tensor  # [B, L, D] before the final norm
    masking: Tensor  # [B, L] bool, True at [MASK]
    extras: dict[str, Tensor] = field(default_factory=dict)  # encoder_out, decoder_ctx (parity / tests)


# a pytree node, so wrappers that hook a forward's output tensors see inside it (FSDP's fully_shard hooks them to
# gather the weights again for the backward pass; an opaque output left the tied embedding freed)
torch.utils._pytree.register_dataclass(ENATState)


def random_mask(batch: int, length: int, count: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """``[batch, length]`` bool with exactly ``count`` True per row at random positions."""
    order = torch.rand(batch, length, generator=generator, device=device).argsort(dim=1)
    return order < count


def _rows(x: Tensor, where: Tensor) -> Tensor:
    """``x[where]`` reshaped to ``[B, n, ...]`` (every row of ``where`` has the same count, checked earlier)."""
    return x[where].reshape(x.shape[0], -1, *x.shape[2:])


def _equal_counts(mask: Tensor, what: str) -> int:
    counts = mask.sum(dim=1)
    if counts.numel() and not bool((counts == counts[0]).all()):
        raise ValueError(f"ENAT needs the same number of {what} tokens in every row, got counts {counts.tolist()}")
    return int(counts[0]) if counts.numel() else 0


class ENAT(Generator):
    """Class-conditional ENAT over a flattened token grid; see the module docstring. ``generate`` in sampler.py."""

    block_types = (ENATBlock,)  # FSDP / activation-checkpointing units (tokenforge.fsdp)
    nll_note = "masked-token cross-entropy at a fixed mask ratio with a seeded mask per batch"
    nll_options = ("mask_ratio",)

    def __init__(
        self,
        seq_len: int = 256,
        hidden_size: int = 1024,
        num_heads: int = 16,
        enc_depth: int = 22,
        dec_depth: int = 2,
        mlp_ratio: float = 4.0,
        codebook_size: int = 1024,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        emb_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if enc_depth < 1 or dec_depth < 1:
            raise ValueError(f"need enc_depth, dec_depth >= 1, got {enc_depth}, {dec_depth}")
        self.seq_len, self.codebook_size, self.num_classes = seq_len, codebook_size, num_classes
        self.mask_token_id, self.null_class = codebook_size, num_classes
        self.enc_depth = enc_depth
        d = hidden_size
        self.x_embedder = TokenEmbedding(codebook_size + 1, seq_len, d, emb_dropout)
        self.y_embedder = LabelEmbedding(num_classes, d, class_dropout_prob)
        self.prev_proj = PrevProj(d, mlp_ratio)
        self.blocks = nn.ModuleList(ENATBlock(d, num_heads, mlp_ratio) for _ in range(enc_depth + dec_depth))
        self.norm = nn.LayerNorm(d, eps=1e-5)
        self.mlm_layer = MlmHead(d, codebook_size + 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: xavier-uniform linears with zero bias, N(0, 0.02) embeddings, zeroed adaLN outputs."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for emb in (self.x_embedder.word_embeddings, self.x_embedder.position_embeddings,
                    self.y_embedder.embedding_table):
            nn.init.normal_(emb.weight, std=0.02)
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)

    @property
    def encoder(self) -> nn.ModuleList:
        return self.blocks[: self.enc_depth]

    @property
    def decoder(self) -> nn.ModuleList:
        return self.blocks[self.enc_depth:]

    def _check(self, ids: Tensor, labels: Tensor) -> Tensor:
        if ids.ndim != 2 or ids.dtype != torch.long or ids.shape[1] > self.seq_len:
            raise ValueError(f"ENAT expects ids [B, <= {self.seq_len}] int64, got {tuple(ids.shape)} {ids.dtype}")
        if bool(((ids < 0) | (ids > self.mask_token_id)).any()):
            raise ValueError(f"token ids must lie in [0, {self.mask_token_id}] ({self.mask_token_id} = [MASK])")
        labels = labels.reshape(-1)
        if labels.shape[0] != ids.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for a batch of {ids.shape[0]}")
        return labels

    def forward(self, ids: Tensor, labels: Tensor, prev: ENATState | None = None) -> ENATState:
        """Masked ids ``[B, L]`` (``codebook_size`` = [MASK]) and class labels ``[B]`` -> `ENATState`."""
        labels = self._check(ids, labels)
        c = self.y_embedder(labels)
        x = self.x_embedder(ids)
        masking = ids == self.mask_token_id
        visible = ~masking
        _equal_counts(masking, "mask")
        extras: dict[str, Tensor] = {}
        if prev is None:
            vis_x = _rows(x, visible)
            if vis_x.shape[1]:
                for blk in self.encoder:
                    vis_x = blk(vis_x, c)
            extras["encoder_out"] = vis_x
        else:
            vis_x = self._encode_reused(x, c, masking, prev, extras)
        extras["decoder_ctx"] = vis_x
        mask_x = _rows(x, masking)
        if mask_x.shape[1]:
            for blk in self.decoder:
                mask_x = blk(mask_x, c, vis_x)
        feat = torch.empty_like(x)
        feat[visible] = vis_x.reshape(-1, x.shape[-1])
        feat[masking] = mask_x.reshape(-1, x.shape[-1])
        logits = self.mlm_layer(self.norm(feat), self.x_embedder.word_embeddings.weight)
        return ENATState(logits[..., : self.codebook_size], feat, masking, extras)

    def _encode_reused(self, x: Tensor, c: Tensor, masking: Tensor, prev: ENATState, extras: dict) -> Tensor:
        """Encode only the newly revealed tokens, attending to ``prev_proj`` of the previous visible features."""
        prev_mask = prev.masking
        if prev_mask.shape != masking.shape or bool((~prev_mask & masking).any()):
            raise ValueError("reuse needs the current mask set inside the previous one (tokens never re-masked)")
        old_vis, new_vis = ~prev_mask, prev_mask & ~masking
        _equal_counts(old_vis, "previously visible")
        _equal_counts(new_vis, "newly revealed")
        ctx = self.prev_proj(_rows(prev.feat, old_vis))
        new_x = _rows(x, new_vis)
        if new_x.shape[1]:
            for blk in self.encoder:
                new_x = blk(new_x, c, ctx)
        extras["encoder_out"] = new_x
        buf = torch.empty_like(x)
        buf[old_vis] = ctx.reshape(-1, x.shape[-1])
        buf[new_vis] = new_x.reshape(-1, x.shape[-1])
        return _rows(buf, ~masking)

    def forward_full(self, ids: Tensor, labels: Tensor) -> Tensor:
        """MaskGIT-style baseline: every block over all L tokens (mask tokens included, no split) -> logits.

        A compute reference for the sampler's ``mode="maskgit"``; ENAT was not trained this way.
        """
        labels = self._check(ids, labels)
        c, x = self.y_embedder(labels), self.x_embedder(ids)
        for blk in self.blocks:
            x = blk(x, c)
        logits = self.mlm_layer(self.norm(x), self.x_embedder.word_embeddings.weight)
        return logits[..., : self.codebook_size]

    def batch_labels(self, batch: dict[str, Any]) -> Tensor:
        """Class ids ``[B]`` of a token batch; the null class when it has none."""
        cls = batch.get("cls")
        if cls is not None:
            return cls.reshape(-1).long()
        return torch.full((len(batch["ids"]),), self.null_class, dtype=torch.long, device=batch["ids"].device)

    def nll(self, batch: dict[str, Any], *, seed: int = 0, mask_ratio: float = 0.8,
            **options: Any) -> tuple[Tensor, int]:
        """(summed cross-entropy on the masked tokens, their number): ``round(mask_ratio L)`` positions per row
        (clamped to [1, L-1]) masked at random with ``seed``; no reuse, no label dropout."""
        ids = batch["ids"].reshape(len(batch["ids"]), -1).long()
        count = min(max(round(float(mask_ratio) * ids.shape[1]), 1), ids.shape[1] - 1)
        gen = torch.Generator(device=ids.device).manual_seed(int(seed))
        masking = random_mask(len(ids), ids.shape[1], count, generator=gen, device=ids.device)
        logits = self(ids.masked_fill(masking, self.mask_token_id), self.batch_labels(batch)).logits
        return F.cross_entropy(logits[masking].float(), ids[masking], reduction="sum"), int(masking.sum())

    def nll_protocol(self, *, mask_ratio: float = 0.8, **options: Any) -> dict[str, Any]:
        return {"mask_ratio": float(mask_ratio)}

    def generate(self, n: int, condition: Tensor | None = None, **sampling: Any) -> Tokens:
        """Sample ``n`` token grids; options of `tokenforge.generators.enat.sampler.enat_generate`.

        Also accepts the keyword set of ``tokenforge generate`` (``cfg`` = ENAT's guidance scale ``w``;
        ``temperature`` scales ``samp_temp``); options without an ENAT meaning must be neutral.
        """
        from tokenforge.generators.enat.sampler import enat_generate, from_cli_options

        return enat_generate(self, n, condition, **from_cli_options(sampling))
