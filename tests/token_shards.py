"""Token shards from the bundled face crops, for the generator tests: image shards -> a tiny `VQGAN` whose
codebook is fitted by k-means on the training images -> 8x8 grids of ``codes`` ids (`encode_shards`)."""

from __future__ import annotations

import glob
from pathlib import Path

import torch
import webdataset as wds

from conftest import make_face_shards


def fit_kmeans_vqgan(raw: Path, codes: int = 16, seed: int | None = 0):
    """A tiny `VQGAN` whose ``codes``-entry codebook is fitted by k-means on the 32 px images of ``raw/train-*``."""
    from tokenforge.data.image import Decoder as ImageDecoder
    from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
    from tokenforge.tokenizers.vqgan.model import VQGAN

    if seed is not None:
        torch.manual_seed(seed)
    tokenizer = VQGAN(VectorQuantizer(codes, 8, kmeans_init=True), ch=32, ch_mult=[1, 2, 2], num_res_blocks=1,
                      z_channels=32, attn_last_level=False, attn_mid=False)
    decode = ImageDecoder(32, train=False)
    images = torch.stack([decode(s)["image"] for s in wds.WebDataset(
        sorted(glob.glob(str(raw / "train-*.tar"))), shardshuffle=False)])
    with torch.no_grad():
        tokenizer.train()(images)  # the k-means codebook
    return tokenizer.eval()


def make_token_shards(shared_data: Path, out: Path, codes: int = 16, every: int = 4) -> Path:
    """``out/tokens`` (train and val token shards of every ``every``-th labelled crop); raw shards in ``out/raw``."""
    from tokenforge.data.tokens import encode_shards
    from tokenforge.hub import save_pretrained

    make_face_shards(shared_data, out, every=every)
    save_pretrained(fit_kmeans_vqgan(out / "raw", codes), out / "vqgan")
    encode_shards(str(out / "vqgan"), out / "raw", out / "tokens", image_size=32, device="cpu", progress=False)
    return out / "tokens"
