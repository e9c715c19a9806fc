"""Reading shards that may fail: bounded retries, skip and count, and a clear stop when none can be read.

`ShardReader` replaces webdataset's ``tarfile_to_samples`` stage. Each shard is opened and read; a failure
(missing file, refused connection, truncated or corrupt tar) is retried up to ``retries`` more times (with a
short back-off for remote URLs), and a shard that still fails is skipped, counted and reported once with
its reason. Samples already yielded from a shard that broke half-way are never yielded twice: a retry skips
them.

`ShardHealth` is what the DataLoader workers of one loader share about its shards (unknown / read /
failed, the number skipped, the last reason). A shard that failed is not tried again in the same epoch;
a worker whose shards have all failed ends its stream instead of drawing failed shards forever (webdataset's
``warn_and_continue`` and resampling used to loop on an unreachable URL without end). The loader in the
main process then sees an epoch without a batch and raises `RunFailedError` (`check_epoch`), naming how
many shards failed and why. Each epoch starts with every shard unknown again (`ShardHealth.reset`).

HTTP(S) shards are opened with ``urllib`` and a timeout (webdataset's ``curl`` retries a timed-out
connection 30 times, 30 s each); other URLs (``pipe:``, ``s3:``, local paths) go through webdataset's
``gopen``.
"""

from __future__ import annotations

import time
import urllib.request
import warnings
from collections.abc import Iterator
from typing import Any

import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_iterator

from tokenforge.errors import RunFailedError

UNKNOWN, READ, FAILED = 0, 1, 2
REASON_CHARS = 400


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://") or url.startswith("pipe:")


def open_shard(url: str, timeout: float) -> Any:
    """A readable byte stream of one shard."""
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (the user's own shard URL)
    return wds.gopen(url)


def describe(error: BaseException) -> str:
    """One line for a read error (webdataset appends the stream and URL to ``args``: keep the first)."""
    text = str(error.args[0]) if error.args else str(error)
    return f"{type(error).__name__}: {text}".splitlines()[0][:REASON_CHARS]


class ShardHealth:
    """Per-shard state of one loader, shared by its DataLoader workers (created before they start)."""

    def __init__(self, urls: list[str], context: Any) -> None:
        self.urls = list(urls)
        self.index = {url: i for i, url in enumerate(self.urls)}
        self.state = context.Array("b", max(1, len(self.urls)))
        self.skipped = context.Value("l", 0)  # shards skipped, all epochs
        self.failed_now = context.Value("l", 0)  # shards failed in this epoch
        self.reason = context.Array("c", REASON_CHARS + 200)

    def reset(self) -> None:
        """A new epoch: every shard may be tried again (a shard that failed once may be back)."""
        with self.state.get_lock():
            for i in range(len(self.urls)):
                self.state[i] = UNKNOWN
            self.failed_now.value = 0

    def get(self, url: str) -> int:
        i = self.index.get(url)
        return UNKNOWN if i is None else self.state[i]

    def mark_read(self, url: str) -> None:
        if url in self.index:
            self.state[self.index[url]] = READ

    def mark_failed(self, url: str, error: BaseException, attempts: int) -> None:
        reason = describe(error)
        with self.state.get_lock():  # two workers may fail the same shard at once: count it once
            i = self.index.get(url)
            if i is not None and self.state[i] != FAILED:
                self.state[i] = FAILED
                self.failed_now.value += 1
            self.skipped.value += 1
            total = self.skipped.value
            self.reason.value = f"{url}: {reason}".encode("utf-8", "replace")[: REASON_CHARS + 199]
        warnings.warn(f"skipped shard {url} after {attempts} attempts: {reason} [{total} shards skipped so far]",
                      stacklevel=2)

    def failed(self) -> int:
        """Shards that failed in this epoch."""
        return int(self.failed_now.value)

    def all_failed(self) -> bool:
        return bool(self.urls) and self.failed() == len(self.urls)

    def last_reason(self) -> str:
        return self.reason.value.decode("utf-8", "replace")

    def check_epoch(self, batches: int, what: str, samples_skipped: int = 0) -> None:
        """Raise `RunFailedError` when a whole pass produced no batch: the run would otherwise never end."""
        if batches:
            return
        failed = self.failed()
        if failed:
            raise RunFailedError(f"no {what} batch could be read: {failed} of {len(self.urls)} shards failed "
                                 f"(last: {self.last_reason()}); check the shard paths or URLs and the network")
        raise RunFailedError(f"no {what} batch could be read from {len(self.urls)} shards ({samples_skipped} "
                             "samples skipped as corrupt); check the shards, e.g. remake them with "
                             "`tokenforge shards make ... --overwrite`")


class ShardReader:
    """Pipeline stage: ``{"url": ...}`` dicts in, webdataset samples out, with bounded retries per shard."""

    def __init__(self, health: ShardHealth, counter: Any, retries: int = 2, backoff: float = 0.25,
                 timeout: float = 30.0) -> None:
        self.health, self.counter = health, counter
        self.retries, self.backoff, self.timeout = max(0, int(retries)), backoff, timeout

    def __call__(self, shards: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            if self.health.all_failed():
                return  # nothing left that could be read this epoch: end instead of spinning
            url = shard["url"]
            if self.health.get(url) == FAILED:
                continue
            yield from self.read(url)

    def read(self, url: str) -> Iterator[dict[str, Any]]:
        """One shard's samples; retried, then skipped and counted."""
        yielded, error = 0, None
        for attempt in range(self.retries + 1):
            if attempt and is_remote(url):
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                for index, sample in enumerate(self.samples(url)):
                    if index >= yielded:  # a retry skips what the broken attempt already gave
                        yielded += 1
                        yield sample
                self.health.mark_read(url)
                return
            except Exception as caught:  # any read error of this shard: retry, then skip
                error = caught
        if yielded:  # the shard broke after some samples: keep those, count the rest as one skip
            self.health.mark_read(url)
            self.counter.skip(f"shard {url} after {yielded} samples", error)
        else:
            self.health.mark_failed(url, error, self.retries + 1)

    def samples(self, url: str) -> Iterator[dict[str, Any]]:
        stream = open_shard(url, self.timeout)
        try:
            files = tar_file_iterator(stream)  # a read error raises: the retry loop above decides, reports once
            yield from group_by_keys(({**f, "__url__": url} for f in files), handler=self.counter.handler)
        except BaseException:
            _close_quietly(stream)
            raise
        stream.close()  # a failed ``pipe:`` command shows here


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception:
        pass
