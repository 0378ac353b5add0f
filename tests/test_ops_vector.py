"""Vector operations mean the same in every backend (NumPy is the reference)."""

import casadi as ca
import jax.numpy as jnp
import numpy as np
import pyomo.environ as pyo
import pytest

from processtwin.ops import PyomoVector, casadi_ops, jax_ops, numpy_ops, pyomo_ops

X = np.array([1.5, -2.0, 0.25, 4.0])
A = np.array([[0.0, 2.0, 0.0, -1.0], [3.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 7.0]])

CASES = {
    "shift+1": lambda o, x: o.shift(x, 1, 9.0),
    "shift-2": lambda o, x: o.shift(x, -2, -1.0),
    "matvec": lambda o, x: o.matvec(A, x),
    "sum": lambda o, x: o.sum(x),
    "dot": lambda o, x: o.dot(x, x * 2.0),
    "concat": lambda o, x: o.concat([o.index(x, 0), x, 3.0]),
    "full": lambda o, x: o.full(3, o.index(x, -1)) * x[:3],
    "upwind": lambda o, x: 0.5 * (o.shift(x, 1, 10.0) - x) - 0.01 * x,
    "elementwise": lambda o, x: o.exp(x * 0.1) + o.where(o.gt(x, 0.0), x, -x),
}


def _eval(ops, case):
    f = CASES[case]
    if ops is numpy_ops:
        return np.atleast_1d(f(ops, X))
    if ops is jax_ops:
        return np.atleast_1d(np.asarray(f(ops, jnp.asarray(X))))
    if ops is casadi_ops:
        xs = ca.SX.sym("x", 4)
        return np.asarray(ca.Function("f", [xs], [f(ops, xs)])(X)).ravel()
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(4), initialize=dict(enumerate(X)))
    out = f(ops, PyomoVector([m.x[i] for i in range(4)]))
    items = list(out) if isinstance(out, PyomoVector) else [out]
    return np.array([pyo.value(e) for e in items])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ops", [jax_ops, casadi_ops, pyomo_ops], ids=["jax", "casadi", "pyomo"])
def test_vector_ops_agree_with_numpy(ops, case):
    np.testing.assert_allclose(_eval(ops, case), _eval(numpy_ops, case), rtol=1e-14, atol=0)


def test_matvec_keeps_structural_zeros_in_casadi():
    xs = ca.SX.sym("x", 4)
    jac = ca.jacobian(casadi_ops.matvec(A, xs), xs)
    assert jac.nnz() == np.count_nonzero(A)


def test_shift_of_a_single_cell_is_the_boundary():
    for ops in (numpy_ops, jax_ops):
        np.testing.assert_array_equal(ops.shift(np.array([5.0]), 1, 2.0), [2.0])
        np.testing.assert_array_equal(ops.shift(X, -4, 2.0), np.full(4, 2.0))
    xs = ca.SX.sym("x", 1)
    assert float(ca.Function("f", [xs], [casadi_ops.shift(xs, 1, 2.0)])(7.0)) == 2.0


def test_matvec_rejects_bad_shapes():
    with pytest.raises(ValueError, match="matvec"):
        numpy_ops.matvec(A.T, X)
