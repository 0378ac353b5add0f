"""A live step that raises leaves the filter exactly as it was; the corrected retry works."""

import numpy as np
import pytest

from processtwin import DataError
from processtwin.estimate import ExtendedKalmanFilter
from processtwin.models import Bioreactor, TankCascade


def _snapshot(live):
    return (live.z.copy(), live.sd.copy(), list(live._t), [y.copy() for y in live._y],
            live.u.copy(), live.refiltered, live.dropped, live.t)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, list):
            assert len(x) == len(y) and all(np.array_equal(p, q, equal_nan=True)
                                            for p, q in zip(x, y, strict=True))
        else:
            np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def ekf():
    return ExtendedKalmanFilter(Bioreactor(), estimate=["mu_max"])


BAD_STEPS = [
    ((1.0, {"V": 120.0}, {"Feed": 0.02}), "unknown input `Feed`"),
    ((1.0, {"V": 120.0}, {"F": "fast"}), "must be a number"),
    ((1.0, {"V": 120.0}, {"F": float("inf")}), "finite"),
    ((1.0, {"VV": 120.0}, None), "unknown channel `VV`"),
    ((1.0, {"V": "full"}, None), "must be a number"),
    ((1.0, {"V": float("inf")}, None), "use NaN for missing"),
    (("noon", {"V": 120.0}, None), "sample time must be a number"),
    ((float("nan"), {"V": 120.0}, None), "finite"),
    ((0.25, {"V": 120.1}, None), "two samples of `V`"),  # V at 0.25 was already received
    ((-1.0, {"V": 120.0}, None), "before the filter start"),
]


@pytest.mark.parametrize("args,message", BAD_STEPS, ids=[m for _, m in BAD_STEPS])
def test_failed_step_changes_nothing_and_the_retry_succeeds(ekf, args, message):
    live = ekf.live(0.0, x0={"S": 1.0}, u={"F": 0.01})
    live.step(0.25, {"V": 120.0, "OUR": 0.02})
    live.step(0.5, {"V": 120.01})
    before = _snapshot(live)
    with pytest.raises(DataError, match=message):
        live.step(*args)
    _same(_snapshot(live), before)
    live.step(1.0, {"V": 120.02}, {"F": 0.02})  # the corrected call
    assert live.t == 1.0 and live.u[0] == 0.02


def test_vector_channel_of_wrong_length_changes_nothing():
    live = ExtendedKalmanFilter(TankCascade(n_tanks=3), channels=["c_meas"]).live(0.0)
    live.step(1.0, {"c_meas": [0.1, 0.0, 0.0]})
    before = _snapshot(live)
    with pytest.raises(DataError, match="has 3 elements, got 2"):
        live.step(2.0, {"c_meas": [0.1, 0.2]}, {"q": 0.6})
    _same(_snapshot(live), before)
    live.step(2.0, {"c_meas": [0.1, 0.2, 0.0]}, {"q": 0.6})
    assert live.u[0] == 0.6


def test_a_partial_input_change_keeps_the_other_held_inputs(ekf):
    """``u={"F": ...}`` changes the feed only: the feed concentration held since the start
    stays (it was reset to its declared default before)."""
    live = ekf.live(0.0, u={"F": 0.01, "S_in": 250.0})
    lay = ekf.model.layout.inputs
    s_in = lay.indices(["S_in"])[0]
    live.step(0.5, {"V": 120.0}, u={"F": 0.02})
    assert live.u[s_in] == 250.0 and live.u[lay.indices(["F"])[0]] == 0.02
    live.set_inputs({"F": 0.03})
    assert live.u[s_in] == 250.0
    with pytest.raises(DataError, match="must be a number"):
        live.step(1.0, {"V": 120.0}, u={"F": "fast"})
    assert live.u[s_in] == 250.0 and live.t == 0.5
