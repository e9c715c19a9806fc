"""The `tokenforge` command.

Every command ends with one line on failure (`tokenforge.failure`; the traceback only with ``--debug``) and
the exit codes of `tokenforge.errors`; ``--quiet`` keeps scripts' output to warnings, errors and results
(`tokenforge.console`).

The command has verbs only. ``fit | validate | test | predict`` go to LightningCLI (YAML configs with
``class_path``/``init_args``, any LightningModule / LightningDataModule subclass). The other verbs are plain
argparse programs that live beside the code they drive; each is ``main(argv) -> int`` in the module named in
`SUBCOMMANDS`, imported only when called so ``tokenforge --help`` stays fast. Methods add no commands: they plug
into the verbs through their declarations (`tokenforge.methods`), and ``--help`` lists the installed ones.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from tokenforge.errors import UsageError
from tokenforge.failure import report_failure
from tokenforge.methods import registry

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
GLOBAL_FLAGS = ("--debug", "--quiet")  # accepted before or after the command name

# verb -> ("module:function", one-line help); methods plug into the verbs (`tokenforge.methods`), never add commands
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "shards": ("tokenforge.data.cli:main", "make raw shards from files, or encode them into token shards"),
    "convert": ("tokenforge.convert:main",
                "convert an official checkpoint to tokenforge's format; --check runs parity"),
    "bench": ("tokenforge.bench:main", "measure throughput (data loaders, models) on this machine"),
    "encode": ("tokenforge.encode:main", "files -> codes files (.codes.npz) with any tokenizer"),
    "decode": ("tokenforge.decode:main", "codes files -> images / audio / meshes with the tokenizer that wrote them"),
    "reconstruct": ("tokenforge.reconstruct:main",
                    "files -> tokens -> files with any tokenizer, and metrics (a method may add outputs)"),
    "demo": ("tokenforge.demo:main", "the whole chain on bundled real data: shards, fit, reconstruct"),
    "evaluate": ("tokenforge.leaderboard:command", "tokenizer/generator metrics on held-out shards -> metrics.json; "
                 "--models: a leaderboard"),
    "generate": ("tokenforge.generate:main", "sample with any generator, decode with its tokenizer (PNG/FLAC/PLY)"),
}


USAGE = """usage: tokenforge [--debug] [--quiet] <verb> [options]

verbs:
  fit          train a model from a YAML config (LightningCLI; `tokenforge fit --help` for the options)
  validate     run the validation loop of a config / checkpoint
  test         run the test loop
  predict      run the predict loop
{tools}

methods (installed; each verb takes them through --model, and `tokenforge VERB --model M --help` shows a
method's own options):
{methods}

`tokenforge <verb> --help` explains each verb. Every verb also takes:
  --debug      show the Python traceback of a failure (otherwise: one line)
  --quiet      no progress bars or info lines; warnings, errors and results only (for scripts)"""


def lightning_cli(args: list[str] | dict[str, Any] | None = None, run: bool = True) -> Any:
    """LightningCLI with tokenforge's defaults; ``args`` makes it drivable from tests."""
    from lightning.pytorch import LightningDataModule, LightningModule

    from tokenforge import console

    console.install_filters()  # again: Lightning's loggers get their handlers when it is imported
    saved = sys.argv
    if isinstance(args, list):
        # LightningCLI reads sys.argv itself and, given ``args`` too, warns that they may disagree: hand it the
        # arguments there (without tokenforge's own flags), from the console and from Python alike
        sys.argv, args = [saved[0] if saved else "tokenforge", *args], None
    try:
        return _cli_class()(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}},
            },
            args=args,
            run=run,
            # a config or option error raises (printed by `main` as one line) instead of the whole usage
            parser_kwargs={"description": "Train and evaluate tokenforge models from YAML configs.",
                           "exit_on_error": False},
        )
    finally:
        sys.argv = saved


def _cli_class() -> type:
    """LightningCLI whose trainer shows `FitProgressBar` (none under ``--quiet``)."""
    from lightning.pytorch.callbacks import ProgressBar
    from lightning.pytorch.cli import LightningCLI

    from tokenforge import console

    class TokenforgeCLI(LightningCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            super().parse_arguments(parser, args)
            from tokenforge.manifest_defaults import fill_from_manifest

            fill_from_manifest(parser, self.config, args)  # generator sizes left unset: the token shards' manifest

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            trainer = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
            callbacks = trainer.get("callbacks") or []
            callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
            if console.is_quiet():
                kwargs["enable_progress_bar"] = False
                callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
            elif trainer.get("enable_progress_bar", True) is not False and not any(
                    isinstance(c, ProgressBar) for c in callbacks):
                from tokenforge.fit_progress import FitProgressBar

                callbacks.append(FitProgressBar())
            from tokenforge.safe_load import guard_checkpoint_loading

            return guard_checkpoint_loading(super().instantiate_trainer(callbacks=callbacks, **kwargs))

    return TokenforgeCLI


def _usage() -> str:
    tools = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in sorted(SUBCOMMANDS.items(), key=_verb_order))
    rows = [(m.name, m.kind, m.modality, m.layout) for m in registry().values()]
    widths = [max(len(str(row[i])) for row in rows + [("name", "kind", "modality", "layout")]) for i in range(3)]
    methods = "\n".join(f"  {name:<{widths[0]}}  {kind:<{widths[1]}}  {modality:<{widths[2]}}  {layout}"
                        for name, kind, modality, layout in [("name", "kind", "modality", "layout"), *rows])
    return USAGE.format(tools=tools, methods=methods if rows else "  (none installed)")


VERB_ORDER = ("encode", "decode", "reconstruct", "generate", "evaluate", "bench", "convert", "shards", "demo")


def _verb_order(item: tuple[str, Any]) -> tuple[int, str]:
    name = item[0]
    return (VERB_ORDER.index(name) if name in VERB_ORDER else len(VERB_ORDER), name)


def split_global_flags(argv: list[str]) -> tuple[set[str], list[str]]:
    """``--debug``/``--quiet`` anywhere before a ``--`` separator, and the arguments without them."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = {a for a in argv[:end] if a in GLOBAL_FLAGS}
    return flags, [a for a in argv[:end] if a not in GLOBAL_FLAGS] + argv[end:]


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends as one line on stderr and an exit code (`tokenforge.errors`)."""
    from tokenforge import console

    flags, argv = split_global_flags(list(sys.argv[1:] if argv is None else argv))
    console.install_filters()
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    known = command in LIGHTNING_COMMANDS or command in SUBCOMMANDS
    with console.quiet_mode("--quiet" in flags):
        try:
            if command in {"-h", "--help", "help"}:
                print(_usage())
                return 0
            return dispatch(command, rest)
        except BaseException as error:  # noqa: BLE001 - every ending is turned into one line and an exit code
            return report_failure(command if known else None, error, debug="--debug" in flags)


def dispatch(command: str, rest: list[str]) -> int:
    """Run ``command`` with its arguments; exceptions go to `main`."""
    if command in LIGHTNING_COMMANDS:
        from tokenforge.config_models import check_bases

        check_bases(rest)  # a size overlay needs its method's base.yaml before it
        lightning_cli(args=[command, *rest])
        return 0
    commands = SUBCOMMANDS
    if command not in commands:
        raise UsageError(f"unknown command {command!r}; `tokenforge --help` lists the commands ("
                         f"{', '.join([*LIGHTNING_COMMANDS, *commands])})")
    target, _ = commands[command]
    module_name, function = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise UsageError(f"not available in this version ({module_name} is missing)") from error
        raise
    return int(getattr(module, function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
