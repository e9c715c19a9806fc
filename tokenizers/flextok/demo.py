"""FlexTok's part of `tokenforge demo`: fitted on the photos at 16 px, reconstructed from 1, 2, 4 and 8 tokens;
its paper claim (reconstructions improve as tokens are added) read off those reconstructions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenforge.demo_stages import DemoPart, Run, image_tokenizer


def claim(run: Run) -> dict[str, Any]:
    """Held-out PSNR against the number of tokens kept (the reconstruct stage's 1, 2, 4, 8)."""
    metrics = json.loads((Path(run.result("flextok/reconstruct")["out"]) / "metrics.json").read_text())
    rows = [{"tokens": k, "psnr_db": round(metrics["mean"][f"psnr_k{k}"], 3)} for k in metrics["tokens"]]
    first, last = rows[0], rows[-1]
    verdict = (f"PSNR {first['psnr_db']:.2f} dB with {first['tokens']} token(s) -> {last['psnr_db']:.2f} dB with "
               f"{last['tokens']}: " + ("rises with the token count" if last["psnr_db"] > first["psnr_db"] + 0.1
                                        else "does not rise yet after seconds of training"))
    return {"claim": "FlexTok: one encoding, any number of tokens; reconstructions get closer as tokens are added",
            "rows": rows, "verdict": verdict}


def part() -> DemoPart:
    return image_tokenizer("flextok", "tokenizers/flextok", 16, {"default": 400, "long": 2000},
                           options=("--tokens", "1,2,4,8", "--steps", "4"),
                           claim=(("flextok/claim", claim, ("flextok/reconstruct",)),),
                           claim_title="PSNR vs number of tokens")
