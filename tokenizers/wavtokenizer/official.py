"""Official WavTokenizer checkpoints -> `WavTokenizer`, and the parity check of its fixture.

``from_official("wavtokenizer", path, config)``: ``path`` is a released Lightning ``.ckpt`` (read with
``torch.load(weights_only=True)``, only ``state_dict`` is used), a ``.safetensors`` state dict, or a folder
holding one of them (``model.ckpt`` / ``state_dict.safetensors``) and ``config.json`` / a ``*.yaml``.
``config`` is the official training YAML (``model.init_args.{feature_extractor,backbone,head}``) as a dict,
or None to use a config beside the checkpoint; the caller's ``trust_pickle=True`` (what ``tokenforge convert
--trust-pickle`` passes) alone allows a checkpoint that needs full unpickling (never a key in a config).
A ``hardcoded_in_EncodecFeatures_overridden`` block (the
parity fixtures) overrides the SEANet / quantizer sizes that the official ``EncodecFeatures`` hard-codes
(released: dimension 512, n_filters 32, lstm 2). As the official loader, only ``feature_extractor.``,
``backbone.`` and ``head.`` keys are read (discriminators and ``melspec_loss`` buffers are skipped);
everything else must match strictly (legacy ``weight_g/weight_v`` weight norm is converted).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tokenforge.hub import (CheckpointError, load_mapped_state_dict, read_config_file, read_state_dict,
                            register_official, without_trust_keys)
from tokenforge.nn.conv1d import convert_weight_norm_keys
from tokenforge.parity import Result, load_inputs, register_parity
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.wavtokenizer.model import WavTokenizer
from tokenforge.tokenizers.wavtokenizer.seanet import SEANetDecoder, SEANetEncoder
from tokenforge.tokenizers.wavtokenizer.vocos import ISTFTHead, VocosBackbone

# literals of the official EncodecFeatures (spec §1)
RELEASED_SEANET: dict[str, Any] = {
    "channels": 1, "dimension": 512, "n_filters": 32, "n_residual_layers": 1, "activation": "ELU",
    "kernel_size": 7, "residual_kernel_size": 3, "last_kernel_size": 7, "dilation_base": 2, "causal": False,
    "pad_mode": "reflect", "true_skip": False, "compress": 2, "lstm": 2, "norm": "weight_norm",
}
RELEASED_VQ: dict[str, Any] = {"decay": 0.99, "kmeans_init": True, "kmeans_iters": 200,
                               "threshold_ema_dead_code": 2}
SEANET_ARGS = set(RELEASED_SEANET) | {"ratios", "activation_params"}
KEEP_PREFIXES = ("feature_extractor.", "backbone.", "head.")

KEY_RULES = [
    (r"^feature_extractor\.encodec\.encoder\.", "encoder."),
    (r"^feature_extractor\.encodec\.decoder\.", "seanet_decoder."),
    (r"^feature_extractor\.encodec\.quantizer\.vq\.layers\.0\._codebook\.embed$", "quantizer.embedding.weight"),
    (r"^feature_extractor\.encodec\.quantizer\.vq\.layers\.0\._codebook\.", "quantizer."),
    (r"\.conv\.conv\.", ".conv."),
    (r"\.convtr\.convtr\.", ".convtr."),
]


def _init_args(block: Any, name: str) -> dict[str, Any]:
    if not isinstance(block, Mapping):
        raise CheckpointError(f"WavTokenizer config: model.init_args.{name} is missing")
    return dict(block.get("init_args", block))


def _seanet(args: Mapping[str, Any], ratios: list[int]) -> dict[str, Any]:
    out = {**RELEASED_SEANET, "ratios": ratios}
    out.update({k: v for k, v in args.items() if k in SEANET_ARGS})
    params = out.pop("activation_params", None) or {}
    out["elu_alpha"] = float(params.get("alpha", 1.0))
    out["ratios"] = [int(r) for r in out["ratios"]]
    return out


def model_from_config(config: Mapping[str, Any], seanet_decoder: bool = True) -> WavTokenizer:
    """Build a `WavTokenizer` from the official YAML layout (plus the fixtures' override block)."""
    model_cfg = config.get("model", config)
    init = _init_args(model_cfg, "model") if "init_args" in model_cfg else dict(model_cfg)
    features = _init_args(init.get("feature_extractor"), "feature_extractor")
    backbone = _init_args(init.get("backbone"), "backbone")
    head = _init_args(init.get("head"), "head")
    if features.get("num_quantizers", 1) != 1:
        raise CheckpointError("only single-codebook WavTokenizer configs are supported (num_quantizers: 1)")
    overrides = config.get("hardcoded_in_EncodecFeatures_overridden", {})
    ratios = [int(r) for r in features.get("dowmsamples", [8, 5, 4, 2])]
    enc_args = _seanet(overrides.get("SEANetEncoder", {}), ratios)
    # EncodecFeatures builds the (unused) decoder with EnCodec's default ratios whatever dowmsamples says
    # (the released frame40 checkpoint's decoder has kernels 16/10/8/4)
    dec_args = _seanet(overrides.get("SEANetDecoder", {**enc_args, "ratios": [8, 5, 4, 2]}), [8, 5, 4, 2])
    vq = {**RELEASED_VQ, "bins": features.get("vq_bins", 4096), "kmeans_iters": features.get("vq_kmeans", 200)}
    vq.update(overrides.get("ResidualVectorQuantizer", {}))
    dim = int(vq.get("dimension", enc_args["dimension"]))
    quantizer = VectorQuantizer(
        codebook_size=int(vq["bins"]), dim=dim, ema=True, decay=float(vq["decay"]), epsilon=1e-5,
        kmeans_init=bool(vq["kmeans_init"]), kmeans_iters=int(vq["kmeans_iters"]),
        dead_code_threshold=float(vq["threshold_ema_dead_code"]), beta=1.0)
    bb = VocosBackbone(
        input_channels=int(backbone.get("input_channels", dim)), dim=int(backbone["dim"]),
        intermediate_dim=int(backbone["intermediate_dim"]), num_layers=int(backbone["num_layers"]),
        layer_scale_init_value=backbone.get("layer_scale_init_value"),
        adanorm_num_embeddings=backbone.get("adanorm_num_embeddings"))
    hd = ISTFTHead(dim=int(head.get("dim", backbone["dim"])), n_fft=int(head["n_fft"]),
                   hop_length=int(head["hop_length"]), padding=str(head.get("padding", "same")))
    bandwidths = features.get("bandwidths", [6.6, 6.6, 6.6, 6.6])
    return WavTokenizer(
        encoder=SEANetEncoder(**enc_args), quantizer=quantizer, backbone=bb, head=hd,
        seanet_decoder=SEANetDecoder(**dec_args) if seanet_decoder else False,
        sample_rate=int(init.get("sample_rate", 24000)),
        num_bandwidths=int(backbone.get("adanorm_num_embeddings") or len(bandwidths)))


def read_config(path: str | Path) -> dict[str, Any]:
    """An official YAML or a fixture ``config.json``."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        config = yaml.safe_load(path.read_text())
        if not isinstance(config, dict):
            raise CheckpointError(f"{path} holds no YAML mapping: not a WavTokenizer config")
        return without_trust_keys(config)
    return read_config_file(path)


def _locate(path: Path) -> tuple[Path, Path | None]:
    """(weights file, config file or None) for a checkpoint file or a folder."""
    if path.is_dir():
        weights = next((path / n for n in ("model.ckpt", "state_dict.safetensors") if (path / n).is_file()), None)
        if weights is None:
            ckpts = sorted(path.glob("*.ckpt"))
            weights = ckpts[0] if ckpts else None
        if weights is None:
            raise FileNotFoundError(f"{path} holds no WavTokenizer checkpoint (*.ckpt or state_dict.safetensors)")
        folder = path
    elif path.is_file():
        weights, folder = path, path.parent
    else:
        raise FileNotFoundError(f"no WavTokenizer checkpoint at {path}")
    configs = [folder / "config.json", *sorted(folder.glob("*.yaml")), *sorted(folder.glob("*.yml"))]
    return weights, next((c for c in configs if c.is_file()), None)


def read_official_state(weights: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    state = read_state_dict(weights, nested=("state_dict",), trust_pickle=trust_pickle)
    state = {k: v for k, v in state.items() if k.startswith(KEEP_PREFIXES)}
    if not any(k.startswith("feature_extractor.encodec.encoder.") for k in state):
        raise CheckpointError(f"{weights} has no feature_extractor.encodec.encoder.* keys: not a WavTokenizer checkpoint")
    return state


def load_official(
    path: str | Path, config: Mapping[str, Any] | str | Path | None = None, *, trust_pickle: bool = False
) -> WavTokenizer:
    """Loader registered as ``wavtokenizer`` (see the module docstring); returns the model in eval mode.

    Unpickling is allowed by the caller's ``trust_pickle`` alone; a ``trust_pickle`` key in any config is ignored.
    """
    weights, found = _locate(Path(path))
    if isinstance(config, (str, Path)):
        config = read_config(config)
    if config is not None:
        config = without_trust_keys(config) or None
    if config is None:
        if found is None:
            raise FileNotFoundError(f"no config for {weights}: pass the official YAML (as a dict or path) or put "
                                    "it beside the checkpoint")
        config = read_config(found)
    model = model_from_config(config)
    state = convert_weight_norm_keys(read_official_state(weights, trust_pickle))
    load_mapped_state_dict(model, state, KEY_RULES, source=str(weights))
    return model.eval()


@torch.no_grad()
def wavtokenizer_parity(folder: Path) -> dict[str, Result]:
    """Recompute the fixture's outputs from its audio and bandwidth id through the official call path."""
    folder = Path(folder)
    model = load_official(folder)
    inputs = load_inputs(folder)
    audio, bandwidth_id = inputs["audio"], inputs.get("bandwidth_id", torch.tensor([0]))
    features, codes = model.encode_infer(audio, bandwidth_id)
    from_codes = model.codes_to_features(codes)
    posnet = model.backbone.pos_net(model.backbone.embed(features))
    backbone_out = model.backbone(features, bandwidth_id)
    results = {
        "codes": Result(codes, 0),
        "encoder_out": Result(model.encoder(audio[:, None]), 1e-4),
        "features": Result(features, 0),
        "features_from_codes": Result(from_codes, 0),
        "posnet_out": Result(posnet, 1e-4),
        "backbone_out": Result(backbone_out, 1e-4),
        "head_linear_out": Result(model.head.out(backbone_out), 1e-4),
        "waveform": Result(model.decode_features(features, bandwidth_id), 1e-5),
    }
    expected = load_file(str(folder / "outputs.safetensors"))
    for name in expected:  # decodes with other AdaLayerNorm rows: waveform_bandwidth_id{k}
        if name.startswith("waveform_bandwidth_id"):
            k = int(name.removeprefix("waveform_bandwidth_id"))
            results[name] = Result(model.decode_features(features, torch.tensor([k])), 1e-5)
    return results


register_official("wavtokenizer", load_official)
register_parity("wavtokenizer", wavtokenizer_parity)
