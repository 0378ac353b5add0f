"""Electricity prices as data: a time-of-use tariff, price series from CSV, and noisy
forecasts for honest closed-loop studies.

Prices are per kWh [currency/kWh] on hourly (or any) interval starts in seconds from the
study's start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["interval_prices", "noisy_forecast", "read_prices", "time_of_use"]


def time_of_use(times_s: Any, *, peak: float = 0.40, shoulder: float = 0.25,
                offpeak: float = 0.12, peak_hours: tuple[int, int] = (17, 21),
                offpeak_hours: tuple[int, int] = (22, 7)) -> np.ndarray:
    """A three-band time-of-use tariff [currency/kWh] at the given times.

    Parameters
    ----------
    times_s : array
        Times [s] from a midnight.
    peak, shoulder, offpeak : float
        Prices of the bands [currency/kWh] (defaults: 0.40 / 0.25 / 0.12, a typical
        European residential ToU ratio of about 3:1 peak to off-peak).
    peak_hours : tuple of int
        ``[start, end)`` hours of the evening peak.
    offpeak_hours : tuple of int
        ``[start, end)`` hours of the night off-peak (may wrap midnight).

    Returns
    -------
    numpy.ndarray
        Price at each time [currency/kWh].
    """
    hour = (np.asarray(times_s, dtype=float) / 3600.0) % 24.0
    a, b = offpeak_hours
    night = (hour >= a) | (hour < b) if a > b else (hour >= a) & (hour < b)
    evening = (hour >= peak_hours[0]) & (hour < peak_hours[1])
    return np.where(evening, peak, np.where(night, offpeak, shoulder))


def read_prices(path: str | Path, *, column: str | None = None) -> tuple[np.ndarray,
                                                                         np.ndarray]:
    """Read a price series from a CSV file with a header: a time column (ISO date-times,
    or hours/seconds from the start in a column named ``hour``/``time_s``; plain numbers
    under another name are refused, as their unit is unknown) and a price column
    [currency/kWh] (``price``, or the one named).

    Parameters
    ----------
    path : str or Path
        The CSV file.
    column : str, optional
        The price column (default ``price``, else the second column).

    Returns
    -------
    times_s, price : numpy.ndarray
        Times [s] from the first row, and prices [currency/kWh].

    Raises
    ------
    DataError
        A missing file or column, non-numeric or non-finite prices, or times that do not
        increase (with the row).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"price file {path} does not exist.")
    df = pd.read_csv(path)
    if df.shape[1] < 2:
        raise DataError(f"{path}: expected a time column and a price column, got columns "
                        f"{list(df.columns)}.")
    col = column or ("price" if "price" in df.columns else df.columns[1])
    if col not in df.columns:
        raise DataError(f"{path}: no column {col!r}; columns are {list(df.columns)}.")
    tcol = df.columns[0]
    price = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
    bad = np.nonzero(~np.isfinite(price))[0]
    if len(bad):
        raw = df[col].iloc[bad[0]]
        shown = "an empty cell" if pd.isna(raw) else repr(str(raw))
        raise DataError(f"{path}: price in row {int(bad[0]) + 2} is not a finite number "
                        f"({shown}) [currency/kWh].")
    if tcol in ("hour", "hours", "time_h"):
        t = pd.to_numeric(df[tcol], errors="coerce").to_numpy(float) * 3600.0
    elif tcol in ("time_s", "seconds", "t"):
        t = pd.to_numeric(df[tcol], errors="coerce").to_numpy(float)
    elif pd.api.types.is_numeric_dtype(df[tcol]):
        # numbers would be read as nanoseconds since 1970: ask for their unit instead
        raise DataError(f"{path}: the time column `{tcol}` holds numbers of no stated "
                        "unit; name it `hour` (hours) or `time_s` (seconds) from the start, "
                        "or give ISO date-times.")
    else:
        stamps = pd.to_datetime(df[tcol], errors="coerce")
        if stamps.isna().any():
            row = int(np.nonzero(stamps.isna().to_numpy())[0][0]) + 2
            raise DataError(f"{path}: time in row {row} is not a date-time "
                            f"({df[tcol].iloc[row - 2]!r}); use ISO times or an `hour` / "
                            "`time_s` column.")
        t = (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy(float)
    if not np.all(np.isfinite(t)):
        row = int(np.nonzero(~np.isfinite(t))[0][0]) + 2
        unit = "h" if tcol in ("hour", "hours", "time_h") else "s"
        raise DataError(f"{path}: time in row {row} is not a finite number "
                        f"({df[tcol].iloc[row - 2]!r}) [{unit}].")
    step = np.diff(t)
    if np.any(step <= 0):
        row = int(np.nonzero(step <= 0)[0][0]) + 3
        raise DataError(f"{path}: times must increase; row {row} does not.")
    return t - t[0], price


def interval_prices(times_s: Any, price: Any, n: int, *, dt_s: float = 3600.0,
                    source: str = "prices") -> np.ndarray:
    """The mean price of each of ``n`` planning intervals of ``dt_s`` from a series of
    any time step: each price holds from its time until the next (the last one for as
    long as the step before it), and an interval pays the time-weighted mean of the
    prices within it (exact for an energy cost at constant power over the interval).
    A day's profile — rows before 24:00 whose last price, held one step, reaches midnight
    (hourly, 15-min, or blocks such as 0/6/9/17/21 h) — holds its last price until
    midnight and repeats daily.

    Parameters
    ----------
    times_s : array
        Start times of the prices [s] from the study's start (the first is 0), increasing
        (e.g. from :func:`read_prices`); 15-min, hourly, blocks of hours or irregular.
    price : array
        Prices [currency/kWh].
    n : int
        Number of intervals wanted.
    dt_s : float
        Interval length [s] (3600: hourly).
    source : str
        Name of the series in error messages (the file).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` mean price of each interval [currency/kWh].

    Raises
    ------
    DataError
        Mismatched lengths, times that do not start at 0 or do not increase, or a series
        that does not cover the ``n`` intervals (how long it covers and how long is
        needed, in hours).
    """
    t = np.asarray(times_s, dtype=float).ravel()
    p = np.asarray(price, dtype=float).ravel()
    if t.shape != p.shape or len(t) == 0:
        raise DataError(f"{source}: {len(t)} times for {len(p)} prices.")
    if t[0] != 0.0 or np.any(np.diff(t) <= 0):
        raise DataError(f"{source}: times must start at 0 s and increase.")
    step = np.diff(t)[-1] if len(t) > 1 else dt_s
    end = t[-1] + step                       # the last price holds one step
    day = 86400.0
    if t[-1] < day <= end * (1.0 + 1e-9):
        end = day                            # a day's profile: the last price to midnight
    edges = np.append(t, end)
    want = n * dt_s
    if end < want and end == day:
        days = int(np.ceil(want / day))
        edges = np.concatenate([edges[:-1] + day * d for d in range(days)] + [[day * days]])
        p = np.tile(p, days)
        end = edges[-1]
    if end < want * (1.0 - 1e-12):
        hint = ("; a day's profile has its rows before 24:00 (drop the closing row at "
                "24:00)" if abs(t[-1] - day) <= 1e-6 * day and len(t) > 1 else "")
        raise DataError(f"{source}: the prices cover {end / 3600.0:g} h; the plan needs "
                        f"{want / 3600.0:g} h ({n} intervals of {dt_s / 3600.0:g} h){hint}.")
    # the integral of the step function at the interval edges, differenced
    cum = np.concatenate([[0.0], np.cumsum(p * np.diff(edges))])
    q = np.arange(n + 1) * dt_s
    return np.diff(np.interp(q, edges, cum)) / dt_s


def noisy_forecast(truth: Any, lead_s: Any, *, sigma0: float, growth_per_h: float,
                   cap: float | None = None, rng: np.random.Generator | None = None,
                   relative: bool = False) -> np.ndarray:
    """A forecast of ``truth`` whose error grows with lead time, as from a weather service.

    The error is a random walk in the lead time (correlated along the horizon) with
    standard deviation ``sigma0 + growth_per_h · lead_h`` (capped at ``cap``).

    Parameters
    ----------
    truth : array
        True values over the horizon ``(N,)`` or ``(N, m)``.
    lead_s : array
        Lead time of each value [s] ``(N,)``.
    sigma0 : float
        Error at lead 0 [units of truth, or fraction with ``relative``].
    growth_per_h : float
        Growth of the error standard deviation per hour of lead.
    cap : float, optional
        Largest standard deviation.
    rng : numpy.random.Generator, optional
        Random source (default a fresh one).
    relative : bool
        Multiplicative error (irradiance), clipped at zero.

    Returns
    -------
    numpy.ndarray
        The forecast, same shape as ``truth``.
    """
    rng = rng if rng is not None else np.random.default_rng()
    truth = np.asarray(truth, dtype=float)
    lead_h = np.asarray(lead_s, dtype=float) / 3600.0
    sd = sigma0 + growth_per_h * lead_h
    if cap is not None:
        sd = np.minimum(sd, cap)
    shape = truth.shape[1:]
    walk = np.cumsum(rng.standard_normal((len(lead_h), *shape)), axis=0)
    walk /= np.sqrt(np.arange(1, len(lead_h) + 1)).reshape((-1,) + (1,) * len(shape))
    err = walk * sd.reshape((-1,) + (1,) * len(shape))
    if relative:
        return np.clip(truth * (1.0 + err), 0.0, None)
    return truth + err
