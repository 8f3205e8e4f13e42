"""The reliability record's single-process rows at CI size; ``tools/reliability.py`` runs them in
full (``python tools/reliability.py kills --kills=20`` and the rows named in its docstring).

Covered here because no other test covers them: kill -9 *during* asynchronous checkpoint saves
(bitwise resume, nothing lost), a disk that fills during a save, a workdir that turns read-only
mid-run, a checkpoint with a missing item or from another model, the corruption and the training
with 0 and 2 grain workers, and a resume with another worker count. Covered elsewhere: SIGKILL
between saves (tests/test_multiprocess.py), SIGTERM, 8 -> 4 -> 1 devices, a truncated newest
checkpoint, an incompatible config, a NaN step (tests/test_train_job.py), and no checkpoint reading
back (tests/test_checkpoints.py).

The train jobs share one JAX compilation cache, so each compiles the step once per model.
"""

import logging
import shutil
import sys

import pytest

from train_runs import REPO, reliability


# A failed tensorstore read (the damaged checkpoints) may later call back into orbax's closed event
# loop from a tensorstore thread; Python reports it as unraisable in whichever test runs then.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

KILL_STEPS, KILL_EVERY = 30, 5


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_compilation_cache"))


@pytest.fixture(scope="module")
def reader():
    """Restores the small run's checkpoints in this process (one device)."""
    return reliability.StateReader()


def test_kill_9_during_async_saves_resumes_bitwise_and_loses_nothing(tmp_path, compile_cache, reader):
    # Three kill -9s, each as soon as a save of that life starts writing (orbax's temporary step
    # directory has appeared, nothing is committed), then the run finished; and an uninterrupted twin.
    result = reliability.kill_campaign(kills=3, seed=0, root=tmp_path, steps=KILL_STEPS, every=KILL_EVERY, keep=3,
                                       keep_every=10, modes=("save",), max_target=2, save_delay_max=0.0,
                                       compile_cache=compile_cache, reader=reader)
    assert result["kills"] == 3 and result["restarts"] == 3
    assert result["kills_during_save"] == 3, result["kill_log"]
    assert result["final_rc"] == 0 and result["final_step"] == KILL_STEPS
    assert result["bitwise_equal"]  # params, EMA, optimizer state, step, key, and the next batch
    kept = reliability.step_dirs(tmp_path / "straight")
    assert kept == [10, 20, 25, 30]  # keep=3 and keep_every=10
    assert result["kept_checkpoints_bitwise_equal"] == f"{len(kept)}/{len(kept)}"
    assert result["checkpoints_missing"] == [] and result["checkpoints_extra"] == []
    assert result["tmp_dirs_left"] == [] and result["set_aside_unreadable"] == [] and result["fallbacks"] == 0
    assert result["tracebacks_on_restart"] == 0
    assert len(result["resumed_from"]) == 3 and all(s % KILL_EVERY == 0 for s in result["resumed_from"])


def _skip_without_mount(path):
    reason = reliability.can_mount(path)
    if reason:
        pytest.skip(f"needs mount (tmpfs, bind): {reason}")


def _storage_failure_contract(result, cause, steps):
    assert result["rc"] == 2, result["message"]
    assert result["one_sentence"] and cause in result["message"], result["message"]
    assert result["failed_step"] > max(result["earlier_checkpoints"])
    # the earlier checkpoints read back, the project's restore picks the newest, and a rerun resumes there
    assert result["earlier_readable"] == result["earlier_checkpoints"]
    assert result["restored_step"] == max(result["earlier_checkpoints"])
    if steps is not None:
        assert result["rerun_rc"] == 0 and result["rerun_tracebacks"] == 0
        assert (result["rerun_first_step"], result["rerun_last_step"]) == (max(result["earlier_checkpoints"]), steps)
    assert result["tracebacks"] == 0 and result["sentence_is_last_line"], result["after_sentence"]  # alone, last


def test_disk_full_during_a_save_is_one_sentence_and_the_rerun_resumes(tmp_path, compile_cache, reader):
    _skip_without_mount(tmp_path)
    result = reliability.disk_full(root=tmp_path, size_mb=150, steps=20, every=5, compile_cache=compile_cache,
                                   reader=reader)
    _storage_failure_contract(result, "(No space left on device)", 20)


def test_a_workdir_turned_read_only_mid_run_is_one_sentence(tmp_path, compile_cache, reader):
    _skip_without_mount(tmp_path)
    # (the rerun that resumes is the disk-full test's: the same restore after the same failure)
    result = reliability.read_only(root=tmp_path, every=5, ro_after=10, compile_cache=compile_cache, rerun=False,
                                   reader=reader)
    _storage_failure_contract(result, "(Read-only file system)", None)


def _write_run(workdir, steps, overrides=()):
    """A workdir with checkpoints at ``steps`` of the small run (``overrides`` applied), written by
    the project's Checkpointer in this process as the train job writes them: state (its step
    counter set to the step) and config."""
    import jax
    import jax.numpy as jnp

    from diffcorrupt.config.loading import load_config
    from diffcorrupt.data.pipeline import corrupted_source
    from diffcorrupt.models.registry import model_from_config
    from diffcorrupt.parallel.mesh import make_mesh
    from diffcorrupt.parallel.sharding import rules_from_config
    from diffcorrupt.training.batches import input_spec
    from diffcorrupt.training.checkpoints import Checkpointer
    from diffcorrupt.training.optimizer import make_optimizer
    from diffcorrupt.training.state import create_state

    flags = [a[len("--config."):] for a in reliability.SMALL[1:]] + list(overrides)
    config = load_config(str(REPO / "configs/fmnist.py:tiny"), flags)
    config.mesh.data = 1
    mesh = make_mesh(config.mesh, jax.devices()[:1])
    view = corrupted_source(config)
    shape, num_classes = input_spec(config, view.source)
    state, _ = create_state(model_from_config(config, shape, num_classes), make_optimizer(config.train)[0], shape,
                            config.seed, mesh, rules_from_config(config.mesh.rules))
    checkpointer = Checkpointer(workdir, every_steps=1, keep=100, async_save=False)
    for step in steps:
        counter = jax.device_put(jnp.asarray(step, state.step.dtype), state.step.sharding)
        checkpointer.save(step, state.replace(step=counter), config, force=True)
    checkpointer.close()
    return workdir


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A run with checkpoints 10, 20, 25, 30."""
    return _write_run(tmp_path_factory.mktemp("base"), [10, 20, 25, 30])


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A checkpoint of another model, DiT-T/4 (``python tools/reliability.py items`` trains one instead)."""
    return _write_run(tmp_path_factory.mktemp("foreign"), [10], ["model.name=DiT-T/4"]) / "checkpoints" / "10"


def _resume(workdir, reader):
    """What the train job does with a workdir before it trains: the config check against the newest
    saved config, then the restore of the newest readable checkpoint (and its next batch)."""
    from diffcorrupt.training.checkpoints import Checkpointer, check_compatible

    checkpointer = Checkpointer(workdir, every_steps=KILL_EVERY, keep=100, async_save=False)
    try:
        check_compatible(checkpointer.saved_config(), reader.config)
    finally:
        checkpointer.close()
    return reader.latest(workdir)[0]


@pytest.mark.parametrize("case", ["missing_state", "missing_config", "foreign"])
def test_a_damaged_or_foreign_newest_checkpoint_is_skipped_or_refused_and_kept(case, base, foreign, reader, tmp_path):
    """On a run with checkpoints 10, 20, 25, 30: the newest loses an item, or a checkpoint of another
    model lands as step 35."""
    from diffcorrupt.errors import ConfigError

    workdir = tmp_path / "run"
    shutil.copytree(base, workdir)
    checkpoints = workdir / "checkpoints"
    assert reliability.step_dirs(workdir) == [10, 20, 25, 30]
    if case.startswith("missing_"):
        shutil.rmtree(checkpoints / "30" / case.split("_")[1])
    else:
        shutil.copytree(foreign, checkpoints / "35")
    before = reliability.file_digests(checkpoints)
    if case == "foreign":  # refused, naming the key, before anything is read or moved
        with pytest.raises(ConfigError, match="'model.name' is 'DiT-T/8' but the checkpoint was saved with 'DiT-T/4'"):
            _resume(workdir, reader)
        expected_aside = []
    else:
        assert _resume(workdir, reader) == 25
        expected_aside = ["30"]
    aside = reliability.set_aside(workdir)
    assert [name.split("-")[0] for name in aside] == expected_aside
    lost = [key for key, digest in before.items() if not reliability.file_kept(workdir, aside, key, digest)]
    assert lost == []  # nothing deleted: every file is where it was, or in checkpoints_unreadable/


def test_a_foreign_checkpoint_resumed_with_allow_config_change_is_skipped_and_kept(base, foreign, compile_cache,
                                                                                 tmp_path):
    """The train job itself (the restore of a foreign state leaves orbax's reads behind, so not in
    this process): --allow_config_change passes the config check, the foreign state does not read
    back, the run resumes from the step before it and sets it aside."""
    args = ["--config.checkpoint.every_steps=5", "--config.checkpoint.keep=100"]
    result = reliability.item_case("foreign_allowed", base=base, root=tmp_path,
                                   env=reliability.job_env(1, compile_cache), foreign=foreign, args=args)
    assert (result["rc"], result["first_step"], result["last_step"]) == (0, 30, 40), result["message"]
    assert result["fell_back_past"] == [35] and result["set_aside"] == [35] and result["files_lost"] == []
    assert result["as_documented"] and result["tracebacks"] == 0


def test_no_checkpoint_reading_back_is_one_sentence_last_and_no_traceback(base, compile_cache, tmp_path):
    """Every state truncated: the job's sentence is the last line, not followed by asyncio's reports
    of orbax's reads that the failed restores left behind."""
    args = ["--config.checkpoint.every_steps=5", "--config.checkpoint.keep=100"]
    result = reliability.item_case("none_reads", base=base, root=tmp_path, env=reliability.job_env(1, compile_cache),
                                   args=args)
    assert result["rc"] == 2 and "none of the 4 checkpoints" in result["message"], result["message"]
    assert result["sentence_is_last_line"] and result["tracebacks"] == 0
    assert result["set_aside"] == [] and result["files_lost"] == []


def _failure_in(filename):
    try:
        exec(compile("raise ValueError('OUT_OF_RANGE')", filename, "exec"))
    except ValueError:
        kind, value, trace = sys.exc_info()
        return kind, value, trace.tb_next  # the frame in ``filename`` alone, as the loop logs it


@pytest.mark.parametrize("message, failure, dropped", [
    ("_GatheringFuture exception was never retrieved", "/venv/site-packages/orbax/checkpoint/serialization.py", True),
    ("Task exception was never retrieved\nfuture: <Task coro=<read() running at /venv/orbax/io.py:3>>", None, True),
    ("_GatheringFuture exception was never retrieved", "/work/project/loader.py", False),
    ("Future exception was never retrieved\nfuture: <Future finished exception=ValueError('OUT_OF_RANGE')>", "", True),
    ("Task exception was never retrieved\nfuture: <Task finished coro=<_wrap_awaitable() done> exception=ValueError('OUT_OF_RANGE')>",
     "/usr/lib/python3.11/asyncio/tasks.py", True),  # a tensorstore future wrapped in a task
    ("Executing <Task pending> took 0.2 seconds", None, False),
])
def test_asyncio_reports_of_orbax_io_left_behind_are_dropped_and_no_others(message, failure, dropped):
    from diffcorrupt import jobs

    # failure: the file the exception was raised in; "" for tensorstore's futures (C++, no frame); None: none
    exc_info = None if failure is None else _failure_in(failure) if failure else (ValueError, ValueError("x"), None)
    record = logging.LogRecord("asyncio", logging.ERROR, "base_events.py", 1, message, None, exc_info)
    assert jobs._not_an_orbax_task(record) is not dropped


def test_the_corruption_and_the_run_are_identical_with_0_and_2_workers_and_resume_across(tmp_path, compile_cache):
    result = reliability.workers(root=tmp_path, num_batches=16, train_steps=10, compile_cache=compile_cache)
    assert result["manifest_equal"]  # diffcorrupt corruption: the same corrupted set
    assert result["fixed_batches_equal"] and result["random_batches_equal"]  # indices, labels, flags, images
    assert result["fixed_flags_match_manifest"] and result["fixed_flags_are_flipped_labels"]
    assert result["random_flags_are_flipped_labels"] and result["random_epochs"] >= 3
    assert result["fixed_corrupted_served"] > 0 and result["random_corrupted_served"] > 0
    assert result["trained_state_equal"]  # 0 and 2 workers train the same state
    # data.num_workers may change on resume: the data reads on from the batch of the restored step
    assert result["resume_2_to_0_workers_rc"] == 0, result["resume_2_to_0_workers_message"]
    assert result["resume_2_to_0_workers_equal"]
