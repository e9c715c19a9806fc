"""``--model`` of every verb: a saved folder, a ``fit`` checkpoint, a name, or an official release.

``--model PATH`` alone is a tokenforge checkpoint (`tokenforge.hub.from_pretrained`); with ``--official NAME`` it
is the path of that official release (`tokenforge.hub.from_official`, ``--official-config FILE`` for settings
the release lacks, ``--trust-pickle`` for releases that pickle Python objects). The arguments, their loading and
the fingerprint of a model's configuration for the verbs of tokenizers; finding the method before the full parse
(so a verb can add its options, `tokenforge.methods.add_options`) and loading are `tokenforge.model_arg`'s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

from tokenforge.errors import UsageError
from tokenforge.methods import Method
from tokenforge.model_arg import load_model as load_named, method_for, peek


def method_in_argv(argv: list[str]) -> Method | None:
    """The method that ``--official`` / ``--model`` in ``argv`` name, or None when they name none (yet): the full
    parse and the load then say what is wrong (`tokenforge.model_arg.method_for`)."""
    return method_for(peek(argv, "--model"), peek(argv, "--official"))


def add_model_arguments(parser: argparse.ArgumentParser, what: str = "tokenizer") -> None:
    """``--model``, ``--official``, ``--official-config``, ``--trust-pickle``."""
    parser.add_argument("--model", required=True,
                        help=f"{what}: folder, fit .ckpt, name in $TOKENFORGE_HOME; with --official: the release's "
                             "file or folder")
    parser.add_argument("--official", metavar="NAME",
                        help="--model is the official release NAME (e.g. one of `tokenforge convert --help`)")
    parser.add_argument("--official-config", metavar="FILE",
                        help="JSON/YAML settings an official release lacks (with --official)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow an official file that pickles Python objects (unpickling can run code)")


def load_model(args: argparse.Namespace) -> Any:
    """The module ``args.model`` (and ``args.official``) name, in eval mode."""
    if args.official_config and not args.official:
        raise UsageError("--official-config goes with --official NAME (settings of an official release)")
    if args.trust_pickle and not args.official:
        raise UsageError("--trust-pickle goes with --official NAME; tokenforge checkpoints never need unpickling")
    return load_named(args.model, args.official, config=args.official_config, trust_pickle=args.trust_pickle).eval()


def load_tokenizer(args: argparse.Namespace) -> Any:
    """`load_model`, refused in one line unless it is a tokenizer."""
    from tokenforge.model_kind import require_tokenizer

    model = load_model(args)
    require_tokenizer(model, args.model)
    return model


def fingerprint(module: Any) -> str:
    """Hash of the module's spec (class path and init arguments, not its weights): codes written by one model
    configuration are refused by another (`tokenforge.codes_file`)."""
    spec = module.spec() if callable(getattr(module, "spec", None)) else {"class_path": type(module).__qualname__}
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
