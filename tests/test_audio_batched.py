"""Batched audio tokenization with lengths (issue 21, item 1): a right-padded batch of real speech clips of
different lengths gives each clip exactly the codes of encoding it alone (frames = ceil(length / hop)), whatever
the padding holds, and decoding with lengths gives each clip its own decode (to float rounding) and zeros after.
`tokenforge encode` with ``--batch-size`` writes the same codes as one file at a time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from audio_tokenizers import model, speech  # noqa: F401 (model: a fixture)

from tokenforge import codes_file, hub
from tokenforge.cli import main as tokenforge_main

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LENGTHS = [24000, 17777, 8001, 333, 12345, 30000]  # whole seconds, odd lengths, shorter than one conv window


@pytest.fixture(scope="module")
def clips(shared_data: Path) -> list[torch.Tensor]:
    return [wave[:n] for wave, n in zip(speech(shared_data, len(LENGTHS)), LENGTHS)]


def _batch(clips: list[torch.Tensor], fill: str) -> torch.Tensor:
    batch = torch.zeros(len(clips), max(c.numel() for c in clips))
    for i, clip in enumerate(clips):
        batch[i, :clip.numel()] = clip
        if fill == "noise":  # what the padding holds must not matter
            batch[i, clip.numel():] = torch.randn(batch.shape[1] - clip.numel())
    return batch


@pytest.mark.parametrize("fill", ["zeros", "noise"])
def test_batched_codes_equal_single(model, clips: list[torch.Tensor], fill: str) -> None:
    tokens = model.encode(_batch(clips, fill), [c.numel() for c in clips])
    assert tokens.lengths.tolist() == [math.ceil(n / 320) for n in LENGTHS]
    used = set()
    for i, clip in enumerate(clips):
        alone = model.encode(clip[None]).ids[0]
        frames = int(tokens.lengths[i])
        assert torch.equal(tokens.ids[i, :frames], alone)
        assert not tokens.ids[i, frames:].any()  # zeros after the item's frames
        used |= set(alone.tolist())
    assert len(used) > 20  # real codes, not one code everywhere


def test_batched_decode_trims_each_item(model, clips: list[torch.Tensor]) -> None:
    tokens = model.encode(_batch(clips, "zeros"), [c.numel() for c in clips])
    waves = model.decode(tokens)  # lengths from tokens.meta["num_samples"]
    assert waves.shape == (len(clips), max(LENGTHS))
    for i, clip in enumerate(clips):
        alone = model.decode(model.encode(clip[None]))[0]
        assert alone.shape == clip.shape
        assert (waves[i, :clip.numel()] - alone).abs().max() < 1e-5 * max(1.0, float(alone.abs().max()))
        assert not waves[i, clip.numel():].any()


def test_bad_lengths_are_refused(model, clips: list[torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="lengths"):
        model.encode(_batch(clips[:2], "zeros"), [24000])
    with pytest.raises(ValueError, match="lengths"):
        model.encode(_batch(clips[:2], "zeros"), [24000, 30000])


def test_encode_cli_batches_by_length(model, shared_data: Path, tmp_path: Path) -> None:
    folder = hub.save_pretrained(model, tmp_path / "model")
    files = [str(p) for p in sorted((shared_data / "speech24k").glob("*.flac"))[:5]]
    for size in (1, 4):
        assert tokenforge_main(["encode", "--model", str(folder), *files, "--out", str(tmp_path / f"b{size}"),
                                "--device", "cpu", "--batch-size", str(size)]) == 0
    for path in files:
        name = f"{Path(path).stem}{codes_file.SUFFIX}"
        one, _ = codes_file.read(tmp_path / "b1" / name)
        many, header = codes_file.read(tmp_path / "b4" / name)
        assert torch.equal(one.ids, many.ids) and one.ids.shape[1] == math.ceil(header["input"]["num_samples"] / 320)
