"""The KL autoencoder (continuous latents) as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Method

METHOD = Method(
    name="klvae", kind="tokenizer", modality="image", layout="continuous", package="tokenforge.tokenizers.klvae",
    official={"diffusers_vae": "tokenforge.tokenizers.klvae.official"},
    demo="tokenforge.tokenizers.klvae.demo:part",
)
