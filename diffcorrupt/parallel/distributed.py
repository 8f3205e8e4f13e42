"""Multi-host start-up: ``jax.distributed.initialize`` when the environment says there are peers,
and host-side work that process 0 does alone while its peers wait.

TPU pods and SLURM jobs are detected by JAX itself once initialisation is asked for; explicit
coordinator settings (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) serve
any other cluster, and ``diffcorrupt.parallel.local_processes`` sets them for processes on one
machine. A single machine initialises nothing.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from diffcorrupt.errors import UserError

T = TypeVar("T")
# Peers wait for process 0's scoring at a coordination-service barrier, not in a device
# collective (which XLA aborts after minutes); a day covers any evaluation.
PEER_WAIT_S = 24 * 3600


def _multi_process_environment() -> bool:
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize_from_environment() -> None:
    if not _multi_process_environment():
        return
    kwargs = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(os.environ["JAX_NUM_PROCESSES"]), process_id=int(os.environ["JAX_PROCESS_ID"]))
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def launched_as_peer() -> bool:
    """True in processes 1, 2, ... of a multi-process launch, as the environment numbers them
    (``local_processes``, explicit coordinator settings, SLURM, TPU VM workers)."""
    return any(int(os.environ.get(name, "0") or 0) > 0 for name in ("JAX_PROCESS_ID", "SLURM_PROCID", "TPU_WORKER_ID"))


def on_process_zero(name: str, work: Callable[[], T]) -> T | None:
    """Runs host-side ``work`` on process 0 while the other processes wait for it, at a barrier of
    the coordination service (a device collective would be aborted by XLA after minutes). ``work``
    must not involve the other processes: no collectives, no orbax, this process's devices only.
    The others get None; a failure on process 0 fails them too."""
    if jax.process_count() == 1:
        return work()
    result, ok = None, False
    try:
        if jax.process_index() == 0:
            result = work()
        ok = True
    finally:
        ocp.multihost.get_barrier_sync_fn()(key=f"diffcorrupt: {name} on process 0", timeout_ms=PEER_WAIT_S * 1000)
        ok = bool(multihost_utils.broadcast_one_to_all(np.asarray(ok)))
    if not ok:
        raise UserError(f"{name} failed on process 0; its output says why")
    if jax.process_index() > 0:
        logging.info("%s ran on process 0", name)
    return result
