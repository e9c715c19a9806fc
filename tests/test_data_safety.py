"""Data safety on the bundled faces: outputs never mix two runs, the loader reads what the manifest lists,
and unreadable shards are retried, skipped and counted, or stop the run when none can be read."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import pytest
import torch

from tokenforge.data.cli import main as shards_main
from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.output import staged_output
from tokenforge.data.shards import make_shards, shard_urls
from tokenforge.data.tokens import encode_shards
from tokenforge.errors import RunFailedError, UsageError
from tokenforge.hub import from_pretrained, save_pretrained
from tokenforge.tokenizers import quantizers, vqgan

IMAGE = 16


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw shards of 12 bundled faces (3 per shard, 2 held out) and a tiny VQGAN to encode them."""
    root = tmp_path_factory.mktemp("safety")
    rows = ["path,label"] + [f"{shared_data}/images/faces/face_{i:03d}.png,1" for i in range(12)]
    (root / "faces.csv").write_text("\n".join(rows) + "\n")
    make_shards("images", root / "faces.csv", root / "raw", val_fraction=0.2, shard_size=3, format="png",
                max_side=32, progress=False)
    torch.manual_seed(0)
    model = vqgan.VQGAN(quantizers.VectorQuantizer(32, 8, l2_normalize=True), ch=32, ch_mult=[1, 1],
                        num_res_blocks=1, z_channels=32, attn_last_level=False, attn_mid=False).eval()
    save_pretrained(model, root / "vqgan")
    return root


def encode_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return ["encode", "--tokenizer", str(root / "vqgan"), str(root / "raw"), str(out), "--image-size", str(IMAGE),
            "--device", "cpu", "--no-progress", *extra]


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_encode_refuses_a_non_empty_folder_and_overwrite_replaces_it(setup: Path, capsys) -> None:
    root = setup
    out = root / "tokens_refuse"
    out.mkdir()
    (out / "train-000099.tar").write_bytes(b"an older run's shard")
    assert shards_main(encode_argv(root, out)) == 2
    line = one_error_line(capsys)
    assert "is not empty" in line and "--overwrite" in line
    assert listing(out) == {"train-000099.tar": b"an older run's shard"}  # untouched
    with pytest.raises(UsageError, match="not empty"):  # shards make refuses too, and names --resume
        make_shards("images", root / "faces.csv", out, progress=False)
    assert shards_main(encode_argv(root, out, "--overwrite", "--shard-size", "4")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {s["name"] for split in manifest["splits"].values() for s in split["shards"]}
    assert set(listing(out)) == listed | {"manifest.json"}  # the old shard is gone, nothing unlisted
    assert manifest["count"] == 12 and manifest["splits"]["train"]["count"] == 10
    assert not [p for p in root.iterdir() if p.name.startswith(".tokens_refuse")]  # no staging folder left


def test_an_interrupted_overwrite_leaves_the_old_folder_whole(setup: Path) -> None:
    root = setup
    out = root / "tokens_interrupt"
    encode_shards(str(root / "vqgan"), root / "raw", out, image_size=IMAGE, device="cpu", progress=False,
                  shard_size=2, batch_size=2)
    before = listing(out)
    model = from_pretrained(root / "vqgan")
    calls = []

    def encode_then_ctrl_c(x: torch.Tensor):  # a Ctrl-C after the first batch was written
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return type(model).encode(model, x)

    model.encode = encode_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        encode_shards(model, root / "raw", out, image_size=IMAGE, device="cpu", progress=False, shard_size=1,
                      batch_size=2, overwrite=True)
    assert listing(out) == before  # all old shards, the old manifest, no new shard beside them
    assert not [p for p in root.iterdir() if p.name.startswith(".tokens_interrupt")]


def test_the_loader_reads_exactly_the_listed_shards(setup: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(setup / "raw", raw)
    manifest = json.loads((raw / "manifest.json").read_text())
    listed = [s["name"] for s in manifest["splits"]["train"]["shards"]]
    shutil.copy(raw / listed[0], raw / "train-000777.tar")  # a stray shard of another run: not read
    with pytest.warns(UserWarning, match="does not list"):
        urls = shard_urls(raw, "train")
    assert [Path(u).name for u in urls] == listed
    dm = ShardDataModule(train=str(raw), val=str(raw), image_size=IMAGE, batch_size=4)
    with pytest.warns(UserWarning, match="does not list"):
        dm.setup()
    keys = [k for batch in dm.loader(dm.train_urls, train=False) for k in batch["__key__"]]
    assert sorted(keys) == sorted(manifest["splits"]["train"]["keys"])  # each listed sample once, no stray
    (raw / listed[1]).unlink()
    with pytest.raises(UsageError) as error:
        ShardDataModule(train=str(raw), image_size=IMAGE).setup()
    message = str(error.value)
    assert listed[1] in message and "manifest.json" in message and "\n" not in message
    (raw / "manifest.json").unlink()  # progress.jsonl without a manifest: an unfinished `shards make`
    with pytest.raises(UsageError, match="unfinished"):
        shard_urls(raw, "train")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreachable_url_stops_the_run_within_seconds(workers: int, capfd, monkeypatch) -> None:
    port = closed_port()
    spec = f"http://127.0.0.1:{port}/train-{{000000..000002}}.tar"
    dm = ShardDataModule(train=spec, image_size=IMAGE, batch_size=2, epoch_samples=4, num_workers=workers,
                         shard_retries=1)
    dm.setup()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as outside pytest: no handler, so stderr
    start = time.monotonic()
    # in-process, the warning names each shard and the count so far; with workers, each worker logs one line
    # per shard on its stderr and the main process echoes the skips once (how many more, last reason, count)
    match = "skipped shard" if workers == 0 else r"skipped shard\(s\) in the DataLoader workers: 3 more .*127\.0\.0\.1"
    with pytest.raises(RunFailedError) as error, pytest.warns(UserWarning, match=match) as warned:
        list(dm.train_dataloader())
    assert time.monotonic() - start < 30
    message = str(error.value).strip().splitlines()[-1]
    assert "3 of 3 shards failed" in message and "127.0.0.1" in message
    if workers:
        assert sum("DataLoader workers" in str(w.message) for w in warned) == 1  # once, not per batch or worker
        lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("skipped shard")]
        urls = {f"http://127.0.0.1:{port}/train-00000{i}.tar" for i in range(3)}
        assert len(lines) == 3 and {line.split()[2] for line in lines} == urls  # each shard once, one line
        assert all(re.search(r"after 2 attempts: URLError: .* \[[123] shards skipped so far\]$", x) for x in lines)


def test_encode_from_an_unreachable_url_fails_with_one_line(setup: Path, tmp_path: Path, capsys) -> None:
    spec = f"http://127.0.0.1:{closed_port()}/train-{{000000..000001}}.tar"
    argv = ["encode", "--tokenizer", str(setup / "vqgan"), spec, str(tmp_path / "t"), "--image-size", str(IMAGE),
            "--device", "cpu", "--no-progress", "--retries", "0", "--splits", "train"]
    with pytest.warns(UserWarning, match="skipped shard"):
        assert shards_main(argv) == 1
    line = one_error_line(capsys)
    assert "2 of 2 shards failed" in line and "127.0.0.1" in line
    assert not (tmp_path / "t").exists()


def test_a_corrupt_shard_is_skipped_and_counted_while_the_rest_loads(setup: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(setup / "raw", raw)
    manifest = json.loads((raw / "manifest.json").read_text())
    shards = manifest["splits"]["train"]["shards"]
    bad = shards[1]["name"]
    (raw / bad).write_bytes(bytes(range(256)) * 8)  # not a tar
    with tarfile.open(raw / shards[0]["name"]) as tar:
        good_keys = {m.name.split(".")[0] for m in tar.getmembers()}
    for entry in shards[2:]:
        with tarfile.open(raw / entry["name"]) as tar:
            good_keys |= {m.name.split(".")[0] for m in tar.getmembers()}
    dm = ShardDataModule(train=str(raw), image_size=IMAGE, batch_size=2, shard_retries=1, epoch_samples=6)
    dm.setup()
    with pytest.warns(UserWarning, match=f"skipped shard .*{bad} after 2 attempts"):
        keys = [k for batch in dm.loader(dm.train_urls, train=False) for k in batch["__key__"]]
    assert set(keys) == good_keys and len(keys) == len(good_keys) == 10 - shards[1]["count"]
    assert dm.skipped_shards == 1
    with pytest.warns(UserWarning, match="skipped shard"):  # training draws from the good shards only
        batches = list(dm.train_dataloader())
    assert len(batches) == 3 and {k for b in batches for k in b["__key__"]} <= good_keys
    argv = ["encode", "--tokenizer", str(setup / "vqgan"), str(raw), str(tmp_path / "tokens"), "--image-size",
            str(IMAGE), "--device", "cpu", "--no-progress", "--retries", "0"]
    with pytest.warns(UserWarning, match="skipped shard"):  # encode too: exit 3, the manifest counts the skip
        assert shards_main(argv) == 3
    encoded = json.loads((tmp_path / "tokens/manifest.json").read_text())
    assert encoded["skipped_shards"] == 1 and encoded["splits"]["train"]["count"] == len(good_keys)


def test_ctrl_c_in_shards_make_prints_one_line_and_leaves_nothing_that_loads(setup: Path, tmp_path: Path,
                                                                             monkeypatch, capsys) -> None:
    from tokenforge.data import image

    real, seen = image.prepare, []

    def prepare_then_ctrl_c(path, **options):
        seen.append(path)
        if len(seen) == 5:
            raise KeyboardInterrupt
        return real(path, **options)

    monkeypatch.setattr(image, "prepare", prepare_then_ctrl_c)
    out = tmp_path / "raw"
    argv = ["make", "images", str(setup / "faces.csv"), str(out), "--shard-size", "2", "--format", "png",
            "--no-progress"]
    assert shards_main(argv) == 130
    line = one_error_line(capsys)
    assert "interrupted" in line and f"tokenforge shards {' '.join(argv)} --resume" in line
    assert not (out / "manifest.json").exists() and list(out.glob("train-*.tar"))  # finished shards kept
    with pytest.raises(UsageError, match="unfinished"):  # the finished shards are not read as a dataset
        shard_urls(out, "train")
    monkeypatch.setattr(image, "prepare", real)
    assert shards_main([*argv, "--resume"]) == 0  # the hint's command finishes the run
    assert json.loads((out / "manifest.json").read_text())["count"] == 12
    capsys.readouterr()
    # an interrupted --overwrite leaves the finished folder as it was
    before = listing(out)
    seen.clear()
    monkeypatch.setattr(image, "prepare", prepare_then_ctrl_c)
    assert shards_main([*argv, "--overwrite"]) == 130
    assert "is unchanged" in one_error_line(capsys)
    assert listing(out) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")]


def garbage_copy(source: Path, target: Path) -> list[str]:
    """``source`` with every member's bytes replaced by garbage of the same length (same names: it opens fine)."""
    with tarfile.open(source) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    with tarfile.open(target, "w") as tar:
        for member, data in members:
            junk = bytes((7 * i + 13) % 256 for i in range(len(data)))
            member.size = len(junk)
            tar.addfile(member, io.BytesIO(junk))
    return sorted({m.name.split(".")[0] for m, _ in members})


def test_a_shard_whose_samples_all_fail_to_decode_is_skipped_and_counted(setup: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(setup / "raw", raw)
    shards = json.loads((raw / "manifest.json").read_text())["splits"]["train"]["shards"]
    bad = shards[0]["name"]
    bad_keys = garbage_copy(setup / "raw" / bad, raw / bad)
    # a small shuffle buffer: the shard is judged once its first read's samples came out of the buffer
    dm = ShardDataModule(train=str(raw), image_size=IMAGE, batch_size=2, epoch_samples=24, shuffle_buffer=6)
    dm.setup()
    with pytest.warns(UserWarning, match=f"skipped shard .*{bad}: all 3 samples failed to decode"):
        batches = list(dm.train_dataloader())  # resampled: the garbage shard would be drawn again and again
    keys = {k for b in batches for k in b["__key__"]}
    assert len(batches) == 12 and keys and not keys & set(bad_keys)
    assert dm.skipped_shards == 1  # once per epoch, however often it was drawn
    assert dm.skipped >= 3  # its probe samples, each counted as a corrupt sample


@pytest.mark.parametrize("workers", [0, 2])
def test_shards_of_undecodable_samples_stop_the_run_within_seconds(setup: Path, tmp_path: Path,
                                                                    workers: int) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(setup / "raw", raw)
    shards = json.loads((raw / "manifest.json").read_text())["splits"]["train"]["shards"]
    for entry in shards:
        garbage_copy(setup / "raw" / entry["name"], raw / entry["name"])
    dm = ShardDataModule(train=str(raw), image_size=IMAGE, batch_size=2, epoch_samples=8, num_workers=workers)
    dm.setup()
    start = time.monotonic()
    with pytest.raises(RunFailedError) as error, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one per garbage sample and per skipped shard
        list(dm.train_dataloader())
    assert time.monotonic() - start < 30
    message = str(error.value)
    assert f"{len(shards)} of {len(shards)} shards failed" in message and "\n" not in message
    assert "samples failed to decode" in message and "remake them" in message


KILL_DURING_OVERWRITE = """
import os, signal, sys
from tokenforge.data import image
from tokenforge.data.cli import main
real, seen = image.prepare, []
def prepare_then_kill(path, **options):
    seen.append(path)
    if len(seen) == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 while the new shards are being written beside OUT
    return real(path, **options)
image.prepare = prepare_then_kill
main(sys.argv[1:])
"""


def test_a_staging_folder_left_by_kill_9_is_removed_by_the_next_run(setup: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "raw"
    argv = ["make", "images", str(setup / "faces.csv"), str(out), "--shard-size", "2", "--format", "png",
            "--max-side", "16", "--no-progress"]
    assert shards_main(argv) == 0
    before = listing(out)
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_OVERWRITE, *argv, "--overwrite"], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".raw.writing-")]
    assert len(stale) == 1 and list(stale[0].glob("train-*.tar*"))  # what the killed run had written
    assert listing(out) == before  # the old folder is whole
    others = [tmp_path / ".raw2.writing-1-abcdef", tmp_path / ".raw.old-1-abcdef"]  # not this OUT's staging
    for folder in others:
        folder.mkdir()
    capsys.readouterr()
    with pytest.raises(InterruptedError), staged_output(out) as live:  # a run still writing (holds the lock)
        assert shards_main([*argv, "--overwrite"]) == 0
        assert live.is_dir()  # in use: left alone
        raise InterruptedError  # that run then stops without swapping in (its folder is removed)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"removed 1 staging folder(s) left beside {out}" in err[0] and stale[0].name in err[0]
    assert not stale[0].exists() and all(folder.is_dir() for folder in others)
    assert json.loads((out / "manifest.json").read_text())["count"] == 12

