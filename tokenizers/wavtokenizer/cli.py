"""Command-line programs for audio tokenizers (WavTokenizer and any `Tokenizer` with ``modality == "audio"``).

    tokenforge reconstruct --model DIR|CKPT|NAME a.wav b.flac --out rec/      (audio files go here)
    tokenforge encode --model M a.wav b.flac --out codes/      -> codes/<stem>.npy (+ <stem>.json)
    tokenforge decode --model M codes/a.npy --out wav/         -> wav/<stem>.flac

``--model`` also takes ``official:CKPT[:YAML]`` for a released WavTokenizer checkpoint. Inputs of any rate and
channel count are mixed to mono and resampled; long files are processed in chunks (``--chunk-seconds``, 0 =
whole file). `reconstruct` writes ``<stem>.flac`` (the model's rate), ``<stem>.codes.npy`` and
``metrics.json`` (mel and STFT distance, SI-SNR, PESQ-WB, STOI per file against the resampled input, and their
means; long files are scored in windows, `tokenforge.metrics.audio`). A file that cannot be processed is skipped
with a one-line reason (``skipped: ...`` on stderr; listed under ``rejected``) and the others are still written;
`encode` and `decode` do the same. The exit status is 3 when any file was skipped (`tokenforge.errors`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenforge import console
from tokenforge.devices import resolve_device
from tokenforge.errors import UsageError, exit_code_for
from tokenforge.model_kind import require_tokenizer
from tokenforge.audio_files import AudioFileError, decode_long, encode_long, load_audio, reconstruct_files


def load_model(spec: str, device: str = "cpu") -> Any:
    """A tokenforge checkpoint (folder, .ckpt, name) or ``official:CKPT[:YAML]``."""
    if spec.startswith("official:"):
        from tokenforge.tokenizers.wavtokenizer.official import load_official

        parts = spec[len("official:"):].split(":")
        model = load_official(parts[0], parts[1] if len(parts) > 1 else None)
    else:
        from tokenforge.hub import from_pretrained

        model = from_pretrained(spec)
    if getattr(model, "modality", None) != "audio":
        require_tokenizer(model, spec)  # a generator is named as such, with the command to use
        article = "an" if str(model.modality)[:1] in "aeiou" else "a"
        raise UsageError(f"--model {spec} is {article} {model.modality} tokenizer, not an audio tokenizer: `tokenforge "
                         f"encode/decode` handle audio only; for {model.modality} files use `tokenforge reconstruct "
                         f"--model {spec} FILES --out DIR`, and for token ids of a dataset `tokenforge shards encode "
                         f"--tokenizer {spec} SHARDS OUT`")
    return model.to(resolve_device(device)).eval()


def _files(items: list[Path], suffixes: tuple[str, ...] | None = None) -> list[Path]:
    files: list[Path] = []
    for item in items:
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.is_file() and (not suffixes or p.suffix.lower() in suffixes)))
        else:
            files.append(item)
    return files


def _parser(prog: str, description: str, inputs: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--model", required=True, help="tokenizer folder, fit .ckpt, name, or official:CKPT[:YAML]")
    parser.add_argument("inputs", nargs="+", type=Path, help=inputs)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (the VQ lookup and iSTFT stay fp32)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, help="chunk length; 0 = whole file (30)")
    parser.add_argument("--context-seconds", type=float, default=1.0, help="context on each side of a chunk (1)")
    return parser


def reconstruct_main(argv: list[str] | None = None) -> int:
    parser = _parser("tokenforge reconstruct", "audio files -> tokens -> audio, with metrics", "audio files or folders")
    parser.add_argument("--no-metrics", action="store_true", help="skip PESQ/STOI/distances")
    args = parser.parse_args(argv)
    model = load_model(args.model, args.device)
    from tokenforge.data.audio import EXTENSIONS

    summary = reconstruct_files(model, _files(args.inputs, EXTENSIONS), args.out, args.chunk_seconds, args.context_seconds,
                                args.bf16, not args.no_metrics)
    print(json.dumps(summary))
    return exit_code_for(summary["rejected"], summary["rejected"] + summary["files"])


def encode_main(argv: list[str] | None = None) -> int:
    args = _parser("tokenforge encode", "audio files -> <stem>.npy codes", "audio files or folders").parse_args(argv)
    model = load_model(args.model, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    rejected = 0
    from tokenforge.data.audio import EXTENSIONS

    paths = _files(args.inputs, EXTENSIONS)
    for path in console.progress(paths, desc="encode", unit="file"):
        try:
            wave, facts = load_audio(path, model.sample_rate)
        except AudioFileError as error:
            print(f"skipped: {error}", file=sys.stderr)
            rejected += 1
            continue
        codes = encode_long(model, wave, args.chunk_seconds, args.context_seconds, args.bf16)
        np.save(args.out / f"{path.stem}.npy", codes.numpy().astype(np.int16 if model.vocab_size <= 32768 else np.int32))
        meta = {"num_samples": int(wave.numel()), "sample_rate": int(model.sample_rate),
                "hop_length": int(model.hop_length), **facts}
        (args.out / f"{path.stem}.json").write_text(json.dumps(meta) + "\n")
    return exit_code_for(rejected, len(paths))


def read_codes(path: Path, vocab_size: int) -> tuple[torch.Tensor, int | None]:
    """Codes ``(T,)`` of a ``.npy`` file and the sample count of its ``.json`` (if any); `AudioFileError` with the
    reason for a file that is unreadable, pickled, not integer, empty or out of ``[0, vocab_size)``."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise AudioFileError(f"{path.name}: not a readable .npy array ({str(error).splitlines()[0]})") from None
    if not np.issubdtype(array.dtype, np.integer):
        raise AudioFileError(f"{path.name}: codes must be integers, got {array.dtype}")
    codes = torch.from_numpy(array.astype(np.int64)).reshape(-1)
    if codes.numel() == 0 or int(codes.min()) < 0 or int(codes.max()) >= vocab_size:
        raise AudioFileError(f"{path.name}: codes must be non-empty and in [0, {vocab_size - 1}]")
    meta_file = path.with_suffix(".json")
    try:
        length = json.loads(meta_file.read_text()).get("num_samples") if meta_file.is_file() else None
    except (ValueError, AttributeError):
        raise AudioFileError(f"{meta_file.name}: not a JSON object with num_samples") from None
    return codes, length


def decode_main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    args = _parser("tokenforge decode", "<stem>.npy codes -> <stem>.flac", ".npy code files or folders").parse_args(argv)
    model = load_model(args.model, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    skipped = 0
    paths = _files(args.inputs, (".npy",))
    for path in console.progress(paths, desc="decode", unit="file"):
        try:
            codes, length = read_codes(path, model.vocab_size)
        except AudioFileError as error:
            print(f"skipped: {error}", file=sys.stderr)
            skipped += 1
            continue
        wave = decode_long(model, codes, length, args.chunk_seconds, args.context_seconds, args.bf16)
        sf.write(args.out / f"{path.stem}.flac", wave.clamp(-1, 32767 / 32768).numpy(), model.sample_rate,
                 subtype="PCM_16")
        print(f"{path.name}: {codes.numel()} codes -> {wave.numel() / model.sample_rate:.2f} s")
    return exit_code_for(skipped, len(paths))


if __name__ == "__main__":
    sys.exit(reconstruct_main())
