"""Test configuration: what the entry points use (float64, single-kernel small loops) and
strict dtype promotion for every JAX test."""

import jax
import numpy as np
import pytest

import processtwin

processtwin.configure()
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


def _check_consistency(nees, nis, dof, flags, nx: int) -> None:
    """Filter consistency over Monte-Carlo runs (Bar-Shalom, Li & Kirubarajan 2001, §5.4).

    ``nees`` (runs, time); ``nis``, ``dof`` and ``flags`` (runs, time[, channel]).
    """
    from scipy.stats import chi2

    nees, nis, dof, flags = (np.asarray(a) for a in (nees, nis, dof, flags))
    runs = nees.shape[0]
    # Average NEES over runs at every time: chi2(runs * nx) / runs, two-sided 95 %.
    lo, hi = chi2.ppf([0.025, 0.975], runs * nx) / runs
    avg = nees.mean(axis=0)
    inside = np.mean((avg > lo) & (avg < hi))
    assert inside >= 0.9, f"NEES inside its 95 % band {inside:.0%} of the time"
    # Grand mean: the runs are independent (times within a run are not), so the mean of
    # the per-run time-averaged NEES must lie within 3 standard errors of nx.
    per_run = nees.mean(axis=1)
    se = per_run.std(ddof=1) / np.sqrt(runs)
    assert abs(per_run.mean() - nx) < 3 * se, (per_run.mean(), se)
    # NIS: sum over runs per time vs chi2 with the summed degrees of freedom.
    tot_nis, tot_dof = nis.sum(axis=0), dof.sum(axis=0)
    lo_n, hi_n = chi2.ppf(0.025, tot_dof), chi2.ppf(0.975, tot_dof)
    inside_n = np.mean((tot_nis > lo_n) & (tot_nis < hi_n))
    assert inside_n >= 0.9, f"NIS inside its 95 % band {inside_n:.0%} of the time"
    assert flags.max() == 0 or np.mean(flags > 0) < 0.002


@pytest.fixture
def check_consistency():
    """The NEES/NIS consistency check shared by the EKF and UKF tests."""
    return _check_consistency


def van_loan(A, Qc, dt):
    """Exact discretisation of ``dx = A x dt + dw``, ``E[dw dwᵀ] = Qc dt`` over ``dt``:
    ``F = e^{A dt}`` and ``Q_d = ∫_0^dt e^{A s} Qc e^{Aᵀ s} ds`` from the exponential of
    ``[[-A, Qc], [0, Aᵀ]] dt`` (Van Loan 1978, *IEEE Trans. Autom. Control* 23, 395–404)."""
    from scipy.linalg import expm

    n = A.shape[0]
    M = np.block([[-A, Qc], [np.zeros((n, n)), A.T]]) * dt
    E = expm(M)
    F = E[n:, n:].T
    return F, F @ E[:n, n:]


def _textbook_kf(times, Y, a, q, r, z0, P0):
    """Kalman (1960) filter, written out with numpy: predict with the exact (Van Loan)
    discretisation of the continuous process noise, update with the present rows."""
    z, P, t_prev = z0.copy(), P0.copy(), times[0]
    zs, Ps, preds = [], [], []
    A = np.array([[0.0, 1.0], [0.0, 0.0]])
    for t, y in zip(times, Y, strict=True):
        dt = t - t_prev
        Fm, Qd = van_loan(A, np.diag(q), dt)
        z = Fm @ z + np.array([0.5 * a * dt**2, a * dt])
        P = Fm @ P @ Fm.T + Qd
        preds.append((Fm, z.copy(), P.copy()))
        have = np.isfinite(y)
        if have.any():
            H = np.eye(2)[have]
            R = np.diag(r[have])
            S = H @ P @ H.T + R
            K = P @ H.T @ np.linalg.inv(S)
            z = z + K @ (y[have] - H @ z)
            P = (np.eye(2) - K @ H) @ P
        zs.append(z)
        Ps.append(P)
        t_prev = t
    return np.array(zs), np.array(Ps), preds


@pytest.fixture
def textbook_kf():
    """Kalman filter of the double integrator (the linear reference of the EKF/UKF tests);
    returns estimates, covariances and (F, predicted mean, predicted covariance) per step."""
    return _textbook_kf


def _bioreactor_records(n: int = 120, seed: int = 0):
    """A noisy bioreactor record: online V and OUR every 0.5 h, lab assays every 4 h (NaN
    between), the feed at 0.03 L/h from S = 1 g/L; returns ``(model, times, columns)``."""
    import processtwin as pt
    from processtwin.models import Bioreactor

    model = Bioreactor()
    t = np.arange(1, n + 1) * 0.5
    res = pt.simulate(model, {"S": 1.0}, {"F": 0.03}, np.r_[0.0, t])
    rng = np.random.default_rng(seed)
    cols = {}
    for c, spec in model.outputs().items():
        y = res["out:" + c][1:] + rng.normal(0, spec.noise, n)
        if spec.kind == "offline":
            y[np.arange(1, n + 1) % 8 != 0] = np.nan
        cols[c] = y
    return model, t, cols


@pytest.fixture
def bio_records():
    """``bio_records(n=120, seed=0)``: the bioreactor record shared by the estimation
    tests (see :func:`_bioreactor_records`)."""
    return _bioreactor_records
