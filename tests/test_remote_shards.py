"""Remote shards on the bundled faces: a threaded HTTP server on 127.0.0.1 serves the shards (one of them cut
mid-transfer), ``pipe:`` commands, brace patterns, a remote manifest, a list of specs and fsspec URLs. The cut
shard is retried, skipped and counted while every other sample arrives, and remote shards give the same
batches as the same shards on disk, epoch by epoch and on a mid-epoch resume."""

from __future__ import annotations

import http.server
import importlib.util
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.shards import make_shards, shard_urls
from tokenforge.errors import UsageError

IMAGE = 16
CUT = "train-000001.tar"  # the shard the server cuts off half-way


@pytest.fixture(scope="module")
def raw(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four train shards of three bundled faces each, with their manifest."""
    root = tmp_path_factory.mktemp("remote")
    rows = ["path,label"] + [f"{shared_data}/images/faces/face_{i:03d}.png,1" for i in range(12)]
    (root / "faces.csv").write_text("\n".join(rows) + "\n")
    make_shards("images", root / "faces.csv", root / "raw", shard_size=3, format="png", progress=False)
    return root / "raw"


def shard_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers()))


class Server:
    """Serves a folder on 127.0.0.1; files named in ``cut`` get their full Content-Length but only half their
    bytes, then the connection closes. ``requests`` counts the GETs per file."""

    def __init__(self, folder: Path, cut: set[str]) -> None:
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.lstrip("/")
                server.requests[name] += 1
                path = folder / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if name in cut else data)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(raw: Path) -> Iterator[Server]:
    running = Server(raw, cut={CUT})
    yield running
    running.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_cut_mid_transfer_is_retried_skipped_and_counted(raw: Path, server: Server, workers: int) -> None:
    dm = ShardDataModule(train=f"{server.url}/manifest.json", image_size=IMAGE, batch_size=2, shard_retries=2,
                         num_workers=workers)
    dm.setup()
    assert dm.train_urls == [f"{server.url}/train-00000{i}.tar" for i in range(4)]
    assert dm.epoch_batches() == 6  # 12 samples in the remote manifest, batches of 2
    match = f"skipped shard .*{CUT} after 3 attempts" if not workers else "skipped shard.*" + CUT.replace(".", r"\.")
    with pytest.warns(UserWarning, match=match):
        keys = [k for batch in dm.loader(dm.train_urls, train=False) for k in batch["__key__"]]
    assert server.requests[CUT] == 3  # the first attempt and two retries
    good = [k for i in (0, 2, 3) for k in shard_keys(raw / f"train-00000{i}.tar")]
    cut = [k for k in keys if k not in good]
    assert sorted(k for k in keys if k in good) == sorted(good)  # every other sample arrives, exactly once
    assert len(cut) < 3 and set(cut) <= set(shard_keys(raw / CUT))  # the cut shard's samples before the cut
    assert dm.skipped_shards == 1 and dm.skipped >= 1  # the shard, and its lost remainder as one corrupt sample
    if workers:
        return
    # training draws shards with replacement: once the cut shard has failed its attempts, it is not drawn again
    # in that epoch (3 more requests at most), it counts once more, and the epoch still has all its batches
    before = server.requests[CUT]
    with pytest.warns(UserWarning, match=f"skipped shard .*{CUT}"):
        batches = epoch(dm, 0)
    added = server.requests[CUT] - before
    assert len(batches) == 6 and added in (0, 3) and dm.skipped_shards == 1 + (added == 3)


def epoch(dm: ShardDataModule, number: int, done: int = 0) -> list[dict]:
    """One training epoch's batches as a trainer at ``number`` with ``done`` batches already trained would see."""
    loader = dm.train_dataloader()
    progress = SimpleNamespace(current=SimpleNamespace(completed=done))
    trainer = SimpleNamespace(current_epoch=number, fit_loop=SimpleNamespace(
        epoch_loop=SimpleNamespace(batch_progress=progress)))
    loader.trainer = lambda: trainer
    return list(loader)


def test_a_brace_pattern_over_http_reads_as_the_local_shards_by_epoch_and_resume(raw: Path) -> None:
    server = Server(raw, cut=set())
    try:
        remote = ShardDataModule(train=f"{server.url}/train-{{000000..000003}}.tar", image_size=IMAGE, batch_size=2,
                                 epoch_samples=8, seed=3)
        local = ShardDataModule(train=str(raw), image_size=IMAGE, batch_size=2, epoch_samples=8, seed=3)
        for dm in (remote, local):
            dm.setup()
        assert remote.train_urls == [f"{server.url}/train-00000{i}.tar" for i in range(4)]
        runs = {name: [epoch(dm, 0), epoch(dm, 1), epoch(dm, 1, done=2)] for name, dm in
                (("remote", remote), ("local", local))}
    finally:
        server.close()
    for first, second in zip(runs["remote"], runs["local"]):  # same batches, key for key and pixel for pixel
        assert [b["__key__"] for b in first] == [b["__key__"] for b in second]
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, second))
    zero, one, resumed = runs["remote"]
    assert len(zero) == len(one) == 4 and len(resumed) == 2
    assert [b["__key__"] for b in zero] != [b["__key__"] for b in one]  # epochs differ
    assert [b["__key__"] for b in resumed] == [b["__key__"] for b in one[2:]]  # a resume continues the epoch
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(resumed, one[2:]))
    assert remote.skipped_shards == 0 and sum(server.requests.values()) >= 4


def test_pipe_commands_with_brace_patterns_and_a_list_of_specs(raw: Path) -> None:
    piped = f"pipe:cat {raw}/train-{{000000..000001}}.tar"
    assert shard_urls(piped) == [f"pipe:cat {raw}/train-00000{i}.tar" for i in range(2)]
    spec = [piped, str(raw / "train-000002.tar"), f"pipe:cat {raw}/missing-000000.tar"]
    dm = ShardDataModule(train=spec, val=spec, image_size=IMAGE, batch_size=2, shard_retries=1)
    dm.setup()
    assert len(dm.train_urls) == 4
    match = r"skipped shard pipe:cat .*missing-000000.tar after 2 attempts: OSError: the command .* exited with status"
    with pytest.warns(UserWarning, match=match):
        keys = [k for batch in dm.val_dataloader() for k in batch["__key__"]]
    want = [k for i in range(3) for k in shard_keys(raw / f"train-00000{i}.tar")]
    assert keys == want and dm.skipped_shards == 1
    assert dm.epoch_batches() == 5000  # a list without manifests: the default 10,000 samples per epoch


def test_a_remote_folder_url_and_fsspec_urls(raw: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    for path in sorted(raw.glob("*.tar")) + [raw / "manifest.json"]:
        memory.pipe(f"/faces/{path.name}", path.read_bytes())
    assert shard_urls("memory://faces/manifest.json") == shard_urls("memory://faces/")
    with pytest.raises(FileNotFoundError, match="lists no val shards"):
        shard_urls("memory://faces/", "val")
    dm = ShardDataModule(train="memory://faces/", image_size=IMAGE, batch_size=4)
    dm.setup()
    assert dm.train_urls == [f"memory://faces/train-00000{i}.tar" for i in range(4)]
    assert shard_urls("memory://faces/train-{000000..000001}.tar") == dm.train_urls[:2]
    keys = [k for batch in dm.loader(dm.train_urls, train=False) for k in batch["__key__"]]
    assert keys == [k for i in range(4) for k in shard_keys(raw / f"train-00000{i}.tar")]
    assert len(epoch(dm, 0)) == 3  # 12 samples from the remote manifest, batches of 4


def test_a_scheme_without_its_reader_is_one_line() -> None:
    if importlib.util.find_spec("s3fs") is None:
        with pytest.raises(UsageError, match=r"s3:// shards .* need the s3fs package: pip install s3fs") as error:
            ShardDataModule(train="s3://bucket/train-{000000..000003}.tar").setup()
        assert len(str(error.value).splitlines()) == 1 and "pipe:aws s3 cp" in str(error.value)
    with pytest.raises(UsageError, match="no reader for nosuch:// shards"):
        shard_urls("nosuch://host/train-000000.tar")


def test_shards_encode_reads_a_remote_manifest(raw: Path, tmp_path: Path) -> None:
    from tokenforge.data.tokens import encode_shards
    from tokenforge.tokenizers import quantizers, vqgan

    torch.manual_seed(0)
    model = vqgan.VQGAN(quantizers.VectorQuantizer(32, 8, l2_normalize=True), ch=32, ch_mult=[1, 1],
                        num_res_blocks=1, z_channels=32, attn_last_level=False, attn_mid=False).eval()
    server = Server(raw, cut={CUT})
    try:
        with pytest.warns(UserWarning, match=f"skipped shard .*{CUT}"):
            manifest = encode_shards(model, f"{server.url}/manifest.json", tmp_path / "tokens", image_size=IMAGE,
                                     device="cpu", progress=False, retries=1)
    finally:
        server.close()
    assert server.requests[CUT] == 2 and manifest["skipped_shards"] == 1
    assert manifest["splits"]["train"]["count"] >= 9  # the three whole shards, and what arrived of the cut one
