"""Optimal-control problems on a processtwin model, solved by IPOPT (CasADi).

:class:`OCP` states the problem (horizon, controls and their bounds and rate limits, path
and terminal constraints, soft constraints, objective, forecasts) and solves it, with a
primal-dual warm start and a diagnosis of infeasibility. The NLP itself is built in
:mod:`.transcription` (multiple shooting or Radau collocation from the model's own ``rhs``
as CasADi SX — the same equations the JAX simulator and the EKF use). IPOPT (bundled with
casadi) solves with exact derivatives. CasADi's ``highs`` plugin is never loaded here (it
clashes with highspy; see DESIGN.md).
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import casadi as ca
import numpy as np
import xarray as xr

from processtwin.errors import ConfigError, SolverError, suggest
from processtwin.model import Model, parameter_info

from .transcription import initial_guess, plan_dataset, transcribe

__all__ = ["OCP", "OCPResult"]

Bounds = tuple[float | None, float | None]


@dataclass
class OCPResult:
    """Outcome of :meth:`OCP.solve`.

    Attributes
    ----------
    success : bool
        IPOPT converged (``Solve_Succeeded`` or ``Solved_To_Acceptable_Level``).
    status : str
        IPOPT's return status.
    objective : float
        Optimal objective value (without slack penalties).
    data : xarray.Dataset
        The plan: states and outputs at the nodes (``time``, N+1), controls per interval
        (held from each node, last value repeated at the final node), slacks of soft
        constraints. Also available as :attr:`plan`.
    active : list of str
        Constraints at their bound (``name`` at time ``t``) at the optimum.
    stats : dict
        Wall time, iterations.
    w_opt : numpy.ndarray or None
        Optimal NLP decision vector in the order of the transcription (states at the
        nodes, controls per interval, collocation states, slacks) [each variable's
        units]; with ``lam_g`` and ``lam_x`` the warm start of a later solve
        (``OCP.solve(warm_start=...)``).
    lam_g : numpy.ndarray or None
        Lagrange multipliers of the NLP constraints ``g`` at the optimum [objective units
        per constraint unit].
    lam_x : numpy.ndarray or None
        Lagrange multipliers of the bounds on the decision variables at the optimum
        [objective units per variable unit].
    """

    success: bool
    status: str
    objective: float
    data: xr.Dataset
    active: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    w_opt: Any = None
    lam_g: Any = None
    lam_x: Any = None

    @property
    def plan(self) -> xr.Dataset:
        """The planned trajectory (the same Dataset as :attr:`data`)."""
        return self.data


class OCP:
    """An optimal-control problem on a fixed horizon with piecewise-constant controls.

    Parameters
    ----------
    model : Model
        Unit model; its parameter values are used (override per interval with ``params``).
    horizon : float
        Horizon length [model time unit].
    intervals : int
        Number of control intervals N.
    controls : sequence of str
        Manipulated inputs optimised (default: all manipulated inputs).
    method : {"collocation", "shooting"}
        Orthogonal collocation (Radau, ``degree`` points) or multiple shooting (RK4 with
        ``substeps`` per interval).
    degree, substeps : int
        Collocation degree; RK4 sub-steps per interval.
    control_horizon : int, optional
        Move blocking: controls are free on the first ``control_horizon`` intervals and
        held afterwards.
    runtime : tuple of str
        Parameters that become NLP parameters: change them with :meth:`parameter` (and the
        initial state and previous inputs) between solves without rebuilding the NLP —
        the receding-horizon case, where IPOPT is also warm-started (primal and dual).
    """

    def __init__(self, model: Model, horizon: float, intervals: int, *,
                 controls: tuple[str, ...] | None = None, method: str = "collocation",
                 degree: int = 3, substeps: int = 8, control_horizon: int | None = None,
                 runtime: tuple[str, ...] = ()) -> None:
        if method not in ("collocation", "shooting"):
            raise ConfigError(f"unknown method `{method}`" + suggest(method,
                                                                     ["collocation", "shooting"]))
        if not horizon > 0 or intervals < 1:
            raise ConfigError(f"`horizon` must be > 0 and `intervals` ≥ 1, got {horizon}, "
                              f"{intervals}.")
        lay = model.layout
        inputs = lay.inputs
        if controls is None:
            controls = tuple(lf.name for lf in inputs.leaves if lf.var.kind == "manipulated")
        for c in controls:
            if c not in inputs:
                raise ConfigError(f"unknown control `{c}`" + suggest(c, inputs.names))
        self.model, self.T, self.N = model, float(horizon), int(intervals)
        self.h = self.T / self.N
        self.controls = tuple(controls)
        self.method, self.degree, self.substeps = method, int(degree), int(substeps)
        self.M = self.N if control_horizon is None else max(1, min(int(control_horizon),
                                                                  self.N))
        self.states = lay.states.names
        self.outputs = lay.outputs.names
        #: Control → its slice of the control vector of one interval.
        self.control_slots: dict[str, slice] = {}
        pos = 0
        for c in self.controls:
            n = inputs.leaf(c).size
            self.control_slots[c] = slice(pos, pos + n)
            pos += n
        self.nu = pos
        if model.is_discrete:
            ratio = self.h / model.sample_time
            if abs(ratio - round(ratio)) > 1e-9 * max(ratio, 1.0) or round(ratio) < 1:
                raise ConfigError(f"the control interval {self.h:g} {model.time_unit} of "
                                  f"discrete-time model `{model.name}` must be a multiple of "
                                  f"its sample time {model.sample_time:g} {model.time_unit}.")
            method = "discrete"
            self.method = method
        # problem data, filled by the set-up methods below
        self.x0: dict[str, float] = {}
        self.u_bounds: dict[str, Bounds] = {}
        self.rate: dict[str, Any] = {}
        self.u_prev: dict[str, Any] = {}
        self.path: dict[str, tuple[Bounds, float | None]] = {}
        self.terminal: dict[str, tuple[Bounds, float | None]] = {}
        self.disturbances: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.mayer: Callable[..., Any] | None = None
        self.stage: Callable[..., Any] | None = None
        self.du_weight: dict[str, float] = {}
        # parameters that are NLP parameters (changed between solves without rebuilding)
        params = parameter_info(model)
        for k in runtime:
            if k not in params:
                raise ConfigError(f"unknown runtime parameter `{k}`" + suggest(k, params))
        self.runtime = tuple(runtime)
        self.runtime_values = {k: float(model.get(k)) for k in self.runtime}
        self.steps: list[Any] | None = None  # interval maps, built with the NLP
        self._compiled: dict[bool, Any] = {}
        self._prob: dict[str, Any] | None = None
        self._last_w: np.ndarray | None = None

    # ---- problem set-up (chainable) -------------------------------------------------
    def _check_name(self, name: str, where: tuple[str, ...], what: str) -> None:
        if name not in where:
            raise ConfigError(f"unknown {what} `{name}`" + suggest(name, where))

    def initial_state(self, x0: Mapping[str, Any] | None = None, /, **kw: Any) -> OCP:
        """Fix the initial state: a mapping by (dotted) name and/or keywords; missing
        states take the model's defaults [state units].

        The initial state enters the NLP as bounds: changing it needs no rebuild.

        Parameters
        ----------
        x0 : mapping, optional
            Initial value per (dotted) state name [state units] (positional only).
        **kw : float or array
            More initial values by state name [state units].

        Returns
        -------
        OCP
            ``self``, for chaining.
        """
        group = self.model.layout.states
        self.x0 = group.to_dict(group.values(x0, **kw))
        return self

    def bound_input(self, name: str, lower: Any = None, upper: Any = None,
                    *, rate: Any = None, previous: Any = None) -> OCP:
        """Bounds on a control [input units] and an optional rate limit |Δu| per interval.

        Parameters
        ----------
        name : str
            A control of this OCP (one of ``controls``).
        lower, upper : float or array, optional
            Lower and upper bound on the control [input units]; ``None``: the input's own
            bound (or unbounded). A vector control takes one value for every element or
            one per element (so do ``rate`` and ``previous``).
        rate : float or array, optional
            Largest change ``|u_k − u_{k−1}|`` between consecutive intervals [input units
            per interval]; applies to the first interval too when ``previous`` is given.
        previous : float or array, optional
            The value applied before the horizon [input units]: start of the rate limit
            and of the move penalty, and the initial guess. An NLP parameter: changing it
            needs no rebuild.

        Returns
        -------
        OCP
            ``self``, for chaining.
        """
        self._check_name(name, self.controls, "control")
        lf = self.model.layout.inputs.leaf(name)

        def value(v: Any, what: str) -> Any:
            if v is None:
                return None
            a = np.asarray(v, dtype=float)
            if a.ndim > 1 or (a.ndim == 1 and (not lf.shape or a.size != lf.size)):
                want = f"one value or {lf.size} over `{lf.dim}`" if lf.shape else "a number"
                raise ConfigError(f"`{what}` of control `{name}` must be {want} "
                                  f"[{lf.var.units}], got shape {a.shape}.")
            if not np.all(np.isfinite(a)):
                raise ConfigError(f"`{what}` of control `{name}` must be finite "
                                  f"[{lf.var.units}], got {v!r}.")
            return float(a) if not lf.shape else np.broadcast_to(a, lf.shape).copy()

        bounds = (value(lower, "lower"), value(upper, "upper"))
        rate_v, prev_v = value(rate, "rate"), value(previous, "previous")
        if not (_same(self.u_bounds.get(name, (None, None)), bounds)
                and (rate_v is None or _same(self.rate.get(name), rate_v))
                and (prev_v is None or name in self.u_prev)):
            self._invalidate()
        self.u_bounds[name] = bounds
        if rate_v is not None:
            self.rate[name] = rate_v
        if prev_v is not None:
            self.u_prev[name] = prev_v  # an NLP parameter: no rebuild
        return self

    def _invalidate(self) -> None:
        self._compiled, self._prob, self.steps = {}, None, None

    def constrain(self, name: str, lower: float | None = None, upper: float | None = None, *,
                  terminal: bool = False, soft: float | None = None) -> OCP:
        """Bounds on a state or output, on every node (path) or at the end (``terminal``).

        ``soft`` makes it a soft constraint with that penalty per unit of violation.

        Parameters
        ----------
        name : str
            A state or output of the model (a vector one is bounded element-wise).
        lower, upper : float, optional
            Lower and upper bound [the variable's units]; ``None``: no bound on that side.
        terminal : bool
            Constrain only the final node instead of every node after the first (path).
        soft : float, optional
            Make the bounds soft: a slack ≥ 0 per node and bound, penalised linearly in
            the objective with this weight [objective units per variable unit].
            ``None``: hard bounds.

        Returns
        -------
        OCP
            ``self``, for chaining.
        """
        if name not in self.states and name not in self.outputs:
            self._check_name(name, self.states + self.outputs, "state or output")
        target = self.terminal if terminal else self.path
        if target.get(name) != ((lower, upper), soft):
            self._invalidate()
        target[name] = ((lower, upper), soft)
        return self

    def disturbance(self, name: str, values: Any) -> OCP:
        """Disturbance input: a constant or one value per interval (a forecast).

        Parameters
        ----------
        name : str
            An input of the model that is not optimised.
        values : float or array
            The input [input units]: a constant, or one value per interval ``(N,)`` held
            on it; for a vector input of length n an array ``(n,)`` (constant) or
            ``(N, n)``.

        Returns
        -------
        OCP
            ``self``, for chaining.
        """
        self._check_name(name, self.model.layout.inputs.names, "input")
        self.disturbances[name] = values
        self._invalidate()
        return self

    def parameter(self, name: str, values: Any) -> OCP:
        """A parameter: a constant or one value per interval (time-varying).

        Parameters
        ----------
        name : str
            A parameter of the model.
        values : float or array
            Its value [parameter units]: a constant, or one value per interval ``(N,)``.
            A ``runtime`` parameter takes only a constant and needs no rebuild.

        Returns
        -------
        OCP
            ``self``, for chaining.
        """
        self._check_name(name, tuple(parameter_info(self.model)), "parameter")
        if name in self.runtime:
            self.runtime_values[name] = float(values)  # an NLP parameter: no rebuild
            return self
        self.params[name] = values
        self._invalidate()
        return self

    def minimise(self, mayer: Callable[..., Any] | None = None,
                 stage: Callable[..., Any] | None = None,
                 du_weight: Mapping[str, float] | None = None) -> OCP:
        """Objective: ``mayer(x_N)`` + Σ_k ``stage(x_k, u_k)`` h + Σ w (Δu)².

        ``x`` are the model's ``State`` tuples, ``u`` its ``Inputs`` tuples (CasADi SX).

        Parameters
        ----------
        mayer : callable, optional
            ``mayer(x) -> SX``: terminal cost of the state at the end of the horizon
            [objective units].
        stage : callable, optional
            ``stage(x, u) -> SX``: running cost rate at the start of each interval
            [objective units per model time unit], multiplied by the interval length h.
        du_weight : mapping, optional
            Control → weight ``w`` of its squared moves between intervals (and from
            ``previous`` of :meth:`bound_input` when given) [objective units per (input
            units)²].

        Returns
        -------
        OCP
            ``self``, for chaining.
        """
        self.mayer, self.stage = mayer, stage
        self.du_weight = dict(du_weight or {})
        self._invalidate()
        return self

    # ---- the NLP (built in .transcription) ------------------------------------------
    def interval_model(self, k: int, P: Any = None) -> Model:
        """The model on interval ``k``: time-varying parameters at their value there and
        runtime parameters from the NLP parameter vector ``P`` (numeric values if
        ``None``)."""
        vals: dict[str, Any] = {n: float(np.broadcast_to(v, (self.N,))[k])
                                for n, v in self.params.items()}
        for i, n in enumerate(self.runtime):
            vals[n] = P[i] if P is not None else self.runtime_values[n]
        return self.model.with_params(vals) if vals else self.model

    def p_values(self) -> np.ndarray:
        """Numeric NLP parameters: runtime parameters, previous inputs, horizon length."""
        prev = [np.broadcast_to(np.asarray(self.u_prev.get(c, 0.0), dtype=float),
                                 (sl.stop - sl.start,)) for c, sl in self.control_slots.items()]
        return np.concatenate([[self.runtime_values[n] for n in self.runtime], *prev, [self.T]])

    def set_horizon(self, horizon: float) -> OCP:
        """Change the horizon length (same number of intervals) without rebuilding: the
        shrinking horizon of a batch keeps one NLP and its warm start.

        Parameters
        ----------
        horizon : float
            New horizon length [model time unit], > 0; the intervals scale with it.

        Returns
        -------
        OCP
            ``self``, for chaining.
        """
        if not horizon > 0:
            raise ConfigError(f"`horizon` must be > 0, got {horizon}.")
        model = self.model
        if model.is_discrete and abs(float(horizon) / self.N - self.h) > 1e-12 * self.h:
            # the NLP applies the model's map a fixed number of times per interval
            raise ConfigError(f"discrete-time model `{model.name}`: the horizon is built as "
                              f"{self.N} intervals of {self.h:g} {model.time_unit} "
                              f"({round(self.h / model.sample_time)} samples each); "
                              f"{float(horizon):g} {model.time_unit} would change the "
                              "samples per interval — build a new OCP.")
        self.T = float(horizon)
        self.h = self.T / self.N
        return self

    @staticmethod
    def at_node(pos: float) -> str:
        # constraint labels carry the node position; times are filled in with the
        # current interval length when reported (the horizon is an NLP parameter)
        return f"t=<{float(pos)!r}>"

    def label(self, label: str) -> str:
        """A constraint label with node positions turned into times [model time unit]."""
        return self._fmt(label)

    def _fmt(self, label: str) -> str:
        return re.sub(r"t=<([^>]+)>", lambda m: f"t={float(m.group(1)) * self.h:g}", label)

    def inputs_at(self, k: int, u: Any) -> Any:
        """The model's ``Inputs`` on interval ``k`` with the controls from ``u`` (one
        interval's control vector), disturbances from their forecast, others at their
        defaults."""
        group = self.model.layout.inputs
        vals = []
        for lf in group.leaves:
            if lf.name in self.control_slots:
                sl = self.control_slots[lf.name]
                vals.append(u[sl.start] if not lf.shape else u[sl])
            elif lf.name in self.disturbances:
                d = np.asarray(self.disturbances[lf.name], dtype=float)
                vals.append(float(np.broadcast_to(d, (self.N,))[k]) if not lf.shape else
                            np.broadcast_to(d, (self.N, *lf.shape))[k] if d.ndim > 1 else
                            np.broadcast_to(d, lf.shape))
            else:
                vals.append(lf.var.default)
        return group.from_leaves(vals)

    def simulate_guess(self, x0: np.ndarray, u: np.ndarray) -> np.ndarray:
        """States at the nodes under the controls ``u`` (intervals × control vector),
        with the NLP's interval maps."""
        if self._prob is None:
            self._prob = self.build()
        return initial_guess(self, x0, u)

    def x0_vector(self) -> np.ndarray:
        """The fixed initial state as a flat vector [state units]."""
        return self.model.layout.states.values(self.x0)

    def build(self, soften_all: bool = False) -> dict[str, Any]:
        """Build the NLP; with ``soften_all`` every constraint gets a slack (diagnosis)."""
        prob = transcribe(self, soften_all)
        self.steps = prob["steps"]
        return prob

    def solve(self, *, tol: float = 1e-10, max_iter: int = 3000, warm_start: OCPResult | None
              = None, diagnose: bool = True, max_wall_time: float | None = None) -> OCPResult:
        """Solve with IPOPT. On failure, re-solve with every constraint softened and raise a
        :class:`~processtwin.errors.SolverError` naming the violated constraints.

        ``max_wall_time`` [s] stops IPOPT at a deadline (then :class:`SolverError`).

        Parameters
        ----------
        tol : float
            IPOPT's convergence tolerance on the scaled NLP error [-] (``ipopt.tol``).
        max_iter : int
            IPOPT's iteration limit.
        warm_start : OCPResult, optional
            A previous result of this problem: primal-dual warm start from its
            ``w_opt``, ``lam_x`` and ``lam_g`` (ignored if the NLP size changed).
            Otherwise IPOPT starts from the last solution of this OCP, or the simulated
            initial guess.
        diagnose : bool
            On failure, re-solve with every constraint softened to name the violated ones
            (not after a wall-time limit).
        max_wall_time : float, optional
            Wall-time limit of IPOPT [s].

        Returns
        -------
        OCPResult

        Raises
        ------
        SolverError
            IPOPT did not converge (or ran out of time).
        """
        if self._prob is None:
            self._prob = self.build()
        prob = self._prob
        warm = warm_start is not None and warm_start.w_opt.size == prob["w0"].size
        opts = {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes",
                "ipopt.tol": tol, "ipopt.max_iter": max_iter}
        if max_wall_time is not None:
            opts["ipopt.max_wall_time"] = float(max_wall_time)
        if warm:  # primal-dual warm start from the previous solution
            opts.update({"ipopt.warm_start_init_point": "yes",
                         "ipopt.warm_start_bound_push": 1e-9,
                         "ipopt.warm_start_mult_bound_push": 1e-9,
                         "ipopt.mu_init": 1e-6})
        key = (warm, tol, max_iter, max_wall_time)
        if key not in self._compiled:
            self._compiled[key] = ca.nlpsol("ocp", "ipopt", prob["nlp"], opts)
        solver = self._compiled[key]
        nx = self.model.layout.states.size
        lbw, ubw = prob["lbw"].copy(), prob["ubw"].copy()
        lbw[:nx] = ubw[:nx] = self.x0_vector()  # the initial state enters as bounds
        args = dict(lbx=lbw, ubx=ubw, lbg=prob["lbg"], ubg=prob["ubg"], p=self.p_values())
        if warm:
            args.update(x0=warm_start.w_opt, lam_x0=warm_start.lam_x, lam_g0=warm_start.lam_g)
        else:
            args["x0"] = prob["w0"] if self._last_w is None else self._last_w
        start = _time.perf_counter()
        sol = solver(**args)
        st = solver.stats()
        status = st["return_status"]
        ok = status in ("Solve_Succeeded", "Solved_To_Acceptable_Level")
        if not ok:
            if diagnose and status not in ("Maximum_WallTime_Exceeded",
                                           "Maximum_CpuTime_Exceeded"):
                raise SolverError(self._diagnose(status, opts))
            raise SolverError(f"IPOPT failed: {status}.")
        w_opt = np.asarray(sol["x"]).ravel()
        self._last_w = w_opt
        plan = self._plan(prob, w_opt)
        g_val = np.asarray(sol["g"]).ravel()
        lam = np.asarray(sol["lam_g"]).ravel()
        rows = zip(prob["gname"], g_val, prob["lbg"], prob["ubg"], lam, strict=True)
        active = [self._fmt(n) for n, gv, lo, hi, la in rows
                  if lo != hi and abs(la) > 1e-8 and (abs(gv - hi) < 1e-6 or abs(gv - lo) < 1e-6)]
        fobj = float(sol["f"]) - (float(np.dot(plan["slack"].values,
                                               [wgt for _, _, wgt in prob["slacks"]]))
                                  if prob["slacks"] else 0.0)
        return OCPResult(True, status, fobj, plan, active,
                         {"wall_time_s": _time.perf_counter() - start,
                          "iterations": st["iter_count"]}, w_opt, lam,
                         np.asarray(sol["lam_x"]).ravel())

    def _diagnose(self, status: str, opts: dict) -> str:
        prob = self.build(soften_all=True)
        opts = {k: v for k, v in opts.items() if "warm_start" not in k and k != "ipopt.mu_init"}
        solver = ca.nlpsol("diag", "ipopt", prob["nlp"], opts)
        sol = solver(x0=prob["w0"], lbx=prob["lbw"], ubx=prob["ubw"], lbg=prob["lbg"],
                     ubg=prob["ubg"], p=self.p_values())
        w = np.asarray(sol["x"]).ravel()
        fn = ca.Function("s", [prob["nlp"]["x"]], [ca.vertcat(*[s for _, s, _ in
                                                                prob["slacks"]])])
        vals = np.asarray(fn(w)).ravel() if prob["slacks"] else np.array([])
        worst: dict[str, float] = {}
        for (label, _, _), v in zip(prob["slacks"], vals, strict=True):
            if v > 1e-6:
                key = label.split(" at t=")[0]
                worst[key] = max(worst.get(key, 0.0), float(v))
        if not worst:
            return (f"IPOPT failed ({status}) but every constraint can be met when softened; "
                    "the problem is likely badly scaled or needs a better initial guess.")
        parts = [f"{k} is violated by up to {v:.4g}" for k, v in
                 sorted(worst.items(), key=lambda kv: -kv[1])]
        return (f"infeasible problem (IPOPT: {status}). With every constraint softened the "
                "least violation needs: " + "; ".join(parts) + ". These constraints conflict "
                "with the dynamics, the initial state and the input bounds.")

    def _plan(self, prob: dict, w_opt: np.ndarray) -> xr.Dataset:
        return plan_dataset(self, prob, w_opt)


def _same(a: Any, b: Any) -> bool:
    """Equality of option values that may be None, numbers, arrays or tuples of them."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))
