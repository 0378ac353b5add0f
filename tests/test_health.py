"""Filter health without the truth: divergence from NIS windows, pinned estimates and
growing standard deviations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scipy.stats import chi2

import processtwin as pt
from processtwin.estimate import ExtendedKalmanFilter
from processtwin.estimate.health import HealthCheck, divergence
from processtwin.models import Bioreactor


@pytest.fixture(scope="module")
def plant():
    truth = Bioreactor(mu_max=0.026)
    t = np.arange(0.5, 120.5, 0.5)
    res = pt.simulate(truth, {"S": 1.0}, {"F": 0.03}, np.r_[0.0, t])
    rng = np.random.default_rng(3)
    return xr.Dataset({c: ("time", res["out:" + c][1:] + rng.normal(0.0, s, t.size))
                       for c, s in (("V", 0.05), ("OUR", 0.002))}, coords={"time": t})


def test_clean_run_is_healthy(plant):
    ekf = ExtendedKalmanFilter(Bioreactor(), estimate=["mu_max"], channels=["V", "OUR"])
    out = ekf.filter(plant, x0={"S": 1.0}, inputs={"F": 0.03}, t0=0.0).data
    assert int(out["divergence"].sum()) == 0 and out.attrs["divergence"] == ""


def test_a_wrong_model_that_cannot_adapt_is_flagged_within_the_window(plant):
    """μmax 40 % low and (nearly) no process noise: the innovations grow and the window's
    NIS leaves its χ² band; flagged within 2 windows of 20 samples (20 h)."""
    ekf = ExtendedKalmanFilter(Bioreactor(mu_max=0.015), channels=["V", "OUR"],
                               q={k: 1e-12 for k in "XSPV"})
    out = ekf.filter(plant, x0={"S": 1.0}, inputs={"F": 0.03}, t0=0.0).data
    first = int(np.argmax(out["divergence"].values))
    assert out["divergence"].values.any() and first < 40
    assert out.attrs["divergence"].startswith(f"first at t={plant['time'].values[first]:g}")
    assert "NIS" in out.attrs["divergence"]


def test_each_symptom_on_synthetic_statistics():
    n, w = 60, 20
    dof = np.full(n, 2.0)
    nis = np.full(n, 2.0)  # consistent: mean NIS = dof
    z = np.ones((n, 2))
    sd = np.full((n, 2), 0.1)
    lo, hi = np.array([0.0, -np.inf]), np.array([np.inf, np.inf])
    flags, _ = divergence(nis, dof, z, sd, lo, hi, ["a", "b"], window=w)
    assert not flags.any()
    big = nis.copy()
    big[30:] = 6.0  # NIS three times its dof: the 20-sample window leaves χ²(40) 99.9 %
    flags, why = divergence(big, dof, z, sd, lo, hi, ["a", "b"], window=w)
    k = int(np.argmax(flags))
    assert 30 < k < 50 and 6.0 * (k - 29) + 2.0 * (w - (k - 29)) > chi2.ppf(0.999, 2 * w)
    assert why[k].startswith("NIS")
    pinned = z.copy()
    pinned[10:, 0] = 0.0
    flags, why = divergence(nis, dof, pinned, sd, lo, hi, ["a", "b"], window=w)
    assert int(np.argmax(flags)) == 10 + w // 2 - 1 and "`a` pinned at its bound 0" in why[-1]
    grow = sd.copy()
    grow[40:, 1] = 2.0
    flags, why = divergence(nis, dof, z, grow, lo, hi, ["a", "b"], window=w)
    assert int(np.argmax(flags)) == 40 and "σ of `b` grew" in why[40]
    with pytest.raises(ValueError, match="window"):
        divergence(nis, dof, z, sd, lo, hi, ["a", "b"], window=1)


def test_live_health_equals_the_batch_check_sample_by_sample():
    rng = np.random.default_rng(8)
    n, w = 90, 12
    dof = rng.integers(0, 3, n).astype(float)
    nis = rng.chisquare(np.maximum(dof, 1)) * (dof > 0)
    nis[50:60] *= 8.0  # an NIS excursion
    z = np.abs(rng.normal(1.0, 0.1, (n, 2)))
    z[20:32, 0] = 0.0  # pinned at the bound
    sd = np.full((n, 2), 0.1)
    sd[70:, 1] = 1.5  # growth
    lo, hi = np.array([0.0, -np.inf]), np.array([np.inf, 3.0])
    flags, why = divergence(nis, dof, z, sd, lo, hi, ["a", "b"], window=w)
    check = HealthCheck(lo, hi, ["a", "b"], max_dof=2, window=w)

    def one(mem, row):
        return check.step(mem, *row)

    mem0 = jnp.zeros(check.memory_size)
    _, verdicts = jax.lax.scan(one, mem0, tuple(jnp.asarray(a) for a in (nis, dof, z, sd**2)))
    verdicts = np.asarray(verdicts)
    assert verdicts.shape == (n, check.verdict_size)
    assert [check.reason(v, zk) for v, zk in zip(verdicts, z, strict=True)] == why
    assert flags.sum() > 10 and verdicts[:, 0].sum() == flags.sum()
    with pytest.raises(ValueError, match="window"):
        HealthCheck(lo, hi, ["a", "b"], max_dof=2, window=1)


def test_live_filter_flags_divergence_like_the_batch_filter_and_can_reset(plant):
    ekf = ExtendedKalmanFilter(Bioreactor(mu_max=0.015), channels=["V", "OUR"],
                               q={k: 1e-12 for k in "XSPV"})
    batch = ekf.filter(plant, x0={"S": 1.0}, inputs={"F": 0.03}, t0=0.0).data
    flagged = batch["divergence"].values.astype(bool)
    rows = [{c: float(plant[c].values[k]) for c in ("V", "OUR")}
            for k in range(plant.sizes["time"])]
    times = plant["time"].values
    live = ekf.live(0.0, x0={"S": 1.0}, u={"F": 0.03})
    seen = []
    for t, y in zip(times, rows, strict=True):
        live.step(t, y)
        seen.append(bool(live.divergence))
    np.testing.assert_array_equal(seen, flagged)
    assert live.divergences == flagged.sum() and live.resets == 0
    # a late sample re-filters; the check's memory travels in the logged buffers and agrees with
    # the batch filter on the merged record
    t_late, v_late = times[-3] + 0.25, float(plant["V"].values[-3])
    live.step(t_late, {"V": v_late})
    extra = xr.Dataset({"V": ("time", [v_late]), "OUR": ("time", [np.nan])},
                       coords={"time": [t_late]})
    merged = xr.concat([plant, extra], dim="time").sortby("time")
    again = ekf.filter(merged, x0={"S": 1.0}, inputs={"F": 0.03}, t0=0.0).data
    assert bool(live.divergence) == bool(again["divergence"].values[-1])
    assert live.refiltered == 2
    # the reset policy re-initialises the covariance at the first flag, once per episode
    reset = ekf.live(0.0, x0={"S": 1.0}, u={"F": 0.03}, on_divergence="reset")
    first = int(np.argmax(flagged))
    for k, (t, y) in enumerate(zip(times, rows, strict=True)):
        reset.step(t, y)
        if k == first:
            assert reset.resets == 1 and reset.reset_log[0][0] == t
            z0, P0 = ekf.initial({"S": 1.0})
            np.testing.assert_allclose(reset.state.P, P0)
            assert int(reset.state.gated.sum()) == 0 and float(reset.state.nis_avg) == 1.0
    assert reset.resets >= 1
    with pytest.raises(pt.ConfigError, match="on_divergence"):
        ekf.live(0.0, on_divergence="panic")
    with pytest.raises(pt.ConfigError, match="health_window"):
        ekf.live(0.0, health_window=1)


def test_live_step_is_one_loop_kernel_run_in_the_calling_thread(plant):
    """XLA:CPU runs a program on its thread pool (~5x slower per call here) when it has more
    than 8 kernels and any buffer above 512 bytes: with the divergence check's memory the
    live buffer is ~1.4 kB, so the step must stay a handful of kernels at the top level."""
    import re

    ekf = ExtendedKalmanFilter(Bioreactor(), estimate=["mu_max"], channels=["V", "OUR"])
    live = ekf.live(0.0, x0={"S": 1.0}, u={"F": 0.03})
    row = np.r_[0.5, 1.0, 0.01, live.u]
    assert live._host.nbytes > 512
    hlo = live._fn.lower(live._buf, row).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):].split("\n}")[0]
    kernels = re.findall(r"= \S+ (?:fusion|copy|call|while|custom-call)\(", entry)
    assert 1 <= len(kernels) <= 8, entry
