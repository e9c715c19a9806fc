"""tokenforge.hub: our checkpoint format, name resolution, refusal of pickles, key-map reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tokenforge import hub
from tokenforge.config import Configurable


class Tiny(Configurable, nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.register_buffer("steps", torch.arange(width))


class Tied(Configurable, nn.Module):
    def __init__(self, vocab: int = 5, dim: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight


def test_save_and_load_are_bit_exact(tmp_path: Path) -> None:
    module = Tiny(4)
    folder = hub.save_pretrained(module, tmp_path / "tiny")
    config = json.loads((folder / "config.json").read_text())
    assert config["class_path"] == "test_hub.Tiny" and config["init_args"] == {"width": 4}
    assert "tokenforge_version" in config
    loaded = hub.from_pretrained(folder)
    assert type(loaded) is Tiny and not loaded.training
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_tied_weights_survive_and_stay_tied(tmp_path: Path) -> None:
    loaded = hub.from_pretrained(hub.save_pretrained(Tied(), tmp_path / "tied"))
    assert loaded.head.weight is loaded.embed.weight


def test_name_resolves_through_tokenforge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.save_pretrained(Tiny(2), tmp_path / "home" / "my-model")
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path / "home"))
    assert isinstance(hub.from_pretrained("my-model"), Tiny)
    with pytest.raises(FileNotFoundError, match=r"Place config.json and model.safetensors in .*other"):
        hub.from_pretrained("other")


def test_wrong_weights_report_every_mismatch(tmp_path: Path) -> None:
    folder = hub.save_pretrained(Tiny(3), tmp_path / "t")
    config = json.loads((folder / "config.json").read_text())
    config["init_args"]["width"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.CheckpointError, match=r"shape mismatch \(3\)"):
        hub.from_pretrained(folder)


def test_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"  # an argparse Namespace is what old training scripts pickle into checkpoints
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(hub.PickledCheckpointError, match="unpickling can execute code"):
        hub.from_pretrained(path)


def test_checkpoint_without_spec_says_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": Tiny().state_dict()}, path)
    with pytest.raises(hub.CheckpointError, match="from_official"):
        hub.from_pretrained(path)


def test_lightning_style_checkpoint_loads_inference_module(tmp_path: Path) -> None:
    module = Tiny(3)
    path = tmp_path / "fit.ckpt"
    state = {f"model.{k}": v for k, v in module.state_dict().items()}
    state["discriminator.w"] = torch.ones(2)
    torch.save({"state_dict": state, hub.CKPT_KEY: {"spec": module.spec(), "prefix": "model."}}, path)
    loaded = hub.from_pretrained(path)
    assert torch.equal(loaded.proj.weight, module.proj.weight)


def test_load_mapped_state_dict_renames_and_reports() -> None:
    target = Tiny(3)
    official = {"linear.weight": torch.randn(3, 3), "linear.bias": torch.randn(3), "steps": torch.arange(3)}
    hub.load_mapped_state_dict(target, official, [(r"^linear\.", "proj.")])
    assert torch.equal(target.proj.weight, official["linear.weight"])
    official["extra.bias"] = torch.zeros(1)
    official["linear.weight"] = torch.zeros(2, 3)
    with pytest.raises(hub.CheckpointError) as error:
        hub.load_mapped_state_dict(target, official, [(r"^linear\.", "proj.")], source="release.pt")
    text = str(error.value)
    assert "release.pt" in text and "extra.bias" in text and "proj.weight: checkpoint (2, 3) vs model (3, 3)" in text


def test_registry_names_known_methods() -> None:
    with pytest.raises(KeyError, match="known:.*var_msrq"):
        hub.from_official("no-such-method", ".")


def test_read_state_dict_unwraps_training_checkpoints(tmp_path: Path) -> None:
    """The one reader of the official loaders: nesting in order of preference, prefixes, DDP's ``module.``, only
    tensors kept; safetensors read the same way."""
    ema, raw = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    torch.save({"model": raw, "ema": ema, "epoch": 3}, tmp_path / "train.pt")
    assert torch.equal(hub.read_state_dict(tmp_path / "train.pt", nested=("ema", "model"))["w"], ema["w"])
    assert torch.equal(hub.read_state_dict(tmp_path / "train.pt", nested=("model",))["w"], raw["w"])
    torch.save({"state_dict": {"model.enc.w": torch.ones(1), "model.dec.w": torch.ones(2), "loss.w": torch.ones(3),
                               "step": 7}}, tmp_path / "fit.ckpt")
    assert set(hub.read_state_dict(tmp_path / "fit.ckpt", prefix="model.")) == {"enc.w", "dec.w"}
    torch.save({"module.a": torch.ones(1), "b": torch.ones(1)}, tmp_path / "ddp.pth")
    assert set(hub.read_state_dict(tmp_path / "ddp.pth", nested=(), strip="module.")) == {"a", "b"}
    hub.save_weights({"x": torch.arange(3.0)}, tmp_path / "w.safetensors")
    assert torch.equal(hub.read_state_dict(tmp_path / "w.safetensors")["x"], torch.arange(3.0))
    torch.save({"model": {"step": 1}}, tmp_path / "empty.pt")
    with pytest.raises(hub.CheckpointError, match="holds no tensors under 'model'"):
        hub.read_state_dict(tmp_path / "empty.pt", nested=("model",))
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(hub.CheckpointError, match="holds a list, not a state dict"):
        hub.read_state_dict(tmp_path / "list.pt")


def test_read_state_dict_takes_trust_from_the_caller_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint pickling training ``args`` is refused; trusted, a Namespace the caller allowlists is read by
    the weights-only loader, so the full unpickler never runs for it."""
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "train.pt")
    with pytest.raises(hub.PickledCheckpointError, match="trust_pickle"):
        hub.read_state_dict(tmp_path / "train.pt", nested=("model",))
    calls = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k["weights_only"]) or load(*a, **k))
    state = hub.read_state_dict(tmp_path / "train.pt", nested=("model",), trust_pickle=True,
                                trusted_globals=(argparse.Namespace,))
    assert torch.equal(state["w"], torch.ones(2)) and calls == [True, True]
    calls.clear()
    hub.read_state_dict(tmp_path / "train.pt", nested=("model",), trust_pickle=True)
    assert calls == [True, False]  # without the allowlist, trust means the full unpickler


def test_count_indexed_counts_consecutive_blocks() -> None:
    state = {"blocks.0.w": 1, "blocks.1.w": 1, "blocks.3.w": 1, "other.0.w": 1}
    assert hub.count_indexed(state, "blocks") == 2 and hub.count_indexed(state, "none") == 0
