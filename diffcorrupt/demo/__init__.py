"""``diffcorrupt demo``: the study in miniature on the embedded Fashion-MNIST, end to end.

Corrupted data -> a small autoencoder and pre-encoded latents -> three latent diffusion runs (clean,
eta = 5%, CEP-U) -> samples at several guidance scales -> classifier-feature metrics -> one
Markdown report with plots and sample grids. Every stage resumes, so a rerun finishes what an
interrupted one started and otherwise only rewrites the report.
"""
