"""WavTokenizer's part of `tokenforge demo`: fitted on the 24 kHz speech clips; its paper claim (few tokens per
second from one quantizer) measured on the fitted model."""

from __future__ import annotations

from typing import Any

from tokenforge.demo_stages import DemoPart, Run, audio_tokenizer


def claim(run: Run) -> dict[str, Any]:
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


def part() -> DemoPart:
    return audio_tokenizer("wavtokenizer", "tokenizers/wavtokenizer", {"default": 100, "long": 1000},
                           claim=(("wavtokenizer/claim", claim,
                                   ("wavtokenizer/reconstruct", "wavtokenizer/evaluate")),),
                           claim_title="tokens per second and mel distance")
