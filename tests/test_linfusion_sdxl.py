"""The unseen SDXL-like variant: a tiny random diffusers UNet with SDXL's structure (no attention in the first
down block, transformer_layers_per_block > 1, text_time added conditions, wide text context), a LinFusion with a
REDUCED middle width (projection_mid_dim = dim_n // scale, as ``--mid_dim_scale`` in the official SDXL script)
and a v-prediction scheduler. Checks the official layout loads strictly, the mount order, the v target, the
tokenforge checkpoint round trip, and that the parity check passes on a fixture folder written in the shared
fixture's format whose expected outputs come from an independent per-head reference (explicit pair weights)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from test_linfusion import naive  # tests/ is on sys.path

from tokenforge import hub
from tokenforge.generators.linfusion import GeneralizedLinearAttention, LinFusion
from tokenforge.generators.linfusion.distill import distill_losses
from tokenforge.generators.linfusion.linfusion import default_modules_list
from tokenforge.hub import CheckpointError, from_official
from tokenforge.parity import check

LAYERS = (1, 2, 3)  # transformer_layers_per_block (SDXL: 1, 2, 10)
UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32, 64), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=list(LAYERS), attention_head_dim=(2, 4, 8), use_linear_projection=True,
            cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=16 + 6 * 8, norm_num_groups=8)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type="v_prediction")
MID_SCALE = 8


def expected_names() -> list[str]:
    """attn1 names by hand from the config: down blocks, then UP blocks (3 attentions each), then the mid block."""
    down = [f"down_blocks.{b}.attentions.{a}.transformer_blocks.{t}.attn1"
            for b in (1, 2) for a in range(2) for t in range(LAYERS[b])]
    up = [f"up_blocks.{b}.attentions.{a}.transformer_blocks.{t}.attn1"
          for b, layers in ((0, LAYERS[2]), (1, LAYERS[1])) for a in range(3) for t in range(layers)]
    mid = [f"mid_block.attentions.0.transformer_blocks.{t}.attn1" for t in range(LAYERS[2])]
    return down + up + mid


@pytest.fixture(scope="module")
def unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET).eval()


def added(batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    time_ids = torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]).repeat(batch, 1)
    return {"text_embeds": torch.randn(batch, 16, generator=g), "time_ids": time_ids}


def random_linfusion(unet) -> LinFusion:
    torch.manual_seed(1)
    lin = LinFusion(default_modules_list(unet, mid_dim_scale=MID_SCALE))
    with torch.no_grad():
        for name, p in lin.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("1.weight") else
                    (0.05 * torch.randn_like(p) if p.dim() == 1 else p))
    return lin.eval()


def write_official(lin: LinFusion, folder: Path) -> None:
    """The released diffusers layout, written by hand: config.json + flat "{i}.{param}" safetensors."""
    folder.mkdir(parents=True)
    config = {"_class_name": "LinFusion", "_diffusers_version": "0.30.0", "modules_list": lin.modules_list}
    (folder / "config.json").write_text(json.dumps(config))
    state = {f"{i}.{k}": v.clone() for i in range(len(lin.modules_list)) for k, v in lin._modules[str(i)].state_dict().items()}
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def test_modules_list_order_and_reduced_mid_width(unet) -> None:
    entries = default_modules_list(unet, mid_dim_scale=MID_SCALE)
    assert [e["module_name"] for e in entries] == expected_names()
    assert len(entries) == 28  # down 2x2 + 2x3, up 3x3 + 3x2, mid 3
    widths = {e["module_name"].split(".attentions")[0]: (e["dim_n"], e["heads"], e["projection_mid_dim"]) for e in entries}
    assert widths == {"down_blocks.1": (32, 4, 4), "down_blocks.2": (64, 8, 8), "up_blocks.0": (64, 8, 8),
                      "up_blocks.1": (32, 4, 4), "mid_block": (64, 8, 8)}
    module = LinFusion(entries)._modules["0"]
    assert module.to_q_[0].weight.shape == (4, 32) and module.to_k_[1].weight.shape == (4,)
    assert module.to_q_[3].weight.shape == (32, 4)


def test_official_layout_loads_strictly_and_mounts_in_order(unet, tmp_path: Path) -> None:
    lin = random_linfusion(unet)
    write_official(lin, tmp_path / "lf")
    loaded = from_official("linfusion", tmp_path / "lf")
    assert loaded.modules_list == lin.modules_list
    theirs = load_file(str(tmp_path / "lf" / "diffusion_pytorch_model.safetensors"))
    assert len(theirs) == 17 * len(expected_names())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in theirs.items())
    # a config whose middle width disagrees with the weights is a clear error naming the mis-shaped key
    cfg = json.loads((tmp_path / "lf" / "config.json").read_text())
    cfg["modules_list"][0]["projection_mid_dim"] = None
    (tmp_path / "lf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"0\.to_q_\.0\.weight"):
        LinFusion.load_official(tmp_path / "lf")

    x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([300]), torch.randn(1, 5, 64)
    with torch.no_grad():
        base = unet(x, t, ctx, added_cond_kwargs=added(1)).sample
        loaded.mount_to(unet)
        try:
            assert all(unet.get_submodule(n) is loaded._modules[str(i)] for i, n in enumerate(expected_names()))
            mounted = unet(x, t, ctx, added_cond_kwargs=added(1)).sample
        finally:
            loaded.unmount()
        again = unet(x, t, ctx, added_cond_kwargs=added(1)).sample
    assert (mounted - base).abs().max() > 1e-3 and torch.equal(again, base)


def test_distillation_uses_the_v_target(unet) -> None:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(SCHEDULER)
    student, teacher = copy.deepcopy(unet), unet
    lin = random_linfusion(unet).mount_to(student)
    g = torch.Generator().manual_seed(5)
    clean, noise, t = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10, 900])
    with torch.no_grad():
        d = distill_losses(student, teacher, [m["module_name"] for m in lin.modules_list], sched, clean, noise, t,
                           torch.randn(2, 5, 64, generator=g), added(2))
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)[t].float().view(2, 1, 1, 1)
    v = ac.sqrt() * noise - (1 - ac).sqrt() * clean
    torch.testing.assert_close(d.target, v)
    torch.testing.assert_close(d.noisy, ac.sqrt() * clean + (1 - ac).sqrt() * noise)
    torch.testing.assert_close(d.loss_noise, F.mse_loss(d.student_pred, v))
    assert abs(d.loss_noise - F.mse_loss(d.student_pred, noise)) > 1e-3  # the eps target would differ


def test_save_pretrained_round_trip(unet, tmp_path: Path) -> None:
    lin = random_linfusion(unet)
    hub.save_pretrained(lin, tmp_path / "ckpt")
    back = hub.from_pretrained(tmp_path / "ckpt")
    assert isinstance(back, LinFusion) and back.modules_list == lin.modules_list
    assert back.state_dict().keys() == lin.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in lin.state_dict().items())


class Reference(torch.nn.Module):
    """The official per-head formula with explicit pair weights, holding a LinFusion module's weights."""

    def __init__(self, module: GeneralizedLinearAttention) -> None:
        super().__init__()
        self.module = module

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return naive(self.module, hidden_states)


def _run(unet, names, *args, **kw):
    ins, outs = {}, {}

    def keep(i: int):
        def hook(module, args, output) -> None:  # returns None: the output is left as it is
            ins.setdefault(i, args[0])
            outs.setdefault(i, output)
        return hook

    hooks = [unet.get_submodule(n).register_forward_hook(keep(i)) for i, n in enumerate(names)]
    try:
        return unet(*args, **kw).sample, ins, outs
    finally:
        for h in hooks:
            h.remove()


def write_fixture(unet, folder: Path) -> None:
    """An SDXL-like fixture folder in the shared fixture's format, expected outputs from `Reference`."""
    lin = random_linfusion(unet)
    names = [m["module_name"] for m in lin.modules_list]
    unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    write_official(lin, folder / "linfusion")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler", **SCHEDULER}))
    (folder / "config.json").write_text(json.dumps({"variant": "sdxl-like", "unet_config_file": "unet/config.json",
                                                    "linfusion_config_file": "linfusion/config.json",
                                                    "modules_list": lin.modules_list, "added_cond": True}))
    g = torch.Generator().manual_seed(11)
    inputs = {"sample": torch.randn(2, 4, 16, 16, generator=g), "timestep": torch.tensor([17, 731]),
              "encoder_hidden_states": torch.randn(2, 5, 64, generator=g), **added(2),
              "module0_hidden_states": 1.5 * torch.randn(3, 20, 32, generator=g),
              "clean_latents": torch.randn(2, 4, 16, 16, generator=g), "noise": torch.randn(2, 4, 16, 16, generator=g)}
    save_file(inputs, str(folder / "inputs.safetensors"))
    ref = copy.deepcopy(unet)
    for i, n in enumerate(names):
        parent, _, child = n.rpartition(".")
        setattr(ref.get_submodule(parent), child, Reference(lin._modules[str(i)]))
    cond = {"added_cond_kwargs": {"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]}}
    args = (inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"])
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out["unet_base_out"], _, teacher = _run(unet, names, *args, **cond)
        out["unet_linfusion_out"], ins, student = _run(ref, names, *args, **cond)
        for i in range(len(names)):
            out[f"attn1_in.{i}"], out[f"attn1_out_linfusion.{i}"] = ins[i], student[i]
            out[f"attn1_out_teacher.{i}"] = teacher[i]
        out["module0_out"] = naive(lin._modules["0"], inputs["module0_hidden_states"])
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        ac = torch.cumprod(1 - betas, 0)[inputs["timestep"]].float().view(-1, 1, 1, 1)
        x0, eps = inputs["clean_latents"], inputs["noise"]
        noisy = ac.sqrt() * x0 + (1 - ac).sqrt() * eps
        target = ac.sqrt() * eps - (1 - ac).sqrt() * x0
        args = (noisy, inputs["timestep"], inputs["encoder_hidden_states"])
        teacher_pred, _, tf = _run(unet, names, *args, **cond)
        student_pred, _, sf = _run(ref, names, *args, **cond)
    feat = sum(F.mse_loss(sf[i], tf[i]) for i in range(len(names))) / len(names)
    losses = {"loss_noise": F.mse_loss(student_pred, target), "loss_kd": F.mse_loss(student_pred, teacher_pred),
              "loss_feat": feat}
    losses["loss_total"] = losses["loss_noise"] + 0.5 * losses["loss_kd"] + 0.5 * losses["loss_feat"]
    out.update(noisy_latents=noisy, loss_target=target, loss_teacher_pred=teacher_pred, loss_student_pred=student_pred,
               **{k: v.reshape(1) for k, v in losses.items()})
    save_file({k: v.contiguous() for k, v in out.items()}, str(folder / "outputs.safetensors"))


def test_parity_check_on_an_sdxl_like_fixture_folder(unet, tmp_path: Path) -> None:
    folder = tmp_path / "linfusion_sdxl"
    write_fixture(unet, folder)
    lines = check(folder, "linfusion")
    n = len(expected_names())
    assert len(lines) == 3 * n + 11 and all(line.status == "ok" for line in lines), "\n".join(map(str, lines))
    # the prediction type is read from the folder: an epsilon scheduler there makes the target (and losses) fail
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({**sched, "prediction_type": "epsilon"}))
    failed = {line.name for line in check(folder, "linfusion") if line.status != "ok"}
    assert {"loss_target", "loss_noise", "loss_total"} <= failed and "unet_linfusion_out" not in failed
