"""Thermal benchmark: processtwin vs scipy solve_ivp (BDF with the Jacobian pattern, LSODA).

Three cases, timed side by side in one run, the same equations for every solver, rtol 1e-6
and atol 1e-6 [K] everywhere:

* **building year** — ``Building(n_zones=20)`` (4 × 5 grid of zones, internal walls to
  each neighbour), 365 days of Sand Point typical-year weather held at 15 min (hourly data
  interpolated to the quarter hours), a 15-min heating schedule per zone and a 15-min
  occupancy: 35,040 input switches, hourly outputs. Error against the exact solution (the
  model is linear with piecewise-constant inputs: ``y_{k+1} = e^{AΔ} y_k + ∫ e^{As} ds b_k``
  by ``scipy.linalg.expm``).
* **pipe day** — ``Pipe(n_cells=200)`` (400 states), a day with a 15-min held flow
  (1–6 kg/s, a demand profile) and a linear diurnal inlet temperature, 15-min outputs.
  Error against DOP853 at rtol 1e-12.
* **district-heating day** — ``district_heating()`` (91 states; inputs of
  ``experiments/district_heating_day``, hourly switches), 15-min outputs. Error (temperature
  states; ``R_f`` left out) against Radau at rtol 1e-10 with the exact sparse Jacobian.

Then a **1,000-member ensemble of the building year** (uncertain ``c_e`` and ``h_ea``,
±20 %). processtwin: ``simulate`` (``tsit5`` for the building; ``rodas``, the sparse
Rosenbrock solver, and ``tsit5`` for the pipe; ``rodas`` and ``kvaerno5`` for the district
heating; the first row of each case is the one its ratios are taken against), warm median
of ``--repeat`` calls, the first (compiling)
call reported on its own. scipy: the right-hand side as vectorised numpy mirroring the model
(checked against the model's own ``rhs`` with ``numpy_ops`` to 1e-12) for the building and
the pipe, the model's ``rhs`` as a CasADi SX function for the district heating (its
Jacobian pattern and, for the reference, its Jacobian from the same graph);
``solve_ivp`` restarted at every input switch (piecewise-constant inputs), BDF given
``jac_sparsity``. The building year is run in one processtwin call and as 73 chained calls
of 5 days (see README); BDF on the building is timed on ``--bdf-days`` and scaled to the
year; the ensemble on ``--adaptive-windows`` / ``--fixed-windows`` 5-day windows scaled to
73 (pass 73 to run the whole year).

    python experiments/bench/bench_thermal.py [--quick] [--members 1000] [--prototype]

Results are printed and written to ``experiments/bench/results/thermal.json`` (not with
``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import casadi as ca
import numpy as np
import scipy
import scipy.sparse as sp
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import processtwin as pt
from processtwin.models import Building, Pipe, district_heating
from processtwin.ops import casadi_ops, jax_ops, numpy_ops
from processtwin.signals import as_inputs
from processtwin.weather import building_inputs, example_weather, read_weather

RTOL = ATOL = 1e-6
DT = 900.0  # input switching interval [s]
DAY = 86400.0
NZ = 20  # zones
WINDOW_DAYS = 5  # chained building calls: 73 windows of 5 days
MAX_STEPS = 400_000


# ---- helpers ---------------------------------------------------------------------------
def numpy_rhs(model):
    """The model's own rhs on flat vectors, evaluated with ``numpy_ops`` (slow; checks)."""
    lay = model.layout

    def f(y, u):
        x = lay.states.unravel(np.asarray(y, dtype=float), numpy_ops)
        return np.asarray(lay.states.ravel(model.rhs(0.0, x, lay.inputs.unravel(
            np.asarray(u, dtype=float), numpy_ops), numpy_ops), numpy_ops), dtype=float)
    return f


def casadi_rhs(model):
    """The model's rhs as a CasADi SX function ``F(x, u)``, its Jacobian ``J(x, u)`` and the
    Jacobian's sparsity pattern (scipy CSC)."""
    lay = model.layout
    nx, nu = lay.states.size, lay.inputs.size
    x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
    f = lay.states.ravel(model.rhs(0.0, lay.states.unravel(x, casadi_ops),
                                   lay.inputs.unravel(u, casadi_ops), casadi_ops), casadi_ops)
    jac = ca.jacobian(f, x)
    s = jac.sparsity()
    pattern = sp.csc_matrix((np.ones(s.nnz()), s.row(), s.colind()), shape=(nx, nx))
    return ca.Function("f", [x, u], [f]), ca.Function("J", [x, u], [jac]), pattern


def rel_check(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def warm(fn, repeat):
    """First call (compiles) and the median of ``repeat`` further calls [s]."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, first, float(np.median(times)), times


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times)), times


def row(name, seconds, steps, err, **extra):
    return {"name": name, "seconds": float(seconds), "steps": None if steps is None else
            int(steps), "max_abs_err_K": float(err), **extra}


def segments(edges, y0, rhs, method, args_of, t_out=None, **kw):
    """``solve_ivp`` restarted at every switch ``edges[k]``: states at ``edges`` (or at
    ``t_out`` inside the segments, by ``t_eval``), steps, rhs and Jacobian evaluations."""
    y = np.array(y0, dtype=float)
    outs, steps, nfev, njev = [y.copy()], 0, 0, 0
    for k in range(len(edges) - 1):
        a, b = edges[k], edges[k + 1]
        te, add_end = None, False
        if t_out is not None:
            te = t_out[(t_out > a) & (t_out <= b)]
            add_end = te.size == 0 or te[-1] != b
            te = np.append(te, b) if add_end else te
        s = solve_ivp(rhs, (a, b), y, method=method, rtol=RTOL, atol=ATOL, args=args_of(k),
                      t_eval=te, **kw)
        if not s.success:
            raise RuntimeError(f"solve_ivp {method} failed at t={a:g}: {s.message}")
        y = s.y[:, -1]
        if t_out is None:
            outs.append(y.copy())
            steps += s.t.size - 1
        else:
            outs.extend((s.y[:, :-1] if add_end else s.y).T)
        nfev += s.nfev
        njev += s.njev
    return np.asarray(outs), (steps if t_out is None else None), nfev, njev


# ---- building year -----------------------------------------------------------------------
def building_setup(days):
    rng = np.random.default_rng(1)
    walls = []
    for r in range(4):
        for c in range(5):
            k = 5 * r + c
            if c < 4:
                walls.append((k, k + 1, 20.0))
            if r < 3:
                walls.append((k, k + 5, 25.0))
    floor = tuple(float(a) for a in np.round(rng.uniform(60.0, 140.0, NZ), 1))
    model = Building(n_zones=NZ, floor_area=floor, adjacency=tuple(walls))
    azimuth = (0.0, 90.0, 180.0, 270.0) * 5
    weather = read_weather(example_weather("sand_point"))  # on one calendar year
    w = building_inputs(weather, azimuth, days=days)
    th = w.pop("times")
    tq = np.arange(0.0, days * DAY, DT)
    T_out = np.interp(tq, th, np.asarray(w["T_out"].values))
    I_sol = np.stack([np.interp(tq, th, v) for v in np.asarray(w["I_sol"].values)])
    hour = (tq / 3600.0) % 24
    day = (hour >= 6) & (hour < 22)
    fa = np.asarray(floor)[:, None]
    # a heating curve per zone: loss at the set point minus internal and solar gains,
    # set back at night, ±10 % per quarter hour (what a controller's log looks like)
    Q = np.clip(1.3 * fa * (np.where(day, 21.0, 17.0) - T_out)[None] - 5.6 * fa
                - 0.09 * fa * I_sol, 0.0, 60.0 * fa) * rng.uniform(0.9, 1.1, I_sol.shape)
    occ = np.where(day, 0.4, 1.0) * rng.uniform(0.8, 1.0, tq.size)
    T_g = float(np.asarray(w["T_ground"].values)[0])
    lay = model.layout
    U = np.zeros((tq.size, lay.inputs.size))  # inputs per switch, in layout order
    for leaf in lay.inputs.leaves:
        v = {"Q_hvac": Q.T, "T_out": T_out, "T_ground": T_g, "I_sol": I_sol.T,
             "occupancy": occ}[leaf.name]
        U[:, leaf.start:leaf.stop] = np.reshape(v, (-1, leaf.size)) if leaf.shape else \
            np.broadcast_to(v, tq.shape)[:, None]
    x0 = np.concatenate([np.full(NZ, 20.0), np.full(NZ, 15.0)])
    return {"model": model, "tq": tq, "T_out": T_out, "I_sol": I_sol, "Q": Q, "occ": occ,
            "T_ground": T_g, "U": U, "x0": x0, "floor": floor}


def building_signals(b, lo, hi):
    """processtwin inputs over the switches ``lo:hi`` (hold signals)."""
    tk = b["tq"][lo:hi]
    return {"T_out": pt.hold(tk, b["T_out"][lo:hi]), "I_sol": pt.hold(tk, b["I_sol"][:, lo:hi]),
            "Q_hvac": pt.hold(tk, b["Q"][:, lo:hi]),
            "occupancy": pt.hold(tk, b["occ"][lo:hi]), "T_ground": b["T_ground"]}


def affine(model):
    """``f(y, u) = A y + E u + c``, read off the model's own rhs (numpy_ops): it is linear."""
    f = numpy_rhs(model)
    nx, nu = model.layout.states.size, model.layout.inputs.size
    c = f(np.zeros(nx), np.zeros(nu))
    A = np.column_stack([f(e, np.zeros(nu)) - c for e in np.eye(nx)])
    E = np.column_stack([f(np.zeros(nx), e) - c for e in np.eye(nu)])
    return A, E, c, f


def exact_building(A, forcing, x0):
    """States at every switch: ``y_{k+1} = Φ y_k + Ψ b_k`` (Φ = e^{AΔ}, Ψ = ∫_0^Δ e^{As} ds)."""
    n = A.shape[0]
    big = np.zeros((2 * n, 2 * n))
    big[:n, :n], big[:n, n:] = A * DT, np.eye(n) * DT
    M = expm(big)
    Phi, Psi = M[:n, :n], M[:n, n:]
    push = forcing @ Psi.T
    ys = np.empty((forcing.shape[0] + 1, n))
    ys[0] = x0
    for k in range(forcing.shape[0]):
        ys[k + 1] = Phi @ ys[k] + push[k]
    return ys


def building_chained(b, n_windows, solver="tsit5"):
    """The year as chained 5-day calls of ``simulate``: hourly states, steps."""
    model, kw = b["model"], WINDOW_DAYS * 96
    x, outs, steps = b["x0"], [b["x0"][None]], 0
    for w in range(n_windows):
        t = w * kw * DT + np.arange(0.0, kw * DT + 1.0, 3600.0)
        r = pt.simulate(model, x, building_signals(b, w * kw, (w + 1) * kw), t, solver=solver,
                        rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS)
        st = np.asarray(r.states[0])
        x = st[-1]
        outs.append(st[1:])
        steps += r.stats["num_steps"]
    return np.concatenate(outs), steps


def building(args, out):
    days = args.days
    b = building_setup(days)
    model = b["model"]
    A, E, c, f = affine(model)
    rng = np.random.default_rng(5)
    y, u = rng.normal(18.0, 4.0, A.shape[0]), b["U"][1234 % b["U"].shape[0]]
    chk = rel_check(A @ y + E @ u + c, f(y, u))
    forcing = b["U"] @ E.T + c
    exact = exact_building(A, forcing, b["x0"])[::4]  # hourly
    print(f"\nbuilding: {NZ} zones, {days:g} days, {b['tq'].size} switches (15 min); "
          f"numpy rhs vs the model's rhs: {chk:.1e}; exact solution by expm")
    rows = []
    n_w = int(round(days / WINDOW_DAYS))

    def chained():
        return building_chained(b, n_w)

    (ys, steps), first, med, _ = warm(chained, args.repeat)
    err = float(np.abs(ys - exact).max())
    rows.append(row(f"processtwin simulate tsit5, {n_w} chained {WINDOW_DAYS}-day calls",
                    med, steps, err, first_call_s=first, calls=n_w))
    print(f"  ours (chained): {med:.3f} s, first call {first:.2f} s, {steps} steps, "
          f"err {err:.1e}", flush=True)
    if args.one_call:
        t_h = np.arange(0.0, days * DAY + 1.0, 3600.0)
        inputs = building_signals(b, 0, b["tq"].size)

        def one():
            r = pt.simulate(model, b["x0"], inputs, t_h, solver="tsit5", rtol=RTOL, atol=ATOL,
                            max_steps=MAX_STEPS)
            return np.asarray(r.states[0]), r.stats["num_steps"]

        (ys1, steps1), first1, med1, _ = warm(one, 1)
        err1 = float(np.abs(ys1 - exact).max())
        rows.append(row("processtwin simulate tsit5, one call", med1, steps1, err1,
                        first_call_s=first1, calls=1))
        print(f"  ours (one call): {med1:.3f} s, first call {first1:.2f} s, {steps1} steps, "
              f"err {err1:.1e}", flush=True)
    edges = np.append(b["tq"], days * DAY)
    pattern = sp.csc_matrix(A != 0)
    for method, kw, span in (("LSODA", {}, days), ("BDF", {"jac_sparsity": pattern},
                                                    min(days, args.bdf_days))):
        k = int(round(span * 96))

        def run(method=method, kw=kw, k=k):
            return segments(edges[:k + 1], b["x0"], lambda t, y, bk: A @ y + bk, method,
                            lambda i: (forcing[i],), **kw)

        (ys_s, steps_s, nfev, njev), t_s, _ = timed(run, 1)
        scale = days / span
        err_s = float(np.abs(ys_s[::4] - exact[:ys_s[::4].shape[0]]).max())
        label = f"scipy solve_ivp {method}" + (" (jac_sparsity)" if kw else "")
        if scale != 1:
            label += f" ({span:g} d run, x{scale:g})"
        rows.append(row(label, t_s * scale, int(steps_s * scale), err_s, measured_s=t_s,
                        measured_days=span, nfev=nfev, njev=njev, segments=k))
        print(f"  {label}: {t_s * scale:.2f} s ({t_s:.2f} s and {steps_s} steps measured), "
              f"err {err_s:.1e}", flush=True)
    out["building"] = rows
    return b


# ---- pipe day ----------------------------------------------------------------------------
def pipe_setup():
    model = Pipe(n_cells=200)
    rng = np.random.default_rng(2)
    tq = np.arange(0.0, DAY, DT)
    h = tq / 3600.0
    m_dot = np.clip(3.0 + 2.5 * np.sin(np.pi * (h - 6.0) / 12.0) ** 2 * ((h > 6) & (h < 22))
                    + rng.uniform(-0.3, 0.3, tq.size), 1.0, None)
    th = np.arange(0.0, DAY + 1.0, 3600.0)
    T_in = 75.0 + 5.0 * np.cos(2 * np.pi * (th / 3600.0 - 7.0) / 24.0)
    return model, tq, m_dot, th, T_in


def pipe(args, out):
    model, tq, m_dot, th, T_in = pipe_setup()
    N = model.n_cells
    inputs = {"m_dot": pt.hold(tq, m_dot), "T_in": pt.linear(th, T_in), "T_amb": 8.0}
    x0 = np.concatenate([np.full(N, 70.0), np.full(N, 65.0)])
    t_out = np.arange(0.0, DAY + 1.0, DT)
    dx = model.L / N
    m_cell = model.rho * np.pi * model.D ** 2 / 4 * dx
    g_film = model.h * np.pi * model.D * dx

    def rhs(t, y, md):
        T, Tw = y[:N], y[N:]
        up = np.empty(N)
        up[0] = np.interp(t, th, T_in)
        up[1:] = T[:-1]
        q = g_film * (T - Tw)
        return np.concatenate([(md * model.cp * (up - T) - q) / (m_cell * model.cp),
                               (q - model.U * dx * (Tw - 8.0)) / (model.c_w * dx)])

    f_model = numpy_rhs(model)
    rng = np.random.default_rng(6)
    y = rng.normal(60.0, 5.0, 2 * N)
    u = model.layout.inputs.values({"m_dot": m_dot[7], "T_in": float(np.interp(
        4000.0, th, T_in)), "T_amb": 8.0})
    chk = rel_check(rhs(4000.0, y, m_dot[7]), f_model(y, u))
    _, _, pattern = casadi_rhs(model)
    edges = np.append(tq, DAY)
    print(f"\npipe: {N} cells ({2 * N} states), one day, {tq.size} flow switches; numpy rhs "
          f"vs the model's rhs: {chk:.1e}; pattern nnz {pattern.nnz}")
    ref = _tight(edges, x0, rhs, lambda k: (m_dot[k],), "DOP853", 1e-12)
    rows = []
    for solver in ("rodas", "tsit5") + (("kvaerno5",) if args.kvaerno5 else ()):
        def ours(solver=solver):
            r = pt.simulate(model, x0, inputs, t_out, solver=solver, rtol=RTOL, atol=ATOL,
                            max_steps=MAX_STEPS)
            return np.asarray(r.states[0]), r.stats["num_steps"]

        (ys, steps), first, med, _ = warm(ours, 1 if solver == "kvaerno5" else args.repeat)
        err = float(np.abs(ys - ref).max())
        rows.append(row(f"processtwin simulate {solver}", med, steps, err, first_call_s=first))
        print(f"  ours {solver}: {med:.3f} s, first call {first:.2f} s, {steps} steps, "
              f"err {err:.1e}", flush=True)
    for method, kw in (("BDF", {"jac_sparsity": pattern}), ("LSODA", {})):
        def run(method=method, kw=kw):
            return segments(edges, x0, rhs, method, lambda k: (m_dot[k],), **kw)

        (ys, steps, nfev, njev), t_s, _ = timed(run, args.repeat_scipy)
        err = float(np.abs(ys - ref).max())
        label = f"scipy solve_ivp {method}" + (" (jac_sparsity)" if kw else "")
        rows.append(row(label, t_s, steps, err, nfev=nfev, njev=njev))
        print(f"  {label}: {t_s:.3f} s, {steps} steps, {nfev} rhs, err {err:.1e}", flush=True)
    out["pipe"] = rows


def _tight(edges, x0, rhs, args_of, method, tol, jac=None):
    y = np.array(x0, dtype=float)
    outs = [y.copy()]
    for k in range(len(edges) - 1):
        kw = {"jac": jac} if jac is not None else {}
        s = solve_ivp(rhs, (edges[k], edges[k + 1]), y, method=method, rtol=tol, atol=tol,
                      args=args_of(k), **kw)
        y = s.y[:, -1]
        outs.append(y.copy())
    return np.asarray(outs)


# ---- district heating day --------------------------------------------------------------
def dh_inputs():
    weather = read_weather(example_weather("sand_point"))
    w = building_inputs(weather, (180.0, 90.0, 0.0), start="1997-01-15", days=1)
    t = w.pop("times")
    T_out = np.asarray(w["T_out"].values)
    hour = (t / 3600.0) % 24
    day = (hour >= 6) & (hour < 22)
    return {
        "building.T_out": w["T_out"], "building.I_sol": w["I_sol"],
        "building.T_ground": w["T_ground"], "plant.T_src": w["T_out"],
        "plant.y": pt.hold(t, np.clip(0.35 + 0.02 * (5.0 - T_out), 0.2, 1.0)),
        "plant.m_w": 0.8,
        "emitters.m_w": pt.hold(t, np.tile(np.where(day, 0.08, 0.03), (3, 1))),
        "building.occupancy": pt.hold(t, np.where(day, 0.4, 1.0)),
    }


def district(args, out):
    model = district_heating()
    lay = model.layout
    inputs = dh_inputs()
    t_out = np.arange(0.0, DAY + 1.0, DT)
    x0 = lay.states.values(None)
    F, J, pattern = casadi_rhs(model)
    sigs = as_inputs(model, inputs)
    switch = np.unique(np.concatenate([np.asarray(s.times).ravel() for s in sigs
                                       if np.asarray(s.times).size > 1]))
    edges = np.concatenate([[0.0], switch[(switch > 0) & (switch < DAY)], [DAY]])
    U = [lay.inputs.ravel_leaves([np.asarray(s(a)) for s in sigs], numpy_ops)
         for a in edges[:-1]]
    U_dm = [ca.DM(np.asarray(uk, dtype=float)) for uk in U]

    def rhs(t, y, ud):
        return F(y, ud).full().ravel()

    def jac(t, y, ud):
        m = J(y, ud)
        s = m.sparsity()
        return sp.csc_matrix((np.asarray(m.nonzeros()), s.row(), s.colind()), shape=m.shape)

    chk = rel_check(rhs(0.0, x0, U_dm[3]), numpy_rhs(model)(x0, U[3]))
    keep = np.array([not n.endswith("R_f") for n in lay.states.flat_names()])
    print(f"\ndistrict heating: {lay.states.size} states, one day, {len(edges) - 1} input "
          f"segments; CasADi rhs vs the model's numpy rhs: {chk:.1e}; pattern nnz "
          f"{pattern.nnz} of {lay.states.size ** 2}")
    ref = _dense_tight(edges, x0, rhs, jac, U_dm, t_out)
    rows = []

    for solver in ("rodas", "kvaerno5"):
        def ours(solver=solver):
            r = pt.simulate(model, x0, inputs, t_out, solver=solver, rtol=RTOL, atol=ATOL,
                            max_steps=MAX_STEPS)
            return np.asarray(r.states[0]), r.stats["num_steps"]

        (ys, steps), first, med, _ = warm(ours, args.repeat)
        err = float(np.abs(ys - ref)[:, keep].max())
        rows.append(row(f"processtwin simulate {solver}", med, steps, err,
                        first_call_s=first))
        print(f"  ours {solver}: {med:.3f} s, first call {first:.2f} s, {steps} steps, "
              f"err {err:.1e}", flush=True)
    for method, kw in (("BDF", {"jac_sparsity": pattern}), ("LSODA", {}),
                       ("Radau", {"jac_sparsity": pattern})):
        def run(method=method, kw=kw):
            return segments(edges, x0, rhs, method, lambda k: (U_dm[k],), t_out=t_out, **kw)

        (ys, _, nfev, njev), t_s, _ = timed(run, args.repeat_scipy)
        _, steps, _, _ = segments(edges, x0, rhs, method, lambda k: (U_dm[k],), **kw)
        err = float(np.abs(ys - ref)[:, keep].max())
        label = f"scipy solve_ivp {method}" + (" (jac_sparsity)" if kw else "")
        rows.append(row(label, t_s, steps, err, nfev=nfev, njev=njev))
        print(f"  {label}: {t_s:.3f} s, {steps} steps, {nfev} rhs, err {err:.1e}", flush=True)
    out["district_heating"] = rows


def _dense_tight(edges, x0, rhs, jac, U_dm, t_out):
    """Radau at rtol = atol = 1e-10 with the exact Jacobian: states at ``t_out``."""
    y = np.array(x0, dtype=float)
    outs = [y.copy()]
    for k in range(len(edges) - 1):
        a, b = edges[k], edges[k + 1]
        te = t_out[(t_out > a) & (t_out <= b)]
        add_end = te.size == 0 or te[-1] != b
        s = solve_ivp(rhs, (a, b), y, method="Radau", rtol=1e-10, atol=1e-10, jac=jac,
                      args=(U_dm[k],), t_eval=np.append(te, b) if add_end else te)
        y = s.y[:, -1]
        outs.extend((s.y[:, :-1] if add_end else s.y).T)
    return np.asarray(outs)


# ---- ensemble ----------------------------------------------------------------------------
def ensemble(args, out, b):
    n = args.members
    rng = np.random.default_rng(3)
    model = b["model"]
    c_e = model.c_e * rng.uniform(0.8, 1.2, n)
    h_ea = model.h_ea * rng.uniform(0.8, 1.2, n)
    kw = WINDOW_DAYS * 96
    n_year = int(round(args.days / WINDOW_DAYS))
    check = [0, n // 2, n - 1]

    def exact_members(n_days):
        res = {}
        for i in check:
            A_i, E_i, c_i, _ = affine(model.replace(c_e=float(c_e[i]), h_ea=float(h_ea[i])))
            k = int(round(n_days * 96))
            res[i] = exact_building(A_i, b["U"][:k] @ E_i.T + c_i, b["x0"])[::96]  # daily
        return res

    def windows(n_w, **opts):
        X = np.tile(b["x0"], (n, 1))
        outs, times, steps = {i: [b["x0"][None]] for i in check}, [], 0
        for w in range(n_w):
            t = w * kw * DT + np.arange(0.0, kw * DT + 1.0, DAY)
            t0 = time.perf_counter()
            r = pt.ensemble(model, X, building_signals(b, w * kw, (w + 1) * kw), t,
                            params={"c_e": c_e, "h_ea": h_ea}, solver="tsit5", rtol=RTOL,
                            atol=ATOL, max_steps=MAX_STEPS, **opts)
            st = np.asarray(r.states)
            times.append(time.perf_counter() - t0)
            X = st[:, -1]
            steps += r.stats["num_steps"]
            for i in check:
                outs[i].append(st[i, 1:])
        return {i: np.concatenate(v) for i, v in outs.items()}, times, steps

    rows = []
    print(f"\nensemble: {n} building years (c_e, h_ea ±20 %), {WINDOW_DAYS}-day windows "
          f"chained, daily outputs; a year = {n_year} windows")
    for label, n_w, opts in (
            ("adaptive", args.adaptive_windows, {"chunk_size": args.chunk}),
            (f"fixed dt {args.fixed_dt:g} s", args.fixed_windows,
             {"chunk_size": args.chunk, "dt": args.fixed_dt})):
        if n_w <= 0:
            continue
        n_w = min(n_w, n_year)
        ys, times, steps = windows(n_w, **opts)
        ref = exact_members(n_w * WINDOW_DAYS)
        err = max(float(np.abs(ys[i] - ref[i]).max()) for i in check)
        warm_t = times[1:] if len(times) > 1 else times
        year = times[0] + float(np.mean(warm_t)) * (n_year - 1) if n_w < n_year else sum(times)
        name = (f"processtwin ensemble tsit5 {label}, chunk_size "
                f"{args.chunk if args.chunk else 'automatic'}"
                + (f" ({n_w} of {n_year} windows run, scaled)" if n_w < n_year else ""))
        rows.append(row(name, year, int(steps * n_year / n_w), err, measured_s=sum(times),
                        windows_run=n_w, window_s=times, members=n))
        print(f"  {name}: year {year:.1f} s (measured {sum(times):.1f} s over {n_w} windows: "
              f"first {times[0]:.1f} s, then {np.mean(warm_t):.2f} s each), "
              f"{steps} steps, err {err:.1e}", flush=True)
    if args.prototype:
        rows.append(prototype(args, b, c_e, h_ea, check, exact_members))
    lsoda = [r for r in out.get("building", []) if r["name"].startswith("scipy solve_ivp LSODA")]
    if lsoda:  # each member is an independent solve
        rows.append(row(f"scipy LSODA loop (the single year x{n}, estimate)",
                        lsoda[0]["seconds"] * n, lsoda[0]["steps"], lsoda[0]["max_abs_err_K"]))
        print(f"  {rows[-1]['name']}: {rows[-1]['seconds']:.0f} s")
    out["ensemble"] = rows


def prototype(args, b, c_e, h_ea, check, exact_members):
    """Not processtwin's API: what an ensemble with inputs shared by all members (not
    broadcast per member) and steps aligned to the switches costs — the model's own rhs
    (jax_ops), vmapped over members, fixed Tsit5 steps of ``--fixed-dt``, ``lax.scan``."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from jax import lax

    model, lay = b["model"], b["model"].layout
    tab = diffrax.Tsit5.tableau
    a = [[float(v) for v in r] for r in tab.a_lower]

    def rhs_one(ce, hea, y, u):
        m = eqx.tree_at(lambda m: (m.c_e, m.h_ea), model, (ce, hea))
        return lay.states.ravel(m.rhs(0.0, lay.states.unravel(y, jax_ops),
                                      lay.inputs.unravel(u, jax_ops), jax_ops), jax_ops)

    batched = jax.vmap(rhs_one, in_axes=(0, 0, 0, None))

    sub = int(round(DT / args.fixed_dt))
    h = DT / sub

    @jax.jit
    def run(ce, hea, Y0, U):
        def seg(y, u):
            for _ in range(sub):
                ks = [batched(ce, hea, y, u)]
                for s in range(1, 7):
                    ys = y + h * sum(a[s - 1][r] * ks[r] for r in range(s))
                    ks.append(batched(ce, hea, ys, u))
                y = ys
            return y, None

        def day(y, u_day):
            y, _ = lax.scan(seg, y, u_day)
            return y, y[jnp.asarray(check)]
        _, daily = lax.scan(day, Y0, U.reshape(-1, 96, U.shape[-1]))
        return daily

    Y0 = jnp.tile(jnp.asarray(b["x0"]), (c_e.size, 1))
    U = jnp.asarray(b["U"])
    t0 = time.perf_counter()
    run(c_e, h_ea, Y0, U[:96]).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    daily = np.asarray(run(c_e, h_ea, Y0, U))
    sec = time.perf_counter() - t0
    ref = exact_members(args.days)
    err = max(float(np.abs(daily[:, j] - ref[i][1:]).max()) for j, i in enumerate(check))
    name = (f"prototype (not the API): shared inputs, Tsit5 dt {h:g} s, vmap + scan")
    print(f"  {name}: {sec:.1f} s (compile {compile_s:.1f} s), {U.shape[0] * sub} steps, "
          f"err {err:.1e}", flush=True)
    return row(name, sec, int(U.shape[0] * sub), err, first_call_s=compile_s,
               members=c_e.size)


# ---- main --------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 10 days, 100 members, one repeat, no JSON")
    ap.add_argument("--days", type=float, default=365.0, help="building span [d]")
    ap.add_argument("--repeat", type=int, default=3, help="warm processtwin calls")
    ap.add_argument("--repeat-scipy", type=int, default=3, help="scipy runs (pipe, DH)")
    ap.add_argument("--bdf-days", type=float, default=30.0,
                    help="days of the building year BDF runs (scaled to the year)")
    ap.add_argument("--no-one-call", dest="one_call", action="store_false",
                    help="skip the building year as one simulate call (~1 min)")
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=None,
                    help="ensemble chunk_size (default: automatic)")
    ap.add_argument("--adaptive-windows", type=int, default=2,
                    help="5-day windows of the adaptive ensemble run (73: the year)")
    ap.add_argument("--fixed-windows", type=int, default=3,
                    help="5-day windows of the fixed-step ensemble run (73: the year)")
    ap.add_argument("--fixed-dt", type=float, default=300.0,
                    help="step of the fixed-step ensemble [s] (a divisor of 900)")
    ap.add_argument("--prototype", action="store_true",
                    help="also time the shared-input ensemble prototype (~1.5 min)")
    ap.add_argument("--kvaerno5", action="store_true",
                    help="also run the pipe with kvaerno5 (~1 min)")
    ap.add_argument("--cases", default="building,pipe,dh,ensemble",
                    help="comma-separated subset of building, pipe, dh, ensemble")
    ap.add_argument("--small-loop-bytes", type=int, default=pt.SMALL_LOOP_BYTES,
                    help="processtwin.configure(small_loop_bytes=...)")
    args = ap.parse_args()
    if args.quick:
        args.days, args.repeat, args.repeat_scipy, args.bdf_days = 10.0, 1, 1, 5.0
        args.members, args.adaptive_windows, args.fixed_windows = 100, 2, 2
    if not pt.configure(small_loop_bytes=args.small_loop_bytes):
        raise SystemExit("processtwin.configure() came after JAX started; nothing measured.")
    import jax

    machine = {"processor": platform.processor() or platform.machine(),
               "cores": os.cpu_count(), "python": platform.python_version(),
               "jax": jax.__version__, "scipy": scipy.__version__, "casadi": ca.__version__,
               "numpy": np.__version__, "date": date.today().isoformat(),
               "load_before": os.getloadavg()[0],
               "small_loop_bytes": args.small_loop_bytes}
    print(f"machine: {machine['processor']}, {machine['cores']} cores, jax {jax.__version__}, "
          f"scipy {scipy.__version__}, casadi {ca.__version__}; processtwin.configure("
          f"small_loop_bytes={args.small_loop_bytes}); rtol {RTOL:g} / atol {ATOL:g}; load "
          f"{machine['load_before']:.2f}")
    out: dict = {}
    t_all = time.perf_counter()
    cases = set(args.cases.split(","))
    b = building(args, out) if "building" in cases else None
    if "pipe" in cases:
        pipe(args, out)
    if "dh" in cases:
        district(args, out)
    if "ensemble" in cases:
        ensemble(args, out, b or building_setup(args.days))
    machine["load_after"] = os.getloadavg()[0]
    machine["total_s"] = time.perf_counter() - t_all

    print("\nsummary: warm wall time, steps, max abs error [K], time / the case's first row "
          "(for scipy: the speed-up of processtwin)")
    targets = {}
    for case in [c for c in ("building", "pipe", "district_heating", "ensemble") if c in out]:
        rows = out[case]
        base = rows[0]["seconds"]
        print(f"  {case}")
        for r in rows:
            r["ratio_vs_first"] = r["seconds"] / base
            print(f"    {r['name']:<72} {r['seconds']:9.3f} s {r['steps']:>9} "
                  f"{r['max_abs_err_K']:8.1e} {r['seconds'] / base:8.2f}x")
        if case != "ensemble":
            sc = {r["name"]: r["seconds"] / base for r in rows if r["name"].startswith("scipy")}
            targets[case] = {"ratios": sc, "target": 10.0,
                             "met": all(v >= 10.0 for v in sc.values())}
    if out.get("ensemble"):
        targets["ensemble"] = {"seconds": {r["name"]: r["seconds"] for r in out["ensemble"]},
                               "target_s": 60.0,
                               "met": any(r["seconds"] <= 60.0 for r in out["ensemble"]
                                          if r["name"].startswith("processtwin"))}
    print("\ntargets: ≥ 10x every scipy solver; ensemble year ≤ 60 s")
    for case, t in targets.items():
        print(f"  {case}: {t}")
    print(f"total {machine['total_s']:.0f} s")
    if not args.quick and len(cases) == 4:
        path = Path(__file__).parent / "results" / "thermal.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"machine": machine, "rtol": RTOL, "atol": ATOL,
                                    "days": args.days, "members": args.members, **out,
                                    "targets": targets}, indent=2, default=float) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
