"""Every verb over every method it applies to: the method x verb table of issue 19, one test id per cell
(``reconstruct-flextok``, ``encode-wavtokenizer``...), on tiny random-weight models and real bundled data.

Tokenizers run ``encode``, ``decode`` and ``reconstruct`` through ``tokenforge <verb>``: ``encode`` writes one
codes file per input whose ids are the tokenizer's own; ``decode`` of those files writes exactly what
``reconstruct`` writes (bit for bit, for images, audio and meshes; FlexTok and TokenFlow reconstruct with hooks
of their own, whose outputs are checked for what they are). Generator rows (``generate-<method>``) join the
table through `ROWS` (see `generator_rows`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from tokenforge import codes_file, hub
from tokenforge.cli import main as tokenforge_main
from tokenforge.config import build
from tokenforge.methods import registry
from tokenforge.model_spec import fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

VQ = "tokenforge.tokenizers.quantizers.vq.VectorQuantizer"
IMAGES = ("coffee.png", "camera.png")  # a colour photo and a grey one
MESHES = ("bunny00.ply",)
SPEECH = 1  # the first N clips of speech24k


def _vqgan(codebook_size: int = 16) -> Any:
    return build({"class_path": "tokenforge.tokenizers.vqgan.model.VQGAN", "init_args": {
        "quantizer": {"class_path": VQ, "init_args": {"codebook_size": codebook_size, "dim": 4}}, "ch": 32, "ch_mult": [1, 2],
        "num_res_blocks": 1, "z_channels": 4, "attn_last_level": False, "attn_mid": False}})


def _tokenflow() -> Any:
    pkg = "tokenforge.tokenizers.tokenflow"
    return build({"class_path": f"{pkg}.model.TokenFlow", "init_args": {
        "semantic_encoder": {"class_path": f"{pkg}.towers.SiglipVisionTower", "init_args": {
            "image_size": 28, "patch_size": 14, "width": 16, "layers": 2, "heads": 2, "mlp_dim": 32}},
        "quantizer": {"class_path": f"{pkg}.quantizer.DualCodebookQuantizer", "init_args": {
            "codebook_size": 16, "semantic_dim": 4, "pixel_dim": 4, "scales": [1, 2]}},
        "semantic_decoder": {"class_path": f"{pkg}.semantic.SemanticDecoder", "init_args": {
            "in_chans": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "img_size": 2}},
        "decoder_out_dim": 16, "semantic_scaling": "siglip", "ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1,
        "z_channels": 32}})


def _flextok() -> Any:
    from test_flextok_training import tiny  # tests/ is on sys.path

    return tiny()


def _klvae() -> Any:
    return build({"class_path": "tokenforge.tokenizers.klvae.model.KLAutoencoder", "init_args": {
        "block_out_channels": [32, 32], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8,
        "scaling_factor": 0.5, "mid_block_add_attention": False}})


def _wavtokenizer() -> Any:
    pkg = "tokenforge.tokenizers.wavtokenizer"
    return build({"class_path": f"{pkg}.model.WavTokenizer", "init_args": {
        "encoder": {"class_path": f"{pkg}.seanet.SEANetEncoder",
                    "init_args": {"dimension": 8, "n_filters": 2, "ratios": [4, 2], "lstm": 1}},
        "quantizer": {"class_path": VQ, "init_args": {"codebook_size": 16, "dim": 8}},
        "backbone": {"class_path": f"{pkg}.vocos.VocosBackbone", "init_args": {
            "input_channels": 8, "dim": 32, "intermediate_dim": 48, "num_layers": 1, "num_groups": 8}},
        "head": {"class_path": f"{pkg}.vocos.ISTFTHead", "init_args": {"dim": 32, "n_fft": 32, "hop_length": 8}}}})


def _vat(shared_data: Path) -> Any:
    """A random VAT whose field crosses 0 around the bunny: the output bias moves the median grid logit to 0, so
    marching cubes has a surface to find (an untrained field is otherwise all outside)."""
    from tokenforge.mesh_fields import logit_grid
    from tokenforge.mesh_files import encoder_input, load_surface

    model = build({"class_path": "tokenforge.tokenizers.vat.model.VAT", "init_args": {
        "dim": 16, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "num_latents": 4, "latent_dim": 4,
        "codebook_size": 16, "scales": [1, 2, 4], "triplane_resolution": 4, "triplane_channels": 4,
        "triplane_upsample": 1, "mlp_hidden": 8}}).eval()
    _, points = load_surface(shared_data / "meshes" / MESHES[0], 256)
    with torch.no_grad():
        planes = model.decode(model.encode(encoder_input(model, points)))
        median = logit_grid(lambda q: model.occupancy(planes, q), 16).median()
        model.triplane.mlp[-1].bias -= median
    return model


TOKENIZERS: dict[str, Callable[..., Any]] = {
    "vqgan": _vqgan, "tokenflow": _tokenflow, "flextok": _flextok, "klvae": _klvae, "wavtokenizer": _wavtokenizer,
    "vat": _vat,
}
ARGS = {  # per method: the common options every verb of the row takes (sizes the tiny model can handle)
    "vqgan": ["--size", "32"], "tokenflow": ["--size", "28"], "flextok": ["--size", "16"], "klvae": ["--size", "32"],
    "wavtokenizer": [], "vat": ["--points", "256", "--resolution", "16", "--batch-size", "1"],
}
OWN = {  # the method's own reconstruct options (`Method.options`)
    "flextok": ["--tokens", "1,8", "--steps", "2"], "vat": ["--eval-points", "2000"], "wavtokenizer": ["--no-metrics"],
}


def tokenizer_rows() -> list[Any]:
    return [pytest.param(verb, name, id=f"{verb}-{name}") for name in TOKENIZERS
            for verb in ("encode", "decode", "reconstruct")]


def generator_rows() -> list[Any]:
    """``generate-<method>`` rows: added by the generate verb's tests (same table, same ids)."""
    return []


ROWS = tokenizer_rows() + generator_rows()


def test_the_table_covers_every_installed_tokenizer() -> None:
    assert set(TOKENIZERS) == {n for n, m in registry().items() if m.kind == "tokenizer"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Any]:
    """Per method (built on first use): the saved model and its inputs (real bundled files)."""
    root = tmp_path_factory.mktemp("verbs")
    cache: dict[str, Any] = {}

    def get(name: str) -> dict[str, Any]:
        if name not in cache:
            torch.manual_seed(0)
            model = TOKENIZERS[name](shared_data) if name == "vat" else TOKENIZERS[name]()
            folder = hub.save_pretrained(model.eval(), root / name / "model")
            modality = model.modality
            inputs = ([shared_data / "images" / n for n in IMAGES] if modality == "image" else
                      sorted((shared_data / "speech24k").glob("*.flac"))[:SPEECH] if modality == "audio" else
                      [shared_data / "meshes" / n for n in MESHES])
            cache[name] = {"model": folder, "module": hub.from_pretrained(folder), "inputs": inputs,
                           "root": root / name, "runs": {}}
        return cache[name]

    return {"get": get}


def run(space: dict[str, Any], verb: str, name: str) -> Path:
    """``tokenforge <verb>`` once per method (decode reads encode's output); returns the output folder."""
    if verb in space["runs"]:
        return space["runs"][verb]
    out = space["root"] / verb
    sources = [space["runs"].get("encode") or run(space, "encode", name)] if verb == "decode" else space["inputs"]
    argv = [verb, "--model", str(space["model"]), *map(str, sources), "--out", str(out), "--device", "cpu",
            *ARGS[name], *(OWN.get(name, []) if verb == "reconstruct" else [])]
    assert tokenforge_main(argv) == 0, argv
    space["runs"][verb] = out
    return out


@pytest.mark.parametrize(("verb", "name"), ROWS)
def test_verb(verb: str, name: str, workspace: dict[str, Any]) -> None:
    space = workspace["get"](name)
    {"encode": check_encode, "decode": check_decode, "reconstruct": check_reconstruct}[verb](space, name)


def check_encode(space: dict[str, Any], name: str) -> None:
    """One codes file per input: the model's own ids (encoded again here), and a header that names the model."""
    from tokenforge import tokenizer_verbs
    from tokenforge.image_files import load_image

    out, model = run(space, "encode", name), space["module"]
    for path in space["inputs"]:
        tokens, header = codes_file.read(out / f"{path.stem}.codes.npz")
        assert header["format"] == "tokenforge.codes" and header["format_version"] == codes_file.FORMAT_VERSION
        assert (header["method"], header["modality"], header["layout"]) == (name, model.modality, model.token_layout)
        assert header["fingerprint"] == fingerprint(model) and header["tokenforge_version"] == hub.version()
        assert header["source"]["file"] == path.name
        with torch.no_grad():
            if model.modality == "image":
                size = int(ARGS[name][1])
                assert header["input"]["size"] == [size, size]
                again = model.encode(load_image(path, size)[None])
            elif model.modality == "audio":
                assert header["input"]["sample_rate"] == model.sample_rate
                assert header["source"]["source_rate"] == sf.info(path).samplerate
                again = tokenizer_verbs.AudioFiles.encode(model, [tokenizer_verbs.AudioFiles.read(
                    path, model, _audio_args())[0]], [{}], _audio_args())[0]
            else:
                from tokenforge.mesh_files import encoder_input, load_surface

                assert header["input"]["points"] == 256
                again = model.encode(encoder_input(model, load_surface(path, 256)[1]))
        expected = codes_file.portable(again)
        if isinstance(expected.ids, list):
            assert [t.tolist() for t in tokens.ids] == [t.tolist() for t in expected.ids]
        elif expected.latents is not None:  # continuous latents: kept as they are (float32)
            assert tokens.latents.shape == expected.latents.shape
            assert torch.allclose(tokens.latents, expected.latents, atol=1e-5)
        else:
            assert torch.equal(tokens.ids, expected.ids)


def _audio_args() -> Any:
    import argparse

    return argparse.Namespace(chunk_seconds=30.0, context_seconds=1.0, bf16=False)


def check_decode(space: dict[str, Any], name: str) -> None:
    """Decoding the codes files gives what reconstruct gives, bit for bit (generic path and VAT's hook)."""
    out, model = run(space, "decode", name), space["module"]
    rec = run(space, "reconstruct", name)
    for path in space["inputs"]:
        if model.modality == "image":
            decoded = np.asarray(Image.open(out / f"{path.stem}.png"))
            size = int(ARGS[name][1])
            assert decoded.shape == (size, size, 3)
            if name != "flextok":  # FlexTok's hook writes coarse-to-fine strips: input | k=1 | k=8
                assert np.array_equal(decoded, np.asarray(Image.open(rec / f"{path.stem}.png"))[:, size:])
            else:
                assert Image.open(rec / f"{path.stem}.png").size == (3 * size, size)
        elif model.modality == "audio":
            decoded, rate = sf.read(out / f"{path.stem}.flac")
            assert rate == model.sample_rate and len(decoded) == sf.info(path).frames  # same rate here
            assert np.array_equal(decoded, sf.read(rec / f"{path.stem}.flac")[0])
        else:
            import trimesh

            decoded, reconstructed = (trimesh.load(folder / f"{path.stem}.ply") for folder in (out, rec))
            assert len(decoded.faces) > 0
            assert np.array_equal(decoded.vertices, reconstructed.vertices)
            assert np.array_equal(decoded.faces, reconstructed.faces)


def check_reconstruct(space: dict[str, Any], name: str) -> None:
    """Outputs for every input and a metrics.json whose numbers are finite."""
    out = run(space, "reconstruct", name)
    metrics = json.loads((out / "metrics.json").read_text())
    names = {p.name for p in space["inputs"]}
    if name == "vat":  # VAT's hook: one entry per shape and number of scales kept, with its compactness numbers
        assert {e["file"] for e in metrics} == names and all(e["tokens"] == 1 + 2 + 4 for e in metrics)
        assert all(0 <= e["iou"] <= 1 and e["bytes"] == 4 for e in metrics)  # 7 ids x 4 bits, rounded up
    elif name == "flextok":
        assert set(metrics["files"]) == names and set(metrics["mean"]) == {"psnr_k1", "psnr_k8"}
    elif name == "tokenflow":
        assert set(metrics["files"]) == names and np.load(out / "ids.npy").shape == (2, 1 + 4)
    else:
        assert set(metrics["files"]) == names and metrics["method"] == name and not metrics["skipped"]
        assert all(np.isfinite(v) for e in metrics["files"].values() for v in e.values() if isinstance(v, float))
    suffix = {"image": ".png", "audio": ".flac", "mesh": ".ply"}[space["module"].modality]
    assert all((out / f"{p.stem}{suffix}").is_file() for p in space["inputs"])


def test_decode_refuses_another_models_codes_in_one_line(workspace: dict[str, Any], tmp_path: Path,
                                                         capfd) -> None:
    space = workspace["get"]("vqgan")
    codes = run(space, "encode", "vqgan")
    torch.manual_seed(1)
    other = hub.save_pretrained(_vqgan(codebook_size=32), tmp_path / "other")  # another configuration
    one = codes / f"{Path(IMAGES[0]).stem}.codes.npz"
    code = tokenforge_main(["decode", "--model", str(other), str(one), "--out", str(tmp_path / "o"), "--size", "32"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fingerprint mismatch" in err[0] and "tokenforge decode" in err[0]


def test_a_mesh_field_without_surface_is_a_result_not_a_skip(workspace: dict[str, Any], tmp_path: Path,
                                                            capfd) -> None:
    space = workspace["get"]("vat")
    codes = run(space, "encode", "vat")
    model = hub.from_pretrained(space["model"])
    with torch.no_grad():
        model.triplane.mlp[-1].bias -= 1e4  # every logit far below 0: the field is empty everywhere
    outside = hub.save_pretrained(model, tmp_path / "outside")  # same configuration: the codes are its own
    capfd.readouterr()
    code = tokenforge_main(["decode", "--model", str(outside), str(codes), "--out", str(tmp_path / "o"),
                            *ARGS["vat"], "--device", "cpu"])
    out, err = capfd.readouterr()
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["empty"] == len(MESHES)
    assert [line.split(": ")[1] for line in err.splitlines() if line.startswith("empty: ")] == \
        [f"{Path(n).stem}.codes.npz" for n in MESHES]
    assert not list((tmp_path / "o").glob("*.ply"))
