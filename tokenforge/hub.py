"""Pretrained checkpoints: tokenforge's own format and the official releases'.

Our format is a folder with ``config.json`` (class path, init args, tokenforge
version) and ``model.safetensors``. A Lightning ``.ckpt`` written by
``tokenforge fit`` loads the same way: it carries the inference module's spec
under the ``"tokenforge"`` key. Loading never executes code from the file:
safetensors, or ``torch.load(weights_only=True)``, and a spec read from a file
may only name `Configurable` classes.

Trust comes from the caller only: unpickling is allowed solely by the
``trust_pickle=True`` keyword of `load_checkpoint` / `from_official` (what
``--trust-pickle`` passes), never by a key in a config, a release folder's
``config.json`` or a checkpoint's own contents.

Official checkpoints go through a registry filled by each method package
(`register_official` / `from_official`), with `load_mapped_state_dict` as the
one place that checks keys and shapes and reports every mismatch at once.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tokenforge.config import Configurable, build, import_object
from tokenforge.errors import UsageError
from tokenforge.methods import sources

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CKPT_KEY = "tokenforge"


def version() -> str:
    try:
        return metadata.version("tokenforge")
    except metadata.PackageNotFoundError:  # running from a plain checkout
        return "0+unknown"


class CheckpointError(UsageError, RuntimeError):
    """A checkpoint that cannot be loaded, with what to do about it (a usage error: exit code 2)."""


class PickledCheckpointError(CheckpointError):
    """The file holds pickled Python objects; loading it could run arbitrary code."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file or folder where the checkpoint was expected."""


class UnknownMethodError(UsageError, KeyError):
    """`from_official` was given a method that has no loader."""

    __str__ = Exception.__str__  # KeyError would quote the message


TRUST_KEYS = ("trust_pickle", "trust-pickle")  # never honoured from a config: trust is a caller's keyword


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
    if _is_torch_file(path):
        return _from_lightning_checkpoint(path, map_location, strict)
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / WEIGHTS_NAME
    if not (folder / CONFIG_NAME).is_file() or not weights.is_file():
        raise CheckpointError(
            f"{path} is not a tokenforge checkpoint: expected {folder / CONFIG_NAME} and {weights}. "
            "Write one with tokenforge.hub.save_pretrained(module, dir), or load an official release with "
            "tokenforge.hub.from_official(method, path)."
        )
    config = read_config_file(folder / CONFIG_NAME)
    if not isinstance(config.get("class_path"), str):
        raise CheckpointError(f"{folder / CONFIG_NAME} has no 'class_path': not written by save_pretrained")
    spec = {"class_path": config["class_path"], "init_args": config.get("init_args", {})}
    module = build(checked_spec(spec, source=str(folder / CONFIG_NAME)))
    state = read_safetensors(weights, device=str(map_location))
    _load_exact(module, state, strict, source=str(weights))
    return module.eval()


def _is_torch_file(path: Path) -> bool:
    return path.suffix == ".ckpt" or (path.is_file() and path.suffix in {".pt", ".pth"})


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON (or, by suffix, YAML) config from a file, as a dict; a trust key in it is dropped (trust comes from
    the caller only)."""
    path = Path(path)
    kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
    try:
        if kind == "YAML":
            import yaml

            try:
                config = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise ValueError(str(error)) from None
        else:
            config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"cannot read {path} as {kind} ({_first_line(error)}); fix or replace it") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a {kind} {type(config).__name__}, not an object of settings")
    return without_trust_keys(config)


def without_trust_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without ``trust_pickle`` (a file cannot switch on unpickling; only the caller's keyword can)."""
    return {k: v for k, v in config.items() if k not in TRUST_KEYS}


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with a one-line error for a truncated or foreign file."""
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"cannot read {path}: it is truncated or not a safetensors file ({_first_line(error)}); "
            "copy it again or convert the original with `tokenforge convert`"
        ) from None


def checked_spec(spec: Any, source: str) -> Any:
    """``spec`` unchanged, after checking that every ``class_path`` it would build names a `Configurable` class.

    A spec read from a file is data: building it calls the named object, so ``os.system`` or any other
    callable must be refused. Modules are imported only under ``tokenforge.`` or when already imported.
    """
    if isinstance(spec, dict) and "class_path" in spec and set(spec) <= {"class_path", "init_args"}:
        _check_class_path(spec["class_path"], source)
        if not isinstance(spec.get("init_args", {}), dict):
            raise CheckpointError(f"{source}: init_args of {spec['class_path']} is not an object")
    if isinstance(spec, dict):
        for value in spec.values():
            checked_spec(value, source)
    elif isinstance(spec, list):
        for value in spec:
            checked_spec(value, source)
    return spec


def _check_class_path(path: Any, source: str) -> None:
    refusal = (f"{source} names {path!r} to build, which is not a tokenforge module class; refused because "
               "building it could run code. Use a checkpoint written by tokenforge (save_pretrained / fit)")
    if not isinstance(path, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", path):
        raise CheckpointError(refusal)
    parts = path.split(".")
    if any(part.startswith("__") for part in parts):  # e.g. tokenforge.__main__: importing it runs the CLI
        raise CheckpointError(refusal)
    imported = any(".".join(parts[:cut]) in sys.modules for cut in range(len(parts) - 1, 0, -1))
    if not (path.startswith("tokenforge.") or imported):
        raise CheckpointError(refusal)
    try:
        obj = import_object(path)
    except (ImportError, AttributeError):
        raise CheckpointError(f"{source} names {path!r}, which does not exist in this version of tokenforge; "
                              "install the version that wrote it") from None
    if not (isinstance(obj, type) and issubclass(obj, Configurable)):
        raise CheckpointError(refusal)


def unpickling_reason(error: BaseException) -> str:
    """The informative line of torch's weights-only refusal (e.g. which global it met), without its preamble."""
    lines = [line.strip() for line in str(error).splitlines()[1:]]
    tag = "WeightsUnpickler error:"
    marked = [line.split(tag, 1)[1].strip() for line in lines if tag in line]
    for line in [*marked, *lines]:
        if line and not line.startswith(("Check the documentation", "Please file an issue", "(1)", "(2)")):
            return line.split(" was not an allowed global")[0].split(". ")[0].rstrip(".")
    return "it holds objects outside torch's weights-only allowlist"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def class_path_of(name_or_path: str | os.PathLike) -> str:
    """The ``class_path`` a checkpoint would build, read without loading its weights (a ``.ckpt`` is mmap-ed)."""
    path = resolve(name_or_path)
    if _is_torch_file(path):
        checkpoint = load_checkpoint(path, mmap=True)
        info = checkpoint.get(CKPT_KEY) if isinstance(checkpoint, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("spec"), dict) or "class_path" not in info["spec"]:
            raise CheckpointError(f"{path} has no '{CKPT_KEY}' entry: not written by `tokenforge fit`")
        return str(info["spec"]["class_path"])
    folder = path if path.is_dir() else path.parent
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path} is not a tokenforge checkpoint: {folder / CONFIG_NAME} is missing")
    class_path = read_config_file(folder / CONFIG_NAME).get("class_path")
    if not isinstance(class_path, str):
        raise CheckpointError(f"{folder / CONFIG_NAME} has no 'class_path': not written by save_pretrained")
    return class_path


def _from_lightning_checkpoint(path: Path, map_location: Any, strict: bool) -> nn.Module:
    checkpoint = load_checkpoint(path, map_location=map_location)
    info = checkpoint.get(CKPT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict) or "class_path" not in info["spec"]:
        raise CheckpointError(
            f"{path} has no '{CKPT_KEY}' entry, so it does not say which inference module it holds. "
            "Checkpoints written by `tokenforge fit` carry it; for an official release use "
            "tokenforge.hub.from_official(method, path)."
        )
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} has no 'state_dict' of tensors: not written by `tokenforge fit`")
    state = unwrap_state(checkpoint, ("state_dict",), prefix=str(info.get("prefix", "model.")), source=str(path),
                         allow_empty=True)
    module = build(checked_spec(info["spec"], source=str(path)))
    _load_exact(module, state, strict, source=str(path))
    return module.eval()


def load_checkpoint(
    path: str | os.PathLike, *, map_location: Any = "cpu", trust_pickle: bool = False, mmap: bool = False,
    trusted_globals: Iterable[type] = (),
) -> Any:
    """``torch.load`` with ``weights_only=True``; a file that needs unpickling is refused with an explanation.

    ``trust_pickle=True`` is the caller's (and only) switch for full unpickling; even then a file that loads
    weights-only is read that way (with ``trusted_globals``, e.g. ``argparse.Namespace``, added to the weights-only
    allowlist first), so only a file that needs more ever meets the full unpickler.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"no checkpoint file at {path}; check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap or None)
    except pickle.UnpicklingError as error:  # what weights_only raises for any object outside its allowlist
        if trust_pickle:
            if trusted_globals:
                try:
                    with torch.serialization.safe_globals(list(trusted_globals)):
                        return torch.load(path, map_location=map_location, weights_only=True)
                except pickle.UnpicklingError:
                    pass
            return torch.load(path, map_location=map_location, weights_only=False)
        raise PickledCheckpointError(
            f"refused to load {path}: it contains pickled Python objects, and unpickling can execute code "
            f"({unpickling_reason(error)}). If you trust its origin, pass trust_pickle=True (`--trust-pickle`) "
            "once and save it again with save_pretrained."
        ) from None
    except Exception as error:  # a truncated zip, a text file, an empty file ...
        raise CheckpointError(
            f"cannot read {path}: it is truncated or not a PyTorch checkpoint ({_first_line(error)}); "
            "copy it again, or give the checkpoint file the command expects"
        ) from None


def read_state_dict(
    path: str | os.PathLike, *, nested: Iterable[str] = ("state_dict",), prefix: str = "", strip: str = "",
    trust_pickle: bool = False, trusted_globals: Iterable[type] = (), map_location: Any = "cpu",
) -> dict[str, torch.Tensor]:
    """The one reader of weights files: a ``.safetensors`` file (`read_safetensors`) or a PyTorch / Lightning
    checkpoint (`load_checkpoint`: weights-only unless the caller passes ``trust_pickle``), then `unwrap_state`.

    ``nested``: the keys a training checkpoint keeps its state dict under, in order of preference (the first one
    present is used: ``("ema", "model")`` prefers EMA weights); a file without any of them is the state dict itself.
    ``prefix``: keep only the keys under it, without it (a Lightning module's ``model.``); ``strip``: remove it
    where present (DDP's ``module.``). Values that are not tensors (step counters, ``args``) are dropped.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        blob: Any = read_safetensors(path, device=str(map_location))
    else:
        blob = load_checkpoint(path, map_location=map_location, trust_pickle=trust_pickle,
                               trusted_globals=trusted_globals)
    return unwrap_state(blob, nested, prefix=prefix, strip=strip, source=str(path))


def unwrap_state(
    blob: Any, nested: Iterable[str] = ("state_dict",), *, prefix: str = "", strip: str = "", source: str = "checkpoint",
    allow_empty: bool = False,
) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint ``blob``: under the first key of ``nested`` it has, else at its top
    level; keys under ``prefix`` only (without it); ``strip`` removed where present. A blob with no tensors there is
    a `CheckpointError` (unless ``allow_empty``)."""
    nested = tuple(nested)
    if not isinstance(blob, Mapping):
        raise CheckpointError(f"{source} holds a {type(blob).__name__}, not a state dict")
    state = next((blob[key] for key in nested if isinstance(blob.get(key), Mapping)), blob)
    tensors = {key.removeprefix(strip) if strip else key: value for key, value in state.items()
               if isinstance(key, str) and isinstance(value, torch.Tensor)}
    if prefix:
        tensors = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    if not tensors and not allow_empty:
        under = f" under {', '.join(repr(k) for k in nested)} or at its top level" if nested else ""
        raise CheckpointError(f"{source} holds no tensors{under}{' with prefix ' + repr(prefix) if prefix else ''}: "
                              "not a state dict of this model")
    return tensors


def count_indexed(state: Mapping[str, Any], prefix: str) -> int:
    """How many consecutive sub-modules ``prefix.0``, ``prefix.1``, ... the keys of ``state`` hold (block lists
    whose length an official checkpoint does not record)."""
    n = 0
    while any(key.startswith(f"{prefix}.{n}.") for key in state):
        n += 1
    return n


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
    if not name:
        raise CheckpointNotFoundError("no checkpoint given; pass a folder, a fit .ckpt or a name")
    home = Path(os.environ.get("TOKENFORGE_HOME", Path.home() / ".cache" / "tokenforge")).expanduser()
    if (home / name).exists():
        return home / name
    cached = _huggingface_snapshot(name)
    if cached is not None:
        return cached
    raise CheckpointNotFoundError(
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

def official_sources() -> dict[str, str]:
    """Official release name -> the module that registers its loader on import, from each method's declaration."""
    return sources("official")


def register_official(method: str, loader: OfficialLoader) -> None:
    """Make ``from_official(method, path, config, trust_pickle=t)`` call ``loader(path, config, trust_pickle=t)``.

    A loader reads files only through `load_checkpoint` / `read_safetensors` (or safetensors) and takes trust
    from its ``trust_pickle`` keyword alone, never from ``config`` or a file.
    """
    _OFFICIAL[method] = loader


def official_methods() -> list[str]:
    return sorted(set(_OFFICIAL) | set(official_sources()))


def official_loader(method: str) -> OfficialLoader:
    """The registered loader of ``method`` (importing the module that registers it)."""
    if method not in _OFFICIAL and method in (known := official_sources()):
        importlib.import_module(known[method])
    if method not in _OFFICIAL:
        raise UnknownMethodError(f"no official loader for {method!r}; known: {', '.join(official_methods())}")
    return _OFFICIAL[method]


def load_tokenizer(name: str) -> nn.Module:
    """A tokenizer by checkpoint name/path (`from_pretrained`), or ``official:<method>:<path>`` (`from_official`)."""
    if name.startswith("official:"):
        _, method, path = name.split(":", 2)
        return from_official(method, path)
    return from_pretrained(name)


def from_official(
    method: str, path: str | os.PathLike, config: Mapping[str, Any] | str | os.PathLike | None = None, *,
    trust_pickle: bool = False,
) -> nn.Module:
    """Load an official release of ``method`` from a local file or folder into tokenforge's modules.

    ``config``: settings the release lacks, as a dict or as the path of a JSON or YAML file holding them (e.g.
    the release's training YAML).

    ``trust_pickle=True`` (the caller's decision, ``--trust-pickle`` on the command line) is the only way to
    let a release that pickles Python objects (training ``args``) load; a ``trust_pickle`` key in ``config``
    is refused, and one in a release's own files is ignored.
    """
    loader = official_loader(method)
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"no file or folder at {path}; give the {method} release's checkpoint file "
                                      "or folder")
    if isinstance(config, (str, os.PathLike)):
        if not Path(config).is_file():
            raise CheckpointNotFoundError(f"no config file at {config}; give the {method} release's config file")
        config = read_config_file(config)  # a trust key in a file is dropped, not refused
    if config is not None and any(key in config for key in TRUST_KEYS):
        raise UsageError("trust_pickle is not a config setting: remove it from the config and pass "
                         "trust_pickle=True to from_official (or --trust-pickle) if you trust the file")
    kwargs = {"trust_pickle": trust_pickle} if "trust_pickle" in inspect.signature(loader).parameters else {}
    if trust_pickle and not kwargs:
        raise UsageError(f"the {method} loader reads no pickled formats; drop trust_pickle / --trust-pickle")
    try:
        return loader(path, dict(config) if config is not None else None, **kwargs)
    except pickle.UnpicklingError as error:  # a library the loader used (diffusers, transformers) refused it
        raise PickledCheckpointError(f"refused to load {path}: it needs unpickling, which can execute code "
                                     f"({_first_line(error)})") from None
    except SafetensorError as error:
        raise CheckpointError(f"cannot read the weights in {path}: truncated or not safetensors "
                              f"({_first_line(error)}); copy the release again") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"a JSON file in {path} is not valid JSON ({_first_line(error)}); fix or replace "
                              "it") from None
    except FileNotFoundError as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointNotFoundError(f"{_first_line(error)}; give the {method} release's file or folder") from None
