"""Next-token GPT and next-scale VAR: sampling filters by hand, KV cache = recomputation, CFG 1 = conditional,
EOS / variable length, text conditioning, official loaders and parity, VAR training on the fixture quantizer."""

from __future__ import annotations

import math

import pytest
import torch

from tokenforge.generators.autoregressive.gpt import GPT, IGNORE
from tokenforge.generators.sampling import cfg_weight, filter_logits, guide, logits_to_probs, sample
from tokenforge.hub import from_official, from_pretrained, save_pretrained
from tokenforge.parity import check


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_gpt(**kw) -> GPT:
    args = dict(vocab_size=32, seq_len=16, dim=32, depth=2, num_heads=4, multiple_of=32, num_classes=5)
    args.update(kw)
    model = GPT(**args)
    torch.nn.init.normal_(model.output.weight, std=0.5)  # the official init zeroes the head: make logits informative
    return model.eval()


# ----------------------------------------------------------------------------- sampling


def test_filters_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    p = logits.softmax(-1)[0]  # 0.644, 0.237, 0.087, 0.032
    kept = ~torch.isinf(filter_logits(logits, top_p=0.7))  # 0.644 < 0.7 -> the crossing token (0.237) is kept
    assert kept.tolist() == [[True, True, False, False]] and p[0] < 0.7 < p[0] + p[1]
    assert not torch.isinf(filter_logits(logits, top_p=0.0)).any()  # 0 = off (VAR convention)
    probs = logits_to_probs(logits, temperature=0.5, top_k=2)
    expected = torch.tensor([2.0, 1.0]).div(0.5).softmax(-1)
    assert torch.allclose(probs[0, :2], expected) and probs[0, 2:].sum() == 0
    assert sample(logits, greedy=True).item() == 0
    g = torch.Generator().manual_seed(0)
    draws = sample(logits.expand(2000, -1), top_k=2, generator=g)
    assert set(draws.tolist()) == {0, 1} and abs((draws == 0).float().mean() - 0.731) < 0.04


def test_cfg_schedules():
    assert cfg_weight("constant", 4.0, 0, 10) == 4.0
    assert cfg_weight("linear", 4.0, 0, 10) == 1.0 and cfg_weight("linear", 4.0, 9, 10) == 4.0
    assert cfg_weight("var", 1.5, 0, 7) == 1.0 and cfg_weight("var", 1.5, 6, 7) == 2.5
    cond, uncond = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.equal(guide(cond, uncond, 1.0), cond)
    assert torch.allclose(guide(cond, uncond, 3.0), 3 * cond - 2 * uncond, atol=1e-6)
    with pytest.raises(ValueError, match="unknown CFG schedule"):
        cfg_weight("cosine", 1.0, 0, 2)


# ----------------------------------------------------------------------------- GPT


@torch.no_grad()
def test_kv_cache_decoding_equals_full_recomputation():
    model = tiny_gpt()
    labels = torch.tensor([0, 3, 4])
    for kw in ({"greedy": True}, {"temperature": 1.3, "top_k": 10, "top_p": 0.9}, {"cfg": 3.0, "greedy": True},
               {"cfg": 2.0, "cfg_schedule": "linear", "top_k": 5}):
        with_cache = model.generate(3, labels, generator=torch.Generator().manual_seed(1), **kw)
        without = model.generate(3, labels, generator=torch.Generator().manual_seed(1), use_cache=False, **kw)
        assert with_cache.ids.shape == (3, 4, 4)
        assert torch.equal(with_cache.ids, without.ids), kw
    # the cached step logits equal the teacher-forcing logits position by position
    ids = model.generate(3, labels, greedy=True).ids.reshape(3, -1)
    full = model(ids, labels)
    model.setup_kv_cache(3)
    steps = [model.step(model.embed_condition(labels, 3), torch.arange(1))[:, -1]]
    steps += [model.decode_one(ids[:, t], torch.tensor([t + 1])) for t in range(15)]
    model.clear_kv_cache()
    assert (torch.stack(steps, 1) - full).abs().max() < 1e-4
    assert torch.equal(full.argmax(-1)[:, :], ids)  # greedy samples are the argmax of their own logits


@torch.no_grad()
def test_cfg_scale_one_equals_conditional_model():
    model = tiny_gpt()
    labels = torch.tensor([1, 2])
    guided = model.generate(2, labels, cfg=1.0, temperature=0.9, generator=torch.Generator().manual_seed(5))
    plain = model.generate(2, labels, temperature=0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(guided.ids, plain.ids)
    # with a guidance weight the null row matters, and the samples differ from the conditional ones
    strong = model.generate(2, labels, cfg=8.0, greedy=True).ids
    assert not torch.equal(strong, model.generate(2, labels, greedy=True).ids)


def test_label_dropout_only_in_training():
    model = tiny_gpt(class_dropout=1.0)
    ids, labels = torch.randint(0, 32, (2, 16)), torch.tensor([0, 1])
    with torch.no_grad():
        uncond = model(ids, torch.tensor([5, 5]))
        assert not torch.allclose(model(ids, labels), uncond)  # eval: labels used
        model.train().tok_dropout.p = 0.0
        for block in model.transformer.blocks:
            block.attn.proj_dropout.p = 0.0
            block.mlp.dropout.p = 0.0
        assert torch.allclose(model(ids, labels), uncond, atol=1e-6)  # train, p=1: always the null class


@torch.no_grad()
def test_eos_variable_length_sequences():
    model = tiny_gpt(layout="sequence", eos=True, num_classes=0, vocab_size=8)
    ids = torch.tensor([[3, 4, 5, -1], [1, 2, -1, -1]])
    targets = model.targets(ids, torch.tensor([3, 2]))
    assert targets.tolist() == [[3, 4, 5, 8, IGNORE], [1, 2, 8, IGNORE, IGNORE]]
    logits = model(ids)
    assert logits.shape == (2, 5, 9)
    # a head whose EOS logit always wins: every row ends at once (length 0, all padding)
    hook = model.output.register_forward_hook(lambda m, i, out: out.index_add(-1, torch.tensor([8]),
                                                                              torch.full_like(out[..., :1], 1e4)))
    tokens = model.generate(3, greedy=True)
    hook.remove()
    assert tokens.ids.shape == (3, 16) and tokens.lengths.tolist() == [0, 0, 0] and (tokens.ids == -1).all()
    tokens = model.generate(4, temperature=1.0, generator=torch.Generator().manual_seed(0))
    for row, length in zip(tokens.ids, tokens.lengths):
        assert (row[:length] >= 0).all() and (row[length:] == -1).all()


@pytest.mark.learning
def test_eos_training_loss_decreases():
    torch.manual_seed(0)
    model = tiny_gpt(layout="sequence", eos=True, num_classes=0, vocab_size=8, token_dropout=0.0,
                     resid_dropout=0.0, ffn_dropout=0.0).train()
    ids = torch.tensor([[1, 2, 3, 4, -1, -1], [5, 6, -1, -1, -1, -1], [1, 2, 3, 4, 5, 6]])
    lengths = torch.tensor([4, 2, 6])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = model.loss(ids, lengths=lengths)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


@torch.no_grad()
def test_text_conditioning_and_scales_layout():
    model = tiny_gpt(caption_dim=12, cls_token_num=3, num_classes=0, layout="scales", scale_lengths=[1, 4, 11])
    caption = torch.randn(2, 3, 12)
    logits = model(torch.randint(0, 32, (2, 16)), caption)
    assert logits.shape == (2, 16, 32)
    tokens = model.generate(2, caption, cfg=3.0, greedy=True)
    assert [t.shape for t in tokens.ids] == [(2, 1), (2, 4), (2, 11)]
    again = model.generate(2, caption, cfg=3.0, greedy=True, use_cache=False)
    assert all(torch.equal(a, b) for a, b in zip(tokens.ids, again.ids))
    with pytest.raises(ValueError, match="caption features"):
        model(torch.zeros(2, 16, dtype=torch.long), torch.tensor([1, 2]))


def test_save_pretrained_round_trip_and_bf16_rope(tmp_path):
    model = tiny_gpt(layout="sequence")
    save_pretrained(model, tmp_path / "gpt")
    again = from_pretrained(tmp_path / "gpt")
    ids = torch.randint(0, 32, (2, 16))
    assert torch.equal(model(ids, torch.tensor([0, 1])), again(ids, torch.tensor([0, 1])))
    half = again.to(torch.bfloat16)
    assert half.rope.dtype == torch.float32 and half.tok_embeddings.weight.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- official checkpoints


def test_llamagen_fixture_parity(fixtures_dir):
    lines = check(fixtures_dir / "llamagen")
    assert {line.name for line in lines} >= {"logits", "logits_kvcache", "greedy_cfg_tokens", "freqs_cis"}
    assert all(line.status == "ok" for line in lines), [str(line) for line in lines]


def test_var_transformer_fixture_parity(fixtures_dir):
    lines = {line.name: line for line in check(fixtures_dir / "var_msrq")}
    for name in ("var_logits_cond", "var_logits_uncond", "ar_greedy_img01"):
        assert lines[name].status == "ok", str(lines[name])


def test_llamagen_loader_reads_released_container_and_infers_sizes(fixtures_dir):
    root = fixtures_dir / "llamagen"
    model = from_official("llamagen", root / "checkpoint.pt", {"n_head": 4, "block_size": 16})
    assert (model.dim, len(model.transformer.blocks), model.vocab_size, model.num_classes) == (64, 2, 256, 10)
    with pytest.raises(Exception, match="head count"):
        from_official("llamagen", root / "checkpoint.pt")  # width 64 is not a released size


def test_var_loader_recomputes_official_buffers(fixtures_dir):
    from safetensors.torch import load_file

    model = from_official("var", fixtures_dir / "var_msrq")
    state = load_file(fixtures_dir / "var_msrq" / "var_state_dict.safetensors")
    assert torch.equal(model.levels, state["lvl_1L"][0])
    assert torch.equal(model.mask, state["attn_bias_for_masking"][0, 0] == 0)


@pytest.mark.learning
def test_var_trains_on_fixture_quantizer(fixtures_dir):
    """Teacher forcing with the quantizer's inputs: loss drops on one real batch; sampling fits the quantizer."""
    torch.manual_seed(0)
    vqvae = from_official("var_vqvae", fixtures_dir / "var_msrq")
    from safetensors.torch import load_file

    img = load_file(fixtures_dir / "var_msrq" / "inputs.safetensors")["img"]
    from tokenforge.generators.autoregressive.var import VAR

    model = VAR(vocab_size=64, cvae=8, patch_nums=[1, 2, 3, 4, 5, 6, 8], depth=2, embed_dim=32, num_heads=2,
                num_classes=10, cond_drop_rate=0.0, drop_path_rate=0.0).attach_quantizer(vqvae.quantizer)
    ids = vqvae.encode(img).ids
    labels = torch.tensor([4, 5])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model.loss(labels, ids)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] == pytest.approx(math.log(64), abs=0.2) and losses[-1] < 0.5 * losses[0]
    model.eval()
    tokens = model.generate(2, labels, cfg=0.0, greedy=True)
    assert [t.shape[1] for t in tokens.ids] == [1, 4, 9, 16, 25, 36, 64]
    assert vqvae.decode(tokens).shape == (2, 3, 16, 16)
    # greedy sampling after overfitting reproduces the training ids at the first scales
    assert torch.equal(tokens.ids[0], ids[0]) and torch.equal(tokens.ids[1], ids[1])


@pytest.mark.gpu
@torch.no_grad()
def test_cuda_cached_compiled_and_recomputed_sampling_agree():
    model = tiny_gpt().cuda()
    labels = torch.tensor([0, 1, 2, 3], device="cuda")
    eager = model.generate(4, labels, cfg=2.0, greedy=True).ids
    assert torch.equal(eager, model.generate(4, labels, cfg=2.0, greedy=True, use_cache=False).ids)
    assert torch.equal(eager, model.generate(4, labels, cfg=2.0, greedy=True, compile=True).ids)
    half = model.to(torch.bfloat16)
    tokens = half.generate(4, labels, cfg=2.0, top_k=8, generator=torch.Generator("cuda").manual_seed(0)).ids
    assert tokens.shape == (4, 4, 4) and int(tokens.min()) >= 0 and int(tokens.max()) < 32


def test_armodule_var_batches_schedule_and_ema(fixtures_dir):
    from safetensors.torch import load_file

    from tokenforge.generators.autoregressive.module import ARModule
    from tokenforge.generators.autoregressive.var import VAR

    folder = fixtures_dir / "var_msrq"
    var = VAR(vocab_size=64, cvae=8, patch_nums=[1, 2, 3, 4, 5, 6, 8], depth=2, embed_dim=32, num_heads=2,
              num_classes=10)
    module = ARModule(var, tokenizer=f"official:var_vqvae:{folder}", warmup_steps=10, min_lr_ratio=0.1,
                      ema_decay=0.5)
    img = load_file(folder / "inputs.safetensors")["img"]
    ids = from_official("var_vqvae", folder).encode(img).ids
    batch = {"ids": torch.cat(ids, dim=1), "cls": torch.tensor([4, 5])}  # token shards store scales concatenated
    assert module.nll(module.model, batch).item() == pytest.approx(var.loss(batch["cls"], ids).item(), abs=1e-3)
    factor = module.lr_factor(110)
    assert factor(0) == pytest.approx(0.1) and factor(9) == 1.0 and factor(110) == pytest.approx(0.1)
    assert factor(60) == pytest.approx(0.55)  # half-way through the cosine: (1 + 0.1) / 2
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    before = next(module.ema.parameters()).clone()
    module.on_train_batch_end(None, batch, 0)
    assert torch.allclose(next(module.ema.parameters()), before + 0.5)
    with pytest.raises(ValueError, match="ids per sample"):
        module.nll(module.model, {"ids": batch["ids"][:, :-1], "cls": batch["cls"]})


def test_armodule_compiled_forward_gives_the_eager_loss(monkeypatch):
    """`compile=True` trains through torch.compile of `GPT.loss` (eager backend here: the routing is what matters)."""
    from tokenforge.generators.autoregressive.module import ARModule

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager"))
    torch.manual_seed(0)
    gpt = GPT(vocab_size=32, seq_len=16, layout="grid", dim=32, depth=1, num_heads=2, multiple_of=32, num_classes=3)
    compiled, eager = ARModule(gpt, compile=True), ARModule(gpt)
    batch = {"ids": torch.randint(0, 32, (4, 4, 4)), "cls": torch.tensor([0, 1, 2, 0])}
    compiled.train(), eager.train()
    torch.manual_seed(1)
    a = compiled.train_loss(batch)
    torch.manual_seed(1)
    b = eager.nll(eager.model, batch)
    assert compiled._compiled and torch.allclose(a, b, atol=1e-6) and a.item() > 0
    assert compiled._compiled[0]._torchdynamo_orig_callable == gpt.loss  # forward + cross-entropy compiled together
