"""Continuous-discrete extended Kalman filter: pure functions over pytrees.

The state is augmented with any model parameters to be tracked as bounded random walks.
Prediction integrates the model over the (irregular) sample interval with RK4 sub-steps
(at most ``dt_max`` long) and linearises that map with ``jax.jacfwd``; the update uses only
the channels present in the sample (NaN = not measured), gates outliers on their
normalised innovation, and keeps the covariance symmetric positive definite (Joseph form).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..model import Model
from ..ops import jax_ops

__all__ = ["FLAGS", "FilterSpec", "FilterState", "Record", "ekf_step", "init_state",
           "measurement_noise", "noise_intensity", "predict", "process_noise", "propagate",
           "substeps", "transition"]

#: Anomaly flag bits (CF ``flag_masks``), per channel and sample.
FLAGS = {"spike": 1, "stuck": 2, "drift": 4, "mismatch": 8}


class FilterSpec(eqx.Module):
    """Everything the filter needs besides the data: model, tracked parameters, noise.

    Attributes
    ----------
    model : Model
        Nominal model; parameters listed in ``estimate`` are overwritten by the state.
    estimate : tuple of str
        Names of parameters augmented to the state as random walks.
    channels : tuple of str
        Output names used as measurements, in order.
    q : array (nz,) or (nz, nz)
        Process-noise intensity of the augmented state [units² per time unit]: its
        diagonal, or the full (symmetric, positive semi-definite) matrix for correlated
        noise. The covariance it adds over an interval is propagated exactly through the
        linearised dynamics (:func:`predict`). For a discrete-time model: the covariance
        added per sample [units²].
    r : array (ny,)
        Measurement-noise variance per measured value [units²] (the diagonal of ``R``).
    lower, upper : array (nz,)
        Bounds the estimate is projected onto (``±inf`` where unbounded).
    gate : float or array (ny,)
        A present channel whose normalised innovation squared exceeds this is rejected and
        flagged as a spike (default: chi-square(1) 99.99 % quantile, 15.13); one value per
        measured element for per-channel gates (``inf``: never gated).
    stuck_n : int
        That many consecutive identical values on a channel flag it as stuck (rejected).
    readmit_n : int
        After that many consecutive gate rejections of a channel its next out-of-gate
        sample is taken, with the prediction's covariance inflated, and flagged
        ``mismatch``: a filter that has drifted cannot lock itself out of the data that
        would correct it (default 3).
    drift_lambda, drift_limit : float
        EWMA factor and limit on the EWMA of normalised innovations (bias / drift).
    mismatch_lambda, mismatch_limit : float
        EWMA factor and limit on NIS per degree of freedom (model mismatch).
    dt_max : float
        Longest RK4 sub-step [time unit].
    R : array (ny, ny) or None
        Full measurement-noise covariance for correlated channels [units²]; ``None``:
        ``diag(r)`` (see :func:`measurement_noise`).
    """

    model: Model
    q: Any
    r: Any
    lower: Any
    upper: Any
    gate: Any
    drift_lambda: Any
    drift_limit: Any
    mismatch_lambda: Any
    mismatch_limit: Any
    estimate: tuple[str, ...] = eqx.field(static=True)
    channels: tuple[str, ...] = eqx.field(static=True)
    stuck_n: int = eqx.field(static=True)
    dt_max: float = eqx.field(static=True)
    readmit_n: int = eqx.field(static=True, default=3)
    R: Any = None

    @property
    def nx(self) -> int:
        """Length of the flat state vector (before the tracked parameters)."""
        return self.model.layout.states.size

    @property
    def nz(self) -> int:
        """Length of the augmented state: states and tracked parameters."""
        return self.nx + len(self.estimate)

    @property
    def ny(self) -> int:
        """Number of measured values per sample (a vector channel counts its elements)."""
        return int(self.model.layout.outputs.indices(self.channels).size)

    def model_at(self, z: Any) -> Model:
        """The model with tracked parameters taken from the augmented state ``z``."""
        if not self.estimate:
            return self.model
        nx = self.nx
        return self.model.with_params({k: z[nx + i] for i, k in enumerate(self.estimate)})


class FilterState(NamedTuple):
    """Filter state carried between samples.

    Attributes
    ----------
    t : float
        Time of the estimate [model time unit].
    z : array (nz,)
        Augmented state estimate: the flat states in the order of ``model.layout.states``
        [state units], then the tracked parameters in the order of ``spec.estimate``
        [parameter units].
    P : array (nz, nz)
        Covariance of ``z`` [units of ``z_i`` × units of ``z_j``].
    last_y : array (ny,)
        Last received value per channel [channel units]; NaN before the first.
    same : array (ny,) of int32
        Number of consecutive received values per channel equal to the one before (the
        stuck-sensor count, compared with ``spec.stuck_n``).
    ewma : array (ny,)
        EWMA of the normalised innovations ``innovation / sqrt(s)`` per channel [-] (drift
        monitor, factor ``spec.drift_lambda``); 0 at the start.
    nis_avg : float
        EWMA of NIS per degree of freedom [-] (mismatch monitor, factor
        ``spec.mismatch_lambda``); 1 at the start.
    gated : array (ny,) of int32
        Consecutive samples per channel rejected by the gate (see ``spec.readmit_n``).
    """

    t: Any
    z: Any
    P: Any
    last_y: Any
    same: Any
    ewma: Any
    nis_avg: Any
    gated: Any


class Record(NamedTuple):
    """What one step reports (stacked over time by :func:`run`: a leading time axis).

    Attributes
    ----------
    t : float
        Time of the sample and of the updated estimate [model time unit].
    z : array (nz,)
        Updated estimate, projected onto the bounds [state / parameter units, as
        :attr:`FilterState.z`].
    P : array (nz, nz)
        Updated covariance [units of ``z_i`` × units of ``z_j``].
    z_pred : array (nz,)
        Predicted estimate at ``t``, before the update [as ``z``].
    P_pred : array (nz, nz)
        Predicted covariance at ``t``, before the update [as ``P``].
    F : array (nz, nz)
        Transition Jacobian of the step, ``∂z_pred / ∂z`` of the previous estimate
        [units of ``z_i`` / units of ``z_j``] (for the RTS smoother; the UKF records its
        statistical linearisation).
    innovation : array (ny,)
        Measurement minus prediction per channel [channel units]; NaN where not
        measured.
    s : array (ny,)
        Innovation variance per channel, ``diag(H P_pred Hᵀ) + r`` [channel units²].
    nis_channel : array (ny,)
        Normalised innovation squared per channel, ``innovation² / s`` [-]; NaN where
        not measured.
    nis : float
        Overall NIS of the accepted channels [-] (0 when none was accepted).
    dof : int
        Number of accepted channels (the degrees of freedom of ``nis``).
    flags : array (ny,) of int32
        Anomaly bit field per channel, see :data:`FLAGS`.
    used : array (ny,) of bool
        Whether the channel entered the update (measured, not gated, not stuck).
    """

    t: Any
    z: Any
    P: Any
    z_pred: Any
    P_pred: Any
    F: Any
    innovation: Any
    s: Any
    nis_channel: Any
    nis: Any
    dof: Any
    flags: Any
    used: Any


def _vector_rhs(spec: FilterSpec, t: Any, z: Any, u: Any) -> Any:
    model = spec.model_at(z)
    lay = model.layout
    nx = spec.nx
    x = lay.states.unravel(z[:nx], jax_ops)
    dx = lay.states.ravel(model.rhs(t, x, lay.inputs.unravel(u, jax_ops), jax_ops), jax_ops)
    return jnp.concatenate([dx, jnp.zeros(z.shape[0] - nx, dx.dtype)])


def _vector_step(spec: FilterSpec, t: Any, z: Any, u: Any) -> Any:
    """One sample of a discrete-time model on the augmented state (parameters held)."""
    model = spec.model_at(z)
    lay = model.layout
    nx = spec.nx
    x = lay.states.unravel(z[:nx], jax_ops)
    dt = jnp.asarray(model.sample_time, dtype=z.dtype)
    x1 = lay.states.ravel(model.step(t, x, lay.inputs.unravel(u, jax_ops), dt, jax_ops),
                          jax_ops)
    return jnp.concatenate([x1, z[nx:]])


def n_samples(spec: FilterSpec, t0: Any, t1: Any) -> Any:
    """Samples of a discrete-time model between ``t0`` and ``t1`` (rounded)."""
    return jnp.round((t1 - t0) / spec.model.sample_time)


# RK4's stability region reaches |h λ| ≈ 2.78 on the negative real axis; 2.5 keeps a margin.
_RK4_STABLE = 2.5
#: Most RK4 sub-steps of one prediction interval (a sample far too long for the model's
#: stiffness is integrated at a longer sub-step rather than hang the filter).
_MAX_SUBSTEPS = 100_000.0


def transition(spec: FilterSpec, z: Any, u: Any, t0: Any, t1: Any, scale: Any = None) -> Any:
    """Integrate the augmented state from ``t0`` to ``t1`` with inputs ``u`` held (RK4).

    The number of sub-steps is the larger of ``(t1 - t0) / dt_max`` and what keeps RK4
    stable: ``(t1 - t0) ρ / 2.5`` with ρ the ∞-norm of the rhs Jacobian at the start (an
    upper bound of its spectral radius). Without the second rule a fixed sub-step goes
    unstable when the kinetics stiffen (e.g. high biomass at nearly no substrate). A
    discrete-time model is instead stepped with its own map once per sample period in
    the interval. Tracked parameters are held constant.

    Parameters
    ----------
    spec : FilterSpec
        Model, tracked parameters and ``dt_max``.
    z : array (nz,)
        Augmented state at ``t0`` [state / parameter units, as :attr:`FilterState.z`].
    u : array (nu,)
        Inputs held over the interval [input units], flat in the order of
        ``model.layout.inputs``.
    t0, t1 : float
        Start and end of the interval [model time unit], ``t1 >= t0``.
    scale : array (nz,), optional
        Magnitude of each element of ``z`` (``|z| + σ``) for a sharper sub-step bound
        (see :func:`substeps`).

    Returns
    -------
    array (nz,)
        Augmented state at ``t1``.
    """
    if spec.model.is_discrete:  # the model's own map, once per sample in the interval
        dt_s = spec.model.sample_time

        def sample(i, zz):
            return _vector_step(spec, t0 + i.astype(zz.dtype) * dt_s, zz, u)

        return lax.fori_loop(0, n_samples(spec, t0, t1).astype(jnp.int32), sample, z)
    n, h = _substeps(spec, z, u, t0, t1, scale=scale)

    def body(i, zz):
        t = t0 + i.astype(h.dtype) * h
        k1 = _vector_rhs(spec, t, zz, u)
        k2 = _vector_rhs(spec, t + h / 2, zz + h / 2 * k1, u)
        k3 = _vector_rhs(spec, t + h / 2, zz + h / 2 * k2, u)
        k4 = _vector_rhs(spec, t + h, zz + h * k3, u)
        return zz + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return lax.fori_loop(0, n.astype(jnp.int32), body, z)


def _substeps(spec: FilterSpec, z: Any, u: Any, t0: Any, t1: Any, rate: float = 1.0,
              scale: Any = None) -> tuple[Any, Any]:
    """Number and length of the RK4 sub-steps over ``(t0, t1]`` (see :func:`transition`);
    ``rate`` scales the spectral bound (2 for the covariance equation, whose eigenvalues
    are sums of two of the state's). With ``scale`` (a positive magnitude per element of
    ``z``, e.g. ``|z| + σ``) the bound is the smaller of ``‖A‖∞`` and ``‖D⁻¹ A D‖∞``,
    ``D = diag(scale)``: both bound the spectral radius, and the second does not grow with
    the ratio of the units of two states (a fouling resistance of 1e-4 m2 K/W beside
    temperatures of 50 °C: without it, 10⁵ sub-steps a minute)."""
    dt_total = t1 - t0
    jac = jax.jacfwd(lambda zz: _vector_rhs(spec, t0, zz, u))(lax.stop_gradient(z))
    bound = jnp.max(jnp.sum(jnp.abs(jac), axis=1))
    if scale is not None:
        d = lax.stop_gradient(jnp.maximum(scale, 1e-300))
        bound = jnp.minimum(bound, jnp.max(jnp.sum(jnp.abs(jac * d[None, :] / d[:, None]),
                                                   axis=1)))
    rho = rate * lax.stop_gradient(bound)
    n = jnp.maximum(jnp.ceil(dt_total / spec.dt_max), jnp.ceil(dt_total * rho / _RK4_STABLE))
    # a non-finite Jacobian (a diverged estimate) must not hang the loop: one sub-step and
    # the NaN shows in the estimate; and never more than _MAX_SUBSTEPS
    n = jnp.clip(jnp.where(jnp.isfinite(n), n, 1.0), 1.0, _MAX_SUBSTEPS)
    return n, dt_total / n


def substeps(spec: FilterSpec, z: Any, u: Any, t0: Any, t1: Any, scale: Any = None) -> Any:
    """Number of steps :func:`predict` takes over ``(t0, t1]``: RK4 sub-steps of the
    mean and covariance (continuous time, see :func:`transition`), or samples of a
    discrete-time model's map.

    Parameters
    ----------
    spec : FilterSpec
        Model and ``dt_max``.
    z : array (nz,)
        Augmented state at ``t0``.
    u : array (nu,)
        Inputs held over the interval [input units].
    t0, t1 : float
        Start and end of the interval [model time unit].
    scale : array (nz,), optional
        Magnitude of each element of ``z`` (as :func:`predict` uses: ``|z| + σ``).
    """
    if spec.model.is_discrete:
        return n_samples(spec, t0, t1)
    return _substeps(spec, z, u, t0, t1, rate=2.0, scale=scale)[0]


def noise_intensity(spec: FilterSpec) -> Any:
    """The process-noise intensity as a full (nz, nz) matrix."""
    q = spec.q
    return q if q.ndim == 2 else jnp.diag(q)


def predict(spec: FilterSpec, z: Any, P: Any, u: Any, t0: Any, t1: Any
            ) -> tuple[Any, Any, Any]:
    r"""Predicted mean and covariance at ``t1`` and the transition Jacobian.

    Continuous time: the mean, its sensitivity ``S = ∂z(t)/∂z(t0)`` and the process-noise
    covariance ``Q_d`` are integrated together with the RK4 sub-steps of
    :func:`transition` (Jazwinski 1970, *Stochastic Processes and Filtering Theory*, §7.6;
    Gelb 1974, *Applied Optimal Estimation*, §6.1),

    .. math::

        \dot z = f(z, u), \quad \dot S = A S, \quad
        \dot Q_d = A Q_d + Q_d A^T + Q_c, \qquad A = \partial f / \partial z,

    from ``S = I``, ``Q_d = 0``; then ``P⁻ = S P Sᵀ + Q_d``. That is the
    covariance ODE ``Ṗ = A P + P Aᵀ + Q_c`` of the linearisation along the predicted
    mean, split so that ``F = S`` is also the transition Jacobian that the RTS smoother
    needs. RK4 applied to ``(z, S)`` is exactly the derivative of RK4 applied to ``z``,
    so ``F`` equals ``jax.jacfwd`` of :func:`transition`. For a linear model ``Q_d`` is
    Van Loan's ``∫ e^{A s} Q_c e^{Aᵀ s} ds`` up to the RK4 error of the sub-step.
    A discrete-time model adds ``q`` once per sample after its own map.

    Parameters
    ----------
    spec : FilterSpec
        Model, tracked parameters, noise intensity and ``dt_max``.
    z : array (nz,)
        Augmented state at ``t0`` [state / parameter units].
    P : array (nz, nz)
        Its covariance [products of the units of z].
    u : array (nu,)
        Inputs held over the interval [input units].
    t0, t1 : float
        Start and end of the interval [model time unit], ``t1 >= t0``.

    Returns
    -------
    z_pred, P_pred, F : arrays (nz,), (nz, nz), (nz, nz)
        Predicted mean and (symmetrised) covariance at ``t1`` and ``∂z(t1)/∂z(t0)``.
    """
    if spec.model.is_discrete:
        z1, F = value_and_jacfwd(lambda zz: transition(spec, zz, u, t0, t1), z)
        Qd = noise_intensity(spec) * n_samples(spec, t0, t1)
        return z1, symmetrise(_mm(_mm(F, P), F.T) + Qd), F
    z1, F, Qd = propagate(spec, z, u, t0, t1, scale=state_scale(z, P))
    return z1, symmetrise(_mm(_mm(F, P), F.T) + Qd), F


def state_scale(z: Any, P: Any) -> Any:
    """Magnitude of each element of an estimate, ``|z| + σ`` (for the sub-step rule)."""
    return jnp.abs(z) + jnp.sqrt(jnp.maximum(jnp.diagonal(P), 0.0))


def propagate(spec: FilterSpec, z: Any, u: Any, t0: Any, t1: Any, scale: Any = None
              ) -> tuple[Any, Any, Any]:
    """RK4 of the mean, its sensitivity and the process-noise covariance over the
    interval (see :func:`predict`); continuous-time models.

    Parameters
    ----------
    spec : FilterSpec
        Model, tracked parameters, noise intensity and ``dt_max``.
    z : array (nz,)
        Augmented state at ``t0``.
    u : array (nu,)
        Inputs held over the interval [input units].
    t0, t1 : float
        Start and end of the interval [model time unit].
    scale : array (nz,), optional
        Magnitude of each element of ``z`` for the sub-step rule (see :func:`_substeps`).

    Returns
    -------
    z1, S, Qd : arrays (nz,), (nz, nz), (nz, nz)
        Mean at ``t1``, ``∂z(t1)/∂z(t0)`` and the covariance the noise adds.
    """
    # the covariance equation's eigenvalues are λ_i + λ_j: twice the state's spectral bound
    # keeps RK4 stable on it (with the state's bound alone, stiff phases gave negative
    # variances)
    n, h = _substeps(spec, z, u, t0, t1, rate=2.0, scale=scale)
    Qc = noise_intensity(spec).astype(z.dtype)

    def deriv(t, zz, S, Q):
        dz, A = value_and_jacfwd(lambda v: _vector_rhs(spec, t, v, u), zz)
        AQ = _mm(A, Q)
        return dz, _mm(A, S), AQ + AQ.T + Qc

    # (the first stage could reuse the sub-step rule's Jacobian, but peeling the first
    # sub-step out of the loop doubles the traced RK4 and every EKF program compiled ~25 %
    # longer, for ~0.5 ms of a 10,000-twin fleet update)
    def body(i, c):
        zz, S, Q = c
        t = t0 + i.astype(h.dtype) * h
        k1 = deriv(t, zz, S, Q)
        k2 = deriv(t + h / 2, *(a + h / 2 * k for a, k in zip(c, k1, strict=True)))
        k3 = deriv(t + h / 2, *(a + h / 2 * k for a, k in zip(c, k2, strict=True)))
        k4 = deriv(t + h, *(a + h * k for a, k in zip(c, k3, strict=True)))
        return tuple(a + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
                     for a, b1, b2, b3, b4 in zip(c, k1, k2, k3, k4, strict=True))

    nz = z.shape[0]
    init = (z, jnp.eye(nz, dtype=z.dtype), jnp.zeros((nz, nz), z.dtype))
    return lax.fori_loop(0, n.astype(jnp.int32), body, init)


def measure(spec: FilterSpec, z: Any, u: Any, t: Any) -> Any:
    """Predicted measurement of the selected channels."""
    model = spec.model_at(z)
    lay = model.layout
    x = lay.states.unravel(z[:spec.nx], jax_ops)
    y = lay.outputs.ravel(model.measure(t, x, lay.inputs.unravel(u, jax_ops), jax_ops), jax_ops)
    idx = lay.outputs.indices(spec.channels)
    if idx.size == y.shape[0] and np.array_equal(idx, np.arange(idx.size)):
        return y
    return y[idx]


def init_state(spec: FilterSpec, t0: Any, z0: Any, P0: Any) -> FilterState:
    """Initial filter state at time ``t0`` with estimate ``z0`` and covariance ``P0``.

    The monitoring memory starts fresh: no last values (NaN), no stuck counts, drift EWMA
    0 and NIS average 1.

    Parameters
    ----------
    spec : FilterSpec
        The filter specification (gives the number of channels).
    t0 : float
        Time of the initial estimate [model time unit].
    z0 : array (nz,)
        Initial augmented estimate: flat states [state units], then tracked parameters
        [parameter units].
    P0 : array (nz, nz)
        Initial covariance of ``z0`` [units of ``z_i`` × units of ``z_j``].

    Returns
    -------
    FilterState
    """
    ny = spec.ny
    z0 = jnp.asarray(z0, dtype=float)
    return FilterState(jnp.asarray(t0, dtype=float), z0, jnp.asarray(P0, dtype=float),
                       jnp.full(ny, jnp.nan), jnp.zeros(ny, jnp.int32), jnp.zeros(ny),
                       jnp.asarray(1.0), jnp.zeros(ny, jnp.int32))


def measurement_noise(spec: FilterSpec) -> Any:
    """The measurement-noise covariance (ny, ny) [channel units²]: ``spec.R``, or
    ``diag(spec.r)`` for independent channels."""
    return jnp.diag(spec.r) if spec.R is None else spec.R


def symmetrise(P: Any) -> Any:
    return 0.5 * (P + P.T)


class Screen(NamedTuple):
    """Per-channel screening of one sample before the update."""

    present: Any  # (ny,) bool: channel measured (finite)
    innov: Any  # (ny,) innovation, 0 where not measured
    nis_ch: Any  # (ny,) normalised innovation squared per channel
    same: Any  # (ny,) int32 consecutive identical values
    last_y: Any  # (ny,) last received value
    stuck: Any  # (ny,) bool: stuck sensor
    spike: Any  # (ny,) bool: gated out
    used: Any  # (ny,) bool: enters the update
    readmit: Any  # (ny,) bool: gated, but after a run of rejections taken with inflation
    gated: Any  # (ny,) int32 consecutive gate rejections after this sample


def screen(spec: FilterSpec, state: FilterState, y: Any, y_hat: Any, s_diag: Any) -> Screen:
    """Innovations, per-channel NIS, stuck counting and gating of a sample ``y`` (NaN =
    missing) against its prediction ``y_hat`` with innovation variances ``s_diag``."""
    present = jnp.isfinite(y)
    innov = jnp.where(present, y - y_hat, 0.0)
    nis_ch = innov**2 / s_diag
    same = jnp.where(present, jnp.where(y == state.last_y, state.same + 1, 0),
                     state.same).astype(jnp.int32)
    last_y = jnp.where(present, y, state.last_y)
    stuck = present & (same >= spec.stuck_n)
    over = present & ~stuck & (nis_ch > spec.gate)
    # a channel gated `readmit_n` times in a row says the filter, not the sensor, is off:
    # its next sample is taken, with the prediction's covariance inflated (lock-out guard)
    readmit = over & (state.gated >= spec.readmit_n)
    spike = over & ~readmit
    used = present & ~spike & ~stuck
    gated = jnp.where(present, jnp.where(spike, state.gated + 1, 0), state.gated)
    return Screen(present, innov, nis_ch, same, last_y, stuck, spike, used, readmit,
                  gated.astype(jnp.int32))


def inflate(spec: FilterSpec, scr: Screen, P_pred: Any) -> Any:
    """The prediction covariance, scaled where a channel is re-admitted after a run of
    rejections so that its NIS comes down to the gate (covariance inflation, as in
    fading-memory filters: Jazwinski 1970, §7.7; Anderson & Moore 1979, §6.2).

    Parameters
    ----------
    spec : FilterSpec
        Gate thresholds.
    scr : Screen
        The sample's screening.
    P_pred : array (nz, nz)
        Prediction covariance.
    """
    alpha = jnp.max(jnp.where(scr.readmit, scr.nis_ch / spec.gate, 1.0))
    return P_pred * jnp.maximum(alpha, 1.0)


def masked_update(z_pred: Any, P_pred: Any, H: Any, R: Any, innov: Any, used: Any,
                  return_gain: bool = False) -> tuple[Any, ...]:
    """Joseph-form Kalman update on the ``used`` channels only.

    Unused rows of ``H`` are zeroed and their block of ``S`` is the identity, so their
    gain columns vanish and the result equals an update on the used channels alone.
    ``R`` is the full (ny, ny) measurement-noise covariance (``diag(r)`` for the EKF).

    Returns
    -------
    z_new, P_new, nis
        Updated (unprojected) estimate, symmetric covariance and the NIS of the used
        channels; with ``return_gain`` also the gain ``K`` (nz, ny), zero in the columns
        of unused channels.
    """
    nz = z_pred.shape[0]
    Hm = jnp.where(used[:, None], H, 0.0)
    Rm = jnp.where(used[:, None] & used[None, :], R, 0.0)
    r_used = jnp.where(used, innov, 0.0)
    HP = _mm(Hm, P_pred)
    S = _mm(HP, Hm.T) + Rm + jnp.diag(jnp.where(used, 0.0, 1.0))
    K = _spd_solve(S, HP).T
    z_new = z_pred + _mm(K, r_used[:, None])[:, 0]
    IKH = jnp.eye(nz) - _mm(K, Hm)
    P_new = symmetrise(_mm(_mm(IKH, P_pred), IKH.T) + _mm(_mm(K, Rm), K.T))
    nis = jnp.sum(r_used * _spd_solve(S, r_used[:, None])[:, 0])
    if return_gain:
        return z_new, P_new, nis, K
    return z_new, P_new, nis


def finish(spec: FilterSpec, state: FilterState, t: Any, scr: Screen, s_diag: Any,
            z_pred: Any, P_pred: Any, F: Any, z_new: Any, P_new: Any, nis: Any
            ) -> tuple[FilterState, Record]:
    """Bound projection, drift and mismatch EWMAs, anomaly flags, new state and record."""
    z_new = jnp.clip(z_new, spec.lower, spec.upper)
    used, spike, present = scr.used, scr.spike, scr.present
    dof = jnp.sum(used)
    # drift: EWMA of normalised innovations; mismatch: EWMA of NIS per dof. Only accepted
    # samples feed them: one rejected spike would otherwise hold the EWMA above its limit
    # for ~1/lambda samples and flag every good sample after it as drift
    lam = spec.drift_lambda
    ewma = jnp.where(used, lam * scr.innov / jnp.sqrt(s_diag) + (1 - lam) * state.ewma,
                     state.ewma)
    ml = spec.mismatch_lambda
    nis_avg = jnp.where(dof > 0, ml * nis / jnp.maximum(dof, 1).astype(nis.dtype)
                        + (1 - ml) * state.nis_avg,
                        state.nis_avg)
    drift_sd = jnp.sqrt(lam / (2 - lam))
    flags = (jnp.where(spike, FLAGS["spike"], 0) + jnp.where(scr.stuck, FLAGS["stuck"], 0)
             + jnp.where(present & (jnp.abs(ewma) > spec.drift_limit * drift_sd),
                         FLAGS["drift"], 0)
             + jnp.where((present & (nis_avg > spec.mismatch_limit)) | scr.readmit,
                         FLAGS["mismatch"], 0))
    new = FilterState(t, z_new, P_new, scr.last_y, scr.same, ewma, nis_avg, scr.gated)
    rec = Record(t, z_new, P_new, z_pred, P_pred, F, jnp.where(present, scr.innov, jnp.nan),
                 s_diag, jnp.where(present, scr.nis_ch, jnp.nan), nis, dof,
                 flags.astype(jnp.int32), used)
    return new, rec


def ekf_step(spec: FilterSpec, state: FilterState, t: Any, y: Any, u: Any,
             explain: bool = False) -> tuple[Any, ...]:
    """Predict from ``state.t`` to ``t`` with inputs ``u`` held, then update with ``y``.

    ``y`` has one entry per channel, NaN where not measured. Pure: use under ``jit``,
    ``lax.scan`` (histories) and ``vmap`` (fleets).

    Parameters
    ----------
    spec : FilterSpec
        Model, tracked parameters, noise levels, bounds and anomaly settings.
    state : FilterState
        Estimate at ``state.t`` [model time unit].
    t : float
        Sample time [model time unit], ``>= state.t``.
    y : array (ny,)
        Sample of ``spec.channels`` [channel units] (a vector channel flattened); NaN
        where not measured.
    u : array (nu,)
        Inputs held over ``(state.t, t]`` [input units], flat in the order of
        ``model.layout.inputs``; also used by the measurement at ``t``.
    explain : bool
        Also return the update's innovation covariance ``S`` (ny, ny) over every channel
        and gain ``K`` (nz, ny), zero for channels not used (see
        :meth:`LiveFilter.last_update <processtwin.estimate.LiveFilter.last_update>`).

    Returns
    -------
    FilterState, Record
        Estimate at ``t`` and the step's report (and, with ``explain``, the
        ``(S, K)`` pair).
    """
    # predict: z' = phi(z), P' = F P F^T + Q
    z_pred, P_pred, F = predict(spec, state.z, state.P, u, state.t, t)
    # measurement model at the prediction
    y_hat, H = value_and_jacfwd(lambda z: measure(spec, z, u, t), z_pred)
    s_diag = jnp.diag(_mm(_mm(H, P_pred), H.T)) + spec.r
    scr = screen(spec, state, y, y_hat, s_diag)
    P_used = inflate(spec, scr, P_pred)
    R = measurement_noise(spec)
    z_new, P_new, nis, K = masked_update(z_pred, P_used, H, R, scr.innov, scr.used,
                                         return_gain=True)
    out = finish(spec, state, t, scr, s_diag, z_pred, P_pred, F, z_new, P_new, nis)
    return (*out, (symmetrise(_mm(_mm(H, P_used), H.T) + R), K)) if explain else out


def process_noise(spec: FilterSpec, z: Any, u: Any, t0: Any, t1: Any, scale: Any = None
                  ) -> Any:
    """The process-noise covariance added over ``(t0, t1]`` [units of z squared]:
    propagated through the linearisation along the mean from ``z`` for a continuous model
    (see :func:`predict`), ``q`` per sample for a discrete-time model.

    Parameters
    ----------
    spec : FilterSpec
        Model and noise intensity.
    z : array (nz,)
        Augmented state at ``t0``.
    u : array (nu,)
        Inputs held over the interval [input units].
    t0, t1 : float
        Start and end of the interval [model time unit].
    scale : array (nz,), optional
        Magnitude of each element of ``z`` for the sub-step rule.
    """
    if spec.model.is_discrete:
        return noise_intensity(spec) * n_samples(spec, t0, t1)
    return propagate(spec, z, u, t0, t1, scale=scale)[2]


# Below this size, matrix products are written as broadcast-multiply-sum and SPD solves as an
# unrolled Cholesky: XLA fuses them into a few kernels instead of calling BLAS/LAPACK for
# 5x5 matrices (measured: a whole-history step 12.8 → 6.7 µs on 2 CPU cores).
_SMALL = 16


def _mm(a: Any, b: Any) -> Any:
    """Matrix product, fused for small matrices: a sum of ``k`` rank-one terms, each an
    elementwise product of a column of ``a`` and a row of ``b`` (one fused loop, no
    ``(n, k, m)`` temporary: 6× faster than the broadcast-and-reduce form under ``vmap``
    of a fleet, where ``@`` of 4×4 blocks is slower still)."""
    if max(a.shape + b.shape) > _SMALL:
        return a @ b
    out = a[:, 0:1] * b[0:1, :]
    for k in range(1, a.shape[1]):
        out = out + a[:, k:k + 1] * b[k:k + 1, :]
    return out


def _spd_solve(S: Any, B: Any) -> Any:
    """Solve ``S X = B`` for symmetric positive-definite ``S`` (Cholesky)."""
    n = S.shape[0]
    if n > _SMALL // 2:
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(S), B)
    L = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            acc = S[i, j] - sum(L[i][k] * L[j][k] for k in range(j))
            L[i][j] = jnp.sqrt(acc) if i == j else acc / L[j][j]
    y = []
    for i in range(n):  # forward: L y = B
        y.append((B[i] - sum(L[i][k] * y[k] for k in range(i))) / L[i][i])
    x = [None] * n
    for i in reversed(range(n)):  # backward: L^T x = y
        x[i] = (y[i] - sum(L[k][i] * x[k] for k in range(i + 1, n))) / L[i][i]
    return jnp.stack(x)


def value_and_jacfwd(f: Any, x: Any) -> tuple[Any, Any]:
    """f(x) and its Jacobian in one forward-mode pass (vmap of JVPs over the basis; one
    JVP per basis vector, unrolled, is 1.6× faster under a fleet's ``vmap`` but makes
    every program that contains it compile ~1.7× longer)."""
    basis = jnp.eye(x.shape[0], dtype=x.dtype)
    y, jac_t = jax.vmap(lambda v: jax.jvp(f, (x,), (v,)), out_axes=(None, 0))(basis)
    return y, jac_t.T


def run(spec: FilterSpec, state: FilterState, times: Any, Y: Any, U: Any
        ) -> tuple[FilterState, Record]:
    """Filter a whole history with ``lax.scan``: rows of ``Y`` (NaN = missing) at
    ``times``; ``U[k]`` are the inputs held over the interval ending at ``times[k]``.

    Parameters
    ----------
    spec : FilterSpec
        Filter specification.
    state : FilterState
        Initial estimate, at or before ``times[0]`` [model time unit].
    times : array (n,)
        Non-decreasing sample times [model time unit].
    Y : array (n, ny)
        Samples of ``spec.channels`` [channel units], NaN = missing.
    U : array (n, nu)
        ``U[k]`` are the inputs held over the interval ending at ``times[k]`` [input
        units].

    Returns
    -------
    FilterState, Record
        Final state and the per-sample records stacked over time.
    """
    def body(s, row):
        return ekf_step(spec, s, *row)

    return lax.scan(body, state, (times, Y, U))
