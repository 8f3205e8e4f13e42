"""Checkpoints: one orbax ``CheckpointManager`` over ``<workdir>/checkpoints``.

Each step directory holds two items, so that a run resumes exactly where it stopped:

- ``state``: the train state pytree (params, EMA, optimizer state, step, PRNG key), written by
  orbax's ``StandardCheckpointHandler`` and restored into an abstract target *with shardings*, so
  a run saved on 8 devices resumes on 4 or 1. Typed PRNG keys (``jax.random.key``) need no
  special care: orbax stores their uint32 key data and rebuilds the typed key on restore.
- ``config``: ``config.to_dict()`` as JSON, to refuse a resume that would silently change the run.

The data position needs no item of its own: every step consumes one global batch, and global
batch k is a pure function of (config, k), so the step restored is where the data resumes
(``make_iterator(..., first_batch=step)``), on any number of processes, devices or grain
workers. grain's own iterator state, which earlier checkpoints also held, has a different shape
for each worker count and process, so a run could not resume after changing either.

Restore never deletes anything: a checkpoint that does not read back (truncated, corrupted, its
state or its config missing) is skipped with a warning and the previous one is tried; once one reads back, the
unreadable newer ones are moved to ``<workdir>/checkpoints_unreadable/`` so that the resumed run
can save those steps again.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from diffcorrupt.config.loading import flat_keys, json_leaves
from diffcorrupt.config.schema import base_config
from diffcorrupt.errors import ConfigError, UserError

T = TypeVar("T")

# Config groups whose keys shape the model, the data order or the optimisation: a resume that
# changes one of them is refused. Each group lists the keys inside it that may change freely.
# Groups not listed here (checkpoint, mesh, sample, ...) never block a resume.
_FIXED_GROUPS: dict[str, frozenset[str]] = {
    "seed": frozenset(),
    "model": frozenset(),
    "diffusion": frozenset(),
    "distill": frozenset(),
    "personalize": frozenset(),
    # Where the files live and how fast they are read do not change what is read; more epochs
    # only extend the same order.
    "data": frozenset({"data.data_dir", "data.control_dir", "data.num_workers", "data.num_threads", "data.prefetch", "data.num_epochs"}),
    # grad_accum splits the same batch into micro-batches; the rest is bookkeeping.
    "train": frozenset({"train.num_steps", "train.grad_accum", "train.log_every", "train.sample_every"}),
}
_OVERRIDE = "--allow_config_change"
# Status words that tensorstore puts in front of an I/O failure (it raises them as ValueError).
_STORAGE_STATUS = re.compile(
    r"\b(RESOURCE_EXHAUSTED|PERMISSION_DENIED|UNAVAILABLE|DATA_LOSS|NOT_FOUND|ALREADY_EXISTS|ABORTED|"
    r"DEADLINE_EXCEEDED|FAILED_PRECONDITION)\b|os_error_code"
)
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_PAYLOAD = re.compile(r" \[[a-z_]+(?:\[\d+\])?=")


class Checkpointer:
    """Saves and restores (state, config) in one workdir."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        every_steps: int,
        keep: int,
        keep_every: int = 0,
        async_save: bool = True,
    ):
        if every_steps < 1 or keep < 1 or keep_every < 0:
            raise ConfigError(
                f"checkpoint.every_steps={every_steps}, checkpoint.keep={keep} and checkpoint.keep_every={keep_every} "
                "must be >= 1, >= 1 and >= 0; fix the one out of range"
            )
        self.directory = _writable_directory(Path(workdir).absolute() / "checkpoints")
        preserve: list[ocp.checkpoint_managers.PreservationPolicy] = [ocp.checkpoint_managers.LatestN(keep)]
        if keep_every > 0:
            preserve.append(ocp.checkpoint_managers.EveryNSteps(keep_every))
        options = ocp.CheckpointManagerOptions(
            # A preemption is the training loop's to see (it stops there and forces a save).
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(every_steps),
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(preserve),
            enable_async_checkpointing=async_save,
            # Made up front, a step directory that cannot be made (read-only disk) fails save()
            # at once with an OSError, rather than in the background later.
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
            create=False,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()},
        )
        self._last_save: int | None = None  # the step a background failure belongs to
        self._failed = False  # a failed save has been raised as a UserError

    def should_save(self, step: int) -> bool:
        """True at every ``every_steps``-th step not saved yet."""
        return self._manager.should_save(step)

    def save(self, step: int, state: Any, config: ml_collections.ConfigDict, *, force: bool = False) -> bool:
        """Starts saving ``step`` when the interval says so, or now when ``force``; False if it did not
        save (not due, or that step is already saved, e.g. a final save right after a periodic one).

        The state is copied off the devices before this returns, so the caller may donate its
        buffers to the next step; the files are written in the background when async.
        """
        self.wait()
        if step in self._manager.all_steps() or not (force or self.should_save(step)):
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config.to_dict()))
        try:
            saved = self._manager.save(step, args=args, force=True)
        except Exception as err:
            self._after_failed_save(err, step)
        self._last_save = step
        return saved

    def wait(self) -> None:
        """Blocks until the background save is written; a failed one becomes a ``UserError``."""
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            self._after_failed_save(err, self._last_save)

    def close(self) -> None:
        """Waits for the last save (raising its failure) and releases orbax's threads.

        orbax raises one failed save once from each of its threads: the finalize thread's from
        ``wait``, then the save thread's from ``close``. A storage failure already raised here is
        not raised again, so the run ends on its first sentence rather than a traceback.
        """
        try:
            self.wait()
        finally:
            try:
                self._manager.close()
            except Exception as err:
                if not (self._failed and _is_storage_failure(err)):
                    self._after_failed_save(err, self._last_save)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, abstract_state: Any) -> tuple[Any, int] | None:
        """Restores the newest readable checkpoint: (state, step), or None when there is none.

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with ``.sharding`` set: arrays
        come back in those shardings, whatever mesh wrote them. The config is read too, so that a
        checkpoint without one counts as unreadable rather than resuming unchecked.
        """
        self.wait()
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), config=ocp.args.JsonRestore())
        steps = self.all_steps()
        found = self._newest_readable(steps, lambda step: self._manager.restore(step, args=args))
        if found is None:
            return None
        step, restored = found
        self._set_aside([s for s in steps if s > step])
        return restored.state, step

    def _set_aside(self, steps: list[int]) -> None:
        """Moves checkpoints that did not read back to ``<workdir>/checkpoints_unreadable/``: kept
        for inspection, but out of the way of the run, which will save those steps again."""
        if not steps:
            return
        if jax.process_index() == 0:
            aside = self.directory.parent / "checkpoints_unreadable"
            aside.mkdir(exist_ok=True)
            for step in steps:
                target = aside / f"{step}-{int(time.time())}"
                (self.directory / str(step)).rename(target)
                logging.warning("moved the unreadable checkpoint of step %d to %s", step, target)
        multihost_utils.sync_global_devices("diffcorrupt: unreadable checkpoints set aside")
        self._manager.reload()

    def saved_config(self, step: int | None = None) -> dict:
        """The config saved with ``step`` (default: the newest), as a plain dict. When that step's
        config does not read back, the newest older one that does is returned, with a warning."""
        steps = [s for s in self.all_steps() if step is None or s <= step]
        args = ocp.args.Composite(config=ocp.args.JsonRestore())
        found = self._newest_readable(steps, lambda s: self._manager.restore(s, args=args))
        if found is None:
            where = "" if step is None else f" at or before step {step}"
            raise UserError(f"there is no checkpoint{where} in {self.directory}; pass a step that all_steps() lists")
        return dict(found[1].config)

    def _after_failed_save(self, err: Exception, step: int | None) -> NoReturn:
        """Raises a storage failure as a ``UserError`` and anything else (a bug) as it is. orbax has
        already dropped the steps this save would have replaced from its list, though they are still
        on disk, so the list is read again first."""
        self._manager.reload()
        error = storage_error(err, step, self.directory)
        if error is None:
            raise err
        self._failed = True
        _let_writers_finish()
        raise error from err

    def _newest_readable(self, steps: list[int], read: Callable[[int], T]) -> tuple[int, T] | None:
        """``read`` on the newest step, falling back to older ones while it fails; None if no steps."""
        causes = []
        for step in sorted(steps, reverse=True):
            try:
                result = read(step)
                error = None
            except Exception as err:  # a corrupt checkpoint can fail in any layer of orbax/tensorstore
                result, error = None, err
            if _all_processes(error is None):
                return step, result
            cause = error_cause(error) if error is not None else "another process could not read it"
            logging.warning("the checkpoint of step %d in %s does not read back (%s); trying the one before it",
                            step, self.directory, cause)
            causes.append((step, cause))
        if not causes:
            return None
        newest, cause = causes[0]
        raise UserError(
            f"none of the {len(causes)} checkpoints in {self.directory} reads back (step {newest}: {cause}); "
            "if the state's structure changed since they were written, restore them with the code that wrote them, "
            "else start a fresh --workdir"
        )


def check_compatible(saved: dict, config: ml_collections.ConfigDict, *, allow: bool = False) -> None:
    """Refuses to resume when a key that changes the model, the data or the optimisation differs from
    the saved config (``allow`` skips the check). A key the saved config lacks (one added to the
    schema since) counts as its default, so runs outlive new options that leave them unchanged."""
    if allow:
        return
    old = {**json_leaves(base_config()), **flat_keys(ml_collections.ConfigDict(saved))}
    new = json_leaves(config)
    missing = "<absent>"
    for key in sorted(set(old) | set(new)):
        group = key.split(".", 1)[0]
        if group not in _FIXED_GROUPS or key in _FIXED_GROUPS[group]:
            continue
        before, after = old.get(key, missing), new.get(key, missing)
        if before != after:
            raise ConfigError(
                f"config key '{key}' is {after!r} but the checkpoint was saved with {before!r}; set it back, "
                f"use a fresh --workdir, or pass {_OVERRIDE} to resume anyway"
            )


def _writable_directory(directory: Path) -> Path:
    """Creates ``directory`` and proves it writable now, rather than at the first save an hour in."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise UserError(
            f"cannot write checkpoints to {directory} ({err.strerror or err}); pass a --workdir on a writable disk"
        ) from None
    return directory


def _let_writers_finish(timeout_s: float = 60.0) -> None:
    """Waits for orbax's writer threads still running after a failed save. orbax stops waiting at the
    first item write that fails, while the others (the metadata writer waits on that same write) fail
    a moment later and log it: joined here, their lines come before the run's one sentence, not after."""
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and type(thread).__module__.startswith("orbax."):
            # threading's own join: orbax's re-raises the thread's failure, which is already being raised
            threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))


def _all_processes(ok: bool) -> bool:
    """True when ``ok`` holds on every process, so that all of them fall back to the same step."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def storage_error(err: BaseException, step: int | None, directory: Path) -> UserError | None:
    """A failed save's error as a one-sentence ``UserError`` when storage caused it (disk full,
    read-only, gone); None when it is a bug."""
    if not _is_storage_failure(err):
        return None
    which = "a checkpoint" if step is None else f"the checkpoint of step {step}"
    return UserError(
        f"saving {which} to {directory} failed ({error_cause(err)}); the earlier checkpoints there are intact: "
        "free disk space or make the directory writable, then run the same command again to resume"
    )


def _is_storage_failure(err: BaseException) -> bool:
    """An OSError, or tensorstore's status text for one."""
    return isinstance(err, OSError) or bool(_STORAGE_STATUS.search(str(err)))


def error_cause(err: BaseException) -> str:
    """The shortest readable reason: the OS error text when there is one, else the first line."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    code = _OS_ERROR_CODE.search(str(err))
    if code:
        return os.strerror(int(code.group(1)))
    text = str(err).strip().splitlines()
    if not text:
        return type(err).__name__
    # tensorstore appends its whole spec as " [tensorstore_spec='{...}']" payloads, or a pointer to
    # its details that prints as a bound pybind method: noise here.
    first = _PAYLOAD.split(text[0], 1)[0].split(" See full TensorStore details", 1)[0]
    return f"{type(err).__name__}: {first[:500]}"
