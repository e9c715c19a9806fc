"""MAGE's VQGAN (JAX-converted MaskGIT tokenizer), the image tokenizer ENAT ships with.

Built from the shared `Encoder`/`Decoder` with ``variant="maskgit"`` (no attention, bias-free res convs with
the shortcut-on-``h`` quirk, average-pool downsampling, 1x1 encoder ``conv_out``) and a plain squared-L2
`VectorQuantizer` (beta 0.25, no normalisation). There is no quant_conv / post_quant_conv: the encoder
output is quantised directly.

Input range: the official model takes images in [0, 1]. `encode`/`decode`/`forward` follow the tokenforge
contract (images in [-1, 1]) and convert at the boundary; `features01` and `decode_code01` are the raw
official maps in [0, 1] (parity, ENAT's own pipeline). `decode` clamps to [-1, 1] (the official code clamps
its [0, 1] output).

Loader ``mage_vqgan``: ``vqgan_jax_strongaug.ckpt`` (``{"state_dict": ...}`` or a bare state dict, taming
keys ``encoder.down.{i}.block.{j}``, ``decoder.up.{i}``, ``mid.block_{1,2}``, ``quantize.embedding.weight``),
a ``.safetensors`` file, or a fixture folder holding ``vq_state_dict.safetensors``. Sizes come from the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokenforge.hub import (CheckpointError, count_indexed, load_mapped_state_dict, read_state_dict, register_official,
                            without_trust_keys)
from tokenforge.tokenizers.base import AutoencoderOutput, Tokenizer, Tokens
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.vqgan.networks import Decoder, Encoder
from tokenforge.tokenizers.vqgan.official import var_key_map


class MageVQGAN(Tokenizer):
    """MaskGIT/MAGE VQGAN: ``[B,3,H,W]`` images <-> ``[B, H/f, W/f]`` code ids (f = 2^(len(ch_mult)-1))."""

    modality = "image"
    token_layout = "grid"

    def __init__(
        self,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        codebook_size: int = 1024,
        in_channels: int = 3,
        beta: float = 0.25,
    ) -> None:
        super().__init__()
        common = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
                      variant="maskgit")
        self.encoder = Encoder(in_channels=in_channels, **common)
        self.decoder = Decoder(out_channels=in_channels, **common)
        self.quantizer = VectorQuantizer(codebook_size, z_channels, distance="l2", beta=beta)
        self.in_channels = in_channels
        self.downsample_factor = self.encoder.downsample_factor

    @property
    def vocab_size(self) -> int:
        return int(self.quantizer.codebook_size)

    # ----------------------------------------------------------------- official [0, 1] maps

    def features01(self, x01: Tensor) -> Tensor:
        """Encoder output ``[B, z, h, w]`` for images in [0, 1] (the official input range)."""
        if x01.ndim != 4 or x01.shape[1] != self.in_channels or not x01.is_floating_point():
            raise ValueError(f"MageVQGAN expects float images [B, {self.in_channels}, H, W], got "
                             f"{tuple(x01.shape)} {x01.dtype}")
        return self.encoder(x01)

    def decode_code01(self, ids: Tensor) -> Tensor:
        """Code ids ``[B, h, w]`` -> unclamped image in the official [0, 1] range (``VQModel.decode_code``)."""
        return self.decoder(self.quantizer.decode(ids))

    # ----------------------------------------------------------------- tokenforge contract ([-1, 1])

    def encode(self, x: Tensor) -> Tokens:
        """Image ``[B, 3, H, W]`` in [-1, 1] -> `Tokens` with ids ``[B, h, w]``."""
        z = self.features01((x + 1.0) / 2.0)
        return Tokens(ids=self.quantizer.encode(z), meta=self._meta(x, z))

    def decode(self, tokens: Tokens | Tensor) -> Tensor:
        """`Tokens` or ids ``[B, h, w]`` -> image in [-1, 1] (clamped)."""
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        if ids is None:
            raise ValueError("MageVQGAN.decode needs Tokens with ids; these Tokens carry none")
        return (self.decode_code01(ids) * 2.0 - 1.0).clamp(-1.0, 1.0)

    def forward(self, x: Tensor) -> AutoencoderOutput:
        z = self.features01((x + 1.0) / 2.0)
        q = self.quantizer(z)
        x_hat = self.decoder(q.quantized) * 2.0 - 1.0
        return AutoencoderOutput(x_hat=x_hat, tokens=Tokens(ids=q.indices, meta=self._meta(x, z)),
                                 aux_loss=q.loss, metrics=dict(q.metrics))

    def _meta(self, x: Tensor, z: Tensor) -> dict:
        return {"image_size": [int(x.shape[-2]), int(x.shape[-1])], "latent_size": [int(z.shape[-2]), int(z.shape[-1])]}


# --------------------------------------------------------------------------- official checkpoint


def _read(path: Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    if path.is_dir():
        path = path / "vq_state_dict.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no MAGE VQGAN checkpoint at {path} (expected vqgan_jax_strongaug.ckpt, a "
                                ".safetensors file or a folder with vq_state_dict.safetensors)")
    return read_state_dict(path, nested=("state_dict",), trust_pickle=trust_pickle)


def mage_architecture(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """`MageVQGAN` init args read off a taming-layout state dict."""
    if "quantize.embedding.weight" not in state or "encoder.conv_in.weight" not in state:
        raise CheckpointError("state dict lacks quantize.embedding.weight / encoder.conv_in.weight: not a MAGE VQGAN")
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = count_indexed(state, "encoder.down")
    codes, dim = state["quantize.embedding.weight"].shape
    return {
        "ch": int(ch),
        "ch_mult": [int(state[f"encoder.down.{lv}.block.0.conv1.weight"].shape[0] // ch) for lv in range(levels)],
        "num_res_blocks": count_indexed(state, f"encoder.down.{levels - 1}.block"),
        "z_channels": int(dim),
        "codebook_size": int(codes),
        "in_channels": int(state["encoder.conv_in.weight"].shape[1]),
    }


def load_mage_vqgan(
    path: str | Path, config: Mapping[str, Any] | None = None, *, trust_pickle: bool = False
) -> MageVQGAN:
    """Loader for ``mage_vqgan`` (strict: every official key must be used and every parameter filled)."""
    state = _read(Path(path), trust_pickle)
    arch = {**mage_architecture(state), **without_trust_keys(config or {})}
    model = MageVQGAN(**arch)
    load_mapped_state_dict(model, state, var_key_map(len(arch["ch_mult"])), source=str(path))
    return model.eval()


register_official("mage_vqgan", load_mage_vqgan)
