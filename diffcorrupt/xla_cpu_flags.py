"""XLA:CPU flags that diffcorrupt's CPU figures rest on, added to ``XLA_FLAGS`` before a backend starts.

jaxlib 0.10 hands convolutions, dots and reductions on CPU to YNNPACK fusions. On the development
machine (2 AMD EPYC cores) every workload of ours ran slower that way than on XLA's own kernels:
the FID Inception's 3x3 convolution of 32 channels at 147x147, batch 8, took 110 ms on one core
instead of 10 ms on two, so Inception features ran at 11 images/s instead of 26 (slower than
PyTorch); the DiT-T/2 train step took 1.21 s instead of 1.05 s (dots), DiT-T/4 sampling ran at 26
images/s instead of 35 (reductions), an LDM-small train step 0.97 s instead of 0.75 s. An empty
``xla_cpu_experimental_ynn_fusion_type`` turns those fusions off; nothing measured got slower.
docs/performance.md has the figures.

XLA:CPU also aborts the process when a collective's participants have not all arrived within a
short time. Simulated devices sharing a few cores can lag that long under load: the 8-device test
suite under two pytest workers died in a train step that way (the abort left no message, so this
is the likely cause, not a proven one). The jobs allow ten minutes.

XLA aborts the process on a flag it does not know, so the flags are added only for the jaxlib
versions they were checked on, and never over a value the user gave the same flag. Accelerator
backends ignore ``xla_cpu_*`` flags. ``DIFFCORRUPT_XLA_CPU_FLAGS=0`` leaves ``XLA_FLAGS`` alone.
"""

from __future__ import annotations

import importlib.metadata
import os

# flag -> value, for the jaxlib (major, minor) versions whose flag parser was checked to accept it.
CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_collective_call_terminate_timeout_seconds": "600"}
CHECKED_JAXLIB = {(0, 10)}
OPT_OUT = "DIFFCORRUPT_XLA_CPU_FLAGS"


def _jaxlib_minor() -> tuple[int, int] | None:
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def add_cpu_flags() -> None:
    """Appends ``CPU_FLAGS`` to ``XLA_FLAGS`` where it is safe to. XLA reads the variable once, when
    JAX starts its first backend, so this runs before anything asks JAX for devices; a later call
    changes nothing and harms nothing."""
    if os.environ.get(OPT_OUT) == "0" or _jaxlib_minor() not in CHECKED_JAXLIB:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f"--{name}={value}" for name, value in CPU_FLAGS.items() if f"--{name}=" not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
