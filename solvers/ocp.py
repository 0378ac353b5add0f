"""Direct transcription of optimal-control problems from a processtwin model (CasADi + IPOPT).

The model's ``rhs`` is built as CasADi SX through ``casadi_ops`` — the same equations the
JAX simulator and the EKF use. Two transcriptions: direct multiple shooting (RK4 sub-steps
per control interval) and orthogonal collocation on finite elements (Radau IIA points).
IPOPT (bundled with casadi) solves with exact derivatives. CasADi's ``highs`` plugin is
never loaded here (it clashes with highspy; see DESIGN.md).
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
from processtwin.model import Model
from processtwin.ops import casadi_ops

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
    plan : xarray.Dataset
        States and outputs at the nodes (``time``, N+1), controls per interval (held from
        each node, last value repeated at the final node), slacks of soft constraints.
    active : list of str
        Constraints at their bound (``name`` at time ``t``) at the optimum.
    stats : dict
        Wall time, iterations.
    """

    success: bool
    status: str
    objective: float
    plan: xr.Dataset
    active: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    w_opt: Any = None
    lam_g: Any = None
    lam_x: Any = None


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
        inputs = model.inputs()
        if controls is None:
            controls = tuple(k for k, v in inputs.items() if v.kind == "manipulated")
        for c in controls:
            if c not in inputs:
                raise ConfigError(f"unknown control `{c}`" + suggest(c, inputs))
        self.model, self.T, self.N = model, float(horizon), int(intervals)
        self.h = self.T / self.N
        self.controls = tuple(controls)
        self.method, self.degree, self.substeps = method, int(degree), int(substeps)
        self.M = self.N if control_horizon is None else max(1, min(int(control_horizon),
                                                                  self.N))
        self.states = tuple(model.states())
        self.outputs = tuple(model.outputs())
        # problem data, filled by the set-up methods below
        self.x0: dict[str, float] = {}
        self.u_bounds: dict[str, Bounds] = {}
        self.rate: dict[str, float] = {}
        self.u_prev: dict[str, float] = {}
        self.path: dict[str, tuple[Bounds, float | None]] = {}
        self.terminal: dict[str, tuple[Bounds, float | None]] = {}
        self.disturbances: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.mayer: Callable[..., Any] | None = None
        self.stage: Callable[..., Any] | None = None
        self.du_weight: dict[str, float] = {}
        # parameters that are NLP parameters (changed between solves without rebuilding)
        params = model.parameters()
        for k in runtime:
            if k not in params:
                raise ConfigError(f"unknown runtime parameter `{k}`" + suggest(k, params))
        self.runtime = tuple(runtime)
        self.runtime_values = {k: float(getattr(model, k)) for k in self.runtime}
        self._P: Any = None
        self._steps: list[Any] | None = None
        self._compiled: dict[bool, Any] = {}
        self._prob: dict[str, Any] | None = None
        self._last_w: np.ndarray | None = None

    # ---- problem set-up (chainable) -------------------------------------------------
    def _check_name(self, name: str, where: tuple[str, ...], what: str) -> None:
        if name not in where:
            raise ConfigError(f"unknown {what} `{name}`" + suggest(name, where))

    def initial_state(self, **x0: float) -> OCP:
        """Fix the initial state (missing states take the model's defaults)."""
        self.x0 = dict(self.model.state(x0)._asdict())
        return self

    def bound_input(self, name: str, lower: float | None = None, upper: float | None = None,
                    *, rate: float | None = None, previous: float | None = None) -> OCP:
        """Bounds on a control [input units] and an optional rate limit |Δu| per interval."""
        self._check_name(name, self.controls, "control")
        if self.u_bounds.get(name) != (lower, upper) or (
                rate is not None and self.rate.get(name) != float(rate)) or (
                previous is not None and name not in self.u_prev):
            self._invalidate()
        self.u_bounds[name] = (lower, upper)
        if rate is not None:
            self.rate[name] = float(rate)
        if previous is not None:
            self.u_prev[name] = float(previous)  # an NLP parameter: no rebuild
        return self

    def _invalidate(self) -> None:
        self._compiled, self._prob, self._steps = {}, None, None

    def constrain(self, name: str, lower: float | None = None, upper: float | None = None, *,
                  terminal: bool = False, soft: float | None = None) -> OCP:
        """Bounds on a state or output, on every node (path) or at the end (``terminal``).

        ``soft`` makes it a soft constraint with that penalty per unit of violation.
        """
        if name not in self.states and name not in self.outputs:
            self._check_name(name, self.states + self.outputs, "state or output")
        target = self.terminal if terminal else self.path
        if target.get(name) != ((lower, upper), soft):
            self._invalidate()
        target[name] = ((lower, upper), soft)
        return self

    def disturbance(self, name: str, values: Any) -> OCP:
        """Disturbance input: a constant or one value per interval (a forecast)."""
        self._check_name(name, tuple(self.model.inputs()), "input")
        self.disturbances[name] = values
        self._invalidate()
        return self

    def parameter(self, name: str, values: Any) -> OCP:
        """A parameter: a constant or one value per interval (time-varying)."""
        self._check_name(name, tuple(self.model.parameters()), "parameter")
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
        """
        self.mayer, self.stage = mayer, stage
        self.du_weight = dict(du_weight or {})
        self._invalidate()
        return self

    # ---- transcription --------------------------------------------------------------
    def _interval_model(self, k: int, symbolic: bool = False) -> Model:
        vals: dict[str, Any] = {n: float(np.broadcast_to(v, (self.N,))[k])
                                for n, v in self.params.items()}
        for i, n in enumerate(self.runtime):
            vals[n] = self._P[i] if symbolic else self.runtime_values[n]
        return self.model.replace(**vals) if vals else self.model

    def _p_values(self) -> np.ndarray:
        """Numeric NLP parameters: runtime parameters, previous inputs, horizon length."""
        return np.array([self.runtime_values[n] for n in self.runtime]
                        + [self.u_prev.get(c, 0.0) for c in self.controls] + [self.T],
                        dtype=float)

    def set_horizon(self, horizon: float) -> OCP:
        """Change the horizon length (same number of intervals) without rebuilding: the
        shrinking horizon of a batch keeps one NLP and its warm start."""
        if not horizon > 0:
            raise ConfigError(f"`horizon` must be > 0, got {horizon}.")
        self.T = float(horizon)
        self.h = self.T / self.N
        return self

    @staticmethod
    def _at(pos: float) -> str:
        # constraint labels carry the node position; times are filled in with the
        # current interval length when reported (the horizon is an NLP parameter)
        return f"t=<{float(pos)!r}>"

    def _fmt(self, label: str) -> str:
        return re.sub(r"t=<([^>]+)>", lambda m: f"t={float(m.group(1)) * self.h:g}", label)

    def _inputs(self, k: int, u: Any) -> Any:
        vals = {}
        for name, spec in self.model.inputs().items():
            if name in self.controls:
                vals[name] = u[self.controls.index(name)]
            elif name in self.disturbances:
                vals[name] = float(np.broadcast_to(self.disturbances[name], (self.N,))[k])
            else:
                vals[name] = spec.default
        return self.model.Inputs(**vals)

    def _f(self, model: Model, x: Any, u: Any) -> Any:
        return ca.vertcat(*model.rhs(0.0, model.State(*ca.vertsplit(x)), u, casadi_ops))

    def _y(self, model: Model, x: Any, u: Any) -> Any:
        return ca.vertcat(*model.measure(0.0, model.State(*ca.vertsplit(x)), u, casadi_ops))

    def _rk4(self, model: Model, x: Any, u_in: Any, h: Any) -> Any:
        hs = h / self.substeps
        for _ in range(self.substeps):
            k1 = self._f(model, x, u_in)
            k2 = self._f(model, x + hs / 2 * k1, u_in)
            k3 = self._f(model, x + hs / 2 * k2, u_in)
            k4 = self._f(model, x + hs * k3, u_in)
            x = x + hs / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    def _make_steps(self) -> list[Any]:
        """RK4 interval maps ``(x, u, p) -> x+`` as CasADi Functions, one shared Function
        when no parameter or disturbance varies by interval."""
        xs = ca.SX.sym("x", len(self.states))
        us = ca.SX.sym("u", len(self.controls))
        uniform = not self.params and all(np.ndim(v) == 0 for v in self.disturbances.values())
        steps: list[Any] = []
        for k in range(1 if uniform else self.N):
            model = self._interval_model(k, symbolic=True)
            steps.append(ca.Function(f"step{k}", [xs, us, self._P],
                                     [self._rk4(model, xs, self._inputs(k, us), self._h_sym)]))
        return steps * self.N if uniform else steps

    def _initial_guess(self, x0: np.ndarray, u: np.ndarray) -> np.ndarray:
        """States at the nodes under the guessed controls ``u`` (intervals × controls),
        integrated with RK4: a feasible starting point for IPOPT."""
        steps = self._steps  # built with the NLP
        p = self._p_values()
        out = [x0]
        for k in range(self.N):
            out.append(np.asarray(steps[k](out[-1], u[min(k, len(u) - 1)], p)).ravel())
        return np.array(out)

    def _x0_vector(self) -> np.ndarray:
        return np.array([self.x0.get(s, self.model.states()[s].default) for s in self.states],
                        dtype=float)

    def build(self, soften_all: bool = False) -> dict[str, Any]:
        """Build the NLP; with ``soften_all`` every constraint gets a slack (diagnosis)."""
        nx, nu, N = len(self.states), len(self.controls), self.N
        w, lbw, ubw, w0 = [], [], [], []
        g, lbg, ubg, gname = [], [], [], []
        slacks: list[tuple[str, Any, float]] = []
        x0 = self._x0_vector()
        # NLP parameters: runtime model parameters, previous inputs, horizon length
        self._P = ca.SX.sym("p", len(self.runtime) + nu + 1)
        self._h_sym = h = self._P[-1] / N
        self._steps = self._make_steps()
        X = [ca.SX.sym(f"X_{k}", nx) for k in range(N + 1)]
        # physical state bounds (e.g. S ≥ 0: the kinetics are singular below) on every
        # node and collocation point keep IPOPT's iterates where the model is defined
        lo_x, hi_x = [], []
        for spec in self.model.states().values():
            lo, hi = spec.bounds
            lo = -np.inf if lo is None else lo + (1e-9 * max(abs(lo), 1.0) if spec.strict else 0)
            lo_x.append(lo)
            hi_x.append(np.inf if hi is None else hi)
        U = [ca.SX.sym(f"U_{k}", nu) for k in range(self.M)]
        Uk = [U[min(k, self.M - 1)] for k in range(N)]
        lo_u = [self.u_bounds.get(c, (None, None))[0] for c in self.controls]
        hi_u = [self.u_bounds.get(c, (None, None))[1] for c in self.controls]
        spec_in = self.model.inputs()
        lo_u = [(spec_in[c].bounds[0] if lo is None else lo) for c, lo in zip(self.controls, lo_u,
                                                                           strict=True)]
        hi_u = [(spec_in[c].bounds[1] if hi is None else hi) for c, hi in zip(self.controls, hi_u,
                                                                           strict=True)]
        lo_u = [-np.inf if v is None else v for v in lo_u]
        hi_u = [np.inf if v is None else v for v in hi_u]
        u_guess = [float(np.clip(self.u_prev.get(c, spec_in[c].default), lo, hi))
                   for c, lo, hi in zip(self.controls, lo_u, hi_u, strict=True)]
        u_rows = np.tile(u_guess, (self.M, 1))
        guess = self._initial_guess(x0, u_rows)
        for k in range(N + 1):
            w.append(X[k])
            if k == 0:
                lbw += list(x0)
                ubw += list(x0)
            else:
                lbw += lo_x
                ubw += hi_x
            w0 += list(guess[k])
        for k in range(self.M):
            w.append(U[k])
            lbw += lo_u
            ubw += hi_u
            w0 += list(u_rows[k])
        J = 0
        # dynamics
        for k in range(N):
            model = self._interval_model(k, symbolic=True)
            u_in = self._inputs(k, Uk[k])
            if self.method == "shooting":
                g.append(X[k + 1] - self._rk4(model, X[k], u_in, h))
                lbg += [0.0] * nx
                ubg += [0.0] * nx
                gname += [f"continuity {s} at {self._at(k + 1)}" for s in self.states]
            else:
                tau = np.append(0.0, ca.collocation_points(self.degree, "radau"))
                C, D, _B = ca.collocation_coeff(tau[1:])
                Xc = [ca.SX.sym(f"Xc_{k}_{j}", nx) for j in range(self.degree)]
                for j, xc in enumerate(Xc):
                    w.append(xc)
                    lbw += lo_x
                    ubw += hi_x
                    w0 += list(guess[k] + tau[j + 1] * (guess[k + 1] - guess[k]))
                Z = ca.horzcat(X[k], *Xc)
                Pidot = Z @ C
                for j in range(self.degree):
                    g.append(h * self._f(model, Xc[j], u_in) - Pidot[:, j])
                    lbg += [0.0] * nx
                    ubg += [0.0] * nx
                    gname += [f"collocation {s} at {self._at(k + tau[j + 1])}"
                              for s in self.states]
                g.append(X[k + 1] - Z @ D)
                lbg += [0.0] * nx
                ubg += [0.0] * nx
                gname += [f"continuity {s} at {self._at(k + 1)}" for s in self.states]
            if self.stage is not None:
                J += h * self.stage(model.State(*ca.vertsplit(X[k])), u_in)
        # input rate limits and move penalties
        for i, c in enumerate(self.controls):
            prev = self._P[len(self.runtime) + i] if c in self.u_prev else None
            for k in range(self.M):
                if k == 0 and prev is None:
                    continue
                du = U[k][i] - (prev if k == 0 else U[k - 1][i])
                if c in self.rate:
                    g.append(du)
                    lbg.append(-self.rate[c])
                    ubg.append(self.rate[c])
                    gname.append(f"rate of `{c}` at {self._at(k)}")
                if c in self.du_weight:
                    J += self.du_weight[c] * du**2
        objective = J
        if self.mayer is not None:
            objective += self.mayer(self.model.State(*ca.vertsplit(X[N])))
        # state/output bounds
        groups = [(n, v, range(1, N + 1), False) for n, v in self.path.items()]
        groups += [(n, v, [N], True) for n, v in self.terminal.items()]
        for name, ((lo, hi), soft), nodes, is_terminal in groups:
            for k in nodes:
                kk = min(k, N - 1)
                model = self._interval_model(kk, symbolic=True)
                if name in self.states:
                    expr = X[k][self.states.index(name)]
                else:
                    expr = self._y(model, X[k], self._inputs(kk, Uk[kk]))[
                        self.outputs.index(name)]
                where = "end" if is_terminal else self._at(k)
                weight = soft if soft is not None else (1e4 if soften_all else None)
                for bound, sign, word in ((lo, -1.0, "≥"), (hi, 1.0, "≤")):
                    if bound is None:
                        continue
                    label = f"`{name}` {word} {bound:g} at {where}"
                    if weight is not None:
                        s = ca.SX.sym("s")
                        w.append(s)
                        lbw.append(0.0)
                        ubw.append(np.inf)
                        w0.append(0.0)
                        slacks.append((label, s, weight))
                        objective += weight * s
                        g.append(sign * (expr - bound) - s)
                    else:
                        g.append(sign * (expr - bound))
                    lbg.append(-np.inf)
                    ubg.append(0.0)
                    gname.append(label)
        nlp = {"x": ca.vertcat(*w), "f": objective, "g": ca.vertcat(*g), "p": self._P}
        # outputs at the nodes (inputs of the interval that starts there; last repeats)
        ys = [self._y(self._interval_model(min(k, N - 1), symbolic=True), X[k],
                      self._inputs(min(k, N - 1), Uk[min(k, N - 1)])) for k in range(N + 1)]
        wsym = nlp["x"]
        extract = ca.Function("plan", [wsym, self._P],
                              [ca.horzcat(*X), ca.horzcat(*U), ca.horzcat(*ys),
                               ca.vertcat(*[sl for _, sl, _ in slacks]) if slacks
                               else ca.DM.zeros(0, 1)])
        return dict(nlp=nlp, lbw=np.array(lbw, float), ubw=np.array(ubw, float),
                    w0=np.array(w0, float), lbg=np.array(lbg, float), ubg=np.array(ubg, float),
                    gname=gname, slacks=slacks, extract=extract)

    def solve(self, *, tol: float = 1e-10, max_iter: int = 3000, warm_start: OCPResult | None
              = None, diagnose: bool = True, max_wall_time: float | None = None) -> OCPResult:
        """Solve with IPOPT. On failure, re-solve with every constraint softened and raise a
        :class:`~processtwin.errors.SolverError` naming the violated constraints.

        ``max_wall_time`` [s] stops IPOPT at a deadline (then :class:`SolverError`).
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
        nx = len(self.states)
        lbw, ubw = prob["lbw"].copy(), prob["ubw"].copy()
        lbw[:nx] = ubw[:nx] = self._x0_vector()  # the initial state enters as bounds
        args = dict(lbx=lbw, ubx=ubw, lbg=prob["lbg"], ubg=prob["ubg"], p=self._p_values())
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
                     ubg=prob["ubg"], p=self._p_values())
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
        Xv, Uv, Yv, Sv = (np.asarray(a) for a in prob["extract"](w_opt, self._p_values()))
        Uv = Uv.reshape(len(self.controls), -1)
        Uv = np.concatenate([Uv, np.repeat(Uv[:, -1:], self.N + 1 - Uv.shape[1], axis=1)],
                            axis=1)
        t = np.arange(self.N + 1) * self.h
        data: dict[str, Any] = {}
        for i, s in enumerate(self.states):
            spec = self.model.states()[s]
            data[s] = ("time", Xv[i], {"units": spec.units, "long_name": spec.doc,
                                       "role": "state"})
        for i, c in enumerate(self.controls):
            spec = self.model.inputs()[c]
            data[c] = ("time", Uv[i], {"units": spec.units, "long_name": spec.doc,
                                       "role": "input", "kind": "manipulated",
                                       "interpolation": "hold"})
        y = Yv.T
        for i, o in enumerate(self.outputs):
            name = o if o not in data else f"y_{o}"
            data[name] = ("time", y[:, i], {"units": self.model.outputs()[o].units,
                                            "role": "output"})
        if prob["slacks"]:
            vals = Sv.ravel()
            data["slack"] = ("constraint", vals, {"long_name": "violation of soft constraints"})
            data["constraint"] = ("constraint", [self._fmt(lbl) for lbl, _, _ in prob["slacks"]])
        return xr.Dataset(data, coords={"time": ("time", t, {"units": self.model.time_unit})},
                          attrs={"model": self.model.name, "method": self.method,
                                 "intervals": self.N})
