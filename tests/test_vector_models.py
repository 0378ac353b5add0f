"""Vector-valued models against independent references.

The tank cascade (a vector state over ``tank``) against the closed-form step response of N
equal first-order lags, a matrix exponential and scipy's Radau; the discrete triple tank
(a ``step`` model) against scipy's matrix exponential and a numpy iteration; every backend's
values and Jacobians against the matrices written out with numpy; and the errors a model
class or a vector variable raises when it is declared wrongly.
"""

from typing import Any, ClassVar

import casadi as ca
import jax
import jax.numpy as jnp
import numpy as np
import pyomo.environ as pyo
import pytest
import scipy.linalg
from pyomo.core.expr.calculus.derivatives import Modes, differentiate
from scipy.integrate import solve_ivp
from scipy.special import gammainc

import processtwin
from processtwin.errors import ModelError
from processtwin.model import Model, Var, dimension, param, variables
from processtwin.models import DiscreteTripleTank, TankCascade
from processtwin.ops import casadi_ops, jax_ops, numpy_ops, pyomo_ops

SIM_TOL = {"rtol": 1e-10, "atol": 1e-12}


# ---- independent references --------------------------------------------------------------
def cascade_matrix(n: int, q: float, V: float, k: float) -> tuple[np.ndarray, np.ndarray]:
    """dc/dt = M c + b c_in of N tanks in series, written out with numpy."""
    a = q / V
    M = -(a + k) * np.eye(n) + a * np.eye(n, k=-1)
    b = np.zeros(n)
    b[0] = a
    return M, b


def cascade_step_response(n: int, q: float, V: float, k: float, c_in: float,
                          t: np.ndarray) -> np.ndarray:
    """Every tank's response to a step in c_in from an empty cascade, (time, n).

    Tank i is i equal first-order lags of pole r = q/V + k and gain (q/V)/r each, so its
    step response is c_in (q/(V r))^i P(i, r t), with P the regularised lower incomplete
    gamma function (for k = 0 the Erlang distribution of Levenspiel's tanks in series)."""
    a = q / V
    r = a + k
    i = np.arange(1, n + 1)
    return c_in * (a / r) ** i * gammainc(i[None, :], r * t[:, None])


def cascade_expm(n, q, V, k, c_in, c0, t):
    """c(t) = exp(M t) c0 + int_0^t exp(M s) ds b c_in via the block exponential."""
    M, b = cascade_matrix(n, q, V, k)
    block = np.zeros((n + 1, n + 1))
    block[:n, :n] = M
    block[:n, n] = b * c_in
    out = []
    for ti in t:
        E = scipy.linalg.expm(block * ti)
        out.append(E[:n, :n] @ c0 + E[:n, n])
    return np.array(out)


# ---- tank cascade: layout and backends ----------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 50])
def test_cascade_layout(n):
    model = TankCascade(n_tanks=n)
    lay = model.layout
    (c,) = lay.states.leaves
    assert (c.name, c.shape, c.dim, c.start, c.size) == ("c", (n,), "tank", 0, n)
    assert lay.states.size == n and lay.inputs.names == ("q", "c_in")
    assert [(lf.name, lf.shape) for lf in lay.outputs.leaves] == [("c_out", ()),
                                                                ("c_meas", (n,))]
    assert lay.outputs.size == n + 1 and lay.ports.names == ("outlet", "flow")
    assert dict(lay.dims) == {"tank": n}
    assert lay.states.flat_names()[-1] == f"c[{n - 1}]"
    np.testing.assert_array_equal(lay.states.defaults(), np.zeros(n))
    x = model.state(c=np.arange(n, dtype=float))
    np.testing.assert_array_equal(x.c, np.arange(n, dtype=float))


def test_cascade_state_vector_checked():
    model = TankCascade(n_tanks=3)
    with pytest.raises(ModelError, match=r"state `c` .* needs 3 values over `tank`, got 2"):
        model.state(c=[1.0, 2.0])
    with pytest.raises(ModelError, match=r"state `c` must be ≥ 0"):
        model.state(c=[1.0, -2.0, 0.0])
    np.testing.assert_array_equal(model.state(c=4.0).c, [4.0, 4.0, 4.0])  # broadcast


def _cascade_point(n, rng):
    q, V, k = rng.uniform(0.2, 1.0), rng.uniform(1.0, 3.0), rng.uniform(0.0, 0.05)
    c = rng.uniform(0.0, 20.0, n)
    c_in = rng.uniform(1.0, 20.0)
    return TankCascade(V=V, k=k, n_tanks=n), q, V, k, c, c_in


@pytest.mark.parametrize("n", [1, 3, 50])
def test_cascade_backends_match_numpy(n, rng):
    """rhs, outputs and ports in every backend equal the written-out matrices; the
    Jacobian with respect to (c, q, c_in) is [M, (shift(c) - c)/V, b]."""
    model, q, V, k, c, c_in = _cascade_point(n, rng)
    lay = model.layout
    M, b = cascade_matrix(n, q, V, k)
    upstream = np.concatenate([[c_in], c[:-1]])
    f_ref = M @ c + b * c_in
    jac_ref = np.column_stack([M, (upstream - c) / V, b])
    y_ref = np.concatenate([[c[-1]], c])
    z = np.concatenate([c, [q, c_in]])

    def split(vec, ops):
        return lay.states.unravel(vec[:n], ops), lay.inputs.unravel(vec[n:], ops)

    def f_jax(zz):
        x, u = split(zz, jax_ops)
        return lay.states.ravel(model.rhs(0.0, x, u, jax_ops), jax_ops)

    np.testing.assert_allclose(np.asarray(f_jax(jnp.asarray(z))), f_ref, rtol=1e-13,
                               atol=1e-13)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(f_jax)(jnp.asarray(z))), jac_ref,
                               rtol=1e-13, atol=1e-15)
    x, u = split(z, numpy_ops)
    np.testing.assert_allclose(lay.states.ravel(model.rhs(0.0, x, u, numpy_ops), numpy_ops),
                               f_ref, rtol=1e-13, atol=1e-13)
    y = lay.outputs.ravel(model.measure(0.0, *split(jnp.asarray(z), jax_ops), jax_ops),
                          jax_ops)
    np.testing.assert_array_equal(np.asarray(y), y_ref)
    p = lay.ports.ravel(model.ports(0.0, *split(jnp.asarray(z), jax_ops), jax_ops), jax_ops)
    np.testing.assert_array_equal(np.asarray(p), [c[-1], q])
    for sym in (ca.SX, ca.MX):
        zs = sym.sym("z", n + 2)
        x, u = split(zs, casadi_ops)
        f = lay.states.ravel(model.rhs(0.0, x, u, casadi_ops), casadi_ops)
        yo = lay.outputs.ravel(model.measure(0.0, x, u, casadi_ops), casadi_ops)
        fn = ca.Function("f", [zs], [f, ca.jacobian(f, zs), yo])
        v, j, yv = (np.asarray(a) for a in fn(z))
        np.testing.assert_allclose(v.ravel(), f_ref, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(j, jac_ref, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(yv.ravel(), y_ref)
    m = pyo.ConcreteModel()
    m.z = pyo.Var(range(n + 2), initialize=dict(enumerate(z)))
    zv = [m.z[i] for i in range(n + 2)]
    x, u = split(zv, pyomo_ops)
    exprs = lay.states.ravel(model.rhs(0.0, x, u, pyomo_ops), pyomo_ops)
    np.testing.assert_allclose([pyo.value(e) for e in exprs], f_ref, rtol=1e-13, atol=1e-13)
    jac = [[float(d) for d in differentiate(e, wrt_list=zv, mode=Modes.reverse_numeric)]
           for e in exprs]
    np.testing.assert_allclose(np.array(jac), jac_ref, rtol=1e-13, atol=1e-15)
    yo = lay.outputs.ravel(model.measure(0.0, x, u, pyomo_ops), pyomo_ops)
    np.testing.assert_array_equal([pyo.value(e) for e in yo], y_ref)


def test_cascade_casadi_keeps_sparsity():
    """Each tank sees only itself, its upstream neighbour and the inputs: the Jacobian is
    lower bidiagonal in c (not dense) when built as CasADi SX."""
    n = 6
    model = TankCascade(n_tanks=n)
    lay = model.layout
    xs, us = ca.SX.sym("x", n), ca.SX.sym("u", 2)
    f = lay.states.ravel(model.rhs(0.0, lay.states.unravel(xs, casadi_ops),
                                   lay.inputs.unravel(us, casadi_ops), casadi_ops), casadi_ops)
    assert ca.jacobian(f, xs).nnz() == 2 * n - 1


# ---- tank cascade: simulation --------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 50])
def test_cascade_step_response_matches_closed_form(n):
    q, V, k, c_in = 0.5, 2.0, 0.01, 10.0
    model = TankCascade(V=V, k=k, n_tanks=n)
    t = np.linspace(0.0, 8.0 * n * V / q, 81)  # eight mean residence times
    res = processtwin.simulate(model, {"c": np.zeros(n)}, {"q": q, "c_in": c_in}, t,
                               **SIM_TOL)
    c = np.asarray(res["c"])
    assert c.shape == (t.size, n)
    ref = cascade_step_response(n, q, V, k, c_in, t)
    np.testing.assert_allclose(c, ref, rtol=0, atol=1e-8 * c_in)
    np.testing.assert_allclose(ref, cascade_expm(n, q, V, k, c_in, np.zeros(n), t),
                               rtol=0, atol=1e-12 * c_in)  # the two references agree
    # the outlet approaches Levenspiel's steady state of N first-order tanks
    assert abs(c[-1, -1] - c_in / (1.0 + k * V / q) ** n) < 1e-3 * c_in
    # the Dataset: a vector over `tank`, the outputs noise-free copies of the state
    ds = res.data
    assert ds["c"].dims == ("time", "tank") and ds["c"].attrs["units"] == "g/m3"
    assert ds.sizes["tank"] == n
    np.testing.assert_array_equal(ds["c_meas"].values, c)
    np.testing.assert_array_equal(ds["c_out"].values, c[:, -1])


def test_cascade_ensemble_matches_closed_form():
    """Scenarios of flow and volume, integrated as one batch: each its own step response."""
    n, k, c_in = 4, 0.01, 10.0
    q, V = np.array([0.3, 0.5, 0.8]), np.array([2.0, 1.0, 3.0])
    t = np.linspace(0.0, 120.0, 41)
    res = processtwin.ensemble(TankCascade(k=k, n_tanks=n), None, {"q": q, "c_in": c_in}, t,
                               params={"V": V}, **SIM_TOL)
    c = np.asarray(res["c"])
    assert c.shape == (3, t.size, n) and res.data["c"].dims == ("scenario", "time", "tank")
    for i in range(3):
        np.testing.assert_allclose(c[i], cascade_step_response(n, q[i], V[i], k, c_in, t),
                                   rtol=0, atol=1e-8 * c_in)


@pytest.mark.parametrize("n", [1, 3, 50])
def test_cascade_matches_radau(n, rng):
    """A nonzero initial profile and a step in c_in half-way: against scipy's Radau on the
    same equations written with numpy."""
    q, V, k = 0.4, 1.5, 0.02
    model = TankCascade(V=V, k=k, n_tanks=n)
    c0 = rng.uniform(0.0, 5.0, n)
    t_switch, t_end = 20.0, 4.0 * n * V / q + 20.0
    t = np.linspace(0.0, t_end, 61)
    t = np.union1d(t, [t_switch])
    res = processtwin.simulate(model, {"c": c0},
                               {"q": q, "c_in": processtwin.hold([0.0, t_switch], [8.0, 2.0])},
                               t, **SIM_TOL)
    M, b = cascade_matrix(n, q, V, k)
    ref = []
    y = c0
    for lo, hi, cin in ((0.0, t_switch, 8.0), (t_switch, t_end, 2.0)):
        sel = t[(t >= lo) & (t <= hi)]
        sol = solve_ivp(lambda _t, c, cin=cin: M @ c + b * cin, (lo, hi), y, method="Radau",
                        t_eval=sel, rtol=1e-12, atol=1e-14, jac=lambda _t, _c: M)
        ref.append(sol.y.T if lo == 0.0 else sol.y.T[1:])
        y = sol.y[:, -1]
    ref = np.concatenate(ref)
    np.testing.assert_allclose(np.asarray(res["c"]), ref, rtol=0, atol=1e-8 * 8.0)
    np.testing.assert_allclose(ref, np.concatenate([
        cascade_expm(n, q, V, k, 8.0, c0, t[t <= t_switch]),
        cascade_expm(n, q, V, k, 2.0, ref[t == t_switch][0], t[t > t_switch] - t_switch)]),
        rtol=0, atol=1e-9)


# ---- discrete triple tank -----------------------------------------------------------------
def triple_tank_reference() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Continuous and zero-order-hold matrices from the physics, with numpy and scipy."""
    area, levels, q = 0.0154, np.array([0.5, 0.35, 0.2]), 0.1e-3  # [m2], [m], [m3/s]
    g = q / (2.0 * levels * area)  # d(outflow)/dh / area [1/s]
    Ac = np.diag(-g) + np.diag(g[:2], k=-1)
    Bc = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]) * 1e-3 / area  # per L/s
    block = np.zeros((5, 5))  # Van Loan (1978): exp([[A, B], [0, 0]] T) = [[Ad, Bd], [0, I]]
    block[:3, :3], block[:3, 3:] = Ac, Bc
    E = scipy.linalg.expm(block * 1.0)
    Ad, Bd = E[:3, :3], E[:3, 3:]
    # A_c is invertible: Bd = A_c^-1 (Ad - I) B_c (looser: Ad - I cancels digits)
    np.testing.assert_allclose(Bd, np.linalg.solve(Ac, (Ad - np.eye(3)) @ Bc), rtol=1e-8)
    return Ac, Bc, Ad, Bd


def test_triple_tank_matrices_are_exact_zoh():
    Ac, Bc, Ad, Bd = triple_tank_reference()
    np.testing.assert_allclose(np.array(DiscreteTripleTank.A_C), Ac, rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.array(DiscreteTripleTank.B_C), Bc, rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.array(DiscreteTripleTank.A), Ad, rtol=1e-13, atol=1e-17)
    np.testing.assert_allclose(np.array(DiscreteTripleTank.B), Bd, rtol=1e-12, atol=1e-18)


def test_triple_tank_contract():
    model = DiscreteTripleTank()
    assert model.is_discrete and model.sample_time == 1.0 and model.time_unit == "s"
    lay = model.layout
    (h,) = lay.states.leaves
    assert (h.shape, h.dim) == ((3,), "tank")
    np.testing.assert_array_equal(lay.states.defaults(), [0.5, 0.35, 0.2])
    np.testing.assert_array_equal(lay.inputs.defaults(), [0.1, 0.0])


def test_triple_tank_backends_match_numpy(rng):
    """step in every backend is h0 + A (h - h0) + B (u - u0); its Jacobian is [A, B]."""
    _, _, Ad, Bd = triple_tank_reference()
    model = DiscreteTripleTank()
    lay = model.layout
    h0, u0 = np.array([0.5, 0.35, 0.2]), np.array([0.1, 0.0])
    z = np.concatenate([rng.uniform(0.1, 0.6, 3), rng.uniform(0.0, 0.2, 2)])
    ref = h0 + Ad @ (z[:3] - h0) + Bd @ (z[3:] - u0)
    jac_ref = np.hstack([Ad, Bd])

    def split(vec, ops):
        return lay.states.unravel(vec[:3], ops), lay.inputs.unravel(vec[3:], ops)

    def f_jax(zz):
        return lay.states.ravel(model.step(0.0, *split(zz, jax_ops), 1.0, jax_ops), jax_ops)

    np.testing.assert_allclose(np.asarray(f_jax(jnp.asarray(z))), ref, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(f_jax)(jnp.asarray(z))), jac_ref,
                               rtol=1e-13, atol=1e-18)
    out = model.step(0.0, *split(z, numpy_ops), 1.0, numpy_ops)
    np.testing.assert_allclose(lay.states.ravel(out, numpy_ops), ref, rtol=1e-14)
    for sym in (ca.SX, ca.MX):
        zs = sym.sym("z", 5)
        f = lay.states.ravel(model.step(0.0, *split(zs, casadi_ops), 1.0, casadi_ops),
                             casadi_ops)
        v, j = (np.asarray(a) for a in ca.Function("f", [zs], [f, ca.jacobian(f, zs)])(z))
        np.testing.assert_allclose(v.ravel(), ref, rtol=1e-14, err_msg=sym.__name__)
        np.testing.assert_allclose(j, jac_ref, rtol=1e-13, atol=1e-18, err_msg=sym.__name__)
    m = pyo.ConcreteModel()
    m.z = pyo.Var(range(5), initialize=dict(enumerate(z)))
    zv = [m.z[i] for i in range(5)]
    exprs = lay.states.ravel(model.step(0.0, *split(zv, pyomo_ops), 1.0, pyomo_ops),
                             pyomo_ops)
    np.testing.assert_allclose([pyo.value(e) for e in exprs], ref, rtol=1e-14)


def test_triple_tank_simulation_equals_iteration():
    """Five minutes at 1 s with a pump step at 100 s and a constant disturbance inflow."""
    _, _, Ad, Bd = triple_tank_reference()
    model = DiscreteTripleTank()
    t = np.arange(301.0)
    pump = processtwin.hold([0.0, 99.5], [0.1, 0.15])  # switches between samples 99, 100
    x0 = np.array([0.45, 0.36, 0.21])
    res = processtwin.simulate(model, {"h": x0}, {"q_pump": pump, "q_dist": 0.02}, t)
    h0, u0 = np.array([0.5, 0.35, 0.2]), np.array([0.1, 0.0])
    ref = [x0]
    for tk in t[:-1]:
        u = np.array([0.1 if tk < 99.5 else 0.15, 0.02])
        ref.append(h0 + Ad @ (ref[-1] - h0) + Bd @ (u - u0))
    np.testing.assert_allclose(np.asarray(res["h"]), np.array(ref), rtol=1e-12, atol=1e-14)
    assert res.data["h"].dims == ("time", "tank")


# ---- declaration errors -------------------------------------------------------------------
_S = variables("S", x=Var("m", "a state"))
_U = variables("U", u=Var("m/s", "an input", kind="manipulated"))
_Y = variables("Y", y=Var("m", "a sensor", kind="online"))
_P = variables("P", p=Var("m", "a port", kind="port"))


def _rhs(self, t, x, u, ops):
    return _S(x=-x.x)


@pytest.mark.parametrize(("body", "match"), [
    ({"time_unit": "s", "rhs": _rhs}, r"`Broken` is missing `State`"),
    ({"State": _S, "rhs": _rhs}, r"`Broken` is missing `time_unit`"),
    ({"State": _S, "time_unit": "s"}, r"`Broken` is missing `rhs \(or step\)`"),
    ({"State": _S, "time_unit": "hours", "rhs": _rhs},
     r"`time_unit` of `Broken` must be one of s, min, h, d, got 'hours'"),
    ({"State": _S, "Outputs": _Y, "time_unit": "s", "rhs": _rhs},
     r"`Broken` declares outputs but no `measure`"),
    ({"State": _S, "Ports": _P, "time_unit": "s", "rhs": _rhs},
     r"`Broken` declares ports but no `ports`"),
    ({"State": _S, "time_unit": "s", "step": lambda self, t, x, u, dt, ops: x},
     r"discrete-time model `Broken` needs a `sample_time` \[s\]"),
    ({"State": variables("E"), "time_unit": "s", "rhs": _rhs},
     r"`State` of `Broken` needs at least one variable"),
    ({"State": (("x", 1.0),), "time_unit": "s", "rhs": _rhs},
     r"`State` of `Broken` must be made by `variables\(...\)`"),
])
def test_model_class_errors(body, match):
    with pytest.raises(ModelError, match=match):
        type("Broken", (Model,), {"__annotations__": {}, **body})


def test_model_class_error_lists_every_missing_piece():
    with pytest.raises(ModelError, match=r"missing `State`, `time_unit`, `rhs \(or step\)`"):
        type("Broken", (Model,), {"__annotations__": {}})


def test_abstract_model_is_not_checked():
    type("AbstractThing", (Model,), {"__annotations__": {}})  # no error


class _Rod(Model):
    """A rod's cell temperatures relaxing to an ambient one (a vector-shape fixture)."""

    tau: float = param(2.0, units="s", bounds=(0.0, None), strict=True, doc="time constant")
    n_cells: int = dimension(4, doc="number of cells")
    State: ClassVar[type] = variables("RodState", T=Var("K", "cell temperature",
                                                        default=300.0, shape="n_cells"))
    Inputs: ClassVar[type] = variables("RodInputs", T_amb=Var("K", "ambient temperature",
                                                              default=290.0,
                                                              kind="disturbance"))
    time_unit: ClassVar[str] = "s"

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        return self.State(T=(u.T_amb - x.T) / self.tau)


def test_dimension_field_sizes_and_names_the_vector():
    rod = _Rod(n_cells=7)
    (T,) = rod.layout.states.leaves
    assert (T.shape, T.dim) == ((7,), "cell")
    assert rod.name == "_rod"
    assert _Rod().layout.states.size == 4  # a layout per structure


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_dimension_default_must_be_positive_int(bad):
    with pytest.raises(ModelError, match=r"a dimension must be a positive int"):
        dimension(bad)


def test_vector_sized_by_unknown_field():
    class Typo(Model):
        n_cells: int = dimension(3)
        State: ClassVar[type] = variables("TypoState", T=Var("K", "temperature",
                                                              shape="n_cell"))
        time_unit: ClassVar[str] = "s"

        def rhs(self, t, x, u, ops):
            return self.State(T=-x.T)

    with pytest.raises(ModelError, match=r"state `T` of `typo` is sized by `n_cell`, which is "
                                         r"not a field of the model; did you mean `n_cells`"):
        Typo().layout  # noqa: B018


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_var_shape_must_be_positive(bad):
    with pytest.raises(ModelError, match=r"`shape` must be a positive int"):
        Var("m", "x", shape=bad)
