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

import numpy as np
from scipy.stats import chi2

__all__ = ["divergence"]


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
