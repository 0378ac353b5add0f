"""User-facing estimation API: build a filter for a model, run it over data or live."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ..errors import ConfigError, DataError, suggest
from ..model import Model
from .core import FLAGS, FilterSpec, Record, init_state, run
from .live import LiveFilter
from .ukf import run_ukf

__all__ = ["ExtendedKalmanFilter", "LiveFilter", "UnscentedKalmanFilter"]



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
    q : mapping, optional
        Process-noise intensity per state or tracked parameter [units² per time unit].
        Defaults: states ``(1e-3 · scale)²``, parameters ``(0.01 · value)²`` per time unit.
    r : mapping, optional
        Measurement-noise standard deviation per channel [channel units] (default: the
        output's ``noise``).
    gate : float
        Per-channel NIS above which a sample is rejected as a spike (chi²₁ 99.99 %: 15.13).
    stuck_n : int
        Consecutive identical values that mark a channel stuck.
    drift_limit : float
        Limit on the EWMA of normalised innovations, in its steady-state standard deviations.
    mismatch_limit : float
        Limit on the EWMA of NIS per degree of freedom (1 when consistent).
    dt_max : float
        Longest RK4 sub-step of the prediction [model time unit].
    """

    method = "ekf"

    def __init__(self, model: Model, *, estimate: Sequence[str] = (),
                 channels: Sequence[str] | None = None, q: Mapping[str, float] | None = None,
                 r: Mapping[str, float] | None = None, gate: float = 15.13, stuck_n: int = 6,
                 drift_lambda: float = 0.05, drift_limit: float = 5.0,
                 mismatch_lambda: float = 0.02, mismatch_limit: float = 3.0,
                 dt_max: float = 0.25) -> None:
        if not isinstance(model, Model):
            raise ConfigError(f"`model` must be a processtwin Model, got {model!r}.")
        params = model.parameters()
        for k in estimate:
            if k not in params:
                raise ConfigError(f"cannot estimate unknown parameter `{k}`"
                                  + suggest(k, params))
        outputs = model.outputs()
        channels = tuple(outputs) if channels is None else tuple(channels)
        for c in channels:
            if c not in outputs:
                raise ConfigError(f"unknown channel `{c}` of model `{model.name}`"
                                  + suggest(c, outputs))
        states = model.states()
        self.model = model
        self.names = (*states, *estimate)
        self.units = (*(v.units for v in states.values()),
                      *(params[k].units for k in estimate))
        q_given = dict(q or {})
        for k in q_given:
            if k not in self.names:
                raise ConfigError(f"`q`: unknown state or tracked parameter `{k}`"
                                  + suggest(k, self.names))
        q_default = [(1e-3 * max(abs(v.default), 1.0)) ** 2 for v in states.values()]
        q_default += [(0.01 * abs(getattr(model, k)) or 1e-6) ** 2 for k in estimate]
        qv = [q_given.get(k, d) for k, d in zip(self.names, q_default, strict=True)]
        r_given = dict(r or {})
        for k in r_given:
            if k not in channels:
                raise ConfigError(f"`r`: unknown channel `{k}`" + suggest(k, channels))
        rv = [r_given.get(c, outputs[c].noise) ** 2 for c in channels]
        if min(rv) <= 0:
            raise ConfigError("every channel needs a positive noise level; give `r`.")
        # projection bounds; an exclusive lower bound (a volume that divides) keeps a margin
        lower, upper = [], []
        for spec in [*states.values(), *(params[k] for k in estimate)]:
            lo, hi = spec.bounds
            lo = -np.inf if lo is None else lo
            lower.append(lo + 1e-9 * max(abs(lo), 1.0) if spec.strict else lo)
            upper.append(np.inf if hi is None else hi)
        f = float
        self.spec = FilterSpec(
            model, jnp.asarray(qv, dtype=float), jnp.asarray(rv, dtype=float),
            jnp.asarray(lower, dtype=float), jnp.asarray(upper, dtype=float), f(gate),
            f(drift_lambda), f(drift_limit), f(mismatch_lambda), f(mismatch_limit),
            tuple(estimate), channels, int(stuck_n), float(dt_max))
        self.channels = channels
        self._live_fn: Any = None  # compiled live step, built by the first LiveFilter

    # ---- helpers --------------------------------------------------------------------
    def initial(self, x0: Any = None, std: Mapping[str, float] | None = None) -> tuple:
        """Initial augmented estimate and covariance from a state (defaults) and standard
        deviations per name (default 10 % of the value, at least 1e-3)."""
        x = self.model.state(x0)
        z0 = [float(v) for v in x] + [float(getattr(self.model, k)) for k in self.spec.estimate]
        std = dict(std or {})
        for k in std:
            if k not in self.names:
                raise ConfigError(f"`std`: unknown name `{k}`" + suggest(k, self.names))
        sd = [std.get(k, max(0.1 * abs(v), 1e-3)) for k, v in zip(self.names, z0, strict=True)]
        return np.asarray(z0), np.diag(np.square(sd))

    def _input_vector(self, u: Mapping[str, float] | None) -> np.ndarray:
        specs = self.model.inputs()
        u = dict(u or {})
        for k in u:
            if k not in specs:
                raise DataError(f"unknown input `{k}`" + suggest(k, specs))
        vec = np.array([float(u.get(k, v.default)) for k, v in specs.items()])
        if not np.all(np.isfinite(vec)):
            raise DataError(f"inputs must be finite, got {u}.")
        return vec

    # ---- batch ----------------------------------------------------------------------
    def filter(self, data: xr.Dataset, *, x0: Any = None, std: Mapping[str, float] | None
               = None, inputs: xr.Dataset | Mapping[str, Any] | None = None,
               t0: float | None = None, smooth: bool = False,
               full_covariance: bool = False) -> xr.Dataset:
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
            Include the covariance ``P`` (time, row, col).
        """
        times, Y = self._validate(data)
        if inputs is None:  # inputs recorded in the data file (e.g. the feed F) are used
            inputs = {k: data[k] for k in self.model.inputs() if k in data.data_vars}
        U = self._inputs_at(inputs, times, data["time"].values[0])
        z0, P0 = self.initial(x0, std)
        start = times[0] if t0 is None else float(t0)
        if start > times[0]:
            raise DataError(f"`t0`={start:g} is after the first sample at {times[0]:g}.")
        state = init_state(self.spec, start, z0, P0)
        _, rec = _RUNS[self.method](self.spec, state, jnp.asarray(times), jnp.asarray(Y),
                          jnp.asarray(U))
        smoothed = _rts_jit(rec) if smooth else None
        return self._to_dataset(times, Y, rec, smoothed, full_covariance)

    def _inputs_at(self, inputs: Any, times: np.ndarray, origin: Any) -> np.ndarray:
        specs = self.model.inputs()
        U = np.tile(self._input_vector(None), (len(times), 1))
        if inputs is None:
            return U
        items = inputs.data_vars.items() if isinstance(inputs, xr.Dataset) else inputs.items()
        for k, v in items:
            if k not in specs:
                raise DataError(f"unknown input `{k}`" + suggest(k, specs))
            j = list(specs).index(k)
            if isinstance(v, xr.DataArray) and "time" in v.dims:
                tv = self._model_time(v["time"].values, origin)
                # the input applied over (t[k-1], t[k]] is the one set at t[k-1]
                prev = np.concatenate([[times[0]], times[:-1]])
                idx = np.clip(np.searchsorted(tv, prev, side="right") - 1, 0, len(tv) - 1)
                U[:, j] = np.asarray(v.values, dtype=float)[idx]
            else:
                U[:, j] = float(v)
        if not np.all(np.isfinite(U)):
            raise DataError("inputs must be finite (NaN/inf found).")
        return U

    def _model_time(self, t: np.ndarray, origin: Any) -> np.ndarray:
        """Times in the model's unit; datetime64 is taken relative to ``origin``."""
        if np.issubdtype(np.asarray(t).dtype, np.datetime64):
            unit = {"h": "h", "s": "s", "min": "m"}[self.model.time_unit]
            return np.asarray((t - origin) / np.timedelta64(1, unit), dtype=float)
        return np.asarray(t, dtype=float)

    def _validate(self, data: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(data, xr.Dataset):
            raise DataError(f"`data` must be an xarray.Dataset, got {type(data).__name__}.")
        if "time" not in data.coords:
            raise DataError("`data` needs a `time` coordinate.")
        outputs = self.model.outputs()
        inputs = self.model.inputs()
        for name, var in data.data_vars.items():
            if name not in outputs and name not in inputs:
                raise DataError(f"unknown channel `{name}` in data; model `{self.model.name}`"
                                f" measures " + ", ".join(outputs) + suggest(str(name), outputs))
            if name in outputs:
                units = var.attrs.get("units")
                if units is not None and units != outputs[name].units:
                    raise DataError(f"channel `{name}`: units {units!r} but the model expects "
                                    f"{outputs[name].units!r}.")
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
        Y = np.full((times.size, len(self.channels)), np.nan)
        for j, c in enumerate(self.channels):
            if c in data:
                Y[:, j] = np.asarray(data[c].values, dtype=float)
        if np.any(np.isinf(Y)):
            i, j = np.argwhere(np.isinf(Y))[0]
            raise DataError(f"channel `{self.channels[j]}` is {Y[i, j]} at t={times[i]:g}; "
                            "use NaN for a missing sample.")
        return _merge_same_times(times, Y, self.channels)

    def _to_dataset(self, times, Y, rec: Record, smoothed, full_covariance) -> xr.Dataset:
        data: dict[str, Any] = {}
        z = np.asarray(rec.z)
        P = np.asarray(rec.P)
        sd = np.sqrt(np.maximum(np.diagonal(P, axis1=1, axis2=2), 0.0))
        for i, (k, u) in enumerate(zip(self.names, self.units, strict=True)):
            role = "state" if i < self.spec.nx else "parameter"
            data[k] = ("time", z[:, i], {"units": u, "role": f"estimated_{role}"})
            data[f"{k}_std"] = ("time", sd[:, i], {"units": u, "long_name": f"std of {k}"})
        if smoothed is not None:
            zs, Ps = (np.asarray(a) for a in smoothed)
            sds = np.sqrt(np.maximum(np.diagonal(Ps, axis1=1, axis2=2), 0.0))
            for i, (k, u) in enumerate(zip(self.names, self.units, strict=True)):
                data[f"{k}_smooth"] = ("time", zs[:, i], {"units": u})
                data[f"{k}_smooth_std"] = ("time", sds[:, i], {"units": u})
        outputs = self.model.outputs()
        flags = np.asarray(rec.flags)
        for j, c in enumerate(self.channels):
            u = outputs[c].units
            data[f"{c}_meas"] = ("time", Y[:, j], {"units": u, "role": "measurement"})
            data[f"{c}_innov"] = ("time", np.asarray(rec.innovation)[:, j], {"units": u})
            data[f"{c}_nis"] = ("time", np.asarray(rec.nis_channel)[:, j], {"units": "1"})
            data[f"{c}_flag"] = ("time", flags[:, j], {
                "flag_masks": np.array(list(FLAGS.values()), dtype=np.int32),
                "flag_meanings": " ".join(FLAGS), "long_name": f"anomaly flags of {c}"})
            data[f"{c}_rejected"] = ("time", (np.isfinite(Y[:, j])
                                              & ~np.asarray(rec.used)[:, j]).astype(np.int8),
                                     {"long_name": f"{c} sample rejected (gated or stuck)"})
        data["nis"] = ("time", np.asarray(rec.nis), {"units": "1", "long_name":
                                                      "normalised innovation squared"})
        data["nis_dof"] = ("time", np.asarray(rec.dof).astype(np.int32), {"units": "1"})
        if full_covariance:
            data["P"] = (("time", "row", "col"), P, {"long_name": "estimate covariance"})
        coords: dict[str, Any] = {"time": ("time", times, {"units": self.model.time_unit})}
        if full_covariance:
            coords.update(row=list(self.names), col=list(self.names))
        return xr.Dataset(data, coords=coords, attrs={
            "model": self.model.name, "estimator": self.method.upper(),
            "estimated_parameters": " ".join(self.spec.estimate),
            "rejected_samples": int(sum(int(data[f"{c}_rejected"][1].sum())
                                        for c in self.channels))})

    # ---- live ----------------------------------------------------------------------
    def live(self, t0: float, *, x0: Any = None, std: Mapping[str, float] | None = None,
             u: Mapping[str, float] | None = None, history: int = 100_000) -> LiveFilter:
        """A stateful filter for live data starting at ``t0`` [model time unit].

        ``x0``/``std`` as in :meth:`initial`; ``u`` are the inputs held from ``t0`` on.
        The last ``history`` samples (and the filter state before each) are kept so that
        a late sample can be re-filtered exactly; an older one raises :class:`DataError`.
        """
        z0, P0 = self.initial(x0, std)
        return LiveFilter(self, init_state(self.spec, float(t0), z0, P0),
                          self._input_vector(u), history=history)


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
