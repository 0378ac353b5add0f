"""Edges of the contract found in review: wiring that must not depend on parameter values,
sizes that must be static, discrete horizons, ensemble shapes, plans inside their bounds."""

from typing import ClassVar

import numpy as np
import pytest

import processtwin as pt
from processtwin import ConfigError, ModelError
from processtwin.model import Model, Var, param, variables
from processtwin.models import DiscreteTripleTank, TankCascade
from processtwin.solvers import OCP

PumpState = variables("PumpState", v=Var("m3", "volume pumped", default=0.0))
PumpInputs = variables("PumpInputs", q=Var("m3/s", "flow in", default=1.0, kind="port"))
PumpPorts = variables("PumpPorts", out=Var("m3/s", "flow out", kind="port"))


class Pump(Model):
    """A booster whose outflow is ``gain`` times its inflow (feedthrough; Perry 2008)."""

    gain: float = param(1.0, units="-", bounds=(0.0, None), doc="flow gain")
    State: ClassVar[type] = PumpState
    Inputs: ClassVar[type] = PumpInputs
    Ports: ClassVar[type] = PumpPorts
    time_unit: ClassVar[str] = "s"

    def rhs(self, t, x, u, ops):
        return PumpState(v=self.gain * u.q)

    def ports(self, t, x, u, ops):
        return PumpPorts(out=self.gain * u.q)


def _chain(g_a, g_b):
    return pt.System({"a": Pump(gain=g_a), "b": Pump(gain=g_b), "c": Pump()},
                     [("a.out", "b.q"), ("b.out", "c.q")], name="chain")


def test_wiring_does_not_depend_on_parameter_values():
    """A first system with a zero gain must not teach the structure cache that the port
    ignores its input: the same structure with other gains then feeds the true flow."""
    t = [0.0, 2.0]
    first = pt.simulate(_chain(1.0, 0.0), None, {"a.q": 3.0}, t)
    assert first["c.v"][-1] == pytest.approx(0.0, abs=1e-12)
    later = pt.simulate(_chain(0.5, 2.0), None, {"a.q": 3.0}, t)
    assert later["c.v"][-1] == pytest.approx(2.0 * 0.5 * 2.0 * 3.0, rel=1e-10)


def test_a_size_must_be_a_dimension_field():
    RodState = variables("RodState", T=Var("K", "temperature", shape="n_cells"))

    class Rod(Model):
        """A rod (Carslaw & Jaeger 1959)."""

        n_cells: int = 3  # a plain field: refused, it is not part of the structure
        State: ClassVar[type] = RodState
        time_unit: ClassVar[str] = "s"

        def rhs(self, t, x, u, ops):
            return RodState(T=-x.T)

    with pytest.raises(ModelError, match="declare it with `dimension"):
        _ = Rod(n_cells=5).layout


def test_discrete_horizon_cannot_change_its_samples_per_interval():
    ocp = OCP(DiscreteTripleTank(), 10.0, 5)
    ocp.set_horizon(10.0)
    with pytest.raises(ConfigError, match="2 samples each"):
        ocp.set_horizon(5.0)


@pytest.mark.parametrize("shape", [(4, 2), (4,)])
def test_ensemble_vector_state_of_the_wrong_length(shape):
    with pytest.raises(ModelError, match=r"has 3 elements over `tank` \[g/m3\]"):
        pt.ensemble(TankCascade(), {"c": np.ones(shape)}, None, [0.0, 1.0])


def test_rhs_returning_the_wrong_length_is_named():
    ThreeState = variables("ThreeState", x=Var("m", "position", shape=3))

    class Wrong(Model):
        """Returns four derivatives for three states (Murphy 1949)."""

        State: ClassVar[type] = ThreeState
        time_unit: ClassVar[str] = "s"

        def rhs(self, t, x, u, ops):
            return ThreeState(x=ops.concat([x.x, 0.0]))

    with pytest.raises(ModelError, match=r"state `x` of `wrong` has shape \(3,\)"):
        pt.simulate(Wrong(), None, None, [0.0, 1.0])


def test_plan_controls_stay_inside_their_bounds():
    """A bang-bang optimum sits on the bound; the plan holds the bound exactly, so the
    plan can be replayed through ``simulate``, which checks inputs against bounds."""
    model = TankCascade(n_tanks=2)
    ocp = OCP(model, 10.0, 10, controls=("q",)).bound_input("q", 0.0, 1.5)
    ocp.minimise(mayer=lambda x: -(x.c[0] + x.c[1]))
    res = ocp.solve()
    q = res.data["q"].values
    assert q.max() <= 1.5 and q.min() >= 0.0 and np.isclose(q.max(), 1.5)
    pt.simulate(model, None, {"q": pt.hold(res.data["time"].values[:-1], q[:-1])},
                res.data["time"].values)
