"""Transcription of an :class:`~processtwin.solvers.OCP` into a CasADi NLP, and back.

Direct multiple shooting (``substeps`` RK4 steps per control interval) or orthogonal
collocation on finite elements (Radau IIA points), from the model's own ``rhs`` built as
CasADi SX. Decision variables: the states at the nodes (the first fixed by bounds, so a new
initial state needs no rebuild), the controls per move-blocked interval, the collocation
states and one slack per softened bound. NLP parameters ``p``: runtime model parameters,
the previous inputs (rate limits, move penalties) and the horizon length. Constraint labels
carry node positions (``t=<k>``) that the OCP turns into times with the current interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import casadi as ca
import numpy as np
import xarray as xr

from processtwin.model import Model
from processtwin.ops import casadi_ops

if TYPE_CHECKING:
    from .ocp import OCP

__all__ = ["initial_guess", "interval_steps", "outputs_sx", "plan_dataset", "rhs_sx", "rk4",
           "transcribe"]


def rhs_sx(model: Model, x: Any, u: Any) -> Any:
    """The model's rhs on a CasADi state vector ``x``."""
    return ca.vertcat(*model.rhs(0.0, model.State(*ca.vertsplit(x)), u, casadi_ops))


def outputs_sx(model: Model, x: Any, u: Any) -> Any:
    """The model's outputs on a CasADi state vector ``x``."""
    return ca.vertcat(*model.measure(0.0, model.State(*ca.vertsplit(x)), u, casadi_ops))


def rk4(model: Model, x: Any, u_in: Any, h: Any, substeps: int) -> Any:
    """``substeps`` RK4 steps over an interval of length ``h``."""
    hs = h / substeps
    for _ in range(substeps):
        k1 = rhs_sx(model, x, u_in)
        k2 = rhs_sx(model, x + hs / 2 * k1, u_in)
        k3 = rhs_sx(model, x + hs / 2 * k2, u_in)
        k4 = rhs_sx(model, x + hs * k3, u_in)
        x = x + hs / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def interval_steps(ocp: OCP) -> list[Any]:
    """RK4 interval maps ``(x, u, p) -> x+`` as CasADi Functions, one shared Function
    when no parameter or disturbance varies by interval."""
    xs = ca.SX.sym("x", len(ocp.states))
    us = ca.SX.sym("u", len(ocp.controls))
    uniform = not ocp.params and all(np.ndim(v) == 0 for v in ocp.disturbances.values())
    steps: list[Any] = []
    for k in range(1 if uniform else ocp.N):
        model = ocp._interval_model(k, symbolic=True)
        steps.append(ca.Function(f"step{k}", [xs, us, ocp._P],
                                 [rk4(model, xs, ocp._inputs(k, us), ocp._h_sym, ocp.substeps)]))
    return steps * ocp.N if uniform else steps


def initial_guess(ocp: OCP, x0: np.ndarray, u: np.ndarray) -> np.ndarray:
    """States at the nodes under the guessed controls ``u`` (intervals × controls),
    integrated with RK4: a feasible starting point for IPOPT."""
    steps = ocp._steps  # built with the NLP
    p = ocp._p_values()
    out = [x0]
    for k in range(ocp.N):
        out.append(np.asarray(steps[k](out[-1], u[min(k, len(u) - 1)], p)).ravel())
    return np.array(out)


def transcribe(ocp: OCP, soften_all: bool = False) -> dict[str, Any]:
    """Build the NLP of ``ocp``; with ``soften_all`` every constraint gets a slack
    (diagnosis). Sets ``ocp._P`` (NLP parameters), ``ocp._h_sym`` and ``ocp._steps``."""
    nx, nu, N = len(ocp.states), len(ocp.controls), ocp.N
    w, lbw, ubw, w0 = [], [], [], []
    g, lbg, ubg, gname = [], [], [], []
    slacks: list[tuple[str, Any, float]] = []
    x0 = ocp._x0_vector()
    # NLP parameters: runtime model parameters, previous inputs, horizon length
    ocp._P = ca.SX.sym("p", len(ocp.runtime) + nu + 1)
    ocp._h_sym = h = ocp._P[-1] / N
    ocp._steps = interval_steps(ocp)
    X = [ca.SX.sym(f"X_{k}", nx) for k in range(N + 1)]
    # physical state bounds (e.g. S ≥ 0: the kinetics are singular below) on every
    # node and collocation point keep IPOPT's iterates where the model is defined
    lo_x, hi_x = [], []
    for spec in ocp.model.states().values():
        lo, hi = spec.bounds
        lo = -np.inf if lo is None else lo + (1e-9 * max(abs(lo), 1.0) if spec.strict else 0)
        lo_x.append(lo)
        hi_x.append(np.inf if hi is None else hi)
    U = [ca.SX.sym(f"U_{k}", nu) for k in range(ocp.M)]
    Uk = [U[min(k, ocp.M - 1)] for k in range(N)]
    lo_u = [ocp.u_bounds.get(c, (None, None))[0] for c in ocp.controls]
    hi_u = [ocp.u_bounds.get(c, (None, None))[1] for c in ocp.controls]
    spec_in = ocp.model.inputs()
    lo_u = [(spec_in[c].bounds[0] if lo is None else lo) for c, lo in zip(ocp.controls, lo_u,
                                                                       strict=True)]
    hi_u = [(spec_in[c].bounds[1] if hi is None else hi) for c, hi in zip(ocp.controls, hi_u,
                                                                       strict=True)]
    lo_u = [-np.inf if v is None else v for v in lo_u]
    hi_u = [np.inf if v is None else v for v in hi_u]
    u_guess = [float(np.clip(ocp.u_prev.get(c, spec_in[c].default), lo, hi))
               for c, lo, hi in zip(ocp.controls, lo_u, hi_u, strict=True)]
    u_rows = np.tile(u_guess, (ocp.M, 1))
    guess = initial_guess(ocp, x0, u_rows)
    for k in range(N + 1):
        w.append(X[k])
        if k == 0:
            lbw += list(x0)
            ubw += list(x0)
        else:
            lbw += lo_x
            ubw += hi_x
        w0 += list(guess[k])
    for k in range(ocp.M):
        w.append(U[k])
        lbw += lo_u
        ubw += hi_u
        w0 += list(u_rows[k])
    J = 0
    # dynamics
    for k in range(N):
        model = ocp._interval_model(k, symbolic=True)
        u_in = ocp._inputs(k, Uk[k])
        if ocp.method == "shooting":
            g.append(X[k + 1] - rk4(model, X[k], u_in, h, ocp.substeps))
            lbg += [0.0] * nx
            ubg += [0.0] * nx
            gname += [f"continuity {s} at {ocp._at(k + 1)}" for s in ocp.states]
        else:
            tau = np.append(0.0, ca.collocation_points(ocp.degree, "radau"))
            C, D, _B = ca.collocation_coeff(tau[1:])
            Xc = [ca.SX.sym(f"Xc_{k}_{j}", nx) for j in range(ocp.degree)]
            for j, xc in enumerate(Xc):
                w.append(xc)
                lbw += lo_x
                ubw += hi_x
                w0 += list(guess[k] + tau[j + 1] * (guess[k + 1] - guess[k]))
            Z = ca.horzcat(X[k], *Xc)
            Pidot = Z @ C
            for j in range(ocp.degree):
                g.append(h * rhs_sx(model, Xc[j], u_in) - Pidot[:, j])
                lbg += [0.0] * nx
                ubg += [0.0] * nx
                gname += [f"collocation {s} at {ocp._at(k + tau[j + 1])}"
                          for s in ocp.states]
            g.append(X[k + 1] - Z @ D)
            lbg += [0.0] * nx
            ubg += [0.0] * nx
            gname += [f"continuity {s} at {ocp._at(k + 1)}" for s in ocp.states]
        if ocp.stage is not None:
            J += h * ocp.stage(model.State(*ca.vertsplit(X[k])), u_in)
    # input rate limits and move penalties
    for i, c in enumerate(ocp.controls):
        prev = ocp._P[len(ocp.runtime) + i] if c in ocp.u_prev else None
        for k in range(ocp.M):
            if k == 0 and prev is None:
                continue
            du = U[k][i] - (prev if k == 0 else U[k - 1][i])
            if c in ocp.rate:
                g.append(du)
                lbg.append(-ocp.rate[c])
                ubg.append(ocp.rate[c])
                gname.append(f"rate of `{c}` at {ocp._at(k)}")
            if c in ocp.du_weight:
                J += ocp.du_weight[c] * du**2
    objective = J
    if ocp.mayer is not None:
        objective += ocp.mayer(ocp.model.State(*ca.vertsplit(X[N])))
    # state/output bounds
    groups = [(n, v, range(1, N + 1), False) for n, v in ocp.path.items()]
    groups += [(n, v, [N], True) for n, v in ocp.terminal.items()]
    for name, ((lo, hi), soft), nodes, is_terminal in groups:
        for k in nodes:
            kk = min(k, N - 1)
            model = ocp._interval_model(kk, symbolic=True)
            if name in ocp.states:
                expr = X[k][ocp.states.index(name)]
            else:
                expr = outputs_sx(model, X[k], ocp._inputs(kk, Uk[kk]))[
                    ocp.outputs.index(name)]
            where = "end" if is_terminal else ocp._at(k)
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
    nlp = {"x": ca.vertcat(*w), "f": objective, "g": ca.vertcat(*g), "p": ocp._P}
    # outputs at the nodes (inputs of the interval that starts there; last repeats)
    ys = [outputs_sx(ocp._interval_model(min(k, N - 1), symbolic=True), X[k],
                  ocp._inputs(min(k, N - 1), Uk[min(k, N - 1)])) for k in range(N + 1)]
    wsym = nlp["x"]
    extract = ca.Function("plan", [wsym, ocp._P],
                          [ca.horzcat(*X), ca.horzcat(*U), ca.horzcat(*ys),
                           ca.vertcat(*[sl for _, sl, _ in slacks]) if slacks
                           else ca.DM.zeros(0, 1)])
    return dict(nlp=nlp, lbw=np.array(lbw, float), ubw=np.array(ubw, float),
                w0=np.array(w0, float), lbg=np.array(lbg, float), ubg=np.array(ubg, float),
                gname=gname, slacks=slacks, extract=extract)


def plan_dataset(ocp: OCP, prob: dict, w_opt: np.ndarray) -> xr.Dataset:
    """The solution ``w_opt`` as a Dataset: states and outputs at the nodes, controls,
    slacks of soft constraints."""
    Xv, Uv, Yv, Sv = (np.asarray(a) for a in prob["extract"](w_opt, ocp._p_values()))
    Uv = Uv.reshape(len(ocp.controls), -1)
    Uv = np.concatenate([Uv, np.repeat(Uv[:, -1:], ocp.N + 1 - Uv.shape[1], axis=1)],
                        axis=1)
    t = np.arange(ocp.N + 1) * ocp.h
    data: dict[str, Any] = {}
    for i, s in enumerate(ocp.states):
        spec = ocp.model.states()[s]
        data[s] = ("time", Xv[i], {"units": spec.units, "long_name": spec.doc,
                                   "role": "state"})
    for i, c in enumerate(ocp.controls):
        spec = ocp.model.inputs()[c]
        data[c] = ("time", Uv[i], {"units": spec.units, "long_name": spec.doc,
                                   "role": "input", "kind": "manipulated",
                                   "interpolation": "hold"})
    y = Yv.T
    for i, o in enumerate(ocp.outputs):
        name = o if o not in data else f"y_{o}"
        data[name] = ("time", y[:, i], {"units": ocp.model.outputs()[o].units,
                                        "role": "output"})
    if prob["slacks"]:
        vals = Sv.ravel()
        data["slack"] = ("constraint", vals, {"long_name": "violation of soft constraints"})
        data["constraint"] = ("constraint", [ocp._fmt(lbl) for lbl, _, _ in prob["slacks"]])
    return xr.Dataset(data, coords={"time": ("time", t, {"units": ocp.model.time_unit})},
                      attrs={"model": ocp.model.name, "method": ocp.method,
                             "intervals": ocp.N})
