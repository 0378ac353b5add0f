"""Test configuration: float64 and strict dtype promotion for every JAX test."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
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
