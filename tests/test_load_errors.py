"""Loading mistakes end with one line that says what was wrong and what to do, and exit code 2:
a missing model path, a truncated safetensors file, a pickled ``.ckpt``, ``convert`` of a missing folder
or of a file that is no checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from tokenforge import hub
from tokenforge.errors import EXIT_USAGE, UsageError

IMAGE = Path(__file__).resolve().parents[1] / "tokenforge" / "samples" / "images" / "camera.png"


def tiny_checkpoint(folder: Path) -> Path:
    from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
    from tokenforge.tokenizers.vqgan.model import VQGAN

    model = VQGAN(VectorQuantizer(8, 4), ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=4,
                  attn_last_level=False, attn_mid=False)
    return hub.save_pretrained(model, folder)


def one_line_exit(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``tokenforge ARGV`` in-process; its exit code must be 2 and its error one line (returned)."""
    from tokenforge.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except UsageError as error:  # a main that lets usage errors through still ends in one line
        code, text = error.exit_code, str(error)
    else:
        text = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE, text
    lines = [line for line in text.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line]
    assert len(lines) == 1, text
    return lines[0]


def test_missing_model_path(tmp_path: Path, capsys) -> None:
    line = one_line_exit(["reconstruct", "--model", str(tmp_path / "nope"), str(IMAGE), "--out", str(tmp_path)],
                         capsys)
    assert "nope" in line and "Place config.json" in line


def test_truncated_safetensors(tmp_path: Path, capsys) -> None:
    folder = tiny_checkpoint(tmp_path / "vq")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    line = one_line_exit(["reconstruct", "--model", str(folder), str(IMAGE), "--out", str(tmp_path / "o")], capsys)
    assert "truncated" in line and "model.safetensors" in line


def test_pickled_ckpt_through_reconstruct(tmp_path: Path, capsys) -> None:
    path = tmp_path / "official.ckpt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1e-4)}, path)
    line = one_line_exit(["reconstruct", "--model", str(path), str(IMAGE), "--out", str(tmp_path / "o")], capsys)
    assert "refused" in line and "argparse.Namespace" in line and "trust_pickle" in line


def test_convert_missing_folder_and_wrong_file(tmp_path: Path, capsys) -> None:
    line = one_line_exit(["convert", "tokenflow", str(tmp_path / "absent"), str(tmp_path / "out")], capsys)
    assert "does not exist" in line
    wrong = tmp_path / "notes.pt"
    wrong.write_text("these are notes, not weights")
    line = one_line_exit(["convert", "tokenflow", str(wrong), str(tmp_path / "out")], capsys)
    assert "not a PyTorch checkpoint" in line
    line = one_line_exit(["convert", "flextok", str(wrong), str(tmp_path / "out")], capsys)
    assert "safetensors" in line
    assert not (tmp_path / "out").exists()


def test_guarded_ckpt_path_names_the_flag(tmp_path: Path) -> None:
    """`SafeCheckpointIO` (``--ckpt_path``): a pickled file and a missing file are usage errors."""
    from tokenforge.safe_load import SafeCheckpointIO

    path = tmp_path / "official.ckpt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(UsageError, match=r"--ckpt_path .* refused.*argparse\.Namespace"):
        SafeCheckpointIO().load_checkpoint(path)
    with pytest.raises(UsageError, match="no such checkpoint"):
        SafeCheckpointIO().load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(UsageError, match="truncated"):
        SafeCheckpointIO().load_checkpoint(tmp_path / "cut.ckpt")
    assert SafeCheckpointIO().load_checkpoint(path, weights_only=False)["args"].lr == 1e-4  # the caller's choice
