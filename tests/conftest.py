"""Test set-up: 8 simulated CPU devices and the jobs' XLA:CPU flags (set before JAX starts a backend),
and platform markers."""

import os

from diffcorrupt.xla_cpu_flags import add_cpu_flags

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
add_cpu_flags()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    import jax

    platform = jax.default_backend()
    for item in items:
        for marker in ("gpu", "tpu"):
            if marker in item.keywords and platform != marker:
                item.add_marker(pytest.mark.skip(reason=f"needs a {marker.upper()}; this machine runs JAX on {platform}"))


@pytest.fixture
def repo() -> pathlib.Path:
    return REPO
