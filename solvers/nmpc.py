"""Shrinking- and receding-horizon NMPC for any model, and the operator-facing
:class:`Recommendation`."""

from __future__ import annotations

import time as _time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from processtwin.errors import ConfigError, SolverError
from processtwin.goals import Limit
from processtwin.model import Model

from .golden import merged_limits, resolve_objective, set_objective
from .ocp import OCP, OCPResult

__all__ = ["BatchNMPC", "Recommendation"]


@dataclass
class Recommendation:
    """What the twin tells the operator to do next, and why.

    Attributes
    ----------
    t : float
        Decision time [model time unit].
    setpoints : dict
        Manipulated input → ``(value, units)`` to apply from ``t``; always inside the
        actuator envelope.
    plan : xarray.Dataset or None
        Planned trajectory over the rest of the horizon.
    expected : float
        Predicted batch outcome under the plan (objective units, see ``objective``).
    benefit : float
        ``expected`` minus the outcome of holding the current setpoints, both re-simulated
        with the accurate simulator; NaN when holding would break a limit (then it is
        not an alternative) or on a fallback.
    objective : str
        Description of the outcome with units.
    active : list of str
        Constraints at their bounds in the plan.
    status : str
        Solver status (IPOPT's return status, ``"failed"`` on a fallback).
    fallback : bool
        True when the solver failed or missed its deadline and the setpoints come from
        the last good plan (or hold the current feed when there is none).
    message : str
        Why a fallback happened (empty otherwise).
    solve_time_s : float
        Wall time of the decision: setting up and solving the OCP and predicting the
        outcome of holding the feed [s].
    hold_violations : list of str
        Constraints that holding the current setpoints would break, with the worst value.
    versus : str
        How ``benefit`` reads, a format with one field: ``"{:+.3g} vs holding the current
        setpoints"``; for the economic MPC ``"saves {:.3g} against the thermostat"`` (its
        ``benefit`` is the thermostat's cost minus the plan's).
    """

    t: float
    setpoints: dict[str, tuple[float, str]]
    plan: xr.Dataset | None
    expected: float
    benefit: float
    objective: str
    active: list[str] = field(default_factory=list)
    status: str = ""
    fallback: bool = False
    message: str = ""
    solve_time_s: float = 0.0
    hold_violations: list[str] = field(default_factory=list)
    versus: str = "{:+.3g} vs holding the current setpoints"

    @property
    def data(self) -> xr.Dataset | None:
        """The planned trajectory (the same Dataset as :attr:`plan`; ``None`` when no plan
        exists yet)."""
        return self.plan

    @property
    def stats(self) -> dict:
        """``status``, ``fallback``, ``solve_time_s`` [s] and the active constraints."""
        return {"status": self.status, "fallback": self.fallback,
                "solve_time_s": self.solve_time_s, "active": list(self.active)}

    def __str__(self) -> str:
        sp = ", ".join(f"{k} = {_fmt(v)} {u}" for k, (v, u) in self.setpoints.items())
        head = "FALLBACK, not an optimised plan: " if self.fallback else ""
        lines = [f"t = {self.t:g}: {head}set {sp}"]
        if np.isfinite(self.benefit):
            lines.append(f"  expected {self.objective}: {self.expected:.4g} "
                         f"({self.versus.format(self.benefit)})")
        elif "holding" in self.versus:
            lines.append(f"  expected {self.objective}: {self.expected:.4g} (holding the "
                         "current setpoints is not an allowed alternative)")
        else:
            lines.append(f"  expected {self.objective}: {self.expected:.4g}")
        if self.hold_violations:
            lines.append("  holding the current setpoints would violate "
                         + "; ".join(self.hold_violations))
        if self.active:
            lines.append("  active constraints: "
                         + ", ".join(dict.fromkeys(a.split(" at ")[0] for a in self.active)))
        lines.append(f"  solver: {self.status}" + (f" — FALLBACK: {self.message}"
                                                   if self.fallback else ""))
        return "\n".join(lines)


class BatchNMPC:
    """Shrinking- or receding-horizon NMPC of any model: at each decision re-optimise its
    manipulated inputs from the current estimate, warm-started from the previous plan.

    Parameters
    ----------
    model : Model
        Nominal model; per decision, estimated parameters override it.
    batch_end : float
        End of the batch [model time unit] (the shrinking horizon).
    interval : float
        Control interval [model time unit] at the first decision. The shrinking horizon
        keeps that number of intervals and shortens them as the batch proceeds (one NLP,
        warm-started); the receding horizon keeps their length.
    objective : str or Objective, optional
        What to optimise: a name the model declares, a text ``"max <expr>"``, or an
        :class:`~processtwin.goals.Objective` (default: the model's first).
    limits : mapping, optional
        Changes to the model's operating limits (name → ``(lower, upper)``, a
        :class:`~processtwin.goals.Limit` or ``None``), as for
        :func:`~processtwin.solvers.golden_batch`.
    du_weight : float or mapping, optional
        Weight of squared control moves [objective units per (input units)²] (default
        the objective's own).
    method : {"collocation", "shooting"}
        Transcription of the OCP (see :class:`~processtwin.solvers.OCP`).
    deadline_s : float, optional
        Wall-time limit of one solve [s]; past it the last good plan is used.
    horizon : float, optional
        Receding instead of shrinking horizon: always plan this far ahead (then
        ``batch_end`` is ignored). The NLP is built once and re-solved with the new state,
        parameters and previous inputs as NLP parameters, warm-started (primal and dual).
    """

    def __init__(self, model: Model, *, batch_end: float, interval: float,
                 objective: Any = None, limits: Mapping[str, Any] | None = None,
                 du_weight: Any = None, method: str = "collocation",
                 deadline_s: float | None = None, horizon: float | None = None) -> None:
        self.model, self.batch_end, self.interval = model, float(batch_end), float(interval)
        if not (np.isfinite(self.interval) and self.interval > 0):
            raise ConfigError(f"`interval` must be a time > 0 [{model.time_unit}], got "
                              f"{interval!r}.")
        self.objective = resolve_objective(model, objective)
        self.limits: dict[str, Limit] = merged_limits(model, limits)
        self.controls = tuple(lf.name for lf in model.layout.inputs.leaves
                              if lf.var.kind == "manipulated")
        if not self.controls:
            raise ConfigError(f"model `{model.name}` has no manipulated input to optimise.")
        self.du_weight, self.method, self.deadline_s = du_weight, method, deadline_s
        self.horizon = horizon
        self.last: OCPResult | None = None
        #: States of an estimate projected onto their physical bounds (counted, warned).
        self.projections = 0
        self._last_t: float | None = None
        self._ocps: dict[tuple, OCP] = {}
        self._n_shrink: int | None = None
        self._last_ocp: OCP | None = None

    def _project(self, x: Mapping[str, Any]) -> dict[str, Any]:
        """An estimate a hair outside a state's physical bound (numerical noise) is put on
        it, counted and warned about; the model is defined only inside."""
        states = self.model.states()
        out = {}
        for k, v in x.items():
            a = np.asarray(v, dtype=float)
            lo, hi = states[k].bounds if k in states else (None, None)
            b = np.clip(a, -np.inf if lo is None else lo, np.inf if hi is None else hi)
            if not np.array_equal(a, b):
                self.projections += 1
                warnings.warn(f"estimate of `{k}` ({a.min():.3g}) is outside its physical "
                              f"bounds {states[k].bounds}: projected onto them "
                              f"({self.projections} so far).", RuntimeWarning, stacklevel=3)
            out[k] = float(b) if b.ndim == 0 else b
        return out

    def _ocp(self, t: float, x: Mapping[str, Any], params: Mapping[str, float],
             u_now: Mapping[str, Any]) -> OCP:
        """The OCP of this decision. One NLP per number of intervals and set of estimated
        parameters: the state, parameters, previous inputs and — for the shrinking horizon,
        which keeps the number of intervals of the first decision and shortens them — the
        horizon length are NLP parameters, so IPOPT is warm-started in primal and dual."""
        span = self.horizon if self.horizon is not None else self.batch_end - t
        if not span > 0:
            raise ConfigError(f"decision time {t:g} is at or after the batch end "
                              f"{self.batch_end:g}.")
        if self.horizon is None and not self.model.is_discrete:
            if self._n_shrink is None:
                self._n_shrink = max(1, int(round(span / self.interval)))
            n = self._n_shrink
        else:
            n = max(1, int(round(span / self.interval)))
        key = (n, tuple(sorted(params)))
        ocp = self._ocps.get(key)
        if ocp is None:
            ocp = OCP(self.model, span, n, controls=self.controls, method=self.method,
                      runtime=key[1])
            set_objective(ocp, self.objective, self.du_weight)
            self._ocps[key] = ocp
        ocp.set_horizon(span)
        ocp.initial_state(**x)
        for k, v in params.items():
            ocp.parameter(k, v)
        model = ocp.interval_model_numeric()
        lay = self.model.layout
        for name, lim in self.limits.items():
            lo, hi = lim.values(model)
            if name in ocp.control_slots:
                ocp.bound_input(name, lo, hi, previous=u_now[name])
            elif name in lay.states and not lim.terminal and name in x:
                # never tighter than where the batch already is
                now = np.asarray(x[name], float)
                lo = None if lo is None else np.minimum(lo, now).min()
                hi = None if hi is None else np.maximum(hi, now).max()
                ocp.constrain(name, lo, hi)
            elif name in lay.states or name in lay.outputs:
                ocp.constrain(name, lo, hi, terminal=lim.terminal)
        for c in self.controls:
            if c not in self.limits:
                ocp.bound_input(c, previous=u_now[c])
        return ocp

    def _u_now(self, u_now: Any) -> dict[str, Any]:
        if u_now is None:
            u_now = {}
        elif not isinstance(u_now, Mapping):
            if len(self.controls) != 1:
                raise ConfigError(f"`u_now` must map each control ({', '.join(self.controls)})"
                                  " to the value applied now.")
            u_now = {self.controls[0]: u_now}
        unknown = [k for k in u_now if k not in self.controls]
        if unknown:
            raise ConfigError(f"`u_now` names {', '.join(unknown)}, which are not controls "
                              f"({', '.join(self.controls)}).")
        inputs = self.model.inputs()
        return {c: u_now.get(c, inputs[c].default) for c in self.controls}

    def recommend(self, t: float, x: Mapping[str, Any], *,
                  params: Mapping[str, float] | None = None,
                  u_now: Any = None) -> Recommendation:
        """Recommend the manipulated inputs from time ``t`` given the state estimate ``x``
        (and estimated parameters).

        Parameters
        ----------
        t : float
            Decision time [model time unit].
        x : mapping
            State estimate by name [state units]; a value a hair outside its physical
            bound is projected onto it (counted in :attr:`projections`, warned).
        params : mapping, optional
            Estimated parameters [their units].
        u_now : float or mapping, optional
            The inputs applied now (a number for a single control) [input units]: start
            of the rate limits and move penalties, and the "hold" alternative.

        Returns
        -------
        Recommendation
        """
        obj = self.objective
        inputs = self.model.inputs()
        start = _time.perf_counter()
        u_now = self._u_now(u_now)
        x = self._project(x)
        ocp = self._ocp(t, x, params or {}, u_now)
        warm = self.last if ocp is self._last_ocp else None
        try:
            res = ocp.solve(tol=1e-8, max_wall_time=self.deadline_s, warm_start=warm)
        except SolverError as exc:
            return self._fallback(t, ocp, u_now, str(exc), _time.perf_counter() - start)
        self.last, self._last_t, self._last_ocp = res, t, ocp
        setpoints = {c: (_first(res.plan[c].values), inputs[c].units) for c in self.controls}
        expected = self._outcome(ocp, res.plan)
        hold, violations = self._hold_outcome(ocp, u_now)
        return Recommendation(t, setpoints, res.plan, expected,
                              float("nan") if hold is None else expected - hold,
                              _described(obj), res.active,
                              f"{res.status} ({res.solver_status})",
                              solve_time_s=_time.perf_counter() - start,
                              hold_violations=violations)

    def _outcome(self, ocp: OCP, plan: Any, r: dict | None = None) -> float:
        """The objective's value (its own sign, no move penalty) on the accurate
        re-simulation of a plan."""
        from .check import objective_on, resimulate

        p = ocp.p_values()
        r = resimulate(ocp, plan, p) if r is None else r
        T = float(plan["time"].values[-1] - plan["time"].values[0])
        J = objective_on(ocp, r, T)
        return -J if self.objective.sense == "max" else J

    def _hold_outcome(self, ocp: OCP, u_now: Mapping[str, Any]
                      ) -> tuple[float | None, list[str]]:
        """The outcome if the current inputs are held to the end — re-simulated with the
        accurate simulator — and the constraints that would break; ``None`` when holding
        breaks one (then it is not an allowed alternative)."""
        from .check import resimulate, violations_of

        plan = ocp._last_result.data.copy()
        for c in self.controls:
            plan[c] = plan[c] * 0.0 + u_now[c]
        p = ocp.p_values()
        r = resimulate(ocp, plan, p)
        units = {**{k: v.units for k, v in self.model.states().items()},
                 **{k: v.units for k, v in self.model.outputs().items()}}
        violations = []
        for label, v in violations_of(ocp, plan, p, r).items():
            if v > 1e-6 * max(1.0, abs(_bound_of(label))):
                name = label.split("`")[1].split("[")[0]
                violations.append(f"{label} {units.get(name, '')} (by {v:.4g})".replace(
                    "  ", " "))
        return (None if violations else self._outcome(ocp, plan, r)), violations

    def _fallback(self, t: float, ocp: OCP, u_now: Mapping[str, Any], why: str,
                  elapsed: float) -> Recommendation:
        inputs = self.model.inputs()
        obj = self.objective
        if self.last is None or self._last_t is None:
            setpoints = {c: (_clip(ocp, c, u_now[c]), inputs[c].units) for c in self.controls}
            plan, expected = None, float("nan")
            why = f"{why} No earlier plan: holding the current inputs."
        else:
            plan = self.last.plan
            k = int(np.clip(np.searchsorted(plan["time"].values + self._last_t, t,
                                            side="right") - 1, 0, plan.sizes["time"] - 1))
            setpoints = {c: (_clip(ocp, c, plan[c].values[k]), inputs[c].units)
                         for c in self.controls}
            expected = float("nan")
            why = f"{why} Following the last good plan (from t = {self._last_t:g})."
        return Recommendation(t, setpoints, plan, expected, float("nan"),
                              _described(obj), [], "failed", True, why, elapsed)


def _described(obj: Any) -> str:
    return obj.doc + (f" [{obj.units}]" if obj.units else "")


def _fmt(v: Any) -> str:
    a = np.asarray(v, float)
    return f"{float(a):.4g}" if a.ndim == 0 else "[" + ", ".join(f"{e:.4g}" for e in a) + "]"


def _first(v: Any) -> Any:
    a = np.asarray(v, float)[0]
    return float(a) if a.ndim == 0 else a


def _clip(ocp: OCP, c: str, v: Any) -> Any:
    from .transcription import control_bounds

    lo, hi = control_bounds(ocp)
    sl = ocp.control_slots[c]
    a = np.clip(np.asarray(v, float), lo[sl], hi[sl]) if sl.stop - sl.start > 1 else \
        float(np.clip(float(np.asarray(v, float).ravel()[0]), lo[sl][0], hi[sl][0]))
    return a


def _bound_of(label: str) -> float:
    try:
        return float(label.split(" ")[2])
    except (IndexError, ValueError):
        return 1.0
