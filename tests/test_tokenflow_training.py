"""TokenFlow training: losses fall on real images (pixel + semantic distillation), the GAN gate, teachers loaded
from transformers CLIP/SigLIP folders match transformers' own features, and `tokenforge fit` on the tiny
config over real image shards lowers the total loss and writes a checkpoint that `from_pretrained` restores."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from test_vqgan import load_images  # tests/ is on sys.path (pytest's default import mode)
from torch.utils.data import DataLoader

from tokenforge import hub
from tokenforge.tokenizers.losses.patch import NLayerDiscriminator
from tokenforge.tokenizers.tokenflow.bench import tiny_model
from tokenforge.tokenizers.tokenflow.module import TokenFlowModule, semantic_loss
from tokenforge.tokenizers.tokenflow.teacher import load_teacher
from tokenforge.config_models import fit_args

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(shared_data: Path) -> torch.Tensor:
    return load_images(shared_data / "images", size=32)


def loader(images: torch.Tensor, steps: int) -> DataLoader:
    return DataLoader([{"image": images, "__key__": ["k"] * len(images)}] * steps, batch_size=None)


def trainer(steps: int, callbacks: list | None = None) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=callbacks or [])


class Record(pl.Callback):
    def __init__(self) -> None:
        self.outputs: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.outputs.append(outputs)


@pytest.mark.learning
def test_pixel_and_semantic_losses_fall_on_real_images(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    module = TokenFlowModule(tiny_model(), perceptual_weight=0.0,
                             optimizer=lambda p: torch.optim.Adam(p, lr=2e-3, betas=(0.9, 0.95)))
    teacher_before = [p.clone() for p in module.teacher.parameters()]
    record = Record()
    module.train()
    trainer(30, [record]).fit(module, loader(images, 30))
    losses = {k: [o[k].item() for o in record.outputs] for k in ("loss", "l2", "semantic", "aux")}
    first, last = (lambda v: sum(v[:5]) / 5), (lambda v: sum(v[-5:]) / 5)
    assert len(losses["loss"]) == 30 and set(record.outputs[0]) == {"loss", "l2", "semantic", "aux"}
    assert last(losses["loss"]) < 0.7 * first(losses["loss"]), losses["loss"]
    assert last(losses["l2"]) < 0.7 * first(losses["l2"]) and last(losses["semantic"]) < first(losses["semantic"])
    for a, b in zip(teacher_before, module.teacher.parameters()):
        assert torch.equal(a, b)  # the teacher stays frozen
    assert not module.teacher.training
    expected = record.outputs[-1]["l2"] + record.outputs[-1]["aux"] + record.outputs[-1]["semantic"]
    assert torch.allclose(record.outputs[-1]["loss"], expected)


def test_gan_terms_switch_on_at_disc_start(images: torch.Tensor) -> None:
    module = TokenFlowModule(tiny_model(), NLayerDiscriminator(ndf=16, n_layers=2), perceptual=None, disc_start=2)
    record = Record()
    t = trainer(6, [record])  # 1 + 1 generator-only steps, then 2 x (generator + discriminator)
    t.fit(module, loader(images[:2], 10))
    assert int(module.generator_step) == 4 and ["adversarial" in o for o in record.outputs] == [False, False, True, True]
    late = record.outputs[-1]
    assert torch.allclose(late["loss"], late["l2"] + late["aux"] + late["semantic"] + 0.5 * late["adversarial"])


def test_semantic_loss_is_one_minus_cosine() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    b = torch.tensor([[[1.0, 1.0], [0.0, -1.0]]])
    assert torch.allclose(semantic_loss(a, b), torch.tensor(((1 - 2**-0.5) + 2.0) / 2))
    with pytest.raises(ValueError, match="decoder_out_dim"):
        semantic_loss(a, torch.zeros(1, 2, 3))


def test_teacher_from_transformers_clip_folder_matches_transformers(tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              image_size=64, patch_size=16, projection_dim=24, hidden_act="quick_gelu")
    reference = CLIPVisionModelWithProjection(config).eval()
    reference.save_pretrained(tmp_path / "clip")
    teacher = load_teacher(tmp_path / "clip")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = reference(pixel_values=((x + 1) / 2 - mean) / std).last_hidden_state
        vision = reference.vision_model
        expected = vision.post_layernorm(hidden[:, 1:]) @ reference.visual_projection.weight.t()
        got = teacher(x)
    assert teacher.out_dim == 24 and got.shape == (2, 16, 24)
    assert torch.allclose(got, expected, atol=1e-5)


def test_teacher_from_transformers_siglip_folder_matches_hidden_states(tmp_path: Path) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                image_size=56, patch_size=14)
    reference = SiglipVisionModel(config).eval()
    reference.save_pretrained(tmp_path / "siglip")
    teacher = load_teacher(tmp_path / "siglip")
    x = torch.rand(1, 3, 56, 56) * 2 - 1
    with torch.no_grad():
        expected = reference(pixel_values=x.clamp(-1, 1), output_hidden_states=True).hidden_states[-2]
        assert torch.allclose(teacher(x), expected, atol=2e-5)


def test_teacher_from_official_file_and_encoder_init(fixtures_dir: Path) -> None:
    from safetensors.torch import load_file

    from tokenforge.tokenizers.tokenflow.official import load_tokenflow

    folder = fixtures_dir / "tokenflow"
    teacher = load_teacher(folder)
    x = load_file(str(folder / "inputs.safetensors"))["image"]
    expected = load_file(str(folder / "outputs.safetensors"))["clip_patch_tokens"]
    assert torch.allclose(teacher(x), expected, atol=1e-5)
    model = load_tokenflow(folder)
    with torch.no_grad():
        for p in model.semantic_encoder.parameters():
            p.zero_()
    module = TokenFlowModule(model, teacher_path=str(folder), semantic_weight=0.0)
    assert torch.equal(module.model.semantic_encoder.ln_post.weight, teacher.tower.ln_post.weight)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.learning
def test_fit_tiny_config_through_the_cli(tmp_path: Path, shared_data: Path) -> None:
    from tokenforge.cli import lightning_cli
    from tokenforge.data.shards import make_shards
    from tokenforge.tokenizers.tokenflow import TokenFlow

    make_shards("images", str(shared_data / "images" / "*.png"), tmp_path / "shards", max_side=96,
                val_fraction=0.25, progress=False)
    cli = lightning_cli(args=[
        "fit", *fit_args(REPO / "configs/tokenizers/tokenflow/tiny.yaml"),
        "--data.init_args.train", str(tmp_path / "shards"), "--data.init_args.val", str(tmp_path / "shards"),
        "--trainer.max_steps", "16", "--model.init_args.disc_start", "12", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.enable_progress_bar", "false",
        "--data.init_args.epoch_samples", "56",  # 14 batches = one epoch, so the epoch-end checkpoint is the last
    ])
    assert int(cli.model.generator_step) == 14  # disc_start 12: 12 + 2 x 2 optimiser steps
    rows = [r for r in _rows(next(tmp_path.rglob("metrics.csv"))) if r.get("train/loss_g")]
    losses = [float(r["train/loss_g"]) for r in rows]
    assert len(losses) == 14 and sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    assert any(r.get("val/psnr") for r in _rows(next(tmp_path.rglob("metrics.csv"))))
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints, "fit wrote no checkpoint"
    restored = hub.from_pretrained(checkpoints[-1])
    assert isinstance(restored, TokenFlow) and restored.init_args == cli.model.model.init_args
    x = load_images(shared_data / "images")
    trained = cli.model.model.eval()
    with torch.no_grad():
        a, b = trained.encode(x), restored.encode(x)
        assert all(torch.equal(i, j) for i, j in zip(a.ids, b.ids))
        assert torch.equal(trained.decode(a), restored.decode(b))
