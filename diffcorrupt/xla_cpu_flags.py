"""XLA:CPU flags that diffcorrupt's CPU figures rest on, added to ``XLA_FLAGS`` before a backend starts.

jaxlib 0.10 hands convolutions on CPU to YNNPACK fusions. On the development machine (2 AMD EPYC
cores) those ran convolutions 3-11x slower than XLA's own Eigen convolutions (the FID Inception's
3x3 convolution of 32 channels at 147x147, batch 8: 110 ms against 10 ms, on one core instead of
two), so Inception features ran at 11 images/s instead of 26, slower than PyTorch.
``-individual_convolution`` takes convolutions out of the YNNPACK set and keeps its other fusions
(dots, elementwise, reductions), which measured no slower than without them. docs/performance.md
has the figures.

XLA aborts the process on a flag it does not know, so the flag is added only for the jaxlib
versions it was checked on, and never over a value the user gave the same flag. Accelerator
backends ignore ``xla_cpu_*`` flags. ``DIFFCORRUPT_XLA_CPU_FLAGS=0`` leaves ``XLA_FLAGS`` alone.
"""

from __future__ import annotations

import importlib.metadata
import os

# flag -> value, for the jaxlib (major, minor) versions whose flag parser was checked to accept it.
CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
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
