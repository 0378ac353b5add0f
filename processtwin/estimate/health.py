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

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import chi2

__all__ = ["LiveHealth", "divergence"]


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


class LiveHealth:
    """The three symptoms of :func:`divergence`, checked one sample at a time.

    Keeps only what the last ``window`` samples need (the NIS window, the run of samples at
    a bound per estimate, the standard deviations ``window`` samples ago), so a live filter
    pays a few microseconds per sample; :meth:`rebuild` restores it from a log after a late
    sample was re-filtered. Its verdicts equal :func:`divergence` on the same history.

    Parameters
    ----------
    lower, upper : array (nz,)
        Bounds the estimates are projected onto.
    names : sequence of str
        Name of each estimated quantity.
    window, alpha, growth :
        As for :func:`divergence`.
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, names: Sequence[str], *,
                 window: int = 20, alpha: float = 1e-3, growth: float = 10.0) -> None:
        if int(window) < 2:
            raise ValueError(f"`window` must be at least 2 samples, got {window!r}.")
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.names = tuple(names)
        self.window, self.alpha, self.growth = int(window), float(alpha), float(growth)
        # plain floats: for a handful of estimates a Python loop beats numpy's per-call
        # overhead several times over (a live step is ~20 µs in all)
        # (NaN where there is no bound: every comparison with it is false)
        lo_f = np.where(np.isfinite(self.lower), self.lower, np.nan).tolist()
        hi_f = np.where(np.isfinite(self.upper), self.upper, np.nan).tolist()
        self._bounds = [(lo, 1e-12 * abs(lo), hi, 1e-12 * abs(hi))
                        for lo, hi in zip(lo_f, hi_f, strict=True)]
        self._limits: dict[float, float] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the history (after the filter was re-initialised)."""
        w, nz = self.window, self.lower.shape[0]
        self._nis = [0.0] * w  # ring buffers; sums kept running
        self._dof = [0.0] * w
        self._var: list[list[float]] = [[0.0] * nz for _ in range(w)]
        self._n = 0
        self._sum_nis = 0.0
        self._sum_dof = 0.0
        self._run = [0] * nz

    def _limit(self, dof: float) -> float:
        if dof not in self._limits:
            self._limits[dof] = float(chi2.ppf(1.0 - self.alpha, dof))
        return self._limits[dof]

    def update(self, nis: float, dof: float, z: np.ndarray, var: np.ndarray) -> str:
        """Take one sample's NIS, degrees of freedom, estimate and variances (the
        covariance's diagonal: no square roots on the live path); return why the filter
        looks diverged (``""`` when healthy)."""
        w = self.window
        i = self._n % w
        nis = float(nis)
        nis = nis if nis == nis and abs(nis) != math.inf else 0.0
        dof = float(dof)
        self._sum_nis += nis - self._nis[i]
        self._sum_dof += dof - self._dof[i]
        self._nis[i], self._dof[i] = nis, dof
        var_now = var.tolist()
        old = self._var[i] if self._n >= w else None  # the sample `window` ago
        self._var[i] = var_now
        self._n += 1
        pinned: list[tuple[int, float]] = []
        grew: list[int] = []
        half, run, g2 = w // 2, self._run, self.growth**2  # σ grew g-fold: variance g²
        for j, zj in enumerate(z.tolist()):
            lo, tl, hi, th = self._bounds[j]
            if abs(zj - lo) <= tl or abs(zj - hi) <= th:
                run[j] += 1
                if run[j] >= half:
                    pinned.append((j, lo if abs(zj - lo) <= tl else hi))
            else:
                run[j] = 0
            if old is not None and var_now[j] > g2 * old[j]:
                grew.append(j)
        parts = []
        if self._n >= w:
            if i == w - 1:  # running sums drift by rounding: recomputed once per window
                self._sum_nis, self._sum_dof = math.fsum(self._nis), math.fsum(self._dof)
            tot, df = self._sum_nis, round(self._sum_dof)
            if df > 0 and tot > (lim := self._limit(df)):
                parts.append(f"NIS {tot:.3g} > {lim:.3g} over {w} samples")
        if pinned or grew:
            parts += [f"`{self.names[j]}` pinned at its bound {b:g}" for j, b in pinned]
            parts += [f"σ of `{self.names[j]}` grew over {self.growth:g}× in {w} samples"
                      for j in grew]
        return "; ".join(parts)

    def rebuild(self, nis: np.ndarray, dof: np.ndarray, z: np.ndarray, sd: np.ndarray
                ) -> str:
        """Restart from the last samples of a history (rows: samples, oldest first) and
        return the verdict on the newest."""
        self.reset()
        keep = self.window + self.window // 2  # enough for every symptom's memory
        reason = ""
        for row in zip(nis[-keep:], dof[-keep:], z[-keep:], sd[-keep:] ** 2, strict=True):
            reason = self.update(*row)
        return reason
