"""Fast, differentiable simulation of models: ``simulate``, ``ensemble``, ``trajectory``.

Validation and results here; the compiled core in :mod:`._solve`. One compiled program per
model structure, solver and tolerance: new parameter values, initial states or input values
reuse it. An ensemble is integrated as one batched system.
"""

from __future__ import annotations

import os
import time as _time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _tsit5
from ._solve import SOLVERS, STAT_KEYS, solve_batch_jit, solve_discrete_jit
from .errors import ConfigError, DataError, ModelError, SolverError, suggest
from .model import Model, check_value
from .ops import jax_ops
from .signals import Signal, as_inputs

__all__ = ["SimulationResult", "ensemble", "simulate", "trajectory"]

def _check_options(solver: str, rtol: float, atol: float, dt: float | None,
                   differentiable: bool = False) -> None:
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver `{solver}`" + suggest(solver, SOLVERS))
    if solver == "rodas" and differentiable:
        raise ConfigError("solver `rodas` is not a differentiation path; `trajectory` "
                          "takes 'tsit5', 'dopri5', 'dopri8' or 'kvaerno5' (stiff).")
    if solver == "rodas" and dt is not None:
        raise ConfigError(f"solver `rodas` chooses its own steps; `dt` must be None, got "
                          f"{dt} (for fixed steps use 'tsit5' or 'kvaerno5').")
    if not (rtol > 0 and atol > 0):
        raise ConfigError(f"`rtol` and `atol` must be positive, got rtol={rtol}, atol={atol}.")
    if dt is not None and not dt > 0:
        raise ConfigError(f"`dt` must be positive, got {dt}.")


def _check_times(t: Any, time_unit: str) -> np.ndarray:
    ts = np.asarray(t, dtype=float)
    if ts.ndim != 1 or ts.size < 2:
        raise DataError(f"`t` must be a 1-D array of at least 2 times [{time_unit}], "
                        f"got shape {ts.shape}.")
    if not np.all(np.isfinite(ts)):
        raise DataError(f"`t` must be finite [{time_unit}], got {ts[~np.isfinite(ts)][0]}.")
    d = np.diff(ts)
    if np.any(d <= 0):
        i = int(np.argmax(d <= 0)) + 1
        raise DataError(f"`t` must be strictly increasing; t[{i}]={ts[i]:g} {time_unit} is not "
                        f"after t[{i - 1}]={ts[i - 1]:g} {time_unit}.")
    return ts


def _require_x64(rtol: float) -> None:
    if rtol < 1e-6 and not jax.config.jax_enable_x64:
        raise ConfigError(
            f"`rtol`={rtol} needs float64; call `processtwin.configure()` (or "
            "`jax.config.update('jax_enable_x64', True)`) "
            "before creating arrays (the `processtwin` command does this)."
        )


def trajectory(
    model: Model,
    x0: Any,
    inputs: Any,
    t: Any,
    *,
    solver: str = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    dt: float | None = None,
    max_steps: int = 100_000,
) -> Any:
    """Differentiable state trajectory: a ``State`` tuple of arrays over ``t``.

    Pure and jit/vmap/grad friendly: use it inside ``jax.grad`` to differentiate an outcome
    with respect to the model's parameters (the model is a pytree), the initial state or
    the values of input :class:`~processtwin.signals.Signal`\\ s. No validation happens
    here beyond what is static (solver name, tolerances, ``dt``): values are not checked
    against bounds and ``t`` is not checked for order, so that traced values pass through.

    Parameters
    ----------
    model : Model
        The unit model, with its parameter values (a pytree: differentiate with respect
        to its leaves by passing it through ``jax.grad``).
    x0 : mapping or State tuple
        Initial state [state units], by (dotted) state name or as the model's ``State``
        tuple; missing names take the model's default. Values may be traced.
    inputs : mapping, Inputs tuple or None
        Per input: a number, a :class:`~processtwin.signals.Signal` (``hold`` schedule or
        ``linear`` series) or an ``xarray.DataArray`` over ``time`` [input units]; see
        :func:`~processtwin.signals.as_inputs`. Missing inputs take their nominal default.
    t : array
        Strictly increasing output times [model time unit]; integration runs from
        ``t[0]`` to ``t[-1]``. For a discrete-time model the times must lie on its sample
        grid (every ``model.sample_time`` from ``t[0]``).
    solver : {"tsit5", "dopri5", "dopri8", "kvaerno5"}
        Runge–Kutta method: explicit ``tsit5`` (default), ``dopri5``, ``dopri8``, or
        ``kvaerno5`` (implicit, stiff models); ``rodas`` is not a differentiation path.
        Ignored for a discrete-time model, which is stepped on its grid.
    rtol, atol : float
        Relative [-] and absolute [state units] local error tolerances of the adaptive
        step; both must be positive.
    dt : float, optional
        Fixed step size [model time unit]; disables adaptivity. ``None`` (default):
        adaptive steps. With held inputs a step ends at each switch, never crosses one
        (an implicit solver, whose stages reach past its step, also controls its error
        within steps of at most ``dt``).
    max_steps : int
        Step budget of the integrator.

    Returns
    -------
    State tuple
        The model's ``State`` tuple: scalar states as arrays over ``t`` ``(time,)``,
        vector states as arrays ``(time, n)`` [state units].
    """
    _check_options(solver, rtol, atol, dt, differentiable=True)
    signals = as_inputs(model, inputs)
    lay = model.layout
    y0 = jnp.asarray(lay.states.assemble(x0, jax_ops), dtype=float)
    ts = jnp.asarray(t, dtype=float)
    if model.is_discrete:
        k_out, n_steps = _sample_indices(model, np.asarray(t, dtype=float))
        ys = solve_discrete_jit(model, y0, signals, ts, k_out, n_steps=n_steps)[0]
    else:
        ys = solve_batch_jit(model, y0, signals, ts, solver=solver, rtol=rtol, atol=atol,
                              dt=dt, max_steps=max_steps, reverse=True)[0]
    return lay.states.unravel(ys[0], jax_ops)


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Result of :func:`simulate` or :func:`ensemble`.

    Attributes
    ----------
    model : Model
        The simulated model (for an ensemble: the nominal model).
    t : ndarray
        Output times [model time unit].
    states, inputs, outputs : ndarray
        Flat arrays of shape ``(scenario, time, n)`` in the order of the model's layout
        (``model.layout``); the scenario axis has length 1 for :func:`simulate`. Read a
        variable by name with ``result[name]`` or from :attr:`data`.
    stats : dict
        ``num_steps``, ``num_accepted_steps``, ``num_rejected_steps``, ``wall_time_s``,
        ``solver``, ``rtol``, ``atol``.
    scenario_params : dict
        Parameters varied across an ensemble (name → array of shape ``(scenario,)``);
        initial states varied across it appear as ``"<state>_0"`` [parameter or state
        units].
    is_ensemble : bool
        Whether the result came from :func:`ensemble`: then ``result[name]`` keeps the
        leading ``scenario`` axis; for :func:`simulate` (``False``) it is dropped.
    """

    model: Model
    t: np.ndarray
    states: Any
    inputs: Any
    outputs: Any
    stats: dict
    scenario_params: dict = field(default_factory=dict)
    is_ensemble: bool = False

    def __getitem__(self, name: str) -> np.ndarray:
        """Trajectory of a state, input or output (``out:`` prefix optional) by (dotted)
        name: ``(time,)`` for a scalar, ``(time, n)`` for a vector; an ensemble adds a
        leading ``scenario`` axis."""
        lay = self.model.layout
        key = name.removeprefix("out:")
        for arr, group, nm in ((self.states, lay.states, name), (self.inputs, lay.inputs, name),
                               (self.outputs, lay.outputs, key)):
            if nm in group and not (nm is name and name.startswith("out:")):
                leaf = group.by_name[nm]
                a = np.asarray(arr)
                col = a[..., leaf.start] if not leaf.shape else a[..., leaf.start:leaf.stop]
                return col if self.is_ensemble else col[0]
        known = [*lay.states.names, *lay.inputs.names, *lay.outputs.names]
        raise ConfigError(f"no variable `{name}` in the result" + suggest(name, known))

    @cached_property
    def data(self) -> Any:
        """The result as an ``xarray.Dataset`` (built on first access)."""
        from .dataset import to_dataset

        return to_dataset(self)


def _scenario_x0(model: Model, x0: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Initial states of an ensemble: ``(n, nx)`` (n = 1 when shared) and the varied ones."""
    group = model.layout.states
    if x0 is None or isinstance(x0, Mapping) or (isinstance(x0, tuple)
                                                  and hasattr(x0, "_fields")):
        given = group.as_mapping(x0, "x0")
    else:  # flat vectors: (nx,) shared or (n, nx), one per scenario
        arr = np.asarray(x0, dtype=float)
        if arr.ndim not in (1, 2) or arr.shape[-1] != group.size:
            raise ConfigError(f"`x0` as an array must have shape ({group.size},) or "
                              f"(scenarios, {group.size}) for the states "
                              f"{', '.join(group.flat_names())}; got {arr.shape}.")
        given = {lf.name: (arr[..., lf.start] if not lf.shape else arr[..., lf.start:lf.stop])
                 for lf in group.leaves}
    cols, varied, n = [], {}, None
    for leaf in group.leaves:
        v = np.asarray(given.get(leaf.name, leaf.var.default), dtype=float)
        check_value("state", leaf.name, v, leaf.var.units, leaf.var.bounds, leaf.var.strict)
        base = len(leaf.shape)
        if leaf.shape and v.ndim >= 1 and v.shape[-1] != leaf.size:
            raise ModelError(f"state `{leaf.name}` of `{model.name}` has {leaf.size} elements "
                             f"over `{leaf.dim}` [{leaf.var.units}]; got an array of shape "
                             f"{v.shape} (an ensemble takes ({leaf.size},) shared or "
                             f"(scenarios, {leaf.size})).")
        if v.ndim == base + 1:
            varied[leaf.name] = v
            if n is not None and v.shape[0] != n:
                raise ConfigError(f"scenario arrays disagree in length: state `{leaf.name}` "
                                  f"has {v.shape[0]}, others {n}.")
            n = v.shape[0]
        elif v.ndim != base and not (leaf.shape and v.ndim == 0):
            raise ModelError(f"state `{leaf.name}` of `{model.name}` has shape {leaf.shape}; "
                             f"got an array of shape {v.shape}.")
        cols.append(v)
    n = n or 1
    y0 = np.concatenate([np.broadcast_to(v if v.ndim == len(lf.shape) + 1 else v[None],
                                         (n, *lf.shape)).reshape(n, lf.size)
                         if lf.shape else np.broadcast_to(v, (n,))[:, None]
                         for v, lf in zip(cols, group.leaves, strict=True)], axis=1)
    return y0, varied


def _broadcast_scenarios(model: Model, x0: Any, inputs: Any, params: Mapping | None):
    """Validate and broadcast everything to a leading scenario axis of common length."""
    params = {k: np.asarray(v, dtype=float) if isinstance(v, list | tuple) else v
              for k, v in dict(params or {}).items()}
    for k, v in params.items():
        if np.ndim(v) > 1:
            raise ConfigError(f"parameter `{k}`: one value per scenario (a 1-D array), got "
                              f"shape {np.shape(v)}.")
    nominal = model
    model = model.replace(**params) if params else model
    signals = as_inputs(model, inputs, batch=True)
    y0_n, x0_varied = _scenario_x0(model, x0)
    sizes: dict[str, int] = {}
    for k, v in params.items():
        if np.ndim(v) > 0:
            sizes[f"parameter `{k}`"] = np.shape(v)[0]
    for k, v in x0_varied.items():
        sizes[f"state `{k}`"] = v.shape[0]
    for leaf, s in zip(model.layout.inputs.leaves, signals, strict=True):
        if np.ndim(s.values) > len(leaf.shape) + 1:
            sizes[f"input `{leaf.name}`"] = np.shape(s.values)[0]
    n_set = set(sizes.values())
    if len(n_set) > 1:
        raise ConfigError("scenario arrays disagree in length: "
                          + ", ".join(f"{k}: {n}" for k, n in sizes.items()))
    n = n_set.pop() if n_set else 1

    def bc(a, tail=()):
        return np.broadcast_to(np.asarray(a, dtype=float), (n, *tail))

    # only the varied parameters get a scenario axis (a shared matrix is not copied per
    # member, and each member's rhs uses it unbatched)
    batched = tuple(np.ndim(a) == np.ndim(a0) + 1 for a, a0 in
                    zip(jax.tree.leaves(model), jax.tree.leaves(nominal), strict=True))
    model_b = (model, batched)
    y0 = np.broadcast_to(y0_n, (n, y0_n.shape[1]))
    if not any(k.startswith("input") for k in sizes):
        # the same inputs for every member: kept once (no per-member copies, one jump list)
        sig_b = tuple(signals)
    else:
        sig_b = tuple(Signal(bc(s.times, s.times.shape[-1:]),
                             bc(s.values, (*leaf.shape, s.values.shape[-1])), s.interpolation)
                      for leaf, s in zip(model.layout.inputs.leaves, signals, strict=True))
    scen = {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)) for k, v in params.items()
            if np.ndim(v) > 0}
    for k, v in x0_varied.items():
        scen[f"{k}_0"] = v
    return model, model_b, y0, sig_b, n, scen


_MIN_CHUNK = 16        # members: below twice this an ensemble runs in one chunk
_CHUNK_STATES = 4096   # state values per chunk that keep a step's arrays in cache


def _auto_chunk(n: int, nx: int) -> int:
    """Members per chunk when ``chunk_size`` is not given: about ``_CHUNK_STATES`` state
    values (a 40-state building: ~100 members), and at least one chunk per core."""
    size = max(_MIN_CHUNK, _CHUNK_STATES // max(nx, 1))
    cores = os.cpu_count() or 1
    return max(1, min(size, -(-n // cores), n))


def _sample_indices(model: Model, ts: np.ndarray) -> tuple[np.ndarray, int]:
    """Sample numbers of the output times of a discrete-time model (on its grid)."""
    dt = float(model.sample_time)
    k = (ts - ts[0]) / dt
    k_int = np.rint(k)
    bad = np.flatnonzero(np.abs(k - k_int) > 1e-9 * np.maximum(1.0, np.abs(k)))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"`t` must lie on the sample grid of discrete-time model "
                        f"`{model.name}` (every {dt:g} {model.time_unit} from t[0]={ts[0]:g}); "
                        f"t[{i}]={ts[i]:g} is not.")
    return k_int.astype(np.int32), int(k_int[-1])


def _fixed_grid(model: Model, signals: Any, ts: Any, solver: str, dt: float | None,
                max_steps: int, lean: bool, discrete: Any) -> tuple | None:
    """The step grid of a fixed-step ``tsit5`` run on the lean loop (one scenario, or
    members sharing their inputs), laid out on the host; ``None`` otherwise."""
    if discrete is not None or dt is None or solver != "tsit5" or not lean:
        return None
    jumps = [np.asarray(s.times).ravel() for s in signals if s.interpolation == "hold"
             and np.shape(s.times)[-1] > 1]
    t_step, h_step, ends = _tsit5.fixed_grid(
        np.asarray(ts), np.concatenate(jumps) if jumps else np.zeros(0), dt)
    if t_step.size > max_steps:
        raise SolverError(
            f"fixed steps of dt={dt:g} {model.time_unit}: {t_step.size} steps (each "
            f"interval between outputs and input switches split into steps ≤ dt) "
            f"exceed `max_steps` ({max_steps}); raise it or choose a larger dt.")
    return jnp.asarray(t_step), jnp.asarray(h_step), jnp.asarray(ends)


_SPARSITY: dict = {}


def _sparsity(model: Model, batched: tuple | None) -> Any:
    """The Jacobian pattern of ``model`` for ``rodas`` (of its first member when batched),
    cached per structure and parameter values."""
    leaves, tdef = jax.tree.flatten(model)
    if batched is not None:
        leaves = [np.asarray(a)[0] if b else a for a, b in zip(leaves, batched, strict=True)]
        model = tdef.unflatten(leaves)
    key = (tdef, tuple(np.asarray(a).tobytes() for a in leaves))
    if key not in _SPARSITY:
        from ._rosenbrock import model_sparsity

        try:
            pattern = model_sparsity(model)
        except Exception as exc:
            raise ModelError(
                f"solver `rodas` reads the Jacobian pattern of `{model.name}` by evaluating "
                f"its `rhs` with CasADi symbols, which failed ({type(exc).__name__}: {exc}); "
                f"write the equations with `ops` functions, or use solver='kvaerno5'."
            ) from exc
        if len(_SPARSITY) > 64:
            _SPARSITY.clear()
        _SPARSITY[key] = pattern
    return _SPARSITY[key]


def _run(model_b, y0, sig_b, ts, solver, rtol, atol, dt, max_steps, discrete=None,
         shared=False, grid=None):
    """One compiled solve; ``model_b`` is a model, or ``(model, batched)`` for a batch
    whose leaves flagged in ``batched`` carry a scenario axis; ``grid`` from
    :func:`_fixed_grid`."""
    model_b, batched = model_b if isinstance(model_b, tuple) else (model_b, None)
    sparsity = _sparsity(model_b, batched) if solver == "rodas" else None
    if discrete is not None:
        out = solve_discrete_jit(model_b, y0, sig_b, ts, discrete[0], n_steps=discrete[1],
                                 shared=shared, batched=batched)
    else:
        out = solve_batch_jit(model_b, y0, sig_b, ts, solver=solver, rtol=rtol,
                               atol=atol, dt=None if grid is not None else dt,
                               max_steps=max_steps, shared=shared, batched=batched,
                               grid=grid, sparsity=sparsity)
    ys, us, outs, info = out
    code, *stats = np.asarray(info).tolist()  # one read-back: status and step counts
    if code != _tsit5.OK:
        why = ("the step budget ran out" if code == _tsit5.MAX_STEPS
               else "non-finite values or a vanishing step")
        raise SolverError(
            f"integration failed ({why}) with solver `{solver}` at rtol={rtol}; for a stiff "
            f"model try solver='rodas' (sparse) or 'kvaerno5', or raise `max_steps` (now "
            f"{max_steps})."
        )
    return ys, us, outs, dict(zip(STAT_KEYS, stats, strict=True))


def simulate(
    model: Model,
    x0: Any = None,
    inputs: Any = None,
    t: Any = None,
    *,
    params: Mapping[str, float] | None = None,
    solver: str = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    dt: float | None = None,
    max_steps: int = 100_000,
) -> SimulationResult:
    """Simulate one scenario of ``model``.

    Parameters
    ----------
    model : Model
        The unit model (its parameter values are used unless overridden by ``params``).
    x0 : mapping, State tuple or None
        Initial state; missing states take the model's default [state units].
    inputs : mapping or None
        Per input: a number, a :class:`~processtwin.signals.Signal` (``hold`` schedule or
        ``linear`` series) or an ``xarray.DataArray`` over ``time``. Missing inputs take
        their nominal default.
    t : array
        Strictly increasing output times [model time unit]; integration runs from
        ``t[0]`` to ``t[-1]``.
    params : mapping, optional
        Parameter overrides, validated against bounds.
    solver : {"tsit5", "dopri5", "dopri8", "kvaerno5", "rodas"}
        Runge–Kutta method: explicit ``tsit5`` (default), ``dopri5``, ``dopri8``; for stiff
        models ``rodas`` (Rosenbrock, order 4, the Jacobian's sparsity read from the
        model: thermal networks, pipes, exchangers; adaptive steps only) or ``kvaerno5``
        (implicit, dense Jacobian). Ignored for a discrete-time model.
    rtol, atol : float
        Relative and absolute local error tolerances of the adaptive step.
    dt : float, optional
        Largest fixed step [model time unit]; disables adaptivity. With ``tsit5`` every
        interval between output times and held-input switches is split into the fewest
        equal steps of at most ``dt`` (steps end on each switch and output, never cross
        one). Other solvers step ``dt`` and end a step at each switch (an implicit one,
        whose stages reach past its step, also controls its error within steps of at
        most ``dt``); ``rodas`` takes no ``dt``.
    max_steps : int
        Step budget; exceeded → :class:`~processtwin.errors.SolverError`.

    Returns
    -------
    SimulationResult
        ``.data`` is an ``xarray.Dataset`` with one variable per state, output and input.

    Raises
    ------
    ConfigError, ModelError, DataError, SolverError
    """
    return _simulate(model, x0, inputs, t, params, solver, rtol, atol, dt, max_steps,
                     ensemble=False)


def ensemble(
    model: Model,
    x0: Any = None,
    inputs: Any = None,
    t: Any = None,
    *,
    params: Mapping[str, Any] | None = None,
    solver: str = "tsit5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    dt: float | None = None,
    max_steps: int = 100_000,
    chunk_size: int | None = None,
    progress: bool = False,
) -> SimulationResult:
    """Simulate many scenarios at once (dimension ``scenario``).

    Any parameter (``params``), initial state (``x0``) or input value may be an array of
    length N; scalars are shared. For inputs a 1-D array gives one constant per scenario, a
    :class:`~processtwin.signals.Signal` with ``values`` of shape ``(N, K)`` one schedule per
    scenario.

    Parameters
    ----------
    model : Model
        The nominal unit model (its parameter values are used unless overridden by
        ``params``).
    x0 : mapping, State tuple, array or None
        Initial states [state units]: by (dotted) state name, a scalar (shared) or an
        array of length N (one per scenario); or a flat array of shape ``(nx,)`` (shared)
        or ``(N, nx)`` in the order of ``model.layout.states``. Missing states take the
        model's default.
    inputs : mapping or None
        Per input [input units]: a number (shared), a 1-D array of length N (one constant
        per scenario), a :class:`~processtwin.signals.Signal` whose ``values`` have shape
        ``(K,)`` (shared) or ``(N, K)`` (one schedule per scenario), or an
        ``xarray.DataArray`` over ``time``. Missing inputs take their nominal default.
    t : array
        Strictly increasing output times [model time unit], shared by all scenarios;
        integration runs from ``t[0]`` to ``t[-1]``.
    params : mapping, optional
        Parameter overrides [parameter units], validated against bounds: a scalar
        (shared) or a 1-D array of length N (one value per scenario).
    solver : {"tsit5", "dopri5", "dopri8", "kvaerno5", "rodas"}
        Runge–Kutta method: explicit ``tsit5`` (default), ``dopri5``, ``dopri8``; for stiff
        models ``rodas`` (Rosenbrock, order 4, the Jacobian's sparsity read from the
        model: thermal networks, pipes, exchangers; adaptive steps only) or ``kvaerno5``
        (implicit, dense Jacobian). Ignored for a discrete-time model.
    rtol, atol : float
        Relative [-] and absolute [state units] local error tolerances of the adaptive
        step (the step is chosen by the worst scenario). Looser defaults than
        :func:`simulate`.
    dt : float, optional
        Largest fixed step [model time unit]; disables adaptivity. With ``tsit5`` every
        interval between output times and held-input switches is split into the fewest
        equal steps of at most ``dt`` (steps end on each switch and output, never cross
        one). Other solvers step ``dt`` and end a step at each switch (an implicit one,
        whose stages reach past its step, also controls its error within steps of at
        most ``dt``); ``rodas`` takes no ``dt``.
    max_steps : int
        Step budget (per chunk); exceeded → :class:`~processtwin.errors.SolverError`.
    chunk_size : int, optional
        Integrate at most this many scenarios at a time (every chunk reuses one compiled
        program, the last is padded); chunks run on all cores at once. ``None``: chosen
        for speed — one chunk below 32 scenarios, otherwise about 4,096 state values per
        chunk (cache-sized) and at least one chunk per core; give ``chunk_size=N`` for a
        single chunk.
    progress : bool
        Show a progress bar over chunks.

    Returns
    -------
    SimulationResult
        With ``is_ensemble=True``: arrays have a leading ``scenario`` axis of length N;
        the varied parameters and initial states are in ``scenario_params``.

    Raises
    ------
    ConfigError, ModelError, DataError, SolverError
    """
    return _simulate(model, x0, inputs, t, params, solver, rtol, atol, dt, max_steps,
                     ensemble=True, chunk_size=chunk_size, progress=progress)


def _simulate(model, x0, inputs, t, params, solver, rtol, atol, dt, max_steps, *, ensemble,
              chunk_size=None, progress=False):
    if not isinstance(model, Model):
        raise ConfigError(f"`model` must be a processtwin Model instance, got {model!r}.")
    if t is None:
        raise ConfigError("`t` (output times) is required.")
    _check_options(solver, rtol, atol, dt)
    _require_x64(rtol)
    ts = _check_times(t, model.time_unit)
    start = _time.perf_counter()
    disc = _sample_indices(model, ts) if model.is_discrete else None
    if disc is not None:
        solver = "discrete"
    if not ensemble:
        model = model.replace(**params) if params else model
        signals = as_inputs(model, inputs)
        y0 = model.layout.states.values(x0)
        grid = _fixed_grid(model, signals, ts, solver, dt, max_steps, True, disc)
        ys, us, outs, stats = _run(model, y0, signals, ts, solver, rtol, atol, dt, max_steps,
                                   disc, grid=grid)
        stats.update(wall_time_s=_time.perf_counter() - start, solver=solver, rtol=rtol,
                     atol=atol, scenarios=1)
        return SimulationResult(model, ts, ys, us, outs, stats, {}, False)
    model, model_b, y0, sig_b, n, scen = _broadcast_scenarios(model, x0, inputs, params)
    shared = all(np.ndim(s.times) == 1 for s in sig_b)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
            chunk_size, int | np.integer) or chunk_size < 1):
        raise ConfigError(f"`chunk_size` must be a whole number of scenarios ≥ 1 or None "
                          f"(automatic), got {chunk_size!r}.")
    size = n if chunk_size is None and n < 2 * _MIN_CHUNK else (
        _auto_chunk(n, y0.shape[1]) if chunk_size is None else min(chunk_size, n))
    grid = _fixed_grid(model, sig_b, ts, solver, dt, max_steps, shared, disc)  # one for all
    parts = []
    chunks: Any = range(0, n, size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"simulating {n} scenarios", unit="chunk")

    def one_chunk(lo: int) -> tuple[int, Any]:
        idx = np.minimum(np.arange(lo, lo + size), n - 1)  # pad the last chunk
        if size == n:
            args = (model_b, y0, sig_b)
        else:
            m, batched = model_b
            leaves, tdef = jax.tree.flatten(m)
            m_k = tdef.unflatten([np.asarray(a)[idx] if b else a
                                  for a, b in zip(leaves, batched, strict=True)])
            args = ((m_k, batched), np.asarray(y0)[idx],
                    sig_b if shared else jax.tree.map(lambda a, idx=idx: a[idx], sig_b))
        out = _run(*args, ts, solver, rtol, atol, dt, max_steps, disc, shared=shared,
                   grid=grid)
        jax.block_until_ready(out[:3])
        return min(size, n - lo), out

    starts = list(range(0, n, size))
    workers = min(len(starts), os.cpu_count() or 1)
    if workers > 1:
        # chunks on every core at once (XLA runs one chunk's loop on one core); the
        # first one alone, so the program is compiled once
        parts.append(one_chunk(starts[0]))
        if progress:
            chunks.update(1)
        with ThreadPoolExecutor(workers) as pool:
            for part in pool.map(one_chunk, starts[1:]):
                parts.append(part)
                if progress:
                    chunks.update(1)
        if progress:
            chunks.close()
    else:
        for lo in chunks:
            parts.append(one_chunk(lo))
    if len(parts) == 1:
        ys, us, outs, stats = parts[0][1]
    else:
        ys, us, outs = (jnp.concatenate([r[i][:m] for m, r in parts]) for i in range(3))
        stats = {k: sum(r[3][k] for _, r in parts) for k in parts[0][1][3]}
    stats.update(wall_time_s=_time.perf_counter() - start, solver=solver, rtol=rtol, atol=atol,
                 scenarios=n)
    return SimulationResult(model, ts, ys, us, outs, stats, scen, ensemble)
