"""A lean adaptive Tsit5 loop for one unbatched scenario (the :func:`simulate` fast path).

Why not ``diffrax.diffeqsolve`` here: XLA on the CPU runs a loop body's kernels inline
only while every buffer the body touches is small (≤ 512 bytes); otherwise it schedules
them on a thread pool, which for a 4-state ODE costs more than the arithmetic. A solver
loop that writes each output into the full output array touches a large buffer every step.
This loop keeps the body small: the outputs are produced in chunks of at most 512 bytes,
one inner adaptive loop per chunk (an outer ``scan`` over chunks), and each step fills the
chunk's outputs it covers from the dense interpolant. Steps are clipped at a chunk's last
output time (one slightly shorter step per chunk; the next step resumes the unclipped
size). After :func:`processtwin.configure` XLA goes further and compiles the whole loop
into a single kernel (see :mod:`processtwin.runtime`).

The method is diffrax's Tsit5 (tableau and 4th-order dense interpolant taken from
``diffrax.Tsit5``). Step-size control is the standard integral controller on the RMS norm
of the scaled embedded error, with Hairer's starting step (Hairer, Nørsett & Wanner,
*Solving ODEs I*, §II.4). Jumps of hold inputs are stepped to exactly: a step ends one
float before the jump, the state is carried over the two floats to just after it (each side
with its own input), and the next step starts there with a fresh first stage, so no stage
straddles a discontinuity. Outputs in that gap take the state at its ends.

Not a differentiation path: the step sizes are controlled on the solution alone, so a
``jvp`` through this loop (step sizes held, ``stop_gradient``) gives finite but not
error-controlled tangents — at a steady state the steps grow to the output spacing and the
tangent is poor. :func:`processtwin.trajectory` (diffrax, checkpointed) is the
differentiable path and is tested against finite differences.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["FAILED", "MAX_STEPS", "OK", "solve"]

OK, MAX_STEPS, FAILED = 0, 1, 2
_RUNNING = -1

_TABLEAU = diffrax.Tsit5.tableau
_C = [0.0] + [float(c) for c in _TABLEAU.c]
_A = [[float(v) for v in row] for row in _TABLEAU.a_lower]
_B_ERR = [float(v) for v in _TABLEAU.b_error]
_STAGES = len(_C)  # 7; the last stage is first-same-as-last (FSAL)
_SAFETY, _FACTOR_MIN, _FACTOR_MAX = 0.9, 0.2, 10.0
_EXPONENT = -1.0 / 5.0  # -1 / (embedded order + 1)
_SMALL_BYTES = 512  # XLA CPU runs a loop body inline when all its buffers are this small


@functools.cache
def _dense_weights(dtype: str) -> np.ndarray:
    """Coefficients ``W[p, s]`` of Tsit5's dense output ``y0 + Σ_s (Σ_p W[p,s] θ^p) k_s``,
    read off diffrax's interpolant (polynomials of degree 4 in θ ∈ [0, 1]) in the
    precision of ``dtype`` (JAX's current float mode; cached per mode)."""
    theta = np.linspace(0.0, 1.0, 9)
    with jax.ensure_compile_time_eval():
        interp = diffrax.Tsit5.interpolation_cls(
            t0=jnp.asarray(0.0, dtype), t1=jnp.asarray(1.0, dtype),
            y0=jnp.zeros(_STAGES, dtype), y1=None, k=jnp.eye(_STAGES, dtype=dtype))
        values = np.stack([np.asarray(interp.evaluate(jnp.asarray(x, dtype)), dtype=float)
                           for x in theta])
    return np.polynomial.polynomial.polyfit(theta, values, 4)


def starting_step(f: Callable[..., Any], held: Callable[[Any], Any], t0: Any, y0: Any,
                  tend: Any, norm: Callable[..., Any], *, order: int) -> tuple[Any, Any]:
    """``f(t0, y0)`` and Hairer's starting step (Hairer, Nørsett & Wanner, *Solving ODEs
    I*, §II.4) for a method of ``order``; ``norm(e, ya, yb)`` is the scaled error norm.
    The step is not differentiated (no NaN tangents from the controller)."""
    v0 = held(t0)
    f0 = f(t0, y0, v0)
    d0, d1 = norm(y0, y0, y0), norm(f0, y0, y0)
    h0 = jnp.minimum(jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1), tend - t0)
    d2 = norm(f(t0 + h0, y0 + h0 * f0, held(t0 + h0)) - f0, y0, y0) / h0
    dmax = jnp.maximum(d1, d2)
    h1 = jnp.where(dmax <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / dmax) ** (1 / order))
    return f0, lax.stop_gradient(jnp.minimum(100.0 * h0, h1))


def solve(f: Callable[..., Any], y0: Any, ts: Any, jumps: Any, *, rtol: float,
          atol: float, max_steps: int, held: Callable[[Any], Any] | None = None,
          members: int = 1) -> tuple[Any, Any, Any]:
    """Integrate ``dy/dt = f(t, y)`` from ``ts[0]`` to ``ts[-1]``.

    Parameters
    ----------
    f : callable
        ``f(t, y) -> dy`` on 1-D arrays; with ``held``, ``f(t, y, v)`` where ``v`` are the
        held inputs' values.
    held : callable, optional
        ``held(t) -> v``: the values of the piecewise-constant inputs at ``t``. A step
        never crosses a jump, so they are looked up once per step (not per stage).
    y0 : array (n,)
        Initial state at ``ts[0]``.
    ts : array (m,)
        Strictly increasing output times, ``m ≥ 2``.
    jumps : array (k,)
        Sorted times where ``f`` jumps (hold-input switches); ``k`` may be 0.
    rtol, atol : float
        Local error tolerances.
    max_steps : int
        Step budget (accepted and rejected).

    Returns
    -------
    ys : array (m, n)
        The solution at ``ts``.
    status : int array
        :data:`OK`, :data:`MAX_STEPS` or :data:`FAILED` (non-finite values or a step
        below rounding).
    stats : int array (3,)
        Steps taken, accepted and rejected.
    """
    dtype = y0.dtype
    if held is None:
        def held(t: Any) -> Any:
            return ()

        f2 = f

        def f(t: Any, y: Any, v: Any) -> Any:
            return f2(t, y)
    if jnp.dtype(dtype).itemsize < 8 and max_steps >= 2**24:
        raise ValueError(f"max_steps={max_steps} needs float64 (step counts are carried "
                         "as floats, exact below 2**24 in float32).")
    n_out, nx = ts.shape[0], y0.shape[0]
    t0, tend = ts[0], ts[-1]
    has_jumps = jumps.shape[0] > 0
    jumps_pad = jnp.concatenate([jnp.asarray(jumps, dtype), jnp.full(1, jnp.inf, dtype)])
    # the held values on each segment between jumps (row r: after the r-th jump), looked
    # up once before the loop: a search in the signals' knots inside the loop costs more
    # than the step's arithmetic when the knots are arguments
    seg_table = jax.vmap(held)(jnp.concatenate([ts[:1].astype(dtype),
                                                jnp.asarray(jumps, dtype)]))

    def held_at(jn: Any) -> Any:
        return jax.tree.map(lambda col: col[jn.astype(jnp.int32)], seg_table)
    weights = _dense_weights(jnp.dtype(dtype).name)

    # outputs after ts[0] in chunks of `size`; a chunk's loop ends at its last output time
    size = max(1, min(n_out - 1, _SMALL_BYTES // (nx * jnp.dtype(dtype).itemsize)))
    n_chunks = -(-(n_out - 1) // size)
    padded = jnp.concatenate([ts[1:], jnp.full(n_chunks * size - (n_out - 1), jnp.inf, dtype)])
    chunk_ts = padded.reshape(n_chunks, size)
    chunk_end = ts[jnp.minimum(jnp.arange(1, n_chunks + 1) * size, n_out - 1)]

    def scaled_rms(e: Any, ya: Any, yb: Any) -> Any:
        scale = atol + rtol * jnp.maximum(jnp.abs(ya), jnp.abs(yb))
        r = jnp.square(e / scale)
        if members > 1:
            return jnp.sqrt(jnp.max(jnp.mean(r.reshape(members, -1), axis=1)))
        return jnp.sqrt(jnp.mean(r))

    f0, h_start = starting_step(f, held, t0, y0, tend, scaled_rms, order=5)
    tiny = 4 * jnp.finfo(dtype).eps

    # the loop carry is one vector [t, h, jump index, steps, accepted, status, y, f(t, y)]
    # (one buffer: the carry update is a single fused kernel, not one per scalar)
    def chunk(v: Any, xs: tuple) -> tuple:
        t_out, t_stop = xs

        def cond(c: tuple) -> Any:
            v = c[0]
            return (v[5] == _RUNNING) & (v[0] < t_stop)

        def body(c: tuple) -> tuple:
            v, out = c
            t, h, jn, steps, accepted = v[0], v[1], v[2], v[3], v[4]
            y, fy = v[6:6 + nx], v[6 + nx:]
            t_jump = jumps_pad[jn.astype(jnp.int32)]
            t_before, t_after = jnp.nextafter(t_jump, -jnp.inf), jnp.nextafter(t_jump, jnp.inf)
            # at least one float forward (a step below t's resolution would have dt = 0)
            t_try = jnp.minimum(jnp.maximum(t + h, jnp.nextafter(t, jnp.inf)), t_stop)
            hit = t_jump <= t_try  # the step would reach a jump: end just before it
            # already just before the jump: cross it without a step (the state is
            # continuous; only f changes), instead of a step of length zero
            cross = hit & (t_before <= t)
            t1 = jnp.where(hit, t_before, t_try)
            dt = jnp.where(cross, 1.0, t1 - t)  # (a crossing's stages are not used)
            v_held = held_at(jn)  # constant over the step: it ends before the next jump
            ks = [fy * dt]
            for s in range(1, _STAGES):
                y_stage = y + sum(_A[s - 1][r] * ks[r] for r in range(s))
                if s == _STAGES - 1:
                    y1 = y_stage  # Tsit5's last row of A holds its solution weights
                ks.append(f(t + _C[s] * dt, y_stage, v_held) * dt)
            err = lax.stop_gradient(
                scaled_rms(sum(_B_ERR[r] * ks[r] for r in range(_STAGES)), y, y1))
            finite = jnp.isfinite(err)
            keep = cross | (finite & (err <= 1.0))
            y1 = jnp.where(cross, y, y1)
            factor = jnp.where(finite, jnp.clip(
                _SAFETY * jnp.maximum(err, 1e-10) ** _EXPONENT, _FACTOR_MIN, _FACTOR_MAX),
                _FACTOR_MIN)
            # outputs of this chunk in (t, t1], or up to just after a jump when stopping at
            # one (the next step starts there)
            t_cover = jnp.where(hit, t_after, t1)
            # dense output y + Σ_p θ^p c_p with c_p = Σ_s W[p, s] k_s, by Horner's rule
            theta = ((t_out - t) / dt)[:, None]
            c = [sum(weights[p, s] * ks[s] for s in range(_STAGES)) for p in range(5)]
            dense = c[4]
            for p in (3, 2, 1, 0):
                dense = c[p] + theta * dense
            dense = jnp.where(cross, y, y + dense)
            inside = keep & (t_out > t) & (t_out <= t_cover)
            out = jnp.where(inside[:, None], dense, out)
            t_new = jnp.where(keep, jnp.where(hit, t_after, t1), t)
            f1 = jnp.where(cross, fy, ks[-1] / dt)  # f at t1 (at t when crossing)
            if has_jumps:
                # jumps passed (a binary search: the list holds every input's switches)
                jn_new = jnp.where(keep & hit, jnp.searchsorted(
                    jumps_pad, t_new, side="right", method="scan_unrolled").astype(dtype), jn)

                def past_jump():
                    # carry the state over the two floats around the jump, each side with
                    # its own input; the next step starts from a fresh first stage
                    f_after = f(t_after, y1, held_at(jn_new))
                    return (y1 + (t_jump - t_before) * f1 + (t_after - t_jump) * f_after,
                            f_after)

                y1, f_new = lax.cond(keep & hit, past_jump,
                                     lambda: (y1, jnp.where(keep, f1, fy)))
                jn = jn_new
            else:
                f_new = jnp.where(keep, f1, fy)
            clipped = keep & (dt < h)  # resume the unclipped step after an output or jump
            h_new = jnp.where(cross, h, jnp.where(clipped, jnp.maximum(h, dt * factor),
                                                  dt * factor))
            steps = steps + (~cross).astype(dtype)
            accepted = accepted + (keep & ~cross).astype(dtype)
            too_small = ((~keep & (dt <= tiny * jnp.maximum(jnp.abs(t), 1.0)))
                         | ~jnp.isfinite(dt))
            status = jnp.where(too_small, FAILED,
                               jnp.where(steps >= max_steps, MAX_STEPS, _RUNNING))
            head = jnp.stack([t_new, h_new, jn, steps, accepted, status.astype(dtype)])
            return jnp.concatenate([head, jnp.where(keep, y1, y), f_new]), out

        # outputs at or before the chunk's start: the last step stopped at a jump one float
        # before them and moved on to just after it (or float32 merged them with t)
        out = jnp.where((t_out <= v[0])[:, None], v[6:6 + nx], jnp.zeros((size, nx), dtype))
        return lax.while_loop(cond, body, (v, out))

    head = jnp.stack([t0, h_start, jnp.sum(jumps_pad <= t0).astype(dtype), 0.0, 0.0, _RUNNING])
    init = jnp.concatenate([head.astype(dtype), y0, f0])
    final, outs = lax.scan(chunk, init, (chunk_ts, chunk_end))
    steps, accepted = final[3].astype(jnp.int32), final[4].astype(jnp.int32)
    status = jnp.where(final[0] >= tend, OK, final[5].astype(jnp.int32))
    ys = jnp.concatenate([y0[None], outs.reshape(-1, nx)[:n_out - 1]])
    return ys, status, jnp.stack([steps, accepted, steps - accepted])


def fixed_grid(ts: Any, jumps: Any, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps of a fixed-step run (host side, numpy): every interval between
    consecutive output times and hold-input switches split into the fewest equal steps
    of at most ``dt``.

    Parameters
    ----------
    ts : array (m,)
        Output times.
    jumps : array (k,)
        Switch times of held inputs (any order, duplicates allowed).
    dt : float
        Largest step [model time unit].

    Returns
    -------
    t_step, h_step : numpy.ndarray (S,)
        Start and length of each step.
    ends : numpy.ndarray (m,)
        Number of steps completed at each output time (``ends[0] = 0``).
    """
    ts = np.asarray(ts, dtype=float)
    j = np.asarray(jumps, dtype=float).ravel()
    j = j[(j > ts[0]) & (j < ts[-1])]
    knots = np.unique(np.concatenate([ts, j]))
    length = np.diff(knots)
    m = np.maximum(1, np.ceil(length / dt * (1.0 - 1e-12)).astype(np.int64))
    h = np.repeat(length / m, m)
    first = np.repeat(knots[:-1], m)
    k = np.arange(m.sum()) - np.repeat(np.cumsum(m) - m, m)
    t_step = first + k * h
    done = np.concatenate([[0], np.cumsum(m)])
    ends = done[np.searchsorted(knots, ts)]
    return t_step, h, ends


def solve_fixed(f: Callable[..., Any], y0: Any, ts: Any, t_step: Any, h_step: Any,
                ends: Any, *, held: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """Integrate ``dy/dt = f(t, y[, v])`` with Tsit5 on the steps of :func:`fixed_grid`:
    no step crosses a switch, the held inputs ``v`` are looked up once per step, and the
    outputs are the states at the ends of the steps that end on them (no interpolation).

    Parameters
    ----------
    f : callable
        ``f(t, y, v) -> dy`` (``v`` the held inputs' values from ``held``).
    y0 : array (n,)
        Initial state at ``ts[0]``.
    ts : array (m,)
        Output times.
    t_step, h_step, ends : arrays
        The grid (:func:`fixed_grid`).
    held : callable, optional
        ``held(t) -> v``.

    Returns
    -------
    ys : array (m, n)
        The solution at ``ts``.
    ok : bool array
        Whether every state stayed finite.
    """
    if held is None:
        def held(t: Any) -> Any:
            return ()
    a = [[jnp.asarray(v, y0.dtype) for v in row] for row in _A]
    # the held values of every step, looked up once before the loop (a lookup in the
    # signal's knots inside the loop costs more than the step's arithmetic)
    table = jax.vmap(held)(t_step)

    def step(i: Any, y: Any) -> Any:
        t, h = t_step[i], h_step[i]
        # constant over the step: it ends at or before the next switch
        v = jax.tree.map(lambda col: col[i], table)
        ks = [f(t, y, v) * h]
        for s in range(1, _STAGES - 1):
            ks.append(f(t + _C[s] * h, y + sum(a[s - 1][r] * ks[r] for r in range(s)), v) * h)
        # Tsit5's last row of A holds its solution weights
        return y + sum(a[_STAGES - 2][r] * ks[r] for r in range(_STAGES - 1))

    def interval(y: Any, k: Any) -> tuple[Any, Any]:
        y1 = lax.fori_loop(ends[k], ends[k + 1], step, y)
        return y1, y1

    _, outs = lax.scan(interval, y0, jnp.arange(ts.shape[0] - 1))
    ys = jnp.concatenate([y0[None], outs])
    return ys, jnp.all(jnp.isfinite(ys))
