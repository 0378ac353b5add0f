"""Ensembles whose members share their inputs (kept once, not copied per member) and the
fixed-step grid (steps aligned to the switches and outputs): each member against its own
accurate single run, the adaptive shared path against the per-member path, and the grid's
layout."""

from __future__ import annotations

import numpy as np
import pytest

import processtwin as pt
from processtwin import _tsit5
from processtwin.models import Bioreactor, Building

T = np.linspace(0.0, 6 * 3600.0, 13)             # 6 h, half-hourly outputs [s]
SWITCH = np.arange(0.0, 6 * 3600.0, 900.0)        # 15-min held inputs


def _inputs(rng: np.random.Generator) -> dict:
    k = SWITCH.size
    return {"T_out": pt.hold(SWITCH, rng.uniform(-5.0, 5.0, k)),
            "Q_hvac": pt.hold(SWITCH, rng.uniform(0.0, 3000.0, (2, k))),
            "I_sol": pt.hold(SWITCH, rng.uniform(0.0, 300.0, (2, k)))}


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(11)
    model = Building(n_zones=2, adjacency=((0, 1, 15.0),))
    n = 6
    params = {"c_e": model.c_e * rng.uniform(0.8, 1.2, n),
              "h_ea": model.h_ea * rng.uniform(0.8, 1.2, n)}
    return model, _inputs(rng), params, n


def _member(model, inputs, params, i, **kw):
    p = {k: float(v[i]) for k, v in params.items()}
    return pt.simulate(model, None, inputs, T, params=p, **kw).states[0]


def test_shared_inputs_adaptive_members_equal_their_own_runs(case) -> None:
    model, inputs, params, n = case
    ens = pt.ensemble(model, None, inputs, T, params=params, rtol=1e-9, atol=1e-9)
    assert ens.states.shape == (n, T.size, 4)
    for i in range(n):
        ref = _member(model, inputs, params, i, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ens.states[i], ref, rtol=0, atol=2e-6)
    # the same members with their inputs copied per member (the per-member path) agree
    k = SWITCH.size
    per = {name: pt.hold(SWITCH, np.broadcast_to(np.asarray(s.values), (n, *np.shape(s.values))))
           for name, s in inputs.items()}
    assert all(np.shape(s.values)[0] == n and np.shape(s.values)[-1] == k for s in per.values())
    ens2 = pt.ensemble(model, None, per, T, params=params, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ens.states, ens2.states, rtol=0, atol=2e-6)
    # chunks reuse the shared inputs
    chunked = pt.ensemble(model, None, inputs, T, params=params, rtol=1e-9, atol=1e-9,
                          chunk_size=4)
    np.testing.assert_allclose(chunked.states, ens.states, rtol=0, atol=2e-6)


def test_fixed_steps_of_an_ensemble_equal_the_members_fixed_steps(case) -> None:
    """The grid is the same for the ensemble and each member's run: equal to roundoff; and
    Tsit5 at 300 s steps is within its fifth-order error of the exact solution."""
    model, inputs, params, n = case
    ens = pt.ensemble(model, None, inputs, T, params=params, dt=300.0)
    for i in range(n):
        fixed = _member(model, inputs, params, i, dt=300.0)
        np.testing.assert_allclose(ens.states[i], fixed, rtol=1e-12, atol=1e-10)
        ref = _member(model, inputs, params, i, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fixed, ref, rtol=0, atol=1e-4)
    assert ens.stats["num_steps"] == 72 and ens.stats["num_rejected_steps"] == 0


def test_fixed_grid_ends_steps_on_switches_and_outputs() -> None:
    ts = np.array([0.0, 10.0, 25.0, 30.0])
    jumps = np.array([3.0, 3.0, 12.5, 40.0, -1.0])    # duplicates and outside ones too
    t_step, h, ends = _tsit5.fixed_grid(ts, jumps, 4.0)
    edges = np.append(t_step, t_step[-1] + h[-1])
    assert np.all(h <= 4.0 + 1e-12) and np.all(h > 0)
    np.testing.assert_allclose(edges[1:], t_step + h)
    for knot in (3.0, 10.0, 12.5, 25.0, 30.0):       # every knot is a step boundary
        assert np.min(np.abs(edges - knot)) < 1e-12
    np.testing.assert_allclose(edges[ends], ts)
    # [0,3] 1 step, [3,10] 2, [10,12.5] 1, [12.5,25] 4, [25,30] 2
    assert list(np.diff(ends)) == [3, 5, 2] and t_step.size == 10


def test_fixed_steps_beyond_the_budget_are_refused() -> None:
    with pytest.raises(pt.SolverError, match="max_steps"):
        pt.simulate(Bioreactor(), None, {"F": 0.01}, np.array([0.0, 100.0]), dt=0.01,
                    max_steps=1000)


def test_automatic_chunks_on_all_cores_equal_one_chunk() -> None:
    """40 members (above the one-chunk limit of 32): the automatic chunks, run on every
    core at once, give each member what one chunk of all 40 gives."""
    rng = np.random.default_rng(2)
    n = 40
    mu = rng.uniform(0.015, 0.025, n)
    t = np.linspace(0.0, 60.0, 31)
    feed = {"F": pt.hold([0.0, 20.0], [0.0, 0.03])}
    auto = pt.ensemble(Bioreactor(), None, feed, t, params={"mu_max": mu}, rtol=1e-9,
                       atol=1e-11)
    one = pt.ensemble(Bioreactor(), None, feed, t, params={"mu_max": mu}, rtol=1e-9,
                      atol=1e-11, chunk_size=n)
    assert auto.states.shape == one.states.shape == (n, t.size, 4)
    np.testing.assert_allclose(auto.states, one.states, rtol=1e-7, atol=1e-9)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(pt.ConfigError, match="chunk_size"):
            pt.ensemble(Bioreactor(), None, feed, t, params={"mu_max": mu}, chunk_size=bad)
