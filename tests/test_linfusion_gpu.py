"""LinFusion on CUDA: bf16 and chunked paths match the fp32 reference; a large token count runs in linear memory."""

from __future__ import annotations

import pytest
import torch

from tokenforge.generators.linfusion import GeneralizedLinearAttention
from tokenforge.generators.linfusion.bench import main as bench_main

pytestmark = pytest.mark.gpu


def test_bf16_and_chunked_match_fp32_on_cuda() -> None:
    torch.manual_seed(0)
    ref = GeneralizedLinearAttention(320, 8).cuda()
    x = torch.randn(1, 4096, 320, device="cuda")
    with torch.no_grad():
        want = ref(x)
        chunked = GeneralizedLinearAttention(320, 8, chunk_size=1000).cuda()
        chunked.load_state_dict(ref.state_dict())
        torch.testing.assert_close(chunked(x), want, atol=1e-5, rtol=1e-4)
        got = ref.to(torch.bfloat16)(x.bfloat16()).float()
    assert (got - want).abs().max() < 2e-2 * want.abs().max()


def test_memory_grows_linearly_with_tokens() -> None:
    module = GeneralizedLinearAttention(320, 8, chunk_size=65536).cuda().to(torch.bfloat16)
    peaks = []
    for n in (2**16, 2**18):
        x = torch.randn(1, n, 320, device="cuda", dtype=torch.bfloat16)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            module(x)
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] < 6 * peaks[0]  # 4x tokens -> about 4x memory, never 16x


def test_bench_runs_on_cuda(tmp_path) -> None:
    assert bench_main(["--size", "tiny", "--resolutions", "256", "512", "--dtype", "bfloat16", "float32",
                       "--repeats", "2", "--json", str(tmp_path / "b.json")]) == 0
