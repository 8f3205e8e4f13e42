"""The XLA:CPU flags the jobs add: only on checked jaxlib versions, never over the user's own value."""

import os

import pytest

from diffcorrupt import xla_cpu_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setattr(xla_cpu_flags, "_jaxlib_minor", lambda: (0, 10))
    monkeypatch.delenv(xla_cpu_flags.OPT_OUT, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    return monkeypatch


def test_adds_the_flag_after_existing_ones_once(env):
    xla_cpu_flags.add_cpu_flags()
    xla_cpu_flags.add_cpu_flags()
    assert os.environ["XLA_FLAGS"] == (f"--xla_force_host_platform_device_count=8 {FLAG}= "
                                       "--xla_cpu_collective_call_terminate_timeout_seconds=600")


def test_keeps_the_users_value(env):
    env.setenv("XLA_FLAGS", f"{FLAG}=-reduce")
    xla_cpu_flags.add_cpu_flags()
    assert os.environ["XLA_FLAGS"] == f"{FLAG}=-reduce --xla_cpu_collective_call_terminate_timeout_seconds=600"


@pytest.mark.parametrize("case", ["opt_out", "unchecked_jaxlib", "no_jaxlib"])
def test_leaves_xla_flags_alone(env, case):
    if case == "opt_out":
        env.setenv(xla_cpu_flags.OPT_OUT, "0")
    else:
        env.setattr(xla_cpu_flags, "_jaxlib_minor", lambda: (0, 99) if case == "unchecked_jaxlib" else None)
    xla_cpu_flags.add_cpu_flags()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"


def test_this_session_runs_with_the_flag_when_jaxlib_is_checked():
    """conftest adds the flag before JAX starts, so every test here runs under it (XLA would have
    aborted at start-up on a flag it does not parse)."""
    if xla_cpu_flags._jaxlib_minor() not in xla_cpu_flags.CHECKED_JAXLIB:
        pytest.skip("the installed jaxlib is not one the flag was checked on")
    import jax

    jax.devices()
    assert f"{FLAG}=" in os.environ["XLA_FLAGS"]
