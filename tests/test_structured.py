"""Structured NLP derivatives (solvers/structured.py) against CasADi's own derivatives of
the fully expanded NLP: the same Hessian of the Lagrangian and constraint Jacobian, to
roundoff, on every kind of transcription — shooting and collocation with several
elements, outputs at collocation points, soft limits, move blocking, rate limits, a free
final time, a discrete-time model, a vector model, the diagnosis's softened NLP — and the
same optimum when solved."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest

from processtwin.models import Bioreactor, DiscreteTripleTank, DoubleIntegrator, TankCascade
from processtwin.solvers import OCP
from processtwin.solvers.structured import constraint_jacobian, lagrangian_hessian


def _bio_shooting() -> OCP:
    ocp = OCP(Bioreactor(), 60.0, 6, controls=("F",), method="shooting", substeps=3)
    ocp.bound_input("F", 0.0, 0.2).constrain("X", upper=3.7)
    ocp.constrain("OUR", upper=20.0)
    return ocp.minimise(mayer=lambda x: -x.P, du_weight={"F": 1.0})


def _bio_collocation() -> OCP:
    ocp = OCP(Bioreactor(), 60.0, 5, controls=("F",), elements=2, control_horizon=3)
    ocp.bound_input("F", 0.0, 0.2, rate=0.05).constrain("X", upper=3.7, soft=10.0)
    ocp.constrain("OUR", upper=20.0).constrain("V", upper=150.0, terminal=True)
    return ocp.minimise(mayer=lambda x: -x.P * x.V,
                        stage=lambda x, u: 0.1 * u.F ** 2 + 1e-3 * x.S ** 2)


def _bio_rectangle() -> OCP:
    ocp = OCP(Bioreactor(), 40.0, 4, controls=("F",), method="shooting", substeps=2)
    ocp.bound_input("F", 0.0, 0.2)
    return ocp.minimise(stage=lambda x, u: -x.P * u.F + x.S ** 2, stage_rule="rectangle")


def _min_time() -> OCP:
    ocp = OCP(DoubleIntegrator(), 3.0, 6, free_time=(0.5, 5.0))
    ocp.bound_input("a", -1.0, 1.0).initial_state(p=1.0, v=0.0)
    ocp.constrain("p", 0.0, 0.0, terminal=True).constrain("v", 0.0, 0.0, terminal=True)
    return ocp.minimise(mayer=lambda x, T: T ** 2 + x.v ** 2,
                        stage=lambda x, u: x.p ** 2 * u.a ** 2)


def _discrete() -> OCP:
    ocp = OCP(DiscreteTripleTank(), 6.0, 6, controls=("q_pump",))
    return ocp.minimise(mayer=lambda x: ca.sumsqr(x.h - 0.3),
                        stage=lambda x, u: ca.sumsqr(x.h) * u.q_pump ** 2)


def _vector() -> OCP:
    ocp = OCP(TankCascade(), 10.0, 5, controls=("q",), method="shooting", substeps=2)
    return ocp.minimise(mayer=lambda x: ca.sumsqr(x.c - 1.0) + ca.sum1(x.c ** 3),
                        du_weight={"q": 0.1})


CASES = {"bioreactor shooting": _bio_shooting, "collocation, soft, blocked": _bio_collocation,
         "rectangle stage rule": _bio_rectangle, "free final time": _min_time,
         "discrete-time": _discrete, "vector states": _vector}


def _reference(nlp_dict: dict) -> tuple:
    S = ca.nlpsol("ref", "ipopt", nlp_dict, {"expand": True, "print_time": False,
                                              "ipopt.print_level": 0, "ipopt.sb": "yes"})
    return S.get_function("nlp_hess_l"), S.get_function("nlp_jac_g")


@pytest.mark.parametrize("soften_all", [False, True], ids=["nlp", "softened"])
@pytest.mark.parametrize("case", list(CASES))
def test_structured_derivatives_equal_the_expanded_ones(case, soften_all) -> None:
    ocp = CASES[case]()
    nlp = ocp.build(soften_all=soften_all)
    H, J = lagrangian_hessian(nlp), constraint_jacobian(nlp)
    assert H is not None and J is not None, "the transcription lost its structure"
    H_ref, J_ref = _reference(nlp.nlp)
    rng = np.random.default_rng(3)
    p = ocp.p_values()
    lo, hi = np.maximum(nlp.lbw, -3.0), np.minimum(nlp.ubw, 3.0)
    for _ in range(3):   # random points inside the bounds, random multipliers
        x = lo + (hi - lo) * rng.uniform(0.05, 0.95, lo.size)
        lam_f, lam_g = rng.normal(), rng.normal(size=nlp.lbg.size)
        a = H(x, p, lam_f, lam_g)
        b = H_ref(x, p, lam_f, lam_g)
        assert a.sparsity().is_triu()
        A, B = np.asarray(ca.densify(a)), np.asarray(ca.densify(b))
        np.testing.assert_allclose(A, B, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(B).max()))
        g1, J1 = J(x, p)
        g0, J0 = J_ref(x, p)
        np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), rtol=1e-12, atol=1e-12)
        J1, J0 = np.asarray(ca.densify(J1)), np.asarray(ca.densify(J0))
        np.testing.assert_allclose(J1, J0, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(J0).max()))


def test_structured_solve_reaches_the_expanded_optimum() -> None:
    """The minimum-time double integrator (T = 2 exactly with |u| ≤ 1 from rest to rest
    over a distance of 1) solved with structured and with expanded derivatives."""
    results = []
    for structured in (True, False):
        ocp = OCP(DoubleIntegrator(), 3.0, 20, method="shooting", substeps=4,
                  free_time=(0.5, 5.0))
        ocp.bound_input("a", -1.0, 1.0).initial_state(p=0.0, v=0.0)
        ocp.constrain("p", 1.0, 1.0, terminal=True).constrain("v", 0.0, 0.0, terminal=True)
        ocp.minimise(time_weight=1.0)
        ocp.structured = structured
        results.append(ocp.solve(tol=1e-10))
    a, b = results
    assert a.success and b.success
    np.testing.assert_allclose(a.objective, 2.0, rtol=1e-6)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-9)
    np.testing.assert_allclose(a.data["a"].values, b.data["a"].values, atol=1e-6)


def test_an_nlp_without_recorded_calls_has_no_structured_derivatives() -> None:
    nlp = _bio_shooting().build()
    nlp.calls = None
    assert lagrangian_hessian(nlp) is None and constraint_jacobian(nlp) is None
