"""The fouling twin: an EKF tracks a heat exchanger's fouling resistance from its inlet and
outlet temperatures and flows."""

import numpy as np
import pytest
import xarray as xr

import processtwin as pt
from processtwin.estimate import ExtendedKalmanFilter
from processtwin.models import CounterflowHeatExchanger

DT, N = 60.0, 1440  # one sample a minute for a day
#: a shell-and-tube exchanger (30 kg a side) that fouls fast: towards 5e-4 m2 K/W in 12 h
TRUTH = CounterflowHeatExchanger(n_segments=4, M_h=30.0, M_c=30.0, U=1500.0,
                                 R_f_inf=5e-4, tau_f=43200.0)
#: the twin knows the exchanger but not how it fouls: R_f is a random walk
TWIN = TRUTH.replace(tau_f=1e12)
Q_RF = (4e-5) ** 2 / 3600.0  # random-walk intensity of R_f [(m2 K/W)^2 / s]


def _schedule(seed):
    """Hourly changes of both flows and inlet temperatures (the plant's operation)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(0.0, N * DT, 3600.0)
    k = hours.size
    return {"m_h": pt.hold(hours, rng.uniform(1.0, 2.5, k)),
            "T_h_in": pt.hold(hours, rng.uniform(70.0, 85.0, k)),
            "m_c": pt.hold(hours, rng.uniform(1.0, 2.5, k)),
            "T_c_in": pt.hold(hours, rng.uniform(35.0, 45.0, k))}


def _filter():
    return ExtendedKalmanFilter(TWIN, q={"T_h": 1e-4, "T_c": 1e-4, "R_f": Q_RF}, dt_max=60.0)


def test_fouling_resistance_is_tracked_within_two_sigma():
    inputs = _schedule(1)
    t = np.arange(N + 1) * DT
    truth = pt.simulate(TRUTH, {"R_f": 0.0}, inputs, t, solver="kvaerno5", rtol=1e-9,
                        atol=1e-9)
    rng = np.random.default_rng(2)
    data = xr.Dataset({c: ("time", np.asarray(truth["out:" + c])[1:]
                           + rng.normal(0.0, 0.1, N)) for c in ("T_h_out", "T_c_out")},
                      coords={"time": t[1:]})
    # the known inputs, read at the sample times (each held over the interval before it)
    held = {k: ("time", np.asarray(truth[k])[:-1]) for k in ("m_h", "T_h_in", "m_c",
                                                              "T_c_in")}
    ekf = _filter()
    out = ekf.filter(data, x0={"R_f": 0.0}, std={"R_f": 2e-4, "T_h": 2.0, "T_c": 2.0},
                     inputs=xr.Dataset(held, coords={"time": t[:-1]}), t0=0.0,
                     inputs_apply="next").data
    R_true = np.asarray(truth["R_f"])[1:]
    est, sd = out["R_f"].values, out["R_f_std"].values
    after = t[1:] > 3 * 3600.0  # converged
    inside = np.mean(np.abs(est - R_true)[after] <= 2 * sd[after])
    assert inside >= 0.9, f"true R_f within ±2σ only {inside:.0%} of the time"
    assert abs(est[-1] - R_true[-1]) < 0.1 * R_true[-1]
    assert out["R_f"].attrs["units"] == "m2 K/W"
    assert not out.attrs["divergence"]


def test_fouling_is_observable_from_the_four_temperatures():
    rep = _filter().observability({"R_f": 1e-4}, {"m_h": 2.0, "m_c": 1.5}, dt=DT,
                                  samples=60)
    assert "R_f" not in rep.unobservable and "R_f" not in rep.weak


@pytest.mark.parametrize("bad", [{"dt_max": 0.0}, {"dt_max": -1.0}])
def test_dt_max_is_checked(bad):
    with pytest.raises(pt.ConfigError, match="dt_max"):
        ExtendedKalmanFilter(TWIN, **bad)
