"""The demo's latent space: a small KL autoencoder trained on the embedded Fashion-MNIST, and the
dataset pre-encoded with it, so the three diffusion runs are latent diffusion models as the paper's.

Both steps resume: a finished autoencoder folder is kept, and the encoder skips finished shards.
"""

from __future__ import annotations

import json
import pathlib

from absl import logging

from diffcorrupt.autoencoders.storage import CONFIG_FILE
from diffcorrupt.config.loading import load_config
from diffcorrupt.data.latent_encoding import encode_dataset
from diffcorrupt.demo.settings import AUTOENCODER, AUTOENCODER_BATCH, AUTOENCODER_LR, FMNIST, REPO, Scale
from diffcorrupt.training.autoencoder_training import train_autoencoder


def latent_stage(out: pathlib.Path, scale: Scale, lines: list[str]) -> dict:
    """Trains (or keeps) ``out/autoencoder`` and encodes into ``out/latents``; returns both summaries."""
    data = load_config(str(REPO / "configs/fmnist.py"), FMNIST).data
    autoencoder = out / "autoencoder"
    if not (autoencoder / CONFIG_FILE).is_file():
        logging.info("demo: training the %s autoencoder for %d steps", AUTOENCODER, scale.autoencoder_steps)
        train_autoencoder(data, AUTOENCODER, autoencoder, steps=scale.autoencoder_steps,
                          batch_size=AUTOENCODER_BATCH, lr=AUTOENCODER_LR)
    meta = json.loads((autoencoder / CONFIG_FILE).read_text())["meta"]
    logging.info("demo: encoding Fashion-MNIST into latents")
    encoded = encode_dataset(data, autoencoder, out / "latents")
    lines += ["## 2. The latent space", "",
              f"A `{AUTOENCODER}` KL autoencoder (32x32x1 -> 8x8x4) trained for {meta['steps']} steps of batch "
              f"{meta['batch_size']}: held-out PSNR {meta['held_out_psnr']:.1f} dB. The {encoded['num_examples']} "
              "images were encoded once into ArrayRecord shards of posterior moments; the corruption is applied "
              "by example index when training reads them.", ""]
    return {"autoencoder": {k: meta[k] for k in ("steps", "held_out_psnr", "train_seconds")},
            "latents": {k: encoded[k] for k in ("num_examples", "encoded_now", "images_per_s")}}
