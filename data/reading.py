"""Reading shards that may fail: bounded retries, skip and count, and a clear stop when none can be read.

`ShardReader` replaces webdataset's ``tarfile_to_samples`` stage. Each shard is opened and read; a failure
(missing file, refused connection, truncated or corrupt tar) is retried up to ``retries`` more times (with a
short back-off for remote URLs), and a shard that still fails is skipped, counted and reported once with
its reason. Samples already yielded from a shard that broke half-way are never yielded twice: a retry skips
them.

A shard that opens fine but whose samples all fail to decode (garbage members) or that holds no sample
fails too: the first read of each shard in an epoch is its probe (its samples are tagged), `DecodeGuard`
tallies how its samples decode, and when the whole probe read gave no decodable sample the shard is skipped
and counted exactly like an unreadable one (its later samples are dropped without decoding). Without this a
resampled run drew such shards forever.

`ShardHealth` is what the DataLoader workers of one loader share about its shards (unknown / read /
failed, the number skipped, the last reason). A shard that failed is not tried again in the same epoch;
a worker whose shards have all failed ends its stream instead of drawing failed shards forever (webdataset's
``warn_and_continue`` and resampling used to loop on an unreachable URL without end). The loader in the
main process then sees an epoch without a batch and raises `RunFailedError` (`check_epoch`), naming how
many shards failed and why. Each epoch starts with every shard unknown again (`ShardHealth.reset`).

A shard that breaks part-way through (a connection closed mid-transfer, a truncated tar) and still breaks
after its retries keeps the samples it gave: its lost remainder counts as one corrupt sample, and the shard
counts as skipped (`ShardHealth.mark_broken`) and is not drawn again in that epoch.

Where shards come from (`open_shard`): HTTP(S) URLs are opened with ``urllib`` and a timeout (webdataset's
``curl`` retries a timed-out connection 30 times, 30 s each); ``pipe:`` commands, ``file://`` URLs and local
paths go through webdataset's ``gopen``; every other scheme (``s3://``, ``gs://``, ``memory://``, ...) goes
through fsspec, whose filesystem package (s3fs for ``s3://``) must be installed: `check_openable` says so in
one line before any worker starts.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.request
import warnings
from collections.abc import Iterator
from typing import Any

import webdataset as wds
from torch.utils.data import get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_iterator

from tokenforge.errors import RunFailedError, UsageError

UNKNOWN, READ, FAILED, BROKEN = 0, 1, 2, 3  # BROKEN: broke part-way; its samples so far are kept
SKIPPED = (FAILED, BROKEN)  # not read again in this epoch
REASON_CHARS = 400
PROBE = "__probe__"  # tags the samples of a shard's first read in an epoch (removed before decoding)


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://") or url.startswith("pipe:")


def scheme(url: str) -> str:
    """``s3`` for ``s3://b/k``; ``pipe`` for a ``pipe:`` command; empty for a local path."""
    if url.startswith("pipe:"):
        return "pipe"
    return url.split("://", 1)[0].lower() if "://" in url else ""


GOPEN_SCHEMES = ("", "pipe", "file")  # read by webdataset's gopen; http(s) by urllib; the rest by fsspec


def open_shard(url: str, timeout: float) -> Any:
    """A readable byte stream of one shard (or of a remote ``manifest.json``)."""
    kind = scheme(url)
    if kind in ("http", "https"):
        return WholeResponse(urllib.request.urlopen(url, timeout=timeout))  # noqa: S310 (the user's own URL)
    if kind in GOPEN_SCHEMES:
        return wds.gopen(url)
    import fsspec

    return fsspec.open(url, "rb").open()


class WholeResponse:
    """An HTTP response that raises when the connection closes before its Content-Length: ``http.client``'s
    ``read(n)`` then just returns fewer bytes, and the tar reader would blame a truncated tar instead."""

    def __init__(self, response: Any) -> None:
        self.response, self.got = response, 0
        length = response.headers.get("Content-Length")
        self.length = int(length) if length and length.isdigit() else None

    def read(self, size: int = -1) -> bytes:
        whole = size is None or size < 0
        data = self.response.read() if whole else self.response.read(size)
        self.got += len(data)
        ended = whole or (size > 0 and not data)
        if ended and self.length is not None and self.got < self.length:
            raise ConnectionError(f"the connection closed after {self.got} of {self.length} bytes")
        return data

    def close(self) -> None:
        self.response.close()


FSSPEC_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
PIPE_COMMANDS = {"s3": "aws s3 cp {url} -", "gs": "gsutil cat {url}", "gcs": "gsutil cat {url}"}


def check_openable(urls: list[str]) -> None:
    """`UsageError` (one line) when a URL's scheme has no reader here: fsspec's package for it (s3fs for
    ``s3://``, gcsfs for ``gs://``...) is missing, or fsspec does not know the scheme."""
    kinds: dict[str, str] = {}
    for url in urls:
        kinds.setdefault(scheme(url), url)
    for kind, url in kinds.items():
        if kind in GOPEN_SCHEMES or kind in ("http", "https"):
            continue
        import fsspec

        try:
            fsspec.get_filesystem_class(kind)
        except ImportError as error:
            package = FSSPEC_PACKAGES.get(kind)
            need = f"the {package} package: pip install {package}" if package else \
                (str(error).splitlines() or ["its fsspec filesystem package"])[0]
            command = PIPE_COMMANDS.get(kind, "a command that writes {url} to stdout").format(url=url)
            raise UsageError(f"{kind}:// shards ({url}) need {need}, or stream them through a command, e.g. "
                             f"\"pipe:{command}\"") from None
        except ValueError:
            raise UsageError(f"no reader for {kind}:// shards ({url}): use a local path, http(s)://, s3:// "
                             "(with s3fs), another fsspec URL, or a pipe: command") from None


def read_remote_json(url: str, attempts: int = 3, timeout: float = 30.0, backoff: float = 0.25) -> Any:
    """A remote JSON file (a shard folder's ``manifest.json``), tried ``attempts`` times; `RunFailedError`
    naming the URL when it cannot be read."""
    check_openable([url])
    error: BaseException | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            stream = open_shard(url, timeout)
            try:
                return json.loads(stream.read())
            finally:
                _close_quietly(stream)
        except json.JSONDecodeError as caught:
            raise RunFailedError(f"{url} is not a JSON manifest ({caught}); give the URL of a shard folder's "
                                 "manifest.json, a brace pattern or a list of shard URLs") from None
        except Exception as caught:
            error = caught
    raise RunFailedError(f"cannot read the shard manifest {url} after {attempts} attempts: {describe(error)}; "
                         "check the URL and the network")


PIPE_EXIT = re.compile(r"^\(\((?P<command>'.*'),\), \{.*\}\): exit (?P<status>-?\d+)")


def describe(error: BaseException) -> str:
    """One line for a read error (webdataset appends the stream and URL to ``args``: keep the first; its
    ``pipe:`` error, ``(('cmd',), {...}): exit 1 (read) {}``, becomes ``the command 'cmd' exited with status 1``)."""
    text = str(error.args[0]) if error.args else str(error)
    failed = PIPE_EXIT.match(text)
    if failed:
        text = f"the command {failed['command']} exited with status {failed['status']}"
    return f"{type(error).__name__}: {text}".splitlines()[0][:REASON_CHARS]


def report(line: str) -> None:
    """A skip: a warning in the main process; in a DataLoader worker, one WARNING log line on the worker's
    stderr (a warning there prints two lines, and only the worker's filters would see it). The main
    process then echoes it once (`WorkerSkipEcho`)."""
    if get_worker_info() is None:
        warnings.warn(line, stacklevel=4)
    else:
        logging.getLogger(__name__).warning(line)


class ShardHealth:
    """Per-shard state of one loader, shared by its DataLoader workers (created before they start)."""

    def __init__(self, urls: list[str], context: Any) -> None:
        self.urls = list(urls)
        self.index = {url: i for i, url in enumerate(self.urls)}
        self.state = context.Array("b", max(1, len(self.urls)))
        self.skipped = context.Value("l", 0)  # shards skipped, all epochs
        self.failed_now = context.Value("l", 0)  # shards failed in this epoch
        self.undecodable_now = context.Value("l", 0)  # of those, shards that opened but gave no decodable sample
        self.reason = context.Array("c", REASON_CHARS + 200)
        n = max(1, len(self.urls))  # per shard, this epoch: the probe (first) read and how its samples decoded
        self.probing = context.Array("b", n, lock=False)
        self.probe_size = context.Array("l", n, lock=False)  # samples of the finished probe read (-1: not yet)
        self.probe_ok = context.Array("l", n, lock=False)
        self.probe_failed = context.Array("l", n, lock=False)
        self.decode_errors: dict[str, str] = {}  # last decode error per shard (this process: the probe's reader)
        for i in range(n):
            self.probe_size[i] = -1

    def reset(self) -> None:
        """A new epoch: every shard may be tried again (a shard that failed once may be back)."""
        with self.state.get_lock():
            for i in range(len(self.urls)):
                self.state[i] = UNKNOWN
                self.probing[i], self.probe_size[i], self.probe_ok[i], self.probe_failed[i] = 0, -1, 0, 0
            self.failed_now.value = 0
            self.undecodable_now.value = 0

    def get(self, url: str) -> int:
        i = self.index.get(url)
        return UNKNOWN if i is None else self.state[i]

    def mark_read(self, url: str) -> None:
        i = self.index.get(url)
        if i is not None and self.state[i] not in SKIPPED:  # a read that ends after its shard was judged undecodable
            self.state[i] = READ

    def mark_broken(self, url: str, error: BaseException, attempts: int, samples: int) -> None:
        """``url`` broke after ``samples`` samples on every attempt: count it as skipped (once per epoch) and draw it
        no more this epoch; the samples it gave stay (the read error itself was reported as a corrupt sample)."""
        self._fail(url, f"broke after {samples} samples: {describe(error)}",
                   f" after {attempts} attempts: it broke after {samples} samples (those are kept; the rest is "
                   f"skipped this epoch)", state=BROKEN)

    def mark_failed(self, url: str, error: BaseException, attempts: int) -> None:
        reason = describe(error)
        self._fail(url, reason, f" after {attempts} attempts: {reason}")

    def _fail(self, url: str, reason: str, told: str, undecodable: bool = False, state: int = FAILED) -> None:
        """Skip ``url`` for this epoch and count it (once per epoch); report ``told`` and the running count."""
        with self.state.get_lock():
            i = self.index.get(url)
            # already skipped this epoch (two workers failed it at once, or the probe's last decode and the end
            # of its read both got here): counted and reported once
            if i is not None and self.state[i] in SKIPPED:
                return
            if i is not None:
                self.state[i] = state
                self.failed_now.value += 1
                self.undecodable_now.value += int(undecodable)
            self.skipped.value += 1
            total = self.skipped.value
            self.reason.value = f"{url}: {reason}".encode("utf-8", "replace")[: REASON_CHARS + 199]
        report(f"skipped shard {url}{told} [{total} shards skipped so far]")

    # ---- shards that open but give no decodable sample

    def claim_probe(self, url: str) -> bool:
        """True for the first read of ``url`` in this epoch (by any worker): its samples are the probe."""
        i = self.index.get(url)
        if i is None:
            return False
        with self.state.get_lock():
            if self.probing[i]:
                return False
            self.probing[i] = 1
            return True

    def probe_read(self, url: str, samples: int) -> None:
        """The probe read of ``url`` ended after ``samples`` samples."""
        i = self.index.get(url)
        if i is not None:
            self.probe_size[i] = samples
            self.check_decodes(url)

    def probe_decoded(self, url: str, error: BaseException | None) -> None:
        """One probe sample of ``url`` decoded (``error`` None) or failed to."""
        i = self.index.get(url)
        if i is None:
            return
        with self.state.get_lock():
            if error is None:
                self.probe_ok[i] += 1
            else:
                self.probe_failed[i] += 1
        if error is not None:
            self.decode_errors[url] = describe(error)
            self.check_decodes(url)

    def check_decodes(self, url: str) -> None:
        """Fail ``url`` when its whole probe read is known and gave no decodable sample (or none at all)."""
        i = self.index[url]
        size, ok, bad = self.probe_size[i], self.probe_ok[i], self.probe_failed[i]
        if size < 0 or ok or bad < size or self.state[i] in SKIPPED:
            return
        if size == 0:
            reason = "the shard opens but holds no samples"
        else:
            reason = f"all {size} samples failed to decode (last: {self.decode_errors.get(url, 'unknown')})"
        self._fail(url, reason, f": {reason}", undecodable=True)

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
            hint = ("check the shard paths or URLs and the network" if failed > self.undecodable_now.value else
                    "the shards hold no decodable sample: remake them with `tokenforge shards make ... --overwrite`")
            raise RunFailedError(f"no {what} batch could be read: {failed} of {len(self.urls)} shards failed "
                                 f"(last: {self.last_reason()}); {hint}")
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
            if self.health.get(url) in SKIPPED:
                continue
            yield from self.read(url)

    def read(self, url: str) -> Iterator[dict[str, Any]]:
        """One shard's samples; retried, then skipped and counted. The epoch's first read is its probe."""
        yielded, error = 0, None
        probe = self.health.claim_probe(url)
        for attempt in range(self.retries + 1):
            if attempt and is_remote(url):
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                for index, sample in enumerate(self.samples(url)):
                    if not probe and self.health.get(url) == FAILED:
                        return  # judged undecodable while this later read was going on
                    if index >= yielded:  # a retry skips what the broken attempt already gave
                        yielded += 1
                        yield {**sample, PROBE: True} if probe else sample
                self.health.mark_read(url)
                if probe:
                    self.health.probe_read(url, yielded)
                return
            except Exception as caught:  # any read error of this shard: retry, then skip
                error = caught
        if yielded:  # the shard broke after some samples: keep those, count the rest as one skip, skip the shard
            self.counter.skip(f"shard {url} after {yielded} samples", error)
            self.health.mark_broken(url, error, self.retries + 1, yielded)
            if probe:
                self.health.probe_read(url, yielded)
        else:
            self.health.mark_failed(url, error, self.retries + 1)

    def samples(self, url: str) -> Iterator[dict[str, Any]]:
        stream = open_shard(url, self.timeout)
        try:
            files = tar_file_iterator(stream)  # a read error raises: the retry loop above decides, reports once
            yield from group_by_keys(({**f, "__url__": url} for f in files), handler=self.counter.handler)
        except Exception as error:  # a failed ``pipe:`` command gives an empty tar first: its exit status says why
            try:
                stream.close()
            except Exception as closing:  # a command that failed by itself (not killed by our closing it)
                if (getattr(stream, "status", None) or 0) > 0:
                    raise closing from error
            raise
        except BaseException:  # the consumer stopped early (GeneratorExit), Ctrl-C: close, report nothing
            _close_quietly(stream)
            raise
        stream.close()  # a failed ``pipe:`` command shows here


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception:
        pass


class WorkerSkipEcho:
    """Repeats in the main process, as one warning line, the shard skips its DataLoader workers reported.

    A worker reports each skip on its own stderr (`report`: the same terminal when forked, but not the main
    process's ``sys.stderr``, warning filters or captured logs). The loader calls this after each batch and at
    the end of a pass; it warns when the shared count grew: how many more, the last reason, the total."""

    def __init__(self, health: ShardHealth) -> None:
        self.health, self.seen = health, 0

    def __call__(self) -> None:
        total = int(self.health.skipped.value)
        if total <= self.seen:
            return
        more, self.seen = total - self.seen, total
        warnings.warn(f"skipped shard(s) in the DataLoader workers: {more} more (last: {self.health.last_reason()})"
                      f" [{total} shards skipped so far]", stacklevel=2)


class DecodeGuard:
    """Pipeline map: a sample's decode, or None when it fails (counted as a corrupt sample). It tallies how a
    shard's probe samples decode (`ShardHealth.probe_decoded`), and drops samples of a shard already skipped
    this epoch without decoding them."""

    def __init__(self, health: ShardHealth, counter: Any, decode: Any) -> None:
        self.health, self.counter, self.decode = health, counter, decode

    def __call__(self, sample: dict[str, Any]) -> Any:
        probe = sample.pop(PROBE, False)
        url = sample.get("__url__")
        if url is not None and self.health.get(url) == FAILED:
            return None
        try:
            out = self.decode(sample)
        except Exception as error:
            self.counter.skip(f"key {sample.get('__key__')!r} in {url}", error)
            if probe:
                self.health.probe_decoded(url, error)
            return None
        if probe:
            self.health.probe_decoded(url, None)
        return out
