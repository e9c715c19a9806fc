"""Modules that remember how they were built.

`Configurable` records the arguments of the outermost ``__init__`` call, so
`tokenforge.hub` can write them to ``config.json`` and rebuild the exact module
later. Nested configurable modules are stored the way LightningCLI writes
them (``{"class_path": ..., "init_args": ...}``), so a saved config and a YAML
config are the same language.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

_CONFIG_ATTR = "_tokenforge_config"


class Configurable:
    """Mixin for ``nn.Module`` classes whose init arguments fully describe them."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_config", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            if _CONFIG_ATTR not in self.__dict__:  # outermost constructor only
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = {}
                for name, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[name].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(value)
                    elif kind is inspect.Parameter.VAR_POSITIONAL:
                        if value:
                            raise TypeError(f"{cls.__name__}: positional *args cannot be recorded")
                    else:
                        arguments[name] = value
                object.__setattr__(self, _CONFIG_ATTR, arguments)
            init(self, *args, **kw)

        recording_init._records_config = True  # type: ignore[attr-defined]
        cls.__init__ = recording_init  # type: ignore[method-assign]

    @property
    def init_args(self) -> dict[str, Any]:
        """The arguments this object was constructed with (JSON-ready copy)."""
        return {k: to_jsonable(v, where=f"{type(self).__name__}.{k}") for k, v in self.__dict__[_CONFIG_ATTR].items()}

    def spec(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` that `build` turns back into an equal object."""
        # the class as written, not a subclass torch made on the fly (FSDP's fully_shard turns GPT into FSDPGPT)
        cls = next(c for c in type(self).__mro__ if not c.__module__.startswith("torch."))
        return {"class_path": class_path(cls), "init_args": self.init_args}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def to_jsonable(value: Any, where: str = "value") -> Any:
    """Convert an init argument to JSON types, or say which argument cannot be saved."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Configurable):
        return value.spec()
    raise TypeError(
        f"{where} = {value!r} ({type(value).__name__}) cannot be written to config.json; "
        "pass plain numbers, strings, lists or dicts, or a Configurable module"
    )


def import_object(path: str) -> Any:
    """Import ``package.module.Name`` (also ``package.module.Outer.Inner``)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {path!r}")


def build(spec: Any) -> Any:
    """Instantiate a ``{"class_path", "init_args"}`` spec, recursively; other values pass through."""
    if isinstance(spec, dict) and "class_path" in spec and set(spec) <= {"class_path", "init_args"}:
        cls = import_object(spec["class_path"])
        args = {k: build(v) for k, v in spec.get("init_args", {}).items()}
        return cls(**args)
    if isinstance(spec, list):
        return [build(v) for v in spec]
    if isinstance(spec, dict):
        return {k: build(v) for k, v in spec.items()}
    return spec
