"""LPIPS reads its layer widths from the weights: the ``llamagen_vq_train`` fixture's reduced VGG16 in the official
LPIPS key layout loads and matches an independent torchvision-built reference; full VGG16 widths still load;
inconsistent files are refused with the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_losses import reference_lpips  # tests/ is on sys.path
from torchvision.models.vgg import make_layers

from tokenforge.tokenizers.losses.perceptual import LPIPS, VGG16_CONVS

FULL = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def vgg_cfg(widths: list[int]) -> list:
    """torchvision's VGG16 cfg "D" at the given 13 conv widths (max-pools after convs 2, 4, 7, 10, 13)."""
    cfg: list = []
    for n, width in enumerate(widths):
        cfg.append(width)
        if n in (1, 3, 6, 9, 12):
            cfg.append("M")
    return cfg


def lpips_layout(features: torch.nn.Sequential, heads: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision features + heads -> the official LPIPS module keys (net.slice{k}.{i}, lin{k}.model.1.weight)."""
    slices = {0: 1, 4: 2, 9: 3, 16: 4, 23: 5}
    state = {}
    for key, value in features.state_dict().items():
        index = int(key.split(".")[0])
        k = max(s for start, s in slices.items() if index >= start)
        state[f"net.slice{k}.{key}"] = value
    state.update({f"lin{k}.model.1.weight": w for k, w in enumerate(heads)})
    return state


def test_fixture_reduced_vgg_loads_and_matches_a_reference(fixtures_dir: Path, shared_data: Path) -> None:
    from test_vqgan import load_images

    path = fixtures_dir / "llamagen_vq_train" / "lpips.safetensors"
    lpips = LPIPS(str(path))
    assert lpips.widths == [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]
    state = load_file(str(path))
    features = make_layers(vgg_cfg(lpips.widths))
    features.load_state_dict({k.split(".", 2)[2]: v for k, v in state.items() if k.startswith("net.slice")})
    heads = [state[f"lin{k}.model.1.weight"] for k in range(5)]
    x = load_images(shared_data / "images")
    y = x.flip(0)
    with torch.no_grad():
        got, ref = lpips(x, y), reference_lpips(features.eval(), heads, x, y)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-7) and (got > 0.01).all()
    assert torch.equal(lpips.shift.flatten(), state["scaling_layer.shift"].flatten())


def test_full_vgg16_widths_still_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    features = make_layers(vgg_cfg(FULL))
    heads = [torch.rand(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
    torch.save(lpips_layout(features, heads), tmp_path / "lpips_full.pth")
    lpips = LPIPS(str(tmp_path / "lpips_full.pth"))
    assert lpips.widths == FULL
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(lpips(x, -x), reference_lpips(features.eval(), heads, x, -x), rtol=1e-4, atol=1e-6)


def test_inconsistent_weights_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    widths = [2, 2, 4, 4, 6, 6, 6, 8, 8, 8, 8, 8, 8]
    features = make_layers(vgg_cfg(widths))
    heads = [torch.rand(1, widths[n], 1, 1) for n in (1, 3, 6, 9, 12)]
    state = lpips_layout(features, heads)
    save_file(state, str(tmp_path / "ok.safetensors"))
    assert LPIPS(str(tmp_path / "ok.safetensors")).widths == widths
    wrong_head = {**state, "lin2.model.1.weight": torch.rand(1, 5, 1, 1)}
    save_file(wrong_head, str(tmp_path / "head.safetensors"))
    with pytest.raises(KeyError, match="lin2.model.1.weight of shape \\(1, 6, 1, 1\\)"):
        LPIPS(str(tmp_path / "head.safetensors"))
    broken = {**state, f"net.slice3.{VGG16_CONVS[5]}.weight": torch.rand(6, 5, 3, 3)}
    save_file(broken, str(tmp_path / "chain.safetensors"))
    with pytest.raises(ValueError, match=f"features.{VGG16_CONVS[5]}.weight has shape"):
        LPIPS(str(tmp_path / "chain.safetensors"))
