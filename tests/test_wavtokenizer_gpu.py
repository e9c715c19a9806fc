"""WavTokenizer on CUDA: fixture parity in fp32, bf16 autocast close to fp32, torch.compile (CUDA graphs at batch 1)
equal to eager, and bf16-mixed training steps of the tiny recipe on real speech."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from tokenforge import hub

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")  # Inductor reads this one for its own matmuls
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old[:2]
    torch.set_float32_matmul_precision(old[2])


@pytest.fixture(scope="module")
def fixture(fixtures_dir: Path) -> Path:
    return fixtures_dir / "wavtokenizer"


def speech(shared_data: Path, n: int = 4, seconds: float = 2.0) -> torch.Tensor:
    files = sorted((shared_data / "speech24k").glob("*.flac"))[10:10 + n]
    rows = []
    for f in files:
        wave = torch.from_numpy(sf.read(f, dtype="float32")[0])[: int(24000 * seconds)]
        rows.append(torch.nn.functional.pad(wave, (0, int(24000 * seconds) - wave.numel())))
    return torch.stack(rows)


@torch.no_grad()
def test_fixture_parity_on_cuda(fixture: Path) -> None:
    model = hub.from_official("wavtokenizer", fixture).cuda()
    inp, out = load_file(fixture / "inputs.safetensors"), load_file(fixture / "outputs.safetensors")
    features, codes = model.encode_infer(inp["audio"].cuda(), inp["bandwidth_id"].cuda())
    assert torch.equal(codes.cpu(), out["codes"])
    wave = model.decode_features(features, inp["bandwidth_id"].cuda()).cpu()
    assert (wave - out["waveform"]).abs().max() < 1e-4


@torch.no_grad()
def test_bf16_autocast_close_to_fp32(fixture: Path, shared_data: Path) -> None:
    model = hub.from_official("wavtokenizer", fixture).cuda()
    x = speech(shared_data).cuda()
    ref = model.encode_ids(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ids = model.encode_ids(x)
        wave = model.decode_ids(ref, torch.zeros(1, dtype=torch.long, device="cuda"))
    assert (ids == ref).float().mean() > 0.9
    full = model.decode_ids(ref, torch.zeros(1, dtype=torch.long, device="cuda"))
    assert wave.dtype == torch.float32
    assert (wave - full).abs().max() < 0.05 * full.abs().max()


@torch.no_grad()
def test_compiled_fast_paths_match_eager(fixture: Path, shared_data: Path) -> None:
    """torch.compile (mode reduce-overhead: Inductor kernels + CUDA graphs) against eager, both with weight norm
    folded so only compilation differs. fp32 without TF32 (fixture `no_tf32`); Inductor fuses and reorders fp32
    reductions, so codes may flip where two codebook rows are near-equidistant and waveforms differ by ~1e-5.
    Outputs of a CUDA-graphed call live in graph-owned memory that the next replay overwrites: they are cloned,
    and each iteration is marked as a new step. The differences are printed for the run log."""
    eager = hub.from_official("wavtokenizer", fixture).cuda().fuse_weight_norm()
    compiled = hub.from_official("wavtokenizer", fixture).cuda().fuse_weight_norm().compile(mode="reduce-overhead")
    x = speech(shared_data, n=1).cuda()
    bw = torch.zeros(1, dtype=torch.long, device="cuda")
    for _ in range(3):  # warm-up and graph capture
        torch.compiler.cudagraph_mark_step_begin()
        ids = compiled.encode_ids(x).clone()
        torch.compiler.cudagraph_mark_step_begin()
        wave = compiled.decode_ids(ids, bw).clone()
    ref_ids = eager.encode_ids(x)
    ref_wave = eager.decode_ids(ids, bw)  # same ids in: isolates the decoder
    agree = (ids == ref_ids).float().mean().item()
    diff = (wave - ref_wave).abs().max().item()
    print(f"\ncompiled vs eager: codes agree {agree:.4f} ({int((ids != ref_ids).sum())} of {ids.numel()} differ); "
          f"decoded max abs diff {diff:.3g} (peak {ref_wave.abs().max().item():.3g})")
    assert ids.shape == ref_ids.shape and wave.shape == ref_wave.shape
    assert agree > 0.97  # a flip needs a near-tie; at most a few of 150 frames
    assert diff < 1e-3 * max(1.0, ref_wave.abs().max().item())


def test_bf16_mixed_training_steps(shared_data: Path) -> None:
    from tokenforge.config_models import build_training_module
    from tokenforge.tokenizers.wavtokenizer.module import WavTokenizerModule

    module = build_training_module(Path(__file__).resolve().parents[1] / "configs/tokenizers/wavtokenizer/tiny.yaml")
    assert isinstance(module, WavTokenizerModule)
    x = speech(shared_data, n=4, seconds=0.5)
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=8, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader([{"audio": x}] * 4, batch_size=None))
    assert trainer.global_step == 8 and int(module.generator_step) == 4
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


@torch.no_grad()
def test_cuda_graph_capture_of_whole_calls(fixture: Path, shared_data: Path) -> None:
    from tokenforge.tokenizers.wavtokenizer.bench import GraphedCall

    model = hub.from_official("wavtokenizer", fixture).cuda().fuse_weight_norm()
    model.encoder.model[13].lstm.flatten_parameters()
    x = speech(shared_data, n=1).cuda()
    bw = torch.zeros(1, dtype=torch.long, device="cuda")
    ref_ids = model.encode_ids(x)
    encode, decode = GraphedCall(model.encode_ids, x), GraphedCall(model.decode_ids, ref_ids, bw)
    y = speech(shared_data, n=2)[1:].cuda()  # new data through the same graph
    assert torch.equal(encode(y), model.encode_ids(y))
    ids = model.encode_ids(y)
    assert (decode(ids, bw) - model.decode_ids(ids, bw)).abs().max() < 1e-5
