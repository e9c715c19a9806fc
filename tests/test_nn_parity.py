"""tokenforge.nn layers assembled into the official LlamaGen GPT and VAR transformers reproduce their fixtures.

These tests exercise the shared layers against outputs of the official code (random weights, CPU float32):
RMSNorm + fused-qkv attention + 2D RoPE (with its zeroed condition row) + SwiGLU + KV cache for LlamaGen,
and adaLN 6-way + L2-normalised attention with q/v biases + block-causal mask + GELU(tanh) MLP for VAR.
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
    AdaLNModulation,
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
            block_options={"order": "var", "norm_eps": cfg["norm_eps"], "mlp": "gelu_tanh",
                           "mlp_ratio": cfg["mlp_ratio"],
                           "attn_options": {"qkv": "fused", "qv_bias": True, "out_bias": True, "l2_norm_qk": True}},
        )
        self.head_norm = LayerNorm(dim, eps=cfg["norm_eps"])
        self.head_ada = AdaLNModulation(dim, order="var_head")
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
