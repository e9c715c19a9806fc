"""Per-method stages of `tokenforge demo`: each stage is a call of the library code the CLI runs.

A method is a list of ``(stage, function, needs)``; every function takes the shared `Run` and returns a dict
that lands in ``summary.json`` (and so in the report). Fits go through `tokenforge.cli.lightning_cli` with the
method's tiny config, reconstructions and samples through the method's own subcommand ``main(argv)``, and
held-out metrics through `tokenforge.evaluate` (the reconstruct commands' own metrics.json otherwise).
"""

from __future__ import annotations

import csv
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SAMPLES = Path(__file__).resolve().parent / "samples"


@dataclass
class Run:
    """What every stage needs: output folder, device, step table, data folders and the stage results so far."""

    out: Path
    device: str
    steps: dict[str, int]
    preset: str
    samples: Path = SAMPLES
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def result(self, stage: str) -> dict[str, Any]:
        return self.results[stage]


def config(method: str, preset: str) -> Path:
    """The method's YAML for a preset (``small.yaml`` when it exists for ``--preset small``, else ``tiny.yaml``)."""
    name = {"gpt": "autoregressive"}.get(method, method)
    folder = next(p for p in (CONFIGS / "tokenizers" / name, CONFIGS / "generators" / name) if p.is_dir())
    chosen = folder / f"{preset}.yaml"
    return chosen if chosen.is_file() else folder / "tiny.yaml"


def check(code: int, what: str, accept: tuple[int, ...] = (0,)) -> None:
    if code not in accept:
        raise RuntimeError(f"{what} exited with {code}")


# ----------------------------------------------------------------------------- data

def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def face_rows(samples: Path, every: int = 1) -> list[tuple[str, str]]:
    """(absolute path, ``face`` / ``nonface``) of every ``every``-th labelled LFW crop in ``samples/images/faces``
    (the label is the file name's prefix); ``samples`` is the bundled samples or ``../shared/data``."""
    files = sorted((Path(samples) / "images" / "faces").glob("*.png"))[::every]
    return [(str(p.resolve()), "face" if p.name.startswith("face") else "nonface") for p in files]


def make_face_shards(samples: Path, out: Path, val_fraction: float = 0.2, every: int = 1) -> list[Path]:
    """Image shards of the labelled crops (`face_rows`) in ``out / "raw"`` with a ``val_fraction`` split, and
    ``out / "faces.csv"``; returns the crops used. The generators' tests and GPU runs train on these."""
    from tokenforge.data.shards import make_shards

    out.mkdir(parents=True, exist_ok=True)
    rows = face_rows(samples, every)
    make_shards("images", _csv(out / "faces.csv", rows), out / "raw", val_fraction=val_fraction, format="png",
                progress=False)
    return [Path(path) for path, _ in rows]


def make_data(run: Run, kind: str) -> dict[str, Any]:
    """Raw shards of the bundled samples: photos, faces (face / nonface labels), speech (24 kHz), meshes."""
    from tokenforge.data.cli import main as shards_main

    out = run.path("shards", kind)
    lists = run.path("lists")
    lists.mkdir(parents=True, exist_ok=True)
    if kind == "photos":
        files = sorted(p for p in (run.samples / "images").iterdir() if p.suffix in {".png", ".jpg"})
        src = _csv(lists / "photos.csv", [(str(p), "photo") for p in files])
        argv = ["make", "images", str(src), str(out), "--max-side", "48", "--format", "png"]
    elif kind == "faces":
        src = _csv(lists / "faces.csv", face_rows(run.samples))
        argv = ["make", "images", str(src), str(out), "--format", "png"]
    elif kind == "speech":
        argv = ["make", "audio", str(run.samples / "speech24k"), str(out), "--sample-rate", "24000", "--labels", "none"]
    else:
        argv = ["make", "meshes", str(run.samples / "meshes"), str(out), "--num-surface", "2048", "--num-vol", "1024",
                "--num-near", "1024", "--shard-size", "4", "--labels", "none"]
    # exit 3: some source files were rejected (e.g. the malformed meshes of ../shared/data), each named on stderr
    check(shards_main([*argv, "--val-fraction", "0.25", "--seed", "0", "--overwrite", "--no-progress"]),
          f"shards make {kind}", accept=(0, 3))
    manifest = json.loads((out / "manifest.json").read_text())
    return {"shards": str(out), "splits": {name: s["count"] for name, s in manifest["splits"].items()},
            "rejected": manifest.get("rejected", 0)}


def held_out(shards: Path, out: Path, extensions: set[str], count: int) -> list[Path]:
    """Files of the validation shards (never trained on), in shard order, written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for tar_path in sorted(shards.glob("val-*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.rsplit(".", 1)[-1] in extensions and len(paths) < count:
                    target = out / member.name
                    target.write_bytes(tar.extractfile(member).read())
                    paths.append(target)
    if not paths:
        raise RuntimeError(f"no {'/'.join(sorted(extensions))} files in the validation shards of {shards}")
    return paths


# ----------------------------------------------------------------------------- fitting and evaluation

# demo-only overrides of the tiny configs. VQGAN: with random codebook init its 8-dim l2-normalised codebook
# collapses to one code within ~100 steps on 14 photos (usage 1/256), which leaves the generators nothing to
# learn; k-means init + dead-code replacement (both options of the library's VectorQuantizer) keep codes alive.
# Its GAN term (disc_start 2) keeps the decoder at one blurry image for the whole short budget: the demo
# trains the reconstruction + codebook losses only (disc_start beyond the run).
FIT_OVERRIDES: dict[str, tuple[str, ...]] = {
    "vqgan": ("--model.init_args.model.init_args.quantizer.init_args.kmeans_init", "true",
              "--model.init_args.model.init_args.quantizer.init_args.dead_code_threshold", "1.0",
              "--model.init_args.disc_start", "1000000"),
}


def fit(run: Run, method: str, train: str, val: str | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """LightningCLI ``fit`` of the method's config for ``run.steps[method]`` steps; a final checkpoint + CSV log."""
    from tokenforge.cli import lightning_cli

    cfg = config(method, run.preset)
    logs = run.path("logs", method)
    args = ["fit", "--config", str(cfg), "--data.init_args.train", train,
            "--trainer.max_steps", str(run.steps[method]), "--trainer.default_root_dir", str(logs),
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir", str(logs),
            "--trainer.logger.init_args.name", method, "--trainer.accelerator", run.device,
            # webdataset's shuffle buffer seeds itself from pid + time: off, so a rerun gives the same numbers
            # (the raw shards are already shuffled with a fixed seed when made, and shards are detshuffled)
            "--data.init_args.shuffle_buffer", "0", *FIT_OVERRIDES.get(method, ()), *extra]
    if val:
        args += ["--data.init_args.val", val]
    cli = lightning_cli(args=args)
    checkpoint = logs / "final.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    csvs = sorted(logs.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    return {"config": str(cfg), "checkpoint": str(checkpoint), "metrics_csv": str(csvs[-1]) if csvs else None,
            "steps": int(cli.trainer.global_step)}


def evaluate(run: Run, method: str, kind: str, shards: str, **opts: Any) -> dict[str, Any]:
    """Held-out metrics with `tokenforge.evaluate` (the same call as ``tokenforge evaluate``) -> metrics.json."""
    from tokenforge import evaluate as ev

    out = run.path("eval", method)
    fn = ev.evaluate_tokenizer if kind == "tokenizer" else ev.evaluate_generator
    metrics = fn(run.result(f"{method}/fit")["checkpoint"], shards, out, device=run.device, progress=False, **opts)
    return {"metrics_json": str(out / "metrics.json"), "metrics": headline(metrics)}


HEADLINE = ("psnr", "ssim", "lpips", "rfid", "mel_distance", "stft_distance", "si_snr", "pesq", "stoi", "iou",
            "chamfer", "f_score", "bytes_per_item", "bytes_per_second", "nll_nats_per_token",
            "nll_bits_per_token", "loss", "fid")


def headline(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar metrics whose name starts with a headline key (nested dicts flattened with '/'), protocol left out."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        if key in ("protocol", "files", "per_item", "rejected", "n", "std"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(headline(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and \
                any(h in name for h in HEADLINE):
            found[name] = round(float(value), 4)
    return found


# ----------------------------------------------------------------------------- tokenizers

def image_tokenizer(method: str, size: int) -> list[tuple[str, Callable[[Run], Any], tuple[str, ...]]]:
    """Fit on the photos, reconstruct held-out photos with the method's command, evaluate on the val shards."""

    def fit_(run: Run) -> dict[str, Any]:
        shards = run.result("data/photos")["shards"]
        return fit(run, method, shards, shards)

    def reconstruct(run: Run) -> dict[str, Any]:
        ckpt = run.result(f"{method}/fit")["checkpoint"]
        files = held_out(Path(run.result("data/photos")["shards"]), run.path("held_out", "photos"), {"png"}, 6)
        out = run.path("reconstructions", method)
        if method == "tokenflow":
            from tokenforge.tokenizers.tokenflow.cli import main
            check(main(["reconstruct", "--model", ckpt, *map(str, files), "--out", str(out), "--size", str(size),
                        "--device", run.device]), "tokenflow reconstruct")
        elif method == "flextok":
            from tokenforge.tokenizers.flextok.cli import main
            check(main(["reconstruct", "--model", ckpt, *map(str, files), "--out", str(out), "--size", str(size),
                        "--tokens", "1,2,4,8", "--steps", "4", "--device", run.device]), "flextok reconstruct")
        else:
            from tokenforge.reconstruct import main
            check(main(["--model", ckpt, *map(str, files), "--out", str(out), "--size", str(size),
                        "--device", run.device]), "reconstruct")
        metrics = json.loads((out / "metrics.json").read_text())
        pictures = sorted(str(p) for p in out.glob("*.png") if p.name != "grid.png")
        return {"out": str(out), "pictures": pictures, "metrics": headline(metrics)}

    def evaluate_(run: Run) -> dict[str, Any]:
        return evaluate(run, method, "tokenizer", run.result("data/photos")["shards"], image_size=size)

    return [(f"{method}/fit", fit_, ("data/photos",)), (f"{method}/reconstruct", reconstruct, (f"{method}/fit",)),
            (f"{method}/evaluate", evaluate_, (f"{method}/fit",))]


def wavtokenizer() -> list[tuple[str, Callable[[Run], Any], tuple[str, ...]]]:
    def fit_(run: Run) -> dict[str, Any]:
        shards = run.result("data/speech")["shards"]
        return fit(run, "wavtokenizer", shards, shards)

    def reconstruct(run: Run) -> dict[str, Any]:
        import soundfile as sf

        from tokenforge.reconstruct import main

        files = held_out(Path(run.result("data/speech")["shards"]), run.path("held_out", "speech"), {"flac"}, 4)
        out = run.path("reconstructions", "wavtokenizer")
        check(main(["--model", run.result("wavtokenizer/fit")["checkpoint"], *map(str, files), "--out", str(out),
                    "--device", run.device]), "reconstruct (audio)")
        pairs = []
        for original in files:  # browsers do not all play FLAC: WAV copies for the page
            pair = []
            for flac, wav in ((original, out / f"{original.stem}.original.wav"), (out / f"{original.stem}.flac",
                                                                                   out / f"{original.stem}.wav")):
                data, rate = sf.read(flac)
                sf.write(wav, data, rate, subtype="PCM_16")
                pair.append(str(wav))
            pairs.append(pair)
        return {"out": str(out), "audio": pairs,
                "metrics": headline(json.loads((out / "metrics.json").read_text()).get("mean", {}))}

    def evaluate_(run: Run) -> dict[str, Any]:
        return evaluate(run, "wavtokenizer", "tokenizer", run.result("data/speech")["shards"])

    return [("wavtokenizer/fit", fit_, ("data/speech",)),
            ("wavtokenizer/reconstruct", reconstruct, ("wavtokenizer/fit",)),
            ("wavtokenizer/evaluate", evaluate_, ("wavtokenizer/fit",))]


def vat() -> list[tuple[str, Callable[[Run], Any], tuple[str, ...]]]:
    def fit_(run: Run) -> dict[str, Any]:
        return fit(run, "vat", run.result("data/meshes")["shards"],
                   extra=("--data.init_args.num_points", "512", "--data.init_args.num_queries", "512"))

    def reconstruct(run: Run) -> dict[str, Any]:
        import numpy as np

        from tokenforge.tokenizers.vat.cli import main

        files = held_out(Path(run.result("data/meshes")["shards"]), run.path("held_out", "meshes"), {"ply"}, 3)
        out = run.path("reconstructions", "vat")
        main(["reconstruct", *map(str, files), "--model", run.result("vat/fit")["checkpoint"], "--out", str(out),
              "--points", "512", "--resolution", "32", "--eval-points", "5000", "--scales", "all",
              "--device", run.device])
        entries = json.loads((out / "metrics.json").read_text())  # one entry per mesh and number of scales kept
        kept = max((entry["scales_kept"] for entry in entries if "error" not in entry), default=0)
        per_shape = [entry for entry in entries if "error" not in entry and entry["scales_kept"] == kept]
        if not per_shape:
            raise RuntimeError("; ".join(f"{e['file']}: {e['error']}" for e in entries))
        means = {key: float(np.mean([entry[key] for entry in per_shape])) for key in ("iou", "bytes")}
        meshed = [entry["chamfer"] for entry in per_shape if entry.get("chamfer") is not None]
        means["chamfer"] = float(np.mean(meshed)) if meshed else float("nan")  # over shapes that gave a surface
        for tau in per_shape[0]["f_score"]:
            means[f"f_score@{tau}"] = float(np.mean([entry["f_score"][tau] for entry in per_shape]))
        return {"out": str(out), "pictures": sorted(str(p) for p in out.glob("*.png")),
                "metrics": {k: round(v, 4) for k, v in means.items()},
                "empty_shapes": sum(entry.get("chamfer") is None for entry in per_shape)}

    def evaluate_(run: Run) -> dict[str, Any]:
        return evaluate(run, "vat", "tokenizer", run.result("data/meshes")["shards"], resolution=32)

    return [("vat/fit", fit_, ("data/meshes",)), ("vat/reconstruct", reconstruct, ("vat/fit",)),
            ("vat/evaluate", evaluate_, ("vat/fit",))]


def encode(tokenizer: str, name: str, size: int, latents: bool = False) -> Callable[[Run], dict[str, Any]]:
    """Token (or latent) shards of the labelled faces with a fitted tokenizer: the generators' training data."""

    def run_(run: Run) -> dict[str, Any]:
        from tokenforge.data.cli import main as shards_main

        out = run.path("tokens", name)
        check(shards_main(["encode", "--tokenizer", run.result(f"{tokenizer}/fit")["checkpoint"],
                           run.result("data/faces")["shards"], str(out), "--image-size", str(size), "--device",
                           run.device, "--overwrite", "--no-progress", *(["--latents"] if latents else [])]),
              "shards encode")
        manifest = json.loads((out / "manifest.json").read_text())
        result = {"tokens": str(out), "splits": {k: s["count"] for k, s in manifest["splits"].items()}}
        if not latents:
            result.update(token_statistics(out))
        return result

    return run_


def token_statistics(folder: Path) -> dict[str, Any]:
    """Unigram entropy (nats) and codes used in the train split: the baseline a generator's NLL must beat."""
    import glob

    import torch
    import webdataset as wds

    from tokenforge.data.tokens import Decoder

    decode = Decoder()
    tars = sorted(glob.glob(str(folder / "train-*.tar")))
    ids = torch.cat([decode(s)["ids"].flatten() for s in wds.WebDataset(tars, shardshuffle=False)])
    counts = torch.bincount(ids[ids >= 0]).double()
    p = counts[counts > 0] / counts.sum()
    return {"unigram_entropy_nats": round(float(-(p * p.log()).sum()), 4), "codes_used": int((counts > 0).sum())}
