"""Raw shards: files -> webdataset tars + ``manifest.json`` + ``rejected.jsonl``.

`make_shards(kind, src, out, **options)` reads a source (folder tree, glob, CSV/JSONL manifest; see
`tokenforge.data.sources`), preprocesses every file with the modality's ``prepare`` (images, audio, meshes;
optionally in worker processes), and writes ``OUT/{train,val}-%06d.tar`` with webdataset's ``ShardWriter``.

Crash safety and ``resume``: a shard is written as ``NAME.partial`` and renamed when complete; each finished
shard appends a line to ``OUT/progress.jsonl`` (its keys, size, sha256, and the source items it finished).
A resumed run keeps every finished shard whose checksum still matches, deletes the rest, skips finished and
rejected items, and continues numbering after the kept shards, so it ends with the same set of samples as an
uninterrupted run (shard boundaries may differ). Files that cannot be used go to ``rejected.jsonl`` with the
reason; nothing in the input can stop the run.

Reading helpers (`shard_urls`, `SkipCounter`) live here too, because writer and reader share the layout.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import multiprocessing as mp
import os
import random
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset

from tokenforge.data.output import check_output, is_nonempty_dir, staged_output
from tokenforge.data.layouts import collect_layout
from tokenforge.data.sources import Item
from tokenforge.errors import UsageError

KINDS: dict[str, str] = {
    "images": "tokenforge.data.image",
    "audio": "tokenforge.data.audio",
    "meshes": "tokenforge.data.mesh",
}
ALIASES = {"image": "images", "mesh": "meshes", "sound": "audio"}
SPLITS = ("train", "val")
MANIFEST = "manifest.json"
REJECTED = "rejected.jsonl"
PROGRESS = "progress.jsonl"


class Rejected(Exception):
    """A source file that cannot become a sample; the message is the reason written to rejected.jsonl."""


def kind_module(kind: str) -> Any:
    name = ALIASES.get(kind, kind)
    if name not in KINDS:
        raise ValueError(f"unknown shard kind {kind!r}; choose one of {', '.join(KINDS)}")
    return importlib.import_module(KINDS[name])


def npy_bytes(array: np.ndarray) -> bytes:
    """``np.save`` into bytes (exact round trip with ``np.load``)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- writing


def _prepare(module: str, options: dict[str, Any], item: Item) -> tuple[Item, list[dict[str, Any]] | str]:
    """Run in a worker: the item's samples, or the reason it was rejected."""
    try:
        return item, importlib.import_module(module).prepare(Path(item.path), **options)
    except Rejected as reason:
        return item, str(reason)
    except (ImportError, MemoryError, NotImplementedError):  # the environment, not the file: stop
        raise
    except Exception as error:  # any library error on a bad file is a rejection, never a crash
        if isinstance(error, OSError) and "library" in str(error):
            raise
        return item, f"{type(error).__name__}: {error}"


def _init_worker() -> None:
    import signal

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no traceback per worker


def assign_splits(items: list[Item], val_fraction: float, seed: int) -> dict[str, list[Item]]:
    """Shuffle once with ``seed`` (shards are read sequentially) and hold out ``val_fraction`` for val. Items whose
    layout fixed their split (ImageNet's train and val folders) keep it; ``val_fraction`` splits the others."""
    order = [item for item in items if item.split not in SPLITS]
    random.Random(seed).shuffle(order)
    n_val = int(round(len(order) * val_fraction))
    if val_fraction > 0 and len(order) > 1:
        n_val = min(max(n_val, 1), len(order) - 1)
    splits = {"val": order[:n_val], "train": order[n_val:]}
    for split in SPLITS:
        fixed = [item for item in items if item.split == split]
        random.Random(f"{seed}/{split}").shuffle(fixed)
        splits[split] += fixed
    return splits


class _Progress:
    """Book-keeping for finished shards (the ShardWriter ``post`` hook) and for resuming."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.records: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.items: list[str] = []
        self.file: Any = None

    def open_partial(self, fname: str) -> Any:
        self.file = open(fname + ".partial", "wb")
        return self.file

    def finished(self, split: str, fname: str) -> None:
        self.file.close()
        partial_name = Path(fname + ".partial")
        if not self.keys:  # ShardWriter opens a shard before the first write; an unused one is dropped
            partial_name.unlink(missing_ok=True)
            return
        final = Path(fname)
        os.replace(partial_name, final)
        record = {"split": split, "name": final.name, "count": len(self.keys), "bytes": final.stat().st_size,
                  "sha256": sha256(final), "keys": self.keys, "items": self.items}
        with (self.out / PROGRESS).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.records.append(record)
        self.keys, self.items = [], []


def _load_resume(out: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Verified finished shards (a prefix per split) and earlier rejections; everything else is removed."""
    records: list[dict[str, Any]] = []
    progress = out / PROGRESS
    lines = progress.read_text().splitlines() if progress.exists() else []
    broken: set[str] = set()
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        path = out / record["name"]
        if record["split"] in broken or not path.exists() or sha256(path) != record["sha256"]:
            broken.add(record["split"])
            continue
        records.append(record)
    kept = {r["name"] for r in records}
    for stale in list(out.glob("*.tar")) + list(out.glob("*.partial")):
        if stale.name not in kept:
            stale.unlink()
    progress.write_text("".join(json.dumps(r) + "\n" for r in records))
    rejected = {}
    if (out / REJECTED).exists():
        for line in (out / REJECTED).read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            rejected[entry["file"]] = entry["reason"]
        (out / REJECTED).write_text("".join(json.dumps({"file": f, "reason": r}) + "\n" for f, r in rejected.items()))
    return records, rejected


def make_shards(
    kind: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    val_fraction: float = 0.0,
    shard_size: int = 1000,
    max_shard_bytes: float = 1e9,
    workers: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    labels: str = "auto",
    progress: bool = True,
    layout: str = "auto",
    label_file: str | os.PathLike | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Write raw shards of ``kind`` (images | audio | meshes) from ``src`` into ``out``; return the manifest.

    ``shard_size``/``max_shard_bytes`` are ShardWriter's count and size limits; ``options`` go to the
    modality's ``prepare`` (e.g. ``max_side``, ``format`` for images; ``sample_rate`` for audio). ``layout``
    reads a dataset's own folder layout (ImageNet, LibriSpeech, LibriTTS, ShapeNet, Objaverse; ``auto`` detects
    it, ``files`` is a plain folder tree, glob or CSV/JSONL manifest: `tokenforge.data.layouts`); ``label_file``
    is ImageNet's validation labels or Objaverse's metadata JSON when they are not where the layout looks.
    """
    module = kind_module(kind)
    kind = ALIASES.get(kind, kind)
    out = Path(out)
    check_output(out, overwrite=overwrite, resume=resume, command="make")
    options = module.check_options(**options)
    items, classes, layout = collect_layout(src, kind, layout, module.EXTENSIONS, labels, label_file)
    settings = {"val_fraction": val_fraction, "shard_size": shard_size, "max_shard_bytes": max_shard_bytes,
                "workers": workers, "seed": seed, "labels": labels, "progress": progress, "layout": layout}
    if overwrite and not resume and is_nonempty_dir(out):  # replace atomically: write beside it, then swap
        with staged_output(out) as stage:
            return _write_shards(module, kind, src, stage, items, classes, resume=False, options=options,
                                 **settings)
    out.mkdir(parents=True, exist_ok=True)  # a fresh folder: written in place, so --resume can continue it
    return _write_shards(module, kind, src, out, items, classes, resume=resume, options=options, **settings)


def _write_shards(module: Any, kind: str, src: Any, out: Path, items: list[Item], classes: list[str], *,
                  val_fraction: float, shard_size: int, max_shard_bytes: float, workers: int, resume: bool, seed: int,
                  labels: str, progress: bool, layout: str, options: dict[str, Any]) -> dict[str, Any]:
    """The body of `make_shards`: preprocess ``items`` and write shards, progress and manifest into ``out``."""
    records, rejected = _load_resume(out) if resume else ([], {})
    if not resume:
        for name in (PROGRESS, REJECTED):
            (out / name).unlink(missing_ok=True)
    done_items = {i for r in records for i in r["items"]}
    done_keys = {k for r in records for k in r["keys"]}
    splits = assign_splits(items, val_fraction, seed)
    todo = {s: [i for i in splits[s] if i.key not in done_items and i.path not in rejected] for s in SPLITS}
    book = _Progress(out)
    bar = _progress_bar(sum(len(v) for v in todo.values()), progress, f"shards {kind}")
    rejected_now = len(rejected)
    job = partial(_prepare, module.__name__, options)
    pool = mp.get_context("fork").Pool(workers, initializer=_init_worker) if workers > 0 else None
    try:
        for split in SPLITS:
            if not todo[split]:
                continue
            start = 1 + max((int(r["name"].split("-")[-1].split(".")[0]) for r in records if r["split"] == split),
                            default=-1)
            writer = wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=shard_size, maxsize=max_shard_bytes,
                                     post=partial(book.finished, split), start_shard=start, verbose=0,
                                     opener=book.open_partial, mtime=0.0)
            results: Iterator = pool.imap(job, todo[split], chunksize=2) if pool else map(job, todo[split])
            try:
                for item, result in results:
                    bar.update(1)
                    if isinstance(result, str):
                        _reject(out, item, result)
                        rejected_now += 1
                        bar.set_postfix(shards=len(book.records), rejected=rejected_now, refresh=False)
                        continue
                    for sample in result:
                        key = item.key + sample.pop("__suffix__", "")
                        if key in done_keys:
                            continue
                        writer.write(_with_meta(key, item, sample))
                        book.keys.append(key)
                    book.items.append(item.key)
                    bar.set_postfix(shards=len(book.records), rejected=rejected_now, refresh=False)
            except BaseException:  # leave the unfinished shard as .partial, exactly as a kill would
                writer.tarstream = None
                book.file.close()
                raise
            writer.close()
    finally:
        bar.close()
        if pool:
            pool.terminate()
    manifest = _manifest(kind, src, out, records + book.records, classes, module.describe(options),
                         {"val_fraction": val_fraction, "shard_size": shard_size, "max_shard_bytes": max_shard_bytes,
                          "seed": seed, "labels": labels, **options}, layout)
    write_manifest(out, manifest)
    return manifest


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` whole or not at all (a temporary file renamed over it): readers trust it."""
    temporary = out / (MANIFEST + ".partial")
    temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temporary, out / MANIFEST)


def _with_meta(key: str, item: Item, sample: dict[str, Any]) -> dict[str, Any]:
    """The sample with its label (``cls``), text (``txt``) and the layout's facts merged into ``json``."""
    sample = {"__key__": key, **sample}
    if item.label is not None:
        sample["cls"] = str(item.label).encode()
    if item.caption:
        sample["txt"] = item.caption.encode()
    if item.meta:
        facts = json.loads(sample["json"]) if "json" in sample else {}
        sample["json"] = json.dumps({**facts, **json.loads(item.meta)}).encode()
    return sample


def _reject(out: Path, item: Item, reason: str) -> None:
    with (out / REJECTED).open("a") as handle:
        handle.write(json.dumps({"file": item.path, "reason": reason}) + "\n")


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """Files done, shards written and files rejected; off under --quiet or off-terminal (`tokenforge.console`)."""
    from tokenforge.console import progress

    return progress(total=total, disable=not enabled, desc=desc, unit="file")


def _manifest(kind: str, src: Any, out: Path, records: list[dict[str, Any]], classes: list[str],
              info: dict[str, Any], options: dict[str, Any], layout: str = "files") -> dict[str, Any]:
    rejected = []
    if (out / REJECTED).exists():
        rejected = [json.loads(line) for line in (out / REJECTED).read_text().splitlines() if line.strip()]
    splits = {}
    for split in SPLITS:
        mine = sorted((r for r in records if r["split"] == split), key=lambda r: r["name"])
        splits[split] = {
            "count": sum(r["count"] for r in mine),
            "shards": [{k: r[k] for k in ("name", "count", "bytes", "sha256")} for r in mine],
            "keys": [k for r in mine for k in r["keys"]],
        }
    from tokenforge.hub import version

    return {"kind": kind, "modality": kind_module(kind).MODALITY, "source": str(src), "layout": layout,
            "tokenforge_version": version(),
            "count": sum(s["count"] for s in splits.values()), "rejected": len(rejected), "classes": classes,
            "splits": splits, "options": options, **info}


def read_manifest(folder: Any) -> dict[str, Any] | None:
    """The ``manifest.json`` of a shard folder, of a ``manifest.json`` path, or of a remote manifest URL
    (`is_manifest_url`); for a list of specs, the first one's. None when there is none."""
    if isinstance(folder, (list, tuple)):
        return read_manifest(folder[0]) if folder else None
    text = str(folder)
    if is_manifest_url(text):
        from tokenforge.data.reading import read_remote_json

        return read_remote_json(manifest_url(text))
    path = Path(text)
    path = path if path.name == MANIFEST and path.is_file() else path / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def is_manifest_url(text: str) -> bool:
    """A remote shard folder given by its manifest: ``https://host/shards/manifest.json`` (any ``*.json`` URL) or
    the folder URL itself ending in ``/`` (``s3://bucket/shards/``)."""
    remote = "://" in text and not text.startswith(("file://", "pipe:"))
    return remote and "{" not in text and (text.endswith("/") or text.lower().endswith(".json"))


def manifest_url(text: str) -> str:
    return text + MANIFEST if text.endswith("/") else text


def remote_folder_shards(text: str, split: str) -> list[str]:
    """The ``split`` shards a remote manifest lists, as URLs beside the manifest (its folder URL + name)."""
    url = manifest_url(text)
    manifest = read_manifest(url)
    entry = manifest.get("splits", {}).get(split) if isinstance(manifest, dict) else None
    if not entry or not entry.get("shards"):
        raise FileNotFoundError(f"{url} lists no {split} shards")
    base = url.rsplit("/", 1)[0]
    return [f"{base}/{shard['name']}" for shard in entry["shards"]]


# ----------------------------------------------------------------------------- reading


def shard_urls(spec: Any, split: str = "train") -> list[str]:
    """Shards from a folder (what its manifest lists, else its ``{split}-*.tar``), a ``manifest.json`` path or
    URL (or a remote folder URL ending in ``/``), a brace pattern (``shards-{000000..000999}.tar``, local or a
    URL), a glob, one tar or URL, a ``pipe:`` command, or a list of any of these. A URL scheme with no reader
    here (``s3://`` without s3fs) is a one-line `UsageError`."""
    import braceexpand

    from tokenforge.data.reading import check_openable

    if isinstance(spec, (list, tuple)):
        urls = [url for one in spec for url in shard_urls(one, split)]
        if not urls:
            raise FileNotFoundError("an empty list of shard specs")
        return urls
    text = str(spec)
    if is_manifest_url(text):
        urls = remote_folder_shards(text, split)
        check_openable(urls)
        return urls
    path = Path(text)
    if path.is_dir():
        return folder_shards(path, split)
    if path.name == MANIFEST and path.is_file():
        return folder_shards(path.parent, split)
    if "{" in text:
        urls = list(braceexpand.braceexpand(text))
    elif any(ch in text for ch in "*?[") and "://" not in text and not text.startswith("pipe:"):
        import glob as globlib

        urls = sorted(globlib.glob(text))
    else:
        urls = [text]
    missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not Path(u).exists()]
    if missing or not urls:
        raise FileNotFoundError(f"shard spec {text!r}: no such file(s) {missing[:3] or urls}")
    check_openable(urls)
    return urls


def folder_shards(folder: Path, split: str) -> list[str]:
    """A folder's ``split`` shards: exactly those its ``manifest.json`` lists, else (no manifest) its
    ``{split}-*.tar``. A listed shard that is missing is a `UsageError` naming it; shards the manifest does not
    list (left by another run) are ignored with a warning; an unfinished ``shards make`` run is refused."""
    manifest = read_manifest(folder)
    present = sorted(folder.glob(f"{split}-*.tar"))
    if manifest is None:
        if (folder / PROGRESS).exists():
            raise UsageError(f"{folder} holds an unfinished `tokenforge shards make` run (no {MANIFEST}); finish "
                             "it with --resume or remake it with --overwrite")
        if not present:
            raise FileNotFoundError(f"{folder} holds no {split}-*.tar shards; make them with `tokenforge shards make`")
        return [str(p) for p in present]
    entry = manifest.get("splits", {}).get(split)
    if entry is None or "shards" not in entry:  # a manifest that does not list this split's shards by name
        if not present:
            raise FileNotFoundError(f"{folder} holds no {split}-*.tar shards; make them with `tokenforge shards make`")
        return [str(p) for p in present]
    listed = [shard["name"] for shard in entry["shards"]]
    if not listed:
        raise FileNotFoundError(f"{folder} holds no {split}-*.tar shards (its {MANIFEST} lists none); "
                                "make them with `tokenforge shards make`")
    missing = [name for name in listed if not (folder / name).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"shard {folder / missing[0]}{more} is listed in {folder / MANIFEST} but missing; restore it "
                         "or remake the shards into a new folder")
    unlisted = [p.name for p in present if p.name not in set(listed)]
    if unlisted:
        warnings.warn(f"{folder}: ignoring {len(unlisted)} {split} shard(s) that {MANIFEST} does not list "
                      f"(e.g. {unlisted[0]})", stacklevel=2)
    return [str(folder / name) for name in listed]


class EpochSeed:
    """A data pipeline's base seed and the current training epoch, shared by all of its random stages.

    The main process sets ``epoch`` before each epoch's DataLoader workers start (`ShardDataModule` does, from
    the trainer), and the workers inherit it. So each epoch draws new shards, shuffles, crops and flips.
    Before this, every epoch repeated the first one exactly whenever ``num_workers > 0``: each epoch's fresh
    workers restarted their generators. A resumed run draws its epoch's data again.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed, self.epoch = int(seed), 0

    def __int__(self) -> int:
        return self.seed

    def stream(self, *parts: object) -> random.Random:
        """A generator seeded by ``(seed, epoch, *parts)``: reproducible, distinct for distinct parts."""
        return random.Random("/".join(map(str, (self.seed, self.epoch, *parts))))



class ResampledShards(IterableDataset):
    """Shards drawn with replacement, endlessly, by a stream per (seed, epoch, rank, worker).

    This replaces webdataset's ``ResampledShards``, whose own epoch counter restarts in every fresh worker."""

    def __init__(self, urls: list[str], seed: EpochSeed) -> None:
        super().__init__()
        if not urls:
            raise ValueError("ResampledShards: no shards to draw from")
        self.urls, self.seed = list(urls), seed

    def __iter__(self) -> Iterator[dict[str, str]]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        rng = self.seed.stream("shards", rank, worker)
        while True:
            yield {"url": rng.choice(self.urls)}


class ShardShuffle:
    """Shuffles the shard list identically on every rank and worker (before the node split), anew each epoch
    and each repeated pass within one."""

    def __init__(self, seed: EpochSeed) -> None:
        self.seed, self._epoch, self._passes = seed, None, 0

    def __call__(self, urls: Iterator[dict[str, str]]) -> Iterator[dict[str, str]]:
        self._passes = self._passes + 1 if self._epoch == self.seed.epoch else 0
        self._epoch = self.seed.epoch
        order = list(urls)
        self.seed.stream("shard-order", self._passes).shuffle(order)
        yield from order


class WorkerRandom:
    """A ``random.Random`` seeded per (rank, DataLoader worker, epoch) on first use, so workers and epochs
    differ but runs repeat. ``name`` keeps two stages of one pipeline (shuffle, decode) on separate streams."""

    def __init__(self, seed: int | EpochSeed = 0, name: str = "") -> None:
        self.seed = seed if isinstance(seed, EpochSeed) else EpochSeed(seed)
        self.name = name
        self._rng: random.Random | None = None
        self._owner: tuple[int, int, int] | None = None

    def _get(self) -> random.Random:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        owner = (rank, worker, self.seed.epoch)
        if self._rng is None or self._owner != owner:
            self._rng = self.seed.stream(self.name, rank, worker)
            self._owner = owner
        return self._rng

    def random(self) -> float:
        return self._get().random()

    def randint(self, a: int, b: int) -> int:
        return self._get().randint(a, b)

    def uniform(self, a: float, b: float) -> float:
        return self._get().uniform(a, b)

    def numpy(self) -> np.random.Generator:
        """A numpy generator drawn from this stream (for index sampling)."""
        return np.random.default_rng(self._get().getrandbits(64))


class SkipCounter:
    """Counts samples skipped as corrupt, across DataLoader worker processes (a shared integer)."""

    def __init__(self) -> None:
        # the DataLoader must start its workers with this same context (ShardDataModule passes it)
        self.context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
        self.value = self.context.Value("l", 0)

    def __int__(self) -> int:
        return int(self.value.value)

    def skip(self, where: str, error: BaseException) -> None:
        with self.value.get_lock():
            self.value.value += 1
            total = self.value.value
        warnings.warn(f"skipped a corrupt sample ({where}): {type(error).__name__}: {error} "
                      f"[{total} skipped so far]", stacklevel=2)

    def handler(self, error: BaseException) -> bool:
        """webdataset handler: count, warn, continue (webdataset re-raises a tar error once per stage: count once)."""
        first = (str(error.args[0]) if error.args else "").split(" @ ")[0]
        if getattr(self, "_last", None) != (type(error), first):
            self.skip("shard read", error)
        self._last = (type(error), first)
        return True

