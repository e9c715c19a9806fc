"""VAT: variational 3D tokenizer (point cloud -> Gaussian latent set -> multi-scale tokens -> triplane -> mesh)."""
