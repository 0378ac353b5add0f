"""Declarations of a model: variables with units and shapes, parameters, sizes, time units.

What a model file writes before its equations (:func:`variables`, :class:`Var`,
:func:`param`, :func:`dimension`) and the checks of concrete values against declared
bounds. :mod:`processtwin.model` re-exports all of it; model files import from there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import numpy as np

from .errors import ModelError

__all__ = [
    "SCALARS",
    "TIME_UNITS",
    "VAR_KINDS",
    "ParamInfo",
    "Var",
    "check_value",
    "dimension",
    "param",
    "scalar_ok",
    "setting",
    "time_factor",
    "variables",
]

Scalar = Any  # a float, a JAX array/tracer, a CasADi SX/MX or a Pyomo expression

VarKind = Literal["state", "manipulated", "disturbance", "online", "offline", "port"]

#: Time units a model may declare, in seconds (conversions are exact).
TIME_UNITS: Mapping[str, int] = MappingProxyType({"s": 1, "min": 60, "h": 3600, "d": 86400})


@dataclass(frozen=True)
class Var:
    """Metadata of one state, input or output.

    Parameters
    ----------
    units : str
        Units of the variable, e.g. ``"g/L"``.
    doc : str
        One-line description.
    default : float
        Typical initial value (states), nominal value (inputs) or 0 (outputs).
    bounds : tuple of float or None
        Physical range ``(lower, upper)``; ``None`` for unbounded.
    strict : bool
        If true the bounds are exclusive (e.g. a volume that divides must be > 0).
    kind : str
        ``"state"``; ``"manipulated"`` or ``"disturbance"`` for inputs; ``"online"``
        (continuous sensor) or ``"offline"`` (lab assay) for outputs.
    noise : float
        Typical measurement noise standard deviation, in ``units`` (outputs only).
    shape : int or str or None
        ``None`` for a scalar; the length of a vector, either fixed (``3``) or the name of
        a static field of the model that holds it (``"n_cells"``).
    dim : str or None
        Name of the vector's dimension in Datasets (default: the sizing field without
        ``n_`` and a plural ``s``, so ``"n_cells"`` gives ``"cell"``).
    """

    units: str
    doc: str = ""
    default: Any = 0.0
    bounds: tuple[float | None, float | None] = (None, None)
    strict: bool = False
    kind: VarKind = "state"
    noise: float = 0.0
    shape: int | str | None = None
    dim: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in VAR_KINDS:
            raise ModelError(f"`kind` must be one of {', '.join(VAR_KINDS)}, got "
                             f"{self.kind!r}.")
        if self.shape is not None and not isinstance(self.shape, str) and (
                isinstance(self.shape, bool) or not isinstance(self.shape, int)
                or self.shape < 1):
            raise ModelError(f"`shape` must be a positive int or the name of a static field, "
                             f"got {self.shape!r}.")


VAR_KINDS = ("state", "manipulated", "disturbance", "online", "offline", "port")


def variables(typename: str, /, **specs: Var) -> type:
    """Make a ``NamedTuple`` type whose fields are ``specs`` and attach their metadata.

    The metadata is available as ``T._vars`` (a read-only mapping name → :class:`Var`).
    An empty tuple (a model without inputs) is allowed.

    Parameters
    ----------
    typename : str
        Name of the tuple type, e.g. ``"PipeState"``.
    **specs : Var
        One :class:`Var` per variable, in order.
    """
    for k, v in specs.items():
        if not isinstance(v, Var):
            raise ModelError(f"variable `{k}` of `{typename}` must be a Var, got "
                             f"{type(v).__name__}.")
    cls = NamedTuple(typename, [(name, Scalar) for name in specs])  # type: ignore[misc]
    cls._vars = MappingProxyType(dict(specs))
    return cls


@dataclass(frozen=True)
class ParamInfo:
    """Metadata of one model parameter.

    Attributes
    ----------
    name : str
        Parameter name (dotted inside a system, ``reactor.mu_max``).
    default : float
        Default value [``units``].
    units : str
        Units, ``"-"`` for dimensionless.
    bounds : tuple of float or None
        Physical range ``(lower, upper)`` [``units``]; ``None`` for unbounded.
    strict : bool
        Whether the bounds are exclusive.
    doc : str
        One-line description.
    """

    name: str
    default: float
    units: str
    bounds: tuple[float | None, float | None]
    strict: bool
    doc: str


def param(
    default: float,
    *,
    units: str,
    bounds: tuple[float | None, float | None] = (None, None),
    strict: bool = False,
    doc: str = "",
) -> Any:
    """Declare a model parameter with a default value, units, bounds and a description.

    Parameters
    ----------
    default : float
        Default value, in ``units``.
    units : str
        Units, e.g. ``"1/h"``; ``"-"`` for dimensionless.
    bounds : tuple of float or None
        Physical range ``(lower, upper)``, ``None`` for unbounded.
    strict : bool
        If true the bounds are exclusive.
    doc : str
        One-line description.
    """
    meta = {"units": units, "bounds": bounds, "strict": strict, "doc": doc}
    return eqx.field(default=default, metadata=meta)


def dimension(default: int, *, doc: str = "") -> Any:
    """Declare a static size of a model (a number of cells, zones, layers).

    Vector variables name it in ``Var(shape=...)``. Static: a new value compiles a new
    program, and it is not a parameter (not estimated, not varied in an ensemble).

    Parameters
    ----------
    default : int
        Default size, at least 1.
    doc : str
        One-line description.
    """
    if isinstance(default, bool) or not isinstance(default, int) or default < 1:
        raise ModelError(f"a dimension must be a positive int, got {default!r}.")
    return eqx.field(default=default, static=True, metadata={"dimension": True, "doc": doc})


def setting(default: Any, *, units: str = "-", doc: str = "") -> Any:
    """Declare a static configuration value of a model: a geometry, a layout, a choice
    (zone floor areas, an adjacency list, a COP correlation).

    Like a :func:`dimension` it is static (a new value compiles a new program) and is not a
    parameter (not estimated, not varied in an ensemble); unlike one it may be any hashable
    value, typically a tuple of numbers or a string. The model checks it in its
    ``__check_init__``.

    Parameters
    ----------
    default : hashable
        Default value (tuples, not lists: it is part of the compiled program's key).
    units : str
        Units of the numbers it holds, ``"-"`` if none.
    doc : str
        One-line description.
    """
    try:
        hash(default)
    except TypeError:
        raise ModelError(f"a setting must be hashable (a tuple, not a list), got "
                         f"{default!r}.") from None
    return eqx.field(default=default, static=True,
                     metadata={"setting": True, "units": units, "doc": doc})


def time_factor(from_unit: str, to_unit: str) -> Fraction:
    """Exact factor converting a time in ``from_unit`` to ``to_unit`` (``h`` → ``min``: 60).

    Parameters
    ----------
    from_unit, to_unit : str
        Time units, each one of :data:`TIME_UNITS` (``s``, ``min``, ``h``, ``d``).

    Returns
    -------
    fractions.Fraction
        Multiply a time in ``from_unit`` by it to get ``to_unit``.

    Raises
    ------
    ModelError
        For a unit not in :data:`TIME_UNITS`.
    """
    for u in (from_unit, to_unit):
        if u not in TIME_UNITS:
            raise ModelError(f"unknown time unit {u!r}; expected one of "
                             f"{', '.join(TIME_UNITS)}.")
    return Fraction(TIME_UNITS[from_unit], TIME_UNITS[to_unit])


def _is_symbolic(value: Any) -> bool:
    # CasADi SX/MX and Pyomo expressions stand for values; they are checked numerically
    # by the solvers that use them.
    return type(value).__module__.split(".")[0] in ("casadi", "pyomo")


def check_value(
    what: str, name: str, value: Any, units: str, bounds: tuple, strict: bool
) -> None:
    """Raise :class:`ModelError` if a concrete ``value`` is non-finite or out of ``bounds``.

    Tracers (values inside ``jit``/``vmap``) and CasADi/Pyomo expressions are not checked.
    Arrays are checked element-wise.

    Parameters
    ----------
    what : str
        What the value is, for the message (``"state"``, ``"parameter"``).
    name : str
        Its name, for the message.
    value : float or array
        The value [``units``].
    units : str
        Its units, for the message.
    bounds : tuple of float or None
        ``(lower, upper)`` [``units``]; ``None`` for unbounded.
    strict : bool
        Whether the bounds are exclusive.
    """
    if type(value) in SCALARS:  # the common case, checked without building an array
        if not scalar_ok(float(value), bounds, strict):
            _check_array(what, name, np.asarray(float(value)), value, units, bounds, strict)
        return
    if isinstance(value, jax.core.Tracer) or _is_symbolic(value):
        return
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ModelError(f"{what} `{name}` must be a number [{units}], got {value!r}.") from None
    _check_array(what, name, arr, value, units, bounds, strict)


#: Plain scalar types validated without building an array.
SCALARS = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})


def scalar_ok(v: float, bounds: tuple, strict: bool) -> bool:
    """Whether ``v`` is finite and inside ``bounds`` (``strict``: bounds excluded).

    Parameters
    ----------
    v : float
        The value.
    bounds : tuple of float or None
        ``(lower, upper)`` in the value's units; ``None`` for unbounded.
    strict : bool
        Whether the bounds are exclusive.
    """
    lo, hi = bounds
    return (math.isfinite(v) and (lo is None or (v > lo if strict else v >= lo))
            and (hi is None or (v < hi if strict else v <= hi)))


def _check_array(what: str, name: str, arr: np.ndarray, value: Any, units: str, bounds: tuple,
                 strict: bool) -> None:
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"{what} `{name}` must be finite [{units}], got {value!r}.")
    lo, hi = bounds
    if lo is not None:
        bad = arr <= lo if strict else arr < lo
        if np.any(bad):
            op = ">" if strict else "≥"
            got = float(arr[bad].flat[0])
            raise ModelError(f"{what} `{name}` must be {op} {lo} [{units}], got {got:g} [{units}].")
    if hi is not None:
        bad = arr >= hi if strict else arr > hi
        if np.any(bad):
            op = "<" if strict else "≤"
            got = float(arr[bad].flat[0])
            raise ModelError(f"{what} `{name}` must be {op} {hi} [{units}], got {got:g} [{units}].")
