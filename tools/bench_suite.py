"""Runs the benchmark suite, one fresh process per benchmark, and renders the table of docs/performance.md.

    .venv/bin/python tools/bench_suite.py run --out=docs/benchmarks/cpu-2core.jsonl [--only=peers-train,data]
    .venv/bin/python tools/bench_suite.py table docs/benchmarks/cpu-2core.jsonl

Every figure in the docs must say where it came from, so each JSON line a benchmark prints is kept
as printed, under ``result``, with the suite row's ``name``, the ``command`` that reproduces it, the
``date``, the ``commit`` (``+dirty`` when code outside docs/ had uncommitted changes) and the ``machine``. One
process per row: ``--devices`` and XLA's flags are fixed when JAX starts, and one benchmark's
compiled programs and heap do not weigh on the next. ``run`` appends, and skips the rows already
recorded at the same commit, so a run that was cut off continues where it stopped. The peer rows need
the optional extra (``pip install -e '.[peers]'``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
PEERS = "peers --what="
# (row name, `diffcorrupt bench` arguments): the small and medium presets against their peers first,
# then the figures that have no peer.
SUITE = [
    ("peers-train DiT-T/2 256 tokens", PEERS + "train --model=DiT-T/2 --input_shape=32,32,4 --batch_size=32 --num_classes=1000 --steps=3"),
    ("peers-train DiT-S/4", PEERS + "train --model=DiT-S/4 --input_shape=32,32,4 --batch_size=32 --num_classes=1000 --steps=3"),
    ("peers-train DiT-S/4, peer PASSIVE (a shared machine)", PEERS + "train --model=DiT-S/4 --input_shape=32,32,4 --batch_size=32 --num_classes=1000 --steps=3 --peer_wait_policy=passive"),
    ("peers-train DiT-T/8", PEERS + "train --model=DiT-T/8 --input_shape=32,32,4 --batch_size=32 --num_classes=1000 --steps=10"),
    ("peers-train fmnist.py (DiT-S/4)", PEERS + "train --model=DiT-S/4 --input_shape=32,32,1 --batch_size=128 --num_classes=10 --steps=2"),
    ("peers-train fmnist.py:small (DiT-T/4)", PEERS + "train --model=DiT-T/4 --input_shape=32,32,1 --batch_size=64 --num_classes=10 --steps=3"),
    ("peers-train fmnist.py:latent (DiT-T/2)", PEERS + "train --model=DiT-T/2 --input_shape=8,8,4 --batch_size=32 --num_classes=10 --steps=10"),
    ("peers-train DiT-S/2 (above the S/4 size)", PEERS + "train --model=DiT-S/2 --input_shape=32,32,4 --batch_size=32 --num_classes=1000 --steps=2"),
    ("peers-sample DiT-S/4 ddim 25", PEERS + "sample --model=DiT-S/4 --input_shape=32,32,4 --batch_size=16 --num_classes=1000 --steps=25 --cfg_scale=1.5"),
    ("peers-sample fmnist.py:small ddim 25", PEERS + "sample --model=DiT-T/4 --input_shape=32,32,1 --batch_size=64 --num_classes=10 --steps=25 --cfg_scale=1.5"),
    ("peers-sample fmnist.py:latent ddim 25", PEERS + "sample --model=DiT-T/2 --input_shape=8,8,4 --batch_size=64 --num_classes=10 --steps=25 --cfg_scale=2"),
    ("peers-inception 32x32", PEERS + "inception --input_shape=32,32,3 --batch_size=32 --steps=2"),
    ("peers-inception 299x299", PEERS + "inception --input_shape=299,299,3 --batch_size=32 --steps=2"),
    ("train LDM-small", "train --model=LDM-small --input_shape=32,32,3 --batch_size=16 --num_classes=10"),
    ("train DiT-T/4, 2 devices", "train --model=DiT-T/4 --input_shape=32,32,1 --batch_size=64 --num_classes=10 --devices=2"),
    ("sample DiT-T/4 dpm 50", "sample --model=DiT-T/4 --input_shape=32,32,1 --num_classes=10 --batch_size=64 --sampler=dpm --steps=50 --cfg_scale=1.5"),
    ("encode kl-f4-small", "encode --autoencoder=kl-f4-small --input_shape=32,32,3 --batch_size=32 --model=DiT-T/2 --num_classes=10"),
    ("data", "data"),
    ("data, 2 workers", "data --num_workers=2 --num_batches=400"),
]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def _proc_field(path: str, field: str) -> str | None:
    """A field of a Linux /proc file (None elsewhere)."""
    proc = pathlib.Path(path)
    lines = proc.read_text().splitlines() if proc.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(field)), None)


# The instruction sets the figures depend on: float32 FMA width and bfloat16 dot products.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> str:
    """The CPU as /proc/cpuinfo names it (virtual machines often give only the vendor's family name, so
    its family, model and clock too), its cores, memory and the instruction sets that set its peak."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    family, model, mhz = (_proc_field("/proc/cpuinfo", field) for field in ("cpu family", "model\t", "cpu MHz"))
    if family and model:
        cpu += f" (family {family}, model {model}{f', {float(mhz):.0f} MHz' if mhz else ''})"
    flags = set((_proc_field("/proc/cpuinfo", "flags") or "").split())
    isa = " ".join(flag for flag in CPU_FLAGS if flag in flags)
    memory = _proc_field("/proc/meminfo", "MemTotal")
    memory = f", {int(memory.split()[0]) / 2**20:.0f} GiB" if memory else ""
    return f"{cpu}, {os.cpu_count()} cores{memory}{f', {isa}' if isa else ''}, Python {platform.python_version()}"


def run(out: pathlib.Path, only: list[str]) -> int:
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs", ":!*.md")  # code, not prose
    commit = _git("rev-parse", "--short", "HEAD") + ("+dirty" if changed else "")
    done = {row["name"] for row in load(out) if row["commit"] == commit} if out.exists() else set()
    out.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, args in SUITE:
        if name in done or (only and not any(name.startswith(prefix) for prefix in only)):
            continue
        command = f".venv/bin/diffcorrupt bench {args}"
        print(f"== {name}: {command}", flush=True)
        result = subprocess.run([sys.executable, "-m", "diffcorrupt", "bench", *shlex.split(args)], cwd=REPO,
                                capture_output=True, text=True)
        if result.returncode:
            failures += 1
            print(result.stderr[-2000:], file=sys.stderr)
            continue
        row = {"name": name, "command": command, "date": datetime.date.today().isoformat(), "commit": commit,
               "machine": machine(), "result": json.loads(result.stdout.strip().splitlines()[-1])}
        with out.open("a") as sink:
            sink.write(json.dumps(row) + "\n")
        print(json.dumps(row["result"]), flush=True)
    return 1 if failures else 0


def load(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _figures(result: dict) -> tuple[str, str, str]:
    """(ours, peer, ratio) of one result, with units."""
    bench = result["bench"]
    if bench == "peers":
        if not result.get("peer_available"):
            return f"{result.get('ours', {}).get('images_per_s', '')}", "unavailable", ""
        return (f"{result['ours']['images_per_s']} images/s", f"{result['peer']['images_per_s']} images/s",
                f"**{result['ratio_ours_over_peer']:.2f}**")
    if bench == "data":
        figures = "; ".join(f"{label}: {result[label]['examples_per_s_on']:,} examples/s with corruption "
                            f"({result[label]['corruption_cost_pct']}% of the time)" for label in ("fashion_mnist", "synthetic_1e6"))
        return figures, "no peer", ""
    if bench == "encode":
        return (f"{result['encode_images_per_s']} images/s encoded; pre-encoding speeds a step "
                f"{result['pre_encoding_speedup']}x", "no peer", "")
    figure = f"{result['images_per_s']} images/s"
    if "tflops_per_s_per_device" in result:
        figure += f", {result['tflops_per_s_per_device']} TFLOP/s per device"
    return figure, "no peer", ""


def table(rows: list[dict]) -> str:
    """The newest figure of each row (the file keeps the older ones), in the suite's order, then any others."""
    order = {name: index for index, (name, _) in enumerate(SUITE)}
    rows = sorted({row["name"]: row for row in rows}.values(), key=lambda row: order.get(row["name"], len(order)))
    lines = ["| benchmark | ours | peer | ours / peer | date | commit | command |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        ours, peer, ratio = _figures(row["result"])
        lines.append(f"| {row['name']} | {ours} | {peer} | {ratio} | {row['date']} | {row['commit']} | `{row['command']}` |")
    machines = sorted({row["machine"] for row in rows})
    return "\n".join(lines) + "\n\nMachine: " + "; ".join(machines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run the suite, appending to --out")
    run_parser.add_argument("--out", type=pathlib.Path, required=True)
    run_parser.add_argument("--only", default="", help="comma-separated row-name prefixes, e.g. peers-train,data")
    table_parser = sub.add_parser("table", help="print the markdown table of a results file")
    table_parser.add_argument("results", type=pathlib.Path)
    flags = parser.parse_args(argv)
    if flags.action == "run":
        return run(flags.out, [prefix for prefix in flags.only.split(",") if prefix])
    if not flags.results.exists():
        print(f"bench_suite: {flags.results} does not exist; make it with `tools/bench_suite.py run --out={flags.results}`",
              file=sys.stderr)
        return 2
    print(table(load(flags.results)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
