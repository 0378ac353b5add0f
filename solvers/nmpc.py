"""Shrinking-horizon NMPC for batches and the operator-facing :class:`Recommendation`."""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from processtwin.errors import ConfigError, SolverError
from processtwin.model import Model
from processtwin.ops import numpy_ops

from .golden import OBJECTIVES
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
        sp = ", ".join(f"{k} = {v:.4g} {u}" for k, (v, u) in self.setpoints.items())
        head = "FALLBACK, not an optimised plan: " if self.fallback else ""
        lines = [f"t = {self.t:g}: {head}set {sp}"]
        if np.isfinite(self.benefit):
            lines.append(f"  expected {self.objective}: {self.expected:.4g} "
                         f"({self.benefit:+.3g} vs holding the current setpoints)")
        else:
            lines.append(f"  expected {self.objective}: {self.expected:.4g} (holding the "
                         "current setpoints is not an allowed alternative)")
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
    """Shrinking-horizon NMPC of a fed batch (feed ``F``): at each decision re-optimise the
    rest of the batch from the current estimate, warm-started from the previous plan.

    Parameters
    ----------
    model : Model
        Nominal model; per decision, estimated parameters override it.
    batch_end : float
        End of the batch [model time unit].
    interval : float
        Control interval [model time unit] at the first decision. The shrinking horizon
        keeps that number of intervals and shortens them as the batch proceeds (one NLP,
        warm-started); the receding horizon keeps their length.
    objective : {"product", "product_mass"}
        Batch outcome to maximise (see :data:`processtwin.solvers.OBJECTIVES`).
    F_max, X_max, V_max : float
        Pump capacity [L/h], biomass path limit [g/L], final volume limit [L].
    du_weight : float
        Weight of the squared feed moves between intervals in the objective
        [objective units per (L/h)²].
    method : {"collocation", "shooting"}
        Transcription of the OCP (see :class:`~processtwin.solvers.OCP`).
    deadline_s : float, optional
        Wall-time limit of one solve [s]; past it the last good plan is used.
    horizon : float, optional
        Receding instead of shrinking horizon: always plan this far ahead (then
        ``batch_end`` is ignored). The NLP is built once and re-solved with the new state,
        parameters and previous feed as NLP parameters, warm-started (primal and dual).
    """

    def __init__(self, model: Model, *, batch_end: float, interval: float,
                 objective: str = "product", F_max: float = 0.2, X_max: float | None = 3.7,
                 V_max: float | None = None, du_weight: float = 1.0,
                 method: str = "collocation", deadline_s: float | None = None,
                 horizon: float | None = None) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective `{objective}`.")
        self.model, self.batch_end, self.interval = model, float(batch_end), float(interval)
        self.objective = objective
        self.F_max, self.X_max, self.V_max = F_max, X_max, V_max
        self.du_weight, self.method, self.deadline_s = du_weight, method, deadline_s
        self.horizon = horizon
        self.last: OCPResult | None = None
        self._last_t: float | None = None
        self._ocps: dict[tuple, OCP] = {}
        self._n_shrink: int | None = None
        self._last_ocp: OCP | None = None

    def _ocp(self, t: float, x: Mapping[str, float], params: Mapping[str, float],
             u_now: float) -> OCP:
        """The OCP of this decision. One NLP per number of intervals and set of estimated
        parameters: the state, parameters, previous feed and — for the shrinking horizon,
        which keeps the number of intervals of the first decision and shortens them — the
        horizon length are NLP parameters, so IPOPT is warm-started in primal and dual."""
        span = self.horizon if self.horizon is not None else self.batch_end - t
        if not span > 0:
            raise ConfigError(f"decision time {t:g} is at or after the batch end "
                              f"{self.batch_end:g}.")
        if self.horizon is None:
            if self._n_shrink is None:
                self._n_shrink = max(1, int(round(span / self.interval)))
            n = self._n_shrink
        else:
            n = max(1, int(round(span / self.interval)))
        key = (n, tuple(sorted(params)))
        ocp = self._ocps.get(key)
        if ocp is None:
            ocp = OCP(self.model, span, n, controls=("F",), method=self.method,
                      runtime=key[1])
            if self.V_max is not None:
                ocp.constrain("V", upper=self.V_max, terminal=True)
            outcome = OBJECTIVES[self.objective][1]
            ocp.minimise(mayer=lambda xx: -outcome(xx), du_weight={"F": self.du_weight})
            self._ocps[key] = ocp
        ocp.set_horizon(span)
        lo = {k: v.bounds[0] for k, v in self.model.states().items()}
        ocp.initial_state(**{k: max(float(v), lo[k]) if lo[k] is not None else float(v)
                             for k, v in x.items()})
        for k, v in params.items():
            ocp.parameter(k, v)
        ocp.bound_input("F", 0.0, self.F_max, previous=u_now)
        if self.X_max is not None:  # never tighter than where the batch already is
            ocp.constrain("X", upper=max(self.X_max, float(x.get("X", 0.0))))
        return ocp

    def recommend(self, t: float, x: Mapping[str, float], *,
                  params: Mapping[str, float] | None = None,
                  u_now: float = 0.0) -> Recommendation:
        """Recommend the feed from time ``t`` given the state estimate ``x`` (and estimated
        parameters), with ``u_now`` the feed being applied [L/h]."""
        units = self.model.inputs()["F"].units
        doc = OBJECTIVES[self.objective][0]
        start = _time.perf_counter()
        ocp = self._ocp(t, x, params or {}, u_now)
        warm = self.last if ocp is self._last_ocp else None
        try:
            res = ocp.solve(tol=1e-8, max_wall_time=self.deadline_s, warm_start=warm)
        except SolverError as exc:
            return self._fallback(t, u_now, units, doc, str(exc),
                                  _time.perf_counter() - start)
        self.last, self._last_t, self._last_ocp = res, t, ocp
        F0 = float(np.clip(res.plan["F"].values[0], 0.0, self.F_max))
        expected = float(OBJECTIVES[self.objective][1](res.plan.isel(time=-1)))
        hold, violations = self._hold_outcome(ocp, x, u_now)
        return Recommendation(t, {"F": (F0, units)}, res.plan, expected,
                              float("nan") if hold is None else expected - hold,
                              doc, res.active, f"{res.status} ({res.solver_status})",
                              solve_time_s=_time.perf_counter() - start,
                              hold_violations=violations)

    def _hold_outcome(self, ocp: OCP, x: Mapping[str, float], u_now: float
                      ) -> tuple[float | None, list[str]]:
        """Predicted outcome if the current feed is held to the end — re-simulated with
        the accurate simulator — and the constraints that would break; the outcome is
        ``None`` when holding breaks a limit (no allowed alternative to compare with)."""
        from .check import resimulate, violations_of

        plan = ocp._last_plan.copy()
        plan["F"] = plan["F"] * 0.0 + float(np.clip(u_now, 0.0, self.F_max))
        p = ocp.p_values()
        r = resimulate(ocp, plan, p)
        last = ocp.model.layout.states.unravel(r["X"][-1], numpy_ops)
        viol = violations_of(ocp, plan, p, r)
        units = ocp.model.states()
        violations = []
        X = r["X"][:, ocp.model.layout.states.leaf("X").start]
        if self.X_max is not None and X.max() > self.X_max * (1 + 1e-6):
            violations.append(f"`X` ≤ {self.X_max:g} {units['X'].units} (up to "
                              f"{X.max():.4g})")
        if self.V_max is not None and viol.get(f"`V` ≤ {self.V_max:g} at end", 0.0) > 1e-9:
            violations.append(f"`V` ≤ {self.V_max:g} {units['V'].units} at the end "
                              f"({last.V:.4g})")
        value = float(OBJECTIVES[self.objective][1](last))
        return (None if violations else value), violations

    def _fallback(self, t: float, u_now: float, units: str, doc: str, why: str,
                  elapsed: float) -> Recommendation:
        if self.last is None or self._last_t is None:
            F0, plan, expected = float(np.clip(u_now, 0.0, self.F_max)), None, float("nan")
            why = f"{why} No earlier plan: holding the current feed."
        else:
            plan = self.last.plan
            k = int(np.clip(np.searchsorted(plan["time"].values + self._last_t, t,
                                            side="right") - 1, 0, plan.sizes["time"] - 1))
            F0 = float(np.clip(plan["F"].values[k], 0.0, self.F_max))
            expected = float(OBJECTIVES[self.objective][1](plan.isel(time=-1)))
        return Recommendation(t, {"F": (F0, units)}, plan, expected, float("nan"), doc, [],
                              "failed", True, why, elapsed)
