"""Size tables for the shared bench scripts (../shared/bench), which predate configs as the one source of sizes.

``llamagen_sample.py``, ``llamagen_train.py`` and ``enat.py`` read ``SIZES[size]`` as the model's keyword
arguments. tokenforge's benches now map a size to its config instead (``{"B": "gpt_b", ...}``:
configs/<area>/<method>/<name>.yaml on its base.yaml). `AR_SIZES` and `ENAT_SIZES` give the old form, built from
those configs, so the scripts measure exactly the models the configs define. tools/bench/run_extra.sh and
setup_anchors.sh point the scripts' imports here (one ``sed`` line each); a table that still holds keyword
arguments passes through unchanged.
"""

from __future__ import annotations

import importlib
from typing import Any


def sizes(module: str, area: str, method: str) -> dict[str, dict[str, Any]]:
    """``{size: model init args}`` for the ``SIZES`` table of ``module`` (size -> config name, or -> kwargs)."""
    from tokenforge.config_models import model_spec, size_config

    table = importlib.import_module(module).SIZES
    return {size: dict(value) if isinstance(value, dict)
            else dict(model_spec(size_config(area, method, value))["init_args"]) for size, value in table.items()}


AR_SIZES = sizes("tokenforge.generators.autoregressive.bench", "generators", "autoregressive")
ENAT_SIZES = sizes("tokenforge.generators.enat.bench", "generators", "enat")
