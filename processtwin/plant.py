"""A simulated plant: the embedded default data source (truth, noisy and late samples)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .errors import ConfigError
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
    arrivals: list[tuple[float, float, dict[str, Any]]]


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
    lay = model.layout
    if not any(lf.var.kind in ("online", "offline") for lf in lay.outputs.leaves):
        have = ", ".join(f"`{lf.name}` ({lf.var.kind})" for lf in lay.outputs.leaves)
        raise ConfigError(
            f"model `{model.name}` has no measured outputs, so the simulated plant would "
            f"send nothing: outputs {have or 'none'}; declare the sensors' outputs with "
            "`Var(..., kind=\"online\", noise=...)` (or \"offline\" for lab assays).")
    n = int(round(until / dt))
    t = np.arange(n + 1) * dt
    res = simulate(model, x0, inputs, t, rtol=1e-8, atol=1e-10)
    rng = np.random.default_rng(seed)
    lab_rows = np.isclose(np.mod(t + 1e-9, lab_every), 0.0, atol=1e-6) & (t > 0)
    cols: dict[str, Any] = {}
    for leaf in lay.outputs.leaves:
        c, spec = leaf.name, leaf.var
        clean = res["out:" + c]
        y = clean + rng.normal(0.0, spec.noise, clean.shape)
        if spec.kind == "offline":
            y = np.where(lab_rows.reshape(-1, *([1] * (y.ndim - 1))), y, np.nan)
        y[0] = np.nan  # the filter starts from the initial estimate at t=0
        dims = ("time", leaf.dim) if leaf.shape else ("time",)
        cols[c] = (dims, y, {"units": spec.units, "kind": spec.kind})
    for leaf in lay.inputs.leaves:
        dims = ("time", leaf.dim) if leaf.shape else ("time",)
        cols[leaf.name] = (dims, res[leaf.name], {"units": leaf.var.units,
                                                  "kind": leaf.var.kind})
    data = xr.Dataset(cols, coords={"time": ("time", t, {"units": model.time_unit})})

    def value(c: str, k: int) -> Any:
        v = data[c].values[k]
        return float(v) if np.ndim(v) == 0 else np.array(v)

    arrivals = []
    online = [lf.name for lf in lay.outputs.leaves if lf.var.kind == "online"]
    offline = [lf.name for lf in lay.outputs.leaves if lf.var.kind == "offline"]
    for k in range(1, t.size):
        arrivals.append((t[k], t[k], {c: value(c, k) for c in online}))
        if lab_rows[k]:
            arrivals.append((t[k] + lab_delay, t[k], {c: value(c, k) for c in offline}))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return PlantRun(res.data, data, arrivals)
