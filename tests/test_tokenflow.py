"""TokenFlow: parity with both official fixtures, the shared-index quantizer by hand, multi-scale decoding,
the official loader's error paths (missing/mis-shaped keys, pickled args, SigLIP key layouts), the Tokens
interface, and the reconstruct CLI on odd image files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from tokenforge import hub
from tokenforge.parity import check
from tokenforge.tokenizers.tokenflow.bench import tiny_model
from tokenforge.tokenizers.tokenflow.official import load_tokenflow
from tokenforge.tokenizers.tokenflow.quantizer import DualCodebookQuantizer
from tokenforge.tokenizers.tokenflow.towers import resize_pos_table


@pytest.mark.parametrize("name", ["tokenflow", "tokenflow_siglip"])
def test_official_fixture_parity(fixtures_dir: Path, name: str) -> None:
    lines = check(fixtures_dir / name, name)
    assert lines and all(line.status == "ok" for line in lines), "\n".join(map(str, lines))
    assert {line.name for line in lines} >= {"indices", "quant", "pix_recon", "next_scale_inputs", "sem_recon"}


def _quantizer(sem: list[list[float]], pix: list[list[float]], scales=(1,), **kw) -> DualCodebookQuantizer:
    q = DualCodebookQuantizer(len(sem), len(sem[0]), len(pix[0]), scales, scale_dropout=0.0, **kw)
    with torch.no_grad():
        q.semantic_embedding.weight.copy_(torch.tensor(sem))
        q.pixel_embedding.weight.copy_(torch.tensor(pix))
    return q.eval()


def test_shared_index_minimises_the_summed_distance_by_hand() -> None:
    # semantic half alone prefers code 0, pixel half alone prefers code 1; the sum decides.
    q = _quantizer(sem=[[1, 0], [0, 1], [-1, 0]], pix=[[0, 2], [2, 0], [0, -1]])  # rows normalised at use
    h = torch.tensor([[0.9, 0.1, 3.0, 0.2]]).reshape(1, 4, 1, 1)  # z_sem ~ [0.994, 0.110], z_pix ~ [0.998, 0.067]
    z_sem, z_pix = F.normalize(h[0, :2, 0, 0], dim=0), F.normalize(h[0, 2:, 0, 0], dim=0)
    e_sem = torch.tensor([[1.0, 0], [0, 1], [-1, 0]])
    e_pix = torch.tensor([[0.0, 1], [1, 0], [0, -1]])
    d = ((z_sem - e_sem) ** 2).sum(1) + ((z_pix - e_pix) ** 2).sum(1)
    assert ((z_sem - e_sem) ** 2).sum(1).argmin() == 0 and ((z_pix - e_pix) ** 2).sum(1).argmin() == 1
    quant, ids = q.quantize_all(h)
    assert ids[0].item() == d.argmin().item() == 1
    assert torch.allclose(quant[0, :, 0, 0], torch.tensor([0.0, 1.0, 1.0, 0.0]), atol=1e-6)
    heavy = _quantizer(sem=[[1, 0], [0, 1], [-1, 0]], pix=[[0, 2], [2, 0], [0, -1]], pixel_weight=0.0)
    assert heavy.quantize_all(h)[1][0].item() == 0  # pixel weight 0: the semantic half alone decides


def test_training_losses_by_hand_and_straight_through() -> None:
    q = _quantizer(sem=[[1, 0], [0, 1]], pix=[[1, 0], [0, 1]], beta=0.25).train()
    h = torch.tensor([[3.0, 4.0, 1.0, 0.0]]).reshape(1, 4, 1, 1).requires_grad_(True)
    out = q(h)
    z = torch.tensor([0.6, 0.8, 1.0, 0.0])
    z_q = torch.tensor([1.0, 0.0, 1.0, 0.0])  # code 0: 0.8 + 0 beats code 1: 0.4 + 2
    mse = ((z - z_q) ** 2).mean()
    assert torch.allclose(out.loss, (1 + 0.25) * mse)
    assert torch.allclose(out.quantized[0, :, 0, 0], z_q, atol=1e-6)
    out.quantized.sum().backward()  # straight-through: d(sum z)/dh, non-zero through the normalisation
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert q.codebook_used[-1].item() == 0 and (q.codebook_used[:-1] == -1).all()


def test_multiscale_decode_prefixes_and_errors() -> None:
    torch.manual_seed(0)
    q = DualCodebookQuantizer(64, 8, 4, [1, 2, 4], scale_dropout=0.0).eval()
    h = torch.randn(2, 12, 4, 4)
    quant, ids = q.quantize_all(h)
    assert [i.shape for i in ids] == [(2, 1), (2, 4), (2, 16)]
    flat = torch.cat(ids, 1)
    assert torch.allclose(q.decode(flat), quant, atol=1e-5) and torch.allclose(q.decode(ids), quant, atol=1e-5)
    coarse = q.decode(flat[:, :5])  # a prefix ending on a scale boundary
    expected = sum(F.interpolate(q.embed_scale(ids[i], i), size=(4, 4), mode="bicubic") for i in range(2))
    assert torch.allclose(coarse, expected, atol=1e-6)
    with pytest.raises(ValueError, match="scale boundary"):
        q.decode(flat[:, :6])
    with pytest.raises(ValueError, match=r"\[0, 63\]"):
        q.decode(flat + 64)
    with pytest.raises(ValueError, match="last scale is 4x4"):
        q.quantize_all(torch.randn(1, 12, 5, 5))
    # the residual shrinks: every scale explains part of what the previous ones left
    errors = [(h - q.decode(flat[:, :n])).pow(2).mean().item() for n in (1, 5, 21)]
    assert errors[0] > errors[2]


def test_scale_dropout_and_usage_window() -> None:
    q = DualCodebookQuantizer(32, 4, 4, [1, 2, 3], scale_dropout=1.0, usage_window=10).train()
    out = q(torch.randn(2, 8, 3, 3))
    assert len(out.indices) == 2 and out.indices[0].shape == (2, 1)  # the first scale is never dropped
    assert out.metrics["scales_used"].item() == 2.0
    flat = torch.cat([i.reshape(-1) for i in out.indices])
    assert torch.equal(q.codebook_used, flat[-10:].float())
    before = q.codebook_used.clone()
    q.eval()(torch.randn(2, 8, 3, 3))
    assert torch.equal(q.codebook_used, before)  # eval never records


def test_dino_position_resize_uses_the_scale_factor() -> None:
    table = torch.randn(25, 6)
    assert resize_pos_table(table, 5) is table
    out = resize_pos_table(table, 6)
    square = table.reshape(1, 5, 5, 6).permute(0, 3, 1, 2)
    by_factor = F.interpolate(square, scale_factor=6.1 / 5, mode="bicubic").permute(0, 2, 3, 1).reshape(36, 6)
    by_size = F.interpolate(square, size=(6, 6), mode="bicubic").permute(0, 2, 3, 1).reshape(36, 6)
    assert torch.equal(out, by_factor) and (out - by_size).abs().max() > 1e-2


def test_loader_lists_missing_and_misshaped_keys(fixtures_dir: Path, tmp_path: Path) -> None:
    state = load_file(str(fixtures_dir / "tokenflow" / "state_dict.safetensors"))
    del state["decoder_vqkd.blocks.1.attn.q_bias"]
    state["encode_task_layer.0.bias"] = torch.zeros(7)
    state["bogus.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "broken.safetensors"))
    config = json.loads((fixtures_dir / "tokenflow" / "config.json").read_text())
    with pytest.raises(hub.CheckpointError) as error:
        load_tokenflow(tmp_path / "broken.safetensors", config)
    message = str(error.value)
    assert "semantic_decoder.blocks.1.attn.q_bias" in message and "encode_task_layer.0.bias" in message
    assert "bogus.weight" in message and "(7,)" in message


def test_pickled_args_need_trust_pickle(fixtures_dir: Path, tmp_path: Path) -> None:
    state = load_file(str(fixtures_dir / "tokenflow" / "state_dict.safetensors"))
    ema = {k: v + 1.0 if k == "quant_conv.bias" else v for k, v in state.items()}
    torch.save({"model": state, "ema": ema, "args": argparse.Namespace(lr=1e-4, codebook_size=96)}, tmp_path / "t.pt")
    config = json.loads((fixtures_dir / "tokenflow" / "config.json").read_text())
    with pytest.raises(hub.PickledCheckpointError, match="trust_pickle"):
        load_tokenflow(tmp_path / "t.pt", config)
    with pytest.raises(hub.PickledCheckpointError):  # a config key cannot switch unpickling on
        load_tokenflow(tmp_path / "t.pt", {**config, "trust_pickle": True})
    model = load_tokenflow(tmp_path / "t.pt", config, trust_pickle=True)
    assert torch.equal(model.quant_conv.bias, state["quant_conv.bias"] + 1.0)  # 'ema' wins over 'model'


def test_siglip_keys_with_and_without_vision_model(fixtures_dir: Path, tmp_path: Path) -> None:
    folder = fixtures_dir / "tokenflow_siglip"
    state = load_file(str(folder / "state_dict.safetensors"))
    flat = {k.replace("encoder_vqkd.vision_model.", "encoder_vqkd."): v for k, v in state.items()}
    assert flat.keys() != state.keys()
    save_file(flat, str(tmp_path / "flat.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    a, b = load_tokenflow(folder), load_tokenflow(tmp_path / "flat.safetensors", config)
    x = load_file(str(folder / "inputs.safetensors"))["image"]
    expected = load_file(str(folder / "outputs.safetensors"))["siglip_hidden_m2"]
    with torch.no_grad():
        assert torch.allclose(b.semantic_tokens(x), expected, atol=2e-5)
        assert torch.equal(a.semantic_tokens(x), b.semantic_tokens(x))


def test_tokens_interface_matches_official_functions(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "tokenflow"
    model = load_tokenflow(folder)
    x = load_file(str(folder / "inputs.safetensors"))["image"]
    out = load_file(str(folder / "outputs.safetensors"))
    with torch.no_grad():
        tokens = model.encode(x, next_scale_inputs=True)
        assert [t.shape[1] for t in tokens.ids] == [1, 4, 16, 36] and tokens.meta["scales"] == [1, 2, 4, 6]
        assert torch.equal(torch.cat(tokens.ids, 1), out["indices"])
        assert torch.allclose(tokens.meta["next_scale_inputs"], out["next_scale_inputs"], atol=1e-5)
        assert torch.allclose(model.decode_semantic(tokens), out["sem_recon_from_code"], atol=1e-5)
        assert torch.allclose(model.decode(tokens), out["pix_recon_from_code"].clamp(-1, 1), atol=1e-4)
        assert torch.allclose(model.decode(out["indices"]), out["pix_recon_from_code"].clamp(-1, 1), atol=1e-4)
    assert model.image_size == 96 and model.vocab_size == 96


def test_save_pretrained_round_trip_of_a_loaded_release(fixtures_dir: Path, tmp_path: Path) -> None:
    model = load_tokenflow(fixtures_dir / "tokenflow_siglip")
    restored = hub.from_pretrained(hub.save_pretrained(model, tmp_path / "tf"))
    x = load_file(str(fixtures_dir / "tokenflow_siglip" / "inputs.safetensors"))["image"]
    with torch.no_grad():
        assert torch.equal(torch.cat(model.encode(x).ids, 1), torch.cat(restored.encode(x).ids, 1))
        assert restored.decode(restored.encode(x)).shape == (1, 3, 384, 384)  # siglip's fixed output size


def _odd_images(folder: Path) -> dict[str, str]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray((rng.integers(0, 65535, (80, 80))).astype(np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rgb[:8, :8]).save(folder / "tiny8.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return {"gray.png": "L", "rgba.png": "RGBA", "palette.png": "P", "deep16.png": "I;16"}


def test_reconstruct_cli_on_odd_images(tmp_path: Path, shared_data: Path) -> None:
    from tokenforge.cli import main

    torch.manual_seed(0)
    folder = hub.save_pretrained(tiny_model(), tmp_path / "model")
    converted = _odd_images(tmp_path / "in")
    assert Image.open(tmp_path / "in" / "deep16.png").mode in {"I;16", "I"}
    args = ["reconstruct", "--model", str(folder), str(tmp_path / "in"),
            str(shared_data / "images" / "astronaut.png"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 3  # tiny8.png and broken.png are skipped (EXIT_SOME_SKIPPED); the rest are written
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["files"]) == set(converted) | {"astronaut.png"}
    assert "smaller than --min-side" in metrics["rejected"]["tiny8.png"]
    assert "not a readable image" in metrics["rejected"]["broken.png"]
    ids = np.load(tmp_path / "out" / "ids.npy")
    assert ids.shape == (5, 85) and ids.dtype == np.int32 and 0 <= ids.min() and ids.max() < 256
    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.size == (64, 5 * 32)
    for values in metrics["files"].values():
        assert np.isfinite(values["psnr_db"]) and -1.0 <= values["ssim"] <= 1.0
    # the tiny image converts when the user allows it; --fit none refuses a wrong size with a message
    assert main(args[:-4] + [str(tmp_path / "in" / "tiny8.png"), "--out", str(tmp_path / "o2"), "--min-side", "1"]) == 3
    assert main(args[:-4] + [str(tmp_path / "in" / "gray.png"), "--out", str(tmp_path / "o3"), "--fit", "none"]) == 3
    rejected = json.loads((tmp_path / "o3" / "metrics.json").read_text())["rejected"]
    assert "--fit none needs 32x32" in rejected["gray.png"]


def test_quick_gelu_mlp_is_clips_activation() -> None:
    from tokenforge.nn.mlp import GeluMLP, make_mlp

    mlp = make_mlp("quick_gelu", 4, 8)
    assert isinstance(mlp, GeluMLP) and mlp.approximate == "quick"
    x = torch.randn(3, 4)
    h = mlp.fc1(x)
    assert torch.allclose(mlp(x), mlp.fc2(h * torch.sigmoid(1.702 * h)), atol=1e-6)


def test_convert_cli_with_trust_pickle(fixtures_dir: Path, tmp_path: Path) -> None:
    from tokenforge.convert import main

    state = load_file(str(fixtures_dir / "tokenflow" / "state_dict.safetensors"))
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "train.pt")
    config = tmp_path / "config.json"
    config.write_text((fixtures_dir / "tokenflow" / "config.json").read_text())
    with pytest.raises(hub.PickledCheckpointError):
        main(["tokenflow", str(tmp_path / "train.pt"), str(tmp_path / "a"), "--config", str(config)])
    assert main(["tokenflow", str(tmp_path / "train.pt"), str(tmp_path / "b"), "--config", str(config),
                 "--trust-pickle"]) == 0
    restored = hub.from_pretrained(tmp_path / "b")
    assert torch.equal(restored.quantizer.semantic_embedding.weight, state["quantize.embedding_vqkd.weight"])
