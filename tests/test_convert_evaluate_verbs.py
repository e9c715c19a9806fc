"""`tokenforge convert` and `tokenforge evaluate` over every method they apply to (ids ``convert-<official>``,
``evaluate-<method>``), through the command line as a user types it.

convert: every registered official release, read from its parity fixture (a tiny diffusers folder for the
KL autoencoder) with ``--official NAME --model PATH --out DIR``, gives a folder that `from_pretrained` rebuilds
with exactly the weights `from_official` gives. evaluate: every tokenizer on raw shards of its modality and every
generator that scores itself (``nll``) on token shards of its tokenizer; models are the tiny configs with random
weights (the verb is under test, not the training), two held-out items each.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tokenforge import hub
from tokenforge.convert import main as convert
from tokenforge.evaluate import main as evaluate
from tokenforge.methods import registry

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# official release -> its parity fixture (file or folder) under ../shared/fixtures; None: built in the test
RELEASES = {"diffusers_vae": None, "enat": "enat", "flextok": "flextok", "linfusion": "linfusion",
            "llamagen": "llamagen", "llamagen_vq": "llamagen_vq_train/state_dict.safetensors", "mage_vqgan": "enat",
            "mar": "mar", "shape2vecset": "shape2vecset", "tokenflow": "tokenflow", "var": "var_msrq",
            "var_msrq": "var_msrq", "var_vqvae": "var_msrq", "wavtokenizer": "wavtokenizer"}

# tokenizer -> image side its tiny config works at (the demo's sizes); audio and mesh tokenizers take their data
IMAGE_SIZE = {"flextok": 16, "klvae": 32, "tokenflow": 32, "vqgan": 32}
# generator -> the tokenizer whose shards it learns (and whether those are latents); generators without a held-out
# loss (LinFusion: text-to-image distillation, scored by its demo stage) are not evaluate's
GENERATORS = {"autoregressive": ("vqgan", False), "enat": ("vqgan", False), "ecar": ("klvae", True)}
NOT_EVALUATED = {"linfusion": "no held-out loss: a distilled attention replacement, scored against its teacher"}


def test_every_release_and_method_has_a_row() -> None:
    assert set(RELEASES) == set(hub.official_methods())
    methods = registry()
    tokenizers = {name for name, m in methods.items() if m.kind == "tokenizer"}
    generators = {name for name, m in methods.items() if m.kind == "generator"}
    assert tokenizers <= set(IMAGE_SIZE) | {"wavtokenizer", "vat"}
    assert generators == set(GENERATORS) | set(NOT_EVALUATED)


def _tiny_diffusers_vae(folder: Path) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  block_out_channels=(32, 32), layers_per_block=1, latent_channels=4,
                  norm_num_groups=8).save_pretrained(folder / "vae")
    return folder


@pytest.mark.parametrize("release", sorted(RELEASES), ids=lambda r: f"convert-{r}")
def test_convert_writes_what_from_official_loads(release: str, fixtures_dir: Path, tmp_path: Path) -> None:
    source = fixtures_dir / RELEASES[release] if RELEASES[release] else _tiny_diffusers_vae(tmp_path / "release")
    out = tmp_path / "converted"
    assert convert(["--official", release, "--model", str(source), "--out", str(out)]) == 0
    expected = hub.from_official(release, source).state_dict()
    restored = hub.from_pretrained(out).state_dict()
    assert expected.keys() == restored.keys() and len(expected) > 0
    assert all(torch.equal(expected[k], restored[k]) for k in expected)
    again = tmp_path / "again"  # a converted folder is a --model like any other: convert copies it exactly
    assert convert(["--model", str(out), "--out", str(again)]) == 0
    assert json.loads((again / "config.json").read_text())["class_path"] == \
        json.loads((out / "config.json").read_text())["class_path"]


def test_convert_refuses_mixed_or_missing_arguments(tmp_path: Path, fixtures_dir: Path) -> None:
    from tokenforge.errors import UsageError

    with pytest.raises(SystemExit):
        convert(["--official", "mar"])  # no --model / --out
    with pytest.raises(SystemExit):
        convert(["mar", str(fixtures_dir / "mar"), str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    with pytest.raises(UsageError, match="--official"):
        convert(["--model", str(fixtures_dir / "mar"), "--out", str(tmp_path / "c"), "--trust-pickle"])
    with pytest.raises(UsageError, match="no official format"):
        convert(["--official", "no_such_release", "--model", str(fixtures_dir / "mar"), "--out", str(tmp_path / "d")])
    assert not any((tmp_path / name).exists() for name in "abcd")


# ----------------------------------------------------------------------------- evaluate


def _tiny(method: str, tokens: Path | None = None, tmp: Path | None = None) -> Path:
    """The method's tiny config with random weights, saved as a folder; a generator sized from ``tokens``' manifest
    (as `tokenforge fit` sizes it)."""
    from tokenforge.cli import lightning_cli
    from tokenforge.config_models import fit_args

    area = "tokenizers" if registry()[method].kind == "tokenizer" else "generators"
    extra = ["--data.init_args.train", str(tokens)] if tokens else []
    cli = lightning_cli(args=[*fit_args(CONFIGS / area / method / "tiny.yaml"), *extra, "--trainer.logger", "false",
                              "--trainer.default_root_dir", str(tmp)], run=False)
    return hub.save_pretrained(cli.model.model, tmp / f"{method}_model")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """Raw shards of photos, speech and meshes, and the labelled faces, all small."""
    from tokenforge.data.shards import make_shards
    from tokenforge.demo_stages import make_face_shards

    root = tmp_path_factory.mktemp("verbs")
    photos = root / "photos_src"
    photos.mkdir()
    for path in sorted((shared_data / "images").glob("*.png"))[:4]:
        shutil.copy(path, photos / path.name)
    make_shards("images", photos, root / "photos", val_fraction=0.5, format="png", progress=False, labels="none")
    speech = root / "speech_src"
    speech.mkdir()
    for path in sorted((shared_data / "speech24k").glob("*.flac"))[:4]:
        shutil.copy(path, speech / path.name)
    make_shards("audio", speech, root / "speech", val_fraction=0.5, progress=False, labels="none")
    meshes = root / "meshes_src"
    meshes.mkdir()
    for name in ("icosahedron", "3torus", "eight", "sphere966"):
        shutil.copy(shared_data / "meshes" / f"{name}.ply", meshes / f"{name}.ply")
    make_shards("meshes", meshes, root / "meshes", shard_size=2, val_fraction=0.5, progress=False, num_surface=512,
                num_vol=512, num_near=512, labels="none")
    make_face_shards(shared_data, root / "faces", val_fraction=0.5, every=20)
    return {"root": root, "image": root / "photos", "audio": root / "speech", "mesh": root / "meshes",
            "faces": root / "faces" / "raw"}


def _metrics(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["n_items"] == 2
    return metrics


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.parametrize("method", sorted(m for m, d in registry().items() if d.kind == "tokenizer"),
                         ids=lambda m: f"evaluate-{m}")
def test_evaluate_scores_every_tokenizer_by_modality(method: str, data: dict[str, Path], tmp_path: Path) -> None:
    modality = registry()[method].modality
    model = _tiny(method, tmp=tmp_path)
    options = {"image": ["--image-size", str(IMAGE_SIZE.get(method, 32))], "mesh": ["--resolution", "16"]}
    out = tmp_path / "eval"
    assert evaluate(["--model", str(model), "--shards", str(data[modality]), "--out", str(out), "--device", "cpu",
                     "--max-items", "2", "--batch-size", "2", "--no-progress", *options.get(modality, [])]) == 0
    metrics = _metrics(out)
    assert metrics["protocol"]["modality"] == modality and metrics["protocol"]["kind"] == "tokenizer"
    headline = {"image": ("psnr_db", "mean"), "audio": ("mel_distance", "mean"), "mesh": ("iou", "mean")}[modality]
    assert _finite(metrics[headline[0]][headline[1]])
    if modality == "mesh":
        assert 0 <= metrics["iou"]["mean"] <= 1


@pytest.fixture(scope="module")
def token_shards(data: dict[str, Path]) -> dict[str, Path]:
    """The faces encoded by each generator's tokenizer (tiny config, random weights): ids or latents."""
    from tokenforge.data.cli import main as shards

    found = {}
    for tokenizer, latents in sorted(set(GENERATORS.values())):
        model = _tiny(tokenizer, tmp=data["root"])
        out = data["root"] / f"tokens_{tokenizer}"
        size, kind = ("16", ["--latents"]) if latents else ("32", [])
        assert shards(["encode", "--tokenizer", str(model), str(data["faces"]), str(out), "--image-size", size,
                       "--device", "cpu", "--no-progress", *kind]) == 0
        found[tokenizer] = out
    return found


@pytest.mark.parametrize("method", sorted(GENERATORS), ids=lambda m: f"evaluate-{m}")
def test_evaluate_scores_every_generator_with_its_nll(method: str, token_shards: dict[str, Path],
                                                      tmp_path: Path) -> None:
    tokens = token_shards[GENERATORS[method][0]]
    model = _tiny(method, tokens=tokens, tmp=tmp_path)
    out = tmp_path / "eval"
    assert evaluate(["--model", str(model), "--shards", str(tokens), "--out", str(out), "--device", "cpu",
                     "--max-items", "2", "--batch-size", "2", "--no-progress"]) == 0
    metrics = _metrics(out)
    assert metrics["protocol"]["kind"] == "generator" and metrics["protocol"]["tokens"] > 0
    key = "loss" if GENERATORS[method][1] else "nll_nats_per_token"
    assert _finite(metrics[key]) and metrics[key] > 0


def test_evaluate_takes_an_official_release(data: dict[str, Path], fixtures_dir: Path, tmp_path: Path) -> None:
    """``--official NAME --model PATH`` as every verb: the release's fixture weights scored on held-out speech."""
    out = tmp_path / "eval"
    assert evaluate(["--official", "wavtokenizer", "--model", str(fixtures_dir / "wavtokenizer"), "--shards",
                     str(data["audio"]), "--out", str(out), "--device", "cpu", "--max-items", "2",
                     "--no-progress"]) == 0
    assert _finite(_metrics(out)["mel_distance"]["mean"])
