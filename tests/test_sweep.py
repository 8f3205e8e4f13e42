"""`diffcorrupt sweep`: run names, the printed tpu and slurm commands, submission chained by job ids,
one-sentence errors, and a tiny local sweep that trains two runs and then skips them on a rerun."""

import json
import os
import pathlib
import re
import shlex
import signal
import stat
import subprocess
import types

import pytest

from diffcorrupt import sweep
from diffcorrupt.errors import UserError
from diffcorrupt.sweeps import grids
from diffcorrupt.report.tables import write_tables
from diffcorrupt.sweeps.commands import Step, plan
from diffcorrupt.sweeps.expand import expand
from diffcorrupt.sweeps.grids import Grid, cep, etas, values
from diffcorrupt.sweeps import side_by_side
from diffcorrupt.sweeps.side_by_side import core_shares, run_side_by_side, usable_cores
from test_report_tables import _row

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = f'''
from diffcorrupt.sweeps.grids import Grid, values

GRID = Grid("tiny_e2e", "{REPO}/configs/fmnist.py:tiny", (values("data.corruption.ratio", 0.0, 0.1),),
            fixed=(("model.name", "DiT-T/8"), ("data.image_size", 16), ("train.batch_size", 8),
                   ("train.num_steps", 4), ("checkpoint.every_steps", 4), ("train.log_every", 4)))
'''


def run_sweep(capsys, *args):
    """sweep.main in this process: (exit status, stdout)."""
    capsys.readouterr()
    status = sweep.main(list(args))
    return status, capsys.readouterr().out


def one_sentence(err, *fragments):
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------- names


def test_names_say_the_settings_and_are_deterministic():
    grid = Grid("g", "configs/fmnist.py:small", (etas((0.0, 0.05), ("symmetric",)), (cep("uniform"), cep("gaussian", 0.5))),
                seeds=(0, 1))
    names = [run.name for run in expand(grid, pathlib.Path("root"))]
    assert names == [f"{eta}_{c}_seed{s}" for eta in ("eta0", "eta0.05-symmetric")
                     for c in ("cep-uniform-1", "cep-gaussian-0.5") for s in (0, 1)]
    assert names == [run.name for run in expand(grid, pathlib.Path("root"))]
    run = expand(grid, pathlib.Path("root"))[6]
    assert run.name == "eta0.05-symmetric_cep-gaussian-0.5_seed0"
    assert run.overrides == ("data.corruption.ratio=0.05", "data.corruption.kind=symmetric", "data.corruption.mode=fixed",
                             "model.cep.kind=gaussian", "model.cep.gamma=0.5", "seed=0")
    assert run.workdir == pathlib.Path("root", run.name)


def test_names_are_filesystem_safe_and_clashes_are_refused():
    grid = Grid("g", "configs/fmnist.py", (values("data.corruption.groups", "0,2;5,7", "a b/c"),))
    names = [run.name for run in expand(grid, pathlib.Path("r"))]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in names), names
    clash = Grid("clash", "configs/fmnist.py", (values("data.corruption.groups", "a/b", "a:b"),))
    with pytest.raises(UserError) as err:
        expand(clash, pathlib.Path("r"))
    one_sentence(err, "clash", "the name groupsa-b_seed0")


def test_each_distilled_run_names_the_teacher_of_its_own_seed():
    students = expand(grids.GRIDS["fmnist_lcm"], pathlib.Path("runs/fmnist_lcm"))
    teachers = {run.name: run for run in expand(grids.GRIDS["fmnist_latent"], pathlib.Path("runs/fmnist_latent"))}
    assert len(students) == len(teachers) == 6
    for student in students:
        config = student.load()
        teacher = teachers[pathlib.Path(config.distill.teacher).name]
        assert pathlib.Path(config.distill.teacher) == teacher.workdir
        assert (config.seed, config.data.corruption.ratio) == (teacher.load().seed, teacher.load().data.corruption.ratio)


def test_every_grid_name_is_unique_within_its_grid():
    for grid in grids.GRIDS.values():
        names = [run.name for run in expand(grid, pathlib.Path("r"))]
        assert len(set(names)) == len(names), grid.name


# ---------------------------------------------------------------- printed commands


def lines_of(script, prefix):
    return [shlex.split(line) for line in script.splitlines() if line.startswith(prefix)]


def test_slurm_script_chains_train_report_and_the_final_report(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    status, out = run_sweep(capsys, "--grid=imagenet_dit", "--launcher=slurm", "--report", "--root=/shared/sw",
                            "--sbatch_args=--time=48:00:00 --partition=gpu")
    assert status == 0 and out.startswith("#!/usr/bin/env bash")
    jobs = {line.split("=", 1)[0]: line for line in out.splitlines() if re.match(r"^\w+=\$\(sbatch", line)}
    assert len(jobs) == 13 + 13 + 1
    train = jobs["train_1"]
    assert "--job-name=train-eta0.025-symmetric_seed0" in train and "--dependency" not in train
    assert "--time=48:00:00 --partition=gpu launch/slurm_gpu.sbatch train --config=configs/imagenet.py:dit_xl2" in train
    assert "--workdir=/shared/sw/eta0.025-symmetric_seed0" in train and "--config.data.corruption.ratio=0.025" in train
    assert train.endswith("| cut -d';' -f1)")
    report = jobs["report_7"]
    assert "--dependency=afterok:$train_7 " in report and "--workdirs=/shared/sw/eta0.025-asymmetric_seed0" in report
    assert "--reference=references/VIRTUAL_imagenet256_labeled.npz" in report
    final = jobs["report_all"]
    assert "--dependency=afterok:" + ":".join(f"$report_{i}" for i in range(13)) + " " in final
    assert "--out=/shared/sw/report" in final and final.count("/shared/sw/") == 14


def test_tpu_script_runs_each_run_through_the_pod_launcher(capsys):
    status, out = run_sweep(capsys, "--grid=cc3m", "--launcher=tpu", "--only=swap", "--root=sw",
                            "--config.data.data_dir=/data/cc3m-latents")
    commands = lines_of(out, "bash ")
    assert status == 0 and len(commands) == 7  # eta0 is left out by --only
    assert "TPU_NAME" in out
    assert commands[0][:4] == ["bash", "launch/tpu_pod.sh", "train", "--config=configs/cc3m.py"]
    assert "--workdir=sw/eta0.025-swap_seed0" in commands[0]
    assert commands[0][-1] == "--config.data.data_dir=/data/cc3m-latents"  # after the grid's own overrides
    assert {c[c.index("--config.data.corruption.kind=swap")] for c in commands} == {"--config.data.corruption.kind=swap"}


def test_local_dry_run_prints_and_trains_nothing(capsys, tmp_path):
    status, out = run_sweep(capsys, "--grid=repro_small", "--dry_run", f"--root={tmp_path}", "--only=seed2")
    commands = lines_of(out, "diffcorrupt ")
    assert status == 0 and len(commands) == 7
    assert all(c[1] == "train" and c[-1] == "--config.seed=2" for c in commands)
    assert not any(tmp_path.iterdir())


def fake_sbatch(tmp_path, monkeypatch, fail_at=0):
    """A stand-in sbatch on PATH that logs its arguments and answers ids the way --parsable does
    (1001, 1002, ...), refusing its ``fail_at``-th call; returns the log."""
    log = tmp_path / "sbatch.log"
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\nn=$(wc -l < {log})\n'
                    f'if [ "$n" = {fail_at} ]; then echo "sbatch: error: Invalid partition" >&2; exit 1; fi\n'
                    'echo "$((1000 + n));cluster"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(REPO)
    return log


def test_slurm_submit_chains_real_job_ids(capsys, tmp_path, monkeypatch):
    log = fake_sbatch(tmp_path, monkeypatch)
    status, out = run_sweep(capsys, "--grid=cc3m_baselines", "--launcher=slurm", "--submit", "--report",
                            f"--root={tmp_path / 'sw'}")
    submitted = json.loads(out.strip().splitlines()[-1])["submitted"]
    assert status == 0 and submitted["train_0"] == "1001" and submitted["report_all"] == "1009"
    calls = log.read_text().splitlines()
    assert len(calls) == 9
    assert "--dependency=afterok:1002 " in calls[5]  # report_1 waits for train_1
    assert "--dependency=afterok:1005:1006:1007:1008 " in calls[8]


def test_a_refused_submission_names_what_was_already_submitted(tmp_path, monkeypatch):
    fake_sbatch(tmp_path, monkeypatch, fail_at=3)
    with pytest.raises(UserError) as err:
        sweep.main(["--grid=cc3m_baselines", "--launcher=slurm", "--submit", f"--root={tmp_path / 'sw'}"])
    one_sentence(err, "step train_2 (train cep-uniform-1_seed0) failed: sbatch: error: Invalid partition",
                 "train_0=1001, train_1=1002;")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("args, fragments", [
    (["--grid=imagenet_ldm"], ["unknown grid 'imagenet_ldm'", "did you mean"]),
    (["--grid=repro_small", "--config.model.cep.kindd=uniform"], ["unknown config key 'model.cep.kindd'", "eta0_seed0"]),
    (["--grid=repro_small", "--config.seed=3"], ["--config.seed is varied by grid 'repro_small'"]),
    (["--grid=repro_small", "--only=nothing-like-this"], ["no run of grid 'repro_small'"]),
    (["--grid=repro_small", "--submit"], ["--submit is for --launcher=tpu or slurm"]),
    (["--grid=missing_file.py"], ["grid file 'missing_file.py' does not exist"]),
])
def test_mistakes_are_one_sentence(args, fragments, capsys):
    with pytest.raises(UserError) as err:
        sweep.main(args)
    one_sentence(err, *fragments)


def test_outside_the_repository_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        sweep.main(["--grid=cc3m_baselines", "--dry_run"])
    one_sentence(err, "configs/cc3m.py", "repository root")
    (tmp_path / "grid.py").write_text(TINY)  # its config path is absolute
    with pytest.raises(UserError) as err:
        sweep.main(["--grid=grid.py", "--launcher=slurm", "--submit", "--root=sw"])
    one_sentence(err, "launch/slurm_gpu.sbatch", "repository root")


def test_cli_exit_status_for_a_mistake(capsys):
    from diffcorrupt.cli import main

    assert main(["sweep", "--grid=nope"]) == 2
    assert "diffcorrupt sweep: error: unknown grid 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------- a tiny local sweep end to end


def test_local_sweep_trains_then_skips_finished_runs(tmp_path, capsys, monkeypatch):
    grid_file = tmp_path / "tiny_grid.py"
    grid_file.write_text(TINY)
    root = tmp_path / "sw"
    status, out = run_sweep(capsys, f"--grid={grid_file}", f"--root={root}")
    summary = json.loads(out.strip().splitlines()[-1])
    assert status == 0 and summary["trained"] == ["ratio0_seed0", "ratio0.1_seed0"] and summary["skipped"] == []
    for name in summary["trained"]:
        assert sorted(p.name for p in (root / name / "checkpoints").iterdir() if p.name.isdigit()) == ["4"]
    stamp = (root / "ratio0.1_seed0" / "checkpoints" / "4").stat().st_mtime_ns

    status, out = run_sweep(capsys, f"--grid={grid_file}", f"--root={root}")
    summary = json.loads(out.strip().splitlines()[-1])
    assert status == 0 and summary["trained"] == [] and summary["skipped"] == ["ratio0_seed0", "ratio0.1_seed0"]
    assert (root / "ratio0.1_seed0" / "checkpoints" / "4").stat().st_mtime_ns == stamp

    reports = []  # the report job's own entry point gets the flags that were printed for it
    monkeypatch.setattr("diffcorrupt.report.job.main", lambda argv: reports.append(argv) or 0)
    status, out = run_sweep(capsys, f"--grid={grid_file}", f"--root={root}", "--report")
    a, b = root / "ratio0_seed0", root / "ratio0.1_seed0"
    assert reports == [[f"--workdirs={a}", f"--out={a}/report"], [f"--workdirs={b}", f"--out={b}/report"],
                       [f"--workdirs={a},{b}", f"--out={root}/report"]]
    assert json.loads(out.strip().splitlines()[-1])["report"] == str(root / "report")

    status, out = run_sweep(capsys, f"--grid={grid_file}", f"--root={root}", "--launcher=slurm")
    assert "# skipped: ratio0_seed0 is finished at step 4" in out and "sbatch" not in out

    with pytest.raises(UserError) as err:  # a finished folder of other settings is not taken for this run
        sweep.main([f"--grid={grid_file}", f"--root={root}", "--config.model.cep.kind=uniform"])
    one_sentence(err, "is finished but was trained with other settings", "model.cep.kind")


def test_sigterm_stops_a_local_sweep_once_the_run_training_has_saved(tmp_path, capsys, monkeypatch):
    """A scheduler's cancel mid-run: the run saves the step it is on, and neither its report nor the next run
    starts; cancelled again during the report, the sweep stops there."""
    from diffcorrupt.training import loop

    batches, reports, real_batch = [], [], loop.model_batch

    def model_batch(*args):
        batches.append(args)
        if len(batches) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_batch(*args)

    def report_cancelled(argv):
        reports.append(argv)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "model_batch", model_batch)
    monkeypatch.setattr("diffcorrupt.report.job.main", report_cancelled)
    grid_file = tmp_path / "tiny_grid.py"
    grid_file.write_text(TINY)
    root = tmp_path / "sw"
    handler = signal.getsignal(signal.SIGTERM)
    status, out = run_sweep(capsys, f"--grid={grid_file}", f"--root={root}", "--report")
    assert status == 0 and json.loads(out.strip().splitlines()[-1])["preempted"]
    assert sorted(p.name for p in (root / "ratio0_seed0" / "checkpoints").iterdir()) == ["2"]
    assert reports == [] and not (root / "ratio0.1_seed0" / "checkpoints").exists()
    assert signal.getsignal(signal.SIGTERM) == handler

    with pytest.raises(SystemExit) as stopped:  # both trained (the first resumed); the first report is cancelled
        sweep.main([f"--grid={grid_file}", f"--root={root}", "--report"])
    assert stopped.value.code == 128 + signal.SIGTERM and len(reports) == 1
    for name in ("ratio0_seed0", "ratio0.1_seed0"):
        assert "4" in {p.name for p in (root / name / "checkpoints").iterdir()}
    assert signal.getsignal(signal.SIGTERM) == handler


def test_cores_are_shared_out_in_contiguous_even_shares():
    assert core_shares([0, 1], 2) == [(0,), (1,)]
    assert core_shares(list(range(16)), 3) == [tuple(range(6)), tuple(range(6, 11)), tuple(range(11, 16))]
    assert core_shares([2, 5, 7], 1) == [(2, 5, 7)]
    with pytest.raises(UserError) as err:
        core_shares([0, 1], 3)
    one_sentence(err, "--parallel=3 is more runs than the 2 cores", "give --parallel=2 or fewer")
    with pytest.raises(UserError) as err:
        core_shares([], 2)
    one_sentence(err, "run the sweep without --parallel")
    with pytest.raises(UserError) as err:
        sweep.main(["--grid=fmnist_memorization", "--launcher=slurm", "--parallel=2"])
    one_sentence(err, "--parallel is for --launcher=local")


def test_a_failed_run_side_by_side_lets_the_others_finish_and_names_its_log(tmp_path):
    """Real jobs in child processes, each pinned to a core of its own where there are two."""
    write_tables([_row(fid=10.0)], tmp_path / "earlier")
    good = Step("report_0", "report", "good", (f"--rows={tmp_path}/earlier/results.csv", f"--out={tmp_path}/good"))
    bad = Step("report_1", "report", "bad", (f"--rows={tmp_path}/missing.csv", f"--out={tmp_path}/bad"))
    skipped = Step("train_2", "train", "done", ("--config=never/run.py",), skip="done is finished at step 4")
    final = Step("report_all", "report", "all", ())
    parallel = min(2, len(usable_cores()))
    with pytest.raises(UserError) as err:
        run_side_by_side([good, bad, skipped, final], parallel, tmp_path / "logs")
    one_sentence(err, "1 run(s) failed: bad (see", "bad.log", "the all-runs report was not drawn")
    assert (tmp_path / "good" / "summary.md").is_file() and not (tmp_path / "bad").exists()
    if parallel == 2:
        pins = {(tmp_path / "logs" / f"{name}.log").read_text().splitlines()[0] for name in ("good", "bad")}
        assert pins == {f"=== diffcorrupt report {name}, pinned to cores {core}"
                        for name, core in zip(("good", "bad"), usable_cores()[:2])}
    assert "matches no file" in (tmp_path / "logs" / "bad.log").read_text()  # the job's own sentence, kept
    assert not (tmp_path / "logs" / "done.log").exists()  # a run with nothing left to do starts nothing
    assert run_side_by_side([good, skipped, final], 1, tmp_path / "logs") == [final]


def _start_children_with(popen, monkeypatch) -> None:
    """side_by_side starts its children through ``popen`` instead of subprocess.Popen."""
    monkeypatch.setattr(side_by_side, "subprocess", types.SimpleNamespace(
        Popen=popen, STDOUT=subprocess.STDOUT, DEVNULL=subprocess.DEVNULL))


def test_the_sweep_runs_its_chains_side_by_side_then_the_all_runs_report_here(tmp_path, capsys, monkeypatch):
    """sweep --parallel's wiring, with the child processes stood in for: each run's train and report go to a child,
    the all-runs report runs in this process once they are done."""
    children, reports = [], []

    def popen(argv, **kwargs):
        job = argv[3]  # python -m diffcorrupt <job>
        children.append((job, next(arg for arg in argv if arg.startswith("--workdir"))))
        return types.SimpleNamespace(poll=lambda: 0, returncode=0)

    _start_children_with(popen, monkeypatch)
    monkeypatch.setattr("diffcorrupt.report.job.main", lambda argv: reports.append(argv) or 0)
    grid_file = tmp_path / "tiny_grid.py"
    grid_file.write_text(TINY)
    root = tmp_path / "sw"
    status, out = run_sweep(capsys, f"--grid={grid_file}", f"--root={root}", "--report",
                            f"--parallel={min(2, len(usable_cores()))}")
    assert status == 0 and json.loads(out.strip().splitlines()[-1])["trained"] == ["ratio0_seed0", "ratio0.1_seed0"]
    a, b = root / "ratio0_seed0", root / "ratio0.1_seed0"
    assert sorted(children) == sorted([("train", f"--workdir={a}"), ("report", f"--workdirs={a}"),
                                       ("train", f"--workdir={b}"), ("report", f"--workdirs={b}")])
    assert reports == [[f"--workdirs={a},{b}", f"--out={root}/report"]]


def _ctrl_c(seconds):
    raise KeyboardInterrupt


def _sigterm(seconds):
    os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's cancel, a shutdown


@pytest.mark.parametrize("interrupt, raised", [(_ctrl_c, KeyboardInterrupt), (_sigterm, SystemExit)])
def test_an_interrupted_sweep_stops_the_runs_it_started(interrupt, raised, tmp_path, monkeypatch):
    started = []

    def popen(*args, **kwargs):
        started.append(subprocess.Popen(*args, **kwargs))
        return started[-1]

    _start_children_with(popen, monkeypatch)
    monkeypatch.setattr(side_by_side, "time", types.SimpleNamespace(sleep=interrupt))
    step = Step("train_0", "train", "long", ("--config=configs/fmnist.py:tiny", f"--workdir={tmp_path / 'run'}"))
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(raised):
        run_side_by_side([step], 1, tmp_path / "logs")
    assert len(started) == 1 and started[0].returncode is not None  # stopped and waited for, not left running
    assert signal.getsignal(signal.SIGTERM) == handler


def test_plan_without_report_is_only_trains():
    grid = grids.GRIDS["fmnist_small_fixed_random"]
    steps = plan(expand(grid, pathlib.Path("r")), pathlib.Path("r"), finished={}, report=False, report_flags=())
    assert [s.job for s in steps] == ["train"] * 3


def test_committed_rows_join_only_the_all_runs_report_and_only_once_some_exist(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid_file = tmp_path / "rows_grid.py"
    source = TINY.replace('("train.log_every", 4)))', '("train.log_every", 4)), rows="kept/*.csv")')
    assert source != TINY
    grid_file.write_text(source)

    def final_report():
        status, out = run_sweep(capsys, f"--grid={grid_file}", "--root=sw", "--report", "--dry_run")
        reports = lines_of(out, "diffcorrupt report")
        assert status == 0 and len(reports) == 3
        assert not any(arg.startswith("--rows") for command in reports[:2] for arg in command)
        return reports[-1]

    assert not any(arg.startswith("--rows") for arg in final_report())  # an empty glob would be refused
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "ratio0.1_seed0.csv").write_text("run,step,cfg_scale,network\n")
    assert "--rows=kept/*.csv" in final_report()
