"""VQGAN Encoder and Decoder (taming-transformers design, LlamaGen parameter layout).

One implementation serves LlamaGen's VQ, VAR's VQVAE and TokenFlow's pixel branch. Parameter names are
LlamaGen's (``conv_blocks.{i}.res.{j}``, ``conv_blocks.{i}.attn.{j}``, ``conv_blocks.{i}.downsample.conv``,
``mid.{0,1,2}``, ``norm_out``, ``conv_out``); the taming/VAR layout (``down.{i}.block.{j}``, ``mid.block_1``,
``up.{i}`` stored in reverse) is reached through the key maps in `tokenforge.tokenizers.vqgan.official`.

Encoder: conv_in 3x3 -> per level ``num_res_blocks`` ResnetBlocks (AttnBlock after each at the last level
when ``attn_last_level``) -> Downsample after every level but the last -> mid (Res, Attn, Res) -> GroupNorm,
swish, conv_out 3x3 to ``z_channels``. Decoder mirrors it with ``num_res_blocks + 1`` blocks per level;
its ``conv_blocks[0]`` is the deepest (widest) level, as in LlamaGen.

``variant="maskgit"`` is MAGE's JAX-converted MaskGIT VQGAN (ENAT's tokenizer): no attention anywhere,
bias-free res-block convs with the shortcut applied to ``h`` (see `ResnetBlock`), 2x2 average-pool
downsampling, a bias-free encoder ``conv_in``, a 1x1 encoder ``conv_out``, and ``num_res_blocks`` (not +1)
blocks per decoder level.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tokenforge.nn.conv2d import AttnBlock, Downsample, ResnetBlock, Upsample, normalize, swish


def _mid(channels: int, dropout: float, attn: bool) -> nn.ModuleList:
    return nn.ModuleList([
        ResnetBlock(channels, channels, dropout),
        AttnBlock(channels) if attn else nn.Identity(),
        ResnetBlock(channels, channels, dropout),
    ])


VARIANTS = ("taming", "maskgit")


def _res_kwargs(variant: str) -> dict:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return {"conv_bias": False, "shortcut_on_h": True} if variant == "maskgit" else {}


def _mid_res(channels: int, dropout: float, variant: str) -> nn.ModuleList:
    kw = _res_kwargs(variant)
    return nn.ModuleList([ResnetBlock(channels, channels, dropout, **kw), nn.Identity(),
                          ResnetBlock(channels, channels, dropout, **kw)])


def _check(ch: int, ch_mult: Sequence[int], num_res_blocks: int) -> None:
    if not ch_mult or any(m <= 0 for m in ch_mult):
        raise ValueError(f"ch_mult must be a non-empty list of positive ints, got {list(ch_mult)}")
    if num_res_blocks < 1 or ch <= 0:
        raise ValueError(f"need ch > 0 and num_res_blocks >= 1, got ch={ch}, num_res_blocks={num_res_blocks}")


class Encoder(nn.Module):
    """Image ``[B, in_channels, H, W]`` -> features ``[B, z_channels, H/2^(L-1), W/2^(L-1)]``."""

    def __init__(
        self,
        in_channels: int = 3,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        dropout: float = 0.0,
        attn_last_level: bool = True,
        attn_mid: bool = True,
        variant: str = "taming",
    ) -> None:
        super().__init__()
        _check(ch, ch_mult, num_res_blocks)
        kw, maskgit = _res_kwargs(variant), variant == "maskgit"
        attn_last_level = attn_last_level and not maskgit
        self.downsample_factor = 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1, bias=not maskgit)
        widths = [ch] + [ch * m for m in ch_mult]
        self.conv_blocks = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            last = level == len(ch_mult) - 1
            block = nn.Module()
            block.res = nn.ModuleList()
            block.attn = nn.ModuleList()
            block_in = widths[level]
            for _ in range(num_res_blocks):
                block.res.append(ResnetBlock(block_in, ch * mult, dropout, **kw))
                block_in = ch * mult
                if last and attn_last_level:
                    block.attn.append(AttnBlock(block_in))
            if not last:
                block.downsample = Downsample(block_in, with_conv=not maskgit)
            self.conv_blocks.append(block)
        self.mid = _mid_res(block_in, dropout, variant) if maskgit else _mid(block_in, dropout, attn_mid)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 1 if maskgit else 3, 1, 0 if maskgit else 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        if size[0] % self.downsample_factor or size[1] % self.downsample_factor:
            raise ValueError(
                f"image size {tuple(size)} is not divisible by the encoder's downsampling factor "
                f"{self.downsample_factor}; crop or resize the input"
            )
        h = self.conv_in(x)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if hasattr(block, "downsample"):
                h = block.downsample(h)
        for layer in self.mid:
            h = layer(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent ``[B, z_channels, h, w]`` -> image ``[B, out_channels, h*2^(L-1), w*2^(L-1)]`` (unclamped)."""

    def __init__(
        self,
        out_channels: int = 3,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        dropout: float = 0.0,
        attn_last_level: bool = True,
        attn_mid: bool = True,
        variant: str = "taming",
    ) -> None:
        super().__init__()
        _check(ch, ch_mult, num_res_blocks)
        kw, maskgit = _res_kwargs(variant), variant == "maskgit"
        attn_last_level = attn_last_level and not maskgit
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _mid_res(block_in, dropout, variant) if maskgit else _mid(block_in, dropout, attn_mid)
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(len(ch_mult))):
            block = nn.Module()
            block.res = nn.ModuleList()
            block.attn = nn.ModuleList()
            for _ in range(num_res_blocks + (0 if maskgit else 1)):
                block.res.append(ResnetBlock(block_in, ch * ch_mult[level], dropout, **kw))
                block_in = ch * ch_mult[level]
                if level == len(ch_mult) - 1 and attn_last_level:
                    block.attn.append(AttnBlock(block_in))
            if level != 0:
                block.upsample = Upsample(block_in)
            self.conv_blocks.append(block)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        for layer in self.mid:
            h = layer(h)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if hasattr(block, "upsample"):
                h = block.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
