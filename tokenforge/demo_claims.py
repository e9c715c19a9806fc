"""The demo's "paper claim, measured here" stages: each method's headline claim checked in seconds on this CPU.

Claims about compute (LinFusion, ENAT, E-CAR) run the methods' own bench code at tiny sizes with random
weights (speed and memory do not depend on training); claims about quality (FlexTok, VAT, WavTokenizer) read
the demo's own fitted models and reconstructions. Every stage returns ``{"claim": text, "rows": [...],
"verdict": text}``; the verdict says what was seen here, which after seconds of training may not be what the
paper reports. Timings vary with the CPU and its load; ratios are the point.
"""

from __future__ import annotations

import ctypes
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenforge.demo_stages import Run

Stage = tuple[str, Callable[[Run], Any], tuple[str, ...]]


class PeakMemory:
    """Peak resident memory (MiB) added inside a ``with`` block on Linux: frees the C heap back to the system
    (``malloc_trim``), resets the kernel's high-water mark (``/proc/self/clear_refs``), reads ``VmHWM`` after.
    ``mib`` stays None where /proc cannot be reset (not Linux)."""

    def __init__(self) -> None:
        self.mib: float | None = None

    @staticmethod
    def _status() -> dict[str, int]:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}

    def __enter__(self) -> PeakMemory:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self._base = self._status()["VmRSS"]
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._base is not None:
            self.mib = round((self._status()["VmHWM"] - self._base) / 1024, 1)


def _bench_json(argv: list[str]) -> Any:
    """Run ``tokenforge bench ARGV --json TMP`` and return the JSON it wrote."""
    from tokenforge.bench import main as bench

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.json"
        code = bench([*argv, "--json", str(path)])
        if code != 0:
            raise RuntimeError(f"tokenforge bench {' '.join(argv)} exited with {code}")
        return json.loads(path.read_text())


# ----------------------------------------------------------------------------- compute claims

LINFUSION_RESOLUTIONS = (128, 256, 512)


def linfusion_claim(run: Run) -> dict[str, Any]:
    """UNet forward time and peak memory vs resolution: softmax self-attention (materialised, as in SD's
    original attention; and PyTorch's fused SDPA) against LinFusion's linear attention; tiny random UNet."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from tokenforge.generators.linfusion.bench import build_unet, measure
    from tokenforge.generators.linfusion.linfusion import LinFusion

    device = torch.device("cpu")
    unet = build_unet("tiny", torch.float32, device, channels_last=False)
    rows = []
    for attention in ("softmax", "sdpa", "linfusion"):
        unet.set_attn_processor(AttnProcessor() if attention == "softmax" else AttnProcessor2_0())
        lin = LinFusion.construct_for(unet) if attention == "linfusion" else None
        try:
            for res in LINFUSION_RESOLUTIONS:
                with PeakMemory() as peak:
                    cell = measure(unet, unet.config, res, torch.float32, device, 1, 2, False, 0)
                rows.append({"attention": attention, "resolution": res, "tokens": (res // 8) ** 2,
                             "forward_ms": round(cell["forward_ms"], 1), "peak_mib": peak.mib})
        finally:
            if lin is not None:
                lin.unmount()
    lo, hi = LINFUSION_RESOLUTIONS[0], LINFUSION_RESOLUTIONS[-1]
    growth = {}
    for attention in ("softmax", "sdpa", "linfusion"):
        cells = {r["resolution"]: r for r in rows if r["attention"] == attention}
        growth[attention] = {"time_x": round(cells[hi]["forward_ms"] / cells[lo]["forward_ms"], 1),
                             "memory_mib": cells[hi]["peak_mib"]}
    pixels = (hi // lo) ** 2
    verdict = (f"{lo} -> {hi} px ({pixels}x pixels): time x{growth['softmax']['time_x']} softmax, "
               f"x{growth['sdpa']['time_x']} fused SDPA, x{growth['linfusion']['time_x']} LinFusion; peak memory at "
               f"{hi} px {growth['softmax']['memory_mib']} / {growth['sdpa']['memory_mib']} / "
               f"{growth['linfusion']['memory_mib']} MiB (tiny UNet, 1 CPU thread)")
    return {"claim": "LinFusion: linear attention makes UNet time and memory grow linearly with the pixel count, "
                     "where softmax self-attention grows quadratically",
            "rows": rows, "growth": growth, "verdict": verdict,
            "note": "random-weight tiny UNet, batch 1, float32; fused SDPA never holds the attention matrix, "
                    "so its memory stays low although its time is quadratic"}


def enat_claim(run: Run) -> dict[str, Any]:
    """Reuse vs no reuse: images/s and GFLOPs per image (bench, tiny random ENAT), and samples of the fitted
    ENAT drawn both ways with the same noise: token-frequency distance to the held-out tokens."""
    rows = _bench_json(["generator", "enat", "--size", "tiny", "--batch", "8", "--dtypes", "fp32", "--warmup", "1",
                        "--repeats", "3", "--device", "cpu"])
    by = {r["mode"]: r for r in rows}
    compact = [{"mode": r["mode"], "images_per_s": round(r["images_per_s"], 1),
                "gflops_per_image": round(r["gflops_per_image"], 4)} for r in rows]
    quality = enat_sample_quality(run) if run.results.get("enat/fit", {}).get("status") == "ok" else {}
    verdict = (f"reuse: {by['no-reuse']['gflops_per_image'] / by['reuse']['gflops_per_image']:.2f}x fewer FLOPs and "
               f"{by['reuse']['images_per_s'] / by['no-reuse']['images_per_s']:.2f}x the speed of no reuse; "
               f"{by['maskgit']['gflops_per_image'] / by['reuse']['gflops_per_image']:.2f}x fewer FLOPs than "
               f"MaskGIT-style full passes")
    if quality:
        verdict += (f"; fitted model, token-frequency distance to held-out tokens: reuse "
                    f"{quality['reuse_tv']:.3f}, no reuse {quality['no_reuse_tv']:.3f} "
                    f"({quality['agreement']:.0%} of sampled tokens identical)")
    return {"claim": "ENAT: reusing the previous step's features cuts the compute of each sampling step at "
                     "equal quality", "rows": compact, "quality": quality, "verdict": verdict}


def enat_sample_quality(run: Run, n: int = 32) -> dict[str, float]:
    import torch

    from tokenforge.generators.enat.sampler import enat_generate
    from tokenforge.hub import from_pretrained

    model = from_pretrained(run.result("enat/fit")["checkpoint"]).eval()
    labels = torch.arange(n) % model.num_classes
    samples = {}
    with torch.no_grad():
        for reuse in (True, False):
            generator = torch.Generator().manual_seed(0)
            samples[reuse] = enat_generate(model, n, labels, steps=6, reuse=reuse, generator=generator).ids
    held_out = token_histogram(Path(run.result("encode/vqgan")["tokens"]), "val", model.codebook_size)

    def tv(ids: Any) -> float:
        counts = torch.bincount(ids.flatten(), minlength=len(held_out)).double()[:len(held_out)]
        return float(0.5 * (counts / counts.sum() - held_out).abs().sum())

    return {"reuse_tv": round(tv(samples[True]), 4), "no_reuse_tv": round(tv(samples[False]), 4),
            "agreement": round(float((samples[True] == samples[False]).float().mean()), 4), "samples": n}


def token_histogram(folder: Path, split: str, vocab: int) -> Any:
    """Relative frequency of each id in ``split``'s token shards."""
    import glob

    import torch
    import webdataset as wds

    from tokenforge.data.tokens import Decoder

    decode = Decoder()
    tars = sorted(glob.glob(str(folder / f"{split}-*.tar")))
    ids = torch.cat([decode(s)["ids"].flatten() for s in wds.WebDataset(tars, shardshuffle=False)])
    counts = torch.bincount(ids[(ids >= 0) & (ids < vocab)], minlength=vocab).double()
    return counts / counts.sum()


def ecar_claim(run: Run) -> dict[str, Any]:
    """GFLOPs and time per generated image, E-CAR against a DiT of the same width and depth (bench, tiny)."""
    data = _bench_json(["generator", "ecar", "--size", "tiny", "--batch", "1", "--dtype", "fp32", "--warmup", "1",
                        "--repeats", "3", "--device", "cpu"])
    by = {r["model"]: r for r in data["rows"]}
    rows = [{"model": name, "params_m": round(data["params"][name] / 1e6, 3),
             "gflops_per_image": round(data["gflops"][name], 4), "ms_per_image": round(by[name]["ms_per_image"], 1)}
            for name in ("ecar", "dit")]
    verdict = (f"E-CAR {data['gflops']['dit'] / data['gflops']['ecar']:.1f}x fewer FLOPs and "
               f"{by['dit']['seconds'] / by['ecar']['seconds']:.1f}x faster per image than the DiT "
               f"({rows[0]['params_m']} M vs {rows[1]['params_m']} M parameters)")
    return {"claim": "E-CAR: DiT-level generation at ~10x fewer FLOPs and ~5x faster (256 px; here a tiny pair "
                     "of random-weight models on 8x8 latents)", "rows": rows, "verdict": verdict}


# ----------------------------------------------------------------------------- quality claims

def flextok_claim(run: Run) -> dict[str, Any]:
    """Held-out PSNR against the number of tokens kept (the reconstruct stage's 1, 2, 4, 8)."""
    metrics = json.loads((Path(run.result("flextok/reconstruct")["out"]) / "metrics.json").read_text())
    rows = [{"tokens": k, "psnr_db": round(metrics["mean"][f"psnr_k{k}"], 3)} for k in metrics["tokens"]]
    first, last = rows[0], rows[-1]
    verdict = (f"PSNR {first['psnr_db']:.2f} dB with {first['tokens']} token(s) -> {last['psnr_db']:.2f} dB with "
               f"{last['tokens']}: " + ("rises with the token count" if last["psnr_db"] > first["psnr_db"] + 0.1
                                        else "does not rise yet after seconds of training"))
    return {"claim": "FlexTok: one encoding, any number of tokens; reconstructions get closer as tokens are added",
            "rows": rows, "verdict": verdict}


def vat_claim(run: Run) -> dict[str, Any]:
    """F-score and IoU against bytes per shape for each number of scales kept (coarse-to-fine prefixes)."""
    table = json.loads((Path(run.result("vat/reconstruct")["out"]) / "summary.json").read_text())
    tau = max((key for key in table[-1] if key.startswith("f_score@")), key=lambda key: float(key.split("@")[1]))
    rows = [{"scales": r["scales_kept"], "bytes": r["bytes_per_shape"], "f_score": r[tau], "iou": r["iou"]}
            for r in table]
    verdict = (f"{rows[0]['bytes']} -> {rows[-1]['bytes']} bytes/shape: {tau} {rows[0]['f_score']:.3f} -> "
               f"{rows[-1]['f_score']:.3f}, IoU {rows[0]['iou']:.3f} -> {rows[-1]['iou']:.3f}")
    return {"claim": "VAT: coarse-to-fine scales, so a few bytes give a coarse shape and more bytes add detail",
            "rows": rows, "tau": tau, "verdict": verdict}


def wavtokenizer_claim(run: Run) -> dict[str, Any]:
    """Tokens per second of audio (one quantizer) and encode + decode speed of the fitted tiny model on the
    held-out clips; the mel distance and its silence baseline are in the evaluate / baseline stages."""
    import time

    import soundfile as sf
    import torch

    from tokenforge.hub import from_pretrained

    model = from_pretrained(run.result("wavtokenizer/fit")["checkpoint"]).eval()
    pairs = run.result("wavtokenizer/reconstruct")["audio"]
    seconds = tokens = compute = 0.0
    with torch.no_grad():
        for original, _ in pairs:
            data, rate = sf.read(original, dtype="float32")
            x = torch.from_numpy(data).reshape(1, -1)
            start = time.perf_counter()
            encoded = model.encode(x)
            model.decode(encoded)
            compute += time.perf_counter() - start
            tokens += encoded.ids.numel()
            seconds += x.shape[-1] / rate
    evaluated = run.results.get("wavtokenizer/evaluate", {}).get("metrics", {})
    rows = [{"tokens_per_second": round(tokens / seconds, 1), "quantizers": 1,
             "x_real_time": round(seconds / compute, 1),
             "mel_distance": evaluated.get("mel_distance/mean")}]
    verdict = (f"{rows[0]['tokens_per_second']} tokens per second of 24 kHz audio from one codebook; encode + "
               f"decode {rows[0]['x_real_time']}x real time on this CPU (tiny model)")
    return {"claim": "WavTokenizer: 24 kHz speech in 40 or 75 tokens per second from a single quantizer",
            "rows": rows, "verdict": verdict}


CLAIMS: dict[str, tuple[Callable[[Run], dict[str, Any]], tuple[str, ...]]] = {
    "linfusion": (linfusion_claim, ()),
    "enat": (enat_claim, ()),
    "ecar": (ecar_claim, ()),
    "flextok": (flextok_claim, ("flextok/reconstruct",)),
    "vat": (vat_claim, ("vat/reconstruct",)),
    "wavtokenizer": (wavtokenizer_claim, ("wavtokenizer/reconstruct", "wavtokenizer/evaluate")),
}


def claim_stage(method: str) -> list[Stage]:
    """``[(method/claim, fn, needs)]`` for a method with a paper claim, else ``[]``."""
    if method not in CLAIMS:
        return []
    fn, needs = CLAIMS[method]
    return [(f"{method}/claim", fn, needs)]
