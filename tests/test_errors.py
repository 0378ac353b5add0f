"""Bad input gets a specific error naming the field, the expected and the received value."""

import numpy as np
import pytest

import processtwin as pt
from processtwin.models import Bioreactor

T = np.linspace(0.0, 10.0, 11)


def test_negative_volume():
    with pytest.raises(pt.ModelError, match=r"state `V` must be > 0.0 \[L\], got -5 \[L\]"):
        pt.simulate(Bioreactor(), {"V": -5.0}, None, T)


def test_negative_volume_in_one_ensemble_member():
    with pytest.raises(pt.ModelError, match="state `V`"):
        pt.ensemble(Bioreactor(), {"V": np.array([100.0, -1.0, 50.0])}, None, T)


def test_unknown_parameter_suggests_close_name():
    with pytest.raises(pt.ConfigError, match=r"unknown parameter `mu_mx`.*did you mean `mu_max`"):
        pt.simulate(Bioreactor(), None, None, T, params={"mu_mx": 0.03})
    with pytest.raises(pt.ConfigError, match="did you mean `K_s`"):
        Bioreactor().replace(Ks=0.1)


def test_unknown_state_and_input():
    with pytest.raises(pt.ConfigError, match="unknown state `Vol`"):
        pt.simulate(Bioreactor(), {"Vol": 1.0}, None, T)
    with pytest.raises(pt.ConfigError, match="unknown input `feed`"):
        pt.simulate(Bioreactor(), None, {"feed": 1.0}, T)


def test_parameter_out_of_bounds_names_value_bound_and_units():
    with pytest.raises(pt.ModelError, match=r"parameter `mu_max` must be ≥ 0.0 \[1/h\], got -0.1"):
        Bioreactor(mu_max=-0.1)
    with pytest.raises(pt.ModelError, match=r"`K_i` must be > 0.0 \[g/L\]"):
        Bioreactor().replace(K_i=0.0)
    with pytest.raises(pt.ModelError, match="must be finite"):
        Bioreactor(Y_xs=float("nan"))


def test_nan_input():
    with pytest.raises(pt.DataError, match=r"input `F` is nan at t=5"):
        pt.simulate(Bioreactor(), None, {"F": pt.hold([0.0, 5.0], [0.01, np.nan])}, T)
    with pytest.raises(pt.DataError, match="input `F` is nan"):
        pt.simulate(Bioreactor(), None, {"F": float("nan")}, T)


def test_negative_feed():
    with pytest.raises(pt.DataError, match=r"input `F` must be ≥ 0.0 \[L/h\], got -0.1"):
        pt.simulate(Bioreactor(), None, {"F": -0.1}, T)


def test_time_not_increasing():
    with pytest.raises(pt.DataError, match=r"strictly increasing; t\[2\]=1 h is not after"):
        pt.simulate(Bioreactor(), None, None, [0.0, 1.0, 1.0, 2.0])
    with pytest.raises(pt.DataError, match="strictly increasing"):
        pt.simulate(Bioreactor(), None, {"F": pt.hold([0.0, 5.0, 3.0], [0, 1, 2])}, T)
    with pytest.raises(pt.DataError, match="at least 2 times"):
        pt.simulate(Bioreactor(), None, None, [0.0])


def test_bad_options():
    with pytest.raises(pt.ConfigError, match="unknown solver `tsit`.*`tsit5`"):
        pt.simulate(Bioreactor(), None, None, T, solver="tsit")
    with pytest.raises(pt.ConfigError, match="`rtol` and `atol` must be positive"):
        pt.simulate(Bioreactor(), None, None, T, rtol=0.0)


def test_step_budget_exhausted_is_a_solver_error():
    with pytest.raises(pt.SolverError, match="max_steps"):
        pt.simulate(Bioreactor(), None, None, T, max_steps=2)


def _plain_tank():
    """A newcomer's model: constants as plain attributes, an output without a sensor kind."""
    from typing import ClassVar

    from processtwin.model import Model, Var, variables

    St = variables("PlainTankState", T=Var("degC", "water temperature", default=20.0))
    In = variables("PlainTankInputs", P=Var("kW", "heater power", kind="manipulated"))
    Out = variables("PlainTankOutputs", T_meas=Var("degC", "measured temperature"))

    class PlainTank(Model):
        State: ClassVar[type] = St
        Inputs: ClassVar[type] = In
        Outputs: ClassVar[type] = Out
        time_unit: ClassVar[str] = "h"
        UA: ClassVar[float] = 0.05

        def rhs(self, t, x, u, ops):
            return St(T=u.P - self.UA * (x.T - 20.0))

        def measure(self, t, x, u, ops):
            return Out(T_meas=x.T)

    return PlainTank()


def test_a_model_without_parameters_or_sensors_says_so():
    from processtwin.estimate import ExtendedKalmanFilter
    from processtwin.plant import simulated_plant

    model = _plain_tank()
    with pytest.raises(pt.ConfigError, match=r"declares no parameters.*param\(default"):
        ExtendedKalmanFilter(model, estimate=["UA"])
    with pytest.raises(pt.ConfigError, match=r"no measured outputs.*`T_meas` \(state\)"
                                             r".*kind=\"online\""):
        simulated_plant(model, inputs={"P": 1.0}, until=2.0)
    assert pt.errors.suggest("x", []) == "; there is none."
