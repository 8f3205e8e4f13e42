"""How much class accuracy the demo's evaluation can give at most: its classifier on real images, and
on the same images through the demo's autoencoder. One JSON line.

    .venv/bin/python tools/demo_ceiling.py --demo=demo_out [--count=2000]

Samples of a latent model are decoded by that autoencoder, so no latent model can score above its
reconstructions; docs/reproduction.md ("What limits the demo's accuracy") uses these figures.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from diffcorrupt.autoencoders.storage import load_autoencoder
from diffcorrupt.config.loading import load_config
from diffcorrupt.data.preprocess import clean_images
from diffcorrupt.data.sources.registry import make_source
from diffcorrupt.demo.settings import FMNIST
from diffcorrupt.evaluation.classifier_training import ensure_classifier, load_classifier
from diffcorrupt.evaluation.reference import dataset_labels


def reconstructed(autoencoder_dir: pathlib.Path, images: np.ndarray, batch: int = 250) -> np.ndarray:
    autoencoder = load_autoencoder(autoencoder_dir)
    out = []
    for start in range(0, len(images), batch):
        x = jnp.asarray(images[start:start + batch], jnp.float32) / 127.5 - 1.0
        y = autoencoder.decode_latents(autoencoder.encode_latents(x, jax.random.key(0)))
        out.append(np.asarray(jnp.clip(jnp.round((y + 1.0) * 127.5), 0, 255)).astype(np.uint8))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=pathlib.Path, required=True, help="the output folder of `diffcorrupt demo`")
    parser.add_argument("--count", type=int, default=2000, help="the first N images of the demo's split")
    args = parser.parse_args()
    data = load_config("configs/fmnist.py", FMNIST).data
    images = clean_images(make_source(data), data.image_size, data.channels, args.count)
    labels = dataset_labels(data, args.count)
    classifier = load_classifier(ensure_classifier(data))
    rebuilt = reconstructed(args.demo / "autoencoder", images)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((rebuilt.astype(np.float64) - images) ** 2))
    accuracy = {name: classifier.accuracy(classifier(x)["logits"], labels)["accuracy"]
                for name, x in (("real", images), ("reconstructed", rebuilt))}
    print(json.dumps({"count": len(images), "accuracy_real": accuracy["real"],
                      "accuracy_reconstructed": accuracy["reconstructed"], "reconstruction_psnr_db": round(psnr, 2)}))


if __name__ == "__main__":
    main()
