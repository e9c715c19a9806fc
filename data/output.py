"""Output folders that never mix two runs: refuse a non-empty one, or replace it atomically.

`check_output` refuses a folder that already holds anything (unless the caller asked to overwrite or to
resume). `staged_output` is how ``--overwrite`` replaces a folder: the new run writes into a fresh hidden
sibling (``.NAME.writing-*``), and only when it has finished is that sibling swapped in place of the old
folder, in one ``renameat2(RENAME_EXCHANGE)`` where the system has it (Linux), else in two renames. An
interruption therefore leaves either the old folder untouched or the new one complete, never a mix; an
interrupted run's sibling is removed.

After ``kill -9`` a hidden ``.NAME.writing-*`` folder may remain beside NAME (no reader looks at it). The
next run with the same output removes it (`remove_stale_stages`, one line saying so), but only when no
process still writes there: a run holds an exclusive ``flock`` on its staging folder for as long as it
writes (the kernel drops it when the process dies, however it dies), and where locks are not available the
process id in the folder's name must be gone.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tokenforge.errors import UsageError


class OutputNotEmptyError(UsageError, FileExistsError):
    """The output folder already holds files (a usage error; also a ``FileExistsError`` for callers)."""


def is_nonempty_dir(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def check_output(out: Path, *, overwrite: bool, resume: bool = False, command: str = "shards") -> None:
    """Raise `OutputNotEmptyError` (one line) when ``out`` already holds files and neither flag allows it.
    Stale staging folders of ``out`` (an earlier run killed while writing) are removed first."""
    remove_stale_stages(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder; choose another output folder")
    if overwrite or resume or not is_nonempty_dir(out):
        return
    extra = " (or --resume to continue an interrupted run)" if command == "make" else ""
    raise OutputNotEmptyError(f"{out} is not empty; pass --overwrite to replace its contents{extra} "
                              "or choose another folder")


def _sibling(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(3)}"


def _lock(folder: Path) -> int | None:
    """An open descriptor of ``folder`` holding its exclusive ``flock``; None when another process holds it.
    Raises OSError where the file system has no locks."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_stages(out: Path) -> list[Path]:
    """Remove ``.OUT.writing-*`` folders beside ``out`` that no live process writes; print one line if any."""
    prefix = f".{out.name}.writing-"
    try:
        candidates = sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()
                            and not p.is_symlink())
    except OSError:  # no parent folder yet: nothing to clean
        return []
    removed = []
    for stage in candidates:
        try:
            fd = _lock(stage)
        except OSError:  # no locks here (or the folder vanished): fall back to the writer's process id
            pid = stage.name[len(prefix):].split("-")[0]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            fd = None
        else:
            if fd is None:  # a running `--overwrite` writes there
                continue
        try:
            shutil.rmtree(stage)
            removed.append(stage)
        except OSError:
            pass
        finally:
            if fd is not None:
                os.close(fd)
    if removed:
        names = ", ".join(p.name for p in removed)
        print(f"tokenforge shards: removed {len(removed)} staging folder(s) left beside {out} by an interrupted "
              f"run: {names}", file=sys.stderr)
    return removed


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield a fresh sibling folder to write into; on success it replaces ``out``, on any error it is removed.

    The folder is locked (``flock``) while this runs, so that `remove_stale_stages` in another run leaves it
    alone; it is made and locked under a name no cleaner looks at, then renamed (the lock stays with it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = _sibling(out, "writing")
    claim = stage.with_name(stage.name.replace(".writing-", ".claim-", 1))
    claim.mkdir()  # honours the umask, unlike mkdtemp's 0700
    try:
        fd = _lock(claim)
    except OSError:  # no locks on this file system: the process id in the name guards it
        fd = None
    try:
        os.rename(claim, stage)
    except BaseException:
        shutil.rmtree(claim, ignore_errors=True)
        if fd is not None:
            os.close(fd)
        raise
    try:
        try:
            yield stage
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        swap_in(stage, out)
    finally:
        if fd is not None:
            os.close(fd)


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
