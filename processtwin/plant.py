"""A simulated plant: the embedded default data source (truth, noisy and late samples)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .model import Model
from .simulate import simulate

__all__ = ["PlantRun", "simulated_plant"]


@dataclass(frozen=True)
class PlantRun:
    """Output of :func:`simulated_plant`.

    Attributes
    ----------
    truth : xarray.Dataset
        The true trajectory (states, outputs, inputs) on the online sample grid.
    data : xarray.Dataset
        Noisy measurements by sampling time (NaN = not measured), as a historian stores
        them once everything has arrived; includes the inputs.
    arrivals : list of (arrival_time, sample_time, dict)
        The samples in the order the twin receives them: online values at once, lab
        assays ``lab_delay`` later, stamped with their sampling time.
    """

    truth: xr.Dataset
    data: xr.Dataset
    arrivals: list[tuple[float, float, dict[str, float]]]


def simulated_plant(model: Model, *, inputs: Mapping[str, Any], until: float,
                    dt: float = 0.25, lab_every: float = 4.0, lab_delay: float = 2.0,
                    x0: Any = None, seed: int = 0) -> PlantRun:
    """Simulate a plant (``model`` holds the *true* parameters) and sample it like a real
    one: online outputs every ``dt``, offline outputs every ``lab_every`` arriving
    ``lab_delay`` later, each with the output's noise level.

    Parameters
    ----------
    model : Model
        The plant's true model.
    inputs : mapping
        Inputs as for :func:`~processtwin.simulate.simulate`.
    until, dt, lab_every, lab_delay : float
        Horizon, online sample period, lab sample period and lab delay [model time unit].
    x0 : optional
        Initial state.
    seed : int
        Noise seed.
    """
    n = int(round(until / dt))
    t = np.arange(n + 1) * dt
    res = simulate(model, x0, inputs, t, rtol=1e-8, atol=1e-10)
    rng = np.random.default_rng(seed)
    lab_rows = np.isclose(np.mod(t + 1e-9, lab_every), 0.0, atol=1e-6) & (t > 0)
    cols: dict[str, Any] = {}
    for c, spec in model.outputs().items():
        y = res["out:" + c] + rng.normal(0.0, spec.noise, t.size)
        if spec.kind == "offline":
            y = np.where(lab_rows, y, np.nan)
        y[0] = np.nan  # the filter starts from the initial estimate at t=0
        cols[c] = ("time", y, {"units": spec.units, "kind": spec.kind})
    for k, spec in model.inputs().items():
        cols[k] = ("time", res[k], {"units": spec.units, "kind": spec.kind})
    data = xr.Dataset(cols, coords={"time": ("time", t, {"units": model.time_unit})})
    arrivals = []
    online = [c for c, s in model.outputs().items() if s.kind == "online"]
    offline = [c for c, s in model.outputs().items() if s.kind == "offline"]
    for k in range(1, t.size):
        arrivals.append((t[k], t[k], {c: float(data[c].values[k]) for c in online}))
        if lab_rows[k]:
            arrivals.append((t[k] + lab_delay, t[k],
                             {c: float(data[c].values[k]) for c in offline}))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return PlantRun(res.data, data, arrivals)
