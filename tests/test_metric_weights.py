"""Metric weight files: found by path or under $TOKENFORGE_HOME/weights/, checked by sha256, and a missing or
wrong file gives one line "unavailable: put <file> (sha256 ...) at <path>" (FID Inception, LPIPS trunk and heads)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from tokenforge.metrics import weight_files
from tokenforge.metrics.fid_protocols import PROTOCOLS, protocol
from tokenforge.metrics.image import FIDMetric, LPIPSMetric
from tokenforge.metrics.weights import WeightFile, WeightsUnavailable, describe, locate

LINE = re.compile(r"^\S+ unavailable: put (\S+) \(sha256 ([0-9a-f]{64})\) at (\S+) \(from \S.*\)")


def _one_line(error: pytest.ExceptionInfo, weight: WeightFile, where: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    found = LINE.match(message)
    assert found, message
    assert found.groups() == (weight.file, weight.sha256, str(where))


def test_table_holds_the_published_hashes() -> None:
    for weight in weight_files.IMAGE_METRIC_FILES:
        assert weight.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", weight.sha256), weight.name
    # torch.hub file names carry the first 8 hex digits of the file's sha256
    assert weight_files.FID_INCEPTION.sha256.startswith("6726825d")
    assert weight_files.LPIPS_VGG16_TRUNK.sha256.startswith("397923af")
    assert all(p.weights is weight_files.FID_INCEPTION for p in PROTOCOLS.values())


def test_lpips_heads_hash_is_the_lpips_package_file() -> None:
    lpips = pytest.importorskip("lpips")
    heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    assert hashlib.sha256(heads.read_bytes()).hexdigest() == weight_files.LPIPS_VGG_HEADS.sha256
    assert locate(weight_files.LPIPS_VGG_HEADS, heads) == heads  # given by path and accepted


def test_missing_and_wrong_hash_inception_give_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path))
    expected_at = tmp_path / "weights" / weight_files.FID_INCEPTION.file
    with pytest.raises(WeightsUnavailable) as error:
        FIDMetric()
    _one_line(error, weight_files.FID_INCEPTION, expected_at)
    with pytest.raises(WeightsUnavailable) as error:
        protocol("clean-fid").accumulator()
    _one_line(error, weight_files.FID_INCEPTION, expected_at)

    expected_at.parent.mkdir(parents=True)
    torch.save({"not": torch.zeros(1)}, expected_at)  # a file, but not the published one
    with pytest.raises(WeightsUnavailable) as error:
        FIDMetric(protocol="torch-fidelity")
    _one_line(error, weight_files.FID_INCEPTION, expected_at)
    assert "the file there has sha256" in str(error.value)
    given = tmp_path / "elsewhere.pth"
    given.write_bytes(b"wrong")
    with pytest.raises(WeightsUnavailable) as error:
        FIDMetric(given)
    _one_line(error, weight_files.FID_INCEPTION, given)


def test_missing_and_wrong_hash_lpips_give_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailable) as error:
        LPIPSMetric()
    _one_line(error, weight_files.LPIPS_VGG16_TRUNK, tmp_path / "weights" / "vgg16-397923af.pth")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "vgg16-397923af.pth").write_bytes(b"truncated download")
    with pytest.raises(WeightsUnavailable) as error:
        LPIPSMetric()
    _one_line(error, weight_files.LPIPS_VGG16_TRUNK, tmp_path / "weights" / "vgg16-397923af.pth")


def test_a_matching_file_is_found_and_described(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENFORGE_HOME", str(tmp_path))
    data = b"some weights"
    weight = WeightFile("toy", "toy.bin", hashlib.sha256(data).hexdigest(), "test")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "toy.bin").write_bytes(data)
    assert locate(weight) == tmp_path / "weights" / "toy.bin"
    assert describe(weight)["sha256"] == weight.sha256
