"""Observability of the chosen channels along a nominal trajectory, by state name.

Before a filter runs beside a plant: can the channels it is given determine every state
and tracked parameter? The test is the discrete observability Gramian of the linearisation
along a nominal trajectory (Jazwinski 1970, *Stochastic Processes and Filtering Theory*,
§7.5; Krener & Ide 2009, *Proc. IEEE CDC*, 5279–5284, for the empirical, nonlinear use)

.. math::

    W = \\sum_k \\Phi_k^T H_k^T R^{-1} H_k \\Phi_k, \\qquad
    \\Phi_k = \\partial z(t_k) / \\partial z(t_0),

the information the samples carry about the initial (augmented) state. Its inverse is the
Cramér–Rao bound: the smallest covariance any unbiased estimator reaches from those samples
alone, without a prior and without process noise. Directions in which ``W`` is singular are
unobservable; a state whose bound is large against its own scale is weakly observable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ..errors import ConfigError
from .core import measure, measurement_noise, transition, value_and_jacfwd

if TYPE_CHECKING:
    from .api import ExtendedKalmanFilter

__all__ = ["ObservabilityReport", "observability"]

#: Relative Cramér–Rao standard deviation above which a state is called weakly observable.
WEAK = 0.1
#: Relative eigenvalue of the scaled Gramian below which a direction is unobservable.
SINGULAR = 1e-10
#: Weight of a state in an unobservable direction above which it is reported unobservable.
UNOBSERVABLE_LOAD = 0.1


@dataclass(frozen=True, eq=False)
class ObservabilityReport:
    """Result of :func:`observability`.

    Attributes
    ----------
    data : xarray.Dataset
        Per element of the augmented state (``name``): ``scale`` [its units], the
        Cramér–Rao standard deviation ``crb_std`` [its units] (``inf`` where unobservable),
        ``relative`` (``crb_std / scale``) and ``status`` (``observable``, ``weak``,
        ``unobservable``).
    stats : dict
        ``channels``, ``samples``, ``dt`` [model time unit], ``rank`` and ``condition``
        of the scaled Gramian.
    """

    data: xr.Dataset
    stats: dict

    @property
    def unobservable(self) -> list[str]:
        """Names of the unobservable states and parameters."""
        return self._with("unobservable")

    @property
    def weak(self) -> list[str]:
        """Names of the weakly observable states and parameters."""
        return self._with("weak")

    def _with(self, status: str) -> list[str]:
        return [str(n) for n, s in zip(self.data["name"].values, self.data["status"].values,
                                       strict=True) if s == status]

    def __str__(self) -> str:
        chans = ", ".join(f"`{c}`" for c in self.stats["channels"])
        lines = [f"observability from {chans} over {self.stats['samples']} samples every "
                 f"{self.stats['dt']:g}: rank {self.stats['rank']} of {self.data.sizes['name']}"]
        for n in self.unobservable:
            lines.append(f"  `{n}` is unobservable from {chans}: add a channel that sees it")
        for n, rel in zip(self.data["name"].values, self.data["relative"].values,
                          strict=True):
            if str(n) in self.weak:
                lines.append(f"  `{n}` is weakly observable from {chans} (best σ "
                             f"{100 * rel:.0f} % of its scale): add a lab assay or a sensor")
        if len(lines) == 1:
            lines.append("  every state and parameter is observable")
        return "\n".join(lines)


def observability(ekf: ExtendedKalmanFilter, x0: Any = None, u: Mapping[str, Any] | None
                  = None, *, dt: float, samples: int = 50) -> ObservabilityReport:
    """Observability Gramian of the filter's channels along a nominal trajectory.

    Parameters
    ----------
    ekf : ExtendedKalmanFilter or UnscentedKalmanFilter
        The filter: its model, channels, measurement noise and tracked parameters.
    x0 : mapping, optional
        Initial state of the nominal trajectory by name [state units] (defaults).
    u : mapping, optional
        Inputs held along it [input units] (defaults).
    dt : float
        Sample period [model time unit].
    samples : int
        Number of samples, at least 1.

    Returns
    -------
    ObservabilityReport
        By name: the Cramér–Rao standard deviation, its ratio to the state's scale and
        ``observable`` / ``weak`` (ratio above 10 %) / ``unobservable``.

    Raises
    ------
    ConfigError
        A non-positive ``dt`` or fewer than one sample.
    """
    if not dt > 0 or int(samples) < 1:
        raise ConfigError(f"`dt` must be > 0 [{ekf.model.time_unit}] and `samples` ≥ 1, got "
                          f"{dt!r} and {samples!r}.")
    spec = ekf.spec
    z0, _ = ekf.initial(x0)
    uv = jnp.asarray(ekf.input_vector(u))
    R_inv = np.linalg.inv(np.asarray(measurement_noise(spec)))

    @jax.jit
    def step(z, t):
        z1, F = value_and_jacfwd(lambda zz: transition(spec, zz, uv, t, t + dt), z)
        _, H = value_and_jacfwd(lambda zz: measure(spec, zz, uv, t + dt), z1)
        return z1, F, H

    z, Phi = jnp.asarray(z0), np.eye(z0.size)
    W = np.zeros((z0.size, z0.size))
    for k in range(int(samples)):
        z, F, H = step(z, jnp.asarray(k * dt))
        Phi = np.asarray(F) @ Phi
        HP = np.asarray(H) @ Phi
        W += HP.T @ R_inv @ HP
    scale = np.maximum(np.abs(z0), np.maximum(np.abs(np.asarray(z)), 1e-12))
    Ws = W * np.outer(scale, scale)  # information about z / scale
    lam, V = np.linalg.eigh(Ws)
    top = max(lam.max(), 1e-300)
    null = lam < SINGULAR * top
    rank = int((~null).sum())
    keep = ~null
    crb = np.sqrt(np.maximum(np.einsum("ij,j,ij->i", V[:, keep], 1.0 / lam[keep],
                                       V[:, keep]), 0.0))
    # a state is unobservable when an unobservable direction is largely made of it (its
    # weight there above 0.1); fast, quasi-static modes of a stiff model (a heat
    # exchanger's segment temperatures, forgotten within one sample) leave small weights
    # on every state they couple to, which do not make the slow ones undeterminable
    loads = np.abs(V[:, null]).max(axis=1) if null.any() else np.zeros(z0.size)
    unobs = loads > UNOBSERVABLE_LOAD
    relative = np.where(unobs, np.inf, crb)
    status = np.where(unobs, "unobservable", np.where(relative > WEAK, "weak", "observable"))
    names = list(ekf.flat_names)
    data = xr.Dataset({
        "scale": ("name", scale, {"long_name": "scale of the state (its nominal magnitude)"}),
        "crb_std": ("name", relative * scale,
                    {"long_name": "Cramér–Rao standard deviation from the channels"}),
        "relative": ("name", relative, {"units": "1", "long_name": "crb_std / scale"}),
        "status": ("name", status.astype(str)),
    }, coords={"name": names})
    return ObservabilityReport(data, {
        "channels": tuple(ekf.channels), "samples": int(samples), "dt": float(dt),
        "rank": rank, "condition": float(top / max(lam[keep].min(), 1e-300))})
