"""The ``diffcorrupt`` console script: ``diffcorrupt <job> [flags]`` runs ``diffcorrupt.<job>``."""

from __future__ import annotations

import importlib
import sys

from diffcorrupt.config.loading import suggest

JOBS = {
    "train": "train or resume a run in --workdir (orbax checkpoints, metrics, samples)",
    "autoencoder": "train a small autoencoder on the config's dataset (latent runs on CPU)",
    "encode": "pre-encode a dataset into latent ArrayRecord shards, resumable",
    "sample": "images from a run's EMA weights, sharded, resumable (ADM .npz shards + grid)",
    "evaluate": "FID / sFID / IS / precision / recall / accuracy of a sample set, as a metrics JSON",
    "report": "batch evaluation of runs x checkpoints x guidance scales into tables and plots",
    "corruption": "write and print the corruption manifest of a configured dataset",
    "bench": "benchmarks that print one JSON line (data, model, train)",
    "demo": "the study in miniature on the embedded Fashion-MNIST: train, sample, evaluate, report",
    "sweep": "expand a grid of runs; run them here or print/submit pod and SLURM launch commands",
    "theory": "simulate the paper's Gaussian-mixture theory and compare with its closed forms",
}

# Jobs whose entry point is not diffcorrupt/<job>.py (the report job lives in its package).
MODULES = {"report": "diffcorrupt.report.job", "demo": "diffcorrupt.demo.job", "theory": "diffcorrupt.theory.job"}


def _usage() -> str:
    lines = ["usage: diffcorrupt <job> [flags]", "", "jobs:"]
    lines += [f"  {name:<11} {text}" for name, text in JOBS.items()]
    lines += ["", "`diffcorrupt <job> --help` lists a job's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    job, rest = argv[0], argv[1:]
    if job not in JOBS:
        print(f"diffcorrupt: error: unknown job '{job}'{suggest(job, JOBS)}; run `diffcorrupt --help` for the list", file=sys.stderr)
        return 2
    from diffcorrupt import jobs

    module = importlib.import_module(MODULES.get(job, f"diffcorrupt.{job}"))
    return jobs.run(job, module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
