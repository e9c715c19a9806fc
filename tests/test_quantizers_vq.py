"""VectorQuantizer: hand nearest neighbours, round trips, STE, losses, EMA by hand, dead codes, k-means, real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tokenforge.hub import from_pretrained, load_mapped_state_dict, save_pretrained
from tokenforge.tokenizers.quantizers import QuantizerOutput, VectorQuantizer

CODES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])


def with_codebook(codebook: torch.Tensor, **kwargs) -> VectorQuantizer:
    vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], **kwargs)
    vq.embedding.weight.data.copy_(codebook)
    if kwargs.get("ema"):
        vq.embed_avg.copy_(codebook)
    return vq


def image_pixels(shared_data, name: str = "astronaut.png", side: int = 32) -> torch.Tensor:
    """A real RGB photo, resized to side x side, as [1, 3, side, side] in [-1, 1]."""
    img = Image.open(shared_data / "images" / name).convert("RGB").resize((side, side), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


def test_hand_computed_nearest_neighbours_l2_and_cosine():
    # points as channel-first sequence [1, 2, L]
    pts = torch.tensor([[0.1, 0.2], [0.9, 0.3], [0.2, 0.7], [4.0, 3.5], [0.45, 0.4]]).T[None]
    vq = with_codebook(CODES).eval()
    assert vq.encode(pts).tolist() == [[0, 1, 2, 3, 0]]
    # cosine ignores length: angles 63, 18, 74, 41, 42 deg vs codes at 0, 90, 45 deg
    vq_cos = with_codebook(CODES[1:], distance="cosine").eval()  # (0,0) has no direction
    assert vq_cos.encode(pts).tolist() == [[2, 0, 1, 2, 2]]
    # l2_normalize (LlamaGen): lookup and output on the unit circle
    vq_n = with_codebook(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]), l2_normalize=True).eval()
    out = vq_n(pts)
    assert out.indices.tolist() == [[1, 0, 1, 0, 0]]
    assert torch.allclose(out.quantized[0].T, torch.tensor([[0.0, 1.0], [1, 0], [0, 1], [1, 0], [1, 0]]))


def test_decode_encode_round_trip_on_grids():
    vq = VectorQuantizer(16, 4).eval()
    vq.embedding.weight.data.copy_(torch.randn(16, 4) * 3)
    idx = torch.randint(0, 16, (2, 5, 6))
    codes = vq.decode(idx)
    assert codes.shape == (2, 4, 5, 6)
    assert torch.equal(vq.encode(codes), idx)
    assert torch.equal(codes[1, :, 2, 3], vq.embedding.weight[idx[1, 2, 3]].detach())


def test_straight_through_gradient_and_learned_losses():
    vq = with_codebook(CODES, beta=0.25, codebook_weight=0.5)
    z = torch.tensor([[0.1, 0.2], [0.9, 0.3], [4.0, 3.5]]).T[None].requires_grad_()
    out = vq(z)
    assert isinstance(out, QuantizerOutput) and out.quantized.shape == z.shape
    q = CODES[[0, 1, 3]].T[None]
    mse = ((q - z.detach()) ** 2).mean()
    assert out.loss.item() == pytest.approx((0.5 + 0.25) * mse.item(), rel=1e-6)
    assert torch.allclose(out.quantized, q)
    upstream = torch.randn_like(z)
    (out.quantized * upstream).sum().backward(retain_graph=True)
    assert torch.equal(z.grad, upstream)  # grad of input == grad of output
    z.grad = None
    out.loss.backward()
    # codebook term moves used codes towards the data, commitment pulls z towards the codes
    grad = vq.embedding.weight.grad
    assert torch.allclose(grad[3], 0.5 * 2 * (CODES[3] - z.detach()[0, :, 2]) / 6)
    assert grad[2].abs().sum() == 0
    assert torch.allclose(z.grad, 0.25 * 2 * (z.detach() - q) / 6)


def test_ema_update_matches_hand_computation():
    vq = with_codebook(torch.tensor([[0.0], [10.0]]), ema=True, decay=0.5, epsilon=1e-5, beta=1.0)
    vq.cluster_size.copy_(torch.tensor([2.0, 2.0]))
    vq.embed_avg.copy_(torch.tensor([[0.0], [20.0]]))
    assert not vq.embedding.weight.requires_grad
    z = torch.tensor([[[1.0, 2.0, 9.0]]])  # [B=1, C=1, L=3]: assignments 0, 0, 1
    vq.eval()
    vq(z)
    assert vq.cluster_size.tolist() == [2.0, 2.0]  # eval never updates
    out = vq.train()(z)
    assert out.indices.tolist() == [[0, 0, 1]]
    assert out.loss.item() == pytest.approx(((1 - 0) ** 2 + 2**2 + (9 - 10) ** 2) / 3)
    cs = [0.5 * 2 + 0.5 * 2, 0.5 * 2 + 0.5 * 1]  # counts (2, 1)
    avg = [0.5 * 0 + 0.5 * 3, 0.5 * 20 + 0.5 * 9]  # sums (3, 9)
    total, eps = sum(cs), 1e-5
    smoothed = [(c + eps) / (total + 2 * eps) * total for c in cs]
    assert vq.cluster_size.tolist() == pytest.approx(cs)
    assert vq.embed_avg.flatten().tolist() == pytest.approx(avg)
    assert vq.embedding.weight.flatten().tolist() == pytest.approx([avg[0] / smoothed[0], avg[1] / smoothed[1]])


@pytest.mark.parametrize("ema", [True, False])
def test_dead_code_is_restarted_from_a_batch_vector(ema):
    vq = with_codebook(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-50.0, -50.0]]), ema=ema, dead_code_threshold=1.0)
    vq.cluster_size.copy_(torch.tensor([5.0, 5.0, 0.0]))
    if ema:
        vq.embed_avg.copy_(vq.embedding.weight.detach() * 5.0)
    z = torch.rand(2, 2, 8)  # all near codes 0/1, code 2 is never used
    out = vq.train()(z)
    assert out.metrics["dead_codes_replaced"].item() == 1.0
    rows = z.permute(0, 2, 1).reshape(-1, 2)
    new = vq.embedding.weight.detach()[2]
    assert (rows - new).abs().sum(1).min() == 0  # exactly one of the batch vectors
    assert vq.cluster_size[2].item() == 1.0
    if ema:
        assert torch.allclose(vq.embed_avg[2], new * 1.0)
    assert vq.train()(z).metrics["dead_codes_replaced"].item() >= 0  # keeps running


def test_kmeans_init_puts_codes_at_data_clusters():
    centers = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    gen = torch.Generator().manual_seed(1)
    points = (centers.repeat_interleave(40, 0) + 0.1 * torch.randn(120, 2, generator=gen))
    z = points.T[None]  # [1, 2, 120]
    vq = VectorQuantizer(3, 2, ema=True, kmeans_init=True, kmeans_iters=10)
    assert vq.embedding.weight.abs().sum() == 0 and vq.inited.item() == 0
    vq.eval()(z)
    assert vq.inited.item() == 0  # eval never initialises
    vq.train()(z)
    assert vq.inited.item() == 1
    codes = vq.embedding.weight.detach()
    for c in centers:
        assert (codes - c).norm(dim=1).min() < 0.1
    # after k-means + one EMA step, cluster sizes are the 40 points each
    assert vq.cluster_size.tolist() == pytest.approx([40.0] * 3, rel=1e-4)
    before = codes.clone()
    vq.train()(z)  # no second k-means
    assert torch.allclose(vq.embedding.weight, before, atol=1e-3)


@pytest.mark.learning
def test_learned_codebook_loss_decreases_on_a_real_image(shared_data):
    img = image_pixels(shared_data)
    vq = VectorQuantizer(16, 3, beta=0.25)
    opt = torch.optim.Adam(vq.parameters(), lr=5e-2)
    losses = []
    for _ in range(40):
        out = vq.train()(img)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]
    recon = vq.eval().decode(vq.encode(img))
    assert F.mse_loss(recon, img) < F.mse_loss(img.mean((2, 3), keepdim=True).expand_as(img), img)
    assert 0 < out.metrics["usage"].item() <= 1 and out.metrics["perplexity"].item() > 1
    # k-means on the same photo starts far better than the untrained codebook did
    km = VectorQuantizer(16, 3, beta=0.25, kmeans_init=True, kmeans_iters=5).train()
    assert km(img).loss.item() < 0.5 * losses[0]
    assert km(img).metrics["usage"].item() > 0.5


def test_state_dict_names_map_from_official_layouts(tmp_path):
    # WavTokenizer / EnCodec EuclideanCodebook buffers
    wav = VectorQuantizer(8, 4, ema=True, kmeans_init=True, beta=1.0)
    assert set(wav.state_dict()) == {"embedding.weight", "cluster_size", "embed_avg", "inited"}
    prefix = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
    official = {prefix + "embed": torch.randn(8, 4), prefix + "cluster_size": torch.rand(8),
                prefix + "embed_avg": torch.randn(8, 4), prefix + "inited": torch.ones(1)}
    load_mapped_state_dict(wav, official, [(r"^.*_codebook\.", ""), (r"^embed$", "embedding.weight")])
    assert torch.equal(wav.embedding.weight, official[prefix + "embed"]) and wav.inited.item() == 1
    # LlamaGen VQModel.quantize
    llama = VectorQuantizer(16, 8, l2_normalize=True)
    assert set(llama.state_dict()) == {"embedding.weight"}
    load_mapped_state_dict(llama, {"quantize.embedding.weight": torch.randn(16, 8)}, [(r"^quantize\.", "")])
    # our own format round trip keeps buffers and config
    wav.cluster_size.fill_(3.0)
    back = from_pretrained(save_pretrained(wav, tmp_path / "vq"))
    assert isinstance(back, VectorQuantizer) and back.ema and back.kmeans_init
    assert torch.equal(back.cluster_size, wav.cluster_size) and torch.equal(back.embed_avg, wav.embed_avg)


def test_bad_inputs_are_explained():
    vq = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="4 channels"):
        vq(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="channel-first"):
        vq(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        vq.decode(torch.tensor([[8]]))
    with pytest.raises(ValueError, match="distance"):
        VectorQuantizer(8, 4, distance="manhattan")
