"""The optimiser on the general contract: a discrete-time model against the discrete
Riccati solution, and a vector-state model with a bound on every element."""

import casadi as ca
import numpy as np
import pytest

import processtwin as pt
from processtwin import ConfigError
from processtwin.models import DiscreteTripleTank, TankCascade
from processtwin.solvers import OCP

H0 = np.array([0.5, 0.35, 0.2])  # operating levels of the triple tank [m]
U0 = 0.1  # operating pump flow [L/s]


def test_discrete_lq_equals_riccati():
    """Finite-horizon LQ on the sampled triple tank: the OCP's optimum equals the backward
    Riccati recursion (Bryson & Ho 1975, §4.4; Anderson & Moore 1990, §2.4)."""
    N = 25
    A = np.array(DiscreteTripleTank.A)
    B = np.array(DiscreteTripleTank.B)[:, :1]  # the pump only
    Qw, Rw, Qf = np.diag([1.0, 2.0, 4.0]), np.array([[0.5]]), np.diag([10.0, 10.0, 10.0])
    dx0 = np.array([0.004, -0.003, 0.002])  # small enough that q_pump ≥ 0 stays inactive
    P = Qf
    gains = []
    for _ in range(N):
        K = np.linalg.solve(Rw + B.T @ P @ B, B.T @ P @ A)
        P = Qw + A.T @ P @ (A - B @ K)
        gains.append(K)
    gains = gains[::-1]
    x, u_ref = dx0.copy(), []
    for K in gains:
        u = -K @ x
        u_ref.append(u[0])
        x = A @ x + B @ u
    J_ref = float(dx0 @ P @ dx0)
    assert min(u_ref) > -U0  # the bound q_pump ≥ 0 is inactive

    h0 = ca.DM(H0)

    def stage(xs, us):
        d = xs.h - h0
        return ca.bilin(ca.DM(Qw), d, d) + Rw[0, 0] * (us.q_pump - U0) ** 2

    def mayer(xs):
        d = xs.h - h0
        return ca.bilin(ca.DM(Qf), d, d)

    ocp = OCP(DiscreteTripleTank(), float(N), N, controls=("q_pump",))
    assert ocp.method == "discrete"
    ocp.initial_state(h=H0 + dx0).minimise(mayer=mayer, stage=stage)
    res = ocp.solve(tol=1e-12)
    assert res.success
    np.testing.assert_allclose(res.objective, J_ref, rtol=1e-8)
    np.testing.assert_allclose(res.data["q_pump"].values[:N] - U0, u_ref, atol=1e-8)
    # the plan is the model's own map: re-simulated with the planned pump flows
    sim = pt.simulate(DiscreteTripleTank(), {"h": H0 + dx0},
                      {"q_pump": pt.hold(np.arange(N, dtype=float),
                                         res.data["q_pump"].values[:N])},
                      np.arange(N + 1, dtype=float))
    np.testing.assert_allclose(sim["h"], res.data["h"].values, atol=1e-12)


def test_discrete_ocp_needs_whole_samples():
    with pytest.raises(ConfigError, match="multiple of its sample time"):
        OCP(DiscreteTripleTank(), 10.0, 4)


def test_vector_state_bound_holds_on_every_element():
    """Fill a 5-tank cascade as fast as possible with the inlet at 10 g/m3 while every
    tank stays at or below 6 g/m3: the first tank, the one that rises first, becomes
    active; the plan re-simulated by the JAX simulator matches the collocation states."""
    model = TankCascade(n_tanks=5)
    ocp = OCP(model, 20.0, 40, controls=("q",))
    ocp.bound_input("q", 0.0, 2.0).constrain("c", upper=6.0)
    ocp.minimise(mayer=lambda xs: -ca.sum1(xs.c), du_weight={"q": 1e-4})
    res = ocp.solve(tol=1e-10)
    c = res.data["c"]
    assert c.dims == ("time", "tank") and c.sizes["tank"] == 5
    assert float(c.max()) <= 6.0 + 1e-7
    assert float(c.isel(tank=0).max()) == pytest.approx(6.0, abs=1e-6)
    assert any(a.startswith("`c[0]` ≤ 6") for a in res.active)
    q = res.data["q"].values
    sim = pt.simulate(model, None, {"q": pt.hold(c["time"].values[:-1], q[:-1])},
                      c["time"].values, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sim["c"], c.values, atol=2e-4)


def test_vector_control_takes_bounds_rates_and_previous_per_element():
    """Three heated zones, one heater each (a vector control): per-element bounds, rate
    limits and previous values hold in the plan, element by element."""
    from typing import ClassVar

    from processtwin.model import Model, Var, dimension, param, variables

    ZState = variables("ZState", T=Var("degC", "zone temperature", default=20.0,
                                       shape="n_zones"))
    ZInputs = variables("ZInputs", Q=Var("kW", "heater power", default=0.0,
                                         bounds=(0.0, None), kind="manipulated",
                                         shape="n_zones"))

    class Zones(Model):
        """Lumped zones losing heat to 10 °C outside (ASHRAE 2017, ch. 18)."""

        n_zones: int = dimension(3, doc="number of zones")
        C: float = param(2.0, units="kWh/K", bounds=(0.0, None), strict=True,
                         doc="heat capacity")
        UA: float = param(0.1, units="kW/K", bounds=(0.0, None), doc="loss conductance")
        State: ClassVar[type] = ZState
        Inputs: ClassVar[type] = ZInputs
        time_unit: ClassVar[str] = "h"

        def rhs(self, t, x, u, ops):
            return ZState(T=(u.Q - self.UA * (x.T - 10.0)) / self.C)

    target = ca.DM([24.0, 26.0, 30.0])
    ocp = OCP(Zones(), 6.0, 12, controls=("Q",))
    ocp.bound_input("Q", 0.0, [1.0, 2.0, 3.0], rate=[0.5, 0.5, 1.0],
                    previous=[0.2, 0.0, 0.0])
    ocp.minimise(mayer=lambda x: ca.sumsqr(x.T - target), du_weight={"Q": 1e-3})
    res = ocp.solve()
    Q = res.data["Q"].values[:-1]  # (interval, zone)
    assert res.data["Q"].dims == ("time", "zone")
    assert np.all(Q <= np.array([1.0, 2.0, 3.0]) + 1e-9) and np.all(Q >= 0.0)
    steps = np.diff(np.vstack([[0.2, 0.0, 0.0], Q]), axis=0)
    assert np.all(np.abs(steps) <= np.array([0.5, 0.5, 1.0]) + 1e-7)
    assert np.isclose(np.abs(steps[0, 0]), 0.5, atol=1e-6)  # the rate limit binds at once
    with pytest.raises(ConfigError, match="one value or 3 over `zone`"):
        ocp.bound_input("Q", upper=[1.0, 2.0])
