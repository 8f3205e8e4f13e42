"""The demo's evaluation: the batch evaluator samples every run at each guidance scale, scores the
samples with the Fashion-MNIST feature classifier (FD, precision, recall, class accuracy, TopP&R,
top-1% RMD, sample entropy) against the images the runs were trained on, and writes the tables and
plots the report embeds.

Sampling resumes from the shards already written and a metrics file computed with the same
arguments is kept, so a rerun only fills in what is missing.
"""

from __future__ import annotations

import pathlib

from absl import logging

from diffcorrupt.demo.settings import RUN_TITLES, RUNS, Scale
from diffcorrupt.report.batch import run_batch

SAMPLER = "dpm"
FEATURES = "classifier"


def evaluation_stage(out: pathlib.Path, scale: Scale, lines: list[str]) -> dict:
    """Samples and scores the latest checkpoint of every run into ``out/report``."""
    logging.info("demo: sampling and scoring %d runs at guidance %s, %d samples each", len(RUNS), scale.cfg_scales,
                 scale.num_samples)
    sample_flags = {"cfg_scale": scale.cfg_scales, "num_samples": scale.num_samples, "sampler": SAMPLER,
                    "steps": (scale.sampler_steps,), "eta": None, "seed": 0, "batch_size": scale.sample_batch,
                    "captions": None}
    summary = run_batch([out / "runs" / name for name in RUNS], checkpoints="latest", sample_flags=sample_flags,
                        features=FEATURES, inception_weights=None, reference=None, reference_count=None,
                        out=out / "report")
    best, table = (_nested((out / "report" / name).read_text()) for name in ("best.md", "summary.md"))
    lines += ["## 4. Samples and metrics", "",
              f"{scale.num_samples} class-balanced samples per run and guidance scale ({SAMPLER.upper()}-Solver++ "
              f"{scale.sampler_steps} steps, EMA weights, latest checkpoint), decoded by the autoencoder and scored "
              "by a CNN trained on clean Fashion-MNIST: FD is the Frechet distance of its features to the training "
              "images' (lower is better), accuracy the share of samples it assigns to the class they were sampled "
              "for, TopP&R F1 the harmonic mean of precision and recall on supports cut to their significant part, "
              "top-1% RMD how far the most atypical samples sit from their class (relative Mahalanobis distance), "
              "and sample entropy how evenly the samples spread over a codebook of the data's features (the "
              "data's own is `sample_entropy_real`); copies is the share of samples that reproduce one training "
              "image (in pixels, nearer to it than a third of the way to the next). Every number with its provenance is in `runs/<name>/eval/`; "
              "all rows in `report/results.csv`.", "",
              "Each run at its best guidance scale:", "", best, "", "Every scale:", "", table, ""]
    lines += [f"![{pathlib.Path(p).stem}](report/{pathlib.Path(p).name})" for p in summary["plots"]]
    middle = scale.cfg_scales.split(",")[len(scale.cfg_scales.split(",")) // 2]
    lines += ["", f"The first 64 samples at guidance {middle} (sample j shows class j mod 10, read row by row):", ""]
    for name in RUNS:
        grid = next((out / "runs" / name / "eval").glob(f"step_*/{SAMPLER}{scale.sampler_steps}-cfg{float(middle):g}-seed0/grid.png"),
                    None)
        if grid is not None:
            lines += [f"{RUN_TITLES[name]}:", "", f"![{name}]({grid.relative_to(out).as_posix()})", ""]
    return summary


def _nested(markdown: str) -> str:
    """A report table file as a part of the demo's report: its title dropped, its headings two levels down."""
    lines = markdown.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("##" + line if line.startswith("#") else line for line in lines).strip()
