"""Helper of the DDP tests: `tokenforge fit` of the tiny WavTokenizer config in two CPU processes (gloo) on shards
of the bundled speech, with a test callback that the ranks import from this folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tokenforge.config_models import fit_args

TINY = Path(__file__).resolve().parents[1] / "configs" / "tokenizers" / "wavtokenizer" / "tiny.yaml"


def fit_tiny_wavtokenizer_on_two_ranks(shared_data: Path, tmp_path: Path, *args: str,
                                       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Make speech shards under ``tmp_path`` and fit on them with ``--trainer.devices 2 --trainer.strategy ddp``
    plus ``args`` (steps, callbacks, ...); returns the finished process."""
    from tokenforge.data.shards import make_shards

    shards = tmp_path / "shards"
    make_shards("audio", shared_data / "speech24k", shards, val_fraction=0.1, progress=False, sample_rate=24000,
                segment_seconds=None, min_seconds=0.5, silence_db=-60.0, shard_size=12)
    tests = str(Path(__file__).parent)  # the ranks import the tests' callbacks from here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tokenforge", "fit", *fit_args(TINY), "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--data.init_args.train", str(shards), "--data.init_args.val", str(shards),
         "--trainer.limit_val_batches", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.default_root_dir", str(tmp_path), *args],
        env=env, capture_output=True, text=True, timeout=600)
