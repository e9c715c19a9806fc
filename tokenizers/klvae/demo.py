"""The KL autoencoder's part of `tokenforge demo`: fitted on the photos at 32 px; its latents of the faces are
what E-CAR learns."""

from tokenforge.demo_stages import DemoPart, image_tokenizer


def part() -> DemoPart:
    return image_tokenizer("klvae", "tokenizers/klvae", 32, {"default": 300, "long": 2000})
