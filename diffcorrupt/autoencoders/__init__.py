"""The first-stage autoencoders of latent diffusion (KL-f8 of Stable Diffusion, VQ-f4 of LDM), in Flax."""
