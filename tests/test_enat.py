"""ENAT: official parity (fixture incl. the 8-step sampler replay), the MAGE VQGAN, reuse relations, sampler."""

from __future__ import annotations

import math

import pytest
import torch

from tokenforge.generators.enat.model import ENAT
from tokenforge.generators.enat.sampler import enat_generate, from_cli_options, mask_count, sampling_temperature
from tokenforge.hub import from_official
from tokenforge.parity import check
from tokenforge.tokenizers.vqgan.mage import MageVQGAN


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(seed: int = 0, **kw) -> ENAT:
    torch.manual_seed(seed)
    model = ENAT(**{"seq_len": 16, "hidden_size": 32, "num_heads": 4, "enc_depth": 2, "dec_depth": 1,
                    "codebook_size": 12, "num_classes": 3, **kw}).eval()
    with torch.no_grad():  # random adaLN (official init zeroes it, which would make every block the identity)
        for blk in model.blocks:
            blk.adaLN_modulation[-1].weight.normal_(0, 0.05)
    return model


def test_fixture_parity_including_sampler_replay(fixtures_dir):
    lines = check(fixtures_dir / "enat", "enat")
    failed = [str(line) for line in lines if line.status != "ok"]
    assert not failed, failed
    names = {line.name for line in lines}
    assert {"gen_final_ids", "gen_ids_in", "step2_reuse_logits", "vq_decode_code"} <= names


def test_official_loaders_read_sizes_from_weights(fixtures_dir):
    model = from_official("enat", fixtures_dir / "enat")
    assert isinstance(model, ENAT) and (model.seq_len, model.codebook_size, model.enc_depth) == (64, 1024, 2)
    assert not hasattr(model, "prev_embedder")  # built but unused officially: dropped on load
    vq = from_official("mage_vqgan", fixtures_dir / "enat")
    assert isinstance(vq, MageVQGAN) and vq.downsample_factor == 2 and vq.vocab_size == 1024
    # the shortcut quirk: widening res blocks project h (out->out), not x
    assert vq.encoder.conv_blocks[1].res[0].nin_shortcut.weight.shape == (64, 64, 1, 1)


def test_mage_vqgan_contract_range(fixtures_dir):
    """encode/decode use tokenforge's [-1, 1]; the official maps use [0, 1]."""
    from safetensors.torch import load_file

    vq = from_official("mage_vqgan", fixtures_dir / "enat")
    img01 = load_file(str(fixtures_dir / "enat" / "inputs.safetensors"))["vq_image"]
    with torch.no_grad():
        tokens = vq.encode(img01 * 2 - 1)
        expected = vq.quantizer.encode(vq.features01(img01))
        assert torch.equal(tokens.ids, expected) and tokens.ids.shape == (2, 16, 16)
        out = vq.decode(tokens)
        assert out.min() >= -1 and out.max() <= 1
        assert torch.allclose(out, (vq.decode_code01(tokens.ids) * 2 - 1).clamp(-1, 1))


def test_schedule_matches_spec():
    assert [mask_count(256, s, 8) for s in range(8)] == [251, 236, 212, 181, 142, 97, 49, 0]
    assert [round(sampling_temperature(6.0, s, 8), 4) for s in range(8)] == [5.25, 4.5, 3.75, 3.0, 2.25, 1.5, 0.75,
                                                                              0.001]


def test_forward_shapes_and_bad_input():
    model = tiny()
    ids = torch.randint(0, 12, (2, 16))
    ids[:, ::2] = 12
    out = model(ids, torch.tensor([0, 3]))
    assert out.logits.shape == (2, 16, 12) and out.feat.shape == (2, 16, 32)
    assert torch.equal(out.masking, ids == 12)
    ragged = ids.clone()
    ragged[0, 1] = 12
    with pytest.raises(ValueError, match="same number"):
        model(ragged, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="inside the previous"):
        model(torch.full((2, 16), 12), torch.tensor([0, 1]), prev=out)  # re-masking visible tokens


def test_head_is_tied_without_gradient_into_embeddings():
    model = tiny().train()
    ids = torch.randint(0, 12, (2, 16))
    ids[:, :8] = 12
    model(ids, torch.tensor([0, 1])).logits.sum().backward()
    grad = model.x_embedder.word_embeddings.weight.grad
    # rows of tokens absent from the input get no gradient: the output head's use is detached
    unused = sorted(set(range(13)) - set(ids.flatten().tolist()))
    assert unused and grad[unused].abs().max() == 0


def test_reuse_equals_no_reuse_with_identity_encoder_and_projection():
    """Why reuse and no-reuse differ in general: with reuse, old visible tokens keep prev_proj(previous
    features) and new ones see them only as context, while no-reuse re-encodes all visible tokens jointly.
    When every encoder block is the identity (zero adaLN gate, the official init) and prev_proj is the
    identity (zero fc2), both give the embeddings at the visible positions, so the decoder sees the same
    context: logits and the sampled ids agree exactly, with random decoder weights."""
    model = tiny()
    with torch.no_grad():
        for blk in model.encoder:
            blk.adaLN_modulation[-1].weight.zero_()
            blk.adaLN_modulation[-1].bias.zero_()
        model.prev_proj.mlp.fc2.weight.zero_()
        model.prev_proj.mlp.fc2.bias.zero_()
    labels = torch.tensor([1, 2])
    kw = dict(steps=6, cfg_scale=2.0, generator=None)
    a = enat_generate(model, 2, labels, reuse=True, **{**kw, "generator": torch.Generator().manual_seed(5)})
    b = enat_generate(model, 2, labels, reuse=False, **{**kw, "generator": torch.Generator().manual_seed(5)})
    assert torch.equal(a.ids, b.ids)

    fresh = tiny(seed=1)  # random encoder: the relation breaks, as the fixture's step2_noreuse_logits shows
    ids1 = torch.randint(0, 12, (2, 16))
    ids1[:, 4:] = 12
    ids2 = ids1.clone()
    ids2[:, 4:8] = torch.randint(0, 12, (2, 4))
    prev = fresh(ids1, labels)
    assert not torch.allclose(fresh(ids2, labels, prev=prev).logits, fresh(ids2, labels).logits, atol=1e-3)
    # the first reuse step (nothing visible before) has an empty context: reuse == no-reuse exactly
    empty = fresh(torch.full((2, 16), 12), labels)
    assert torch.allclose(fresh(ids1, labels, prev=empty).logits, fresh(ids1, labels).logits, atol=1e-5)


def test_sampler_reveals_on_schedule_and_is_seeded():
    model = tiny()
    labels = torch.tensor([0, 2, 1])
    run = lambda seed, **kw: enat_generate(model, 3, labels, steps=5, return_trace=True,  # noqa: E731
                                           generator=torch.Generator().manual_seed(seed), **kw)
    a, b, c = run(0), run(0), run(1)
    assert a.ids.shape == (3, 4, 4) and a.ids.min() >= 0 and a.ids.max() < 12
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    masked = (a.meta["ids_in"] == 12).sum(-1)[:, 0].tolist()
    assert masked == [16] + [mask_count(16, s, 5) for s in range(4)]
    # revealed tokens are never changed later
    for s in range(1, 5):
        prev, cur = a.meta["ids_in"][s - 1], a.meta["ids_in"][s]
        keep = prev != 12
        assert torch.equal(cur[keep], prev[keep])
    final = a.ids.reshape(3, -1)
    last = a.meta["ids_in"][-1]
    assert torch.equal(final[last != 12], last[last != 12])
    m = run(0, mode="maskgit")
    assert m.ids.shape == (3, 4, 4)
    # log-probs are normalised and guidance at step 0 is off (w = 0): logp == log_softmax(cond)
    cond = model(torch.full((3, 16), 12), labels).logits
    assert torch.allclose(a.meta["logp"][0], torch.log_softmax(cond, -1), atol=1e-5)


def test_cli_option_mapping():
    assert from_cli_options({"cfg": 3.0, "temperature": 0.5, "top_k": 0, "compile": False}) == {
        "cfg_scale": 3.0, "samp_temp": 3.0}
    with pytest.raises(ValueError, match="top-k"):
        from_cli_options({"top_k": 5})
    with pytest.raises(ValueError, match="greedy"):
        from_cli_options({"greedy": True})
    assert math.isclose(from_cli_options({"temperature": 1.0})["samp_temp"], 6.0)


@pytest.mark.gpu
def test_cuda_matches_fixture_and_samples_in_bf16(fixtures_dir):
    from safetensors.torch import load_file

    torch.backends.cuda.matmul.allow_tf32 = False
    folder = fixtures_dir / "enat"
    inp, exp = load_file(str(folder / "inputs.safetensors")), load_file(str(folder / "outputs.safetensors"))
    model = from_official("enat", folder).cuda()
    with torch.no_grad():
        s1 = model(inp["ids_step1"].cuda(), inp["labels"].cuda())
        s2 = model(inp["ids_step2"].cuda(), inp["labels"].cuda(), prev=s1)
    assert (s2.logits.cpu() - exp["step2_reuse_logits"]).abs().max() < 1e-3
    replay = enat_generate(model, 2, inp["gen_labels"].cuda(),
                           noise={"draws": inp["gen_sampled_ids"], "gumbel": inp["gen_gumbel"]})
    assert torch.equal(replay.ids.reshape(2, -1).cpu(), exp["gen_final_ids"])
    tokens = enat_generate(model.to(torch.bfloat16), 8, torch.arange(8).cuda(),
                           generator=torch.Generator("cuda").manual_seed(0))
    assert tokens.ids.shape == (8, 8, 8) and 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < 1024
