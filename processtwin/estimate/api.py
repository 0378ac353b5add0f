"""User-facing estimation API: build a filter for a model, run it over data or live."""

from __future__ import annotations

import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ..dataset import build, dim_coords, leaf_items
from ..errors import ConfigError, DataError, suggest
from ..model import Model, parameter_info, time_factor
from .core import FLAGS, FilterSpec, FilterState, Record, init_state, run
from .health import HealthCheck, divergence
from .live import LiveFilter, fleet_chunk, fleet_step_fn, live_step_fn
from .ukf import run_ukf

__all__ = ["EstimationResult", "ExtendedKalmanFilter", "LiveFilter", "UnscentedKalmanFilter"]



@dataclass(frozen=True, eq=False)
class EstimationResult:
    """Result of :meth:`ExtendedKalmanFilter.filter`.

    Attributes
    ----------
    data : xarray.Dataset
        Estimates (``<state>``, ``<state>_std``, tracked parameters), measurements
        (``<channel>_meas``), innovations, NIS, anomaly flags and rejections over ``time``.
    stats : dict
        ``samples``, ``rejected_samples``, ``method``, ``wall_time_s``.
    """

    data: xr.Dataset
    stats: dict


_RUNS = {"ekf": jax.jit(run), "ukf": jax.jit(run_ukf)}


def _rts(rec: Record) -> tuple[Any, Any]:
    """Rauch–Tung–Striebel smoother over a filtered history (backward ``lax.scan``)."""
    def body(carry, k):
        zs, Ps = carry
        z_f, P_f = rec.z[k], rec.P[k]
        F1, z_p1, P_p1 = rec.F[k + 1], rec.z_pred[k + 1], rec.P_pred[k + 1]
        C = jnp.linalg.solve(P_p1, F1 @ P_f).T
        z = z_f + C @ (zs - z_p1)
        P = P_f + C @ (Ps - P_p1) @ C.T
        P = 0.5 * (P + P.T)
        return (z, P), (z, P)

    n = rec.z.shape[0]
    last = (rec.z[-1], rec.P[-1])
    _, (z, P) = jax.lax.scan(body, last, jnp.arange(n - 2, -1, -1))
    return (jnp.concatenate([z[::-1], rec.z[-1:]]), jnp.concatenate([P[::-1], rec.P[-1:]]))


_rts_jit = jax.jit(_rts)


class ExtendedKalmanFilter:
    """Continuous-discrete EKF for a model, with optional parameter tracking.

    :class:`UnscentedKalmanFilter` has the same interface (sigma points instead of
    Jacobians in the prediction and the update).

    Parameters
    ----------
    model : Model
        The unit model (nominal parameters).
    estimate : sequence of str
        Parameters to track as bounded random walks (e.g. ``["mu_max"]``).
    channels : sequence of str, optional
        Outputs used as measurements (default: all outputs).
    q : mapping or array, optional
        Process-noise intensity per state or tracked parameter [units² per time unit]
        (a mapping by name, a vector state's value for each element or one per element);
        or the full intensity matrix (nz, nz), symmetric positive semi-definite, in the
        order of :attr:`flat_names`, for correlated noise. It is propagated exactly through
        the linearised dynamics over each interval (``processtwin.estimate.predict``).
        Defaults: states ``(1e-3 · scale)²``, parameters ``(0.01 · value)²`` per hour
        (converted to the model's time unit: a parameter drifts ~1 % per √h whether the
        model counts in seconds or hours). For a discrete-time model: the covariance added
        per sample [units²], defaults as above per sample.
    r : mapping or array, optional
        Measurement-noise standard deviation per channel [channel units] (default: the
        output's ``noise``); or the full covariance matrix (ny, ny) [channel units²] over
        :attr:`flat_channels`, symmetric positive definite, for correlated channels (two
        analysers sharing a sample line, the elements of a profile).
    gate : float or mapping
        NIS above which a channel's sample is rejected as a spike (chi²₁ 99.99 %: 15.13);
        a mapping channel → threshold gives per-channel gates (others keep 15.13;
        ``float("inf")`` never gates a channel — lab assays are rarely the outlier).
    stuck_n : int
        Consecutive identical values that mark a channel stuck.
    drift_lambda : float
        Weight of the newest sample in the per-channel EWMA of normalised innovations
        (bias / drift monitor) [-], in ``(0, 1]``; smaller is slower and smoother (memory
        of about ``1 / drift_lambda`` samples).
    drift_limit : float
        Limit on the EWMA of normalised innovations, in its steady-state standard deviations
        ``sqrt(drift_lambda / (2 - drift_lambda))``.
    mismatch_lambda : float
        Weight of the newest sample in the EWMA of NIS per degree of freedom (model
        mismatch monitor) [-], in ``(0, 1]``.
    mismatch_limit : float
        Limit on the EWMA of NIS per degree of freedom (1 when consistent).
    dt_max : float, optional
        Longest RK4 sub-step of the prediction [model time unit]; default a quarter of an
        hour in the model's unit (0.25 h, 15 min, 900 s). Shorter sub-steps are taken
        where the model is stiff (see :func:`processtwin.estimate.core.transition`).
    readmit_after : int
        A channel rejected by its gate that many times in a row has its next
        out-of-gate sample taken, with the prediction covariance inflated to match, and
        flagged ``mismatch`` — the filter, not the sensor, is then the likely culprit, and
        rejecting on would lock it out of the data that can correct it (default 3).
    """

    method = "ekf"

    def __init__(self, model: Model, *, estimate: Sequence[str] = (),
                 channels: Sequence[str] | None = None, q: Mapping[str, Any] | Any = None,
                 r: Mapping[str, float] | None = None, gate: float | Mapping[str, float] = 15.13,
                 stuck_n: int = 6,
                 drift_lambda: float = 0.05, drift_limit: float = 5.0,
                 mismatch_lambda: float = 0.02, mismatch_limit: float = 3.0,
                 dt_max: float | None = None, readmit_after: int = 3) -> None:
        if not isinstance(model, Model):
            raise ConfigError(f"`model` must be a processtwin Model, got {model!r}.")
        if isinstance(readmit_after, bool) or int(readmit_after) < 1:
            raise ConfigError(f"`readmit_after` must be a positive number of samples, got "
                              f"{readmit_after!r}.")
        params = parameter_info(model)
        if estimate and not params:
            raise ConfigError(
                f"cannot estimate {', '.join(f'`{k}`' for k in estimate)}: model "
                f"`{model.name}` declares no parameters; declare each as a field with "
                "`param(default, units=..., bounds=...)` (plain class attributes are "
                "constants).")
        for k in estimate:
            if k not in params:
                raise ConfigError(f"cannot estimate unknown parameter `{k}`"
                                  + suggest(k, params))
        lay = model.layout
        outputs = lay.outputs
        channels = tuple(outputs.names) if channels is None else tuple(channels)
        for c in channels:
            if c not in outputs:
                raise ConfigError(f"unknown channel `{c}` of model `{model.name}`"
                                  + suggest(c, outputs.names))
        if not channels:
            raise ConfigError(f"model `{model.name}` has no outputs to filter on.")
        states = lay.states
        self.model = model
        #: Names of the estimated quantities (states, then tracked parameters).
        self.names = (*states.names, *estimate)
        #: One name per element of the augmented state (``T[0]`` for vector states).
        self.flat_names = (*states.flat_names(), *estimate)
        self.units = (*(lf.var.units for lf in states.leaves),
                      *(params[k].units for k in estimate))
        sizes = [lf.size for lf in states.leaves] + [1] * len(estimate)
        q_matrix = None
        if q is not None and not isinstance(q, Mapping):
            q_matrix = np.asarray(q, dtype=float)
            nz = len(self.flat_names)
            if q_matrix.shape != (nz, nz):
                raise ConfigError(f"`q` as a matrix must be ({nz}, {nz}) over "
                                  f"{', '.join(self.flat_names)}; got {q_matrix.shape}.")
            if not np.allclose(q_matrix, q_matrix.T, rtol=1e-12, atol=0.0):
                raise ConfigError("`q` as a matrix must be symmetric.")
            if np.linalg.eigvalsh(q_matrix).min() < -1e-12 * max(np.abs(q_matrix).max(), 1e-300):
                raise ConfigError("`q` as a matrix must be positive semi-definite.")
            q = None
        q_given = dict(q or {})
        for k in q_given:
            if k not in self.names:
                raise ConfigError(f"`q`: unknown state or tracked parameter `{k}`"
                                  + suggest(k, self.names))
        default = states.defaults()
        # defaults are per hour whatever the model's time unit: a thermal model in seconds
        # must not let a parameter random-walk 60× faster than a bioreactor in hours
        per_unit = 1.0 if model.is_discrete else float(time_factor(model.time_unit, "h"))
        q_default = [per_unit * (1e-3 * max(float(np.max(np.abs(default[lf.start:lf.stop]))),
                                            1.0)) ** 2 for lf in states.leaves]
        q_default += [per_unit * (0.01 * abs(float(model.get(k))) or 1e-6) ** 2
                      for k in estimate]
        qv = np.concatenate([np.broadcast_to(np.asarray(q_given.get(k, d), dtype=float),
                                             (n,)) for k, d, n in
                             zip(self.names, q_default, sizes, strict=True)])
        if q_matrix is not None:
            qv = q_matrix
        R_matrix = None
        if r is not None and not isinstance(r, Mapping):
            R_matrix = np.asarray(r, dtype=float)
            flat = [n for c in channels for n in outputs.leaf(c).flat_names()]
            ny = len(flat)
            if R_matrix.shape != (ny, ny):
                raise ConfigError(f"`r` as a matrix must be ({ny}, {ny}) over "
                                  f"{', '.join(flat)}; got {R_matrix.shape}.")
            if not np.allclose(R_matrix, R_matrix.T, rtol=1e-12, atol=0.0):
                raise ConfigError("`r` as a matrix must be symmetric.")
            if not np.all(np.isfinite(R_matrix)) or np.linalg.eigvalsh(R_matrix).min() <= 0:
                raise ConfigError("`r` as a matrix must be positive definite (every channel "
                                  "has some noise).")
            r = None
        r_given = dict(r or {})
        for k in r_given:
            if k not in channels:
                raise ConfigError(f"`r`: unknown channel `{k}`" + suggest(k, channels))
        if R_matrix is not None:
            rv = np.diag(R_matrix).copy()
        else:
            rv = np.concatenate([np.broadcast_to(np.asarray(
                r_given.get(c, outputs.leaf(c).var.noise), dtype=float) ** 2,
                (outputs.leaf(c).size,)) for c in channels])
        if rv.min() <= 0:
            bad = next(c for c in channels
                       if np.min(r_given.get(c, outputs.leaf(c).var.noise)) <= 0)
            raise ConfigError(f"channel `{bad}` needs a positive noise level "
                              f"[{outputs.leaf(bad).var.units}]; give `r`.")
        # projection bounds; an exclusive lower bound (a volume that divides) keeps a margin
        lo_x, hi_x = states.bounds(strict_margin=1e-9)
        lower, upper = list(lo_x), list(hi_x)
        for k in estimate:
            lo, hi = params[k].bounds
            lo = -np.inf if lo is None else lo
            lower.append(lo + 1e-9 * max(abs(lo), 1.0) if params[k].strict else lo)
            upper.append(np.inf if hi is None else hi)
        if dt_max is None:  # a quarter of an hour whatever the model's time unit
            dt_max = 0.25 if model.is_discrete else 0.25 * float(time_factor("h",
                                                                               model.time_unit))
        if not float(dt_max) > 0:
            raise ConfigError(f"`dt_max` must be a positive time [{model.time_unit}], got "
                              f"{dt_max!r}.")
        f = float
        self.spec = FilterSpec(
            model, jnp.asarray(qv, dtype=float), jnp.asarray(rv, dtype=float),
            jnp.asarray(lower, dtype=float), jnp.asarray(upper, dtype=float),
            self._gates(gate, channels, outputs),
            f(drift_lambda), f(drift_limit), f(mismatch_lambda), f(mismatch_limit),
            tuple(estimate), channels, int(stuck_n), float(dt_max), int(readmit_after),
            None if R_matrix is None else jnp.asarray(R_matrix, dtype=float))
        self.channels = channels
        #: One name per measured value (``T[0]`` for the elements of a vector channel).
        self.flat_channels = tuple(n for c in channels for n in outputs.leaf(c).flat_names())
        #: Channel → its position (int) or slice (vector) in a sample vector.
        self.channel_slots: dict[str, int | slice] = {}
        pos = 0
        for c in channels:
            lf = outputs.leaf(c)
            self.channel_slots[c] = pos if not lf.shape else slice(pos, pos + lf.size)
            pos += lf.size
        # the model's input layout, read on every live step (`model.layout` rebuilds its
        # cache key from the model's fields: ~10 µs a call)
        self._inputs = model.layout.inputs
        self._fleet_fn: dict[int | None, Any] = {}  # compiled fleet updates by chunk
        # compiled live steps by divergence-check window, built by the first LiveFilter
        self._live_fn: dict[int, tuple[Any, HealthCheck]] = {}

    @staticmethod
    def _gates(gate: Any, channels: tuple[str, ...], outputs: Any) -> Any:
        """The gate as a scalar, or one threshold per measured element."""
        if not isinstance(gate, Mapping):
            g = float(gate)
            if not g > 0:
                raise ConfigError(f"`gate` must be a positive NIS threshold, got {gate!r}.")
            return g
        for c in gate:
            if c not in channels:
                raise ConfigError(f"`gate`: unknown channel `{c}`" + suggest(str(c), channels))
        per = []
        for c in channels:
            g = float(gate.get(c, 15.13))
            if not g > 0:
                raise ConfigError(f"`gate` of channel `{c}` must be a positive NIS "
                                  f"threshold, got {g!r}.")
            per += [g] * outputs.leaf(c).size
        return jnp.asarray(per, dtype=float)

    # ---- helpers --------------------------------------------------------------------
    def initial(self, x0: Any = None, std: Mapping[str, float] | None = None) -> tuple:
        """Initial augmented estimate and covariance from a state (mapping by name,
        defaults otherwise) and standard deviations per name (default 10 % of the value,
        at least 1e-3, in the units of each)."""
        x = self.model.layout.states.values(x0)
        z0 = np.concatenate([x, [float(self.model.get(k)) for k in self.spec.estimate]])
        std = dict(std or {})
        for k in std:
            if k not in self.names:
                raise ConfigError(f"`std`: unknown name `{k}`" + suggest(k, self.names))
        sd = np.maximum(0.1 * np.abs(z0), 1e-3)
        states = self.model.layout.states
        for k, v in std.items():
            if k in states:
                lf = states.leaf(k)
                sd[lf.start:lf.stop] = v
            else:
                sd[self.spec.nx + self.spec.estimate.index(k)] = v
        return z0, np.diag(np.square(sd))

    def input_vector(self, u: Mapping[str, Any] | None, base: np.ndarray | None = None
                     ) -> np.ndarray:
        """Flat input vector from values by (dotted) name; the others from ``base``, or
        their declared defaults.

        Parameters
        ----------
        u : mapping or None
            Input values [input units]; a vector input takes one value or one per element.
        base : array (nu,), optional
            The inputs the names not in ``u`` keep (a live filter's held inputs); default:
            the declared defaults.

        Raises
        ------
        DataError
            An unknown name, a value that is not a number, a vector of the wrong length or
            a non-finite value.
        """
        group = self._inputs
        u = dict(u or {})
        for k in u:
            if k not in group:
                raise DataError(f"unknown input `{k}`" + suggest(k, group.names))
        try:
            vec = group.values(u, base, check=False)
        except (TypeError, ValueError) as exc:  # ModelError and ConfigError included
            raise DataError(f"inputs {u}: {exc}") from None
        if not np.all(np.isfinite(vec)):
            raise DataError(f"inputs must be finite, got {u}.")
        return vec

    # ---- batch ----------------------------------------------------------------------
    def filter(self, data: xr.Dataset, *, x0: Any = None, std: Mapping[str, float] | None
               = None, inputs: xr.Dataset | Mapping[str, Any] | None = None,
               t0: float | None = None, smooth: bool = False,
               full_covariance: bool = False, inputs_apply: str = "next"
               ) -> EstimationResult:
        """Filter a whole history in one compiled scan.

        Parameters
        ----------
        data : xarray.Dataset
            Variables named after the channels over a ``time`` coordinate [model time
            unit]; NaN = not measured. A ``units`` attribute, when present, must match.
            Rows with the same time are merged.
        x0, std :
            Initial state and standard deviations (see :meth:`initial`).
        t0 : float, optional
            Time of the initial state [model time unit]; default the first sample time.
        inputs : Dataset or mapping, optional
            Input values over ``time`` (held from each row to the next) or constants;
            default: the model inputs found in ``data`` (others at their nominal value).
        smooth : bool
            Also return RTS-smoothed estimates (``<name>_smooth``, ``<name>_smooth_std``).
        full_covariance : bool
            Include the covariance as ``covariance`` (time, row, col) [products of the
            units of the row and column quantities].
        inputs_apply : {"next", "previous"}
            How an input record over ``time`` is aligned: ``"next"`` — the value stamped at
            a time is applied from then on, until the next record (a setpoint log);
            ``"previous"`` — the value stamped at a time is the one that acted over the
            interval *ending* there (historian exports that stamp averages or totals at
            the end of their interval).

        Returns
        -------
        EstimationResult
            ``.data``: estimates, standard deviations, measurements, innovations, NIS and
            flags over ``time`` (see the README); ``.stats``: samples, rejected samples,
            wall time.
        """
        wall = _time.perf_counter()
        times, Y = self._validate(data)
        if inputs is None:  # inputs recorded in the data file (e.g. the feed F) are used
            inputs = {k: data[k] for k in self.model.layout.inputs.names
                      if k in data.data_vars}
        if inputs_apply not in ("next", "previous"):
            raise ConfigError(f"`inputs_apply` must be 'next' or 'previous', got "
                              f"{inputs_apply!r}.")
        start = times[0] if t0 is None else float(t0)
        if start > times[0]:
            raise DataError(f"`t0`={start:g} is after the first sample at {times[0]:g}.")
        U = self._inputs_at(inputs, times, data["time"].values[0], start, inputs_apply)
        z0, P0 = self.initial(x0, std)
        self.check_grid(times, start)
        state = init_state(self.spec, start, z0, P0)
        if smooth and self.method not in _RUNS:
            raise ConfigError(f"`smooth=True` is not available for {self.method.upper()}; "
                              "use an ExtendedKalmanFilter or UnscentedKalmanFilter.")
        rec, extra = self._run(state, times, Y, U)
        smoothed = _rts_jit(rec) if smooth else None
        ds = self._to_dataset(times, Y, rec, smoothed, full_covariance)
        return EstimationResult(ds, {
            "samples": int(times.size), "rejected_samples": int(ds.attrs["rejected_samples"]),
            "method": self.method, **extra, "wall_time_s": _time.perf_counter() - wall})

    def _run(self, state: Any, times: np.ndarray, Y: np.ndarray, U: np.ndarray
             ) -> tuple[Record, dict]:
        """The filter over a validated history: the per-sample records stacked over time
        and any method-specific statistics."""
        _, rec = _RUNS[self.method](self.spec, state, jnp.asarray(times), jnp.asarray(Y),
                                    jnp.asarray(U))
        return rec, {}

    def check_grid(self, times: np.ndarray, t0: float) -> None:
        """A discrete-time model is sampled on its own grid: every time a whole number of
        sample periods after ``t0``.

        Parameters
        ----------
        times : array
            Sample times [model time unit].
        t0 : float
            Time of the initial estimate [model time unit].

        Raises
        ------
        DataError
            For the first time off the grid.
        """
        model = self.model
        if not model.is_discrete:
            return
        k = (np.asarray(times, dtype=float) - t0) / model.sample_time
        bad = np.flatnonzero(np.abs(k - np.rint(k)) > 1e-9 * np.maximum(1.0, np.abs(k)))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"sample at t={times[i]:g} {model.time_unit} is off the sample grid "
                            f"of discrete-time model `{model.name}` (every "
                            f"{model.sample_time:g} {model.time_unit} from t0={t0:g}).")

    def _inputs_at(self, inputs: Any, times: np.ndarray, origin: Any, start: float,
                   apply: str) -> np.ndarray:
        group = self.model.layout.inputs
        U = np.tile(self.input_vector(None), (len(times), 1))
        if inputs is None:
            return U
        items = inputs.data_vars.items() if isinstance(inputs, xr.Dataset) else inputs.items()
        for k, v in items:
            if k not in group:
                raise DataError(f"unknown input `{k}`" + suggest(str(k), group.names))
            lf = group.leaf(str(k))
            cols = slice(lf.start, lf.stop)
            if isinstance(v, xr.DataArray) and "time" in v.dims:
                tv = self._model_time(v["time"].values, origin)
                if apply == "next":
                    # over (t[k-1], t[k]]: the last record at or before the interval's start
                    begin = np.concatenate([[start], times[:-1]])
                    idx = np.searchsorted(tv, begin, side="right") - 1
                else:
                    # over (t[k-1], t[k]]: the first record at or after the interval's end
                    idx = np.searchsorted(tv, times, side="left")
                idx = np.clip(idx, 0, len(tv) - 1)
                vals = np.asarray(v.transpose("time", ...).values, dtype=float)[idx]
                U[:, cols] = vals.reshape(len(times), -1)
            else:
                U[:, cols] = np.broadcast_to(np.asarray(v, dtype=float), lf.shape or (1,))
        if not np.all(np.isfinite(U)):
            raise DataError("inputs must be finite (NaN/inf found).")
        return U

    def _model_time(self, t: np.ndarray, origin: Any) -> np.ndarray:
        """Times in the model's unit; datetime64 is taken relative to ``origin``."""
        if np.issubdtype(np.asarray(t).dtype, np.datetime64):
            unit = {"h": "h", "s": "s", "min": "m", "d": "D"}[self.model.time_unit]
            return np.asarray((t - origin) / np.timedelta64(1, unit), dtype=float)
        return np.asarray(t, dtype=float)

    def _validate(self, data: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(data, xr.Dataset):
            raise DataError(f"`data` must be an xarray.Dataset, got {type(data).__name__}.")
        if "time" not in data.coords:
            raise DataError("`data` needs a `time` coordinate.")
        outputs = self.model.layout.outputs
        inputs = self.model.layout.inputs
        for name, var in data.data_vars.items():
            if name not in outputs and name not in inputs:
                raise DataError(f"unknown channel `{name}` in data; model `{self.model.name}`"
                                f" measures " + ", ".join(outputs.names)
                                + suggest(str(name), outputs.names))
            if name in outputs:
                units = var.attrs.get("units")
                expected = outputs.leaf(str(name)).var.units
                if units is not None and units != expected:
                    raise DataError(f"channel `{name}`: units {units!r} but the model expects "
                                    f"{expected!r}.")
        times = self._model_time(data["time"].values, data["time"].values[0])
        if times.ndim != 1 or times.size == 0:
            raise DataError("`time` must be a non-empty 1-D coordinate.")
        if not np.all(np.isfinite(times)):
            raise DataError("`time` has non-finite values.")
        bad = np.flatnonzero(np.diff(times) < 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise DataError(f"`time` is not monotonic: t[{i}]={times[i]:g} comes after "
                            f"t[{i - 1}]={times[i - 1]:g} [{self.model.time_unit}].")
        Y = np.full((times.size, self.spec.ny), np.nan)
        for c, j in self.channel_slots.items():
            if c in data:
                da = data[c]
                vals = np.asarray(da.transpose("time", ...).values, dtype=float)
                width = 1 if isinstance(j, int) else j.stop - j.start
                if vals.reshape(times.size, -1).shape[1] != width:
                    raise DataError(f"channel `{c}` has {width} element(s) per sample, got "
                                    f"data of shape {vals.shape}.")
                Y[:, j] = vals if isinstance(j, int) else vals.reshape(times.size, width)
        if np.any(np.isinf(Y)):
            i, j = np.argwhere(np.isinf(Y))[0]
            raise DataError(f"channel `{self.flat_channels[j]}` is {Y[i, j]} at "
                            f"t={times[i]:g}; use NaN for a missing sample.")
        return _merge_same_times(times, Y, self.flat_channels)

    def _to_dataset(self, times, Y, rec: Record, smoothed, full_covariance) -> xr.Dataset:
        lay = self.model.layout
        aug = self._augmented_group()
        data: dict[str, Any] = {}
        z = np.asarray(rec.z)
        P = np.asarray(rec.P)
        sd = np.sqrt(np.maximum(np.diagonal(P, axis1=1, axis2=2), 0.0))
        nx = self.spec.nx
        for name, item in leaf_items(lay.states, z[:, :nx], "estimated_state", ("time",)):
            data[name] = item
        for name, item in leaf_items(aug, z[:, nx:], "estimated_parameter", ("time",)):
            data[name] = item
        for name, item in leaf_items(lay.states, sd[:, :nx], "std", ("time",), suffix="_std"):
            data[name] = item
        for name, item in leaf_items(aug, sd[:, nx:], "std", ("time",), suffix="_std"):
            data[name] = item
        if smoothed is not None:
            zs, Ps = (np.asarray(a) for a in smoothed)
            sds = np.sqrt(np.maximum(np.diagonal(Ps, axis1=1, axis2=2), 0.0))
            for arr, suffix, role in ((zs, "_smooth", "smoothed"), (sds, "_smooth_std", "std")):
                data.update(leaf_items(lay.states, arr[:, :nx], role, ("time",), suffix=suffix))
                data.update(leaf_items(aug, arr[:, nx:], role, ("time",), suffix=suffix))
        chans = self._channel_group()
        flags = np.asarray(rec.flags)
        rejected = (np.isfinite(Y) & ~np.asarray(rec.used)).astype(np.int8)
        data.update(leaf_items(chans, Y, "measurement", ("time",), suffix="_meas"))
        data.update(leaf_items(chans, np.asarray(rec.innovation), "innovation", ("time",),
                               suffix="_innov"))
        for name, (dims, v, attrs) in leaf_items(chans, np.asarray(rec.nis_channel),
                                                 "diagnostic", ("time",), suffix="_nis"):
            data[name] = (dims, v, {**attrs, "units": "1"})
        for name, (dims, v, _) in leaf_items(chans, flags, "diagnostic", ("time",),
                                             suffix="_flag"):
            c = name[:-5]
            data[name] = (dims, v, {
                "flag_masks": np.array(list(FLAGS.values()), dtype=np.int32),
                "flag_meanings": " ".join(FLAGS), "long_name": f"anomaly flags of {c}",
                "role": "diagnostic"})
        for name, (dims, v, _) in leaf_items(chans, rejected, "diagnostic", ("time",),
                                             suffix="_rejected"):
            data[name] = (dims, v, {"long_name": f"{name[:-9]} sample rejected (gated or "
                                                 "stuck)", "role": "diagnostic"})
        data["nis"] = (("time",), np.asarray(rec.nis), {
            "units": "1", "long_name": "normalised innovation squared", "role": "diagnostic"})
        data["nis_dof"] = (("time",), np.asarray(rec.dof).astype(np.int32),
                           {"units": "1", "role": "diagnostic"})
        flags, reasons = divergence(np.asarray(rec.nis), np.asarray(rec.dof), z, sd,
                                    np.asarray(self.spec.lower), np.asarray(self.spec.upper),
                                    self.flat_names)
        data["divergence"] = (("time",), flags.astype(np.int8), {
            "role": "diagnostic", "long_name": "filter looks diverged (NIS over a window, "
            "an estimate pinned at a bound, or a standard deviation growing)"})
        coords: dict[str, Any] = {"time": ("time", times, {"units": self.model.time_unit}),
                                  **dim_coords(lay.dims)}
        if full_covariance:
            if "covariance" in data:
                raise ConfigError(f"model `{self.model.name}` has a variable named "
                                  "`covariance`: `full_covariance=True` cannot add its own.")
            data["covariance"] = (("time", "row", "col"), P, {"long_name": "estimate covariance",
                                                     "role": "diagnostic"})
            coords.update(row=("row", list(self.flat_names)), col=("col", list(self.flat_names)))
        return build(data, coords, {
            "model": self.model.name, "estimator": self.method.upper(),
            "estimated_parameters": " ".join(self.spec.estimate),
            "divergence": next((f"first at t={times[k]:g}: {reasons[k]}"
                                for k in np.flatnonzero(flags)), ""),
            "rejected_samples": int(rejected.sum())})

    def _augmented_group(self) -> Any:
        """Layout of the tracked parameters (scalars), for the Dataset writer."""
        from ..layout import Group, Leaf
        from ..model import Var

        params = parameter_info(self.model)
        entries = [(k, Leaf(k, Var(params[k].units, params[k].doc), (), None, i, 1))
                   for i, k in enumerate(self.spec.estimate)]
        return Group(tuple, entries, "parameter", self.model.name)

    def _channel_group(self) -> Any:
        """Layout of the measured channels, in the order of a sample vector."""
        from ..layout import Group, Leaf

        outputs = self.model.layout.outputs
        entries, pos = [], 0
        for c in self.channels:
            lf = outputs.leaf(c)
            entries.append((c, Leaf(c, lf.var, lf.shape, lf.dim, pos, lf.size)))
            pos += lf.size
        return Group(tuple, entries, "channel", self.model.name)

    # ---- live ----------------------------------------------------------------------
    def observability(self, x0: Any = None, u: Mapping[str, Any] | None = None, *,
                      dt: float, samples: int = 50) -> Any:
        """Which states and tracked parameters the channels can determine, by name: the
        observability Gramian along a nominal trajectory (see
        :func:`processtwin.estimate.observability.observability`).

        Parameters
        ----------
        x0 : mapping, optional
            Initial state of the nominal trajectory [state units].
        u : mapping, optional
            Inputs held along it [input units].
        dt : float
            Sample period [model time unit].
        samples : int
            Number of samples.

        Returns
        -------
        ObservabilityReport
            ``.unobservable``, ``.weak``, ``.data`` (Cramér–Rao σ by name); ``str()`` says
            what to add.
        """
        from .observability import observability

        return observability(self, x0, u, dt=dt, samples=samples)

    def live_step_function(self, window: int = 20) -> tuple[Any, HealthCheck]:
        """The compiled live step of this filter with a divergence check over ``window``
        samples (built once per window, shared by its live filters): one buffer in (packed
        filter state and check memory), one row ``[t, y..., u...]``, one buffer out; and
        the check, which reads the verdict."""
        if window not in self._live_fn:
            health = HealthCheck(np.asarray(self.spec.lower), np.asarray(self.spec.upper),
                                 self.flat_names, max_dof=self.spec.ny, window=window)
            self._live_fn[window] = live_step_fn(self.spec, self.method, health), health
        return self._live_fn[window]

    def fleet_update(self, states: FilterState, t: Any, Y: Any, U: Any, *,
                     chunk: int | None | str = "auto") -> tuple[FilterState, Record]:
        """One filter step of every twin of a fleet: each its own state, sample and inputs.

        Parameters
        ----------
        states : FilterState
            The twins' filter states, twins on the leading axis of every field (e.g.
            ``jax.vmap(init_state, in_axes=(None, None, 0, None))(ekf.spec, t0, Z0, P0)``).
        t : float
            Sampling time of this update, common to the fleet [model time unit].
        Y : array (twins, ny)
            Each twin's sample in the order of :attr:`flat_channels` [channel units]; NaN
            where a channel is not measured.
        U : array (twins, nu)
            Inputs each twin held since its last update, flat [input units].
        chunk : int, None or "auto"
            Twins processed at a time (see :func:`~processtwin.estimate.live.fleet_step_fn`):
            ``None`` vmaps the whole fleet (a GPU); ``"auto"`` (default) is
            :func:`~processtwin.estimate.live.fleet_chunk` on a CPU (32 twins for 4
            estimated quantities, fewer for more), ``None`` elsewhere.

        Returns
        -------
        states, records : FilterState, Record
            The twins' states after the update and each update's record (innovations,
            NIS, flags), twins on the leading axis. One compiled program per ``chunk``
            (and fleet size), shared by later calls.

        Raises
        ------
        DataError
            ``Y`` or ``U`` not of one row per twin and one column per channel or input.
        """
        if self.method not in ("ekf", "ukf"):
            raise ConfigError(f"fleet updates are for the EKF and UKF, not {self.method!r}.")
        n = int(np.shape(states.z)[0]) if np.ndim(states.z) == 2 else -1
        for name, arr, width in (("Y", Y, self.spec.ny), ("U", U, self._inputs.size)):
            if n < 0 or np.shape(arr) != (n, width):
                raise DataError(f"fleet update: `{name}` must be (twins, {width}) for "
                                f"{n if n >= 0 else '?'} twins (states.z "
                                f"{tuple(np.shape(states.z))}), got {tuple(np.shape(arr))}.")
        if chunk == "auto":
            chunk = fleet_chunk(self.spec.nz) if jax.default_backend() == "cpu" else None
        if chunk is not None and (isinstance(chunk, bool)
                                  or not isinstance(chunk, int | np.integer) or chunk < 1):
            raise ConfigError(f"`chunk` must be a positive number of twins, None or 'auto', "
                              f"got {chunk!r}.")
        if chunk not in self._fleet_fn:
            chunk = None if chunk is None else int(chunk)
            self._fleet_fn[chunk] = fleet_step_fn(self.spec, self.method, chunk)
        return self._fleet_fn[chunk](states, t, Y, U)

    def live(self, t0: float, *, x0: Any = None, std: Mapping[str, float] | None = None,
             u: Mapping[str, float] | None = None, history: int = 100_000,
             on_divergence: str = "flag", health_window: int = 20) -> LiveFilter:
        """A stateful filter for live data starting at ``t0`` [model time unit].

        ``x0``/``std`` as in :meth:`initial`; ``u`` are the inputs held from ``t0`` on.
        The last ``history`` samples (and the filter state before each) are kept so that
        a late sample can be re-filtered exactly; an older one raises :class:`DataError`.
        ``on_divergence``: ``"flag"`` (default) reports a divergence in
        :attr:`LiveFilter.divergence`; ``"reset"`` also re-initialises the covariance to
        the initial one; ``"off"`` skips the check (see :class:`LiveFilter`);
        ``health_window``: samples in the check's window.
        """
        z0, P0 = self.initial(x0, std)
        return LiveFilter(self, init_state(self.spec, float(t0), z0, P0),
                          self.input_vector(u), history=history, on_divergence=on_divergence,
                          health_window=health_window)


def _merge_same_times(times: np.ndarray, Y: np.ndarray, channels: Sequence[str]):
    """One row per distinct time: channels from rows with equal time are merged."""
    uniq, inv = np.unique(times, return_inverse=True)
    if uniq.size == times.size:
        return times, Y
    out = np.full((uniq.size, Y.shape[1]), np.nan)
    for i, row in zip(inv, Y, strict=True):
        have = np.isfinite(row)
        clash = have & np.isfinite(out[i])
        if clash.any():
            raise DataError(f"two samples of `{channels[int(np.argmax(clash))]}` at "
                            f"t={uniq[i]:g}.")
        out[i, have] = row[have]
    return uniq, out


class UnscentedKalmanFilter(ExtendedKalmanFilter):
    """Continuous-discrete unscented Kalman filter (Julier & Uhlmann 2004) with the
    interface, options, monitoring and outputs of :class:`ExtendedKalmanFilter`.

    Each step integrates the 2n+1 sigma points over the interval (about 2n+1 times the
    EKF's cost); the RTS smoother uses the statistical linearisation of the transition
    (unscented RTS smoother, Särkkä 2008).
    """

    method = "ukf"
