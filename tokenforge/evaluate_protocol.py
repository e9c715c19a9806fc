"""What the tokenizer and generator halves of `tokenforge evaluate` share: loading the model, reading held-out
shards in order, stopping after ``max_items`` and writing ``metrics.json`` with the protocol's timing.

`tokenforge.evaluate` (tokenizers, the command) and `tokenforge.evaluate_generators` both import it, so neither
imports the other's helpers back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokenforge import console

SKIPPED = "skipped: no weights"


def load_model(model: nn.Module | str | Path, device: str = "cpu") -> nn.Module:
    """A module as given, or restored with `hub.from_pretrained` (folder, fit .ckpt or name)."""
    if isinstance(model, (str, Path)):
        from tokenforge.hub import from_pretrained

        model = from_pretrained(model)
    return model.to(device).eval()


def batches(shards: str | Path, split: str, modality: str, batch_size: int, **options: Any) -> Any:
    """Deterministic batches of ``split`` (shard order, no augmentation) through `ShardDataModule`'s decoders."""
    from tokenforge.data.datamodule import ShardDataModule
    from tokenforge.data.shards import shard_urls

    urls = shard_urls(shards, split)
    dm = ShardDataModule(train="", val=str(shards), modality=modality, batch_size=batch_size,
                         val_batch_size=batch_size, **options)
    return dm.loader(urls, train=False)


def check_modality(shards: str | Path, want: str, who: str) -> dict[str, Any] | None:
    """The shards' manifest (None without one); `ValueError` when they hold another modality than ``want``."""
    from tokenforge.data.shards import read_manifest

    manifest = read_manifest(shards) if Path(str(shards)).is_dir() else None
    if manifest is not None and manifest.get("modality") != want:
        raise ValueError(f"{who} needs {want} shards but {shards} holds {manifest.get('modality')} shards "
                         f"(kind {manifest.get('kind')!r}); point --shards at matching data")
    return manifest


def limited(loader: Any, max_items: int | None, desc: str, progress: bool) -> Any:
    """The loader's batches, the last one cut so that at most ``max_items`` items come out; a progress bar."""
    seen = 0
    bar = console.progress(total=max_items, desc=desc, unit="item", disable=not progress)
    for batch in loader:
        first = next(v for k, v in batch.items() if isinstance(v, torch.Tensor))
        size = len(first)
        if max_items is not None:
            size = min(size, max_items - seen)
            batch = {k: v[:size] for k, v in batch.items()}
        yield batch
        seen += size
        bar.update(size)
        if max_items is not None and seen >= max_items:
            break
    bar.close()


def finish(out_dir: str | Path, metrics: dict[str, Any], started: float) -> dict[str, Any]:
    """Refuse an empty split, add the seconds taken to the protocol, write ``out_dir/metrics.json``; return it."""
    if metrics["protocol"]["n_items"] == 0:
        raise ValueError(f"split {metrics['protocol']['split']!r} of {metrics['protocol']['shards']} is empty: "
                         "nothing to evaluate")
    metrics["protocol"]["seconds"] = round(time.perf_counter() - started, 3)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
