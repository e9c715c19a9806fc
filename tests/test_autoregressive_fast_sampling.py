"""The capturable GPT sampling step: Gumbel-max = multinomial over the filtered softmax, greedy exact, tensor
CFG weights, seeded determinism, cached = recomputed, and the step / training forward compile without breaks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenforge.generators.autoregressive.decoding import StepSettings, choose, guidance_weights, make_decode_step
from tokenforge.generators.autoregressive.gpt import GPT
from tokenforge.generators.sampling import filter_logits, guide, gumbel_noise, logits_to_probs, sample_with_noise

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_gpt(**kw) -> GPT:
    args = dict(vocab_size=32, seq_len=16, dim=32, depth=2, num_heads=4, multiple_of=32, num_classes=5)
    args.update(kw)
    torch.manual_seed(0)
    model = GPT(**args)
    torch.nn.init.normal_(model.output.weight, std=0.5)  # the official init zeroes the head
    return model.eval()


# ----------------------------------------------------------------------------- the sampler


def test_gumbel_max_draws_the_filtered_softmax():
    """Chi-square of 200k draws per row against `logits_to_probs`; the drawn support is exactly the kept set."""
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.3, -0.5, -1.0, 0.9, 1.2],
                           [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 3.0, -2.0]])
    draws_per_row = 200_000
    for kw in ({"temperature": 0.8, "top_k": 5}, {"temperature": 1.3, "top_p": 0.8}, {"top_k": 6, "top_p": 0.9},
               {"temperature": 1.0}):
        probs = logits_to_probs(logits, **kw)
        big = logits.repeat_interleave(draws_per_row, 0)
        noise = gumbel_noise(big.shape, torch.Generator().manual_seed(0))
        draws = sample_with_noise(big, noise, **kw).reshape(2, draws_per_row)
        for row in range(2):
            counts = torch.bincount(draws[row], minlength=8).double()
            support = probs[row] > 0
            assert torch.equal(counts > 0, support), kw  # filtered tokens are never drawn, kept ones are
            expected = probs[row].double()[support] * draws_per_row
            chi2 = ((counts[support] - expected) ** 2 / expected).sum().item()
            # 7 degrees of freedom at most: P(chi2 > 35) < 1e-5 for the true distribution
            assert chi2 < 35.0, (kw, row, chi2)
    # a wrong distribution fails the same test: draws at temperature 1 against probabilities at temperature 0.5
    noise = gumbel_noise((draws_per_row, 8), torch.Generator().manual_seed(1))
    counts = torch.bincount(sample_with_noise(logits[:1].expand(draws_per_row, -1), noise), minlength=8).double()
    wrong = logits_to_probs(logits[:1], temperature=0.5)[0].double() * draws_per_row
    assert ((counts - wrong) ** 2 / wrong).sum().item() > 1000


def test_greedy_is_the_exact_argmax_and_filters_match():
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(3))
    noise = gumbel_noise(logits.shape, torch.Generator().manual_seed(4))
    assert torch.equal(sample_with_noise(logits, noise, top_k=5, top_p=0.5, greedy=True), logits.argmax(-1))
    # zero temperature (clamped to 1e-5) is greedy too, through the noise path
    assert torch.equal(sample_with_noise(logits, noise, temperature=0.0), logits.argmax(-1))
    # every draw lies in the filtered support
    kept = ~torch.isinf(filter_logits(logits, top_k=7, top_p=0.6))
    draws = sample_with_noise(logits, noise, top_k=7, top_p=0.6)
    assert kept.gather(1, draws[:, None]).all()


def test_tensor_guidance_weight_and_schedule():
    cond, uncond = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.equal(guide(cond, uncond, torch.tensor(1.0)), cond)  # exact, no host branch
    assert torch.allclose(guide(cond, uncond, torch.tensor(3.0)), 3 * cond - 2 * uncond, atol=1e-6)
    assert guidance_weights(4.0, "constant", -1, 4).tolist() == [4.0, 4.0, 4.0, 4.0]
    assert guidance_weights(4.0, "linear", -1, 4).tolist() == [1.0, 2.0, 3.0, 4.0]
    assert guidance_weights(4.0, "constant", 1, 4).tolist() == [4.0, 4.0, 1.0, 1.0]  # LlamaGen's cfg_interval


# ----------------------------------------------------------------------------- GPT.generate


@torch.no_grad()
def test_seeded_determinism_and_cache_equals_recomputation():
    model = tiny_gpt()
    labels = torch.tensor([0, 3, 4])
    for kw in ({"temperature": 1.2, "top_k": 10, "top_p": 0.9}, {"cfg": 3.0, "top_k": 8},
               {"cfg": 2.5, "cfg_interval": 5, "top_p": 0.95}):
        first = model.generate(3, labels, generator=torch.Generator().manual_seed(7), **kw).ids
        again = model.generate(3, labels, generator=torch.Generator().manual_seed(7), **kw).ids
        other = model.generate(3, labels, generator=torch.Generator().manual_seed(8), **kw).ids
        recomputed = model.generate(3, labels, generator=torch.Generator().manual_seed(7), use_cache=False, **kw).ids
        assert first.shape == (3, 4, 4) and first.min() >= 0 and first.max() < 32
        assert torch.equal(first, again) and torch.equal(first, recomputed), kw
        assert not torch.equal(first, other), kw


@torch.no_grad()
def test_cfg_weight_one_in_the_guided_step_is_the_conditional_model():
    """A linear schedule from 1 to 1 runs the doubled batch, but every torch.where picks the conditional logits."""
    model = tiny_gpt()
    labels = torch.tensor([1, 2])
    guided = model.generate(2, labels, cfg=1.0, cfg_schedule="linear", temperature=0.9,
                            generator=torch.Generator().manual_seed(5))
    plain = model.generate(2, labels, temperature=0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(guided.ids, plain.ids)
    strong = model.generate(2, labels, cfg=8.0, temperature=0.9, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(strong.ids, plain.ids)


@torch.no_grad()
def test_fused_and_multinomial_paths_agree_on_greedy_and_in_distribution():
    model = tiny_gpt()
    labels = torch.tensor([0, 1, 2, 3])
    fused = model.generate(4, labels, cfg=3.0, greedy=True).ids
    assert torch.equal(fused, model.generate(4, labels, cfg=3.0, greedy=True, multinomial=True).ids)
    # first-token frequencies of both samplers over 4000 rows, one class: the same distribution
    n = 4000
    a = model.generate(n, 2, max_len=1, top_k=6, generator=torch.Generator().manual_seed(0)).ids[:, 0]
    b = model.generate(n, 2, max_len=1, top_k=6, multinomial=True, generator=torch.Generator().manual_seed(0)).ids[:, 0]
    first_logits = model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([2]))[:, 0]  # condition only
    probs = logits_to_probs(first_logits, top_k=6)[0]
    for draws in (a, b):
        counts = torch.bincount(draws, minlength=32).double()
        assert not ((counts > 0) & (probs == 0)).any()  # nothing outside the top-6
        assert (counts / n - probs).abs().max() < 0.03


@torch.no_grad()
def test_eos_rows_stop_with_the_fused_step():
    model = tiny_gpt(layout="sequence", eos=True, num_classes=0, vocab_size=8)
    tokens = model.generate(6, temperature=1.0, generator=torch.Generator().manual_seed(0))
    again = model.generate(6, temperature=1.0, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(tokens.ids, again.ids) and torch.equal(tokens.lengths, again.lengths)
    for row, length in zip(tokens.ids, tokens.lengths):
        assert (row[:length] >= 0).all() and (row[:length] < 8).all() and (row[length:] == -1).all()


# ----------------------------------------------------------------------------- compile without graph breaks


@torch.no_grad()
def test_decode_step_compiles_fullgraph_and_matches_eager():
    torch._dynamo.reset()
    model = tiny_gpt()
    settings = StepSettings(n=2, guided=True, temperature=0.9, top_k=8, top_p=0.9)
    cond = torch.cat([model.embed_condition(torch.tensor([1, 4]), 2), model.null_condition(2)])
    weights = guidance_weights(3.0, "linear", -1, 16)
    noise = gumbel_noise((2, 32), torch.Generator().manual_seed(0))
    step = make_decode_step(model, settings)
    explained = torch._dynamo.explain(step)
    model.setup_kv_cache(4)
    logits = model.step(cond, torch.arange(1))[:, -1]
    token = choose(logits, weights[0], noise, settings)
    feed = token.repeat(2)
    report = explained(feed, torch.tensor([1]), weights[1], noise)
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons
    # the same steps eager and compiled (fullgraph, aot_eager: autograd-free tracing as inductor sees it)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    results = {}
    for name, fn in (("eager", step), ("compiled", compiled)):
        model.setup_kv_cache(4)
        model.step(cond, torch.arange(1))
        current, ids = feed, []
        for i in range(1, 6):
            token, current = fn(current, torch.tensor([i]), weights[i], noise)
            ids.append(token)
        results[name] = torch.stack(ids, 1)
    model.clear_kv_cache()
    assert torch.equal(results["eager"], results["compiled"])


@torch.no_grad()
def test_generate_compile_flag_uses_the_whole_step(monkeypatch):
    """``compile=True`` compiles the fused step with fullgraph (eager backend here) and draws the same tokens."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    real_compile, calls = torch.compile, []

    def fake_compile(fn, **kw):
        calls.append(kw)
        return real_compile(fn, backend="eager", fullgraph=kw.get("fullgraph", False))

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = tiny_gpt()
    labels = torch.tensor([2, 0])
    kw = {"cfg": 4.0, "top_k": 10, "temperature": 1.1}
    compiled = model.generate(2, labels, compile=True, generator=torch.Generator().manual_seed(3), **kw).ids
    assert calls and calls[0] == {"mode": "reduce-overhead", "fullgraph": True, "dynamic": False}
    assert model.transformer.blocks[0].attn.kv_cache is not None  # kept for stable CUDA-graph addresses
    cache = model.transformer.blocks[0].attn.kv_cache.k
    twice = model.generate(2, labels, compile=True, generator=torch.Generator().manual_seed(3), **kw).ids
    assert model.transformer.blocks[0].attn.kv_cache.k is cache
    # another guidance schedule reuses the graph: the weight is a tensor input, positions a slice
    model.generate(2, labels, compile=True, cfg=2.0, cfg_schedule="linear", top_k=10, temperature=1.1)
    assert counters["stats"]["unique_graphs"] == 1  # one graph for all steps of all three calls: no recompiles
    model.clear_kv_cache()
    eager = model.generate(2, labels, generator=torch.Generator().manual_seed(3), **kw).ids
    assert torch.equal(compiled, eager) and torch.equal(twice, eager)


def test_training_forward_and_loss_have_no_graph_breaks():
    torch._dynamo.reset()
    model = tiny_gpt().train()
    ids, labels = torch.randint(0, 32, (2, 4, 4)), torch.tensor([1, 2])
    with torch.autocast("cpu", torch.bfloat16):
        report = torch._dynamo.explain(model.loss)(ids, labels)
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons
    report = torch._dynamo.explain(lambda i, c: F.cross_entropy(model(i, c).flatten(0, 1), i.flatten()))(ids, labels)
    assert report.graph_break_count == 0, report.break_reasons


@pytest.mark.gpu
@torch.no_grad()
def test_cuda_graph_step_is_seeded_and_agrees_with_eager_on_greedy():
    """On CUDA: the reduce-overhead (CUDA-graph) step repeats its draws for a seed and equals eager when greedy."""
    model = tiny_gpt().cuda()
    labels = torch.tensor([0, 1, 2, 3], device="cuda")
    kw = {"cfg": 4.0, "top_k": 8}
    runs = [model.generate(4, labels, compile=True, generator=torch.Generator("cuda").manual_seed(0), **kw).ids
            for _ in range(3)]  # first call records the graph, the others replay it
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[1], runs[2])
    assert int(runs[0].min()) >= 0 and int(runs[0].max()) < 32
    greedy = model.generate(4, labels, cfg=4.0, greedy=True, compile=True).ids
    model.clear_kv_cache()
    assert torch.equal(greedy, model.generate(4, labels, cfg=4.0, greedy=True).ids)
