"""The sparse Rosenbrock solver (``solver="rodas"``): its coefficients, its sparse LU, and
its solutions against exact solutions and scipy's Radau at tight tolerance."""

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import processtwin as pt
from processtwin import _rosenbrock as R
from processtwin.errors import ConfigError, ModelError
from processtwin.model import Model, Var, param, variables
from processtwin.models import Bioreactor, Pipe, district_heating
from processtwin.ops import jax_ops
from processtwin.signals import as_inputs


def test_rodasp_coefficients_meet_the_order_conditions():
    """Order 4 (the eight conditions of Hairer & Wanner, Table VI.7.1) and order 3 for the
    embedded solution; stiffly accurate (the last stage is the solution)."""
    a, beta, g = R.RODASP["alpha"], R.RODASP["beta"], float(R.RODASP["gamma"])
    al, B = a.sum(axis=1), np.tril(beta, -1)
    bp = B.sum(axis=1)

    def conditions(b):
        return [b.sum() - 1, b @ bp - (0.5 - g), b @ al**2 - 1 / 3,
                b @ B @ bp - (1 / 6 - g + g * g), b @ al**3 - 1 / 4,
                b @ (al * (a @ bp)) - (1 / 8 - g / 3), b @ B @ al**2 - (1 / 12 - g / 3),
                b @ B @ B @ bp - (1 / 24 - g / 2 + 1.5 * g * g - g**3)]

    np.testing.assert_allclose(conditions(R.RODASP["b"]), 0.0, atol=1e-14)
    np.testing.assert_allclose(conditions(R.RODASP["b_hat"])[:4], 0.0, atol=1e-14)
    assert abs(conditions(R.RODASP["b_hat"])[4]) > 1e-3  # the embedded one is order 3
    np.testing.assert_allclose(R.RODASP["b"][:5], beta[5, :5])  # stiffly accurate


def _random_pattern(rng, n, density):
    a = rng.random((n, n)) < density
    np.fill_diagonal(a, False)
    return np.nonzero(a)


def _chains(n_chain, length):
    """Parallel upwind chains (many narrow levels: chains and blocks mixed)."""
    rows, cols = [], []
    for c in range(n_chain):
        for i in range(1, length):
            rows.append(c * length + i)
            cols.append(c * length + i - 1)
        rows.append(c * length)
        cols.append(((c + 1) % n_chain) * length + length - 1)  # loop back
    return np.asarray(rows), np.asarray(cols)


def _patterns():
    rng = np.random.default_rng(4)
    pipe = R.model_sparsity(Pipe(n_cells=40))
    dh = R.model_sparsity(district_heating())
    return {"pipe": (pipe.n, pipe.rows, pipe.cols), "district": (dh.n, dh.rows, dh.cols),
            "random": (80, *_random_pattern(rng, 80, 0.04)), "chains": (150, *_chains(3, 50))}


@pytest.mark.parametrize("name", ["pipe", "district", "random", "chains"])
def test_sparse_lu_solves_like_a_dense_solver(name):
    n, rows, cols = _patterns()[name]
    sp = R.analyse(n, rows, cols)
    # every pivot factored once, every row solved once in each sweep
    for plan in (sp.factor_plan, sp.forward_plan, sp.backward_plan):
        done = np.concatenate([d["items"] for _, d in plan])
        assert sorted(done.tolist()) == list(range(n))
    rng = np.random.default_rng(7)
    a = np.zeros((n, n))
    a[rows, cols] = rng.normal(size=rows.size)
    a += np.diag(np.abs(a).sum(axis=1) + 0.5 + rng.random(n))  # as I/(hγ) − J can be
    off = rows != cols
    vals = (jnp.zeros(sp.size).at[sp.entry_slot[off]].add(a[rows[off], cols[off]])
            .at[sp.diag_slot].add(np.diag(a)[sp.perm]))
    lu = jax.jit(lambda v: R.lu_factor(sp, v))(vals)
    b = rng.normal(size=n)
    x = np.asarray(jax.jit(lambda lu, b: R.lu_solve(sp, lu, b))(lu, jnp.asarray(b)))
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-12, atol=1e-13)


def test_pipe_pattern_is_cheap_to_differentiate_and_factor():
    """A 200-cell pipe: 3 colours (jvps) for 400 states, and no fill."""
    sp = R.model_sparsity(Pipe(n_cells=200))
    assert sp.n == 400 and sp.n_colours == 3 and sp.fill == 0 and not sp.dense


RelaxState = variables("RelaxState", y=Var("1", "relaxing quantity", default=1.0))


class Relax(Model):
    """Prothero–Robinson: ``dy/dt = −λ (y − g(t)) + g'(t)``, ``g = exp(−t/τ)``; exact
    solution ``y = g`` from ``y(0) = 1``; stiff for large λ and non-autonomous."""

    lam: float = param(1e6, units="1/s", bounds=(0.0, None), doc="relaxation rate")
    tau: float = param(3.0, units="s", bounds=(0.0, None), doc="time constant of g")
    State: ClassVar[type] = RelaxState
    time_unit: ClassVar[str] = "s"

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        g = ops.exp(-t / self.tau)
        return RelaxState(y=-self.lam * (x.y - g) - g / self.tau)


def test_stiff_non_autonomous_problem_is_solved_in_few_steps_to_its_exact_solution():
    t = np.linspace(0.0, 10.0, 21)
    res = pt.simulate(Relax(), None, None, t, solver="rodas", rtol=1e-7, atol=1e-10)
    y = np.asarray(res.states[0])[:, 0]
    np.testing.assert_allclose(y, np.exp(-t / 3.0), rtol=1e-7, atol=1e-10)
    assert res.stats["num_steps"] < 150  # an explicit method needs ~ λ·10 s / 3 = 3e6


def _pipe_case(n_cells=20):
    model = Pipe(n_cells=n_cells)
    sw = np.arange(0.0, 4 * 3600.0, 1800.0)
    flow = np.array([2.0, 4.0, 1.0, 5.0, 3.0, 2.5, 6.0, 1.5])
    th = np.array([0.0, 7200.0, 14400.0])
    tin = np.array([70.0, 80.0, 65.0])
    inputs = {"m_dot": pt.hold(sw, flow), "T_in": pt.linear(th, tin), "T_amb": 8.0}
    x0 = np.r_[np.full(n_cells, 60.0), np.full(n_cells, 55.0)]
    t = np.arange(0.0, 4 * 3600.0 + 1.0, 600.0)
    return model, inputs, x0, t, sw


def _radau(model, inputs, x0, t, switches):
    """scipy Radau at rtol 1e-12 with the exact Jacobian (jax), restarted at each switch,
    the held inputs at their value on the segment (Radau's last stage is at its end)."""
    lay = model.layout
    sigs = jax.tree.map(jnp.asarray, as_inputs(model, inputs))

    def f(tt, y, mid):
        u = lay.inputs.from_leaves([s(mid) if s.interpolation == "hold" else s(tt)
                                    for s in sigs])
        return lay.states.ravel(model.rhs(tt, lay.states.unravel(y, jax_ops), u, jax_ops),
                                jax_ops)

    f_jit = jax.jit(f)
    jac = jax.jit(jax.jacfwd(f, argnums=1))
    edges = np.unique(np.r_[switches, t[-1]])
    y, out = np.asarray(x0, float), [np.asarray(x0, float)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        mid = 0.5 * (a + b)
        te = t[(t > a) & (t <= b)]
        sol = solve_ivp(lambda tt, yy, mid=mid: np.asarray(f_jit(tt, yy, mid)), (a, b), y,
                        method="Radau", rtol=1e-12, atol=1e-12, t_eval=np.union1d(te, [b]),
                        jac=lambda tt, yy, mid=mid: np.asarray(jac(tt, yy, mid)))
        assert sol.success, sol.message
        out.extend(sol.y[:, np.isin(sol.t, te)].T)
        y = sol.y[:, -1]
    return np.asarray(out)


@pytest.fixture(scope="module")
def pipe_reference():
    model, inputs, x0, t, sw = _pipe_case()
    return model, inputs, x0, t, _radau(model, inputs, x0, t, sw)


def test_pipe_matches_scipy_radau_and_error_falls_with_the_tolerance(pipe_reference):
    model, inputs, x0, t, ref = pipe_reference
    errs = []
    for tol in (1e-5, 1e-7, 1e-9):
        res = pt.simulate(model, x0, inputs, t, solver="rodas", rtol=tol, atol=tol)
        errs.append(float(np.abs(np.asarray(res.states[0]) - ref).max()))
    assert errs[-1] < 1e-6, errs  # K, at rtol 1e-9
    assert errs[0] > 10 * errs[1] > 100 * errs[2], errs  # ~ tolerance proportional


def test_district_heating_matches_the_dense_implicit_solver():
    """The composed district-heating twin (91 states, hourly switches) against diffrax's
    Kvaerno5 with a dense Jacobian, both tight."""
    model = district_heating()
    sw = np.arange(0.0, 6 * 3600.0, 3600.0)
    inputs = {"plant.y": pt.hold(sw, [0.7, 0.5, 0.9, 0.4, 0.6, 0.8]), "plant.m_w": 0.8,
              "emitters.m_w": pt.hold(sw, np.tile([0.08, 0.03, 0.06, 0.02, 0.05, 0.07],
                                                  (3, 1))),
              "building.T_out": pt.linear([0.0, 6 * 3600.0], [-4.0, 2.0]),
              "plant.T_src": pt.linear([0.0, 6 * 3600.0], [-4.0, 2.0])}
    t = np.arange(0.0, 6 * 3600.0 + 1.0, 900.0)
    a = pt.simulate(model, None, inputs, t, solver="rodas", rtol=1e-9, atol=1e-9)
    b = pt.simulate(model, None, inputs, t, solver="kvaerno5", rtol=1e-9, atol=1e-9)
    T = [not n.endswith("R_f") for n in model.layout.states.flat_names()]
    err = np.abs(np.asarray(a.states[0]) - np.asarray(b.states[0]))[:, T].max()
    assert err < 1e-5, err  # K
    assert a.stats["num_steps"] < b.stats["num_steps"] * 2


def test_ensemble_members_equal_their_own_runs():
    """Each member takes its own steps (a vmapped loop): equal to its own run up to the
    roundoff of batched linear algebra (1e-11 here, 1000× inside the tolerance)."""
    model = Bioreactor()
    t = np.linspace(0.0, 40.0, 41)
    feed = pt.hold(np.linspace(0.0, 40.0, 11), np.linspace(0.0, 0.15, 11))
    mus = np.array([0.018, 0.02, 0.022])
    ens = pt.ensemble(model, None, {"F": feed}, t, params={"mu_max": mus}, solver="rodas",
                      rtol=1e-8, atol=1e-10)
    for k, mu in enumerate(mus):
        one = pt.simulate(model.replace(mu_max=mu), None, {"F": feed}, t, solver="rodas",
                          rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(np.asarray(ens.states[k]), np.asarray(one.states[0]),
                                   rtol=1e-10, atol=1e-10)
    tight = pt.simulate(model.replace(mu_max=0.02), None, {"F": feed}, t, rtol=1e-11,
                        atol=1e-12)
    np.testing.assert_allclose(np.asarray(ens.states[1]), np.asarray(tight.states[0]),
                               rtol=1e-6, atol=1e-7)


def test_rodas_refuses_fixed_steps_gradients_and_untraceable_models():
    with pytest.raises(ConfigError, match="chooses its own steps"):
        pt.simulate(Relax(), None, None, [0.0, 1.0], solver="rodas", dt=0.1)
    with pytest.raises(ConfigError, match="not a differentiation path"):
        pt.trajectory(Relax(), {"y": 1.0}, None, jnp.asarray([0.0, 1.0]), solver="rodas")

    class JaxOnly(Relax):
        def rhs(self, t, x, u, ops):
            return RelaxState(y=-jnp.tanh(x.y))  # jax.numpy, not ops: CasADi cannot trace

    with pytest.raises(ModelError, match="CasADi"):
        pt.simulate(JaxOnly(), None, None, [0.0, 1.0], solver="rodas")
