"""VAT inference model (shared/specs/vat3d.md §0b/§1; official code is not public, so gaps follow §2's defaults).

Pipeline, as the paper describes it:
1. surface points (+normals) -> Fourier `PointEmbed` (3DShape2VecSet features, normals appended: our choice);
2. in-context transformer: ``[point tokens ; M learnable latent tokens]`` -> pre-LN self-attention blocks ->
   only the last M outputs are kept;
3. Gaussian head: Linear -> (mean, logvar), logvar clamped to [-30, 20], KL averaged over tokens/channels;
4. VVQ: VAR's multi-scale residual quantizer over the 1D latent set ``[B, C, M]`` (`MultiScaleResidualQuantizer`
   with ``spatial_dims=1``: area pooling down, linear up, 3-tap Phi), token count growing per scale;
5. decoder: latents -> transformer -> 3*R*R learnable triplane queries cross-attend to the latents -> three
   R x R planes -> CNN upsampling (nearest x2 + 3x3 conv + SiLU per stage) -> bilinear sampling of the xy, xz,
   yz planes at the query points, summed -> MLP -> occupancy logit.
Gaps filled by us (not VAT's published settings): widths/depths, M, codebook, scale schedule, triplane size,
the query-token cross-attention that builds the planes (COD-VAE-like), normals as extra embedding inputs.
``encode`` quantizes the posterior MEAN (deterministic tokens); training quantizes a posterior sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenforge.nn.norms import LayerNorm
from tokenforge.nn.transformer import Transformer
from tokenforge.tokenizers.base import AutoencoderOutput, Tokenizer, Tokens
from tokenforge.tokenizers.quantizers.residual import MultiScaleResidualQuantizer
from tokenforge.tokenizers.vat.layers import DiagonalGaussian, PointEmbed, PreNormAttention, PreNormFeedForward


def _transformer(dim: int, depth: int, heads: int, drop_path: float) -> Transformer:
    return Transformer(dim, depth, heads, drop_path=drop_path, final_norm="layernorm",
                       block_options={"norm": "layernorm", "mlp": "gelu", "attn_options": {"qkv_bias": True,
                                                                                          "out_bias": True}})


class TriplaneDecoder(nn.Module):
    """``[B, M, dim]`` latents -> planes ``[B, 3, C, R*2^u, R*2^u]`` (xy, xz, yz) and occupancy logits at queries."""

    def __init__(self, dim: int, heads: int, resolution: int, channels: int, upsample: int, mlp_hidden: int) -> None:
        super().__init__()
        self.resolution, self.channels = resolution, channels
        self.queries = nn.Parameter(torch.randn(3 * resolution * resolution, dim) * 0.02)
        self.cross = PreNormAttention(dim, heads, dim // heads, cross=True)
        self.ff = PreNormFeedForward(dim)
        self.norm = LayerNorm(dim, affine=True)
        self.to_planes = nn.Linear(dim, channels)
        self.up = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(upsample))
        self.mlp = nn.Sequential(nn.Linear(channels, mlp_hidden), nn.SiLU(), nn.Linear(mlp_hidden, mlp_hidden),
                                 nn.SiLU(), nn.Linear(mlp_hidden, 1))

    def planes(self, latents: Tensor) -> Tensor:
        batch, r = latents.shape[0], self.resolution
        q = self.queries.expand(batch, -1, -1)
        x = q + self.cross(q, latents)
        x = x + self.ff(x)
        x = self.to_planes(self.norm(x))  # [B, 3RR, C]
        x = x.view(batch, 3, r, r, self.channels).permute(0, 1, 4, 2, 3).reshape(batch * 3, self.channels, r, r)
        for conv in self.up:
            x = F.silu(conv(F.interpolate(x, scale_factor=2, mode="nearest")))
        return x.view(batch, 3, self.channels, *x.shape[-2:])

    def query(self, planes: Tensor, points: Tensor) -> Tensor:
        """Planes ``[B, 3, C, H, W]``, points ``[B, Q, 3]`` in [-1, 1] -> logits ``[B, Q]``."""
        batch, q = points.shape[:2]
        pairs = torch.stack([points[..., [0, 1]], points[..., [0, 2]], points[..., [1, 2]]], dim=1)  # [B,3,Q,2]
        grid = pairs.reshape(batch * 3, 1, q, 2).to(planes.dtype)
        feats = F.grid_sample(planes.flatten(0, 1), grid, mode="bilinear", padding_mode="border",
                              align_corners=False)  # [B*3, C, 1, Q]
        feats = feats.view(batch, 3, self.channels, q).sum(1).transpose(1, 2)
        return self.mlp(feats).squeeze(-1)


class VAT(Tokenizer):
    """Variational 3D tokenizer: points ``[B, N, 6]`` (xyz + normal; ``[B, N, 3]`` without normals) -> per-scale ids."""

    modality = "mesh"
    token_layout = "scales"

    def __init__(self, dim: int = 512, encoder_depth: int = 8, decoder_depth: int = 8, num_heads: int = 8,
                 num_latents: int = 256, latent_dim: int = 32, codebook_size: int = 4096,
                 scales: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256), quant_resi: float = 0.5,
                 share_quant_resi: int = 4, beta: float = 0.25, triplane_resolution: int = 32,
                 triplane_channels: int = 32, triplane_upsample: int = 2, mlp_hidden: int = 128,
                 use_normals: bool = True, point_embed_hidden_dim: int = 48, drop_path: float = 0.0) -> None:
        super().__init__()
        if max(scales) != num_latents or list(scales) != sorted(scales):
            raise ValueError(f"scales {list(scales)} must grow and end at num_latents ({num_latents})")
        self.num_latents, self.use_normals = num_latents, use_normals
        self.point_embed = PointEmbed(dim, point_embed_hidden_dim, extra_dim=3 if use_normals else 0)
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.encoder = _transformer(dim, encoder_depth, num_heads, drop_path)
        self.mean_fc = nn.Linear(dim, latent_dim)
        self.logvar_fc = nn.Linear(dim, latent_dim)
        self.quantizer = MultiScaleResidualQuantizer(codebook_size, latent_dim, list(scales), spatial_dims=1,
                                                     beta=beta, quant_resi=quant_resi,
                                                     share_quant_resi=share_quant_resi)
        self.proj = nn.Linear(latent_dim, dim)
        self.decoder = _transformer(dim, decoder_depth, num_heads, drop_path)
        self.triplane = TriplaneDecoder(dim, num_heads, triplane_resolution, triplane_channels, triplane_upsample,
                                        mlp_hidden)

    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def scales(self) -> list[int]:
        return self.quantizer.tokens_per_scale

    # ------------------------------------------------------------------ encoder
    def check_points(self, points: Tensor) -> Tensor:
        want = 6 if self.use_normals else 3
        if points.dim() != 3 or points.shape[-1] not in (3, 6):
            raise ValueError(f"VAT expects surface points [B, N, {want}] (xyz{' + normals' if want == 6 else ''}), "
                             f"got {tuple(points.shape)}")
        if points.shape[1] == 0:
            raise ValueError("VAT got an empty point cloud (N = 0): an empty scene has no surface to encode")
        if points.shape[-1] != want:
            if want == 6:
                raise ValueError("this VAT was built with use_normals=True but the points carry no normals "
                                 "([B, N, 3]); pass xyz + unit normals [B, N, 6] (e.g. mesh face normals)")
            points = points[..., :3]
        if not torch.isfinite(points).all():
            raise ValueError("VAT points contain NaN or Inf")
        return points

    def posterior(self, points: Tensor) -> DiagonalGaussian:
        points = self.check_points(points)
        tokens = self.point_embed(points)
        x = torch.cat([tokens, self.latents.expand(points.shape[0], -1, -1).to(tokens.dtype)], dim=1)
        x = self.encoder(x)[:, -self.num_latents:]
        return DiagonalGaussian(self.mean_fc(x), self.logvar_fc(x))

    def encode(self, points: Tensor) -> Tokens:
        """Per-scale ids ``[B, n_s]`` of the posterior mean (coarse to fine); ``latents`` = the mean ``[B, M, C]``."""
        mean = self.posterior(points).mean
        ids = self.quantizer.encode(mean.transpose(1, 2))
        return Tokens(ids=ids, latents=mean, meta={"scales": self.scales, "vocab_size": self.vocab_size})

    # ------------------------------------------------------------------ decoder
    def decode_latents(self, latents: Tensor) -> Tensor:
        """``[B, M, C]`` (quantized or continuous) latents -> triplanes ``[B, 3, C', H, W]``."""
        return self.triplane.planes(self.decoder(self.proj(latents)))

    def decode(self, tokens: Tokens | Sequence[Tensor]) -> Tensor:
        """Per-scale ids (all scales, or a coarse prefix: fewer scales = coarser shape) -> triplanes."""
        ids = tokens.ids if isinstance(tokens, Tokens) else list(tokens)
        f_hat = self.quantizer.indices_to_fhat(ids, all_scales=False)[0]
        return self.decode_latents(f_hat.transpose(1, 2))

    def occupancy(self, planes: Tensor, queries: Tensor) -> Tensor:
        """Occupancy logits ``[B, Q]`` (inside where >= 0) at ``[B, Q, 3]`` queries in [-1, 1]^3."""
        return self.triplane.query(planes, queries)

    # ------------------------------------------------------------------ training pass
    def forward(self, points: Tensor, queries: Tensor | None = None, quantize: bool = True,
                sample: bool = True) -> AutoencoderOutput:
        """Logits at ``queries`` (``x_hat``), per-scale ids, VQ loss (``aux_loss``); metrics hold ``kl`` ``[B]``."""
        if queries is None:
            raise ValueError("VAT.forward needs query points [B, Q, 3] to predict occupancy at")
        post = self.posterior(points)
        z = post.sample() if sample and self.training else post.mean
        metrics = {"kl": post.kl()}
        if quantize:
            q = self.quantizer(z.transpose(1, 2))
            latents, ids, aux = q.quantized.transpose(1, 2), q.indices, q.loss
            metrics.update({f"vq_{k}": v for k, v in q.metrics.items()})
        else:
            latents, ids, aux = z, None, z.new_zeros(())
        logits = self.occupancy(self.decode_latents(latents), queries)
        return AutoencoderOutput(logits, Tokens(ids=ids, latents=post.mean), aux, metrics)
