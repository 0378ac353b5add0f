"""Optimiser features a researcher relies on: multistart on a multimodal problem, free final
time against the analytic minimum-time solution, collocation with several elements, guesses
and warm starts, and every failure class produced on purpose."""

import casadi as ca
import numpy as np
import pytest

import processtwin as pt
from processtwin.models import Bioreactor, DoubleIntegrator
from processtwin.solvers import OCP


def _double_well(p):
    """Two wells, at p ≈ -1.04 (global) and p ≈ +0.96 (local)."""
    return (p**2 - 1.0) ** 2 + 0.3 * p


def _well_ocp():
    # from p = 0.2 at rest, |a| ≤ 1 for 2 s: every p in [-1.8, 2.2] is reachable, so the
    # optimum is the global minimum of the terminal cost
    return (OCP(DoubleIntegrator(), 2.0, 8, method="shooting", substeps=2)
            .initial_state(p=0.2, v=0.0)
            .bound_input("a", -1.0, 1.0)
            .minimise(mayer=lambda x: _double_well(x.p)))


def test_multistart_finds_the_global_optimum_and_reports_every_start():
    roots = np.roots([4.0, 0.0, -4.0, 0.3])  # f'(p) = 4p^3 - 4p + 0.3
    minima = sorted(_double_well(r.real) for r in roots
                    if abs(r.imag) < 1e-12 and 12 * r.real**2 - 4 > 0)
    global_min, local_min = minima
    ocp = _well_ocp()
    single = ocp.solve(tol=1e-12)
    assert [s["origin"] for s in single.stats["starts"]] == ["default"]
    assert single.objective == pytest.approx(local_min, abs=1e-8)  # the default start's well
    multi = ocp.solve(tol=1e-12, starts=6, seed=1)
    assert len(multi.stats["starts"]) == 6
    assert multi.stats["starts"][0]["origin"] == "default"
    assert multi.objective == pytest.approx(global_min, abs=1e-8)
    assert multi.objective == min(s["objective"] for s in multi.stats["starts"]
                                  if s["status"] == "converged")
    assert multi.stats["build_time_s"] == 0.0  # one NLP, reused by every start
    # a given guess in the other well lands there too
    guided = ocp.solve(tol=1e-12, guess={"a": -0.5})
    assert guided.objective == pytest.approx(global_min, abs=1e-8)


def test_free_final_time_minimum_time_bang_bang():
    """Rest to rest over 1 m with |a| ≤ 1 m/s²: T* = 2 s, a = +1 then -1 (Bryson & Ho
    1975, §3.9)."""
    ocp = (OCP(DoubleIntegrator(), 3.0, 20, method="shooting", substeps=4,
               free_time=(0.5, 10.0))
           .initial_state(p=0.0, v=0.0)
           .bound_input("a", -1.0, 1.0)
           .constrain("p", 1.0, 1.0, terminal=True)
           .constrain("v", 0.0, 0.0, terminal=True)
           .minimise(time_weight=1.0))
    res = ocp.solve(tol=1e-12)
    T = float(res.plan["time"].values[-1])
    assert T == pytest.approx(2.0, abs=1e-6)
    a = res.plan["a"].values[:-1]
    np.testing.assert_allclose(a[:10], 1.0, atol=1e-6)
    np.testing.assert_allclose(a[10:], -1.0, atol=1e-6)
    check = ocp.verify(res)
    assert check["objective_resimulated"] == pytest.approx(2.0, abs=1e-6)
    assert max(check["state_error"].values()) < 1e-7


def test_collocation_elements_converge_to_shooting_and_hold_path_constraints():
    model = Bioreactor()

    def solve(method, limit=None, **kw):
        ocp = OCP(model, 150.0, 15, controls=("F",), method=method, **kw)
        ocp.bound_input("F", 0.0, 0.2)
        if limit is not None:
            ocp.constrain("X", upper=limit)
        ocp.minimise(mayer=lambda x: -x.P, du_weight={"F": 1.0})
        return ocp, ocp.solve(tol=1e-10)

    # the same problem (a limit that never binds): collocation converges to fine shooting
    _, ref = solve("shooting", limit=10.0, substeps=64)
    errs = [abs(solve("collocation", limit=10.0, elements=E)[1].objective - ref.objective)
            for E in (1, 4, 8)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 1e-7 * abs(ref.objective), errs
    # a path limit enforced at every collocation point holds on the re-simulated batch,
    # ever closer as the elements grow; the re-simulated objective is the predicted one
    viol, gap = [], []
    for E in (1, 4):
        ocp, res = solve("collocation", limit=3.0, elements=E)
        check = ocp.verify(res)
        viol.append(check["violations"].get("`X` ≤ 3", 0.0))
        gap.append(abs(check["objective_resimulated"] - res.objective) / abs(res.objective))
    assert viol[1] <= viol[0] and viol[1] < 1e-4, viol
    assert gap[1] < gap[0] and gap[1] < 1e-5, gap


def test_previous_plan_seeds_a_finer_grid_and_warm_start_must_match():
    model = Bioreactor()

    def ocp(n):
        return (OCP(model, 100.0, n, controls=("F",)).bound_input("F", 0.0, 0.2)
                .constrain("X", upper=3.7).minimise(mayer=lambda x: -x.P,
                                                     du_weight={"F": 1.0}))

    coarse = ocp(10).solve()
    fine = ocp(20)
    cold = fine.solve()
    seeded = fine.solve(guess=coarse)
    assert seeded.stats["starts"][0]["origin"] == "previous plan"
    assert seeded.objective == pytest.approx(cold.objective, rel=1e-8)
    assert seeded.stats["iterations"] < cold.stats["iterations"]
    with pytest.raises(pt.ConfigError, match="different NLP"):
        fine.solve(warm_start=coarse)
    with pytest.raises(pt.ConfigError, match="guess of control `F`"):
        fine.solve(guess={"F": np.zeros(7)})
    with pytest.raises(pt.ConfigError, match="neither a control nor a state"):
        fine.solve(guess={"Fe": 0.1})


def test_iteration_limit_is_a_limit_not_infeasibility():
    ocp = _well_ocp()
    with pytest.raises(pt.SolverError) as err:
        ocp.solve(max_iter=2)
    assert err.value.status == "limit"
    assert "infeasible" not in str(err.value).replace("not shown to be infeasible", "")
    assert "iteration limit" in str(err.value)
    res = ocp.solve(max_iter=2, raise_on_failure=False)
    assert not res.success and res.status == "limit"


def test_numerical_failure_is_called_numerical():
    ocp = (OCP(DoubleIntegrator(), 1.0, 4, method="shooting")
           .initial_state(p=0.0, v=0.0)
           .bound_input("a", -1.0, 1.0)
           .minimise(mayer=lambda x: ca.log(x.p - 5.0)))  # undefined where p < 5
    with pytest.raises(pt.SolverError) as err:
        ocp.solve()
    assert err.value.status in ("numerical", "failed")
    assert err.value.status != "infeasible"


def test_docs_page_fishing_benchmark(tmp_path):
    """The model of docs/optimisation.md, loaded from a file as a user would, reaches the
    published relaxed optimum of the Lotka-Volterra fishing problem, 1.34408 (Sager et al.
    2006, mintOC), converging from above as the grid is refined."""
    import re
    from pathlib import Path

    from processtwin.registry import load_model

    page = (Path(__file__).parents[1] / "docs" / "optimisation.md").read_text()
    (tmp_path / "fishing.py").write_text(re.findall(r"```python\n(.*?)```", page, re.S)[0])
    model = load_model(f"{tmp_path / 'fishing.py'}:Fishing")
    values = []
    for n in (120, 240):
        ocp = OCP(model, 12.0, n, elements=2).minimise(
            stage=lambda x, u: (x.prey - 1.0) ** 2 + (x.predator - 1.0) ** 2)
        res = ocp.solve(tol=1e-10)
        values.append(res.objective)
        check = ocp.verify(res)
        assert abs(check["objective_resimulated"] - res.objective) < 1e-6
    assert 1.34408 - 1e-5 < values[1] < values[0]
    assert values[1] - 1.34408 < 1e-4


def test_recipe_and_nmpc_on_a_model_that_is_not_a_bioreactor():
    """The tank cascade (no declared objective): a recipe from a text objective and a
    receding-horizon NMPC with a vector state limit, through the same generic API."""
    from processtwin.models import TankCascade
    from processtwin.solvers import BatchNMPC, golden_batch

    model = TankCascade(n_tanks=3)
    res = golden_batch(model, horizon=20.0, intervals=20,
                       objective="min integral((q - 2)**2)",
                       limits={"q": (0.0, 2.0), "c": (None, 6.0)})
    assert res.success and float(res.plan["c"].max()) <= 6.0 + 1e-7
    assert res.plan.attrs["objective_sense"] == "min"
    nmpc = BatchNMPC(model, batch_end=1e9, interval=1.0, horizon=10.0,
                     objective="min integral((q - 2)**2)",
                     limits={"q": (0.0, 2.0), "c": (None, 6.0)})
    x = {"c": np.zeros(3)}
    for k in range(3):
        rec = nmpc.recommend(float(k), x, u_now=0.0)
        q = rec.setpoints["q"][0]
        assert 0.0 <= q <= 2.0 and rec.setpoints["q"][1] == model.inputs()["q"].units
        r = pt.simulate(model, x, {"q": q}, [0.0, 1.0])
        x = {"c": np.asarray(r["c"][-1])}
    assert not rec.fallback and "converged" in rec.status


def test_first_move_is_the_plans_first_control_without_building_the_plan():
    """``first_move()`` (what a receding-horizon loop applies) equals the plan's first
    controls, scalar and vector, and reading it builds no Dataset."""
    from processtwin.models import Building

    scalar = (OCP(Bioreactor(), 10.0, 10, controls=("F",))
              .initial_state(X=1.0, S=0.5, P=0.0, V=120.0).bound_input("F", 0.0, 0.2)
              .minimise(mayer=lambda x: -x.P))
    res = scalar.solve()
    move = res.first_move()
    assert callable(res._data)  # not built yet
    assert move == {"F": float(res.plan["F"].values[0])}
    assert isinstance(move["F"], float) and 0.0 <= move["F"] <= 0.2
    zones = Building(n_zones=2)
    ocp = (OCP(zones, 4 * 3600.0, 4, controls=("Q_hvac",))
           .bound_input("Q_hvac", 0.0, 3000.0)
           .minimise(stage=lambda x, u: ca.sumsqr(x.T_i - 21.0) + 1e-8 * ca.sum1(u.Q_hvac)))
    vec = ocp.solve()
    q = vec.first_move()["Q_hvac"]
    assert q.shape == (2,) and np.all((q >= 0.0) & (q <= 3000.0))
    np.testing.assert_array_equal(q, vec.plan["Q_hvac"].values[0])


def test_150_step_receding_horizon_loop_survives_the_plant():
    """do-mpc's batch_reactor loop: 150 steps of 1 h, horizon 20 h, Radau-3 collocation,
    objective P(T) + ∫P, X ≤ 3.7, P ≤ 3. Every step solves; the plant stays inside its
    physical bounds to within the integrator's tolerance; estimates a hair outside
    are projected with a counted warning, never a crash."""
    import warnings

    from processtwin.solvers import BatchNMPC

    model = Bioreactor()
    nmpc = BatchNMPC(model, batch_end=1e9, interval=1.0, horizon=20.0,
                     objective="max P + integral(P)",
                     limits={"OUR": None, "P": (None, 3.0)}, du_weight=1.0)
    x = {"X": 1.0, "S": 0.5, "P": 0.0, "V": 120.0}
    u, lowest = 0.0, np.inf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(150):
            rec = nmpc.recommend(float(k), x, u_now=u)
            assert not rec.fallback, (k, rec.message)
            u = rec.setpoints["F"][0]
            r = pt.simulate(model, x, {"F": u}, [0.0, 1.0], rtol=1e-8, atol=1e-10)
            x = {s: float(r[s][-1]) for s in "XSPV"}
            lowest = min(lowest, min(x.values()))
    assert lowest > -1e-8, lowest
    assert x["X"] <= 3.7 * (1 + 1e-4) and x["P"] <= 3.0 * (1 + 1e-4)
    projected = [w for w in caught if "projected onto them" in str(w.message)]
    assert len(projected) == nmpc.projections


def test_text_objectives_read_names_not_substrings():
    """`T_i` is a state of the building, not the horizon: no free final time is asked for;
    `T_f` (or `T` where no state is called T) is the horizon."""
    from processtwin.goals import parse_objective
    from processtwin.models import Building, Pipe

    assert not parse_objective(Building(), "min integral(T_out)").free_time
    assert not parse_objective(Building(), "max T_i").free_time
    assert parse_objective(Bioreactor(), "max P*V/T").free_time
    assert parse_objective(Bioreactor(), "max P*V/T_f").free_time
    pipe = parse_objective(Pipe(), "max T")  # the pipe's state T, not the horizon
    assert not pipe.free_time


def test_conflicting_start_options_are_errors():
    ocp = _well_ocp()
    res = ocp.solve()
    with pytest.raises(pt.ConfigError, match="not both"):
        ocp.solve(warm_start=res, guess={"a": 0.5})
    free = OCP(DoubleIntegrator(), 3.0, 4, free_time=(1.0, 5.0))
    with pytest.raises(pt.ConfigError, match="horizon of this OCP is free"):
        free.set_horizon(2.0)
