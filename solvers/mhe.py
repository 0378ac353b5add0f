"""Moving-horizon estimation: the EKF's interface with a bounded least-squares window.

Each sample is first screened by one EKF step from the MHE's own previous estimate
(gating, stuck and drift flags, lock-out guard: the filter's monitoring, unchanged), then
the last ``window`` samples are re-fitted as a CasADi problem (fatrop, or IPOPT)
(:class:`~processtwin.solvers.mhe_nlp.WindowNLP`) with the states and tracked parameters
kept inside their bounds on every node. The arrival cost is the filtering update of Rao,
Rawlings & Lee (2001): the prior of the window's first node is the MHE estimate made when
that sample was the newest, with its covariance; that covariance is the Gauss–Newton one
of the window's last node (the Kalman covariance recursion linearised along the solution),
so for a linear model without active bounds the MHE equals the Kalman filter.
"""

from __future__ import annotations

import bisect
import time as _time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from processtwin.errors import ConfigError, DataError
from processtwin.estimate.api import ExtendedKalmanFilter
from processtwin.estimate.core import (
    FilterState,
    Record,
    init_state,
    measurement_noise,
    process_noise,
    state_scale,
    substeps,
)
from processtwin.estimate.live import (
    late_tail,
    live_step_fn,
    pack_state,
    parse_sample,
    state_size,
    unpack_state,
)
from processtwin.model import Model

from .mhe_nlp import WindowNLP

__all__ = ["LiveMHE", "MovingHorizonEstimator"]

def _interval(spec: Any, z: Any, P: Any, u: Any, t0: Any, t1: Any) -> tuple[Any, Any]:
    scale = state_scale(z, P)
    return substeps(spec, z, u, t0, t1, scale), process_noise(spec, z, u, t0, t1, scale)


_interval_jit = jax.jit(_interval)


def _psd_factor(Q: np.ndarray) -> np.ndarray:
    """``L`` with ``L Lᵀ = Q`` for a symmetric positive semi-definite ``Q``."""
    w, V = np.linalg.eigh(0.5 * (Q + Q.T))
    return V * np.sqrt(np.maximum(w, 0.0))


class MovingHorizonEstimator(ExtendedKalmanFilter):
    """Moving-horizon estimator with the interface, options and outputs of
    :class:`~processtwin.estimate.ExtendedKalmanFilter`.

    Parameters
    ----------
    model : Model
        The unit model (nominal parameters).
    window : int
        Samples in the estimation window ``N`` (default 20).
    tol : float
        Convergence tolerance of each window's solve (default 1e-8).
    max_iter : int
        Iteration limit per window.
    solver : {"fatrop", "ipopt"}
        NLP solver (both bundled with CasADi). fatrop exploits the window's stage
        structure; a window it fails on is solved again with IPOPT, and one that fails
        both keeps the screening EKF's estimate for that sample (counted in
        ``stats["fallback_steps"]``).
    **options
        Everything :class:`~processtwin.estimate.ExtendedKalmanFilter` takes
        (``estimate``, ``channels``, ``q``, ``r``, ``gate``, ...). Bounds come from the
        model's declarations (a substrate never negative) and the tracked parameters'.

    Notes
    -----
    ``filter(...)`` returns the EKF's Dataset with the MHE estimates and standard
    deviations; innovations, NIS and flags are those of the screening step against the
    MHE's prediction. ``stats`` adds ``window``, ``step_time_s`` (median per sample),
    ``step_time_s_max``, ``iterations`` (median), ``fallback_steps`` and
    ``solver_status`` (count per outcome: converged, limit, infeasible, numerical,
    failed). ``smooth=True`` is refused: the window's
    own solution is the smoother over it.
    """

    method = "mhe"

    def __init__(self, model: Model, *, window: int = 20, tol: float = 1e-8,
                 max_iter: int = 100, solver: str = "fatrop", **options: Any) -> None:
        super().__init__(model, **options)
        if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
            raise ConfigError(f"`window` must be a positive number of samples, got "
                              f"{window!r}.")
        if not tol > 0:
            raise ConfigError(f"`tol` must be positive, got {tol!r}.")
        if isinstance(max_iter, bool) or int(max_iter) < 1:
            raise ConfigError(f"`max_iter` must be a positive integer, got {max_iter!r}.")
        if solver not in ("fatrop", "ipopt"):
            raise ConfigError(f"`solver` must be 'fatrop' or 'ipopt', got {solver!r}.")
        self.solver = solver
        self.window = int(window)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self._nlps: dict[int, WindowNLP] = {}
        self._screen_fn: Any = None

    def nlp(self, substeps: int) -> WindowNLP:
        """The window problem with ``substeps`` steps per interval (built once)."""
        if substeps not in self._nlps:
            self._nlps[substeps] = WindowNLP(self.spec, self.window, substeps, self.tol,
                                             self.max_iter)
        return self._nlps[substeps]

    def screening_step_function(self) -> Any:
        """The compiled screening step (an EKF live step without the divergence check;
        see :class:`LiveMHE`)."""
        if self._screen_fn is None:
            self._screen_fn = live_step_fn(self.spec, "ekf")
        return self._screen_fn

    def live(self, t0: float, *, x0: Any = None, std: Mapping[str, float] | None = None,
             u: Mapping[str, float] | None = None, history: int = 100_000) -> LiveMHE:
        """A stateful estimator for live data from ``t0`` [model time unit] (see
        :meth:`ExtendedKalmanFilter.live
        <processtwin.estimate.ExtendedKalmanFilter.live>`)."""
        z0, P0 = self.initial(x0, std)
        return LiveMHE(self, init_state(self.spec, float(t0), z0, P0), self.input_vector(u),
                       history=history)

    def _run(self, state: FilterState, times: np.ndarray, Y: np.ndarray, U: np.ndarray
             ) -> tuple[Record, dict]:
        live = LiveMHE(self, state, U[0], history=len(times) + 1)
        for t, y, u in zip(times, Y, U, strict=True):
            live.advance(float(t), y, u)
        return live.record(), live.stats()


class LiveMHE:
    """Moving-horizon estimation one sample at a time, late samples re-estimated exactly.

    The same contract as :class:`~processtwin.estimate.LiveFilter`: :meth:`step` is atomic
    (validated before anything changes), a late sample (a lab assay stamped earlier than
    the latest sample) is merged at its sampling time and every window from there on is
    solved again, so the result equals processing the samples in time order; read
    :attr:`z`, :attr:`sd`, :meth:`estimate` and :meth:`last_update`.

    Parameters
    ----------
    mhe : MovingHorizonEstimator
        The estimator (specification, window, compiled screening step).
    state : FilterState
        Estimate and covariance at the start; no sample may be earlier than ``state.t``.
    u : array (nu,)
        Inputs held from the start on [input units], flat.
    history : int
        Samples kept for late re-estimation (at least the window).
    """

    def __init__(self, mhe: MovingHorizonEstimator, state: FilterState, u: np.ndarray, *,
                 history: int = 100_000) -> None:
        if int(history) < 1:
            raise ValueError(f"`history` must be at least 1 sample, got {history}.")
        self.ekf = self.mhe = mhe
        self.history = max(int(history), mhe.window)
        self._nz, self._ny = mhe.spec.nz, mhe.spec.ny
        self._n_state = state_size(self._nz, self._ny)
        self._init = np.concatenate([np.asarray(pack_state(state)),
                                     np.full(4 * self._ny + 2, np.nan)])
        self._host = self._init
        self._t0 = float(state.t)
        self._fn = mhe.screening_step_function()
        self._R = np.asarray(measurement_noise(mhe.spec), dtype=float)
        self._whiten: dict[bytes, np.ndarray] = {}  # by the mask of used channels
        self._lower = np.asarray(mhe.spec.lower, dtype=float)
        self._upper = np.asarray(mhe.spec.upper, dtype=float)
        self.u = np.asarray(u, dtype=float)
        # per sample: time, values, inputs, buffer after it, noise factor and sub-steps
        # of the interval ending there, solver outcome
        self._t: list[float] = []
        self._y: list[np.ndarray] = []
        self._u: list[np.ndarray] = []
        self._after: list[np.ndarray] = []
        self._L: list[np.ndarray] = []
        self._n: list[int] = []
        self._info: list[dict] = []
        self._guess: tuple[int, np.ndarray, np.ndarray] | None = None
        self.refiltered = 0
        self.dropped = 0

    # ---- reading ---------------------------------------------------------------------
    @property
    def z(self) -> np.ndarray:
        """Current estimate, in the order of ``mhe.flat_names``."""
        return self._host[1:1 + self._nz]

    @property
    def sd(self) -> np.ndarray:
        """Current standard deviations (Gauss–Newton, of the window's last node)."""
        nz = self._nz
        return np.sqrt(np.maximum(self._host[1 + nz:1 + nz + nz * nz:nz + 1], 0.0))

    @property
    def t(self) -> float:
        """Time of the current estimate [model time unit]."""
        return float(self._host[0])

    @property
    def state(self) -> FilterState:
        """The current filter state (estimate, covariance, monitoring memory)."""
        return unpack_state(self._host[:self._n_state], self._nz, self._ny)

    def estimate(self) -> dict[str, tuple[float, float]]:
        """Current estimate and standard deviation by flat name."""
        return {k: (float(a), float(b))
                for k, a, b in zip(self.mhe.flat_names, self.z, self.sd, strict=True)}

    def last_update(self) -> dict[str, Any]:
        """Per-channel innovation, NIS, flags and use in the latest screening step, and
        the latest window's ``solver`` outcome (status, iterations, time)."""
        if not self._t:
            return {}
        v = self._host[self._n_state:]
        ny = self._ny
        out: dict[str, Any] = {
            c: {"innovation": float(v[j]), "nis": float(v[ny + j]),
                "flags": int(v[2 * ny + j]), "used": bool(v[3 * ny + j])}
            for j, c in enumerate(self.mhe.flat_channels)}
        out["solver"] = {k: self._info[-1][k] for k in ("status", "iterations", "solve_s")}
        return out

    def set_inputs(self, u: Mapping[str, float]) -> None:
        """Inputs applied from the latest sample time on (the others keep their values)."""
        self.u = self.mhe.input_vector(u, base=self.u)

    # ---- stepping --------------------------------------------------------------------
    def step(self, t: float, y: Mapping[str, float], u: Mapping[str, float] | None = None
             ) -> None:
        """Process one sample ``y`` (channel → value) taken at ``t`` [model time unit];
        ``u`` are the inputs applied from ``t`` on. Atomic, as
        :meth:`LiveFilter.step <processtwin.estimate.LiveFilter.step>`.

        Raises
        ------
        DataError
            As :meth:`LiveFilter.step <processtwin.estimate.LiveFilter.step>`.
        """
        t, row = parse_sample(self.mhe, t, y)
        u_new = None if u is None else self.mhe.input_vector(u, base=self.u)
        self.mhe.check_grid(np.array([t]), self._t0)
        if self._t and t <= self._t[-1]:
            self._insert_late(t, row)
        else:
            if t < self._t0:
                raise DataError(f"sample at t={t:g} is before the estimator start "
                                f"{self._t0:g}.")
            self.advance(t, row, self.u)
        if u_new is not None:
            self.u = u_new

    def _insert_late(self, t: float, row: np.ndarray) -> None:
        k = bisect.bisect_left(self._t, t)
        start = self._before(k)
        if k == 0 and (t < float(start[0]) or (self.dropped and t == float(start[0]))):
            where = (f"older than the {self.history} samples kept" if self.dropped
                     else f"before the estimator start t={float(start[0]):g}")
            raise DataError(f"late sample at t={t:g} is {where}.")
        tail = late_tail(self._t, self._y, self._u, k, t, row, self.u, self.mhe.flat_channels)
        for log in (self._t, self._y, self._u, self._after, self._L, self._n, self._info):
            del log[k:]
        self._host = start
        self._guess = None
        for tt, yy, uu in tail:
            self.advance(tt, yy, uu)
        self.refiltered += len(tail) - 1

    def _before(self, k: int) -> np.ndarray:
        """Buffer before sample ``k`` of the log."""
        return self._after[k - 1] if k > 0 else self._init if not self.dropped else \
            self._oldest

    def advance(self, t: float, row: np.ndarray, u: np.ndarray) -> None:
        """Take one validated, in-order sample (``row`` in channel order, NaN where not
        measured; ``u`` held over the interval ending at ``t``)."""
        wall = _time.perf_counter()
        before = self._host
        nz = self._nz
        buf = np.array(self._fn(jnp.asarray(before), np.concatenate(((t,), row, u))))
        n, Q = _interval_jit(self.mhe.spec, jnp.asarray(before[1:1 + nz]),
                             jnp.asarray(before[1 + nz:1 + nz + nz * nz].reshape(nz, nz)),
                             jnp.asarray(u), float(before[0]), t)
        self._t.append(t)
        self._y.append(row)
        self._u.append(u)
        self._L.append(_psd_factor(np.asarray(Q)))
        self._n.append(max(int(n), 1))
        info = self._solve(buf)
        info["step_s"] = _time.perf_counter() - wall
        self._info.append(info)
        self._after.append(buf)
        self._host = buf
        if len(self._t) >= 2 * self.history:
            m = len(self._t) - self.history
            self._oldest = self._after[m - 1]
            for log in (self._t, self._y, self._u, self._after, self._L, self._n, self._info):
                del log[:m]
            self.dropped += m
            self._guess = None

    def _solve(self, buf: np.ndarray) -> dict:
        """Solve the window ending at the newest sample and write its estimate into
        ``buf`` (kept as the EKF's where the solve fails)."""
        mhe, nz, ny, N = self.mhe, self._nz, self._ny, self.mhe.window
        K = len(self._t) - 1
        first = max(0, K - N + 1)
        pad = N - (K - first + 1)
        prior = self._before(first)
        P0 = prior[1 + nz:1 + nz + nz * nz].reshape(nz, nz)
        zbar = prior[1:1 + nz]
        T = np.concatenate([np.full(pad + 1, prior[0]), self._t[first:]])
        used_off = self._n_state + 3 * ny
        W = np.zeros((N, ny, ny))
        Y = np.zeros((N, ny))
        U = np.tile(self._u[first], (N, 1))
        L = np.zeros((N, nz, nz))
        for j, i in enumerate(range(first, K + 1), start=pad):
            mask = (buf if i == K else self._after[i])[used_off:used_off + ny] > 0.5
            W[j] = self._whitening(mask)
            Y[j] = np.where(mask, self._y[i], 0.0)
            U[j] = self._u[i]
            L[j] = self._L[i]
        nlp = mhe.nlp(max(self._n[first:]))
        z_new = np.clip(buf[1:1 + nz], self._lower, self._upper)
        if self._guess is not None and self._guess[0] == K - 1:
            _, Zp, Vp = self._guess  # the previous window, shifted by one sample
            Zg = np.vstack([Zp[1:], z_new])
            Vg = np.vstack([Vp[1:], np.zeros(nz)])
        else:
            nodes = [zbar] * (pad + 1) + [self._after[i][1:1 + nz] for i in range(first, K)]
            Zg = np.vstack([*nodes, z_new])
            Vg = np.zeros((N, nz))
        wall = _time.perf_counter()
        Z, V, info = nlp.solve(zbar, P0, T, Y, W, U, L, (Zg, Vg), mhe.solver)
        if not info["success"] and mhe.solver != "ipopt":  # IPOPT as the second opinion
            Z, V, info = nlp.solve(zbar, P0, T, Y, W, U, L, (Zg, Vg), "ipopt")
        ok = info["success"]
        if ok:
            P = nlp.last_covariance(Z, U, T, L, P0, W)
            buf[1:1 + nz] = np.clip(Z[-1], self._lower, self._upper)
            buf[1 + nz:1 + nz + nz * nz] = P.ravel()
            self._guess = (K, Z, V)
        else:
            self._guess = None
        info["solve_s"] = _time.perf_counter() - wall
        info["fallback"] = not ok
        return info

    def _whitening(self, mask: np.ndarray) -> np.ndarray:
        """``W`` with ``W R Wᵀ = I`` on the used channels and zero columns elsewhere."""
        key = mask.tobytes()
        if key not in self._whiten:
            W = np.zeros_like(self._R)
            idx = np.flatnonzero(mask)
            if idx.size:
                C = np.linalg.cholesky(self._R[np.ix_(idx, idx)])
                W[np.ix_(idx, idx)] = np.linalg.solve(C, np.eye(idx.size))
            self._whiten[key] = W
        return self._whiten[key]

    # ---- results ---------------------------------------------------------------------
    def record(self) -> Record:
        """The per-sample results stacked over time (as the EKF's ``Record``; the
        prediction fields the RTS smoother needs are ``None``)."""
        B = np.array(self._after)
        nz, ny, o = self._nz, self._ny, self._n_state
        def part(i: int) -> np.ndarray:  # the i-th per-channel block of the step summary
            return B[:, o + i * ny:o + (i + 1) * ny]

        return Record(np.array(self._t), B[:, 1:1 + nz],
                      B[:, 1 + nz:1 + nz + nz * nz].reshape(-1, nz, nz), None, None, None,
                      part(0), None, part(1), B[:, o + 4 * ny],
                      B[:, o + 4 * ny + 1].astype(np.int32), part(2).astype(np.int32),
                      part(3) > 0.5)

    def stats(self) -> dict:
        """Window, per-sample time (median, max) [s], solver iterations (median), fallback
        steps and the count of each solver status."""
        steps = np.array([i["step_s"] for i in self._info])
        return {"window": self.mhe.window,
                "step_time_s": float(np.median(steps)) if steps.size else 0.0,
                "step_time_s_max": float(steps.max()) if steps.size else 0.0,
                "iterations": float(np.median([i["iterations"] for i in self._info]))
                if self._info else 0.0,
                "fallback_steps": int(sum(i["fallback"] for i in self._info)),
                "solver_status": dict(Counter(i["status"] for i in self._info))}
