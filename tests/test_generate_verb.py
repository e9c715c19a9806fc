"""`tokenforge generate` over every generator: tiny random-weight models, `Pipeline(tokenizer, generator)`, files
of the tokenizer's modality; method options come from the generator's method and another method's are refused.

Each case runs through `tokenforge.cli.main` in-process on models saved with `save_pretrained` (LinFusion: its
released folder layout, on a tiny Stable Diffusion folder saved with diffusers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tokenforge import cli
from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.autoregressive.var import VAR
from tokenforge.generators.base import Pipeline
from tokenforge.generators.ecar.model import ECAR
from tokenforge.generators.enat.model import ENAT
from tokenforge.hub import from_official, from_pretrained, save_pretrained
from tokenforge.tokenizers.klvae.model import KLAutoencoder
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.vqgan.model import VQGAN

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> dict[str, str]:
    """Tiny tokenizers and generators saved as folders (VAR decodes with the fixture's official VQVAE)."""
    root = tmp_path_factory.mktemp("generate_verb")
    torch.manual_seed(0)
    save_pretrained(VQGAN(VectorQuantizer(16, 8), ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=32,
                          attn_last_level=False, attn_mid=False).eval(), root / "vq")  # 8 px images <-> 4x4 ids
    save_pretrained(GPT(vocab_size=16, seq_len=16, dim=32, depth=1, num_heads=2, num_classes=3, multiple_of=32),
                    root / "gpt")
    save_pretrained(VAR(vocab_size=64, cvae=8, patch_nums=[1, 2, 3, 4, 5, 6, 8], depth=1, embed_dim=32, num_heads=2,
                        num_classes=3), root / "var")
    save_pretrained(ENAT(seq_len=16, hidden_size=32, num_heads=4, enc_depth=1, dec_depth=1, codebook_size=16,
                         num_classes=3), root / "enat")
    save_pretrained(KLAutoencoder([16, 16], 1, 4, 8, scaling_factor=1.0, mid_block_add_attention=False).eval(),
                    root / "kl")  # 16 px images <-> 4x8x8 latents
    save_pretrained(ECAR(latent_channels=4, scales=[2, 4, 8], dim=32, depth=1, num_heads=2, num_classes=3,
                         head_width=32, head_depth=1), root / "ecar")
    return {"root": str(root), "vq": str(root / "vq"), "gpt": str(root / "gpt"), "var": str(root / "var"),
            "enat": str(root / "enat"), "kl": str(root / "kl"), "ecar": str(root / "ecar"),
            "var_vqvae": f"official:var_vqvae:{fixtures_dir / 'var_msrq'}"}


@pytest.fixture(scope="module")
def stable_diffusion(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny random Stable Diffusion folder (no tokenizer: prompts are bytes) and LinFusion's released layout."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from tokenforge.generators.linfusion.components import tiny_components
    from tokenforge.generators.linfusion.linfusion import LinFusion, default_modules_list

    root = tmp_path_factory.mktemp("generate_sd")
    tiny = yaml.safe_load((REPO / "configs/generators/linfusion/tiny.yaml").read_text())["model"]["init_args"]["tiny"]
    parts = tiny_components(**tiny)
    StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=None, unet=parts.unet,
                            scheduler=DDIMScheduler.from_config(parts.scheduler.config), safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(root / "base")
    LinFusion(default_modules_list(parts.unet)).save_official(root / "linfusion")
    return {"base": str(root / "base"), "linfusion": str(root / "linfusion")}


def generate(argv: list[str], capfd: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli.main(["--quiet", "generate", *argv])
    out, err = capfd.readouterr()
    return code, out, err


def pngs(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("sample_*.png"))]


# test id (generate-<method>[-model]) -> (generator key, tokenizer key, method options, image side)
CASES = {
    "generate-autoregressive": ("gpt", "vq", ["--top-k", "8", "--temperature", "0.9", "--cfg", "2"], 8),
    "generate-autoregressive-var": ("var", "var_vqvae", ["--cfg", "1.5", "--top-k", "20"], 16),
    "generate-enat": ("enat", "vq", ["--steps", "3", "--no-reuse", "--cfg", "1.5"], 8),
    "generate-ecar": ("ecar", "kl", ["--stages", "3", "--steps", "2", "1", "2", "--cfg", "2"], 16),
}
OWN_WAY = ("generate-linfusion",)  # test_generate_linfusion_on_a_local_stable_diffusion_folder


def test_the_rows_cover_every_installed_generator() -> None:
    from tokenforge.methods import registry

    covered = {case.split("-")[1] for case in [*CASES, *OWN_WAY]}
    assert covered == {name for name, m in registry().items() if m.kind == "generator"}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_generate_writes_decoded_samples(case, models, tmp_path, capfd) -> None:
    generator, tokenizer, options, side = CASES[case]
    common = ["--model", models[generator], "--tokenizer", models[tokenizer], "--n", "3", "--batch-size", "2",
              "--class", "0", "2", "--seed", "1", "--device", "cpu", *options]
    code, out, err = generate([*common, "--out", str(tmp_path / "a")], capfd)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n"] == 3 and summary["labels"] == [0, 2, 0]
    images = pngs(tmp_path / "a")
    assert len(images) == 3 and all(i.shape == (side, side, 3) for i in images)
    grid = np.asarray(Image.open(tmp_path / "a" / "grid.png"))
    assert grid.shape == (2 * side, 2 * side, 3)  # 3 samples in a 2-wide grid
    codes = np.load(tmp_path / "a" / ("latents.npy" if case == "generate-ecar" else "ids.npy"))
    assert len(codes) == 3
    assert json.loads((tmp_path / "a" / "labels.json").read_text()) == [0, 2, 0]
    code, _, err = generate([*common, "--out", str(tmp_path / "b")], capfd)  # seeded: the same files again
    assert code == 0, err
    assert all(np.array_equal(a, b) for a, b in zip(images, pngs(tmp_path / "b")))


@pytest.mark.parametrize("case", OWN_WAY, ids=list(OWN_WAY))
def test_generate_linfusion_on_a_local_stable_diffusion_folder(case, stable_diffusion, tmp_path, capfd) -> None:
    common = ["--official", "linfusion", "--model", stable_diffusion["linfusion"], "--base", stable_diffusion["base"],
              "--prompt", "a red lighthouse", "--height", "32", "--width", "24", "--steps", "1", "--n", "2",
              "--device", "cpu"]
    code, out, err = generate([*common, "--out", str(tmp_path / "a")], capfd)
    assert code == 0, err
    images = pngs(tmp_path / "a")
    assert len(images) == 2 and all(i.shape == (32, 24, 3) for i in images)
    assert np.load(tmp_path / "a" / "latents.npy").shape == (2, 4, 16, 12)  # 2x down: the tiny VAE
    assert images[0].std() > 0 and not np.array_equal(images[0], images[1])
    code, _, err = generate([*common, "--ladder", "0.5", "--steps", "2", "--n", "1", "--out", str(tmp_path / "b")],
                            capfd)
    assert code == 0, err
    assert pngs(tmp_path / "b")[0].shape == (64, 48, 3)  # the SDEdit ladder doubled the size once


def test_linfusion_is_one_generator_contract(stable_diffusion) -> None:
    """generate -> Tokens(latents) for the base's VAE; nll = seeded denoising loss on held-out latents."""
    from tokenforge.generators.linfusion.generate import load_pipeline

    lin = from_official("linfusion", stable_diffusion["linfusion"])
    load_pipeline(stable_diffusion["base"], lin)
    vae = from_official("diffusers_vae", Path(stable_diffusion["base"]) / "vae")
    tokens, images = Pipeline(vae, lin).sample(2, prompt="a cat", height=16, width=16, steps=1, with_tokens=True)
    assert tokens.latents.shape == (2, 4, 8, 8) and images.shape == (2, 3, 16, 16)
    batch = {"latents": vae.encode(images).latents, "txt": ["a cat", "a dog"]}
    total, count = lin.nll(batch, seed=3)
    assert count == 2 and float(total) > 0
    assert float(lin.nll(batch, seed=3)[0]) == float(total)  # seeded noise and timesteps
    assert lin.nll_metric == "loss"


@pytest.fixture(scope="module")
def audio_and_mesh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny WavTokenizer (12 frames = 3840 samples) and a tiny VAT (scales 1..16), each with a GPT over its ids;
    the random VAT's occupancy bias is centred on the median logit of random token sets, so shapes have a surface."""
    from tokenforge.tokenizers.vat.model import VAT
    from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer
    from tokenforge.tokenizers.wavtokenizer.seanet import SEANetEncoder
    from tokenforge.tokenizers.wavtokenizer.vocos import ISTFTHead, VocosBackbone

    root = tmp_path_factory.mktemp("generate_av")
    torch.manual_seed(0)
    save_pretrained(WavTokenizer(SEANetEncoder(dimension=32, n_filters=4, ratios=[8, 5, 4, 2], lstm=1),
                                 VectorQuantizer(64, 32), VocosBackbone(input_channels=32, dim=64, intermediate_dim=128,
                                                                        num_layers=2),
                                 ISTFTHead(dim=64, n_fft=1280, hop_length=320)).eval(), root / "wav")
    save_pretrained(GPT(vocab_size=64, seq_len=12, layout="sequence", dim=32, depth=1, num_heads=2, num_classes=0,
                        multiple_of=32), root / "gpt_audio")
    vat = VAT(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, num_latents=16, latent_dim=8, codebook_size=64,
              scales=[1, 2, 4, 8, 16], triplane_resolution=8, triplane_channels=16, triplane_upsample=1,
              mlp_hidden=32).eval()
    with torch.no_grad():
        ids = [torch.randint(0, 64, (8, s), generator=torch.Generator().manual_seed(s)) for s in vat.scales]
        logits = vat.occupancy(vat.decode(ids), torch.rand(8, 512, 3) * 2 - 1)
        vat.triplane.mlp[-1].bias -= logits.median()
    save_pretrained(vat, root / "vat")
    save_pretrained(GPT(vocab_size=64, seq_len=31, layout="scales", scale_lengths=[1, 2, 4, 8, 16], dim=32, depth=1,
                        num_heads=2, num_classes=0, multiple_of=32), root / "gpt_mesh")
    return {k: str(root / k) for k in ("wav", "gpt_audio", "vat", "gpt_mesh")}


def test_generate_writes_flac_for_audio_and_ply_for_meshes(audio_and_mesh, tmp_path, capfd) -> None:
    import soundfile as sf
    import trimesh

    code, out, err = generate(["--model", audio_and_mesh["gpt_audio"], "--tokenizer", audio_and_mesh["wav"], "--n", "3",
                               "--top-k", "16", "--out", str(tmp_path / "audio")], capfd)
    assert code == 0, err
    flacs = sorted((tmp_path / "audio").glob("sample_*.flac"))
    assert len(flacs) == 3 and not list((tmp_path / "audio").glob("*.png"))
    wave, rate = sf.read(flacs[0])
    assert rate == 24000 and wave.shape == (12 * 320,) and np.abs(wave).max() > 0
    code, out, err = generate(["--model", audio_and_mesh["gpt_mesh"], "--tokenizer", audio_and_mesh["vat"], "--n", "2",
                               "--resolution", "16", "--out", str(tmp_path / "mesh")], capfd)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    plys = sorted((tmp_path / "mesh").glob("sample_*.ply"))
    assert len(plys) + len(summary["empty"]) == 2 and plys, err  # a field without surface is a result, said so
    assert err.count("empty: ") == len(summary["empty"])
    mesh = trimesh.load(plys[0])
    assert len(mesh.faces) > 0 and np.abs(mesh.vertices).max() <= 1.1  # the grid spans [-1, 1]^3 (+ a closing pad)
    assert np.load(tmp_path / "mesh" / "ids.npy").shape == (2, 31)


def test_help_with_a_model_shows_its_method_options(models, capfd) -> None:
    assert cli.main(["generate", "--model", models["enat"], "--help"]) == 0
    text = capfd.readouterr().out
    assert "enat options" in text and "--no-reuse" in text and "--top-k" not in text


@pytest.mark.parametrize("flag", ["--steps", "--no-reuse"])
def test_another_methods_options_are_refused_in_one_line(flag, models, tmp_path, capfd) -> None:
    code, _, err = generate(["--model", models["gpt"], "--tokenizer", models["vq"], flag, *(["3"] if flag ==
                            "--steps" else []), "--out", str(tmp_path / "o")], capfd)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenforge generate: "), err
    assert f"{flag} is an option of " in lines[0] and "enat" in lines[0] and "autoregressive's" in lines[0]
    assert not (tmp_path / "o").exists()


def test_a_tokenizer_as_model_and_classes_out_of_range_are_one_line(models, tmp_path, capfd) -> None:
    code, _, err = generate(["--model", models["vq"], "--tokenizer", models["vq"], "--out", str(tmp_path / "o")], capfd)
    assert code == 2 and "is a tokenizer, not a generator" in err and len(err.strip().splitlines()) == 1
    code, _, err = generate(["--model", models["gpt"], "--tokenizer", models["vq"], "--class", "3",
                             "--out", str(tmp_path / "o")], capfd)
    assert code == 2 and "--class [3] outside [0, 2]" in err


def test_the_tokenizer_comes_from_the_fit_checkpoint_when_not_given(models, tmp_path) -> None:
    from tokenforge.generate import checkpoint_tokenizer

    torch.save({"hyper_parameters": {"tokenizer": models["var_vqvae"], "lr": 1e-3}, "state_dict": {}},
               tmp_path / "var.ckpt")
    torch.save({"hyper_parameters": {"lr": 1e-3}, "state_dict": {}}, tmp_path / "gpt.ckpt")
    assert checkpoint_tokenizer(str(tmp_path / "var.ckpt")) == models["var_vqvae"]
    assert checkpoint_tokenizer(str(tmp_path / "gpt.ckpt")) is None
    assert checkpoint_tokenizer(models["gpt"]) is None  # a save_pretrained folder names none
