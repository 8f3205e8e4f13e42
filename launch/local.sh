#!/usr/bin/env bash
# Runs a diffcorrupt job on this machine, in the repository's .venv.
#   bash launch/local.sh train --config=configs/fmnist.py:tiny --workdir=runs/tiny
# Simulate N devices on a CPU-only machine with DEVICES=N (multi-device code paths, no speed-up).
# Run it as P JAX processes joined over localhost, each with DEVICES CPU devices, with PROCESSES=P:
# every multi-host code path runs as on a pod (python -m diffcorrupt.parallel.local_processes --help).
#   PROCESSES=2 DEVICES=2 bash launch/local.sh train --config=configs/fmnist.py:tiny --workdir=runs/tiny
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash launch/setup.sh
if [ "${PROCESSES:-1}" -gt 1 ]; then
  exec .venv/bin/python -m diffcorrupt.parallel.local_processes --processes="$PROCESSES" --devices="${DEVICES:-1}" -- "$@"
fi
if [ -n "${DEVICES:-}" ]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES}"
fi
exec .venv/bin/python -m diffcorrupt "$@"
