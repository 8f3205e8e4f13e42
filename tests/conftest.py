"""Test set-up: 8 simulated CPU devices (set before JAX is imported), and platform markers."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
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
