"""The compiled core of :mod:`processtwin.simulate`: one program per model structure.

``_solve_batch`` integrates one scenario (a lean Tsit5 loop, :mod:`._tsit5`, for adaptive
``tsit5``; diffrax otherwise) or a batch of scenarios as one system (diffrax, ``vmap`` of the
model's ``rhs``) with a shared step whose error norm is the *maximum* over scenarios of each
scenario's RMS error, so every member meets the tolerance on its own while the loop runs
once; this avoids the per-step select of the whole output buffer that ``vmap`` of an
adaptive while-loop costs.
"""

from __future__ import annotations

from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx
from jax import lax

from . import _rosenbrock, _tsit5
from .model import Model
from .ops import jax_ops

SOLVERS = {
    "tsit5": diffrax.Tsit5,  # explicit RK 5(4), Tsitouras (2011): the non-stiff default
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "kvaerno5": diffrax.Kvaerno5,  # ESDIRK 5(4), Kværnø (2004): stiff problems
    # Rosenbrock 4(3), Steinebach (1995), sparse Jacobian and LU (see _rosenbrock): stiff,
    # sparse models (thermal networks); adaptive only, not a differentiation path
    "rodas": None,
}

# Number of times the core program has been traced (compiled); tests read it.
_TRACE_COUNT = 0


def _rhs_vector(model: Model, t: Any, y: Any, signals: Any) -> Any:
    lay = model.layout
    x = lay.states.unravel(y, jax_ops)
    u = lay.inputs.from_leaves([s(t) for s in signals])
    return lay.states.ravel(model.rhs(t, x, u, jax_ops), jax_ops)


def _held_values(signals: Any, t: Any) -> tuple:
    """The values at ``t`` of the held inputs with more than one knot (the others are
    evaluated where they are used)."""
    return tuple(s(t) for s in signals if s.interpolation == "hold" and s.times.shape[-1] > 1)


def _rhs_held(model: Model, t: Any, y: Any, signals: Any, held: tuple) -> Any:
    """``_rhs_vector`` with the held inputs' values given (looked up once per step)."""
    lay = model.layout
    x = lay.states.unravel(y, jax_ops)
    it = iter(held)
    u = lay.inputs.from_leaves([next(it) if s.interpolation == "hold"
                                and s.times.shape[-1] > 1 else s(t) for s in signals])
    return lay.states.ravel(model.rhs(t, x, u, jax_ops), jax_ops)


def _step_vector(model: Model, t: Any, y: Any, signals: Any) -> Any:
    lay = model.layout
    x = lay.states.unravel(y, jax_ops)
    u = lay.inputs.from_leaves([s(t) for s in signals])
    dt = jnp.asarray(model.sample_time, dtype=y.dtype)
    return lay.states.ravel(model.step(t, x, u, dt, jax_ops), jax_ops)


def _max_rms_norm(y: Any) -> Any:
    # y: (scenario, state). Per-scenario RMS, worst scenario decides the step.
    return jnp.max(jnp.sqrt(jnp.mean(y**2, axis=-1)))


def _model_axes(model: Model, batched: tuple | None) -> Any:
    """``vmap`` axes of a batch's model: 0 for the leaves flagged in ``batched`` (all when
    ``None``), ``None`` (shared by every member) for the rest."""
    if batched is None:
        return 0
    leaves, tdef = jax.tree.flatten(model)
    return tdef.unflatten([0 if b else None for b in batched])


def _lean_rhs(model: Model, signals: Any, y0: Any, m_axis: Any) -> Any:
    """``f(t, y, v)`` of the lean loops (``v``: the held inputs' values): one scenario, or
    a batch with shared inputs whose members' states are stacked into one vector."""
    if y0.ndim == 1:
        return lambda t, y, v: _rhs_held(model, t, y, signals, v)
    n, nx = y0.shape
    member_rhs = jax.vmap(_rhs_held, in_axes=(m_axis, None, 0, None, None))
    return lambda t, y, v: member_rhs(model, t, y.reshape(n, nx), signals, v).reshape(-1)


def _lean_result(model: Model, ts: Any, flat: Any, y0: Any, signals: Any, m_axis: Any,
                 code: Any, stats: Any) -> tuple:
    """States (scenario, time, state), inputs, outputs and info from a lean loop's
    solution ``flat`` (time × stacked states)."""
    if y0.ndim == 1:
        us, outs = jax.tree.map(lambda a: a[None], _per_member(model, ts, flat, signals))
        return flat[None], us, outs, _info(code, stats, flat)
    ys = jnp.swapaxes(flat.reshape(ts.shape[0], *y0.shape), 0, 1)
    us, outs = jax.vmap(_per_member, in_axes=(m_axis, None, 0, None))(model, ts, ys, signals)
    return ys, us, outs, _info(code, stats, ys)


def _solve_batch(model, y0, signals, ts, *, solver, rtol, atol, dt, max_steps,
                 reverse=False, shared=False, batched=None, grid=None, sparsity=None):
    """Integrate scenarios.

    If ``y0`` is 2-D every leaf of ``model``, ``y0`` and ``signals`` has a leading scenario
    axis; a 1-D ``y0`` is one unbatched scenario (for ``tsit5`` with adaptive steps, the
    lean loop of :mod:`processtwin._tsit5`). ``reverse`` keeps the program reverse-mode
    differentiable (diffrax's checkpointed loop, for :func:`trajectory`); otherwise the
    loops are plain while loops (``simulate``, ``ensemble``: not for gradients). Returns states
    (scenario, time, state), inputs, outputs and one int vector: the status code
    (``_tsit5.OK``, ``MAX_STEPS``, ``FAILED``) and the step counts (steps, accepted,
    rejected), read back together. ``shared``: a batch whose ``signals`` have no scenario
    axis (the same inputs for every member: held values looked up once per step for all,
    one jump list; adaptive ``tsit5`` runs the lean loop on the stacked states).
    ``batched``: per leaf of ``model``, whether it has a scenario axis (``None``: all).
    ``grid``: the fixed steps (:func:`_tsit5.fixed_grid`) of a fixed-step ``tsit5`` run.
    ``sparsity``: the Jacobian pattern (:func:`_rosenbrock.model_sparsity`) for ``rodas``."""
    global _TRACE_COUNT
    _TRACE_COUNT += 1
    single = y0.ndim == 1
    jumps = [s.times.reshape(-1) for s in signals if s.interpolation == "hold"
             and s.times.shape[-1] > 1]
    jump_ts = jnp.sort(jnp.concatenate(jumps)) if jumps else None
    sig_axis = None if shared else 0
    m_axis = _model_axes(model, batched)

    def held(t: Any) -> tuple:
        return _held_values(signals, t)

    if grid is not None and (single or shared):
        # fixed Tsit5 steps on a grid aligned to the switches and outputs (lean loop)
        t_step, h_step, ends = grid
        flat, ok = _tsit5.solve_fixed(_lean_rhs(model, signals, y0, m_axis), y0.reshape(-1),
                                      ts, t_step, h_step, ends, held=held)
        S = t_step.shape[0]
        return _lean_result(model, ts, flat, y0, signals, m_axis,
                            jnp.where(ok, _tsit5.OK, _tsit5.FAILED), jnp.asarray([S, S, 0]))
    if solver == "rodas":
        jumps = jnp.zeros(0, y0.dtype) if jump_ts is None else jump_ts

        def one(model_1, y0_1, signals_1):
            def f(t, y, v):
                return _rhs_held(model_1, t, y, signals_1, v)

            def held_1(t):
                return _held_values(signals_1, t)
            return _rosenbrock.solve(f, y0_1, ts, jumps, sparsity, rtol=rtol, atol=atol,
                                     max_steps=max_steps, held=held_1)
        if single:
            flat, code, stats = one(model, y0, signals)
            return _lean_result(model, ts, flat, y0, signals, m_axis, code, stats)
        # members one by one in a vmapped loop (their own steps; the worst decides the time)
        ys, code, stats = jax.vmap(one, in_axes=(m_axis, 0, sig_axis))(model, y0, signals)
        us, outs = jax.vmap(_per_member, in_axes=(m_axis, None, 0, sig_axis))(model, ts, ys,
                                                                               signals)
        return ys, us, outs, _info(jnp.max(code), jnp.sum(stats, axis=0), ys)
    if (single or shared) and dt is None and solver == "tsit5" and not reverse:
        # the fast path: a lean Tsit5 loop (see _tsit5) on one scenario, or on the stacked
        # states of members that share their inputs (the worst member's error decides)
        flat, code, stats = _tsit5.solve(
            _lean_rhs(model, signals, y0, m_axis), y0.reshape(-1), ts,
            jnp.zeros(0, y0.dtype) if jump_ts is None else jump_ts,
            rtol=rtol, atol=atol, max_steps=max_steps, held=held,
            members=1 if single else y0.shape[0])
        return _lean_result(model, ts, flat, y0, signals, m_axis, code, stats)
    if single:
        def f(t, y, args):
            return _rhs_vector(*args[:1], t, y, args[1])

        norm = optx.rms_norm
    else:
        batched_rhs = jax.vmap(_rhs_vector, in_axes=(m_axis, None, 0, sig_axis))

        def f(t, y, args):
            return batched_rhs(args[0], t, y, args[1])

        norm = _max_rms_norm

    if dt is None:
        controller: Any = diffrax.PIDController(rtol=rtol, atol=atol, norm=norm)
        if jump_ts is not None:
            controller = diffrax.ClipStepSizeController(controller, jump_ts=jump_ts)
        dt0 = None
    else:
        if jump_ts is None:
            controller = diffrax.ConstantStepSize()
        else:  # steps of dt that end at each switch of a held input, never cross it. An
            # explicit method's stages stay inside its step: always accept; an implicit
            # one's (Kvaerno5: c3 = 1.23) reach past it, so its error is controlled too
            implicit = isinstance(SOLVERS[solver](), diffrax.AbstractImplicitSolver)
            tol = (rtol, atol) if implicit else (1e30, 1e30)
            controller = diffrax.ClipStepSizeController(
                diffrax.PIDController(rtol=tol[0], atol=tol[1], dtmax=dt, norm=norm),
                jump_ts=jump_ts)
        dt0 = dt
    method = SOLVERS[solver]()
    if dt is not None and isinstance(method, diffrax.AbstractImplicitSolver):
        # fixed steps cannot reject a step: solve the stage equations tightly instead
        method = type(method)(root_finder=optx.Newton(rtol=1e-10, atol=1e-10,
                                                           norm=optx.max_norm))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), method, ts[0], ts[-1], dt0, y0,
        args=(model, signals), saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
        max_steps=max_steps, throw=False,
        adjoint=diffrax.RecursiveCheckpointAdjoint() if reverse else diffrax.ForwardMode(),
    )
    if single:
        ys = sol.ys[None]
        us, outs = jax.tree.map(lambda a: a[None], _per_member(model, ts, sol.ys, signals))
    else:
        ys = jnp.swapaxes(sol.ys, 0, 1)  # (scenario, time, state)
        us, outs = jax.vmap(_per_member, in_axes=(m_axis, None, 0, sig_axis))(model, ts, ys,
                                                                               signals)
    stats = jnp.stack([sol.stats[k] for k in STAT_KEYS])
    code = jnp.where(sol.result == diffrax.RESULTS.successful, _tsit5.OK,
                     jnp.where(sol.result == diffrax.RESULTS.max_steps_reached,
                               _tsit5.MAX_STEPS, _tsit5.FAILED))
    return ys, us, outs, _info(code, stats, ys)


def _info(code: Any, stats: Any, ys: Any) -> Any:
    """[status, steps, accepted, rejected]; a run whose outputs are not all finite failed,
    whatever the loop reported (e.g. diffrax on an interval of one float)."""
    code = jnp.where(jnp.all(jnp.isfinite(ys)), code, _tsit5.FAILED)
    return jnp.concatenate([jnp.reshape(code, (1,)).astype(jnp.int32),
                            stats.astype(jnp.int32)])


def _per_member(model: Model, ts: Any, ys: Any, signals: Any) -> tuple[Any, Any]:
    """Inputs and outputs of one scenario at the output times."""
    lay = model.layout

    def at(t, yt):
        x = lay.states.unravel(yt, jax_ops)
        leaves = [s(t) for s in signals]
        u = lay.inputs.from_leaves(leaves)
        return (lay.inputs.ravel_leaves(leaves, jax_ops),
                lay.outputs.ravel(model.measure(t, x, u, jax_ops), jax_ops))
    return jax.vmap(at)(ts, ys)


def _solve_discrete(model, y0, signals, ts, k_out, *, n_steps, shared=False,
                    batched=None):
    """Iterate a discrete-time model ``n_steps`` samples from ``ts[0]`` and keep the
    samples ``k_out`` (one per output time). Batched like :func:`_solve_batch`."""
    global _TRACE_COUNT
    _TRACE_COUNT += 1

    def one(model, y0, signals):
        dt = model.sample_time

        def body(y, k):
            t = ts[0] + k.astype(y.dtype) * dt
            y1 = _step_vector(model, t, y, signals)
            return y1, y1

        _, traj = lax.scan(body, y0, jnp.arange(n_steps))
        ys = jnp.concatenate([y0[None], traj])[k_out]
        return (ys, *_per_member(model, ts, ys, signals))

    if y0.ndim == 1:
        ys, us, outs = jax.tree.map(lambda a: a[None], one(model, y0, signals))
    else:
        ys, us, outs = jax.vmap(one, in_axes=(_model_axes(model, batched), 0,
                                              None if shared else 0))(model, y0, signals)
    stats = jnp.asarray([n_steps, n_steps, 0])
    return ys, us, outs, _info(jnp.asarray(_tsit5.OK), stats, ys)


STAT_KEYS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


solve_batch_jit = jax.jit(_solve_batch,
                           static_argnames=("solver", "rtol", "atol", "dt", "max_steps",
                                            "reverse", "shared", "batched", "sparsity"))
solve_discrete_jit = jax.jit(_solve_discrete, static_argnames=("n_steps", "shared",
                                                                "batched"))
