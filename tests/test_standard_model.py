"""The standard model test: every model of the registry through the same checks.

Each case (every entry of :data:`processtwin.models.REGISTRY`, the tank cascade also at 1
and 50 tanks, and the composed ``fed_batch_plant``) is built once per module and goes
through:

a. the step function (``rhs``, or ``step`` of a discrete-time model), ``measure`` and
   ``ports`` give the same values and Jacobians in JAX (``jax.jacfwd``), NumPy, CasADi SX
   and MX (``ca.jacobian``) and Pyomo (reverse-mode symbolic differentiation), rtol 1e-12;
b. ``simulate`` against scipy's Radau on the rhs written with NumPy (a plain NumPy loop of
   ``step`` for discrete-time models);
c. an ensemble of three scenarios against three separate ``simulate`` calls;
d. the gradient of a scalar outcome of ``trajectory`` against central differences of
   ``simulate``, with respect to a parameter and to an initial state;
e. one EKF and one UKF pass over two samples: finite estimates, symmetric PD covariance;
f. the OCP over the manipulated inputs (and with ``controls=()``) builds an NLP whose
   constraint Jacobian is finite, and IPOPT solves it;
g. a result saved with ``processtwin.save`` loads back identical, vector dimensions with
   their coordinates and dotted names of systems included.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import casadi as ca
import jax
import jax.numpy as jnp
import numpy as np
import pyomo.environ as pyo
import pytest
import xarray as xr
from pyomo.core.expr.calculus.derivatives import Modes, differentiate
from scipy.integrate import solve_ivp

import processtwin
from processtwin.dataset import measurements
from processtwin.estimate import ExtendedKalmanFilter, UnscentedKalmanFilter
from processtwin.model import Model, parameter_info
from processtwin.models import REGISTRY, TankCascade
from processtwin.ops import casadi_ops, jax_ops, numpy_ops, pyomo_ops
from processtwin.solvers import OCP
from processtwin.system import System

# ---- the cases -------------------------------------------------------------------------------
CASES: dict[str, Any] = dict(REGISTRY)
for _n in (1, 3, 50):
    if REGISTRY["tank_cascade"]().n_tanks != _n:
        CASES[f"tank_cascade_n{_n}"] = functools.partial(TankCascade, n_tanks=_n)

#: A short horizon per time unit: a fraction of a batch, a few residence times of a tank.
SPAN = {"s": 5.0, "min": 10.0, "h": 10.0, "d": 1.0}
#: JAX simulations: tight enough that an ensemble (one shared step) and separate runs agree
#: to 1e-10 and central differences over a 1e-4 step are good to ~1e-8.
TOL = {"rtol": 1e-12, "atol": 1e-14}


@dataclass(frozen=True)
class Case:
    """A model and the point it is checked at."""

    name: str
    model: Model
    x: np.ndarray  # flat state, near the defaults and strictly inside the bounds
    u: np.ndarray  # flat inputs, likewise
    t: np.ndarray  # output times of the short simulations [model time unit]

    @property
    def x0(self) -> dict[str, Any]:
        return self.model.layout.states.to_dict(self.x)

    @property
    def inputs(self) -> dict[str, Any]:
        return self.model.layout.inputs.to_dict(self.u)


def interior_point(group: Any, rng: np.random.Generator) -> np.ndarray:
    """The defaults moved by 1-2 % of their scale (at least 0.01-0.02 absolute), and at least
    1 % of the scale inside every bound."""
    base = group.defaults()
    lo, hi = group.bounds()
    scale = np.maximum(np.abs(base), 1.0)
    x = base + 0.02 * scale * rng.uniform(0.5, 1.0, base.size)
    x = np.clip(x, lo + 0.01 * scale, hi - 0.01 * scale)
    assert np.all((x > lo) & (x < hi)), (group, x, lo, hi)
    return x


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request) -> Case:
    model = CASES[request.param]()
    assert isinstance(model, Model), request.param
    rng = np.random.default_rng(sum(map(ord, request.param)))
    lay = model.layout
    x, u = interior_point(lay.states, rng), interior_point(lay.inputs, rng)
    if model.is_discrete:
        t = np.arange(21) * float(model.sample_time)
    else:
        t = np.linspace(0.0, SPAN[model.time_unit], 11)
    return Case(request.param, model, x, u, t)


@pytest.fixture(scope="module")
def simulation(case: Case) -> processtwin.SimulationResult:
    return processtwin.simulate(case.model, case.x0, case.inputs, case.t, **TOL)


@pytest.fixture(scope="module")
def ensemble_run(case: Case) -> tuple[processtwin.SimulationResult, dict, dict, str | None]:
    params, x0, varied = scenarios(case)
    ens = processtwin.ensemble(case.model, x0, case.inputs, case.t, params=params, **TOL)
    return ens, params, x0, varied


def test_registry_has_the_cases_asked_for():
    assert {"bioreactor", "double_integrator", "tank_cascade", "feed_vessel",
            "triple_tank_discrete", "fed_batch_plant"} <= set(CASES)
    sizes = {CASES[k]().n_tanks for k in CASES if k.startswith("tank_cascade")}
    assert sizes == {1, 3, 50}
    assert REGISTRY["triple_tank_discrete"]().is_discrete
    assert isinstance(REGISTRY["fed_batch_plant"](), System)


# ---- a. backends agree -----------------------------------------------------------------------
def equations(model: Model) -> dict[str, tuple[Any, Any]]:
    """Name → (f(t, x, u, ops), the group its result ravels through)."""
    lay = model.layout
    out: dict[str, tuple[Any, Any]] = {}
    if model.is_discrete:
        out["step"] = (lambda t, x, u, ops: model.step(t, x, u, model.sample_time, ops),
                       lay.states)
    else:
        out["rhs"] = (model.rhs, lay.states)
    if lay.outputs.size:
        out["measure"] = (model.measure, lay.outputs)
    if lay.ports.size:
        out["ports"] = (model.ports, lay.ports)
    return out


T_EVAL = 0.3  # a time other than 0, in case a model's equations depend on it


def _split(model: Model, z: Any, ops: Any) -> tuple[Any, Any]:
    lay = model.layout
    nx = lay.states.size
    return lay.states.unravel(z[:nx], ops), lay.inputs.unravel(z[nx:], ops)


def _casadi_eval(model: Model, f: Any, group: Any, z: np.ndarray, sym: Any):
    zs = sym.sym("z", z.size)
    expr = group.ravel(f(T_EVAL, *_split(model, zs, casadi_ops), casadi_ops), casadi_ops)
    fn = ca.Function("f", [zs], [expr, ca.jacobian(expr, zs)])
    v, j = fn(z)
    return np.asarray(v, dtype=float).ravel(), np.asarray(ca.densify(j), dtype=float)


def _pyomo_eval(model: Model, f: Any, group: Any, z: np.ndarray):
    m = pyo.ConcreteModel()
    m.z = pyo.Var(range(z.size), initialize=dict(enumerate(z.tolist())))
    zv = [m.z[i] for i in range(z.size)]
    exprs = group.ravel(f(T_EVAL, *_split(model, zv, pyomo_ops), pyomo_ops), pyomo_ops)
    vals = np.array([pyo.value(e) for e in exprs], dtype=float)
    jac = np.array([[float(d) for d in differentiate(e, wrt_list=zv, mode=Modes.reverse_numeric)]
                    for e in exprs], dtype=float).reshape(len(exprs), z.size)
    return vals, jac


def test_backends_agree_on_values_and_jacobians(case: Case):
    model = case.model
    z = np.concatenate([case.x, case.u])
    for fname, (f, _) in equations(model).items():  # a clear failure before the comparison
        try:
            f(T_EVAL, *_split(model, z, numpy_ops), numpy_ops)
        except Exception as exc:  # any exception is the finding
            pytest.fail(f"{case.name}: `{fname}` cannot be evaluated at the checked point: "
                        f"{type(exc).__name__}: {exc}")
    nonzero = 0
    for fname, (f, group) in equations(model).items():
        def f_jax(zz, f=f, group=group):
            return group.ravel(f(T_EVAL, *_split(model, zz, jax_ops), jax_ops), jax_ops)

        val = np.asarray(f_jax(jnp.asarray(z)))
        jac = np.asarray(jax.jacfwd(f_jax)(jnp.asarray(z)))
        assert val.shape == (group.size,) and jac.shape == (group.size, z.size)
        assert np.all(np.isfinite(val)) and np.all(np.isfinite(jac)), fname
        nonzero += np.count_nonzero(jac)
        v_scale, j_scale = max(np.max(np.abs(val)), 1.0), max(np.max(np.abs(jac)), 1.0)

        def same(v, j, backend, fname=fname, val=val, jac=jac, v_scale=v_scale,
                 j_scale=j_scale):
            np.testing.assert_allclose(v, val, rtol=1e-12, atol=1e-14 * v_scale,
                                       err_msg=f"{case.name}.{fname} values: {backend} vs JAX")
            if j is not None:
                np.testing.assert_allclose(j, jac, rtol=1e-12, atol=1e-14 * j_scale,
                                           err_msg=f"{case.name}.{fname} Jacobian: {backend} "
                                                   "vs JAX")

        v_np = group.ravel(f(T_EVAL, *_split(model, z, numpy_ops), numpy_ops), numpy_ops)
        same(np.asarray(v_np, dtype=float), None, "NumPy")
        for sym in (ca.SX, ca.MX):
            same(*_casadi_eval(model, f, group, z, sym), f"CasADi {sym.__name__}")
        same(*_pyomo_eval(model, f, group, z), "Pyomo")
    assert nonzero > 0  # the comparison is not of constants only


def test_rates_are_finite_on_the_physical_bounds(case: Case):
    """A state on its (inclusive) physical bound — where an optimiser or a filter will put it
    — must give finite rates and Jacobians: a 0/0 there (e.g. ``S / (K + S)`` with
    ``K = 0``) is a model bug, not numerical noise. Each bounded state is put on each of
    its bounds in turn, the others at the checked point."""
    model = case.model
    lay = model.layout
    lo, hi = lay.states.bounds()
    strict = np.concatenate([np.full(lf.size, lf.var.strict) for lf in lay.states.leaves])
    names = lay.states.flat_names()
    for j in range(lay.states.size):
        for bound in (lo[j], hi[j]):
            if not np.isfinite(bound) or strict[j]:
                continue
            x = case.x.copy()
            x[j] = bound
            z = jnp.asarray(np.concatenate([x, case.u]))
            for fname, (f, group) in equations(model).items():
                def f_jax(zz, f=f, group=group):
                    return group.ravel(f(T_EVAL, *_split(model, zz, jax_ops), jax_ops),
                                       jax_ops)

                val, jac = np.asarray(f_jax(z)), np.asarray(jax.jacfwd(f_jax)(z))
                assert np.all(np.isfinite(val)) and np.all(np.isfinite(jac)), (
                    f"{case.name}: `{fname}` is not finite with `{names[j]}` on its bound "
                    f"{bound:g}")


def test_the_bound_check_catches_a_zero_over_zero():
    """The check above fails on a model with S / (K_p + S) at K_p = 0 and S = 0."""
    from processtwin.models import Bioreactor

    model = Bioreactor(K_p=0.0)
    rng = np.random.default_rng(0)
    bad = Case("bioreactor K_p=0", model, interior_point(model.layout.states, rng),
               interior_point(model.layout.inputs, rng), np.linspace(0.0, 1.0, 3))
    with pytest.raises(AssertionError, match="`S` on its bound 0"):
        test_rates_are_finite_on_the_physical_bounds(bad)


# ---- b. simulation against scipy -------------------------------------------------------------
def test_simulate_matches_scipy_radau_or_numpy_loop(case: Case, simulation):
    model, lay = case.model, case.model.layout
    u = lay.inputs.unravel(case.u, numpy_ops)
    got = np.asarray(simulation.states[0])
    assert got.shape == (case.t.size, lay.states.size)
    if model.is_discrete:
        dt = float(model.sample_time)
        y, ref = case.x.copy(), [case.x]
        for k in range(case.t.size - 1):
            y = lay.states.ravel(model.step(case.t[0] + k * dt, lay.states.unravel(y, numpy_ops),
                                            u, dt, numpy_ops), numpy_ops)
            ref.append(y)
        np.testing.assert_allclose(got, np.array(ref), rtol=1e-12, atol=1e-14)
    else:
        def f(t, y):
            return lay.states.ravel(model.rhs(t, lay.states.unravel(y, numpy_ops), u, numpy_ops),
                                    numpy_ops)

        sol = solve_ivp(f, (case.t[0], case.t[-1]), case.x, method="Radau", t_eval=case.t,
                        rtol=1e-10, atol=1e-12)
        assert sol.success, sol.message
        # relative to each state's magnitude over the run (a state may start at ~0)
        scale = np.maximum(np.max(np.abs(sol.y), axis=1), 1e-3)
        err = np.max(np.abs(got - sol.y.T), axis=0) / scale
        assert err.max() < 1e-7, dict(zip(lay.states.flat_names(), err, strict=True))
    # the outputs are the model's measure of those states
    y_ref = np.array([lay.outputs.ravel(model.measure(ti, lay.states.unravel(xi, numpy_ops), u,
                                                      numpy_ops), numpy_ops)
                      for ti, xi in zip(case.t, got, strict=True)]).reshape(case.t.size, -1)
    np.testing.assert_allclose(np.asarray(simulation.outputs[0]), y_ref, rtol=1e-12,
                               atol=1e-14)


# ---- c. ensemble -----------------------------------------------------------------------------
def scenarios(case: Case) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Three scenarios of the first nonzero parameter (x0.9, x1, x1.1), or of the first
    state if the model has no parameters: ``(params, x0, varied state or None)``."""
    model = case.model
    factors = np.array([0.9, 1.0, 1.1])
    for k in parameter_info(model):
        value = float(model.get(k))
        if value != 0.0:
            return {k: value * factors}, case.x0, None
    leaf = model.layout.states.leaves[0]
    x0 = dict(case.x0)
    x0[leaf.name] = np.multiply.outer(factors, np.asarray(x0[leaf.name]))
    return {}, x0, leaf.name


def test_ensemble_equals_separate_simulations(case: Case, ensemble_run):
    ens, params, x0, varied = ensemble_run
    assert np.asarray(ens.states).shape == (3, case.t.size, case.model.layout.states.size)
    for i in range(3):
        p_i = {k: float(v[i]) for k, v in params.items()}
        x0_i = {k: (v[i] if k == varied else v) for k, v in x0.items()}
        one = processtwin.simulate(case.model, x0_i, case.inputs, case.t, params=p_i, **TOL)
        for what in ("states", "outputs"):
            a, b = np.asarray(getattr(ens, what))[i], np.asarray(getattr(one, what))[0]
            scale = max(np.max(np.abs(b)), 1.0)
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * scale,
                                       err_msg=f"{case.name}: scenario {i}, {what}")
    ds = ens.data
    assert ds.sizes["scenario"] == 3
    for k in params:
        np.testing.assert_array_equal(ds[k].values, params[k])


# ---- d. gradients ----------------------------------------------------------------------------
GRAD_TOL = {"rtol": 1e-10, "atol": 1e-12}
FD_STEP = 1e-4  # relative central-difference step: truncation ~1e-8, noise ~1e-12/step


def _weights(case: Case) -> np.ndarray:
    return 1.0 / np.maximum(np.abs(case.x), 1.0)


def outcome_sim(case: Case, x0: Any, params: dict[str, float] | None = None) -> float:
    """Weighted sum of the final state, from ``simulate``."""
    res = processtwin.simulate(case.model, x0, case.inputs, case.t, params=params, **TOL)
    return float(_weights(case) @ np.asarray(res.states)[0, -1])


def test_trajectory_gradient_matches_finite_differences(case: Case):
    """One reverse pass through ``trajectory`` gives the derivative of the outcome with
    respect to every parameter and to the first initial state; the parameter it is most
    sensitive to and the initial state are checked against central differences."""
    model, lay = case.model, case.model.layout
    names = [k for k in parameter_info(model) if float(model.get(k)) != 0.0]
    e0 = np.zeros(lay.states.size)
    e0[0] = 1.0

    def outcome(p, s):
        x0 = lay.states.unravel(jnp.asarray(case.x) + s * jnp.asarray(e0), jax_ops)
        traj = processtwin.trajectory(model.with_params(p), x0, case.inputs, case.t,
                                      **GRAD_TOL)
        final = jax.tree.map(lambda a: a[-1], traj)
        return jnp.asarray(_weights(case)) @ lay.states.ravel(final, jax_ops)

    p0 = {k: jnp.asarray(float(model.get(k))) for k in names}
    g_p, g_s = jax.jit(jax.grad(outcome, argnums=(0, 1)))(p0, jnp.asarray(0.0))
    g_p = {k: float(v) for k, v in g_p.items()}
    assert all(np.isfinite(v) for v in g_p.values()), g_p
    j0 = abs(outcome_sim(case, case.x0)) or 1.0
    rel = {k: abs(g_p[k] * float(model.get(k))) / j0 for k in names}
    best = max(rel, key=rel.get, default=None)
    if best is not None and rel[best] > 1e-9:
        p = float(model.get(best))
        h = FD_STEP * abs(p)
        fd = (outcome_sim(case, case.x0, {best: p + h})
              - outcome_sim(case, case.x0, {best: p - h})) / (2 * h)
        assert abs(g_p[best] - fd) <= 1e-5 * abs(fd), (best, g_p[best], fd)
    elif best is not None:  # no parameter moves the states here (the feed vessel far from
        # empty: its volume falls at the pump's setpoint whatever its parameters)
        p = float(model.get(best))
        h = FD_STEP * abs(p)
        fd = (outcome_sim(case, case.x0, {best: p + h})
              - outcome_sim(case, case.x0, {best: p - h})) / (2 * h)
        assert abs(fd * p) / j0 < 1e-7, (best, fd)
    h = FD_STEP * max(abs(case.x[0]), 1.0)
    fd_x = (outcome_sim(case, case.x + h * e0) - outcome_sim(case, case.x - h * e0)) / (2 * h)
    assert abs(float(g_s) - fd_x) <= 1e-5 * abs(fd_x), (float(g_s), fd_x)


# ---- e. filters ------------------------------------------------------------------------------
@pytest.mark.parametrize("Filter", [ExtendedKalmanFilter, UnscentedKalmanFilter],
                         ids=["ekf", "ukf"])
def test_filter_step_gives_finite_estimate_and_pd_covariance(case: Case, simulation, Filter):
    model = case.model
    data = measurements(simulation.data).isel(time=slice(0, 2))
    assert set(data.data_vars) == set(model.layout.outputs.names)
    filt = Filter(model)
    result = filt.filter(data, x0=case.x0, inputs=case.inputs, full_covariance=True)
    est = result.data
    assert est.sizes["time"] == 2 and result.stats["samples"] == 2
    for name in model.layout.states.names:
        assert np.all(np.isfinite(est[name].values)), name
        assert np.all(np.isfinite(est[f"{name}_std"].values)), name
    P = est["covariance"].values
    assert P.shape == (2, model.layout.states.size, model.layout.states.size)
    for Pk in P:
        np.testing.assert_allclose(Pk, Pk.T, rtol=1e-12, atol=1e-14 * np.max(np.abs(Pk)))
        assert np.linalg.eigvalsh(0.5 * (Pk + Pk.T)).min() > 0.0
    assert np.all(np.isfinite(est["nis"].values))


# ---- f. optimal control ----------------------------------------------------------------------
def _ocp(case: Case, controls: Any = None) -> OCP:
    model, lay = case.model, case.model.layout
    if model.is_discrete:
        horizon, intervals = 10 * float(model.sample_time), 5
    else:
        horizon, intervals = SPAN[model.time_unit], 5
    ocp = OCP(model, horizon, intervals, controls=controls).initial_state(case.x0)
    x_ref = lay.states.defaults()
    x_w = 1.0 / np.maximum(np.abs(x_ref), 1.0)
    idx = lay.inputs.indices(ocp.controls)
    u_ref, u_w = case.u[idx], 1.0 / np.maximum(np.abs(case.u[idx]), 1.0)

    def mayer(x):
        d = lay.states.ravel(x, casadi_ops) - x_ref
        return ca.sumsqr(d * x_w)

    def stage(x, u):
        if not idx.size:
            return 0.0
        uv = lay.inputs.ravel(u, casadi_ops)
        return ca.sumsqr((ca.vertcat(*[uv[int(i)] for i in idx]) - u_ref) * u_w)

    return ocp.minimise(mayer=mayer, stage=stage)


def _constraint_jacobian(ocp: OCP, prob) -> np.ndarray:
    nlp = prob.nlp
    fn = ca.Function("jac_g", [nlp["x"], nlp["p"]], [ca.jacobian(nlp["g"], nlp["x"])])
    return np.asarray(ca.densify(fn(ocp.initial_point(), ocp.p_values())), dtype=float)


def test_ocp_builds_with_finite_constraint_jacobian(case: Case):
    lay = case.model.layout
    manipulated = tuple(lf.name for lf in lay.inputs.leaves if lf.var.kind == "manipulated")
    for controls in (None, ()):
        ocp = _ocp(case, controls)
        assert ocp.controls == (manipulated if controls is None else ())
        prob = ocp.build()
        jac = _constraint_jacobian(ocp, prob)
        assert jac.shape == (prob.lbg.size, prob.lbw.size)
        assert np.all(np.isfinite(jac)), f"{case.name}: non-finite constraint Jacobian"
        assert np.count_nonzero(jac) > 0
        assert np.all(np.isfinite(ocp.initial_point()))


def test_ocp_solves(case: Case):
    """Back to the defaults from the perturbed state at least input effort: IPOPT converges
    (each of these NLPs takes well under a second, the 50-tank cascade included)."""
    lay = case.model.layout
    res = _ocp(case).solve()
    assert res.success, res.status
    assert np.isfinite(res.objective) and res.stats["iterations"] >= 1
    for name in lay.states.names:
        assert np.all(np.isfinite(res.plan[name].values)), name
    start = lay.states.values({n: res.plan[n].values[0] for n in lay.states.names})
    np.testing.assert_allclose(start, case.x, rtol=1e-12)


# ---- g. Dataset round trip -------------------------------------------------------------------
def test_dataset_round_trip(case: Case, simulation, ensemble_run, tmp_path):
    lay = case.model.layout
    for kind, result in (("simulate", simulation), ("ensemble", ensemble_run[0])):
        path = processtwin.save(result, tmp_path / f"{case.name}_{kind}.nc")
        back = processtwin.load(path)
        xr.testing.assert_identical(back, result.data)
        for group in (lay.states, lay.outputs):
            for leaf in group.leaves:
                name = leaf.name if leaf.name in back.data_vars else None
                name = name or next(n for n, v in back.data_vars.items()
                                    if v.attrs.get("output_name") == leaf.name)
                assert back[name].attrs["units"] == leaf.var.units
                if leaf.shape:
                    assert leaf.dim in back[name].dims
                    np.testing.assert_array_equal(back[leaf.dim].values, np.arange(leaf.size))
        for name in lay.states.names:  # dotted names of a system survive (`reactor.X`)
            assert name in back.data_vars
        assert back.attrs == result.data.attrs
