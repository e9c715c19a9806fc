"""The E-CAR configs parse through LightningCLI and build the intended models (sizes checked, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenforge.config import build
from tokenforge.config_models import compose
from tokenforge.generators.ecar.dit import FlowDiT
from tokenforge.generators.ecar.model import ECAR

CONFIGS = Path(__file__).resolve().parents[1] / "configs/generators/ecar"


@pytest.mark.parametrize("name,cls", [("tiny", ECAR), ("dit_tiny", FlowDiT), ("mar_b", ECAR)])
def test_config_builds(name: str, cls: type) -> None:
    spec = compose(CONFIGS / f"{name}.yaml")["model"]["init_args"]["model"]
    if name == "mar_b":  # 200 M parameters: check the arguments without allocating the whole model
        args = spec["init_args"]
        assert args["scales"][-1] == 16 and args["latent_channels"] == 16 and args["dim"] == 768
        return
    model = build(spec)
    assert isinstance(model, cls)
    x = torch.randn(2, 4, 8, 8)
    assert model(x, torch.tensor([0, 1])).isfinite()
