"""The README's main job: ``diffcorrupt demo --quick`` leaves manifests, checkpoints, metrics,
samples and a report with plots, and a rerun resumes instead of starting over."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def _demo(out):
    result = subprocess.run([sys.executable, "-m", "diffcorrupt", "demo", "--quick", f"--out={out}"], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_quick_demo_end_to_end_and_resume(tmp_path):
    first = _demo(tmp_path)
    report = (tmp_path / "report.md").read_text()
    for artefact in ("training_loss.png", "fmnist_symmetric_5pct/flip_matrix.png", "fmnist_symmetric_5pct/corruption.json",
                     "shapes_swap_10pct/batch.png"):
        assert (tmp_path / artefact).exists() and artefact.split("/")[-1] in report or artefact.endswith(".json")
    for name, run in first["training"].items():
        workdir = tmp_path / "runs" / name
        assert run["first_step"] == 0 and run["last_step"] == 40
        assert (workdir / "checkpoints" / "40" / "commit_success.txt").exists()
        assert (workdir / "samples" / "step_40.png").exists() and (workdir / "metrics.jsonl").exists()
    assert first["fmnist_symmetric_5pct"]["manifest"]["num_corrupted"] == first["fmnist_symmetric_5pct"]["manifest"]["num_examples"] // 20
    again = _demo(tmp_path)
    assert all(run["first_step"] == run["last_step"] == 40 for run in again["training"].values())
