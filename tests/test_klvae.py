"""KLAutoencoder: diffusers folders load exactly, encode/decode scale latents, the KL loop trains on real images."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from test_vqgan import load_images  # tests/ is on sys.path
from torch.utils.data import DataLoader

from tokenforge import hub
from tokenforge.tokenizers.klvae import KLAutoencoder
from tokenforge.tokenizers.klvae.module import KLAutoencoderModule
from tokenforge.config_models import fit_args

TINY = {"block_out_channels": [32, 32], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8,
        "scaling_factor": 0.5, "mid_block_add_attention": False}


@pytest.fixture(scope="module")
def images(shared_data: Path) -> torch.Tensor:
    return load_images(shared_data / "images", size=32)


def test_diffusers_folder_loads_and_matches_diffusers(tmp_path: Path, images: torch.Tensor) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    ref = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        scaling_factor=0.3, shift_factor=0.1).eval()
    ref.save_pretrained(tmp_path / "pipe" / "vae")
    model = hub.from_official("diffusers_vae", tmp_path / "pipe")
    assert model.scaling_factor == 0.3 and model.shift_factor == 0.1
    with torch.no_grad():
        tokens = model.encode(images)
        z = ref.encode(images).latent_dist.mode()
        assert torch.allclose(tokens.latents, (z - 0.1) * 0.3, atol=1e-6)
        assert tokens.ids.shape == (len(images), 0) and model.vocab_size == 0
        assert torch.allclose(model.decode(tokens), ref.decode(z).sample, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="config.json"):
        hub.from_official("diffusers_vae", tmp_path)


def test_bad_inputs_are_refused() -> None:
    model = KLAutoencoder(**TINY)
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(torch.zeros(1, 3, 9, 8))
    with pytest.raises(ValueError, match="latents"):
        model.decode(torch.zeros(1, 3, 4, 4))


def test_hub_round_trip(tmp_path: Path, images: torch.Tensor) -> None:
    model = KLAutoencoder(**TINY).eval()
    hub.save_pretrained(model, tmp_path / "kl")
    again = hub.from_pretrained(tmp_path / "kl").eval()
    with torch.no_grad():
        assert torch.equal(model.encode(images).latents, again.encode(images).latents)


@pytest.mark.learning
def test_autoencoder_gan_loop_lowers_reconstruction_loss(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    from tokenforge.tokenizers.losses.patch import NLayerDiscriminator

    module = KLAutoencoderModule(KLAutoencoder(**TINY), discriminator=NLayerDiscriminator(3, 16, 2),
                                 perceptual_weight=0.0, disc_start=10,
                                 optimizer=lambda p: torch.optim.Adam(p, lr=2e-3, betas=(0.5, 0.9)))
    seen: list[dict[str, torch.Tensor]] = []

    class Keep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append(outputs)

    trainer = pl.Trainer(accelerator="cpu", max_steps=10 + 2 * 5, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Keep()])
    data = DataLoader([{"image": images, "__key__": ["k"] * len(images)}] * 15, batch_size=None)
    module.train()
    trainer.fit(module, data)
    l1 = [o["l1"].item() for o in seen]
    assert len(seen) == 15 and "adversarial" in seen[-1] and "adversarial" not in seen[0]
    assert sum(l1[7:10]) / 3 < 0.8 * l1[0]
    assert all(o["aux"].item() > 0 for o in seen)  # the KL term is on


def test_tiny_config_fits_through_the_cli(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    from tokenforge.cli import lightning_cli
    from tokenforge.data.shards import make_shards

    torch.set_num_threads(1)
    make_shards("images", shared_data / "images", tmp_path / "raw", val_fraction=0.2, max_side=64, progress=False)
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs/tokenizers/klvae/tiny.yaml"
    lightning_cli(args=["fit", *fit_args(config), "--data.init_args.train", str(tmp_path / "raw"),
                        "--trainer.max_steps", "12", "--trainer.enable_progress_bar", "false"])
    model = hub.from_pretrained(next((tmp_path / "logs").rglob("last.ckpt")))
    assert isinstance(model, KLAutoencoder)
    assert model.encode(torch.zeros(1, 3, 32, 32)).latents.shape == (1, 4, 16, 16)
