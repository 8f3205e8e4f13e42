"""``diffcorrupt report``: batch evaluation of runs into tables (CSV, Markdown) and plots (PNG).

  diffcorrupt report --workdirs=DIR[,DIR...] [--rows=CSV[,CSV...]] [--out=DIR] [--checkpoints=latest|all|N[,M...]]
                     [--cfg_scale=S[,S2,...]] [--latest_cfg_scale=S[,S2,...]] [--num_samples=N] [--sampler=...]
                     [--steps=N[,M,...]] [--seed=S] [--batch_size=B] [--features=inception,classifier,clip]
                     [--inception_weights=FILE] [--clip_weights=FILE] [--class_names=FILE] [--vq_autoencoder=DIR]
                     [--reference=dataset[:split[:subset]]|PATH] [--reference_count=N] [--controls=dataset[:split[:subset]]]

For every run, checkpoint, number of sampler steps and guidance scale: sample (resuming what is there), evaluate (skipping
what is already computed with these arguments), then write ``results.csv``, ``summary.csv``,
``summary.md``, ``best.md`` and the plots into ``--out`` (default ``report/``). Folder names may
be globs (``runs/*``). ``--rows`` adds the rows of earlier reports' ``results.csv`` (runs trained in
another session or on another cluster, whose folders are gone); a row measured again here replaces
its earlier one. With ``--rows`` alone nothing is sampled: the tables and plots are redrawn.
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Callable
from pathlib import Path

from diffcorrupt import jobs
from diffcorrupt.diffusion.samplers import SAMPLERS
from diffcorrupt.errors import UserError
from diffcorrupt.flag_types import non_negative_int, positive_int, positive_ints
from diffcorrupt.output_paths import output_folder
from diffcorrupt.parallel.distributed import initialize_from_environment


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("report", __doc__.splitlines()[0], config=False)
    parser.add_argument("--workdirs", default="", help="comma-separated run folders; globs allowed")
    parser.add_argument("--rows", default="", help="results.csv files of earlier reports to include; globs allowed")
    parser.add_argument("--out", default="report")
    parser.add_argument("--checkpoints", default="latest", help="latest, all or a list of steps")
    parser.add_argument("--cfg_scale", default=None, help="guidance scales (default: each run's sample.cfg_scale)")
    parser.add_argument("--latest_cfg_scale", default=None,
                        help="more guidance scales, sampled at each run's latest checkpoint only (of those "
                             "--checkpoints picks): the whole trade-off where runs are compared, a few scales along "
                             "training")
    parser.add_argument("--num_samples", type=positive_int, default=None)
    parser.add_argument("--sampler", choices=SAMPLERS, default=None)
    parser.add_argument("--steps", type=positive_ints, default=None,
                        help="sampler steps, or a list (a distilled run at --steps=1,2,4,8)")
    parser.add_argument("--eta", type=float, default=None)
    parser.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed")
    parser.add_argument("--batch_size", type=positive_int, default=None)
    parser.add_argument("--captions", default=None)
    parser.add_argument("--controls", default=None, help="personalized runs: dataset[:split[:subset]] whose control "
                        "images they are sampled with")
    parser.add_argument("--features", default=None)
    parser.add_argument("--inception_weights", default=None)
    parser.add_argument("--clip_weights", default=None)
    parser.add_argument("--class_names", default=None, help="one class name per line, for the CLIP score's captions")
    parser.add_argument("--vq_autoencoder", default=None, help="a VQ autoencoder folder: sample entropy in its latents")
    parser.add_argument("--reference", default=None)
    parser.add_argument("--reference_count", type=positive_int, default=None)
    flags = parser.parse_args(argv)
    if not flags.workdirs and not flags.rows:
        raise UserError("give --workdirs (run folders to evaluate), --rows (results.csv of earlier reports) or both")
    initialize_from_environment()
    jobs.log_progress()
    from diffcorrupt.report.batch import run_batch
    from diffcorrupt.report.earlier_rows import read_rows

    sample_flags = {key: getattr(flags, key) for key in
                    ("cfg_scale", "num_samples", "sampler", "steps", "eta", "seed", "batch_size", "captions", "controls")}
    earlier = read_rows(_matches(flags.rows, "--rows", Path.is_file,
                                 "matches no file; give the results.csv of an earlier report"))
    workdirs = _workdirs(flags.workdirs) if flags.workdirs else []
    summary = run_batch(workdirs, earlier_rows=earlier, checkpoints=flags.checkpoints, sample_flags=sample_flags,
                        features=flags.features, inception_weights=flags.inception_weights, reference=flags.reference,
                        reference_count=flags.reference_count, out=output_folder(flags.out, "--out"),
                        clip_weights=flags.clip_weights, class_names=flags.class_names,
                        vq_autoencoder=flags.vq_autoencoder, latest_cfg_scale=flags.latest_cfg_scale)
    if summary is not None:
        print(json.dumps(summary), flush=True)
    return 0


def _workdirs(text: str) -> list[Path]:
    found = _matches(text, "--workdirs", Path.is_dir, "matches no folder; give train --workdir folders")
    if not found:
        raise UserError(f"--workdirs={text} names no folder; give train --workdir folders, comma-separated")
    return found


def _matches(text: str, flag: str, kind: Callable[[Path], bool], hint: str) -> list[Path]:
    """The paths of a comma-separated flag whose entries may be globs, each entry refused with
    ``hint`` when it matches nothing of its ``kind``."""
    found: list[Path] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
        if not matches or not all(kind(Path(m)) for m in matches):
            raise UserError(f"{flag} entry '{part}' {hint}")
        found.extend(Path(m) for m in matches)
    return found


if __name__ == "__main__":
    sys.exit(jobs.run("report", main))
