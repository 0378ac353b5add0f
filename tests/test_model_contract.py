"""Small pieces of the model contract: time units, models without inputs or outputs,
initial-state forms accepted everywhere."""

from fractions import Fraction
from typing import ClassVar

import jax
import numpy as np
import pytest

import processtwin as pt
from processtwin import ModelError
from processtwin.model import Model, Var, param, time_factor, variables
from processtwin.models import TankCascade

DecayState = variables("DecayState", m=Var("kg", "mass", default=2.0, bounds=(0.0, None)))


class Decay(Model):
    """First-order decay without inputs or outputs, dm/dt = -k m (Rutherford 1900)."""

    k: float = param(0.3, units="1/d", bounds=(0.0, None), doc="decay constant")
    State: ClassVar[type] = DecayState
    time_unit: ClassVar[str] = "d"

    def rhs(self, t, x, u, ops):
        return DecayState(m=-self.k * x.m)


def test_time_factors_are_exact():
    assert time_factor("h", "min") == 60
    assert time_factor("d", "s") == 86400
    assert time_factor("s", "h") == Fraction(1, 3600)
    assert time_factor("min", "d") * time_factor("d", "min") == 1
    with pytest.raises(ModelError, match="unknown time unit 'hr'"):
        time_factor("hr", "s")


def test_model_without_inputs_or_outputs_simulates_and_differentiates():
    model = Decay()
    assert model.layout.inputs.size == 0 and model.layout.outputs.size == 0
    t = np.linspace(0.0, 5.0, 6)
    res = pt.simulate(model, {"m": 2.0}, None, t)
    np.testing.assert_allclose(res["m"], 2.0 * np.exp(-0.3 * t), rtol=1e-8)
    assert res.data["m"].attrs["units"] == "kg" and res.data.attrs["time_unit"] == "d"
    ens = pt.ensemble(model, {"m": np.array([1.0, 2.0])}, None, t)
    np.testing.assert_allclose(ens["m"][:, -1], [np.exp(-1.5), 2 * np.exp(-1.5)], rtol=1e-6)
    dm = jax.grad(lambda m0: pt.trajectory(model, {"m": m0}, None, t).m[-1])(2.0)
    np.testing.assert_allclose(dm, np.exp(-1.5), rtol=1e-7)


def test_initial_state_forms_agree():
    """A mapping, a State tuple and a flat vector give the same simulation."""
    model = TankCascade(n_tanks=3)
    t = np.linspace(0.0, 10.0, 5)
    c0 = np.array([1.0, 2.0, 3.0])
    a = pt.simulate(model, {"c": c0}, None, t)["c"]
    b = pt.simulate(model, model.State(c=c0), None, t)["c"]
    c = pt.simulate(model, c0, None, t)["c"]
    d = np.asarray(pt.trajectory(model, {"c": c0}, None, t).c)
    for other in (b, c, d):
        np.testing.assert_allclose(other, a, rtol=1e-7)
    with pytest.raises(ModelError, match="needs 3 values over `tank`"):
        pt.simulate(model, {"c": [1.0, 2.0]}, None, t)


@pytest.mark.parametrize("kind", ["simulate", "ensemble"])
def test_dataset_from_the_template_equals_one_built_afresh(kind, monkeypatch):
    """A second result of the same structure is written into a copy of the first one's
    Dataset; it must equal the Dataset built from nothing (values, attrs, coordinates)."""
    import xarray as xr

    from processtwin import dataset

    model = TankCascade(n_tanks=3)
    t = np.linspace(0.0, 10.0, 6)
    if kind == "simulate":
        first = pt.simulate(model, {"c": [1.0, 2.0, 3.0]}, {"q": 0.4}, t)
        second = pt.simulate(model.replace(V=3.0), {"c": [0.5, 0.0, 1.0]}, {"q": 0.7}, t)
    else:
        first = pt.ensemble(model, None, None, t, params={"V": np.array([2.0, 3.0])})
        second = pt.ensemble(model, None, {"q": 0.7}, t, params={"V": np.array([1.5, 2.5])})
    dataset._TEMPLATES.clear()
    builds = []
    real_build = dataset.build
    monkeypatch.setattr(dataset, "build", lambda *a: builds.append(1) or real_build(*a))
    first.data  # noqa: B018  (builds and stores the template)
    from_template = second.data
    assert len(builds) == 1  # the second came from the first's template, not a build
    dataset._TEMPLATES.clear()
    afresh = dataset.to_dataset(second)
    xr.testing.assert_identical(from_template, afresh)
    assert from_template.attrs == afresh.attrs
