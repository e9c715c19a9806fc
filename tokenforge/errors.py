"""One convention for how every `tokenforge` command ends.

Exit codes (all commands):
- ``0`` (`EXIT_OK`): everything asked for was done.
- ``1`` (`EXIT_FAILED`): the command failed (a run stopped, nothing usable written).
- ``2`` (`EXIT_USAGE`): the input or the options were wrong; the one printed line says what and what to do.
- ``3`` (`EXIT_SOME_SKIPPED`): the command finished but skipped some inputs; each skip was reported with
  its reason, and the outputs of the others are complete. When every input was skipped nothing usable was
  written, and the exit code is ``1``.

A command signals a usage problem by raising `UsageError` (anywhere below it); `tokenforge.cli.main`
prints it as one line and exits 2. A traceback is shown only with ``--debug``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SOME_SKIPPED = 3


class UsageError(Exception):
    """Wrong input or options: the message is one line saying what was wrong and what to do."""

    exit_code = EXIT_USAGE


class RunFailedError(Exception):
    """A run that cannot go on (non-finite loss, every shard unreadable): one line, exit code 1."""

    exit_code = EXIT_FAILED


def exit_code_for(skipped: int, total: int | None = None) -> int:
    """`EXIT_SOME_SKIPPED` when some of ``total`` inputs were skipped, `EXIT_FAILED` when all were (nothing was
    written), else `EXIT_OK`."""
    if skipped and total is not None and skipped >= total:
        return EXIT_FAILED
    return EXIT_SOME_SKIPPED if skipped else EXIT_OK
