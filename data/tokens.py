"""Token shards: raw shards run through a tokenizer (`encode_shards`), and their reader (`Decoder`).

Each token sample holds ``ids.npy`` (int16 when the vocabulary fits, else int32; a grid keeps its ``[h, w]``
shape; per-scale lists are flattened and concatenated, the scale shapes go to the manifest; flexible-length
sequences are cut to their ``lengths``), optionally ``latents.npy`` (float16), and the raw sample's ``cls`` /
``txt``. ``manifest.json`` names the tokenizer and carries its spec (class path + init args), so whoever
trains on the tokens knows which tokenizer decodes them, and the token layout a generator needs to match it:
``seq_len`` (the most ids in one sample), ``token_shape`` (one sample's ids shape, None when it varies),
``scales`` (per-scale shapes), ``code_dim`` (the quantizer's code width) and ``latent_shape``
(`tokenforge.manifest_defaults` fills a generator config's unset sizes from them).

The input a tokenizer sees is the raw sample decoded without augmentation: images centre-cropped to
``image_size`` ([B,3,H,W] in [-1,1]), whole audio clips ([B,T] at ``sample_rate``; clips of different lengths
are never batched together), mesh surface points with their normals ([B,N,6], a fixed per-key subset of
``num_points``; [B,N,3] for a tokenizer whose ``use_normals`` is False).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from tokenforge.data.collate import collate, with_extras
from tokenforge.data.output import check_output, staged_output
from tokenforge.data.reading import DecodeGuard, ShardHealth, ShardReader
from tokenforge.data.shards import SkipCounter, npy_bytes, read_manifest, sha256, shard_urls, write_manifest
from tokenforge.errors import UsageError

INPUT_KEY = {"image": "image", "audio": "audio", "mesh": "points"}


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int16) if vocab_size <= np.iinfo(np.int16).max else np.dtype(np.int32)


def split_tokens(tokens: Any, size: int) -> tuple[list[np.ndarray], list[np.ndarray | None], list[list[int]] | None]:
    """Per-sample ids (numpy), latents and, for per-scale ids, each scale's shape."""
    ids, scales = tokens.ids, None
    if isinstance(ids, (list, tuple)):
        scales = [list(t.shape[1:]) for t in ids]
        ids = torch.cat([t.reshape(size, -1) for t in ids], dim=1)
    per_ids = []
    for i in range(size):
        row = ids[i].detach().cpu()
        if tokens.lengths is not None:
            row = row[: int(tokens.lengths[i])]
        per_ids.append(row.numpy())
    latents = tokens.latents
    per_latents = [None if latents is None else latents[i].detach().float().cpu().numpy() for i in range(size)]
    return per_ids, per_latents, scales


def code_dim(model: torch.nn.Module) -> int | None:
    """Width of the tokenizer's code vectors (its quantizer's ``dim``), when it has one."""
    dim = getattr(getattr(model, "quantizer", None), "dim", None)
    return int(dim) if isinstance(dim, int) else None


def _raw_decoder(modality: str, image_size: int, sample_rate: int | None, num_points: int) -> Any:
    if modality == "image":
        from tokenforge.data.image import Decoder

        return Decoder(image_size, train=False)
    if modality == "audio":
        from tokenforge.data.audio import Decoder

        return Decoder(sample_rate, segment_samples=None, train=False)
    if modality == "mesh":
        from tokenforge.data.mesh import Decoder

        return Decoder(num_points, num_queries=2, train=False)
    raise ValueError(f"cannot encode shards for a tokenizer of modality {modality!r}")


def _batches(samples: Iterator[dict[str, Any]], key: str, batch_size: int) -> Iterator[dict[str, Any]]:
    """Batches of up to ``batch_size`` whose inputs share one shape (a shape change closes a batch)."""
    pending: list[dict[str, Any]] = []
    for sample in samples:
        if sample is None:
            continue
        if pending and (len(pending) == batch_size or pending[0][key].shape != sample[key].shape):
            yield collate(pending)
            pending = []
        pending.append(sample)
    if pending:
        yield collate(pending)


@torch.no_grad()
def encode_shards(
    tokenizer: str | os.PathLike | torch.nn.Module,
    inp: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    device: str | None = None,
    bf16: bool = False,
    latents: bool = False,
    image_size: int = 256,
    sample_rate: int | None = None,
    num_points: int = 2048,
    shard_size: int = 1000,
    splits: tuple[str, ...] = ("train", "val"),
    progress: bool = True,
    overwrite: bool = False,
    retries: int = 2,
) -> dict[str, Any]:
    """Encode every sample of the raw shards in ``inp`` with ``tokenizer``; write token shards to ``out``.

    ``out`` must be empty or missing unless ``overwrite``. The shards are written into a hidden sibling folder
    and swapped in at the end (`staged_output`), so ``out`` holds either its old contents or the complete new
    token shards, never a mix, whatever interrupts the run. A raw shard that cannot be read after ``retries``
    more attempts is skipped and counted (``skipped_shards`` in the manifest); when none can be read the run
    stops with `RunFailedError`.
    """
    from tokenforge.hub import from_pretrained

    out = Path(out)
    check_output(out, overwrite=overwrite, command="encode")
    if Path(inp).is_dir() and out.resolve() in (Path(inp).resolve(), *Path(inp).resolve().parents):
        raise UsageError(f"{out} would replace the input shards {inp}; choose another output folder")
    name = str(tokenizer) if not isinstance(tokenizer, torch.nn.Module) else type(tokenizer).__name__
    model = tokenizer if isinstance(tokenizer, torch.nn.Module) else from_pretrained(tokenizer)
    for attribute in ("encode", "modality", "vocab_size"):
        if not hasattr(model, attribute):
            raise TypeError(f"{name} is a {type(model).__name__} without .{attribute}: not a tokenforge Tokenizer")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    raw = read_manifest(inp)  # a folder, a manifest.json path or URL; None for a pattern or a tar
    if model.modality == "audio" and sample_rate is None:
        sample_rate = (raw or {}).get("sample_rate") or getattr(model, "sample_rate", None) or 24000
    found = {}
    for split in splits:
        try:
            found[split] = shard_urls(inp, split)
        except FileNotFoundError:
            continue
    if not found:
        raise FileNotFoundError(f"{inp}: no {'/'.join(splits)} shards to encode")
    decode = with_extras(_raw_decoder(model.modality, image_size, sample_rate, num_points))
    job = _EncodeJob(model, INPUT_KEY.get(model.modality, "image"), decode, device, bf16, latents, batch_size,
                     shard_size, ids_dtype(int(model.vocab_size)), progress, retries)
    with staged_output(out) as stage:
        summary = {split: job.split(urls, stage, split, _count(raw, split)) for split, urls in found.items()}
        manifest = {
            "kind": "tokens", "modality": "tokens", "source_modality": model.modality, "source": str(inp),
            "count": sum(s["count"] for s in summary.values()), "splits": summary, "skipped": int(job.counter),
            "skipped_shards": job.skipped_shards,
            "tokenizer": {"name": name, "spec": model.spec() if hasattr(model, "spec") else None,
                          "vocab_size": int(model.vocab_size), "token_layout": getattr(model, "token_layout", None)},
            "ids_dtype": job.dtype.name, "scales": job.scales, "latents": bool(latents),
            "seq_len": job.seq_len, "token_shape": job.token_shape, "latent_shape": job.latent_shape,
            "code_dim": code_dim(model),
            "input": {"image_size": image_size, "sample_rate": sample_rate, "num_points": num_points},
            "classes": (raw or {}).get("classes", []),
        }
        write_manifest(stage, manifest)
    return manifest


def _count(raw: dict[str, Any] | None, split: str) -> int | None:
    return raw["splits"][split]["count"] if raw and split in raw.get("splits", {}) else None


class _EncodeJob:
    """One `encode_shards` run: reads raw shards (retrying, skipping unreadable ones) and writes token shards."""

    def __init__(self, model: torch.nn.Module, key: str, decode: Any, device: str, bf16: bool, latents: bool,
                 batch_size: int, shard_size: int, dtype: np.dtype, progress: bool, retries: int) -> None:
        self.model, self.key, self.decode, self.device, self.bf16 = model, key, decode, device, bf16
        self.latents, self.batch_size, self.shard_size, self.dtype = latents, batch_size, shard_size, dtype
        self.progress, self.retries = progress, retries
        self.counter = SkipCounter()
        self.scales: list[list[int]] | None = None
        self.skipped_shards = 0
        self.seq_len = 0  # the most ids in one sample
        self.token_shape: list[int] | None = None  # one sample's ids shape while every sample shares it
        self.latent_shape: list[int] | None = None
        self._shapes: set[tuple[int, ...]] = set()

    def note_shapes(self, ids: np.ndarray, latents: np.ndarray | None) -> None:
        """Keep the layout facts of the manifest up to date with one encoded sample."""
        self.seq_len = max(self.seq_len, int(ids.size))
        self._shapes.add(tuple(ids.shape))
        self.token_shape = list(ids.shape) if len(self._shapes) == 1 else None
        if latents is not None:
            self.latent_shape = list(latents.shape)

    def split(self, urls: list[str], out: Path, split: str, total: int | None) -> dict[str, Any]:
        """Encode one split's shards into ``out/{split}-NNNNNN.tar``; its manifest entry."""
        from tokenforge.console import progress

        health = ShardHealth(urls, self.counter.context)
        reader = ShardReader(health, self.counter, retries=self.retries)
        guard = DecodeGuard(health, self.counter, self.decode)
        pipeline = wds.DataPipeline(wds.SimpleShardList(urls), reader, wds.map(guard))
        records: list[dict[str, Any]] = []
        keys: list[str] = []

        def finished(fname: str) -> None:
            path = Path(fname)
            if not keys:
                path.unlink(missing_ok=True)
                return
            records.append({"name": path.name, "count": len(keys), "bytes": path.stat().st_size,
                            "sha256": sha256(path), "keys": list(keys)})
            keys.clear()

        bar = progress(total=total, disable=not self.progress, desc=f"encode {split}", unit="sample")
        writer = wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=self.shard_size, post=finished, verbose=0,
                                 mtime=0.0)
        try:
            for batch in _batches(iter(pipeline), self.key, self.batch_size):
                for sample in self.encode(batch):
                    writer.write(sample)
                    keys.append(sample["__key__"])
                bar.update(len(batch["__key__"]))
                bar.set_postfix(shards=len(records), skipped=int(self.counter) + int(health.skipped.value),
                                refresh=False)
            writer.close()
        finally:
            bar.close()
        self.skipped_shards += int(health.skipped.value)
        health.check_epoch(len(records), split, int(self.counter))
        return {"count": sum(r["count"] for r in records),
                "shards": [{k: r[k] for k in ("name", "count", "bytes", "sha256")} for r in records],
                "keys": [k for r in records for k in r["keys"]]}

    def encode(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Token samples of one batch of raw inputs."""
        x = batch[self.key]
        if self.key == "points" and "normals" in batch and getattr(self.model, "use_normals", True):
            x = torch.cat([x, batch["normals"]], dim=-1)
        x = x.to(self.device)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            tokens = self.model.encode(x)
        per_ids, per_latents, self.scales = split_tokens(tokens, len(batch["__key__"]))
        for i, sample_key in enumerate(batch["__key__"]):
            self.note_shapes(per_ids[i], per_latents[i] if self.latents else None)
            sample = {"__key__": sample_key, "ids.npy": npy_bytes(per_ids[i].astype(self.dtype))}
            if self.latents and per_latents[i] is not None:
                sample["latents.npy"] = npy_bytes(per_latents[i].astype(np.float16))
            if "cls" in batch:
                sample["cls"] = str(int(batch["cls"][i])).encode()
            if "txt" in batch:
                sample["txt"] = batch["txt"][i].encode()
            yield sample


class Decoder:
    """Picklable per-sample decode for token shards: ``ids`` (long) and/or ``latents`` (float32)."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "ids.npy" in sample:
            ids = np.load(io.BytesIO(sample["ids.npy"]), allow_pickle=False)
            if ids.dtype.kind not in "iu":
                raise ValueError(f"ids.npy has dtype {ids.dtype}, expected integers")
            out["ids"] = torch.from_numpy(ids.astype(np.int64))
        if "latents.npy" in sample:
            out["latents"] = torch.from_numpy(np.load(io.BytesIO(sample["latents.npy"])).astype(np.float32))
        if not out:
            raise KeyError(f"sample {sample.get('__key__')!r} has neither ids.npy nor latents.npy")
        return out
