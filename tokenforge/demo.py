"""`tokenforge demo`: the main job end to end on real data, each stage a call of the library the CLI uses.

Stages: raw image shards from real photos -> fit the tiny VQGAN through LightningCLI -> reconstruct the
held-out (validation-shard) images (PNG grid + PSNR) -> encode token shards -> fit the tiny GPT on them ->
sample new token grids and decode them to PNGs. A failed stage is reported and the stages that do not
depend on it still run. Everything lands in ``--out`` with a ``summary.json``.

The photos come from ``../shared/data/images`` when that folder exists, else from scikit-image's bundled
sample images (real photographs shipped inside the scikit-image wheel, public domain / CC0).
"""

from __future__ import annotations

import argparse
import json
import tarfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right", "ihc",
                  "hubble_deep_field", "camera", "moon", "coins", "brick", "grass", "gravel")


def default_images(workdir: Path) -> Path:
    """Real photos: ../shared/data/images if present, else scikit-image's bundled ones written as PNG."""
    shared = REPO.parent / "shared" / "data" / "images"
    if shared.is_dir():
        return shared
    from PIL import Image
    from skimage import data as skdata

    folder = workdir / "skimage_photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in SKIMAGE_PHOTOS:
        Image.fromarray(getattr(skdata, name)()).save(folder / f"{name}.png")
    return folder


def latest_checkpoint(logs: Path) -> Path:
    checkpoints = sorted(logs.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise RuntimeError(f"fit wrote no checkpoint under {logs}")
    return checkpoints[-1]


def extract_held_out(shards: Path, out: Path, count: int) -> list[Path]:
    """Write the largest images of the validation shards to ``out``: data the tokenizer never trained on."""
    out.mkdir(parents=True, exist_ok=True)
    members = []
    for tar_path in sorted(shards.glob("val-*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.rsplit(".", 1)[-1] in {"jpg", "png"}:
                    members.append((member.size, tar_path, member.name))
    paths = []
    for _, tar_path, name in sorted(members, reverse=True)[:count]:
        with tarfile.open(tar_path) as tar:
            target = out / name
            target.write_bytes(tar.extractfile(name).read())
            paths.append(target)
    if not paths:
        raise RuntimeError(f"no validation images in {shards}; make shards with --val-fraction > 0")
    return sorted(paths)


class Stages:
    """Runs named stages, prints a line per stage, records results and failures for summary.json."""

    def __init__(self) -> None:
        self.report: dict[str, Any] = {}

    def run(self, name: str, fn: Callable[[], Any], needs: tuple[str, ...] = ()) -> Any:
        missing = [n for n in needs if self.report.get(n, {}).get("status") != "ok"]
        if missing:
            self.report[name] = {"status": "skipped", "reason": f"needs {', '.join(missing)}"}
            print(f"[demo] {name:<12} skipped (needs {', '.join(missing)})", flush=True)
            return None
        print(f"[demo] {name:<12} ...", flush=True)
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as error:  # report and go on: later stages that can run still run
            traceback.print_exc()
            self.report[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            print(f"[demo] {name:<12} FAILED: {error}", flush=True)
            return None
        seconds = time.perf_counter() - start
        self.report[name] = {"status": "ok", "seconds": round(seconds, 1), **(result or {})}
        print(f"[demo] {name:<12} ok in {seconds:.1f} s {json.dumps(result or {})}", flush=True)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--images", type=Path, help="folder of images to use instead of the bundled photos")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps for the tiny tokenizer fit")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tokenizers" / "vqgan" / "tiny.yaml")
    parser.add_argument("--generator-config", type=Path,
                        default=REPO / "configs" / "generators" / "autoregressive" / "tiny.yaml")
    parser.add_argument("--generator-steps", type=int, default=60, help="optimiser steps for the tiny GPT fit")
    parser.add_argument("--image-size", type=int, default=32, help="image side the tiny config trains at")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)

    from tokenforge.cli import lightning_cli
    from tokenforge.data.cli import main as shards_main
    from tokenforge.reconstruct import reconstruct_images

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages()
    images = (args.images or default_images(out)).resolve()
    shards, tokens, logs = out / "shards" / "images", out / "tokens" / "images", out / "logs"

    def make_shards() -> dict[str, Any]:
        code = shards_main(["make", "images", str(images), str(shards), "--val-fraction", "0.2", "--seed", "0"])
        if code != 0:
            raise RuntimeError(f"shards make exited with {code}")
        manifest = json.loads((shards / "manifest.json").read_text())
        splits = {name: split["count"] for name, split in manifest["splits"].items()}
        return {"source": str(images), "count": manifest["count"], "splits": splits}

    def fit() -> dict[str, Any]:
        lightning_cli(args=[
            "fit", "--config", str(args.config), "--data.init_args.train", str(shards),
            "--trainer.max_steps", str(args.steps), "--trainer.default_root_dir", str(logs),
            "--trainer.logger.init_args.save_dir", str(logs), "--trainer.accelerator", args.device,
        ])
        return {"checkpoint": str(latest_checkpoint(logs))}

    def reconstruct() -> dict[str, Any]:
        checkpoint = stages.report["fit"]["checkpoint"]
        held_out = extract_held_out(shards, out / "held_out", count=8)
        return reconstruct_images(checkpoint, held_out, out / "reconstructions", size=args.image_size,
                                  device=args.device)

    def encode() -> dict[str, Any]:
        checkpoint = stages.report["fit"]["checkpoint"]
        code = shards_main(["encode", "--tokenizer", checkpoint, str(shards), str(tokens),
                            "--image-size", str(args.image_size), "--device", args.device, "--no-progress"])
        if code != 0:
            raise RuntimeError(f"shards encode exited with {code}")
        return {"manifest": str(tokens / "manifest.json")}

    def fit_generator() -> dict[str, Any]:
        gen_logs = out / "logs_generator"
        lightning_cli(args=[
            "fit", "--config", str(args.generator_config), "--data.init_args.train", str(tokens),
            "--data.init_args.val", str(tokens), "--trainer.max_steps", str(args.generator_steps),
            "--trainer.default_root_dir", str(gen_logs), "--trainer.logger.init_args.save_dir", str(gen_logs),
            "--trainer.accelerator", args.device,
        ])
        return {"checkpoint": str(latest_checkpoint(gen_logs))}

    def generate() -> dict[str, Any]:
        from tokenforge.generators.autoregressive.generate import main as generate_main

        samples = out / "samples"
        code = generate_main(["--generator", stages.report["fit_generator"]["checkpoint"], "--tokens", str(tokens),
                              "--n", "16", "--seed", "0", "--device", args.device, "--no-progress",
                              "--out", str(samples)])
        if code != 0:
            raise RuntimeError(f"generate exited with {code}")
        return {"out": str(samples), "files": len(list(samples.glob("*.png")))}

    stages.run("shards", make_shards)
    stages.run("fit", fit, needs=("shards",))
    stages.run("reconstruct", reconstruct, needs=("fit",))
    stages.run("encode", encode, needs=("fit",))
    stages.run("fit_generator", fit_generator, needs=("encode",))
    stages.run("generate", generate, needs=("fit_generator",))
    (out / "summary.json").write_text(json.dumps(stages.report, indent=2) + "\n")
    failed = [name for name, r in stages.report.items() if r["status"] != "ok"]
    print(f"[demo] wrote {out / 'summary.json'}" + (f"; not ok: {', '.join(failed)}" if failed else "; all ok"))
    return 1 if failed else 0
