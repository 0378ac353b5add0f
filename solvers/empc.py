"""Economic MPC of a building and its heat pump (any model with a priced power output):
Pyomo + HiGHS linear programmes over an hourly (or finer) horizon.

Each decision linearises the model around the estimate and the forecast
(:func:`~processtwin.solvers.linearise.linearise`, exact for the library's buildings),
minimises energy cost plus priced discomfort under the heat pump's limits
(:mod:`~processtwin.solvers.empc_lp`), checks HiGHS's termination status every time, and on
failure re-solves with fallback options — or, when that fails too, falls back to the rest
of the last good plan, labelled as such. Never an unchecked solution.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from processtwin.errors import ConfigError
from processtwin.model import Model, time_factor

from .empc_lp import HighsLP, LPData, build_pyomo, update_pyomo
from .linearise import AffineSystem, forecast_matrix, linearise
from .nmpc import Recommendation

__all__ = ["Comfort", "EMPCPlan", "EconomicMPC", "Staging"]



@dataclass(frozen=True)
class Comfort:
    """Comfort band of an output that follows the occupancy schedule.

    Attributes
    ----------
    output : str
        The comfort output (a vector over zones is one band per zone).
    occupied, unoccupied : tuple of float
        ``(lower, upper)`` band when occupied and when not (night set-back) [output
        units, °C for a room temperature].
    schedule : str
        Disturbance that says who is there (fraction 0–1).
    threshold : float
        Occupied when the schedule is at least this.
    price : float
        Cost of leaving the band [currency per K·h] (per output unit · hour, per zone).
    """

    output: str = "T_air"
    occupied: tuple[float, float] = (21.0, 24.0)
    unoccupied: tuple[float, float] = (16.0, 28.0)
    schedule: str = "occupancy"
    threshold: float = 0.5
    price: float = 1.0

    def __post_init__(self) -> None:
        for name in ("occupied", "unoccupied"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ConfigError(f"comfort band `{name}` must have lower ≤ upper, got "
                                  f"({lo}, {hi}).")
        if not self.price >= 0:
            raise ConfigError(f"comfort `price` must be ≥ 0 [currency per K h], got "
                              f"{self.price!r}.")

    def bands(self, occupancy: np.ndarray, nz: int) -> tuple[np.ndarray, np.ndarray]:
        """``(N, nz)`` lower and upper band from the schedule over the horizon."""
        occ = np.asarray(occupancy, dtype=float).reshape(len(occupancy), -1)[:, :1]
        on = occ >= self.threshold
        lo = np.where(on, float(self.occupied[0]), float(self.unoccupied[0]))
        hi = np.where(on, float(self.occupied[1]), float(self.unoccupied[1]))
        return np.repeat(lo, nz, axis=1), np.repeat(hi, nz, axis=1)


@dataclass(frozen=True)
class Staging:
    """On/off staging of a unit (a MILP): when on, ``output`` is within
    ``[min_level, upper]``; when off, 0; each start keeps it on for ``min_on`` intervals and
    each stop off for ``min_off``.

    Attributes
    ----------
    output : str
        The staged output (the heat pump's ``load``); it must have a limit.
    min_level : float
        Least level when on [output units].
    min_on, min_off : int
        Minimum run and off times [intervals].
    """

    output: str = "load"
    min_level: float = 0.3
    min_on: int = 2
    min_off: int = 2


@dataclass
class EMPCPlan:
    """One economic plan over the horizon.

    Attributes
    ----------
    status : str
        ``"optimal"``; ``"recovered"`` (the first solve failed and a retry solved it: the
        other simplex from the same start, a solve from scratch, or the fallback options);
        ``"fallback"`` (no solve succeeded: the rest of the last good plan, or the inputs'
        defaults); the first solve's HiGHS status is in ``message``.
    cost : float
        Planned energy cost plus demand charge [currency].
    discomfort : float
        Planned discomfort [K·h, summed over zones].
    x, u, y : numpy.ndarray
        States ``(N + 1, nx)``, manipulated inputs ``(N, nu)`` [model units] and the
        priced output per interval ``(N,)`` [model units].
    times : numpy.ndarray
        Start of each interval and the horizon's end ``(N + 1,)`` [model time unit].
    affine : AffineSystem
        The sampled model the plan was made with.
    solve_time_s : float
        Wall time of the decision (linearisation, update and solve) [s].
    message : str
        What went wrong and what was done, if anything.
    active : list of str
        Hard limits at their bounds in the plan.
    energy : float
        Planned energy of the priced output [kWh when it is in W].
    bands : tuple or None
        ``(lower, upper, slack below, slack above, output indices)`` of the comfort bands
        at the nodes [output units] (for :meth:`verify`).
    power : str
        Name of the priced output (``""``: not recorded).
    """

    status: str
    cost: float
    discomfort: float
    x: np.ndarray
    u: np.ndarray
    y: np.ndarray
    times: np.ndarray
    affine: AffineSystem
    solve_time_s: float = 0.0
    message: str = ""
    active: list[str] = field(default_factory=list)
    energy: float = 0.0
    bands: tuple | None = None
    power: str = ""

    def verify(self, model: Model, forecast: Mapping[str, Any], *, rtol: float = 1e-10,
               atol: float = 1e-10) -> dict[str, float]:
        """Re-simulate the plan with the nonlinear model (adaptive, tight tolerances) under
        the same held forecast and inputs.

        Parameters
        ----------
        model : Model
            The model planned with (or a plant model with the same variables).
        forecast : mapping
            The disturbances the plan was made with.
        rtol, atol : float
            Simulator tolerances.

        Returns
        -------
        dict
            ``state_error`` (largest state deviation from the plan at the nodes [state
            units]), ``comfort_excess`` (largest excursion of the comfort output beyond the
            band plus the plan's own slack, the linearisation's share [output units]; 0
            when none) and the re-simulated ``states`` ``(N + 1, nx)``.
        """
        from processtwin.signals import hold
        from processtwin.simulate import simulate

        a = self.affine
        N = a.N
        lay = model.layout
        inputs: dict[str, Any] = {}
        d = forecast_matrix(model, forecast, N)
        dn = _dist_names(model)
        for leaf in lay.inputs.leaves:
            names = leaf.flat_names()
            if leaf.var.kind == "manipulated":
                v = self.u[:, [a.controls.index(n) for n in names]]
            else:
                v = d[:, [dn.index(n) for n in names]]
            inputs[leaf.name] = hold(self.times[:-1], v[:, 0] if leaf.size == 1 else v.T)
        x0 = {leaf.name: self.x[0, [a.states.index(n) for n in leaf.flat_names()]]
              .reshape(leaf.shape) for leaf in lay.states.leaves}
        res = simulate(model, x0, inputs, self.times, rtol=rtol, atol=atol)
        X = np.concatenate([np.asarray(res[leaf.name]).reshape(N + 1, -1)
                            for leaf in lay.states.leaves], axis=1)
        err = float(np.max(np.abs(X - self.x)))
        excess = 0.0
        if self.bands is not None:
            lo, hi, slo, shi, idx = self.bands
            y = np.einsum("koj,kj->ko", a.C[:, idx, :], X[1:]) + \
                np.einsum("koj,kj->ko", a.D[:, idx, :], self.u) + a.e[:, idx]
            excess = float(max(0.0, np.max(lo - slo - y), np.max(y - hi - shi)))
        return {"state_error": err, "comfort_excess": excess, "states": X}

    @property
    def ok(self) -> bool:
        """Whether a solve succeeded (optimal or recovered)."""
        return self.status in ("optimal", "recovered")

    def dataset(self, model: Model) -> xr.Dataset:
        """The plan as an ``xarray.Dataset`` over ``time``: states and the comfort output
        at the nodes, with its band as the plan held it there (at the end of each interval
        the stricter of that interval's and the next one's); manipulated inputs and the
        priced output held over each interval (from each time to the next; the last value
        repeated at the end); vectors over their layout dimension (``zone``); cost,
        discomfort and energy in the attributes."""
        a = self.affine
        lay = model.layout
        ds = xr.Dataset(coords={"time": ("time", self.times, {
            "units": model.time_unit, "long_name": "time of each node (interval start)"})})

        def put(name: str, leaf: Any, v: np.ndarray, attrs: dict) -> None:
            v = np.asarray(v, dtype=float) + 0.0   # no -0.0 from a product with zero
            if not leaf.shape:
                ds[name] = ("time", v[:, 0], attrs)
            else:
                ds[name] = (("time", leaf.dim or f"{leaf.name}_i"), v, attrs)

        for leaf in lay.states.leaves:
            v = self.x[:, [a.states.index(n) for n in leaf.flat_names()]]
            put(leaf.name, leaf, v, {"units": leaf.var.units, "long_name": leaf.var.doc})
        hold = {"hold": "zero-order (from each time to the next)"}
        held = np.vstack([self.u, self.u[-1:]])
        for leaf in lay.inputs.leaves:
            if leaf.var.kind != "manipulated":
                continue
            v = held[:, [a.controls.index(n) for n in leaf.flat_names()]]
            put(leaf.name, leaf, v, {"units": leaf.var.units, "long_name": leaf.var.doc,
                                     **hold})
        if self.power and len(self.y) == a.N:
            leaf = lay.outputs.leaf(self.power)
            put(self.power, leaf, np.append(self.y, self.y[-1:])[:, None],
                {"units": leaf.var.units, "long_name": f"{leaf.var.doc} (interval mean)",
                 **hold})
        if self.bands is not None:
            lo, hi, _, _, idx = self.bands
            name = a.outputs[idx[0]].split("[")[0]
            leaf = lay.outputs.leaf(name)
            U = np.vstack([self.u[:1], self.u])          # node 0 with the first inputs
            K = np.r_[0, np.arange(a.N)]                  # node k+1 ends interval k
            y = (np.einsum("koj,kj->ko", a.C[K][:, idx, :], self.x)
                 + np.einsum("koj,kj->ko", a.D[K][:, idx, :], U) + a.e[K][:, idx])
            key = name if name not in ds else f"y_{name}"
            put(key, leaf, y, {"units": leaf.var.units, "long_name": leaf.var.doc})
            for bname, band in (("band_lo", lo), ("band_hi", hi)):
                put(bname, leaf, np.vstack([band[:1], band]),
                    {"units": leaf.var.units, "long_name": f"comfort band of {name} "
                     "at each node (the first node, not constrained, shows the first "
                     "interval's)"})
        ds.attrs.update(status=self.status, cost=self.cost, discomfort_Kh=self.discomfort,
                        energy_kWh=self.energy, solve_time_s=self.solve_time_s,
                        message=self.message, kind="plan", model=model.name)
        return ds


class EconomicMPC:
    """Economic MPC: minimise energy cost plus priced discomfort over a horizon, under the
    model's hard output limits, with a linear programme solved by HiGHS.

    Parameters
    ----------
    model : Model
        A continuous-time model with manipulated inputs, a priced power output and a
        comfort output (e.g. :class:`~processtwin.models.HeatPumpBuilding`).
    dt : float, optional
        Control interval [model time unit] (default one hour: 3600 for a model in s, 1
        for one in h, 1/24 for one in d).
    horizon : int
        Number of intervals planned (24 hourly: a day; 168: a week).
    power : str
        The priced output [W, or any unit; prices are per kWh when it is W].
    comfort : Comfort
        Comfort band and its price.
    limits : mapping, optional
        Hard limits on outputs ``name → (lower, upper)`` (``None``: open), in addition to
        the model's declared output limits (a name given here replaces the declared one;
        ``None`` as the value removes it).
    peak_price : float
        Demand charge [currency per kW of the horizon's peak power]; 0: none.
    staging : Staging, optional
        On/off staging with minimum run and off times (makes the LP a MILP).
    backend : {"highs", "pyomo"}
        ``"highs"``: one persistent ``highspy`` model updated in place between decisions
        (the receding-horizon path); ``"pyomo"``: the Pyomo model with mutable parameters,
        solved by Pyomo's persistent HiGHS interface.
    time_limit_s : float, optional
        HiGHS time limit of the first attempt [s].
    fallback_options : mapping, optional
        HiGHS options of the second attempt (default: interior point with crossover,
        presolve on, 60 s).
    warm_start : bool
        Re-solve from the previous optimal basis (``"highs"`` backend, LPs), moved forward
        by the whole intervals the decision time ``t`` advanced (interval ``i`` of the new
        horizon starts from interval ``i + k`` of the old basis); otherwise from the basis
        as it was. The optimum is a fresh solve's (the vertex may differ where the LP has
        several). It runs HiGHS's primal simplex (:data:`WARM_SIMPLEX`), unscaled
        (:data:`LP_SCALE`, as solves from scratch); a start that fails is re-solved from
        the same basis with the dual simplex, then from scratch (scaled), before the
        fallback options, and the plan says so (``"recovered"``). A re-plan of the same
        horizon from a new estimate that keeps the optimal basis feasible is moved along
        that basis without a HiGHS run (:meth:`HighsLP.basis_still_optimal`, counted in
        :attr:`same_basis`). On a 10-zone week (``experiments/bench/bench_empc.py``): a
        fresh noisy forecast every hour 0.25 s against 1.3 s from scratch; the forecast
        held between issues 32 ms against 1.47 s; the same horizon from a new estimate
        6.5 ms where the basis holds, 18 ms where HiGHS pivots. ``False``: every
        decision solved from scratch (with presolve).
    """

    def __init__(self, model: Model, *, dt: float | None = None, horizon: int = 24,
                 power: str = "P_el", comfort: Comfort | None = None,
                 limits: Mapping[str, Any] | None = None, peak_price: float = 0.0,
                 staging: Staging | None = None, backend: str = "highs",
                 time_limit_s: float | None = None,
                 fallback_options: Mapping[str, Any] | None = None,
                 warm_start: bool = True) -> None:
        if model.is_discrete:
            raise ConfigError(f"`{model.name}` is discrete-time; EconomicMPC samples "
                              "continuous-time models.")
        if dt is None:  # one hour in the model's time unit
            dt = float(time_factor("h", model.time_unit))
        if not dt > 0:
            raise ConfigError(f"`dt` must be > 0 [{model.time_unit}], got {dt!r}.")
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) \
                or horizon < 1:
            raise ConfigError(f"`horizon` must be a whole number of intervals ≥ 1, got "
                              f"{horizon!r}.")
        if backend not in ("highs", "pyomo"):
            raise ConfigError(f"`backend` must be 'highs' or 'pyomo', got {backend!r}.")
        if not peak_price >= 0:
            raise ConfigError(f"`peak_price` must be ≥ 0 [currency per kW], got "
                              f"{peak_price!r}.")
        self.model, self.dt, self.horizon, self.backend = model, float(dt), int(horizon), backend
        self.comfort = comfort if comfort is not None else Comfort()
        self.peak_price, self.staging = float(peak_price), staging
        self.time_limit_s = time_limit_s
        self.warm_start = bool(warm_start)
        self.fallback_options = dict(fallback_options) if fallback_options is not None else {
            "solver": "ipm", "run_crossover": "on", "presolve": "on", "time_limit": 60.0}
        outs = model.outputs()
        for role, name in (("power", power), ("comfort", self.comfort.output)):
            if name not in outs:
                raise ConfigError(f"`{role}` output {name!r} is not an output of "
                                  f"`{model.name}`; its outputs are {', '.join(outs)}.")
        if self.comfort.schedule not in model.inputs():
            raise ConfigError(f"comfort `schedule` {self.comfort.schedule!r} is not an input "
                              f"of `{model.name}`.")
        self.power = power
        self._occ_cols = [i for i, n in enumerate(_dist_names(model))
                          if n.split("[")[0] == self.comfort.schedule]
        self.limits = self._limits(limits)
        if staging is not None and staging.output not in self.limits:
            raise ConfigError(f"staged output {staging.output!r} needs a limit (its upper "
                              f"level); limited outputs: {', '.join(self.limits) or 'none'}.")
        self.hours = float(dt) * float(time_factor(model.time_unit, "h"))
        lay = model.layout
        self._outputs = list(dict.fromkeys([power, self.comfort.output, *self.limits]))
        self._flat = [n for o in self._outputs for n in lay.outputs.leaf(o).flat_names()]
        self._scale = {n: (1e3 if lay.outputs.leaf(n.split("[")[0]).var.units == "W" else 1.0)
                       for n in self._flat}
        man = [n for n, v in model.inputs().items() if v.kind == "manipulated"]
        if not man:
            raise ConfigError(f"`{model.name}` has no manipulated input to schedule.")
        lo, hi = lay.inputs.bounds()
        idx = lay.inputs.indices(man)
        self.u_lo, self.u_hi = lo[idx], hi[idx]
        self.u_units = [lay.inputs.leaf(n.split("[")[0]).var.units
                        for n in (lay.inputs.flat_names()[i] for i in idx)]
        self.u_scale = np.array([1e3 if u == "W" else 1.0 for u in self.u_units])
        self._lp: HighsLP | None = None
        self._pyomo: Any = None
        self._pyomo_solver: Any = None
        self._last: EMPCPlan | None = None
        self._last_t = 0.0  # decision time of the last good plan
        self.decisions = 0
        self.fallbacks = 0
        #: decisions the previous optimal basis answered without HiGHS (a new estimate
        #: that kept every variable within its bounds, :data:`SAME_BASIS`)
        self.same_basis = 0

    # ---- set-up ---------------------------------------------------------------------
    def _limits(self, given: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
        outs = self.model.outputs()
        out: dict[str, tuple[float, float]] = {}
        for name, lim in type(self.model).limits.items():
            if name in outs:
                out[name] = (-np.inf if lim.lower is None else float(lim.lower),
                             np.inf if lim.upper is None else float(lim.upper))
        for name, v in (given or {}).items():
            if name not in outs:
                raise ConfigError(f"limit on {name!r}: not an output of `{self.model.name}`;"
                                  f" its outputs are {', '.join(outs)}.")
            if v is None:
                out.pop(name, None)
                continue
            lo, hi = v
            lo = -np.inf if lo is None else float(lo)
            hi = np.inf if hi is None else float(hi)
            if not lo <= hi:
                raise ConfigError(f"limit on {name!r}: lower {lo} > upper {hi}.")
            out[name] = (lo, hi)
        return out

    def _data(self, affine: AffineSystem, x0: np.ndarray, prices: np.ndarray,
              occupancy: np.ndarray, on_before: bool, run_before: int) -> LPData:
        flat = list(affine.outputs)
        lay = self.model.layout

        def idx(name: str) -> np.ndarray:
            return np.asarray([flat.index(n) for n in lay.outputs.leaf(name).flat_names()])

        comfort = idx(self.comfort.output)
        limited = np.concatenate([idx(n) for n in self.limits]) if self.limits else \
            np.zeros(0, int)
        lim_lo = np.concatenate([np.full(len(idx(n)), v[0]) for n, v in self.limits.items()]) \
            if self.limits else np.zeros(0)
        lim_hi = np.concatenate([np.full(len(idx(n)), v[1]) for n, v in self.limits.items()]) \
            if self.limits else np.zeros(0)
        lo, hi = self.comfort.bands(occupancy, len(comfort))
        # the band holds at the end of each interval and at the start of the next: where
        # occupancy begins the room must already be comfortable, not an interval later
        lo = np.maximum(lo, np.vstack([lo[1:], lo[-1:]]))
        hi = np.minimum(hi, np.vstack([hi[1:], hi[-1:]]))
        staging = None
        if self.staging is not None:
            j = int(np.nonzero(limited == idx(self.staging.output)[0])[0][0])
            upper = lim_hi[j]
            staging = (j, float(self.staging.min_level), float(upper), int(self.staging.min_on),
                       int(self.staging.min_off), bool(on_before), int(run_before))
        return LPData(
            affine=affine, x0=x0, price=prices, band_lo=lo, band_hi=hi,
            u_lo=self.u_lo, u_hi=self.u_hi, lim_lo=lim_lo, lim_hi=lim_hi,
            power=flat.index(lay.outputs.leaf(self.power).flat_names()[0]),
            comfort=comfort, limited=limited, comfort_price=self.comfort.price,
            peak_price=self.peak_price, u_scale=self.u_scale,
            y_scale=np.array([self._scale[n] for n in flat]), dt_h=self.hours,
            staging=staging)

    # ---- one decision -----------------------------------------------------------------
    def plan(self, x: Mapping[str, Any] | np.ndarray, forecast: Mapping[str, Any],
             prices: Any, *, t: float = 0.0, on_before: bool = False,
             run_before: int = 10**6) -> EMPCPlan:
        """Plan the horizon from the state ``x`` under the disturbance ``forecast`` and the
        energy ``prices``.

        Parameters
        ----------
        x : mapping or numpy.ndarray
            Current (estimated) state, by name or flat.
        forecast : mapping
            Disturbances over the horizon: name → constant or ``(horizon,)`` /
            ``(horizon, size)`` values (outdoor temperature [°C], irradiance per zone
            [W/m2], occupancy [-], …).
        prices : float or array
            Energy price per interval [currency per kWh of the power output].
        t : float
            Time of the decision [model time unit] (labels the plan).
        on_before : bool
            With staging: whether the unit was on before ``t``.
        run_before : int
            With staging: intervals it has been in that state.

        Returns
        -------
        EMPCPlan
            The plan; check :attr:`EMPCPlan.ok` (a fallback plan is labelled).
        """
        t0 = time.perf_counter()
        N = self.horizon
        d = forecast_matrix(self.model, forecast, N)
        price = np.asarray(prices, dtype=float)
        if price.ndim > 1 or (price.ndim == 1 and len(price) != N):
            raise ConfigError(f"`prices`: expected one price per interval, {N} values (or "
                              f"one for all) [currency per kWh], got shape {price.shape}.")
        price = np.broadcast_to(price, (N,)).copy()
        if not np.all(np.isfinite(price)):
            raise ConfigError("`prices` must be finite [currency per kWh].")
        lay = self.model.layout
        x0 = lay.states.values(x) if not isinstance(x, np.ndarray) else \
            np.asarray(x, dtype=float)
        # the inputs to linearise at: the last good plan's, from the interval now under
        # way (the horizon moved by the whole intervals elapsed; a re-plan at the same
        # time keeps them where they were)
        u_ref = None
        shift = 0  # whole intervals the horizon moved since the last good plan
        if self._last is not None and self._last.ok:
            k = (t - self._last_t) / self.dt
            moved = int(np.floor(k + 1e-9 * max(1.0, abs(k)))) if k > 0 else 0
            if moved < N:
                u_ref = np.vstack([self._last.u[moved:],
                                   np.repeat(self._last.u[-1:], moved, axis=0)])
            if (self.warm_start and k >= 0.5
                    and abs(k - round(k)) < 1e-9 * max(1.0, abs(k))):
                shift = int(round(k))
        affine = linearise(self.model, x0, d, self.dt, u_ref=u_ref, outputs=self._outputs)
        data = self._data(affine, x0, price, d[:, self._occ_cols], on_before, run_before)
        plan = self._solve(data, t, shift)
        plan.solve_time_s = time.perf_counter() - t0
        self.decisions += 1
        if plan.ok:
            self._last, self._last_t = plan, float(t)
        else:
            self.fallbacks += 1
        return plan

    def _solve(self, data: LPData, t: float, shift: int = 0) -> EMPCPlan:
        first = self._attempt(data, self._first_options(), shift)
        if first[0] == "optimal":
            self.same_basis += first[2] == SAME_BASIS
            return self._plan(data, t, first[1], "optimal", "")
        if first[0] == "failed" and first[3]:
            # a start from the previous basis can fail where a fresh one does not (HiGHS's
            # dual ratio test on an ill-conditioned basis stops with "excessive dual
            # values"): the other simplex from the same basis, then from scratch
            why = f"HiGHS from the previous basis ({_SIMPLEX[WARM_SIMPLEX]}): {first[2]}"
            other = 1 if WARM_SIMPLEX == 4 else 4
            again = self._attempt_again(other)
            if again[0] == "optimal":
                return self._plan(data, t, again[1], "recovered",
                                  why + f"; re-solved from it with the {_SIMPLEX[other]}")
            first = self._attempt(data, {**self._first_options(),
                                         "simplex_scale_strategy": _HIGHS_SCALE}, cold=True)
            if first[0] == "optimal":
                return self._plan(data, t, first[1], "recovered",
                                  why + f"; {_SIMPLEX[other]}: {again[2]}; re-solved from "
                                  "scratch")
            why += f"; {_SIMPLEX[other]}: {again[2]}; from scratch: {first[2]}"
        else:
            why = f"HiGHS: {first[2]}"
        if first[0] == "infeasible":
            why += (" — the hard limits (" + ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi)
                                                   in self.limits.items())
                    + ") and input bounds cannot all hold from this state")
        second = self._attempt(data, self.fallback_options)
        if second[0] == "optimal":
            return self._plan(data, t, second[1], "recovered",
                              why + "; re-solved with the fallback options")
        why += f"; fallback options: {second[2]}"
        return self._fallback(data, t, why)

    def _first_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"solver": "choose", "presolve": "choose"}
        opts["time_limit"] = (float(self.time_limit_s) if self.time_limit_s is not None
                              else np.inf)
        return opts

    def _attempt(self, data: LPData, options: Mapping[str, Any], shift: int = 0, *,
                 cold: bool = False) -> tuple[str, Any, str, bool]:
        """One HiGHS solve: ``(status, solution by block, HiGHS's status text, whether it
        started from a previous basis)``; with ``warm_start`` (and not ``cold``), from the
        previous basis moved ``shift`` intervals forward."""
        if self.backend == "pyomo":
            return (*self._attempt_pyomo(data, options), False)
        import highspy

        warm = self.warm_start and not cold
        if self._lp is None or not self._lp.fits(data):
            self._lp = HighsLP(data)
            warm = False
        else:
            self._lp.update(data, keep_basis=warm)
        lp = self._lp
        if warm and not shift and lp.basis_still_optimal():
            return "optimal", lp.solution(), SAME_BASIS, True
        lp.held = None
        h = lp.h
        if "simplex_strategy" not in options:
            h.setOptionValue("simplex_strategy", WARM_SIMPLEX if warm else 1)
        if "simplex_scale_strategy" not in options:
            h.setOptionValue("simplex_scale_strategy", LP_SCALE)
        for k, v in options.items():
            h.setOptionValue(k, v)
        if not warm:
            h.clearSolver()
        elif shift:
            lp.shifted_basis(shift)
        else:
            lp.restore_basis()
        h.run()
        st = h.getModelStatus()
        text = h.modelStatusToString(st)
        if st == highspy.HighsModelStatus.kOptimal:
            lp.hold()
            return "optimal", lp.solution(), text, warm
        # the next attempt starts clean (no stale basis from a failed run)
        h.clearSolver()
        if st in (highspy.HighsModelStatus.kInfeasible,
                  highspy.HighsModelStatus.kUnboundedOrInfeasible):
            return "infeasible", None, text, warm
        return "failed", None, text, warm

    def _attempt_again(self, strategy: int) -> tuple[str, Any, str]:
        """HiGHS's ``simplex_strategy`` (1 dual, 4 primal) from the basis the failed warm
        start set (HiGHS's data as it is): ``(status, solution by block, status text)``."""
        import highspy

        lp = self._lp
        if lp is None or lp.started is None:
            return "failed", None, "no basis to start from"
        h = lp.h
        h.setOptionValue("simplex_strategy", strategy)
        h.setOptionValue("simplex_scale_strategy", _HIGHS_SCALE)  # the retry: HiGHS's own
        lp.set_basis(*lp.started)
        lp.held = None
        h.run()
        st = h.getModelStatus()
        text = h.modelStatusToString(st)
        if st == highspy.HighsModelStatus.kOptimal:
            lp.hold()
            return "optimal", lp.solution(), text
        h.clearSolver()
        return "failed", None, text

    def _attempt_pyomo(self, data: LPData, options: Mapping[str, Any]) -> tuple[str, Any, str]:
        import pyomo.environ as pyo
        from pyomo.contrib.appsi.base import TerminationCondition
        from pyomo.contrib.appsi.solvers.highs import Highs

        if self._pyomo is None or self._pyomo_data_shape != _shape(data):
            self._pyomo = build_pyomo(data)
            self._pyomo_data_shape = _shape(data)
            self._pyomo_solver = Highs()
            self._pyomo_solver.config.load_solution = False
        else:
            update_pyomo(self._pyomo, data)
        s = self._pyomo_solver
        s.highs_options = {k: v for k, v in options.items() if k != "time_limit"}
        tl = options.get("time_limit", np.inf)
        s.config.time_limit = None if not np.isfinite(tl) else float(tl)
        res = s.solve(self._pyomo)
        tc = res.termination_condition
        if tc == TerminationCondition.optimal:
            res.solution_loader.load_vars()
            m = self._pyomo
            a = data.affine
            N, nx, nu, nz = a.N, a.A.shape[1], a.B.shape[2], len(data.comfort)
            sol = {"x": np.array([[pyo.value(m.x[k, i]) for i in range(nx)]
                                  for k in range(N + 1)]),
                   "u": np.array([[pyo.value(m.u[k, j]) for j in range(nu)]
                                  for k in range(N)]),
                   "p": np.array([pyo.value(m.p[k]) for k in range(N)]),
                   "s_lo": np.array([[pyo.value(m.s_lo[k, z]) for z in range(nz)]
                                     for k in range(N)]).reshape(N, nz),
                   "s_hi": np.array([[pyo.value(m.s_hi[k, z]) for z in range(nz)]
                                     for k in range(N)]).reshape(N, nz)}
            return "optimal", sol, str(tc)
        if tc in (TerminationCondition.infeasible,
                  TerminationCondition.infeasibleOrUnbounded):
            return "infeasible", None, str(tc)
        return "failed", None, str(tc)

    def _plan(self, data: LPData, t: float, sol: dict, status: str, message: str) -> EMPCPlan:
        a = data.affine
        u = sol["u"] * data.u_scale[None, :]
        u = np.clip(u, data.u_lo, data.u_hi)          # the envelope, exactly
        p_kw = sol["p"]      # LP units: kW when the priced output is declared in W
        energy = float(np.sum(p_kw) * data.dt_h)
        cost = float(np.sum(data.price * p_kw) * data.dt_h)
        if data.peak_price > 0:
            cost += data.peak_price * float(np.max(p_kw))
        disc = float(np.sum(sol["s_lo"] + sol["s_hi"]) * data.dt_h)
        ysz = data.y_scale[data.comfort]
        bands = (data.band_lo, data.band_hi, sol["s_lo"] * ysz, sol["s_hi"] * ysz,
                 data.comfort)
        return EMPCPlan(status=status, cost=cost, discomfort=disc, x=sol["x"], u=u,
                        bands=bands,
                        y=sol["p"] * data.y_scale[data.power],
                        times=t + self.dt * np.arange(a.N + 1), affine=a, message=message,
                        active=self._active(data, sol), energy=energy, power=self.power)

    def _active(self, data: LPData, sol: dict) -> list[str]:
        """Hard output limits at their bounds (within 1e-6 of the LP units)."""
        out = []
        s = data.scaled()
        a = data.affine
        for q, o in enumerate(data.limited):
            y = (np.einsum("kj,kj->k", s["C"][:, o, :], sol["x"][1:])
                 + np.einsum("kj,kj->k", s["D"][:, o, :], sol["u"]) + s["e"][:, o])
            y = y * data.y_scale[o]
            for bound, val in (("upper", data.lim_hi[q]), ("lower", data.lim_lo[q])):
                if np.isfinite(val):
                    hit = np.nonzero(np.abs(y - val) <= 1e-6 * max(1.0, abs(val)))[0]
                    if len(hit):
                        out.append(f"{a.outputs[o]} at its {bound} limit {val:g} in "
                                   f"{len(hit)} of {a.N} intervals")
        return out

    def _fallback(self, data: LPData, t: float, why: str) -> EMPCPlan:
        a = data.affine
        if self._last is not None and self._last.ok and len(self._last.u) > 1:
            u = np.vstack([self._last.u[1:], self._last.u[-1:]])
            src = "the rest of the last good plan"
        else:
            u = np.clip(np.broadcast_to(a.u_ref[:1], a.B.shape[::2]), data.u_lo, data.u_hi)
            u = np.asarray(u, dtype=float).copy()
            src = "the inputs' reference values (no earlier plan)"
        x = a.simulate(data.x0, u)
        return EMPCPlan(status="fallback", cost=float("nan"), discomfort=float("nan"), x=x,
                        u=u, y=np.full(a.N, np.nan), times=t + self.dt * np.arange(a.N + 1),
                        affine=a, message=f"{why}; using {src}", power=self.power)

    # ---- the operator's view ----------------------------------------------------------
    def recommend(self, t: float, x: Mapping[str, Any] | np.ndarray,
                  forecast: Mapping[str, Any], prices: Any, *,
                  baseline: Callable[[EMPCPlan], tuple[float, float]] | None = None,
                  **kw: Any) -> Recommendation:
        """Plan and say what to set now: every manipulated input for the next interval
        (inside its bounds), each zone's planned temperature at its end, and the plant's
        planned power and limited outputs (``"P_el plan"``, ``"load plan"``).

        Parameters
        ----------
        t : float
            Decision time [model time unit].
        x, forecast, prices
            As for :meth:`plan`.
        baseline : callable, optional
            ``baseline(plan) -> (cost [currency], discomfort [K·h])`` over the same horizon
            (e.g. :func:`~processtwin.solvers.building_loop.thermostat_baseline`); gives the
            recommendation's ``benefit`` (the saving).
        **kw
            Passed to :meth:`plan` (``on_before``, ``run_before``).

        Returns
        -------
        Recommendation
            ``expected`` is the planned cost [currency]; ``benefit`` the baseline's cost
            minus it (NaN without a baseline or on a fallback).
        """
        plan = self.plan(x, forecast, prices, t=t, **kw)
        a = plan.affine
        setpoints = {n: (float(v), u) for n, v, u in zip(a.controls, plan.u[0], self.u_units,
                                                         strict=True)}
        lay = self.model.layout
        units = lay.outputs.leaf(self.comfort.output).var.units
        for n in lay.outputs.leaf(self.comfort.output).flat_names():
            o = a.outputs.index(n)
            y = float(a.C[0, o] @ plan.x[1] + a.D[0, o] @ plan.u[0] + a.e[0, o])
            setpoints[f"{n} target"] = (y, units)
        if plan.ok:   # the plant's planned operation over the next interval
            for name in dict.fromkeys([self.power, *self.limits]):
                for n in lay.outputs.leaf(name).flat_names():
                    o = a.outputs.index(n)
                    y = float(a.C[0, o] @ (plan.x[0] + plan.x[1]) / 2 + a.D[0, o] @ plan.u[0]
                              + a.e[0, o])
                    setpoints[f"{n} plan"] = (y, lay.outputs.leaf(name).var.units)
        benefit = float("nan")
        ds = plan.dataset(self.model)
        if baseline is not None and plan.ok:
            b_cost, b_disc = baseline(plan)
            benefit = b_cost - plan.cost
            ds.attrs.update(baseline_cost=b_cost, baseline_discomfort_Kh=b_disc)
        return Recommendation(
            t=float(t), setpoints=setpoints, plan=ds, expected=plan.cost, benefit=benefit,
            objective=f"energy cost over the next {a.N} intervals [currency]"
                      f" (discomfort {plan.discomfort:.3g} K·h)",
            active=plan.active, status=plan.status, fallback=not plan.ok,
            message=plan.message, solve_time_s=plan.solve_time_s,
            versus="saves {:.3g} against the thermostat")


#: HiGHS ``simplex_strategy`` of a warm start: the primal simplex. From the shifted basis
#: it pivots less than the dual on a moved horizon (10-zone week, ten steps: held forecast
#: median 44 against 104 ms, fresh forecast 234 against 708 ms; 1 zone 2.8 against 3.2 and
#: 4.9 against 4.3 ms; a re-plan from a new estimate the same)
WARM_SIMPLEX = 4
#: HiGHS's status text of a re-plan the previous optimal basis answered without HiGHS
#: (:meth:`HighsLP.basis_still_optimal`: the new state kept every variable within its
#: bounds)
SAME_BASIS = "Optimal (previous basis, moved to the new state)"
#: HiGHS ``simplex_scale_strategy`` of every first attempt, warm or from scratch: none
#: (0). The LP is already in balanced units (kW, K, kWh); HiGHS's scaling of a changed
#: model costs more than it saves there. Paired runs (three seeds, ten steps each,
#: medians): 10-zone week held forecast 36–39 against 42–66 ms, fresh forecast 263–356
#: against 287–478 ms; 1 zone and a 3-zone day alike within noise; optima alike to 4e-8.
#: A solve from scratch runs unscaled too: the basis of a scaled solve, re-run unscaled,
#: cost the first warm re-plan 800–2,100 pivots (250–420 ms at 10 zones, where the next
#: took 3–9 ms); from scratch either way 1.1–1.2 s, the 1-zone year 1.5–1.6 s. The
#: retries after a failure use HiGHS's default.
LP_SCALE = 0
_HIGHS_SCALE = 2  # HiGHS's default (equilibration)
_SIMPLEX = {1: "dual simplex", 4: "primal simplex"}


def _dist_names(model: Model) -> list[str]:
    lay = model.layout
    names = [n for n, v in model.inputs().items() if v.kind != "manipulated"]
    flat = lay.inputs.flat_names()
    return [flat[i] for i in lay.inputs.indices(names)]


def _shape(d: LPData) -> tuple:
    s = d.scaled()
    pattern = tuple(np.any(s[k] != 0.0, axis=0).tobytes() for k in ("A", "B", "C", "D"))
    return (pattern, d.affine.A.shape, d.affine.B.shape, d.affine.C.shape, d.peak_price > 0,
            None if d.staging is None else d.staging[:5], tuple(np.isfinite(d.lim_lo)),
            tuple(np.isfinite(d.lim_hi)))
