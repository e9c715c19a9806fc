"""A quiet console: `tokenforge fit` of a GAN tokenizer prints no library noise (Lightning's 14-line
ModelCheckpoint example, litlogger/litmodels tips), its progress bar counts steps (never ``Epoch 0/-2``), and
``--quiet`` leaves only warnings, errors and results. Real warnings still show.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from tokenforge import cli, console
from tokenforge.config_models import compose, fit_args

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path]:
    """Image shards of four bundled photos and the tiny VQGAN config, checkpointing every optimiser step (the
    setting under which Lightning 2.6 prints its manual-optimisation example)."""
    root = tmp_path_factory.mktemp("console")
    photos = root / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "camera.png", "coffee.png", "chelsea.png"):
        shutil.copy(shared_data / "images" / name, photos / name)
    assert cli.main(["--quiet", "shards", "make", "images", str(photos), str(root / "shards"), "--max-side", "64"]) == 0
    config = compose(REPO / "configs/tokenizers/vqgan/tiny.yaml")
    checkpoint = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint"))
    checkpoint["init_args"]["every_n_train_steps"] = 1
    config["trainer"]["max_steps"] = 3  # batch 1: generator step; batch 2: generator + discriminator
    config["model"]["init_args"]["disc_start"] = 1
    config["data"]["init_args"].update(train=str(root / "shards"), batch_size=2, epoch_samples=4)
    path = root / "gan.yaml"
    path.write_text(yaml.safe_dump(config))
    return root, path


def fit(root: Path, config: Path, *flags: str) -> list[str]:
    return [*flags, "fit", *fit_args(config), "--trainer.logger.init_args.save_dir", str(root / "logs"),
            "--trainer.default_root_dir", str(root)]


def test_gan_fit_prints_no_noise_and_counts_steps(gan_run, capfd, monkeypatch, one_thread) -> None:
    root, config = gan_run
    monkeypatch.chdir(root)
    assert cli.main(fit(root, config)) == 0
    out, err = capfd.readouterr()
    text = out + err
    assert "def training_step" not in text and "Using ModelCheckpoint with manual optimization" not in text
    assert "Tip" not in text and "litlogger" not in text and "litmodels" not in text
    assert "/-" not in text.replace("[A", "")  # no "Epoch 0/-2"
    assert "Epoch 0: step 3/3" in text  # optimiser steps against max_steps
    assert list((root / "logs").rglob("last.ckpt"))


def test_quiet_fit_has_no_progress_bar_or_info(gan_run, capfd, monkeypatch, one_thread) -> None:
    root, config = gan_run
    monkeypatch.chdir(root)
    assert cli.main(fit(root, config, "--quiet")) == 0
    out, err = capfd.readouterr()
    text = out + err
    assert "step 3/3" not in text and "%|" not in text and "it/s" not in text
    assert "max_steps=3" not in text and "GPU available" not in text
    assert not console.is_quiet()  # --quiet lasts one command


def test_real_warnings_still_show_and_noise_does_not() -> None:
    console.install_filters()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        console.install_filters()
        warnings.warn("Using ModelCheckpoint with manual optimization and every_n_train_steps, but ...", UserWarning)
        warnings.warn("old API", DeprecationWarning)
        warnings.warn("the learning rate is larger than the data allows", UserWarning)
    assert [str(w.message) for w in caught] == ["the learning rate is larger than the data allows"]


def test_lightning_tips_are_dropped_and_other_records_kept() -> None:
    console.install_filters()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        logger.info("`Trainer.fit` stopped: `max_steps=3` reached.")
        with console.quiet_mode(True):
            logger.info("GPU available: False, used: False")
            logger.warning("checkpoint directory exists and is not empty")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert records == ["`Trainer.fit` stopped: `max_steps=3` reached.",
                       "checkpoint directory exists and is not empty"]


def test_progress_helper_follows_quiet_and_the_terminal(monkeypatch) -> None:
    monkeypatch.delenv(console.PROGRESS_ENV, raising=False)
    monkeypatch.delenv(console.QUIET_ENV, raising=False)

    class Terminal:
        @staticmethod
        def isatty() -> bool:
            return True

    assert console.progress_enabled(Terminal())
    assert not console.progress_enabled(object())  # a pipe or a log file: final lines only
    monkeypatch.setenv(console.PROGRESS_ENV, "1")
    assert console.progress_enabled(object())
    with console.quiet_mode(True):
        assert not console.progress_enabled(Terminal())
        assert console.progress(range(3), desc="x").disable
        assert list(console.progress(range(3))) == [0, 1, 2]
    assert console.progress_enabled(Terminal())


def test_epoch_label_never_shows_a_negative_last_epoch() -> None:
    from types import SimpleNamespace

    from tokenforge.fit_progress import epoch_label

    assert epoch_label(SimpleNamespace(current_epoch=3, max_epochs=-1, max_steps=500)) == "Epoch 3"
    assert epoch_label(SimpleNamespace(current_epoch=3, max_epochs=None, max_steps=-1)) == "Epoch 3"
    assert epoch_label(SimpleNamespace(current_epoch=3, max_epochs=10, max_steps=-1)) == "Epoch 3/9"
