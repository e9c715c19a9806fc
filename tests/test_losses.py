"""GAN objectives (hand-computed values), the PatchGAN discriminator, and LPIPS from local weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from tokenforge.tokenizers.losses.adversarial import (
    feature_matching_loss,
    gan_losses,
    hinge_d_loss,
    hinge_g_loss,
    least_squares_d_loss,
    least_squares_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
)
from tokenforge.tokenizers.losses.patch import NLayerDiscriminator
from tokenforge.tokenizers.losses.perceptual import LPIPS

REAL = torch.tensor([2.0, 0.5])
FAKE = torch.tensor([-2.0, 0.0])


def test_hinge_by_hand() -> None:
    # relu(1 - real) = [0, 0.5] -> 0.25 ; relu(1 + fake) = [0, 1] -> 0.5 ; times 0.5
    assert hinge_d_loss(REAL, FAKE).item() == pytest.approx(0.375)
    assert hinge_g_loss(FAKE).item() == pytest.approx(1.0)


def test_least_squares_and_non_saturating_by_hand() -> None:
    # (real-1)^2 = [1, 0.25] -> 0.625 ; fake^2 = [4, 0] -> 2 ; 0.5 * 2.625
    assert least_squares_d_loss(REAL, FAKE).item() == pytest.approx(1.3125)
    assert least_squares_g_loss(FAKE).item() == pytest.approx((9 + 1) / 2)
    sp = lambda v: float(torch.log1p(torch.exp(torch.tensor(v))))  # noqa: E731 softplus
    assert non_saturating_d_loss(REAL, FAKE).item() == pytest.approx(0.5 * ((sp(-2) + sp(-0.5)) / 2 + (sp(-2) + sp(0)) / 2))
    assert non_saturating_g_loss(FAKE).item() == pytest.approx((sp(2) + sp(0)) / 2)


def test_lists_of_logits_average_and_feature_matching() -> None:
    other = (torch.tensor([0.0]), torch.tensor([0.0]))  # hinge: 0.5 * (1 + 1) = 1
    assert hinge_d_loss([REAL, other[0]], [FAKE, other[1]]).item() == pytest.approx((0.375 + 1.0) / 2)
    real = [torch.ones(2, 3), torch.zeros(4)]
    fake = [torch.zeros(2, 3, requires_grad=True), torch.full((4,), 2.0)]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx((1.0 + 2.0) / 2)
    loss.backward()
    assert fake[0].grad is not None
    with pytest.raises(ValueError, match="same non-zero number"):
        feature_matching_loss(real, fake[:1])
    with pytest.raises(ValueError, match="hinge"):
        gan_losses("wasserstein")
    assert gan_losses("least_squares") == (least_squares_d_loss, least_squares_g_loss)


def test_patch_discriminator_layout_and_shapes() -> None:
    disc = NLayerDiscriminator()  # ndf 64, 3 layers, BatchNorm: pix2pix's 70x70 PatchGAN
    # params: 3*64*16+64 + 64*128*16 + 128*256*16 + 256*512*16 + 512*16+1 + BN (128+256+512)*2
    expected = 3 * 64 * 16 + 64 + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + 512 * 16 + 1 + (128 + 256 + 512) * 2
    assert sum(p.numel() for p in disc.parameters()) == expected == 2_765_633
    assert disc(torch.randn(2, 3, 256, 256)).shape == (2, 1, 30, 30)
    convs = [m for m in disc.main if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1] and convs[1].bias is None and convs[0].bias is not None
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in disc.main) == 3
    logits, feats = disc(torch.randn(2, 3, 32, 32), return_features=True)
    assert logits.shape == (2, 1, 2, 2) and [f.shape[1] for f in feats] == [64, 128, 256, 512]
    assert abs(float(convs[2].weight.detach().std()) - 0.02) < 0.002  # N(0, 0.02) init
    assert disc.main[0].weight.shape == (64, 3, 4, 4) and "main.2.weight" in disc.state_dict()


# ----------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.nn.Sequential, list[torch.Tensor]]:
    """A random VGG16 trunk in torchvision's layout and random positive heads in the lpips package's layout."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("lpips")
    features = make_layers(cfgs["D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, folder / "vgg16.pth")
    heads = [torch.rand(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
    torch.save({f"lin{i}.model.1.weight": w for i, w in enumerate(heads)}, folder / "vgg.pth")
    return folder / "vgg16.pth", folder / "vgg.pth", features.eval(), heads


def reference_lpips(features: torch.nn.Sequential, heads: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps = (3, 8, 15, 22, 29)  # relu1_2 ... relu5_3 in torchvision's numbering
    total = torch.zeros(x.shape[0])
    a, b, k = (x - shift) / scale, (y - shift) / scale, 0
    for i, layer in enumerate(features):
        a, b = layer(a), layer(b)
        if i in taps:
            na = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            nb = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total += ((na - nb) ** 2 * heads[k]).sum(1).mean(dim=(1, 2))
            k += 1
        if i == taps[-1]:
            break
    return total


def test_lpips_matches_reference_and_is_a_distance(lpips_files, shared_data: Path) -> None:
    from test_vqgan import load_images  # tests/ is on sys.path (pytest rootdir-less import mode)

    vgg, lin, features, heads = lpips_files
    lpips = LPIPS(str(vgg), str(lin))
    x = load_images(shared_data / "images")
    y = x.flip(0)
    with torch.no_grad():
        d = lpips(x, y)
        ref = reference_lpips(features, heads, x, y)
    assert d.shape == (4,) and torch.allclose(d, ref, rtol=1e-4, atol=1e-6)
    assert (d > 0).all() and torch.allclose(lpips(y, x), d, rtol=1e-5)
    assert torch.allclose(lpips(x, x), torch.zeros(4), atol=1e-6)
    assert lpips.state_dict() == {} and not list(lpips.parameters())  # frozen, never saved in checkpoints
    target = x.clone().requires_grad_(True)
    lpips(target, y).sum().backward()
    assert target.grad is not None and target.grad.abs().sum() > 0


def test_lpips_reads_a_full_lpips_state_and_reports_missing_files(lpips_files, tmp_path: Path, monkeypatch) -> None:
    vgg, lin, features, heads = lpips_files
    torchvision_state = torch.load(vgg)
    slices = {0: 1, 4: 2, 9: 3, 16: 4, 23: 5}  # lpips' slice{k} keeps torchvision's layer numbers
    full = {}
    for key, value in torchvision_state.items():
        index = int(key.split(".")[1])
        k = max(s for start, s in slices.items() if index >= start)
        full[f"net.slice{k}.{index}.{key.split('.')[2]}"] = value
    full.update(torch.load(lin))
    torch.save(full, tmp_path / "lpips_full.pth")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(LPIPS(str(tmp_path / "lpips_full.pth"))(x, -x), LPIPS(str(vgg), str(lin))(x, -x))
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPS()
    with pytest.raises(ValueError, match="one shape"):
        LPIPS(str(vgg), str(lin))(x, x[:, :, :16])
