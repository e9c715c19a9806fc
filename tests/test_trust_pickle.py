"""No file being loaded can run code: trust to unpickle comes from the caller only (`trust_pickle=True`,
``--trust-pickle``), never from a checkpoint, a release folder's ``config.json`` or a saved spec.

Malicious files are built in every format a loader accepts (torch zip and legacy pickles under every suffix,
raw pickles, a "safetensors" that is a pickle; the payload at the top, in nested dicts, in ``args``, in
optimiser states) and fed to every registered official loader (the registry is iterated, so a new loader is
covered) and to every command that loads a model. A payload that runs writes a marker file; the marker must
never appear, and each attempt must end in a `UsageError` (one line, exit code 2) or a non-zero exit code.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tokenforge import hub
from tokenforge.errors import UsageError
from tokenforge.config_models import fit_args

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tokenforge" / "samples"
# every weights file name an official loader looks for inside a release folder
WEIGHT_NAMES = ("checkpoint.pt", "model.ckpt", "checkpoint-last.pth", "state_dict.safetensors", "model.safetensors",
                "vae_ch160v4096z32.pth", "vq_state_dict.safetensors", "var_state_dict.safetensors",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors", "pytorch_model.bin",
                "nnet_ema.pth", "vae_state_dict.safetensors", "weights.ckpt")
TRUSTING_CONFIGS = (None, {"trust_pickle": True}, {"trust-pickle": True, "trust_pickle": "true"},
                    {"trust_pickle": True, "weights_only": False, "vqvae": {"trust_pickle": True},
                     "generator": {"trust_pickle": True}, "_size_overrides": {"trust_pickle": True}})


class SystemPayload:
    """Unpickling this runs ``touch MARKER`` through ``os.system`` (the issue's reproduction)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class ExecPayload:
    """Unpickling this writes MARKER through ``builtins.exec``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def placements(marker: Path) -> dict[str, object]:
    """Where a payload can hide in a checkpoint: top level, nested state, args, optimiser state, lists."""
    evil, other = SystemPayload(marker), ExecPayload(marker)
    weights = {"encoder.weight": torch.zeros(2, 2)}
    return {
        "top": evil,
        "state": {"state_dict": {**weights, "evil": evil}},
        "model": {"model": {**weights, "deep": {"deeper": [1, other]}}, "model_ema": weights},
        "args": {"model": weights, "ema": weights, "args": argparse.Namespace(lr=1e-4, hook=evil)},
        "optimizer": {"state_dict": weights, "optimizer": {"state": {0: {"exp_avg": other}}, "param_groups": []},
                      "tokenforge": {"spec": {"class_path": "tokenforge.hub.KeyReport"}}},
        "list": [weights, (evil,)],
    }


def write_variants(obj: object, folder: Path, stem: str) -> list[Path]:
    """``obj`` pickled in every container a loader may meet, under suffixes loaders accept."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for suffix in (".pt", ".pth", ".ckpt", ".bin", ".safetensors"):
        path = folder / f"{stem}-zip{suffix}"
        torch.save(obj, path)
        out.append(path)
    legacy = folder / f"{stem}-legacy.pt"
    torch.save(obj, legacy, _use_new_zipfile_serialization=False)
    raw = folder / f"{stem}-raw.pkl.pth"
    raw.write_bytes(pickle.dumps(obj, protocol=2))
    raw4 = folder / f"{stem}-raw4.ckpt"
    raw4.write_bytes(pickle.dumps(obj, protocol=4))
    return [*out, legacy, raw, raw4]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """(marker, malicious files) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("zoo")
    marker = root / "PWNED"
    files = [f for name, obj in placements(marker).items() for f in write_variants(obj, root / "files", name)]
    return marker, files


def assert_refused(marker: Path, call, *args, **kwargs) -> BaseException:
    """``call`` must raise a `UsageError` and leave no marker."""
    with pytest.raises(UsageError) as caught:
        call(*args, **kwargs)
    assert not marker.exists(), f"code ran while loading {args}"
    assert "\n" not in str(caught.value).strip() or isinstance(caught.value, hub.CheckpointError)
    return caught.value


def release_folders(root: Path, marker: Path, malicious: Path) -> list[Path]:
    """Release folders: one malicious weights file under each known name, with and without a trusting config."""
    folders = []
    for i, config in enumerate(TRUSTING_CONFIGS):
        for name in WEIGHT_NAMES:
            folder = root / f"rel{i}-{name}"
            folder.mkdir(parents=True)
            shutil.copy(malicious, folder / name)
            if config is not None:
                (folder / "config.json").write_text(json.dumps(config))
                (folder / "config.yaml").write_text("trust_pickle: true\n")
            folders.append(folder)
    return folders


# ----------------------------------------------------------------------------- official loaders


@pytest.mark.parametrize("method", hub.official_methods())
def test_official_loader_never_unpickles_a_file(method: str, zoo, tmp_path: Path) -> None:
    marker, files = zoo
    for path in files:
        assert_refused(marker, hub.from_official, method, path)
    malicious = next(f for f in files if f.name == "args-zip.pt")
    for folder in release_folders(tmp_path, marker, malicious):
        assert_refused(marker, hub.from_official, method, folder)


@pytest.mark.parametrize("method", hub.official_methods())
def test_trust_in_the_config_argument_is_refused(method: str, zoo) -> None:
    marker, files = zoo
    malicious = next(f for f in files if f.name == "top-zip.pth")
    for key in hub.TRUST_KEYS:
        error = assert_refused(marker, hub.from_official, method, malicious, {key: True})
        assert "trust_pickle" in str(error)


@pytest.mark.parametrize("method", hub.official_methods())
def test_every_loader_takes_trust_from_its_keyword_only(method: str) -> None:
    """A loader either reads no pickles (no keyword) or takes ``trust_pickle`` as a keyword defaulting to False."""
    import inspect

    parameter = inspect.signature(hub.official_loader(method)).parameters.get("trust_pickle")
    assert parameter is None or (parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is False)


def test_convert_never_unpickles(zoo, tmp_path: Path) -> None:
    from tokenforge.convert import main as convert

    marker, files = zoo
    malicious = next(f for f in files if f.name == "args-zip.pt")
    folders = release_folders(tmp_path / "releases", marker, malicious)
    for method in hub.official_methods():
        for source in [malicious, *folders[::5]]:
            assert_refused(marker, convert, [method, str(source), str(tmp_path / "out")])
    trusting = tmp_path / "settings.json"
    trusting.write_text(json.dumps({"trust_pickle": True}))
    error = assert_refused(marker, convert, ["mar", str(malicious), str(tmp_path / "out"), "--config", str(trusting)])
    assert "--trust-pickle" in str(error)
    assert not (tmp_path / "out").exists()


def test_convert_missing_source_or_wrong_file_is_one_line(tmp_path: Path) -> None:
    from tokenforge.convert import main as convert

    error = assert_refused(tmp_path / "none", convert, ["mar", str(tmp_path / "missing"), str(tmp_path / "o")])
    assert "does not exist" in str(error)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    assert_refused(tmp_path / "none", convert, ["mar", str(text), str(tmp_path / "o")])
    assert_refused(tmp_path / "none", convert, ["no_such_method", str(text), str(tmp_path / "o")])


# ----------------------------------------------------------------------------- the caller's trust works


def pickled_release(fixtures_dir: Path, tmp_path: Path, fixture: str, weights: str, wrap) -> tuple[Path, dict]:
    """A fixture's state dict re-saved as an official training checkpoint that also pickles ``args``."""
    state = hub.read_safetensors(fixtures_dir / fixture / "state_dict.safetensors")
    folder = tmp_path / fixture
    folder.mkdir()
    shutil.copy(fixtures_dir / fixture / "config.json", folder / "config.json")
    torch.save({**wrap(state), "args": argparse.Namespace(lr=1e-4, epochs=400)}, folder / weights)
    return folder, state


@pytest.mark.parametrize("fixture,weights,wrap", [
    ("mar", "checkpoint-last.pth", lambda s: {"model": s, "model_ema": s}),
    ("llamagen", "checkpoint.pt", lambda s: {"model": s}),
])
def test_trust_pickle_keyword_is_the_only_switch(fixtures_dir: Path, tmp_path: Path, fixture, weights, wrap) -> None:
    folder, state = pickled_release(fixtures_dir, tmp_path, fixture, weights, wrap)
    (folder / "state_dict.safetensors").unlink(missing_ok=True)
    with pytest.raises(hub.PickledCheckpointError, match="trust_pickle"):
        hub.from_official(fixture, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "trust_pickle": True}))
    with pytest.raises(hub.PickledCheckpointError):  # the folder's own config cannot trust itself
        hub.from_official(fixture, folder)
    loaded = hub.from_official(fixture, folder, trust_pickle=True).state_dict()
    expected = hub.from_official(fixture, fixtures_dir / fixture).state_dict()  # the fixture's safetensors
    assert loaded.keys() == expected.keys() and len(loaded) >= len(state) // 2
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_loader_reads_weights_only_first_even_when_trusted(tmp_path: Path) -> None:
    """With trust, a file that loads weights-only never meets the full unpickler (same result, no risk)."""
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.arange(3)}, path)
    assert torch.equal(hub.load_checkpoint(path, trust_pickle=True)["w"], torch.arange(3))


# ----------------------------------------------------------------------------- tokenforge's own format


def malicious_own_checkpoints(root: Path, marker: Path, files: list[Path]) -> list[Path]:
    """Folders and .ckpt files in tokenforge's layout that try to run code (pickles, or a spec naming a callable)."""
    from tokenforge.tokenizers.vqgan.model import VQGAN  # noqa: F401 - a real class for a plausible spec

    root.mkdir(parents=True, exist_ok=True)
    out: list[Path] = [f for f in files if f.suffix in {".ckpt", ".pt", ".pth"}][:6]
    command = f"touch '{marker}'"
    specs = [
        {"class_path": "os.system", "init_args": {"command": command}},
        {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(marker)]}},
        {"class_path": "builtins.exec", "init_args": {}},
        {"class_path": "tokenforge.hub.save_pretrained", "init_args": {}},
        {"class_path": "tokenforge.__main__.main", "init_args": {}},
        {"class_path": "tokenforge.tokenizers.vqgan.model.VQGAN",
         "init_args": {"quantizer": {"class_path": "os.system", "init_args": {"command": command}}}},
    ]
    for i, spec in enumerate(specs):
        folder = root / f"spec{i}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**spec, "trust_pickle": True}))
        save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
        out.append(folder)
        ckpt = root / f"spec{i}.ckpt"  # loads weights-only: only strings and tensors, the spec is the attack
        torch.save({"state_dict": {"model.w": torch.zeros(1)}, "tokenforge": {"spec": spec, "prefix": "model."}}, ckpt)
        out.append(ckpt)
    pickled = root / "pickled-weights"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"class_path": "tokenforge.hub.KeyReport"}))
    shutil.copy(files[0], pickled / "model.safetensors")
    out.append(pickled)
    return out


def test_from_pretrained_runs_nothing(zoo, tmp_path: Path) -> None:
    marker, files = zoo
    for path in malicious_own_checkpoints(tmp_path / "own", marker, files):
        assert_refused(marker, hub.from_pretrained, path)
        if path.suffix == ".ckpt" or path.is_dir():
            try:
                hub.class_path_of(path)  # reading the class path may succeed; building from it may not
            except UsageError:
                pass
    assert not marker.exists()


def test_missing_truncated_and_foreign_files_are_one_line(tmp_path: Path) -> None:
    from tokenforge.tokenizers.vqgan.model import VQGAN
    from tokenforge.tokenizers.quantizers.vq import VectorQuantizer

    assert_refused(tmp_path / "m", hub.from_pretrained, tmp_path / "nowhere")
    assert isinstance(pytest.raises(FileNotFoundError, hub.from_pretrained, tmp_path / "nowhere").value,
                      hub.CheckpointNotFoundError)
    folder = hub.save_pretrained(VQGAN(VectorQuantizer(8, 4), ch=32, ch_mult=[1, 2], num_res_blocks=1,
                                       z_channels=4, attn_last_level=False, attn_mid=False), tmp_path / "vq")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert "truncated" in str(assert_refused(tmp_path / "m", hub.from_pretrained, folder))
    ckpt = tmp_path / "half.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    assert "truncated" in str(assert_refused(tmp_path / "m", hub.from_pretrained, ckpt))
    (folder / "config.json").write_text("{not json")
    assert "JSON" in str(assert_refused(tmp_path / "m", hub.from_pretrained, folder))


# ----------------------------------------------------------------------------- commands


def command_lines(model: Path, tmp: Path) -> list[list[str]]:
    """Every command that loads a model, pointed at ``model``."""
    image = SAMPLES / "images" / "camera.png"
    speech = next((SAMPLES / "speech24k").glob("*.flac"))
    mesh = next(p for p in (SAMPLES / "meshes").iterdir() if p.suffix in {".ply", ".obj", ".off", ".stl", ".glb"})
    out = str(tmp / "out")
    m = str(model)
    return [
        ["reconstruct", "--model", m, str(image), "--out", out, "--size", "32"],
        ["evaluate", "--model", m, "--shards", str(tmp), "--out", out],
        ["generate", "--generator", m, "--tokenizer", m, "--out", out, "--n", "1"],
        ["generate", "--generator", f"official:llamagen:{m}", "--tokenizer", f"official:llamagen_vq:{m}",
         "--out", out, "--n", "1"],
        ["generate", "--official", "enat", "--model", m, "--tokenizer", f"official:mage_vqgan:{m}",
         "--out", out, "--n", "1"],
        ["generate", "--model", m, "--tokenizer", f"official:diffusers_vae:{m}", "--out", out, "--n", "1"],
        ["shards", "encode", "--tokenizer", m, str(tmp), str(tmp / "tokens")],
        ["encode", "--model", m, str(speech), "--out", out],
        ["encode", "--official", "wavtokenizer", "--model", m, str(speech), "--out", out],
        ["decode", "--model", m, str(tmp / "codes.npy"), "--out", out],
        *[["reconstruct", "--official", name, "--model", m, str(image), "--out", out, "--size", "32"]
          for name in ("flextok", "tokenflow", "llamagen_vq", "diffusers_vae")],
        ["reconstruct", str(mesh), "--model", m, "--out", out],
        ["reconstruct", "--official", "shape2vecset", "--model", m, str(mesh), "--out", out],
        ["generate", "--official", "linfusion", "--model", m, "--base", m, "--prompt", "a cat", "--out", out,
         "--height", "64", "--width", "64", "--steps", "1", "--device", "cpu"],
        *[["convert", method, m, out] for method in hub.official_methods()],
    ]


def run_command(argv: list[str]) -> int:
    """The command's exit code: `tokenforge.cli.main`'s, or the code of the exception it let through."""
    from tokenforge.cli import main

    try:
        return main(argv)
    except SystemExit as stop:  # argparse
        return int(stop.code or 0)
    except UsageError as error:
        return error.exit_code


def test_every_model_loading_command_runs_nothing(zoo, tmp_path: Path) -> None:
    import numpy as np

    marker, files = zoo
    np.save(tmp_path / "codes.npy", np.zeros(8, dtype=np.int64))
    models = malicious_own_checkpoints(tmp_path / "own", marker, files)
    models += release_folders(tmp_path / "releases", marker, next(f for f in files if f.name == "args-zip.ckpt"))[::7]
    for model in models:
        for argv in command_lines(model, tmp_path):
            code = run_command(argv)
            assert not marker.exists(), f"code ran: tokenforge {' '.join(argv)}"
            assert code != 0, f"tokenforge {' '.join(argv)} exited 0 on a malicious model"



# ----------------------------------------------------------------------------- Lightning: --ckpt_path


def tiny_gpt():
    from tokenforge.generators.autoregressive.gpt import GPT
    from tokenforge.generators.autoregressive.module import ARModule

    torch.manual_seed(0)
    return ARModule(GPT(vocab_size=16, seq_len=8, layout="sequence", dim=32, depth=1, num_heads=2, multiple_of=32,
                        num_classes=2), lr=1e-3, ema_decay=0.9)


def guarded_trainer(root: Path, steps: int):
    import lightning.pytorch as pl

    from tokenforge.safe_load import SafeCheckpointIO, guard_checkpoint_loading

    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
    assert isinstance(guard_checkpoint_loading(trainer).strategy.checkpoint_io, SafeCheckpointIO)
    return trainer


def token_loader():
    from torch.utils.data import DataLoader

    ids = torch.randint(0, 16, (8, 8), generator=torch.Generator().manual_seed(0))
    return DataLoader([{"ids": row, "cls": torch.tensor(i % 2)} for i, row in enumerate(ids)], batch_size=4)


def test_ckpt_path_refuses_pickles_and_resumes_our_own(zoo, tmp_path: Path) -> None:
    """`SafeCheckpointIO`: a pickled .ckpt is one UsageError line; our own last.ckpt (RNG state, optimiser,
    loops) still resumes weights-only."""
    marker, files = zoo
    for evil in [f for f in files if f.suffix == ".ckpt"]:
        error = assert_refused(marker, guarded_trainer(tmp_path / "e", 1).fit, tiny_gpt(), token_loader(),
                               ckpt_path=evil)
        assert "--ckpt_path" in str(error)
    assert "no such" in str(assert_refused(marker, guarded_trainer(tmp_path / "e", 1).fit, tiny_gpt(),
                                           token_loader(), ckpt_path=tmp_path / "missing.ckpt"))
    first = guarded_trainer(tmp_path / "a", 2)
    first.fit(tiny_gpt(), token_loader())
    first.save_checkpoint(tmp_path / "last.ckpt")
    resumed = guarded_trainer(tmp_path / "b", 4)
    resumed.fit(tiny_gpt(), token_loader(), ckpt_path=tmp_path / "last.ckpt")
    assert resumed.global_step == 4


def test_fit_and_validate_ckpt_path_run_nothing(zoo, shared_data: Path, tmp_path: Path) -> None:
    """`tokenforge fit|validate --ckpt_path EVIL` ends with a non-zero exit and no code run."""
    from conftest import make_face_shards

    marker, files = zoo
    make_face_shards(shared_data, tmp_path, every=16)
    config = REPO / "configs" / "tokenizers" / "vqgan" / "tiny.yaml"
    for command in ("fit", "validate"):
        for evil in [f for f in files if f.suffix == ".ckpt"][:3]:
            argv = [command, *fit_args(config), "--data.init_args.train", str(tmp_path / "raw"),
                    "--trainer.max_steps", "1", "--trainer.logger", "false", "--trainer.default_root_dir",
                    str(tmp_path / "logs"), "--ckpt_path", str(evil)]
            if command == "validate":
                argv += ["--data.init_args.val", str(tmp_path / "raw")]
            assert run_command(argv) != 0
            assert not marker.exists()
