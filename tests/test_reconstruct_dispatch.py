"""`tokenforge reconstruct` finds the method from --model before parsing: a method with a reconstruct hook
(`Method.verbs`) gets its own options and writes its own outputs; the others take the generic path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_flextok_training import tiny as tiny_flextok  # tests/ is on sys.path

from tokenforge import hub
from tokenforge.cli import main as tokenforge_main
from tokenforge.model_spec import method_in_argv
from tokenforge.reconstruct import main as reconstruct_main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flextok_checkpoint_runs_its_hook_with_its_options(tmp_path: Path, shared_data: Path, capsys) -> None:
    hub.save_pretrained(tiny_flextok(), tmp_path / "flextok")
    assert method_in_argv(["--model", str(tmp_path / "flextok")]).name == "flextok"
    argv = ["reconstruct", "--model", str(tmp_path / "flextok"), str(shared_data / "images" / "coffee.png"),
            "--out", str(tmp_path / "rec"), "--tokens", "1,8", "--size", "16", "--steps", "2", "--device", "cpu"]
    assert tokenforge_main(argv) == 0
    metrics = json.loads((tmp_path / "rec" / "metrics.json").read_text())
    assert set(metrics["mean"]) == {"psnr_k1", "psnr_k8"}  # FlexTok's PSNR-per-k output, not the generic one
    capsys.readouterr()
    with pytest.raises(SystemExit):
        reconstruct_main(["--model", str(tmp_path / "flextok"), "--help"])
    shown = capsys.readouterr().out
    assert "flextok options" in shown and "--tokens" in shown


def test_other_tokenizers_and_bad_models_stay_on_the_generic_path(tmp_path: Path, capsys) -> None:
    from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
    from tokenforge.tokenizers.vqgan.model import VQGAN

    vqgan = VQGAN(VectorQuantizer(16, 4), ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=4,
                  attn_last_level=False, attn_mid=False)
    hub.save_pretrained(vqgan, tmp_path / "vqgan")
    assert method_in_argv(["--model", str(tmp_path / "vqgan"), "a.png", "--out", "x"]).verbs == {}
    assert method_in_argv([f"--model={tmp_path / 'missing'}", "a.png"]) is None
    assert method_in_argv(["--official", "flextok", "--model", "x"]).name == "flextok"
    with pytest.raises(SystemExit):  # a FlexTok option is not an option of a VQGAN
        reconstruct_main(["--model", str(tmp_path / "vqgan"), "a.png", "--out", "x", "--tokens", "1"])
    assert "--tokens" in capsys.readouterr().err
    from tokenforge.errors import UsageError

    with pytest.raises(UsageError, match="not found"):  # the missing input file, one line (tokenforge.cli: exit 2)
        reconstruct_main(["--model", str(tmp_path / "vqgan"), str(tmp_path / "none.png"), "--out",
                          str(tmp_path / "rec")])
