"""Pretrained checkpoints: tokenforge's own format and the official releases'.

Our format is a folder with ``config.json`` (class path, init args, tokenforge
version) and ``model.safetensors``. A Lightning ``.ckpt`` written by
``tokenforge fit`` loads the same way: it carries the inference module's spec
under the ``"tokenforge"`` key. Loading never executes code from the file:
safetensors, or ``torch.load(weights_only=True)``.

Official checkpoints go through a registry filled by each method package
(`register_official` / `from_official`), with `load_mapped_state_dict` as the
one place that checks keys and shapes and reports every mismatch at once.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tokenforge.config import Configurable, build

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CKPT_KEY = "tokenforge"


def version() -> str:
    try:
        return metadata.version("tokenforge")
    except metadata.PackageNotFoundError:  # running from a plain checkout
        return "0+unknown"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded, with what to do about it."""


class PickledCheckpointError(CheckpointError):
    """The file holds pickled Python objects; loading it could run arbitrary code."""


# ----------------------------------------------------------------------------- our format


def save_pretrained(module: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` so `from_pretrained` rebuilds ``module`` exactly."""
    if not isinstance(module, Configurable):
        raise TypeError(f"{type(module).__name__} is not Configurable; it cannot record how to rebuild itself")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {**module.spec(), "tokenforge_version": version()}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    save_weights(_unshared_state(module.state_dict()), out / WEIGHTS_NAME)
    return out


def save_weights(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """``safetensors.save_file`` with the file mode a plain ``open`` would give (0644 under umask 022):
    safetensors writes 0600 files, which the group could not read."""
    save_file(dict(state), str(path), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return Path(path)


def _unshared_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): store each as its own copy."""
    seen: set[tuple[int, int]] = set()
    result = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else None
        if ident is not None and ident in seen:
            tensor = tensor.clone()
        elif ident is not None:
            seen.add(ident)
        result[key] = tensor.contiguous()
    return result


def from_pretrained(
    name_or_path: str | os.PathLike, *, map_location: str | torch.device = "cpu", strict: bool = True
) -> nn.Module:
    """Restore a module from a folder, a ``.safetensors`` beside its config, a Lightning ``.ckpt``, or a name.

    Names resolve to local files: an explicit path, else ``$TOKENFORGE_HOME/<name>/``, else the Hugging Face
    cache when ``huggingface_hub`` is installed (downloading only when online).
    """
    path = resolve(name_or_path)
    if path.suffix == ".ckpt" or (path.is_file() and path.suffix in {".pt", ".pth"}):
        return _from_lightning_checkpoint(path, map_location, strict)
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / WEIGHTS_NAME
    if not (folder / CONFIG_NAME).is_file() or not weights.is_file():
        raise CheckpointError(
            f"{path} is not a tokenforge checkpoint: expected {folder / CONFIG_NAME} and {weights}. "
            "Write one with tokenforge.hub.save_pretrained(module, dir), or load an official release with "
            "tokenforge.hub.from_official(method, path)."
        )
    config = json.loads((folder / CONFIG_NAME).read_text())
    module = build({"class_path": config["class_path"], "init_args": config.get("init_args", {})})
    state = load_file(str(weights), device=str(map_location))
    _load_exact(module, state, strict, source=str(weights))
    return module.eval()


def class_path_of(name_or_path: str | os.PathLike) -> str:
    """The ``class_path`` a checkpoint would build, read without loading its weights (a ``.ckpt`` is mmap-ed)."""
    path = resolve(name_or_path)
    if path.suffix == ".ckpt" or (path.is_file() and path.suffix in {".pt", ".pth"}):
        info = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(CKPT_KEY)
        if not isinstance(info, dict) or "spec" not in info:
            raise CheckpointError(f"{path} has no '{CKPT_KEY}' entry: not written by `tokenforge fit`")
        return info["spec"]["class_path"]
    folder = path if path.is_dir() else path.parent
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path} is not a tokenforge checkpoint: {folder / CONFIG_NAME} is missing")
    return json.loads((folder / CONFIG_NAME).read_text())["class_path"]


def _from_lightning_checkpoint(path: Path, map_location: Any, strict: bool) -> nn.Module:
    checkpoint = load_checkpoint(path, map_location=map_location)
    info = checkpoint.get(CKPT_KEY)
    if not isinstance(info, dict) or "spec" not in info:
        raise CheckpointError(
            f"{path} has no '{CKPT_KEY}' entry, so it does not say which inference module it holds. "
            "Checkpoints written by `tokenforge fit` carry it; for an official release use "
            "tokenforge.hub.from_official(method, path)."
        )
    prefix = info.get("prefix", "model.")
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    module = build(info["spec"])
    _load_exact(module, state, strict, source=str(path))
    return module.eval()


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; a file that needs unpickling is refused with an explanation."""
    if trust_pickle:
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError (or a RuntimeError wrapping it)
        if "weights_only" not in str(error) and "Unpickl" not in type(error).__name__:
            raise
        raise PickledCheckpointError(
            f"refused to load {path}: it contains pickled Python objects, and unpickling can execute code "
            f"({str(error).splitlines()[0]}). If you trust its origin, convert it once with "
            "tokenforge.hub.load_checkpoint(path, trust_pickle=True) and save it again with save_pretrained."
        ) from None


def _load_exact(module: nn.Module, state: Mapping[str, torch.Tensor], strict: bool, source: str) -> None:
    report = KeyReport.compare(module.state_dict(), state)
    if strict and not report.ok:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}:\n{report}")
    module.load_state_dict({k: v for k, v in state.items() if k not in report.mis_shaped}, strict=False)


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Turn a path or a checkpoint name into a local path, or say where to put the files."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path)
    home = Path(os.environ.get("TOKENFORGE_HOME", Path.home() / ".cache" / "tokenforge")).expanduser()
    if (home / name).exists():
        return home / name
    cached = _huggingface_snapshot(name)
    if cached is not None:
        return cached
    raise FileNotFoundError(
        f"no checkpoint '{name}': not a path, not in $TOKENFORGE_HOME ({home / name}), and not in the Hugging Face "
        f"cache. Place {CONFIG_NAME} and {WEIGHTS_NAME} in {home / name}/ (or pass the folder's path)."
    )


def _huggingface_snapshot(name: str) -> Path | None:
    if name.count("/") != 1 or name.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    patterns = [CONFIG_NAME, WEIGHTS_NAME]
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in {"0", "", "false", "False"}
    for local_only in ([True] if offline else [True, False]):
        try:
            return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=local_only))
        except Exception:  # not cached, offline, or no such repository
            continue
    return None


# ----------------------------------------------------------------------------- official releases


class KeyReport:
    """Missing, unexpected and mis-shaped keys between a module and a state dict."""

    def __init__(self, missing: list[str], unexpected: list[str], mis_shaped: dict[str, tuple]) -> None:
        self.missing, self.unexpected, self.mis_shaped = missing, unexpected, mis_shaped

    @classmethod
    def compare(cls, expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> KeyReport:
        missing = sorted(set(expected) - set(given))
        unexpected = sorted(set(given) - set(expected))
        mis_shaped = {
            k: (tuple(given[k].shape), tuple(expected[k].shape))
            for k in sorted(set(expected) & set(given))
            if tuple(given[k].shape) != tuple(expected[k].shape)
        }
        return cls(missing, unexpected, mis_shaped)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def __str__(self) -> str:
        def block(title: str, items: Iterable[str]) -> str:
            items = list(items)
            shown = "\n".join(f"    {i}" for i in items[:40])
            more = f"\n    ... and {len(items) - 40} more" if len(items) > 40 else ""
            return f"  {title} ({len(items)}):\n{shown}{more}" if items else ""

        shapes = [f"{k}: checkpoint {a} vs model {b}" for k, (a, b) in self.mis_shaped.items()]
        parts = [block("missing from checkpoint", self.missing), block("unexpected in checkpoint", self.unexpected),
                 block("shape mismatch", shapes)]
        return "\n".join(p for p in parts if p) or "  all keys match"


KeyMap = Callable[[str], str | None] | Iterable[tuple[str, str]]


def map_keys(state: Mapping[str, torch.Tensor], key_map: KeyMap | None) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys: a function (None drops the key) or ordered ``(regex, replacement)`` rules."""
    if key_map is None:
        return dict(state)
    if not callable(key_map):
        rules = [(re.compile(p), r) for p, r in key_map]

        def key_map(key: str) -> str | None:  # noqa: F811 - rules become a function
            for pattern, replacement in rules:
                key = pattern.sub(replacement, key)
            return key

    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key_map(key)
        if new is None:
            continue
        if new in renamed:
            raise CheckpointError(f"key map sends two checkpoint keys to {new!r} (one is {key!r})")
        renamed[new] = value
    return renamed


def load_mapped_state_dict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    key_map: KeyMap | None = None,
    *,
    ignore_unexpected: Iterable[str] = (),
    ignore_missing: Iterable[str] = (),
    source: str = "checkpoint",
) -> KeyReport:
    """Load an official state dict through a key map; raise one error listing every mismatch.

    ``ignore_*`` are regexes for keys known to differ on purpose (e.g. buffers that one side recomputes).
    """
    renamed = map_keys(state, key_map)
    report = KeyReport.compare(module.state_dict(), renamed)
    skip_unexpected = [re.compile(p) for p in ignore_unexpected]
    skip_missing = [re.compile(p) for p in ignore_missing]
    report.unexpected = [k for k in report.unexpected if not any(p.search(k) for p in skip_unexpected)]
    report.missing = [k for k in report.missing if not any(p.search(k) for p in skip_missing)]
    if not report.ok:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}:\n{report}")
    own = module.state_dict()
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in renamed.items() if k in own}, strict=False)
    return report


OfficialLoader = Callable[..., nn.Module]
_OFFICIAL: dict[str, OfficialLoader] = {}

# method name -> module that registers its loader on import (filled in as methods land)
OFFICIAL_SOURCES: dict[str, str] = {
    "flextok": "tokenforge.tokenizers.flextok.official",
    "var_msrq": "tokenforge.tokenizers.quantizers.official_var",
    "var_vqvae": "tokenforge.tokenizers.vqgan.official",
    "llamagen_vq": "tokenforge.tokenizers.vqgan.official",
    "llamagen": "tokenforge.generators.autoregressive.official",
    "var": "tokenforge.generators.autoregressive.official",
    "wavtokenizer": "tokenforge.tokenizers.wavtokenizer.official",
    "tokenflow": "tokenforge.tokenizers.tokenflow.official",
    "mar": "tokenforge.generators.ecar.official",
    "diffusers_vae": "tokenforge.tokenizers.klvae.official",
    "linfusion": "tokenforge.generators.linfusion.official",
    "shape2vecset": "tokenforge.tokenizers.vat.official",
    "enat": "tokenforge.generators.enat.official",
    "mage_vqgan": "tokenforge.tokenizers.vqgan.mage",
}


def register_official(method: str, loader: OfficialLoader) -> None:
    """Make ``from_official(method, path, config)`` call ``loader(path, config)``."""
    _OFFICIAL[method] = loader


def official_methods() -> list[str]:
    return sorted(set(_OFFICIAL) | set(OFFICIAL_SOURCES))


def from_official(method: str, path: str | os.PathLike, config: Mapping[str, Any] | None = None) -> nn.Module:
    """Load an official release of ``method`` from a local file or folder into tokenforge's modules."""
    if method not in _OFFICIAL and method in OFFICIAL_SOURCES:
        importlib.import_module(OFFICIAL_SOURCES[method])
    if method not in _OFFICIAL:
        raise KeyError(f"no official loader for {method!r}; known: {', '.join(official_methods())}")
    return _OFFICIAL[method](Path(path), dict(config) if config is not None else None)
