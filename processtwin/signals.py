"""Input signals: constants, piecewise-constant schedules and interpolated time series."""

from __future__ import annotations

import functools
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError, DataError
from .model import SCALARS, Model, scalar_ok

__all__ = ["Signal", "as_inputs", "constant", "hold", "linear"]

Interpolation = Literal["hold", "linear"]


class Signal(eqx.Module):
    """An input signal of time (a scalar, or a vector for a vector input).

    ``"hold"``: value ``values[i]`` on ``[times[i], times[i+1])`` (zero-order hold, the last
    value holds forever, the first before ``times[0]``). ``"linear"``: linear
    interpolation, constant outside the knots. ``values`` is differentiable.

    Parameters
    ----------
    times : array, shape (K,)
        Knot times, strictly increasing, in the model's time unit.
    values : array, shape (K,) or (n, K)
        Values at the knots, in the input's units; ``(n, K)`` for a vector input of
        length n (the knot axis is last).
    interpolation : {"hold", "linear"}
        How to fill between knots.
    """

    times: Any
    values: Any
    interpolation: Interpolation = eqx.field(static=True, default="hold")

    def __call__(self, t: Any) -> Any:
        k = self.values.shape[-1]
        if k == 1:  # constant: no search in the integrator's inner loop
            return self.values[..., 0]
        # knots at or before t; a fused comparison for short schedules, an unrolled binary
        # search for long series (neither adds a loop inside the integrator's loop)
        n_le = (jnp.sum(self.times <= t) if k <= 64 else
                jnp.searchsorted(self.times, t, side="right", method="scan_unrolled"))
        if self.interpolation == "linear":
            i = jnp.clip(n_le - 1, 0, k - 2)
            t_a, t_b = self.times[i], self.times[i + 1]
            v_a, v_b = self.values[..., i], self.values[..., i + 1]
            frac = jnp.clip((t - t_a) / (t_b - t_a), 0.0, 1.0)
            return v_a + frac * (v_b - v_a)
        return self.values[..., jnp.clip(n_le - 1, 0, k - 1)]


def _asarray(v: Any) -> Any:
    """Host array for concrete values (no device dispatch), JAX array for tracers."""
    if isinstance(v, jax.core.Tracer | jax.Array):
        return jnp.asarray(v, dtype=float)
    return np.asarray(v, dtype=float)


def constant(value: float) -> Signal:
    """A constant signal.

    Parameters
    ----------
    value : float
        The value at all times [input units]; may be traced (differentiable).

    Returns
    -------
    Signal
        A one-knot ``"hold"`` signal.
    """
    return Signal(np.zeros(1), _asarray(value).reshape(1), "hold")


def hold(times: Any, values: Any) -> Signal:
    """A piecewise-constant schedule: ``values[i]`` from ``times[i]`` until ``times[i+1]``.

    Before ``times[0]`` the first value holds, after ``times[-1]`` the last.

    Parameters
    ----------
    times : array, shape (K,)
        Switching times, strictly increasing [model time unit].
    values : array, shape (K,) or (n, K)
        Value from each switching time on [input units]; ``(n, K)`` for a vector input of
        length n (the knot axis is last). May be traced (differentiable).

    Returns
    -------
    Signal
        A ``"hold"`` signal.
    """
    return Signal(_asarray(times), _asarray(values), "hold")


def linear(times: Any, values: Any) -> Signal:
    """A linearly interpolated time series (constant outside the knots).

    Parameters
    ----------
    times : array, shape (K,)
        Knot times, strictly increasing [model time unit].
    values : array, shape (K,) or (n, K)
        Values at the knots [input units]; ``(n, K)`` for a vector input of length n (the
        knot axis is last). May be traced (differentiable).

    Returns
    -------
    Signal
        A ``"linear"`` signal.
    """
    return Signal(_asarray(times), _asarray(values), "linear")


def _from_dataarray(da: Any) -> Signal:
    if "time" not in da.coords:
        raise DataError(f"input `{da.name}` needs a `time` coordinate, got dims {da.dims}.")
    kind = da.attrs.get("interpolation", "linear")
    da = da.transpose(..., "time")  # the knot axis last (a vector input: (n, K))
    return Signal(_asarray(da["time"].values), _asarray(da.values), kind)


def _validate(name: str, sig: Signal, units: str, bounds: tuple, strict: bool) -> None:
    if sig.interpolation not in ("hold", "linear"):
        raise ConfigError(f"input `{name}`: interpolation must be 'hold' or 'linear', "
                          f"got {sig.interpolation!r}.")
    if isinstance(sig.values, jax.core.Tracer) or isinstance(sig.times, jax.core.Tracer):
        return
    times = np.asarray(sig.times, dtype=float)
    values = np.asarray(sig.values, dtype=float)
    if times.shape[-1] != values.shape[-1] or times.shape[-1] == 0:
        raise DataError(f"input `{name}`: {times.shape[-1]} knot times but "
                        f"{values.shape[-1]} values.")
    bad = ~np.isfinite(values)
    if bad.any():
        i = np.argwhere(bad)[0]
        t_bad = np.broadcast_to(times, values.shape)[tuple(i)]
        raise DataError(f"input `{name}` is {values[tuple(i)]} at t={t_bad:g}; inputs must be "
                        f"finite [{units}].")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times, axis=-1) <= 0):
        raise DataError(f"input `{name}`: knot times must be finite and strictly increasing.")
    lo, hi = bounds
    for bound, below in ((lo, True), (hi, False)):
        if bound is None:
            continue
        viol = (values <= bound if strict else values < bound) if below else (
            values >= bound if strict else values > bound)
        if viol.any():
            i = tuple(np.argwhere(viol)[0])
            t_bad = np.broadcast_to(times, values.shape)[i]
            op = (">" if strict else "≥") if below else ("<" if strict else "≤")
            raise DataError(f"input `{name}` must be {op} {bound} [{units}], got {values[i]} "
                            f"[{units}] at t={t_bad:g}.")


@functools.lru_cache(maxsize=1024)
def _cached_constant(v: float) -> Signal:
    """A constant signal, shared between calls (its arrays are read-only)."""
    times, values = np.zeros(1), np.full(1, v)
    times.flags.writeable = values.flags.writeable = False
    return Signal(times, values, "hold")


def as_inputs(model: Model, inputs: Any = None, *, batch: bool = False) -> tuple[Signal, ...]:
    """Normalise user inputs to one :class:`Signal` per input of the model's layout.

    Parameters
    ----------
    model : Model
        The model instance.
    inputs : mapping, Inputs tuple or None
        Per input (dotted) name: a number (constant), an array (a vector input's constant
        values, or with ``batch`` one value per scenario), a :class:`Signal`, or an
        ``xarray.DataArray`` with a ``time`` coordinate (attribute ``interpolation``:
        ``"linear"`` default or ``"hold"``). Missing inputs take their nominal default.
    batch : bool
        Leading scenario axes are allowed (:func:`~processtwin.simulate.ensemble`).

    Returns
    -------
    tuple of Signal
        In the order of ``model.layout.inputs.leaves``; a vector input's values have the
        shape ``(..., n, K)``.

    Raises
    ------
    ConfigError
        Unknown input name, or arrays of the wrong shape.
    DataError
        Non-finite values, decreasing knot times or values outside the input's bounds.
    """
    group = model.layout.inputs
    given = group.as_mapping(inputs, "inputs")
    out = []
    for leaf in group.leaves:
        spec = leaf.var
        k = leaf.name
        v = given.get(k, spec.default)
        if isinstance(v, Signal):
            sig = v
        elif hasattr(v, "coords") and hasattr(v, "dims"):
            sig = _from_dataarray(v)
        elif type(v) in SCALARS and scalar_ok(float(v), spec.bounds, spec.strict) and (
                not leaf.shape):
            out.append(_cached_constant(float(v)))  # the common case, validated and reused
            continue
        else:
            arr = _asarray(v)
            sig = Signal(np.zeros(1), arr[..., None], "hold")
        if leaf.shape:
            sig = _vector_signal(k, sig, leaf.shape, batch)
        elif not batch and np.ndim(sig.values) != 1:
            raise ConfigError(f"input `{k}` is a scalar [{spec.units}], got values of shape "
                              f"{np.shape(sig.values)[:-1]} per knot; `simulate` runs one "
                              "scenario (use `ensemble` for arrays of values).")
        _validate(k, sig, spec.units, spec.bounds, spec.strict)
        out.append(sig)
    return tuple(out)


def _vector_signal(name: str, sig: Signal, shape: tuple[int, ...], batch: bool) -> Signal:
    """A vector input's signal with values ``(..., n, K)``; a scalar series is shared by
    every element."""
    values = sig.values
    n = shape[0]
    if np.ndim(values) == 1:  # one series for every element
        values = (jnp.broadcast_to(values, (n, values.shape[-1]))
                  if isinstance(values, jax.Array | jax.core.Tracer)
                  else np.broadcast_to(values, (n, values.shape[-1])))
    elif np.shape(values)[-2] != n or (not batch and np.ndim(values) != 2):
        raise ConfigError(f"input `{name}` is a vector of length {n}; got values of shape "
                          f"{np.shape(values)[:-1]} per knot.")
    return Signal(sig.times, values, sig.interpolation)
