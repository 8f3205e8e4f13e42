"""diffcorrupt: pre-training conditional diffusion models on deliberately corrupted conditions."""

__version__ = "0.1.0"
