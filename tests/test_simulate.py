"""Simulation against scipy, conservation laws, integrator order, compilation and gradients."""

import sys

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import processtwin as pt
from processtwin.models import Bioreactor
from processtwin.ops import numpy_ops

SIM = sys.modules["processtwin._solve"]  # the compiled core counts its traces
T = np.linspace(0.0, 150.0, 151)
FEED_T = [0.0, 20.0, 60.0, 100.0]
FEED_V = [0.0, 0.03, 0.08, 0.05]
X0 = {"X": 1.0, "S": 0.5, "P": 0.0, "V": 120.0}


def _scipy_reference(model, x0, feed_t, feed_v, t, s_in=200.0):
    """Radau at rtol 1e-12, restarted at each feed change (the rhs is discontinuous there)."""
    def f(tt, y, F):
        return model.rhs(tt, model.State(*y), model.Inputs(F, s_in), numpy_ops)

    y = np.array(list(x0.values()), dtype=float)
    out = np.empty((len(t), len(y)))
    edges = [*feed_t[1:], t[-1]]
    start = t[0]
    for F, stop in zip(feed_v, edges, strict=True):
        mask = (t >= start) & (t <= stop)
        if stop <= start:  # a switch at the final time
            out[mask] = y
            continue
        t_eval = np.union1d(t[mask], [stop])
        sol = solve_ivp(f, (start, stop), y, method="Radau", rtol=1e-12, atol=1e-14,
                        t_eval=t_eval, args=(F,))
        assert sol.success
        out[mask] = sol.y.T[np.isin(t_eval, t[mask])]
        y = sol.y[:, -1]
        start = stop
    return out


@pytest.fixture(scope="module")
def reference():
    model = Bioreactor(alpha=0.05, m_s=0.005)
    return model, _scipy_reference(model, X0, FEED_T, FEED_V, T)


@pytest.mark.parametrize("solver", ["tsit5", "kvaerno5"])
def test_matches_scipy_radau(reference, solver):
    model, ref = reference
    res = pt.simulate(model, X0, {"F": pt.hold(FEED_T, FEED_V)}, T, solver=solver,
                      rtol=1e-8, atol=1e-10)
    got = np.asarray(res.states[0])
    scale = np.maximum(np.abs(ref).max(axis=0), 1e-3)
    err = np.abs(got - ref) / scale
    assert err.max() < 1e-6, f"max scaled error {err.max():.2e}"
    assert res.data["P"].values[-1] > 0.5  # the batch did produce something


@pytest.mark.parametrize("n_out", [2, 61, 601])
def test_fast_tsit5_loop_handles_jumps_at_outputs_and_many_outputs(n_out):
    # the single-scenario tsit5 path (processtwin._tsit5): feed switches exactly at output
    # times and at the final time, outputs spread over several chunks or just the end point
    model = Bioreactor(alpha=0.05)
    feed_t, feed_v = [0.0, 30.0, 45.0, 90.0], [0.0, 0.05, 0.01, 0.04]
    t = np.linspace(0.0, 90.0, n_out)
    ref = _scipy_reference(model, X0, feed_t, feed_v, t)
    fast = pt.simulate(model, X0, {"F": pt.hold(feed_t, feed_v)}, t, rtol=1e-10, atol=1e-12)
    via_diffrax = pt.simulate(model, X0, {"F": pt.hold(feed_t, feed_v)}, t, solver="dopri5",
                              rtol=1e-10, atol=1e-12)
    scale = np.abs(ref).max(axis=0)
    assert np.max(np.abs(fast.states[0] - ref) / scale) < 1e-8
    assert np.max(np.abs(via_diffrax.states[0] - ref) / scale) < 1e-8
    # volume is exact: the feed integral, with each switch stepped to exactly
    np.testing.assert_allclose(fast["V"], ref[:, 3], rtol=1e-13)
    assert fast.stats["num_accepted_steps"] > 10


@pytest.mark.parametrize("case", ["decimal switches", "switch at a chunk end"])
def test_fast_tsit5_loop_fills_outputs_just_after_a_switch(case):
    # decimal switch times: linspace puts outputs one float after them (0.30000000000000004
    # after a switch at 0.3); each step that stops at a switch must fill those too, also
    # when the switch is the last output of a chunk (16 outputs here) and the output one
    # float later opens the next chunk
    model = Bioreactor(alpha=0.05)
    if case == "decimal switches":
        feed_t, feed_v = [0.0, 0.3, 1.7, 7.1], [0.0, 0.05, 0.01, 0.04]
        t = np.linspace(0.0, 10.0, 101)
        assert t[3] == np.nextafter(0.3, 1.0) and t[71] == np.nextafter(7.1, 8.0)
    else:
        feed_t, feed_v = [0.0, 4.8], [0.0, 0.05]
        t = np.union1d(np.linspace(0.0, 10.0, 101), feed_t)
        assert t[48] == 4.8 and t[49] == np.nextafter(4.8, 5.0)
    ref = _scipy_reference(model, X0, feed_t, feed_v, t)
    fast = pt.simulate(model, X0, {"F": pt.hold(feed_t, feed_v)}, t, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(fast.states[0] - ref) / np.abs(ref).max(axis=0)) < 1e-8


def test_fast_tsit5_loop_moves_on_where_a_float_is_wider_than_the_first_step():
    # no biomass and no feed: f = 0, so the starting step falls back to 1e-6 h, less than
    # one float at t = 1e11 h; the loop must still advance (at least one float a step)
    x0 = {"X": 0.0, "S": 0.5, "P": 0.0, "V": 120.0}
    t = np.linspace(1e11, 1e11 + 1000.0, 11)
    res = pt.simulate(Bioreactor(), x0, {"F": 0.0}, t)
    np.testing.assert_array_equal(res.states[0], np.tile(list(x0.values()), (11, 1)))


def test_fast_tsit5_loop_crosses_a_switch_without_a_zero_length_step():
    tsit5 = sys.modules["processtwin._tsit5"]
    # y' = -y before t = 1, y' = 1 after; the chunk of outputs ends one float before the
    # switch, so the next step starts there and must cross the switch without integrating
    size = tsit5._SMALL_BYTES // 8  # outputs per chunk for one float64 state
    before = np.nextafter(1.0, 0.0)
    ts = np.concatenate([np.linspace(0.0, 0.99, size), [before, 1.0, 1.5]])
    assert ts[size] == before  # the last output of the second chunk

    def f(t, y):
        return jnp.where(t < 1.0, -y, jnp.ones_like(y))

    ys, status, _ = jax.jit(lambda y0: tsit5.solve(f, y0, jnp.asarray(ts), jnp.ones(1),
                                                   rtol=1e-10, atol=1e-12,
                                                   max_steps=10_000))(jnp.ones(1))
    exact = np.where(ts < 1.0, np.exp(-ts), np.exp(-1.0) + (ts - 1.0))
    assert int(status) == tsit5.OK
    np.testing.assert_allclose(np.asarray(ys)[:, 0], exact, rtol=1e-9)


def test_fast_tsit5_dense_output_weights_follow_diffrax_in_each_precision():
    tsit5 = sys.modules["processtwin._tsit5"]
    theta = 0.37
    interp = diffrax.Tsit5.interpolation_cls(t0=0.0, t1=1.0, y0=jnp.zeros(7), y1=None,
                                             k=jnp.eye(7))
    expected = np.asarray(interp.evaluate(theta))
    w64 = tsit5._dense_weights("float64")
    np.testing.assert_allclose(theta ** np.arange(5) @ w64, expected, atol=1e-14)
    w32 = tsit5._dense_weights("float32")  # fitted in float32: cached apart
    assert 1e-12 < np.max(np.abs(w32 - w64)) < 1e-4


def test_non_finite_results_are_an_error_not_output():
    # diffrax over an interval of one float with a switch at its end returns inf and
    # reports success; simulate checks the outputs and raises instead
    t = np.array([30.0, np.nextafter(30.0, 31.0)])
    with pytest.raises(pt.SolverError, match="non-finite"):
        pt.simulate(Bioreactor(), None, {"F": pt.hold([0.0, t[-1]], [0.0, 0.05])}, t,
                    solver="dopri5")


def test_fast_tsit5_loop_reports_failure():
    tsit5 = sys.modules["processtwin._tsit5"]
    ts = jnp.linspace(0.0, 1.0, 5)
    # y' = y², y(0) = 1 blows up at t = 1: the step shrinks to rounding and the loop stops
    _, status, stats = jax.jit(lambda y0: tsit5.solve(lambda t, y: y**2, y0, 2 * ts,
                                                      jnp.zeros(0), rtol=1e-8, atol=1e-10,
                                                      max_steps=100_000))(jnp.ones(2))
    assert int(status) == tsit5.FAILED and int(stats[0]) < 100_000
    # a right-hand side that is not finite at the start fails at once (not by running out
    # of steps)
    _, status, stats = jax.jit(lambda y0: tsit5.solve(lambda t, y: jnp.sqrt(y), y0, ts,
                                                      jnp.zeros(0), rtol=1e-8, atol=1e-10,
                                                      max_steps=100_000))(-jnp.ones(1))
    assert int(status) == tsit5.FAILED and int(stats[0]) <= 2
    _, status, stats = jax.jit(lambda y0: tsit5.solve(lambda t, y: -y, y0, ts, jnp.zeros(0),
                                                      rtol=1e-8, atol=1e-10,
                                                      max_steps=3))(jnp.ones(2))
    assert int(status) == tsit5.MAX_STEPS and int(stats[0]) == 3
    ys, status, _ = jax.jit(lambda y0: tsit5.solve(lambda t, y: -y, y0, ts, jnp.zeros(0),
                                                   rtol=1e-10, atol=1e-12,
                                                   max_steps=10_000))(jnp.ones(2))
    assert int(status) == tsit5.OK
    np.testing.assert_allclose(ys[:, 0], np.exp(-np.asarray(ts)), rtol=1e-9)


def test_substrate_mass_balance_and_volume_close():
    # With m_s = 0, V (X/Yxs + S + P/Yps) - S_in V is conserved for constant S_in.
    model = Bioreactor(alpha=0.1)
    res = pt.simulate(model, X0, {"F": pt.hold(FEED_T, FEED_V)}, T, rtol=1e-10, atol=1e-12)
    X, S, P, V = (res[k] for k in "XSPV")
    inv = V * (X / model.Y_xs + S + P / model.Y_ps) - 200.0 * V
    np.testing.assert_allclose(inv, inv[0], rtol=1e-9)
    # volume: V(t) = V0 + integral of the piecewise-constant feed, exactly
    edges = np.array([*FEED_T, np.inf])
    fed = sum(v * np.clip(T - a, 0.0, b - a) for v, a, b in
              zip(FEED_V, edges[:-1], edges[1:], strict=True))
    np.testing.assert_allclose(V, 120.0 + fed, rtol=1e-12)
    # and the substrate that came in is accounted for: it changed the inventory
    assert V[-1] > 125.0


def test_batch_growth_matches_analytic():
    # No feed, no inhibition, substrate in excess (S >> K_s): X grows at mu_max exactly
    # while S stays large: X(t) = X0 exp(mu t) to within the Monod factor S/(K_s+S).
    model = Bioreactor(K_s=0.0, K_i=1e12, beta=0.0, mu_max=0.05)
    t = np.linspace(0.0, 40.0, 41)
    res = pt.simulate(model, {"X": 0.01, "S": 100.0}, {"F": 0.0}, t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res["X"], 0.01 * np.exp(0.05 * t), rtol=1e-8)
    np.testing.assert_allclose(res["S"], 100.0 - (res["X"] - 0.01) / model.Y_xs, rtol=1e-10)


@pytest.mark.parametrize("solver,order", [("tsit5", 5), ("kvaerno5", 5)])
def test_integrator_order(solver, order):
    model = Bioreactor(mu_max=0.2, K_i=2.0)
    t = np.array([0.0, 24.0])
    x0 = {"S": 3.0}
    exact = pt.simulate(model, x0, {"F": 0.5}, t, solver="dopri8", rtol=1e-13,
                        atol=1e-13).states[0, -1]
    dts = np.array([4.0, 2.0, 1.0]) if solver == "tsit5" else np.array([1.0, 0.5, 0.25])
    errs = [np.abs(pt.simulate(model, x0, {"F": 0.5}, t, solver=solver, dt=dt).states[0, -1]
                   - exact).max() for dt in dts]
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert order - 0.6 < slope < order + 1.0, f"{solver}: slope {slope:.2f}, errors {errs}"


@pytest.mark.parametrize("solver", ["tsit5", "kvaerno5"])
def test_fixed_steps_never_cross_a_switch_of_a_held_input(solver):
    """V' = F exactly: with dt = 0.3 h and switches at 10 h and 25 h (not multiples of dt),
    the fixed-step volume must equal the exact piecewise-linear one — a step that crosses
    a switch, or an implicit stage past the step's end reading the next value, would be
    off by ~F dt."""
    model = Bioreactor()
    feed = pt.hold(np.array([0.0, 10.0, 25.0]), np.array([0.0, 0.05, 0.02]))
    t = np.linspace(0.0, 50.0, 51)
    V = 120.0 + 0.05 * np.clip(t - 10.0, 0.0, 15.0) + 0.02 * np.clip(t - 25.0, 0.0, None)
    res = pt.simulate(model, None, {"F": feed}, t, dt=0.3, solver=solver)
    np.testing.assert_allclose(res["V"], V, rtol=0, atol=1e-7)


def test_new_parameters_do_not_recompile():
    model = Bioreactor()
    t = np.linspace(0.0, 50.0, 51)
    pt.simulate(model, X0, {"F": pt.hold([0.0, 10.0], [0.0, 0.05])}, t)
    before = SIM._TRACE_COUNT
    r2 = pt.simulate(model.replace(mu_max=0.03, Y_xs=0.45), {**X0, "X": 2.0},
                     {"F": pt.hold([0.0, 15.0], [0.01, 0.02])}, t)
    r3 = pt.simulate(model, X0, {"F": pt.hold([0.0, 10.0], [0.0, 0.05])}, t,
                     params={"K_s": 0.1})
    assert SIM._TRACE_COUNT == before
    assert r2["X"][-1] != r3["X"][-1]


def test_ensemble_equals_individual_runs(rng):
    model = Bioreactor()
    n = 16
    mu = rng.uniform(0.015, 0.025, n)
    feed = rng.uniform(0.0, 0.05, n)
    x0 = rng.uniform(0.5, 1.5, n)
    ens = pt.ensemble(model, {"X": x0}, {"F": feed}, T, params={"mu_max": mu}, rtol=1e-8,
                      atol=1e-10)
    assert ens.data["P"].dims == ("scenario", "time")
    assert ens.data["mu_max"].dims == ("scenario",)
    for i in (0, 7, 15):
        one = pt.simulate(model, {"X": x0[i]}, {"F": feed[i]}, T, params={"mu_max": mu[i]})
        np.testing.assert_allclose(ens.states[i], one.states[0], rtol=1e-6, atol=1e-9)
    chunked = pt.ensemble(model, {"X": x0}, {"F": feed}, T, params={"mu_max": mu}, rtol=1e-8,
                          atol=1e-10, chunk_size=5)
    np.testing.assert_allclose(chunked.states, ens.states, rtol=1e-6, atol=1e-9)


def test_ensemble_scenario_lengths_must_agree():
    with pytest.raises(pt.ConfigError, match="disagree"):
        pt.ensemble(Bioreactor(), {"X": np.ones(3)}, None, T, params={"mu_max": np.ones(4)})


def _final_product(model, feed_values):
    traj = pt.trajectory(model, model.state(X0), {"F": pt.hold(FEED_T, feed_values)}, T,
                         rtol=1e-10, atol=1e-12)
    return traj.P[-1]


def test_gradient_wrt_parameters_matches_finite_differences():
    model = Bioreactor()
    feed = jnp.asarray(FEED_V)
    grad = jax.grad(_final_product)(model, feed)
    for name in ("mu_max", "Y_xs", "K_s", "beta"):
        v = getattr(model, name)
        h = 1e-4 * v
        fd = (_final_product(model.replace(**{name: v + h}), feed)
              - _final_product(model.replace(**{name: v - h}), feed)) / (2 * h)
        np.testing.assert_allclose(getattr(grad, name), fd, rtol=1e-5, err_msg=name)
        assert abs(float(fd)) > 1e-6, name


def test_gradient_wrt_inputs_matches_finite_differences():
    model = Bioreactor()
    feed = jnp.asarray(FEED_V)
    grad = jax.grad(_final_product, argnums=1)(model, feed)
    h = 1e-6
    for k in range(1, len(FEED_V)):
        e = np.zeros(len(FEED_V))
        e[k] = h
        fd = (_final_product(model, feed + e) - _final_product(model, feed - e)) / (2 * h)
        np.testing.assert_allclose(grad[k], fd, rtol=1e-5)
    assert np.abs(grad[1:]).min() > 0


def test_dataset_has_units_and_roles():
    ds = pt.simulate(Bioreactor(), X0, {"F": 0.01}, T).data
    assert ds["X"].attrs["units"] == "g/L" and ds["X"].attrs["role"] == "state"
    assert ds["F"].attrs["kind"] == "manipulated" and ds["S_in"].attrs["kind"] == "disturbance"
    assert ds["OUR"].attrs["role"] == "output" and ds["y_X"].attrs["output_name"] == "X"
    assert ds["mu_max"].attrs["units"] == "1/h"
    assert ds["time"].attrs["units"] == "h"
    np.testing.assert_array_equal(ds["y_X"], ds["X"])
