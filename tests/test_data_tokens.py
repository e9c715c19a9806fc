"""Token shards: a real VQGAN encodes real image shards; ids equal a direct encode; reader batches."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenforge.data.cli import main as shards_main
from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.image import Decoder as ImageDecoder
from tokenforge.data.shards import make_shards, shard_urls
from tokenforge.data.tokens import ids_dtype, split_tokens
from tokenforge.hub import save_pretrained
from tokenforge.tokenizers.base import Tokens

vqgan = pytest.importorskip("tokenforge.tokenizers.vqgan.model")
quantizers = pytest.importorskip("tokenforge.tokenizers.quantizers.vq")


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("tok")
    rows = ["path,label"] + [f"{shared_data}/images/faces/face_{i:03d}.png,1" for i in range(6)]
    rows += [f"{shared_data}/images/faces/nonface_{i:03d}.png,0" for i in range(4)]
    (root / "faces.csv").write_text("\n".join(rows) + "\n")
    make_shards("images", root / "faces.csv", root / "raw", val_fraction=0.2, shard_size=4, format="png",
                progress=False)
    torch.manual_seed(0)
    model = vqgan.VQGAN(quantizers.VectorQuantizer(64, 8, l2_normalize=True), ch=32, ch_mult=[1, 1], num_res_blocks=1,
                        z_channels=32, attn_last_level=False, attn_mid=False).eval()
    save_pretrained(model, root / "vqgan")
    return root, root / "vqgan", model


def test_cli_encode_matches_direct_encoding(setup: tuple[Path, Path, torch.nn.Module]) -> None:
    root, checkpoint, model = setup
    code = shards_main(["encode", "--tokenizer", str(checkpoint), str(root / "raw"), str(root / "tokens"),
                        "--batch-size", "3", "--image-size", "16", "--latents", "--shard-size", "5", "--no-progress"])
    assert code == 0
    manifest = json.loads((root / "tokens/manifest.json").read_text())
    assert manifest["count"] == 10 and manifest["splits"]["val"]["count"] == 2
    assert manifest["tokenizer"]["vocab_size"] == 64 and manifest["ids_dtype"] == "int16"
    assert manifest["tokenizer"]["spec"]["class_path"].endswith("VQGAN")
    raw = {}
    for url in shard_urls(root / "raw", "train") + shard_urls(root / "raw", "val"):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                raw.setdefault(key, {"__key__": key})[ext] = tar.extractfile(member).read()
    decoder = ImageDecoder(16, train=False)
    seen = []
    for split in ("train", "val"):
        for url in shard_urls(root / "tokens", split):
            with tarfile.open(url) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for name in [n for n in members if n.endswith(".ids.npy")]:
                key = name.split(".")[0]
                seen.append(key)
                ids = np.load(io.BytesIO(members[name]))
                assert ids.dtype == np.int16 and ids.shape == (8, 8)
                expected = model.encode(decoder(raw[key])["image"][None]).ids[0].numpy()
                np.testing.assert_array_equal(ids, expected)
                assert members[f"{key}.cls"] == raw[key]["cls"]
                latents = np.load(io.BytesIO(members[f"{key}.latents.npy"])) if f"{key}.latents.npy" in members \
                    else None
                assert latents is None or latents.dtype == np.float16
    assert sorted(seen) == sorted(raw)


def test_token_datamodule_batches(setup: tuple[Path, Path, torch.nn.Module]) -> None:
    root, checkpoint, _ = setup
    if not (root / "tokens/manifest.json").exists():
        shards_main(["encode", "--tokenizer", str(checkpoint), str(root / "raw"), str(root / "tokens"),
                     "--image-size", "16", "--no-progress"])
    dm = ShardDataModule(train=str(root / "tokens"), val=str(root / "tokens"), modality="tokens", batch_size=4,
                         epoch_samples=8)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    for batch in batches:
        assert batch["ids"].shape == (4, 8, 8) and batch["ids"].dtype == torch.long
        assert batch["ids"].min() >= 0 and batch["ids"].max() < 64 and batch["cls"].shape == (4,)
    assert sum(len(b["__key__"]) for b in dm.val_dataloader()) == 2


def test_split_tokens_scales_lengths_and_dtype() -> None:
    scales = Tokens(ids=[torch.tensor([[[1]], [[2]]]), torch.arange(8).reshape(2, 2, 2)])
    ids, latents, shapes = split_tokens(scales, 2)
    assert shapes == [[1, 1], [2, 2]] and latents == [None, None]
    assert ids[0].tolist() == [1, 0, 1, 2, 3] and ids[1].tolist() == [2, 4, 5, 6, 7]
    flexible = Tokens(ids=torch.tensor([[5, 6, 7], [8, 9, 10]]), lengths=torch.tensor([1, 3]),
                      latents=torch.ones(2, 3, 4))
    ids, latents, shapes = split_tokens(flexible, 2)
    assert [i.tolist() for i in ids] == [[5], [8, 9, 10]] and shapes is None and latents[1].shape == (3, 4)
    assert ids_dtype(32767) == np.int16 and ids_dtype(32768) == np.int32 and ids_dtype(65536) == np.int32
