"""Simulation benchmark: processtwin vs scipy solve_ivp (LSODA, RK45) vs CasADi cvodes.

One 150 h fed-batch (rtol 1e-8, 151 output times) and a 10,000-member ensemble (rtol 1e-6)
with uncertain mu_max and Y_xs, timed side by side in one run; errors are the maximum over
states and times of |y - y_ref| / max|y_ref| against scipy DOP853 at rtol 1e-13.

    python experiments/bench/bench_simulate.py [--members 10000] [--scipy-members 200]

The scipy ensemble loop is timed on ``--scipy-members`` members and scaled linearly to the
ensemble size (each member is an independent solve); pass ``--scipy-members 10000`` to run
it all. Results are printed and written to ``experiments/bench/results/simulate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import casadi as ca  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import processtwin as pt  # noqa: E402
from processtwin.models import Bioreactor  # noqa: E402
from processtwin.ops import casadi_ops  # noqa: E402

T_END, F, S_IN = 150.0, 0.01, 200.0
TS = np.linspace(0.0, T_END, 151)
X0 = np.array([1.0, 0.5, 0.0, 120.0])
M = Bioreactor()


def rhs_py(t, y, mu_max=M.mu_max, Y_xs=M.Y_xs):
    """Hand-written plain-Python right-hand side: the fastest fair input for scipy."""
    X, S, P, V = y
    mu = mu_max * S / (M.K_s + S + S * S / M.K_i)
    phi = S / (M.K_p + S)
    qp = M.alpha * mu + M.beta * phi
    D = F / V
    return [(mu - D) * X, -(mu / Y_xs + qp / M.Y_ps + M.m_s * phi) * X + D * (S_IN - S),
            qp * X - D * P, F]


def reference(mu_max=M.mu_max, Y_xs=M.Y_xs):
    sol = solve_ivp(rhs_py, (0, T_END), X0, method="DOP853", t_eval=TS, rtol=1e-13,
                    atol=1e-14, args=(mu_max, Y_xs))
    return sol.y.T


def rel_err(y, ref):
    return float(np.max(np.abs(np.asarray(y) - ref) / np.abs(ref).max(axis=0)))


def timeit(fn, repeat):
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def casadi_integrator(rtol, atol):
    x = ca.SX.sym("x", 4)
    p = ca.SX.sym("p", 2)  # mu_max, Y_xs
    model = Bioreactor(mu_max=p[0], Y_xs=p[1])
    xdot = ca.vertcat(*model.rhs(0.0, M.State(*ca.vertsplit(x)), M.Inputs(F, S_IN), casadi_ops))
    return ca.integrator("I", "cvodes", {"x": x, "p": p, "ode": xdot}, 0.0, TS[1:],
                         {"abstol": atol, "reltol": rtol, "max_num_steps": 100000})


def single(repeat):
    ref = reference()
    rows = []
    inputs = {"F": F}

    def ours():
        return pt.simulate(M, X0, inputs, TS, rtol=1e-8, atol=1e-10).states

    y = ours()[0]
    rows.append(("processtwin simulate (tsit5)", timeit(ours, repeat), rel_err(y, ref)))
    res = pt.simulate(M, X0, inputs, TS, rtol=1e-8, atol=1e-10)
    t_ds = timeit(lambda: pt.simulate(M, X0, inputs, TS, rtol=1e-8, atol=1e-10).data, repeat)
    rows.append(("processtwin simulate + .data Dataset", t_ds, rel_err(res.states[0], ref)))
    for method in ("LSODA", "RK45"):
        def run(method=method):
            return solve_ivp(rhs_py, (0, T_END), X0, method=method, t_eval=TS, rtol=1e-8,
                             atol=1e-10)
        rows.append((f"scipy solve_ivp {method}", timeit(run, max(3, repeat // 20)),
                     rel_err(run().y.T, ref)))
    integ = casadi_integrator(1e-8, 1e-10)
    p = np.array([M.mu_max, M.Y_xs])

    def cas():
        return integ(x0=X0, p=p)["xf"]

    y = np.vstack([X0, np.asarray(cas()).T])
    rows.append(("CasADi cvodes", timeit(cas, max(5, repeat // 5)), rel_err(y, ref)))
    return rows


def ensemble(n, n_scipy, repeat):
    rng = np.random.default_rng(0)
    mu = rng.uniform(0.015, 0.025, n)
    yxs = rng.uniform(0.45, 0.55, n)
    check = [0, n // 2, n - 1]
    refs = [reference(mu[i], yxs[i]) for i in check]
    rows = []

    def ours():
        return pt.ensemble(M, X0, {"F": F}, TS, params={"mu_max": mu, "Y_xs": yxs},
                           rtol=1e-6, atol=1e-8).states

    ys = np.asarray(ours())
    err = max(rel_err(ys[i], r) for i, r in zip(check, refs, strict=True))
    rows.append((f"processtwin ensemble ({n})", timeit(ours, repeat), err))

    def scipy_loop():
        return [solve_ivp(rhs_py, (0, T_END), X0, method="LSODA", t_eval=TS, rtol=1e-6,
                          atol=1e-8, args=(mu[i], yxs[i])).y.T for i in range(n_scipy)]

    t0 = time.perf_counter()
    out = scipy_loop()
    t_scipy = (time.perf_counter() - t0) * n / n_scipy
    err = max(rel_err(out[i], r) for i, r in zip(check, refs, strict=True) if i < n_scipy)
    label = f"scipy LSODA loop ({n_scipy} run, x{n / n_scipy:g})" if n_scipy < n else \
        f"scipy LSODA loop ({n})"
    rows.append((label, t_scipy, err))

    integ = casadi_integrator(1e-6, 1e-8)
    fmap = integ.map(n, "thread", os.cpu_count() or 1)
    P = np.vstack([mu, yxs])
    X0s = np.tile(X0[:, None], (1, n))

    def cas():
        return fmap(x0=X0s, p=P)["xf"]

    xf = np.asarray(cas())
    traj = [np.vstack([X0, xf[:, i * 150:(i + 1) * 150].T]) for i in check]
    err = max(rel_err(tr, r) for tr, r in zip(traj, refs, strict=True))
    rows.append((f"CasADi cvodes map ({n}, thread)", timeit(cas, 2), err))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--scipy-members", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--xla-default", action="store_true",
                    help="keep JAX's and XLA's CPU defaults (small-loop limit 1 kB, async "
                         "dispatch) instead of processtwin.configure()")
    args = ap.parse_args()
    if args.xla_default:
        pt.configure(small_loop_bytes=None, async_dispatch=True)
    elif not pt.configure():
        raise SystemExit("processtwin.configure() came after JAX started; nothing measured.")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__}, casadi {ca.__version__}; JAX/XLA CPU settings: "
          f"{'defaults' if args.xla_default else 'processtwin.configure()'}")
    results = {"single": single(args.repeat),
               "ensemble": ensemble(args.members, args.scipy_members, max(3, args.repeat // 40))}
    for title, rows in results.items():
        base = rows[0][1]
        print(f"\n{title}: median wall time, error vs DOP853 rtol 1e-13")
        for name, t, err in rows:
            print(f"  {name:<44} {t * 1e3:10.3f} ms   err {err:8.1e}   ratio {t / base:7.1f}x")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    name = "simulate_xla_default.json" if args.xla_default else "simulate.json"
    (out / name).write_text(json.dumps(
        {k: [{"name": n, "median_s": t, "max_rel_err": e} for n, t, e in v]
         for k, v in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
