"""Optimal-control problems on a processtwin model, solved by IPOPT (CasADi).

:class:`OCP` states the problem (horizon — fixed or free —, controls and their bounds and
rate limits, path and terminal constraints, soft constraints, objective, forecasts); the NLP
is built in :mod:`.transcription` (multiple shooting or Radau collocation with several
elements per interval, from one CasADi ``Function`` of the model's own equations mapped
over the horizon), started from :mod:`.guess` and solved in :mod:`.nlpsolve` (guesses,
multistart, primal-dual warm start, honest failure classes, a diagnosis of infeasibility
checked by re-simulation). CasADi's ``highs`` plugin is never loaded here (it clashes with
highspy; see DESIGN.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from processtwin.errors import ConfigError, suggest
from processtwin.model import Model, parameter_info

from .nlpsolve import OCPResult, solve_ocp
from .transcription import NLP, transcribe

__all__ = ["OCP", "OCPResult"]

Bounds = tuple[float | None, float | None]


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
        Orthogonal collocation (Radau IIA, ``elements`` elements of ``degree`` points per
        control interval; path constraints hold at every collocation point) or multiple
        shooting (RK4 with ``substeps`` per interval; path constraints at the nodes). A
        discrete-time model always uses its own map.
    degree : int
        Collocation points per element.
    elements : int
        Collocation elements per control interval.
    substeps : int
        RK4 sub-steps per interval (shooting, and the simulated initial guess).
    control_horizon : int, optional
        Move blocking: controls are free on the first ``control_horizon`` intervals and
        held afterwards.
    runtime : tuple of str
        Parameters that become NLP parameters: change them with :meth:`parameter` (and the
        initial state and previous inputs) between solves without rebuilding the NLP —
        the receding-horizon case, where IPOPT is also warm-started (primal and dual).
        Every parameter set with :meth:`parameter` is one too.
    free_time : (float, float), optional
        Free final time within ``(T_min, T_max)`` [model time unit]: the horizon becomes a
        decision variable (``horizon`` is its initial guess), for time-optimal and
        productivity objectives (``minimise(mayer=lambda x, T: ...)`` or
        ``time_weight``).
    """

    def __init__(self, model: Model, horizon: float, intervals: int, *,
                 controls: tuple[str, ...] | None = None, method: str = "collocation",
                 degree: int = 3, elements: int = 1, substeps: int = 8,
                 control_horizon: int | None = None, runtime: tuple[str, ...] = (),
                 free_time: tuple[float, float] | None = None) -> None:
        if method not in ("collocation", "shooting"):
            raise ConfigError(f"unknown method `{method}`" + suggest(method,
                                                                     ["collocation", "shooting"]))
        for key, v in (("intervals", intervals), ("degree", degree),
                       ("elements", elements), ("substeps", substeps)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"`{key}` must be a whole number ≥ 1, got {v!r}.")
        if not (isinstance(horizon, (int, float, np.number)) and np.isfinite(horizon)
                and horizon > 0):
            raise ConfigError(f"`horizon` must be a finite time > 0 [{model.time_unit}], "
                              f"got {horizon!r}.")
        if free_time is not None:
            lo_T, hi_T = (float(v) for v in free_time)
            if not 0 < lo_T <= hi_T < np.inf:
                raise ConfigError(f"`free_time` must be (T_min, T_max) with 0 < T_min ≤ "
                                  f"T_max < inf [{model.time_unit}], got {free_time!r}.")
            if model.is_discrete:
                raise ConfigError(f"discrete-time model `{model.name}` has a fixed sample "
                                  "time: its horizon cannot be free.")
            free_time = (lo_T, hi_T)
        self.free_time = free_time
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
        self.elements = int(elements)
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
        #: Every other input (disturbances, fixed inputs) → its slice of the vector ``d``
        #: of one interval (an NLP parameter: forecasts change without a rebuild).
        self.other_slots: dict[str, slice] = {}
        pos = 0
        for lf in inputs.leaves:
            if lf.name not in self.control_slots:
                self.other_slots[lf.name] = slice(pos, pos + lf.size)
                pos += lf.size
        self.nd = pos
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
        self.time_weight = 0.0
        self.stage_rule = "integral"
        # parameters that are NLP parameters (changed between solves without rebuilding)
        params = parameter_info(model)
        for k in runtime:
            if k not in params:
                raise ConfigError(f"unknown runtime parameter `{k}`" + suggest(k, params))
        self.runtime = tuple(runtime)
        self.runtime_values = {k: float(model.get(k)) for k in self.runtime}
        self._compiled: dict[tuple, Any] = {}
        self._prob: NLP | None = None
        self._diag_nlp: NLP | None = None  # the softened NLP of the last diagnosis
        self._last_plan: Any = None
        self.expand = True

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
        self._compiled, self._prob = {}, None

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
        if name in self.control_slots:
            raise ConfigError(f"`{name}` is a control of this OCP; a disturbance is an "
                              "input the optimiser does not choose.")
        lf = self.model.layout.inputs.leaf(name)
        a = np.asarray(values, dtype=float)
        shapes = [(), (self.N,)] + ([lf.shape, (self.N, *lf.shape)] if lf.shape else [])
        if a.shape not in shapes or not np.all(np.isfinite(a)):
            raise ConfigError(f"disturbance `{name}` must be finite, a constant or one value "
                              f"per interval ({self.N}) [{lf.var.units}]"
                              + (f", or {lf.size} over `{lf.dim}`" if lf.shape else "")
                              + f"; got shape {a.shape}.")
        self.disturbances[name] = a  # an NLP parameter: no rebuild
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
        a = np.asarray(values, dtype=float)
        if a.shape not in ((), (self.N,)) or not np.all(np.isfinite(a)):
            raise ConfigError(f"parameter `{name}` must be a finite constant or one value "
                              f"per interval ({self.N}), got shape {a.shape}.")
        if name in self.runtime:
            if a.ndim:
                raise ConfigError(f"runtime parameter `{name}` takes one value, got "
                                  f"{a.size}.")
            self.runtime_values[name] = float(a)  # an NLP parameter: no rebuild
            return self
        if name not in self.params:
            self._invalidate()  # a new NLP parameter
        self.params[name] = a
        return self

    def minimise(self, mayer: Callable[..., Any] | None = None,
                 stage: Callable[..., Any] | None = None,
                 du_weight: Mapping[str, float] | None = None,
                 time_weight: float = 0.0, stage_rule: str = "integral") -> OCP:
        """Objective: ``mayer(x(T)[, T])`` + ∫ ``stage(x, u)`` dt + Σ w (Δu)² + w_T T.

        ``x`` are the model's ``State`` tuples, ``u`` its ``Inputs`` tuples (CasADi SX).

        Parameters
        ----------
        mayer : callable, optional
            ``mayer(x) -> SX`` or ``mayer(x, T) -> SX``: terminal cost of the state at the
            end of the horizon, and of the final time ``T`` [model time unit] itself
            (e.g. ``-x.P * x.V / T``, productivity with a free final time)
            [objective units].
        stage : callable, optional
            ``stage(x, u) -> SX``: running cost rate [objective units per model time
            unit], integrated over the horizon (RK4 with the state in shooting, Radau
            quadrature on the collocation points).
        du_weight : mapping, optional
            Control → weight ``w`` of its squared moves between intervals (and from
            ``previous`` of :meth:`bound_input` when given) [objective units per (input
            units)²].
        stage_rule : {"integral", "rectangle"}
            ``"integral"``: the stage cost integrated over the horizon; ``"rectangle"``:
            ``h Σ_k stage(x_k, u_k)`` at the start of each interval (the left-point rule of
            do-mpc and of discrete-time MPC formulations).
        time_weight : float
            Cost per unit of final time [objective units per model time unit]: with a
            free final time, ``time_weight=1`` and nothing else is the minimum-time
            problem.

        Returns
        -------
        OCP
            ``self``, for chaining.
        """
        for c in du_weight or {}:
            self._check_name(c, self.controls, "control")
        self.mayer, self.stage = mayer, stage
        self.du_weight = dict(du_weight or {})
        self.time_weight = float(time_weight)
        if stage_rule not in ("integral", "rectangle"):
            raise ConfigError(f"`stage_rule` must be 'integral' or 'rectangle', got "
                              f"{stage_rule!r}.")
        self.stage_rule = stage_rule
        self._invalidate()
        return self

    # ---- the NLP (built in .transcription, solved in .nlpsolve) ----------------------
    @property
    def theta_names(self) -> tuple[str, ...]:
        """Parameters that are NLP parameters (``runtime`` and those set with
        :meth:`parameter`), in the order of the per-interval vector θ."""
        return self.runtime + tuple(n for n in self.params if n not in self.runtime)

    @property
    def substeps_per_interval(self) -> int:
        """RK4 sub-steps per interval; for a discrete-time model its samples per interval."""
        if self.model.is_discrete:
            return int(round(self.h / self.model.sample_time))
        return self.substeps

    def p_values(self) -> np.ndarray:
        """Numeric NLP parameters: θ per interval, the other inputs per interval, the
        previous controls, the horizon length."""
        N = self.N
        th = np.zeros((N, len(self.theta_names)))
        for i, n in enumerate(self.theta_names):
            th[:, i] = (self.runtime_values[n] if n in self.runtime
                        else np.broadcast_to(self.params[n], (N,)))
        lay = self.model.layout
        d = np.zeros((N, self.nd))
        for name, sl in self.other_slots.items():
            lf = lay.inputs.leaf(name)
            if name in self.disturbances:
                v = self.disturbances[name]
                v = v[:, None] if (v.ndim == 1 and v.shape[0] == N and not
                                   (lf.shape and v.shape == lf.shape)) else v
                d[:, sl] = np.broadcast_to(v, (N, lf.size))
            else:
                d[:, sl] = np.broadcast_to(np.asarray(lf.var.default, float), (N, lf.size))
        prev = [np.broadcast_to(np.asarray(self.u_prev.get(c, 0.0), dtype=float),
                                (sl.stop - sl.start,)) for c, sl in self.control_slots.items()]
        return np.concatenate([th.ravel(), d.ravel(), *prev, [self.T]])

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
        if not (np.isfinite(horizon) and horizon > 0):
            raise ConfigError(f"`horizon` must be a finite time > 0, got {horizon!r}.")
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
        # current interval length when reported (the horizon may change between solves)
        return f"t=<{float(pos)!r}>"

    def label(self, label: str, h: float | None = None) -> str:
        """A constraint label with node positions turned into times [model time unit].

        Parameters
        ----------
        label : str
            A constraint label from the NLP (``t=<k>`` node positions).
        h : float, optional
            Interval length [model time unit] (default the current one).
        """
        h = self.h if h is None else h
        return re.sub(r"t=<([^>]+)>", lambda m: f"t={float(m.group(1)) * h:g}", label)

    def interval_model_numeric(self) -> Model:
        """The model with the NLP parameters at their current values (time-varying ones at
        their first interval's value)."""
        vals = {n: float(np.broadcast_to(self.params[n], (self.N,))[0]) for n in self.params}
        vals.update(self.runtime_values)
        return self.model.with_params(vals) if vals else self.model

    def x0_vector(self) -> np.ndarray:
        """The fixed initial state as a flat vector [state units]."""
        return self.model.layout.states.values(self.x0)

    def build(self, soften_all: bool = False) -> NLP:
        """Build the NLP; with ``soften_all`` every constraint gets a slack (diagnosis).

        Parameters
        ----------
        soften_all : bool
            Give every state/output constraint a slack (the least-violation problem).

        Returns
        -------
        NLP
        """
        return transcribe(self, soften_all)

    def initial_point(self, guess: Any = None) -> np.ndarray:
        """The NLP decision vector a solve starts from (see ``guess`` of :meth:`solve`).

        Parameters
        ----------
        guess : mapping, OCPResult or xarray.Dataset, optional
            As for :meth:`solve`.

        Returns
        -------
        numpy.ndarray
            The start, inside the variable bounds [each variable's units].
        """
        from .guess import make_start, start_vector

        if self._prob is None:
            self._prob = self.build()
        return start_vector(self, self._prob, make_start(self, guess), self.x0_vector(),
                            self.p_values())

    def solve(self, *, guess: Any = None, starts: Any = 1, seed: int = 0,
              warm_start: OCPResult | None = None, tol: float = 1e-10, max_iter: int = 3000,
              diagnose: bool = True, max_wall_time: float | None = None,
              raise_on_failure: bool = True) -> OCPResult:
        """Solve with IPOPT, from a guess or several starts, and classify the outcome.

        Parameters
        ----------
        guess : mapping, OCPResult or xarray.Dataset, optional
            Initial guess: control and state names → constants or profiles (one value
            per interval for a control, per node for a state; ``"T"`` for a free final
            time), or a previous plan interpolated onto this grid. Unnamed states are
            simulated from the guessed controls. Default: the previous (else default)
            inputs held, states simulated.
        starts : int or sequence
            Multistart: an int ``n`` runs the guess plus ``n - 1`` starts sampled within
            the control bounds; a sequence runs each of its guesses. All reuse one built
            NLP; the best converged solve is returned, every start's outcome is in
            ``stats["starts"]``.
        seed : int
            Seed of the sampled starts.
        warm_start : OCPResult, optional
            A previous result of this same NLP: primal-dual warm start from its
            ``w_opt``, ``lam_x`` and ``lam_g``. A result of a differently sized problem is
            a :class:`~processtwin.errors.ConfigError` (use ``guess=`` to interpolate it).
        tol : float
            IPOPT's convergence tolerance on the scaled NLP error [-] (``ipopt.tol``).
        max_iter : int
            IPOPT's iteration limit.
        diagnose : bool
            On a failure that may be infeasibility, re-solve with every constraint
            softened: only if that needs slack is the problem called infeasible, naming
            the constraints, each checked by re-simulating the softened plan.
        max_wall_time : float, optional
            Wall-time limit of each IPOPT run [s].
        raise_on_failure : bool
            Raise :class:`~processtwin.errors.SolverError` (with ``status`` and the failed
            ``result``) when no start converged; otherwise return the failed result
            (``success`` False).

        Returns
        -------
        OCPResult

        Raises
        ------
        SolverError
            No start converged (``status``: ``"infeasible"``, ``"limit"``,
            ``"numerical"`` or ``"failed"``).
        """
        return solve_ocp(self, guess=guess, starts=starts, seed=seed, warm_start=warm_start,
                         tol=tol, max_iter=max_iter, diagnose=diagnose,
                         max_wall_time=max_wall_time, raise_on_failure=raise_on_failure)

    def verify(self, result: OCPResult, *, rtol: float = 1e-10, atol: float = 1e-12
               ) -> dict:
        """Re-simulate a plan with the JAX simulator (adaptive, tight tolerances): the
        objective re-simulated beside the predicted one, the largest deviation of the
        states, and every constraint's worst value on the re-simulated trajectory.

        Parameters
        ----------
        result : OCPResult
            A result of this OCP.
        rtol, atol : float
            Tolerances of the re-simulation [-, state units].

        Returns
        -------
        dict
            ``objective`` (predicted), ``objective_resimulated``, ``state_error`` (state
            → largest |plan − re-simulation| at the nodes [state units]) and
            ``violations`` (constraint label → largest violation > 0 [its units]).
        """
        from .check import verify_plan

        return verify_plan(self, result, rtol=rtol, atol=atol)


def _same(a: Any, b: Any) -> bool:
    """Equality of option values that may be None, numbers, arrays or tuples of them."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))
