"""Metric weight files, found offline and checked by sha256.

Compute nodes often have no network, and a metric computed with the wrong weights is worse than none. Every
weight file a metric needs (Inception for FID, LPIPS trunks and heads, DNSMOS, UTMOS, ...) is a `WeightFile`:
its file name, its sha256 and where a researcher gets it. `locate` takes an explicit path or looks under
``$TOKENFORGE_HOME/weights/<file>``, verifies the hash (cached per path, size and mtime) and otherwise raises
`WeightsUnavailable` whose message is one line: ``unavailable: put <file> (sha256 ...) at <path>``. Callers
that report several metrics catch it and report that line instead of a number; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
_verified: dict[tuple[str, int, int], str] = {}


class WeightsUnavailable(RuntimeError):
    """A metric's weight file is missing or is not the expected file; the message says what to put where."""


@dataclass(frozen=True)
class WeightFile:
    """One weight file a metric needs. ``sha256=None`` accepts any file (a user's own checkpoint, e.g. UTMOS)."""

    name: str  # short name used in reports and on the command line
    file: str  # file name under $TOKENFORGE_HOME/weights/
    sha256: str | None
    source: str  # where to obtain it (URL or package), shown in docs/metrics.md


def weights_home() -> Path:
    """``$TOKENFORGE_HOME/weights`` (default ``~/.cache/tokenforge/weights``)."""
    home = Path(os.environ.get("TOKENFORGE_HOME", Path.home() / ".cache" / "tokenforge")).expanduser()
    return home / "weights"


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, remembered per (path, size, mtime) so a metric loop hashes each file once."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def _hint(weight: WeightFile, where: Path) -> str:
    checksum = f"sha256 {weight.sha256}" if weight.sha256 else "any sha256"
    return f"unavailable: put {weight.file} ({checksum}) at {where} (from {weight.source})"


def locate(weight: WeightFile, path: str | os.PathLike | None = None) -> Path:
    """The checked local file for ``weight``: ``path`` if given, else ``$TOKENFORGE_HOME/weights/<file>``.

    Raises `WeightsUnavailable` (one line) when the file is missing or its sha256 differs."""
    where = Path(path).expanduser() if path else weights_home() / weight.file
    if not where.is_file():
        raise WeightsUnavailable(f"{weight.name} " + _hint(weight, where))
    if weight.sha256 is not None:
        actual = sha256_of(where)
        if actual != weight.sha256:
            raise WeightsUnavailable(
                f"{weight.name} {_hint(weight, where)}; the file there has sha256 {actual}, not the expected one")
    return where


def describe(weight: WeightFile, path: str | os.PathLike | None = None) -> dict[str, str | None]:
    """What a result records about the weights it used: name, file and sha256 (computed, not assumed)."""
    where = locate(weight, path)
    return {"weights": weight.name, "file": str(where), "sha256": sha256_of(where)}
