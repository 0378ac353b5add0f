"""The model contract: parameters with units, named variables, pure equations.

A unit model is a final :class:`equinox.Module` subclass of :class:`Model` whose fields are
parameters declared with :func:`param`. Its states, inputs and outputs are named tuples made
by :func:`variables`; each variable carries units, bounds and a description. ``rhs`` and
``measure`` are pure and use only arithmetic and the injected ``ops`` namespace, so one set
of equations serves JAX (simulation, estimation), CasADi (NLP) and Pyomo (LP/MILP). The
declarations themselves live in :mod:`processtwin.declare` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import equinox as eqx

from .declare import (
    SCALARS,
    TIME_UNITS,
    VAR_KINDS,
    ParamInfo,
    Scalar,
    Var,
    check_value,
    dimension,
    param,
    scalar_ok,
    setting,
    time_factor,
    variables,
)
from .errors import ConfigError, ModelError, suggest
from .goals import Limit, Objective
from .ops import numpy_ops

__all__ = [
    "SCALARS",
    "TIME_UNITS",
    "VAR_KINDS",
    "Limit",
    "Model",
    "Objective",
    "ParamInfo",
    "Var",
    "check_value",
    "dimension",
    "param",
    "parameter_info",
    "parameter_values",
    "scalar_ok",
    "setting",
    "time_factor",
    "variables",
]


_NO_VARS = variables("NoVariables")

# Layouts by model structure (type and static fields); see Model.layout.
_LAYOUTS: dict[Any, Any] = {}


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(Model, name)


class Model(eqx.Module):
    """Abstract base of unit models.

    A concrete subclass is final and declares parameters as fields with :func:`param`,
    static sizes with :func:`dimension`, and the class variables ``State`` (required),
    ``Inputs`` and ``Outputs`` (optional, made by :func:`variables`), ``Ports`` (optional:
    physical connections, computed by :meth:`ports`), ``time_unit`` (one of
    :data:`TIME_UNITS`) and ``name``. It implements ``rhs`` (continuous time) or ``step``
    with a ``sample_time`` (discrete time), and ``measure`` when it has outputs. A class
    whose name starts with ``Abstract`` is abstract and not checked. A missing piece fails
    at class creation with a :class:`ModelError` naming it.
    """

    name: ClassVar[str]
    _composite: ClassVar[bool] = False
    State: ClassVar[type]
    Inputs: ClassVar[type] = _NO_VARS
    Outputs: ClassVar[type] = _NO_VARS
    Ports: ClassVar[type] = _NO_VARS
    time_unit: ClassVar[str]
    #: Sample period of a discrete-time model [time_unit]; ``None`` for continuous time.
    sample_time: ClassVar[float | None] = None
    #: Named objectives the model's users optimise (:class:`~processtwin.goals.Objective`).
    objectives: ClassVar[Mapping[str, Objective]] = MappingProxyType({})
    #: Operating limits by input, state or output name (:class:`~processtwin.goals.Limit`).
    limits: ClassVar[Mapping[str, Limit]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("Abstract") or cls.__dict__.get("_composite", False):
            return
        missing = [k for k in ("State", "time_unit") if not hasattr(cls, k)]
        if not (_overrides(cls, "rhs") or _overrides(cls, "step")):
            missing.append("rhs (or step)")
        if missing:
            raise ModelError(f"model class `{cls.__name__}` is missing "
                             + ", ".join(f"`{m}`" for m in missing)
                             + "; a concrete Model declares `State`, `time_unit` and `rhs` "
                               "(or `step` with `sample_time`).")
        if cls.time_unit not in TIME_UNITS:
            raise ModelError(f"`time_unit` of `{cls.__name__}` must be one of "
                             f"{', '.join(TIME_UNITS)}, got {cls.time_unit!r}.")
        for attr in ("State", "Inputs", "Outputs", "Ports"):
            typ = getattr(cls, attr)
            if not hasattr(typ, "_vars"):
                raise ModelError(f"`{attr}` of `{cls.__name__}` must be made by "
                                 f"`variables(...)`, got {typ!r}.")
        if not cls.State._vars:
            raise ModelError(f"`State` of `{cls.__name__}` needs at least one variable.")
        if cls.Outputs._vars and not _overrides(cls, "measure"):
            raise ModelError(f"model class `{cls.__name__}` declares outputs but no "
                             "`measure`.")
        if cls.Ports._vars and not _overrides(cls, "ports"):
            raise ModelError(f"model class `{cls.__name__}` declares ports but no `ports`.")
        if _overrides(cls, "step") and not _overrides(cls, "rhs") and (
                "sample_time" not in cls.__dict__ and "sample_time" not in
                cls.__dict__.get("__annotations__", {})):
            raise ModelError(f"discrete-time model `{cls.__name__}` needs a `sample_time` "
                             f"[{cls.time_unit}].")
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()

    def rhs(self, t: Scalar, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the state, ``dx/dt`` [state units per ``time_unit``].

        Parameters
        ----------
        t : scalar
            Time [``time_unit``].
        x : State
            State values (scalars or vectors in the backend of ``ops``).
        u : Inputs
            Input values.
        ops : Ops
            The backend namespace (:mod:`processtwin.ops`).
        """
        raise NotImplementedError

    def step(self, t: Scalar, x: Any, u: Any, dt: Any, ops: Any) -> Any:
        """State one sample later, ``x[k+1]`` (discrete-time models).

        Parameters
        ----------
        t : scalar
            Time of ``x[k]`` [``time_unit``].
        x, u : State, Inputs
            State and inputs at sample ``k`` (inputs are held over the sample).
        dt : scalar
            The sample period, ``sample_time`` [``time_unit``].
        ops : Ops
            The backend namespace.
        """
        raise NotImplementedError

    def measure(self, t: Scalar, x: Any, u: Any, ops: Any) -> Any:
        """Measured outputs at state ``x`` and inputs ``u`` (arguments as for ``rhs``)."""
        return self.Outputs()

    def ports(self, t: Scalar, x: Any, u: Any, ops: Any) -> Any:
        """Values of the physical ports (arguments as for ``rhs``): what a
        :class:`~processtwin.system.System` connects to other units' inputs."""
        return self.Ports()

    @property
    def is_discrete(self) -> bool:
        """Whether the model is a discrete-time map (``step`` with a ``sample_time``)."""
        return self.sample_time is not None and _overrides(type(self), "step")

    def __check_init__(self) -> None:
        for info in self.parameters().values():
            check_value(
                "parameter", info.name, self.get(info.name), info.units, info.bounds,
                info.strict,
            )
        if self.sample_time is not None and not (
                isinstance(self.sample_time, int | float) and self.sample_time > 0):
            raise ModelError(f"`sample_time` of `{self.name}` must be a positive number "
                             f"[{self.time_unit}], got {self.sample_time!r}.")

    # ---- layout -------------------------------------------------------------------------
    def _layout_key(self) -> Any:
        fields = type(self).__dataclass_fields__.values()
        return (type(self), tuple((f.name, getattr(self, f.name)) for f in fields
                                  if f.metadata.get("static")))

    @property
    def layout(self) -> Any:
        """The resolved :class:`~processtwin.layout.Layout` of this model: every state,
        input, output and port with its shape and slice of the flat vector."""
        # methods called through the class: equinox wraps a method looked up on an
        # instance into a bound-method Module (~10 µs), and this runs on every call
        cls = type(self)
        key = cls._layout_key(self)
        out = _LAYOUTS.get(key)
        if out is None:
            out = _LAYOUTS[key] = cls._make_layout(self)
        return out

    def _make_layout(self) -> Any:
        from .layout import Layout, resolve

        dims: dict[str, int] = {}
        groups = [resolve(getattr(self, a), w, self, dims=dims) for a, w in
                  (("State", "state"), ("Inputs", "input"), ("Outputs", "output"),
                   ("Ports", "port"))]
        return Layout(*groups, dims)

    # ---- introspection --------------------------------------------------------------
    @classmethod
    def parameters(cls) -> Mapping[str, ParamInfo]:
        """Metadata of every parameter, in declaration order."""
        cached = cls.__dict__.get("_param_cache")
        if cached is not None:
            return cached
        out: dict[str, ParamInfo] = {}
        for f in cls.__dataclass_fields__.values():
            if f.metadata.get("units") is None or f.metadata.get("setting"):
                continue
            out[f.name] = ParamInfo(
                f.name, f.default, f.metadata["units"], f.metadata["bounds"],
                f.metadata["strict"], f.metadata["doc"],
            )
        proxy = MappingProxyType(out)
        type.__setattr__(cls, "_param_cache", proxy)
        return proxy

    def states(self) -> Mapping[str, Var]:
        """Metadata of the states by (dotted) name."""
        return self.layout.states.vars

    def inputs(self) -> Mapping[str, Var]:
        """Metadata of the inputs (manipulated, disturbance, port) by name."""
        return self.layout.inputs.vars

    def outputs(self) -> Mapping[str, Var]:
        """Metadata of the measured outputs by name."""
        return self.layout.outputs.vars

    def params(self) -> dict[str, Any]:
        """Current parameter values by name."""
        return {k: getattr(self, k) for k in type(self).parameters()}

    def get(self, name: str) -> Any:
        """Value of the parameter ``name`` (dotted inside a system)."""
        known = type(self).parameters()
        if name not in known:
            raise ConfigError(f"unknown parameter `{name}` of model `{self.name}`"
                              + suggest(name, known))
        return getattr(self, name)

    def _where(self, name: str) -> Any:
        """Accessor of parameter ``name`` for :func:`equinox.tree_at`."""
        return lambda m: getattr(m, name)

    # ---- construction helpers ---------------------------------------------------------
    def with_params(self, values: Mapping[str, Any]) -> Model:
        """Copy with parameters replaced, without validation: for values that are traced
        (inside ``jit``/``grad``) or symbolic (CasADi), where bounds cannot be checked."""
        if not values:
            return self
        names = list(values)
        return eqx.tree_at(lambda m: [self._where(k)(m) for k in names], self,
                           [values[k] for k in names])

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
        for k, v in values.items():
            if k not in known:
                raise ConfigError(f"unknown parameter `{k}` of model `{self.name}`"
                                  + suggest(k, known))
            info = known[k]
            check_value("parameter", k, v, info.units, info.bounds, info.strict)
        return self.with_params(values)

    def state(self, values: Mapping[str, Any] | Any | None = None, /, **kw: Any) -> Any:
        """Validated ``State`` tuple (numpy values) from defaults, a mapping by name, a
        tuple or a flat sequence, and keywords."""
        g = self.layout.states
        return g.unravel(g.values(values, **kw), numpy_ops)

    def input_values(self, values: Mapping[str, Any] | Any | None = None, /,
                     **kw: Any) -> Any:
        """Validated ``Inputs`` tuple of constants from defaults and overrides."""
        g = self.layout.inputs
        return g.unravel(g.values(values, **kw), numpy_ops)


def parameter_info(model: Model) -> Mapping[str, ParamInfo]:
    """Parameter metadata of a model instance (a unit's or a system's dotted names)."""
    cls = type(model)
    return cls.parameters(model) if cls._composite else cls.parameters()


def parameter_values(model: Model) -> dict[str, Any]:
    """Parameter values of a model instance by (dotted) name."""
    return type(model).params(model)
