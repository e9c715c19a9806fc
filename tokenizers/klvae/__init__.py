"""KL autoencoder (diffusers ``AutoencoderKL``) as a continuous-latent image `Tokenizer` (E-CAR, MAR)."""

from tokenforge.tokenizers.klvae.model import KLAutoencoder

__all__ = ["KLAutoencoder"]
