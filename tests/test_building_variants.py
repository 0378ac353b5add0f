"""The ISO 13790 5R1C building against oracles written here from the standard: the steady
state of its air, surface and mass nodes (G·T = q), a zone's step response in closed form,
the hourly Crank–Nicolson method of ISO 13790:2008 Annex C, the energy balance over a day,
bad configurations, and the drop-in for the TiTe Building."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import processtwin as pt
from processtwin import ModelError
from processtwin.models import Building, Building5R1C, district_heating
from processtwin.ops import jax_ops, numpy_ops

# Zones of the checks: unequal floors and windows, a slab under zone 0 only, three walls.
FLOOR, WINDOW, GROUND = (120.0, 80.0, 100.0), (20.0, 8.0, 15.0), (120.0, 0.0, 0.0)
WALLS = ((0, 1, 25.0), (1, 2, 30.0), (0, 2, 10.0))
U3 = {"Q_hvac": [3000.0, 1000.0, 2000.0], "T_out": 2.0, "T_ground": 9.0,
      "I_sol": [150.0, 0.0, 60.0], "occupancy": 0.7}


def iso_network(p, A_f, A_w, A_g):
    """One zone's conductances [W/K], capacity [J/K] and gain fractions, as ISO 13790:2008
    writes them: H_tr,is = h_is A_t (A_t = 4.5 A_f), H_tr,ms = h_ms A_m, H_tr,w, H_ve, and
    H_tr,em from 1/H_tr,em = 1/H_tr,op - 1/H_tr,ms (ground included in H_tr,op)."""
    A_t, A_m = p["a_t"] * A_f, p["a_m"] * A_f
    H_op, H_g = p["h_op"] * A_f, p["U_g"] * A_g
    n = {"A_t": A_t, "A_m": A_m, "H_is": p["h_is"] * A_t, "H_ms": p["h_ms"] * A_m,
         "H_w": p["U_win"] * A_w, "H_op": H_op, "H_g": H_g,
         "H_ve": p["rho_a"] * p["cp_a"] * p["n_ach"] / 3600.0 * p["height"] * A_f,
         "C_m": p["c_m"] * A_f, "C_a": p["c_a"] * A_f}
    n["H_em"] = 1.0 / (1.0 / (H_op + H_g) - 1.0 / n["H_ms"])
    return n


def iso_gains(p, n, A_f, A_w, occupancy, I_sol):
    """ISO 13790:2008 eqs. C.1–C.3 (the 9.1 W/(m2 K) of C.3 written out)."""
    phi_int = A_f * (p["q_base"] + p["q_occ"] * occupancy)
    phi_sol = p["g"] * A_w * I_sol
    radiant = 0.5 * phi_int + phi_sol
    return {"ia": 0.5 * phi_int, "m": n["A_m"] / n["A_t"] * radiant,
            "st": (1.0 - n["A_m"] / n["A_t"] - n["H_w"] / (9.1 * n["A_t"])) * radiant}


def external(n, T_out, T_ground):
    """ISO's one external node of the opaque elements: the conductance-weighted boundary."""
    return (n["H_op"] * T_out + n["H_g"] * T_ground) / (n["H_op"] + n["H_g"])


def affine(model, inputs):
    """The model's rhs x' = A x + b (exact: it is affine), read with JAX at the inputs."""
    lay = model.layout
    u = lay.inputs.unravel(jnp.asarray(lay.inputs.values(inputs)), jax_ops)

    def f(x):
        return lay.states.ravel(model.rhs(0.0, lay.states.unravel(x, jax_ops), u, jax_ops),
                                jax_ops)

    x0 = jnp.zeros(lay.states.size)
    return np.asarray(jax.jacfwd(f)(x0)), np.asarray(f(x0))


# ---- steady state -------------------------------------------------------------------------
def test_steady_state_of_three_zones_solves_g_t_equals_q():
    b = Building5R1C(n_zones=3, floor_area=FLOOR, window_area=WINDOW, ground_area=GROUND,
                     adjacency=WALLS)
    A, c = affine(b, U3)
    x = b.layout.states.to_dict(np.linalg.solve(A, -c))
    # G T = q over [θ_air, θ_s, θ_m] of each zone, every node's heat balance
    p = b.params()
    G, q = np.zeros((9, 9)), np.zeros(9)
    for z in range(3):
        n = iso_network(p, FLOOR[z], WINDOW[z], GROUND[z])
        phi = iso_gains(p, n, FLOOR[z], WINDOW[z], U3["occupancy"], U3["I_sol"][z])
        a, s, m = 3 * z, 3 * z + 1, 3 * z + 2
        G[a, a] += n["H_ve"] + n["H_is"]
        G[a, s] -= n["H_is"]
        q[a] = n["H_ve"] * U3["T_out"] + phi["ia"] + U3["Q_hvac"][z]
        G[s, s] += n["H_is"] + n["H_w"] + n["H_ms"]
        G[s, a] -= n["H_is"]
        G[s, m] -= n["H_ms"]
        q[s] = n["H_w"] * U3["T_out"] + phi["st"]
        G[m, m] += n["H_ms"] + n["H_em"]
        G[m, s] -= n["H_ms"]
        q[m] = n["H_em"] * external(n, U3["T_out"], U3["T_ground"]) + phi["m"]
    for i, j, area in WALLS:
        H = p["U_int"] * area
        G[3 * i, 3 * i] += H
        G[3 * j, 3 * j] += H
        G[3 * i, 3 * j] -= H
        G[3 * j, 3 * i] -= H
    T = np.linalg.solve(G, q).reshape(3, 3)
    np.testing.assert_allclose(x["T_i"], T[:, 0], rtol=1e-12)
    np.testing.assert_allclose(x["T_m"], T[:, 2], rtol=1e-12)
    xs, us = b.state(x), b.input_values(U3)
    np.testing.assert_allclose(b.surface_temperature(xs, us, numpy_ops), T[:, 1], rtol=1e-12)
    np.testing.assert_allclose(b.operative_temperature(xs, us, numpy_ops),
                               0.3 * T[:, 0] + 0.7 * T[:, 1], rtol=1e-12)


# ---- step response ------------------------------------------------------------------------
def test_single_zone_step_response_is_its_closed_form():
    """Two states (air, mass) once the massless surface node is eliminated: the 2×2 closed
    form x∞ + e^{At}(x0 - x∞), assembled by hand from the ISO conductances."""
    b = Building5R1C()
    p = b.params()
    n = iso_network(p, 100.0, 15.0, 100.0)
    u = {"Q_hvac": [4000.0], "T_out": -5.0, "T_ground": 8.0, "I_sol": [200.0],
         "occupancy": 0.0}
    phi = iso_gains(p, n, 100.0, 15.0, 0.0, 200.0)
    S = n["H_is"] + n["H_w"] + n["H_ms"]  # θ_s = (H_is θ_a + H_w θ_o + H_ms θ_m + Φ_st)/S
    a_s, m_s = n["H_is"] / S, n["H_ms"] / S
    s0 = (n["H_w"] * u["T_out"] + phi["st"]) / S
    A = np.array([[-n["H_ve"] - n["H_is"] * (1 - a_s), n["H_is"] * m_s],
                  [n["H_ms"] * a_s, -n["H_ms"] * (1 - m_s) - n["H_em"]]])
    w = np.array([n["H_ve"] * u["T_out"] + n["H_is"] * s0 + phi["ia"] + u["Q_hvac"][0],
                  n["H_ms"] * s0 + n["H_em"] * external(n, u["T_out"], u["T_ground"])
                  + phi["m"]])
    C = np.array([n["C_a"], n["C_m"]])
    A, w = A / C[:, None], w / C
    x_ss, x0 = np.linalg.solve(A, -w), np.array([20.0, 15.0])
    t = np.linspace(0.0, 10 * 86400.0, 21)
    exact = np.array([x_ss + expm(A * tk) @ (x0 - x_ss) for tk in t])
    res = pt.simulate(b, {"T_i": [20.0], "T_m": [15.0]}, u, t, rtol=1e-11, atol=1e-11)
    sim = np.c_[np.asarray(res["T_i"])[:, 0], np.asarray(res["T_m"])[:, 0]]
    np.testing.assert_allclose(sim, exact, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(np.asarray(res["out:T_air"])[:, 0], sim[:, 0], rtol=1e-14)


# ---- ISO 13790 hourly method --------------------------------------------------------------
def iso_hourly(p, A_f, A_w, A_g, u, theta_m0, hours):
    """ISO 13790:2008 Annex C, eqs. C.1–C.11: θ_m at the end of each hour and θ_air of each
    hour (supply air at the outdoor temperature); also λ and θ_m,∞ of its ODE."""
    n = iso_network(p, A_f, A_w, A_g)
    phi = iso_gains(p, n, A_f, A_w, u["occupancy"], u["I_sol"])
    H_ve, H_is, H_w, H_ms, H_em = (n[k] for k in ("H_ve", "H_is", "H_w", "H_ms", "H_em"))
    th_e, th_sup, phi_hc = u["T_out"], u["T_out"], u["Q_hvac"]
    th_em = external(n, u["T_out"], u["T_ground"])
    H1 = 1.0 / (1.0 / H_ve + 1.0 / H_is)  # C.6
    H2 = H1 + H_w  # C.7
    H3 = 1.0 / (1.0 / H2 + 1.0 / H_ms)  # C.8
    phi_mtot = phi["m"] + H_em * th_em + H3 * (  # C.5
        phi["st"] + H_w * th_e + H1 * ((phi["ia"] + phi_hc) / H_ve + th_sup)) / H2
    c = n["C_m"] / 3600.0
    th_m, th_air = [theta_m0], []
    for _ in range(hours):
        prev = th_m[-1]
        th_m.append((prev * (c - 0.5 * (H3 + H_em)) + phi_mtot)  # C.4
                    / (c + 0.5 * (H3 + H_em)))
        mean = 0.5 * (th_m[-1] + prev)  # C.9
        th_s = (H_ms * mean + phi["st"] + H_w * th_e  # C.10
                + H1 * (th_sup + (phi["ia"] + phi_hc) / H_ve)) / (H_ms + H_w + H1)
        th_air.append((H_is * th_s + H_ve * th_sup + phi["ia"] + phi_hc)  # C.11
                      / (H_is + H_ve))
    beta = H_ms / (H_ms + H_w + H1) * H_is / (H_is + H_ve)  # ∂θ_air/∂θ_m
    return (np.array(th_m), np.array(th_air), (H3 + H_em) / n["C_m"],
            phi_mtot / (H3 + H_em), beta)


def test_hourly_iso_method_agrees_within_its_crank_nicolson_error():
    """A day of constant inputs from a cold mass. With the air node's capacity taken to ~0
    (ISO's massless node) the model is ISO's ODE; ISO's hourly steps are Crank–Nicolson on
    it (amplification R = (1 - λΔt/2)/(1 + λΔt/2) against e^{-λΔt}), and θ_air of an hour
    uses the mean of the hour's end temperatures (C.9) where the ODE has the midpoint. The
    differences are those two discretisation errors, to 1e-6 K."""
    u = {"Q_hvac": 1500.0, "T_out": -2.0, "T_ground": 8.0, "I_sol": 120.0, "occupancy": 0.8}
    b = Building5R1C(c_a=1e-2)
    p = b.params()
    th_m, th_air, lam, th_inf, beta = iso_hourly(p, 100.0, 15.0, 100.0, u, 12.0, 24)
    # the model's trajectory, exactly (affine rhs), at the hours and the half hours
    A, c = affine(b, {k: [v] if k in ("Q_hvac", "I_sol") else v for k, v in u.items()})
    x_inf = np.linalg.solve(A, -c)
    x0 = np.array([x_inf[0] + beta * (12.0 - x_inf[1]), 12.0])  # air in equilibrium with it
    half = np.array([x_inf + expm(A * 1800.0 * k) @ (x0 - x_inf) for k in range(49)])
    T_m, T_air = half[::2, 1], half[1::2, 0]
    k = np.arange(25)
    R = (1 - lam * 1800.0) / (1 + lam * 1800.0)
    cn_m = (R**k - np.exp(-lam * 3600.0 * k)) * (12.0 - th_inf)
    cn_air = beta * (0.5 * (R ** k[:-1] + R ** k[1:])
                     - np.exp(-lam * 3600.0 * (k[1:] - 0.5))) * (12.0 - th_inf)
    assert 1e-4 < np.max(np.abs(cn_m)) < 1e-3 and 5e-4 < np.max(np.abs(cn_air)) < 2e-3
    np.testing.assert_allclose(th_m - T_m, cn_m, rtol=0, atol=1e-6)
    np.testing.assert_allclose(th_air - T_air, cn_air, rtol=0, atol=1e-6)


# ---- energy balance -----------------------------------------------------------------------
def test_energy_balance_closes_over_a_day():
    """Δ stored = ∫ Σ heat_flows to 1e-8 of ∫ Σ |flows|, through a schedule of three input
    steps (scipy Radau on the rhs with Σ flows appended, the JAX Jacobian)."""
    b = Building5R1C(n_zones=2, ground_area=(100.0, 0.0), adjacency=((0, 1, 20.0),))
    lay = b.layout
    schedule = [{"Q_hvac": [3000.0, 0.0], "T_out": -3.0},
                {"I_sol": [400.0, 100.0], "occupancy": 1.0, "T_out": 5.0},
                {"Q_hvac": [0.0, 2000.0], "T_ground": 4.0}]

    def aug(t, y, uv):
        x, u = lay.states.unravel(y[:-2], jax_ops), lay.inputs.unravel(uv, jax_ops)
        flows = list(b.heat_flows(t, x, u, jax_ops).values())
        dx = lay.states.ravel(b.rhs(t, x, u, jax_ops), jax_ops)
        return jnp.concatenate([dx, jnp.stack([sum(flows), sum(jnp.abs(f) for f in flows)])])

    f_jit, jac_jit = jax.jit(aug), jax.jit(jax.jacfwd(aug, argnums=1))
    x = lay.states.values(None)
    E0 = float(b.stored_energy(lay.states.unravel(x, numpy_ops), numpy_ops))
    net = gross = 0.0
    for k, inputs in enumerate(schedule):
        uv = jnp.asarray(lay.inputs.values(inputs))
        sol = solve_ivp(lambda t, y, uv=uv: np.asarray(f_jit(t, y, uv)),
                        (k * 28800.0, (k + 1) * 28800.0), np.r_[x, 0.0, 0.0], method="Radau",
                        rtol=1e-12, atol=1e-9,
                        jac=lambda t, y, uv=uv: np.asarray(jac_jit(t, y, uv)))
        assert sol.success, sol.message
        x = sol.y[:-2, -1]
        net, gross = net + sol.y[-2, -1], gross + sol.y[-1, -1]
    E1 = float(b.stored_energy(lay.states.unravel(x, numpy_ops), numpy_ops))
    assert abs((E1 - E0) - net) <= 1e-8 * gross, (E1 - E0, net, gross)
    assert abs(E1 - E0) > 1e-3 * gross  # the day changes what the building holds


# ---- configuration ------------------------------------------------------------------------
def test_bad_configurations_name_the_unit():
    with pytest.raises(ModelError, match="`building_5r1c`: adjacency entry 0 names zone 3; "
                                         "the building has zones 0 … 2"):
        Building5R1C(n_zones=3, adjacency=((0, 3, 10.0),))
    with pytest.raises(ModelError, match="`building_5r1c`: `window_area` must be areas ≥ 0"):
        Building5R1C(n_zones=2, window_area=(10.0, -1.0))
    with pytest.raises(ModelError, match="`building_5r1c`: every `floor_area` must be > 0"):
        Building5R1C(n_zones=2, floor_area=(100.0, 0.0))
    with pytest.raises(ModelError, match="`building_5r1c`: `ground_area` has 1 values"):
        Building5R1C(n_zones=2, ground_area=(50.0,))
    with pytest.raises(ModelError, match="`building_5r1c`: adjacency entry 0 must join two "
                                         "different zones by an area > 0"):
        Building5R1C(n_zones=2, adjacency=((0, 1, -5.0),))
    with pytest.raises(ModelError, match="`building_5r1c`: zone 0: the opaque and ground"):
        Building5R1C(h_op=30.0)  # more than H_tr,ms: no H_tr,em
    with pytest.raises(ModelError, match="`building_5r1c`: zone 1: the surface node"):
        Building5R1C(n_zones=2, window_area=(10.0, 2000.0))
    with pytest.raises(ModelError, match="c_m"):
        Building5R1C(c_m=-1.0)
    with pytest.raises(ModelError, match="unknown `mass_class` 'massive'"):
        Building5R1C.of_mass_class("massive")
    heavy = Building5R1C.of_mass_class("heavy", n_zones=2)
    assert (heavy.a_m, heavy.c_m, heavy.n_zones) == (3.0, 260e3, 2)


def test_is_a_drop_in_for_the_tite_building():
    """The same settings, inputs, outputs and ports as Building; in the district-heating
    twin its air temperature is a state, so radiators → zones → radiators is no algebraic
    loop."""
    kw = {"n_zones": 3, "floor_area": FLOOR, "adjacency": WALLS}
    iso, tite = Building5R1C(**kw), Building(**kw)
    for group in ("inputs", "outputs", "ports"):
        a, b = getattr(iso.layout, group), getattr(tite.layout, group)
        assert [(lf.name, lf.size, lf.var) for lf in a.leaves] == \
            [(lf.name, lf.size, lf.var) for lf in b.leaves], group
    assert iso.areas() == tite.areas() and iso.coupling() == tite.coupling()
    dh = district_heating(building=iso)
    assert {"building.T_i", "building.T_m"} <= set(dh.layout.states.names)
    lay = dh.layout
    dx = lay.states.ravel(dh.rhs(0.0, lay.states.unravel(lay.states.defaults(), numpy_ops),
                                 lay.inputs.unravel(lay.inputs.defaults(), numpy_ops),
                                 numpy_ops), numpy_ops)
    assert np.all(np.isfinite(dx))
