"""Training losses shared by tokenizers: adversarial objectives, discriminators, perceptual distance."""
