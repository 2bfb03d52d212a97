"""What one training step computes: the trainer, its loss terms, the generator, the latent space, the
diffusion, the EMA and the data."""
