"""The training loop: data -> sharded step -> metrics, previews and checkpoints, resumable.

Everything the run depends on is in the workdir: orbax checkpoints (state and config),
TensorBoard events and ``metrics.jsonl``. Starting the same command again resumes from the newest
readable checkpoint, with the same next batch (global batch k is a function of the config and k
alone). SIGTERM (a preemption notice) saves the current step and ends the run cleanly.
"""

from __future__ import annotations

import pathlib
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from diffcorrupt.autoencoders.storage import load_autoencoder
from diffcorrupt.config.loading import config_hash
from diffcorrupt.data.pipeline import corrupted_source, make_iterator
from diffcorrupt.errors import UserError
from diffcorrupt.data.global_batch import to_global_batch
from diffcorrupt.sampling.restore import write_model_spec
from diffcorrupt.training.batches import control_shape, input_spec, model_batch
from diffcorrupt.training.checkpoints import Checkpointer, check_compatible
from diffcorrupt.training.compiled_run import CompiledRun, compile_run
from diffcorrupt.training.state import abstract_state
from diffcorrupt.training.pretrained import pin_steps
from diffcorrupt.training.jsonl_writer import JsonlWriter
from diffcorrupt.training.peak_flops import peak_flops
from diffcorrupt.training.preview import GRID, preview_conditions, write_preview


class Preemption:
    """SIGTERM (a preemption notice) -> the step after which every process saves and stops.

    One process: a Python handler sets a flag the loop polls once per step. Several: JAX's
    preemption service (started by ``jax.distributed.initialize``) catches SIGTERM on whichever
    process receives it and agrees with the others on one step, so all of them save that step
    and none waits in a collective for a peer that left; a Python handler would replace its own.
    """

    def __init__(self):
        self.requested = False
        self._several = jax.process_count() > 1
        self._previous = None if self._several else signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM received: saving a checkpoint of the current step, then stopping")
        self.requested = True
        if callable(self._previous):  # a caller's handler (a local sweep's) hears the notice too
            self._previous(signum, frame)

    def reached(self, step: int) -> bool:
        """Whether to stop after ``step``; every process calls it at every step."""
        if self._several and not self.requested:
            self.requested = multihost_utils.reached_preemption_sync_point(step)
            if self.requested:
                logging.warning("preemption notice: every process saves step %d, then stops", step)
        return self.requested

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False,
          aot_only: bool = False) -> dict[str, Any]:
    """Trains (or resumes) the configured run in ``workdir``; returns a summary of the run."""
    workdir_path = pathlib.Path(workdir)
    checkpointer = None
    if not aot_only:  # refuse a foreign or unwritable workdir before any compile time is spent
        checkpointer = Checkpointer(workdir_path, every_steps=config.checkpoint.every_steps, keep=config.checkpoint.keep,
                                    keep_every=config.checkpoint.keep_every, async_save=config.checkpoint.async_save)
        latest = checkpointer.latest_step()
        saved = None if latest is None else checkpointer.saved_config()
        config = pin_steps(config, saved)
        if saved is not None:
            check_compatible(saved, config, allow=allow_config_change)
            if latest >= config.train.num_steps:  # finished: no compile, no data, nothing written
                checkpointer.close()
                logging.info("%s is already trained to step %d of %d", workdir_path, latest, config.train.num_steps)
                return {"workdir": str(workdir_path), "first_step": latest, "last_step": latest, "preempted": False,
                        "compile_s": 0.0}
    view = corrupted_source(config)
    input_shape, num_classes = input_spec(config, view.source)
    controls = control_shape(config, view.source)
    run = compile_run(config, input_shape, num_classes, controls)
    if aot_only:
        return _aot_report(run)
    meta = getattr(view.source, "meta", None) or {}
    if jax.process_index() == 0:
        write_model_spec(workdir_path, input_shape, num_classes, (meta.get("autoencoder") or {}).get("path"),
                         controls if config.personalize.base else None)
    mesh, rules, model, tokenizer, state = run.mesh, run.rules, run.model, run.tokenizer, run.state

    if checkpointer.latest_step() is not None:
        restored = checkpointer.restore(abstract_state(state))
        if restored is not None:
            state, step = restored
            logging.info("resumed from the checkpoint of step %d in %s", step, workdir_path / "checkpoints")
    first_step = int(state.step)
    iterator = make_iterator(config, process_index=jax.process_index(), process_count=jax.process_count(),
                             source=view, first_batch=first_step)  # one global batch a step
    writer = metric_writers.create_default_writer(workdir_path, just_logging=jax.process_index() > 0)
    jsonl = JsonlWriter(workdir_path / "metrics.jsonl", resume_step=first_step) if jax.process_index() == 0 else None
    if first_step == 0:
        writer.write_hparams({"config_hash": config_hash(config), "model": config.model.name})
    progress = periodic_actions.ReportProgress(num_train_steps=config.train.num_steps, writer=writer)
    preview_cond, decode = None, None
    if config.train.sample_every:  # every process takes part in sampling the grid; process 0 writes it
        captions = [] if tokenizer is None else [view.source[i]["caption"] for i in range(min(GRID, len(view)))]
        preview_cond = preview_conditions(num_classes, tokenizer, captions)
        autoencoder = (meta.get("autoencoder") or {}).get("path")
        if autoencoder and jax.process_index() == 0:  # previewed through the autoencoder that made them
            decode = load_autoencoder(autoencoder).decode_latents
    preemption = Preemption()
    interval = _Interval()
    step = first_step
    try:
        while step < config.train.num_steps and not preemption.reached(step):
            wait_start = time.perf_counter()
            batch = model_batch(next(iterator), tokenizer)
            interval.data_wait += time.perf_counter() - wait_start
            with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
                state, metrics = run.step(state, to_global_batch(batch, mesh), *run.step_args)
            step += 1
            interval.add(metrics)
            progress(step)
            if step % config.train.log_every == 0 or step == config.train.num_steps:
                _guard(state)
                scalars = interval.flush(run.step_flops, config.train.batch_size)
                writer.write_scalars(step, scalars)
                if jsonl:
                    jsonl.write_scalars(step, scalars)
            side_start = time.perf_counter()
            if preview_cond is not None and step % config.train.sample_every == 0:
                write_preview(model, state.ema_params, config, run.schedule, preview_cond, input_shape, workdir_path, step,
                              writer, mesh, decode)
            if checkpointer.should_save(step):
                _guard(state)
                checkpointer.save(step, state, config)
            interval.excluded += time.perf_counter() - side_start
        _guard(state)
        checkpointer.save(step, state, config, force=True)
        checkpointer.wait()
    finally:
        preemption.restore()
        checkpointer.close()
        writer.flush()
        if jsonl:
            jsonl.close()
    return {"workdir": str(workdir_path), "first_step": first_step, "last_step": step, "preempted": preemption.requested,
            "compile_s": round(run.compile_s, 2)}


def _guard(state) -> None:
    """Stops before anything is written when a step produced a non-finite loss or gradient."""
    bad = int(state.first_nonfinite_step)
    if bad >= 0:
        raise UserError(
            f"step {bad} produced a non-finite loss or gradient, so training stopped without saving it; the "
            "checkpoints already in the workdir are intact: lower train.lr, set train.grad_clip, or check the data"
        )


class _Interval:
    """Accumulates step metrics on the device between logs; one host transfer per log."""

    def __init__(self):
        self.sums: dict[str, Any] = {}
        self.steps = 0
        self.data_wait = 0.0
        self.excluded = 0.0  # previews and checkpoint hand-offs: not training throughput
        self.start = time.perf_counter()

    def add(self, metrics: dict[str, jax.Array]) -> None:
        self.sums = metrics if not self.sums else jax.tree.map(lambda a, b: a + b, self.sums, metrics)
        self.steps += 1

    def flush(self, step_flops: float, batch_size: int) -> dict[str, float]:
        sums = {k: float(v) for k, v in jax.device_get(self.sums).items()}
        elapsed = time.perf_counter() - self.start - self.excluded
        scalars = {k: v / self.steps for k, v in sums.items() if not k.startswith(("loss_sum_", "num_"))}
        if "num_corrupted" in sums:
            corrupted, total = sums["num_corrupted"], self.steps * batch_size
            if corrupted:
                scalars["loss_corrupted"] = sums["loss_sum_corrupted"] / corrupted
            if total > corrupted:
                scalars["loss_clean"] = sums["loss_sum_clean"] / (total - corrupted)
        scalars["examples_per_s"] = self.steps * batch_size / elapsed
        scalars["examples_per_s_per_device"] = scalars["examples_per_s"] / jax.device_count()
        scalars["data_wait_fraction"] = self.data_wait / elapsed
        if step_flops:  # XLA's count for the partitioned step: the work of one device
            scalars["tflops_per_s_per_device"] = step_flops * self.steps / elapsed / 1e12
            peak = peak_flops()
            if peak:
                scalars["mfu"] = scalars["tflops_per_s_per_device"] * 1e12 / peak
        self.__init__()
        return scalars


def _aot_report(run: CompiledRun) -> dict[str, Any]:
    memory = run.step.memory_analysis()
    report = {"aot": True, "mesh": dict(run.mesh.shape), "compile_s": round(run.compile_s, 2),
              "step_gflops": run.step_flops / 1e9}
    if memory is not None:
        for field in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "generated_code_size_in_bytes"):
            if hasattr(memory, field):
                report[field.replace("_in_bytes", "_mib_per_device")] = round(getattr(memory, field) / 2**20, 2)
    return report
