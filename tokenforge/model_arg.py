"""``--model`` on the command line: which method a model belongs to (before the full parse) and loading it.

A verb adds its method's options (`tokenforge.methods.add_options`) only once it knows the method, so it peeks at
``argv`` first: `peek` reads an option's value without parsing, `method_for` finds the method from the
checkpoint's class path (read without loading weights) or from ``--official NAME`` (the method declaring that
release). `load_model` then loads it: ``--official NAME`` with ``--model PATH``, the legacy
``official:NAME:PATH`` form, or a folder / fit ``.ckpt`` / name (`tokenforge.hub`).
"""

from __future__ import annotations

from typing import Any

from tokenforge.errors import UsageError
from tokenforge.methods import Method, method_of, registry


def peek(argv: list[str], *flags: str) -> str | None:
    """The value of the first of ``flags`` in ``argv`` (``--flag VALUE`` or ``--flag=VALUE``), without parsing."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg[len(flag) + 1:]
    return None


def method_of_official(name: str) -> Method | None:
    """The method that declares the official release ``name``."""
    return next((m for m in registry().values() if name in m.official), None)


def method_for(model: str | None, official: str | None = None) -> Method | None:
    """The method of ``--model`` (with ``--official``), or None when it cannot be told yet (no such file, not a
    tokenforge checkpoint): the full parse and the load then say what is wrong."""
    if official:
        return method_of_official(official)
    if not model:
        return None
    if model.startswith("official:"):
        return method_of_official(model.split(":")[1]) if model.count(":") >= 2 else None
    from tokenforge.hub import class_path_of

    try:
        return method_of(class_path_of(model))
    except (OSError, ValueError, UsageError):
        return None


def load_model(model: str, official: str | None = None, *, what: str = "--model", config: Any = None,
               trust_pickle: bool = False) -> Any:
    """The module ``model`` names (``official`` selects an official release's loader, with ``config`` and
    ``trust_pickle`` as `tokenforge.hub.from_official` takes them); a model holding non-finite weights (a diverged
    run) is refused with one line."""
    from tokenforge.hub import from_official, load_tokenizer
    from tokenforge.nonfinite_guard import nonfinite_weights

    module = from_official(official, model, config, trust_pickle=trust_pickle) if official else load_tokenizer(model)
    bad = nonfinite_weights(module)
    if bad:
        raise UsageError(f"{what} {model} holds non-finite weights ({', '.join(bad)}): the run that wrote it "
                         "diverged; use an earlier checkpoint or retrain with a lower learning rate")
    return module
