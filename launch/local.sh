#!/usr/bin/env bash
# Runs a diffcorrupt job on this machine, in the repository's .venv.
#   bash launch/local.sh train --config=configs/fmnist.py:tiny --workdir=runs/tiny
# Simulate N devices on a CPU-only machine with DEVICES=N (multi-device code paths, no speed-up).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash launch/setup.sh
if [ -n "${DEVICES:-}" ]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES}"
fi
exec .venv/bin/python -m diffcorrupt "$@"
