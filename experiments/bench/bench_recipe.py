"""Recipe benchmark: build + first solve of a 45-interval fed-batch recipe, processtwin's
OCP against the same problem written in raw CasADi.

The problem: the fed-batch bioreactor (Srinivasan et al. 2003, do-mpc's batch_reactor
kinetics) over 150 h, 45 control intervals of multiple shooting with 8 RK4 steps each,
feed 0 ≤ F ≤ 0.2 L/h, biomass X ≤ 3.7 g/L and oxygen uptake OUR ≤ OTR_max on every node,
maximise the final product P(T) with a move penalty of 1 (L/h)⁻². The raw CasADi version
is written as CasADi's own multiple-shooting example does it: the right-hand side by hand
in SX, one RK4 ``Function`` for the interval, an MX NLP calling it once per interval,
``nlpsol("ipopt")`` with default options except the tolerance. Each side is timed from
nothing (no cached NLP) to the optimum, ``--repeat`` times, median reported, with the
time per IPOPT iteration.

IPOPT's path on this problem is chaotic: a roundoff-level change of the derivatives
(1e-13 relative) changes the iteration count (tens to hundreds) and the local optimum it
ends in, for raw CasADi as for processtwin. So the single problem is also measured as a
**sweep** of nine neighbours (45 ± 5 intervals × 6, 8, 10 RK4 steps), once each: how
many converged, their total time, and the time per iteration.

    python experiments/bench/bench_recipe.py [--repeat 3] [--no-sweep]

Results are printed and written to ``experiments/bench/results/recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import casadi as ca
import numpy as np

import processtwin as pt
from processtwin.models import Bioreactor
from processtwin.solvers import OCP

M = Bioreactor()
T_END, N, SUB, TOL = 150.0, 45, 8, 1e-8
X0 = [1.0, 0.5, 0.0, 120.0]
S_IN = 200.0  # feed substrate [g/L] (the model input's default)


def raw_casadi(N: int = N, SUB: int = SUB) -> tuple[float, float, int, bool]:
    """The problem in raw CasADi: build and solve, timed together."""
    t0 = time.perf_counter()
    x = ca.SX.sym("x", 4)
    u = ca.SX.sym("u")
    X, S, P, V = x[0], x[1], x[2], x[3]
    mu = M.mu_max * S / (M.K_s + S + S * S / M.K_i)
    phi = S / (M.K_p + S)
    qp = M.alpha * mu + M.beta * phi
    D = u / V
    f = ca.Function("f", [x, u], [ca.vertcat(
        (mu - D) * X, -(mu / M.Y_xs + qp / M.Y_ps + M.m_s * phi) * X + D * (S_IN - S),
        qp * X - D * P, u)])
    our = ca.Function("our", [x], [(mu / M.Y_xo + M.m_o) * X])
    h = T_END / N / SUB
    xk = x
    for _ in range(SUB):
        k1 = f(xk, u)
        k2 = f(xk + h / 2 * k1, u)
        k3 = f(xk + h / 2 * k2, u)
        k4 = f(xk + h * k3, u)
        xk = xk + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    F = ca.Function("F", [x, u], [xk])
    w, lbw, ubw, w0, g, lbg, ubg = [], [], [], [], [], [], []
    Xk = ca.MX.sym("X0", 4)
    w.append(Xk)
    lbw += X0
    ubw += X0
    w0 += X0
    J, u_prev = 0, None
    x_guess = np.array(X0)  # the start both sides use: no feed, states simulated
    for k in range(N):
        Uk = ca.MX.sym(f"U{k}")
        w.append(Uk)
        lbw.append(0.0)
        ubw.append(0.2)
        w0.append(0.0)
        if u_prev is not None:
            J += (Uk - u_prev) ** 2
        u_prev = Uk
        Xend = F(Xk, Uk)
        Xk = ca.MX.sym(f"X{k + 1}", 4)
        w.append(Xk)
        lbw += [0.0, 0.0, 0.0, 0.0]
        ubw += [np.inf] * 4
        x_guess = np.asarray(F(x_guess, 0.0)).ravel()
        w0 += list(x_guess)
        g += [Xend - Xk, Xk[0], our(Xk)]
        lbg += [0.0] * 4 + [-np.inf, -np.inf]
        ubg += [0.0] * 4 + [3.7, float(M.OTR_max)]
    J += -Xk[2]
    solver = ca.nlpsol("raw", "ipopt", {"x": ca.vertcat(*w), "f": J, "g": ca.vertcat(*g)},
                       {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes",
                        "ipopt.tol": TOL})
    sol = solver(x0=w0, lbx=lbw, ubx=ubw, lbg=lbg, ubg=ubg)
    st = solver.stats()
    return (time.perf_counter() - t0, float(sol["f"]), int(st["iter_count"]),
            bool(st["success"]))


def ours(N: int = N, SUB: int = SUB) -> tuple[float, float, int, bool]:
    """The same problem through processtwin's OCP: build and solve, timed together."""
    t0 = time.perf_counter()
    ocp = OCP(M, T_END, N, controls=("F",), method="shooting", substeps=SUB)
    ocp.bound_input("F", 0.0, 0.2).constrain("X", upper=3.7)
    ocp.constrain("OUR", upper=float(M.OTR_max))
    ocp.minimise(mayer=lambda x: -x.P, du_weight={"F": 1.0})
    res = ocp.solve(tol=TOL, raise_on_failure=False, diagnose=False)
    return (time.perf_counter() - t0, res.objective, int(res.stats["iterations"]),
            res.status == "converged")


def sweep() -> dict:
    """Both sides on the nine neighbouring problems, once each."""
    out: dict = {"variants": [], "raw CasADi": {}, "processtwin": {}}
    for n in (N - 5, N, N + 5):
        for sub in (6, 8, 10):
            row = {"intervals": n, "substeps": sub}
            for name, fn in (("raw CasADi", raw_casadi), ("processtwin", ours)):
                t, f, it, ok = fn(n, sub)
                row[name] = {"s": t, "objective": f, "iterations": it, "converged": ok}
            out["variants"].append(row)
            print(f"  N={n:2d} substeps={sub:2d}: " + " | ".join(
                f"{k} {row[k]['s']:.3f} s, {row[k]['iterations']:4d} it, "
                f"{row[k]['objective']:.7f}{'' if row[k]['converged'] else ' FAILED'}"
                for k in ("raw CasADi", "processtwin")))
    for k in ("raw CasADi", "processtwin"):
        rows = [v[k] for v in out["variants"]]
        out[k] = {"converged": sum(r["converged"] for r in rows),
                  "total_s": sum(r["s"] for r in rows),
                  "ms_per_iteration": 1e3 * sum(r["s"] for r in rows)
                  / sum(r["iterations"] for r in rows)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-sweep", action="store_true", help="only the 45-interval problem")
    args = ap.parse_args()
    pt.configure()
    rows = {"raw CasADi": [], "processtwin": []}
    for _ in range(args.repeat):
        rows["raw CasADi"].append(raw_casadi())
        rows["processtwin"].append(ours())
    med = {k: float(np.median([r[0] for r in v])) for k, v in rows.items()}
    obj = {k: v[0][1] for k, v in rows.items()}
    it = {k: v[0][2] for k, v in rows.items()}
    per_it = {k: 1e3 * med[k] / it[k] for k in rows}
    for k in rows:
        print(f"{k:>12}: build + solve {med[k]:.3f} s (runs: "
              + ", ".join(f"{r[0]:.3f}" for r in rows[k])
              + f"), objective {obj[k]:.10g}, {it[k]} iterations, {per_it[k]:.2f} ms per "
              "iteration (build included)"
              + ("" if all(r[3] for r in rows[k]) else " — a run did NOT converge"))
    ratio = med["processtwin"] / med["raw CasADi"]
    print(f"ratio processtwin / raw CasADi: {ratio:.2f}x (target <= 1x); objectives differ "
          f"by {abs(obj['processtwin'] - obj['raw CasADi']):.2e}")
    sw = None
    if not args.no_sweep:
        print("sweep of the nine neighbouring problems:")
        sw = sweep()
        for k in ("raw CasADi", "processtwin"):
            print(f"{k:>12}: {sw[k]['converged']}/9 converged, total {sw[k]['total_s']:.2f} s, "
                  f"{sw[k]['ms_per_iteration']:.2f} ms per iteration (build included)")
        print(f"sweep ratio processtwin / raw CasADi: "
              f"{sw['processtwin']['total_s'] / sw['raw CasADi']['total_s']:.2f}x total time, "
              f"{sw['processtwin']['ms_per_iteration'] / sw['raw CasADi']['ms_per_iteration']:.2f}x"
              " per iteration")
    out = Path(__file__).parent / "results" / "recipe.json"
    out.write_text(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version(),
                    "casadi": ca.__version__},
        "intervals": N, "substeps": SUB, "tol": TOL,
        "seconds": {k: [r[0] for r in v] for k, v in rows.items()},
        "median_s": med, "objective": obj, "iterations": it, "ratio": ratio,
        "ms_per_iteration": per_it, "sweep": sw}, indent=2)
        + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
