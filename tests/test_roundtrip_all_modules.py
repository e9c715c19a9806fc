"""save_pretrained -> from_pretrained is bit-exact for every Configurable module in the repository.

Modules are discovered by importing every module of the four namespace portions, so a new class is covered
the moment it lands; a class whose defaults are too large (or that needs arguments) gets a small example
here. Every tiny config's inference module is round-tripped as well, as `tokenforge fit` builds it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tokenforge import hub
from tokenforge.config import Configurable, build

REPO = Path(__file__).resolve().parents[1]
PORTIONS = ("tokenforge", "tokenforge.tokenizers", "tokenforge.generators", "tokenforge.data")
SKIP_MODULES = {"tokenforge.__main__"}
# classes that are never saved as checkpoints, and why
NOT_CHECKPOINTED = {
    "LPIPS": "a frozen loss network loaded from external weight files; training modules exclude it from checkpoints",
}

# class name -> small constructor arguments (nested modules as class_path specs)
EXAMPLES: dict[str, dict[str, Any]] = {
    # E-CAR / MAR peer and the KL tokenizer
    "KLAutoencoder": {"block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4},
    "MAR": {"img_size": 32, "encoder_embed_dim": 16, "encoder_depth": 1, "encoder_num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2, "buffer_size": 2, "class_num": 10, "diffloss_d": 1, "diffloss_w": 16, "num_sampling_steps": "5"},
    "DiffLoss": {"token_dim": 4, "cond_dim": 8, "width": 16, "depth": 1, "num_sampling_steps": "5"},
    "SimpleMLPAdaLN": {"in_channels": 4, "width": 16, "depth": 1, "cond_dim": 8},
    "ECAR": {"latent_channels": 4, "scales": [1, 2], "dim": 16, "depth": 1, "num_heads": 2, "num_classes": 3, "head_width": 16, "head_depth": 1},
    "FlowDiT": {"latent_channels": 4, "latent_size": 4, "patch_size": 2, "dim": 16, "depth": 1, "num_heads": 2, "num_classes": 3},
    # FlexTok
    "FlexTokVAE": {"kind": "autoencoder_kl", "config": {"block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4, "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}},
    "FlexTokEncoder": {"latent_channels": 4, "dim": 16, "depth": 1, "head_dim": 8, "num_registers": 4, "max_grid": 2},
    "FlexTokDecoder": {"latent_channels": 4, "dim": 16, "depth": 1, "head_dim": 8, "num_registers": 4, "max_grid": 2},
    "FlexTok": {"vae": {"class_path": "tokenforge.tokenizers.flextok.networks.FlexTokVAE", "init_args": {"kind": "pixel", "factor": 2}},
                "encoder": {"class_path": "tokenforge.tokenizers.flextok.networks.FlexTokEncoder", "init_args": {"latent_channels": 12, "dim": 16, "depth": 1, "head_dim": 8, "num_registers": 4, "max_grid": 2}},
                "decoder": {"class_path": "tokenforge.tokenizers.flextok.networks.FlexTokDecoder", "init_args": {"latent_channels": 12, "dim": 16, "depth": 1, "head_dim": 8, "num_registers": 4, "max_grid": 2}}},
    "FlexTokPatchEmbed": {"channels": 4, "dim": 16, "max_size": 2},
    "FlexTokTimestepEmbedder": {"dim": 8},
    "FlexTokLinearHead": {"dim": 8, "out_dim": 6},
    "FlexTokToPatchesHead": {"dim": 8, "channels": 4},
    # VAT
    "PointEmbed": {"dim": 8, "hidden_dim": 12, "extra_dim": 3},
    "Shape2VecSet": {"depth": 1, "dim": 16, "num_inputs": 32, "num_latents": 4, "latent_dim": 4, "heads": 2, "dim_head": 8},
    "VAT": {"dim": 16, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "num_latents": 4, "latent_dim": 4,
            "codebook_size": 16, "scales": [1, 2, 4], "triplane_resolution": 4, "triplane_channels": 4,
            "triplane_upsample": 1, "mlp_hidden": 8},
    # tokenforge.nn
    "Attention": {"dim": 16, "num_heads": 2, "qv_bias": True, "l2_norm_qk": True},
    "AttnBlock1d": {"channels": 8, "num_groups": 4},
    "Conv1d": {"in_channels": 2, "out_channels": 4, "kernel_size": 4, "stride": 2},
    "ConvNeXt1dBlock": {"dim": 8, "intermediate_dim": 16, "adanorm_num_embeddings": 2},
    "ConvTranspose1d": {"in_channels": 4, "out_channels": 2, "kernel_size": 4, "stride": 2},
    "ResnetBlock1d": {"in_channels": 8, "out_channels": 16, "num_groups": 4},
    "ConvResidualUnit1d": {"dim": 4},
    "SLSTM": {"dim": 4},
    "GeluMLP": {"dim": 8},
    "SwiGLU": {"dim": 8, "multiple_of": 8},
    "AdaLNModulation": {"dim": 8, "order": "gates_scales_shifts"},
    "AdaLayerNorm": {"num_embeddings": 2, "dim": 8},
    "LayerNorm": {"dim": 8, "affine": True},
    "RMSNorm": {"dim": 8},
    "AdaLNBlock": {"dim": 16, "num_heads": 2, "order": "gates_shift_scale", "adaln_groups": 2, "mlp": "swiglu"},
    "Block": {"dim": 16, "num_heads": 2, "attn_options": {"qkv": "separate", "qk_norm": "layernorm"}},
    "Transformer": {"dim": 16, "depth": 2, "num_heads": 2, "final_norm": "rmsnorm"},
    # tokenforge.tokenizers.wavtokenizer
    "SEANetEncoder": {"dimension": 8, "n_filters": 2, "ratios": [4, 2], "lstm": 1},
    "SEANetDecoder": {"dimension": 8, "n_filters": 2, "ratios": [4, 2], "lstm": 1},
    "VocosBackbone": {"input_channels": 8, "dim": 32, "intermediate_dim": 48, "num_layers": 1, "num_groups": 8},
    "ISTFT": {"n_fft": 16, "hop_length": 4},
    "ISTFTHead": {"dim": 8, "n_fft": 16, "hop_length": 4},
    "WavTokenizer": {
        "encoder": {"class_path": "tokenforge.tokenizers.wavtokenizer.seanet.SEANetEncoder",
                    "init_args": {"dimension": 8, "n_filters": 2, "ratios": [4, 2], "lstm": 1}},
        "quantizer": {"class_path": "tokenforge.tokenizers.quantizers.vq.VectorQuantizer",
                      "init_args": {"codebook_size": 16, "dim": 8, "ema": True, "kmeans_init": True}},
        "backbone": {"class_path": "tokenforge.tokenizers.wavtokenizer.vocos.VocosBackbone",
                     "init_args": {"input_channels": 8, "dim": 32, "intermediate_dim": 48, "num_layers": 1,
                                   "num_groups": 8}},
        "head": {"class_path": "tokenforge.tokenizers.wavtokenizer.vocos.ISTFTHead",
                 "init_args": {"dim": 32, "n_fft": 32, "hop_length": 8}}},
    "MultiPeriodDiscriminator": {"periods": [2, 3], "widths": [4, 4, 4, 4, 4]},
    "DACDiscriminator": {"periods": [2], "fft_sizes": [64], "widths": [4, 4, 4, 4, 4], "band_channels": 2},
    # tokenforge.tokenizers.vqgan
    "VQGAN": {"quantizer": {"class_path": "tokenforge.tokenizers.quantizers.vq.VectorQuantizer",
                            "init_args": {"codebook_size": 16, "dim": 4, "l2_normalize": True}},
              "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 32},
    "MageVQGAN": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 8, "codebook_size": 16},
    "ENAT": {"seq_len": 16, "hidden_size": 32, "num_heads": 4, "enc_depth": 1, "dec_depth": 1, "codebook_size": 16,
             "num_classes": 3},
    # tokenforge.generators.autoregressive
    "GPT": {"vocab_size": 32, "seq_len": 16, "dim": 32, "depth": 2, "num_heads": 4, "multiple_of": 32,
            "num_classes": 3},
    "VAR": {"vocab_size": 16, "cvae": 4, "patch_nums": [1, 2, 3], "depth": 2, "embed_dim": 32, "num_heads": 2,
            "num_classes": 3},
    # tokenforge.generators.linfusion
    "GeneralizedLinearAttention": {"dim": 8, "heads": 2, "projection_mid_dim": 4},
    "LinFusion": {"modules_list": [{"module_name": "a.attn1", "dim_n": 8, "heads": 2, "projection_mid_dim": None}]},
    # tokenforge.tokenizers.tokenflow
    "CLIPVisionTower": {"image_size": 32, "patch_size": 8, "width": 16, "layers": 1, "heads": 2, "output_dim": 8},
    "SiglipVisionTower": {"image_size": 28, "patch_size": 14, "width": 16, "layers": 2, "heads": 2, "mlp_dim": 32},
    "SemanticDecoder": {"in_chans": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "img_size": 2},
    "DualCodebookQuantizer": {"codebook_size": 16, "semantic_dim": 4, "pixel_dim": 4, "scales": [1, 2]},
    "TokenFlow": {"semantic_encoder": {"class_path": "tokenforge.tokenizers.tokenflow.towers.SiglipVisionTower",
                                       "init_args": {"image_size": 28, "patch_size": 14, "width": 16, "layers": 2,
                                                     "heads": 2, "mlp_dim": 32}},
                  "quantizer": {"class_path": "tokenforge.tokenizers.tokenflow.quantizer.DualCodebookQuantizer",
                                "init_args": {"codebook_size": 16, "semantic_dim": 4, "pixel_dim": 4, "scales": [1, 2]}},
                  "semantic_decoder": {"class_path": "tokenforge.tokenizers.tokenflow.semantic.SemanticDecoder",
                                       "init_args": {"in_chans": 4, "embed_dim": 16, "depth": 1, "num_heads": 2,
                                                     "img_size": 2}},
                  "decoder_out_dim": 16, "semantic_scaling": "siglip", "ch": 32, "ch_mult": [1, 1],
                  "num_res_blocks": 1, "z_channels": 32},
}


def discover() -> list[type]:
    found: dict[str, type] = {}
    for portion in PORTIONS:
        package = importlib.import_module(portion)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{portion}."):
            if info.name in SKIP_MODULES:
                continue
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if (issubclass(cls, Configurable) and issubclass(cls, torch.nn.Module)
                        and cls.__module__ == module.__name__ and not inspect.isabstract(cls)
                        and not cls.__name__.startswith("_")):
                    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


def is_base_contract(cls: type) -> bool:
    """The contract classes themselves (Tokenizer, Generator) are interfaces, not modules to save."""
    return cls.__module__ in {"tokenforge.tokenizers.base", "tokenforge.generators.base"}


CLASSES = [c for c in discover() if not is_base_contract(c) and c.__name__ not in NOT_CHECKPOINTED]


def example(cls: type) -> torch.nn.Module:
    if cls.__name__ in EXAMPLES:
        return cls(**{k: build(v) for k, v in EXAMPLES[cls.__name__].items()})
    required = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if required:
        pytest.fail(f"{cls.__name__} needs {[p.name for p in required]}: add a small example to EXAMPLES")
    return cls()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_round_trip_is_bit_exact(cls: type, tmp_path: Path) -> None:
    module = example(cls)
    with torch.no_grad():  # make sure no parameter is left at a trivially reproducible init
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    loaded = hub.from_pretrained(hub.save_pretrained(module, tmp_path / cls.__name__))
    assert type(loaded) is cls
    assert loaded.init_args == module.init_args
    assert_same_state(module, loaded)


TINY_CONFIGS = sorted((REPO / "configs").rglob("tiny.yaml"))


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_tiny_config_model_round_trips(config: Path, tmp_path: Path) -> None:
    from tokenforge.cli import lightning_cli

    from tokenforge.config_models import fit_args

    cli = lightning_cli(args=[*fit_args(config), "--trainer.logger", "false",
                              "--trainer.default_root_dir", str(tmp_path)], run=False)
    model = cli.model.model
    loaded = hub.from_pretrained(hub.save_pretrained(model, tmp_path / "model"))
    assert type(loaded) is type(model)
    assert_same_state(model, loaded)
