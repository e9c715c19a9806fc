"""The Inception-v3 network of FID (the TensorFlow 2015-12-05 graph), written out block by block.

FID's Inception is not torchvision's: the 2015 TensorFlow graph that Heusel et al. used averages pools
without the zero padding (``count_include_pad=False``) in the A, C and first E blocks, takes a max-pool in the
last E block, and has 1008 classes. `FIDInception` is that network with torchvision's parameter names
(``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight``), so the published
conversions load as they are: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` and torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth`` (the same bytes). `FIDInception.random` gives a seeded
random-weight instance whose activations keep their scale through the 94 convolutions: the parity tests copy
it into the reference packages' networks.

The network takes an image already resized to 299x299 and normalised (the protocols of
`tokenforge.metrics.fid_protocols` differ exactly there) and returns the 2048-d pool features and the logits.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIZE = 299  # input side the graph was built for
CLASSES = 1008  # the 2015 graph's classes (1000 ImageNet classes + 8 unused)


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3 as in the TF graph), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    """TF's 3x3 average pool: the padded zeros are not counted."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block (Mixed_5b/5c/5d): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class BlockB(nn.Module):
    """35 -> 17 reduction (Mixed_6a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e)."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = ConvBN(cin, c7, 1), ConvBN(c7, c7, **row), \
            ConvBN(c7, 192, **col)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = ConvBN(cin, c7, 1), ConvBN(c7, c7, **col)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = ConvBN(c7, c7, **row), ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = ConvBN(c7, 192, **row)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for k in range(1, 6):
            double = getattr(self, f"branch7x7dbl_{k}")(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(_avg3(x))], 1)


class BlockD(nn.Module):
    """17 -> 8 reduction (Mixed_7a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = ConvBN(cin, 192, 1), ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        seven = x
        for k in range(1, 5):
            seven = getattr(self, f"branch7x7x3_{k}")(seven)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches (Mixed_7b: average pool, Mixed_7c: max pool, as in the graph)."""

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = ConvBN(cin, 448, 1), ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """``forward(x)`` on normalised ``[B, 3, 299, 299]`` -> ``{"pool": [B, 2048], "logits_unbiased", "logits"}``."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, "avg"), BlockE(2048, "max")
        self.fc = nn.Linear(2048, CLASSES)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FIDInception:  # a fixed feature extractor: batch norm stays in eval
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool = x.mean(dim=(2, 3))
        unbiased = pool @ self.fc.weight.T
        return {"pool": pool, "logits_unbiased": unbiased, "logits": unbiased + self.fc.bias}

    @classmethod
    def load(cls, path: str | os.PathLike) -> FIDInception:
        """The network from a converted 2015 graph (pytorch-fid's or torch-fidelity's file); strict keys."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = cls()
        kept = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        for key, value in net.state_dict().items():  # files saved before batch norm counted its batches
            if key.endswith("num_batches_tracked"):
                kept.setdefault(key, value)
        net.load_state_dict(kept)
        return net

    @classmethod
    def random(cls, seed: int = 0) -> FIDInception:
        """Seeded random weights that keep activations O(1) through the depth (He-scaled convolutions, batch
        norms with random affine terms and running statistics): a stand-in for the published file in tests."""
        gen = torch.Generator().manual_seed(seed)
        net = cls()
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, nn.Conv2d):
                    fan_in = module.weight[0].numel()
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                elif isinstance(module, nn.BatchNorm2d):
                    n = module.num_features
                    module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=gen))
                    module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                    module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                    module.running_var.copy_(0.8 + 0.4 * torch.rand(n, generator=gen))
            net.fc.weight.copy_(torch.randn(net.fc.weight.shape, generator=gen) / 2048**0.5)
            net.fc.bias.copy_(0.1 * torch.randn(CLASSES, generator=gen))
        return net
