"""`HeldOutCurve`: a time-based held-out evaluation callback for short WavTokenizer runs.

Lightning validates every N batches, but a short GPU run is budgeted in seconds and its steps/s is unknown in
advance. This callback evaluates every ``every_seconds`` of training wall time (and once before the first step)
on fixed held-out clips, prints one row and appends it to ``<out>/curve.txt``:
mel distance (L1 of log-mel, the training metric), STOI, wideband PESQ when the ``pesq`` package is installed
(the column reads ``-`` otherwise), held-out codebook usage and perplexity. At the end of training it writes
FLAC reconstructions (and the references) of the first ``flac_clips`` clips to ``<out>/samples/``.

    tokenforge fit --config configs/tokenizers/wavtokenizer/base.yaml \\
      --config configs/tokenizers/wavtokenizer/small_75.yaml \\
      --trainer.callbacks+=tokenforge.tokenizers.wavtokenizer.curve.HeldOutCurve \\
      --trainer.callbacks.audio=/tmp/val_audio --trainer.callbacks.out=$OUT
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor

COLUMNS = ("step", "batches", "train_s", "mel_distance", "stoi", "pesq", "usage", "perplexity")


def held_out_clips(audio: str | Path, sample_rate: int, max_clips: int, seconds: float) -> tuple[list[str], Tensor]:
    """The first ``max_clips`` audio files of a folder (sorted), each cut or tiled to ``seconds`` -> ``(N, L)``."""
    from tokenforge.data.audio import EXTENSIONS
    from tokenforge.audio_files import load_audio

    folder = Path(audio)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"HeldOutCurve: no audio files ({', '.join(EXTENSIONS)}) under {folder}")
    length = int(seconds * sample_rate)
    names, rows = [], []
    for path in files[:max_clips]:
        wave, _ = load_audio(path, sample_rate)
        if wave.numel() < length:
            wave = wave.repeat(-(-length // wave.numel()))  # short files are tiled, as the official val loader
        names.append(path.stem)
        rows.append(wave[:length])
    return names, torch.stack(rows)


class HeldOutCurve(pl.Callback):
    """Every ``every_seconds`` of training: held-out mel distance / STOI / PESQ / codebook usage -> curve.txt."""

    def __init__(self, audio: str, out: str, every_seconds: float = 60.0, max_clips: int = 8,
                 seconds: float = 4.0, flac_clips: int = 4, batch_size: int = 8) -> None:
        super().__init__()
        if every_seconds <= 0:
            raise ValueError(f"every_seconds must be positive, got {every_seconds}")
        self.audio, self.out, self.every_seconds = audio, Path(out), every_seconds
        self.max_clips, self.seconds, self.flac_clips, self.batch_size = max_clips, seconds, flac_clips, batch_size
        self.rows: list[dict[str, float]] = []
        self._train_s, self._last, self._mark = 0.0, 0.0, 0.0

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, module: pl.LightningModule) -> tuple[dict[str, float], Tensor]:
        from tokenforge.metrics import audio as M
        from tokenforge.tokenizers.quantizers.base import code_statistics

        model = module.model
        was_training = model.training
        model.eval()
        x = self.clips.to(module.device)
        recon, ids = [], []
        with torch.autocast(module.device.type, enabled=False):
            for chunk in x.split(self.batch_size):
                out = model(chunk, torch.zeros(1, dtype=torch.long, device=x.device))
                recon.append(out.x_hat.float())
                ids.append(out.tokens.ids.reshape(-1))
        model.train(was_training)
        x_hat = torch.cat(recon)
        stats = code_statistics(torch.cat(ids), model.vocab_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pesq missing: one warning per call otherwise
            scores = M.pesq_stoi(x_hat.cpu(), x.cpu(), model.sample_rate)
        row = {"mel_distance": float(M.mel_distance(x_hat, x, model.sample_rate)),
               "stoi": scores.get("stoi", math.nan), "pesq": scores.get("pesq", math.nan),
               "usage": float(stats["usage"]), "perplexity": float(stats["perplexity"])}
        return row, x_hat.cpu()

    def _record(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:  # under DDP rank 0 evaluates; the others wait for it at the next all-reduce
            return
        row, _ = self.evaluate(module)
        row = {"step": trainer.global_step, "batches": int(getattr(module, "generator_step", trainer.global_step)),
               "train_s": round(self._train_s, 1), **row}
        self.rows.append(row)
        line = "\t".join(_fmt(row[c]) for c in COLUMNS)
        print(f"held-out: {line}", flush=True)
        with open(self.out / "curve.txt", "a") as f:
            f.write(line + "\n")

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.names, self.clips = held_out_clips(self.audio, module.model.sample_rate, self.max_clips, self.seconds)
        if trainer.is_global_zero:
            (self.out / "curve.txt").write_text("\t".join(COLUMNS) + "\n")
        self._record(trainer, module)
        self._mark = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args) -> None:
        now = time.monotonic()
        self._train_s += now - self._mark
        self._mark = now
        if self._train_s - self._last >= self.every_seconds:
            self._last = self._train_s
            self._record(trainer, module)
            self._mark = time.monotonic()  # evaluation time is not training time

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import soundfile as sf

        if not self.rows or self.rows[-1]["step"] != trainer.global_step:
            self._record(trainer, module)
        if not trainer.is_global_zero:
            return
        _, x_hat = self.evaluate(module)
        samples = self.out / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        rate = int(module.model.sample_rate)
        for name, ref, rec in list(zip(self.names, self.clips, x_hat))[: self.flac_clips]:
            sf.write(samples / f"{name}.flac", rec.clamp(-1, 32767 / 32768).numpy(), rate, subtype="PCM_16")
            sf.write(samples / f"{name}_ref.flac", ref.clamp(-1, 32767 / 32768).numpy(), rate, subtype="PCM_16")


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return "-" if math.isnan(value) else f"{value:.4g}"
