"""configs/: every method folder is a base.yaml plus size overlays that hold only what differs.

Each overlay composes with its base exactly as `tokenforge fit --config base.yaml --config overlay.yaml`
(LightningCLI) does, `tokenforge.config_models.compose` gives the same config, and the model and data module
it describes instantiate (no training).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenforge.config_models import (
    build_datamodule,
    build_model,
    build_training_module,
    compose,
    config_files,
    fit_args,
    merge,
)

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p.parent for p in (REPO / "configs").glob("*/*/base.yaml"))
OVERLAYS = sorted(p for folder in FOLDERS for p in folder.glob("*.yaml") if p.name != "base.yaml")

# Overlays checked by parsing only (types and required arguments, test_overlay_composes_as_lightning_does):
# building them takes 7-30 s and up to 4 GiB on a CPU, or needs files that are not in the repository.
PARSE_ONLY = {
    "generators/autoregressive/gpt_b.yaml": "111 M parameters",
    "generators/autoregressive/gpt_l.yaml": "343 M parameters",
    "generators/autoregressive/var_d16.yaml": "needs VAR's released VQVAE file (model.init_args.tokenizer)",
    "generators/autoregressive/gpt_b_fsdp.yaml": "111 M parameters",
    "generators/autoregressive/gpt_l_fsdp.yaml": "343 M parameters",
    "generators/autoregressive/gpt_xl_fsdp.yaml": "775 M parameters",
    "generators/autoregressive/gpt_xxl_fsdp.yaml": "1.4 G parameters",
    "generators/autoregressive/gpt_3b_fsdp.yaml": "3.1 G parameters",
    "generators/autoregressive/var_d16_fsdp.yaml": "needs VAR's released VQVAE file (model.init_args.tokenizer)",
    "generators/ecar/mar_b.yaml": "329 M parameters",
    "generators/ecar/mar_l.yaml": "MAR-L size, about 1 G parameters with its EMA copy",
    "generators/enat/enat_l.yaml": "1.1 G parameters with its EMA copy",
    "generators/enat/enat_l_fsdp.yaml": "1.1 G parameters with its EMA copy",
    "generators/linfusion/sd15.yaml": "needs a local diffusers Stable Diffusion 1.5 folder",
    "generators/linfusion/sd21.yaml": "needs a local diffusers Stable Diffusion 2.1 folder",
    "tokenizers/flextok/d12_d12.yaml": "released size with the SDXL-style VAE, 30-60 s to build on a CPU",
    "tokenizers/flextok/d18_d18.yaml": "949 M parameters",
    "tokenizers/flextok/d18_d28.yaml": "released size, over 1 G parameters",
    "tokenizers/tokenflow/clipb_224.yaml": "needs a local CLIP ViT-B/16 teacher (768-d features)",
    "tokenizers/tokenflow/clipb_256.yaml": "needs a local CLIP ViT-B/16 teacher (768-d features)",
    "tokenizers/tokenflow/siglip_384.yaml": "985 M parameters",
    "tokenizers/vqgan/llamagen_ds16.yaml": "needs local LPIPS weights",
    "tokenizers/wavtokenizer/short_75.yaml": "158 M parameters",
    "tokenizers/wavtokenizer/small_40.yaml": "158 M parameters",
    "tokenizers/wavtokenizer/small_75.yaml": "158 M parameters",
}


def name(path: Path) -> str:
    return str(path.relative_to(REPO / "configs"))


def leaves(tree: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in leaves(value, (*prefix, key)).items()}
    return {prefix: tree}


def test_every_method_has_a_base_and_overlays() -> None:
    folders = {p.parent for p in (REPO / "configs").glob("*/*/*.yaml")}
    assert folders == set(FOLDERS), "a method folder without base.yaml"
    assert len(FOLDERS) >= 10 and len(OVERLAYS) >= 2 * len(FOLDERS) - 1
    for folder in FOLDERS:
        base = yaml.safe_load((folder / "base.yaml").read_text())
        assert base["model"]["class_path"].startswith("tokenforge."), folder
        assert base["data"]["class_path"] == "tokenforge.data.datamodule.ShardDataModule", folder
        assert (folder / "tiny.yaml").is_file(), f"{folder}: every method has a CPU size (tests, demo)"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=name)
def test_overlay_holds_only_what_differs(overlay: Path) -> None:
    own = yaml.safe_load(overlay.read_text()) or {}
    mine, flat = leaves(own), leaves(yaml.safe_load((overlay.parent / "base.yaml").read_text()))

    def same_class(key: tuple) -> bool:  # under another class_path nothing of the base's spec carries over
        for cut in range(1, len(key)):
            spec = own
            for part in key[:cut]:
                spec = spec[part]
            here = flat.get((*key[:cut], "class_path"))
            if isinstance(spec, dict) and "class_path" in spec and here is not None and spec["class_path"] != here:
                return False
        return True

    repeated = [".".join(map(str, key)) for key, value in mine.items()
                if key in flat and flat[key] == value and same_class(key)]
    assert not repeated, f"{name(overlay)} repeats its base: {repeated}"
    assert config_files(overlay) == [overlay.parent / "base.yaml", overlay]
    assert fit_args(overlay) == ["--config", str(overlay.parent / "base.yaml"), "--config", str(overlay)]


def lightning_config(overlay: Path) -> dict[str, Any]:
    """What `tokenforge fit --config base.yaml --config overlay.yaml --print_config` resolves."""
    from tokenforge.cli import lightning_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        lightning_cli(args=["fit", *fit_args(overlay), "--print_config"])
    return yaml.safe_load(out.getvalue())


def parsed(key: str, spec: Any) -> Any:
    """``spec`` through the parser `tokenforge fit` uses for ``key`` (types checked, defaults filled)."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule, LightningModule

    parser = ArgumentParser(exit_on_error=False)
    base_class = LightningModule if key == "model" else LightningDataModule
    parser.add_subclass_arguments(base_class, key, required=True, fail_untyped=False)
    return yaml.safe_load(parser.dump(parser.parse_object({key: spec}), skip_none=False))[key]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=name)
def test_overlay_composes_as_lightning_does(overlay: Path) -> None:
    resolved = lightning_config(overlay)
    composed = compose(overlay)
    assert composed == compose(config_files(overlay))
    for key in ("model", "data"):
        assert parsed(key, composed[key]) == resolved[key], key
    for key, value in composed.get("trainer", {}).items():
        if key not in ("logger", "callbacks"):
            assert resolved["trainer"][key] == value, key
    for index, callback in enumerate(composed.get("trainer", {}).get("callbacks", [])):
        assert resolved["trainer"]["callbacks"][index]["class_path"] == callback["class_path"]
    logger = composed.get("trainer", {}).get("logger")
    if logger:
        assert resolved["trainer"]["logger"]["init_args"]["name"] == logger["init_args"]["name"]
    assert resolved["seed_everything"] == composed["seed_everything"]


@pytest.mark.parametrize("overlay", [p for p in OVERLAYS if name(p) not in PARSE_ONLY], ids=name)
def test_overlay_instantiates(overlay: Path) -> None:
    import torch

    torch.manual_seed(0)
    module = build_training_module(overlay)
    spec = compose(overlay)
    assert type(module).__name__ == spec["model"]["class_path"].rsplit(".", 1)[1]
    inner = spec["model"].get("init_args", {}).get("model")
    if inner:  # the inference module is what `build_model` (the benches) builds from the same files
        assert type(module.model).__name__ == inner["class_path"].rsplit(".", 1)[1]
        assert type(build_model(overlay)) is type(module.model)
    data = build_datamodule(overlay)
    assert type(data).__name__ == "ShardDataModule"
    assert data.hparams.modality == spec["data"]["init_args"]["modality"]


def test_build_model_overrides_init_args() -> None:
    overlay = REPO / "configs/tokenizers/vat/tiny.yaml"
    model = build_model(overlay, {"codebook_size": 64, "num_latents": 4, "scales": [1, 2, 4]})
    assert model.init_args["codebook_size"] == 64 and model.init_args["scales"] == [1, 2, 4]
    assert model.init_args["dim"] == compose(overlay)["model"]["init_args"]["model"]["init_args"]["dim"]


def test_merge_follows_jsonargparse() -> None:
    earlier = {"class_path": "a.A", "init_args": {"x": 1, "sub": {"class_path": "b.B", "init_args": {"y": 2, "z": 3}},
                                                  "table": {"p": 1, "q": 2}, "items": [1, 2]}}
    later = {"init_args": {"sub": {"init_args": {"z": 4}}, "table": {"p": 5}, "items": [9]}}
    assert merge(earlier, later) == {"class_path": "a.A", "init_args": {
        "x": 1, "sub": {"class_path": "b.B", "init_args": {"y": 2, "z": 4}}, "table": {"p": 5}, "items": [9]}}
    # another class keeps none of the former class's arguments
    assert merge(earlier, {"class_path": "c.C", "init_args": {"w": 0}}) == {"class_path": "c.C", "init_args": {"w": 0}}
    assert merge(earlier, None) is None
    # top-level sections merge key by key; plain values inside them are replaced
    assert merge({"max_steps": 5, "plugins": {"a": 1}}, {"plugins": {"b": 2}}, section=True) == {
        "max_steps": 5, "plugins": {"b": 2}}


DEPRECATED = {"lr", "betas", "weight_decay", "warmup_steps", "schedule", "min_lr_ratio", "learning_rate",
              "disc_learning_rate", "num_warmup_steps", "num_training_steps"}


@pytest.mark.parametrize("overlay", OVERLAYS, ids=name)
def test_optimisation_is_given_as_optimizer_and_lr_scheduler_blocks(overlay: Path) -> None:
    """The one way to train: optimiser and schedule are YAML callables, not the modules' deprecated arguments."""
    args = compose(overlay)["model"].get("init_args", {})
    assert not DEPRECATED & set(args), f"{name(overlay)}: {sorted(DEPRECATED & set(args))} -> optimizer/lr_scheduler"
    assert args["optimizer"]["class_path"].startswith("torch.optim."), name(overlay)


def test_fit_refuses_an_overlay_without_its_base(capsys) -> None:
    from tokenforge import cli

    overlay = REPO / "configs/tokenizers/vqgan/tiny.yaml"
    assert cli.main(["fit", "--config", str(overlay), "--trainer.max_steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--config {overlay.parent / 'base.yaml'} --config {overlay}" in err[0], err
    # with the base first it parses (print_config stops before any training)
    with pytest.raises(SystemExit):
        cli.dispatch("fit", [*fit_args(overlay), "--print_config"])
