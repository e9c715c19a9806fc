"""Audio at any sample rate and channel count: what goes into an audio tokenizer and what comes back out.

An audio tokenizer codes mono audio at its own rate (``model.sample_rate``). On the way in, `load_audio`
(`tokenforge.audio_files`) mixes the file's channels to mono by averaging and resamples with torchaudio's
polyphase windowed-sinc resampler (`tokenforge.data.audio.resample`); the codes file records the source's rate,
channel count and duration (header ``source``: ``source_rate``, ``channels``, ``seconds``). On the way out,
``tokenforge decode`` and ``reconstruct`` write at the rate ``--output-rate`` asks for:

- ``model`` (default): the tokenizer's own rate, the samples as decoded;
- ``source``: the input file's rate, resampled back with the same resampler and cut to the source's exact
  number of frames, so a 44.1 kHz file of N frames comes back as a 44.1 kHz file of N frames;
- a number of Hz (e.g. ``16000``).

``--output-channels source`` writes the mono reconstruction on each of the source's channels (a drop-in file of
the input's shape; the tokenizer itself codes one channel), ``mono`` (default) one channel.
Metrics are not affected: they compare at the model's rate (`tokenforge.metrics.audio.metric_rates`).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import Tensor

from tokenforge.errors import UsageError

RATE_CHOICES = ("model", "source")
CHANNEL_CHOICES = ("mono", "source")


def output_rate_arg(text: str) -> str | int:
    """argparse type of ``--output-rate``: ``model``, ``source`` or a rate in Hz (1000 or more)."""
    if text in RATE_CHOICES:
        return text
    try:
        rate = int(text)
    except ValueError:
        rate = 0
    if rate < 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: give model, source or a rate in Hz of 1000 or more (e.g. 16000)")
    return rate


def add_output_options(group: Any) -> None:
    """``--output-rate`` and ``--output-channels`` on an argparse group (decode and reconstruct)."""
    group.add_argument("--output-rate", type=output_rate_arg, default="model", metavar="model|source|HZ",
                       help="rate of the written audio: the tokenizer's (model, default), the input file's (source), "
                            "or a number of Hz")
    group.add_argument("--output-channels", choices=CHANNEL_CHOICES, default="mono",
                       help="mono (default), or the input's channel count (the mono reconstruction on each)")


def source_frames(source: dict[str, Any]) -> int | None:
    """Frames of the source file at its own rate, from a codes header's ``source`` (None when not recorded)."""
    if "frames" in source:
        return int(source["frames"])
    if "seconds" in source and "source_rate" in source:
        return int(round(float(source["seconds"]) * int(source["source_rate"])))
    return None


def target_rate(choice: str | int, model_rate: int, source: dict[str, Any], name: str = "") -> int:
    """The output rate for ``--output-rate choice``; `UsageError` when ``source`` is asked and not recorded."""
    if choice == "model":
        return int(model_rate)
    if choice == "source":
        if not source.get("source_rate"):
            raise UsageError(f"{name or 'the input'} does not record its source rate; give --output-rate model or "
                             "a number of Hz")
        return int(source["source_rate"])
    return int(choice)


def for_output(wave: Tensor, model_rate: int, source: dict[str, Any] | None = None, rate: str | int = "model",
               channels: str = "mono", name: str = "") -> tuple[Tensor, int]:
    """A decoded ``(L,)`` wave at ``model_rate`` -> ``(samples (L',) or (L', C), rate)`` to write.

    At the source's rate the length is the source's frame count exactly (resampling rounds up by up to a few
    samples: the tail is cut, or zero-padded if short); at another rate it is ``round(L * rate / model_rate)``."""
    from tokenforge.data.audio import resample

    source = source or {}
    out_rate = target_rate(rate, model_rate, source, name)
    wave = torch.as_tensor(wave).float().reshape(-1)
    if out_rate != model_rate:
        expected = round(wave.numel() * out_rate / model_rate)
        if out_rate == source.get("source_rate") and source_frames(source) is not None:
            expected = source_frames(source)
        with torch.autocast("cpu", enabled=False):
            wave = resample(wave, int(model_rate), out_rate)
        wave = wave[:expected] if wave.numel() >= expected else torch.nn.functional.pad(wave, (0, expected - len(wave)))
    count = int(source.get("channels") or 1) if channels == "source" else 1
    return (wave[:, None].expand(-1, count).contiguous() if count > 1 else wave), out_rate
