"""Backend namespaces injected into model equations.

A model's ``rhs`` and ``measure`` use ``+ - * / **`` and these functions only, so the
same equations are traced by JAX, built as CasADi SX/MX expressions and written as Pyomo
expressions. Every namespace has the same members:

``exp, log, sqrt, tanh, abs, where(cond, a, b), gt(a, b), lt(a, b), maximum, minimum,
smooth_max(a, b, eps), smooth_min(a, b, eps), concat(seq)``.

``smooth_max(a, b, eps) = (a + b + sqrt((a - b)**2 + eps**2)) / 2`` is a twice
differentiable approximation of ``max`` for optimisers (error at most ``eps/2``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Ops", "casadi_ops", "jax_ops", "numpy_ops", "pyomo_ops"]


@dataclass(frozen=True)
class Ops:
    """A namespace of elementary functions for one numerical backend."""

    name: str
    exp: Callable[[Any], Any]
    log: Callable[[Any], Any]
    sqrt: Callable[[Any], Any]
    tanh: Callable[[Any], Any]
    abs: Callable[[Any], Any]
    where: Callable[[Any, Any, Any], Any]
    gt: Callable[[Any, Any], Any]
    lt: Callable[[Any, Any], Any]
    maximum: Callable[[Any, Any], Any]
    minimum: Callable[[Any, Any], Any]
    concat: Callable[[Sequence[Any]], Any]

    def smooth_max(self, a: Any, b: Any, eps: float = 1e-6) -> Any:
        """Smooth maximum of ``a`` and ``b`` with width ``eps`` (same units as a, b)."""
        return 0.5 * (a + b + self.sqrt((a - b) ** 2 + eps**2))

    def smooth_min(self, a: Any, b: Any, eps: float = 1e-6) -> Any:
        """Smooth minimum of ``a`` and ``b`` with width ``eps`` (same units as a, b)."""
        return 0.5 * (a + b - self.sqrt((a - b) ** 2 + eps**2))

    def __repr__(self) -> str:
        return f"<ops {self.name}>"


def _make_jax() -> Ops:
    import jax.numpy as jnp

    return Ops(
        name="jax",
        exp=jnp.exp,
        log=jnp.log,
        sqrt=jnp.sqrt,
        tanh=jnp.tanh,
        abs=jnp.abs,
        where=jnp.where,
        gt=jnp.greater,
        lt=jnp.less,
        maximum=jnp.maximum,
        minimum=jnp.minimum,
        concat=lambda xs: jnp.stack([jnp.asarray(x) for x in xs]),
    )


def _make_numpy() -> Ops:
    import numpy as np

    return Ops(
        name="numpy",
        exp=np.exp,
        log=np.log,
        sqrt=np.sqrt,
        tanh=np.tanh,
        abs=np.abs,
        where=np.where,
        gt=np.greater,
        lt=np.less,
        maximum=np.maximum,
        minimum=np.minimum,
        concat=lambda xs: np.stack([np.asarray(x) for x in xs]),
    )


def _make_casadi() -> Ops:
    import casadi as ca

    return Ops(
        name="casadi",
        exp=ca.exp,
        log=ca.log,
        sqrt=ca.sqrt,
        tanh=ca.tanh,
        abs=ca.fabs,
        where=lambda c, a, b: ca.if_else(c, a, b),
        gt=lambda a, b: a > b,
        lt=lambda a, b: a < b,
        maximum=ca.fmax,
        minimum=ca.fmin,
        concat=lambda xs: ca.vertcat(*xs),
    )


def _make_pyomo() -> Ops:
    import pyomo.environ as pyo

    def where(c: Any, a: Any, b: Any) -> Any:
        return pyo.Expr_if(IF=c, THEN=a, ELSE=b)

    return Ops(
        name="pyomo",
        exp=pyo.exp,
        log=pyo.log,
        sqrt=pyo.sqrt,
        tanh=pyo.tanh,
        abs=abs,
        where=where,
        gt=lambda a, b: a >= b,  # Pyomo has no strict relational in expressions
        lt=lambda a, b: a <= b,
        maximum=lambda a, b: where(a >= b, a, b),
        minimum=lambda a, b: where(a <= b, a, b),
        concat=list,
    )


class _Lazy:
    """Build a backend namespace on first attribute access, so importing
    :mod:`processtwin.ops` never imports CasADi or Pyomo."""

    def __init__(self, factory: Callable[[], Ops]) -> None:
        self._factory = factory
        self._ops: Ops | None = None

    def _get(self) -> Ops:
        if self._ops is None:
            self._ops = self._factory()
        return self._ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __repr__(self) -> str:
        return repr(self._get())


jax_ops: Ops = _Lazy(_make_jax)  # type: ignore[assignment]
numpy_ops: Ops = _Lazy(_make_numpy)  # type: ignore[assignment]
casadi_ops: Ops = _Lazy(_make_casadi)  # type: ignore[assignment]
pyomo_ops: Ops = _Lazy(_make_pyomo)  # type: ignore[assignment]
