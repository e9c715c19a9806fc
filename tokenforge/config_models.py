"""Configs as a method's ``base.yaml`` plus a size overlay, composed without LightningCLI's trainer.

Every method folder under ``configs/`` holds ``base.yaml`` (what all its sizes share: model and data classes,
losses, optimiser, trainer settings) and size overlays (``tiny.yaml``, ``small.yaml``, the paper's sizes) that
hold only what differs. Training passes both, later overriding earlier, as LightningCLI does:

    tokenforge fit --config configs/tokenizers/vqgan/base.yaml --config configs/tokenizers/vqgan/tiny.yaml

This module composes the same files in Python (`compose`, with jsonargparse's merge rules: nested
``class_path``/``init_args`` specs and the top-level sections merge key by key, a changed ``class_path``
replaces the spec, lists and other values replace) and builds what a config describes without a trainer:
the inference module (`build_model`, used by the benches), the Lightning module and the data module
(`build_training_module`, `build_datamodule`, through jsonargparse as `tokenforge fit` does).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tokenforge.errors import UsageError

BASE = "base.yaml"
SECTIONS = ("trainer", "model", "data")  # top-level groups that merge key by key, as LightningCLI's parser does

Paths = str | Path | Iterable[str | Path]


def config_files(overlay: str | Path) -> list[Path]:
    """``[base.yaml, overlay]`` for a size overlay of a method folder; ``[overlay]`` for a base or a lone file."""
    path = Path(overlay)
    base = path.with_name(BASE)
    return [base, path] if path.name != BASE and base.is_file() else [path]


def fit_args(overlay: str | Path) -> list[str]:
    """``--config`` arguments for `tokenforge fit` (LightningCLI) of a size overlay: its base first."""
    return [arg for path in config_files(overlay) for arg in ("--config", str(path))]


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and ("class_path" in value or set(value) == {"init_args"})


def merge(earlier: Any, later: Any, section: bool = False) -> Any:
    """``later`` over ``earlier``: specs and sections merge key by key; anything else is replaced."""
    if not (isinstance(earlier, Mapping) and isinstance(later, Mapping)):
        return copy.deepcopy(later)
    if not section and not (_is_spec(earlier) and _is_spec(later)):
        return copy.deepcopy(later)
    if "class_path" in later and earlier.get("class_path") not in (None, later["class_path"]):
        return copy.deepcopy(later)  # another class: its own arguments only
    merged = copy.deepcopy(dict(earlier))
    for key, value in later.items():
        if key == "init_args" and isinstance(value, Mapping):
            args = dict(merged.get("init_args") or {})
            for name, arg in value.items():
                args[name] = merge(args[name], arg) if name in args else copy.deepcopy(arg)
            merged["init_args"] = args
        elif key in merged:
            merged[key] = merge(merged[key], value, section=section and key in SECTIONS)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _paths(paths: Paths) -> list[Path]:
    if isinstance(paths, (str, Path)):
        return config_files(paths)
    return [Path(p) for p in paths]


def compose(paths: Paths) -> dict[str, Any]:
    """The config that ``--config P1 --config P2 ...`` gives; a single overlay path brings its base along."""
    import yaml

    config: dict[str, Any] = {}
    for path in _paths(paths):
        if not path.is_file():
            raise UsageError(f"config {path} does not exist; give a file under configs/<area>/<method>/")
        loaded = yaml.safe_load(path.read_text()) or {}
        for key, value in loaded.items():
            config[key] = merge(config[key], value, section=key in SECTIONS) if key in config else value
    return config


def model_spec(paths: Paths) -> dict[str, Any]:
    """The inference module's ``class_path``/``init_args`` spec: ``model.init_args.model`` of the config."""
    config = compose(paths)
    spec = ((config.get("model") or {}).get("init_args") or {}).get("model")
    if not _is_spec(spec) or "class_path" not in spec:
        raise UsageError(f"{' + '.join(map(str, _paths(paths)))} names no model.init_args.model class; "
                         "give a tokenizer or generator config of configs/")
    return spec


def build_model(paths: Paths, overrides: Mapping[str, Any] | None = None) -> Any:
    """The inference module of a config (random weights), with ``overrides`` merged into its init args."""
    from tokenforge.config import build

    spec = model_spec(paths)
    if overrides:
        spec = merge(spec, {"init_args": dict(overrides)})
    return build(spec)


def _instantiate(key: str, base_class: type, spec: Any) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base_class, key, required=True, fail_untyped=False)
    return getattr(parser.instantiate_classes(parser.parse_object({key: spec})), key)


def build_training_module(paths: Paths, overrides: Mapping[str, Any] | None = None) -> Any:
    """The config's LightningModule, instantiated as `tokenforge fit` would (no trainer, no training), with
    ``overrides`` merged into its init args (as a later ``--config`` would)."""
    from lightning.pytorch import LightningModule

    spec = compose(paths)["model"]
    if overrides:
        spec = merge(spec, {"init_args": dict(overrides)})
    return _instantiate("model", LightningModule, spec)


def build_datamodule(paths: Paths) -> Any:
    """The config's LightningDataModule (no shard is opened until the trainer asks for batches)."""
    from lightning.pytorch import LightningDataModule

    return _instantiate("data", LightningDataModule, compose(paths)["data"])


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def size_config(area: str, method: str, size: str) -> Path:
    """``configs/<area>/<method>/<size>.yaml`` of this checkout (a bench's ``--size``)."""
    path = CONFIGS / area / method / f"{size}.yaml"
    if not path.is_file():
        sizes = sorted(p.stem for p in (CONFIGS / area / method).glob("*.yaml") if p.name != BASE)
        raise UsageError(f"no size {size!r} in {CONFIGS / area / method}; choose one of: {', '.join(sizes)}")
    return path


def data_args(paths: Paths) -> dict[str, Any]:
    """The data module's init args of a config (crop sizes, points per shape, ...), for benches."""
    return dict((compose(paths).get("data") or {}).get("init_args") or {})


def check_bases(argv: list[str]) -> None:
    """Refuse, in one line, a size overlay given to `tokenforge fit` without its method's base.yaml before it
    (LightningCLI would otherwise report the first option the missing base leaves unknown)."""
    given = [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    given += [Path(arg.split("=", 1)[1]) for arg in argv if arg.startswith("--config=")]
    for index, path in enumerate(given):
        base = path.with_name(BASE)
        if path.name == BASE or not base.is_file() or path.parent.parent.parent.name != CONFIGS.name:
            continue
        if not any(p.resolve() == base.resolve() for p in given[:index]):
            raise UsageError(f"{path} is a size overlay of {base}: give the base first, "
                             f"--config {base} --config {path}")
