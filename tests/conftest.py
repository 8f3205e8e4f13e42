"""Test set-up: 8 simulated CPU devices and the jobs' XLA:CPU flags (set before JAX starts a backend),
one persistent compilation cache for the session, and platform markers.

The cache is shared by the xdist workers and every job the tests start in a subprocess (they
inherit the environment): many of those compile the same train step or sampler again, which is
the same executable, loaded instead of rebuilt. It is removed when the session ends.
"""

import contextlib
import importlib
import os
import pathlib
import shutil
import tempfile

from diffcorrupt.xla_cpu_flags import add_cpu_flags

# The parity tests' optional peers, where installed, load before anything loads TensorFlow: PyPI's CUDA
# builds of torch bring triton, whose library ends the process with a segmentation fault when it loads
# after TensorFlow's (torch 2.14, triton 3.8, tensorflow-cpu 2.x); `bench peers` imports them first too.
for _peer in ("torch", "diffusers"):
    with contextlib.suppress(Exception):  # absent or broken: the tests that need it skip and say why
        importlib.import_module(_peer)

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
add_cpu_flags()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process of the session (the workers inherit it)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="diffcorrupt-tests-compile-cache-")
    os.environ["DIFFCORRUPT_TESTS_OWN_COMPILE_CACHE"] = str(os.getpid())

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


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("DIFFCORRUPT_TESTS_OWN_COMPILE_CACHE") == str(os.getpid()):  # made here, not the user's
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
