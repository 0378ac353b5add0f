"""Live filtering: one sample at a time, late samples re-filtered exactly."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..errors import ConfigError, DataError, suggest
from .core import FilterSpec, FilterState, ekf_step, init_state
from .health import HealthCheck
from .ukf import ukf_step

if TYPE_CHECKING:
    from .api import ExtendedKalmanFilter

__all__ = ["FLEET_CHUNK", "LastUpdate", "LiveFilter", "fleet_chunk", "fleet_step_fn", "late_tail",
           "pack_state", "parse_sample", "state_size", "unpack_state"]


def pack_state(s: FilterState) -> Any:
    """The filter state as one flat vector: ``t``, ``z``, ``P`` (row-major), then the
    monitoring memory."""
    f = s.z.dtype
    return jnp.concatenate([jnp.reshape(s.t, (1,)).astype(f), s.z, s.P.ravel(), s.last_y,
                            s.same.astype(f), s.ewma, jnp.reshape(s.nis_avg, (1,)).astype(f),
                            s.gated.astype(f)])


def unpack_state(v: Any, nz: int, ny: int) -> FilterState:
    """The :class:`FilterState` of a packed vector (see :func:`pack_state`); ``nz``
    estimated quantities, ``ny`` measured values."""
    i = np.cumsum([1, nz, nz * nz, ny, ny, ny, 1])
    return FilterState(v[0], v[1:i[1]], v[i[1]:i[2]].reshape(nz, nz), v[i[2]:i[3]],
                       v[i[3]:i[4]].astype(np.int32), v[i[4]:i[5]], v[i[5]],
                       v[i[6]:i[6] + ny].astype(np.int32))


def state_size(nz: int, ny: int) -> int:
    """Length of a packed filter state; the live buffer appends the step summary
    (innovation, NIS, flags, used per value; NIS and its degrees of freedom)."""
    return 2 + nz + nz * nz + 4 * ny


_STEPS = {"ekf": ekf_step, "ukf": ukf_step}

#: Compiler options of the live step. XLA:CPU runs a program's kernels on its thread pool
#: (a thread hop per kernel, ~50–100 µs a call here) unless it has at most 8 kernels or
#: every buffer is at most 512 bytes; hoisting loop invariants out of the step's loop
#: leaves ~20 small kernels beside it, so the hoisting is switched off for this program:
#: one loop kernel and a few copies, run in the calling thread at any state size.
SEQUENTIAL = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}


def live_step_fn(spec: FilterSpec, method: str, health: HealthCheck | None = None) -> Any:
    """The live path: one compiled call per sample, with the spec baked in.

    The call takes one buffer (packed filter state, the last step's summary, the health
    check's memory and verdict) and one row ``[t, y..., u...]`` and returns the next
    buffer, so a sample costs one host-to-device copy and one output buffer: on a small
    CPU the fixed cost of a call grows with its number of arguments and results. The
    divergence check runs inside the call (see :class:`~.health.HealthCheck`): a healthy
    step costs no Python. Without ``health`` the buffer ends after the step summary.
    """
    nz = spec.nz
    ny = spec.ny
    n_state = state_size(nz, ny)
    o_mem = n_state + 4 * ny + 2

    def update(buf, row):
        state = unpack_state(buf[:n_state], nz, ny)
        new, rec = _STEPS[method](spec, state, row[0], row[1:1 + ny], row[1 + ny:])
        f = buf.dtype
        parts = [pack_state(new), rec.innovation, rec.nis_channel, rec.flags.astype(f),
                 rec.used.astype(f), jnp.stack([rec.nis, rec.dof.astype(f)])]
        if health is not None:
            parts += health.step(buf[o_mem:o_mem + health.memory_size], rec.nis,
                                 rec.dof.astype(f), new.z, jnp.diagonal(new.P))
        return jnp.concatenate(parts)

    def step(buf, row):
        # One pass of a loop whose trip count XLA cannot see (t is finite, so it is 1; a
        # second pass would start again from `buf` and give the same result). XLA:CPU
        # compiles a small loop into a single kernel (see processtwin.runtime), where
        # straight-line code runs as ~50–100 dispatched kernels.
        trips = 1 + jnp.isnan(row[0]).astype(jnp.int32)

        def body(c):
            return c[0] + 1, update(jnp.where(c[0] == 0, c[1], buf), row)

        return lax.while_loop(lambda c: c[0] < trips, body, (jnp.int32(0), buf))[1]

    return jax.jit(step, compiler_options=SEQUENTIAL)


#: Covariance entries per chunk of a CPU fleet update (see :func:`fleet_step_fn`): a chunk
#: holds ``FLEET_CHUNK // nz²`` twins (at least 1): 32 for 4 estimated quantities, 6 for 9.
#: Measured optimum ranges: 8–48 twins at nz = 4, 2–4 at nz = 9 (vmapped: 1.3–1.6× slower).
FLEET_CHUNK = 512


def fleet_chunk(nz: int) -> int:
    """Twins per chunk of a CPU fleet update of ``nz`` estimated quantities."""
    return max(1, FLEET_CHUNK // (int(nz) ** 2))


def fleet_step_fn(spec: FilterSpec, method: str, chunk: int | None) -> Any:
    """One filter step of every twin of a fleet, compiled: ``(states, t, Y, U) ->
    (states, records)`` with the twins on the leading axis of every argument but ``t``.

    ``chunk=None`` vmaps the step over the whole fleet (right for a GPU). With a number,
    the fleet runs ``chunk`` twins at a time in a loop (``lax.map``): on a CPU the vmapped
    step streams every intermediate of all twins through memory, kernel after kernel
    (~170 kernel runs for two RK4 sub-steps, each on the thread pool), where a chunk's
    working set stays in cache and its whole step is one kernel — 10,000 bioreactor twins
    in ~8 instead of ~11–12 ms on 2 cores (``experiments/bench/bench_estimate.py``);
    :func:`fleet_chunk` sizes the chunk by the covariance.
    """
    one = _STEPS[method]

    if chunk is None:
        def update(states, t, Y, U):
            return jax.vmap(lambda s, y, u: one(spec, s, t, y, u))(states, Y, U)
    else:
        def update(states, t, Y, U):
            return lax.map(lambda a: one(spec, a[0], t, a[1], a[2]), (states, Y, U),
                           batch_size=int(chunk))

    return jax.jit(update)


def parse_sample(ekf: ExtendedKalmanFilter, t: Any, y: Mapping[str, Any]
                 ) -> tuple[float, np.ndarray]:
    """A live sample as a time and a row in the filter's channel order, validated.

    Parameters
    ----------
    ekf : ExtendedKalmanFilter
        The filter whose channels the sample is read against.
    t : float
        Sampling time [model time unit].
    y : mapping
        Channel -> value [channel units]; a vector channel takes one value per element;
        missing channels are omitted (or NaN).

    Returns
    -------
    t, row : float, array (ny,)
        NaN where a channel is not measured.

    Raises
    ------
    DataError
        A time or value that is not a finite number (NaN: missing), an unknown channel,
        or a vector channel of the wrong length.
    """
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise DataError(f"sample time must be a number, got {t!r}.") from None
    if not math.isfinite(t):
        raise DataError(f"sample time must be finite, got {t}.")
    values = [math.nan] * len(ekf.flat_channels)
    index = ekf.channel_slots
    for k, v in y.items():
        j = index.get(k)
        if j is None:
            raise DataError(f"unknown channel `{k}`" + suggest(k, ekf.channels))
        if isinstance(j, slice):  # a vector channel: one value per element
            try:
                arr = np.asarray(v, dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise DataError(f"channel `{k}` must be numbers, got {v!r} at "
                                f"t={t:g}.") from None
            if arr.size != j.stop - j.start:
                raise DataError(f"channel `{k}` has {j.stop - j.start} elements, got "
                                f"{arr.size} values at t={t:g}.")
            if np.isinf(arr).any():
                raise DataError(f"channel `{k}` is infinite at t={t:g}; use NaN for "
                                "missing.")
            values[j] = arr.tolist()
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise DataError(f"channel `{k}` must be a number, got {v!r} at t={t}.") from None
        if math.isinf(v):
            raise DataError(f"channel `{k}` is {v} at t={t:g}; use NaN for missing.")
        values[j] = v
    row = np.array(values)
    return t, row


def late_tail(times: list[float], rows: list[np.ndarray], inputs: list[np.ndarray], k: int,
              t: float, row: np.ndarray, u_now: np.ndarray, channels: tuple[str, ...]
              ) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """The samples to process again, in order, when a late sample ``row`` at ``t`` goes in
    at position ``k`` of a log (``times``, ``rows``, ``inputs``): merged into the logged
    sample of the same time, or inserted before position ``k`` (with the inputs that were
    held then).

    Parameters
    ----------
    times, rows, inputs : lists
        The log: sample times [model time unit], channel rows, inputs held over the
        interval ending at each sample.
    k : int
        ``bisect_left(times, t)``.
    t : float
        Time of the late sample.
    row : array (ny,)
        Its values, NaN where not measured.
    u_now : array (nu,)
        The inputs held now (for a sample after the whole log).
    channels : tuple of str
        Flat channel names, for the error.

    Raises
    ------
    DataError
        A channel already logged at the same time.
    """
    if k < len(times) and times[k] == t:
        merged = rows[k].copy()
        clash = np.isfinite(merged) & np.isfinite(row)
        if clash.any():
            raise DataError(f"two samples of `{channels[int(np.argmax(clash))]}` at t={t:g}.")
        merged[np.isfinite(row)] = row[np.isfinite(row)]
        return [(t, merged, inputs[k])] + list(zip(times[k + 1:], rows[k + 1:],
                                                   inputs[k + 1:], strict=True))
    u_k = inputs[k] if k < len(inputs) else u_now
    return [(t, row, u_k)] + list(zip(times[k:], rows[k:], inputs[k:], strict=True))


class LastUpdate(dict):
    """What :meth:`LiveFilter.last_update` returns: per-channel results by flat channel
    name, plus the update's ``innovation_covariance`` (ny, ny) and ``gain`` (nz, ny)
    (``None`` before the first sample), indexed by ``names`` (rows of the gain) and
    ``channels``."""

    def __init__(self, per_channel: dict, S: Any, K: Any, names: tuple[str, ...],
                 channels: tuple[str, ...]) -> None:
        super().__init__(per_channel)
        self.innovation_covariance = S
        self.gain = K
        self.names = names
        self.channels = channels


def _explain_fn(spec: FilterSpec, state: FilterState, t: Any, y: Any, u: Any, method: str
                ) -> tuple[Any, Any]:
    return _STEPS[method](spec, state, t, y, u, explain=True)[2]


_explain = jax.jit(_explain_fn, static_argnames="method")


class LiveFilter:
    """One sample at a time, with late (out-of-sequence) samples re-filtered exactly.

    Every processed sample and the filter state before it are kept; a sample stamped
    earlier than the latest one is merged into the log at its sampling time and the
    filter is re-run from the state before it, so the result equals processing all
    samples in time order.

    Read the results with :attr:`z` and :attr:`sd` (vectors in the order of
    ``ekf.names``), :meth:`estimate` (by name), :attr:`state` (the full filter state)
    and :meth:`last_update` (innovations and flags of the latest step).

    Usually built by :meth:`ExtendedKalmanFilter.live
    <processtwin.estimate.ExtendedKalmanFilter.live>`, which prepares ``state`` and ``u``.

    Parameters
    ----------
    ekf : ExtendedKalmanFilter or UnscentedKalmanFilter
        The filter whose specification, channels and compiled step (EKF or UKF, by its
        ``method``) are used; kept as :attr:`ekf`.
    state : FilterState
        Filter state at the start; its ``t`` is the filter start time [model time unit]:
        no sample may be earlier.
    u : array (nu,)
        Inputs held from the start on [input units], flat in the order of
        ``ekf.model.layout.inputs``; replaced by :meth:`set_inputs` or the ``u`` of
        :meth:`step`.
    history : int
        Number of most recent samples (and the filter state before each) kept for
        re-filtering late samples, at least 1; the log is trimmed back to this length
        once it reaches twice it, and a sample older than what is kept raises
        :class:`~processtwin.errors.DataError`.
    on_divergence : {"flag", "reset"}
        Every sample is checked for divergence without the truth (a window of NIS, an
        estimate pinned at a bound, a standard deviation growing; see
        :class:`~processtwin.estimate.health.HealthCheck`): :attr:`divergence` holds the
        reason (``""`` when healthy) and :attr:`divergences` counts flagged samples.
        ``"reset"`` also re-initialises the filter when it is flagged: the covariance back
        to the initial one (the estimate kept), the monitoring memory cleared, the reset
        counted in :attr:`resets` and logged in :attr:`reset_log` as ``(t, reason)``;
        ``"off"`` ignores it (the check runs inside the compiled step either way; the
        batch ``filter`` always reports it).
    health_window : int
        Samples in the divergence check's window (default 20, at least 2); one compiled
        step per window length.
    """

    def __init__(self, ekf: ExtendedKalmanFilter, state: FilterState, u: np.ndarray, *,
                 history: int = 100_000, on_divergence: str = "flag",
                 health_window: int = 20) -> None:
        if int(history) < 1:
            raise ValueError(f"`history` must be at least 1 sample, got {history}.")
        if isinstance(health_window, bool) or not isinstance(health_window, int | np.integer) \
                or health_window < 2:
            raise ConfigError(f"`health_window` must be a whole number of samples ≥ 2, got "
                              f"{health_window!r}.")
        if on_divergence not in ("flag", "reset", "off"):
            raise ConfigError(f"`on_divergence` must be 'flag', 'reset' or 'off', got "
                              f"{on_divergence!r}.")
        self.ekf = ekf
        self._discrete = ekf.model.is_discrete
        self.on_divergence = on_divergence
        self._P_reset = np.asarray(state.P, dtype=float)
        self.divergence = ""
        self.divergences = 0
        self.resets = 0
        self.reset_log: list[tuple[float, str]] = []
        self.history = int(history)
        self._t: list[float] = []
        self._y: list[np.ndarray] = []
        self._u: list[np.ndarray] = []
        self._before: list[np.ndarray] = []  # host copy of the buffer before each sample
        self._nz = nz = ekf.spec.nz
        self._ny = ny = ekf.spec.ny
        self._n_state = state_size(nz, ny)
        self._index = ekf.channel_slots
        self._fn, self._health = ekf.live_step_function(health_window)
        self._o_mem = self._n_state + 4 * ny + 2
        self._o_verdict = self._o_mem + self._health.memory_size
        self._host = np.concatenate([np.asarray(pack_state(state)), np.full(4 * ny + 2, np.nan),
                                     np.zeros(self._health.memory_size
                                              + self._health.verdict_size)])
        self._buf = jnp.asarray(self._host)
        self._t0 = float(state.t)
        self._stepped = False
        self.u = np.asarray(u, dtype=float)
        self.refiltered = 0
        self.dropped = 0  # samples forgotten beyond ``history``

    def _read(self) -> np.ndarray:
        return self._host

    @property
    def z(self) -> np.ndarray:
        """Current estimate of the (augmented) state, in the order of ``ekf.flat_names``."""
        return self._read()[1:1 + self._nz]

    @property
    def sd(self) -> np.ndarray:
        """Current standard deviations, in the order of ``ekf.flat_names``."""
        nz = self._nz
        return np.sqrt(self._read()[1 + nz:1 + nz + nz * nz:nz + 1])

    @property
    def t(self) -> float:
        """Time of the current estimate [model time unit]."""
        return float(self._read()[0])

    @property
    def state(self) -> FilterState:
        """The current filter state (estimate, covariance, monitoring memory)."""
        return unpack_state(self._read()[:self._n_state], self._nz, self._ny)

    def set_inputs(self, u: Mapping[str, float]) -> None:
        """Inputs applied from the latest sample time on (e.g. a new feed setpoint); inputs
        not named keep their held values."""
        self.u = self.ekf.input_vector(u, base=self.u)

    def last_flags(self) -> np.ndarray:
        """Flag bits (:data:`~processtwin.estimate.FLAGS`) of each flat channel at the latest
        step, without the cost of :meth:`last_update` (zeros before the first sample)."""
        if not self._stepped:
            return np.zeros(self._ny, dtype=np.int64)
        v = self._read()[self._n_state:]
        return v[2 * self._ny:3 * self._ny].astype(np.int64)

    def _reason(self) -> str:
        """The divergence check's verdict on the latest sample (``""``: healthy)."""
        h = self._host
        if not h[self._o_verdict]:
            return ""
        return self._health.reason(h[self._o_verdict:], h[1:1 + self._nz])

    def last_update(self) -> LastUpdate:
        """The latest step: innovation, NIS, flags and use of each channel, and the
        update's innovation covariance and Kalman gain.

        Returns
        -------
        LastUpdate
            A mapping flat channel name → ``{"innovation", "nis", "flags", "used"}``
            (empty before the first sample), with attributes ``innovation_covariance``
            ``S`` (ny, ny) [channel units²] of every channel at the prediction and
            ``gain`` ``K`` (nz, ny) [state units / channel units], zero in the columns of
            channels that did not enter the update; rows ``names`` (:attr:`ekf.flat_names`),
            columns ``channels`` (:attr:`ekf.flat_channels`). Both are recomputed on
            demand from the state before the step, so the live path does not pay for
            them.
        """
        ekf = self.ekf
        if not self._stepped:
            return LastUpdate({}, None, None, ekf.flat_names, ekf.flat_channels)
        v = self._read()[self._n_state:]
        ny = self._ny
        out = {}
        for j, c in enumerate(ekf.flat_channels):
            out[c] = {"innovation": float(v[j]), "nis": float(v[ny + j]),
                      "flags": int(v[2 * ny + j]), "used": bool(v[3 * ny + j])}
        before = unpack_state(jnp.asarray(self._before[-1][:self._n_state]), self._nz, ny)
        S, K = _explain(ekf.spec, before, self._t[-1], self._y[-1], self._u[-1],
                        ekf.method)
        return LastUpdate(out, np.asarray(S), np.asarray(K), ekf.flat_names,
                          ekf.flat_channels)

    def step(self, t: float, y: Mapping[str, float], u: Mapping[str, float] | None = None
             ) -> None:
        """Process one sample ``y`` (channel → value, missing channels omitted) taken at
        ``t``; ``u`` are inputs applied from ``t`` on (the others, and all by default,
        unchanged). See
        :attr:`z`, :meth:`estimate` and :meth:`last_update` for the results.

        Atomic: every argument is validated before anything changes, so a step that raises
        leaves the filter exactly as it was and the corrected call can be retried.

        Parameters
        ----------
        t : float
            Sampling time [model time unit].
        y : mapping
            Channel → value [channel units]; a vector channel takes one value per element.
        u : mapping, optional
            Inputs applied from ``t`` on [input units]; inputs not named keep their held
            values.

        Raises
        ------
        DataError
            An unknown channel or input, a value that is not a finite number (NaN means
            missing), a sample before the start or older than the history kept, off a
            discrete model's sample grid, or a second value of a channel at the same time.
        """
        t, row = parse_sample(self.ekf, t, y)
        u_new = None if u is None else self.ekf.input_vector(u, base=self.u)
        if self._discrete:
            self.ekf.check_grid(np.array([t]), self._t0)
        if self._t and t <= self._t[-1]:
            self._insert_late(t, row)
        else:
            if not self._t and t < self._t0:
                raise DataError(f"sample at t={t:g} is before the filter start "
                                f"{self._t0:g}.")
            self._advance(t, row, self.u)
        if u_new is not None:
            self.u = u_new

    def _advance(self, t: float, row: np.ndarray, u: np.ndarray, check: bool = True) -> None:
        self._t.append(t)
        self._y.append(row)
        self._u.append(u)
        self._before.append(self._host)
        # one compiled call: device buffer in, one row [t, y, u] copied from the host
        self._buf = self._fn(self._buf, np.concatenate(((t,), row, u)))
        # a host copy (not a view) lets the device buffer be reused by the next call
        self._host = np.array(self._buf)
        self._stepped = True
        if check and self.on_divergence != "off":
            self._verdict(self._reason())
        if len(self._t) >= 2 * self.history:
            n = len(self._t) - self.history
            del self._t[:n], self._y[:n], self._u[:n], self._before[:n]
            self.dropped += n

    def _insert_late(self, t: float, row: np.ndarray) -> None:
        k = bisect.bisect_left(self._t, t)
        if k == 0:
            t_first = float(self._before[0][0])  # time of the oldest state kept
            if t < t_first or (self.dropped and t == t_first):
                where = (f"older than the {self.history} samples kept (from t={t_first:g}; "
                         "keep more with `history=`)" if self.dropped
                         else f"before the filter start t={t_first:g}")
                raise DataError(f"late sample at t={t:g} is {where}.")
        tail = late_tail(self._t, self._y, self._u, k, t, row, self.u,
                         self.ekf.flat_channels)
        self._host = self._before[k]
        self._buf = jnp.asarray(self._host)
        del self._t[k:], self._y[k:], self._u[k:], self._before[k:]
        for tt, yy, uu in tail:
            self._advance(tt, yy, uu, check=False)
        self.refiltered += len(tail) - 1
        # the health check's memory travels in the logged buffers: re-filtering restored it
        if self.on_divergence != "off":
            self._verdict(self._reason())

    def _verdict(self, reason: str) -> None:
        """Record the divergence check of the latest sample; apply the reset policy."""
        self.divergence = reason
        if not reason:
            return
        self.divergences += 1
        if self.on_divergence == "reset":
            nz = self._nz
            fresh = pack_state(init_state(self.ekf.spec, self.t, self.z, self._P_reset))
            host = self._host.copy()
            host[:self._n_state] = np.asarray(fresh)
            host[1:1 + nz] = self.z
            host[self._o_mem:self._o_verdict] = 0.0  # the check starts afresh
            self._host = host
            self._buf = jnp.asarray(host)
            self.resets += 1
            self.reset_log.append((self.t, reason))

    #: what :meth:`checkpoint` keeps: everything but the filter and its compiled step
    _SAVED = ("_P_reset", "divergence", "divergences", "resets", "reset_log",
              "history", "_t", "_y", "_u", "_before", "_host", "_t0", "_stepped", "u",
              "refiltered", "dropped", "on_divergence")

    def checkpoint(self) -> dict[str, Any]:
        """The filter's full state as plain data (estimate, covariance, monitoring memory,
        the samples kept for late arrivals and their states, counters): with
        :meth:`restore` a restarted twin continues exactly where this one stopped."""
        import copy

        return {k: copy.deepcopy(getattr(self, k)) for k in self._SAVED} | {
            "channels": list(self.ekf.flat_channels), "names": list(self.ekf.flat_names)}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` of a filter with the same channels and
        estimated quantities.

        Raises
        ------
        ConfigError
            The checkpoint was made for other channels or quantities, or by a filter
            with another divergence-check window (or another processtwin version).
        """
        if (list(state["channels"]) != list(self.ekf.flat_channels)
                or list(state["names"]) != list(self.ekf.flat_names)):
            raise ConfigError("checkpoint made for channels "
                              f"{state['channels']} and quantities {state['names']}; this "
                              f"filter has {list(self.ekf.flat_channels)} and "
                              f"{list(self.ekf.flat_names)}.")
        if np.shape(state["_host"]) != self._host.shape:
            raise ConfigError(f"checkpoint holds a filter buffer of {np.size(state['_host'])} "
                              f"values, this filter {self._host.size}: made with another "
                              "`health_window` or processtwin version.")
        for k in self._SAVED:
            setattr(self, k, state[k])
        self._buf = jnp.asarray(self._host)

    def estimate(self) -> dict[str, tuple[float, float]]:
        """Current estimate and standard deviation per state/parameter (a vector state's
        elements as ``T[0]``, ``T[1]``, ...)."""
        z, sd = self.z, self.sd
        return {k: (float(z[i]), float(sd[i])) for i, k in enumerate(self.ekf.flat_names)}
