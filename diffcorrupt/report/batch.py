"""Batch evaluation: many runs x checkpoints x guidance scales -> samples -> metrics -> tables and plots.

Every stage leaves its files where the single-run jobs would (samples and ``metrics.json`` under
``<workdir>/eval/step_<N>/<settings>/``), and each is skipped when its output is already there and
complete, so an interrupted batch starts again where it stopped and a finished one only redraws
the report. Rows name each run by what it was trained with, read from the config saved beside the
checkpoint, not from its folder name.
"""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import logging

from diffcorrupt.data.latent_encoding import pixel_data_config
from diffcorrupt.errors import UserError
from diffcorrupt.evaluate import METRICS_VERSION, check_scoring, evaluate
from diffcorrupt.parallel.distributed import on_process_zero
from diffcorrupt.report.earlier_rows import merge_rows
from diffcorrupt.report.equal_score import write_equal_score
from diffcorrupt.report.plots import write_plots
from diffcorrupt.report.size_plots import write_size_plots
from diffcorrupt.report.tables import Row, write_tables
from diffcorrupt.report.versus_clean import write_against_clean
from diffcorrupt.sample import sample_run
from diffcorrupt.sampling.restore import saved_run_config

METRICS_FILE = "metrics.json"


def run_batch(workdirs: list[Path], *, checkpoints: str, sample_flags: dict[str, Any], features: str | None,
              inception_weights: str | None, reference: str | None, reference_count: int | None,
              out: Path, clip_weights: str | None = None, class_names: str | None = None,
              vq_autoencoder: str | None = None, earlier_rows: Sequence[Row] = (),
              latest_cfg_scale: str | None = None) -> dict[str, Any] | None:
    """Samples on every process (the sampler spans them all), then scores and writes the report on
    process 0 alone; the other processes return None. ``sample_flags`` are the sample job's flags,
    except that ``steps`` is a tuple of step counts (or None: each run's own), each sampled in turn.
    ``latest_cfg_scale`` adds guidance scales at each run's latest checkpoint alone: the whole trade-off
    where a run is judged, at the cost of a few scales along its training.
    ``earlier_rows`` (of earlier reports) join the tables, each replaced by a row measured here anew."""
    checkpoints_found = [(workdir, step, saved_run_config(workdir, step))  # read where every process reads it
                         for workdir in workdirs for step in _checkpoint_steps(workdir, checkpoints)]
    latest: dict[Path, int] = {}  # each run's last step among those picked
    for workdir, step, _ in checkpoints_found:
        latest[workdir] = max(step, latest.get(workdir, step))
    if workdirs and not checkpoints_found:
        raise UserError("no checkpoint was found in the given --workdirs; train them first")
    for _, _, config in checkpoints_found:  # before the first sample: a missing weights file costs seconds
        check_scoring(features, pixel_data_config(config.data), inception_weights, [reference or "dataset"], clip_weights,
                      vq_autoencoder)
    sampled: list[tuple[Path, dict[str, Any], Any]] = []  # (run, sample record, the config it trained with)
    for workdir, step, config in checkpoints_found:
        scales = sample_flags["cfg_scale"]
        if latest_cfg_scale and step == latest[workdir]:
            scales = _joined_scales(scales if scales is not None else str(config.sample.cfg_scale), latest_cfg_scale)
        for steps in sample_flags["steps"] or (None,):
            controls = sample_flags.get("controls") if config.personalize.base else None  # others take none
            flags = types.SimpleNamespace(workdir=str(workdir), step=step, out=None, mesh="-1,1,1", autoencoder=None,
                                          **{**sample_flags, "steps": steps, "controls": controls, "cfg_scale": scales})
            sampled.extend((workdir, record, config) for record in sample_run(flags))

    def score_and_tabulate() -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        notes: dict[str, None] = {}  # what an evaluation could not measure, once each, in order
        for workdir, record, config in sampled:
            metrics_path = Path(record["samples"]) / METRICS_FILE
            wanted = {"features": features, "reference": reference, "reference_count": reference_count,
                      "clip_weights": clip_weights, "class_names": class_names, "vq_autoencoder": vq_autoencoder,
                      "metrics_version": METRICS_VERSION}
            if not _up_to_date(metrics_path, wanted):
                evaluate(record["samples"], reference=reference, features=features, inception_weights=inception_weights,
                         clip_weights=clip_weights, class_names=class_names, vq_autoencoder=vq_autoencoder,
                         reference_count=reference_count,
                         data_config=config.data, out=metrics_path, requested=wanted)
            result = json.loads(metrics_path.read_text())
            rows.extend(rows_of(result, workdir, config, metrics_path))
            notes.update(dict.fromkeys(filter(None, [result.get("clip_note"), result.get("copies_note")])))
        rows = merge_rows(list(earlier_rows), rows)
        if not rows:
            raise UserError("there is nothing to report: the --rows files hold no rows and no --workdirs were given")
        out.mkdir(parents=True, exist_ok=True)
        tables = write_tables(rows, out, list(notes)) | write_against_clean(rows, out) | write_equal_score(rows, out)
        plots = write_plots(rows, out) + write_size_plots(rows, out)
        logging.info("report: %d rows, tables %s, %d plots in %s", len(rows), sorted(tables), len(plots), out)
        return {"rows": len(rows), "tables": {k: str(v) for k, v in tables.items()}, "plots": [str(p) for p in plots]}

    return on_process_zero("report", score_and_tabulate)


def rows_of(result: dict[str, Any], workdir: Path, config, metrics_path: Path) -> list[dict[str, Any]]:
    """One row per feature network of a metrics file, labelled with the run's training settings
    (``config``, the one saved with the checkpoint that was sampled); ``rmd_file`` is the per-sample
    RMD beside the metrics file at ``metrics_path``, for the density plot."""
    settings = result["provenance"]
    personalized = config.personalize.base
    # A personalized run is compared by its base's pre-training (clean or corrupted, CEP or not), the
    # paper's question; its own seed tells the branch's seeds apart.
    trained = saved_run_config(personalized, config.personalize.base_step or None) if personalized else config
    corruption = trained.data.corruption
    cep = trained.model.cep
    base = {
        "run": workdir.name, "workdir": str(workdir.absolute()), "config_hash": settings["config_hash"],
        "subset": trained.data.subset or "all", "corruption": _corruption(corruption), "eta": float(corruption.ratio),
        "cep": "none" if cep.kind == "none" else f"{cep.kind}:{cep.gamma:g}", "baseline": _baseline(trained),
        "seed": int(config.seed),
        "step": settings["step"], "sampler": settings["sampler"], "steps": settings["steps"],
        "cfg_scale": settings["cfg_scale"], "num_samples": result["num_samples"],
        **{key: value for key, value in result.get("control", {}).items() if key.startswith("edge_f1")},
    }
    if config.distill.teacher:  # a distilled run: a setting of its own, its teacher a fact about the run
        base.update(distilled="lcm", teacher=Path(config.distill.teacher).name)
    if personalized:  # likewise a personalized run, labelled by its base run
        base.update(personalized=config.personalize.method, base=Path(personalized).name)
    return [{**base, "network": name, **network["metrics"],
             **({"rmd_file": str(metrics_path.parent / network["rmd_file"])} if "rmd_file" in network else {})}
            for name, network in result["networks"].items()]


def _corruption(corruption) -> str:
    """The kind, marked when drawn anew each epoch (Table 7's random corruption), so that it is a setting of its own."""
    if corruption.ratio <= 0:
        return "none"
    return corruption.kind if corruption.mode == "fixed" else f"{corruption.kind} ({corruption.mode})"


def _baseline(config) -> str:
    """The paper's non-CEP regularisers a run used (Tables 1 and 6), e.g. 'label smoothing 0.1'; 'none'."""
    used = [f"{name} {value:g}" for name, value in (("input perturbation", config.diffusion.input_perturbation),
                                                    ("condition dropout", config.model.condition_dropout),
                                                    ("label smoothing", config.model.label_smoothing)) if value]
    return " + ".join(used) or "none"


def _joined_scales(scales: str, more: str) -> str:
    """Comma-separated guidance scales, each once (1 and 1.0 are one), the rest left for the sampler to refuse."""
    def key(part: str) -> str:
        try:
            return f"{float(part):g}"
        except ValueError:
            return part

    kept: dict[str, str] = {}
    for part in filter(None, (part.strip() for part in f"{scales},{more}".split(","))):
        kept.setdefault(key(part), part)
    return ",".join(kept.values())


def _checkpoint_steps(workdir: Path, which: str) -> list[int]:
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise UserError(f"{workdir} holds no checkpoints/ folder; pass the --workdirs of train runs")
    steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    if which == "all" or not steps:
        return steps
    if which == "latest":
        return steps[-1:]
    try:
        wanted = [int(part) for part in which.split(",")]
    except ValueError:
        raise UserError(f"--checkpoints={which}: use latest, all or a comma-separated list of steps") from None
    missing = [s for s in wanted if s not in steps]
    if missing:
        raise UserError(f"{directory} has no checkpoint of step {missing[0]}; it has {', '.join(map(str, steps))}")
    return wanted


def _up_to_date(path: Path, wanted: dict[str, Any]) -> bool:
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("requested") == wanted
    except ValueError:
        return False

