"""Dense bf16 peak FLOP/s per device, for MFU. Its own module so that ``bench train`` reads it
without importing the train loop, and with it TensorFlow (clu's summary writer): seconds per run."""

from __future__ import annotations

import jax

# Matched by prefix of jax's device_kind.
PEAK_FLOPS = {"NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12, "TPU v4": 275e12,
              "TPU v5 lite": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def peak_flops() -> float | None:
    kind = jax.devices()[0].device_kind
    return next((peak for prefix, peak in PEAK_FLOPS.items() if kind.startswith(prefix)), None)
