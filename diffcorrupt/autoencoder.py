"""``diffcorrupt autoencoder``: train a small autoencoder on the config's dataset, for latent runs on CPU.

  diffcorrupt autoencoder --config=configs/<name>.py[:<preset>] --out=DIR [--preset=kl-f4-small|vq-f4-small]
                          [--steps=2000] [--batch_size=64] [--lr=1e-3] [--seed=0] [--force] [--config.<key>=<value> ...]

Writes the autoencoder folder (``autoencoder.json``, ``params.npz``) that ``diffcorrupt encode``
and the sampler read, with its held-out reconstruction error and the latent scale factor (one over
the training latents' standard deviation); prints one JSON line. Released autoencoders (SD's KL-f8,
LDM's VQ-f4) are converted instead, with ``tools/convert_autoencoder.py``.
"""

from __future__ import annotations

import json
import sys

from diffcorrupt import jobs
from diffcorrupt.autoencoders.presets import preset
from diffcorrupt.flag_types import non_negative_int, positive_float, positive_int
from diffcorrupt.output_paths import output_folder


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("autoencoder", __doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="kl-f4-small")
    parser.add_argument("--steps", type=positive_int, default=2000)
    parser.add_argument("--batch_size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--force", action="store_true", help="write into an --out folder that already holds files")
    flags, config = parser.parse_with_config(argv)
    output_folder(flags.out, "--out", fresh=True, force=flags.force)
    preset(flags.preset)
    jobs.log_progress()
    from diffcorrupt.training.autoencoder_training import train_autoencoder

    summary = train_autoencoder(config.data, flags.preset, flags.out, steps=flags.steps, batch_size=flags.batch_size,
                                lr=flags.lr, seed=flags.seed)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.run("autoencoder", main))
