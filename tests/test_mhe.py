"""Moving-horizon estimation: the Kalman filter on a linear model, feasibility where the
EKF's projection fails (Haseltine & Rawlings 2005), consistency on the bioreactor, late lab
assays, atomic live steps and honest solver failures."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import processtwin as pt
from processtwin import ConfigError, DataError
from processtwin.estimate import ExtendedKalmanFilter
from processtwin.estimate.core import init_state
from processtwin.model import Model, Var, param, variables
from processtwin.models import Bioreactor, DoubleIntegrator
from processtwin.solvers import MovingHorizonEstimator


def _linear_data(rng, n=40):
    times = np.cumsum(rng.uniform(0.05, 0.7, n))  # irregular
    Y = rng.normal(size=(n, 2)) * [3.0, 1.0] + np.c_[times, np.ones(n)]
    Y[rng.random((n, 2)) < 0.3] = np.nan  # missing channels
    ds = xr.Dataset({"p": ("time", Y[:, 0]), "v": ("time", Y[:, 1])}, coords={"time": times})
    return times, Y, ds


LIN = {"q": {"p": 0.01, "v": 0.04}, "r": {"p": 0.5, "v": 0.2}, "gate": 1e12,
       "stuck_n": 10**6}


@pytest.mark.parametrize("window", [1, 6])
def test_mhe_equals_kalman_filter_on_linear_model(rng, textbook_kf, window):
    times, Y, ds = _linear_data(rng)
    mhe = MovingHorizonEstimator(DoubleIntegrator(), window=window, tol=1e-10, **LIN)
    out = mhe.filter(ds, x0={"p": 0.1, "v": 0.9}, std={"p": 2.0, "v": 1.0},
                     inputs={"a": 0.3}, full_covariance=True)
    zs, Ps, _ = textbook_kf(times, Y, 0.3, np.array([0.01, 0.04]), np.array([0.25, 0.04]),
                            np.array([0.1, 0.9]), np.diag([4.0, 1.0]))
    # the window's least squares with the filtering arrival cost is the Kalman filter
    np.testing.assert_allclose(np.c_[out.data["p"], out.data["v"]], zs, rtol=1e-8,
                               atol=1e-8)
    np.testing.assert_allclose(out.data["covariance"].values, Ps, rtol=1e-8, atol=1e-10)
    assert out.stats["method"] == "mhe" and out.stats["window"] == window
    assert out.stats["fallback_steps"] == 0
    assert out.stats["solver_status"] == {"converged": len(times)}
    assert out.data.attrs["estimator"] == "MHE"


# --------------------------------------------------------------------------------------
# Haseltine & Rawlings (2005), Ind. Eng. Chem. Res. 44, 2451, example 2: A <-> B + C,
# 2B <-> C in a batch reactor, only the total pressure measured. From a poor prior the EKF
# is driven to negative concentrations; projected onto the bounds it is lost for good.
HRState = variables("HRState",
                    A=Var("mol/L", "A", default=0.5, bounds=(0.0, None)),
                    B=Var("mol/L", "B", default=0.05, bounds=(0.0, None)),
                    C=Var("mol/L", "C", default=0.0, bounds=(0.0, None)))
HROutputs = variables("HROutputs", p=Var("atm", "total pressure", kind="online", noise=0.25))


class ReversibleReactions(Model):
    """A ⇌ B + C, 2B ⇌ C (Haseltine & Rawlings 2005, example 2)."""

    k1: float = param(0.5, units="1/min")
    km1: float = param(0.05, units="L/(mol min)")
    k2: float = param(0.2, units="L/(mol min)")
    km2: float = param(0.01, units="1/min")
    RT: float = param(32.84, units="L atm/mol")
    State: ClassVar[type] = HRState
    Outputs: ClassVar[type] = HROutputs
    time_unit: ClassVar[str] = "min"

    def rhs(self, t, x, u, ops):
        r1 = self.k1 * x.A - self.km1 * x.B * x.C
        r2 = self.k2 * x.B**2 - self.km2 * x.C
        return HRState(A=-r1, B=r1 - 2 * r2, C=r1 + r2)

    def measure(self, t, x, u, ops):
        return HROutputs(p=self.RT * (x.A + x.B + x.C))


def test_mhe_stays_feasible_and_right_where_the_projected_ekf_is_lost():
    model, dt, n = ReversibleReactions(), 0.25, 120
    t = np.arange(1, n + 1) * dt
    res = pt.simulate(model, {"A": 0.5, "B": 0.05, "C": 0.0}, {}, np.r_[0.0, t], rtol=1e-10,
                      atol=1e-12)
    y = res["out:p"][1:] + np.random.default_rng(0).normal(0.0, 0.25, n)
    ds = xr.Dataset({"p": ("time", y)}, coords={"time": t})
    truth = np.stack([res[k][1:] for k in "ABC"], axis=1)
    # the paper's tuning: Q = 0.001² per sample, R = 0.25², prior (0, 0, 4) ± 0.5
    opts = {"q": {k: 1e-6 / dt for k in "ABC"}, "gate": float("inf")}
    start = {"x0": {"A": 0.0, "B": 0.0, "C": 4.0}, "std": {k: 0.5 for k in "ABC"},
             "t0": 0.0}
    ekf = ExtendedKalmanFilter(model, **opts).filter(ds, **start).data
    mhe = MovingHorizonEstimator(model, window=10, **opts).filter(ds, **start)
    est = np.stack([mhe.data[k].values for k in "ABC"], axis=1)
    sd = np.stack([mhe.data[f"{k}_std"].values for k in "ABC"], axis=1)
    est_ekf = np.stack([ekf[k].values for k in "ABC"], axis=1)
    assert est.min() >= 0.0
    late = t > 5.0
    assert np.abs(est - truth)[late].max() < 0.03  # mol/L (measured: 0.024)
    assert np.mean(np.abs(est - truth)[late] <= 3 * sd[late]) > 0.95
    assert np.abs(est_ekf - truth)[late].max(axis=1).min() > 1.0  # the EKF never returns
    assert ekf.attrs["divergence"] and not mhe.data.attrs["divergence"]
    assert mhe.stats["fallback_steps"] == 0


# --------------------------------------------------------------------------------------
# Bioreactor: consistency over Monte-Carlo runs (the plant has the estimator's noise model)
FEED, DT = 0.03, 0.5
Q_BIO = {"X": 1e-4, "S": 1e-6, "P": 1e-6, "V": 1e-3}


@pytest.fixture(scope="module")
def bio_mhe():
    return MovingHorizonEstimator(Bioreactor(), window=8, q=Q_BIO,
                                  channels=("V", "OUR", "X", "S", "P"))


def _stochastic_plant(mhe, key, z0, n):
    """Euler–Maruyama (fine sub-steps) of the model with the estimator's noise."""
    spec = mhe.spec
    sub = 20
    h = DT / sub
    q = jnp.asarray(spec.q)
    u = jnp.asarray(mhe.input_vector({"F": FEED}))
    from processtwin.estimate.core import _vector_rhs, measure

    def step(z, k):
        w = jax.random.normal(k, (sub, z.shape[0])) * jnp.sqrt(q * h)
        z = jax.lax.fori_loop(0, sub, lambda i, zz: jnp.maximum(
            zz + h * _vector_rhs(spec, 0.0, zz, u) + w[i], 1e-9), z)
        return z, z

    keys = jax.random.split(key, 2 * n)
    _, Z = jax.lax.scan(step, z0, keys[:n])
    Ycl = jax.vmap(lambda z: measure(spec, z, u, 0.0))(Z)
    Y = Ycl + jax.vmap(lambda k: jax.random.normal(k, (spec.ny,)))(keys[n:]) * jnp.sqrt(spec.r)
    lab = (jnp.arange(1, n + 1) % 8) == 0
    return Z, Y.at[:, 2:].set(jnp.where(lab[:, None], Y[:, 2:], jnp.nan))


def test_mhe_is_consistent_on_the_bioreactor(bio_mhe, check_consistency):
    mhe, runs, n = bio_mhe, 50, 40
    std = {"X": 0.05, "S": 0.05, "P": 0.01, "V": 0.5}
    z0, P0 = mhe.initial({"S": 1.0}, std=std)
    z_true0 = z0 + np.random.default_rng(3).normal(size=(runs, 4)) @ np.linalg.cholesky(P0).T
    times = np.arange(1, n + 1) * DT
    keys = jax.random.split(jax.random.PRNGKey(5), runs)
    Zs, Ys = (np.asarray(a) for a in jax.jit(jax.vmap(
        lambda k, z: _stochastic_plant(mhe, k, z, n)))(keys, jnp.asarray(z_true0)))
    nees, nis, dof, flags = [], [], [], []
    for Z, Y in zip(Zs, Ys, strict=True):
        ds = xr.Dataset({c: ("time", Y[:, j]) for j, c in enumerate(mhe.channels)},
                        coords={"time": times})
        out = mhe.filter(ds, x0={"S": 1.0}, std=std, inputs={"F": FEED}, t0=0.0,
                         full_covariance=True)
        est = np.stack([out.data[k].values for k in "XSPV"], axis=1)
        err = Z - est
        P_inv = np.linalg.inv(out.data["covariance"].values)
        nees.append(np.einsum("ti,tij,tj->t", err, P_inv, err))
        nis.append(out.data["nis"].values)
        dof.append(out.data["nis_dof"].values)
        flags.append(np.stack([out.data[f"{c}_flag"].values for c in mhe.channels], -1))
        assert out.stats["fallback_steps"] == 0
    check_consistency(np.array(nees), np.array(nis), np.array(dof), np.array(flags), nx=4)


def test_live_mhe_with_late_lab_assays_equals_in_order_processing(bio_mhe, bio_records):
    _, t, cols = bio_records(n=48, seed=1)
    ds = xr.Dataset({c: ("time", v) for c, v in cols.items()}, coords={"time": t})
    ref = bio_mhe.filter(ds, x0={"S": 1.0}, inputs={"F": FEED}, t0=0.0).data
    live = bio_mhe.live(0.0, x0={"S": 1.0}, u={"F": FEED})
    pending = []  # lab assays arrive 3 h (6 samples) after they were taken
    for k, tk in enumerate(t):
        live.step(tk, {c: cols[c][k] for c in ("V", "OUR")})
        if np.isfinite(cols["X"][k]):
            pending.append((tk + 3.0, tk, {c: cols[c][k] for c in ("X", "S", "P")}))
        for item in [p for p in pending if p[0] <= tk]:
            live.step(item[1], item[2])
            pending.remove(item)
    for _, ts, y in pending:
        live.step(ts, y)
    assert live.refiltered > 0
    for name, (value, sd) in live.estimate().items():
        np.testing.assert_allclose(value, ref[name].values[-1], rtol=1e-6)
        np.testing.assert_allclose(sd, ref[f"{name}_std"].values[-1], rtol=1e-5)
    assert live.last_update()["solver"]["status"] == "converged"


def test_live_mhe_step_is_atomic(bio_mhe):
    live = bio_mhe.live(0.0, x0={"S": 1.0}, u={"F": FEED})
    live.step(0.5, {"V": 120.0, "OUR": 0.02})
    before = (live.z.copy(), live.sd.copy(), list(live._t), live.u.copy())
    bad = [(1.0, {"V": 120.0, "Vol": 1.0}, None), (1.0, {"V": "x"}, None),
           (1.0, {"V": np.inf}, None), (float("nan"), {"V": 120.0}, None),
           (1.0, {"V": 120.0}, {"Feed": 0.1}), (-1.0, {"V": 120.0}, None),
           (0.5, {"V": 121.0}, None)]  # unknown channel/input, non-numbers, early, duplicate
    for t, y, u in bad:
        with pytest.raises(DataError):
            live.step(t, y, u)
        np.testing.assert_array_equal(live.z, before[0])
        np.testing.assert_array_equal(live.sd, before[1])
        assert live._t == before[2] and np.array_equal(live.u, before[3])
    live.step(1.0, {"V": 120.0}, {"F": 0.05})  # the corrected retry
    assert live.t == 1.0 and live.u[0] == 0.05


def test_failed_windows_fall_back_to_the_screening_filter_and_are_counted(bio_records):
    _, t, cols = bio_records(n=12, seed=1)
    ds = xr.Dataset({c: ("time", v) for c, v in cols.items()}, coords={"time": t})
    mhe = MovingHorizonEstimator(Bioreactor(), window=4, max_iter=1, solver="ipopt")
    out = mhe.filter(ds, x0={"S": 1.0}, inputs={"F": FEED}, t0=0.0)
    assert out.stats["fallback_steps"] > 0
    assert out.stats["solver_status"].get("limit", 0) == out.stats["fallback_steps"]
    assert np.all(np.isfinite(out.data["X"].values))


def test_mhe_options_are_checked():
    for bad in ({"window": 0}, {"window": 2.5}, {"tol": 0.0}, {"max_iter": 0},
                {"solver": "snopt"}):
        with pytest.raises(ConfigError):
            MovingHorizonEstimator(DoubleIntegrator(), **bad)
    mhe = MovingHorizonEstimator(DoubleIntegrator(), window=2)
    ds = xr.Dataset({"p": ("time", [0.0, 1.0])}, coords={"time": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="smooth"):
        mhe.filter(ds, smooth=True)


def test_last_update_gives_innovation_covariance_and_gain(rng, textbook_kf):
    times, Y, ds = _linear_data(rng, n=12)
    Y[-1] = [12.0, 1.5]  # both channels at the last step
    ekf = ExtendedKalmanFilter(DoubleIntegrator(), **LIN)
    live = ekf.live(0.0, x0={"p": 0.1, "v": 0.9}, std={"p": 2.0, "v": 1.0}, u={"a": 0.3})
    for t, y in zip(times, Y, strict=True):
        live.step(t, {c: v for c, v in zip("pv", y, strict=True) if np.isfinite(v)})
    _, _, preds = textbook_kf(np.r_[0.0, times], np.vstack([[np.nan, np.nan], Y]), 0.3,
                              np.array([0.01, 0.04]), np.array([0.25, 0.04]),
                              np.array([0.1, 0.9]), np.diag([4.0, 1.0]))
    _, _, P_pred = preds[-1]
    S = P_pred + np.diag([0.25, 0.04])  # H = I
    lu = live.last_update()
    np.testing.assert_allclose(lu.innovation_covariance, S, rtol=1e-10)
    np.testing.assert_allclose(lu.gain, P_pred @ np.linalg.inv(S), rtol=1e-10)
    assert lu.names == ("p", "v") and lu.channels == ("p", "v") and lu["p"]["used"]
    # a missing channel has no gain column
    live.step(times[-1] + 0.5, {"p": 12.5})
    lu = live.last_update()
    assert np.all(lu.gain[:, 1] == 0.0) and np.any(lu.gain[:, 0] != 0.0)


def test_init_state_feeds_the_mhe_like_the_ekf():
    """``live`` starts from the same initial state as the EKF's."""
    mhe = MovingHorizonEstimator(DoubleIntegrator(), window=3)
    live = mhe.live(0.0, x0={"p": 1.0, "v": 0.5}, std={"p": 0.1, "v": 0.2})
    ref = init_state(mhe.spec, 0.0, np.array([1.0, 0.5]), np.diag([0.01, 0.04]))
    np.testing.assert_allclose(live.z, ref.z)
    np.testing.assert_allclose(live.sd, [0.1, 0.2])


def _kf_full_r(times, Y, a, q, R, z0, P0):
    """Kalman filter of the double integrator with a full measurement covariance (Van Loan
    discretisation of the process noise), written out with numpy/scipy."""
    from scipy.linalg import expm

    A = np.array([[0.0, 1.0], [0.0, 0.0]])
    z, P, t_prev, zs, Ps = z0.copy(), P0.copy(), 0.0, [], []
    for t, y in zip(times, Y, strict=True):
        dt = t - t_prev
        E = expm(np.block([[-A, np.diag(q)], [np.zeros((2, 2)), A.T]]) * dt)
        F = E[2:, 2:].T
        z = F @ z + np.array([0.5 * a * dt**2, a * dt])
        P = F @ P @ F.T + F @ E[:2, 2:]
        have = np.isfinite(y)
        if have.any():
            H, Rh = np.eye(2)[have], R[np.ix_(have, have)]
            K = P @ H.T @ np.linalg.inv(H @ P @ H.T + Rh)
            z = z + K @ (y[have] - H @ z)
            P = (np.eye(2) - K @ H) @ P
        zs.append(z)
        Ps.append(P)
        t_prev = t
    return np.array(zs), np.array(Ps)


@pytest.mark.parametrize("kind", ["ekf", "mhe"])
def test_correlated_measurement_noise_equals_the_full_r_kalman_filter(rng, kind):
    times, Y, ds = _linear_data(rng, n=30)
    R = np.array([[0.25, 0.06], [0.06, 0.04]])  # correlated position and velocity sensors
    opts = {**LIN, "r": R}
    filt = (ExtendedKalmanFilter(DoubleIntegrator(), **opts) if kind == "ekf" else
            MovingHorizonEstimator(DoubleIntegrator(), window=4, tol=1e-10, **opts))
    out = filt.filter(ds, x0={"p": 0.1, "v": 0.9}, std={"p": 2.0, "v": 1.0},
                      inputs={"a": 0.3}, t0=0.0, full_covariance=True).data
    zs, Ps = _kf_full_r(times, Y, 0.3, np.array([0.01, 0.04]), R, np.array([0.1, 0.9]),
                        np.diag([4.0, 1.0]))
    np.testing.assert_allclose(np.c_[out["p"], out["v"]], zs, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(out["covariance"].values, Ps, rtol=1e-8, atol=1e-10)
    # the independent-channel filter is measurably different: the correlation matters
    plain = ExtendedKalmanFilter(DoubleIntegrator(), **{**LIN, "r": {"p": 0.5, "v": 0.2}})
    ref = plain.filter(ds, x0={"p": 0.1, "v": 0.9}, std={"p": 2.0, "v": 1.0},
                       inputs={"a": 0.3}, t0=0.0).data
    assert np.max(np.abs(ref["v"].values - zs[:, 1])) > 1e-3


def test_full_r_is_checked():
    model = DoubleIntegrator()
    with pytest.raises(ConfigError, match=r"must be \(2, 2\) over p, v"):
        ExtendedKalmanFilter(model, r=np.eye(3))
    with pytest.raises(ConfigError, match="symmetric"):
        ExtendedKalmanFilter(model, r=np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ConfigError, match="positive definite"):
        ExtendedKalmanFilter(model, r=np.array([[1.0, 2.0], [2.0, 1.0]]))
