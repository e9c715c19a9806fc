"""LinFusion's part of `tokenforge demo`: distils the tiny SD-like teacher (random frozen parts,
``configs/generators/linfusion``) on the photos, renders the same prompts with the teacher's softmax attention and
with the fitted LinFusion modules mounted, and reports how close the student's images are to the teacher's. Its
paper claim (UNet time and memory grow linearly with the pixels) is measured on a tiny random UNet."""

from __future__ import annotations

import json
from typing import Any

from tokenforge.demo_claims import PeakMemory
from tokenforge.demo_stages import DemoPart, Run, fit_stage

FOLDER = "generators/linfusion"
PROMPTS = ("a photo of a cat", "coffee on a table", "a rocket launch", "old brick wall")
RESOLUTIONS = (128, 256, 512)
BASELINE = "teacher's mean sample for every prompt"


def generate(run: Run) -> dict[str, Any]:
    """Teacher | student for every prompt, the student-vs-teacher PSNR, and the prompt-blind baseline's."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from tokenforge.config_models import compose, config_files
    from tokenforge.generators.linfusion.components import tiny_components
    from tokenforge.generators.linfusion.render import generate as render
    from tokenforge.generators.linfusion.render import save_png
    from tokenforge.hub import from_pretrained

    fitted = run.result("linfusion/fit")
    init = compose(config_files(fitted["config"]))["model"]["init_args"]
    size = int(init.get("resolution", 32))
    parts = tiny_components(**init["tiny"])  # seeded: the same frozen teacher the fit distilled from
    pipe = StableDiffusionPipeline(vae=parts.vae.eval(), text_encoder=parts.text_encoder.eval(), tokenizer=None,
                                   unet=parts.unet.eval(), scheduler=DDIMScheduler.from_config(parts.scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(run.device)
    out = run.path("samples", "linfusion")
    out.mkdir(parents=True, exist_ok=True)
    student = from_pretrained(fitted["checkpoint"]).to(run.device).eval()
    pictures, errors, teachers = [], [], []
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            embeds = {"prompt_embeds": parts.encode_text([prompt], torch.device(run.device)),
                      "negative_prompt_embeds": parts.encode_text([""], torch.device(run.device))}
            teacher = render(pipe, None, size, size, steps=10, seed=i, **embeds)[0]
            teachers.append(teacher)
            student.mount_to(pipe)
            try:
                lin = render(pipe, None, size, size, steps=10, seed=i, **embeds)[0]
            finally:
                student.unmount()
            save_png(torch.cat([teacher, lin], dim=-1), out / f"sample_{i:04d}.png")
            pictures.append(str(out / f"sample_{i:04d}.png"))
            errors.append(float((teacher - lin).pow(2).mean()))
    mse = sum(errors) / len(errors)
    psnr = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()
    # baseline: answer every prompt with the teacher's mean sample (what a prompt-blind student could do)
    mean = torch.stack(teachers).mean(0)
    base_mse = float(torch.stack([(t - mean).pow(2).mean() for t in teachers]).mean())
    base_psnr = 10 * torch.log10(torch.tensor(1.0 / max(base_mse, 1e-12))).item()
    metrics = {"student_vs_teacher_psnr_db": round(psnr, 3), "student_vs_teacher_mse": round(mse, 6)}
    baseline = {"student_vs_teacher_psnr_db": round(base_psnr, 3), "student_vs_teacher_mse": round(base_mse, 6)}
    (out / "metrics.json").write_text(json.dumps({"prompts": list(PROMPTS), **metrics, "baseline": baseline},
                                                 indent=2) + "\n")
    return {"out": str(out), "samples": pictures, "prompts": list(PROMPTS), "metrics": metrics,
            "baseline_metrics": baseline,
            "caption": "each sample: teacher (softmax attention) | student (LinFusion mounted). NOT meaningful "
                       "pictures: the teacher is a tiny random-weight SD-like UNet, so both halves are "
                       "structured noise; what matters is that the student's half matches the teacher's."}


def baseline(run: Run) -> dict[str, Any]:
    """Scored in the generate stage, beside whose numbers it sits."""
    return {"baseline": BASELINE, "metrics": run.result("linfusion/generate")["baseline_metrics"],
            "beside": "generate"}


def claim(run: Run) -> dict[str, Any]:
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
            for res in RESOLUTIONS:
                with PeakMemory() as peak:
                    cell = measure(unet, unet.config, res, torch.float32, device, 1, 2, False, 0)
                rows.append({"attention": attention, "resolution": res, "tokens": (res // 8) ** 2,
                             "forward_ms": round(cell["forward_ms"], 1), "peak_mib": peak.mib})
        finally:
            if lin is not None:
                lin.unmount()
    lo, hi = RESOLUTIONS[0], RESOLUTIONS[-1]
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


def part() -> DemoPart:
    return DemoPart("linfusion", "text-to-image", FOLDER, ("photos",),
                    (fit_stage("linfusion", FOLDER, "photos"), ("linfusion/generate", generate, ("linfusion/fit",))),
                    {"default": 100, "long": 1000},
                    baseline=(("linfusion/baseline", baseline, ("linfusion/generate",)),),
                    claim=(("linfusion/claim", claim, ()),),
                    claim_title="time and memory vs resolution, softmax vs linear attention")
