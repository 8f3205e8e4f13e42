"""``diffcorrupt encode``: a dataset -> latent ArrayRecord shards, for training in latent space.

  diffcorrupt encode --config=configs/<name>.py[:<preset>] --autoencoder=DIR --out=DIR
                     [--kind=moments|latent] [--batch_size=64] [--shard_size=4096] [--flips]
                     [--config.<key>=<value> ...]

Encodes the clean images of the config's dataset (``data.*``: name, split, size, channels) with a
converted or trained autoencoder (``tools/convert_autoencoder.py``, ``diffcorrupt autoencoder``),
sharded across processes and resumable; prints one JSON line with the throughput. Train on the
result with ``--config.data.name=latent_records --config.data.data_dir=<out>``: the corruption is
still applied by example index when training reads it. ``--flips`` also stores the encoding of each
mirrored image, for runs with ``data.random_flip`` (the default), which are refused without it:
mirroring a latent does not give the latent of the mirrored image.
"""

from __future__ import annotations

import json
import sys

from diffcorrupt import jobs
from diffcorrupt.autoencoders.storage import check_autoencoder_folder
from diffcorrupt.flag_types import positive_int
from diffcorrupt.output_paths import output_folder
from diffcorrupt.parallel.distributed import initialize_from_environment


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("encode", __doc__.splitlines()[0])
    parser.add_argument("--autoencoder", required=True, help="a folder written by the converter or the autoencoder job")
    parser.add_argument("--out", required=True)
    parser.add_argument("--kind", choices=("moments", "latent"), default=None,
                        help="moments (KL default: a fresh posterior draw per epoch) or latent")
    parser.add_argument("--batch_size", type=positive_int, default=64)
    parser.add_argument("--shard_size", type=positive_int, default=4096)
    parser.add_argument("--flips", action="store_true",
                        help="also encode each image mirrored, which training with data.random_flip needs")
    flags, config = parser.parse_with_config(argv)
    output_folder(flags.out, "--out")
    check_autoencoder_folder(flags.autoencoder, "--autoencoder")
    initialize_from_environment()
    jobs.log_progress()
    from diffcorrupt.data.latent_encoding import encode_dataset

    summary = encode_dataset(config.data, flags.autoencoder, flags.out, kind=flags.kind, batch_size=flags.batch_size,
                             shard_size=flags.shard_size, flips=flags.flips)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.run("encode", main))
