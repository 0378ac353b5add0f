"""Observability of the chosen channels, by state name (the Gramian along a trajectory)."""

import numpy as np
import pytest

from processtwin import ConfigError
from processtwin.estimate import ExtendedKalmanFilter
from processtwin.models import Bioreactor, DoubleIntegrator


def test_unobservable_state_is_named():
    rep = ExtendedKalmanFilter(DoubleIntegrator(), channels=["v"]).observability(
        None, {"a": 0.1}, dt=1.0, samples=20)
    assert rep.unobservable == ["p"] and rep.stats["rank"] == 1
    assert "`p` is unobservable from `v`" in str(rep)


def test_cramer_rao_bound_equals_the_gramian_written_out():
    """Position measured every second, 10 samples: W = Σ Φ_kᵀ Hᵀ H Φ_k / r with
    Φ_k = [[1, k], [0, 1]], written independently."""
    ekf = ExtendedKalmanFilter(DoubleIntegrator(), channels=["p"], r={"p": 0.5})
    rep = ekf.observability({"p": 2.0, "v": 1.0}, {"a": 0.0}, dt=1.0, samples=10)
    W = sum(np.outer([1.0, k], [1.0, k]) for k in range(1, 11)) / 0.25
    crb = np.sqrt(np.diag(np.linalg.inv(W)))
    np.testing.assert_allclose(rep.data["crb_std"].values, crb, rtol=1e-10)
    assert rep.unobservable == [] and rep.weak == []


def test_bioreactor_online_channels_name_what_they_cannot_see():
    """From the volume and the oxygen uptake alone the product is invisible (it enters
    neither); with the lab assays everything is determined."""
    online = ExtendedKalmanFilter(Bioreactor(), channels=["V", "OUR"], estimate=["mu_max"])
    rep = online.observability({"S": 1.0}, {"F": 0.02}, dt=0.5, samples=100)
    assert rep.unobservable == ["P"]
    assert "`P` is unobservable from `V`, `OUR`" in str(rep)
    full = ExtendedKalmanFilter(Bioreactor(), estimate=["mu_max"])
    assert full.observability({"S": 1.0}, {"F": 0.02}, dt=0.5, samples=100).unobservable == []


def test_bad_arguments():
    ekf = ExtendedKalmanFilter(DoubleIntegrator())
    with pytest.raises(ConfigError, match="`dt` must be > 0"):
        ekf.observability(dt=0.0)
