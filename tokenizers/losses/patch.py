"""PatchGAN discriminator (pix2pix's NLayerDiscriminator, as used by taming-transformers, LlamaGen, TokenFlow).

``n_layers`` 4x4 stride-2 convs (the first without normalisation), one 4x4 stride-1 conv, then a 4x4
stride-1 conv to one logit per patch; BatchNorm and LeakyReLU(0.2) between them, convs before a norm carry no
bias. Parameter names (``main.{i}.*``) match those implementations, so their discriminator weights load
unchanged. Init: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and zero bias (taming's ``weights_init``).
"""

from __future__ import annotations

from torch import Tensor, nn

from tokenforge.config import Configurable


class NLayerDiscriminator(Configurable, nn.Module):
    """Image ``[B, in_channels, H, W]`` -> patch logits ``[B, 1, h, w]`` (h = H/2^n_layers - 2)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if norm not in {"batch", "none"}:
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")

        def norm_layer(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else nn.Identity()

        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias), norm_layer(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Patch logits; with ``return_features`` also every LeakyReLU output (for feature matching)."""
        if x.ndim != 4:
            raise ValueError(f"NLayerDiscriminator expects [B, C, H, W] images, got shape {tuple(x.shape)}")
        features: list[Tensor] = []
        h = x
        for layer in self.main:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                features.append(h)
        return (h, features) if return_features else h
