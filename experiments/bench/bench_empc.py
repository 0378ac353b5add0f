"""Economic MPC benchmark: processtwin's receding-horizon LP vs plain Pyomo (rebuilt each
step) and the highspy matrix API, on the same problem, in one run.

Problem: ``HeatPumpBuilding`` with ``--zones`` zones in a row (default 10; internal walls
of 20 m2 between neighbours), one week hourly (168 intervals), Greensboro typical-year
weather from 8 January (outdoor temperature, south-facing irradiance), occupancy 6–22 h,
time-of-use prices 0.12 / 0.25 / 0.40 per kWh. Each receding step moves one hour on: the
estimated state, the forecast (with noise) and the prices all change.

* **processtwin** — ``EconomicMPC.plan``: linearise (JAX), update the persistent HiGHS
  model (bounds, costs, changed coefficients; passed anew when the horizon moved), solve
  from the previous basis shifted (the default) and, as a second controller, from scratch
  (``warm_start=False``). First call (build + solve) and the median re-solve of
  ``--steps``.
* **plain Pyomo** — ``build_pyomo`` + a fresh ``appsi`` HiGHS each step (how a Pyomo
  user writes it without persistence).
* **highspy matrix API** — the same LP passed to a fresh ``highspy.Highs`` each step
  (cold solve), and the raw in-place re-solve (``changeRowsBounds`` only, same model:
  the floor of what any wrapper can reach).

Two lighter receding cases, through the same API: the **forecast held between issues**
(one noisy forecast issued at the start; each hourly step reads its window, so the state,
the horizon's position and its new last hour change), re-solved from the shifted basis
(``warm_start=True``) and cold; and the **same horizon re-planned from a new estimate**
(forecast and prices unchanged: the raw re-solve's case, through the API). Each is checked
against a fresh solve (objective gap).

Then a **1-zone year** (8,760 h) as one LP: processtwin (scaled, exact ZOH) and the Pyomo
form of it, and the textbook form that fails: forward Euler at 1 h in W, J and s.

    python experiments/bench/bench_empc.py [--zones 10] [--steps 10] [--quick]

Results are printed and written to ``experiments/bench/results/empc.json`` (not with
``--quick``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

import processtwin as pt
from processtwin.models import HeatPumpBuilding
from processtwin.solvers.building_loop import hourly_weather, occupancy_schedule
from processtwin.solvers.empc import EconomicMPC
from processtwin.solvers.empc_lp import HighsLP, build_pyomo
from processtwin.solvers.linearise import forecast_matrix, linearise
from processtwin.tariffs import noisy_forecast, time_of_use
from processtwin.weather import building_inputs, example_weather, read_weather

RESULTS = Path(__file__).parent / "results" / "empc.json"


def _problem(zones: int, hours: int, start: str = "1990-01-08") -> tuple:
    w = read_weather(example_weather("greensboro"))
    wx = hourly_weather(building_inputs(w, [180.0] * zones, start=start,
                                        days=hours / 24 + 2))
    model = HeatPumpBuilding(n_zones=zones, adjacency=tuple((i, i + 1, 20.0)
                                                            for i in range(zones - 1)))
    H = len(wx["T_out"])
    return model, wx, occupancy_schedule(H), time_of_use(np.arange(H) * 3600.0)


def _forecast(wx: dict, occ: np.ndarray, s: int, N: int, rng: np.random.Generator) -> dict:
    h = s + np.arange(N)
    lead = np.arange(N) * 3600.0
    return {"T_out": noisy_forecast(wx["T_out"][h], lead, sigma0=0.5, growth_per_h=0.1,
                                    cap=3.0, rng=rng),
            "I_sol": wx["I_sol"][h], "occupancy": occ[h], "T_ground": wx["T_ground"]}


def receding(zones: int, steps: int, N: int = 168) -> dict:
    import highspy
    from pyomo.contrib.appsi.solvers.highs import Highs

    model, wx, occ, price = _problem(zones, N + steps + 1)
    rng = np.random.default_rng(0)
    x = model.layout.states.values({"T_i": [21.0] * zones, "T_e": [19.0] * zones})
    fcs = [_forecast(wx, occ, s, N, rng) for s in range(steps + 1)]
    mpc = EconomicMPC(model, horizon=N, warm_start=False)
    warm = EconomicMPC(model, horizon=N, warm_start=True)
    warm.plan(x, fcs[0], price[:N])
    t0 = time.perf_counter()
    plan = mpc.plan(x, fcs[0], price[:N])
    ours_first = time.perf_counter() - t0
    assert plan.ok, plan.message
    ours, warm_t, pyomo_t, cold_t, raw_t, objs = [], [], [], [], [], []
    states = [x]
    for s in range(1, steps + 1):
        xs = plan.x[1]
        states.append(xs)
        t0 = time.perf_counter()
        plan = mpc.plan(xs, fcs[s], price[s:s + N], t=s * 3600.0)
        ours.append(time.perf_counter() - t0)
        assert plan.ok, plan.message
        t0 = time.perf_counter()
        warm.plan(xs, fcs[s], price[s:s + N], t=s * 3600.0)
        warm_t.append(time.perf_counter() - t0)
        data = mpc._lp.data
        # plain Pyomo: rebuilt and solved from scratch
        t0 = time.perf_counter()
        m = build_pyomo(data)
        solver = Highs()
        res = solver.solve(m)
        pyomo_t.append(time.perf_counter() - t0)
        # highspy matrix API, cold: the same LP passed fresh
        t0 = time.perf_counter()
        lp = HighsLP(data)
        lp.h.run()
        cold_t.append(time.perf_counter() - t0)
        objs.append((mpc._lp.h.getInfo().objective_function_value,
                     res.best_feasible_objective,
                     lp.h.getInfo().objective_function_value))
        # raw in-place re-solve floor: bounds of the state only
        h = lp.h
        xv = np.asarray(states[s - 1]) + 0.05
        idx = np.arange(lp.cols["x"][0], lp.cols["x"][0] + len(xv), dtype=np.int32)
        h.changeColsBounds(len(xv), idx, xv, xv)
        t0 = time.perf_counter()
        h.run()
        raw_t.append(time.perf_counter() - t0)
        assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    gap = max(abs(a - b) / max(1.0, abs(a)) for a, b, _ in objs)
    gap_raw = max(abs(a - c) / max(1.0, abs(a)) for a, _, c in objs)
    held, held_cold, held_gap = _held_forecast(model, wx, occ, price, x, steps, N)
    same, kept, same_gap = [], [], 0.0
    for seed in range(3):  # three forecasts: how often the basis holds depends on the LP
        fc = fcs[0] if seed == 0 else _forecast(wx, occ, 0, N, np.random.default_rng(seed))
        t, k, g = _same_window(model, fc, price[:N], x, steps, N, seed=2 + seed)
        same, kept, same_gap = same + t, kept + k, max(same_gap, g)
    same, kept = np.array(same), np.array(kept)
    info = mpc._lp.h
    return {"zones": zones, "intervals": N, "rows": info.getNumRow(),
            "cols": info.getNumCol(), "nonzeros": info.getNumNz(),
            "processtwin_first_s": ours_first,
            "processtwin_cold_resolve_ms_median": 1e3 * float(np.median(ours)),
            "processtwin_warm_resolve_ms_median": 1e3 * float(np.median(warm_t)),
            "plain_pyomo_ms_median": 1e3 * float(np.median(pyomo_t)),
            "highspy_cold_ms_median": 1e3 * float(np.median(cold_t)),
            "highspy_raw_resolve_ms_median": 1e3 * float(np.median(raw_t)),
            "objective_rel_gap_pyomo": gap, "objective_rel_gap_highspy": gap_raw,
            "held_forecast_warm_ms_median": 1e3 * float(np.median(held)),
            "held_forecast_warm_ms_range": [1e3 * min(held), 1e3 * max(held)],
            "held_forecast_cold_ms_median": 1e3 * float(np.median(held_cold)),
            "held_forecast_rel_gap": held_gap,
            "state_only_warm_ms_median": 1e3 * float(np.median(same)),
            "state_only_warm_ms_range": [1e3 * float(same.min()), 1e3 * float(same.max())],
            "state_only_steps": int(len(same)),
            "state_only_same_basis_steps": int(kept.sum()),
            "state_only_same_basis_ms_median": (1e3 * float(np.median(same[kept]))
                                                if kept.any() else None),
            "state_only_pivot_ms_median": (1e3 * float(np.median(same[~kept]))
                                           if (~kept).any() else None),
            "state_only_rel_gap": same_gap}


def _held_forecast(model: object, wx: dict, occ: np.ndarray, price: np.ndarray,
                   x: np.ndarray, steps: int, N: int) -> tuple[list, list, float]:
    """Receding steps under one forecast issued at the start (each step reads its window:
    the state, the horizon's position and its new last hour change): warm (the shifted
    basis) and cold, times and the largest objective gap between them."""
    fc = _forecast(wx, occ, 0, N + steps, np.random.default_rng(1))

    def window(s: int) -> dict:
        return {k: (v[s:s + N] if np.ndim(v) else v) for k, v in fc.items()}

    warm = EconomicMPC(model, horizon=N, warm_start=True)
    cold = EconomicMPC(model, horizon=N, warm_start=False)
    plan = warm.plan(x, window(0), price[:N])
    cold.plan(x, window(0), price[:N])
    tw, tc, gap = [], [], 0.0
    for s in range(1, steps + 1):
        xs = plan.x[1]
        t0 = time.perf_counter()
        plan = warm.plan(xs, window(s), price[s:s + N], t=s * 3600.0)
        tw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = cold.plan(xs, window(s), price[s:s + N], t=s * 3600.0)
        tc.append(time.perf_counter() - t0)
        assert plan.ok and ref.ok, (plan.message, ref.message)
        a, b = plan.cost + plan.discomfort, ref.cost + ref.discomfort
        gap = max(gap, abs(a - b) / max(1.0, abs(b)))
    return tw, tc, gap


def _same_window(model: object, fc: dict, price: np.ndarray, x: np.ndarray, steps: int,
                 N: int, seed: int = 2) -> tuple[list, list, float]:
    """Re-plans of the same horizon from new estimates (the estimator updates within an
    interval; forecast and prices as they were; each a 0.1 K perturbation of the first
    state), each followed by a fresh plan to compare with (as a controller's other work
    would, it leaves the caches cold): times, whether the previous basis answered it
    without HiGHS, and the largest objective gap."""
    rng = np.random.default_rng(seed)
    warm = EconomicMPC(model, horizon=N, warm_start=True)
    warm.plan(x, fc, price)
    ts, kept, gap = [], [], 0.0
    for _ in range(steps):
        xs = x + rng.normal(0.0, 0.1, len(x))
        before = warm.same_basis
        t0 = time.perf_counter()
        plan = warm.plan(xs, fc, price)
        ts.append(time.perf_counter() - t0)
        kept.append(warm.same_basis > before)
        ref = EconomicMPC(model, horizon=N, warm_start=False).plan(xs, fc, price)
        assert plan.ok and ref.ok, (plan.message, ref.message)
        a, b = plan.cost + plan.discomfort, ref.cost + ref.discomfort
        gap = max(gap, abs(a - b) / max(1.0, abs(b)))
    return ts, kept, gap


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} ms"


def year() -> dict:
    import highspy
    from pyomo.contrib.appsi.solvers.highs import Highs

    model, wx, occ, price = _problem(1, 8760, start="1990-01-01")
    N = 8760
    fc = {"T_out": wx["T_out"][:N], "I_sol": wx["I_sol"][:N], "occupancy": occ[:N],
          "T_ground": wx["T_ground"]}
    x = {"T_i": [21.0], "T_e": [19.0]}
    out: dict = {"hours": N}
    t0 = time.perf_counter()
    mpc = EconomicMPC(model, horizon=N)
    plan = mpc.plan(x, fc, price[:N])
    out["processtwin_s"] = time.perf_counter() - t0
    out["processtwin_status"] = plan.status
    out["cost"] = plan.cost
    t0 = time.perf_counter()
    m = build_pyomo(mpc._lp.data)
    res = Highs().solve(m)
    out["pyomo_scaled_s"] = time.perf_counter() - t0
    out["pyomo_scaled_status"] = str(res.termination_condition)
    out["pyomo_scaled_cost_gap"] = abs(res.best_feasible_objective
                                       - mpc._lp.h.getInfo().objective_function_value)
    # the textbook form: forward Euler at 1 h, in W, J and s
    eps = 1e-3  # [s]: sampled over 1 ms, (Φ - I)/ε is the continuous A to ~1e-6
    lin = linearise(model, model.layout.states.values(x), forecast_matrix(model, fc, N), eps,
                    outputs=("P_el", "T_air", "load"))
    A = (lin.A[0] - np.eye(2)) / eps
    lam = np.linalg.eigvals(np.eye(2) + 3600.0 * A)
    out["euler_1h_spectral_radius"] = float(np.max(np.abs(lam)))
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", 120.0)
    nx, nu = 2, 2
    B = lin.B[0] / eps
    nv = (N + 1) * nx + N * nu + 2 * N
    # columns: x (N+1, 2), u (N, 2) [W], slack lo/hi [K]; rows: Euler dynamics, comfort
    lo = np.full(nv, -np.inf)
    hi = np.full(nv, np.inf)
    lo[:2] = hi[:2] = [21.0, 19.0]
    lo[(N + 1) * nx:] = 0.0
    cost = np.zeros(nv)
    COP = np.asarray(lin.D[:, 0, 0])         # W_el per W_heat, per hour
    cost[(N + 1) * nx:(N + 1) * nx + N * nu:2] = price[:N] * COP * 3600.0 / 3.6e6
    cost[(N + 1) * nx + N * nu:] = 1.0
    h.addVars(nv, lo, hi)
    h.changeColsCost(nv, np.arange(nv, dtype=np.int32), cost)
    f = lin.c / eps                          # the affine term of the rhs [K/s]
    band_lo, _ = np.where(occ[:N] >= 0.5, 21.0, 16.0), None
    for k in range(N):
        for i in range(nx):
            idx = [(k + 1) * nx + i] + [k * nx + j for j in range(nx)] + \
                  [(N + 1) * nx + k * nu + j for j in range(nu)]
            val = [1.0] + list(-(np.eye(2)[i] + 3600.0 * A[i])) + list(-3600.0 * B[i])
            rhs = 3600.0 * f[k, i]
            h.addRow(rhs, rhs, len(idx), np.array(idx, np.int32), np.array(val))
        s_lo = (N + 1) * nx + N * nu + 2 * k
        h.addRow(band_lo[k], np.inf, 2, np.array([(k + 1) * nx, s_lo], np.int32),
                 np.array([1.0, 1.0]))
    t0 = time.perf_counter()
    h.run()
    out["euler_textbook_s"] = time.perf_counter() - t0
    out["euler_textbook_status"] = h.modelStatusToString(h.getModelStatus())
    # what its plan does to the building: the heat it asks for, re-simulated exactly
    col = np.asarray(h.getSolution().col_value)
    u = col[(N + 1) * nx:(N + 1) * nx + N * nu].reshape(N, nu)
    exact = linearise(model, model.layout.states.values(x), forecast_matrix(model, fc, N),
                      3600.0, outputs=("T_air",))
    T = exact.simulate(exact.x_ref, u)[1:, 0]
    out["euler_plan_resimulated_room_C"] = [float(T.min()), float(T.max())]
    out["euler_plan_resimulated_discomfort_Kh"] = float(np.sum(np.maximum(band_lo - T, 0)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    pt.configure()
    steps = 3 if args.quick else args.steps
    results = {"date": str(date.today()), "machine": platform.processor() or platform.machine(),
               "week": receding(args.zones, steps), "week_1_zone": receding(1, steps)}
    if not args.quick:
        results["year_1_zone"] = year()
    for key in ("week", "week_1_zone"):
        r = results[key]
        print(f"{r['zones']}-zone week ({r['rows']} rows, {r['cols']} columns, "
              f"{r['nonzeros']} non-zeros):")
        print(f"  processtwin  first {r['processtwin_first_s']:.2f} s, re-solve from the "
              f"previous basis (default) {r['processtwin_warm_resolve_ms_median']:.1f} ms "
              f"(median; from scratch {r['processtwin_cold_resolve_ms_median']:.1f} ms)")
        print(f"  plain Pyomo  {r['plain_pyomo_ms_median']:.0f} ms per step "
              f"(rebuilt); objective gap {r['objective_rel_gap_pyomo']:.1e}")
        print(f"  highspy      cold {r['highspy_cold_ms_median']:.0f} ms, raw in-place "
              f"re-solve {r['highspy_raw_resolve_ms_median']:.2f} ms")
        print(f"  forecast held between issues: re-solve from the shifted basis "
              f"{r['held_forecast_warm_ms_median']:.1f} ms (median; "
              f"{r['held_forecast_warm_ms_range'][0]:.1f}–"
              f"{r['held_forecast_warm_ms_range'][1]:.0f} ms), cold "
              f"{r['held_forecast_cold_ms_median']:.0f} ms; gap {r['held_forecast_rel_gap']:.1e}")
        print(f"  same horizon, new estimate: {r['state_only_warm_ms_median']:.1f} ms "
              f"(median of {r['state_only_steps']} over three forecasts; "
              f"{r['state_only_warm_ms_range'][0]:.1f}–"
              f"{r['state_only_warm_ms_range'][1]:.0f} ms); the basis held in "
              f"{r['state_only_same_basis_steps']}: {_ms(r['state_only_same_basis_ms_median'])}"
              f", HiGHS pivoted in the others: {_ms(r['state_only_pivot_ms_median'])}; gap "
              f"{r['state_only_rel_gap']:.1e}")
        print(f"  ratio processtwin / plain Pyomo: "
              f"{r['processtwin_warm_resolve_ms_median'] / r['plain_pyomo_ms_median']:.3f}")
    if "year_1_zone" in results:
        y = results["year_1_zone"]
        print(f"1-zone year (8,760 h): processtwin {y['processtwin_status']} in "
              f"{y['processtwin_s']:.1f} s (cost {y['cost']:.1f}); Pyomo form "
              f"{y['pyomo_scaled_status']} in {y['pyomo_scaled_s']:.1f} s; textbook forward "
              f"Euler at 1 h (spectral radius {y['euler_1h_spectral_radius']:.2f}): "
              f"{y['euler_textbook_status']} in {y['euler_textbook_s']:.1f} s, but its plan "
              f"re-simulated keeps the room within "
              f"{y['euler_plan_resimulated_room_C'][0]:.1f} … "
              f"{y['euler_plan_resimulated_room_C'][1]:.1f} °C "
              f"({y['euler_plan_resimulated_discomfort_Kh']:.0f} K h below the band)")
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
