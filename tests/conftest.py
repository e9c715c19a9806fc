"""Shared test fixtures: where the real data and parity fixtures live, and the gpu marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one xdist worker per core: intra-op threads would only fight each other


@pytest.fixture()
def one_thread():
    """One intra-op thread for the test: tiny models on shared CPUs only lose time to thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_root() -> Path | None:
    """``$TOKENFORGE_SHARED`` or ``../shared`` beside the checkout."""
    for candidate in (os.environ.get("TOKENFORGE_SHARED"), REPO.parent / "shared"):
        if candidate and Path(candidate, "data").is_dir():
            return Path(candidate)
    return None


def _require(sub: str) -> Path:
    root = shared_root()
    if root is None or not (root / sub).exists():
        message = f"../shared/{sub} not found (set TOKENFORGE_SHARED to the shared folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root / sub


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (images, speech, music, meshes); fails under CI=true when missing."""
    return _require("data")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The parity fixtures folder; fails under CI=true when missing."""
    return _require("fixtures")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_face_shards(shared_data: Path, out: Path, val_fraction: float = 0.2, every: int = 1) -> list[Path]:
    """Image shards of the labelled LFW crops in ``out / "raw"`` (`tokenforge.demo_stages.make_face_shards`)."""
    from tokenforge.demo_stages import make_face_shards as make

    return make(shared_data, out, val_fraction, every)
