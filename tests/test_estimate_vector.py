"""The EKF and UKF on vector-valued and discrete-time linear models equal the Kalman filter.

The reference is Kalman's filter written out in numpy with the exact discretisation of the
linear model and of its continuous process noise (matrix exponentials, Van Loan 1978),
independent of the filter code: the EKF's linearisation of a linear model is exact, so the
two agree up to the EKF's RK4 prediction error (below 1e-12 with the sub-step used here)
and rounding.
"""

import numpy as np
import pytest
import xarray as xr
from scipy.linalg import expm

from processtwin import DataError
from processtwin.estimate import ExtendedKalmanFilter, UnscentedKalmanFilter
from processtwin.models import DiscreteTripleTank, TankCascade

N_TANKS = 4
Q_FLOW, VOLUME, DECAY, C_IN = 0.5, 2.0, 0.01, 10.0


def _cascade_matrices(n):
    """dc/dt = A c + b c_in of the tank cascade, written independently of the model."""
    a = Q_FLOW / VOLUME
    A = np.diag(np.full(n, -a - DECAY)) + np.diag(np.full(n - 1, a), -1)
    b = np.zeros(n)
    b[0] = a
    return A, b


def _kalman(times, Y, F_of, f_of, Q_of, H, R, z0, P0, t0=0.0):
    """Textbook Kalman filter from ``t0``: x' = F x + f, P' = F P F^T + Q; update with the
    present rows of each sample."""
    z, P, t_prev = z0.copy(), P0.copy(), t0
    zs, Ps = [], []
    for t, y in zip(times, Y, strict=True):
        dt = t - t_prev
        F = F_of(dt)
        z = F @ z + f_of(dt)
        P = F @ P @ F.T + Q_of(dt)
        have = np.isfinite(y)
        if have.any():
            Hh = H[have]
            S = Hh @ P @ Hh.T + R[np.ix_(have, have)]
            K = P @ Hh.T @ np.linalg.inv(S)
            z = z + K @ (y[have] - Hh @ z)
            IKH = np.eye(len(z)) - K @ Hh
            P = IKH @ P @ IKH.T + K @ R[np.ix_(have, have)] @ K.T
        zs.append(z)
        Ps.append(P)
        t_prev = t
    return np.array(zs), np.array(Ps)


@pytest.fixture(scope="module")
def cascade_data():
    rng = np.random.default_rng(7)
    times = np.cumsum(rng.uniform(0.5, 1.5, 40))  # irregular sampling [min]
    A, b = _cascade_matrices(N_TANKS)
    c = np.linspace(1.0, 4.0, N_TANKS)
    rows = []
    t_prev = 0.0
    for t in times:
        c = expm(A * (t - t_prev)) @ (c + np.linalg.solve(A, b * C_IN)) - np.linalg.solve(
            A, b * C_IN)
        rows.append(c + rng.normal(0, 0.1, N_TANKS))
        t_prev = t
    Y = np.array(rows)
    Y[5, 1] = np.nan  # a missing element of the vector channel
    Y[9, :] = np.nan  # a missing sample
    return times, Y


def test_ekf_on_linear_vector_model_equals_kalman_filter(cascade_data):
    times, Y = cascade_data
    model = TankCascade(n_tanks=N_TANKS, V=VOLUME, k=DECAY)
    q = 1e-4
    ekf = ExtendedKalmanFilter(model, channels=["c_meas"], q={"c": q}, dt_max=0.02,
                               gate=1e9, stuck_n=10**6)
    data = xr.Dataset({"c_meas": (("time", "tank"), Y, {"units": "g/m3"})},
                      coords={"time": times})
    x0 = np.linspace(1.2, 3.5, N_TANKS)
    est = ekf.filter(data, x0={"c": x0}, std={"c": 0.5}, t0=0.0,
                     inputs={"q": Q_FLOW, "c_in": C_IN}, full_covariance=True).data
    assert est["c"].dims == ("time", "tank")
    assert est["c_meas_meas"].dims == ("time", "tank")
    A, b = _cascade_matrices(N_TANKS)
    steady = np.linalg.solve(A, b * C_IN)

    def F_of(dt):
        return expm(A * dt)

    def f_of(dt):
        return (expm(A * dt) - np.eye(N_TANKS)) @ steady

    def Q_of(dt):  # Van Loan (1978): exact covariance of the continuous noise over dt
        M = np.block([[-A, np.eye(N_TANKS) * q], [np.zeros_like(A), A.T]]) * dt
        E = expm(M)
        return E[N_TANKS:, N_TANKS:].T @ E[:N_TANKS, N_TANKS:]

    zs, Ps = _kalman(times, Y, F_of, f_of, Q_of,
                     np.eye(N_TANKS), np.eye(N_TANKS) * 0.1**2, x0,
                     np.eye(N_TANKS) * 0.25)
    np.testing.assert_allclose(est["c"].values, zs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(est["covariance"].values, Ps, rtol=0, atol=1e-10)
    np.testing.assert_allclose(est["c_std"].values,
                               np.sqrt(np.diagonal(Ps, axis1=1, axis2=2)), atol=1e-10)
    assert int(est["nis_dof"][9]) == 0 and int(est["nis_dof"][5]) == N_TANKS - 1


def test_vector_channel_of_wrong_width_is_refused():
    model = TankCascade(n_tanks=3)
    ekf = ExtendedKalmanFilter(model, channels=["c_meas"])
    data = xr.Dataset({"c_meas": (("time", "tank"), np.ones((2, 4)))},
                      coords={"time": [1.0, 2.0]})
    with pytest.raises(DataError, match="`c_meas` has 3 element"):
        ekf.filter(data)


def _triple_tank_data(rng, n):
    A, B = np.array(DiscreteTripleTank.A), np.array(DiscreteTripleTank.B)
    h0 = np.array([0.5, 0.35, 0.2])
    u_dev = np.array([0.02, 0.0])  # pump 0.12 L/s, no disturbance
    h = h0 + 0.01
    Y = []
    for _ in range(n):
        h = h0 + A @ (h - h0) + B @ u_dev
        Y.append(h + rng.normal(0, 0.002, 3))
    return np.arange(1, n + 1, dtype=float), np.array(Y), A, B, h0, u_dev


@pytest.mark.parametrize("kind", [ExtendedKalmanFilter, UnscentedKalmanFilter],
                         ids=["ekf", "ukf"])
def test_filter_on_discrete_linear_model_equals_kalman_filter(kind):
    rng = np.random.default_rng(3)
    times, Y, A, B, h0, u_dev = _triple_tank_data(rng, 60)
    Y[10] = np.nan
    q = 1e-8
    filt = kind(DiscreteTripleTank(), q={"h": q}, gate=1e9, stuck_n=10**6)
    data = xr.Dataset({"h": (("time", "tank"), Y, {"units": "m"})}, coords={"time": times})
    x0 = h0 + 0.005
    est = filt.filter(data, x0={"h": x0}, std={"h": 0.01}, t0=0.0,
                      inputs={"q_pump": 0.12, "q_dist": 0.0}, full_covariance=True).data
    # k samples per interval: the map applied k times, one Q per sample
    zs, Ps = _kalman(times, Y, lambda dt: np.linalg.matrix_power(A, int(round(dt))),
                     lambda dt: sum(np.linalg.matrix_power(A, j) @ (B @ u_dev + h0 - A @ h0)
                                    for j in range(int(round(dt)))),
                     lambda dt: np.eye(3) * q * round(dt), np.eye(3), np.eye(3) * 0.002**2,
                     x0, np.eye(3) * 1e-4)
    np.testing.assert_allclose(est["h"].values, zs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(est["covariance"].values, Ps, rtol=0, atol=1e-12)


def test_discrete_filter_refuses_samples_off_the_grid():
    filt = ExtendedKalmanFilter(DiscreteTripleTank())
    data = xr.Dataset({"h": (("time", "tank"), np.full((2, 3), 0.4))},
                      coords={"time": [1.0, 2.5]})
    with pytest.raises(DataError, match="sample grid"):
        filt.filter(data, t0=0.0)


def test_live_filter_with_a_vector_channel_equals_the_batch_filter(cascade_data):
    times, Y = cascade_data
    model = TankCascade(n_tanks=N_TANKS, V=VOLUME, k=DECAY)
    ekf = ExtendedKalmanFilter(model, channels=["c_meas", "c_out"], q={"c": 1e-4})
    Y2 = np.concatenate([Y, Y[:, -1:] + 0.01], axis=1)  # the analyser beside the probes
    data = xr.Dataset({"c_meas": (("time", "tank"), Y2[:, :N_TANKS]),
                       "c_out": ("time", Y2[:, N_TANKS])}, coords={"time": times})
    u = {"q": Q_FLOW, "c_in": C_IN}
    ref = ekf.filter(data, x0={"c": 2.0}, t0=0.0, inputs=u).data
    live = ekf.live(0.0, x0={"c": 2.0}, u=u)
    for k in range(times.size):
        sample = {"c_meas": Y2[k, :N_TANKS]}
        if k % 3 != 1:  # the analyser reports every third sample late, after the next one
            sample["c_out"] = Y2[k, N_TANKS]
        live.step(times[k], sample)
        if k % 3 == 2:
            live.step(times[k - 1], {"c_out": Y2[k - 1, N_TANKS]})
    if times.size % 3 == 2:
        live.step(times[-1], {"c_out": Y2[-1, N_TANKS]})
    np.testing.assert_allclose(live.z[:N_TANKS], ref["c"].values[-1], rtol=0, atol=1e-12)
    est = live.estimate()
    assert set(est) == {f"c[{i}]" for i in range(N_TANKS)}
    assert set(live.last_update()) == {*(f"c_meas[{i}]" for i in range(N_TANKS)), "c_out"}
    with pytest.raises(DataError, match="has 4 elements, got 3"):
        live.step(times[-1] + 1.0, {"c_meas": [1.0, 2.0, 3.0]})
