"""Where raw files come from: a folder tree, a glob, or a CSV/JSONL manifest.

Every source becomes a list of `Item` (file, key, optional label and caption) in a stable order, so the same
source always gives the same keys and the same shards. Keys are dot-free (webdataset treats everything after
the first dot of a member name as its extension) and unique.
"""

from __future__ import annotations

import csv
import glob as globlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class Item:
    """One source file and what travels with it into the shard: ``label`` -> ``cls``, ``caption`` -> ``txt``,
    ``meta`` (a JSON object's text, from a dataset layout) merged into the sample's ``json``; ``split`` fixes
    the split (a dataset's own train/val folders) instead of ``--val-fraction``."""

    path: str
    key: str
    label: int | None = None
    caption: str | None = None
    split: str | None = None
    meta: str | None = None


def make_key(relative: str) -> str:
    """``a/b/c.d.png`` -> ``a__b__c_d``: sub-folders joined by ``__``, dots and odd characters to ``_``."""
    stem = relative.rsplit(".", 1)[0] if "." in Path(relative).name else relative
    parts = [re.sub(r"[^A-Za-z0-9_\-]", "_", p) for p in Path(stem).parts]
    return "__".join(p for p in parts if p) or "sample"


def unique_keys(keys: list[str]) -> list[str]:
    """``keys`` with repeats made unique by a ``_N`` suffix (the first keeps its name)."""
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        if key in seen:
            seen[key] += 1
            key = f"{key}_{seen[key]}"
        seen.setdefault(key, 0)
        out.append(key)
    return out


def collect(src: str | Path, extensions: tuple[str, ...], labels: str = "auto") -> tuple[list[Item], list[str]]:
    """Items and class names from ``src``.

    ``labels``: ``auto`` (folder tree: the first sub-folder is the class when every file lies in one;
    manifests: their ``label`` column), ``folder`` (always from the first sub-folder) or ``none``.
    """
    text = str(src)
    path = Path(src)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return _from_manifest(path, labels)
    if path.is_dir():
        root = path
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(text, recursive=True) if Path(p).is_file())
        root = Path(_glob_root(text))
    elif path.is_file():
        files, root = [path], path.parent
    else:
        raise FileNotFoundError(f"source {text!r} is not a folder, a glob, a file, or a .csv/.jsonl manifest")
    if not files:
        raise FileNotFoundError(f"source {text!r} holds no files with extensions {', '.join(extensions)}")
    relative = [p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name for p in files]
    keys = unique_keys([make_key(r) for r in relative])
    use_folders = labels == "folder" or (labels == "auto" and all("/" in r for r in relative))
    if not use_folders:
        return [Item(str(p), k) for p, k in zip(files, keys)], []
    classes = sorted({r.split("/", 1)[0] for r in relative if "/" in r})
    index = {c: i for i, c in enumerate(classes)}
    items = [
        Item(str(p), k, index.get(r.split("/", 1)[0]) if "/" in r else None)
        for p, k, r in zip(files, keys, relative)
    ]
    return items, classes


def _glob_root(pattern: str) -> str:
    head = []
    for part in Path(pattern).parts:
        if any(ch in part for ch in "*?["):
            break
        head.append(part)
    return str(Path(*head)) if head else "."


def _from_manifest(path: Path, labels: str) -> tuple[list[Item], list[str]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows or "path" not in rows[0]:
        raise ValueError(f"{path}: a manifest needs a 'path' column (and optionally 'label', 'caption')")
    raw_labels = [r.get("label") for r in rows]
    raw_labels = [None if v in (None, "") else v for v in raw_labels]
    classes: list[str] = []
    label_of: dict[str, int] = {}
    if labels != "none" and any(v is not None for v in raw_labels):
        if all(v is None or str(v).lstrip("-").isdigit() for v in raw_labels):
            label_of = {str(v): int(v) for v in raw_labels if v is not None}
        else:
            classes = sorted({str(v) for v in raw_labels if v is not None})
            label_of = {c: i for i, c in enumerate(classes)}
    files = []
    for row in rows:
        file = Path(row["path"])
        files.append(file if file.is_absolute() else path.parent / file)
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    relative = [Path(os.path.relpath(f, root)).as_posix() for f in files]
    keys = unique_keys([make_key(r.lstrip("/")) for r in relative])
    items = [
        Item(str(f), k, label_of.get(str(v)) if v is not None else None, row.get("caption") or None)
        for f, k, v, row in zip(files, keys, raw_labels, rows)
    ]
    return items, classes
