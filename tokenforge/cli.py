"""The `tokenforge` command.

``fit | validate | test | predict`` go to LightningCLI (YAML configs with ``class_path``/``init_args``,
any LightningModule / LightningDataModule subclass). The other subcommands are plain argparse programs that
live beside the code they drive; each is ``main(argv) -> int`` in the module named in `SUBCOMMANDS`, imported
only when called so ``tokenforge --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

# name -> ("module:function", one-line help). Method issues add their commands here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "flextok": ("tokenforge.tokenizers.flextok.cli:main", "FlexTok: coarse-to-fine reconstruction strips, PSNR per k (--tokens 1,4,16,64,256)"),
    "shards": ("tokenforge.data.cli:main", "make raw shards from files, or encode them into token shards"),
    "convert": ("tokenforge.convert:main", "convert an official checkpoint to tokenforge's format; --check runs parity"),
    "bench": ("tokenforge.bench:main", "measure throughput (data loaders, models) on this machine"),
    "reconstruct": ("tokenforge.reconstruct:main", "encode and decode files with any tokenizer (TokenFlow/FlexTok/VAT: their own outputs)"),
    "demo": ("tokenforge.demo:main", "the whole chain on bundled real data: shards, fit, reconstruct"),
    "generate": ("tokenforge.generators.autoregressive.generate:main", "sample with a generator, decode with its tokenizer"),
    "ecar-generate": ("tokenforge.generators.ecar.generate:main", "E-CAR sampling: --stages/--steps per stage/--cfg, decoded by its KL tokenizer"),
    "enat-generate": ("tokenforge.generators.enat.generate:main", "ENAT sampling: tokenforge generate plus --steps/--no-reuse/--mode"),
    "linfusion": ("tokenforge.generators.linfusion.generate:main", "LinFusion text-to-image on a local SD folder (direct / SDEdit ladder)"),
    "tokenflow": ("tokenforge.tokenizers.tokenflow.cli:main", "TokenFlow: reconstruct images (PNG grid, ids.npy, PSNR/SSIM)"),
    "encode": ("tokenforge.tokenizers.wavtokenizer.cli:encode_main", "audio files -> token codes (.npy) with an audio tokenizer"),
    "decode": ("tokenforge.tokenizers.wavtokenizer.cli:decode_main", "token codes (.npy) -> audio files with an audio tokenizer"),
    "evaluate": ("tokenforge.evaluate:main", "tokenizer/generator metrics on held-out shards -> metrics.json"),
    "vat": ("tokenforge.tokenizers.vat.cli:main", "VAT 3D tokenizer: reconstruct meshes (PLY, tokens, preview PNG, bytes/Chamfer/F-score/IoU)"),
}

USAGE = """usage: tokenforge <command> [options]

training (LightningCLI, `tokenforge fit --help` for the options):
  fit          train a model from a YAML config:  tokenforge fit --config configs/tokenizers/vqgan/tiny.yaml
  validate     run the validation loop of a config / checkpoint
  test         run the test loop
  predict      run the predict loop

tools:
{tools}

`tokenforge <command> --help` explains each command."""


def lightning_cli(args: list[str] | dict[str, Any] | None = None, run: bool = True) -> Any:
    """LightningCLI with tokenforge's defaults; ``args`` makes it drivable from tests."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI(
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
        parser_kwargs={"description": "Train and evaluate tokenforge models from YAML configs."},
    )


def _usage() -> str:
    tools = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    return USAGE.format(tools=tools)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        # from the console LightningCLI reads sys.argv itself (given both, it warns that they may disagree)
        lightning_cli(args=None if argv == sys.argv[1:] else [command, *rest])
        return 0
    if command not in SUBCOMMANDS:
        print(f"tokenforge: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = SUBCOMMANDS[command]
    module_name, function = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            print(f"tokenforge {command}: not available in this version ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
