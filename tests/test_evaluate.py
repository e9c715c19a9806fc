"""`tokenforge evaluate` on real image shards: a k-means VQGAN (PSNR/SSIM equal a direct computation, bytes per
item, protocol), a tiny GPT on its token shards (NLL equals the mean CE computed directly), the command end
to end and its refusals (modality mismatch, empty split)."""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from tokenforge.data.image import Decoder as ImageDecoder
from tokenforge.data.tokens import Decoder as TokenDecoder
from tokenforge.data.tokens import encode_shards
from tokenforge.evaluate import evaluate_generator, evaluate_tokenizer, main
from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.hub import save_pretrained
from tokenforge.metrics.image import psnr, ssim
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.vqgan.model import VQGAN
from conftest import make_face_shards

CODES, SIZE = 16, 32


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluate")
    make_face_shards(shared_data, root, val_fraction=0.25, every=5)  # 40 crops, both classes
    torch.manual_seed(0)
    tokenizer = VQGAN(VectorQuantizer(CODES, 8, kmeans_init=True), ch=32, ch_mult=[1, 2, 2], num_res_blocks=1,
                      z_channels=32, attn_last_level=False, attn_mid=False)
    decode = ImageDecoder(SIZE, train=False)
    train = torch.stack([decode(s)["image"] for s in wds.WebDataset(
        sorted(glob.glob(str(root / "raw" / "train-*.tar"))), shardshuffle=False)])
    with torch.no_grad():
        tokenizer.train()(train)  # k-means codebook on the training images
    save_pretrained(tokenizer.eval(), root / "vqgan")
    encode_shards(str(root / "vqgan"), root / "raw", root / "tokens", image_size=SIZE, device="cpu", progress=False)
    val = [decode(s) for s in wds.WebDataset(sorted(glob.glob(str(root / "raw" / "val-*.tar"))), shardshuffle=False)]
    gpt = GPT(vocab_size=CODES, seq_len=64, layout="grid", dim=32, depth=1, num_heads=2, multiple_of=32,
              num_classes=2).eval()
    save_pretrained(gpt, root / "gpt")
    yield {"root": root, "tokenizer": tokenizer, "val": torch.stack([v["image"] for v in val]), "gpt": gpt}
    torch.set_num_threads(threads)


def test_image_tokenizer_metrics_equal_a_direct_computation(setup: dict) -> None:
    root, val = setup["root"], setup["val"]
    metrics = evaluate_tokenizer(setup["tokenizer"], root / "raw", root / "eval_img", batch_size=4,
                                 image_size=SIZE, progress=False)
    assert json.loads((root / "eval_img" / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    protocol = metrics["protocol"]
    n = len(val)
    assert n == 10 and protocol["n_items"] == n and protocol["split"] == "val" and protocol["device"] == "cpu"
    assert protocol["sizes"] == {"image": [3, SIZE, SIZE]} and protocol["modality"] == "image"
    with torch.no_grad():
        x_hat = setup["tokenizer"].decode(setup["tokenizer"].encode(val))
    direct_psnr, direct_ssim = psnr(x_hat, val), ssim(x_hat, val)
    assert metrics["per_item"]["psnr_db"] == pytest.approx(direct_psnr, abs=1e-4)
    assert metrics["psnr_db"]["mean"] == pytest.approx(float(np.mean(direct_psnr)), abs=1e-4)
    assert metrics["psnr_db"]["std"] == pytest.approx(float(np.std(direct_psnr)), abs=1e-4)
    assert metrics["ssim"]["mean"] == pytest.approx(float(np.mean(direct_ssim)), abs=1e-4)
    assert 8 < metrics["psnr_db"]["mean"] < 40 and 0 < metrics["ssim"]["mean"] < 1
    # 8x8 ids at ceil(log2 16) = 4 bits -> 32 bytes
    assert metrics["tokens_per_item"] == 64 and metrics["bytes_per_item"] == 32
    assert metrics["lpips"] == "skipped: no weights" and metrics["rfid"] == "skipped: no weights"
    limited = evaluate_tokenizer(setup["tokenizer"], root / "raw", root / "eval_3", batch_size=4, max_items=3,
                                 image_size=SIZE, progress=False)
    assert limited["protocol"]["n_items"] == 3
    assert limited["per_item"]["psnr_db"] == pytest.approx(direct_psnr[:3], abs=1e-4)


def test_generator_nll_equals_the_mean_cross_entropy(setup: dict) -> None:
    root, gpt = setup["root"], setup["gpt"]
    metrics = evaluate_generator(gpt, root / "tokens", root / "eval_gpt", batch_size=4, progress=False)
    decode = TokenDecoder()
    samples = list(wds.WebDataset(sorted(glob.glob(str(root / "tokens" / "val-*.tar"))), shardshuffle=False))
    ids = torch.stack([decode(s)["ids"] for s in samples]).long()
    cls = torch.tensor([int(s["cls"]) for s in samples])
    with torch.no_grad():
        expected = float(gpt.loss(ids, cls))
    assert metrics["protocol"]["n_items"] == 10 and metrics["protocol"]["tokens"] == 10 * 64
    assert metrics["nll_nats_per_token"] == pytest.approx(expected, rel=1e-5)
    assert metrics["nll_bits_per_token"] == pytest.approx(expected / math.log(2), rel=1e-5)
    assert math.log(CODES) - 1.0 < expected < math.log(CODES) + 1.5  # an untrained model is near uniform
    assert metrics["fid"] == "skipped: no weights"
    assert json.loads((root / "eval_gpt" / "metrics.json").read_text())["nll_nats_per_token"] == pytest.approx(expected, rel=1e-5)


def test_command_end_to_end_and_refusals(setup: dict, capsys: pytest.CaptureFixture) -> None:
    root = setup["root"]
    out = root / "cli_img"
    assert main(["--model", str(root / "vqgan"), "--shards", str(root / "raw"), "--out", str(out),
                 "--image-size", str(SIZE), "--device", "cpu", "--no-progress", "--max-items", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["kind"] == "tokenizer" and metrics["protocol"]["n_items"] == 5
    assert metrics["protocol"]["model"] == str(root / "vqgan")
    assert "psnr_db" in capsys.readouterr().out
    assert main(["--model", str(root / "gpt"), "--shards", str(root / "tokens"), "--out", str(root / "cli_gpt"),
                 "--device", "cpu", "--no-progress"]) == 0  # kind inferred: generator
    assert json.loads((root / "cli_gpt" / "metrics.json").read_text())["protocol"]["kind"] == "generator"
    with pytest.raises(SystemExit):  # a generator on raw image shards
        main(["--model", str(root / "gpt"), "--shards", str(root / "raw"), "--no-progress", "--out", str(out)])
    assert "needs tokens shards" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a tokenizer on token shards
        main(["--model", str(root / "vqgan"), "--shards", str(root / "tokens"), "--no-progress", "--out", str(out)])
    assert "needs image shards" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no such split
        main(["--model", str(root / "vqgan"), "--shards", str(root / "raw"), "--split", "test", "--no-progress",
              "--out", str(out)])
    assert "no test-*.tar" in capsys.readouterr().err


def test_enat_masked_nll_is_seeded_and_equals_a_direct_computation(setup: dict) -> None:
    import torch.nn.functional as F

    from tokenforge.generators.enat.model import ENAT
    from tokenforge.generators.enat.module import random_mask

    root = setup["root"]
    torch.manual_seed(0)
    enat = ENAT(seq_len=64, hidden_size=32, num_heads=4, enc_depth=1, dec_depth=1, codebook_size=CODES,
                num_classes=2).eval()
    first = evaluate_generator(enat, root / "tokens", root / "eval_enat", batch_size=4, progress=False)
    again = evaluate_generator(enat, root / "tokens", root / "eval_enat2", batch_size=4, progress=False)
    assert first["nll_nats_per_token"] == again["nll_nats_per_token"]  # seeded masks
    decode = TokenDecoder()
    samples = list(wds.WebDataset(sorted(glob.glob(str(root / "tokens" / "val-*.tar"))), shardshuffle=False))
    ids = torch.stack([decode(s)["ids"] for s in samples]).long().reshape(len(samples), -1)
    cls = torch.tensor([int(s["cls"]) for s in samples])
    total, count = 0.0, 0
    with torch.no_grad():
        for index, start in enumerate(range(0, len(ids), 4)):  # the batches evaluate reads, seed = batch index
            chunk, labels = ids[start:start + 4], cls[start:start + 4]
            mask = random_mask(len(chunk), 64, round(0.8 * 64), generator=torch.Generator().manual_seed(index))
            logits = enat(chunk.masked_fill(mask, enat.mask_token_id), labels).logits
            total += float(F.cross_entropy(logits[mask], chunk[mask], reduction="sum"))
            count += int(mask.sum())
    assert first["protocol"]["tokens"] == count == 10 * 51 and first["protocol"]["mask_ratio"] == 0.8
    assert first["nll_nats_per_token"] == pytest.approx(total / count, rel=1e-5)
    assert "mask ratio" in first["note"]


def test_lpips_from_local_files_and_fid_without_its_package(setup: dict, tmp_path: Path) -> None:
    from torchvision.models.vgg import cfgs, make_layers

    from tokenforge.tokenizers.losses.perceptual import LPIPS

    root, val = setup["root"], setup["val"]
    torch.manual_seed(1)
    features = make_layers(cfgs["D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))},
               tmp_path / "vgg.pth")
    (tmp_path / "inception.pth").write_bytes(b"not used: torch-fidelity is checked first")
    metrics = evaluate_tokenizer(setup["tokenizer"], root / "raw", tmp_path / "eval", batch_size=4, image_size=SIZE,
                                 lpips_weights=str(tmp_path / "vgg16.pth"), lpips_lin_weights=str(tmp_path / "vgg.pth"),
                                 fid_weights=str(tmp_path / "inception.pth"), progress=False)
    with torch.no_grad():
        x_hat = setup["tokenizer"].decode(setup["tokenizer"].encode(val))
        expected = LPIPS(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.pth"))(x_hat, val)
    assert metrics["lpips"]["n"] == 10 and metrics["lpips"]["mean"] == pytest.approx(float(expected.mean()), rel=1e-4)
    assert metrics["protocol"]["weights"]["lpips"] == str(tmp_path / "vgg16.pth")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        assert metrics["rfid"].startswith("skipped:") and "torch-fidelity" in metrics["rfid"]
    with pytest.raises(FileNotFoundError, match="LPIPS weights"):
        evaluate_tokenizer(setup["tokenizer"], root / "raw", tmp_path / "e2", image_size=SIZE,
                           lpips_weights=str(tmp_path / "missing.pth"), progress=False)
