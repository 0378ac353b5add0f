"""Building control KPIs as BOPTEST defines them (Blum et al. (2021), *J. Build. Perform.
Simul.* 14, 586): thermal discomfort, energy, operational cost, peak electric power and
computation time, from a closed-loop record.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .errors import DataError

__all__ = ["building_kpis"]


def building_kpis(record: xr.Dataset, *, floor_area: float, temperature: str = "T_air",
                  power: str = "P_el", price: str = "price", band_lo: str = "band_lo",
                  band_hi: str = "band_hi", peak_window_s: float = 900.0) -> dict[str, Any]:
    """KPIs of a closed-loop record on a regular time grid [s].

    Parameters
    ----------
    record : xarray.Dataset
        Over ``time`` [s]: zone temperatures ``(time, zone)`` [°C], electric power [W],
        price [currency/kWh] and the comfort band [°C], each value held over the interval
        that starts at its time (the last row closes the record).
    floor_area : float
        Conditioned floor area [m2].
    temperature, power, price, band_lo, band_hi : str
        Variable names in ``record``.
    peak_window_s : float
        Averaging window of the peak electric power [s] (BOPTEST: 15 minutes).

    Returns
    -------
    dict
        ``discomfort_Kh_per_zone`` (BOPTEST ``tdis_tot``: the time integral of each zone's
        deviation from its band, summed over zones and divided by their number [K·h]),
        ``discomfort_Kh_zone`` (per zone), ``energy_kWh_per_m2`` (``ener_tot``),
        ``cost_per_m2`` (``cost_tot`` [currency/m2]), ``peak_kW`` and ``peak_W_per_m2``
        (``pele_tot``, the largest ``peak_window_s`` average), ``energy_kWh``, ``cost``.

    Raises
    ------
    DataError
        A missing variable, fewer than two times, or an irregular grid.
    """
    for name in (temperature, power, price, band_lo, band_hi):
        if name not in record:
            raise DataError(f"KPI record has no variable {name!r}; it has "
                            f"{', '.join(record.data_vars)}.")
    t = np.asarray(record["time"].values, dtype=float)
    if t.size < 2:
        raise DataError("KPI record needs at least two times.")
    dt = np.diff(t)
    if not np.allclose(dt, dt[0]):
        raise DataError("KPI record must be on a regular time grid.")
    h = dt[0] / 3600.0
    T = np.asarray(record[temperature].values, dtype=float).reshape(t.size, -1)[:-1]
    lo = np.asarray(record[band_lo].values, dtype=float).reshape(t.size, -1)[:-1]
    hi = np.asarray(record[band_hi].values, dtype=float).reshape(t.size, -1)[:-1]
    dev = np.maximum(lo - T, 0.0) + np.maximum(T - hi, 0.0)
    per_zone = dev.sum(axis=0) * h
    P = np.asarray(record[power].values, dtype=float)[:-1] / 1e3       # kW
    pr = np.asarray(record[price].values, dtype=float)[:-1]
    energy = float(P.sum() * h)
    cost = float((P * pr).sum() * h)
    w = max(1, int(round(peak_window_s / dt[0])))
    n = (P.size // w) * w
    peak = float(P[:n].reshape(-1, w).mean(axis=1).max()) if n else float(P.max())
    return {"discomfort_Kh_per_zone": float(per_zone.mean()),
            "discomfort_Kh_zone": per_zone.tolist(),
            "energy_kWh": energy, "energy_kWh_per_m2": energy / floor_area,
            "cost": cost, "cost_per_m2": cost / floor_area,
            "peak_kW": peak, "peak_W_per_m2": peak * 1e3 / floor_area}
