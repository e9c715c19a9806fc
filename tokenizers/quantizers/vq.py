"""Vector quantizer: nearest codebook row per position, one class for the usual flavours.

- ``distance="l2"``: argmin of |z|^2 + |e|^2 - 2 z.e (EnCodec/WavTokenizer, taming); ``"cosine"``: argmax cosine.
- ``l2_normalize=True``: inputs and codebook rows are L2-normalised before the lookup and the output is the
  normalised row (LlamaGen / TokenFlow). Stored rows stay raw; normalisation happens at use.
- ``ema=True``: codebook updated by exponential moving averages of cluster sizes and sums with Laplace-smoothed
  sizes (EnCodec / WavTokenizer: ``decay=0.99, epsilon=1e-5``); no gradient reaches the codebook and the loss is
  the commitment term only. Otherwise the codebook is learned with ``codebook_weight*|sg(z)-q|^2``.
- ``entropy_loss_ratio > 0`` (LlamaGen): adds ``ratio * entropy_loss`` (sharp per-vector code assignments, a
  spread batch-mean assignment; temperature ``entropy_temperature``). ``usage_window > 0`` (LlamaGen's
  ``codebook_show_usage``, 65536 there): logs ``codebook_usage``, the share of codes among the last that many
  training codes. The metrics also carry each weighted term (``codebook_loss``, ``commitment_loss``, ...).
- ``kmeans_init=True``: the first training batch runs k-means (``kmeans_iters``) and sets the codebook (and, with
  EMA, cluster sizes and sums). Eval-mode calls never change any state.
- ``dead_code_threshold > 0``: in training, codes whose EMA cluster size falls below it are restarted from random
  vectors of the current batch. A code used at the mean rate settles at an EMA size of (vectors per step) /
  codebook_size, so the threshold only means "rarely used" below that share: WavTokenizer's 2 with 40 x 225 =
  9000 vectors and 4096 codes (share 2.2) restarts all but the busiest codes every step at batch 16 x 150
  frames (share 0.59); the ``dead_codes_replaced`` metric shows it. While the encoder still moves fast that
  churn is what keeps the codebook on the latents (docs/methods/wavtokenizer.md, "Short runs").

State-dict names map directly onto the official layouts: ``embedding.weight`` (LlamaGen ``embedding.weight``;
WavTokenizer ``_codebook.embed``), ``cluster_size``, ``embed_avg``, ``inited`` (WavTokenizer buffers).

Deliberate deviations from EnCodec's ``EuclideanCodebook`` (WavTokenizer):
- after k-means, ``embed_avg`` is set to centroid * count (EnCodec copies the centroids), so that
  ``embed == embed_avg / cluster_size`` holds from the first EMA step on;
- dead codes are restarted *after* the EMA step and their ``embed_avg``/``cluster_size`` are reset with them
  (EnCodec replaces only ``embed`` before the EMA step, which then overwrites the replacement, issue #89).
  ``dead_code_expiry_overwritten=True`` reproduces EnCodec's order, i.e. the expiry has no effect at all
  (WavTokenizer's training-step parity fixture is checked with it).
- k-means runs on the first *training* batch only, never in eval mode.
Loaded official weights are unaffected by either (``inited`` is 1 in released checkpoints).

Data-parallel training (DDP, any ``torch.distributed`` process group): every rank ends each step with the same
codebook, equal to that of one process on the ranks' batches concatenated in rank order
(tests/test_codebook_ddp.py). EMA counts and sums are all-reduced (sums accumulated in float64, so that the split
over ranks does not change their fp32 rounding); k-means runs on the rows gathered from all ranks; dead codes are
restarted from rows drawn out of the gathered rows, rank 0's draw broadcast. Each collective is reached on every
rank under conditions computed from synchronised state (``inited``, all-reduced ``cluster_size``), so none hangs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.tokenizers.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    check_channel_first,
    check_indices,
    code_statistics,
    from_rows,
    to_rows,
)
from tokenforge.tokenizers.quantizers.distributed import (
    all_reduce_sum,
    broadcast_from_rank0,
    exact_sum_dtype,
    gather_rows,
)


class VectorQuantizer(Quantizer):
    """Single-codebook VQ over channel-first maps ``[B, dim, *spatial]``; see the module docstring."""

    def __init__(
        self,
        codebook_size: int = 1024,
        dim: int = 8,
        distance: str = "l2",
        l2_normalize: bool = False,
        ema: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        beta: float = 0.25,
        codebook_weight: float = 1.0,
        dead_code_expiry_overwritten: bool = False,
        entropy_loss_ratio: float = 0.0,
        entropy_temperature: float = 0.01,
        usage_window: int = 0,
    ) -> None:
        super().__init__()
        if distance not in ("l2", "cosine"):
            raise ValueError(f"distance must be 'l2' or 'cosine', got {distance!r}")
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size and dim must be positive, got {codebook_size} and {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.distance, self.l2_normalize, self.ema = distance, l2_normalize, ema
        self.decay, self.epsilon = decay, epsilon
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.dead_code_threshold, self.beta, self.codebook_weight = dead_code_threshold, beta, codebook_weight
        self.dead_code_expiry_overwritten = dead_code_expiry_overwritten
        self.entropy_loss_ratio, self.entropy_temperature = entropy_loss_ratio, entropy_temperature
        if usage_window > 0:  # LlamaGen's codebook_used window; -1 = empty slot; a log, never saved
            self.register_buffer("codebook_used", torch.full((usage_window,), -1, dtype=torch.long), persistent=False)

        self.embedding = nn.Embedding(codebook_size, dim)
        with torch.no_grad():
            if kmeans_init:
                self.embedding.weight.zero_()
            else:  # taming / LlamaGen init
                self.embedding.weight.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
                if l2_normalize:
                    self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        self.embedding.weight.requires_grad_(not ema)
        if ema or dead_code_threshold > 0:
            self.register_buffer("cluster_size", torch.zeros(codebook_size))
        if ema:
            self.register_buffer("embed_avg", self.embedding.weight.detach().clone())
        if kmeans_init:
            self.register_buffer("inited", torch.zeros(1))

    # ------------------------------------------------------------------ contract

    @property
    def codebook_size(self) -> int:
        return self.embedding.num_embeddings

    @property
    def dim(self) -> int:
        return self.embedding.embedding_dim

    @property
    def codebook(self) -> Tensor:
        """The rows actually used for lookup and output (normalised when ``l2_normalize``)."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.l2_normalize else weight

    def encode(self, z: Tensor) -> Tensor:
        """``[B, dim, *spatial]`` -> indices ``[B, *spatial]`` (int64)."""
        check_channel_first(z, self.dim, "VectorQuantizer.encode")
        rows = self._prepare(to_rows(z))
        return self.nearest(rows, self.codebook.detach()).reshape(z.shape[0], *z.shape[2:])

    def decode(self, indices: Tensor) -> Tensor:
        """Indices ``[B, *spatial]`` -> codes ``[B, dim, *spatial]``."""
        check_indices(indices, self.codebook_size, "VectorQuantizer.decode")
        return F.embedding(indices.long(), self.codebook).movedim(-1, 1)

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_channel_first(z, self.dim, "VectorQuantizer")
        batch, spatial = z.shape[0], tuple(z.shape[2:])
        x = self._prepare(to_rows(z).float())
        if self.training and self.kmeans_init and not bool(self.inited.item()):
            self._init_from_kmeans(x.detach())
        codebook = self.codebook.float()
        indices = self.nearest(x.detach(), codebook.detach())
        q = F.embedding(indices, codebook)
        commitment = F.mse_loss(x, q.detach())
        terms = {"commitment_loss": self.beta * commitment}
        if not self.ema:
            terms["codebook_loss"] = self.codebook_weight * F.mse_loss(q, x.detach())
        if self.entropy_loss_ratio:
            terms["entropy_loss"] = self.entropy_loss_ratio * self.entropy_loss(x, codebook)
        loss = sum(terms.values())
        replaced = torch.zeros((), device=z.device)
        if self.training:
            self._update_statistics(x.detach(), indices)
            if self.dead_code_threshold > 0 and not self.dead_code_expiry_overwritten:
                replaced = self._restart_dead_codes(x.detach())
        out = x + (q - x).detach()  # straight-through
        metrics = code_statistics(indices, self.codebook_size)
        metrics["dead_codes_replaced"] = replaced
        metrics.update({name: value.detach() for name, value in terms.items()})
        if self.training and hasattr(self, "codebook_used"):
            metrics["codebook_usage"] = self._window_usage(indices)
        return QuantizerOutput(
            quantized=from_rows(out, batch, spatial).to(z.dtype),
            indices=indices.reshape(batch, *spatial),
            loss=loss,
            metrics=metrics,
        )

    # ------------------------------------------------------------------ lookup

    def _prepare(self, rows: Tensor) -> Tensor:
        return F.normalize(rows, dim=-1) if self.l2_normalize else rows

    @torch.no_grad()
    def nearest(self, rows: Tensor, codebook: Tensor) -> Tensor:
        """Index of the nearest codebook row for each of ``rows`` ``[N, dim]`` (computed in fp32)."""
        rows, codebook = rows.float(), codebook.float()
        with torch.autocast(device_type=rows.device.type, enabled=False):  # bf16 distances flip argmins
            if self.distance == "cosine":
                return (F.normalize(rows, dim=-1) @ F.normalize(codebook, dim=-1).t()).argmax(dim=1)
            dist_sq = rows.square().sum(1, keepdim=True) + codebook.square().sum(1)
            dist_sq = torch.addmm(dist_sq, rows, codebook.t(), beta=1, alpha=-2)
            return dist_sq.argmin(dim=1)

    def entropy_loss(self, rows: Tensor, codebook: Tensor) -> Tensor:
        """LlamaGen / MaskGIT codebook entropy loss on ``softmax(-d / T)`` (d: squared distances of ``rows`` to
        ``codebook``, with gradient to both): mean per-row entropy minus the entropy of the batch-mean distribution.
        Low per-row entropy = confident assignments; high mean entropy = many codes used. The official
        ``log_softmax(a + 1e-5)`` shift is a no-op and left out; ``log(p + 1e-5)`` on the mean is kept."""
        d = rows.square().sum(1, keepdim=True) + codebook.square().sum(1) - 2 * rows @ codebook.t()
        logits = -d / self.entropy_temperature
        probs, log_probs = logits.softmax(-1), logits.log_softmax(-1)
        mean = probs.mean(0)
        return -(probs * log_probs).sum(-1).mean() + (mean * torch.log(mean + 1e-5)).sum()

    @torch.no_grad()
    def _window_usage(self, indices: Tensor) -> Tensor:
        """Shift the batch's codes into the ``usage_window`` most recent ones; the fraction of codes among them."""
        window, n = self.codebook_used, min(indices.numel(), self.codebook_used.numel())
        window.copy_(torch.cat([window[n:], indices.reshape(-1)[-n:].to(window)]))
        return (window[window >= 0].unique().numel() / self.codebook_size) * torch.ones((), device=indices.device)

    # ------------------------------------------------------------------ training-time state

    @torch.no_grad()
    def _init_from_kmeans(self, x: Tensor) -> None:
        """k-means on every rank's rows (gathered); rank 0's result everywhere (seeds may differ per rank)."""
        centroids, counts = self.kmeans(gather_rows(x), self.codebook_size, self.kmeans_iters)
        broadcast_from_rank0(centroids, counts)
        self.embedding.weight.data.copy_(centroids)
        if hasattr(self, "cluster_size"):
            self.cluster_size.copy_(counts)
        if self.ema:
            self.embed_avg.copy_(centroids * counts[:, None])
        self.inited.fill_(1.0)

    @torch.no_grad()
    def kmeans(self, x: Tensor, k: int, iters: int) -> tuple[Tensor, Tensor]:
        """Lloyd's k-means on rows ``x``: start from random rows, empty clusters keep their centroid.

        Returns ``(centroids [k, dim], counts [k])``, counts from the final assignment.
        """
        n = x.shape[0]
        pick = torch.randperm(n, device=x.device)[:k] if n >= k else torch.randint(0, n, (k,), device=x.device)
        centroids = x[pick].clone()
        for _ in range(max(iters, 0)):
            assign = self.nearest(x, centroids)
            counts = torch.bincount(assign, minlength=k).to(x.dtype)
            sums = torch.zeros_like(centroids).index_add_(0, assign, x)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled, None]
            if self.distance == "cosine" or self.l2_normalize:
                centroids = F.normalize(centroids, dim=-1)
        counts = torch.bincount(self.nearest(x, centroids), minlength=k).to(x.dtype)
        return centroids, counts

    @torch.no_grad()
    def _update_statistics(self, x: Tensor, indices: Tensor) -> None:
        if not hasattr(self, "cluster_size"):
            return
        counts = all_reduce_sum(torch.bincount(indices, minlength=self.codebook_size).float())  # exact integers
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if not self.ema:
            return
        acc = exact_sum_dtype(x.device)
        sums = torch.zeros(self.codebook_size, x.shape[1], device=x.device, dtype=acc).index_add_(0, indices, x.to(acc))
        sums = all_reduce_sum(sums).float()
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.embedding.weight.data.copy_(self.embed_avg / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead_codes(self, x: Tensor) -> Tensor:
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead:  # cluster_size is all-reduced: every rank takes this branch together
            x = gather_rows(x)
            n = x.shape[0]
            if n >= n_dead:
                pick = torch.randperm(n, device=x.device)[:n_dead]
            else:
                pick = torch.randint(0, n, (n_dead,), device=x.device)
            samples = x[pick].to(self.embedding.weight.dtype)
            broadcast_from_rank0(samples)
            self.embedding.weight.data[dead] = samples
            self.cluster_size[dead] = self.dead_code_threshold
            if self.ema:
                self.embed_avg[dead] = samples * self.dead_code_threshold
        return torch.tensor(float(n_dead), device=x.device)
