"""Generator sizes from the token shards: a config that leaves ``vocab_size`` / ``seq_len`` (or a scale list)
unset trains with the values of the token shards' ``manifest.json``, so one generator config serves every
tokenizer.

`fill_from_manifest` runs in `tokenforge.cli`'s LightningCLI after the arguments are parsed and before any
class is built. It reads the manifest of ``data.init_args.train`` (a local token-shard folder written by
``tokenforge shards encode``) and, for every `Generator` class in the model config, sets each init argument
that no config file or option gave (parsed a second time without defaults, so a value equal to the class
default still counts as given) and whose name is one of the layout facts (`layout_facts`):

    vocab_size, codebook_size  the tokenizer's vocabulary (0 = continuous latents: not set)
    seq_len                    the most ids in one sample (a flattened scale list: the sum of its scales)
    layout                     the tokenizer's token layout (grid | sequence | scales)
    scale_lengths              ids per scale, coarse to fine (per-scale layouts)
    code_dim                   the width of the tokenizer's code vectors (its quantizer's dim)
    latent_channels            channels of the stored latents

A generator class whose arguments are derived otherwise defines ``token_defaults(facts, given) -> dict``
(a classmethod; ``given`` = the arguments the config sets), whose values are set the same way. A generator with
``needs_tokenizer`` (it reads the tokenizer while training) also gets the manifest's tokenizer as its Lightning
module's unset ``tokenizer`` argument. Each value set is reported in one line on stderr (not under ``--quiet``).
"""

from __future__ import annotations

import inspect
import math
import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from tokenforge import console
from tokenforge.config import import_object


def layout_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a token-shard manifest says about its tokens, under the init-argument names generators use."""
    tokenizer = manifest.get("tokenizer") or {}
    scales = manifest.get("scales")
    lengths = [math.prod(shape) for shape in scales] if scales else None
    vocab = int(tokenizer.get("vocab_size") or 0) or None
    latent_shape = manifest.get("latent_shape")
    facts = {
        "vocab_size": vocab, "codebook_size": vocab,
        "seq_len": manifest.get("seq_len") or (sum(lengths) if lengths else None),
        "layout": tokenizer.get("token_layout"), "scale_lengths": lengths, "code_dim": manifest.get("code_dim"),
        "latent_channels": latent_shape[0] if latent_shape else None,
    }
    return {name: value for name, value in facts.items() if value is not None}


def token_manifest(section: Namespace) -> tuple[Path, dict[str, Any]] | None:
    """(folder, manifest) of the token shards that ``section``'s data module trains on; None for other data."""
    from tokenforge.data.shards import read_manifest

    train = _get(section, "data.init_args.train")
    if not isinstance(train, (str, Path)) or not Path(train).is_dir():
        return None
    manifest = read_manifest(train)
    return (Path(train), manifest) if manifest and manifest.get("kind") == "tokens" else None


def fill_from_manifest(parser: Any, config: Namespace, args: Any) -> list[str]:
    """Set the unset layout arguments of ``config``'s generators from its token shards' manifest (module
    docstring); ``args`` are the parsed command-line arguments (a list) or the config object. Returns the
    dotted keys it set."""
    subcommand = config.get("subcommand")
    section = config[subcommand] if subcommand else config
    found = token_manifest(section)
    if found is None:
        return []
    folder, manifest = found
    given = _explicit(parser, args, subcommand)
    if given is None:
        return []
    facts, filled = layout_facts(manifest), []
    for key, node, parent_key in _generators(section, "model"):
        cls = import_object(node.class_path)
        told = set(vars(_get(given, f"{key}.init_args") or Namespace()))
        values = {name: facts[name] for name in _parameters(cls) if name in facts}
        if hasattr(cls, "token_defaults"):
            told_values = {name: node.init_args[name] for name in told if name in node.init_args}
            values.update(cls.token_defaults(facts, told_values))
        for name, value in values.items():
            if name not in told and name in _parameters(cls):
                node.init_args[name] = value
                filled.append(f"{key}.init_args.{name}")
        module_key = f"{parent_key}.init_args.tokenizer"
        name = (manifest.get("tokenizer") or {}).get("name")
        if getattr(cls, "needs_tokenizer", False) and name and _get(given, module_key) is None \
                and "tokenizer" in _parameters(import_object(_get(section, f"{parent_key}.class_path"))):
            section[module_key] = name
            filled.append(module_key)
    for key in filled:
        if not console.is_quiet():
            print(f"{key} = {_get(section, key)!r} (from {folder / 'manifest.json'})", file=sys.stderr)
    return filled


def _explicit(parser: Any, args: Any, subcommand: str | None) -> Namespace | None:
    """The arguments given by config files and options, without defaults; None when they cannot be re-read."""
    args = sys.argv[1:] if args is None else args
    try:
        given = parser.parse_object(args, defaults=False) if isinstance(args, (dict, Namespace)) \
            else parser.parse_args(list(args), defaults=False)
    except Exception:  # noqa: BLE001 - the first parse succeeded; without the raw view nothing is filled
        return None
    return given[subcommand] if subcommand and subcommand in given else given


def _generators(section: Namespace, key: str):
    """(dotted key, class node, key of the node that holds it) of every `Generator` class in ``section[key]``."""
    from tokenforge.generators.base import Generator

    node = _get(section, key)
    if not isinstance(node, Namespace) or "init_args" not in node:
        return
    for name, value in vars(node.init_args).items():
        child = f"{key}.init_args.{name}"
        if isinstance(value, Namespace) and isinstance(value.get("class_path"), str):
            cls = import_object(value.class_path)
            if isinstance(cls, type) and issubclass(cls, Generator):
                yield child, value, key
            else:
                yield from _generators(section, child)


def _parameters(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _get(namespace: Namespace | None, key: str) -> Any:
    node: Any = namespace
    for part in key.split("."):
        if not isinstance(node, Namespace) or part not in vars(node):
            return None
        node = vars(node)[part]
    return node
