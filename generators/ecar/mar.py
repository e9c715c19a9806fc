"""MAR (Li et al. 2024, LTH14/mar): masked bidirectional encoder-decoder over continuous tokens + `DiffLoss`.

Kept to what E-CAR borrows and the parity fixture checks: ``patchify``, the MAE encoder (a buffer of
``buffer_size`` class tokens, masked tokens DROPPED), the decoder (``mask_token`` padding, diffusion pos-embed
added after removing the buffer) and the training loss (masked tokens only, ``diffusion_batch_mul`` draws).
Blocks are tokenforge `Block`s in timm's layout (LayerNorm eps 1e-6, fused qkv with bias, exact GELU), so the
official state-dict keys load unchanged. MAR's iterative masked sampler is not reimplemented here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenforge.config import Configurable
from tokenforge.generators.ecar.latent_loss import LatentLoss
from tokenforge.generators.ecar.diffloss import DiffLoss
from tokenforge.nn.transformer import Block


def timm_blocks(dim: int, depth: int, heads: int, mlp_ratio: float, eps: float, dropout: float) -> nn.ModuleList:
    opts = {"qkv_bias": True, "out_bias": True, "attn_dropout": dropout, "proj_dropout": dropout}
    return nn.ModuleList([
        Block(dim, heads, norm="layernorm", norm_eps=eps, mlp="gelu", mlp_ratio=mlp_ratio, attn_options=opts)
        for _ in range(depth)
    ])


def patchify(x: Tensor, p: int) -> Tensor:
    """``(B, C, H, W) -> (B, H/p * W/p, C p^2)`` with channels outermost inside a patch (MAR's order)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(x: Tensor, p: int, h: int, w: int) -> Tensor:
    b, _, d = x.shape
    c = d // (p * p)
    x = x.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


class MAR(LatentLoss, Configurable, nn.Module):
    """MAR encoder-decoder; ``seq_len = (img_size / vae_stride / patch_size)^2`` tokens of dim ``vae_dim * p^2``."""

    labels_required = True  # training_loss embeds class 0 for a batch without labels

    def __init__(
        self, img_size: int = 256, vae_stride: int = 16, patch_size: int = 1, encoder_embed_dim: int = 768,
        encoder_depth: int = 12, encoder_num_heads: int = 12, decoder_embed_dim: int = 768, decoder_depth: int = 12,
        decoder_num_heads: int = 12, mlp_ratio: float = 4.0, norm_eps: float = 1e-6, vae_embed_dim: int = 16,
        buffer_size: int = 64, class_num: int = 1000, label_drop_prob: float = 0.1, dropout: float = 0.1,
        diffloss_d: int = 6, diffloss_w: int = 1024, num_sampling_steps: str = "100", diffusion_batch_mul: int = 4,
        noise_schedule: str = "cosine", diffusion_steps: int = 1000, learn_sigma: bool = True,
    ) -> None:
        super().__init__()
        side = img_size // vae_stride // patch_size
        self.seq_len, self.patch_size, self.buffer_size = side * side, patch_size, buffer_size
        self.token_dim = vae_embed_dim * patch_size**2
        self.label_drop_prob, self.batch_mul = label_drop_prob, diffusion_batch_mul
        d, dd = encoder_embed_dim, decoder_embed_dim
        self.class_emb = nn.Embedding(class_num, d)
        self.fake_latent = nn.Parameter(torch.zeros(1, d))
        self.z_proj = nn.Linear(self.token_dim, d)
        self.z_proj_ln = nn.LayerNorm(d, eps=norm_eps)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len + buffer_size, d))
        self.encoder_blocks = timm_blocks(d, encoder_depth, encoder_num_heads, mlp_ratio, norm_eps, dropout)
        self.encoder_norm = nn.LayerNorm(d, eps=norm_eps)
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len + buffer_size, dd))
        self.decoder_blocks = timm_blocks(dd, decoder_depth, decoder_num_heads, mlp_ratio, norm_eps, dropout)
        self.decoder_norm = nn.LayerNorm(dd, eps=norm_eps)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len, dd))
        self.diffloss = DiffLoss(self.token_dim, dd, diffloss_w, diffloss_d, num_sampling_steps, noise_schedule,
                                 diffusion_steps, learn_sigma)
        for p in (self.fake_latent, self.mask_token, self.encoder_pos_embed_learned,
                  self.decoder_pos_embed_learned, self.diffusion_pos_embed_learned):
            nn.init.normal_(p, std=0.02)

    def class_embedding(self, labels: Tensor | None, batch: int) -> Tensor:
        """Class embeddings; ``labels=None`` gives the unconditional ``fake_latent``; label drop in training."""
        if labels is None:
            return self.fake_latent.expand(batch, -1)
        emb = self.class_emb(labels)
        if self.training and self.label_drop_prob > 0:
            drop = (torch.rand(batch, device=emb.device) < self.label_drop_prob).unsqueeze(-1).to(emb.dtype)
            emb = drop * self.fake_latent + (1 - drop) * emb
        return emb

    def _with_buffer(self, mask: Tensor) -> Tensor:
        return torch.cat([mask.new_zeros(mask.shape[0], self.buffer_size), mask], dim=1)

    def forward_mae_encoder(self, tokens: Tensor, mask: Tensor, class_emb: Tensor) -> Tensor:
        """``tokens (B,L,Cp)``, ``mask (B,L)`` (1 = masked, the same count per row) -> ``(B, buffer+Nvis, D)``."""
        x = self.z_proj(tokens)
        b, _, d = x.shape
        x = torch.cat([class_emb.unsqueeze(1).expand(b, self.buffer_size, d).to(x.dtype), x], dim=1)
        x = self.z_proj_ln(x + self.encoder_pos_embed_learned)
        keep = self._with_buffer(mask) == 0
        counts = keep.sum(1)
        if not bool((counts == counts[0]).all()):
            raise ValueError("every row of mask must mask the same number of tokens")
        x = x[keep].reshape(b, -1, d)
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def forward_mae_decoder(self, x: Tensor, mask: Tensor) -> Tensor:
        """Pad the encoder output back to ``buffer+L`` with ``mask_token``; returns ``(B, L, Dd)`` conditions z."""
        x = self.decoder_embed(x)
        keep = self._with_buffer(mask) == 0
        full = self.mask_token.to(x.dtype).expand(keep.shape[0], keep.shape[1], -1).clone()
        full[keep] = x.reshape(-1, x.shape[-1])
        x = full + self.decoder_pos_embed_learned
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)[:, self.buffer_size:]
        return x + self.diffusion_pos_embed_learned

    def random_mask(self, batch: int, ratio: float, device: torch.device) -> Tensor:
        n = max(1, min(self.seq_len, int(torch.tensor(self.seq_len * ratio).ceil())))
        order = torch.rand(batch, self.seq_len, device=device).argsort(1)
        mask = torch.zeros(batch, self.seq_len, device=device)
        return mask.scatter(1, order[:, :n], 1.0)

    def forward(self, latents: Tensor, labels: Tensor, mask_ratio: float | None = None) -> Tensor:
        """Training loss on latents ``(B,C,H,W)``; mask ratio from MAR's truncated normal on [0.7, 1] unless given."""
        tokens = patchify(latents, self.patch_size)
        if mask_ratio is None:
            r = torch.empty(1)
            nn.init.trunc_normal_(r, mean=1.0, std=0.25, a=0.7, b=1.0)
            mask_ratio = float(r)
        mask = self.random_mask(tokens.shape[0], mask_ratio, tokens.device)
        z = self.forward_mae_decoder(self.forward_mae_encoder(tokens, mask, self.class_embedding(labels, len(tokens))), mask)
        return self.diffloss(tokens.reshape(-1, self.token_dim), z.reshape(-1, z.shape[-1]), mask.reshape(-1),
                             self.batch_mul)
