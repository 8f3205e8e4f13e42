"""tools/bench_suite.py: each row stamped with its command, date, commit and machine; a rerun at the
same commit skips what is recorded; the table shows the peer ratio."""

import importlib.util
import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent

spec = importlib.util.spec_from_file_location("bench_suite", REPO / "tools" / "bench_suite.py")
bench_suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_suite)


def test_run_stamps_each_row_and_a_rerun_skips_it(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_suite, "SUITE", [("model DiT-T/8", "model --model=DiT-T/8 --input_shape=8,8,4 --num_classes=10")])
    out = tmp_path / "results.jsonl"
    assert bench_suite.run(out, []) == 0
    assert bench_suite.run(out, []) == 0
    rows = bench_suite.load(out)
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == "model DiT-T/8" and row["result"]["bench"] == "model" and row["result"]["params"] > 0
    assert row["command"] == ".venv/bin/diffcorrupt bench model --model=DiT-T/8 --input_shape=8,8,4 --num_classes=10"
    assert row["commit"].split("+")[0] == bench_suite._git("rev-parse", "--short", "HEAD") and len(row["date"]) == 10
    assert "cores" in row["machine"]


def test_a_failing_row_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_suite, "SUITE", [("broken", "train --model=DiT-T/8"),
                                               ("model", "model --model=DiT-T/8 --input_shape=8,8,4 --num_classes=10")])
    out = tmp_path / "results.jsonl"
    assert bench_suite.run(out, []) == 1
    assert [row["name"] for row in bench_suite.load(out)] == ["model"]


def test_table_shows_figures_ratio_date_commit_and_command():
    peers = {"bench": "peers", "peer_available": True, "ours": {"images_per_s": 30.1}, "peer": {"images_per_s": 26.0},
             "ratio_ours_over_peer": 1.157}
    rows = [{"name": "peers-train DiT-T/2", "command": ".venv/bin/diffcorrupt bench peers --what=train", "date": "2026-11-28",
             "commit": "abc1234", "machine": "some CPU, 2 cores", "result": peers},
            {"name": "train LDM-small", "command": "c", "date": "2026-11-28", "commit": "abc1234", "machine": "some CPU, 2 cores",
             "result": json.loads('{"bench": "train", "images_per_s": 21.2, "tflops_per_s_per_device": 0.17}')}]
    older = dict(rows[0], commit="0000000", result=dict(peers, ratio_ours_over_peer=0.5))
    text = bench_suite.table([older, *rows])  # a rerun appends: the newest line of a row is the one shown
    assert "0000000" not in text and "**0.50**" not in text
    assert "| peers-train DiT-T/2 | 30.1 images/s | 26.0 images/s | **1.16** | 2026-11-28 | abc1234 | " \
           "`.venv/bin/diffcorrupt bench peers --what=train` |" in text
    assert "| train LDM-small | 21.2 images/s, 0.17 TFLOP/s per device | no peer |" in text
    assert text.endswith("Machine: some CPU, 2 cores\n")


def test_machine_names_the_cpu_its_clock_and_the_instruction_sets_that_set_its_peak(monkeypatch):
    proc = {("/proc/cpuinfo", "model name"): "AMD EPYC", ("/proc/cpuinfo", "cpu family"): "25",
            ("/proc/cpuinfo", "model\t"): "17", ("/proc/cpuinfo", "cpu MHz"): "2596.152",
            ("/proc/cpuinfo", "flags"): "fpu sse2 avx2 fma avx512f avx512_bf16 vaes", ("/proc/meminfo", "MemTotal"): "25165824 kB"}
    monkeypatch.setattr(bench_suite, "_proc_field", lambda path, field: proc.get((path, field)))
    assert bench_suite.machine().startswith("AMD EPYC (family 25, model 17, 2596 MHz), ")
    assert ", 24 GiB, avx2 fma avx512f avx512_bf16, Python " in bench_suite.machine()
