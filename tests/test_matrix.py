"""The tokenizer x generator matrix (issue 19): every tokenizer's token shards train every generator that reads
their layout, and the generated tokens decode back to files.

Each pair runs the whole chain on real data from ``../shared/data`` (face crops for images, 24 kHz speech for
audio, meshes for 3D): a tiny random-weight tokenizer built from its tiny config -> token shards
(`encode_shards`, the code of ``tokenforge shards encode``) -> a few fit steps of the generator's tiny config
through LightningCLI, whose vocabulary, sequence length and scale list come from the shards' manifest
(`tokenforge.manifest_defaults`; the configs here leave them unset) -> two samples (``generate``) -> the
tokenizer's ``decode`` -> PNG / FLAC / PLY files, read back and compared with what was decoded. The token
shards of a tokenizer are made once per module and shared by its pairs. The README's matrix lists the pairs.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from tokenforge.cli import lightning_cli
from tokenforge.config import build
from tokenforge.data.shards import read_manifest
from tokenforge.hub import save_pretrained
from conftest import make_face_shards

REPO = Path(__file__).resolve().parents[1]
SPEECH = ["activated.flac", "agent-newlocation.flac", "conf-getpin.flac"]
MESHES = ["icosahedron.ply", "3torus.ply", "eight.ply", "oblong.ply"]
UNSET = ("vocab_size", "codebook_size", "seq_len", "layout")  # left to the token shards' manifest

# tokenizer -> (raw data, image size; 0: not an image tokenizer)
TOKENIZERS: dict[str, tuple[str, int]] = {
    "vqgan": ("faces", 32), "vqgan_scales": ("faces", 32), "tokenflow": ("faces", 32), "flextok": ("faces", 16),
    "klvae": ("faces", 16), "wavtokenizer": ("speech", 0), "vat": ("meshes", 0),
}
# (tokenizer, generator): the cells of the README's matrix that this file runs
PAIRS = [("vqgan", "gpt"), ("vqgan_scales", "gpt"), ("tokenflow", "gpt"), ("flextok", "gpt"),
         ("wavtokenizer", "gpt"), ("vat", "gpt"), ("vqgan_scales", "var"), ("tokenflow", "var"), ("vat", "var"),
         ("vqgan", "enat"), ("klvae", "ecar")]
VAR_TINY = {"class_path": "tokenforge.generators.autoregressive.var.VAR",
            "init_args": {"depth": 2, "embed_dim": 64, "num_heads": 4, "num_classes": 2}}


def tiny_config(area: str, method: str) -> dict[str, Any]:
    """``configs/<area>/<method>/tiny.yaml`` as one dict, on top of the ``base.yaml`` files of its area and
    method where they exist (merged as LightningCLI merges several ``--config``)."""
    merged: dict[str, Any] = {}
    for path in (REPO / "configs" / area / "base.yaml", REPO / "configs" / area / method / "base.yaml",
                 REPO / "configs" / area / method / "tiny.yaml"):
        if path.is_file():
            merged = merge(merged, yaml.safe_load(path.read_text()))
    return merged


def merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
    return over


def tiny_tokenizer(name: str) -> torch.nn.Module:
    """The tokenizer of ``name`` with random weights, built from its tiny config (``vqgan_scales``: the tiny
    VQGAN on VAR's multi-scale residual quantizer, the layout of VAR's VQVAE release)."""
    spec = tiny_config("tokenizers", "vqgan" if name == "vqgan_scales" else name)["model"]["init_args"]["model"]
    if name == "vqgan_scales":
        spec["init_args"]["quantizer"] = {
            "class_path": "tokenforge.tokenizers.quantizers.residual.MultiScaleResidualQuantizer",
            "init_args": {"codebook_size": 64, "dim": 8, "scales": [1, 2, 4, 8]}}
    torch.manual_seed(0)
    return build(spec).eval()


def generator_config(generator: str, out: Path) -> Path:
    """The generator's tiny config with the layout sizes left unset, sized for a few CPU steps."""
    config = tiny_config("generators", "autoregressive" if generator in ("gpt", "var") else generator)
    model = config["model"]["init_args"]
    if generator == "var":
        model["model"] = VAR_TINY
    model["model"]["init_args"] = {k: v for k, v in model["model"]["init_args"].items() if k not in UNSET}
    config["trainer"].update(max_steps=3, logger=False, callbacks=None, enable_checkpointing=False,
                             enable_progress_bar=False, limit_val_batches=0, log_every_n_steps=1)
    config["data"]["init_args"].update(val=None, batch_size=8, epoch_samples=16, shuffle_buffer=8)
    path = out / f"{generator}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def raw_shards(kind: str, shared_data: Path, out: Path) -> Path:
    from tokenforge.data.shards import make_shards

    if kind == "faces":
        make_face_shards(shared_data, out / "faces", val_fraction=0.0, every=8)
        return out / "faces" / "raw"
    folder, files = ("speech24k", SPEECH) if kind == "speech" else ("meshes", MESHES)
    listing = out / f"{kind}.csv"
    with open(listing, "w", newline="") as f:
        csv.writer(f).writerows([["path"], *[[str(shared_data / folder / name)] for name in files]])
    options = ({"sample_rate": 24000, "segment_seconds": 0.4, "min_seconds": 0.4} if kind == "speech"
               else {"num_surface": 512, "num_vol": 128, "num_near": 128})
    make_shards("audio" if kind == "speech" else "meshes", listing, out / kind, labels="none", progress=False,
                **options)
    return out / kind


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, shared_data) -> dict[str, Any]:
    """Raw shards made once per module; tokenizers and their token shards are added on first use."""
    return {"root": tmp_path_factory.mktemp("matrix"), "shared": shared_data, "raw": {}, "tokens": {}}


def token_shards(workspace: dict[str, Any], name: str) -> tuple[torch.nn.Module, Path]:
    """(tokenizer, token-shard folder) of ``name``, made on first use and shared by its pairs."""
    from tokenforge.data.tokens import encode_shards

    if name not in workspace["tokens"]:
        kind, size = TOKENIZERS[name]
        root = workspace["root"]
        if kind not in workspace["raw"]:
            workspace["raw"][kind] = raw_shards(kind, workspace["shared"], root)
        tokenizer = tiny_tokenizer(name)
        save_pretrained(tokenizer, root / f"tok_{name}")
        out = root / f"tokens_{name}"
        encode_shards(str(root / f"tok_{name}"), workspace["raw"][kind], out, image_size=size or 256,
                      num_points=256, batch_size=16, device="cpu", progress=False, latents=name == "klvae")
        workspace["tokens"][name] = (tokenizer, out)
    return workspace["tokens"][name]


def fit(config: Path, tokens: Path, run: Path) -> Any:
    """A few steps of ``tokenforge fit`` on ``tokens``; the trained Lightning module."""
    run.mkdir()
    cli = lightning_cli(args=["fit", "--config", str(config), "--data.init_args.train", str(tokens),
                              "--trainer.default_root_dir", str(run)])
    assert cli.trainer.global_step == 3
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    return cli.model


def sample(generator: torch.nn.Module, tokenizer: torch.nn.Module, labelled: bool) -> tuple[Any, Any]:
    """Two generated samples (classes 0 and 1 where the data has labels) and their decoding."""
    condition = torch.tensor([0, 1]) if labelled else None
    rng = torch.Generator().manual_seed(0)
    options: dict[str, Any] = {"generator": rng}
    if hasattr(generator, "quantizer"):  # VAR
        options.update(quantizer=tokenizer.quantizer, cfg=1.0)
    elif hasattr(generator, "scales"):  # E-CAR: continuous latents, Euler steps per stage
        options.update(steps=2)
    elif hasattr(generator, "mask_token_id"):  # ENAT
        options.update(steps=4)
    with torch.no_grad():
        tokens = generator.eval().generate(2, condition, **options)
        return tokens, tokenizer.decode(tokens)


def check_ids(tokens: Any, vocab: int, seq_len: int) -> None:
    ids = tokens.ids
    flat = torch.cat([i.reshape(2, -1) for i in ids], 1) if isinstance(ids, list) else ids.reshape(2, -1)
    assert flat.shape == (2, seq_len) and int(flat.min()) >= 0 and int(flat.max()) < vocab


def write_and_check(data: Any, tokenizer: torch.nn.Module, out: Path, size: int) -> list[Path]:
    """Decoded data -> PNG (images), FLAC (audio) or PLY (meshes), read back and compared with ``data``."""
    out.mkdir()
    if tokenizer.modality == "image":
        from PIL import Image

        assert data.shape == (2, 3, size, size) and torch.isfinite(data).all()
        pixels = data.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
        paths = [out / f"sample_{i}.png" for i in range(2)]
        for path, image in zip(paths, pixels):
            Image.fromarray(image).save(path)
        for path, image in zip(paths, pixels):
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)
        return paths
    if tokenizer.modality == "audio":
        import soundfile as sf

        rate = int(tokenizer.sample_rate)
        assert data.shape == (2, int(0.4 * rate)) and torch.isfinite(data).all()
        paths = [out / f"sample_{i}.flac" for i in range(2)]
        for path, wave in zip(paths, data.clamp(-1, 1).numpy()):
            sf.write(path, wave, rate)
            back, got_rate = sf.read(path, dtype="float32")
            assert got_rate == rate and back.shape == wave.shape and np.abs(back - wave).max() < 1e-3
        return paths
    return write_meshes(data, tokenizer, out)


def write_meshes(planes: torch.Tensor, tokenizer: torch.nn.Module, out: Path, resolution: int = 16) -> list[Path]:
    """Triplanes -> occupancy logits on a grid -> marching cubes at the median logit (random weights put the
    zero level anywhere; the median always has a surface) -> PLY, read back."""
    import trimesh
    from skimage import measure

    axis = torch.linspace(-1, 1, resolution + 1)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)
    paths = []
    for i in range(len(planes)):
        with torch.no_grad():
            volume = tokenizer.occupancy(planes[i:i + 1], grid).reshape((resolution + 1,) * 3).numpy()
        assert np.isfinite(volume).all()
        verts, faces, _, _ = measure.marching_cubes(volume, level=float(np.median(volume)))
        mesh = trimesh.Trimesh(verts / resolution * 2 - 1, faces)
        paths.append(out / f"sample_{i}.ply")
        mesh.export(paths[-1])
        back = trimesh.load(paths[-1])
        assert len(back.faces) == len(faces) > 0 and np.abs(back.vertices).max() <= 1.0 + 1e-5
    return paths


@pytest.mark.parametrize(("tokenizer_name", "generator_name"), PAIRS, ids=[f"{t}->{g}" for t, g in PAIRS])
def test_pair(workspace, tokenizer_name, generator_name, one_thread):
    tokenizer, tokens = token_shards(workspace, tokenizer_name)
    manifest = read_manifest(tokens)
    root = workspace["root"] / f"{tokenizer_name}-{generator_name}"
    root.mkdir()
    module = fit(generator_config(generator_name, root), tokens, root / "run")
    generator = module.model
    if tokenizer_name != "klvae":  # the layout came from the manifest, not from the config
        vocab = getattr(generator, "vocab_size", None) or generator.codebook_size  # ENAT: codebook_size
        assert vocab == tokenizer.vocab_size == manifest["tokenizer"]["vocab_size"]
        assert generator.seq_len == manifest["seq_len"]
    generated, data = sample(generator, tokenizer, labelled=bool(manifest["classes"]))
    if tokenizer_name != "klvae":
        check_ids(generated, tokenizer.vocab_size, manifest["seq_len"])
    else:
        assert tuple(generated.latents.shape) == (2, *manifest["latent_shape"])
    files = write_and_check(data, tokenizer, root / "samples", TOKENIZERS[tokenizer_name][1])
    assert len(files) == 2 and all(f.stat().st_size > 0 for f in files)


def test_manifest_layout_facts(workspace):
    """The manifest records the layout a generator needs; a generator config without sizes takes them."""
    from tokenforge.manifest_defaults import layout_facts

    _, grid = token_shards(workspace, "vqgan")
    _, scales = token_shards(workspace, "tokenflow")
    facts = layout_facts(read_manifest(grid))
    assert facts["vocab_size"] == 256 and facts["seq_len"] == 64 and facts["layout"] == "grid"
    assert read_manifest(grid)["token_shape"] == [8, 8]
    facts = layout_facts(read_manifest(scales))
    assert facts["scale_lengths"] == [1, 4, 16, 64] and facts["seq_len"] == 85 and facts["layout"] == "scales"


def test_config_values_win_over_the_manifest(workspace, tmp_path):
    """Only sizes that no config gives come from the manifest: a given one is kept, even when it equals the
    class default (GPT's vocab_size 16384); shards that are not token shards change nothing."""
    from jsonargparse import Namespace

    from tokenforge.manifest_defaults import fill_from_manifest

    _, tokens = token_shards(workspace, "vqgan")
    cli = lightning_cli(args=["--config", str(generator_config("gpt", tmp_path)), "--data.init_args.train",
                              str(tokens), "--model.init_args.model.init_args.vocab_size", "16384"], run=False)
    gpt = cli.model.model
    assert (gpt.vocab_size, gpt.seq_len, gpt.layout) == (16384, 64, "grid")
    raw = Namespace(data=Namespace(init_args=Namespace(train=str(workspace["raw"]["faces"]))))
    assert fill_from_manifest(None, raw, []) == []
