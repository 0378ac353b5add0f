"""Process-wide JAX settings, applied by entry points (never on import).

:func:`configure` is what the ``processtwin`` command, the benchmarks and the tests call
first; call it at the top of a script or notebook, before the first JAX computation.

Why the XLA setting matters: on the CPU, XLA runs a compiled program as a sequence of
small kernels ("thunks"), one per fused operation. A loop whose body is a few dozen
scalar-sized operations (one scenario's adaptive integrator, one twin's filter step with
its RK4 sub-steps) then spends most of its time dispatching kernels, not computing. XLA
compiles a *small* loop into a single kernel instead, but its default notion of small is
1 kB of memory traffic per iteration, below what an integrator step touches. Raising that
limit (64 kB already makes the compiled loop of a single-scenario simulation 2–3× faster,
the whole call ~1.4×, and a whole-history EKF scan ~7× faster on a 2-core machine;
``experiments/bench/README.md``) to 1 MB also covers a filter step with 5 states and 5
channels (64–256 kB; its live step in the demo 135 → 76 µs). Loops over large arrays
(ensembles of thousands, fleets) stay far above the limit and keep XLA's parallel kernels.

And why synchronous dispatch: by default JAX hands each CPU computation to a worker thread
and returns at once. For a program of ~10 µs (one live filter step) the hand-off and the
wake-up cost as much again, with jitter of tens of µs on a small machine. With both
settings a live filter step takes ~21 µs median instead of ~55 µs with JAX's defaults (2
cores; in a separate probe, dispatch alone took a bare call from ~40 to ~12 µs median).
Only programs that XLA does not parallelise are affected; processtwin reads every result
right away, so nothing overlaps that asynchronous dispatch could have hidden.

The loop setting needs jax ≥ 0.7.1 (XLA's thunk runtime); ``pyproject.toml`` requires it.
"""

from __future__ import annotations

import os
import re
import warnings

__all__ = ["SMALL_LOOP_BYTES", "configure"]

#: Memory traffic per iteration [bytes] below which XLA:CPU compiles a loop to one kernel.
SMALL_LOOP_BYTES = 1 << 20

_KEY = "xla_cpu_small_while_loop_byte_threshold"
_EXTRA = "--xla_backend_extra_options="


def _with_small_loop_flag(flags: str, n_bytes: int) -> str:
    """``XLA_FLAGS`` with the small-loop threshold set (an existing setting is kept)."""
    if _KEY in flags:
        return flags
    match = re.search(r"--xla_backend_extra_options=(\S*)", flags)
    if match:  # add our key to the user's extra options
        value = f"{match.group(1)},{_KEY}={n_bytes}" if match.group(1) else f"{_KEY}={n_bytes}"
        return flags[:match.start(1)] + value + flags[match.end(1):]
    return f"{flags} {_EXTRA}{_KEY}={n_bytes}".strip()


def _backend_started() -> bool:
    """Whether JAX has started its backends (after which XLA flags are not read again).

    JAX has no public query for this; its backend registry reports it. The registry's
    module is looked up among the loaded modules, not imported (importing JAX loads it),
    and if a JAX version lacks the query the answer is "not started": the settings are then
    applied and, at worst, silently ineffective — results stay the same.
    """
    import sys

    registry = sys.modules.get("jax._src.xla_bridge")
    query = getattr(registry, "backends_are_initialized", None)
    return bool(query()) if callable(query) else False


def configure(*, x64: bool = True, small_loop_bytes: int | None = SMALL_LOOP_BYTES,
              async_dispatch: bool = False) -> bool:
    """Set up JAX for processtwin: float64, single-kernel small loops, inline dispatch.

    Call it before the first JAX computation (JAX reads the last two settings once, when it
    starts its CPU backend).

    Parameters
    ----------
    x64 : bool
        Enable float64 (``jax_enable_x64``); tolerances below ~1e-6 need it.
    small_loop_bytes : int or None
        Memory traffic per loop iteration [bytes] below which XLA:CPU compiles a loop into
        one kernel (appended to ``XLA_FLAGS`` unless already set there); ``None`` leaves
        XLA's default (1 kB).
    async_dispatch : bool
        JAX's ``jax_cpu_enable_async_dispatch`` (default here: off, computations run on
        the calling thread).

    Returns
    -------
    bool
        Whether the backend settings are in effect: ``False`` when JAX had already started
        its backend with other ones (a :class:`RuntimeWarning` says so; results are the
        same, only slower).
    """
    import jax

    if x64:
        jax.config.update("jax_enable_x64", True)
    if small_loop_bytes is not None and int(small_loop_bytes) < 1:
        raise ValueError(f"`small_loop_bytes` must be positive, got {small_loop_bytes}.")
    flags = os.environ.get("XLA_FLAGS", "")
    if _backend_started():
        loops_ok = small_loop_bytes is None or _KEY in flags
        dispatch_ok = jax.config.values["jax_cpu_enable_async_dispatch"] == async_dispatch
        if not (loops_ok and dispatch_ok):
            warnings.warn(
                "processtwin.configure() came after JAX started its backend, so XLA keeps "
                "its default small-loop limit and dispatch (single-scenario loops and live "
                "filter steps run ~2x slower); call it before the first JAX computation, or "
                f"set XLA_FLAGS='{_EXTRA}{_KEY}={small_loop_bytes}' yourself.",
                RuntimeWarning, stacklevel=2)
        return loops_ok and dispatch_ok
    jax.config.update("jax_cpu_enable_async_dispatch", async_dispatch)
    if small_loop_bytes is not None:
        os.environ["XLA_FLAGS"] = _with_small_loop_flag(flags, int(small_loop_bytes))
    return True
