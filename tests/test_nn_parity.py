"""tokenforge.nn layers assembled into official models (LlamaGen GPT, VAR, WavTokenizer) reproduce their fixtures.

These tests exercise the shared layers against outputs of the official code (random weights, CPU float32):
RMSNorm + fused-qkv attention + 2D RoPE (with its zeroed condition row) + SwiGLU + KV cache for LlamaGen,
adaLN 6-way + L2-normalised attention with q/v biases + block-causal mask + GELU(tanh) MLP for VAR, and
padded weight-norm convs (legacy weight_g/weight_v keys), SEANet res blocks, LSTM, Vocos pos-net and ConvNeXt
blocks with AdaLayerNorm for WavTokenizer.
The method packages build their own full models; here only enough glue to reach the logits.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tokenforge.hub import load_mapped_state_dict
from tokenforge.nn import (
    AdaLayerNorm,
    AdaLNModulation,
    AttnBlock1d,
    Conv1d,
    ConvNeXt1dBlock,
    ResnetBlock1d,
    ConvResidualUnit1d,
    SLSTM,
    convert_weight_norm_keys,
    LayerNorm,
    RMSNorm,
    Transformer,
    block_causal_mask,
    modulate,
    rope_table_2d,
)


class TinyLlamaGen(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dim, heads = cfg["dim"], cfg["n_head"]
        self.cls_embedding = nn.Embedding(cfg["num_classes"] + 1, dim)
        self.tok_embeddings = nn.Embedding(cfg["vocab_size"], dim)
        self.transformer = Transformer(
            dim, cfg["n_layer"], heads, final_norm="rmsnorm", final_norm_eps=cfg["norm_eps"],
            block_options={"norm": "rmsnorm", "norm_eps": cfg["norm_eps"], "mlp": "swiglu",
                           "mlp_options": {"multiple_of": cfg["multiple_of"]}, "attn_options": {"qkv": "fused"}},
        )
        self.output = nn.Linear(dim, cfg["vocab_size"], bias=False)
        grid = int(cfg["block_size"] ** 0.5)
        self.rope = rope_table_2d(grid, dim // heads, cfg["rope_base"], cfg["cls_token_num"])

    def forward(self, tokens, labels, input_pos):
        parts = []
        if labels is not None:
            parts.append(self.cls_embedding(labels)[:, None])
        if tokens is not None:
            parts.append(self.tok_embeddings(tokens))
        h = torch.cat(parts, dim=1)
        h = self.transformer(h, causal=True, rope=self.rope[input_pos],
                             input_pos=input_pos if self.transformer.blocks[0].attn.kv_cache is not None else None)
        return self.output(h).float()


LLAMAGEN_KEYS = [
    (r"^cls_embedding\.embedding_table\.", "cls_embedding."),
    (r"^layers\.", "transformer.blocks."),
    (r"\.attention\.wqkv\.", ".attn.qkv."),
    (r"\.attention\.wo\.", ".attn.proj."),
    (r"\.feed_forward\.", ".mlp."),
    (r"\.attention_norm\.", ".norm1."),
    (r"\.ffn_norm\.", ".norm2."),
    (r"^norm\.", "transformer.norm."),
]


@pytest.fixture(scope="module")
def llamagen(fixtures_dir):
    root = fixtures_dir / "llamagen"
    cfg = json.loads((root / "config.json").read_text())
    model = TinyLlamaGen(cfg).eval()
    load_mapped_state_dict(model, load_file(root / "state_dict.safetensors"), LLAMAGEN_KEYS, source="llamagen")
    return model, load_file(root / "inputs.safetensors"), load_file(root / "outputs.safetensors")


def test_llamagen_rope_table_matches_fixture(llamagen):
    model, _, out = llamagen
    assert model.rope.shape == out["freqs_cis"].shape == (17, 8, 2)
    assert (model.rope - out["freqs_cis"]).abs().max() <= 1e-6
    assert model.rope[0].abs().max() == 0  # the condition row: cos = sin = 0


@torch.no_grad()
def test_llamagen_full_sequence_logits(llamagen):
    model, inp, out = llamagen
    pos = torch.arange(16)
    logits = model(inp["tokens"][:, :-1], inp["class_labels"], pos)
    assert logits.shape == (2, 16, 256)
    assert (logits - out["logits"]).abs().max() <= 1e-4
    uncond = model(inp["tokens"][:, :-1], inp["null_labels"], pos)
    assert (uncond - out["logits_uncond"]).abs().max() <= 1e-4


@torch.no_grad()
def test_llamagen_kv_cache_decoding(llamagen):
    model, inp, out = llamagen
    model.transformer.setup_kv_cache(batch_size=2, max_seq_len=24)
    try:
        steps = [model(None, inp["class_labels"], torch.arange(1))]
        for t in range(15):
            steps.append(model(inp["tokens"][:, t:t + 1], None, torch.tensor([t + 1])))
    finally:
        model.transformer.clear_kv_cache()
    logits = torch.cat(steps, dim=1)
    assert (logits - out["logits_kvcache"]).abs().max() <= 1e-4


class TinyVAR(nn.Module):
    def __init__(self, cfg: dict, cvae: int, vocab: int) -> None:
        super().__init__()
        dim, depth = cfg["embed_dim"], cfg["depth"]
        self.lengths = [p * p for p in cfg["patch_nums"]]
        total = sum(self.lengths)
        self.word_embed = nn.Linear(cvae, dim)
        self.class_emb = nn.Embedding(cfg["num_classes"] + 1, dim)
        self.lvl_embed = nn.Embedding(len(self.lengths), dim)
        self.pos_start = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_1LC = nn.Parameter(torch.zeros(1, total, dim))
        self.transformer = Transformer(
            dim, depth, cfg["num_heads"], adaln=True,
            block_options={"order": "gates_scales_shifts", "norm_eps": cfg["norm_eps"], "mlp": "gelu_tanh",
                           "mlp_ratio": cfg["mlp_ratio"],
                           "attn_options": {"qkv": "fused", "qv_bias": True, "out_bias": True, "l2_norm_qk": True}},
        )
        self.head_norm = LayerNorm(dim, eps=cfg["norm_eps"])
        self.head_ada = AdaLNModulation(dim, order="scale_shift")
        self.head = nn.Linear(dim, vocab)

    def forward(self, labels, x_wo_first):
        cond = self.class_emb(labels)
        levels = torch.repeat_interleave(torch.arange(len(self.lengths)), torch.tensor(self.lengths))
        x = torch.cat([cond[:, None] + self.pos_start, self.word_embed(x_wo_first)], dim=1)
        x = x + self.lvl_embed(levels)[None] + self.pos_1LC
        x = self.transformer(x, cond, mask=block_causal_mask(self.lengths))
        m = self.head_ada(cond)
        return self.head(modulate(self.head_norm(x), m["shift1"], m["scale1"]))


VAR_KEYS = [
    (r"^head_nm\.ada_lin\.1\.", "head_ada.linear."),
    (r"^blocks\.", "transformer.blocks."),
    (r"\.attn\.mat_qkv\.", ".attn.qkv."),
    (r"\.attn\.scale_mul_1H11$", ".attn.scale_mul"),
    (r"\.ffn\.", ".mlp."),
    (r"\.ada_lin\.1\.", ".adaln.linear."),
]


@torch.no_grad()
def test_var_transformer_logits(fixtures_dir):
    root = fixtures_dir / "var_msrq"
    cfg = json.loads((root / "config.json").read_text())
    state = load_file(root / "var_state_dict.safetensors")
    inp, out = load_file(root / "inputs.safetensors"), load_file(root / "outputs.safetensors")
    model = TinyVAR(cfg["var"], cvae=cfg["vqvae"]["z_channels"], vocab=cfg["vqvae"]["vocab_size"]).eval()
    official_mask = state["attn_bias_for_masking"][0, 0]
    ours = block_causal_mask(model.lengths)
    assert torch.equal(ours, official_mask == 0)  # additive 0 / -inf vs boolean "may attend"
    load_mapped_state_dict(model, state, VAR_KEYS, ignore_unexpected=[r"^lvl_1L$", r"^attn_bias_for_masking$"],
                           source="var")
    x = out["var_input_BLCv"]
    logits = model(inp["labels"], x)
    assert logits.shape == out["var_logits_cond"].shape
    assert (logits - out["var_logits_cond"]).abs().max() <= 1e-4
    null = torch.full_like(inp["labels"], cfg["var"]["num_classes"])
    assert (model(null, x) - out["var_logits_uncond"]).abs().max() <= 1e-4


def seanet_encoder(n_filters: int, dimension: int, ratios: list[int], lstm: int) -> nn.Sequential:
    """SEANet encoder (EnCodec) from tokenforge.nn blocks, Sequential indices as the official ``model.{i}``."""
    layers: list[nn.Module] = [Conv1d(1, n_filters, 7)]
    width = n_filters
    for r in reversed(ratios):
        layers += [ConvResidualUnit1d(width), nn.ELU(), Conv1d(width, 2 * width, 2 * r, stride=r)]
        width *= 2
    layers += [SLSTM(width, lstm), nn.ELU(), Conv1d(width, dimension, 7)]
    return nn.Sequential(*layers)


class TinyVocosBackbone(nn.Module):
    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int, adanorm: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, 7, padding=3)
        self.pos_net = nn.Sequential(ResnetBlock1d(dim), ResnetBlock1d(dim), AttnBlock1d(dim), ResnetBlock1d(dim),
                                     ResnetBlock1d(dim), nn.GroupNorm(32, dim, eps=1e-6))
        self.norm = AdaLayerNorm(adanorm, dim)
        self.convnext = nn.ModuleList(
            [ConvNeXt1dBlock(dim, intermediate_dim, 1 / num_layers, adanorm) for _ in range(num_layers)]
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, cond_id):
        x = self.pos_net(self.embed(x))
        x = self.norm(x.transpose(1, 2), cond_id).transpose(1, 2)
        for block in self.convnext:
            x = block(x, cond_id)
        return self.final_layer_norm(x.transpose(1, 2))


@torch.no_grad()
def test_wavtokenizer_seanet_encoder_and_vocos_backbone(fixtures_dir):
    root = fixtures_dir / "wavtokenizer"
    cfg = json.loads((root / "config.json").read_text())
    enc_cfg = cfg["hardcoded_in_EncodecFeatures_overridden"]["SEANetEncoder"]
    state = convert_weight_norm_keys(load_file(root / "state_dict.safetensors"))
    inp, out = load_file(root / "inputs.safetensors"), load_file(root / "outputs.safetensors")

    encoder = seanet_encoder(enc_cfg["n_filters"], enc_cfg["dimension"], enc_cfg["ratios"], enc_cfg["lstm"]).eval()
    prefix = "feature_extractor.encodec.encoder.model."
    enc_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    load_mapped_state_dict(encoder, enc_state, [(r"\.conv\.conv\.", ".conv.")], source="seanet encoder")
    latent = encoder(inp["audio"][:, None])
    assert latent.shape == (2, 32, 75)  # ceil(24000 / 320) frames
    assert (latent - out["encoder_out"]).abs().max() <= 1e-4

    bb_cfg = cfg["model"]["init_args"]["backbone"]["init_args"]
    backbone = TinyVocosBackbone(*bb_cfg.values()).eval()
    bb_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    load_mapped_state_dict(backbone, bb_state, source="vocos backbone")
    posnet = backbone.pos_net(backbone.embed(out["features"]))
    assert (posnet - out["posnet_out"]).abs().max() <= 1e-4
    result = backbone(out["features"], inp["bandwidth_id"])
    assert result.shape == (2, 75, 64)
    assert (result - out["backbone_out"]).abs().max() <= 1e-4
