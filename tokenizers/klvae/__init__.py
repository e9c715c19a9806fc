"""KL autoencoder (diffusers ``AutoencoderKL``) as a continuous-latent image `Tokenizer` (E-CAR, MAR)."""

from tokenforge.methods import lazy_exports

# loaded on first use, so listing methods (``method.py``) does not import torch
__getattr__, __dir__ = lazy_exports(__name__, {"KLAutoencoder": "model"})

__all__ = ["KLAutoencoder"]
