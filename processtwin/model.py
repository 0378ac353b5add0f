"""The model contract: parameters with units, named variables, pure equations.

A unit model is a final :class:`equinox.Module` subclass of :class:`Model` whose fields are
parameters declared with :func:`param`. Its states, inputs and outputs are named tuples made
by :func:`variables`; each variable carries units, bounds and a description. ``rhs`` and
``measure`` are pure and use only arithmetic and the injected ``ops`` namespace, so one set
of equations serves JAX (simulation, estimation), CasADi (NLP) and Pyomo (LP/MILP).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple

import equinox as eqx
import jax
import numpy as np

from .errors import ConfigError, ModelError, suggest

__all__ = [
    "Model",
    "ParamInfo",
    "Var",
    "check_value",
    "param",
    "variables",
]

Scalar = Any  # a float, a JAX array/tracer, a CasADi SX/MX or a Pyomo expression

VarKind = Literal["state", "manipulated", "disturbance", "online", "offline"]


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
    """

    units: str
    doc: str = ""
    default: float = 0.0
    bounds: tuple[float | None, float | None] = (None, None)
    strict: bool = False
    kind: VarKind = "state"
    noise: float = 0.0


def variables(typename: str, /, **specs: Var) -> type:
    """Make a ``NamedTuple`` type whose fields are ``specs`` and attach their metadata.

    The metadata is available as ``T._vars`` (a read-only mapping name → :class:`Var`).
    """
    if not specs:
        raise ModelError(f"`{typename}` needs at least one variable.")
    cls = NamedTuple(typename, [(name, Scalar) for name in specs])  # type: ignore[misc]
    cls._vars = MappingProxyType(dict(specs))
    return cls


@dataclass(frozen=True)
class ParamInfo:
    """Metadata of one model parameter."""

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


def _is_symbolic(value: Any) -> bool:
    # CasADi SX/MX and Pyomo expressions stand for values; they are checked numerically
    # by the solvers that use them.
    return type(value).__module__.split(".")[0] in ("casadi", "pyomo")


def check_value(
    what: str, name: str, value: Any, units: str, bounds: tuple, strict: bool
) -> None:
    """Raise :class:`ModelError` if a concrete ``value`` is non-finite or out of ``bounds``.

    Tracers (values inside ``jit``/``vmap``) are not checked. Arrays are checked element-wise.
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
    """Whether ``v`` is finite and inside ``bounds`` (``strict``: bounds excluded)."""
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


class Model(eqx.Module):
    """Abstract base of unit models.

    Subclasses are final, declare parameters as fields with :func:`param`, and set the
    class variables ``name``, ``State``, ``Inputs``, ``Outputs`` and ``time_unit``.
    """

    name: ClassVar[str]
    State: ClassVar[type]
    Inputs: ClassVar[type]
    Outputs: ClassVar[type]
    time_unit: ClassVar[str]

    def rhs(self, t: Scalar, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the state, ``dx/dt`` [state units per ``time_unit``]."""
        raise NotImplementedError

    def measure(self, t: Scalar, x: Any, u: Any, ops: Any) -> Any:
        """Measured outputs at state ``x`` and inputs ``u``."""
        raise NotImplementedError

    def __check_init__(self) -> None:
        for info in self.parameters().values():
            check_value(
                "parameter", info.name, getattr(self, info.name), info.units, info.bounds,
                info.strict,
            )

    # ---- introspection --------------------------------------------------------------
    @classmethod
    def parameters(cls) -> Mapping[str, ParamInfo]:
        """Metadata of every parameter, in declaration order."""
        cached = cls.__dict__.get("_param_cache")
        if cached is not None:
            return cached
        out: dict[str, ParamInfo] = {}
        for f in cls.__dataclass_fields__.values():
            if f.metadata.get("units") is None:
                continue
            out[f.name] = ParamInfo(
                f.name, f.default, f.metadata["units"], f.metadata["bounds"],
                f.metadata["strict"], f.metadata["doc"],
            )
        proxy = MappingProxyType(out)
        type.__setattr__(cls, "_param_cache", proxy)
        return proxy

    @classmethod
    def states(cls) -> Mapping[str, Var]:
        """Metadata of the states."""
        return cls.State._vars

    @classmethod
    def inputs(cls) -> Mapping[str, Var]:
        """Metadata of the inputs (manipulated and disturbance)."""
        return cls.Inputs._vars

    @classmethod
    def outputs(cls) -> Mapping[str, Var]:
        """Metadata of the measured outputs."""
        return cls.Outputs._vars

    def params(self) -> dict[str, Any]:
        """Current parameter values by name."""
        return {k: getattr(self, k) for k in self.parameters()}

    # ---- construction helpers ---------------------------------------------------------
    def replace(self, **values: Any) -> Model:
        """Return a copy with some parameters changed, validated against their bounds.

        Raises
        ------
        ConfigError
            For an unknown parameter name (with the closest known name).
        ModelError
            For a value outside the parameter's bounds.
        """
        known = self.parameters()
        for k in values:
            if k not in known:
                raise ConfigError(f"unknown parameter `{k}` of model `{self.name}`"
                                  + suggest(k, known))
        kw = self.params()
        kw.update(values)
        return type(self)(**kw)

    @classmethod
    def state(cls, values: Mapping[str, Any] | Any | None = None, /, **kw: Any) -> Any:
        """Build a validated ``State`` from defaults, a mapping/tuple and keywords."""
        return cls._build(cls.State, "state", values, kw)

    @classmethod
    def input_values(cls, values: Mapping[str, Any] | Any | None = None, /, **kw: Any) -> Any:
        """Build a validated ``Inputs`` tuple of constants from defaults and overrides."""
        return cls._build(cls.Inputs, "input", values, kw)

    @classmethod
    def _build(cls, typ: type, what: str, values: Any, kw: dict[str, Any]) -> Any:
        specs: Mapping[str, Var] = typ._vars
        merged = {k: v.default for k, v in specs.items()}
        if values is not None:
            if isinstance(values, tuple) and hasattr(values, "_fields"):
                values = values._asdict()
            elif not isinstance(values, Mapping):
                seq = list(values)
                if len(seq) != len(specs):
                    raise ModelError(
                        f"{what} of `{cls.name}` needs {len(specs)} values "
                        f"({', '.join(specs)}), got {len(seq)}."
                    )
                values = dict(zip(specs, seq, strict=True))
            kw = {**values, **kw}
        for k, v in kw.items():
            if k not in specs:
                raise ConfigError(f"unknown {what} `{k}` of model `{cls.name}`"
                                  + suggest(k, specs))
            merged[k] = v
        for k, spec in specs.items():
            check_value(what, k, merged[k], spec.units, spec.bounds, spec.strict)
        return typ(**merged)
