"""``diffcorrupt train``: train, or resume, the configured run in ``--workdir``.

  diffcorrupt train --config=configs/fmnist.py:tiny --workdir=runs/tiny [--config.<key>=<value> ...]
  [--aot]                   compile the step for this mesh, report memory per device, do not train
  [--allow_config_change]   resume even though the saved config differs in keys that change the run
"""

from __future__ import annotations

import json
import sys

import jax

from diffcorrupt import jobs
from diffcorrupt.config.validate import validate
from diffcorrupt.output_paths import output_folder
from diffcorrupt.parallel.distributed import initialize_from_environment


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("train", __doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and samples go here")
    parser.add_argument("--aot", action="store_true", help="compile only and report memory per device")
    parser.add_argument("--allow_config_change", action="store_true")
    flags, config = parser.parse_with_config(argv)
    output_folder(flags.workdir, "--workdir")
    initialize_from_environment()
    validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
    jobs.log_progress()
    from diffcorrupt.training.loop import train

    summary = train(config, flags.workdir, allow_config_change=flags.allow_config_change, aot_only=flags.aot)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.run("train", main))
