"""`tokenforge evaluate --models A B C ... --shards S`: several tokenizers of one modality on the same held-out
shards -> one leaderboard (``leaderboard.json``, ``.md``, ``.csv`` and the page ``leaderboard.html``).

    tokenforge evaluate --models [LABEL=]MODEL ... --shards DIR [--split val] [--out DIR] [--device cpu]
                        [--max-items N] [--image-size N [N ...]] [--lpips-weights F] [--fid-weights F]

Each model is scored by `tokenforge.evaluate.evaluate_tokenizer` (its ``metrics.json`` lands in
``OUT/models/<label>/``), so a row holds exactly the numbers the single-model ``evaluate --model`` gives. A row
puts quality beside size: ``codes per item x bits per code / 8`` bytes per item, where an item is an image, a
second of audio or a shape, and a code is a discrete id (``log2(vocab)`` bits) or a continuous latent value (16
bits, float16 as token shards store it). Columns carry their protocol's name:

- image: PSNR (8-bit), SSIM as the reference implementations compute it and as LlamaGen does (both labelled),
  LPIPS and rFID when their weights are present;
- audio: mel and multi-resolution STFT distances, PESQ-WB, STOI, DNSMOS, UTMOS, SI-SNR;
- mesh: Chamfer distance, F-score at several thresholds, volume IoU.

A metric that cannot be computed here shows its ``"unavailable: ..."`` line (what to put where) instead of a
number. Models of different modalities, or generators, are refused in one line: one leaderboard compares one
kind of item. ``--image-size`` gives one side for every model or one per model (a tokenizer trained at its own
size); the row records the side it was scored at.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenforge.errors import EXIT_USAGE, UsageError, exit_code_for
from tokenforge.failure import one_line

MODALITIES = ("image", "audio", "mesh")
UNITS = {"image": "image", "audio": "second of audio", "mesh": "shape"}


@dataclass(frozen=True)
class Column:
    """One quality column: ``key`` in metrics.json (a ``{mean, std, n}`` dict, a reason, or a dict of those that
    expands to one column per entry), its label, the protocol it follows, and which way is better."""

    key: str
    label: str
    protocol: str
    higher_is_better: bool


COLUMNS: dict[str, tuple[Column, ...]] = {
    "image": (
        Column("psnr_db", "PSNR (dB)", "8-bit images, mean over images (tokenforge.metrics.image.psnr)", True),
        Column("ssim", "SSIM (reference)", "Wang et al. 2004 as scikit-image and torchmetrics compute it: 8-bit "
               "images, Gaussian sigma 1.5, population covariance", True),
        Column("ssim_variants", "SSIM", "tokenforge.metrics.image.ssim(variant=...): SSIM as that evaluation script "
               "computes it (docs/metrics.md); never compare it with the reference value", True),
        Column("lpips", "LPIPS", "LPIPS VGG v0.1 from local weights", False),
        Column("rfid", "rFID", "Frechet Inception distance of real vs reconstructed held-out images under "
               "--fid-protocol (the row records its name and hashes)", False)),
    "audio": (
        Column("mel_distance", "mel distance", "L1 of log-mel spectrograms (100 mels, n_fft 1024, hop 256)", False),
        Column("stft_distance", "STFT distance", "multi-resolution STFT (512/1024/2048): spectral convergence + "
               "log magnitude", False),
        Column("pesq", "PESQ-WB", "wideband PESQ at 16 kHz (pesq package)", True),
        Column("stoi", "STOI", "STOI at the native rate (pystoi, extended=False)", True),
        Column("dnsmos", "DNSMOS", "DNSMOS P.835 SIG/BAK/OVRL and P.808 MOS from sha256-checked ONNX weights "
               "(tokenforge.metrics.dnsmos)", True),
        Column("utmos", "UTMOS", "UTMOS from a local TorchScript predictor (tokenforge.metrics.utmos)", True),
        Column("si_snr_db", "SI-SNR (dB)", "scale-invariant SNR of zero-mean signals", True)),
    "mesh": (
        Column("chamfer", "Chamfer", "mean NN distance both ways, not squared, [-1, 1]^3 frame", False),
        Column("f_score_at", "F-score", "F-score at threshold tau, [-1, 1]^3 frame", True),
        Column("iou", "IoU", "volume IoU of the decoded occupancy on the shard's queries", True)),
}


# ----------------------------------------------------------------------------- rows


def parse_model(entry: str) -> tuple[str, str]:
    """``LABEL=MODEL`` or ``MODEL`` -> (label, model); the label defaults to the model argument itself."""
    label, sep, model = entry.partition("=")
    if sep and label and model and "/" not in label:
        return label, model
    return entry, entry


def slug(label: str) -> str:
    """A label as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or "model"


VALUE_KEYS = ("mean", "fid")  # where a result dict keeps its number: {mean, std, n}, a FID protocol's record


def unavailable_line(text: str) -> str:
    """A metric's reason as its cell shows it: ``"dnsmos unavailable: put ..."`` -> ``"unavailable: put ..."`` (the
    column names the metric); other text ("skipped: ...") as it is."""
    at = text.find("unavailable:")
    return text[at:] if at >= 0 else text


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        value = next((value[k] for k in VALUE_KEYS if k in value), None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def cells(modality: str, metrics: dict[str, Any], reasons: dict[str, str]) -> dict[str, Any]:
    """``{column key: number or reason}`` of one model's metrics.json; a dict-of-results column expands to
    ``key/sub`` entries (DNSMOS' scores, the F-score per threshold); ``reasons`` replace "skipped" entries."""
    out: dict[str, Any] = {}
    for column in COLUMNS[modality]:
        value = metrics.get(column.key)
        if isinstance(value, str) and value.startswith("skipped") and column.key in reasons:
            value = reasons[column.key]
        if isinstance(value, dict) and not any(k in value for k in VALUE_KEYS):  # per key results (+ provenance)
            for sub, entry in value.items():
                if isinstance(entry, dict) and "mean" in entry:
                    number = _number(entry)
                    out[f"{column.key}/{sub}"] = number if number is not None else "no value: no item could be scored"
        elif value is None:
            out[column.key] = f"unavailable: this evaluation records no {column.key}"
        elif isinstance(value, str):
            out[column.key] = unavailable_line(value)
        else:
            number = _number(value)
            out[column.key] = number if number is not None else "no value: no item could be scored"
    return out


def recorded_protocols(modality: str, metrics: dict[str, Any]) -> dict[str, str]:
    """The protocol names a model's results recorded themselves (a FID protocol, DNSMOS' model), by column."""
    found = {}
    for column in COLUMNS[modality]:
        value = metrics.get(f"{column.key}_protocol") or metrics.get(column.key)  # rfid_protocol: FID's record
        name = (value.get("protocol") or value.get("metric")) if isinstance(value, dict) else None
        if isinstance(name, str):
            found[column.key] = name
    return found


def row(label: str, model: str, modality: str, metrics: dict[str, Any], reasons: dict[str, str]) -> dict[str, Any]:
    """One leaderboard row: who, how big its codes are, its quality cells and the protocols they recorded."""
    protocol = metrics["protocol"]
    codes = metrics.get("tokens_per_second" if modality == "audio" else "tokens_per_item")
    bits_per_code = protocol.get("bits_per_code")
    bits = codes * bits_per_code if codes is not None and bits_per_code is not None else None
    found = {"model": label, "path": model, "class": protocol.get("class"), "method": protocol.get("method"),
             "vocab_size": protocol.get("vocab_size"), "codes_per_item": codes, "bits_per_code": bits_per_code,
             "bits_per_item": bits, "bytes_per_item": None if bits is None else bits / 8,
             "n_items": protocol.get("n_items"), "seconds": protocol.get("seconds"),
             "cells": cells(modality, metrics, reasons), "protocols": recorded_protocols(modality, metrics)}
    if modality == "image":
        found["image_size"] = protocol["sizes"]["image"][-1]
    return found


def columns_of(modality: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's columns in `COLUMNS` order, expanded as the rows' cells are (``f_score_at/0.01``...)."""
    keys = [key for r in rows for key in r.get("cells", {})]
    out = []
    for column in COLUMNS[modality]:
        subs = list(dict.fromkeys(k for k in keys if k.startswith(column.key + "/")))
        for key in subs or [column.key]:
            sub = key.split("/", 1)[1] if "/" in key else ""
            label = (f"{column.label}@{sub}" if column.key == "f_score_at" else f"{column.label} ({sub})") if sub \
                else column.label
            out.append({**asdict(column), "key": key, "label": label.strip()})
    return out


# ----------------------------------------------------------------------------- evaluation


def _load_all(entries: list[str]) -> list[tuple[str, str, Any]]:
    """(label, model argument, module on the CPU) of every entry; labels must differ."""
    from tokenforge.evaluate_protocol import load_model

    loaded = []
    for entry in entries:
        label, model = parse_model(entry)
        try:
            module = load_model(model, "cpu")
        except (FileNotFoundError, ValueError, KeyError) as error:
            raise UsageError(f"--models {model}: {one_line(error)}") from error
        loaded.append((label, model, module))
    labels = [label for label, _, _ in loaded]
    if len(set(labels)) != len(labels):
        raise UsageError(f"--models gives the label(s) {sorted({x for x in labels if labels.count(x) > 1})} twice; "
                         "name each model LABEL=MODEL")
    return loaded


def modality_of(loaded: list[tuple[str, str, Any]]) -> str:
    """The one modality of the loaded tokenizers; `UsageError` for a generator or a mix of modalities."""
    found = {label: getattr(module, "modality", None) for label, _, module in loaded}
    others = [f"{label} ({found[label] or type(module).__name__})" for label, _, module in loaded
              if found[label] not in MODALITIES]
    if others:
        raise UsageError(f"--models takes tokenizers of images, audio or meshes; not {', '.join(others)}")
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{label} is {modality}" for label, modality in found.items())
        raise UsageError(f"--models mixes modalities ({listed}); a leaderboard compares one modality: run one "
                         "`tokenforge evaluate --models ...` per modality")
    return next(iter(found.values()))


def weight_reasons(modality: str, opts: dict[str, Any]) -> dict[str, str]:
    """Fill ``opts``' LPIPS / FID weight paths from ``$TOKENFORGE_HOME`` where possible; the columns whose weights
    are missing -> their "unavailable: ..." line."""
    from tokenforge.metrics.fid_protocols import protocol
    from tokenforge.metrics.weight_files import LPIPS_VGG16_TRUNK, LPIPS_VGG_HEADS
    from tokenforge.metrics.weights import WeightsUnavailable, locate

    if modality != "image":
        return {}
    reasons: dict[str, str] = {}
    for column, key, weight in (("lpips", "lpips_weights", LPIPS_VGG16_TRUNK),
                                ("lpips", "lpips_lin_weights", LPIPS_VGG_HEADS),
                                ("rfid", "fid_weights", protocol(opts.get("fid_protocol") or "pytorch-fid").weights)):
        if opts.get(key):  # a file given on the command line is used as it is
            continue
        try:
            opts[key] = str(locate(weight))
        except WeightsUnavailable as error:
            reasons.setdefault(column, unavailable_line(str(error)))
    if "lpips" not in reasons:  # files that are there but do not load: the column says so, the rows still run
        from tokenforge.metrics.image import LPIPSMetric

        try:
            LPIPSMetric(opts["lpips_weights"], opts["lpips_lin_weights"])
        except Exception as error:  # noqa: BLE001 - any loading failure becomes the column's reason
            reasons["lpips"] = f"unavailable: the LPIPS weights do not load: {one_line(error)}"
    if "lpips" in reasons:  # both LPIPS files or neither
        opts["lpips_weights"] = opts["lpips_lin_weights"] = None
    return reasons


def evaluate_models(models: list[str], shards: str | Path, out: str | Path, *, image_sizes: list[int] | None = None,
                    split: str = "val", batch_size: int = 8, device: str = "cpu", max_items: int | None = None,
                    progress: bool = True, **opts: Any) -> dict[str, Any]:
    """Evaluate every model (``[LABEL=]MODEL``) on ``shards``; write the leaderboard files into ``out``; return the
    table (``leaderboard.json``'s content). ``opts``: lpips_weights, lpips_lin_weights, fid_weights, resolution,
    taus, seed (as `tokenforge.evaluate.evaluate_tokenizer` takes them)."""
    from tokenforge.evaluate import evaluate_tokenizer
    from tokenforge.evaluate_protocol import check_modality
    from tokenforge.leaderboard_page import write_page
    from tokenforge.methods import method_of

    if not models:
        raise UsageError("--models needs at least one model")
    loaded = _load_all(models)
    modality = modality_of(loaded)
    try:
        check_modality(shards, modality, f"--models ({modality} tokenizers)")
    except ValueError as error:
        raise UsageError(str(error)) from error
    sizes = list(image_sizes or [256])
    if len(sizes) not in (1, len(loaded)):
        raise UsageError(f"--image-size takes one side or one per model ({len(loaded)}), got {len(sizes)}")
    sizes = sizes * len(loaded) if len(sizes) == 1 else sizes
    reasons = weight_reasons(modality, opts)
    out = Path(out)
    rows = []
    for (label, model, module), size in zip(loaded, sizes):
        try:
            metrics = evaluate_tokenizer(module.to(device), shards, out / "models" / slug(label), split=split,
                                         batch_size=batch_size, device=device, max_items=max_items,
                                         progress=progress, image_size=size, dnsmos=True, **opts)
        except (ValueError, RuntimeError) as error:  # one model failing leaves the others' rows
            rows.append({"model": label, "path": model, "error": one_line(error), "cells": {}})
            print(f"tokenforge evaluate: {label}: {one_line(error)}", file=sys.stderr)
            continue
        finally:
            module.to("cpu")
        method = method_of(f"{type(module).__module__}.{type(module).__qualname__}")
        metrics["protocol"]["method"] = method.name if method else None
        rows.append(row(label, model, modality, metrics, reasons))
    table = {"modality": modality, "unit": UNITS[modality], "shards": str(shards), "split": split,
             "max_items": max_items, "device": device, "columns": columns_of(modality, rows), "rows": rows}
    write_tables(table, out)
    write_page([table], out / "leaderboard.html")
    return table


# ----------------------------------------------------------------------------- files


def _shown(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def flat_rows(table: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the table as plain cells (model, method, bytes, then every quality column)."""
    size = ["image_size"] if table["modality"] == "image" else []
    header = ["model", "method", *size, "codes_per_item", "bits_per_code", "bytes_per_item",
              *[c["key"] for c in table["columns"]]]
    body = []
    for r in table["rows"]:
        if "error" in r:
            body.append([r["model"], "", *[""] * len(size), "", "", "", *[f"failed: {r['error']}"] * len(
                table["columns"])])
            continue
        body.append([r["model"], r.get("method") or r.get("class"), *[r.get(k) for k in size], r["codes_per_item"],
                     r["bits_per_code"], r["bytes_per_item"], *[r["cells"].get(c["key"]) for c in table["columns"]]])
    return header, body


def markdown(table: dict[str, Any]) -> str:
    """The table as Markdown, then each column's protocol."""
    header, body = flat_rows(table)
    labels = {c["key"]: f"{c['label']} {'↑' if c['higher_is_better'] else '↓'}" for c in table["columns"]}
    unit = table["unit"]
    names = {"bytes_per_item": f"bytes per {unit}", "codes_per_item": f"codes per {unit}",
             "bits_per_code": "bits per code", "image_size": "image side"}
    lines = [f"Leaderboard: {table['modality']} tokenizers on `{table['shards']}` (split {table['split']}), "
             f"bytes per {unit} = codes x bits per code / 8.", "",
             "| " + " | ".join(labels.get(h, names.get(h, h)) for h in header) + " |",
             "|" + "---|" * len(header)]
    notes: dict[str, int] = {}  # a reason instead of a number: its first word in the cell, the line below

    def cell(value: Any) -> str:
        if isinstance(value, str) and ":" in value:
            number = notes.setdefault(value, len(notes) + 1)
            return f"{value.split(':', 1)[0]} [{number}]"
        return _shown(value).replace("|", "/")

    lines += ["| " + " | ".join(cell(v) for v in values) + " |" for values in body]
    lines += ["", *[f"[{n}] {reason}" for reason, n in notes.items()]] if notes else []
    recorded = {c["key"]: sorted({r.get("protocols", {}).get(c["key"].split("/")[0]) for r in table["rows"]} - {None})
                for c in table["columns"]}
    lines += ["", "Protocols:", ""] + [f"- {c['label']}: {c['protocol']}"
                                       + (f" (recorded: {', '.join(recorded[c['key']])})" if recorded[c["key"]] else "")
                                       for c in table["columns"]]
    return "\n".join(lines) + "\n"


def write_tables(table: dict[str, Any], out: Path) -> None:
    """``leaderboard.json``, ``leaderboard.md`` and ``leaderboard.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "leaderboard.md").write_text(markdown(table))
    header, body = flat_rows(table)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in values] for values in body])
    (out / "leaderboard.csv").write_text(text.getvalue())


# ----------------------------------------------------------------------------- command


def command(argv: list[str] | None = None) -> int:
    """`tokenforge evaluate`: the leaderboard (`main`) when ``--models`` is given, else the single-model command
    (`tokenforge.evaluate.main`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(a == "--models" or a.startswith("--models=") for a in argv):
        from tokenforge.evaluate import main as single

        return single(argv)
    if "--model" in argv or any(a.startswith("--model=") for a in argv):
        print("tokenforge evaluate: give --model (one model) or --models (a leaderboard), not both", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return main(argv)


def main(argv: list[str]) -> int:
    """`tokenforge evaluate --models ...`."""
    from tokenforge.devices import resolve_device
    from tokenforge.evaluate import check_shards_arguments
    from tokenforge.metrics.fid_protocols import PROTOCOLS

    parser = argparse.ArgumentParser(prog="tokenforge evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, metavar="[LABEL=]MODEL",
                        help="tokenizers of one modality: folders, fit .ckpt files or names, each optionally LABEL=")
    parser.add_argument("--shards", required=True, type=Path, help="raw shard folder of that modality")
    parser.add_argument("--split", default="val", help="split to evaluate (default val)")
    parser.add_argument("--out", type=Path, default=Path("outputs/leaderboard"), help="folder for the leaderboard")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-items", type=int, default=None, help="evaluate only the first N items")
    parser.add_argument("--image-size", type=int, nargs="+", default=[256],
                        help="image side after centre crop: one for all models or one per model (default 256)")
    parser.add_argument("--lpips-weights", default=None, help="local LPIPS file (default: $TOKENFORGE_HOME/weights)")
    parser.add_argument("--lpips-lin-weights", default=None, help="local LPIPS linear heads (lpips' vgg.pth)")
    parser.add_argument("--fid-weights", default=None, help="local Inception weights for rFID")
    parser.add_argument("--fid-protocol", default="pytorch-fid", choices=sorted(PROTOCOLS),
                        help="named FID protocol of rFID (docs/metrics.md; default pytorch-fid)")
    parser.add_argument("--utmos-weights", default=None, help="local UTMOS TorchScript file (audio)")
    parser.add_argument("--resolution", type=int, default=64, help="mesh extraction grid (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_shards_arguments(args)
        table = evaluate_models(args.models, args.shards, args.out, image_sizes=args.image_size, split=args.split,
                                batch_size=args.batch_size, device=str(resolve_device(args.device)),
                                max_items=args.max_items, progress=not args.no_progress,
                                lpips_weights=args.lpips_weights, lpips_lin_weights=args.lpips_lin_weights,
                                fid_weights=args.fid_weights, fid_protocol=args.fid_protocol,
                                utmos_weights=args.utmos_weights,
                                resolution=args.resolution, seed=args.seed)
    except (UsageError, ValueError, FileNotFoundError, TypeError) as error:
        print(f"tokenforge evaluate: {one_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    print(markdown(table), end="")
    print(f"wrote {args.out / 'leaderboard.json'}, leaderboard.md, leaderboard.csv and leaderboard.html")
    failed = sum("error" in r for r in table["rows"])
    return exit_code_for(failed, len(table["rows"]))
