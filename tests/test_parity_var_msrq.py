"""var_msrq: the official VAR quantizer loads through the hub and reproduces the fixture's quantizer outputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenforge.hub import CheckpointError, from_official
from tokenforge.parity import check, parity_function
from tokenforge.tokenizers.quantizers import MultiScaleResidualQuantizer
from tokenforge.tokenizers.quantizers.official_var import var_msrq_parity

NOT_OURS = {"f_BChw", "rec_img", "rec_img_from_idx", "dec_unclamped", "var_logits_cond", "var_logits_uncond",
            "ar_greedy_img01"}


def test_fixture_quantizer_outputs_match(fixtures_dir):
    folder = fixtures_dir / "var_msrq"
    lines = {line.name: line for line in check(folder)}
    cfg = json.loads((folder / "config.json").read_text())["vqvae"]
    n_scales = len(cfg["v_patch_nums"])
    ours = {f"idx_Bl_{s}" for s in range(n_scales)} | {f"fhat_{s}" for s in range(n_scales)}
    ours |= {"qforward_fhat", "qforward_vq_loss", "var_input_BLCv"}
    assert ours <= set(lines)
    for name in ours:
        assert lines[name].status == "ok", str(lines[name])
    for name in ours:
        if name.startswith("idx_Bl_"):
            assert lines[name].tolerance == 0 and lines[name].diff == 0
    assert parity_function("var_msrq") is var_msrq_parity


def test_loader_builds_from_config_and_loads_quantize_keys(fixtures_dir):
    folder = fixtures_dir / "var_msrq"
    q = from_official("var_msrq", folder)
    cfg = json.loads((folder / "config.json").read_text())["vqvae"]
    state = load_file(str(folder / "vae_state_dict.safetensors"))
    assert isinstance(q, MultiScaleResidualQuantizer) and not q.training
    assert q.codebook_size == cfg["vocab_size"] and q.dim == cfg["z_channels"]
    assert q.tokens_per_scale == [p * p for p in cfg["v_patch_nums"]]
    assert torch.equal(q.embedding.weight, state["quantize.embedding.weight"])
    assert torch.equal(q.state_dict()["quant_resi.qresi_ls.3.bias"], state["quantize.quant_resi.qresi_ls.3.bias"])
    # a checkpoint file with an explicit config gives the same module
    q2 = from_official("var_msrq", folder / "vae_state_dict.safetensors", {"vqvae": cfg})
    f = load_file(str(folder / "outputs.safetensors"))["f_BChw"]
    assert all(torch.equal(a, b) for a, b in zip(q.encode(f), q2.encode(f)))


def test_unseen_variant_is_read_from_the_folder(tmp_path):
    """Nothing is fixed to the shared fixture: another config (znorm, one shared Phi, 3 scales) loads and runs."""
    cfg = {"vqvae": {"vocab_size": 24, "z_channels": 5, "beta": 0.5, "using_znorm": True, "quant_resi": 0.3,
                     "share_quant_resi": 1, "default_qresi_counts": 0, "v_patch_nums": [1, 3, 6]}}
    ref = MultiScaleResidualQuantizer(24, 5, [1, 3, 6], using_znorm=True, quant_resi=0.3, share_quant_resi=1, beta=0.5)
    state = {f"quantize.{k}": v for k, v in ref.state_dict().items()}
    state["encoder.conv_in.weight"] = torch.zeros(3)  # other VQVAE parts are ignored
    save_file(state, str(tmp_path / "vae_state_dict.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    f = torch.randn(2, 5, 6, 6)
    save_file({"f_BChw": f}, str(tmp_path / "outputs.safetensors"))
    results = var_msrq_parity(tmp_path)
    assert set(results) == {"idx_Bl_0", "idx_Bl_1", "idx_Bl_2", "fhat_0", "fhat_1", "fhat_2", "qforward_fhat",
                            "qforward_vq_loss", "var_input_BLCv"}
    assert [tuple(results[f"idx_Bl_{s}"].value.shape) for s in range(3)] == [(2, 1), (2, 9), (2, 36)]
    assert all(torch.equal(results[f"idx_Bl_{s}"].value, i) for s, i in enumerate(ref.eval().encode(f)))
    assert results["var_input_BLCv"].value.shape == (2, 45, 5)
    # a wrong checkpoint is reported clearly
    save_file({"quantize.embedding.weight": torch.zeros(7, 5)}, str(tmp_path / "vae_state_dict.safetensors"))
    with pytest.raises(CheckpointError, match="embedding.weight"):
        from_official("var_msrq", tmp_path)
