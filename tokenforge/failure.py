"""How a failed `tokenforge` command ends: one line on stderr and an exit code (`tokenforge.errors`).

`report_failure` turns whatever ended a command into ``tokenforge <command>: <what was wrong>``:

- `UsageError` (exit 2) and `RunFailedError` (exit 1): their message, which already says what to do.
- Wrong input the libraries report in their own words (exit 2): a missing file or folder, a pickled file
  that torch refuses to unpickle, an unreadable ``.safetensors`` file, a config or option that LightningCLI's
  parser rejects (its nested report is shortened to the path of keys and the innermost reason).
- ``SystemExit``: a number is the exit code as given (argparse and LightningCLI print their own usage
  message first); a message string is printed as the one line, exit 1 as Python does.
- Ctrl-C: ``interrupted``, exit 130 (the shell's code for SIGINT).
- Anything else is a bug: its type and first line, and ``rerun with --debug for the traceback`` (exit 1).

With ``--debug`` the traceback is printed above the line.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
import traceback

from tokenforge.errors import EXIT_FAILED, EXIT_USAGE, RunFailedError, UsageError

EXIT_INTERRUPTED = 130
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(text: object) -> str:
    """The first non-empty line of ``text``, without terminal colour codes."""
    lines = [line.strip() for line in _ANSI.sub("", str(text)).splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0] + (" ..." if len(lines) > 1 else "")


def config_error_line(message: str) -> str:
    """jsonargparse's nested report as one line: the keys and classes down to the innermost reason.

    ``Parser key "model": ... class_path '...VQGAN': Parser key "ch": Expected a <class 'int'>. Got value: foo``
    becomes ``model (VQGANModule) > model (VQGAN) > ch: Expected a <class 'int'>. Got value: foo``.
    """
    rows = [(len(line) - len(line.lstrip(" -")), line.strip(" -")) for line in message.splitlines() if line.strip()]
    if len(rows) < 2:
        return one_line(message)
    depth = max(indent for indent, _ in rows)
    index = next(i for i, (indent, _) in enumerate(rows) if indent == depth)
    path: list[str] = []
    chosen = ""  # the class a key's value names sits between the key and the key's own options
    for indent, text in reversed(rows[:index]):
        if indent >= depth:
            continue
        depth = indent
        key = re.match(r'Parser key "([^"]+)"', text)
        cls = re.search(r"class_path '([\w.]+)'", text)
        if key:
            path.insert(0, key.group(1) + (f" ({chosen})" if chosen else ""))
            chosen = ""
        elif cls:
            chosen = cls.group(1).rsplit(".", 1)[-1]
    return f"{' > '.join(path)}: {rows[index][1]}" if path else rows[index][1]


def _is_safetensors_error(error: BaseException) -> bool:
    return type(error).__name__ == "SafetensorError" or type(error).__module__.startswith("safetensors")


def describe(error: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception that ended a command."""
    if isinstance(error, (UsageError, RunFailedError)):
        return one_line(error), error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)", EXIT_INTERRUPTED
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        what = error.strerror or type(error).__name__
        where = f": {error.filename}" if error.filename else ""
        message = f"{what}{where}" if error.strerror else one_line(error)
        return f"{message}; check the path", EXIT_USAGE
    if isinstance(error, pickle.UnpicklingError):
        first = one_line(error).split(". ")[0].rstrip(".")
        return (f"torch refused to load a file that holds pickled Python objects ({first}): unpickling can run "
                "code, so it is off; use a checkpoint written by tokenforge or a safetensors folder (`tokenforge "
                "convert` turns an official release into one)"), EXIT_USAGE
    if isinstance(error, argparse.ArgumentError):
        return f"{config_error_line(str(error))} (`--help` lists the options)", EXIT_USAGE
    if _is_safetensors_error(error):
        return (f"cannot read a .safetensors file ({one_line(error)}): it is truncated or not a safetensors file; "
                "download or convert it again"), EXIT_USAGE
    detail = one_line(error)
    return (f"internal error: {type(error).__name__}{': ' + detail if detail else ''} "
            "(rerun with --debug for the traceback)"), EXIT_FAILED


def report_failure(command: str | None, error: BaseException, debug: bool = False) -> int:
    """Print how ``command`` ended (one line; the traceback first under ``debug``) and return its exit code."""
    if isinstance(error, BrokenPipeError):  # the reader went away (`tokenforge ... | head`): nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's flush at exit does not complain again
        return EXIT_FAILED
    if isinstance(error, SystemExit):
        code = error.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        error_line, exit_code = one_line(code), EXIT_FAILED
    else:
        error_line, exit_code = describe(error)
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    prefix = f"tokenforge {command}" if command else "tokenforge"
    print(f"{prefix}: {error_line}", file=sys.stderr)
    return exit_code
