"""The methods tokenforge knows, each declared once in its own package and found through entry points.

A method package holds a ``method.py`` with ``METHOD = Method(...)`` and names it in the ``tokenforge.methods``
entry-point group (tokenforge's own in ``pyproject.toml``). A researcher's package does the same in its own
metadata, and its method appears in every list the core builds from `registry` without an edit here.
Listing methods imports ``method.py`` files only (standard library, no torch); the modules a `Method` names
are imported by whoever runs them.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

GROUP = "tokenforge.methods"
KINDS = ("tokenizer", "generator")


@dataclass(frozen=True)
class Command:
    """A command a method brings: the word typed, ``"module:function"`` taking ``argv``, and one line of help."""

    name: str
    target: str
    help: str


@dataclass(frozen=True)
class Option:
    """A command-line option a method adds to some verbs: ``argparse`` flags and keyword arguments.

    ``verbs`` are the verbs that take it (``encode``, ``reconstruct``, ``generate``...). The parsed value reaches
    the method's verb hook (`Method.verbs`) or, for ``generate``, the generator's ``generate(**sampling)`` under
    ``kwargs["dest"]`` (argparse's default dest otherwise). Keyword values stay standard-library objects (``int``,
    ``float``, ``str``) so listing methods never imports torch.
    """

    flags: tuple[str, ...]
    verbs: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class VerbRequest:
    """What a method's verb hook (`Method.verbs`, ``"module:function"``) receives, after the core has parsed the
    command line and loaded ``--model``: the hook does the verb and returns the exit code (0, or 3 when some
    inputs were skipped: `tokenforge.errors.exit_code_for`).

    ``options`` holds the values of the method's own `Option`s for this verb by dest; ``args`` the whole parsed
    namespace (the verb's common options: ``--size``, ``--batch-size``, ``--seed``, ``--device``...).
    """

    verb: str
    model: Any  # the loaded module (a Tokenizer for encode / decode / reconstruct)
    model_spec: str  # what --model said, for messages
    inputs: list[Any]  # the input files (pathlib.Path), folders expanded
    out: Any  # the output folder (pathlib.Path)
    device: str
    options: dict[str, Any]
    args: Any


@dataclass(frozen=True)
class Method:
    """What the core needs to know about one method, without importing it.

    ``official`` and ``parity`` map an official release / parity fixture name to the module that registers
    its loader / function on import. ``options`` are the method's own command-line options of the verbs;
    ``verbs`` maps a verb to ``"module:function"`` where the method does that verb its own way (extra outputs,
    e.g. coarse-to-fine strips); every other verb runs the generic path over the Tokenizer /
    Generator contract.
    """

    name: str
    kind: str  # one of KINDS
    modality: str  # image, audio, mesh, any, ...
    layout: str  # token layout: grid, scales, sequence, ...
    package: str  # the package its modules live in: tokenforge.tokenizers.<method>, or its own
    aliases: tuple[str, ...] = ()
    official: Mapping[str, str] = field(default_factory=dict)
    parity: Mapping[str, str] = field(default_factory=dict)
    bench: Command | None = None
    options: tuple[Option, ...] = ()
    verbs: Mapping[str, str] = field(default_factory=dict)  # verb -> "module:function(VerbRequest) -> int"
    demo: str | None = None  # "module:function() -> tokenforge.demo_stages.DemoPart": its part of `tokenforge demo`

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def owns(self, class_path: str) -> bool:
        """Whether ``class_path`` (``module.Class``) is a class of this method's package."""
        return class_path.startswith(self.package + ".")


@cache
def registry() -> dict[str, Method]:
    """Every installed method by name (tokenizers, then generators, each by name); a broken entry point is one
    warning, not a crash."""
    found: dict[str, Method] = {}
    for point in entry_points(group=GROUP):
        try:
            method = point.load()
            if not isinstance(method, Method):
                raise TypeError(f"{point.value} is a {type(method).__name__}, not a tokenforge.methods.Method")
        except Exception as error:  # noqa: BLE001 - a third party's broken package must not stop tokenforge
            warnings.warn(f"method entry point {point.name!r} ({point.value}) skipped: {error}", stacklevel=2)
            continue
        if method.name in found:
            warnings.warn(f"method {method.name!r} declared twice; keeping {found[method.name].package}",
                          stacklevel=2)
            continue
        found[method.name] = method
    return dict(sorted(found.items(), key=lambda item: (KINDS.index(item[1].kind), item[0])))


def resolve(name: str) -> Method:
    """The method called ``name`` or having ``name`` among its aliases (one family, one method)."""
    methods = registry()
    if name in methods:
        return methods[name]
    for method in methods.values():
        if name in method.aliases:
            return method
    known = ", ".join(sorted({n for m in methods.values() for n in (m.name, *m.aliases)}))
    raise KeyError(f"unknown method {name!r}; known: {known}")


def method_of(class_path: str) -> Method | None:
    """The method whose package holds the class ``class_path``, if any."""
    return next((m for m in registry().values() if m.owns(class_path)), None)


def add_options(parser: Any, method: Method, verb: str) -> list[str]:
    """Add ``method``'s options for ``verb`` to an argparse parser (in a group named after the method); returns
    their dests, so a verb can hand exactly those values on."""
    options = [o for o in method.options if verb in o.verbs]
    if not options:
        return []
    group = parser.add_argument_group(f"{method.name} options")
    return [group.add_argument(*o.flags, **dict(o.kwargs)).dest for o in options]


def sources(attribute: str) -> dict[str, str]:
    """Name -> registering module over every method's ``official`` or ``parity`` mapping."""
    return {name: module for m in registry().values() for name, module in getattr(m, attribute).items()}


def load_target(target: str) -> Callable[..., Any]:
    """The function named by ``"module:function"``."""
    module_name, function = target.split(":")
    return getattr(importlib.import_module(module_name), function)


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a method package whose names (``{"Model": "model"}``) load on first use.

    Importing a package runs its ``__init__``; a lazy one lets `registry` import ``package.method`` without torch.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
