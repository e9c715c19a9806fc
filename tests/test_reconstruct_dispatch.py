"""`tokenforge reconstruct` hands TokenFlow / FlexTok / VAT checkpoints to their own reconstruct commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_flextok_training import tiny as tiny_flextok  # tests/ is on sys.path

from tokenforge import hub
from tokenforge.cli import main as tokenforge_main
from tokenforge.reconstruct import dedicated_command
from tokenforge.reconstruct import main as reconstruct_main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flextok_checkpoint_goes_to_the_flextok_command(tmp_path: Path, shared_data: Path) -> None:
    hub.save_pretrained(tiny_flextok(), tmp_path / "flextok")
    assert hub.class_path_of(tmp_path / "flextok").endswith(".FlexTok")
    argv = ["reconstruct", "--model", str(tmp_path / "flextok"), str(shared_data / "images" / "coffee.png"),
            "--out", str(tmp_path / "rec"), "--tokens", "1,8", "--size", "16", "--steps", "2", "--device", "cpu"]
    assert tokenforge_main(argv) == 0
    metrics = json.loads((tmp_path / "rec" / "metrics.json").read_text())
    assert set(metrics["mean"]) == {"psnr_k1", "psnr_k8"}  # FlexTok's PSNR-per-k output, not the generic one


def test_other_tokenizers_and_bad_models_stay_on_the_generic_path(tmp_path: Path) -> None:
    from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
    from tokenforge.tokenizers.vqgan.model import VQGAN

    vqgan = VQGAN(VectorQuantizer(16, 4), ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=4,
                  attn_last_level=False, attn_mid=False)
    hub.save_pretrained(vqgan, tmp_path / "vqgan")
    assert dedicated_command(["--model", str(tmp_path / "vqgan"), "a.png", "--out", "x"]) is None
    assert dedicated_command([f"--model={tmp_path / 'missing'}", "a.png"]) is None
    with pytest.raises(SystemExit):  # the generic parser reports the missing input file (tokenforge.cli: exit 2)
        reconstruct_main(["--model", str(tmp_path / "vqgan"), str(tmp_path / "none.png"), "--out",
                          str(tmp_path / "rec")])
