"""E-CAR (continuous multistage AR with multistage flow) and its public peer MAR's diffusion-loss head."""
