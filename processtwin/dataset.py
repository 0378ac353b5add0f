"""The one Dataset writer: results of simulation, estimation and optimisation as
``xarray.Dataset`` with units, roles and the model's dimensions.

Every variable carries ``units``, ``long_name`` and ``role``, one of :data:`ROLES`. A
vector variable (``T`` over ``cell``) has the extra dimension with an integer coordinate.
Variables of composed systems keep their dotted names (``reactor.X``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from . import __version__
from .model import parameter_info, parameter_values

if TYPE_CHECKING:
    from .layout import Group
    from .model import Var
    from .simulate import SimulationResult

__all__ = ["ROLES", "build", "leaf_items", "measurements", "to_dataset", "var_attrs"]

#: The role vocabulary of every Dataset processtwin writes (attribute ``role``).
ROLES = (
    "state",  # simulated or planned state
    "input",  # input applied (kind: manipulated / disturbance / port)
    "output",  # model output (kind: online / offline)
    "port",  # physical connection value
    "parameter",  # model parameter
    "initial_state",  # initial state varied across an ensemble
    "estimated_state",  # filter estimate of a state
    "estimated_parameter",  # filter estimate of a tracked parameter
    "std",  # standard deviation of an estimate
    "smoothed",  # RTS-smoothed estimate
    "measurement",  # measured value fed to a filter
    "innovation",  # measurement minus prediction
    "diagnostic",  # NIS, flags, rejections, slacks, covariances
)


def var_attrs(var: Var, role: str, **extra: Any) -> dict[str, Any]:
    """Attributes of a variable with metadata ``var`` in ``role``."""
    attrs: dict[str, Any] = {"units": var.units, "long_name": var.doc, "role": role}
    if role in ("input", "output"):
        attrs["kind"] = var.kind
    if role == "output":
        attrs["noise_std"] = var.noise
    attrs.update(extra)
    return attrs


def leaf_items(group: Group, arr: Any, role: str, lead: tuple[str, ...], *,
               taken: set[str] | None = None, prefix: str = "", suffix: str = "",
               **extra: Any) -> Iterator[tuple[str, tuple[tuple[str, ...], Any, dict]]]:
    """``(name, (dims, values, attrs))`` of every leaf of ``group`` from the flat array
    ``arr`` (``lead`` dimensions followed by the flat axis): a vector leaf gets its own
    dimension. A name already in ``taken`` gets ``prefix``; ``suffix`` is appended."""
    a = np.asarray(arr)
    for leaf in group.leaves:
        name = leaf.name + suffix
        if taken is not None:
            if name in taken:
                name = prefix + name
            taken.add(name)
        if leaf.shape:
            yield name, ((*lead, leaf.dim), a[..., leaf.start:leaf.stop],
                         var_attrs(leaf.var, role, **extra))
        else:
            yield name, (lead, a[..., leaf.start], var_attrs(leaf.var, role, **extra))


def dim_coords(group_dims: Mapping[str, int]) -> dict[str, Any]:
    """Integer coordinates of the model's vector dimensions."""
    return {d: (d, np.arange(n), {"long_name": f"{d} index"}) for d, n in group_dims.items()}


def build(data: Mapping[str, Any], coords: Mapping[str, Any], attrs: Mapping[str, Any]
          ) -> xr.Dataset:
    """A Dataset from ``name → (dims, values, attrs)`` items; only dimensions in use get
    their coordinates."""
    used = {d for dims, _, _ in data.values() for d in dims}
    variables = {k: xr.Variable(dims, values, a) for k, (dims, values, a) in data.items()}
    cvars = {k: (xr.IndexVariable(*v) if isinstance(v, tuple) else v)
             for k, v in coords.items() if k in used or k == "time"}
    return xr.Dataset(variables, coords=cvars, attrs=dict(attrs))


# Result Datasets by structure: a new result of the same model, grid and scenario count
# is written into a copy of the last one (``Dataset.copy(data=...)``), ~5x cheaper than
# building it; the time coordinate is compared, not assumed.
_TEMPLATES: OrderedDict[Any, xr.Dataset] = OrderedDict()
_MAX_TEMPLATES = 32


def to_dataset(result: SimulationResult) -> xr.Dataset:
    """Build the Dataset of a :class:`~processtwin.simulate.SimulationResult`.

    Variables: one per state, input and output (an output named like a state gets the
    prefix ``y_``, an input ``u_``), and one per parameter (prefix ``p_`` on a clash),
    with the roles of :data:`ROLES`. Parameters varied across an ensemble and varied
    initial states (``X_0``) have dimension ``scenario``; others are 0-d.
    """
    model = result.model
    lay = model.layout
    lead: tuple[str, ...] = ("scenario", "time") if result.is_ensemble else ("time",)

    def sel(a: Any) -> np.ndarray:
        a = np.asarray(a)
        return a if result.is_ensemble else a[0]

    states, inputs, outputs = sel(result.states), sel(result.inputs), sel(result.outputs)
    t = np.asarray(result.t)
    key = (type(model)._layout_key(model), result.is_ensemble, states.shape,
           tuple(result.scenario_params),
           result.stats["solver"], result.stats["rtol"], result.stats["atol"])
    params = parameter_values(model)
    tmpl = _TEMPLATES.get(key)
    if tmpl is not None and np.array_equal(tmpl["time"].values, t):
        _TEMPLATES.move_to_end(key)
        values = _values(lay, states, inputs, outputs, params, result.scenario_params)
        ds = tmpl.copy(data=dict(zip(tmpl.data_vars, values, strict=True)))
        ds.attrs.update(num_steps=result.stats["num_steps"],
                        num_rejected_steps=result.stats["num_rejected_steps"])
        return ds
    taken: set[str] = set()
    data: dict[str, Any] = {}
    data.update(leaf_items(lay.states, states, "state", lead, taken=taken))
    data.update(leaf_items(lay.inputs, inputs, "input", lead, taken=taken, prefix="u_"))
    for name, item in leaf_items(lay.outputs, outputs, "output", lead, taken=taken,
                                 prefix="y_"):
        item[2]["output_name"] = name if name in lay.outputs else name[2:]
        data[name] = item
    for k, info in parameter_info(model).items():
        attrs = {"units": info.units, "long_name": info.doc, "role": "parameter"}
        if k in result.scenario_params:
            value: Any = (("scenario",), np.asarray(result.scenario_params[k]), attrs)
        else:
            value = ((), np.asarray(params[k], dtype=float), attrs)
        name = k if k not in taken else f"p_{k}"
        taken.add(name)
        data[name] = value
    for k, v in result.scenario_params.items():
        if k.endswith("_0") and k[:-2] in lay.states:
            leaf = lay.states.by_name[k[:-2]]
            dims = ("scenario", leaf.dim) if leaf.shape else ("scenario",)
            data[k if k not in taken else f"x0_{k}"] = (dims, np.asarray(v), {
                "units": leaf.var.units, "long_name": f"initial {leaf.var.doc}",
                "role": "initial_state"})
    coords: dict[str, Any] = {
        "time": ("time", t, {"units": model.time_unit, "long_name": "time"}),
        **dim_coords(lay.dims),
    }
    if result.is_ensemble:
        coords["scenario"] = ("scenario", np.arange(states.shape[0]))
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
    ds = build(data, coords, attrs)
    _TEMPLATES[key] = ds
    if len(_TEMPLATES) > _MAX_TEMPLATES:
        _TEMPLATES.popitem(last=False)
    return ds.copy()


def _values(lay: Any, states: np.ndarray, inputs: np.ndarray, outputs: np.ndarray,
            params: Mapping[str, Any], scen: Mapping[str, Any]) -> list[np.ndarray]:
    """Data of every variable in the order :func:`to_dataset` writes them."""
    out = []
    for group, arr in ((lay.states, states), (lay.inputs, inputs), (lay.outputs, outputs)):
        for leaf in group.leaves:
            out.append(arr[..., leaf.start:leaf.stop] if leaf.shape else arr[..., leaf.start])
    for k, v in params.items():
        out.append(np.asarray(scen[k]) if k in scen else np.asarray(v, dtype=float))
    for k, v in scen.items():
        if k.endswith("_0") and k[:-2] in lay.states:
            out.append(np.asarray(v))
    return out


def measurements(ds: xr.Dataset) -> xr.Dataset:
    """The outputs of a result Dataset under their own names (the layout of plant data)."""
    out = {v.attrs["output_name"]: v for v in ds.data_vars.values()
           if v.attrs.get("role") == "output"}
    return xr.Dataset(out, attrs={"model": ds.attrs.get("model", "")})
