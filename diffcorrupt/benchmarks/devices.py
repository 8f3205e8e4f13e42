"""``--devices=N`` of the benchmarks: measure on the first N devices of the platform.

JAX fixes its device list when its backend starts, so the limit is set before anything asks for
devices: N host devices on CPU (the simulated devices the multi-device tests use), the first N GPUs
elsewhere. TPU slices are not subdivided from inside a process; a count that does not come out is
one sentence, before anything is measured.
"""

from __future__ import annotations

import jax

from diffcorrupt.errors import UserError


def limit_devices(count: int | None) -> None:
    """Makes JAX see ``count`` devices (``None``: all it finds)."""
    if count is None:
        return
    visible = ",".join(str(index) for index in range(count))
    try:
        jax.config.update("jax_num_cpu_devices", count)
        jax.config.update("jax_cuda_visible_devices", visible)
        jax.config.update("jax_rocm_visible_devices", visible)
    except RuntimeError:
        raise UserError("--devices must be set before JAX starts; run the benchmark in a fresh process") from None
    found = jax.device_count()
    if found != count:
        raise UserError(f"--devices={count}, but JAX on {jax.default_backend()} sees {found} device(s); "
                        f"ask for at most {found} (TPU slices run on all their chips)")
