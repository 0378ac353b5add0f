"""Exact continuous-discrete prediction: the process noise is propagated through the
dynamics over each interval, so on a linear model with correlated noise the filter's
steady state is the discrete algebraic Riccati solution with Van Loan's exact Q."""

from typing import ClassVar

import numpy as np
import pytest
import xarray as xr
from scipy.linalg import expm, solve_discrete_are

from processtwin import ConfigError
from processtwin.estimate import ExtendedKalmanFilter, UnscentedKalmanFilter
from processtwin.model import Model, Var, param, variables

OscState = variables("OscState", p=Var("m", "position"), v=Var("m/s", "velocity"))
OscOutputs = variables("OscOutputs", p=Var("m", "position sensor", kind="online", noise=0.1))


class Oscillator(Model):
    """Damped oscillator p'' + 2 ζ ω p' + ω² p = noise (Bar-Shalom et al. 2001, ch. 6)."""

    omega: float = param(1.0, units="rad/s", bounds=(0.0, None), doc="natural frequency")
    zeta: float = param(0.1, units="-", bounds=(0.0, None), doc="damping ratio")
    State: ClassVar[type] = OscState
    Outputs: ClassVar[type] = OscOutputs
    time_unit: ClassVar[str] = "s"

    def rhs(self, t, x, u, ops):
        return OscState(p=x.v, v=-self.omega**2 * x.p - 2 * self.zeta * self.omega * x.v)

    def measure(self, t, x, u, ops):
        return OscOutputs(p=x.p)


A = np.array([[0.0, 1.0], [-1.0, -0.2]])
QC = np.array([[0.02, 0.01], [0.01, 0.05]])  # correlated intensity [m², m²/s; m²/s²] per s
R = 0.1**2


def _van_loan(dt):
    M = np.block([[-A, QC], [np.zeros((2, 2)), A.T]]) * dt
    E = expm(M)
    F = E[2:, 2:].T
    return F, F @ E[:2, 2:]


@pytest.mark.parametrize("kind", [ExtendedKalmanFilter, UnscentedKalmanFilter],
                         ids=["ekf", "ukf"])
@pytest.mark.parametrize("dt", [1.0, 0.1])
def test_steady_state_covariance_equals_riccati_with_exact_q(kind, dt):
    filt = kind(Oscillator(), q=QC, dt_max=min(dt, 1.0) / 200, gate=1e12)
    n = 150 if dt == 1.0 else 600
    times = np.arange(1, n + 1) * dt
    rng = np.random.default_rng(0)  # values do not matter (linear): P is data-free
    data = xr.Dataset({"p": ("time", rng.normal(0.0, 0.1, n))}, coords={"time": times})
    est = filt.filter(data, x0={"p": 0.0, "v": 0.0}, std={"p": 1.0, "v": 1.0}, t0=0.0,
                      full_covariance=True).data
    F, Qd = _van_loan(dt)
    H = np.array([[1.0, 0.0]])
    prior = solve_discrete_are(F.T, H.T, Qd, np.array([[R]]))
    S = H @ prior @ H.T + R
    posterior = prior - prior @ H.T @ np.linalg.solve(S, H @ prior)
    np.testing.assert_allclose(est["covariance"].values[-1], posterior, rtol=1e-9)


def test_the_old_approximation_is_far_off():
    """What the exact propagation fixes: ``F P Fᵀ + diag(q) dt`` misses the coupling."""
    F, Qd = _van_loan(1.0)
    approx = np.diag(np.diag(QC)) * 1.0
    assert np.max(np.abs(approx - Qd) / np.abs(Qd).max()) > 0.2


def test_q_matrix_is_checked():
    with pytest.raises(ConfigError, match=r"must be \(2, 2\)"):
        ExtendedKalmanFilter(Oscillator(), q=np.eye(3))
    with pytest.raises(ConfigError, match="symmetric"):
        ExtendedKalmanFilter(Oscillator(), q=np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ConfigError, match="positive semi-definite"):
        ExtendedKalmanFilter(Oscillator(), q=np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_covariance_stays_positive_definite_through_a_stiff_phase():
    """1000 h of a bioreactor starved of substrate (high biomass, S ~ 1e-3 g/L: the rhs
    Jacobian's spectral radius grows ~100-fold): the propagated covariance stays positive
    definite (a sub-step chosen for the state equation alone left the covariance equation,
    whose eigenvalues are twice as large, unstable: S's variance went negative)."""
    import processtwin as pt
    from processtwin.models import Bioreactor

    model = Bioreactor()
    t = np.arange(1, 2001) * 0.5
    res = pt.simulate(model, {"S": 1.0}, {"F": 0.03, "S_in": 100.0}, np.r_[0.0, t])
    rng = np.random.default_rng(0)
    data = xr.Dataset({c: ("time", res["out:" + c][1:] + rng.normal(0.0, s, t.size))
                       for c, s in (("V", 0.05), ("OUR", 0.002))}, coords={"time": t})
    ekf = ExtendedKalmanFilter(model, channels=["V", "OUR"], gate=1e12, stuck_n=10**9)
    P = ekf.filter(data, x0={"S": 1.0}, inputs={"F": 0.03, "S_in": 100.0}, t0=0.0,
                   full_covariance=True).data["covariance"].values
    assert float(res["S"][-1]) < 2e-3  # the stiff regime was reached
    assert np.linalg.eigvalsh(P).min() > 0.0
