"""`processtwin.configure`: nothing on import; float64, single-kernel small loops and inline
dispatch when called before JAX starts; a warning (not silence) when called too late."""

import os
import subprocess
import sys
import textwrap

import pytest

from processtwin.runtime import _with_small_loop_flag

_KEY = "xla_cpu_small_while_loop_byte_threshold"

# A data-dependent loop whose body moves ~2 kB per iteration: above XLA's default limit
# (1 kB), below processtwin's (1 MB). Prints whether XLA compiled it into one kernel.
_PROBE = textwrap.dedent("""
    import warnings, jax, jax.numpy as jnp
    from jax import lax
    import processtwin
    {before}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = processtwin.configure()
    def f(v):
        def body(c):
            i, v = c
            for j in range(32):
                s = jnp.sqrt(v[0] + j + 1.0)
                v = jnp.stack([v[1] + s, v[0] * s])
            return i + 1, v
        return lax.while_loop(lambda c: c[1][0] < 1e6, body, (0, v))[1]
    text = jax.jit(f).lower(jnp.ones(2)).compile().as_text()
    print(ok, jax.config.jax_enable_x64 and not jax.config.values["jax_cpu_enable_async_dispatch"],
          "xla_cpu_small_call" in text, [str(w.category.__name__) for w in caught])
""")


def _run(before: str, env_flags: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if env_flags is not None:
        env["XLA_FLAGS"] = env_flags
    out = subprocess.run([sys.executable, "-c", _PROBE.format(before=before)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(maxsplit=3)


def test_import_changes_nothing_and_configure_compiles_small_loops_to_one_kernel():
    # without configure (import only): XLA's default, float32, loop run as many kernels
    code = ("import jax, os, processtwin; print(jax.config.jax_enable_x64, "
            "'XLA_FLAGS' in os.environ)")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
    ok, x64, small, warned = _run("", None)
    assert (ok, x64, small, warned) == ("True", "True", "True", "[]")


def test_configure_after_jax_started_warns_and_keeps_default():
    ok, _, small, warned = _run("jnp.ones(1).block_until_ready()", None)
    assert (ok, small) == ("False", "False")
    assert "RuntimeWarning" in warned
    code = ("import jax; jax.numpy.ones(1); import processtwin; processtwin.configure(); "
            "print(jax.config.jax_enable_x64)")  # float64 is still switched on
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


def test_configure_respects_a_users_own_setting():
    ok, setup, small, warned = _run("", f"--xla_backend_extra_options={_KEY}=10")
    assert (ok, setup, small, warned) == ("True", "True", "False", "[]")  # 10 B: none small


@pytest.mark.parametrize("flags, expected", [
    ("", f"--xla_backend_extra_options={_KEY}=64"),
    ("--xla_dump_to=/tmp/x", f"--xla_dump_to=/tmp/x --xla_backend_extra_options={_KEY}=64"),
    ("--xla_backend_extra_options=a=1 --foo",
     f"--xla_backend_extra_options=a=1,{_KEY}=64 --foo"),
    (f"--xla_backend_extra_options={_KEY}=5", f"--xla_backend_extra_options={_KEY}=5"),
])
def test_flag_merging(flags, expected):
    assert _with_small_loop_flag(flags, 64) == expected
