"""Economic MPC of a heat-pump building (Pyomo + HiGHS): the LP against independent
formulations, the plan against the nonlinear model, failures on purpose, MILP staging,
and a closed-loop week against the thermostat baseline."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import linprog

from processtwin.errors import ConfigError, DataError
from processtwin.kpi import building_kpis
from processtwin.model import Model, Var, param, time_factor, variables
from processtwin.models import HeatPumpBuilding
from processtwin.solvers.building_loop import (
    Thermostat,
    closed_loop,
    hourly_weather,
    thermostat_baseline,
)
from processtwin.solvers.empc import LP_SCALE, Comfort, EconomicMPC, Staging
from processtwin.solvers.linearise import linearise
from processtwin.tariffs import interval_prices, read_prices, time_of_use

N = 24
HOURS = np.arange(N)
MODEL = HeatPumpBuilding(n_zones=2, floor_area=(120.0, 80.0), adjacency=((0, 1, 20.0),))
FORECAST = {"T_out": 1.0 + 5.0 * np.sin((HOURS - 9) / 24 * 2 * np.pi),
            "I_sol": np.stack([np.clip(400 * np.sin((HOURS - 6) / 12 * np.pi), 0, None),
                               np.clip(150 * np.sin((HOURS - 6) / 12 * np.pi), 0, None)], 1),
            "occupancy": np.where((HOURS >= 6) & (HOURS < 22), 1.0, 0.3), "T_ground": 10.0}
PRICE = time_of_use(HOURS * 3600.0)
X0 = {"T_i": [19.0, 20.5], "T_e": [18.0, 17.5]}


def _dense_lp(x0: np.ndarray) -> float:
    """The same LP written independently: dense matrices from the linearisation, the
    priced output substituted into the cost, solved by scipy's linprog."""
    aff = linearise(MODEL, x0, FORECAST, 3600.0, outputs=("P_el", "T_air", "load"))
    nx, nu = aff.A.shape[1], aff.B.shape[2]
    nz = 2
    nv = (N + 1) * nx + N * nu + 2 * N * nz

    def xi(k: int, i: int) -> int:
        return k * nx + i

    def ui(k: int, j: int) -> int:
        return (N + 1) * nx + k * nu + j

    def si(k: int, z: int, hi: bool) -> int:
        return (N + 1) * nx + N * nu + (N * nz if hi else 0) + k * nz + z

    c = np.zeros(nv)
    A_eq, b_eq, A_ub, b_ub = [], [], [], []
    for i in range(nx):
        row = np.zeros(nv)
        row[xi(0, i)] = 1
        A_eq.append(row)
        b_eq.append(x0[i])
    lo, hi = Comfort().bands(FORECAST["occupancy"], nz)
    # at each node the stricter band of the intervals before and after it
    lo = np.maximum(lo, np.vstack([lo[1:], lo[-1:]]))
    hi = np.minimum(hi, np.vstack([hi[1:], hi[-1:]]))
    for k in range(N):
        for i in range(nx):
            row = np.zeros(nv)
            row[xi(k + 1, i)] = 1
            for j in range(nx):
                row[xi(k, j)] -= aff.A[k, i, j]
            for j in range(nu):
                row[ui(k, j)] -= aff.B[k, i, j]
            A_eq.append(row)
            b_eq.append(aff.c[k, i])
        # energy cost [currency]: price [1/kWh] * P [W] / 1000 * 1 h (P_el: inputs only)
        for j in range(nu):
            c[ui(k, j)] += PRICE[k] * aff.D[k, 0, j] / 1e3
        for i in range(nx):
            c[xi(k, i)] += PRICE[k] * aff.C[k, 0, i] / 2e3
            c[xi(k + 1, i)] += PRICE[k] * aff.C[k, 0, i] / 2e3
        for z in range(nz):
            o = 1 + z
            row = np.zeros(nv)
            row[[xi(k + 1, i) for i in range(nx)]] = aff.C[k, o]
            row[[ui(k, j) for j in range(nu)]] += aff.D[k, o]
            r_lo = -row.copy()
            r_lo[si(k, z, False)] = -1
            A_ub.append(r_lo)
            b_ub.append(-(lo[k, z] - aff.e[k, o]))
            r_hi = row.copy()
            r_hi[si(k, z, True)] = -1
            A_ub.append(r_hi)
            b_ub.append(hi[k, z] - aff.e[k, o])
            c[si(k, z, False)] = c[si(k, z, True)] = 1.0      # 1 per K h
        row = np.zeros(nv)
        row[[xi(k + 1, i) for i in range(nx)]] = aff.C[k, 3]
        row[[ui(k, j) for j in range(nu)]] += aff.D[k, 3]
        A_ub.append(row)
        b_ub.append(1.0 - aff.e[k, 3])
    bounds = ([(None, None)] * ((N + 1) * nx) + [(0, None)] * (N * nu)
              + [(0, None)] * (2 * N * nz))
    res = linprog(c, A_ub=np.array(A_ub), b_ub=np.array(b_ub), A_eq=np.array(A_eq),
                  b_eq=np.array(b_eq), bounds=bounds, method="highs",
                  options={"primal_feasibility_tolerance": 1e-10,
                           "dual_feasibility_tolerance": 1e-10})
    assert res.status == 0, res.message
    const = sum(PRICE[k] * aff.e[k, 0] / 1e3 for k in range(N))
    return float(res.fun + const)


@pytest.fixture(scope="module")
def x0_flat() -> np.ndarray:
    return MODEL.layout.states.values(X0)


def test_lp_optimum_equals_independent_formulations(x0_flat: np.ndarray) -> None:
    comfort = Comfort(price=1.0)
    fast = EconomicMPC(MODEL, horizon=N, comfort=comfort)
    pyomo = EconomicMPC(MODEL, horizon=N, comfort=comfort, backend="pyomo")
    a, b = fast.plan(X0, FORECAST, PRICE), pyomo.plan(X0, FORECAST, PRICE)
    assert a.status == b.status == "optimal"
    total_a = a.cost + comfort.price * a.discomfort
    total_b = b.cost + comfort.price * b.discomfort
    dense = _dense_lp(x0_flat)
    assert total_a == pytest.approx(dense, rel=1e-8, abs=1e-9)
    assert total_b == pytest.approx(dense, rel=1e-8, abs=1e-9)
    # the plan pre-heats in the cheap night hours rather than in the evening peak
    heat = a.u[:, :2].sum(axis=1)
    assert heat[PRICE == PRICE.max()].mean() < heat[PRICE == PRICE.min()].mean()


def test_receding_update_equals_a_fresh_build() -> None:
    mpc = EconomicMPC(MODEL, horizon=N)
    mpc.plan(X0, FORECAST, PRICE)
    shifted = {k: (np.roll(v, -3, axis=0) if np.ndim(v) else v) for k, v in FORECAST.items()}
    x1 = {"T_i": [20.0, 21.0], "T_e": [18.5, 18.0]}
    updated = mpc.plan(x1, shifted, np.roll(PRICE, -3) * 1.2)
    fresh = EconomicMPC(MODEL, horizon=N).plan(x1, shifted, np.roll(PRICE, -3) * 1.2)
    assert updated.status == fresh.status == "optimal"
    assert updated.cost == pytest.approx(fresh.cost, rel=1e-9, abs=1e-9)
    assert updated.discomfort == pytest.approx(fresh.discomfort, rel=1e-7, abs=1e-9)


def test_shifted_warm_start_reaches_the_fresh_optimum() -> None:
    """A receding horizon that advances one interval at a time, re-solved from the
    previous basis shifted forward (``warm_start=True``): every decision has the optimum
    of a fresh build, and the shifted basis is accepted (HiGHS starts from it)."""
    warm = EconomicMPC(MODEL, horizon=N, warm_start=True)
    x = dict(X0)
    for k in range(4):
        fc = {n: (np.roll(v, -k, axis=0) if np.ndim(v) else v) for n, v in FORECAST.items()}
        price = np.roll(PRICE, -k)
        if k:
            assert warm._lp.shifted_basis(0) is False  # a zero shift is no shift
        a = warm.plan(x, fc, price, t=k * 3600.0)
        # every first attempt runs HiGHS unscaled (the LP's units are balanced)
        assert warm._lp.h.getOptionValue("simplex_scale_strategy")[1] == LP_SCALE == 0
        b = EconomicMPC(MODEL, horizon=N).plan(x, fc, price, t=k * 3600.0)
        assert a.status == b.status == "optimal"
        assert a.cost + a.discomfort == pytest.approx(b.cost + b.discomfort, rel=1e-8,
                                                      abs=1e-9)
        x = a.x[1]
    lp = warm._lp
    assert lp.shifted_basis(1)  # the optimal basis moved one interval is a valid start
    lp.h.run()
    assert lp.h.modelStatusToString(lp.h.getModelStatus()) == "Optimal"


class _SeenThrough:
    """A ``highspy.Highs`` seen through: what a subclass does not define is HiGHS's."""

    def __init__(self, h: Any) -> None:
        self._h = h

    def __getattr__(self, name: str) -> Any:
        return getattr(self._h, name)


class _RecordSetBasis(_SeenThrough):
    """Records each ``setBasis``'s ``alien`` flag and whether HiGHS took it, and the sizes
    of the bound changes passed."""

    def __init__(self, h: Any) -> None:
        super().__init__(h)
        self.calls, self.changes = [], []

    def changeColsBounds(self, n: int, *a: Any) -> Any:  # noqa: N802
        self.changes.append(("cols", n))
        return self._h.changeColsBounds(n, *a)

    def changeRowsBounds(self, n: int, *a: Any) -> Any:  # noqa: N802
        self.changes.append(("rows", n))
        return self._h.changeRowsBounds(n, *a)

    def setBasis(self, basis: Any) -> Any:  # noqa: N802 (HiGHS's name)
        import highspy

        r = self._h.setBasis(basis)
        self.calls.append((bool(basis.alien), r == highspy.HighsStatus.kOk))
        return r


def test_the_basis_is_read_and_set_as_highs_holds_it() -> None:
    """The basis read from HiGHS's basic variables and the bounds of the last solution is
    HiGHS's own status lists (a fixed variable may read lower for upper); set back, it is
    taken as it is (no repair) and HiGHS re-solves without a pivot; one with a basic
    variable missing is refused as it is and taken as a basis to repair."""
    warm = EconomicMPC(MODEL, horizon=N, warm_start=True)
    warm.plan(X0, FORECAST, PRICE)
    lp = warm._lp
    cs, rs = lp.read_basis()
    ref_c, ref_r = lp._read_basis_lists()
    for got, ref, lo, hi in ((cs, ref_c, "col_lo", "col_hi"), (rs, ref_r, "row_lo", "row_hi")):
        fixed = lp.current[lo] == lp.current[hi]
        same = (got == ref) | (fixed & (got != 1) & (ref != 1))
        assert same.all(), np.flatnonzero(~same)[:5]
    assert (cs == 1).sum() + (rs == 1).sum() == lp.h.getNumRow()
    lp.h = rec = _RecordSetBasis(lp.h)
    assert lp.set_basis(cs, rs)
    lp.h.run()
    assert lp.h.getInfo().simplex_iteration_count == 0
    assert lp.h.modelStatusToString(lp.h.getModelStatus()) == "Optimal"
    bad = cs.copy()
    bad[np.flatnonzero(bad == 1)[0]] = 0
    assert lp.set_basis(bad, rs)
    assert rec.calls == [(False, True), (False, False), (True, True)]
    lp.h.run()
    assert lp.h.modelStatusToString(lp.h.getModelStatus()) == "Optimal"


def test_a_re_plan_from_a_new_estimate_starts_where_the_last_plan_ended() -> None:
    """After a plan from scratch, re-plans of the same horizon from new estimates: HiGHS
    gets the state's bounds only (the linearisation at another state repeats its affine
    terms only to the last bits, which are not sent); the first, from a state far enough
    off that HiGHS must pivot, pivots a few times only (when the plan from scratch ran
    scaled, its basis re-run unscaled took 100 pivots here, a fresh solve 117); each plan
    a fresh solve's optimum."""
    warm = EconomicMPC(MODEL, horizon=N, warm_start=True)
    warm.plan(X0, FORECAST, PRICE)
    fresh = warm._lp.h.getInfo().simplex_iteration_count
    rng = np.random.default_rng(5)
    x0 = warm.model.layout.states.values(X0)
    far = warm.model.layout.states.values({"T_i": [17.0, 22.5], "T_e": [16.0, 19.0]})
    warm._lp.h = rec = _RecordSetBasis(warm._lp.h)
    for k in range(4):
        x = far if k == 0 else far + rng.normal(0.0, 0.1, len(x0))
        a = warm.plan(x, FORECAST, PRICE)
        if k == 0:
            assert warm.same_basis == 0          # HiGHS ran ...
            assert warm._lp.h.getInfo().simplex_iteration_count <= 30 < fresh  # ... briefly
        b = EconomicMPC(MODEL, horizon=N).plan(x, FORECAST, PRICE)
        assert a.status == b.status == "optimal"
        assert a.cost + a.discomfort == pytest.approx(b.cost + b.discomfort, rel=1e-9)
    assert rec.changes == [("cols", len(x0))] * 4


def test_a_new_estimate_that_keeps_the_basis_is_planned_without_highs() -> None:
    """Re-plans from estimates close to the last (0.01 K): the previous optimal basis
    stays feasible, the plan is moved along it without a HiGHS run, has a fresh solve's
    optimum and is a trajectory of the sampled model; an estimate far off (2–3 K) needs
    HiGHS to pivot, and its plan has the fresh optimum again."""
    warm = EconomicMPC(MODEL, horizon=N, warm_start=True)
    warm.plan(X0, FORECAST, PRICE)
    x0 = warm.model.layout.states.values(X0)
    runs = []
    real_run = warm._lp.h.run

    def run() -> Any:
        runs.append(1)
        return real_run()

    warm._lp.h = _Runs(warm._lp.h, run)
    rng = np.random.default_rng(7)
    far = warm.model.layout.states.values({"T_i": [17.0, 22.5], "T_e": [16.0, 19.0]})
    for k in range(4):
        x = x0 + rng.normal(0.0, 0.01, len(x0)) if k < 3 else far
        a = warm.plan(x, FORECAST, PRICE)
        b = EconomicMPC(MODEL, horizon=N).plan(x, FORECAST, PRICE)
        assert a.status == b.status == "optimal"
        assert a.cost + a.discomfort == pytest.approx(b.cost + b.discomfort, rel=1e-9)
        # the moved solution is a trajectory of the sampled model (the optimum's vertex
        # may differ from a fresh solve's where the LP has several)
        np.testing.assert_allclose(a.affine.simulate(x, a.u), a.x, atol=1e-8)
        if k < 3:
            assert warm.same_basis == k + 1 and not runs
    assert warm.same_basis == 3 and runs == [1]


def test_the_linearisation_follows_the_last_plan_from_the_interval_under_way() -> None:
    """The inputs to linearise at are the last good plan's from the interval now under way:
    a re-plan at the same time keeps them where they were (it shifted them by an hour
    before), one an interval later moves them one, one 2.5 intervals later two (the last
    interval repeated)."""
    mpc = EconomicMPC(MODEL, horizon=N)
    first = mpc.plan(X0, FORECAST, PRICE, t=0.0)
    again = mpc.plan(X0, FORECAST, PRICE, t=0.0)
    np.testing.assert_array_equal(again.affine.u_ref, first.u)
    later = mpc.plan(X0, FORECAST, PRICE, t=3600.0)
    np.testing.assert_array_equal(later.affine.u_ref, np.vstack([again.u[1:], again.u[-1:]]))
    off = mpc.plan(X0, FORECAST, PRICE, t=3600.0 * 3.5)
    np.testing.assert_array_equal(off.affine.u_ref, np.vstack([later.u[2:], later.u[-1:],
                                                               later.u[-1:]]))


def test_only_roundoff_is_kept_back_from_highs() -> None:
    """A datum that moved by no more than 1e-12 (relative, absolute below 1) keeps the
    value HiGHS holds; a real change, and any change to or from an infinite bound, is
    passed."""
    from processtwin.solvers.empc_lp import _unless_roundoff

    held = np.array([1.0, 0.0, 300.0, 5.0, np.inf, -np.inf, 2.0])
    new = np.array([1.0 + 5e-13, 3e-13, 300.0 * (1 + 1e-13), 5.0 + 1e-9, 5.0, -np.inf,
                    np.inf])
    got = _unless_roundoff(new, held)
    np.testing.assert_array_equal(got, [1.0, 0.0, 300.0, 5.0 + 1e-9, 5.0, -np.inf, np.inf])


class _Runs(_SeenThrough):
    """A ``highspy.Highs`` whose ``run`` is replaced."""

    def __init__(self, h: Any, run: Any) -> None:
        super().__init__(h)
        self.run = run


def test_small_changes_go_in_place_and_equal_a_fresh_build() -> None:
    """A re-plan of the same horizon from a new estimate, then with one hour's outdoor
    temperature revised: few entries change, so the instance is changed in place (bounds,
    costs and single coefficients, no rebuild), and each optimum is a fresh build's."""
    warm = EconomicMPC(MODEL, horizon=N, warm_start=True)
    warm.plan(X0, FORECAST, PRICE)
    revised = dict(FORECAST, T_out=FORECAST["T_out"].copy())
    revised["T_out"][17] -= 4.0
    x = {"T_i": [19.5, 20.0], "T_e": [18.2, 17.0]}
    for fc, moves in ((FORECAST, False), (revised, True)):
        before = warm._lp.values.copy()
        a = warm.plan(x, fc, PRICE)
        moved = int(np.count_nonzero(warm._lp.values != before))
        assert not warm._lp.rebuilt
        # that hour's COP and capacity entries of the power and load rows, nothing else
        assert (0 < moved <= 8) if moves else moved == 0
        b = EconomicMPC(MODEL, horizon=N).plan(x, fc, PRICE)
        assert a.status == b.status == "optimal"
        assert a.cost + a.discomfort == pytest.approx(b.cost + b.discomfort, rel=1e-9,
                                                      abs=1e-9)


class _Fails(_SeenThrough):
    """A HiGHS instance whose next ``n`` runs may not pivot (an iteration limit of 0)."""

    def __init__(self, h: object, n: int) -> None:
        super().__init__(h)
        self.left = n

    def run(self) -> object:
        if not self.left:
            return self._h.run()
        self.left -= 1
        _, limit = self._h.getOptionValue("simplex_iteration_limit")
        self._h.setOptionValue("simplex_iteration_limit", 0)
        try:
            return self._h.run()
        finally:
            self._h.setOptionValue("simplex_iteration_limit", limit)


@pytest.mark.parametrize("failures", [1, 2])
def test_a_failing_warm_start_is_re_solved_and_reported(failures: int) -> None:
    """A start from the previous basis (primal simplex) that fails is re-solved from
    that basis with the dual simplex; if that fails too, from scratch; the plan says
    which, and is the fresh optimum."""
    warm = EconomicMPC(MODEL, horizon=N, warm_start=True)
    warm.plan(X0, FORECAST, PRICE)
    fc = {n: (np.roll(v, -1, axis=0) if np.ndim(v) else v) for n, v in FORECAST.items()}
    warm._lp.h = _Fails(warm._lp.h, failures)
    x = {"T_i": [17.0, 22.5], "T_e": [16.0, 19.0]}   # far from the plan: pivots needed
    p = warm.plan(x, fc, np.roll(PRICE, -1), t=3600.0)
    assert warm._lp.h.left == 0
    assert p.status == "recovered" and p.ok
    assert "previous basis (primal simplex): iteration limit reached" in p.message.lower()
    assert warm._lp.h.getOptionValue("simplex_scale_strategy")[1] == 2  # retries: scaled
    if failures == 1:
        assert "with the dual simplex" in p.message and "scratch" not in p.message
    else:
        assert "dual simplex: Iteration limit reached; re-solved from scratch" in p.message
    ref = EconomicMPC(MODEL, horizon=N).plan(x, fc, np.roll(PRICE, -1), t=3600.0)
    assert p.cost + p.discomfort == pytest.approx(ref.cost + ref.discomfort, rel=1e-9)
    assert warm.fallbacks == 0


def test_comfort_holds_on_the_plan_resimulated_with_the_nonlinear_model() -> None:
    plan = EconomicMPC(MODEL, horizon=N, comfort=Comfort(price=5.0)).plan(X0, FORECAST,
                                                                          PRICE)
    check = plan.verify(MODEL, FORECAST)
    # stated linearisation error: the sampled model is exact for this building, so the
    # re-simulation agrees to the simulator's tolerance ...
    assert check["state_error"] < 1e-6
    # ... and the band (with the plan's own slack) holds within that error
    assert check["comfort_excess"] <= check["state_error"] + 1e-9
    assert plan.discomfort < 0.5          # only the cold start at 19 °C costs comfort


RoomState = variables("RoomState", T=Var("degC", "room temperature", default=20.0))
RoomInputs = variables(
    "RoomInputs",
    Q=Var("W", "heater power", default=0.0, bounds=(0.0, 3000.0), kind="manipulated"),
    T_out=Var("degC", "outdoor temperature", default=5.0, kind="disturbance"),
    occupancy=Var("-", "occupancy", default=1.0, kind="disturbance"))
RoomOutputs = variables("RoomOutputs", T_air=Var("degC", "room sensor", kind="online"),
                        P_el=Var("W", "heater meter", kind="online"))


def _room(unit: str) -> type:
    """One room, one scalar state, an electric heater: ``C dT/dt = UA (T_out - T) + Q``,
    with time in ``unit`` (rates per ``unit``)."""
    per = float(time_factor(unit, "s"))

    class Room(Model):
        C: float = param(3.6e6, units="J/K", bounds=(0.0, None), strict=True,
                         doc="capacity")
        UA: float = param(100.0, units="W/K", bounds=(0.0, None), doc="conductance")

        name: ClassVar[str] = f"room_{unit}"
        State: ClassVar[type] = RoomState
        Inputs: ClassVar[type] = RoomInputs
        Outputs: ClassVar[type] = RoomOutputs
        time_unit: ClassVar[str] = unit

        def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
            return RoomState(T=per * (self.UA * (u.T_out - x.T) + u.Q) / self.C)

        def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
            return RoomOutputs(T_air=x.T, P_el=u.Q)

    return Room


Room, RoomInDays = _room("s"), _room("d")


def test_a_scalar_state_model_plans_and_its_plan_is_the_closed_form() -> None:
    """Any model with a priced output and a comfort output plans; with one scalar state
    the sampled dynamics are the first-order step response, and the re-simulation check
    works on scalar states."""
    room = Room()
    fc = {"T_out": 5.0 + 3.0 * np.cos(HOURS / 24 * 2 * np.pi),
          "occupancy": np.where((HOURS >= 8) & (HOURS < 18), 1.0, 0.0)}
    mpc = EconomicMPC(room, horizon=N, comfort=Comfort(price=2.0))
    plan = mpc.plan({"T": 18.0}, fc, PRICE)
    assert plan.ok
    a = np.exp(-room.UA * 3600.0 / room.C)
    T = [18.0]
    for k in range(N):
        T.append(a * T[-1] + (1 - a) * (fc["T_out"][k] + plan.u[k, 0] / room.UA))
    np.testing.assert_allclose(plan.x[:, 0], T, rtol=0, atol=1e-9)
    check = plan.verify(room, fc)
    assert check["state_error"] < 1e-6
    assert check["comfort_excess"] <= check["state_error"] + 1e-9
    assert plan.cost == pytest.approx(float(np.sum(PRICE * plan.u[:, 0] / 1e3)), rel=1e-9)
    # the plan as a Dataset: the priced and comfort outputs beside states and inputs
    ds = plan.dataset(room)
    np.testing.assert_allclose(ds["P_el"].values[:-1], plan.u[:, 0])     # P_el = Q
    np.testing.assert_allclose(ds["T_air"].values, plan.x[:, 0], atol=1e-12)
    assert ds["band_lo"].attrs["units"] == "degC"
    lo = np.where(fc["occupancy"] >= 0.5, 21.0, 16.0)
    np.testing.assert_allclose(ds["band_lo"].values[1:], np.maximum(lo, np.r_[lo[1:], lo[-1]]))
    assert ds["band_lo"].values[0] == ds["band_lo"].values[1]
    assert ds["time"].attrs["units"] == "s"
    # bands given as integers are temperatures all the same; no -0.0 in what is printed
    ints = EconomicMPC(room, horizon=N, comfort=Comfort(occupied=(21, 24),
                                                         unoccupied=(16, 28), price=2.0))
    dsi = ints.plan({"T": 18.0}, fc, PRICE).dataset(room)
    assert dsi["band_lo"].dtype == np.float64 and dsi["band_hi"].dtype == np.float64
    assert not any(np.signbit(dsi[v].values).any() for v in ("P_el", "Q"))
    # the same room with time in days: the default interval is still one hour, and the
    # plan (costs per kWh over hours) is the same
    days = EconomicMPC(RoomInDays(), horizon=N, comfort=Comfort(price=2.0))
    assert days.dt == pytest.approx(1 / 24) and mpc.dt == 3600.0
    same = days.plan({"T": 18.0}, fc, PRICE)
    assert same.cost == pytest.approx(plan.cost, rel=1e-9)
    assert same.discomfort == pytest.approx(plan.discomfort, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(same.x, plan.x, rtol=0, atol=1e-9)
    # the thermostat baseline is a building's: another unit is told to bring its own
    with pytest.raises(ConfigError, match="needs a heat-pump building.*has no input Q_heat"):
        thermostat_baseline(mpc, fc, PRICE)


def test_linearisation_is_exact_against_the_adaptive_simulator() -> None:
    import processtwin as pt

    aff = linearise(MODEL, X0, FORECAST, 3600.0)
    u = np.random.default_rng(1).uniform(0, 3000, (N, 4))
    X = aff.simulate(aff.x_ref, u)
    t = np.arange(N + 1) * 3600.0
    inp = {"T_out": pt.hold(t[:-1], FORECAST["T_out"]),
           "I_sol": pt.hold(t[:-1], FORECAST["I_sol"].T),
           "occupancy": pt.hold(t[:-1], FORECAST["occupancy"]), "T_ground": 10.0,
           "Q_heat": pt.hold(t[:-1], u[:, :2].T), "Q_cool": pt.hold(t[:-1], u[:, 2:].T)}
    r = pt.simulate(MODEL, X0, inp, t, rtol=1e-11, atol=1e-11)
    ref = np.concatenate([np.asarray(r["T_i"]), np.asarray(r["T_e"])], axis=1)
    assert np.max(np.abs(X - ref)) < 1e-7


def test_failing_solves_run_the_fallback_path_and_say_so() -> None:
    # a time limit of zero: the first attempt fails, the fallback options solve it
    mpc = EconomicMPC(MODEL, horizon=N, time_limit_s=0.0)
    p = mpc.plan(X0, FORECAST, PRICE)
    assert p.status == "recovered" and "time limit" in p.message.lower()
    ref = EconomicMPC(MODEL, horizon=N).plan(X0, FORECAST, PRICE)
    assert p.cost == pytest.approx(ref.cost, rel=1e-6)
    # both attempts fail: the rest of the last good plan, labelled
    mpc.fallback_options = {"time_limit": 0.0}
    rec = mpc.recommend(3600.0, {"T_i": [17.0, 18.0], "T_e": [16.0, 16.0]}, FORECAST,
                        np.roll(PRICE, 5))
    assert rec.fallback and rec.status == "fallback"
    assert "last good plan" in rec.message
    np.testing.assert_allclose([rec.setpoints["Q_heat[0]"][0], rec.setpoints["Q_heat[1]"][0]],
                               p.u[1, :2])
    assert "FALLBACK" in str(rec)
    assert mpc.fallbacks == 1
    # infeasible on purpose: no power at all, yet a minimum heat-pump load
    bad = EconomicMPC(MODEL, horizon=N, limits={"P_el": (None, 0.0), "load": (0.2, 1.0)})
    q = bad.plan(X0, FORECAST, PRICE)
    assert q.status == "fallback" and not q.ok
    assert "infeasible" in q.message.lower() and "P_el" in q.message
    assert "inputs' reference values" in q.message


def test_staging_respects_minimum_run_and_off_times() -> None:
    st = Staging(min_level=0.3, min_on=3, min_off=4)
    mpc = EconomicMPC(MODEL, horizon=N, staging=st)
    p = mpc.plan(X0, FORECAST, PRICE)
    assert p.ok
    T_out = FORECAST["T_out"]
    area = sum(MODEL.areas()["floor"])
    cap = MODEL.q_heat * area * (1 + MODEL.c_heat * (T_out - 7.0))
    load = p.u[:, :2].sum(axis=1) / cap + p.u[:, 2:].sum(axis=1) / (
        MODEL.q_cool * area * (1 - MODEL.c_cool * (T_out - 35.0)))
    on = load > 1e-6
    assert np.all(load[on] >= 0.3 - 1e-7) and np.all(load <= 1 + 1e-7)
    runs = np.split(on, np.nonzero(np.diff(on.astype(int)))[0] + 1)
    inner = runs[1:-1]                    # the first and last run may be cut by the horizon
    assert inner, "the plan should switch the heat pump on and off"
    for r in inner:
        assert len(r) >= (st.min_on if r[0] else st.min_off)
    # LP relaxation is cheaper or equal; the MILP through Pyomo gives the same optimum
    relaxed = EconomicMPC(MODEL, horizon=N).plan(X0, FORECAST, PRICE)
    assert relaxed.cost + relaxed.discomfort <= p.cost + p.discomfort + 1e-9
    q = EconomicMPC(MODEL, horizon=N, staging=st, backend="pyomo").plan(X0, FORECAST, PRICE)
    assert q.cost + q.discomfort == pytest.approx(p.cost + p.discomfort, rel=1e-6)
    # carried in: on for one interval with a 3-interval minimum run stays on two more
    c = EconomicMPC(MODEL, horizon=N, staging=st).plan(
        {"T_i": [24.0, 24.0], "T_e": [22.0, 22.0]}, FORECAST, PRICE, on_before=True,
        run_before=1)
    lc = c.u[:, :2].sum(axis=1) / cap
    assert np.all(lc[:2] >= 0.3 - 1e-7)


def test_recommendation_names_every_setpoint_with_units_inside_the_envelope() -> None:
    mpc = EconomicMPC(MODEL, horizon=N)
    rec = mpc.recommend(0.0, X0, FORECAST, PRICE, baseline=lambda plan: (plan.cost + 1.0,
                                                                         0.0))
    assert set(rec.setpoints) == {"Q_heat[0]", "Q_heat[1]", "Q_cool[0]", "Q_cool[1]",
                                  "T_air[0] target", "T_air[1] target", "P_el plan",
                                  "load plan"}
    assert 0 <= rec.setpoints["load plan"][0] <= 1 + 1e-9
    assert rec.setpoints["Q_heat[0]"][1] == "W" and rec.setpoints["T_air[0] target"][1] == \
        "degC"
    assert all(v >= 0 for k, (v, _) in rec.setpoints.items() if k.startswith("Q_"))
    assert rec.benefit == pytest.approx(1.0)
    assert isinstance(rec.plan, xr.Dataset) and rec.plan["Q_heat"].shape == (N + 1, 2)
    assert not rec.fallback and "energy cost" in rec.objective


def test_configuration_errors_are_specific() -> None:
    with pytest.raises(ConfigError, match="not an output"):
        EconomicMPC(MODEL, power="P_heat")
    with pytest.raises(ConfigError, match="horizon"):
        EconomicMPC(MODEL, horizon=0)
    with pytest.raises(ConfigError, match="lower 2.0 > upper 1.0"):
        EconomicMPC(MODEL, limits={"load": (2.0, 1.0)})
    with pytest.raises(ConfigError, match="lower ≤ upper"):
        Comfort(occupied=(24.0, 21.0))
    with pytest.raises(ConfigError, match="has 23 values"):
        EconomicMPC(MODEL, horizon=N).plan(X0, {**FORECAST, "T_out": np.zeros(23)}, PRICE)
    with pytest.raises(ConfigError, match="no disturbance input"):
        EconomicMPC(MODEL, horizon=N).plan(X0, {**FORECAST, "wind": 1.0}, PRICE)
    # a price series of the wrong length (was numpy's broadcast error)
    with pytest.raises(ConfigError, match=f"one price per interval, {N} values.*got shape "
                                          r"\(10,\)"):
        EconomicMPC(MODEL, horizon=N).plan(X0, FORECAST, PRICE[:10])
    assert EconomicMPC(MODEL, horizon=N).plan(X0, FORECAST, 0.2).ok   # one for all


def test_prices_from_csv(tmp_path) -> None:
    f = tmp_path / "prices.csv"
    f.write_text("time,price\n2026-01-01 00:00,0.1\n2026-01-01 01:00,0.2\n"
                 "2026-01-01 02:00,0.3\n")
    t, p = read_prices(f)
    np.testing.assert_allclose(t, [0, 3600, 7200])
    np.testing.assert_allclose(p, [0.1, 0.2, 0.3])
    f.write_text("hour,price\n0,0.1\n1,abc\n")
    with pytest.raises(DataError, match="row 3 is not a finite number"):
        read_prices(f)
    f.write_text("hour,price\n0,0.1\n0,0.2\n")
    with pytest.raises(DataError, match="must increase"):
        read_prices(f)
    # seconds under a plain `time` heading were read as nanoseconds since 1970 (a day of
    # 15-min prices "covered 2.4e-08 h"): numbers of no stated unit are refused
    f.write_text("time,price\n0,0.1\n900,0.2\n1800,0.3\n")
    with pytest.raises(DataError, match="`time` holds numbers of no stated unit.*time_s"):
        read_prices(f)
    f.write_text("time_s,price\n0,0.1\n900,0.2\n1800,0.3\n")
    np.testing.assert_allclose(read_prices(f)[0], [0, 900, 1800])
    f.write_text("hour,price\n0,0.1\n,0.2\n")
    with pytest.raises(DataError, match=r"time in row 3 is not a finite number .*\[h\]"):
        read_prices(f)


def test_prices_of_any_step_become_the_mean_of_each_interval() -> None:
    """Each price holds until the next; an interval pays the time-weighted mean."""
    q = np.arange(8.0)                                   # 15-min prices over 2 h
    np.testing.assert_allclose(interval_prices(900.0 * np.arange(8), q, 2), [1.5, 5.5])
    hourly = np.array([0.1, 0.3, 0.2])
    np.testing.assert_allclose(interval_prices(3600.0 * np.arange(3), hourly, 3), hourly)
    # 2-hour blocks: each hour its block's price
    np.testing.assert_allclose(interval_prices([0.0, 7200.0], [0.2, 0.4], 4),
                               [0.2, 0.2, 0.4, 0.4])
    # irregular: 0-30 min a, 30-90 min b, then c for as long as the step before (60 min)
    a, b, c = 1.0, 2.0, 4.0
    np.testing.assert_allclose(interval_prices([0.0, 1800.0, 5400.0], [a, b, c], 2),
                               [(a + b) / 2, (b + c) / 2])
    # one day repeats daily
    day = time_of_use(3600.0 * np.arange(24))
    np.testing.assert_allclose(interval_prices(3600.0 * np.arange(24), day, 72),
                               np.tile(day, 3))
    # a day's blocks (0, 6, 9, 17, 21 h): the last one runs to midnight, then daily (its
    # step before would have held it to 25 h, and two days were refused as 25 h)
    blocks = 3600.0 * np.array([0, 6, 9, 17, 21])
    price = np.array([0.10, 0.30, 0.15, 0.45, 0.12])
    one = np.repeat(price, [6, 3, 8, 4, 3])
    np.testing.assert_allclose(interval_prices(blocks, price, 48), np.tile(one, 2))
    # a closing row at 24:00 is a 25th-hour price: refused for two days, with the hint
    with pytest.raises(DataError, match=r"cover 27 h; the plan needs 48 h .*drop the "
                                        r"closing row at 24:00"):
        interval_prices(np.append(blocks, 86400.0), np.append(price, 0.10), 48)
    # a half day is not a day's profile
    with pytest.raises(DataError, match="cover 12 h; the plan needs 48 h"):
        interval_prices(3600.0 * np.arange(12), np.ones(12), 48)
    with pytest.raises(DataError, match="cover 3 h; the plan needs 4 h"):
        interval_prices(3600.0 * np.arange(3), hourly, 4, source="p.csv")
    with pytest.raises(DataError, match="start at 0 s and increase"):
        interval_prices([0.0, 0.0], [1.0, 2.0], 1)


def test_kpis_match_a_hand_computed_record() -> None:
    t = np.arange(5) * 900.0
    ds = xr.Dataset({"T_air": (("time", "zone"), [[20, 22], [21, 25], [22, 22], [22, 22],
                                                  [0, 0]]),
                     "P_el": ("time", [1000.0, 2000.0, 0.0, 4000.0, 0.0]),
                     "price": ("time", [0.1, 0.1, 0.2, 0.2, 0.0]),
                     "band_lo": (("time", "zone"), np.full((5, 2), 21.0)),
                     "band_hi": (("time", "zone"), np.full((5, 2), 24.0))},
                    coords={"time": t})
    k = building_kpis(ds, floor_area=50.0)
    # zone 0: 1 K for 15 min; zone 1: 1 K for 15 min -> 0.25 K h each
    assert k["discomfort_Kh_per_zone"] == pytest.approx(0.25)
    assert k["energy_kWh"] == pytest.approx(7.0 * 0.25)
    assert k["cost"] == pytest.approx((0.1 * 3 + 0.2 * 4) * 0.25)
    assert k["peak_kW"] == pytest.approx(4.0)
    assert k["energy_kWh_per_m2"] == pytest.approx(1.75 / 50)


@pytest.fixture(scope="module")
def winter_week():
    from processtwin.weather import building_inputs, example_weather, read_weather

    w = read_weather(example_weather("greensboro"))
    wx = hourly_weather(building_inputs(w, (180.0,), start="1990-01-08", days=8))
    hrs = np.arange(len(wx["T_out"]))
    occ = np.where((hrs % 24 >= 6) & (hrs % 24 < 22), 1.0, 0.3)
    return wx, occ, time_of_use(hrs * 3600.0)


def test_closed_loop_week_saves_against_the_thermostat(winter_week) -> None:
    wx, occ, price = winter_week
    plant = HeatPumpBuilding(n_zones=1, c_e=180e3, h_ea=0.65)     # unlike the model
    model = HeatPumpBuilding(n_zones=1)
    x0 = {"T_i": [21.5], "T_e": [19.0]}
    kw = {"weather": wx, "occupancy": occ, "prices": price, "hours": 24 * 7, "x0": x0}
    base = building_kpis(closed_loop(Thermostat(), plant, **kw), floor_area=100.0)
    ds = closed_loop(EconomicMPC(model, horizon=24, comfort=Comfort(price=2.0)), plant,
                     seed=3, **kw)
    mpc = building_kpis(ds, floor_area=100.0)
    saving = 1.0 - mpc["cost"] / base["cost"]
    assert ds.attrs["fallbacks"] == 0 and ds.attrs["decisions"] == 24 * 7
    assert saving >= 0.15, (saving, mpc, base)
    assert mpc["discomfort_Kh_per_zone"] <= base["discomfort_Kh_per_zone"]


def test_schedule_command_plans_a_building_and_reports_against_the_thermostat(tmp_path
                                                                              ) -> None:
    from click.testing import CliRunner

    from processtwin.cli import main

    prices = tmp_path / "prices.csv"
    prices.write_text("hour,price\n" + "".join(f"{h},{0.1 if h < 7 else 0.3}\n"
                                               for h in range(24)))
    out = tmp_path / "plan.nc"
    r = CliRunner().invoke(main, ["schedule", "building", "--zones", "2", "--facing",
                                  "180,0", "--prices", str(prices), "--days", "2",
                                  "--x0", "T_i=21,21", "--x0", "T_e=19,19", "--out",
                                  str(out)])
    assert r.exit_code == 0, r.output
    assert "2 zone(s)" in r.output and "thermostat" in r.output and "saving" in r.output
    ds = xr.open_dataset(out)
    assert ds["Q_heat"].shape == (49, 2) and ds.attrs["status"] == "optimal"
    assert ds["Q_heat"].dims == ds["band_lo"].dims == ds["T_air"].dims == ("time", "zone")
    assert ds["P_el"].attrs["units"] == "W" and np.all(ds["P_el"].values >= 0)
    # the daily price file: cheap hours carry more of the heat than dear ones
    heat = ds["Q_heat"].values[:-1].sum(axis=1)
    hour = np.arange(48) % 24
    assert heat[hour < 7].mean() > heat[hour >= 7].mean()
    ds.close()
    # a 15-min price file: the plan pays each hour's mean, not the first rows as hours
    quarter = tmp_path / "prices15.csv"
    q = 0.1 + 0.01 * np.arange(25 * 4)                  # 25 hours
    quarter.write_text("time,price\n" + "".join(
        f"2026-01-0{1 + k // 96} {k % 96 // 4:02d}:{15 * (k % 4):02d},{q[k]:.4f}\n"
        for k in range(100)))
    r = CliRunner().invoke(main, ["schedule", "building", "--prices", str(quarter),
                                  "--days", "1", "--no-baseline", "--out", str(out)])
    assert r.exit_code == 0, r.output
    with xr.open_dataset(out) as ds:
        np.testing.assert_allclose(ds["price"].values[:24],
                                   q[:96].reshape(24, 4).mean(axis=1), rtol=1e-12)
    bad = CliRunner().invoke(main, ["schedule", "building", "--prices", str(quarter),
                                    "--days", "2"])
    assert bad.exit_code == 2 and "cover 25 h; the plan needs 48 h" in bad.output
    bad = CliRunner().invoke(main, ["schedule", "building", "--zones", "2", "--facing",
                                    "180", "--days", "1"])
    assert bad.exit_code == 2 and "1 azimuths; the building has 2 zones" in bad.output
    bad = CliRunner().invoke(main, ["schedule", "--days", "0"])
    assert bad.exit_code == 2 and "--days must be > 0" in bad.output
    bad = CliRunner().invoke(main, ["schedule", "--days", "1", "--start", "13-01"])
    assert bad.exit_code == 2 and "--start must be a day of the year as MM-DD" in bad.output
    bad = CliRunner().invoke(main, ["schedule", "double_integrator", "--days", "1"])
    assert bad.exit_code == 2 and "needs a heat-pump building" in bad.output
    bad = CliRunner().invoke(main, ["schedule", "--weather", "nowhere.epw"])
    assert bad.exit_code == 2 and "no such file" in bad.output


def test_a_failed_schedule_still_writes_its_dataset() -> None:
    """Impossible limits: the plan is a labelled fallback, and its Dataset still has the
    band and a power of NaN (not a crash, not a made-up number)."""
    from processtwin.solvers.building_loop import occupancy_schedule, schedule_building

    wx = {"T_out": FORECAST["T_out"], "I_sol": FORECAST["I_sol"], "T_ground": 10.0}
    plan, ds, _ = schedule_building(MODEL, wx, PRICE, hours=N, occupancy=occupancy_schedule(N),
                                    baseline=False, x0=X0,
                                    limits={"P_el": (None, 0.0), "load": (0.2, 1.0)})
    assert plan.status == "fallback"
    assert ds["band_lo"].dims == ("time", "zone") and np.all(np.isnan(ds["P_el"].values))
    assert ds.attrs["status"] == "fallback"


def test_thermostat_baseline_over_the_horizon_matches_the_closed_loop() -> None:
    from processtwin.solvers.building_loop import thermostat_baseline

    one = HeatPumpBuilding(n_zones=1)
    fc = {"T_out": FORECAST["T_out"], "I_sol": FORECAST["I_sol"][:, :1],
          "occupancy": FORECAST["occupancy"], "T_ground": 10.0}
    mpc = EconomicMPC(one, horizon=N)
    x0 = {"T_i": [21.5], "T_e": [19.0]}
    rec = mpc.recommend(0.0, x0, fc, PRICE, baseline=thermostat_baseline(mpc, fc, PRICE))
    cost, disc = rec.plan.attrs["baseline_cost"], rec.plan.attrs["baseline_discomfort_Kh"]
    # the same thermostat, simulated with the adaptive solver in the closed-loop runner
    weather = {"T_out": fc["T_out"], "I_sol": fc["I_sol"], "T_ground": 10.0}
    ds = closed_loop(Thermostat(), one, weather=weather, occupancy=fc["occupancy"],
                     prices=PRICE, hours=N, x0=x0, sensor_noise=0.0)
    k = building_kpis(ds, floor_area=100.0)
    assert cost == pytest.approx(k["cost"], rel=1e-6)
    assert disc == pytest.approx(k["discomfort_Kh_per_zone"], rel=1e-3, abs=1e-3)
    assert rec.benefit == pytest.approx(cost - rec.expected) and rec.benefit > 0


def test_demand_charge_lowers_the_peak_at_a_price() -> None:
    flat = EconomicMPC(MODEL, horizon=N).plan(X0, FORECAST, PRICE)
    peak = EconomicMPC(MODEL, horizon=N, peak_price=5.0).plan(X0, FORECAST, PRICE)
    via_pyomo = EconomicMPC(MODEL, horizon=N, peak_price=5.0, backend="pyomo").plan(
        X0, FORECAST, PRICE)
    assert peak.ok and flat.ok
    p_flat, p_peak = flat.y.max() / 1e3, peak.y.max() / 1e3          # kW
    assert p_peak < 0.8 * p_flat          # 4.5 kW → 3.0 kW on this day
    # the charge is in the cost: energy plus 5 per kW of the peak
    energy_cost = float(np.sum(PRICE * peak.y / 1e3))
    assert peak.cost == pytest.approx(energy_cost + 5.0 * p_peak, rel=1e-9)
    assert peak.cost + peak.discomfort == pytest.approx(via_pyomo.cost + via_pyomo.discomfort,
                                                        rel=1e-8)
    # a lower peak costs more energy, never less
    assert energy_cost >= float(np.sum(PRICE * flat.y / 1e3)) - 1e-9
