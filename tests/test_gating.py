"""Gating that cannot latch: a single rejected spike flags only its own sample, and gates
can be set per channel."""

import numpy as np
import pytest
import xarray as xr

import processtwin as pt
from processtwin import ConfigError
from processtwin.estimate import FLAGS, ExtendedKalmanFilter
from processtwin.models import Bioreactor


@pytest.fixture(scope="module")
def clean():
    model = Bioreactor()
    t = np.arange(0.0, 60.5, 0.5)
    res = pt.simulate(model, {"S": 1.0}, {"F": 0.02}, t)
    rng = np.random.default_rng(11)
    cols = {c: ("time", res["out:" + c][1:] + rng.normal(0.0, s, t.size - 1))
            for c, s in (("V", 0.05), ("OUR", 0.002))}
    lab = np.full(t.size - 1, np.nan)
    lab[7::8] = res["out:X"][1:][7::8] + rng.normal(0.0, 0.05, lab[7::8].size)
    cols["X"] = ("time", lab)
    return model, xr.Dataset(cols, coords={"time": t[1:]})


def test_a_single_spike_flags_only_its_own_sample(clean):
    model, data = clean
    data = data.copy(deep=True)
    k = 40
    data["OUR"].values[k] += 30 * 0.002  # one wild value, 30 sigma
    out = ExtendedKalmanFilter(model, channels=["V", "OUR", "X"]).filter(
        data, x0={"S": 1.0}, inputs={"F": 0.02}, t0=0.0).data
    flags = out["OUR_flag"].values
    assert flags[k] & FLAGS["spike"] and out["OUR_rejected"].values[k] == 1
    others = np.delete(flags, k)
    assert not np.any(others & FLAGS["drift"]), np.flatnonzero(others & FLAGS["drift"])
    assert out.attrs["rejected_samples"] == 1


def test_gates_per_channel(clean):
    model, data = clean
    data = data.copy(deep=True)
    i = int(np.flatnonzero(np.isfinite(data["X"].values))[2])
    data["X"].values[i] += 0.6  # a lab value 12 sigma off: gated by default
    ekf = ExtendedKalmanFilter(model, channels=["V", "OUR", "X"])
    default = ekf.filter(data, x0={"S": 1.0}, inputs={"F": 0.02}, t0=0.0).data
    assert default["X_rejected"].values[i] == 1
    trusting = ExtendedKalmanFilter(model, channels=["V", "OUR", "X"],
                                    gate={"X": float("inf")})
    out = trusting.filter(data, x0={"S": 1.0}, inputs={"F": 0.02}, t0=0.0).data
    assert out["X_rejected"].values[i] == 0 and int(out["X_rejected"].sum()) == 0
    with pytest.raises(ConfigError, match="did you mean `OUR`"):
        ExtendedKalmanFilter(model, channels=["V", "OUR"], gate={"OUT": 10.0})
    with pytest.raises(ConfigError, match="positive NIS threshold"):
        ExtendedKalmanFilter(model, gate=-1.0)


def test_input_records_stamped_at_the_end_of_their_interval(clean):
    """A setpoint log (value from its stamp on) and a historian export of the same feed
    (each value stamped at the end of the interval it acted on) give the same estimate
    when read with ``inputs_apply="next"`` and ``"previous"`` respectively."""
    model, data = clean
    t = data["time"].values
    log = xr.DataArray([0.01, 0.03], coords={"time": [0.0, 10.0]}, dims="time")
    starts = np.concatenate([[0.0], t[:-1]])
    export = xr.DataArray(np.where(starts < 10.0, 0.01, 0.03), coords={"time": t},
                          dims="time")
    ekf = ExtendedKalmanFilter(model, channels=["V", "OUR"])
    a = ekf.filter(data, x0={"S": 1.0}, inputs={"F": log}, t0=0.0).data
    b = ekf.filter(data, x0={"S": 1.0}, inputs={"F": export}, t0=0.0,
                   inputs_apply="previous").data
    c = ekf.filter(data, x0={"S": 1.0}, inputs={"F": export}, t0=0.0).data
    np.testing.assert_array_equal(a["X"].values, b["X"].values)
    assert not np.array_equal(a["X"].values, c["X"].values)  # one interval late
    with pytest.raises(ConfigError, match="inputs_apply"):
        ekf.filter(data, inputs={"F": log}, inputs_apply="before")


def test_the_filter_cannot_lock_itself_out():
    """A biased oxygen analyser (+30 %) pulls the estimate away; the gate then rejects the
    lab assays that would correct it. Without re-admission every biomass assay is rejected
    and the estimate ends 9σ off; with it (after 3 rejections in a row, covariance
    inflated) the assays get back in and the filter ends within 2σ of the truth."""
    truth = Bioreactor(mu_max=0.026)
    t = np.arange(0.5, 120.5, 0.5)
    res = pt.simulate(truth, {"S": 1.0}, {"F": 0.03}, np.r_[0.0, t])
    rng = np.random.default_rng(2)
    cols = {"V": ("time", res["out:V"][1:] + rng.normal(0.0, 0.05, t.size)),
            "OUR": ("time", res["out:OUR"][1:] * 1.3 + rng.normal(0.0, 0.002, t.size))}
    lab = np.arange(t.size) % 12 == 11  # every 6 h
    for c, s in (("X", 0.05), ("S", 0.02), ("P", 0.02)):
        y = res["out:" + c][1:] + rng.normal(0.0, s, t.size)
        y[~lab] = np.nan
        cols[c] = ("time", y)
    data = xr.Dataset(cols, coords={"time": t})

    def run(readmit_after):
        ekf = ExtendedKalmanFilter(Bioreactor(), estimate=["mu_max"],
                                   readmit_after=readmit_after)
        return ekf.filter(data, x0={"S": 1.0}, inputs={"F": 0.03}, t0=0.0).data

    locked = run(10**9)
    assert int(locked["X_rejected"].sum()) == lab.sum()  # every assay shut out
    assert abs(locked["X"].values[-1] - res["X"][-1]) > 5 * locked["X_std"].values[-1]
    out = run(3)
    assert int(out["X_rejected"].sum()) <= lab.sum() // 2
    for name, true in (("X", res["X"][-1]), ("mu_max", 0.026)):
        assert abs(out[name].values[-1] - true) < 2 * out[f"{name}_std"].values[-1], name
    readmitted = (out["X_flag"].values & FLAGS["mismatch"]) > 0
    assert readmitted.any()  # the re-admissions are flagged, not silent
