"""The stages of `tokenforge demo` and the parts methods build them from: each stage is a call of the library
code the CLI runs.

A stage is ``(name, function, needs)``; every function takes the shared `Run` and returns a dict that lands in
``summary.json`` (and so in the report). A method brings its stages as a `DemoPart`, which its package's
``demo.py`` returns (named by `tokenforge.methods.Method.demo`); the builders here (`image_tokenizer`,
`audio_tokenizer`, `mesh_tokenizer`, `token_generator`, `encode_stage`) make the usual ones by modality. Fits go
through `tokenforge.cli.lightning_cli` with the method's tiny config, reconstructions and samples through the
verbs (`verb`: ``tokenforge reconstruct`` / ``generate`` with the method's options), and held-out metrics
through `tokenforge.evaluate`.
"""

from __future__ import annotations

import csv
import json
import tarfile
from collections.abc import Callable, Mapping
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


Stage = tuple[str, Callable[[Run], Any], tuple[str, ...]]


@dataclass(frozen=True)
class DemoPart:
    """What one method adds to `tokenforge demo`.

    ``name`` prefixes its stages (``name/fit``...) and is what ``--methods`` and the tables show; ``label`` the
    modality column ("image", "image tokens"); ``config`` its folder under ``configs/`` (the preset's YAML is
    used); ``data`` the bundled data kinds its stages read (`DATA_KINDS`); ``stages`` its own, in run order (a
    stage another part also lists, such as a shared encode, runs once); ``steps`` optimiser steps for the
    ``default`` (2 idle CPU cores, ~10 minutes in all) and ``long`` (GPU) presets; ``requires`` the parts whose
    stages it needs (a generator's tokenizer), pulled in without their baselines and claims; ``baseline`` and
    ``claim`` stages run after every part's own (a tokenizer's ``baseline`` also lists its modality's
    `leaderboard_stage`); ``claim_title`` names the paper claim where its stage did not
    run; ``expect`` says what its pictures or sounds look like after seconds of training (the report).
    """

    name: str
    label: str
    config: str
    data: tuple[str, ...]
    stages: tuple[Stage, ...]
    steps: Mapping[str, int]
    requires: tuple[str, ...] = ()
    baseline: tuple[Stage, ...] = ()
    claim: tuple[Stage, ...] = ()
    claim_title: str = ""
    expect: str = ""


def config(folder: str, preset: str) -> Path:
    """A part's YAML for a preset (``small.yaml`` when it exists for ``--preset small``, else ``tiny.yaml``);
    ``folder`` is relative to ``configs/`` (``tokenizers/vqgan``)."""
    chosen = CONFIGS / folder / f"{preset}.yaml"
    return chosen if chosen.is_file() else CONFIGS / folder / "tiny.yaml"


def check(code: int, what: str, accept: tuple[int, ...] = (0,)) -> None:
    if code not in accept:
        raise RuntimeError(f"{what} exited with {code}")


def verb(name: str, argv: list[str]) -> int:
    """Run a `tokenforge` verb (``reconstruct``, ``generate``...) in this process; exceptions propagate, so a failed
    stage reports them."""
    from tokenforge.cli import SUBCOMMANDS
    from tokenforge.methods import load_target

    return load_target(SUBCOMMANDS[name][0])(argv)


# ----------------------------------------------------------------------------- data

DATA_KINDS = ("photos", "faces", "speech", "meshes")  # the bundled samples as raw shards, in run order

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

def fit(run: Run, method: str, folder: str, train: str, val: str | None = None,
        extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """LightningCLI ``fit`` of the config in ``configs/folder`` for ``run.steps[method]`` steps (``extra``: the
    part's own overrides); a final checkpoint + CSV log."""
    from tokenforge.cli import lightning_cli
    from tokenforge.config_models import fit_args

    cfg = config(folder, run.preset)
    logs = run.path("logs", method)
    args = ["fit", *fit_args(cfg), "--data.init_args.train", train,
            "--trainer.max_steps", str(run.steps[method]), "--trainer.default_root_dir", str(logs),
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir", str(logs),
            "--trainer.logger.init_args.name", method, "--trainer.accelerator", run.device,
            # webdataset's shuffle buffer seeds itself from pid + time: off, so a rerun gives the same numbers
            # (the raw shards are already shuffled with a fixed seed when made, and shards are detshuffled)
            "--data.init_args.shuffle_buffer", "0", *extra]
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


def leaderboard_stage(modality: str) -> Stage:
    """``leaderboard/<modality>``: ``tokenforge evaluate --models`` over every tokenizer of ``modality`` that an
    evaluate stage scored (same shards, each at its own image side / mesh resolution); ``leaderboard/index.html``
    shows every modality's table written so far. Each tokenizer part lists it, so it runs once, after the fits."""

    def leaderboard_(run: Run) -> dict[str, Any]:
        from tokenforge.leaderboard import evaluate_models
        from tokenforge.leaderboard_page import write_page

        models, sizes, shards, opts = [], [], None, {}
        for name, result in list(run.results.items()):
            if not name.endswith("/evaluate") or result.get("status") != "ok" or not result.get("metrics_json"):
                continue
            protocol = json.loads(Path(result["metrics_json"]).read_text())["protocol"]
            if protocol.get("kind") != "tokenizer" or protocol.get("modality") != modality or \
                    shards not in (None, protocol["shards"]):
                continue
            shards, part = protocol["shards"], name.split("/")[0]
            models.append(f"{part}={run.result(f'{part}/fit')['checkpoint']}")
            sizes.append(protocol["sizes"].get("image", [0])[-1])
            opts.update({"resolution": protocol["sizes"]["resolution"]} if modality == "mesh" else {})
        if not models:
            raise RuntimeError(f"no {modality} tokenizer was evaluated: nothing to compare")
        out = run.path("leaderboard", modality)
        table = evaluate_models(models, shards, out, image_sizes=sizes if modality == "image" else None,
                                device=run.device, progress=False, **opts)
        tables = [json.loads(p.read_text()) for p in sorted(run.path("leaderboard").glob("*/leaderboard.json"))]
        page = write_page(tables, run.path("leaderboard", "index.html"), "tokenforge demo: leaderboard")
        return {"page": str(page), "table": str(out / "leaderboard.md"), "models": [r["model"] for r in table["rows"]]}

    return f"leaderboard/{modality}", leaderboard_, ()


# ----------------------------------------------------------------------------- parts by modality

BASELINE_NAMES = {"image": "mean training image", "audio": "silence", "mesh": "best training-set sphere",
                  "tokens": "unigram entropy of the training tokens", "flow": "zero velocity (untrained)"}
IMAGE_EXPECT = ("Tiny config, seconds of CPU training on a dozen photos: expect blurry colour fields, not faithful "
                "reconstructions. The numbers below, against the mean-image baseline, are the point.")
AUDIO_EXPECT = "Tiny config, seconds of CPU training: expect muffled, buzzy speech."
MESH_EXPECT = "Tiny config, seconds of CPU training: expect blobs roughly the size of the shape, not its details."


def fit_stage(name: str, folder: str, data: str, with_val: bool = True, extra: tuple[str, ...] = ()) -> Stage:
    """``name/fit``: the part's config fitted on the ``data/<data>`` shards (also its validation split)."""

    def fit_(run: Run) -> dict[str, Any]:
        shards = run.result(f"data/{data}")["shards"]
        return fit(run, name, folder, shards, shards if with_val else None, extra)

    return f"{name}/fit", fit_, (f"data/{data}",)


def evaluate_stage(name: str, kind: str, source: str, key: str, **opts: Any) -> Stage:
    """``name/evaluate``: `tokenforge.evaluate` of the fitted model on ``run.result(source)[key]``'s shards."""

    def evaluate_(run: Run) -> dict[str, Any]:
        return evaluate(run, name, kind, run.result(source)[key], **opts)

    return f"{name}/evaluate", evaluate_, (f"{name}/fit",)


def reconstruct_held_out(run: Run, name: str, data: str, extensions: set[str], count: int,
                         options: tuple[str, ...] = ()) -> tuple[Path, list[Path]]:
    """``count`` held-out files of ``data/<data>`` through ``tokenforge reconstruct`` with the fitted model and the
    part's ``options``; returns the output folder and the files."""
    files = held_out(Path(run.result(f"data/{data}")["shards"]), run.path("held_out", data), extensions, count)
    out = run.path("reconstructions", name)
    check(verb("reconstruct", ["--model", run.result(f"{name}/fit")["checkpoint"], *map(str, files), "--out",
                               str(out), "--device", run.device, *options]), f"{name} reconstruct")
    return out, files


def image_tokenizer(name: str, folder: str, size: int, steps: Mapping[str, int], *, options: tuple[str, ...] = (),
                    fit_extra: tuple[str, ...] = (), expect: str = IMAGE_EXPECT, **part: Any) -> DemoPart:
    """Fit on the photos, reconstruct six held-out photos at ``size`` px, evaluate on the validation shards; the
    mean training image at the same size is the baseline."""

    def reconstruct(run: Run) -> dict[str, Any]:
        out, _ = reconstruct_held_out(run, name, "photos", {"png"}, 6, ("--size", str(size), *options))
        pictures = sorted(str(p) for p in out.glob("*.png") if p.name != "grid.png")
        return {"out": str(out), "pictures": pictures,
                "metrics": headline(json.loads((out / "metrics.json").read_text()))}

    def baseline(run: Run) -> dict[str, Any]:
        from tokenforge.baselines import image_baseline

        metrics = image_baseline(run.result("data/photos")["shards"], run.path("baselines", f"images_{size}px"), size)
        return {"baseline": BASELINE_NAMES["image"], "metrics": headline(metrics)}

    stages = (fit_stage(name, folder, "photos", extra=fit_extra),
              (f"{name}/reconstruct", reconstruct, (f"{name}/fit",)),
              evaluate_stage(name, "tokenizer", "data/photos", "shards", image_size=size))
    return DemoPart(name, "image", folder, ("photos",), stages, steps,
                    baseline=((f"{name}/baseline", baseline, ("data/photos",)), leaderboard_stage("image")),
                    expect=expect, **part)


def audio_tokenizer(name: str, folder: str, steps: Mapping[str, int], *, options: tuple[str, ...] = (),
                    expect: str = AUDIO_EXPECT, **part: Any) -> DemoPart:
    """Fit on the speech clips, reconstruct four held-out clips (WAV copies for the page), evaluate; silence is
    the baseline."""

    def reconstruct(run: Run) -> dict[str, Any]:
        import soundfile as sf

        out, files = reconstruct_held_out(run, name, "speech", {"flac"}, 4, options)
        pairs = []
        for original in files:  # browsers do not all play FLAC: WAV copies for the page
            pair = []
            for flac, wav in ((original, out / f"{original.stem}.original.wav"),
                              (out / f"{original.stem}.flac", out / f"{original.stem}.wav")):
                data, rate = sf.read(flac)
                sf.write(wav, data, rate, subtype="PCM_16")
                pair.append(str(wav))
            pairs.append(pair)
        return {"out": str(out), "audio": pairs,
                "metrics": headline(json.loads((out / "metrics.json").read_text()).get("mean", {}))}

    def baseline(run: Run) -> dict[str, Any]:
        from tokenforge.baselines import silence_baseline

        metrics = silence_baseline(run.result("data/speech")["shards"], run.path("baselines", "silence"))
        return {"baseline": BASELINE_NAMES["audio"], "metrics": headline(metrics)}

    stages = (fit_stage(name, folder, "speech"), (f"{name}/reconstruct", reconstruct, (f"{name}/fit",)),
              evaluate_stage(name, "tokenizer", "data/speech", "shards"))
    return DemoPart(name, "audio", folder, ("speech",), stages, steps,
                    baseline=((f"{name}/baseline", baseline, ("data/speech",)), leaderboard_stage("audio")),
                    expect=expect, **part)


def mesh_tokenizer(name: str, folder: str, steps: Mapping[str, int], summarise: Callable[[Path], dict[str, Any]], *,
                   options: tuple[str, ...] = (), fit_extra: tuple[str, ...] = (), resolution: int = 32,
                   expect: str = MESH_EXPECT, **part: Any) -> DemoPart:
    """Fit on the meshes, reconstruct three held-out meshes (``summarise`` turns the output folder into the
    stage's pictures and metrics), evaluate at ``resolution``; the best training-set sphere is the baseline."""

    def reconstruct(run: Run) -> dict[str, Any]:
        out, _ = reconstruct_held_out(run, name, "meshes", {"ply"}, 3, ("--resolution", str(resolution), *options))
        return {"out": str(out), **summarise(out)}

    def baseline(run: Run) -> dict[str, Any]:
        from tokenforge.baselines import sphere_baseline

        metrics = sphere_baseline(run.result("data/meshes")["shards"], run.path("baselines", "sphere"),
                                  resolution=resolution)
        return {"baseline": f"{BASELINE_NAMES['mesh']} (radius {metrics['radius']})", "metrics": headline(metrics)}

    stages = (fit_stage(name, folder, "meshes", with_val=False, extra=fit_extra),
              (f"{name}/reconstruct", reconstruct, (f"{name}/fit",)),
              evaluate_stage(name, "tokenizer", "data/meshes", "shards", resolution=resolution))
    return DemoPart(name, "mesh", folder, ("meshes",), stages, steps,
                    baseline=((f"{name}/baseline", baseline, ("data/meshes",)), leaderboard_stage("mesh")),
                    expect=expect, **part)


def encode_stage(tokenizer: str, size: int, latents: bool = False) -> Stage:
    """``encode/<tokenizer>``: the labelled faces at ``size`` px as token (or latent) shards of the fitted
    tokenizer, the generators' training data; parts that list the same stage share it."""
    return (f"encode/{tokenizer}", encode(tokenizer, f"faces_{tokenizer}", size, latents=latents),
            (f"{tokenizer}/fit", "data/faces"))


def entropy_baseline(name: str, tokens: str) -> Stage:
    """The unigram entropy of the training tokens (computed by the ``tokens`` encode stage): the NLL a token
    generator must beat."""

    def baseline(run: Run) -> dict[str, Any]:
        found = run.result(tokens)
        return {"baseline": BASELINE_NAMES["tokens"],
                "metrics": {"nll_nats_per_token": found["unigram_entropy_nats"]}}

    return f"{name}/baseline", baseline, (tokens,)


def flow_baseline(name: str, tokens: str) -> Stage:
    """The flow loss of predicting zero velocity, with the fitted generator's noise schedule."""

    def baseline(run: Run) -> dict[str, Any]:
        from tokenforge.baselines import zero_prediction_loss

        metrics = zero_prediction_loss(run.result(f"{name}/fit")["checkpoint"], run.result(tokens)["tokens"],
                                       run.path("baselines", f"{name}_zero_velocity"), device=run.device)
        return {"baseline": BASELINE_NAMES["flow"], "metrics": headline(metrics)}

    return f"{name}/baseline", baseline, (f"{name}/fit",)


def token_generator(name: str, folder: str, label: str, steps: Mapping[str, int], tokens: Stage, *,
                    options: tuple[str, ...] = (), baseline: Callable[[str, str], Stage] = entropy_baseline,
                    **part: Any) -> DemoPart:
    """Fit on the ``tokens`` stage's shards of the faces, sample 8 (classes 0, 1) with ``tokenforge generate`` and
    the part's ``options``, evaluate the held-out NLL / loss; ``part`` names the tokenizer in ``requires``."""
    shards = tokens[0]

    def fit_(run: Run) -> dict[str, Any]:
        found = run.result(shards)["tokens"]
        return fit(run, name, folder, found, found)

    def generate(run: Run) -> dict[str, Any]:
        out = run.path("samples", name)
        check(verb("generate", ["--model", run.result(f"{name}/fit")["checkpoint"], "--tokens",
                                run.result(shards)["tokens"], "--n", "8", "--class", "0", "1", "--seed", "0",
                                "--device", run.device, "--out", str(out), "--no-progress", *options]),
              f"{name} generate")
        samples = sorted(str(p) for p in out.glob("sample_*.png"))
        return {"out": str(out), "samples": samples, "grid": str(out / "grid.png") if (out / "grid.png").exists()
                else None, "labels": json.loads((out / "labels.json").read_text())}

    stages = (tokens, (f"{name}/fit", fit_, (shards,)), (f"{name}/generate", generate, (f"{name}/fit",)),
              evaluate_stage(name, "generator", shards, "tokens"))
    return DemoPart(name, label, folder, ("faces",), stages, steps, baseline=(baseline(name, shards),), **part)


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


def token_ids(folder: Path, split: str) -> Any:
    """Every id of ``split``'s token shards in ``folder``, flattened (padding -1 included)."""
    import glob

    import torch
    import webdataset as wds

    from tokenforge.data.tokens import Decoder

    decode = Decoder()
    tars = sorted(glob.glob(str(folder / f"{split}-*.tar")))
    return torch.cat([decode(s)["ids"].flatten() for s in wds.WebDataset(tars, shardshuffle=False)])


def token_statistics(folder: Path) -> dict[str, Any]:
    """Unigram entropy (nats) and codes used in the train split: the baseline a generator's NLL must beat."""
    import torch

    ids = token_ids(folder, "train")
    counts = torch.bincount(ids[ids >= 0]).double()
    p = counts[counts > 0] / counts.sum()
    return {"unigram_entropy_nats": round(float(-(p * p.log()).sum()), 4), "codes_used": int((counts > 0).sum())}


def token_histogram(folder: Path, split: str, vocab: int) -> Any:
    """Relative frequency of each id in ``split``'s token shards."""
    import torch

    ids = token_ids(folder, split)
    counts = torch.bincount(ids[(ids >= 0) & (ids < vocab)], minlength=vocab).double()
    return counts / counts.sum()
