"""Transcription of an :class:`~processtwin.solvers.OCP` into a CasADi NLP, and back.

The model's equations are built once, as CasADi SX, into one ``Function`` per kind of
interval — ``(x, u, d, θ, h) -> (x⁺, ∫ stage)`` for multiple shooting (``substeps`` RK4
steps; the model's own map for a discrete-time model) and ``(x, Xc, u, d, θ, h) ->
(residuals, x⁺, ∫ stage, outputs at the points)`` for orthogonal collocation (``elements``
Radau IIA elements of ``degree`` points per control interval) — and **mapped** over the
horizon in an MX graph: the NLP is never re-inlined per node, so it builds in milliseconds
whatever the horizon.

Decision vector ``w`` (column-major blocks): states at the nodes ``X`` (nx × N+1, the
first fixed by bounds so a new initial state needs no rebuild), controls per move-blocked
interval ``U`` (nu × M), collocation states ``Xc`` (nx × N·E·d), the final time when it is
free, one slack per softened bound. NLP parameters ``p``: per-interval parameter values θ
(nθ × N), per-interval non-manipulated inputs ``d`` (nd × N: disturbance forecasts and
defaults), the previous control (rate limits, move penalties), the horizon length. So a
new forecast, parameter estimate, previous input or (fixed) horizon needs no rebuild
either. Constraint labels carry node positions (``t=<k>``) that the OCP turns into times.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import casadi as ca
import numpy as np

from processtwin.model import Model
from processtwin.ops import casadi_ops

from .structured import Calls

if TYPE_CHECKING:
    from .ocp import OCP

__all__ = ["NLP", "control_bounds", "interval_functions", "split_parameters", "transcribe"]


@dataclass
class NLP:
    """A transcribed problem: the CasADi NLP, its bounds and the maps back to a plan.

    Attributes
    ----------
    nlp : dict
        ``{"x", "f", "g", "p"}`` (MX) for :func:`casadi.nlpsol`.
    lbw, ubw, lbg, ubg : numpy.ndarray
        Bounds of the decision variables and of the constraints.
    gname : list of str
        One label per constraint row.
    slacks : list of (str, float)
        Label and penalty weight of each slack, in the order of the slack block.
    blocks : dict
        Block name → slice of ``w`` (``X``, ``U``, ``Xc``, ``T``, ``S``).
    fns : dict
        The interval Functions (``step`` or ``coll``, ``out``).
    calls : Calls, optional
        The mapped calls of the interval Functions the NLP is built from.
    glue : tuple, optional
        ``(f, g)`` over the calls' placeholders (see :mod:`.structured`).
    """

    nlp: dict
    lbw: np.ndarray
    ubw: np.ndarray
    lbg: np.ndarray
    ubg: np.ndarray
    gname: list
    slacks: list
    blocks: dict
    fns: dict
    calls: Any = None
    glue: Any = None


def _nargs(fn: Any) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 1


def _inputs(ocp: OCP, u: Any, d: Any) -> Any:
    """The model's ``Inputs`` tuple from one interval's control vector ``u`` and its
    non-manipulated input vector ``d`` (symbolic)."""
    group = ocp.model.layout.inputs
    vals = []
    for lf in group.leaves:
        src, sl = ((u, ocp.control_slots[lf.name]) if lf.name in ocp.control_slots
                   else (d, ocp.other_slots[lf.name]))
        vals.append(src[sl.start] if not lf.shape else src[sl])
    return group.from_leaves(vals)


def _model(ocp: OCP, th: Any) -> Model:
    names = ocp.theta_names
    return ocp.model.with_params({n: th[i] for i, n in enumerate(names)}) if names else ocp.model


def _rhs(model: Model, x: Any, u_in: Any) -> Any:
    st = model.layout.states
    return st.ravel(model.rhs(0.0, st.unravel(x, casadi_ops), u_in, casadi_ops), casadi_ops)


def _outputs(model: Model, x: Any, u_in: Any) -> Any:
    lay = model.layout
    if not lay.outputs.size:
        return ca.SX.zeros(0, 1)
    return lay.outputs.ravel(model.measure(0.0, lay.states.unravel(x, casadi_ops), u_in,
                                           casadi_ops), casadi_ops)


def _stage(ocp: OCP, model: Model, x: Any, u_in: Any) -> Any:
    return ocp.stage(model.layout.states.unravel(x, casadi_ops), u_in)


def radau(degree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Radau IIA points ``tau`` (with 0 prepended) and CasADi's collocation matrices
    ``C`` (derivatives), ``D`` (end value), ``B`` (quadrature weights)."""
    tau = np.append(0.0, ca.collocation_points(degree, "radau"))
    C, D, B = ca.collocation_coeff(tau[1:])
    return tau, np.asarray(C), np.asarray(D).ravel(), np.asarray(B).ravel()


def interval_functions(ocp: OCP) -> dict[str, Any]:
    """The CasADi Functions of one control interval, built once from the model's SX
    equations: ``step`` (shooting / discrete) or ``coll`` (collocation), and ``out``
    (outputs at a node).

    Parameters
    ----------
    ocp : OCP
        The problem (model, controls, transcription options).
    """
    lay = ocp.model.layout
    nx, ny = lay.states.size, lay.outputs.size
    x, u = ca.SX.sym("x", nx), ca.SX.sym("u", ocp.nu)
    d, th, h = ca.SX.sym("d", ocp.nd), ca.SX.sym("th", len(ocp.theta_names)), ca.SX.sym("h")
    model = _model(ocp, th)
    u_in = _inputs(ocp, u, d)
    fns = {"out": ca.Function("out", [x, u, d, th], [_outputs(model, x, u_in)])}
    if ocp.mayer is not None:  # the terminal cost of the final state and time
        tf = ca.SX.sym("tf")
        xs = lay.states.unravel(x, casadi_ops)
        val = ocp.mayer(xs, tf) if _nargs(ocp.mayer) >= 2 else ocp.mayer(xs)
        fns["mayer"] = ca.Function("mayer", [x, tf], [val])
    q = ca.SX(0.0)
    xk = x
    if model.is_discrete:
        st, dt = lay.states, model.sample_time
        for i in range(ocp.substeps_per_interval):
            if ocp.stage is not None:
                q += dt * _stage(ocp, model, xk, u_in)
            xk = st.ravel(model.step(i * dt, st.unravel(xk, casadi_ops), u_in, dt,
                                     casadi_ops), casadi_ops)
    else:
        n = ocp.substeps_per_interval
        hs = h / n
        for _ in range(n):  # RK4 on the state and the stage integral together
            k1 = _rhs(model, xk, u_in)
            k2 = _rhs(model, xk + hs / 2 * k1, u_in)
            k3 = _rhs(model, xk + hs / 2 * k2, u_in)
            k4 = _rhs(model, xk + hs * k3, u_in)
            if ocp.stage is not None:
                q += hs / 6 * (_stage(ocp, model, xk, u_in)
                               + 2 * _stage(ocp, model, xk + hs / 2 * k1, u_in)
                               + 2 * _stage(ocp, model, xk + hs / 2 * k2, u_in)
                               + _stage(ocp, model, xk + hs * k3, u_in))
            xk = xk + hs / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    # the shooting map; with collocation it simulates the initial guess
    fns["step"] = ca.Function("step", [x, u, d, th, h], [xk, q])
    if ocp.stage is not None:
        fns["stage"] = ca.Function("stage", [x, u, d, th], [_stage(ocp, model, x, u_in)])
    if ocp.method != "collocation":
        return fns
    E, deg = ocp.elements, ocp.degree
    _, C, D, B = radau(deg)
    Xc = ca.SX.sym("Xc", nx, E * deg)
    he = h / E
    xs, q, res, ys = x, ca.SX(0.0), [], []
    for e in range(E):
        pts = Xc[:, e * deg:(e + 1) * deg]
        Z = ca.horzcat(xs, pts)
        Pidot = Z @ ca.DM(C)
        for j in range(deg):
            res.append(he * _rhs(model, pts[:, j], u_in) - Pidot[:, j])
            ys.append(_outputs(model, pts[:, j], u_in))
            if ocp.stage is not None:
                q += he * B[j] * _stage(ocp, model, pts[:, j], u_in)
        xs = Z @ ca.DM(D)
    fns["coll"] = ca.Function("coll", [x, Xc, u, d, th, h],
                              [ca.horzcat(*res), xs, q,
                               ca.horzcat(*ys) if ny else ca.SX.zeros(0, E * deg)])
    return fns


def split_parameters(ocp: OCP, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-interval blocks of a numeric NLP parameter vector: θ (N × nθ) and the other
    inputs (N × nd).

    Parameters
    ----------
    ocp : OCP
        The problem.
    p : numpy.ndarray
        Its NLP parameters (:meth:`OCP.p_values`).
    """
    N, nth, nd = ocp.N, len(ocp.theta_names), ocp.nd
    return p[:nth * N].reshape(N, nth), p[nth * N:nth * N + nd * N].reshape(N, nd)


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


class _Builder:
    """Accumulates decision blocks and constraint rows of the NLP."""

    def __init__(self) -> None:
        self.w: list[Any] = []
        self.lbw: list[np.ndarray] = []
        self.ubw: list[np.ndarray] = []
        self.blocks: dict[str, slice] = {}
        self.n = 0
        self.g: list[Any] = []
        self.lbg: list[np.ndarray] = []
        self.ubg: list[np.ndarray] = []
        self.gname: list[str] = []

    def var(self, name: str, sym: Any, lo: Any, hi: Any) -> Any:
        size = sym.numel()
        self.w.append(ca.vec(sym))
        self.lbw.append(np.broadcast_to(np.asarray(lo, float), (size,)).ravel())
        self.ubw.append(np.broadcast_to(np.asarray(hi, float), (size,)).ravel())
        self.blocks[name] = slice(self.n, self.n + size)
        self.n += size
        return sym

    def con(self, expr: Any, lo: Any, hi: Any, names: list[str]) -> None:
        expr = ca.vec(expr)
        size = expr.numel()
        if not size:
            return
        assert len(names) == size, (len(names), size)
        self.g.append(expr)
        self.lbg.append(np.broadcast_to(np.asarray(lo, float), (size,)).ravel())
        self.ubg.append(np.broadcast_to(np.asarray(hi, float), (size,)).ravel())
        self.gname += names


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def transcribe(ocp: OCP, soften_all: bool = False) -> NLP:
    """Build the NLP of ``ocp``; with ``soften_all`` every constraint gets a slack
    (diagnosis).

    Parameters
    ----------
    ocp : OCP
        The problem.
    soften_all : bool
        Give every state/output constraint a slack (weight 1e4) and leave only the
        dynamics hard: the least-violation problem of the diagnosis.
    """
    lay = ocp.model.layout
    nx, nu, N, M = lay.states.size, ocp.nu, ocp.N, ocp.M
    fns = interval_functions(ocp)
    b = _Builder()
    calls = Calls()      # every mapped call, as placeholders (exact structured derivatives)
    # NLP parameters
    nth, nd = len(ocp.theta_names), ocp.nd
    P = ca.MX.sym("p", nth * N + nd * N + nu + 1)
    TH = ca.reshape(P[:nth * N], nth, N)
    D = ca.reshape(P[nth * N:nth * N + nd * N], nd, N)
    prev = P[nth * N + nd * N:nth * N + nd * N + nu]
    # decision variables
    lo_x, hi_x = lay.states.bounds(strict_margin=1e-9)  # where the model is defined
    X = b.var("X", ca.MX.sym("X", nx, N + 1), np.tile(lo_x, N + 1), np.tile(hi_x, N + 1))
    lo_u, hi_u = control_bounds(ocp)
    U = b.var("U", ca.MX.sym("U", nu, M), np.tile(lo_u, M), np.tile(hi_u, M))
    Uk = ca.horzcat(U, ca.repmat(U[:, M - 1], 1, N - M)) if N > M else U
    Xc = None
    if ocp.method == "collocation":
        K = ocp.elements * ocp.degree
        Xc = b.var("Xc", ca.MX.sym("Xc", nx, N * K), np.tile(lo_x, N * K),
                   np.tile(hi_x, N * K))
    if ocp.free_time is not None:
        lo_T, hi_T = ocp.free_time
        T = b.var("T", ca.MX.sym("T"), lo_T, hi_T)
    else:
        T = P[-1]
    h = T / N
    hrow = ca.repmat(h, 1, N)
    names = lay.states.flat_names()
    J: Any = 0
    # dynamics
    if Xc is None:
        Xn, Q = calls(fns["step"], N, X[:, :N], Uk, D, TH, hrow)
        b.con(X[:, 1:] - Xn, 0.0, 0.0,
              [f"continuity {s} at {ocp.at_node(k + 1)}" for k in range(N) for s in names])
        Yc = None
    else:
        K = ocp.elements * ocp.degree
        tau, *_ = radau(ocp.degree)
        pos = [(e + tau[j + 1]) / ocp.elements for e in range(ocp.elements)
               for j in range(ocp.degree)]
        Xc3 = ca.horzsplit(Xc, list(range(0, N * K + 1, K)))
        RES, Xn, Q, Yc = calls(fns["coll"], N, X[:, :N], ca.horzcat(*Xc3), Uk, D, TH, hrow)
        b.con(RES, 0.0, 0.0, [f"collocation {s} at {ocp.at_node(k + p)}" for k in range(N)
                              for p in pos for s in names])
        b.con(X[:, 1:] - Xn, 0.0, 0.0,
              [f"continuity {s} at {ocp.at_node(k + 1)}" for k in range(N) for s in names])
    if ocp.stage is not None and ocp.stage_rule == "rectangle":
        J += h * ca.sum2(calls(fns["stage"], N, X[:, :N], Uk, D, TH))
    elif ocp.stage is not None:  # (an unused output would still be differentiated)
        J += ca.sum2(Q)
    # input rate limits and move penalties (the previous input is an NLP parameter)
    for c, sl in ocp.control_slots.items():
        n_c = sl.stop - sl.start
        first = 0 if c in ocp.u_prev else 1
        if M <= first:
            continue
        left = ca.horzcat(prev[sl], U[sl, :M - 1]) if first == 0 else U[sl, :M - 1]
        du = U[sl, first:] - left
        if c in ocp.rate:
            rate = np.broadcast_to(ocp.rate[c], (n_c,))
            b.con(du, np.tile(-rate, M - first), np.tile(rate, M - first),
                  [f"rate of `{c}` at {ocp.at_node(k)}" for k in range(first, M)
                   for _ in range(n_c)])
        if c in ocp.du_weight:
            J += ocp.du_weight[c] * ca.sumsqr(du)
    if ocp.mayer is not None:
        J += calls(fns["mayer"], 1, X[:, N], T)
    if ocp.time_weight:
        J += ocp.time_weight * T
    # state and output bounds: every node after the first (path) and, with collocation,
    # every collocation point, or the final node (terminal)
    Ynodes = calls(fns["out"], N + 1, X, ca.horzcat(Uk, Uk[:, N - 1]), ca.horzcat(D, D[:, N - 1]),
                   ca.horzcat(TH, TH[:, N - 1])) if lay.outputs.size else None
    slacks: list[tuple[str, float]] = []
    soft_rows: list[tuple[Any, float, float, list[str]]] = []  # expr, sign, bound, labels
    hard: list[tuple[Any, Any, Any, list[str]]] = []
    groups = [(n, v, False) for n, v in ocp.path.items()]
    groups += [(n, v, True) for n, v in ocp.terminal.items()]
    for name, ((lo, hi), soft), is_terminal in groups:
        is_state = name in lay.states
        lf = lay.states.leaf(name) if is_state else lay.outputs.leaf(name)
        src = X if is_state else Ynodes
        if is_terminal:
            expr = src[lf.start:lf.stop, N]
            where = ["end"]
        else:
            expr = src[lf.start:lf.stop, 1:]
            where = [ocp.at_node(k) for k in range(1, N + 1)]
            if Xc is not None:  # and at every collocation point
                pts = (Xc if is_state else Yc)[lf.start:lf.stop, :]
                expr = ca.horzcat(expr, pts)
                where += [ocp.at_node(k + p) for k in range(N) for p in pos]
        labels_of = [(f"`{el}`", w) for w in where for el in lf.flat_names()]
        weight = soft if soft is not None else (1e4 if soften_all else None)
        for bound, sign, word in ((lo, -1.0, "≥"), (hi, 1.0, "≤")):
            if bound is None:
                continue
            labels = [f"{el} {word} {bound:g} at {w}" for el, w in labels_of]
            if weight is None:
                hard.append((sign * (ca.vec(expr) - bound), -np.inf, 0.0, labels))
            else:
                soft_rows.append((ca.vec(expr), sign, bound, labels))
                slacks += [(lbl, float(weight)) for lbl in labels]
    for row in hard:
        b.con(*row)
    if slacks:
        S = b.var("S", ca.MX.sym("S", len(slacks)), 0.0, np.inf)
        i = 0
        for expr, sign, bound, labels in soft_rows:
            n = len(labels)
            b.con(sign * (expr - bound) - S[i:i + n], -np.inf, 0.0, labels)
            i += n
        J += ca.dot(ca.DM([wt for _, wt in slacks]), S)
    G = ca.vertcat(*b.g) if b.g else ca.MX(0, 1)
    J = ca.MX(J) if not isinstance(J, ca.MX) else J
    f_real, g_real = calls.substitute([J, G])
    nlp = {"x": ca.vertcat(*b.w), "f": f_real, "g": g_real, "p": P}
    return NLP(nlp, _cat(b.lbw), _cat(b.ubw), _cat(b.lbg), _cat(b.ubg), b.gname, slacks,
               b.blocks, fns, calls, (J, G))
