"""Vector-model benchmark: processtwin vs scipy solve_ivp (BDF with jac_sparsity, LSODA).

A cascade of N well-mixed tanks (``TankCascade(n_tanks=N)``, default V = 2 m3, k = 0.01
1/min), N = 10, 100, 1000, empty at t = 0, fed q = 0.5 m3/min of a 10 g/m3 tracer, 240 min
with 121 output times, rtol 1e-6 / atol 1e-9 for every solver. Error: max over tanks and
times of |c - c_ref| / c_in against the analytic step response of N first-order tanks in
series, c_i(t) = c_in (a/b)^i P(i, b t) with a = q/V, b = a + k and P the regularised lower
incomplete gamma function (Levenspiel, Chemical Reaction Engineering, 3rd ed., ch. 14).
scipy gets the same equations written independently in vectorised numpy; BDF gets the
bidiagonal Jacobian pattern (``jac_sparsity``), LSODA has none to take.

    python experiments/bench/bench_vector.py [--quick]

Timed (warm: the first call compiles): median, min and max wall time of ``--repeat`` calls of
``processtwin.simulate`` (``--repeat-scipy`` of each scipy solve), the solver's step count
and time per step; the slope of log(time per step) against log(N) (target: ≤ 1, no worse
than linear). Also, in the same run: the single-batch bioreactor of ``bench_simulate.py``
(its ``single`` comparison, ratio to LSODA; target ≥ 15×) and the cost of building the result
Dataset: ``simulate(...)`` and ``simulate(...).data``, each call fresh, alternating in
rounds (target: building the Dataset costs at most as much as the simulation).
Results are printed and, unless ``--quick``, written to
``experiments/bench/results/vector.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np
import scipy
from scipy.integrate import solve_ivp
from scipy.sparse import diags
from scipy.special import gammainc

sys.path.insert(0, str(Path(__file__).parent))

import bench_simulate as bs  # noqa: E402  (the bioreactor scenario, reused as it is)

import processtwin as pt  # noqa: E402
from processtwin.models import TankCascade  # noqa: E402

N_TANKS = (10, 100, 1000)
Q, C_IN = 0.5, 10.0  # [m3/min], [g/m3]
TS = np.linspace(0.0, 240.0, 121)  # [min]
RTOL, ATOL = 1e-6, 1e-9


def analytic(model: TankCascade, ts: np.ndarray) -> np.ndarray:
    """Step response of N tanks in series with first-order decay, (time, tank) [g/m3]:
    the Laplace transform of tank i is c_in/s · (a/(s+b))^i, whose inverse is
    c_in (a/b)^i P(i, b t)."""
    a = Q / model.V
    b = a + model.k
    i = np.arange(1, model.n_tanks + 1)
    return C_IN * (a / b) ** i * gammainc(i[None, :], b * ts[:, None])


def numpy_rhs(model: TankCascade):
    """dc_i/dt = q/V (c_{i-1} - c_i) - k c_i, c_0 = c_in: written out in numpy for scipy."""
    a, k = Q / model.V, model.k

    def fun(t, c):
        dc = np.empty_like(c)
        dc[0] = a * (C_IN - c[0])
        dc[1:] = a * (c[:-1] - c[1:])
        dc -= k * c
        return dc

    return fun


def timed(fn, repeat: int) -> tuple[float, float, float]:
    """Median, min and max wall time [s] of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times)), float(np.max(times))


def vector(n: int, repeat: int, repeat_scipy: int) -> list[dict]:
    model = TankCascade(n_tanks=n)
    ref = analytic(model, TS)
    x0, inputs = {"c": np.zeros(n)}, {"q": Q, "c_in": C_IN}

    def ours(ts=TS):
        return pt.simulate(model, x0, inputs, ts, rtol=RTOL, atol=ATOL)

    t0 = time.perf_counter()
    res = ours()
    first = time.perf_counter() - t0
    err = float(np.max(np.abs(res["c"] - ref)) / C_IN)
    med, lo, hi = timed(ours, repeat)
    # the same run with only its end points as outputs: how many steps the error control
    # alone asks for (the lean loop ends a step at the last output of every output chunk)
    ends = TS[[0, -1]]
    steps_free = ours(ends).stats["num_steps"]
    med_free = timed(lambda: ours(ends), repeat)[0]
    rows = [{"solver": "processtwin simulate (tsit5)", "n": n, "median_s": med, "min_s": lo,
             "max_s": hi, "steps": res.stats["num_steps"], "steps_two_outputs": steps_free,
             "two_outputs_median_s": med_free, "first_call_s": first, "max_err": err}]

    fun = numpy_rhs(model)
    pattern = diags([np.ones(n), np.ones(n - 1)], [0, -1], format="csc")  # c_i and c_{i-1}
    for method, kw in (("BDF", {"jac_sparsity": pattern}), ("LSODA", {})):
        def run(method=method, kw=kw, t_eval=TS):
            return solve_ivp(fun, (TS[0], TS[-1]), np.zeros(n), method=method, t_eval=t_eval,
                             rtol=RTOL, atol=ATOL, **kw)

        sol = run()
        err = float(np.max(np.abs(sol.y.T - ref)) / C_IN)
        med, lo, hi = timed(run, repeat_scipy)
        # solve_ivp steps independently of t_eval; without it, it returns every step
        steps = run(t_eval=None).t.size - 1
        rows.append({"solver": f"scipy solve_ivp {method}" + (" (jac_sparsity)" if kw else ""),
                     "n": n, "median_s": med, "min_s": lo, "max_s": hi, "steps": steps,
                     "nfev": int(sol.nfev), "njev": int(sol.njev), "max_err": err})
    return rows


def dataset_cost(make, repeat: int, rounds: int = 5) -> dict:
    """Median of ``make()`` and of ``make().data``, each call fresh, alternating call by call
    (so that a change in the machine's load hits both alike), in ``rounds`` rounds of
    ``repeat`` pairs: the building cost per round and its spread over rounds."""
    _ = make().data  # compile, import xarray, and write the Dataset template once
    sim, full, ratio = [], [], []
    for _ in range(rounds):
        s, f = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            make()
            t1 = time.perf_counter()
            _ = make().data
            t2 = time.perf_counter()
            s.append(t1 - t0)
            f.append(t2 - t1)
        sim += s
        full += f
        ratio.append((np.median(f) - np.median(s)) / np.median(s))
    t_sim, t_full = float(np.median(sim)), float(np.median(full))
    return {"simulate_s": t_sim, "simulate_data_s": t_full, "build_s": t_full - t_sim,
            "build_over_simulate": (t_full - t_sim) / t_sim,
            "build_over_simulate_rounds": [float(r) for r in ratio]}


def slopes(rows: list[dict]) -> dict[str, dict]:
    """Per solver: the least-squares slope of log(time per step) vs log(N), and the slopes
    between neighbouring N."""
    out = {}
    for name in dict.fromkeys(r["solver"] for r in rows):
        rs = sorted((r for r in rows if r["solver"] == name), key=lambda r: r["n"])
        ln = np.log([r["n"] for r in rs])
        lp = np.log([r["median_s"] / r["steps"] for r in rs])
        out[name] = {"fit": float(np.polyfit(ln, lp, 1)[0]),
                     "local": [float(v) for v in np.diff(lp) / np.diff(ln)]}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few repeats, no JSON")
    ap.add_argument("--repeat", type=int, default=20, help="calls of simulate per N")
    ap.add_argument("--repeat-scipy", type=int, default=5, help="calls of each scipy solve")
    ap.add_argument("--repeat-batch", type=int, default=200,
                    help="calls in the bioreactor comparison and the Dataset rounds")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.repeat_scipy, args.repeat_batch = 3, 1, 20
    if not pt.configure():
        raise SystemExit("processtwin.configure() came after JAX started; nothing measured.")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__}, scipy {scipy.__version__}; processtwin.configure(); "
          f"rtol {RTOL:g} / atol {ATOL:g}")

    rows = [r for n in N_TANKS for r in vector(n, args.repeat, args.repeat_scipy)]
    print(f"\nTankCascade, {TS.size} outputs over {TS[-1]:g} min: warm wall time "
          f"(median of {args.repeat} simulate / {args.repeat_scipy} scipy calls), "
          "error vs analytic / c_in")
    print(f"  {'solver':<38} {'N':>5} {'median':>10} {'min':>9} {'max':>9} {'steps':>6} "
          f"{'per step':>10} {'error':>8}")
    for r in rows:
        print(f"  {r['solver']:<38} {r['n']:>5} {r['median_s'] * 1e3:7.3f} ms "
              f"{r['min_s'] * 1e3:9.3f} {r['max_s'] * 1e3:9.3f} {r['steps']:>6} "
              f"{r['median_s'] / r['steps'] * 1e6:7.2f} µs {r['max_err']:8.1e}")
    ours = [r for r in rows if r["solver"].startswith("processtwin")]
    print("  processtwin with only t[0], t[-1] as outputs: "
          + ", ".join(f"N={r['n']}: {r['steps_two_outputs']} steps, "
                      f"{r['two_outputs_median_s'] * 1e3:.3f} ms" for r in ours)
          + "; first call (compiles): "
          + ", ".join(f"{r['first_call_s']:.2f} s" for r in ours))
    fits = slopes(rows)
    print("\nslope of log(time per step) vs log(N) (fit over N = "
          f"{', '.join(map(str, N_TANKS))}; local slopes between neighbours)")
    for name, s in fits.items():
        print(f"  {name:<38} {s['fit']:5.2f}   ("
              + ", ".join(f"{v:.2f}" for v in s["local"]) + ")")

    batch = bs.single(args.repeat_batch)
    t_sim = next(t for name, t, _ in batch if name == "processtwin simulate (tsit5)")
    t_lsoda = next(t for name, t, _ in batch if name == "scipy solve_ivp LSODA")
    print(f"\nbioreactor single batch (bench_simulate.single, rtol 1e-8, median of "
          f"{args.repeat_batch}):")
    for name, t, err in batch:
        print(f"  {name:<44} {t * 1e3:8.3f} ms   err {err:8.1e}")
    print(f"  ratio LSODA / processtwin: {t_lsoda / t_sim:.1f}x (target ≥ 15x)")

    cost = {"bioreactor": dataset_cost(
        lambda: pt.simulate(bs.M, bs.X0, {"F": bs.F}, bs.TS, rtol=1e-8, atol=1e-10),
        args.repeat_batch)}
    big = TankCascade(n_tanks=N_TANKS[-1])
    cost[f"tank_cascade_{N_TANKS[-1]}"] = dataset_cost(
        lambda: pt.simulate(big, {"c": np.zeros(big.n_tanks)}, {"q": Q, "c_in": C_IN}, TS,
                            rtol=RTOL, atol=ATOL), max(3, args.repeat), rounds=3)
    print("\nDataset building (each call fresh, alternating; median over all rounds):")
    for name, c in cost.items():
        print(f"  {name:<22} simulate {c['simulate_s'] * 1e3:7.3f} ms   + .data "
              f"{c['simulate_data_s'] * 1e3:7.3f} ms   building {c['build_s'] * 1e3:7.3f} ms"
              f" = {c['build_over_simulate']:.2f}x the simulation (rounds "
              f"{min(c['build_over_simulate_rounds']):.2f}-"
              f"{max(c['build_over_simulate_rounds']):.2f})")

    t_blk = next(t for name, t, _ in batch if name.startswith("processtwin simulate + .data"))
    cost["bioreactor"]["blocks"] = {"simulate_s": t_sim, "simulate_data_s": t_blk,
                                    "build_over_simulate": (t_blk - t_sim) / t_sim}
    print(f"  (bioreactor in blocks, bench_simulate.single: simulate {t_sim * 1e3:.3f} ms hot, "
          f"+ .data {t_blk * 1e3:.3f} ms: building {(t_blk - t_sim) / t_sim:.2f}x; a hot "
          "simulate alone is 10-25 % faster than one after other work)")

    s = fits["processtwin simulate (tsit5)"]["fit"]
    b = cost["bioreactor"]["build_over_simulate"]
    print("\ntargets:")
    print(f"  time per step grows no worse than linearly (slope ≤ 1): {s:.2f} -> "
          f"{'met' if s <= 1.0 else 'NOT met'}")
    print(f"  bioreactor ≥ 15x LSODA: {t_lsoda / t_sim:.1f}x -> "
          f"{'met' if t_lsoda / t_sim >= 15 else 'NOT met'}")
    print(f"  Dataset building ≤ simulation (bioreactor): {b:.2f}x -> "
          f"{'met' if b <= 1.0 else 'NOT met'}")
    if args.quick:
        return
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "vector.json").write_text(json.dumps(
        {"rtol": RTOL, "atol": ATOL, "vector": rows, "slopes": fits,
         "bioreactor": [{"name": n, "median_s": t, "max_rel_err": e} for n, t, e in batch],
         "dataset": cost}, indent=2) + "\n")


if __name__ == "__main__":
    main()
