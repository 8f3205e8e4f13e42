#!/usr/bin/env bash
# Starts the same diffcorrupt command on every worker of a Cloud TPU VM pod slice.
#   TPU_NAME=my-v4-32 ZONE=us-central2-b bash launch/tpu_pod.sh train --config=configs/imagenet.py --workdir=gs://bucket/run
# Each worker needs this repository at the same path (REPO, default ~/diffcorrupt) with its .venv
# (bash launch/setup.sh, plus `pip install 'jax[tpu]'`). JAX detects the pod itself:
# jax.distributed.initialize() runs on every worker (TPU_WORKER_HOSTNAMES lists the peers).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to its zone}"
REPO="${REPO:-~/diffcorrupt}"
printf -v ARGS '%q ' "$@"
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
  --command="cd $REPO && .venv/bin/python -m diffcorrupt $ARGS"
