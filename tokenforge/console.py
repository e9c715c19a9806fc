"""What `tokenforge` prints while it works: known-noise filters, one progress helper, and ``--quiet``.

- `install_filters` hides messages that say nothing to a user of this suite (Lightning's tips for its cloud
  products, deprecation notices from libraries, the worker-count hint on configs that choose
  ``num_workers: 0`` on purpose) and keeps every other warning. The patterns are in `NOISE_WARNINGS` and
  `NOISE_LOG_MESSAGES`; each says where it comes from.
- `progress` is the progress bar of every long command (tqdm on stderr). It is off under ``--quiet`` and
  when stderr is not a terminal (logs and pipes get the final lines only); ``TOKENFORGE_PROGRESS=1``
  forces it on.
- ``--quiet`` (`set_quiet`): no progress bars and no informational logging; warnings, errors and each
  command's final result lines stay. It is kept in ``TOKENFORGE_QUIET`` so that worker processes agree.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

QUIET_ENV = "TOKENFORGE_QUIET"
PROGRESS_ENV = "TOKENFORGE_PROGRESS"

#: (message regex, category name or None): library warnings with nothing for the user to act on.
NOISE_WARNINGS: tuple[tuple[str, str | None], ...] = (
    # deprecation notices are for the libraries' own developers; the pinned versions work as used
    (r"", "DeprecationWarning"),
    (r"", "PendingDeprecationWarning"),
    (r".*(is|are|was|has been) deprecated", "FutureWarning"),
    # Lightning 2.6 ModelCheckpoint + manual optimisation: a 14-line example about saving weights from before
    # the optimiser step. tokenforge's GAN modules checkpoint the weights after the step on purpose: they are
    # the weights `global_step` counts, which a resume continues from.
    (r"Using ModelCheckpoint with manual optimization", None),
    # Lightning: short tiny runs log every step on purpose
    (r"The number of training batches \(\d+\) is smaller than the logging interval", None),
)

#: Log records (Lightning's rank-zero info) that advertise products or repeat what the config says.
NOISE_LOG_MESSAGES: tuple[str, ...] = (
    r"💡 Tip",  # litlogger / litmodels advertising
)

#: Lightning logs through these: the rank-zero helpers (tips, device lines) and the package loggers, whose
#: handlers also see the records of their children (model summary, checkpoint messages).
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning.pytorch", "lightning.fabric")


def is_quiet() -> bool:
    """True under ``--quiet`` (this process or the command that started it)."""
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Switch ``--quiet`` on or off for this process and its workers; quiet also hides INFO logging."""
    if quiet:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


@contextlib.contextmanager
def quiet_mode(enabled: bool) -> Iterator[None]:
    """``--quiet`` for the duration of one command when ``enabled`` (else as it was); restored afterwards."""
    before = os.environ.get(QUIET_ENV)
    if enabled:
        set_quiet(True)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(QUIET_ENV, None)
        else:
            os.environ[QUIET_ENV] = before


def progress_enabled(stream: Any = None) -> bool:
    """Progress bars show unless ``--quiet``, or unless ``stream`` (stderr) is not a terminal."""
    if is_quiet():
        return False
    if os.environ.get(PROGRESS_ENV, "") not in ("", "0"):
        return True
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(iterable: Iterable[Any] | None = None, *, total: int | float | None = None, desc: str | None = None,
             unit: str = "it", disable: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, off under ``--quiet``, off-terminal, or when ``disable``; iterate it or update()."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable or not progress_enabled(),
                dynamic_ncols=True, **kwargs)


class _NoiseFilter(logging.Filter):
    """Drops log records whose message matches `NOISE_LOG_MESSAGES`, and INFO records under ``--quiet``."""

    def __init__(self) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in NOISE_LOG_MESSAGES), re.S)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and is_quiet():
            return False
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not self.pattern.search(message)


_FILTER = _NoiseFilter()


def install_filters() -> None:
    """Hide the known-noise warnings and log records (idempotent); other warnings still show.

    Call it again once Lightning is imported: its package loggers get their handlers at import.
    """
    import builtins

    for message, category in NOISE_WARNINGS:
        cls = getattr(builtins, category) if category else Warning
        warnings.filterwarnings("ignore", message=message, category=cls)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
