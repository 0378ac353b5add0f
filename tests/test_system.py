"""Systems composed by ports equal the same equations written as one model.

The fed-batch plant (feed vessel → bioreactor) against a monolithic model written out here
independently: rhs values and Jacobians in JAX, CasADi SX and MX and Pyomo, outputs, and
simulations. Cascades of tanks composed by ports equal one longer cascade (vector states,
a port fed through from an input, a system inside a system). Every wiring error names the
unit and the port.
"""

from typing import Any, ClassVar

import casadi as ca
import jax
import jax.numpy as jnp
import numpy as np
import pyomo.environ as pyo
import pytest
from pyomo.core.expr.calculus.derivatives import Modes, differentiate

import processtwin
from processtwin.errors import ModelError
from processtwin.model import Model, Var, param, variables
from processtwin.models import (
    REGISTRY,
    Bioreactor,
    DiscreteTripleTank,
    DoubleIntegrator,
    FeedVessel,
    TankCascade,
    fed_batch_plant,
)
from processtwin.ops import casadi_ops, jax_ops, numpy_ops, pyomo_ops
from processtwin.system import System

# ---- the plant written as one model ---------------------------------------------------------
MonoState = variables(
    "MonoState",
    V_feed=Var("L", "feed vessel volume", default=50.0, bounds=(0.0, None)),
    X=Var("g/L", "biomass", default=1.0, bounds=(0.0, None)),
    S=Var("g/L", "substrate", default=0.5, bounds=(0.0, None)),
    P=Var("g/L", "product", default=0.0, bounds=(0.0, None)),
    V=Var("L", "broth volume", default=120.0, bounds=(0.0, None), strict=True),
)
MonoInputs = variables("MonoInputs", F=Var("L/h", "pump setpoint", kind="manipulated"))
MonoOutputs = variables(
    "MonoOutputs",
    V_feed=Var("L", "feed load cell", kind="online"),
    V=Var("L", "broth load cell", kind="online"),
    OUR=Var("g/(L h)", "oxygen uptake rate", kind="online"),
    X=Var("g/L", "biomass assay", kind="offline"),
    S=Var("g/L", "substrate assay", kind="offline"),
    P=Var("g/L", "product assay", kind="offline"),
)

# Parameter names of the monolith → dotted names in the system.
PARAMS = {"S_feed": "feed.S_feed", "V_low": "feed.V_low",
          **{k: f"reactor.{k}" for k in ("mu_max", "K_s", "K_i", "alpha", "beta", "K_p",
                                        "Y_xs", "Y_ps", "m_s", "Y_xo", "m_o")}}


class MonolithicPlant(Model):
    """The fed-batch plant as one model: feed vessel (Srinivasan et al. 2003 feed)."""

    S_feed: float = param(200.0, units="g/L", doc="feed concentration")
    V_low: float = param(0.5, units="L", doc="pump shut-off volume")
    mu_max: float = param(0.02, units="1/h", doc="max. growth rate")
    K_s: float = param(0.05, units="g/L", doc="saturation")
    K_i: float = param(5.0, units="g/L", doc="inhibition")
    alpha: float = param(0.0, units="g/g", doc="growth-associated yield")
    beta: float = param(0.004, units="g/(g h)", doc="non-growth production")
    K_p: float = param(2e-4, units="g/L", doc="production saturation")
    Y_xs: float = param(0.5, units="g/g", doc="biomass yield")
    Y_ps: float = param(1.2, units="g/g", doc="product yield")
    m_s: float = param(0.0, units="g/(g h)", doc="maintenance")
    Y_xo: float = param(1.0, units="g/g", doc="oxygen yield")
    m_o: float = param(0.005, units="g/(g h)", doc="oxygen maintenance")

    name: ClassVar[str] = "monolithic_plant"
    State: ClassVar[type] = MonoState
    Inputs: ClassVar[type] = MonoInputs
    Outputs: ClassVar[type] = MonoOutputs
    time_unit: ClassVar[str] = "h"

    def _rates(self, x: Any, ops: Any) -> tuple[Any, Any, Any]:
        mu = self.mu_max * x.S / (self.K_s + x.S + x.S * x.S / self.K_i)
        qp = self.alpha * mu + self.beta * x.S / (self.K_p + x.S)
        return mu, qp, x.S / (self.K_p + x.S)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        flow = u.F * ops.tanh(x.V_feed / self.V_low)
        mu, qp, phi = self._rates(x, ops)
        D = flow / x.V
        uptake = (mu / self.Y_xs + qp / self.Y_ps + self.m_s * phi) * x.X
        return MonoState(V_feed=-flow, X=mu * x.X - D * x.X,
                         S=D * (self.S_feed - x.S) - uptake,
                         P=qp * x.X - D * x.P, V=flow)

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        mu, _, _ = self._rates(x, ops)
        return MonoOutputs(V_feed=x.V_feed, V=x.V, OUR=(mu / self.Y_xo + self.m_o) * x.X,
                           X=x.X, S=x.S, P=x.P)


def _pair(rng):
    """The plant and the monolith with the same perturbed parameters, and a random point
    (feed volumes down to a fraction of V_low, where the pump shuts off)."""
    values = {k: info.default * rng.uniform(0.7, 1.3) if info.default else rng.uniform(0.0, 0.1)
              for k, info in MonolithicPlant.parameters().items()}
    mono = MonolithicPlant(**values)
    plant = fed_batch_plant().replace(**{PARAMS[k]: v for k, v in values.items()})
    z = np.array([rng.choice([rng.uniform(0.05, 2.0), rng.uniform(2.0, 50.0)]),
                  rng.uniform(0.5, 10.0), rng.uniform(0.0, 2.0), rng.uniform(0.0, 2.0),
                  rng.uniform(100.0, 150.0), rng.uniform(0.0, 0.5)])
    return plant, mono, z


def _jax_fn(model, what="rhs"):
    lay = model.layout
    ns = lay.states.size
    group = lay.states if what == "rhs" else lay.outputs

    def f(z):
        x, u = lay.states.unravel(z[:ns], jax_ops), lay.inputs.unravel(z[ns:], jax_ops)
        return group.ravel(getattr(model, what)(0.0, x, u, jax_ops), jax_ops)

    return f


def _casadi_fn(model, sym):
    lay = model.layout
    ns, n = lay.states.size, lay.states.size + lay.inputs.size
    z = sym.sym("z", n)
    x, u = lay.states.unravel(z[:ns], casadi_ops), lay.inputs.unravel(z[ns:], casadi_ops)
    f = lay.states.ravel(model.rhs(0.0, x, u, casadi_ops), casadi_ops)
    y = lay.outputs.ravel(model.measure(0.0, x, u, casadi_ops), casadi_ops)
    return ca.Function("f", [z], [f, ca.jacobian(f, z), y])


def _pyomo_eval(model, zval):
    lay = model.layout
    ns = lay.states.size
    m = pyo.ConcreteModel()
    m.z = pyo.Var(range(len(zval)), initialize=dict(enumerate(zval)))
    zv = [m.z[i] for i in range(len(zval))]
    x, u = lay.states.unravel(zv[:ns], pyomo_ops), lay.inputs.unravel(zv[ns:], pyomo_ops)
    exprs = lay.states.ravel(model.rhs(0.0, x, u, pyomo_ops), pyomo_ops)
    jac = [[float(d) for d in differentiate(e, wrt_list=zv, mode=Modes.reverse_numeric)]
           for e in exprs]
    return np.array([pyo.value(e) for e in exprs]), np.array(jac)


# ---- the plant: structure ----------------------------------------------------------------------
def test_plant_layout_is_dotted():
    plant = fed_batch_plant()
    assert isinstance(plant, Model) and plant.name == "fed_batch_plant"
    assert plant.time_unit == "h" and not plant.is_discrete
    lay = plant.layout
    assert lay.states.names == ("feed.V", "reactor.X", "reactor.S", "reactor.P", "reactor.V")
    assert lay.inputs.names == ("feed.F",)  # reactor.F and reactor.S_in are connected
    assert lay.outputs.names == ("feed.V", "reactor.V", "reactor.OUR", "reactor.X",
                                 "reactor.S", "reactor.P")
    assert lay.ports.names == ("feed.outflow", "feed.S_out")
    np.testing.assert_array_equal(lay.states.defaults(), [50.0, 1.0, 0.5, 0.0, 120.0])
    assert lay.states.vars["feed.V"].units == "L"
    assert set(plant.parameters()) == ({f"feed.{k}" for k in FeedVessel.parameters()}
                                       | {f"reactor.{k}" for k in Bioreactor.parameters()})
    assert set(PARAMS.values()) <= set(plant.parameters())
    assert plant.get("reactor.mu_max") == 0.02 and plant.get("feed.S_feed") == 200.0
    assert REGISTRY["fed_batch_plant"]().layout.states.names == lay.states.names
    x = plant.state({"feed.V": 10.0}, **{"reactor.X": 2.0})
    assert (x.feed.V, x.reactor.X, x.reactor.V) == (10.0, 2.0, 120.0)


def test_plant_replace_reaches_the_unit():
    plant = fed_batch_plant().replace(**{"reactor.mu_max": 0.05, "feed.S_feed": 300.0})
    assert plant.units["reactor"].mu_max == 0.05 and plant.units["feed"].S_feed == 300.0
    with pytest.raises(ModelError, match=r"parameter `reactor.K_i` must be > 0"):
        fed_batch_plant().replace(**{"reactor.K_i": 0.0})


def test_plant_equals_monolith_in_every_backend(rng):
    for _ in range(6):
        plant, mono, z = _pair(rng)
        f_ref, f_sys = _jax_fn(mono), _jax_fn(plant)
        val = np.asarray(f_ref(jnp.asarray(z)))
        jac = np.asarray(jax.jacfwd(f_ref)(jnp.asarray(z)))
        np.testing.assert_allclose(np.asarray(f_sys(jnp.asarray(z))), val, rtol=1e-12,
                                   atol=1e-300)
        np.testing.assert_allclose(np.asarray(jax.jacfwd(f_sys)(jnp.asarray(z))), jac,
                                   rtol=1e-12, atol=1e-15)
        y_ref = np.asarray(_jax_fn(mono, "measure")(jnp.asarray(z)))
        np.testing.assert_allclose(np.asarray(_jax_fn(plant, "measure")(jnp.asarray(z))),
                                   y_ref, rtol=1e-12)
        for sym in (ca.SX, ca.MX):
            v, j, y = (np.asarray(a) for a in _casadi_fn(plant, sym)(z))
            np.testing.assert_allclose(v.ravel(), val, rtol=1e-12, atol=1e-300)
            np.testing.assert_allclose(j, jac, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(y.ravel(), y_ref, rtol=1e-12)
        v, j = _pyomo_eval(plant, z)
        np.testing.assert_allclose(v, val, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(j, jac, rtol=1e-12, atol=1e-15)
        lay = plant.layout
        out = plant.rhs(0.0, lay.states.unravel(z[:5], numpy_ops),
                        lay.inputs.unravel(z[5:], numpy_ops), numpy_ops)
        np.testing.assert_allclose(lay.states.ravel(out, numpy_ops), val, rtol=1e-12)
    assert np.count_nonzero(jac) >= 15  # the comparison is not of constants


def test_plant_ports_feed_the_reactor():
    plant = fed_batch_plant()
    lay = plant.layout
    x = lay.states.unravel(jnp.array([30.0, 1.0, 0.5, 0.0, 120.0]), jax_ops)
    u = lay.inputs.unravel(jnp.array([0.2]), jax_ops)
    p = lay.ports.ravel(plant.ports(0.0, x, u, jax_ops), jax_ops)
    np.testing.assert_allclose(np.asarray(p), [0.2 * np.tanh(60.0), 200.0], rtol=1e-15)


def test_plant_simulation_equals_monolith():
    """150 h with the pump stepped up so that the vessel runs dry near 86 h: the system and
    the monolith agree, liquid is conserved and the vessel never goes negative."""
    t = np.linspace(0.0, 150.0, 301)
    pump = processtwin.hold([0.0, 40.0], [0.1, 1.0])
    # The two write the same equations in a different order, so their rounding (and their
    # adaptive steps) differ: tight tolerances make both close to the exact solution.
    tol = {"rtol": 1e-12, "atol": 1e-14}
    a = processtwin.simulate(fed_batch_plant(), None, {"feed.F": pump}, t, **tol)
    b = processtwin.simulate(MonolithicPlant(), None, {"F": pump}, t, **tol)
    for name, ref in (("feed.V", "V_feed"), ("reactor.X", "X"), ("reactor.S", "S"),
                      ("reactor.P", "P"), ("reactor.V", "V")):
        np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[ref]), rtol=1e-10,
                                   atol=1e-10, err_msg=name)
    total = np.asarray(a["feed.V"]) + np.asarray(a["reactor.V"])
    np.testing.assert_allclose(total, 170.0, rtol=1e-12)
    feed = np.asarray(a["feed.V"])
    assert feed.min() > -1e-10 and feed[-1] < 1e-3  # ran dry without going below empty
    assert feed[t == 80.0][0] > 1.0  # and not before it should (46 L at 1 L/h after 40 h)
    ds = a.data
    assert ds["feed.V"].attrs["units"] == "L" and ds["reactor.OUR"].dims == ("time",)


# ---- cascades composed by ports ---------------------------------------------------------------
def _series(*sizes: int) -> System:
    """Cascades of the given sizes, each fed by the previous one's outlet and flow."""
    names = [f"c{i}" for i in range(len(sizes))]
    units = {n: TankCascade(n_tanks=s) for n, s in zip(names, sizes, strict=True)}
    conns = [c for a, b in zip(names, names[1:], strict=False)
             for c in ((f"{a}.outlet", f"{b}.c_in"), (f"{a}.flow", f"{b}.q"))]
    return System(units, conns, name="series")


def test_cascades_in_series_equal_one_cascade(rng):
    """2 + 3 tanks in series are 5 tanks: the flow port feeds the input q through (no state
    in between), so ports are evaluated in two passes."""
    sys_, one = _series(2, 3), TankCascade(n_tanks=5)
    lay = sys_.layout
    assert lay.states.names == ("c0.c", "c1.c") and lay.inputs.names == ("c0.q", "c0.c_in")
    assert [lf.shape for lf in lay.states.leaves] == [(2,), (3,)]
    assert dict(lay.dims) == {"tank": 2, "c1.tank": 3}  # a clash is renamed with the unit
    z = np.concatenate([rng.uniform(0.0, 10.0, 5), [0.7, 4.0]])
    for f in (_jax_fn(sys_), _jax_fn(sys_, "measure")):
        assert np.all(np.isfinite(np.asarray(f(jnp.asarray(z)))))
    np.testing.assert_allclose(np.asarray(_jax_fn(sys_)(jnp.asarray(z))),
                               np.asarray(_jax_fn(one)(jnp.asarray(z))), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(_jax_fn(sys_))(jnp.asarray(z))),
                               np.asarray(jax.jacfwd(_jax_fn(one))(jnp.asarray(z))),
                               rtol=1e-14)
    v, j, _ = (np.asarray(a) for a in _casadi_fn(sys_, ca.SX)(z))
    v1, j1, _ = (np.asarray(a) for a in _casadi_fn(one, ca.SX)(z))
    np.testing.assert_allclose(v, v1, rtol=1e-14)
    np.testing.assert_allclose(j, j1, rtol=1e-14)
    np.testing.assert_allclose(_pyomo_eval(sys_, z)[0], _pyomo_eval(one, z)[0], rtol=1e-14)
    t = np.linspace(0.0, 60.0, 31)
    a = processtwin.simulate(sys_, None, {"c0.q": 0.5, "c0.c_in": 10.0}, t,
                             rtol=1e-10, atol=1e-12)
    b = processtwin.simulate(one, None, {"q": 0.5, "c_in": 10.0}, t, rtol=1e-10, atol=1e-12)
    got = np.concatenate([np.asarray(a["c0.c"]), np.asarray(a["c1.c"])], axis=-1)
    np.testing.assert_allclose(got, np.asarray(b["c"]), rtol=1e-10, atol=1e-12)
    assert a.data["c0.c"].dims == ("time", "tank") and a.data["c1.c"].dims == ("time",
                                                                               "c1.tank")


def test_system_inside_a_system(rng):
    """A system is a unit of a larger one, its ports addressed as `unit.unit.port`."""
    inner = _series(2, 2)
    outer = System({"first": inner, "last": TankCascade(n_tanks=3)},
                   [("first.c1.outlet", "last.c_in"), ("first.c1.flow", "last.q")],
                   name="outer")
    assert outer.layout.states.names == ("first.c0.c", "first.c1.c", "last.c")
    assert outer.layout.inputs.names == ("first.c0.q", "first.c0.c_in")
    z = np.concatenate([rng.uniform(0.0, 10.0, 7), [0.3, 6.0]])
    np.testing.assert_allclose(np.asarray(_jax_fn(outer)(jnp.asarray(z))),
                               np.asarray(_jax_fn(TankCascade(n_tanks=7))(jnp.asarray(z))),
                               rtol=1e-14)


# ---- toy units for the wiring errors ----------------------------------------------------------
class Gain(Model):
    """A port that follows its input at once (feedthrough), beside a decaying state."""

    gain: float = param(2.0, units="-", doc="port per input")
    State: ClassVar[type] = variables("GainState", x=Var("-", "a decaying state",
                                                         default=1.0))
    Inputs: ClassVar[type] = variables("GainInputs", u=Var("-", "an input", default=0.5,
                                                           kind="disturbance"))
    Ports: ClassVar[type] = variables("GainPorts", y=Var("-", "gain times input",
                                                         kind="port"))
    time_unit: ClassVar[str] = "min"

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        return self.State(x=u.u - x.x)

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        return self.Ports(y=self.gain * u.u)


class ProfileSink(Model):
    """A unit with a vector input (for the shape check)."""

    State: ClassVar[type] = variables("SinkState", m=Var("g", "accumulated mass"))
    Inputs: ClassVar[type] = variables("SinkInputs", c=Var("g/m3", "a profile", shape=3,
                                                           kind="disturbance"))
    time_unit: ClassVar[str] = "min"

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        return self.State(m=ops.sum(u.c))


def test_feedthrough_chain_is_exact():
    """a.y → b.u → b.y → c.u: c's input is 2 · 2 · a's input in one evaluation."""
    sys_ = System({"a": Gain(), "b": Gain(gain=3.0), "c": Gain()},
                  [("b.y", "c.u"), ("a.y", "b.u")], name="chain")
    lay = sys_.layout
    assert lay.inputs.names == ("a.u",)
    x = lay.states.unravel(jnp.array([1.0, 2.0, 3.0]), jax_ops)
    u = lay.inputs.unravel(jnp.array([0.5]), jax_ops)
    f = lay.states.ravel(sys_.rhs(0.0, x, u, jax_ops), jax_ops)
    np.testing.assert_allclose(np.asarray(f), [0.5 - 1.0, 2.0 * 0.5 - 2.0,
                                               3.0 * 2.0 * 0.5 - 3.0], rtol=1e-15)


def _plant_units():
    return {"feed": FeedVessel(), "reactor": Bioreactor()}


@pytest.mark.parametrize(("units", "connections", "match"), [
    ([("feed", FeedVessel()), ("feed", Bioreactor())], [],
     r"duplicate unit name `feed` in system `bad`"),
    ({"feed.tank": FeedVessel()}, [], r"unit name 'feed.tank' must be an identifier"),
    ({"feed": FeedVessel(), "reactor": object()}, [],
     r"unit `reactor` must be a processtwin Model, got object"),
    ({}, [], r"system `bad` needs at least one unit"),
    (_plant_units(), [("feed", "reactor.F")], r"connection end 'feed' must be `unit.variable`"),
    (_plant_units(), [("feeed.outflow", "reactor.F")],
     r"feeed.outflow → reactor.F: no unit `feeed` in system `bad`; did you mean `feed`"),
    (_plant_units(), [("feed.outflow", "reacter.F")],
     r"feed.outflow → reacter.F: no unit `reacter` in system `bad`; did you mean `reactor`"),
    (_plant_units(), [("feed.outflw", "reactor.F")],
     r"feed.outflw → reactor.F: unit `feed` has no port `outflw`; did you mean `outflow`"),
    (_plant_units(), [("reactor.V", "feed.F")],
     r"reactor.V → feed.F: unit `reactor` has no ports"),
    (_plant_units(), [("feed.S_out", "reactor.S_inn")],
     r"feed.S_out → reactor.S_inn: unit `reactor` has no input `S_inn`; did you mean "
     r"`S_in`"),
    (_plant_units(), [("feed.outflow", "reactor.Fin")],
     r"unit `reactor` has no input `Fin`; expected one of `F`, `S_in`"),
    (_plant_units(), [("feed.outflow", "reactor.X")],
     r"unit `reactor` has no input `X`"),  # a state is not an input
    (_plant_units(), [("feed.S_out", "reactor.F")],
     r"feed.S_out → reactor.F: port `S_out` of `feed` is in \[g/L\] but input `F` of "
     r"`reactor` expects \[L/h\]"),
    ({"one": FeedVessel(), "two": FeedVessel(), "reactor": Bioreactor()},
     [("one.outflow", "reactor.F"), ("two.outflow", "reactor.F")],
     r"input `reactor.F` is connected twice \(from `one.outflow` and `two.outflow`\)"),
    ({"tanks": TankCascade(), "sink": ProfileSink()}, [("tanks.outlet", "sink.c")],
     r"tanks.outlet → sink.c: port `outlet` of `tanks` has shape \(\) but input `c` of "
     r"`sink` has \(3,\)"),
    ({"a": Gain(), "b": Gain()}, [("a.y", "b.u"), ("b.y", "a.u")],
     r"algebraic loop in system `bad`: (a.y → b.y → a.y|b.y → a.y → b.y)"),
    ({"a": Gain()}, [("a.y", "a.u")], r"algebraic loop in system `bad`: a.y → a.y"),
    ({"tanks": TankCascade(), "reactor": Bioreactor()}, [],
     r"units of system `bad` have different time units: tanks \[min\], reactor \[h\]"),
    ({"tank": DiscreteTripleTank(), "cart": DoubleIntegrator()}, [],
     r"units of system `bad` mix continuous and discrete time .*tank: dt=1.0, "
     r"cart: continuous"),
])
def test_system_errors_name_unit_and_port(units, connections, match):
    with pytest.raises(ModelError, match=match):
        System(units, connections, name="bad")


def test_connection_must_be_a_pair_of_strings():
    with pytest.raises(ModelError, match=r"a connection is a pair"):
        System(_plant_units(), [("feed.outflow", "reactor.F", "extra")])
    with pytest.raises(ModelError, match=r"a connection is a pair"):
        System(_plant_units(), [("feed.outflow", 3)])
