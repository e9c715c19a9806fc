"""``tokenforge bench data``: shard loader throughput (samples/s, and per worker) for each modality.

Without ``--shards`` it first makes small shards from the bundled real data (``$TOKENFORGE_SHARED/data`` or
``../shared/data``): faces + photos, 16 kHz speech, small meshes, and token shards of random ids. Timing starts
after the first batch (worker start-up excluded) and covers ``--batches`` training batches through
`ShardDataModule`, so it measures what training sees: tar reading, decoding, augmentation and collation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODALITIES = ("image", "audio", "mesh", "tokens")


def find_data() -> Path | None:
    here = Path(__file__).resolve()
    for candidate in (os.environ.get("TOKENFORGE_SHARED"), *(p / "shared" for p in here.parents)):
        if candidate and Path(candidate, "data").is_dir():
            return Path(candidate, "data")
    return None


def make_bench_shards(modality: str, data: Path, out: Path) -> Path:
    """Small raw (or token) shards from the real data, for one modality."""
    from tokenforge.data.shards import make_shards

    target = out / modality
    if (target / "manifest.json").exists():
        return target
    if modality == "image":
        make_shards("images", data / "images", target, shard_size=32, format="jpg", max_side=384, progress=False,
                    overwrite=True)
    elif modality == "audio":
        make_shards("audio", data / "speech", target, shard_size=32, sample_rate=16000, progress=False,
                    overwrite=True)
    elif modality == "mesh":
        make_shards("meshes", f"{data}/meshes/[!b]*.ply", target, shard_size=8, num_surface=4096, num_vol=2048,
                    num_near=2048, workers=max(0, min(4, (os.cpu_count() or 1) - 1)), progress=False,
                    overwrite=True)
    else:
        import webdataset as wds

        from tokenforge.data.shards import npy_bytes

        target.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        with wds.ShardWriter(str(target / "train-%06d.tar"), maxcount=256, verbose=0) as writer:
            for i in range(1024):
                writer.write({"__key__": f"{i:06d}", "ids.npy": npy_bytes(rng.integers(0, 16384, 256, dtype=np.int16)),
                              "cls": str(i % 10).encode()})
        shards = [{"name": path.name} for path in sorted(target.glob("train-*.tar"))]
        (target / "manifest.json").write_text(json.dumps({"kind": "tokens",
                                                          "splits": {"train": {"count": 1024, "shards": shards}}}))
    return target


def measure(shards: str, modality: str, workers: int, batches: int, batch_size: int, **options: Any) -> float:
    """Samples per second over ``batches`` training batches (after one warm-up batch)."""
    from tokenforge.data.datamodule import ShardDataModule

    dm = ShardDataModule(train=shards, modality=modality, batch_size=batch_size, num_workers=workers,
                         epoch_samples=(batches + 1) * batch_size, shuffle_buffer=64, **options)
    dm.setup("fit")
    iterator = iter(dm.train_dataloader())
    next(iterator)
    start, samples = time.perf_counter(), 0
    for batch in iterator:
        samples += len(batch["__key__"])
    return samples / max(time.perf_counter() - start, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge bench data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modality", default=",".join(MODALITIES), help="comma-separated: image,audio,mesh,tokens")
    parser.add_argument("--shards", default=None, help="shard folder to read (one modality); default: make some")
    parser.add_argument("--data", default=None, help="real data folder (default: $TOKENFORGE_SHARED/data)")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    modalities = [m for m in args.modality.split(",") if m]
    if args.shards and len(modalities) != 1:
        parser.error("--shards reads one modality: pass --modality too")
    data = Path(args.data) if args.data else find_data()
    if not args.shards and data is None:
        print("tokenforge bench data: no real data found; set TOKENFORGE_SHARED or pass --shards", file=sys.stderr)
        return 2
    options = {"image": {"image_size": args.image_size}, "audio": {"sample_rate": 16000, "segment_samples": 16000},
               "mesh": {"num_points": 2048, "num_queries": 2048}, "tokens": {}}
    results = []
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        for modality in modalities:
            shards = args.shards or str(make_bench_shards(modality, data, Path(tmp)))
            for workers in (int(w) for w in args.workers.split(",")):
                rate = measure(shards, modality, workers, args.batches, args.batch_size, **options[modality])
                results.append({"modality": modality, "workers": workers, "samples_per_s": round(rate, 1),
                                "per_worker": round(rate / max(workers, 1), 1)})
                if not args.json:
                    print(f"{modality:<7} workers={workers:<2} {rate:9.1f} samples/s  "
                          f"{rate / max(workers, 1):9.1f} per worker", flush=True)
    if args.json:
        print(json.dumps({"cpu_count": os.cpu_count(), "batch_size": args.batch_size, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
