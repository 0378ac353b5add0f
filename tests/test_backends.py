"""One RHS, four backends: JAX, CasADi SX, CasADi MX and Pyomo agree to 1e-12 (values and
Jacobians) at random points, for every registered model."""

import casadi as ca
import jax
import jax.numpy as jnp
import numpy as np
import pyomo.environ as pyo
import pytest
from pyomo.core.expr.calculus.derivatives import Modes, differentiate

from processtwin.models import REGISTRY
from processtwin.ops import casadi_ops, jax_ops, numpy_ops, pyomo_ops

MODELS = list(REGISTRY.values())


def _random_point(cls, rng):
    """States and inputs near their defaults (strictly inside bounds), perturbed params."""
    z = []
    for spec in [*cls.states().values(), *cls.inputs().values()]:
        base = spec.default if spec.default != 0 else 1.0
        z.append(abs(base) * rng.uniform(0.2, 1.8) + 1e-3)
    kw = {}
    for name, info in cls.parameters().items():
        base = info.default if info.default != 0 else 0.05
        kw[name] = base * rng.uniform(0.7, 1.3)
    return np.array(z), cls(**kw)


def _split(model, z):
    ns = len(model.states())
    return model.State(*z[:ns]), model.Inputs(*z[ns:])


def _jax_fn(model):
    def f(z):
        x, u = _split(model, [z[i] for i in range(z.shape[0])])
        return jnp.stack(model.rhs(0.0, x, u, jax_ops))
    return f


def _casadi_fn(model, sym):
    n = len(model.states()) + len(model.inputs())
    z = sym.sym("z", n)
    x, u = _split(model, ca.vertsplit(z))
    f = ca.vertcat(*model.rhs(0.0, x, u, casadi_ops))
    return ca.Function("f", [z], [f, ca.jacobian(f, z)])


def _pyomo_eval(model, zval):
    m = pyo.ConcreteModel()
    m.z = pyo.Var(range(len(zval)), initialize=dict(enumerate(zval)))
    x, u = _split(model, [m.z[i] for i in range(len(zval))])
    exprs = model.rhs(0.0, x, u, pyomo_ops)
    vals = np.array([pyo.value(e) for e in exprs])
    jac = np.array([
        [float(d) for d in differentiate(e, wrt_list=list(m.z.values()),
                                         mode=Modes.reverse_numeric)]
        for e in exprs
    ])
    return vals, jac


@pytest.mark.parametrize("cls", MODELS, ids=[c.name for c in MODELS])
def test_backends_agree(cls, rng):
    for _ in range(5):
        z, model = _random_point(cls, rng)
        f = _jax_fn(model)
        val = np.asarray(f(jnp.asarray(z)))
        jac = np.asarray(jax.jacfwd(f)(jnp.asarray(z)))
        assert np.all(np.isfinite(jac))
        for sym in (ca.SX, ca.MX):
            v, j = _casadi_fn(model, sym)(z)
            np.testing.assert_allclose(np.asarray(v).ravel(), val, rtol=1e-12, atol=1e-300)
            np.testing.assert_allclose(np.asarray(j), jac, rtol=1e-12, atol=1e-15)
        v, j = _pyomo_eval(model, z)
        np.testing.assert_allclose(v, val, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(j, jac, rtol=1e-12, atol=1e-15)
        x, u = _split(model, list(z))
        np.testing.assert_allclose(np.array(model.rhs(0.0, x, u, numpy_ops)), val, rtol=1e-14)


def test_jacobian_is_not_trivially_zero(rng):
    """Guard: the comparison above would pass for constant functions."""
    z, model = _random_point(REGISTRY["bioreactor"], rng)
    jac = np.asarray(jax.jacfwd(_jax_fn(model))(jnp.asarray(z)))
    assert np.count_nonzero(jac) >= 10


def test_ops_smooth_max_close_to_max():
    for a, b in [(1.0, 2.0), (3.0, -1.0), (0.5, 0.5)]:
        for ops in (jax_ops, numpy_ops, casadi_ops):
            got = float(ops.smooth_max(a, b, 1e-6))
            assert abs(got - max(a, b)) <= 0.5e-6 + 1e-15
            got = float(ops.smooth_min(a, b, 1e-6))
            assert abs(got - min(a, b)) <= 0.5e-6 + 1e-15
