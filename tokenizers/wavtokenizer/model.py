"""WavTokenizer (Ji et al., 2024): 24 kHz mono audio -> one codebook of 4096 codes at 75 or 40 tokens/s -> audio.

SEANet encoder (`seanet.SEANetEncoder`) -> single EMA vector quantizer (`VectorQuantizer`, l2 distance,
k-means init, dead-code restarts) -> Vocos backbone with AdaLayerNorm rows picked by ``bandwidth_id``
(`vocos.VocosBackbone`) -> iSTFT head (`vocos.ISTFTHead`). Frames = ``ceil(L / hop)``; decoding gives
``frames * hop`` samples and `encode` records ``L`` so `decode` trims back to the input length.
Beyond the official code (issue 21): `encode(batch, lengths)` / `decode(ids, lengths)` treat each item of a
padded batch as if alone; `receptive_field()` gives the chunked paths of `tokenforge.audio_files` their exact
context; `stream_encode` / `stream_decode` (`tokenforge.audio_stream`) stream with a stated latency.

Official-style calls are kept for parity and for users of the original API: `encode_infer` (features and
codes ``(1, B, T)``), `codes_to_features`, `decode_features`. Deliberate deviations: inputs are validated
(non-finite samples, empty or wrongly shaped tensors are refused with a reason); the quantizer's EMA/dead-code
bookkeeping follows `VectorQuantizer` (see its docstring: restarts after the EMA step, issue #89); the
SEANet decoder is optional (``seanet_decoder=False`` drops it: it is never used, only loaded).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenforge.audio_stream import AudioStreaming
from tokenforge.receptive_field import ReceptiveField, receptive_field
from tokenforge.tokenizers.base import AutoencoderOutput, Tokenizer, Tokens
from tokenforge.tokenizers.quantizers.base import check_indices
from tokenforge.tokenizers.quantizers.vq import VectorQuantizer
from tokenforge.tokenizers.wavtokenizer.seanet import SEANetDecoder, SEANetEncoder
from tokenforge.tokenizers.wavtokenizer.vocos import ISTFTHead, VocosBackbone


def check_audio(x: Tensor, who: str = "WavTokenizer") -> Tensor:
    """``(L,)``, ``(B, L)`` or ``(B, 1, L)`` finite float audio -> ``(B, L)``; anything else is refused."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} expects a torch.Tensor waveform, got {type(x).__name__}")
    if x.ndim == 3 and x.shape[1] == 1:
        x = x[:, 0]
    elif x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{who} expects mono audio (B, samples), got shape {tuple(x.shape)}; mix channels first")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects float samples in [-1, 1], got {x.dtype}")
    if x.shape[-1] == 0:
        raise ValueError(f"{who}: empty waveform (0 samples)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{who}: waveform has non-finite samples (NaN/inf); clean or drop the file")
    return x


class WavTokenizer(AudioStreaming, Tokenizer):
    """The inference module; see the module docstring. Default sizes are the released 75 tokens/s model.
    ``stream_encode`` / ``stream_decode`` come from `tokenforge.audio_stream.AudioStreaming`."""

    modality: ClassVar[str] = "audio"
    token_layout: ClassVar[str] = "sequence"
    # left context beyond the convs' receptive field for the encoder's causal LSTM to forget a chunk's start;
    # measured (docs/methods/wavtokenizer.md, "Chunk-exact long audio"): latents equal to float rounding by 0.7 s
    recurrent_warmup_seconds: ClassVar[float] = 1.0

    def __init__(
        self,
        encoder: SEANetEncoder | None = None,
        quantizer: VectorQuantizer | None = None,
        backbone: VocosBackbone | None = None,
        head: ISTFTHead | None = None,
        seanet_decoder: SEANetDecoder | bool = True,
        sample_rate: int = 24000,
        num_bandwidths: int = 4,
    ) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else SEANetEncoder()
        dim = self.encoder.model[-1].conv.out_channels
        self.quantizer = quantizer if quantizer is not None else VectorQuantizer(
            codebook_size=4096, dim=dim, ema=True, decay=0.99, kmeans_init=True, kmeans_iters=200,
            dead_code_threshold=2.0, beta=1.0)
        self.backbone = backbone if backbone is not None else VocosBackbone(input_channels=dim)
        self.head = head if head is not None else ISTFTHead(self.backbone.dim)
        if seanet_decoder is True:  # mirror the encoder's sizes, as EnCodec builds the pair
            seanet_decoder = SEANetDecoder(**self.encoder.init_args)
        self.seanet_decoder = seanet_decoder or None
        self.sample_rate, self.num_bandwidths = sample_rate, num_bandwidths
        if self.quantizer.dim != dim or self.backbone.input_channels != dim:
            raise ValueError(f"encoder dimension {dim}, quantizer dim {self.quantizer.dim} and backbone "
                             f"input_channels {self.backbone.input_channels} must agree")
        if self.head.hop_length != self.encoder.hop_length:
            raise ValueError(f"head hop_length {self.head.hop_length} must equal the encoder hop "
                             f"prod(ratios) = {self.encoder.hop_length}")

    # ------------------------------------------------------------------ facts

    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def hop_length(self) -> int:
        return self.encoder.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // self.hop_length)

    def receptive_field(self) -> ReceptiveField:
        """The encoder's receptive field from its layers (finite convs; the LSTM reads the whole past)."""
        return receptive_field(self.encoder.model)

    def _bandwidth(self, bandwidth_id: Tensor | int | None, device: torch.device) -> Tensor:
        if bandwidth_id is None:
            bandwidth_id = 0
        bandwidth_id = torch.as_tensor(bandwidth_id, dtype=torch.long, device=device).reshape(-1)
        if bandwidth_id.numel() and (int(bandwidth_id.min()) < 0 or int(bandwidth_id.max()) >= self.num_bandwidths):
            raise ValueError(f"bandwidth_id must lie in [0, {self.num_bandwidths - 1}], got {bandwidth_id.tolist()}")
        return bandwidth_id

    # ------------------------------------------------------------------ official-style API

    def encode_infer(self, audio: Tensor, bandwidth_id: Tensor | int | None = None) -> tuple[Tensor, Tensor]:
        """``(B, L)`` -> (features ``(B, C, T)`` = codebook rows, codes ``(1, B, T)``), as the official call."""
        audio = check_audio(audio)
        latent = self.encoder(audio[:, None])
        codes = self.quantizer.encode(latent)
        return self.quantizer.decode(codes), codes[None]

    def codes_to_features(self, codes: Tensor) -> Tensor:
        """Codes ``(1, B, T)``, ``(1, T)``/``(B, T)`` -> features ``(B, C, T)``."""
        if codes.ndim == 3:
            if codes.shape[0] != 1:
                raise ValueError(f"WavTokenizer has one codebook; got codes of shape {tuple(codes.shape)}")
            codes = codes[0]
        if codes.ndim != 2:
            raise ValueError(f"codes must be (1, B, T) or (B, T), got shape {tuple(codes.shape)}")
        return self.quantizer.decode(codes)

    def decode_features(self, features: Tensor, bandwidth_id: Tensor | int | None = None) -> Tensor:
        """Features ``(B, C, T)`` -> waveform ``(B, T * hop)`` (float32)."""
        bandwidth_id = self._bandwidth(bandwidth_id, features.device)
        return self.head(self.backbone(features, bandwidth_id))

    # ------------------------------------------------------------------ Tokenizer contract

    def encode_ids(self, x: Tensor) -> Tensor:
        """Unchecked fast path ``(B, L)`` -> ids ``(B, T)``: no host syncs, so it compiles and CUDA-graphs."""
        latent = self.encoder(x[:, None])
        return self.quantizer.nearest(latent.transpose(1, 2).reshape(-1, latent.shape[1]),
                                      self.quantizer.codebook).reshape(latent.shape[0], latent.shape[2])

    def decode_ids(self, ids: Tensor, bandwidth_id: Tensor) -> Tensor:
        """Unchecked fast path ids ``(B, T)`` + bandwidth_id ``(1,)`` -> waveform ``(B, T * hop)``."""
        features = F.embedding(ids, self.quantizer.codebook).transpose(1, 2)
        return self.head(self.backbone(features, bandwidth_id))

    def compile(self, mode: str | None = None, dynamic: bool | None = None, **kwargs: Any) -> WavTokenizer:
        """``torch.compile`` the two fast paths in place (``mode="reduce-overhead"`` adds CUDA graphs)."""
        self.encode_ids = torch.compile(self.encode_ids, mode=mode, dynamic=dynamic, **kwargs)  # type: ignore
        self.decode_ids = torch.compile(self.decode_ids, mode=mode, dynamic=dynamic, **kwargs)  # type: ignore
        return self

    def fuse_weight_norm(self) -> WavTokenizer:
        """Fold weight-norm parametrizations into plain weights (inference speed; changes state-dict keys)."""
        from torch.nn.utils import parametrize

        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self

    @torch.no_grad()
    def encode(self, x: Tensor, lengths: Tensor | list[int] | None = None,
               bandwidth_id: Tensor | int | None = None) -> Tokens:
        """``(B, L)`` -> `Tokens` with ids ``(B, ceil(L / hop))``; ``bandwidth_id`` is unused (encoder side).

        ``lengths`` (samples per item of a right-padded batch, any padding values): item ``i`` gets exactly the
        codes of encoding ``x[i, :lengths[i]]`` alone, ``ceil(lengths[i] / hop)`` frames (`Tokens.lengths`),
        zeros after; ``meta["num_samples"]`` lists the lengths so `decode` trims each item."""
        x = check_audio(x)
        if lengths is None:
            ids = self.encode_ids(x)
            meta: dict[str, Any] = {"sample_rate": self.sample_rate, "hop_length": self.hop_length,
                                    "num_samples": int(x.shape[-1])}
            return Tokens(ids=ids, meta=meta)
        lengths = self._check_lengths(lengths, x.shape[0], x.shape[-1])
        latent = self.encoder(x[:, None], lengths)
        ids = self.quantizer.nearest(latent.transpose(1, 2).reshape(-1, latent.shape[1]),
                                     self.quantizer.codebook).reshape(latent.shape[0], latent.shape[2])
        frames = torch.tensor([self.num_frames(n) for n in lengths], device=ids.device)
        ids = ids.masked_fill(torch.arange(ids.shape[1], device=ids.device)[None] >= frames[:, None], 0)
        meta = {"sample_rate": self.sample_rate, "hop_length": self.hop_length, "num_samples": lengths}
        return Tokens(ids=ids, lengths=frames, meta=meta)

    @staticmethod
    def _check_lengths(lengths: Tensor | list[int], batch: int, longest: int) -> list[int]:
        lengths = [int(n) for n in torch.as_tensor(lengths).reshape(-1).tolist()]
        if len(lengths) != batch or min(lengths) < 1 or max(lengths) > longest:
            raise ValueError(f"lengths must give one length in [1, {longest}] per item of the batch of {batch}, "
                             f"got {lengths}")
        return lengths

    @torch.no_grad()
    def decode(self, tokens: Tokens | Tensor, lengths: Tensor | list[int] | None = None,
               bandwidth_id: Tensor | int | None = None) -> Tensor:
        """Tokens (or ids ``(B, T)``) -> waveform ``(B, L)``, trimmed to ``meta["num_samples"]`` when known.

        ``lengths`` (samples per item; default: a list in ``meta["num_samples"]``, as batched `encode` writes):
        item ``i`` decodes its first ``ceil(lengths[i] / hop)`` codes as if alone; the output is ``(B,
        max(lengths))`` with zeros after each item's length."""
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        if ids.ndim == 1:
            ids = ids[None]
        known = tokens.meta.get("num_samples") if isinstance(tokens, Tokens) else None
        if lengths is None and isinstance(known, (list, tuple)):
            lengths = known
        check_indices(ids, self.vocab_size, "WavTokenizer.decode")
        bandwidth = self._bandwidth(bandwidth_id, ids.device)
        if lengths is None:
            wave = self.decode_ids(ids.long(), bandwidth)
            return wave[..., :known] if known else wave
        lengths = self._check_lengths(lengths, ids.shape[0], ids.shape[1] * self.hop_length)
        frames = [self.num_frames(n) for n in lengths]
        features = F.embedding(ids[:, :max(frames)].long(), self.quantizer.codebook).transpose(1, 2)
        hidden = self.backbone.forward_lengths(features, bandwidth, frames)
        wave = hidden.new_zeros(ids.shape[0], max(lengths))
        for i, (n, t) in enumerate(zip(lengths, frames)):
            wave[i, :n] = self.head(hidden[i:i + 1, :t])[0, :n]
        return wave

    def forward(self, x: Tensor, bandwidth_id: Tensor | int | None = None) -> AutoencoderOutput:
        """Training pass: straight-through VQ (EMA updates in train mode) -> waveform trimmed to the input."""
        x = check_audio(x)
        latent = self.encoder(x[:, None])
        q = self.quantizer(latent)
        x_hat = self.decode_features(q.quantized, bandwidth_id)[..., : x.shape[-1]]
        tokens = Tokens(ids=q.indices, latents=q.quantized,
                        meta={"sample_rate": self.sample_rate, "num_samples": int(x.shape[-1])})
        return AutoencoderOutput(x_hat=x_hat, tokens=tokens, aux_loss=q.loss, metrics=q.metrics)
