"""`ShardDataModule`: webdataset shards of any modality as dict batches for Lightning.

Training reads resampled shards (drawn with replacement, a different stream per rank and worker, so every
rank always has data even with fewer shards than ranks x workers), shuffles in a buffer and ends each epoch
after a fixed number of batches set with ``with_epoch`` on the WebLoader (batches per rank: equal on every
rank, which DDP needs). ``resampled=False`` reads each shard once per pass instead (explicit
``shardshuffle``, split by node and worker; a rank or worker with no shard of its own wraps around to
``shards[i % n]`` rather than idling, and the pass repeats until the epoch length).

Every random stage (shard draws, shard order, shuffle buffer, crops, flips, gain) is seeded by ``seed``,
the rank, the worker and the epoch. `EpochLoader` sets the epoch from the trainer before each epoch's
workers start. So epochs differ and runs repeat, and a resumed run draws its epoch's data again. Before,
each epoch's fresh workers restarted their generators, and every epoch repeated the first one exactly.
``shardshuffle`` > 0 shuffles the whole shard list each epoch; it is no longer webdataset's buffer size.

Validation is deterministic: shards in order, split by node then worker (disjoint across ranks), no
augmentation, a final partial batch. A rank or worker that gets no shard yields nothing.

Corrupt samples (unreadable tar member, undecodable file, wrong shape) are skipped with a warning; the
shared count is `skipped` and is logged as ``data/skipped`` when a Lightning logger is attached. A shard that
cannot be read at all (missing, unreachable, truncated), or whose samples all fail to decode, is retried
``shard_retries`` more times (a read error), then skipped for the epoch, warned about with its reason and
counted (`skipped_shards`, ``data/skipped_shards``); when no training batch can be read the run stops with
`RunFailedError` instead of retrying forever (`tokenforge.data.reading`). With DataLoader workers, a worker
logs each skipped shard as one WARNING line on its stderr, and the main process echoes the skips once as a
warning (`WorkerSkipEcho`: how many more, the last reason, the running count). A folder with a
``manifest.json`` is read as exactly the shards it lists.

``train`` / ``val`` may be remote (`tokenforge.data.shards.shard_urls`): a ``pipe:`` command, ``http(s)://`` or
``s3://`` (fsspec + s3fs) URLs, brace patterns (``https://host/train-{000000..000999}.tar``), a remote
``manifest.json`` URL (its shards and sample count), or a list of specs. Remote shards take the same retries,
skips, counters, epoch seeding and mid-epoch resumption as local ones: only the opening of a shard differs.

Batches (the contract other modules rely on): ``image`` [B,3,H,W] in [-1,1]; ``audio`` [B,T];
``points``/``normals`` [B,N,3], ``queries`` [B,Q,3], ``occupancy`` [B,Q], ``near`` [B,Q] bool;
``ids`` long / ``latents`` float32 for tokens; optional ``cls`` long [B], ``txt`` list[str]; ``__key__``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
import webdataset as wds

from tokenforge.data.collate import collate, with_extras
from tokenforge.data.reading import DecodeGuard, ShardHealth, ShardReader, WorkerSkipEcho
from tokenforge.data.shards import (
    EpochSeed,
    ResampledShards,
    ShardShuffle,
    SkipCounter,
    WorkerRandom,
    read_manifest,
    shard_urls,
)

MODALITIES = ("image", "audio", "mesh", "tokens")


def _wrap_split(urls: list[str], index: int, count: int) -> list[str]:
    """``urls[index::count]``, or one shard chosen round-robin when there are fewer shards than takers."""
    if len(urls) >= count:
        return urls[index::count]
    return [urls[index % len(urls)]] if urls else []


def wrapping_node_split(urls: Any) -> Any:
    rank, world, _, _ = wds.utils.pytorch_worker_info()
    yield from _wrap_split(list(urls), rank, world)


def wrapping_worker_split(urls: Any) -> Any:
    _, _, worker, workers = wds.utils.pytorch_worker_info()
    yield from _wrap_split(list(urls), worker, workers)


class ShardDataModule(pl.LightningDataModule):
    """Train/val loaders over webdataset shards; ``modality`` picks the decoder (image|audio|mesh|tokens)."""

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        modality: str = "image",
        batch_size: int = 8,
        num_workers: int = 0,
        image_size: int | None = 256,
        random_crop: bool = True,
        hflip: bool = True,
        sample_rate: int = 24000,
        segment_samples: int = 24000,
        gain_db: float = 0.0,
        num_points: int = 2048,
        num_queries: int = 2048,
        epoch_samples: int | None = None,
        shuffle_buffer: int = 1000,
        shardshuffle: int = 100,
        resampled: bool = True,
        seed: int = 0,
        val_batch_size: int | None = None,
        pin_memory: bool = False,
        shard_retries: int = 2,
    ) -> None:
        super().__init__()
        modality = {"images": "image", "meshes": "mesh", "token": "tokens"}.get(modality, modality)
        if modality not in MODALITIES:
            raise ValueError(f"modality {modality!r}: choose one of {', '.join(MODALITIES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.train_spec, self.val_spec, self.modality = train, val, modality
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_batch_size = val_batch_size or batch_size
        self.epoch_samples, self.shuffle_buffer, self.shardshuffle = epoch_samples, shuffle_buffer, shardshuffle
        self.resampled, self.seed, self.pin_memory = resampled, seed, pin_memory
        self.shard_retries = shard_retries
        self.healths: list[ShardHealth] = []  # one per loader built, for the skipped-shard count
        self.options = {"image_size": image_size, "random_crop": random_crop, "hflip": hflip,
                        "sample_rate": sample_rate, "segment_samples": segment_samples, "gain_db": gain_db,
                        "num_points": num_points, "num_queries": num_queries}
        self.counter = SkipCounter()
        self.epoch_seed = EpochSeed(seed)  # set each epoch by EpochLoader, read by the random stages
        self._logged_skips = (0, 0)

    # ------------------------------------------------------------------ pieces

    @property
    def skipped(self) -> int:
        """Corrupt samples skipped so far (all workers of this process)."""
        return int(self.counter)

    @property
    def skipped_shards(self) -> int:
        """Shards skipped as unreadable so far (every loader, every epoch)."""
        return sum(int(health.skipped.value) for health in self.healths)

    def decoder(self, train: bool) -> Any:
        """The modality's picklable per-sample decode (raw sample dict -> tensors)."""
        o = self.options
        if self.modality == "image":
            from tokenforge.data.image import Decoder

            return Decoder(o["image_size"], train, o["random_crop"], o["hflip"], self.epoch_seed)
        if self.modality == "audio":
            from tokenforge.data.audio import Decoder

            return Decoder(o["sample_rate"], o["segment_samples"], train, o["gain_db"], self.epoch_seed)
        if self.modality == "mesh":
            from tokenforge.data.mesh import Decoder

            return Decoder(o["num_points"], o["num_queries"], train, self.epoch_seed)
        from tokenforge.data.tokens import Decoder

        return Decoder()

    def epoch_batches(self) -> int:
        """Training batches per rank per epoch: ``epoch_samples`` (default: the manifest's train count)."""
        samples = self.epoch_samples
        if samples is None:
            samples = manifest_count(self.train_spec, "train")
            samples = 10_000 if samples is None else samples
        return max(1, math.ceil(samples / (self.batch_size * self.world_size())))

    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else _world_size()

    def share_val_samples(self, urls: list[str]) -> bool:
        """True when there are fewer validation shards than ranks (but at least as many samples): split samples."""
        world = self.world_size()
        if world <= len(urls):
            return False
        count = manifest_count(self.val_spec, "val")
        return count is None or count >= world

    def dataset(self, urls: list[str], train: bool, share: bool = False,
                health: ShardHealth | None = None) -> wds.DataPipeline:
        """The webdataset pipeline: shards -> samples -> decode (guarded) -> shuffle -> batches. ``share``
        (validation only): every rank reads every shard and keeps its share of the samples (`SampleShare`).
        ``health`` is the loader's shared shard state (a fresh one when not given)."""
        stages: list[Any]
        health = health or ShardHealth(urls, self.counter.context)
        samples = ShardReader(health, self.counter, retries=self.shard_retries)
        if train and self.resampled:
            stages = [ResampledShards(urls, self.epoch_seed), samples]
        elif train:
            stages = [wds.SimpleShardList(urls), ShardShuffle(self.epoch_seed) if self.shardshuffle else _identity,
                      wrapping_node_split, wrapping_worker_split, samples]
        elif share:
            stages = [wds.SimpleShardList(urls), samples, SampleShare()]
        else:
            stages = [wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker, samples]
        if train and self.shuffle_buffer > 1:
            # seeded per rank, worker and epoch (webdataset's default seeds from pid and time: runs would not repeat)
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100),
                                      rng=WorkerRandom(self.epoch_seed, "shuffle")))
        decode = with_extras(self.decoder(train))
        stages += [wds.map(DecodeGuard(health, self.counter, decode)), wds.select(_not_none),
                   wds.batched(self.batch_size if train else self.val_batch_size, collation_fn=collate,
                               partial=not train)]
        pipeline = wds.DataPipeline(*stages)
        if train and not self.resampled:
            pipeline = pipeline.repeat()
        return pipeline

    def loader(self, urls: list[str], train: bool) -> Any:
        workers = self.num_workers
        share = not train and self.share_val_samples(urls)
        if not train:  # never more validation workers than shards: each worker holds its own shards
            workers = min(workers, 1 if share else max(1, len(urls)))
        # its own generator: a DataLoader otherwise draws its workers' base seed from the global torch RNG at
        # every epoch start, which would shift the training step's random stream on a mid-epoch resume
        health = ShardHealth(urls, self.counter.context)  # before the workers start: they share it
        self.healths.append(health)
        loader = wds.WebLoader(self.dataset(urls, train, share, health), batch_size=None, shuffle=False,
                               num_workers=workers,
                               pin_memory=self.pin_memory, persistent_workers=False,
                               generator=torch.Generator().manual_seed(self.seed),
                               multiprocessing_context=self.counter.context if workers > 0 else None)
        if train:
            batches = self.epoch_batches()
            with warnings.catch_warnings():  # with_length only provides len() for progress bars; that is all we want
                warnings.simplefilter("ignore", UserWarning)
                loader = loader.with_epoch(batches).with_length(batches)
            return EpochLoader(loader, self.epoch_seed, self._trainer, health, self.counter, echo=workers > 0)
        return CheckedLoader(loader, health, echo=workers > 0)

    def _trainer(self) -> Any:
        return self.trainer

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        self.train_urls = shard_urls(self.train_spec, "train") if self.train_spec else []
        self.val_urls = shard_urls(self.val_spec, "val") if self.val_spec else []

    def train_dataloader(self) -> EpochLoader:
        if not getattr(self, "train_urls", None):
            self.setup("fit")
        return self.loader(self.train_urls, train=True)

    def val_dataloader(self) -> Any:
        if not hasattr(self, "val_urls"):
            self.setup("validate")
        if not self.val_urls:
            return []
        return self.loader(self.val_urls, train=False)

    def test_dataloader(self) -> Any:
        return self.val_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        skipped = (self.skipped, self.skipped_shards)
        if skipped != self._logged_skips and self.trainer is not None and self.trainer.logger is not None:
            metrics = {"data/skipped": float(skipped[0]), "data/skipped_shards": float(skipped[1])}
            self.trainer.logger.log_metrics(metrics, step=self.trainer.global_step)
            self._logged_skips = skipped
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "skipped_shards": self.skipped_shards}


class SampleShare:
    """Validation with fewer shards than ranks: every rank reads all shards as one stream and keeps samples
    ``rank, rank + world, ...``. The shares are then disjoint, complete together, and never empty. Splitting
    by shard would leave a rank with no batch. That rank would skip the all-reduce of a ``sync_dist`` metric
    at the end of validation, and the others would hang (NCCL) or fail (gloo)."""

    def __call__(self, samples: Any) -> Any:
        rank, world, _, _ = wds.utils.pytorch_worker_info()
        for index, sample in enumerate(samples):
            if index % world == rank:
                yield sample


class EpochLoader:
    """The training loader: before each pass it sets the pipeline's epoch (the trainer's current epoch; without a
    trainer, the number of passes so far), so every epoch draws new random crops, shuffles and shards.

    A run resumed from a mid-epoch checkpoint (``interrupted.ckpt``, ``every_n_train_steps``) skips the batches
    of that epoch the checkpoint already trained on: the epoch's data are a function of its seed, so skipping
    reproduces the position exactly. The skipped batches are read and decoded, which costs up to one epoch.
    """

    def __init__(self, loader: Any, seed: EpochSeed, trainer: Any, health: ShardHealth | None = None,
                 counter: SkipCounter | None = None, echo: bool = False) -> None:
        self.loader, self.seed, self.trainer, self.passes = loader, seed, trainer, 0
        self.health, self.counter = health, counter
        self.echo = WorkerSkipEcho(health) if echo and health is not None else _nothing

    def __len__(self) -> int:
        return len(self.loader)

    # Lightning's "resumable loader" interface. The position needs no state of its own: it is the trainer's
    # epoch and its count of batches done, both restored from the checkpoint.
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.seed.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __iter__(self) -> Any:
        # a generator: the epoch is set when the first batch is asked for, just before the workers start
        trainer = self.trainer()
        self.seed.epoch = self.passes if trainer is None else trainer.current_epoch
        self.passes += 1
        done = _batches_done(trainer)
        if self.health is not None:
            self.health.reset()  # a shard that failed last epoch gets its retries again
        count = 0
        for index, batch in enumerate(self.loader):
            count += 1
            self.echo()
            if index >= done:
                yield batch
        self.echo()
        if self.health is not None:  # an epoch without a single batch: every shard failed; stop the run
            self.health.check_epoch(count, "training", int(self.counter) if self.counter is not None else 0)


class CheckedLoader:
    """The validation loader: stops with `RunFailedError` when every one of its shards failed to read."""

    def __init__(self, loader: Any, health: ShardHealth, echo: bool = False) -> None:
        self.loader, self.health = loader, health
        self.echo = WorkerSkipEcho(health) if echo else _nothing

    def __iter__(self) -> Any:
        self.health.reset()
        count = 0
        for batch in self.loader:
            count += 1
            self.echo()
            yield batch
        self.echo()
        if not count and self.health.all_failed():  # a rank given no shard legitimately yields nothing
            self.health.check_epoch(count, "validation")


def manifest_count(spec: Any, split: str) -> int | None:
    """Samples of ``split`` that the manifest(s) of ``spec`` count (a folder, a manifest path or URL; for a list,
    the sum when every entry has one); None when unknown (a brace pattern, a tar, a pipe command)."""
    if not spec:
        return None
    counts = []
    for one in spec if isinstance(spec, (list, tuple)) else [spec]:
        manifest = read_manifest(one)
        count = manifest.get("splits", {}).get(split, {}).get("count") if manifest else None
        if count is None:
            return None
        counts.append(int(count))
    return sum(counts)


def _batches_done(trainer: Any) -> int:
    """Batches of the current epoch already trained on: 0 at an epoch's start, more when resuming inside one."""
    try:
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)
    except AttributeError:  # no trainer (a loader iterated by hand)
        return 0


def _nothing() -> None:
    pass


def _identity(source: Any) -> Any:
    yield from source


def _not_none(sample: Any) -> bool:
    return sample is not None


def _world_size() -> int:
    return wds.utils.pytorch_worker_info()[1]
