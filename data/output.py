"""Output folders that never mix two runs: refuse a non-empty one, or replace it atomically.

`check_output` refuses a folder that already holds anything (unless the caller asked to overwrite or to
resume). `staged_output` is how ``--overwrite`` replaces a folder: the new run writes into a fresh hidden
sibling (``.NAME.writing-*``), and only when it has finished is that sibling swapped in place of the old
folder, in one ``renameat2(RENAME_EXCHANGE)`` where the system has it (Linux), else in two renames. An
interruption therefore leaves either the old folder untouched or the new one complete, never a mix; an
interrupted run's sibling is removed (after ``kill -9`` a hidden ``.NAME.writing-*`` folder may remain,
which no reader looks at).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tokenforge.errors import UsageError


class OutputNotEmptyError(UsageError, FileExistsError):
    """The output folder already holds files (a usage error; also a ``FileExistsError`` for callers)."""


def is_nonempty_dir(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def check_output(out: Path, *, overwrite: bool, resume: bool = False, command: str = "shards") -> None:
    """Raise `OutputNotEmptyError` (one line) when ``out`` already holds files and neither flag allows it."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder; choose another output folder")
    if overwrite or resume or not is_nonempty_dir(out):
        return
    extra = " (or --resume to continue an interrupted run)" if command == "make" else ""
    raise OutputNotEmptyError(f"{out} is not empty; pass --overwrite to replace its contents{extra} "
                              "or choose another folder")


def _sibling(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(3)}"


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield a fresh sibling folder to write into; on success it replaces ``out``, on any error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = _sibling(out, "writing")
    stage.mkdir()  # honours the umask, unlike mkdtemp's 0700
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    swap_in(stage, out)


def swap_in(new: Path, out: Path) -> None:
    """Put folder ``new`` where ``out`` is (``out`` may be missing) and delete the old contents."""
    if not out.exists():
        os.rename(new, out)
        return
    if _exchange(new, out):
        shutil.rmtree(new)  # now holds the old contents
        return
    old = _sibling(out, "old")
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with Linux's ``renameat2(RENAME_EXCHANGE)``; False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0
