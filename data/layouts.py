"""The field's dataset layouts as `Item`s: labels (``cls``), text (``txt``) and facts (``json``) beside each file.

`collect_layout(src, kind, layout, ...)` reads a folder laid out as a dataset is distributed, or detects the
layout (``auto``), and falls back to `tokenforge.data.sources.collect` (``files``: a folder tree, a glob, a
CSV/JSONL manifest). Every layout gives items in a stable order, so ``--resume`` and reruns see the same keys.

- ``imagenet`` (images): train class folders ``nXXXXXXXX/*.JPEG`` -> ``cls`` = the index of the wnid among the
  sorted wnids (the order of ``LOC_synset_mapping.txt``, which is sorted too); the validation layout, a flat folder
  of images with a label file: Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``, the first wnid of
  the prediction string) or lines ``FILE LABEL`` (``val.txt``, ``val_labels.txt``; LABEL a wnid or a class index).
  A root holding ``train/`` and ``val/`` (or Kaggle's ``ILSVRC/Data/CLS-LOC/{train,val}``) makes both splits in
  one run; a validation folder alone makes ``val`` shards. ``txt`` is the class name from
  ``LOC_synset_mapping.txt`` / ``synset_words.txt`` when one is found, else the wnid.
- ``librispeech`` / ``libritts`` (audio): ``speaker/chapter/*.flac|wav`` with ``SPEAKER-CHAPTER.trans.txt``
  (LibriSpeech) or ``UTTERANCE.normalized.txt`` / ``.original.txt`` / ``*.trans.tsv`` (LibriTTS) -> ``txt`` =
  the transcript (LibriTTS: normalised), ``cls`` = the speaker's index among the sorted speaker ids; ``json`` gets
  speaker, chapter, utterance and, from ``SPEAKERS.TXT`` / ``speakers.tsv`` when found, gender and subset.
- ``shapenet`` (meshes): ``CATEGORY/MODEL/models/model_normalized.obj`` (v2), ``CATEGORY/MODEL/model.obj`` (v1) or
  ``CATEGORY/*.obj|glb``; ``cls`` = the category folder's index, ``txt`` = its name from ``taxonomy.json`` (first
  synonym) or the folder name.
- ``objaverse`` (meshes): GLB files named by their uid (``glbs/000-000/UID.glb``) with metadata JSON found under
  the folder or given as ``label_file`` (``.json``/``.json.gz``): annotations ``{uid: {name, categories, tags}}``,
  LVIS ``{category: [uid, ...]}``, or a list of ``{uid, category, name}`` -> ``cls`` = the category's index,
  ``txt`` = the object's name (else its category).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenforge.data.sources import Item, collect, make_key, unique_keys
from tokenforge.errors import UsageError

LAYOUTS: dict[str, tuple[str, ...]] = {
    "images": ("imagenet",),
    "audio": ("librispeech", "libritts"),
    "meshes": ("shapenet", "objaverse"),
}
WNID = re.compile(r"^n\d{8}$")
SYNSET = re.compile(r"^\d{8}$")
OBJAVERSE_BATCH = re.compile(r"^\d{3}-\d{3}$")  # glbs/000-023/: a download batch, not a category
VAL_LABEL_FILES = ("LOC_val_solution.csv", "val_labels.csv", "val_labels.txt", "val.txt")
SYNSET_NAME_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "synsets.txt")
MESH_MODEL_FILES = ("models/model_normalized.obj", "model_normalized.obj", "model.obj")


def choices(kind: str) -> tuple[str, ...]:
    """The ``--layout`` values of a shard kind."""
    return ("auto", "files", *LAYOUTS.get(kind, ()))


def collect_layout(src: Any, kind: str, layout: str = "auto", extensions: tuple[str, ...] = (),
                   labels: str = "auto", label_file: Any = None) -> tuple[list[Item], list[str], str]:
    """Items, class names (index = ``cls``) and the layout read (detected when ``layout`` is ``auto``)."""
    if layout not in choices(kind):
        raise UsageError(f"--layout {layout} does not fit {kind}; choose one of {', '.join(choices(kind))}")
    root = Path(str(src))
    if layout == "auto":
        layout = detect(root, kind)
    if layout == "files":
        items, classes = collect(src, extensions, labels)
        return items, classes, layout
    if not root.is_dir():
        raise UsageError(f"--layout {layout} reads a folder; {src} is not one")
    items, classes = READERS[layout](root, extensions, Path(label_file) if label_file else None)
    if not items:
        raise FileNotFoundError(f"{src}: no {', '.join(extensions)} files in the {layout} layout")
    if labels == "none":
        items = [Item(i.path, i.key, None, i.caption, i.split, i.meta) for i in items]
        classes = []
    return items, classes, layout


def detect(root: Path, kind: str) -> str:
    """The layout a folder is in (``files`` when it is none of the known ones)."""
    if not root.is_dir():
        return "files"
    if kind in ("images", "image"):
        train, val = imagenet_folders(root)
        if train is not None or (val is not None and _wnid_folders(val)):
            return "imagenet"
        labels = find_file(val, root, VAL_LABEL_FILES) if val is not None else None
        # a validation folder with a label file: only with ImageNet's own names, not any photos beside a val.txt
        ours = labels is not None and (labels.name == VAL_LABEL_FILES[0] or _first(val, "ILSVRC*_val_*"))
        return "imagenet" if ours else "files"
    if kind in ("audio", "sound"):
        if _first(root, "*.normalized.txt") or _first(root, "*.trans.tsv"):
            return "libritts"
        return "librispeech" if _first(root, "*.trans.txt") else "files"
    if kind in ("meshes", "mesh"):
        folders = _subfolders(root)
        if (root / "taxonomy.json").is_file() or (folders and all(SYNSET.match(f.name) for f in folders)):
            return "shapenet"
        if _first(root, "*.glb") and (_metadata_files(root) or _first(root, "[0-9a-f]" * 32 + ".glb")):
            return "objaverse"
    return "files"


# ----------------------------------------------------------------------------- ImageNet


def imagenet_folders(root: Path) -> tuple[Path | None, Path | None]:
    """(train folder of wnid class folders, validation folder) of an ImageNet copy rooted at ``root``."""
    if _wnid_folders(root):
        return root, None
    train = val = None
    for base in (root, root / "ILSVRC/Data/CLS-LOC", root / "Data/CLS-LOC"):
        if train is None and _wnid_folders(base / "train"):
            train = base / "train"
        if val is None and (base / "val").is_dir():
            val = base / "val"
    if train is None and val is None:
        val = root  # a flat folder of images: the validation layout when a label file goes with it
    return train, val


def read_imagenet(root: Path, extensions: tuple[str, ...], label_file: Path | None) -> tuple[list[Item], list[str]]:
    train, val = imagenet_folders(root)
    found: list[tuple[Path, str | int, str | None]] = []  # (file, wnid or class index, split)
    split_of_train = "train" if val is not None else None  # a train folder alone: --val-fraction decides
    if train is not None:
        for folder in _wnid_folders(train):
            found += [(f, folder.name, split_of_train) for f in _files(folder, extensions)]
    if val is not None:
        if _wnid_folders(val):  # a validation folder already sorted into class folders
            found += [(f, d.name, "val") for d in _wnid_folders(val) for f in _files(d, extensions)]
        else:
            labels_path = label_file or find_file(val, root, VAL_LABEL_FILES)
            if labels_path is None:
                raise UsageError(f"ImageNet validation folder {val}: no label file ({', '.join(VAL_LABEL_FILES)}) "
                                 "beside it or above it; pass --label-file")
            labels = read_val_labels(labels_path)
            files = _files(val, extensions, recursive=False)
            missing = [f.name for f in files if f.stem not in labels]
            if missing:
                warnings.warn(f"{len(missing)} validation images have no label in {labels_path} (e.g. {missing[0]});"
                              " they are written without cls", stacklevel=3)
            found += [(f, labels.get(f.stem, ""), "val") for f in files]
    names = synset_names(root, val)
    wnids = list(names) or sorted({w for _, w, _ in found if isinstance(w, str) and w})
    index = {w: i for i, w in enumerate(wnids)}
    items = []
    keys = _unique_keys([f.relative_to(root).as_posix() for f, _, _ in found])
    for (path, label, split), key in zip(found, keys):
        if isinstance(label, int):
            cls, wnid = label, (wnids[label] if 0 <= label < len(wnids) else None)
        else:
            cls, wnid = index.get(label), label or None
        name = names.get(wnid) if wnid else None
        meta = {"wnid": wnid, "class_name": name or wnid}
        items.append(Item(str(path), key, cls, name or wnid, split, json.dumps(meta)))
    return items, wnids


def read_val_labels(path: Path) -> dict[str, str | int]:
    """File stem -> wnid (or class index) from ``LOC_val_solution.csv`` or ``FILE LABEL`` lines."""
    text = path.read_text()
    if text.startswith("ImageId"):
        rows = csv.DictReader(text.splitlines())
        return {row["ImageId"]: row["PredictionString"].split()[0] for row in rows if row.get("PredictionString")}
    labels: dict[str, str | int] = {}
    for line in text.splitlines():
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        if len(fields) < 2:
            continue
        name, label = fields[0], fields[1]
        if WNID.match(label):
            labels[Path(name).stem] = label
        elif label.isdigit():
            labels[Path(name).stem] = int(label)
    if not labels:
        raise UsageError(f"{path}: no 'FILE LABEL' lines (LABEL a wnid such as n01440764 or a class index), and not "
                         "a LOC_val_solution.csv (ImageId,PredictionString)")
    return labels


def synset_names(root: Path, val: Path | None) -> dict[str, str]:
    """wnid -> first class name, in the file's order, from a synset list found in or above the data folders."""
    path = find_file(val or root, root, SYNSET_NAME_FILES)
    names: dict[str, str] = {}
    if path is None:
        return names
    for line in path.read_text().splitlines():
        wnid, _, rest = line.strip().partition(" ")
        if WNID.match(wnid):
            names[wnid] = rest.split(",")[0].strip() or wnid
    return names


# ----------------------------------------------------------------------------- LibriSpeech / LibriTTS


def read_libri(root: Path, extensions: tuple[str, ...], label_file: Path | None) -> tuple[list[Item], list[str]]:
    """LibriSpeech and LibriTTS: transcripts from ``*.trans.txt`` / ``*.trans.tsv`` / ``*.normalized.txt``."""
    files = _files(root, extensions)
    texts: dict[str, dict[str, str]] = {}
    for path in sorted(root.rglob("*.trans.txt")):  # LibriSpeech: "19-198-0000 TRANSCRIPT"
        for line in path.read_text().splitlines():
            utterance, _, transcript = line.strip().partition(" ")
            if utterance:
                texts[utterance] = {"transcript": transcript}
    for path in sorted(root.rglob("*.trans.tsv")):  # LibriTTS: id \t original \t normalised
        for line in path.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 3:
                texts[fields[0]] = {"transcript": fields[2], "original": fields[1]}
    for path in files:  # LibriTTS: UTTERANCE.normalized.txt / .original.txt beside the audio
        normalised, original = path.with_suffix(".normalized.txt"), path.with_suffix(".original.txt")
        if normalised.is_file():
            entry = {"transcript": normalised.read_text().strip()}
            if original.is_file():
                entry["original"] = original.read_text().strip()
            texts[path.stem] = entry
    readers = speaker_facts(root)
    speakers = sorted({_speaker_chapter(root, f)[0] for f in files}, key=_natural)
    index = {s: i for i, s in enumerate(speakers)}
    keys = _unique_keys([f.relative_to(root).as_posix() for f in files])
    items = []
    for path, key in zip(files, keys):
        speaker, chapter = _speaker_chapter(root, path)
        text = texts.get(path.stem, {})
        meta = {"speaker": speaker, "chapter": chapter, "utterance": path.stem, **text, **readers.get(speaker, {})}
        items.append(Item(str(path), key, index[speaker], text.get("transcript") or None, None, json.dumps(meta)))
    return items, speakers


def _speaker_chapter(root: Path, path: Path) -> tuple[str, str]:
    """From ``speaker/chapter/file``, else from the utterance id (``19-198-0000``, ``19_198_000000_000000``)."""
    parts = path.relative_to(root).parts
    if len(parts) >= 3:
        return parts[-3], parts[-2]
    fields = re.split(r"[-_]", path.stem)
    return fields[0], fields[1] if len(fields) > 1 else ""


def speaker_facts(root: Path) -> dict[str, dict[str, str]]:
    """speaker id -> gender, subset, name from LibriSpeech's ``SPEAKERS.TXT`` or LibriTTS's ``speakers.tsv``."""
    path = find_file(root, root.parent, ("SPEAKERS.TXT", "speakers.tsv", "SPEAKERS.txt"))
    facts: dict[str, dict[str, str]] = {}
    if path is None:
        return facts
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(";") or not line.strip():
            continue
        fields = [f.strip() for f in (line.split("|") if "|" in line else line.split("\t"))]
        if len(fields) >= 3 and fields[0].isdigit():
            facts[fields[0]] = {"gender": fields[1], "subset": fields[2]}
            if len(fields) >= 4:
                facts[fields[0]]["speaker_name"] = fields[-1]
    return facts


# ----------------------------------------------------------------------------- ShapeNet / Objaverse


def read_shapenet(root: Path, extensions: tuple[str, ...], label_file: Path | None) -> tuple[list[Item], list[str]]:
    taxonomy = label_file or (root / "taxonomy.json")
    names: dict[str, str] = {}
    if taxonomy.is_file():
        for entry in json.loads(taxonomy.read_text()):
            names[str(entry.get("synsetId"))] = str(entry.get("name", "")).split(",")[0].strip()
    categories = [f.name for f in _subfolders(root)]
    found: list[tuple[Path, str, str]] = []  # (mesh file, category folder, model id)
    for category in categories:
        folder = root / category
        found += [(f, category, f.stem) for f in _files(folder, extensions, recursive=False)]
        for model in _subfolders(folder):
            mesh = next((model / m for m in MESH_MODEL_FILES if (model / m).is_file()), None)
            mesh = mesh or next(iter(_files(model, extensions)), None)
            if mesh is not None:
                found.append((mesh, category, model.name))
    index = {c: i for i, c in enumerate(categories)}
    keys = _unique_keys([f"{category}/{model}" for _, category, model in found])
    items = []
    for (path, category, model), key in zip(found, keys):
        name = names.get(category) or category
        meta = {"category": name, "synset": category if SYNSET.match(category) else None, "model_id": model}
        items.append(Item(str(path), key, index[category], name, None, json.dumps(meta)))
    return items, categories


def read_objaverse(root: Path, extensions: tuple[str, ...], label_file: Path | None) -> tuple[list[Item], list[str]]:
    files = _files(root, extensions)
    wanted = {path.stem for path in files}
    facts: dict[str, dict[str, Any]] = {}  # uid -> name, category, tags (only the uids present; lean, not raw)
    lvis: dict[str, str] = {}
    for path in [label_file] if label_file else _metadata_files(root):
        _read_objaverse_metadata(path, wanted, facts, lvis)
    found = []
    for path in files:
        uid = path.stem
        entry = facts.get(uid, {})
        category = lvis.get(uid) or entry.get("category")
        if not category and path.parent != root and not OBJAVERSE_BATCH.match(path.parent.name):
            category = path.parent.name
        found.append((path, uid, category, entry.get("name"), entry.get("tags", [])))
    categories = sorted({c for _, _, c, _, _ in found if c})
    index = {c: i for i, c in enumerate(categories)}
    keys = _unique_keys([f.relative_to(root).as_posix() for f in files])
    items = []
    for (path, uid, category, name, tags), key in zip(found, keys):
        meta = {"uid": uid, "name": name, "category": category, "tags": tags}
        items.append(Item(str(path), key, index.get(category), name or category, None, json.dumps(meta)))
    return items, categories


def _read_objaverse_metadata(path: Path, wanted: set[str], facts: dict[str, dict[str, Any]],
                             lvis: dict[str, str]) -> None:
    """Objaverse annotations ``{uid: {...}}``, LVIS ``{category: [uids]}``, or a list / JSONL of ``{uid, ...}``;
    keeps the name, the first category and up to 16 tags of the ``wanted`` uids (the full annotations of all of
    Objaverse would fill gigabytes)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    text = raw.decode("utf-8")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, list):
        data = {str(e["uid"]): e for e in data if isinstance(e, dict) and "uid" in e}
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if isinstance(value, dict) and key in wanted:
            facts[key] = _object_facts(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            lvis.update({uid: str(key) for uid in value if uid in wanted})


def _object_facts(entry: dict[str, Any]) -> dict[str, Any]:
    listed = entry.get("categories") or []
    first = listed[0] if listed else None
    category = first.get("name") if isinstance(first, dict) else first
    tags = [t.get("name") if isinstance(t, dict) else str(t) for t in entry.get("tags") or []][:16]
    return {"name": entry.get("name"), "category": category or entry.get("category"), "tags": tags}


def _metadata_files(root: Path) -> list[Path]:
    return sorted(p for pattern in ("*.json", "*.json.gz", "*.jsonl") for p in root.rglob(pattern)
                  if p.name != "manifest.json" and not p.name.startswith("."))


READERS: dict[str, Callable[[Path, tuple[str, ...], Path | None], tuple[list[Item], list[str]]]] = {
    "imagenet": read_imagenet, "librispeech": read_libri, "libritts": read_libri, "shapenet": read_shapenet,
    "objaverse": read_objaverse,
}


# ----------------------------------------------------------------------------- helpers


def find_file(start: Path, stop: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` in ``start`` or a folder above it, up to ``stop``'s parent."""
    start, stop = start.resolve(), stop.resolve()
    folders = [start, *start.parents]
    limit = folders.index(stop.parent) if stop.parent in folders else len(folders) - 1
    for folder in folders[: limit + 1]:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _files(folder: Path, extensions: tuple[str, ...], recursive: bool = True) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith("."))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []


def _wnid_folders(folder: Path) -> list[Path]:
    return [p for p in _subfolders(folder) if WNID.match(p.name)]


def _first(root: Path, pattern: str) -> Path | None:
    return next(root.rglob(pattern), None)


def _natural(text: str) -> tuple[int, int | str]:
    return (0, int(text)) if text.isdigit() else (1, text)


def _unique_keys(relative: list[str]) -> list[str]:
    return unique_keys([make_key(path) for path in relative])
