"""`tokenforge evaluate`: a tokenizer or generator on held-out shards -> ``metrics.json``.

    tokenforge evaluate --model CKPT|DIR|NAME [--official NAME] --shards DIR [--split val]
                        [--kind tokenizer|generator] [--out DIR] [--device cpu] [--max-items N]
                        [--lpips-weights F] [--fid-weights F] [--fid-protocol pytorch-fid|clean-fid|...]
    tokenforge evaluate --models [LABEL=]MODEL ... --shards DIR    # a leaderboard: tokenforge.leaderboard

``--model`` as every verb takes it: a fit checkpoint, a saved folder or a name, or with ``--official NAME`` the
file or folder of that official release (``--official-config``, ``--trust-pickle``).

Tokenizers (raw shards of the tokenizer's modality, decoded without augmentation, in shard order):
- image: centre crop to ``image_size`` (default 256), encode/decode, PSNR and SSIM per image (8-bit, see
  `tokenforge.metrics.image`) as mean/std, SSIM also under its other labelled variants (``ssim_variants``:
  LlamaGen's data_range 2.0 on [0, 1]); LPIPS with ``lpips_weights`` and rFID (real vs reconstructed) with
  ``fid_weights``, otherwise ``"skipped: no weights"``.
- audio: whole clips at the model's sample rate (one clip per batch: clips differ in length), mel distance,
  multi-resolution STFT distance, SI-SNR, PESQ-WB, STOI (`tokenforge.metrics.audio`), tokens and bytes per
  second; with ``dnsmos`` (``--dnsmos``; seconds of CPU per clip) DNSMOS or why it is unavailable.
- mesh: surface points (with normals where the tokenizer takes them) -> tokens -> a decoded field; IoU of the
  decoded occupancy on the shard's stored queries (volume + near-surface), and Chamfer / F-score between the
  stored surface points and points sampled on the marching-cubes surface at ``resolution`` (default 64; NaN and
  counted when the field has no surface); the F-score also at each of ``taus`` (``f_score_at``, default
  `F_SCORE_TAUS`).
Bytes per item: discrete ids packed at ceil(log2 vocab) bits; a tokenizer with only continuous latents is
counted at 16 bits per latent value (float16, as token shards store them).

Generators (token shards, ``ids``/``latents``): every generator scores itself with one method,
``nll(batch, seed=...) -> (summed loss, count)`` (`tokenforge.generators.base.HeldOutLoss`; the seed is ``seed +
batch index``, so stochastic estimates repeat), and says how: ``nll_metric`` (``nll_nats_per_token``, or ``loss``
for a continuous generator's training loss, which is no likelihood), ``nll_options`` (e.g. a mask ratio),
``nll_protocol`` and ``nll_note``. A generator that ``needs_tokenizer`` (its quantizer feeds the next scale) gets
the one named in the token manifest, or ``tokenizer=``. NLL is reported as nats/token and bits/token, averaged
over all tokens. FID of generated samples needs ``fid_weights`` and ``reference`` (raw image shards);
otherwise it is ``"skipped: ..."``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tokenforge.devices import resolve_device
from tokenforge.errors import EXIT_USAGE, UsageError
from tokenforge.evaluate_generators import evaluate_generator
from tokenforge.evaluate_protocol import SKIPPED, batches, check_modality, finish, limited, load_model
from tokenforge.failure import one_line
from tokenforge.metrics.fid_protocols import PROTOCOLS
from tokenforge.metrics.image import SSIM_VARIANTS, FIDMetric, LPIPSMetric, mean_std, psnr, ssim
from tokenforge.metrics.weights import WeightsUnavailable
from tokenforge.model_spec import add_model_arguments
from tokenforge.model_spec import load_model as load_model_arg

# ----------------------------------------------------------------------------- loading


def infer_kind(model: nn.Module) -> str:
    from tokenforge.generators.base import Generator
    from tokenforge.tokenizers.base import Tokenizer

    if isinstance(model, Tokenizer) or getattr(model, "modality", None) in ("image", "audio", "mesh"):
        return "tokenizer"
    if isinstance(model, Generator):
        return "generator"
    raise TypeError(f"{type(model).__name__} is neither a tokenizer nor a generator; pass --kind")


def has_ids(tokens: Any) -> bool:
    """Discrete ids present (continuous tokenizers may return an empty ``[B, 0]`` ids tensor)."""
    ids = tokens.ids
    return ids is not None and (isinstance(ids, (list, tuple)) or ids.numel() > 0)


def ids_per_item(tokens: Any) -> list[int]:
    """Number of token values per batch item (ids if any, else latent values)."""
    ids = tokens.ids if has_ids(tokens) else tokens.latents
    if isinstance(ids, (list, tuple)):
        sizes = [sum(int(t[i].numel()) for t in ids) for i in range(len(ids[0]))]
    else:
        sizes = [int(ids[i].numel()) for i in range(len(ids))]
    if tokens.lengths is not None and has_ids(tokens) and not isinstance(ids, (list, tuple)):
        sizes = [int(n) for n in tokens.lengths]
    return sizes


def bits_per_token(model: nn.Module, tokens: Any) -> int:
    if not has_ids(tokens):
        return 16  # continuous latents, counted as float16
    return max(1, math.ceil(math.log2(int(model.vocab_size))))


def code_bits(model: nn.Module, tokens: Any) -> float:
    """Information per code: ``log2(vocab)`` bits for a discrete id, 16 for a continuous latent value (float16);
    the leaderboard's bytes per item are codes x this / 8 (``bytes_per_item`` here packs ids at whole bits)."""
    return 16.0 if not has_ids(tokens) else math.log2(max(2, int(model.vocab_size)))


# ----------------------------------------------------------------------------- tokenizers

F_SCORE_TAUS = (0.01, 0.02, 0.05)  # mesh F-score thresholds, [-1, 1]^3 frame: 1 %, 2 % (3DShape2VecSet), 5 %


@torch.no_grad()
def evaluate_tokenizer(model: nn.Module | str, shards: str | Path, out_dir: str | Path, *, split: str = "val",
                       batch_size: int = 8, device: str = "cpu", max_items: int | None = None,
                       **opts: Any) -> dict[str, Any]:
    """Reconstruction metrics of a tokenizer on held-out raw shards; writes and returns ``metrics.json``.

    ``opts``: image_size, lpips_weights, lpips_lin_weights, fid_weights (images); dnsmos, utmos_weights (audio);
    num_points, num_queries, resolution, taus (meshes); progress (default True).
    """
    started = time.perf_counter()
    name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    model = load_model(model, device)
    modality = getattr(model, "modality", None)
    if modality not in ("image", "audio", "mesh"):
        raise ValueError(f"{type(model).__name__} has modality {modality!r}; evaluate_tokenizer handles image, "
                         "audio and mesh tokenizers")
    check_modality(shards, modality, f"a {modality} tokenizer")
    protocol = {"kind": "tokenizer", "model": name, "class": type(model).__name__, "modality": modality,
                "shards": str(shards), "split": split, "device": device, "batch_size": batch_size,
                "max_items": max_items, "vocab_size": int(getattr(model, "vocab_size", 0) or 0)}
    run = {"image": _images, "audio": _audio, "mesh": _meshes}[modality]
    metrics = run(model, shards, split, batch_size, device, max_items, protocol, dict(opts))
    return finish(out_dir, {"protocol": protocol, **metrics}, started)


def _images(model, shards, split, batch_size, device, max_items, protocol, opts) -> dict[str, Any]:
    size = int(opts.get("image_size") or 256)
    progress = opts.get("progress", True)
    lpips = (LPIPSMetric(opts["lpips_weights"], opts.get("lpips_lin_weights"), device)
             if opts.get("lpips_weights") else None)
    fid, fid_note = None, SKIPPED
    if opts.get("fid_weights"):
        try:
            fid = FIDMetric(opts["fid_weights"], device, protocol=opts.get("fid_protocol") or "pytorch-fid")
        except (ImportError, WeightsUnavailable) as error:
            fid_note = f"skipped: {error}"
    values: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": [], "tokens": [], "bytes": []}
    variants: dict[str, list[float]] = {v: [] for v in SSIM_VARIANTS[1:]}  # SSIM as other evaluations compute it
    loader = batches(shards, split, "image", batch_size, image_size=size, random_crop=False, hflip=False)
    for batch in limited(loader, max_items, "evaluate images", progress):
        x = batch["image"].to(device)
        tokens = model.encode(x)
        x_hat = model.decode(tokens).float()
        values["psnr"] += psnr(x_hat, x)
        values["ssim"] += ssim(x_hat, x)
        for variant, found in variants.items():
            found += ssim(x_hat, x, variant=variant)
        if lpips is not None:
            values["lpips"] += lpips(x_hat, x)
        if fid is not None:
            fid.update(x, real=True)
            fid.update(x_hat, real=False)
        per = ids_per_item(tokens)
        protocol["bits_per_code"] = code_bits(model, tokens)
        values["tokens"] += per
        values["bytes"] += [n * bits_per_token(model, tokens) / 8 for n in per]
    rfid = fid.result() if fid is not None and len(values["psnr"]) > 1 else None  # value + protocol and hashes
    protocol.update(n_items=len(values["psnr"]), sizes={"image": [3, size, size]},
                    weights={"lpips": opts.get("lpips_weights"), "fid": opts.get("fid_weights")})
    return {"psnr_db": mean_std(values["psnr"]), "ssim": mean_std(values["ssim"]),
            "ssim_variants": {variant: mean_std(found) for variant, found in variants.items()},
            "lpips": mean_std(values["lpips"]) if lpips is not None else SKIPPED,
            "rfid": rfid.pop("fid") if rfid else fid_note, "rfid_protocol": rfid,
            "tokens_per_item": float(np.mean(values["tokens"])) if values["tokens"] else None,
            "bytes_per_item": float(np.mean(values["bytes"])) if values["bytes"] else None,
            "per_item": {"psnr_db": values["psnr"], "ssim": values["ssim"]}}


def _audio(model, shards, split, batch_size, device, max_items, protocol, opts) -> dict[str, Any]:
    from tokenforge.metrics.audio import mel_distance, metric_rates, pesq_stoi, si_snr, stft_distance
    from tokenforge.metrics.dnsmos import DNSMOSMeter
    from tokenforge.metrics.utmos import UTMOSMeter

    rate = int(getattr(model, "sample_rate", opts.get("sample_rate") or 24000))
    values: dict[str, list[float]] = {k: [] for k in ("mel", "stft", "si_snr", "pesq", "stoi", "seconds", "bytes",
                                                      "tokens")}
    dnsmos = DNSMOSMeter() if opts.get("dnsmos") else None  # seconds of CPU per clip: when asked (the leaderboard)
    utmos = UTMOSMeter(opts.get("utmos_weights"))  # "utmos unavailable: put ..." without a local checkpoint
    # whole clips differ in length, so one clip per batch
    loader = batches(shards, split, "audio", 1, sample_rate=rate, segment_samples=None)
    for batch in limited(loader, max_items, "evaluate audio", opts.get("progress", True)):
        x = batch["audio"].to(device).float()
        tokens = model.encode(x)
        x_hat = model.decode(tokens).float().reshape(len(x), -1)
        values["mel"].append(float(mel_distance(x_hat, x, rate)))
        values["stft"].append(float(stft_distance(x_hat, x)))
        values["si_snr"].append(float(si_snr(x_hat, x)))
        scores = pesq_stoi(x_hat.cpu(), x.cpu(), rate)
        for key in ("pesq", "stoi"):
            values[key].append(scores.get(key, float("nan")))
        seconds = x.shape[-1] / rate
        values["seconds"].append(seconds)
        utmos.update(x_hat[0], rate)
        values["bytes"].append(ids_per_item(tokens)[0] * bits_per_token(model, tokens) / 8 / seconds)
        values["tokens"].append(ids_per_item(tokens)[0] / seconds)
        protocol["bits_per_code"] = code_bits(model, tokens)
        if dnsmos is not None:
            dnsmos.update(x_hat[0], rate)
    protocol["metric_rates"] = metric_rates(rate)  # the rate (Hz) each metric is computed at
    protocol.update(n_items=len(values["mel"]), sizes={"sample_rate": rate, "seconds_total": sum(values["seconds"])},
                    weights={})
    return {"mel_distance": mean_std(values["mel"]), "stft_distance": mean_std(values["stft"]),
            "si_snr_db": mean_std(values["si_snr"]), "pesq": mean_std(values["pesq"]),
            "stoi": mean_std(values["stoi"]), "utmos": utmos.result(),
            "dnsmos": dnsmos.result() if dnsmos is not None else "skipped: not asked for (--dnsmos)",
            "tokens_per_second": float(np.mean(values["tokens"])) if values["tokens"] else None,
            "bytes_per_second": float(np.mean(values["bytes"])) if values["bytes"] else None}


def mesh_points(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """A mesh batch's surface points as the tokenizer encodes them: ``[B, N, 6]`` with normals, or ``[B, N, 3]``
    for a tokenizer whose ``use_normals`` is False (the mesh tokenizer contract, `tokenforge.mesh_files`)."""
    if not getattr(model, "use_normals", True):
        return batch["points"]
    if "normals" not in batch:
        raise ValueError(f"{type(model).__name__} encodes surface normals, but the mesh shards hold none; make the "
                         "shards again with `tokenforge shards make meshes`")
    return torch.cat([batch["points"], batch["normals"]], dim=-1)


def _meshes(model, shards, split, batch_size, device, max_items, protocol, opts) -> dict[str, Any]:
    import trimesh

    from tokenforge.mesh_files import field_to_mesh
    from tokenforge.metrics.mesh import DEFAULT_TAU, chamfer_distance, f_score, occupancy_iou

    points, queries = int(opts.get("num_points") or 2048), int(opts.get("num_queries") or 2048)
    resolution, tau = int(opts.get("resolution") or 64), float(opts.get("tau") or DEFAULT_TAU)
    taus = [float(t) for t in (opts.get("taus") or F_SCORE_TAUS)]
    values: dict[str, list[float]] = {k: [] for k in ("iou", "chamfer", "f_score", "bytes", "tokens")}
    at_taus: dict[float, list[float]] = {t: [] for t in taus}
    no_surface = 0
    loader = batches(shards, split, "mesh", batch_size, num_points=points, num_queries=queries)
    for batch in limited(loader, max_items, "evaluate meshes", opts.get("progress", True)):
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        tokens = model.encode(mesh_points(model, batch))
        planes = model.decode(tokens)
        logits = model.occupancy(planes, batch["queries"])
        values["iou"] += [float(v) for v in occupancy_iou(logits >= 0, batch["occupancy"] > 0.5)]
        for i in range(len(logits)):
            try:
                rec = field_to_mesh(model, planes[i:i + 1], resolution)
                rec_pts = trimesh.sample.sample_surface(rec, len(batch["points"][i]), seed=np.random.default_rng(i))[0]
                values["chamfer"].append(chamfer_distance(rec_pts, batch["points"][i]))
                scores = f_score(rec_pts, batch["points"][i], [tau, *taus])
                values["f_score"].append(float(scores[0]))
            except ValueError:
                no_surface += 1
                values["chamfer"].append(float("nan"))
                values["f_score"].append(0.0)
                scores = [0.0] * (len(taus) + 1)
            for t, score in zip(taus, scores[1:]):
                at_taus[t].append(float(score))
        per = ids_per_item(tokens)
        protocol["bits_per_code"] = code_bits(model, tokens)
        values["tokens"] += per
        values["bytes"] += [math.ceil(n * bits_per_token(model, tokens) / 8) for n in per]
    protocol.update(n_items=len(values["iou"]), sizes={"points": points, "queries": queries,
                                                       "resolution": resolution, "tau": tau, "taus": taus},
                    weights={})
    return {"iou": mean_std(values["iou"]), "chamfer": mean_std(values["chamfer"]),
            "f_score": mean_std(values["f_score"]), "no_surface": no_surface,
            "f_score_at": {f"{t:g}": mean_std(at_taus[t]) for t in taus},
            "tokens_per_item": float(np.mean(values["tokens"])) if values["tokens"] else None,
            "bytes_per_item": float(np.mean(values["bytes"])) if values["bytes"] else None}


# ----------------------------------------------------------------------------- command


def check_shards_arguments(args: argparse.Namespace) -> None:
    """The checks every evaluate form makes on ``--shards`` and ``--max-items`` (one line each)."""
    if not args.shards.exists():
        raise UsageError(f"--shards {args.shards} does not exist; point it at a shard folder")
    if args.max_items is not None and args.max_items < 1:
        raise UsageError(f"--max-items must be >= 1 (got {args.max_items})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, "tokenizer or generator")
    parser.add_argument("--shards", required=True, type=Path, help="shard folder (raw shards for tokenizers, "
                        "token shards for generators)")
    parser.add_argument("--split", default="val", help="split to evaluate (default val)")
    parser.add_argument("--kind", choices=("tokenizer", "generator"), default=None, help="default: inferred")
    parser.add_argument("--out", type=Path, default=Path("outputs/evaluate"), help="folder for metrics.json")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-items", type=int, default=None, help="evaluate only the first N items")
    parser.add_argument("--image-size", type=int, default=256, help="image side after centre crop (default 256)")
    parser.add_argument("--lpips-weights", default=None, help="local LPIPS file (VGG trunk, or trunk + heads)")
    parser.add_argument("--lpips-lin-weights", default=None, help="local LPIPS linear heads (lpips' vgg.pth)")
    parser.add_argument("--fid-weights", default=None, help="local Inception weights for FID / rFID")
    parser.add_argument("--fid-protocol", default="pytorch-fid", choices=sorted(PROTOCOLS),
                        help="named FID protocol (docs/metrics.md; default pytorch-fid)")
    parser.add_argument("--utmos-weights", default=None,
                        help="local UTMOS TorchScript file (audio; default $TOKENFORGE_HOME/weights/utmos.pt)")
    parser.add_argument("--reference", default=None, help="raw image shards: the real set of a generator's FID")
    parser.add_argument("--tokenizer", default=None, help="generator's tokenizer (default: the token manifest's)")
    parser.add_argument("--resolution", type=int, default=64, help="mesh extraction grid (default 64)")
    parser.add_argument("--dnsmos", action="store_true", help="audio: DNSMOS of the reconstructions too (local "
                        "ONNX weights; seconds of CPU per clip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_shards_arguments(args)
        args.device = str(resolve_device(args.device))
        model = load_model(load_model_arg(args), args.device)
        kind = args.kind or infer_kind(model)
        common = dict(split=args.split, batch_size=args.batch_size, device=args.device, max_items=args.max_items,
                      progress=not args.no_progress, fid_weights=args.fid_weights, seed=args.seed,
                      fid_protocol=args.fid_protocol)
        if kind == "tokenizer":
            metrics = evaluate_tokenizer(model, args.shards, args.out, image_size=args.image_size,
                                         lpips_weights=args.lpips_weights, lpips_lin_weights=args.lpips_lin_weights,
                                         resolution=args.resolution, utmos_weights=args.utmos_weights,
                                         dnsmos=args.dnsmos, **common)
        else:
            metrics = evaluate_generator(model, args.shards, args.out, reference=args.reference,
                                         tokenizer=args.tokenizer, **common)
    except (UsageError, ValueError, FileNotFoundError, TypeError) as error:
        print(f"tokenforge evaluate: {one_line(error)}", file=sys.stderr)  # one line, exit 2 (tokenforge.errors)
        raise SystemExit(EXIT_USAGE) from None
    metrics["protocol"]["model"] = args.model
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_item"}, indent=2))
    print(f"wrote {args.out / 'metrics.json'}")
    return 0
