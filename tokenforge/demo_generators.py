"""Generator stages of `tokenforge demo`: fit on token / latent shards, sample, decode, evaluate.

GPT and ENAT learn the VQGAN token grids of the labelled faces (face / nonface), E-CAR the KL latents of the
same faces; samples are decoded by the tokenizer named in the shard manifest through each method's generate
command. LinFusion distils the tiny SD-like teacher (random frozen parts, ``configs/generators/linfusion``) on
the photos; its stage renders the same prompts with the teacher's softmax attention and with the fitted
LinFusion modules mounted, and reports how close the student's images are to the teacher's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenforge.demo_stages import Run, check, evaluate, fit

Stage = tuple[str, Callable[[Run], Any], tuple[str, ...]]


def token_generator(method: str, tokens_stage: str) -> list[Stage]:
    """gpt / enat / ecar: fit on ``tokens_stage``'s shards, sample 8 per class, evaluate held-out NLL / loss."""

    def fit_(run: Run) -> dict[str, Any]:
        tokens = run.result(tokens_stage)["tokens"]
        return fit(run, method, tokens, tokens)

    def generate(run: Run) -> dict[str, Any]:
        out = run.path("samples", method)
        common = ["--generator", run.result(f"{method}/fit")["checkpoint"], "--tokens",
                  run.result(tokens_stage)["tokens"], "--n", "8", "--classes", "0", "1", "--seed", "0",
                  "--device", run.device, "--out", str(out)]
        if method == "ecar":
            from tokenforge.generators.ecar.generate import main
            code = main([*common, "--steps", "4", "--cfg", "1.5"])
        elif method == "enat":
            from tokenforge.generators.enat.generate import main
            code = main([*common, "--steps", "6", "--no-progress"])
        else:
            from tokenforge.generators.autoregressive.generate import main
            code = main([*common, "--top-k", "32", "--no-progress"])
        check(code, f"{method} generate")
        samples = sorted(str(p) for p in out.glob("sample_*.png"))
        return {"out": str(out), "samples": samples, "grid": str(out / "grid.png") if (out / "grid.png").exists()
                else None, "labels": json.loads((out / "labels.json").read_text())}

    def evaluate_(run: Run) -> dict[str, Any]:
        return evaluate(run, method, "generator", run.result(tokens_stage)["tokens"])

    return [(f"{method}/fit", fit_, (tokens_stage,)), (f"{method}/generate", generate, (f"{method}/fit",)),
            (f"{method}/evaluate", evaluate_, (f"{method}/fit",))]


PROMPTS = ("a photo of a cat", "coffee on a table", "a rocket launch", "old brick wall")


def linfusion() -> list[Stage]:
    def fit_(run: Run) -> dict[str, Any]:
        shards = run.result("data/photos")["shards"]
        return fit(run, "linfusion", shards, shards)

    def generate(run: Run) -> dict[str, Any]:
        import torch
        import yaml
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        from tokenforge.demo_stages import config
        from tokenforge.generators.linfusion.components import tiny_components
        from tokenforge.generators.linfusion.generate import generate as render
        from tokenforge.generators.linfusion.generate import save_png
        from tokenforge.hub import from_pretrained

        fitted = run.result("linfusion/fit")
        init = yaml.safe_load(Path(fitted["config"]).read_text())["model"]["init_args"]
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
        from tokenforge.demo_baselines import NAMES

        return {"baseline": NAMES["linfusion"], "metrics": run.result("linfusion/generate")["baseline_metrics"]}

    return [("linfusion/fit", fit_, ("data/photos",)), ("linfusion/generate", generate, ("linfusion/fit",)),
            ("linfusion/baseline", baseline, ("linfusion/generate",))]
