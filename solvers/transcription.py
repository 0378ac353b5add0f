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

__all__ = ["control_bounds", "initial_guess", "interval_steps", "outputs_sx", "plan_dataset",
           "rhs_sx", "rk4", "transcribe"]


def rhs_sx(model: Model, x: Any, u: Any) -> Any:
    """The model's rhs on a CasADi state vector ``x`` (``u`` an ``Inputs`` tuple)."""
    st = model.layout.states
    return st.ravel(model.rhs(0.0, st.unravel(x, casadi_ops), u, casadi_ops), casadi_ops)


def outputs_sx(model: Model, x: Any, u: Any) -> Any:
    """The model's outputs on a CasADi state vector ``x``."""
    lay = model.layout
    return lay.outputs.ravel(model.measure(0.0, lay.states.unravel(x, casadi_ops), u,
                                           casadi_ops), casadi_ops)


def state_sx(model: Model, x: Any) -> Any:
    """The ``State`` tuple of a CasADi state vector (for objectives)."""
    return model.layout.states.unravel(x, casadi_ops)


def rk4(model: Model, x: Any, u_in: Any, h: Any, substeps: int) -> Any:
    """``substeps`` RK4 steps over an interval of length ``h``; for a discrete-time
    model, its own map once per sample in ``h``."""
    st = model.layout.states
    if model.is_discrete:
        dt = model.sample_time
        for i in range(substeps):
            x = st.ravel(model.step(i * dt, st.unravel(x, casadi_ops), u_in, dt, casadi_ops),
                         casadi_ops)
        return x
    hs = h / substeps
    for _ in range(substeps):
        k1 = rhs_sx(model, x, u_in)
        k2 = rhs_sx(model, x + hs / 2 * k1, u_in)
        k3 = rhs_sx(model, x + hs / 2 * k2, u_in)
        k4 = rhs_sx(model, x + hs * k3, u_in)
        x = x + hs / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def _substeps(ocp: OCP) -> int:
    if ocp.model.is_discrete:  # one step of the model's map per sample
        return int(round(ocp.h / ocp.model.sample_time))
    return ocp.substeps


def interval_steps(ocp: OCP, P: Any, h: Any) -> list[Any]:
    """RK4 interval maps ``(x, u, p) -> x+`` as CasADi Functions, one shared Function
    when no parameter or disturbance varies by interval."""
    xs = ca.SX.sym("x", ocp.model.layout.states.size)
    us = ca.SX.sym("u", ocp.nu)
    uniform = not ocp.params and all(np.ndim(v) == 0 for v in ocp.disturbances.values())
    steps: list[Any] = []
    for k in range(1 if uniform else ocp.N):
        model = ocp.interval_model(k, P)
        steps.append(ca.Function(f"step{k}", [xs, us, P],
                                 [rk4(model, xs, ocp.inputs_at(k, us), h, _substeps(ocp))]))
    return steps * ocp.N if uniform else steps


def control_bounds(ocp: OCP) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of one interval's control vector [input units]: those set
    with ``bound_input``, else the inputs' declared bounds (``±inf`` where none).

    Parameters
    ----------
    ocp : OCP
        The problem.
    """
    lo_u, hi_u = [], []
    lay = ocp.model.layout
    for c in ocp.controls:
        lf = lay.inputs.leaf(c)
        lo, hi = ocp.u_bounds.get(c, (None, None))
        lo = lf.var.bounds[0] if lo is None else lo
        hi = lf.var.bounds[1] if hi is None else hi
        lo_u += list(np.broadcast_to(-np.inf if lo is None else lo, (lf.size,)))
        hi_u += list(np.broadcast_to(np.inf if hi is None else hi, (lf.size,)))
    return np.asarray(lo_u, dtype=float), np.asarray(hi_u, dtype=float)


def initial_guess(ocp: OCP, x0: np.ndarray, u: np.ndarray, steps: Any = None) -> np.ndarray:
    """States at the nodes under the guessed controls ``u`` (intervals × controls),
    integrated with RK4: a feasible starting point for IPOPT."""
    steps = ocp.steps if steps is None else steps  # built with the NLP
    p = ocp.p_values()
    out = [x0]
    for k in range(ocp.N):
        out.append(np.asarray(steps[k](out[-1], u[min(k, len(u) - 1)], p)).ravel())
    return np.array(out)


def transcribe(ocp: OCP, soften_all: bool = False) -> dict[str, Any]:
    """Build the NLP of ``ocp``; with ``soften_all`` every constraint gets a slack
    (diagnosis). The returned dict also holds the NLP parameters ``P``, the symbolic
    interval length ``h`` and the interval maps ``steps``."""
    lay = ocp.model.layout
    nx, nu, N = lay.states.size, ocp.nu, ocp.N
    w, lbw, ubw, w0 = [], [], [], []
    g, lbg, ubg, gname = [], [], [], []
    slacks: list[tuple[str, Any, float]] = []
    x0 = ocp.x0_vector()
    # NLP parameters: runtime model parameters, previous inputs, horizon length
    P = ca.SX.sym("p", len(ocp.runtime) + nu + 1)
    h = P[-1] / N
    steps = interval_steps(ocp, P, h)
    X = [ca.SX.sym(f"X_{k}", nx) for k in range(N + 1)]
    # physical state bounds (e.g. S ≥ 0: the kinetics are singular below) on every
    # node and collocation point keep IPOPT's iterates where the model is defined
    lo_b, hi_b = lay.states.bounds(strict_margin=1e-9)
    lo_x, hi_x = list(lo_b), list(hi_b)
    state_names = lay.states.flat_names()
    U = [ca.SX.sym(f"U_{k}", nu) for k in range(ocp.M)]
    Uk = [U[min(k, ocp.M - 1)] for k in range(N)]
    lo_arr, hi_arr = control_bounds(ocp)
    lo_u, hi_u = list(lo_arr), list(hi_arr)
    u_guess: list[float] = []
    for c, sl in ocp.control_slots.items():
        lf = lay.inputs.leaf(c)
        u_guess += list(np.clip(np.broadcast_to(ocp.u_prev.get(c, lf.var.default),
                                                (lf.size,)), lo_arr[sl], hi_arr[sl]))
    u_rows = np.tile(u_guess, (ocp.M, 1))
    guess = initial_guess(ocp, x0, u_rows, steps)
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
        model = ocp.interval_model(k, P)
        u_in = ocp.inputs_at(k, Uk[k])
        if ocp.method in ("shooting", "discrete"):
            g.append(X[k + 1] - rk4(model, X[k], u_in, h, _substeps(ocp)))
            lbg += [0.0] * nx
            ubg += [0.0] * nx
            gname += [f"continuity {s} at {ocp.at_node(k + 1)}" for s in state_names]
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
                gname += [f"collocation {s} at {ocp.at_node(k + tau[j + 1])}"
                          for s in state_names]
            g.append(X[k + 1] - Z @ D)
            lbg += [0.0] * nx
            ubg += [0.0] * nx
            gname += [f"continuity {s} at {ocp.at_node(k + 1)}" for s in state_names]
        if ocp.stage is not None:
            J += h * ocp.stage(state_sx(model, X[k]), u_in)
    # input rate limits and move penalties; the previous inputs are NLP parameters, one per
    # element of the control vector
    n_run = len(ocp.runtime)
    for c, sl in ocp.control_slots.items():
        prev = P[n_run + sl.start:n_run + sl.stop] if c in ocp.u_prev else None
        for k in range(ocp.M):
            if k == 0 and prev is None:
                continue
            du = U[k][sl] - (prev if k == 0 else U[k - 1][sl])
            n_c = sl.stop - sl.start
            if c in ocp.rate:
                g.append(du)
                rate = np.broadcast_to(ocp.rate[c], (n_c,))
                lbg += list(-rate)
                ubg += list(rate)
                gname += [f"rate of `{c}` at {ocp.at_node(k)}"] * n_c
            if c in ocp.du_weight:
                J += ocp.du_weight[c] * ca.sumsqr(du)
    objective = J
    if ocp.mayer is not None:
        objective += ocp.mayer(state_sx(ocp.model, X[N]))
    # state/output bounds
    groups = [(n, v, range(1, N + 1), False) for n, v in ocp.path.items()]
    groups += [(n, v, [N], True) for n, v in ocp.terminal.items()]
    for name, ((lo, hi), soft), nodes, is_terminal in groups:
        for k in nodes:
            kk = min(k, N - 1)
            model = ocp.interval_model(kk, P)
            if name in lay.states:
                lf = lay.states.leaf(name)
                expr = X[k][lf.start:lf.stop]
            else:
                lf = lay.outputs.leaf(name)
                expr = outputs_sx(model, X[k], ocp.inputs_at(kk, Uk[kk]))[lf.start:lf.stop]
            where = "end" if is_terminal else ocp.at_node(k)
            weight = soft if soft is not None else (1e4 if soften_all else None)
            for bound, sign, word in ((lo, -1.0, "≥"), (hi, 1.0, "≤")):
                if bound is None:
                    continue
                for e, el in enumerate(lf.flat_names()):
                    label = f"`{el}` {word} {bound:g} at {where}"
                    if weight is not None:
                        s = ca.SX.sym("s")
                        w.append(s)
                        lbw.append(0.0)
                        ubw.append(np.inf)
                        w0.append(0.0)
                        slacks.append((label, s, weight))
                        objective += weight * s
                        g.append(sign * (expr[e] - bound) - s)
                    else:
                        g.append(sign * (expr[e] - bound))
                    lbg.append(-np.inf)
                    ubg.append(0.0)
                    gname.append(label)
    nlp = {"x": ca.vertcat(*w), "f": objective, "g": ca.vertcat(*g), "p": P}
    # outputs at the nodes (inputs of the interval that starts there; last repeats)
    ys = [outputs_sx(ocp.interval_model(min(k, N - 1), P), X[k],
                     ocp.inputs_at(min(k, N - 1), Uk[min(k, N - 1)])) for k in range(N + 1)]
    wsym = nlp["x"]
    extract = ca.Function("plan", [wsym, P],
                          [ca.horzcat(*X), ca.horzcat(*U), ca.horzcat(*ys),
                           ca.vertcat(*[sl for _, sl, _ in slacks]) if slacks
                           else ca.DM.zeros(0, 1)])
    return dict(nlp=nlp, lbw=np.array(lbw, float), ubw=np.array(ubw, float),
                w0=np.array(w0, float), lbg=np.array(lbg, float), ubg=np.array(ubg, float),
                gname=gname, slacks=slacks, extract=extract, P=P, h=h, steps=steps)


def plan_dataset(ocp: OCP, prob: dict, w_opt: np.ndarray) -> xr.Dataset:
    """The solution ``w_opt`` as a Dataset: states and outputs at the nodes, controls,
    slacks of soft constraints."""
    from processtwin.dataset import build, dim_coords, leaf_items

    lay = ocp.model.layout
    Xv, Uv, Yv, Sv = (np.asarray(a) for a in prob["extract"](w_opt, ocp.p_values()))
    # IPOPT may leave a control a hair (~1e-8) outside its bounds: the plan is what an
    # actuator gets, and what `simulate` re-checks, so it is clipped onto them
    lo_u, hi_u = control_bounds(ocp)
    Uv = np.clip(Uv.reshape(ocp.nu, -1), lo_u[:, None], hi_u[:, None])
    Uv = np.concatenate([Uv, np.repeat(Uv[:, -1:], ocp.N + 1 - Uv.shape[1], axis=1)],
                        axis=1)
    t = np.arange(ocp.N + 1) * ocp.h
    taken: set[str] = set()
    data: dict[str, Any] = dict(leaf_items(lay.states, Xv.T, "state", ("time",), taken=taken))
    u_full = np.tile(lay.inputs.defaults(), (ocp.N + 1, 1))
    for c, sl in ocp.control_slots.items():
        lf = lay.inputs.leaf(c)
        u_full[:, lf.start:lf.stop] = Uv[sl].T
    for name, (dims, v, attrs) in leaf_items(lay.inputs, u_full, "input", ("time",),
                                             taken=taken, prefix="u_"):
        if name.removeprefix("u_") in ocp.control_slots:
            data[name] = (dims, v, {**attrs, "interpolation": "hold"})
    data.update(leaf_items(lay.outputs, Yv.T, "output", ("time",), taken=taken, prefix="y_"))
    if prob["slacks"]:
        vals = Sv.ravel()
        data["slack"] = (("constraint",), vals, {"long_name": "violation of soft constraints",
                                                 "role": "diagnostic"})
    coords: dict[str, Any] = {"time": ("time", t, {"units": ocp.model.time_unit}),
                              **dim_coords(lay.dims)}
    if prob["slacks"]:
        coords["constraint"] = ("constraint", [ocp.label(lbl) for lbl, _, _ in prob["slacks"]])
    return build(data, coords, {"model": ocp.model.name, "method": ocp.method,
                                "intervals": ocp.N})
