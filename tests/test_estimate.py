"""Extended Kalman filter: exactness on a linear model, consistency, parameter tracking,
missing and late samples, anomaly flags, bad data and long-run covariance health."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import processtwin as pt
from processtwin.estimate import ExtendedKalmanFilter, init_state, run, transition
from processtwin.models import Bioreactor, DoubleIntegrator


# --------------------------------------------------------------------------------------
# The linear reference model, the double integrator: RK4 is exact for it (polynomial
# solution), so the EKF must reproduce the textbook Kalman filter (tests/conftest.py) and
# its smoother the textbook RTS smoother to rounding.
def _textbook_rts(zs, Ps, preds):
    """Rauch, Tung & Striebel (1965) fixed-interval smoother."""
    zs_s, Ps_s = zs.copy(), Ps.copy()
    for k in range(len(zs) - 2, -1, -1):
        Fm, z_pred, P_pred = preds[k + 1]
        C = Ps[k] @ Fm.T @ np.linalg.inv(P_pred)
        zs_s[k] = zs[k] + C @ (zs_s[k + 1] - z_pred)
        Ps_s[k] = Ps[k] + C @ (Ps_s[k + 1] - P_pred) @ C.T
    return zs_s, Ps_s


def test_ekf_equals_kalman_filter_on_linear_model(rng, textbook_kf):
    model = DoubleIntegrator()
    times = np.cumsum(rng.uniform(0.05, 0.7, 80))  # irregular
    Y = rng.normal(size=(80, 2)) * [3.0, 1.0] + np.c_[times, np.ones(80)]
    Y[rng.random((80, 2)) < 0.3] = np.nan  # missing channels
    q, r = np.array([0.01, 0.04]), np.array([0.25, 0.04])
    ekf = ExtendedKalmanFilter(model, q={"p": q[0], "v": q[1]}, r={"p": 0.5, "v": 0.2},
                               gate=1e12, stuck_n=10**6)
    z0, P0 = np.array([0.1, 0.9]), np.diag([4.0, 1.0])
    ds = xr.Dataset({"p": ("time", Y[:, 0]), "v": ("time", Y[:, 1])}, coords={"time": times})
    out = ekf.filter(ds, x0={"p": z0[0], "v": z0[1]}, std={"p": 2.0, "v": 1.0},
                     inputs={"a": 0.3}, full_covariance=True, smooth=True).data
    zs, Ps, preds = textbook_kf(times, Y, 0.3, q, r, z0, P0)
    np.testing.assert_allclose(np.c_[out["p"], out["v"]], zs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out["covariance"].values, Ps, rtol=1e-10, atol=1e-12)
    # and the RTS smoother equals the textbook smoother
    zs_s, Ps_s = _textbook_rts(zs, Ps, preds)
    np.testing.assert_allclose(np.c_[out["p_smooth"], out["v_smooth"]], zs_s, rtol=1e-9,
                               atol=1e-10)
    np.testing.assert_allclose(np.c_[out["p_smooth_std"], out["v_smooth_std"]],
                               np.sqrt(np.diagonal(Ps_s, axis1=1, axis2=2)), rtol=1e-9)
    assert np.all(out["p_smooth_std"].values[:-1] <= out["p_std"].values[:-1] + 1e-12)


# --------------------------------------------------------------------------------------
# Bioreactor helpers: a stochastic "plant" with exactly the filter's noise model.
DT = 0.5  # h between online samples
LAB_EVERY = 8  # lab assay every 4 h
N_STEPS = 160  # 80 h
FEED = 0.03


def _plant(ekf, key, z0, n_steps=N_STEPS, drift=None):
    """Truth and noisy samples: the filter's own discrete model plus process noise."""
    spec = ekf.spec
    u = jnp.array([FEED, 200.0])
    times = jnp.arange(1, n_steps + 1, dtype=float) * DT

    def body(carry, k):
        z, key = carry
        key, k1, k2 = jax.random.split(key, 3)
        t0 = k * DT
        z = transition(spec, z, u, t0, t0 + DT)
        z = z + jnp.sqrt(spec.q * DT) * jax.random.normal(k1, z.shape)
        if drift is not None:
            z = z.at[-1].set(drift(t0 + DT))
        z = jnp.maximum(z, spec.lower)
        y = _measure(spec, z, u, t0 + DT)
        y = y + jnp.sqrt(spec.r) * jax.random.normal(k2, y.shape)
        lab = jnp.round(k + 1) % LAB_EVERY == 0
        offline = jnp.array([ch in ("X", "S", "P") for ch in spec.channels])
        y = jnp.where(offline & ~lab, jnp.nan, y)
        return (z, key), (z, y)

    _, (Z, Y) = jax.lax.scan(body, (z0, key), jnp.arange(n_steps, dtype=float))
    return times, Z, Y, jnp.tile(u, (n_steps, 1))


def _measure(spec, z, u, t):
    from processtwin.estimate.core import measure

    return measure(spec, z, u, t)


@pytest.fixture(scope="module")
def bio_ekf():
    q = {"X": 1e-4, "S": 1e-6, "P": 1e-6, "V": 1e-3}
    return ExtendedKalmanFilter(Bioreactor(), q=q, channels=("V", "OUR", "X", "S", "P"))


def test_filter_consistent_nees_and_nis(bio_ekf, check_consistency):
    ekf, runs = bio_ekf, 50
    z0_mean, P0 = ekf.initial({"S": 1.0}, std={"X": 0.05, "S": 0.05, "P": 0.01, "V": 0.5})
    keys = jax.random.split(jax.random.PRNGKey(7), runs)
    L = np.linalg.cholesky(P0)
    z_true0 = jnp.asarray(z0_mean + np.random.default_rng(3).normal(size=(runs, 4)) @ L.T)

    def one(key, zt0):
        times, Z, Y, U = _plant(ekf, key, zt0)
        s0 = init_state(ekf.spec, 0.0, jnp.asarray(z0_mean), jnp.asarray(P0))
        _, rec = run(ekf.spec, s0, times, Y, U)
        err = Z - rec.z
        nees = jnp.einsum("ti,tij,tj->t", err, jnp.linalg.inv(rec.P), err)
        return nees, rec.nis, rec.dof, rec.flags

    nees, nis, dof, flags = jax.jit(jax.vmap(one))(keys, z_true0)
    check_consistency(nees, nis, dof, flags, nx=4)


def test_drifting_parameter_is_tracked():
    model = Bioreactor()
    ekf = ExtendedKalmanFilter(model, estimate=["mu_max"],
                               q={"X": 1e-4, "S": 1e-6, "P": 1e-6, "V": 1e-3,
                                  "mu_max": (2e-4) ** 2})
    z0, P0 = ekf.initial({"S": 1.0}, std={"X": 0.05, "S": 0.05, "P": 0.01, "V": 0.5,
                                          "mu_max": 0.004})

    def drift(t):  # mu_max rises 30 % over 80 h, as slowly as a strain adapts
        return 0.02 * (1.0 + 0.3 * t / 80.0)

    times, Z, Y, U = _plant(ekf, jax.random.PRNGKey(11), jnp.asarray(z0), drift=drift)
    ds = xr.Dataset({c: ("time", np.asarray(Y)[:, j]) for j, c in enumerate(ekf.channels)},
                    coords={"time": np.asarray(times)})
    out = ekf.filter(ds, x0={"S": 1.0, "X": 1.0}, std={"X": 0.05, "S": 0.05, "P": 0.01,
                                                        "V": 0.5, "mu_max": 0.004},
                     inputs={"F": FEED}).data
    truth = np.asarray(Z)[:, -1]
    est, sd = out["mu_max"].values, out["mu_max_std"].values
    after = times > 20.0
    coverage = np.mean(np.abs(est - truth)[after] <= 2 * sd[after])
    assert coverage >= 0.9, f"true mu_max inside ±2σ only {coverage:.0%} of the time"
    assert abs(est[-1] - truth[-1]) < 0.1 * truth[-1]
    assert out["mu_max"].attrs["units"] == "1/h"


def test_missing_and_late_samples_equal_in_order_processing(bio_records):
    model, t, cols = bio_records()
    ekf = ExtendedKalmanFilter(model, estimate=["mu_max"])
    ds = xr.Dataset({c: ("time", v) for c, v in cols.items()}, coords={"time": t})
    ref = ekf.filter(ds, x0={"S": 1.0}, inputs={"F": FEED}, t0=0.0).data
    live = ekf.live(0.0, x0={"S": 1.0}, u={"F": FEED})
    # online samples arrive on time, lab assays 3 h (6 samples) after they were taken
    pending = []
    for k, tk in enumerate(t):
        live.step(tk, {c: cols[c][k] for c in ("V", "OUR") if np.isfinite(cols[c][k])})
        if np.isfinite(cols["X"][k]):
            pending.append((tk + 3.0, tk, {c: cols[c][k] for c in ("X", "S", "P")}))
        for due, ts, y in [p for p in pending if p[0] <= tk]:
            live.step(ts, y)
            pending.remove((due, ts, y))
    for _, ts, y in pending:
        live.step(ts, y)
    assert live.refiltered > 0
    est = live.estimate()
    for name in ekf.names:
        np.testing.assert_allclose(est[name][0], ref[name].values[-1], rtol=1e-12)
        np.testing.assert_allclose(est[name][1], ref[f"{name}_std"].values[-1], rtol=1e-10)


def test_live_history_is_bounded_and_late_samples_within_it_stay_exact(bio_records):
    model, t, cols = bio_records(n=60)
    ekf = ExtendedKalmanFilter(model)
    online = [{c: cols[c][k] for c in ("V", "OUR")} for k in range(t.size)]
    full = ekf.live(0.0, x0={"S": 1.0}, u={"F": FEED})
    short = ekf.live(0.0, x0={"S": 1.0}, u={"F": FEED}, history=10)
    for k, tk in enumerate(t):
        full.step(tk, online[k])
        short.step(tk, online[k])
    assert short.dropped >= t.size - 20 and len(short._t) < 20 and full.dropped == 0
    # a lab assay from 4 samples ago is still re-filtered exactly ...
    k = t.size - 4
    lab = {c: cols[c][k] for c in ("X", "S", "P") if np.isfinite(cols[c][k])}
    lab = lab or {"X": 1.0}
    full.step(t[k], lab)
    short.step(t[k], lab)
    np.testing.assert_array_equal(short.z, full.z)
    np.testing.assert_array_equal(short.sd, full.sd)
    assert short.t == full.t == t[-1]
    # ... one older than the kept history is refused, and says why
    with pytest.raises(pt.DataError, match="older than the 10 samples kept.*history="):
        short.step(t[5], {"X": 1.0})
    full.step(t[5], {"X": 1.0})  # the unbounded one still takes it
    assert full.refiltered > short.refiltered
    with pytest.raises(pt.DataError, match="before the filter start"):
        full.step(-1.0, {"X": 1.0})


def _flags(ekf, cols, t):
    ds = xr.Dataset({c: ("time", v) for c, v in cols.items()}, coords={"time": t})
    return ekf.filter(ds, x0={"S": 1.0}, inputs={"F": FEED}).data


def test_clean_run_raises_no_alarm(bio_records):
    model, t, cols = bio_records(n=240, seed=1)  # 120 h
    out = _flags(ExtendedKalmanFilter(model), cols, t)
    for c in model.outputs():
        assert int((out[f"{c}_flag"] > 0).sum()) == 0, c
    assert out.attrs["rejected_samples"] == 0


def test_injected_faults_are_flagged(bio_records):
    model, t, cols = bio_records(n=200, seed=2)
    ekf = ExtendedKalmanFilter(model)
    spike_at, stuck_from, bias_from = 40, 90, 140
    cols["OUR"] = cols["OUR"].copy()
    cols["OUR"][spike_at] += 20 * model.outputs()["OUR"].noise
    cols["V"] = cols["V"].copy()
    cols["V"][stuck_from:stuck_from + 20] = cols["V"][stuck_from]
    cols["OUR"][bias_from:] += 3 * model.outputs()["OUR"].noise
    out = _flags(ekf, cols, t)
    f_our, f_v = out["OUR_flag"].values, out["V_flag"].values
    # spike: flagged and rejected at that very sample
    assert f_our[spike_at] & 1 and out["OUR_rejected"].values[spike_at] == 1
    # stuck: flagged once `stuck_n` identical values have followed the first
    stuck = np.flatnonzero(f_v & 2)
    assert stuck.size and stuck[0] - stuck_from <= ekf.spec.stuck_n
    # bias step of 3σ: drift flag within 30 samples (15 h)
    drift = np.flatnonzero(f_our[bias_from:] & 4)
    assert drift.size and drift[0] <= 30, drift[:3]
    # no flag before the first fault other than at the spike
    assert not np.any(f_our[:spike_at]) and not np.any(f_v[:stuck_from])


def test_bad_data_errors(bio_records):
    model, t, cols = bio_records(n=20)
    ekf = ExtendedKalmanFilter(model)
    ds = xr.Dataset({c: ("time", v) for c, v in cols.items()}, coords={"time": t})
    with pytest.raises(pt.DataError, match="unknown channel `OURR`.*did you mean `OUR`"):
        ekf.filter(ds.rename({"OUR": "OURR"}))
    with pytest.raises(pt.DataError, match="not monotonic: t\\[5\\]"):
        ekf.filter(ds.assign_coords(time=np.r_[t[:5], t[3], t[6:]]))
    bad = ds.copy(deep=True)
    bad["V"].values[3] = np.inf
    with pytest.raises(pt.DataError, match="channel `V` is inf at t=2"):
        ekf.filter(bad)
    bad = ds.copy(deep=True)
    bad["V"].attrs["units"] = "m3"
    with pytest.raises(pt.DataError, match="channel `V`: units 'm3' but the model expects 'L'"):
        ekf.filter(bad)
    with pytest.raises(pt.ConfigError, match="did you mean `mu_max`"):
        ExtendedKalmanFilter(model, estimate=["mumax"])
    live = ekf.live(0.0)
    with pytest.raises(pt.DataError, match="unknown channel `Vol`"):
        live.step(1.0, {"Vol": 1.0})


def test_covariance_stays_symmetric_pd_over_1e5_steps():
    model = Bioreactor()
    ekf = ExtendedKalmanFilter(model, estimate=["mu_max", "Y_xs"], channels=("V", "OUR"))
    n = 100_000
    z0, P0 = ekf.initial(None)
    times = jnp.arange(1, n + 1, dtype=float) * 0.05  # 5000 h of 3-minute samples, feed off
    y = jnp.array([120.0, 0.006])
    Y = jnp.tile(y, (n, 1)) + 1e-3 * jax.random.normal(jax.random.PRNGKey(0), (n, 2))
    U = jnp.tile(jnp.array([0.0, 200.0]), (n, 1))

    def last_and_worst(spec, s0, times, Y, U):
        s, rec = run(spec, s0, times, Y, U)
        eig = jnp.linalg.eigvalsh(rec.P[:: n // 1000])
        asym = jnp.max(jnp.abs(rec.P - jnp.swapaxes(rec.P, 1, 2)))
        return s, eig.min(), asym

    s0 = init_state(ekf.spec, 0.0, jnp.asarray(z0), jnp.asarray(P0))
    s, min_eig, asym = jax.jit(last_and_worst)(ekf.spec, s0, times, Y, U)
    assert float(asym) == 0.0
    assert float(min_eig) > 0.0
    assert np.all(np.linalg.eigvalsh(np.asarray(s.P)) > 0)
    assert np.all(np.isfinite(np.asarray(s.z)))


def test_fleet_update_equals_each_twin_alone_in_chunks_and_vmapped():
    """Ten twins, each its own state, sample (one with a missing channel) and inputs: the
    chunked CPU path (chunks of 3: a remainder), the vmapped path and the single step agree."""
    from processtwin.estimate import ekf_step

    ekf = ExtendedKalmanFilter(Bioreactor(), estimate=["mu_max"], channels=["V", "OUR"])
    rng = np.random.default_rng(4)
    z0, P0 = ekf.initial({"S": 1.0})
    Z = z0 * (1.0 + 0.05 * rng.standard_normal((10, z0.size)))
    fleet = jax.vmap(init_state, in_axes=(None, None, 0, None))(ekf.spec, 0.0, Z, P0)
    Y = np.c_[120.0 + rng.normal(0, 0.1, 10), 0.01 + rng.normal(0, 0.001, 10)]
    Y[4, 1] = np.nan
    U = np.c_[rng.uniform(0.01, 0.04, 10), np.full(10, 100.0)]
    chunked, rec = ekf.fleet_update(fleet, 0.5, Y, U, chunk=3)
    vmapped, _ = ekf.fleet_update(fleet, 0.5, Y, U, chunk=None)
    single = jax.jit(lambda s, y, u: ekf_step(ekf.spec, s, 0.5, y, u))
    for i in (0, 4, 9):
        alone, r1 = single(jax.tree.map(lambda a, i=i: a[i], fleet), Y[i], U[i])
        np.testing.assert_allclose(np.asarray(chunked.z[i]), np.asarray(alone.z), rtol=1e-13)
        np.testing.assert_allclose(np.asarray(chunked.P[i]), np.asarray(alone.P), rtol=1e-12,
                                   atol=1e-300)
        assert bool(rec.used[i, 1]) == bool(r1.used[1])
    np.testing.assert_allclose(np.asarray(vmapped.z), np.asarray(chunked.z), rtol=1e-13)
    assert not bool(rec.used[4, 1])  # the missing OUR did not enter twin 4's update
    with pytest.raises(pt.ConfigError, match="chunk"):
        ekf.fleet_update(fleet, 0.5, Y, U, chunk=0)
    with pytest.raises(pt.DataError, match=r"`Y` must be \(twins, 2\) for 10 twins"):
        ekf.fleet_update(fleet, 0.5, Y[:4], U)
