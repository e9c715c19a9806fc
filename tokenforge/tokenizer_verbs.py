"""``tokenforge encode | decode | reconstruct`` for every tokenizer, through the Tokenizer contract.

    tokenforge encode      --model M FILES... --out codes/   -> codes/<stem>.codes.npz (`tokenforge.codes_file`)
    tokenforge decode      --model M codes/   --out dec/     -> dec/<stem>.png | .flac | .ply
    tokenforge reconstruct --model M FILES... --out rec/     -> both in one go, with metrics.json

``--model`` is a saved folder, a ``fit`` .ckpt or a name; with ``--official NAME`` the path of an official
release (`tokenforge.model_spec`). The method is found from ``--model`` before the full parse and adds its own
options (`tokenforge.methods.Option`); a method that does a verb its own way (extra outputs) declares a hook in
``Method.verbs`` and gets a `tokenforge.methods.VerbRequest`; every other tokenizer runs the generic path here,
by modality: images (`tokenforge.image_files`: PNG), audio (`tokenforge.audio_files`: FLAC at the tokenizer's
rate, long files in chunks), meshes (`tokenforge.mesh_files`: PLY by marching cubes of the decoded field).

Inputs go in batches of ``--batch-size`` (audio: shortest first, each batch one padded model call with lengths;
files longer than a chunk go alone, in chunks); a file that cannot be read is skipped
with one ``skipped: NAME: reason`` line and the others are written (exit 3, `tokenforge.errors.exit_code_for`).
A decoded mesh field with no surface (empty, or filling the cube) is a result, not a failure: one ``empty: NAME:
reason`` line, ``empty`` in ``metrics.json``, no file.
``reconstruct`` decodes exactly what a codes file holds (`tokenforge.codes_file.portable`) with the decoder's
random generator seeded by ``--seed`` per batch, so ``encode`` then ``decode`` of the same files, in the same
order and ``--batch-size``, writes the same outputs as ``reconstruct``, bit for bit (``--batch-size 1`` makes
each file independent of the others).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from tokenforge import codes_file, console
from tokenforge.errors import UsageError, exit_code_for
from tokenforge.methods import Method, VerbRequest, add_options, load_target, method_of
from tokenforge.model_spec import add_model_arguments, fingerprint, load_tokenizer, method_in_argv

VERBS = ("encode", "decode", "reconstruct")
HELP = {"encode": "files -> one codes file each (<stem>.codes.npz), for any tokenizer",
        "decode": "codes files -> images / audio / meshes, with the tokenizer that encoded them",
        "reconstruct": "files -> tokens -> files with any tokenizer, and metrics.json"}


class Skipped(ValueError):
    """An input that cannot be used; the message is the one-line reason, starting with the file name."""


class Empty(ValueError):
    """A decoded output with nothing to write (a mesh field that is empty or fills the cube): a result of the model,
    not a bad input, so it is reported with one ``empty: NAME: reason`` line and not counted as skipped."""


# ----------------------------------------------------------------------------- modalities


class ImageFiles:
    """Images: ``[3, size, size]`` in [-1, 1]; PNG out (reconstruct: input | reconstruction, and grid.png)."""

    suffixes = None  # set below (tokenforge.image_files.IMAGE_SUFFIXES)
    output = ".png"

    @staticmethod
    def size(model: Any, args: argparse.Namespace) -> int:
        size = args.size or getattr(model, "image_size", None) or 256
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @classmethod
    def read(cls, path: Path, model: Any, args: argparse.Namespace) -> tuple[Any, dict, dict]:
        from tokenforge.image_files import UnreadableInput, read_image, to_tensor

        try:
            image = read_image(path)
        except UnreadableInput as error:
            raise Skipped(str(error)) from None
        size = cls.size(model, args)
        return to_tensor(image, size), {"size": [size, size]}, {"width": image.width, "height": image.height}

    @staticmethod
    def encode(model: Any, inputs: list[Any], infos: list[dict], args: argparse.Namespace) -> list[Any]:
        return codes_file.split(model.encode(torch.stack(inputs).to(args.device)))

    @staticmethod
    def decode(model: Any, items: list[Any], infos: list[dict], args: argparse.Namespace) -> list[Any]:
        images = model.decode(codes_file.stack(items).to(args.device)).float().cpu()
        return list(images)

    @staticmethod
    def write(output: Any, path: Path) -> None:
        from tokenforge.image_files import save_image

        save_image(output, path)

    @staticmethod
    def score(original: Any, output: Any, source: Path, out: Path, stem: str, args: argparse.Namespace) -> dict:
        from tokenforge.image_files import psnr, save_pair

        save_pair(original, output, out / f"{stem}.png")
        return {"psnr_db": round(float(psnr(original, output)), 3)}


class AudioFiles:
    """Audio: mono at the tokenizer's rate, encoded / decoded in chunks with context (`tokenforge.audio_files`)."""

    output = ".flac"
    suffixes = {".wav", ".flac", ".ogg"}

    @staticmethod
    def read(path: Path, model: Any, args: argparse.Namespace) -> tuple[Any, dict, dict]:
        from tokenforge.audio_files import AudioFileError, load_audio

        try:
            wave, facts = load_audio(path, int(model.sample_rate))
        except AudioFileError as error:
            raise Skipped(str(error)) from None
        info = {"sample_rate": int(model.sample_rate), "num_samples": int(wave.numel()),
                "chunk_seconds": args.chunk_seconds, "context_seconds": args.context_seconds,
                "crossfade_seconds": getattr(args, "crossfade_seconds", 0.1)}
        return wave, info, facts

    @staticmethod
    def order_key(path: Path) -> float:
        """Seconds of audio (header only): files go through the model in batches of similar length."""
        import soundfile as sf

        try:
            info = sf.info(str(path))
            return info.frames / info.samplerate
        except Exception:  # unreadable: read() skips it with its reason
            return 0.0

    @staticmethod
    def encode(model: Any, inputs: list[Any], infos: list[dict], args: argparse.Namespace) -> list[Any]:
        from tokenforge.audio_files import encode_many
        from tokenforge.tokenizers.base import Tokens

        return [Tokens(ids=codes[None]) for codes in encode_many(model, inputs, args.chunk_seconds, args.bf16)]

    @staticmethod
    def decode(model: Any, items: list[Any], infos: list[dict], args: argparse.Namespace) -> list[Any]:
        from tokenforge.audio_files import decode_many

        first = infos[0] if infos else {}
        return decode_many(model, [tokens.ids[0] for tokens in items], [info["num_samples"] for info in infos],
                           first.get("chunk_seconds", args.chunk_seconds),
                           first.get("context_seconds", args.context_seconds), args.bf16,
                           first.get("crossfade_seconds", getattr(args, "crossfade_seconds", 0.1)))

    @staticmethod
    def write(output: Any, path: Path, rate: int, source: dict | None = None, args: Any = None) -> None:
        """FLAC at ``--output-rate`` with ``--output-channels`` (`tokenforge.audio_rates`; default: model, mono)."""
        import soundfile as sf

        from tokenforge.audio_rates import for_output

        output, rate = for_output(output, rate, source, getattr(args, "output_rate", "model"),
                                  getattr(args, "output_channels", "mono"), str((source or {}).get("file", "")))
        sf.write(path, output.clamp(-1, 32767 / 32768).numpy(), rate, subtype="PCM_16")

    @staticmethod
    def score(original: Any, output: Any, source: Path, out: Path, stem: str, args: argparse.Namespace) -> dict:
        from tokenforge.audio_files import audio_metrics

        if args.no_metrics:
            return {}
        quality = AudioFiles.quality(args)
        return {**audio_metrics(output, original, args.rate),
                **{k: round(v, 4) for k, v in quality.scores(output, args.rate).items()}}

    @staticmethod
    def quality(args: argparse.Namespace) -> Any:
        """The run's `SpeechQuality` (``--dnsmos``, ``--utmos-weights``), built once; a metric that cannot run
        says why in one line on stderr and in ``metrics.json``."""
        if getattr(args, "speech_quality", None) is None:
            from tokenforge.metrics.audio import SpeechQuality

            args.speech_quality = SpeechQuality(args.dnsmos, args.utmos_weights)
            for reason in args.speech_quality.unavailable():
                print(reason, file=sys.stderr)
        return args.speech_quality

    @staticmethod
    def report(args: argparse.Namespace) -> dict:
        """What ``metrics.json`` says about audio: each metric's rate, the output rate, DNSMOS/UTMOS provenance."""
        from tokenforge.metrics.audio import metric_rates

        out = {"output": {"rate": args.output_rate, "channels": args.output_channels}}
        if not args.no_metrics:
            out["metric_rates"] = metric_rates(args.rate)
            out.update(AudioFiles.quality(args).describe())
        return out


class MeshFiles:
    """Meshes: surface points with normals in, marching cubes of the decoded field out (`tokenforge.mesh_files`)."""

    output = ".ply"
    suffixes = None  # set below (tokenforge.mesh_files.MESH_SUFFIXES)

    @staticmethod
    def read(path: Path, model: Any, args: argparse.Namespace) -> tuple[Any, dict, dict]:
        from tokenforge.data.shards import Rejected
        from tokenforge.mesh_files import load_surface

        try:
            mesh, points = load_surface(path, args.points)
        except Rejected as error:
            raise Skipped(f"{path.name}: {error}") from None
        except OSError as error:
            raise Skipped(f"{path.name}: cannot read ({error.strerror or error})") from None
        return points[0], {"points": int(args.points), "resolution": int(args.resolution)}, \
            {"vertices": len(mesh.vertices), "faces": len(mesh.faces)}

    @staticmethod
    def encode(model: Any, inputs: list[Any], infos: list[dict], args: argparse.Namespace) -> list[Any]:
        from tokenforge.mesh_files import encoder_input

        return codes_file.split(model.encode(encoder_input(model, torch.stack(inputs).to(args.device))))

    @staticmethod
    def decode(model: Any, items: list[Any], infos: list[dict], args: argparse.Namespace) -> list[Any]:
        from tokenforge.mesh_files import field_to_mesh

        fields = model.decode(codes_file.stack(items).to(args.device))
        meshes = []
        for i, info in enumerate(infos):
            try:
                meshes.append(field_to_mesh(model, fields[i:i + 1], int(info.get("resolution", args.resolution))))
            except ValueError as error:  # an empty or full field: nothing to mesh for this item
                meshes.append(Empty(str(error)))
        return meshes

    @staticmethod
    def write(output: Any, path: Path) -> None:
        output.export(path)

    @staticmethod
    def score(original: Any, output: Any, source: Path, out: Path, stem: str, args: argparse.Namespace) -> dict:
        return {"vertices": len(output.vertices), "faces": len(output.faces), "watertight": bool(output.is_watertight)}


def _suffixes() -> None:
    from tokenforge.image_files import IMAGE_SUFFIXES
    from tokenforge.mesh_files import MESH_SUFFIXES

    ImageFiles.suffixes, MeshFiles.suffixes = IMAGE_SUFFIXES, MESH_SUFFIXES


MODALITIES: dict[str, type] = {"image": ImageFiles, "audio": AudioFiles, "mesh": MeshFiles}


# ----------------------------------------------------------------------------- the command line


def build_parser(verb: str, method: Method | None) -> tuple[argparse.ArgumentParser, list[str]]:
    """The verb's parser: model, inputs, output, every modality's options, and ``method``'s own for the verb."""
    epilog = (f"{method.name} options are listed above." if method else
              "A method's own options appear in this help when --model (or --official) names it.")
    parser = argparse.ArgumentParser(prog=f"tokenforge {verb}", description=f"{HELP[verb]}.\n\n{__doc__}",
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    inputs = "codes files (.codes.npz) or folders of them" if verb == "decode" else "input files or folders"
    parser.add_argument("inputs", nargs="+", type=Path, help=inputs)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="inputs per encode/decode call (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of stochastic decoders, per batch (default 0)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast where the path supports it (audio, "
                        "methods that say so)")
    image = parser.add_argument_group("images")
    image.add_argument("--size", type=int, help="side after the centre crop (default: the tokenizer's, else 256)")
    audio = parser.add_argument_group("audio")
    audio.add_argument("--chunk-seconds", type=float, default=30.0, help="chunk length; 0 = whole file (30)")
    audio.add_argument("--context-seconds", type=float, default=1.0, help="decoding: codes of context on each side "
                       "of a chunk (1); encoding takes its context from the encoder's receptive field")
    audio.add_argument("--crossfade-seconds", type=float, default=0.1, help="decoding: overlap of neighbouring "
                       "chunks, blended linearly (0.1)")
    if verb == "reconstruct":
        audio.add_argument("--no-metrics", action="store_true", help="skip PESQ/STOI/distances")
        audio.add_argument("--dnsmos", action="store_true", help="DNSMOS of each reconstruction (speechmos, offline)")
        audio.add_argument("--utmos-weights", default=None, metavar="FILE",
                           help="UTMOS of each reconstruction from this local TorchScript file (tokenforge.metrics.utmos)")
    if verb != "encode":
        from tokenforge.audio_rates import add_output_options

        add_output_options(audio)
    mesh = parser.add_argument_group("meshes")
    mesh.add_argument("--points", type=int, default=4096, help="surface points fed to the encoder (4096)")
    mesh.add_argument("--resolution", type=int, default=128, help="marching-cubes grid, cells per axis (128)")
    dests = add_options(parser, method, verb) if method is not None else []
    return parser, dests


def expand(items: list[Path], suffixes: set[str] | None) -> list[Path]:
    """Files as given, folders expanded recursively (by suffix when given), sorted; a missing path is refused."""
    missing = [str(p) for p in items if not p.exists()]
    if missing:
        raise UsageError(f"not found: {', '.join(missing)}; give existing files or folders")
    found: list[Path] = []
    for item in items:
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.is_file()
                                and (suffixes is None or p.suffix.lower() in suffixes)))
        else:
            found.append(item)
    return found


def check_args(args: argparse.Namespace) -> None:
    if args.size is not None and args.size < 1:
        raise UsageError(f"--size {args.size}: the image side must be a positive number of pixels (e.g. 256)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: give 1 or more")
    if args.points < 1 or args.resolution < 2:
        raise UsageError("--points must be >= 1 and --resolution >= 2")


def main(verb: str, argv: list[str]) -> int:
    """Parse ``argv`` for ``verb``, load the tokenizer, and run the method's hook or the generic path."""
    from tokenforge.devices import resolve_device

    method = method_in_argv(argv)
    parser, dests = build_parser(verb, method)
    args = parser.parse_args(argv)
    check_args(args)
    args.device = str(resolve_device(args.device))
    model = load_tokenizer(args).to(args.device)
    if method is None:
        method = method_of(f"{type(model).__module__}.{type(model).__qualname__}")
    handler = MODALITIES.get(getattr(model, "modality", None))
    if handler is None:
        raise UsageError(f"--model {args.model} is a {getattr(model, 'modality', '?')} tokenizer; `tokenforge {verb}` "
                         f"reads {', '.join(MODALITIES)} files")
    _suffixes()
    files = expand(args.inputs, {".npz"} if verb == "decode" else handler.suffixes)
    if not files and verb == "decode":
        raise UsageError(f"no codes files ({codes_file.SUFFIX}) among the inputs; write them with `tokenforge encode`")
    if not files:
        raise UsageError(f"no {model.modality} files ({', '.join(sorted(handler.suffixes))}) among the inputs")
    hook = method.verbs.get(verb) if method is not None else None
    if hook is not None:
        request = VerbRequest(verb, model, str(args.model), files, args.out, args.device,
                              {d: getattr(args, d) for d in dests}, args)
        return int(load_target(hook)(request) or 0)
    args.out.mkdir(parents=True, exist_ok=True)
    run = {"encode": encode_files, "decode": decode_files, "reconstruct": reconstruct_files}[verb]
    with torch.no_grad():
        return run(handler, model, method, files, args)


def _empty(path: Path, output: Empty) -> str:
    print(f"empty: {path.name}: {output}", file=sys.stderr)
    return str(output)


def _skip(path: Path, reason: str, skipped: dict[str, str]) -> None:
    skipped[path.name] = reason
    print(f"skipped: {reason}", file=sys.stderr)


def read_batches(handler: type, model: Any, files: list[Path], args: argparse.Namespace, skipped: dict[str, str],
                 desc: str) -> Any:
    """Batches of readable inputs ``[(path, x, input_info, source_info)]``; unreadable files are skipped. A handler
    with ``order_key`` (audio: seconds) gets its files shortest first, so each batch holds similar lengths."""
    if hasattr(handler, "order_key"):
        files = sorted(files, key=handler.order_key)
    batch = []
    for path in console.progress(files, desc=desc, unit="file"):
        try:
            x, info, source = handler.read(path, model, args)
        except Skipped as error:
            _skip(path, str(error), skipped)
            continue
        batch.append((path, x, info, {"file": path.name, **source}))
        if len(batch) == args.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def decode_batch(handler: type, model: Any, items: list[Any], infos: list[dict], args: argparse.Namespace) -> list:
    """``handler.decode`` with the random generator seeded by ``--seed`` (stochastic decoders repeat)."""
    torch.manual_seed(args.seed)
    return handler.decode(model, items, infos, args)


def _write(handler: type, model: Any, output: Any, path: Path, source: dict | None = None,
           args: argparse.Namespace | None = None) -> None:
    if handler is AudioFiles:
        handler.write(output, path, int(model.sample_rate), source, args)
    else:
        handler.write(output, path)


def _count(tokens: Any) -> int:
    ids = tokens.ids
    if isinstance(ids, list):
        return int(sum(t[0].numel() for t in ids))
    if ids is not None and ids.numel():
        return int(ids[0].numel())
    return int(tokens.latents[0].numel()) if tokens.latents is not None else 0


def encode_files(handler: type, model: Any, method: Method | None, files: list[Path],
                 args: argparse.Namespace) -> int:
    """One codes file per readable input."""
    base = codes_file.header_for(model, method.name if method else None, fingerprint(model))
    skipped: dict[str, str] = {}
    written = 0
    for batch in read_batches(handler, model, files, args, skipped, "encode"):
        items = handler.encode(model, [x for _, x, _, _ in batch], [i for _, _, i, _ in batch], args)
        for (path, _, info, source), tokens in zip(batch, items):
            codes_file.write(args.out / f"{path.stem}{codes_file.SUFFIX}", tokens,
                             {**base, "input": info, "source": source})
            written += 1
    print(json.dumps({"out": str(args.out), "encoded": written, "skipped": len(skipped)}))
    return exit_code_for(len(skipped), len(files))


def decode_files(handler: type, model: Any, method: Method | None, files: list[Path],
                 args: argparse.Namespace) -> int:
    """One output file per codes file; another model's codes are refused with one line (fingerprint mismatch)."""
    mine = fingerprint(model)
    skipped: dict[str, str] = {}
    empty: dict[str, str] = {}
    loaded: list[tuple[Path, Any, dict]] = []
    for path in files:
        try:
            tokens, header = codes_file.read(path)
            codes_file.check_model(path, header, mine, args.model)
            codes_file.check_ids(path, tokens, header.get("vocab_size"))
        except codes_file.CodesFileError as error:
            if "fingerprint mismatch" in str(error) and len(files) == 1:
                raise UsageError(str(error)) from None
            _skip(path, str(error), skipped)
            continue
        loaded.append((path, tokens, header))
    if hasattr(handler, "order_key"):  # the order encode / reconstruct used: same batches, same outputs
        loaded.sort(key=lambda item: float(item[2].get("source", {}).get("seconds", 0.0)))
    written = 0
    for start in console.progress(range(0, len(loaded), args.batch_size), desc="decode", unit="batch"):
        chunk = loaded[start:start + args.batch_size]
        outputs = decode_batch(handler, model, [t for _, t, _ in chunk], [h.get("input", {}) for _, _, h in chunk],
                               args)
        for (path, _, header), output in zip(chunk, outputs):
            if isinstance(output, Empty):
                empty[path.name] = _empty(path, output)
                continue
            _write(handler, model, output, args.out / f"{codes_file.stem_of(path)}{handler.output}",
                   header.get("source"), args)
            written += 1
    print(json.dumps({"out": str(args.out), "decoded": written, "empty": len(empty), "skipped": len(skipped)}))
    return exit_code_for(len(skipped), len(files))


def reconstruct_files(handler: type, model: Any, method: Method | None, files: list[Path],
                      args: argparse.Namespace) -> int:
    """Encode, decode what a codes file would hold, write the outputs and ``metrics.json``."""
    args.rate = getattr(model, "sample_rate", None)
    skipped: dict[str, str] = {}
    report: dict[str, Any] = {"method": method.name if method else None, "files": {}, "skipped": skipped}
    pairs = []
    for batch in read_batches(handler, model, files, args, skipped, "reconstruct"):
        infos = [i for _, _, i, _ in batch]
        items = handler.encode(model, [x for _, x, _, _ in batch], infos, args)
        outputs = decode_batch(handler, model, items, infos, args)
        for (path, x, _, source), tokens, output in zip(batch, items, outputs):
            if isinstance(output, Empty):
                report["files"][path.name] = {"empty": _empty(path, output), "tokens": _count(tokens)}
                continue
            if handler is not ImageFiles:  # images: the PNG shows the input beside the reconstruction
                _write(handler, model, output, args.out / f"{path.stem}{handler.output}", source, args)
            else:
                pairs.append(path.stem)
            scores = handler.score(x, output, path, args.out, path.stem, args)
            report["files"][path.name] = {**scores, "tokens": _count(tokens)}
    if pairs:
        grid(args.out, pairs)
    if handler is AudioFiles:
        report.update(AudioFiles.report(args))
    keys = sorted({k for entry in report["files"].values() for k, v in entry.items()
                   if isinstance(v, float) and k != "tokens"})
    report["mean"] = {k: round(sum(v) / len(v), 4) for k in keys  # over the files that have the metric
                      for v in [[e[k] for e in report["files"].values() if isinstance(e.get(k), float)]]}
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"out": str(args.out), "files": len(report["files"]), "skipped": len(skipped),
                      **report["mean"]}))
    return exit_code_for(len(skipped), len(files))


def grid(out: Path, stems: list[str]) -> None:
    """``grid.png``: the reconstruction pairs one under another."""
    import numpy as np
    from PIL import Image

    rows = [np.asarray(Image.open(out / f"{stem}.png")) for stem in stems]
    if len({r.shape for r in rows}) == 1:
        Image.fromarray(np.concatenate(rows, axis=0)).save(out / "grid.png")
