"""Every failure of a `tokenforge` command ends as one line on stderr with a useful message and the exit code of
`tokenforge.errors` (2 wrong input, 1 failed, 130 Ctrl-C); the traceback only with ``--debug``.

The commands run in-process through `tokenforge.cli.main`, on tiny real models saved with `save_pretrained`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
import torch

from tokenforge import cli
from tokenforge.failure import config_error_line
from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.hub import save_pretrained
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.vqgan.model import VQGAN
from tokenforge.config_models import fit_args

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny VQGAN tokenizer and a tiny GPT, plus broken files made from them."""
    root = tmp_path_factory.mktemp("cli_errors")
    torch.manual_seed(0)
    vq = VQGAN(VectorQuantizer(16, 8), ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=32,
               attn_last_level=False, attn_mid=False)
    save_pretrained(vq.eval(), root / "vq")
    save_pretrained(GPT(vocab_size=16, seq_len=16, dim=32, depth=1, num_heads=2, num_classes=2, multiple_of=32).eval(),
                    root / "gpt")
    shutil.copytree(root / "vq", root / "truncated")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(lr=1.0)}, root / "pickled.ckpt")
    return {"root": root, "vq": root / "vq", "gpt": root / "gpt", "truncated": root / "truncated",
            "pickled": root / "pickled.ckpt"}


def run(argv: list[str], capfd: pytest.CaptureFixture) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capfd.readouterr().err


def assert_one_line(err: str, command: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"tokenforge {command}: " if command else "tokenforge: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_unknown_command(capfd) -> None:
    code, err = run(["no-such-command"], capfd)
    assert code == 2
    assert_one_line(err, "", "unknown command 'no-such-command'", "tokenforge --help")


def test_generate_with_a_tokenizer_as_generator(models, tmp_path, capfd) -> None:
    code, err = run(["generate", "--generator", str(models["vq"]), "--tokenizer", str(models["vq"]),
                     "--out", str(tmp_path / "out")], capfd)
    assert code == 2
    assert_one_line(err, "generate", "holds a VQGAN", "is a tokenizer", "--tokenizer")
    assert not (tmp_path / "out" / "ids.npy").exists()


def test_generate_with_a_generator_as_tokenizer(models, tmp_path, capfd) -> None:
    code, err = run(["generate", "--generator", str(models["gpt"]), "--tokenizer", str(models["gpt"]),
                     "--out", str(tmp_path / "out")], capfd)
    assert code == 2
    assert_one_line(err, "generate", "--tokenizer", "cannot decode tokens")


def test_generate_with_a_missing_model_path(models, tmp_path, capfd) -> None:
    missing = tmp_path / "no_such_model"
    code, err = run(["generate", "--generator", str(missing), "--tokenizer", str(models["vq"]),
                     "--out", str(tmp_path / "out")], capfd)
    assert code == 2
    assert_one_line(err, "generate", str(missing))


@pytest.mark.parametrize("command", ["generate"])
def test_generate_on_cuda_without_a_gpu(command, models, tmp_path, capfd, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run([command, "--generator", str(models["gpt"]), "--tokenizer", str(models["vq"]), "--device", "cuda",
                     "--out", str(tmp_path / "out")], capfd)
    assert code == 2
    assert_one_line(err, command, "--device cuda", "no CUDA GPU", "--device cpu")


def test_generate_refuses_another_methods_option(models, tmp_path, capfd) -> None:
    code, err = run(["generate", "--generator", str(models["gpt"]), "--tokenizer", str(models["vq"]),
                     "--stages", "2", "--out", str(tmp_path / "out")], capfd)
    assert code == 2
    assert_one_line(err, "generate", "--stages is an option of ecar", "autoregressive's")


@pytest.mark.parametrize(("command", "what"), [("encode", "no image files"), ("decode", "no codes files")])
def test_tokenizer_verbs_without_usable_inputs(command, what, models, tmp_path, capfd) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("nothing to encode\n")
    code, err = run([command, "--model", str(models["vq"]), str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                    capfd)
    assert code == 2
    assert_one_line(err, command, what)


def test_debug_shows_the_traceback_and_the_line(models, tmp_path, capfd) -> None:
    argv = ["generate", "--generator", str(models["vq"]), "--tokenizer", str(models["vq"]),
            "--out", str(tmp_path / "out")]
    code, err = run(["--debug", *argv], capfd)
    assert code == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("tokenforge generate: ")
    code, err = run(["encode", "--model", str(models["vq"]), str(tmp_path), "--out", str(tmp_path / "o"), "--debug"],
                    capfd)
    assert code == 2
    assert "Traceback" in err and "UsageError" in err
    assert err.strip().splitlines()[-1].startswith("tokenforge encode: ")


def test_a_bug_is_one_line_with_the_debug_hint(monkeypatch, capfd) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "boom", ("tests_helper_boom:main", "raises"))
    module = type(cli)("tests_helper_boom")
    module.main = lambda argv: [][1]  # an IndexError: a bug, not the user's fault
    monkeypatch.setitem(__import__("sys").modules, "tests_helper_boom", module)
    code, err = run(["boom"], capfd)
    assert code == 1
    assert_one_line(err, "boom", "internal error: IndexError", "rerun with --debug")
    code, err = run(["boom", "--debug"], capfd)
    assert code == 1 and "Traceback" in err and "IndexError" in err


@pytest.mark.parametrize(("raised", "code", "needle"), [
    (KeyboardInterrupt(), 130, "interrupted"),
    (SystemExit("the model is not an audio tokenizer"), 1, "the model is not an audio tokenizer"),
    (FileNotFoundError(2, "No such file or directory", "/no/such/file.wav"), 2, "/no/such/file.wav"),
])
def test_common_endings(raised, code, needle, monkeypatch, capfd) -> None:
    def main(argv):
        raise raised

    module = type(cli)("tests_helper_raise")
    module.main = main
    monkeypatch.setitem(__import__("sys").modules, "tests_helper_raise", module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "raise", ("tests_helper_raise:main", "raises"))
    got, err = run(["raise"], capfd)
    assert got == code
    assert_one_line(err, "raise", needle)


def test_system_exit_codes_pass_through(monkeypatch, capfd) -> None:
    module = type(cli)("tests_helper_exit")
    module.main = lambda argv: (_ for _ in ()).throw(SystemExit(3))
    monkeypatch.setitem(__import__("sys").modules, "tests_helper_exit", module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "exit3", ("tests_helper_exit:main", "exits 3"))
    code, err = run(["exit3"], capfd)
    assert code == 3 and err == ""


@pytest.mark.parametrize("args", [
    ["--config", "no_such_config.yaml"],
    [*fit_args(REPO / "configs/tokenizers/vqgan/tiny.yaml"), "--trainer.max_stepz", "3"],
    [*fit_args(REPO / "configs/tokenizers/vqgan/tiny.yaml"), "--model.init_args.model.init_args.ch", "wide"],
])
def test_fit_config_errors_are_one_line(args, tmp_path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run(["fit", *args], capfd)
    assert code == 2
    line = assert_one_line(err, "fit", "--help")
    assert ("no_such_config.yaml" in line or "max_stepz" in line
            or "model (VQGANModule) > model (VQGAN) > ch: " in line), line


def test_fit_with_a_pickled_checkpoint(models, shared_data, tmp_path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "camera.png", "coffee.png", "chelsea.png"):
        shutil.copy(shared_data / "images" / name, photos / name)
    assert cli.main(["--quiet", "shards", "make", "images", str(photos), str(tmp_path / "shards"),
                     "--max-side", "64"]) == 0
    capfd.readouterr()
    code, err = run(["fit", *fit_args(REPO / "configs/tokenizers/vqgan/tiny.yaml"),
                     "--data.init_args.train", str(tmp_path / "shards"), "--ckpt_path", str(models["pickled"])], capfd)
    assert code == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tokenforge fit: ") and "pickled Python objects" in last, last


def test_global_flags_anywhere_before_a_separator() -> None:
    assert cli.split_global_flags(["--quiet", "fit", "--debug", "--config", "a.yaml"]) == (
        {"--quiet", "--debug"}, ["fit", "--config", "a.yaml"])
    assert cli.split_global_flags(["linfusion", "--", "--quiet"]) == (set(), ["linfusion", "--", "--quiet"])


def test_config_error_line_names_the_keys_and_the_reason() -> None:
    message = ('Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
               "    - Problem with given class_path 'tokenforge.tokenizers.vqgan.module.VQGANModule':\n"
               '        Parser key "model":\n'
               "          Problem with given class_path 'tokenforge.tokenizers.vqgan.model.VQGAN':\n"
               '            Parser key "ch":\n              Expected a <class \'int\'>. Got value: foo\n'
               "    - Expected a <class 'NoneType'>\n")
    assert config_error_line(message) == ("model (VQGANModule) > model (VQGAN) > ch: Expected a <class 'int'>. "
                                          "Got value: foo")
    assert config_error_line("unrecognized arguments: --x") == "unrecognized arguments: --x"


# ----------------------------------------------------------------------------- the list, end to end
# The cases other parts of the issue fixed (loading, reconstruct, convert), checked here through the CLI.


def image(tmp_path: Path) -> str:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(path)
    return str(path)


@pytest.mark.parametrize(("case", "needle"), [
    ("missing", "no_such_model"),
    ("truncated", "truncated"),
    ("pickled", "pickled"),
    ("generator", "is a generator"),
    ("size0", "--size 0"),
])
def test_reconstruct_failures_are_one_line(case, needle, models, tmp_path, capfd) -> None:
    model = {"missing": str(tmp_path / "no_such_model"), "truncated": str(models["truncated"]),
             "pickled": str(models["pickled"]), "generator": str(models["gpt"]), "size0": str(models["vq"])}[case]
    extra = ["--size", "0"] if case == "size0" else []
    code, err = run(["reconstruct", "--model", model, image(tmp_path), "--out", str(tmp_path / "rec"), *extra], capfd)
    assert code == 2
    assert_one_line(err, "reconstruct", needle)


@pytest.mark.parametrize("case", ["missing", "wrong_file"])
def test_convert_failures_are_one_line(case, tmp_path, capfd) -> None:
    source = tmp_path / "no_such_release"
    if case == "wrong_file":
        source = tmp_path / "notes.txt"
        source.write_text("not a checkpoint\n")
    code, err = run(["convert", "llamagen_vq", str(source), str(tmp_path / "out")], capfd)
    assert code == 2
    assert_one_line(err, "convert", str(source.name))
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("layout", ["missing", "empty", "not_a_pipeline"])
def test_linfusion_base_that_is_not_a_diffusers_folder(layout, tmp_path, capfd) -> None:
    base = tmp_path / "sd"
    if layout != "missing":
        base.mkdir()
    if layout == "not_a_pipeline":
        (base / "config.json").write_text("{}")
    code, err = run(["generate", "--official", "linfusion", "--model", str(tmp_path), "--base", str(base), "--prompt",
                     "a lighthouse", "--out", str(tmp_path / "o")], capfd)
    assert code == 2
    assert_one_line(err, "generate", "model_index.json")
