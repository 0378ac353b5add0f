"""The model library for buildings and thermal lines against analytic oracles: pipe steady
state and transport delay, counter-flow ε-NTU, RC step responses and steady states, heat-pump
COP limits, energy balances closed over a day, and bad configurations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import processtwin as pt
from processtwin import ModelError
from processtwin.models import (
    Building,
    Chiller,
    CounterflowHeatExchanger,
    HeatPump,
    HydronicEmitters,
    Pipe,
    StorageTank,
    district_heating,
)
from processtwin.ops import jax_ops, numpy_ops
from processtwin.system import System


def _flat(model, inputs):
    """The rhs as a function of the flat state (JAX), inputs held."""
    lay = model.layout
    u = lay.inputs.unravel(jnp.asarray(lay.inputs.values(inputs)), jax_ops)

    def f(x):
        return lay.states.ravel(model.rhs(0.0, lay.states.unravel(x, jax_ops), u, jax_ops),
                                jax_ops)

    return f


def steady_state(model, inputs, x0=None, newton=4):
    """Newton on rhs = 0 from the defaults (exact in one step for an affine model)."""
    f = _flat(model, inputs)
    x = jnp.asarray(model.layout.states.values(x0))
    for _ in range(newton):
        x = x - jnp.linalg.solve(jax.jacfwd(f)(x), f(x))
    return model.layout.states.to_dict(np.asarray(x))


# ---- pipe ---------------------------------------------------------------------------------
PIPE_IN = {"m_dot": 2.0, "T_in": 80.0, "T_amb": 5.0}


def test_pipe_steady_outlet_is_the_cell_formula_and_converges_at_first_order():
    errors = []
    for n in (10, 20, 40, 80):
        pipe = Pipe(n_cells=n, L=5000.0, U=1.0)
        x = steady_state(pipe, PIPE_IN)
        UA = pipe.L / (1 / (pipe.h * math.pi * pipe.D) + 1 / pipe.U)
        ratio = UA / (PIPE_IN["m_dot"] * pipe.cp)
        cells = 5.0 + 75.0 * (1 + ratio / n) ** (-n)
        np.testing.assert_allclose(x["T"][-1], cells, rtol=1e-12)
        errors.append(x["T"][-1] - (5.0 + 75.0 * math.exp(-ratio)))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(orders - 1.0) < 0.05), orders


def test_pipe_transport_delay_is_volume_over_flow_within_the_dispersion():
    n = 50
    pipe = Pipe(n_cells=n, h=1e-9, U=0.0)  # the wall decoupled: water alone
    tau = pipe.rho * math.pi * pipe.D**2 / 4 * pipe.L / 5.0  # at 5 kg/s: ~440 s
    t = np.linspace(0.0, 3 * tau, 3001)
    res = pt.simulate(pipe, {"T": [20.0] * n, "T_w": [20.0] * n},
                      {"m_dot": 5.0, "T_in": 70.0}, t, rtol=1e-10, atol=1e-10)
    F = (np.asarray(res["out:T_out"]) - 20.0) / 50.0  # the outlet's step response
    pdf = np.gradient(F, t)
    mean = np.trapezoid(t * pdf, t)
    sd = math.sqrt(np.trapezoid((t - mean) ** 2 * pdf, t))
    np.testing.assert_allclose(mean, tau, rtol=2e-3)  # tanks in series: mean exactly τ
    np.testing.assert_allclose(sd, tau / math.sqrt(n), rtol=2e-2)
    t_half = np.interp(0.5, F, t)
    assert abs(t_half - tau) < sd


# ---- heat exchanger ------------------------------------------------------------------------
def _effectiveness(n, NTU, Cr):
    hx = CounterflowHeatExchanger(n_segments=n, R_f_inf=0.0, U=2000.0, A=10.0)
    UA = hx.U * hx.A
    C_min = UA / NTU
    m_h = C_min / hx.cp_h  # the hot side is the minimum-capacity stream
    m_c = m_h / Cr
    x = steady_state(hx, {"m_h": m_h, "T_h_in": 80.0, "m_c": m_c, "T_c_in": 20.0},
                     x0={"R_f": 0.0})
    return (80.0 - x["T_h"][-1]) / 60.0


@pytest.mark.parametrize("NTU", [0.5, 1.5, 4.0])
@pytest.mark.parametrize("Cr", [0.3, 0.75, 1.0])
def test_heat_exchanger_steady_state_is_epsilon_ntu(NTU, Cr):
    if Cr < 1.0:
        e = math.exp(-NTU * (1 - Cr))
        exact = (1 - e) / (1 - Cr * e)
    else:
        exact = NTU / (1 + NTU)
    e1, e2 = _effectiveness(100, NTU, Cr), _effectiveness(200, NTU, Cr)
    assert abs(e2 - exact) < abs(e1 - exact)  # converges ...
    np.testing.assert_allclose(2 * e2 - e1, exact, rtol=2e-4)  # ... at first order


def test_fouling_grows_towards_its_asymptote_and_lowers_the_duty():
    hx = CounterflowHeatExchanger(tau_f=86400.0)
    t = np.linspace(0.0, 5 * 86400.0, 6)
    res = pt.simulate(hx, None, {}, t, solver="kvaerno5", rtol=1e-10, atol=1e-14)
    R = np.asarray(res["R_f"])
    np.testing.assert_allclose(R, hx.R_f_inf * (1 - np.exp(-t / hx.tau_f)), rtol=1e-6,
                               atol=1e-12)
    duty = np.asarray(res["out:T_c_out"])
    assert np.all(np.diff(duty[1:]) < 0)  # after the start-up, a fouling exchanger heats less


# ---- building ------------------------------------------------------------------------------
def _one_zone_matrices(b):
    """The single-zone TiTe network written out by hand: x' = A x + B w."""
    A_f = 100.0
    C_i, C_e = b.c_i * A_f, b.c_e * A_f
    H_ie, H_ea = b.h_ie * A_f, b.h_ea * A_f
    H_out = b.U_win * 0.15 * A_f + b.rho_a * b.cp_a * b.n_ach / 3600 * b.height * A_f
    H_g = b.U_g * A_f
    A = np.array([[-(H_ie + H_out) / C_i, H_ie / C_i],
                  [H_ie / C_e, -(H_ie + H_ea + H_g) / C_e]])
    return A, C_i, C_e, H_out, H_ea, H_g


def test_single_zone_step_response_is_its_closed_form():
    b = Building()
    A, C_i, C_e, H_out, H_ea, H_g = _one_zone_matrices(b)
    x0 = np.array([20.0, 15.0])
    T_out, T_g, Q, occ = -5.0, 8.0, 4000.0, 0.0
    gains = 100.0 * b.q_base
    w = np.array([(H_out * T_out + gains + Q) / C_i, (H_ea * T_out + H_g * T_g) / C_e])
    x_ss = np.linalg.solve(A, -w)
    t = np.linspace(0.0, 10 * 86400.0, 21)
    exact = np.array([x_ss + expm(A * tk) @ (x0 - x_ss) for tk in t])
    res = pt.simulate(b, {"T_i": [20.0], "T_e": [15.0]},
                      {"Q_hvac": [Q], "T_out": T_out, "T_ground": T_g, "occupancy": occ}, t,
                      rtol=1e-11, atol=1e-11)
    sim = np.c_[np.asarray(res["T_i"])[:, 0], np.asarray(res["T_e"])[:, 0]]
    np.testing.assert_allclose(sim, exact, rtol=1e-8, atol=1e-8)


def test_rc_network_steady_state_solves_g_t_equals_q():
    floor, window = (120.0, 80.0, 100.0), (20.0, 8.0, 15.0)
    walls = ((0, 1, 25.0), (1, 2, 30.0), (0, 2, 10.0))
    b = Building(n_zones=3, floor_area=floor, window_area=window, ground_area=(120.0, 0.0, 0.0),
                 adjacency=walls)
    u = {"Q_hvac": [3000.0, 1000.0, 2000.0], "T_out": 2.0, "T_ground": 9.0,
         "I_sol": [150.0, 0.0, 60.0], "occupancy": 0.7}
    x = steady_state(b, u)
    # G T = q over [T_i (3), T_e (3)], assembled from the documented conductances
    G, q = np.zeros((6, 6)), np.zeros(6)
    for z in range(3):
        A_f = floor[z]
        H_ie, H_ea = b.h_ie * A_f, b.h_ea * A_f
        H_out = b.U_win * window[z] + b.rho_a * b.cp_a * b.n_ach / 3600 * b.height * A_f
        H_g = b.U_g * (120.0, 0.0, 0.0)[z]
        i, e = z, 3 + z
        G[i, i] += H_ie + H_out
        G[i, e] -= H_ie
        G[e, e] += H_ie + H_ea + H_g
        G[e, i] -= H_ie
        q[i] = (H_out * 2.0 + b.g * window[z] * u["I_sol"][z]
                + A_f * (b.q_base + b.q_occ * 0.7) + u["Q_hvac"][z])
        q[e] = H_ea * 2.0 + H_g * 9.0
    for i, j, area in walls:
        G[i, i] += b.U_int * area
        G[j, j] += b.U_int * area
        G[i, j] -= b.U_int * area
        G[j, i] -= b.U_int * area
    T = np.linalg.solve(G, q)
    np.testing.assert_allclose(np.r_[x["T_i"], x["T_e"]], T, rtol=1e-12)


# ---- heat pump -----------------------------------------------------------------------------
@pytest.mark.parametrize("cop_model", ["carnot", "curve"])
def test_heat_pump_power_is_heat_over_cop_and_never_beats_carnot(cop_model):
    hp = HeatPump(cop_model=cop_model)
    for T_src in np.linspace(-20.0, 20.0, 9):
        for T_sup in np.linspace(30.0, 60.0, 7):
            x = hp.State(T_sup=T_sup)
            u = hp.Inputs(y=0.7, m_w=0.4, T_ret=T_sup - 5.0, T_src=T_src)
            cop = float(hp.cop(x, u, numpy_ops))
            carnot = (T_sup + 273.15) / (T_sup - T_src)
            assert 1.0 < cop <= carnot, (T_src, T_sup, cop, carnot)
            y = hp.measure(0.0, x, u, numpy_ops)
            np.testing.assert_allclose(y.P_el, float(hp.heat(x, u)) / cop, rtol=1e-14)
    a7w35 = hp.cop(hp.State(T_sup=35.0), hp.Inputs(0.5, 0.4, 30.0, 7.0), numpy_ops)
    assert abs(float(a7w35) - (4.12 if cop_model == "carnot" else 4.5)) < 0.02


def test_chiller_cop_never_beats_carnot():
    ch = Chiller()
    for T_src in np.linspace(20.0, 45.0, 6):
        for T_sup in np.linspace(5.0, 15.0, 5):
            cop = float(ch.cop(ch.State(T_sup=T_sup), ch.Inputs(0.5, 1.0, 12.0, T_src),
                               numpy_ops))
            assert 0.0 < cop <= (T_sup + 273.15) / (T_src - T_sup)


# ---- energy balances -----------------------------------------------------------------------
def _balance(model, schedule, span=86400.0, units=None):
    """Integrate the rhs together with Σ heat flows (scipy Radau, rtol 1e-12, the JAX
    Jacobian) through a piecewise-constant input schedule; return (Δ stored, ∫ Σ flows,
    ∫ Σ |flows|)."""
    lay = model.layout
    parts = units or {"": model}

    def accounts(t, x_flat, u_flat):
        x = lay.states.unravel(x_flat, jax_ops)
        u = lay.inputs.unravel(u_flat, jax_ops)
        pairs = {"": (x, u)} if units is None else model.unit_values(t, x, u, jax_ops)
        stored = sum(parts[k].stored_energy(xx, jax_ops) for k, (xx, _) in pairs.items())
        flows = [f for k, (xx, uu) in pairs.items()
                 for f in parts[k].heat_flows(t, xx, uu, jax_ops).values()]
        return stored, sum(flows), sum(jnp.abs(f) for f in flows)

    def aug(t, y, uv):
        xs = y[:-2]
        dx = lay.states.ravel(model.rhs(t, lay.states.unravel(xs, jax_ops),
                                        lay.inputs.unravel(uv, jax_ops), jax_ops), jax_ops)
        _, net, absolute = accounts(t, xs, uv)
        return jnp.concatenate([dx, jnp.stack([net, absolute])])

    f_jit = jax.jit(aug)
    jac_jit = jax.jit(jax.jacfwd(aug, argnums=1))
    stored_jit = jax.jit(lambda x, uv: accounts(0.0, x, uv)[0])
    x = lay.states.values(None)
    E0 = float(stored_jit(x, lay.inputs.values(schedule[0][1])))
    total = gross = 0.0
    bounds = [s for s, _ in schedule] + [span]
    for (start, inputs), end in zip(schedule, bounds[1:], strict=True):
        uv = jnp.asarray(lay.inputs.values(inputs))
        sol = solve_ivp(lambda t, y, uv=uv: np.asarray(f_jit(t, y, uv)), (start, end),
                        np.r_[x, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-9,
                        jac=lambda t, y, uv=uv: np.asarray(jac_jit(t, y, uv)))
        assert sol.success, sol.message
        x = sol.y[:-2, -1]
        total += sol.y[-2, -1]
        gross += sol.y[-1, -1]
    E1 = float(stored_jit(x, lay.inputs.values(schedule[-1][1])))
    return E1 - E0, total, gross


def _day(*steps):
    return [(k * 86400.0 / len(steps), s) for k, s in enumerate(steps)]


@pytest.mark.parametrize("name", ["pipe", "heat_exchanger", "storage_tank", "heat_pump",
                                  "emitters", "building"])
def test_energy_balance_of_each_unit_closes_over_a_day(name):
    model, schedule = {
        "pipe": (Pipe(n_cells=10), _day({"m_dot": 5.0, "T_in": 70.0},
                                        {"m_dot": 1.0, "T_in": 90.0},
                                        {"m_dot": 3.0, "T_in": 60.0})),
        "heat_exchanger": (CounterflowHeatExchanger(n_segments=6, tau_f=86400.0),
                           _day({"m_h": 2.0, "m_c": 1.0}, {"m_h": 0.5, "T_h_in": 90.0})),
        "storage_tank": (StorageTank(n_layers=6),
                         _day({"m_top": 0.3, "T_top_in": 80.0}, {"m_bot": 0.2},
                              {"m_top": 0.1, "m_bot": 0.1, "T_bot_in": 30.0})),
        "heat_pump": (HeatPump(), _day({"y": 0.9, "T_src": -5.0}, {"y": 0.2, "m_w": 0.1})),
        "emitters": (HydronicEmitters(n_zones=2, scale=(1.0, 2.0)),
                     _day({"m_w": [0.05, 0.1]}, {"T_sup": 40.0, "m_w": [0.01, 0.0]})),
        "building": (Building(n_zones=2, adjacency=((0, 1, 20.0),)),
                     _day({"Q_hvac": [3000.0, 0.0], "T_out": -3.0},
                          {"I_sol": [400.0, 100.0], "occupancy": 1.0, "T_out": 5.0},
                          {"Q_hvac": [0.0, 2000.0]})),
    }[name]
    stored, net, gross = _balance(model, schedule)
    assert abs(stored - net) <= 1e-8 * gross, (stored, net, gross)


def test_energy_balance_of_the_district_heating_twin_closes_over_a_day():
    dh = district_heating()
    schedule = _day({"plant.y": 0.7, "plant.m_w": 1.0, "emitters.m_w": [0.08, 0.05, 0.07],
                     "building.T_out": -2.0, "plant.T_src": -2.0},
                    {"plant.y": 0.3, "plant.m_w": 0.6, "emitters.m_w": [0.02, 0.05, 0.01],
                     "building.T_out": 4.0, "plant.T_src": 4.0, "building.occupancy": 0.9})
    stored, net, gross = _balance(dh, schedule, units=dh.units)
    assert abs(stored - net) <= 1e-8 * gross, (stored, net, gross)


# ---- bad configuration ---------------------------------------------------------------------
def test_bad_configurations_name_the_unit_and_the_port():
    with pytest.raises(ModelError, match="dimension must be a positive int|at least 1"):
        Pipe(n_cells=0)
    with pytest.raises(ModelError, match="c_w"):
        Pipe(c_w=-1.0)
    with pytest.raises(ModelError, match="names zone 3; the building has zones 0 … 2"):
        Building(n_zones=3, adjacency=((0, 3, 10.0),))
    with pytest.raises(ModelError, match="`floor_area` has 2 values but the building has 3"):
        Building(n_zones=3, floor_area=(50.0, 60.0))
    with pytest.raises(ModelError, match="`scale` must hold 3"):
        HydronicEmitters(n_zones=3, scale=(1.0, 2.0))
    with pytest.raises(ModelError, match="cop_model"):
        HeatPump(cop_model="magic")
    with pytest.raises(ModelError, match="T_air"):  # 3 zones into 2 emitters
        System({"b": Building(n_zones=3), "e": HydronicEmitters(n_zones=2)},
               [("b.T_air", "e.T_room")])
    with pytest.raises(ModelError, match="T_sup"):  # a port that does not exist
        System({"p": Pipe(), "e": HydronicEmitters()}, [("p.T_sup", "e.T_sup")])
    with pytest.raises(ModelError, match="keyword"):
        System({"return": Pipe()})
    from processtwin.model import setting

    with pytest.raises(ModelError, match="hashable"):
        setting([1.0, 2.0])  # a list would not key the compiled program
