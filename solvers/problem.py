"""The statement of an optimal-control problem and its numeric data.

:class:`Problem` holds what a user sets up — horizon (fixed or free), controls with bounds,
rate limits and previous values, path and terminal constraints, soft constraints, the
objective, forecasts and parameters — and turns it into the numbers the NLP takes (its
parameter vector, the initial state). :class:`~processtwin.solvers.OCP` adds building and
solving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from processtwin.errors import ConfigError, suggest
from processtwin.model import Model, parameter_info

if TYPE_CHECKING:
    from .transcription import NLP

__all__ = ["Problem"]

Bounds = tuple[float | None, float | None]


class Problem:
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
        self._last_result: Any = None  # the last converged OCPResult
        self.expand = True
        self.structured = True

    # ---- problem set-up (chainable) -------------------------------------------------
    def _check_name(self, name: str, where: tuple[str, ...], what: str) -> None:
        if name not in where:
            raise ConfigError(f"unknown {what} `{name}`" + suggest(name, where))

    def initial_state(self, x0: Mapping[str, Any] | None = None, /, **kw: Any) -> Self:
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
        Self
            ``self``, for chaining.
        """
        group = self.model.layout.states
        self.x0 = group.to_dict(group.values(x0, **kw))
        return self

    def bound_input(self, name: str, lower: Any = None, upper: Any = None,
                    *, rate: Any = None, previous: Any = None) -> Self:
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
        Self
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
                  terminal: bool = False, soft: float | None = None) -> Self:
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
        Self
            ``self``, for chaining.
        """
        if name not in self.states and name not in self.outputs:
            self._check_name(name, self.states + self.outputs, "state or output")
        target = self.terminal if terminal else self.path
        if target.get(name) != ((lower, upper), soft):
            self._invalidate()
        target[name] = ((lower, upper), soft)
        return self

    def disturbance(self, name: str, values: Any) -> Self:
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
        Self
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

    def parameter(self, name: str, values: Any) -> Self:
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
        Self
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
                 time_weight: float = 0.0, stage_rule: str = "integral") -> Self:
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
        Self
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


def _same(a: Any, b: Any) -> bool:
    """Equality of option values that may be None, numbers, arrays or tuples of them."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))
