"""Conversion of simulation results to ``xarray.Dataset`` with units and roles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from . import __version__

if TYPE_CHECKING:
    from .simulate import SimulationResult

__all__ = ["measurements", "to_dataset"]


def _name(name: str, taken: set[str], prefix: str) -> str:
    out = name if name not in taken else f"{prefix}{name}"
    taken.add(out)
    return out


def to_dataset(result: SimulationResult) -> xr.Dataset:
    """Build the Dataset of a :class:`~processtwin.simulate.SimulationResult`.

    Variables: one per state, input and output (an output named like a state gets the
    prefix ``y_``), and one per parameter (prefix ``p_`` on a clash). Each has ``units``,
    ``long_name`` and ``role`` (``state``, ``input``, ``output``, ``parameter``) attributes;
    inputs also ``kind`` (``manipulated``/``disturbance``), outputs ``kind``
    (``online``/``offline``) and ``noise_std``. Parameters varied across an ensemble and
    varied initial states (``X_0``) have dimension ``scenario``; others are 0-d.
    """
    model = result.model
    dims: tuple[str, ...] = ("scenario", "time") if result.is_ensemble else ("time",)
    sel = (lambda a: a) if result.is_ensemble else (lambda a: a[0])
    taken: set[str] = set()
    data: dict[str, Any] = {}
    groups = (
        ("state", model.states(), result.states, ""),
        ("input", model.inputs(), result.inputs, "u_"),
        ("output", model.outputs(), result.outputs, "y_"),
    )
    for role, specs, arr, prefix in groups:
        arr = np.asarray(arr)
        for i, (k, spec) in enumerate(specs.items()):
            attrs = {"units": spec.units, "long_name": spec.doc, "role": role}
            if role != "state":
                attrs["kind"] = spec.kind
            if role == "output":
                attrs["output_name"] = k
                attrs["noise_std"] = spec.noise
            data[_name(k, taken, prefix)] = (dims, sel(arr[..., i]), attrs)
    for k, info in model.parameters().items():
        attrs = {"units": info.units, "long_name": info.doc, "role": "parameter"}
        if k in result.scenario_params:
            value: Any = (("scenario",), result.scenario_params[k], attrs)
        else:
            value = ((), float(getattr(model, k)), attrs)
        data[_name(k, taken, "p_")] = value
    for k, v in result.scenario_params.items():
        if k.endswith("_0") and k[:-2] in model.states():
            spec = model.states()[k[:-2]]
            data[_name(k, taken, "x0_")] = (("scenario",), v, {
                "units": spec.units, "long_name": f"initial {spec.doc}", "role": "initial_state"})
    coords: dict[str, Any] = {
        "time": ("time", np.asarray(result.t), {"units": model.time_unit, "long_name": "time"})
    }
    if result.is_ensemble:
        coords["scenario"] = ("scenario", np.arange(np.asarray(result.states).shape[0]))
    stats = result.stats
    attrs = {
        "model": model.name,
        "time_unit": model.time_unit,
        "solver": stats["solver"],
        "rtol": stats["rtol"],
        "atol": stats["atol"],
        "num_steps": stats["num_steps"],
        "num_rejected_steps": stats["num_rejected_steps"],
        "processtwin_version": __version__,
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def measurements(ds: xr.Dataset) -> xr.Dataset:
    """The outputs of a result Dataset under their own names (the layout of plant data)."""
    out = {v.attrs["output_name"]: v for v in ds.data_vars.values()
           if v.attrs.get("role") == "output"}
    return xr.Dataset(out, attrs={"model": ds.attrs.get("model", "")})
