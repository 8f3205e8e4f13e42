"""``diffcorrupt bench <what>``: benchmarks that print one JSON line each.

  diffcorrupt bench data  [--batch_size=256] [--num_batches=100] [--repeats=5] [--num_workers=0]
  diffcorrupt bench model --model=DiT-XL/2 --input_shape=32,32,4 --num_classes=1000
  diffcorrupt bench train --model=DiT-S/4 --input_shape=32,32,1 --batch_size=32 --num_classes=10 [--steps=10]
  diffcorrupt bench train --config=configs/fmnist.py:tiny [--config.<key>=<value> ...]
  diffcorrupt bench sample --model=DiT-S/4 --input_shape=32,32,1 --num_classes=10 --batch_size=64
                           [--sampler=dpm] [--steps=50] [--cfg_scale=1.5] [--dtype=float32]
  diffcorrupt bench inception [--input_shape=32,32,3] [--batch_size=64] [--num_images=256] [--weights=FILE]
  diffcorrupt bench clip [--input_shape=32,32,3] [--batch_size=64] [--num_images=256] [--weights=FILE]
  diffcorrupt bench encode [--autoencoder=kl-f8] [--input_shape=256,256,3] [--batch_size=8] [--model=DiT-XL/2]
                           [--num_classes=1000]
  (train, sample, inception, clip and encode take --devices=N: the first N devices, or N simulated CPU devices)
  diffcorrupt bench peers --what=train|sample|inception [--model=DiT-S/4] [--input_shape=32,32,4] [--batch_size=N]
                          [--num_classes=1000] [--steps=N] [--cfg_scale=1.5] [--repeats=3]   # needs the [peers] extra
"""

from __future__ import annotations

import json
import sys

from diffcorrupt import jobs
from diffcorrupt.config.loading import suggest
from diffcorrupt.errors import UserError
from diffcorrupt.flag_types import non_negative_int, positive_float, positive_int

BENCHES = ("data", "model", "train", "sample", "inception", "clip", "encode", "peers")
# Benchmarks that run on devices and take --devices (data runs on host workers, model on abstract
# shapes, peers on the devices PyTorch runs beside).
DEVICE_BENCHES = ("train", "sample", "inception", "clip", "encode")


def _shape(text: str) -> tuple[int, int, int]:
    try:
        height, width, channels = (int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--input_shape is '{text}'; write H,W,C, e.g. 32,32,4") from None
    return height, width, channels


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if not argv or argv[0] not in BENCHES:
        given = f"'{argv[0]}' is no benchmark" if argv else "name a benchmark after `bench`"
        raise UserError(f"{given}{suggest(argv[0], BENCHES) if argv else ''}: use one of {', '.join(BENCHES)} "
                        "(`diffcorrupt bench --help` shows their flags)")
    what, rest = argv[0], argv[1:]
    parser = jobs.JobParser(f"bench {what}", f"the {what} benchmark; prints one JSON line", config=False)
    if what == "data":
        parser.add_argument("--batch_size", type=positive_int, default=256)
        parser.add_argument("--num_batches", type=positive_int, default=100)
        parser.add_argument("--repeats", type=positive_int, default=5)
        parser.add_argument("--num_workers", type=non_negative_int, default=0)
    elif what == "encode":
        parser.add_argument("--autoencoder", default="kl-f8", help="an autoencoder preset")
        parser.add_argument("--input_shape", default="256,256,3", help="H,W,C of the images")
        parser.add_argument("--batch_size", type=positive_int, default=8)
        parser.add_argument("--model", default="DiT-XL/2", help="the diffusion model trained on the latents")
        parser.add_argument("--num_classes", type=non_negative_int, default=1000)
        parser.add_argument("--steps", type=positive_int, default=5)
    elif what in ("inception", "clip"):
        parser.add_argument("--input_shape", default="32,32,3", help="H,W,C of the images fed to the network")
        parser.add_argument("--batch_size", type=positive_int, default=64)
        parser.add_argument("--num_images", type=positive_int, default=256)
        parser.add_argument("--weights", default=None, help="converted weights (default: random ones, same speed)")
    elif what == "peers":
        parser.add_argument("--what", required=True, choices=("train", "sample", "inception"))
        parser.add_argument("--model", default="DiT-S/4", help="a DiT (the peer is diffusers' DiT)")
        parser.add_argument("--input_shape", help="H,W,C (default: 32,32,4; inception 32,32,3)")
        parser.add_argument("--batch_size", type=positive_int)
        parser.add_argument("--num_classes", type=non_negative_int, default=1000)
        parser.add_argument("--steps", type=positive_int, help="train: timed steps a repeat; sample: sampler steps; "
                                                      "inception: batches a pass")
        parser.add_argument("--cfg_scale", type=positive_float, default=1.5)
        parser.add_argument("--repeats", type=positive_int, default=3)
        parser.add_argument("--peer_wait_policy", default="default", choices=("default", "passive", "active"),
                            help="libgomp's OMP_WAIT_POLICY for torch: default as its users run it; passive on a shared machine")
    else:
        parser.add_argument("--model", help="a registered name, e.g. DiT-XL/2 or LDM-cin256-v2")
        parser.add_argument("--input_shape", help="H,W,C of the (latent) input")
        parser.add_argument("--num_classes", type=non_negative_int, default=1000, help="0 for a text-conditional model")
    if what == "model":
        parser.add_argument("--learned_sigma", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    if what == "train":
        parser.add_argument("--config", help="a preset, configs/<name>.py[:<preset>]: its model, data shape, batch and mesh")
        parser.add_argument("--batch_size", type=positive_int)
        parser.add_argument("--steps", type=positive_int, default=10)
        parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    if what == "sample":
        parser.add_argument("--batch_size", type=positive_int, default=64)
        parser.add_argument("--sampler", default="dpm", choices=("ddpm", "ddim", "dpm"))
        parser.add_argument("--steps", type=positive_int, default=50)
        parser.add_argument("--cfg_scale", type=positive_float, default=1.5)
        parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    if what in DEVICE_BENCHES:
        parser.add_argument("--devices", type=positive_int, help="measure on the first N devices (default: all; on CPU, N simulated devices)")
    flags, overrides = parser.parse_job(rest)
    if what in DEVICE_BENCHES:
        from diffcorrupt.benchmarks.devices import limit_devices

        limit_devices(flags.devices)
    if what not in ("data", "inception", "clip", "encode", "peers") and not getattr(flags, "config", None) and not (flags.model and flags.input_shape):
        raise UserError(f"bench {what} needs --model and --input_shape" + (" (or --config)" if what == "train" else ""))
    if what == "data":
        from diffcorrupt.benchmarks import data_bench

        result = data_bench.run(flags.batch_size, flags.num_batches, flags.repeats, flags.num_workers)
    elif what == "model":
        from diffcorrupt.benchmarks import model_bench

        result = model_bench.run(flags.model, _shape(flags.input_shape), flags.num_classes, flags.learned_sigma)
    elif what == "sample":
        from diffcorrupt.benchmarks import sample_bench

        result = sample_bench.run(flags.model, _shape(flags.input_shape), flags.num_classes, flags.batch_size,
                                  flags.sampler, flags.steps, flags.cfg_scale, dtype=flags.dtype)
    elif what == "encode":
        from diffcorrupt.benchmarks import encode_bench

        result = encode_bench.run(flags.autoencoder, _shape(flags.input_shape), flags.batch_size, flags.model,
                                  flags.num_classes, flags.steps)
    elif what == "peers":
        from diffcorrupt.benchmarks import peers

        result = peers.run(flags.what, flags.model, flags.input_shape and _shape(flags.input_shape), flags.batch_size,
                           flags.num_classes, flags.steps, flags.repeats, flags.cfg_scale,
                           flags.peer_wait_policy)
    elif what in ("inception", "clip"):
        from diffcorrupt.benchmarks import feature_bench

        result = feature_bench.run(what, _shape(flags.input_shape), flags.batch_size, flags.num_images, flags.weights)
    elif flags.config:
        from diffcorrupt.benchmarks import train_bench
        from diffcorrupt.config.loading import load_config
        from diffcorrupt.data.pipeline import corrupted_source
        from diffcorrupt.training.batches import input_spec

        config = load_config(flags.config, overrides)
        result = train_bench.run_config(config, *input_spec(config, corrupted_source(config).source), flags.steps)
        result["config"] = flags.config
    else:
        from diffcorrupt.benchmarks import train_bench

        if not flags.batch_size:
            raise UserError("bench train --model needs --batch_size")
        result = train_bench.run(flags.model, _shape(flags.input_shape), flags.batch_size, flags.num_classes,
                                 flags.steps, flags.dtype)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.run("bench", main))
