"""Next-token GPT (LlamaGen ``autoregressive/models/gpt.py``) over any tokenizer's ids.

Architecture (as LlamaGen): condition token(s) then token embeddings, pre-norm blocks (RMSNorm, fused-qkv
attention with RoPE, SwiGLU), final RMSNorm, bias-free ``output`` head, float32 logits. RoPE is LlamaGen's
2D table for square grids (``layout="grid"``) or its 1D table for sequences (``"sequence"``, e.g.
WavTokenizer streams, FlexTok's coarse-to-fine 1D tokens) and flattened multi-scale ids (``"scales"``);
either way the condition rows are ``cos = sin = 0`` (LlamaGen's quirk, kept).

Conditioning: ``num_classes > 0`` gives a class table with one extra (last) row = the unconditional class,
used for label dropout in training (``class_dropout``) and for CFG; ``num_classes == 0`` is unconditional
(the single null row is a start token). ``caption_dim`` switches to text conditioning: ``cls_token_num``
precomputed text-encoder features ``[B, T, caption_dim]`` through LlamaGen's caption MLP (GELU-tanh, no
biases), with a fixed ``uncond_embedding`` buffer substituted for dropped captions and for CFG.

Variable length (``eos=True``): the head has ``vocab_size + 1`` outputs, the last being end-of-sequence;
training appends EOS after each sequence's ``lengths`` and ignores padding (-1); sampling stops a row at
EOS and pads the rest with -1.

Deviations: label dropout happens only in training mode (VAR's pitfall avoided); LlamaGen's caption padding
masks (``emb_masks``) are not implemented, so captions should be fixed-length features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.generators.autoregressive.decoding import (StepSettings, choose, generate_multinomial, guidance_weights,
                                                          make_decode_step, output_state)
from tokenforge.generators.sampling import gumbel_noise
from tokenforge.generators.base import Generator
from tokenforge.nn.mlp import GeluMLP, find_multiple
from tokenforge.nn.rope import rope_table_1d, rope_table_2d
from tokenforge.nn.transformer import Block, Transformer
from tokenforge.tokenizers.base import Tokens

LAYOUTS = ("grid", "sequence", "scales")
IGNORE = -100


class CaptionEmbedder(nn.Module):
    """LlamaGen ``CaptionEmbedder``: MLP on text features; ``uncond_embedding`` replaces dropped captions."""

    def __init__(self, caption_dim: int, dim: int, token_num: int) -> None:
        super().__init__()
        self.cap_proj = GeluMLP(caption_dim, dim, out_dim=dim, approximate="tanh", bias=False)
        self.register_buffer("uncond_embedding", torch.randn(token_num, caption_dim) / caption_dim**0.5)

    def forward(self, caption: Tensor, drop: Tensor | None = None) -> Tensor:
        if drop is not None:
            caption = torch.where(drop[:, None, None], self.uncond_embedding.to(caption.dtype), caption)
        return self.cap_proj(caption)


class GPT(Generator):
    """LlamaGen-style next-token transformer; see the module docstring. Defaults: GPT-B c2i at 256 px."""

    block_types = (Block,)  # FSDP / activation-checkpointing units (tokenforge.fsdp; LlamaGen wraps its layers)

    def __init__(
        self,
        vocab_size: int = 16384,
        seq_len: int = 256,
        layout: str = "grid",
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        num_kv_heads: int | None = None,
        multiple_of: int = 256,
        ffn_dim_multiplier: float | None = None,
        norm_eps: float = 1e-5,
        rope_base: float = 10000.0,
        num_classes: int = 1000,
        class_dropout: float = 0.1,
        caption_dim: int | None = None,
        cls_token_num: int = 1,
        eos: bool = False,
        scale_lengths: list[int] | None = None,
        token_dropout: float = 0.1,
        resid_dropout: float = 0.1,
        ffn_dropout: float = 0.1,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if layout == "grid" and math.isqrt(seq_len) ** 2 != seq_len:
            raise ValueError(f"layout 'grid' needs a square seq_len (h*w with h == w), got {seq_len}")
        if layout == "scales" and (not scale_lengths or sum(scale_lengths) != seq_len):
            raise ValueError(f"layout 'scales' needs scale_lengths summing to seq_len ({seq_len}), got {scale_lengths}")
        if caption_dim is None and cls_token_num != 1:
            raise ValueError("class / unconditional models use one condition token (cls_token_num=1)")
        self.vocab_size, self.seq_len, self.layout, self.dim = vocab_size, seq_len, layout, dim
        self.num_classes, self.class_dropout, self.cls_token_num = num_classes, class_dropout, cls_token_num
        self.eos, self.scale_lengths = eos, list(scale_lengths) if scale_lengths else None
        self.head_dim, self.rope_base = dim // num_heads, rope_base
        if caption_dim is None:
            self.cls_embedding = nn.Embedding(num_classes + 1, dim)  # last row: unconditional
            self.caption_embedding = None
        else:
            self.cls_embedding = None
            self.caption_embedding = CaptionEmbedder(caption_dim, dim, cls_token_num)
        self.tok_embeddings = nn.Embedding(vocab_size, dim)
        self.tok_dropout = nn.Dropout(token_dropout)
        self.transformer = Transformer(
            dim, depth, num_heads, drop_path=drop_path, final_norm="rmsnorm", final_norm_eps=norm_eps,
            block_options={
                "norm": "rmsnorm", "norm_eps": norm_eps, "mlp": "swiglu",
                "mlp_options": {"multiple_of": multiple_of, "ffn_dim_multiplier": ffn_dim_multiplier,
                                "dropout": ffn_dropout},
                "attn_options": {"qkv": "fused", "num_kv_heads": num_kv_heads, "attn_dropout": attn_dropout,
                                 "proj_dropout": resid_dropout},
            },
        )
        self.output = nn.Linear(dim, vocab_size + int(eos), bias=False)
        self.register_buffer("rope", self._rope_table(), persistent=False)
        self._init_weights(initializer_range)

    # ------------------------------------------------------------------ set-up

    @property
    def eos_id(self) -> int | None:
        return self.vocab_size if self.eos else None

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def can_guide(self) -> bool:
        return self.caption_embedding is not None or self.num_classes > 0

    def _rope_table(self) -> Tensor:
        if self.layout == "grid":
            return rope_table_2d(math.isqrt(self.seq_len), self.head_dim, self.rope_base, self.cls_token_num)
        return rope_table_1d(self.seq_len, self.head_dim, self.rope_base, self.cls_token_num)

    def _apply(self, fn: Any, recurse: bool = True) -> GPT:
        """Keep the RoPE table in float32 whatever dtype the weights are cast to (as LlamaGen's freqs_cis)."""
        super()._apply(fn, recurse)
        self.rope = self._rope_table().to(self.tok_embeddings.weight.device)
        return self

    def _init_weights(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        nn.init.zeros_(self.output.weight)  # LlamaGen zero-initialises the head

    # ------------------------------------------------------------------ conditioning

    def embed_condition(self, cond: Tensor | int | None, batch: int, drop: Tensor | None = None) -> Tensor:
        """Condition tokens ``[B, cls_token_num, dim]``; ``drop`` (bool ``[B]``) replaces rows by the null one."""
        device = self.tok_embeddings.weight.device
        if self.caption_embedding is not None:
            if cond is None or not torch.is_tensor(cond) or cond.dim() != 3:
                raise ValueError(f"a text-conditioned GPT needs caption features [B, {self.cls_token_num}, "
                                 "caption_dim] (precomputed text-encoder outputs)")
            return self.caption_embedding(cond.to(device, self.tok_embeddings.weight.dtype), drop)
        if cond is None:
            labels = torch.full((batch,), self.null_class, device=device, dtype=torch.long)
        else:
            labels = torch.as_tensor(cond, device=device).long().reshape(-1)
            labels = labels.expand(batch) if labels.numel() == 1 else labels
            if labels.shape[0] != batch:
                raise ValueError(f"got {labels.shape[0]} class labels for a batch of {batch}")
            # the range check syncs with the device; under torch.compile it would split the graph, so skip it there
            if not torch.compiler.is_compiling() and (int(labels.min()) < 0 or int(labels.max()) > self.num_classes):
                raise ValueError(f"class labels must lie in [0, {self.num_classes}] ({self.num_classes} = null)")
        if drop is not None:
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        return self.cls_embedding(labels)[:, None]

    def null_condition(self, batch: int) -> Tensor:
        """The unconditional condition tokens (CFG's second half)."""
        if self.caption_embedding is not None:
            return self.caption_embedding.cap_proj(
                self.caption_embedding.uncond_embedding[None].expand(batch, -1, -1).to(self.tok_embeddings.weight.dtype))
        return self.embed_condition(None, batch)

    # ------------------------------------------------------------------ training

    def flatten_ids(self, ids: Tensor | list[Tensor]) -> Tensor:
        """Tokenizer ids (``[B,h,w]`` grid, ``[B,L]`` sequence or a per-scale list) -> ``[B, L]``."""
        if isinstance(ids, (list, tuple)):
            ids = torch.cat([i.reshape(i.shape[0], -1) for i in ids], dim=1)
        return ids.reshape(ids.shape[0], -1)

    def forward(self, ids: Tensor, cond: Tensor | None = None) -> Tensor:
        """Teacher forcing: ``ids`` ``[B, L]`` (-1 = padding) -> logits ``[B, L (+1 with eos), V (+1)]``.

        Position t predicts token t from the condition and tokens < t (LlamaGen's training layout).
        Label / caption dropout with probability ``class_dropout`` in training mode.
        """
        ids = self.flatten_ids(ids)
        batch, length = ids.shape
        if length > self.seq_len:
            raise ValueError(f"sequence of {length} tokens is longer than the model's seq_len {self.seq_len}")
        drop = None
        if self.training and self.class_dropout > 0 and self.can_guide:
            drop = torch.rand(batch, device=ids.device) < self.class_dropout
        inputs = ids if self.eos else ids[:, :-1]
        x = torch.cat([self.embed_condition(cond, batch, drop), self.tok_embeddings(inputs.clamp_min(0))], dim=1)
        h = self.transformer(self.tok_dropout(x), causal=True, rope=self.rope[: x.shape[1]])
        return self.output(h[:, self.cls_token_num - 1:]).float()

    def targets(self, ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Cross-entropy targets for `forward`'s logits: ids, EOS after each sequence (eos models), IGNORE on pads."""
        ids = self.flatten_ids(ids)
        target = ids.masked_fill(ids < 0, IGNORE)
        if lengths is not None:
            beyond = torch.arange(ids.shape[1], device=ids.device)[None] >= lengths.to(ids.device)[:, None]
            target = target.masked_fill(beyond, IGNORE)
        if self.eos:
            valid = lengths.to(ids.device) if lengths is not None else (ids >= 0).sum(1)
            target = torch.cat([target, target.new_full((ids.shape[0], 1), IGNORE)], dim=1)
            target.scatter_(1, valid[:, None].long(), self.eos_id)
        return target

    def loss(self, ids: Tensor, cond: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
        """Mean next-token cross-entropy (nats) over the non-padding targets."""
        logits = self(ids, cond)
        return F.cross_entropy(logits.flatten(0, 1), self.targets(ids, lengths).flatten(), ignore_index=IGNORE)

    def batch_condition(self, batch: dict[str, Any]) -> Tensor | None:
        """The condition a token batch trains with: caption features, class ids or None."""
        if self.caption_embedding is not None:
            return batch["caption"]
        return None if self.num_classes == 0 else batch.get("cls")

    def teacher_forcing(self, batch: dict[str, Any], forward: Any = None) -> tuple[Tensor, Tensor]:
        """(logits ``[B, L, V]``, flat targets with IGNORE on pads) of a token batch; ``forward`` replaces
        ``self`` (a compiled module)."""
        ids = batch["ids"].long()
        logits = (self if forward is None else forward)(ids, self.batch_condition(batch))
        return logits, self.targets(ids, batch.get("lengths")).flatten()

    def nll(self, batch: dict[str, Any], *, seed: int = 0, **options: Any) -> tuple[Tensor, int]:
        """(summed next-token cross-entropy in nats, number of non-padding targets)."""
        logits, targets = self.teacher_forcing(batch)
        total = F.cross_entropy(logits.flatten(0, 1), targets, ignore_index=IGNORE, reduction="sum")
        return total, int((targets != IGNORE).sum())

    # ------------------------------------------------------------------ sampling

    def setup_kv_cache(self, batch_size: int, dtype: torch.dtype | None = None, reuse: bool = False) -> None:
        """Static caches for ``batch_size`` rows (CFG doubles it) over the whole sequence (rounded up to 8).

        ``reuse`` keeps an existing cache of that batch and dtype: a CUDA graph recorded on its buffers stays
        valid across `generate` calls (stale entries are masked: positions are rewritten before being read).
        """
        length = find_multiple(self.cls_token_num + self.seq_len, 8)
        weight = self.tok_embeddings.weight
        cache = self.transformer.blocks[0].attn.kv_cache if len(self.transformer.blocks) else None
        if reuse and cache is not None and cache.k.shape[0] == batch_size and cache.k.dtype == (dtype or weight.dtype) \
                and cache.k.device == weight.device and cache.max_seq_len == length:
            return
        self.transformer.setup_kv_cache(batch_size, length, dtype, weight.device)

    def clear_kv_cache(self) -> None:
        self.transformer.clear_kv_cache()

    def step(self, x: Tensor, input_pos: Tensor) -> Tensor:
        """Embedded inputs ``[B, l, dim]`` at positions ``input_pos`` ``(l,)`` through the cached model -> logits."""
        h = self.transformer(x, causal=True, rope=self.rope[input_pos], input_pos=input_pos)
        return self.output(h).float()

    def decode_one(self, tokens: Tensor, input_pos: Tensor) -> Tensor:
        """One cached decoding step: token ids ``[B]`` at position ``input_pos`` ``(1,)`` -> logits ``[B, V]``."""
        return self.step(self.tok_embeddings(tokens)[:, None], input_pos)[:, -1]

    @torch.no_grad()
    def generate(
        self,
        n: int,
        condition: Tensor | int | None = None,
        *,
        cfg: float = 1.0,
        cfg_schedule: str = "constant",
        cfg_interval: int = -1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        max_len: int | None = None,
        use_cache: bool = True,
        compile: bool = False,
        multinomial: bool = False,
        progress: bool = False,
    ) -> Tokens:
        """Sample ``n`` sequences. ``condition``: class ids ``[n]`` (or one int), caption features, or None.

        ``cfg``/``cfg_schedule`` (`sampling.cfg_weight`), ``cfg_interval`` (>-1: no guidance after that many
        tokens, LlamaGen), temperature / top-k / top-p or ``greedy`` (argmax). Tokens are drawn by the
        Gumbel-max trick from noise drawn with ``generator`` (same distribution as LlamaGen's multinomial;
        ``multinomial=True`` keeps the former per-step ``torch.multinomial`` loop, which draws other tokens
        for a seed). ``use_cache=False`` recomputes the full prefix each step (the reference the cache is
        tested against; same noise, same tokens). ``compile`` runs each whole step (`decoding.make_decode_step`)
        under ``torch.compile(mode="reduce-overhead", fullgraph=True)`` (one CUDA graph per token on GPU) and
        keeps the KV cache allocated between calls until `clear_kv_cache`.
        """
        if condition is None and self.num_classes > 0 and self.caption_embedding is None:
            where = generator.device if generator is not None else self.rope.device
            condition = torch.randint(0, self.num_classes, (n,), generator=generator, device=where)
        guided = self.can_guide and (cfg != 1.0 or cfg_schedule != "constant")
        cond = self.embed_condition(condition, n)
        if guided:
            cond = torch.cat([cond, self.null_condition(n)], dim=0)
        rows, total = cond.shape[0], min(max_len or self.seq_len, self.seq_len)
        if multinomial:
            return generate_multinomial(self, n, cond, guided, cfg, cfg_schedule, cfg_interval, temperature, top_k,
                                        top_p, greedy, generator, total, use_cache, compile, progress)
        device = cond.device
        settings = StepSettings(n, guided, float(temperature), int(top_k or 0), float(top_p), bool(greedy))
        weights = guidance_weights(cfg, cfg_schedule, cfg_interval, total, device)
        noise = torch.zeros(n, self.output.out_features, dtype=torch.float32, device=device)
        out, finished, lengths, positions, steps = output_state(self, n, total, device, progress)
        decode = None
        if use_cache:
            self.setup_kv_cache(rows, reuse=compile)
            decode = make_decode_step(self, settings)
            if compile:
                for block in self.transformer.blocks:  # the reused cache keeps its address: no copy into the graph
                    torch._dynamo.mark_static_address(block.attn.kv_cache.k)
                    torch._dynamo.mark_static_address(block.attn.kv_cache.v)
                decode = torch.compile(decode, mode="reduce-overhead", fullgraph=True, dynamic=False)
        feed = None
        try:
            for i in steps:
                if not greedy:
                    gumbel_noise(noise.shape, generator, out=noise)
                if use_cache and i > 0:
                    if compile:
                        torch.compiler.cudagraph_mark_step_begin()
                    token, feed = decode(feed, positions[i - 1 : i], weights[i], noise)
                    if compile:  # CUDA-graph outputs are overwritten by the next replay
                        token, feed = token.clone(), feed.clone()
                else:
                    if use_cache:  # prefill with the condition tokens
                        logits = self.step(cond, torch.arange(self.cls_token_num, device=device))[:, -1]
                    else:
                        prefix = self.tok_embeddings(out[:, :i].clamp_min(0).repeat(rows // n, 1))
                        x = torch.cat([cond, prefix], dim=1)
                        logits = self.output(self.transformer(x, causal=True, rope=self.rope[: x.shape[1]])[:, -1])
                    token = choose(logits.float(), weights[i], noise, settings)
                    feed = token.clamp_max(self.tok_embeddings.num_embeddings - 1).repeat(rows // n)
                if self.eos:
                    ended = (token == self.eos_id) & ~finished
                    lengths = torch.where(ended, torch.full_like(lengths, i), lengths)
                    finished = finished | ended
                    token = token.masked_fill(finished, -1)
                    feed = token.clamp_min(0).repeat(rows // n)
                out[:, i] = token
                if self.eos and bool(finished.all()):
                    break
        finally:
            if use_cache and not compile:
                self.clear_kv_cache()
        return self.to_tokens(out, lengths if self.eos else None)

    def to_tokens(self, ids: Tensor, lengths: Tensor | None = None) -> Tokens:
        """Flat ids ``[B, L]`` -> `Tokens` in the tokenizer's layout (grid ``[B,h,w]``, sequence, or scales)."""
        meta: dict[str, Any] = {"layout": self.layout}
        if self.layout == "grid" and ids.shape[1] == self.seq_len:
            side = math.isqrt(self.seq_len)
            return Tokens(ids=ids.reshape(ids.shape[0], side, side), meta=meta)
        if self.layout == "scales" and ids.shape[1] == self.seq_len:
            return Tokens(ids=list(ids.split(self.scale_lengths, dim=1)), meta=meta)
        return Tokens(ids=ids, lengths=lengths, meta=meta)
