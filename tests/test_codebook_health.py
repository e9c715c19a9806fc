"""`CodebookHealth`: histogram numbers by hand, metrics reach the logger, the collapse alarm fires on a forced
collapse (every input identical) and stays silent on a healthy run over a real photo."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from tokenforge.codebook_health import CodebookCollapseWarning, CodebookHealth, find_quantizers
from tokenforge.tokenizers.quantizers import FSQ, MultiScaleResidualQuantizer, VectorQuantizer
from tokenforge.tokenizers.quantizers.base import histogram_statistics


def test_histogram_statistics_by_hand() -> None:
    stats = histogram_statistics(torch.tensor([4.0, 4.0, 0.0, 0.0]))
    assert float(stats["usage"]) == 0.5 and int(stats["dead_codes"]) == 2 and float(stats["vectors"]) == 8
    assert float(stats["entropy"]) == pytest.approx(1.0) and float(stats["perplexity"]) == pytest.approx(2.0)
    skewed = histogram_statistics(torch.tensor([6.0, 2.0, 0.0, 0.0]))  # H = -(3/4 log2 3/4 + 1/4 log2 1/4)
    assert float(skewed["entropy"]) == pytest.approx(0.811278, abs=1e-5)
    assert float(skewed["perplexity"]) == pytest.approx(2 ** 0.811278, abs=1e-4)
    one = histogram_statistics(torch.tensor([0.0, 9.0, 0.0]))
    assert float(one["perplexity"]) == pytest.approx(1.0) and int(one["dead_codes"]) == 2


def test_find_quantizers_sees_every_kind_outermost_only() -> None:
    class Nested(VectorQuantizer):  # a quantizer holding another one reports once, under its own name
        def __init__(self) -> None:
            super().__init__(8, 2)
            self.inner = FSQ([3, 3])

    net = nn.ModuleDict({"vq": Nested(), "msr": MultiScaleResidualQuantizer(16, 4, scales=(1, 2)),
                         "enc": nn.Linear(2, 2)})
    assert list(find_quantizers(net)) == ["vq", "msr"]


def test_fsq_called_in_parts_is_counted_in_training_only() -> None:
    """FlexTok calls FSQ's channel-last helpers, never its forward: FSQ reports its indices itself."""
    net = nn.ModuleDict({"fsq": FSQ([3, 3])})
    callback = CodebookHealth(every_n_steps=1)
    callback.setup(None, net, "fit")
    codes = net["fsq"].quantize_last(torch.tensor([[-5.0, -5.0], [5.0, 5.0], [0.0, 0.0], [5.0, 5.0]]))
    assert net["fsq"].codes_to_indices_last(codes).tolist() == [0, 8, 4, 8]
    assert callback.counts["fsq"].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 2]
    net.eval()
    net["fsq"].codes_to_indices_last(codes)  # inference: not counted
    net.train()
    net["fsq"](torch.zeros(1, 2, 3))  # forward reports once too (through the same helper), no double count
    assert callback.counts["fsq"].tolist() == [1, 0, 0, 0, 4, 0, 0, 0, 2]
    callback.teardown(None, net, "fit")
    net["fsq"].codes_to_indices_last(codes)
    assert callback.counts["fsq"].sum() == 7  # detached: still 4 + 3


class ToyTokenizer(pl.LightningModule):
    """Patch encoder -> EMA VQ (k-means init, as WavTokenizer's) -> patch decoder, on 3 x 32 x 32 images."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 8, 4, stride=4)
        self.quantizer = VectorQuantizer(64, 8, ema=True, kmeans_init=True, kmeans_iters=5)
        self.decoder = nn.ConvTranspose2d(8, 3, 4, stride=4)
        self.shadow = VectorQuantizer(16, 8)  # found but never run (as an EMA copy of weights): never reported

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = self.quantizer(self.encoder(batch))
        return F.mse_loss(self.decoder(out.quantized), batch) + out.loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def photo_crops(shared_data: Path, n: int = 16) -> torch.Tensor:
    """``n`` 32 x 32 crops of a real photo in [-1, 1] (a 4 x 4 grid over the 128 x 128 image)."""
    img = Image.open(shared_data / "images" / "astronaut.png").convert("RGB").resize((128, 128), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
    return torch.stack([x[:, i:i + 32, j:j + 32] for i in range(0, 128, 32) for j in range(0, 128, 32)])[:n]


def fit(data: torch.Tensor, tmp_path: Path, **health) -> tuple[CodebookHealth, list[warnings.WarningMessage]]:
    torch.manual_seed(0)
    callback = CodebookHealth(every_n_steps=4, **health)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=12, logger=pl.loggers.CSVLogger(tmp_path),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback])
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(ToyTokenizer(), loader)
    return callback, [w for w in caught if issubclass(w.category, CodebookCollapseWarning)]


def test_forced_collapse_fires_the_alarm_once_with_step_and_numbers(tmp_path: Path) -> None:
    identical = torch.full((16, 3, 32, 32), 0.3)  # every vector the same: one code can ever win
    callback, alarms = fit(identical, tmp_path)
    assert list(callback.quantizers) == ["quantizer", "shadow"]
    assert [(row["name"], row["batches"]) for row in callback.history] == [("quantizer", b) for b in (4, 8, 12)]
    first = callback.history[0]
    assert first["perplexity"] == pytest.approx(1.0) and first["dead_codes"] == 63 and first["entropy"] == 0.0
    assert len(alarms) == 1  # three collapsed windows, one warning
    message = str(alarms[0].message)
    assert "'quantizer'" in message and "at step 4 " in message and "1 of 64 codes used over 1024 vectors" in message
    assert "perplexity 1.00" in message and "63 dead codes" in message


def test_healthy_run_stays_silent_and_logs_every_window(shared_data: Path, tmp_path: Path) -> None:
    callback, alarms = fit(photo_crops(shared_data), tmp_path)
    assert alarms == []
    assert len(callback.history) == 3
    for row in callback.history:  # 4 batches x 4 crops x 64 positions = 1024 vectors on 64 codes
        assert row["vectors"] == 1024 and row["usage"] > 0.5 and row["perplexity"] > 16
        assert row["entropy"] == pytest.approx(math.log2(row["perplexity"]), abs=1e-6)
        assert row["dead_codes"] == round(64 * (1 - row["usage"]))
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    logged = [r for r in rows if r.get("codebook/quantizer/perplexity")]
    assert [int(r["step"]) for r in logged] == [3, 7, 11]  # the step Lightning logs each window's last batch at
    assert {"codebook/quantizer/usage", "codebook/quantizer/dead_codes", "codebook/quantizer/entropy"} <= set(rows[0])
    assert float(logged[-1]["codebook/quantizer/perplexity"]) == pytest.approx(callback.history[-1]["perplexity"])


def test_thresholds_are_configurable(tmp_path: Path, shared_data: Path) -> None:
    """The healthy run trips an alarm set above what it reaches; a warm-up longer than the run keeps it quiet."""
    _, alarms = fit(photo_crops(shared_data), tmp_path / "strict", min_perplexity=1000.0)
    assert len(alarms) == 1 and "perplexity < min_perplexity 1000" in str(alarms[0].message)
    _, quiet = fit(torch.full((16, 3, 32, 32), 0.3), tmp_path / "warm", warmup_steps=100)
    assert quiet == []
    with pytest.raises(ValueError, match="every_n_steps"):
        CodebookHealth(every_n_steps=0)
