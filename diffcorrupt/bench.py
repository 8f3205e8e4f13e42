"""``diffcorrupt bench <what>``: benchmarks that print one JSON line each.

  diffcorrupt bench data [--batch_size=256] [--num_batches=100] [--repeats=5] [--num_workers=0]
"""

from __future__ import annotations

import json
import sys

from diffcorrupt import jobs
from diffcorrupt.errors import UserError

BENCHES = ("data",)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        raise UserError(f"name a benchmark after `bench`: one of {', '.join(BENCHES)}")
    what, rest = argv[0], argv[1:]
    parser = jobs.JobParser(f"bench {what}", "input-pipeline throughput and per-index corruption cost", config=False)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num_workers", type=int, default=0)
    flags = parser.parse_args(rest)
    from diffcorrupt.benchmarks import data_bench

    result = data_bench.run(flags.batch_size, flags.num_batches, flags.repeats, flags.num_workers)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.run("bench", main))
