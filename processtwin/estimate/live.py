"""Live filtering: one sample at a time, late samples re-filtered exactly."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError, suggest
from .core import FilterSpec, FilterState, ekf_step
from .ukf import ukf_step

if TYPE_CHECKING:
    from .api import ExtendedKalmanFilter

__all__ = ["LiveFilter"]


def _pack(s: FilterState) -> Any:
    """The filter state as one flat vector (one device buffer per live call, not seven)."""
    f = s.z.dtype
    return jnp.concatenate([jnp.reshape(s.t, (1,)).astype(f), s.z, s.P.ravel(), s.last_y,
                            s.same.astype(f), s.ewma, jnp.reshape(s.nis_avg, (1,)).astype(f)])


def _unpack(v: Any, nz: int, ny: int) -> FilterState:
    i = np.cumsum([1, nz, nz * nz, ny, ny, ny])
    return FilterState(v[0], v[1:i[1]], v[i[1]:i[2]].reshape(nz, nz), v[i[2]:i[3]],
                       v[i[3]:i[4]].astype(np.int32), v[i[4]:i[5]], v[i[5]])


_STEPS = {"ekf": ekf_step, "ukf": ukf_step}


def _live_step_fn(spec: FilterSpec, method: str) -> Any:
    """A step compiled with the filter's spec baked in, on packed states: the live path."""
    nz = len(spec.model.states()) + len(spec.estimate)
    ny = len(spec.channels)

    def step(v, t, y, u):
        new, rec = _STEPS[method](spec, _unpack(v, nz, ny), t, y, u)
        f = v.dtype
        summary = jnp.concatenate([rec.innovation, rec.nis_channel, rec.flags.astype(f),
                                   rec.used.astype(f), jnp.stack([rec.nis,
                                                                  rec.dof.astype(f)])])
        return _pack(new), summary

    return jax.jit(step)


class LiveFilter:
    """One sample at a time, with late (out-of-sequence) samples re-filtered exactly.

    Every processed sample and the filter state before it are kept; a sample stamped
    earlier than the latest one is merged into the log at its sampling time and the
    filter is re-run from the state before it, so the result equals processing all
    samples in time order.
    """

    def __init__(self, ekf: ExtendedKalmanFilter, state: FilterState, u: np.ndarray) -> None:
        self.ekf = ekf
        self._t: list[float] = []
        self._y: list[np.ndarray] = []
        self._u: list[np.ndarray] = []
        self._before: list[Any] = []
        self._nz = len(ekf.names)
        self._ny = len(ekf.channels)
        self._index = {c: j for j, c in enumerate(ekf.channels)}
        self._vec = _pack(state)
        self._t0 = float(state.t)
        self._summary: Any = None
        if ekf._live_fn is None:
            ekf._live_fn = _live_step_fn(ekf.spec, ekf.method)
        self._fn = ekf._live_fn
        self.u = u
        self.refiltered = 0

    @property
    def state(self) -> FilterState:
        """The current filter state (estimate, covariance, monitoring memory)."""
        return _unpack(np.asarray(self._vec), self._nz, self._ny)

    def set_inputs(self, u: Mapping[str, float]) -> None:
        """Inputs applied from the latest sample time on (e.g. a new feed setpoint)."""
        self.u = self.ekf._input_vector(u)

    def last_update(self) -> dict[str, dict[str, float]]:
        """Innovation, NIS, flags and use of each channel in the latest step."""
        if self._summary is None:
            return {}
        v = np.asarray(self._summary)
        ny = self._ny
        out = {}
        for j, c in enumerate(self.ekf.channels):
            out[c] = {"innovation": float(v[j]), "nis": float(v[ny + j]),
                      "flags": int(v[2 * ny + j]), "used": bool(v[3 * ny + j])}
        return out

    def step(self, t: float, y: Mapping[str, float], u: Mapping[str, float] | None = None
             ) -> None:
        """Process one sample ``y`` (channel → value, missing channels omitted) taken at
        ``t``; ``u`` are inputs applied from ``t`` on (default: unchanged). See
        :meth:`estimate` and :meth:`last_update` for the results."""
        values = [math.nan] * self._ny
        index = self._index
        for k, v in y.items():
            j = index.get(k)
            if j is None:
                raise DataError(f"unknown channel `{k}`" + suggest(k, self.ekf.channels))
            v = float(v)
            if math.isinf(v):
                raise DataError(f"channel `{k}` is {v} at t={t:g}; use NaN for missing.")
            values[j] = v
        row = np.array(values)
        t = float(t)
        if not math.isfinite(t):
            raise DataError(f"sample time must be finite, got {t}.")
        if self._t and t < self._t[-1]:
            self._insert_late(t, row)
        elif self._t and t == self._t[-1]:
            self._insert_late(t, row)
        else:
            if not self._t and t < self._t0:
                raise DataError(f"sample at t={t:g} is before the filter start "
                                f"{self._t0:g}.")
            self._advance(t, row, self.u)
        if u is not None:
            self.u = self.ekf._input_vector(u)

    def _advance(self, t: float, row: np.ndarray, u: np.ndarray) -> None:
        self._t.append(t)
        self._y.append(row)
        self._u.append(u)
        self._before.append(self._vec)
        self._vec, self._summary = self._fn(self._vec, t, row, u)

    def _insert_late(self, t: float, row: np.ndarray) -> None:
        k = bisect.bisect_left(self._t, t)
        if k < len(self._t) and self._t[k] == t:
            merged = self._y[k].copy()
            clash = np.isfinite(merged) & np.isfinite(row)
            if clash.any():
                raise DataError(f"two samples of `{self.ekf.channels[int(np.argmax(clash))]}`"
                                f" at t={t:g}.")
            merged[np.isfinite(row)] = row[np.isfinite(row)]
            tail = [(t, merged, self._u[k])] + list(zip(self._t[k + 1:], self._y[k + 1:],
                                                        self._u[k + 1:], strict=True))
        else:
            if k == 0 and t < self._t0:
                raise DataError(f"late sample at t={t:g} is before the filter start.")
            u_k = self._u[k] if k < len(self._u) else self.u
            tail = [(t, row, u_k)] + list(zip(self._t[k:], self._y[k:], self._u[k:],
                                              strict=True))
        self._vec = self._before[k]
        del self._t[k:], self._y[k:], self._u[k:], self._before[k:]
        for tt, yy, uu in tail:
            self._advance(tt, yy, uu)
        self.refiltered += len(tail) - 1

    def estimate(self) -> dict[str, tuple[float, float]]:
        """Current estimate and standard deviation per state/parameter name."""
        state = self.state
        z = np.asarray(state.z)
        sd = np.sqrt(np.diag(np.asarray(state.P)))
        return {k: (float(z[i]), float(sd[i])) for i, k in enumerate(self.ekf.names)}
