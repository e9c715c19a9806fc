"""The codes file: what ``tokenforge encode`` writes for one input and ``tokenforge decode`` reads back.

One versioned format for every modality: a NumPy ``.npz`` (no pickles) named ``<stem>.codes.npz`` holding

- ``ids`` (grid ``[1, h, w]`` or sequence ``[1, L]``), or ``ids.0``, ``ids.1``, ... (one array per scale), as
  int16 when the vocabulary fits (int32 otherwise), read back as int64;
- ``latents`` only for continuous tokenizers (no ids), ``lengths`` when the tokenizer emits them;
- ``header``: JSON with ``format`` / ``format_version``, ``tokenforge_version``, ``method``, ``class_path``,
  ``fingerprint`` (hash of the model's spec, `tokenforge.model_spec.fingerprint`), ``modality``, ``layout``,
  ``vocab_size``, ``meta`` (the JSON part of `Tokens.meta`), ``input`` (what the tokenizer saw: image size,
  sample rate and sample count, surface points...), ``source`` (the file: name, its own size / rate /
  channels) and ``decode`` (settings decode must reuse, e.g. audio chunking). For audio, ``source`` holds
  ``source_rate`` (Hz), ``channels`` and ``seconds`` of the file before it was mixed to mono and resampled to
  the tokenizer's rate, so ``tokenforge decode --output-rate source`` writes the input's rate and exact frame
  count (`tokenforge.audio_rates`).

`portable` is what a file keeps of a `Tokens`; ``reconstruct`` decodes exactly that, so ``encode`` then
``decode`` gives what ``reconstruct`` gives, bit for bit.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "tokenforge.codes"
FORMAT_VERSION = 1
SUFFIX = ".codes.npz"


class CodesFileError(ValueError):
    """A codes file that cannot be decoded; the message is the one-line reason (starting with the file name)."""


def _json_part(meta: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``meta`` that JSON keeps as they are (tensors such as teacher-forcing inputs are dropped)."""
    kept = {}
    for key, value in meta.items():
        try:
            if json.loads(json.dumps(value)) == value or isinstance(value, tuple):
                kept[key] = list(value) if isinstance(value, tuple) else value
        except (TypeError, ValueError):
            continue
    return kept


def portable(tokens: Any) -> Any:
    """What a codes file keeps of ``tokens`` (on the CPU): ids, latents only without ids, lengths, JSON meta."""
    from tokenforge.tokenizers.base import Tokens

    ids = tokens.ids
    has_ids = ids is not None and (isinstance(ids, list) or ids.numel() > 0)
    cpu = (lambda t: None if t is None else t.detach().cpu())
    return Tokens(ids=[cpu(t) for t in ids] if isinstance(ids, list) else cpu(ids),
                  latents=None if has_ids else cpu(tokens.latents), lengths=cpu(tokens.lengths),
                  meta=_json_part(dict(tokens.meta)))


def split(tokens: Any) -> list[Any]:
    """A batch of `Tokens` -> one `Tokens` per item (batch 1 each), `portable`."""
    from tokenforge.tokenizers.base import Tokens

    tokens = portable(tokens)
    pick = (lambda t, i: None if t is None else t[i:i + 1])
    return [Tokens(ids=[t[i:i + 1] for t in tokens.ids] if isinstance(tokens.ids, list) else pick(tokens.ids, i),
                   latents=pick(tokens.latents, i), lengths=pick(tokens.lengths, i), meta=dict(tokens.meta))
            for i in range(tokens.batch_size)]


def stack(items: list[Any]) -> Any:
    """Per-item `Tokens` (of one shape) -> one batch; the first item's meta."""
    from tokenforge.tokenizers.base import Tokens

    first = items[0]
    cat = (lambda name: None if getattr(first, name) is None else torch.cat([getattr(t, name) for t in items]))
    if isinstance(first.ids, list):
        ids = [torch.cat([t.ids[s] for t in items]) for s in range(len(first.ids))]
    else:
        ids = cat("ids")
    return Tokens(ids=ids, latents=cat("latents"), lengths=cat("lengths"), meta=dict(first.meta))


def header_for(model: Any, method: str | None, fingerprint: str) -> dict[str, Any]:
    """The model part of a header: format, versions, method, class, fingerprint, modality, layout, vocabulary."""
    from tokenforge.hub import version

    try:
        vocab = int(model.vocab_size)
    except (NotImplementedError, AttributeError, TypeError):
        vocab = None
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "tokenforge_version": version(), "method": method,
            "class_path": f"{type(model).__module__}.{type(model).__qualname__}", "fingerprint": fingerprint,
            "modality": getattr(model, "modality", None), "layout": getattr(model, "token_layout", None),
            "vocab_size": vocab}


def write(path: Path, tokens: Any, header: dict[str, Any]) -> Path:
    """Write one item's `Tokens` (batch 1, `portable`) and its header to ``path``."""
    tokens = portable(tokens)
    arrays: dict[str, np.ndarray] = {}
    vocab = header.get("vocab_size") or 2**31
    dtype = np.int16 if vocab <= 2**15 else np.int32 if vocab <= 2**31 else np.int64  # read back as int64
    if isinstance(tokens.ids, list):
        arrays.update({f"ids.{s}": t.numpy().astype(dtype) for s, t in enumerate(tokens.ids)})
    elif tokens.ids is not None:
        arrays["ids"] = tokens.ids.numpy().astype(dtype)
    for name in ("latents", "lengths"):
        value = getattr(tokens, name)
        if value is not None:
            arrays[name] = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
    header = {**header, "meta": tokens.meta, "ids": "scales" if isinstance(tokens.ids, list) else "tensor"}
    arrays["header"] = np.array(json.dumps(header))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # np.savez would append .npz to a name that lacks it
        np.savez(handle, **arrays)
    return path


def read(path: Path) -> tuple[Any, dict[str, Any]]:
    """``(Tokens, header)`` of a codes file; `CodesFileError` with the reason for anything else."""
    from tokenforge.tokenizers.base import Tokens

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CodesFileError(f"{path.name}: not a readable codes file ({str(error).splitlines()[0]})") from None
    try:
        header = json.loads(str(arrays.pop("header")))
    except (KeyError, ValueError):
        raise CodesFileError(f"{path.name}: no header; not written by `tokenforge encode`") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CodesFileError(f"{path.name}: not a {FORMAT} file; write codes with `tokenforge encode`")
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise CodesFileError(f"{path.name}: codes format version {header['format_version']} is newer than this "
                             f"tokenforge reads ({FORMAT_VERSION}); upgrade tokenforge")
    tensor = (lambda name: torch.from_numpy(arrays[name]) if name in arrays else None)
    as_ids = (lambda a: torch.from_numpy(a.astype(np.int64)) if np.issubdtype(a.dtype, np.integer) else
              torch.from_numpy(a))
    scales = sorted((k for k in arrays if k.startswith("ids.")), key=lambda k: int(k.split(".")[1]))
    if header.get("ids") == "scales":
        ids = [as_ids(arrays[k]) for k in scales]
    else:
        ids = as_ids(arrays["ids"]) if "ids" in arrays else None
    return Tokens(ids=ids, latents=tensor("latents"), lengths=tensor("lengths"), meta=dict(header.get("meta", {}))), \
        header


def check_model(path: Path, header: dict[str, Any], fingerprint: str, model_spec: str) -> None:
    """`CodesFileError` (one line) when the codes were written by another model configuration."""
    if header.get("fingerprint") != fingerprint:
        raise CodesFileError(
            f"{Path(path).name}: fingerprint mismatch: written by {header.get('method') or header.get('class_path')} "
            f"with fingerprint {header.get('fingerprint')}, but --model {model_spec} has {fingerprint}; decode "
            "with the model that encoded it")


def check_ids(path: Path, tokens: Any, vocab_size: int | None) -> None:
    """`CodesFileError` (one line) unless every id is in ``[0, vocab_size)``."""
    ids = tokens.ids if isinstance(tokens.ids, list) else [tokens.ids] if tokens.ids is not None else []
    if vocab_size and any(t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab_size) for t in ids):
        raise CodesFileError(f"{Path(path).name}: token ids must be in [0, {vocab_size - 1}] for this model")
    if any(t.is_floating_point() for t in ids):
        raise CodesFileError(f"{Path(path).name}: token ids must be integers")


def code_files(items: list[Path]) -> list[Path]:
    """The codes files among ``items`` (folders searched recursively, sorted)."""
    found: list[Path] = []
    for item in items:
        found.extend(sorted(p for p in item.rglob(f"*{SUFFIX}") if p.is_file()) if item.is_dir() else [item])
    return found


def stem_of(path: Path) -> str:
    """``a.codes.npz`` -> ``a``."""
    name = Path(path).name
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else Path(path).stem
