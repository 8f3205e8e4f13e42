"""``diffcorrupt demo [--quick] [--out=DIR]``: the study in miniature, end to end, into one report.

Writes ``<out>/report.md`` (with its plots and sample grids), ``<out>/results.json``, and keeps
everything it made on the way: corruption manifests (``data/``), the autoencoder and latents,
the runs' checkpoints and samples (``runs/``) and the evaluator's tables (``report/``). ``--quick``
is a smoke run of every stage at toy sizes, into its own folder (default ``demo_quick``).
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import logging

from diffcorrupt import jobs
from diffcorrupt.demo.data_stage import data_stage
from diffcorrupt.demo.evaluation_stage import evaluation_stage
from diffcorrupt.demo.latent_stage import latent_stage
from diffcorrupt.demo.settings import FULL, QUICK, Scale
from diffcorrupt.demo.training_stage import training_stage
from diffcorrupt.errors import UserError
from diffcorrupt.heartbeat import heartbeat
from diffcorrupt.output_paths import output_folder

STAMP = "demo.json"
STAGES = (("data", data_stage), ("latent", latent_stage), ("training", training_stage), ("evaluation", evaluation_stage))


def run_demo(out: pathlib.Path, scale: Scale) -> dict:
    """Runs (or resumes) every stage into ``out``; returns each stage's figures and the wall-clock."""
    _claim(out, scale)
    lines = ["# diffcorrupt demo: slight corruption and CEP on Fashion-MNIST", "",
             f"Scale: `{scale.name}`. Written by `diffcorrupt demo{' --quick' if scale.name == 'quick' else ''}`; "
             "rerunning it resumes every stage.", ""]
    results: dict = {}
    start = time.perf_counter()
    for number, (name, stage) in enumerate(STAGES, 1):
        logging.info("demo: stage %d of %d: %s", number, len(STAGES), name)
        begun = time.perf_counter()
        with heartbeat(f"demo: {name}", every_s=9.0):  # checked twice a second: no silence reaches 10 s
            results[name] = stage(out, scale, lines)
        logging.info("demo: stage %s done in %.0f s", name, time.perf_counter() - begun)
    results["seconds"] = round(time.perf_counter() - start, 1)
    lines += [f"Wall-clock of this invocation: {results['seconds']:.0f} s."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return results


def _claim(out: pathlib.Path, scale: Scale) -> None:
    """Marks ``out`` as this scale's demo folder; a folder of the other scale is refused, not mixed."""
    stamp = out / STAMP
    if stamp.is_file():
        made = json.loads(stamp.read_text()).get("scale")
        if made != scale.name:
            raise UserError(f"{out} holds a demo at scale '{made}', not '{scale.name}'; pass another --out "
                            "(or remove that folder to start over)")
        return
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no demo; pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"scale": scale.name}))


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("demo", __doc__.splitlines()[0], config=False)
    parser.add_argument("--quick", action="store_true", help="a smoke run of every stage at toy sizes")
    parser.add_argument("--out", default=None, help="the demo folder (default demo_out, or demo_quick with --quick)")
    flags = parser.parse_args(argv)
    jobs.log_progress()
    out = output_folder(flags.out or ("demo_quick" if flags.quick else "demo_out"), "--out")
    results = run_demo(out, QUICK if flags.quick else FULL)
    print(json.dumps({"out": str(out), "report": str(out / "report.md"), **results}, default=str), flush=True)
    return 0
