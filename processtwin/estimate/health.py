"""Filter health without the truth: divergence from the filter's own statistics.

A filter can drift away from the plant silently: its estimate and covariance still look
fine sample by sample. Three symptoms need no truth (Bar-Shalom, Li & Kirubarajan 2001,
*Estimation with Applications to Tracking and Navigation*, §5.4 and §11.2):

* **NIS** — the sum of the normalised innovations squared over a sliding window is
  χ²-distributed with the window's degrees of freedom when the filter is consistent; above
  its 99.9 % quantile the innovations are larger than the filter believes.
* **pinned** — an estimate held at a physical bound (projection after the update) for
  half the window or more: the filter keeps pushing it out of the feasible set.
* **growth** — a standard deviation that grew tenfold over the window while its channels
  were measured: the data no longer constrain it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import chi2

__all__ = ["HealthCheck", "divergence"]


def divergence(nis: np.ndarray, dof: np.ndarray, z: np.ndarray, sd: np.ndarray,
               lower: np.ndarray, upper: np.ndarray, names: Sequence[str], *,
               window: int = 20, alpha: float = 1e-3, growth: float = 10.0
               ) -> tuple[np.ndarray, list[str]]:
    """Samples at which the filter looks diverged, and why.

    Parameters
    ----------
    nis, dof : array (time,)
        NIS of each update and its degrees of freedom (accepted channels).
    z, sd : array (time, nz)
        Estimates and their standard deviations [units of each].
    lower, upper : array (nz,)
        Bounds the estimates are projected onto (``±inf`` where none).
    names : sequence of str
        Name of each column of ``z``, for the reasons.
    window : int
        Samples in the sliding window, at least 2.
    alpha : float
        Significance of the NIS test (default 1e-3: the 99.9 % quantile).
    growth : float
        Factor of standard-deviation growth over the window that counts as divergence.

    Returns
    -------
    flags : array (time,) of bool
        True where any symptom holds.
    reasons : list of str
        One text per flagged sample (``""`` elsewhere), e.g. ``"NIS 212 > 45.3 over 20
        samples; `S` pinned at its bound 0"``.
    """
    if int(window) < 2:
        raise ValueError(f"`window` must be at least 2 samples, got {window!r}.")
    w = int(window)
    n = nis.shape[0]
    nis = np.nan_to_num(np.asarray(nis, dtype=float))
    dof = np.asarray(dof, dtype=float)
    csum_nis = np.concatenate([[0.0], np.cumsum(nis)])
    csum_dof = np.concatenate([[0.0], np.cumsum(dof)])
    span = np.minimum(np.arange(1, n + 1), w)
    idx = np.arange(1, n + 1)
    win_nis = csum_nis[idx] - csum_nis[idx - span]
    win_dof = csum_dof[idx] - csum_dof[idx - span]
    limit = np.where(win_dof > 0, chi2.ppf(1.0 - alpha, np.maximum(win_dof, 1.0)), np.inf)
    bad_nis = (span == w) & (win_nis > limit)
    at_lo = np.isfinite(lower) & np.isclose(z, lower, rtol=1e-12, atol=0.0)
    at_hi = np.isfinite(upper) & np.isclose(z, upper, rtol=1e-12, atol=0.0)
    at_bound = at_lo | at_hi
    # length of the run of samples at a bound ending at each sample (vectorised: the
    # distance to the last sample off the bound)
    k_idx = np.arange(n)[:, None]
    last_off = np.maximum.accumulate(np.where(at_bound, -1, k_idx), axis=0)
    pinned = (k_idx - last_off) >= w // 2
    grew = np.zeros(sd.shape, dtype=bool)
    if n > w:
        grew[w:] = sd[w:] > growth * np.maximum(sd[:-w], 1e-300)
    flags = bad_nis | pinned.any(axis=1) | grew.any(axis=1)
    reasons = [""] * n
    for k in np.flatnonzero(flags):  # texts only where needed: a healthy run costs none
        parts = []
        if bad_nis[k]:
            parts.append(f"NIS {win_nis[k]:.3g} > {limit[k]:.3g} over {w} samples")
        for j in np.flatnonzero(pinned[k]):
            b = lower[j] if at_lo[k, j] else upper[j]
            parts.append(f"`{names[j]}` pinned at its bound {b:g}")
        for j in np.flatnonzero(grew[k]):
            parts.append(f"σ of `{names[j]}` grew over {growth:g}× in {w} samples")
        reasons[k] = "; ".join(parts)
    return flags, reasons


class HealthCheck:
    """The three symptoms of :func:`divergence`, checked one sample at a time inside the
    live filter's compiled step.

    The check's memory (the NIS window, the run of samples at a bound per estimate, the
    variances ``window`` samples ago) is a flat vector kept in the live filter's buffer
    beside the filter state, so a late sample re-filtered from a logged buffer restores it
    exactly, and a healthy step costs no Python at all: :meth:`step` returns a verdict
    vector whose first element says whether anything is flagged; :meth:`reason` turns a
    flagged verdict into text. Its verdicts equal :func:`divergence` on the same history.

    Parameters
    ----------
    lower, upper : array (nz,)
        Bounds the estimates are projected onto (``±inf`` where none).
    names : sequence of str
        Name of each estimated quantity.
    max_dof : int
        Most degrees of freedom of one update (the number of measured values).
    window, alpha, growth :
        As for :func:`divergence`.
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, names: Sequence[str], *,
                 max_dof: int, window: int = 20, alpha: float = 1e-3, growth: float = 10.0
                 ) -> None:
        if int(window) < 2:
            raise ValueError(f"`window` must be at least 2 samples, got {window!r}.")
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.names = tuple(names)
        self.nz = self.lower.shape[0]
        self.window, self.alpha, self.growth = int(window), float(alpha), float(growth)
        # χ² quantile of every possible window total (index: degrees of freedom)
        d = np.arange(self.window * max(int(max_dof), 1) + 1, dtype=float)
        self._limits = np.r_[np.inf, chi2.ppf(1.0 - self.alpha, d[1:])]
        # NaN where there is no bound: every comparison with it is false
        self._lo = np.where(np.isfinite(self.lower), self.lower, np.nan)
        self._hi = np.where(np.isfinite(self.upper), self.upper, np.nan)

    @property
    def memory_size(self) -> int:
        """Length of the memory vector: NIS and dof windows, variances window, runs, count."""
        w, nz = self.window, self.nz
        return 2 * w + w * nz + nz + 1

    @property
    def verdict_size(self) -> int:
        """Length of the verdict: flagged, NIS flagged, window NIS, its limit, then per
        estimate pinned and grown."""
        return 4 + 2 * self.nz

    def step(self, mem: Any, nis: Any, dof: Any, z: Any, var: Any) -> tuple[Any, Any]:
        """One sample's NIS, degrees of freedom, estimate and variances (the covariance's
        diagonal) into the memory; traceable by JAX.

        Returns
        -------
        mem : array (memory_size,)
            The memory after the sample (zeros: a fresh check).
        verdict : array (verdict_size,)
            ``[flagged, nis_flagged, window_nis, limit, pinned (nz), grew (nz)]``, flags as
            0/1.
        """
        import jax.numpy as jnp

        w, nz = self.window, self.nz
        f = mem.dtype
        nis_w, dof_w = mem[:w], mem[w:2 * w]
        var_w = mem[2 * w:2 * w + w * nz].reshape(w, nz)
        run, n = mem[2 * w + w * nz:-1], mem[-1]
        # windows oldest first, shifted by one (static slices: no scatter in the kernel)
        old = var_w[0]  # the sample `window` ago (meaningful once n >= w)
        nis = jnp.where(jnp.isfinite(nis), nis, 0.0)
        nis_w = jnp.concatenate([nis_w[1:], jnp.reshape(nis, (1,))])
        dof_w = jnp.concatenate([dof_w[1:], jnp.reshape(dof, (1,))])
        var_w = jnp.concatenate([var_w[1:], var[None]])
        at_bound = ((jnp.abs(z - self._lo) <= 1e-12 * jnp.abs(self._lo))
                    | (jnp.abs(z - self._hi) <= 1e-12 * jnp.abs(self._hi)))
        run = jnp.where(at_bound, run + 1.0, 0.0)
        pinned = run >= w // 2
        grew = (n >= w) & (var > self.growth**2 * old)  # σ grew g-fold: variance g²
        tot, df = jnp.sum(nis_w), jnp.round(jnp.sum(dof_w))
        lim = jnp.asarray(self._limits)[jnp.clip(df, 0, self._limits.size - 1).astype(jnp.int32)]
        bad = (n + 1 >= w) & (df > 0) & (tot > lim)
        flagged = bad | pinned.any() | grew.any()
        mem = jnp.concatenate([nis_w, dof_w, var_w.ravel(), run, jnp.reshape(n + 1, (1,))])
        verdict = jnp.concatenate([jnp.stack([flagged, bad]).astype(f), jnp.stack([tot, lim]),
                                   pinned.astype(f), grew.astype(f)])
        return mem, verdict

    def reason(self, verdict: np.ndarray, z: np.ndarray) -> str:
        """Why the filter looks diverged (``""`` when healthy), from a :meth:`step`
        verdict and the estimate ``z`` it was made on."""
        if not verdict[0]:
            return ""
        nz, w = self.nz, self.window
        parts = []
        if verdict[1]:
            parts.append(f"NIS {verdict[2]:.3g} > {verdict[3]:.3g} over {w} samples")
        for j in np.flatnonzero(verdict[4:4 + nz]):
            lo = self._lo[j]  # NaN where unbounded below: the comparison is false
            b = lo if abs(z[j] - lo) <= 1e-12 * abs(lo) else self.upper[j]
            parts.append(f"`{self.names[j]}` pinned at its bound {b:g}")
        for j in np.flatnonzero(verdict[4 + nz:]):
            parts.append(f"σ of `{self.names[j]}` grew over {self.growth:g}× in {w} samples")
        return "; ".join(parts)
