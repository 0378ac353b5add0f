"""Weather for building and thermal-network twins: typical-year files into xarray, and the
solar irradiance on a zone's windows.

Reading and solar geometry use pvlib (Holmgren, Hansen & Mikofski (2018), *J. Open Source
Softw.* 3, 884): ``pvlib.iotools.read_tmy3`` / ``read_epw`` for the files,
``pvlib.solarposition`` and ``pvlib.irradiance.get_total_irradiance`` (isotropic sky by
default, or Perez et al. (1990)) for the plane of a window. The examples and tests use the
TMY3 files pvlib ships (no network at run time): ``example_weather("sand_point")`` (Sand
Point, Alaska: a cold maritime year) and ``example_weather("greensboro")`` (Greensboro,
North Carolina: cold winters, hot summers).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import DataError

__all__ = ["EXAMPLES", "building_inputs", "example_weather", "irradiance_on", "read_weather"]

#: Typical-year files bundled with pvlib, by short name.
EXAMPLES = {"sand_point": "703165TY.csv", "greensboro": "723170TYA.CSV"}

_VARS = {  # pvlib name -> (ours, units, long name)
    "temp_air": ("T_out", "degC", "outdoor dry-bulb air temperature"),
    "ghi": ("ghi", "W/m2", "global horizontal irradiance"),
    "dni": ("dni", "W/m2", "direct normal irradiance"),
    "dhi": ("dhi", "W/m2", "diffuse horizontal irradiance"),
    "wind_speed": ("wind_speed", "m/s", "wind speed"),
    "relative_humidity": ("relative_humidity", "%", "relative humidity"),
}


def example_weather(name: str = "sand_point") -> Path:
    """Path of a typical-year weather file that ships with pvlib.

    Parameters
    ----------
    name : {"sand_point", "greensboro"}
        Which station.

    Raises
    ------
    DataError
        An unknown name.
    """
    import pvlib

    if name not in EXAMPLES:
        raise DataError(f"unknown example weather `{name}`; choose one of "
                        f"{', '.join(EXAMPLES)}.")
    return Path(pvlib.__file__).parent / "data" / EXAMPLES[name]


def read_weather(path: str | Path, *, year: int | None = None) -> xr.Dataset:
    """Read a TMY3 (``.csv``) or EnergyPlus (``.epw``) weather file.

    A typical-year file stitches months of different years; its time stamps are put on
    one calendar year (the first record's, or ``year``) so that they increase — the last
    hour, stamped at midnight, rolls into the next year — and the Dataset's attribute
    ``typical_year`` says so.

    Parameters
    ----------
    path : str or Path
        The file.
    year : int, optional
        The calendar year to put every record on (default: keep the file's years when
        they increase, else the first record's year, or the next year that is not a leap
        year: a typical year has 365 days).

    Returns
    -------
    xarray.Dataset
        Hourly ``T_out`` [degC], ``ghi``, ``dni``, ``dhi`` [W/m2], ``wind_speed`` [m/s]
        and ``relative_humidity`` [%] over ``time`` (the file's local standard time, as
        naive datetime64, stamped at the end of each hour as both formats do); attributes
        ``latitude``, ``longitude`` [deg], ``altitude`` [m], ``station`` and ``utc_offset``
        [h], which :func:`irradiance_on` uses.

    Raises
    ------
    DataError
        A missing file, an unknown extension or a file pvlib cannot read.
    """
    import pvlib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"weather file {path} does not exist.")
    suffix = path.suffix.lower()
    def read(coerce: int | None) -> tuple[Any, dict, str]:
        if suffix == ".epw":
            data, meta = pvlib.iotools.read_epw(path, coerce_year=coerce)
            return data, meta, str(meta.get("city", ""))
        if suffix == ".csv":
            data, meta = pvlib.iotools.read_tmy3(path, map_variables=True,
                                                 coerce_year=coerce)
            return data, meta, str(meta.get("Name", "")).strip('"')
        raise DataError(f"weather file {path}: expected a TMY3 .csv or an .epw file, got "
                        f"`{path.suffix}`.")

    try:
        data, meta, station = read(year)
        typical = year is not None
        steps = np.diff(np.asarray(data.index.tz_localize(None) if data.index.tz is not None
                                   else data.index, dtype="datetime64[s]"))
        hourly = bool(steps.size) and bool(np.all(steps == np.timedelta64(3600, "s")))
        if year is None and (not data.index.is_monotonic_increasing or not hourly):
            # months from different years (even in increasing order: gaps of years)
            first = int(data.index[0].year)
            # a typical year has 365 days: a leap year would leave a gap at 29 February
            while (first % 4 == 0 and first % 100 != 0) or first % 400 == 0:
                first += 1
            data, meta, station = read(first)
            typical = True
    except DataError:
        raise
    except Exception as exc:  # pvlib raises many kinds on a malformed file
        raise DataError(f"weather file {path} could not be read: {exc}") from None
    offset = float(meta.get("TZ", meta.get("tz", 0.0)))
    index = data.index.tz_localize(None) if data.index.tz is not None else data.index
    out = {}
    for src, (name, units, long) in _VARS.items():
        if src in data:
            out[name] = ("time", np.asarray(data[src], dtype=float),
                         {"units": units, "long_name": long})
    missing = [n for n in ("T_out", "ghi", "dni", "dhi") if n not in out]
    if missing:
        raise DataError(f"weather file {path} lacks {', '.join(missing)}.")
    return xr.Dataset(out, coords={"time": ("time", np.asarray(index, dtype="datetime64[ns]"))},
                      attrs={"latitude": float(meta["latitude"]),
                             "longitude": float(meta["longitude"]),
                             "altitude": float(meta.get("altitude", 0.0)),
                             "station": station, "utc_offset": offset,
                             "source": str(path.name), "typical_year": int(typical)})


def irradiance_on(weather: xr.Dataset, tilt: float, azimuth: float, *, albedo: float = 0.2,
                  model: str = "isotropic") -> xr.DataArray:
    """Total irradiance on a plane (a façade's windows) from a weather Dataset.

    Parameters
    ----------
    weather : xarray.Dataset
        From :func:`read_weather` (``ghi``, ``dni``, ``dhi`` and the site attributes).
    tilt : float
        Tilt of the plane from horizontal [deg]: 90 for a façade.
    azimuth : float
        Azimuth the plane faces, clockwise from north [deg]: 180 for south.
    albedo : float
        Ground reflectance [-].
    model : {"isotropic", "perez"}
        Sky diffuse model.

    Returns
    -------
    xarray.DataArray
        Plane-of-array global irradiance [W/m2] over ``time``; the sun's position is taken
        at the middle of each hour (the files stamp the end).
    """
    import pandas as pd
    import pvlib

    lat, lon = weather.attrs["latitude"], weather.attrs["longitude"]
    offset = weather.attrs.get("utc_offset", 0.0)
    stamps = pd.DatetimeIndex(weather["time"].values) - pd.Timedelta(minutes=30)
    tz = f"Etc/GMT{-int(offset):+d}" if float(offset).is_integer() else "UTC"
    local = stamps.tz_localize(tz)
    with warnings.catch_warnings():  # pvlib's own use of pandas APIs pandas deprecates
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*is deprecated.*")
        sun = pvlib.solarposition.get_solarposition(
            local, lat, lon, altitude=weather.attrs.get("altitude", 0.0))
        extra = pvlib.irradiance.get_extra_radiation(local)
        poa = pvlib.irradiance.get_total_irradiance(
            tilt, azimuth, sun["apparent_zenith"], sun["azimuth"],
            weather["dni"].values, weather["ghi"].values, weather["dhi"].values,
            dni_extra=extra, albedo=albedo, model=model)
    values = np.clip(np.nan_to_num(np.asarray(poa["poa_global"], dtype=float)), 0.0, None)
    return xr.DataArray(values, coords={"time": weather["time"]}, dims=("time",),
                        attrs={"units": "W/m2", "long_name": f"irradiance on a plane tilted "
                               f"{tilt:g}° facing {azimuth:g}°"})


def building_inputs(weather: xr.Dataset, azimuths: Sequence[float], *, start: Any = None,
                    days: float | None = None, tilt: float = 90.0,
                    ground: float | None = None) -> dict[str, Any]:
    """Inputs of a :class:`~processtwin.models.Building` from weather: outdoor temperature,
    each zone's window irradiance and the ground temperature, as held signals over time in
    seconds from ``start``.

    Parameters
    ----------
    weather : xarray.Dataset
        From :func:`read_weather`.
    azimuths : sequence of float
        The azimuth each zone's windows face [deg from north], one per zone.
    start : datetime-like, optional
        First instant (default the file's first): its month, day and time of day within
        the file's year.
    days : float, optional
        Length [d] (default to the end of the file). A typical year repeats: a span past
        its end wraps around to its start.
    tilt : float
        Window tilt [deg] (90: vertical).
    ground : float, optional
        Ground temperature [degC] (default the year's mean outdoor temperature, the
        usual approximation of the undisturbed ground: ISO 13370).

    Returns
    -------
    dict
        ``T_out``, ``I_sol`` (vector over zones), ``T_ground`` for ``simulate`` (``hold``
        signals, switching every hour), plus ``"times"`` [s] (each hour's start).
    """
    from .signals import constant, hold

    times = np.asarray(weather["time"].values)
    first = times[0] - np.timedelta64(1, "h")  # the start of the first hour
    if start is None:
        t0 = first
    else:  # within the file's (typical) year: its month, day and time of day
        import pandas as pd

        ts = pd.Timestamp(start)
        if ts.month == 2 and ts.day == 29:  # a typical year has no 29 February
            ts = ts.replace(day=28)
        year = pd.Timestamp(first).year
        t0 = np.datetime64(ts.replace(year=year).to_datetime64(), "ns")
        if t0 < first:
            t0 = np.datetime64(ts.replace(year=year + 1).to_datetime64(), "ns")
    span = (times[-1] - first) / np.timedelta64(1, "s")  # the file's length [s]
    rel = (times - np.timedelta64(1, "h") - t0) / np.timedelta64(1, "s")  # hour starts
    index = np.arange(times.size)
    want = float(days) * 86400.0 if days is not None else span + min(rel[0], 0.0)
    # a typical year repeats: wrap around its end as often as the span asks
    reps = int(np.ceil((want + max(0.0, -rel[0])) / span)) + 1 if weather.attrs.get(
        "typical_year") else 1
    rel = np.concatenate([rel + r * span for r in range(reps)])
    index = np.tile(index, reps)
    keep = (rel >= 0) & (rel < want)
    if not keep.any():
        raise DataError(f"no weather between {t0} and {days} days later in "
                        f"{weather.attrs.get('source', 'the file')}.")
    sel = index[keep]
    I = np.stack([irradiance_on(weather, tilt, float(a)).values[sel] for a in azimuths])
    T_g = float(weather["T_out"].mean()) if ground is None else float(ground)
    t = rel[keep]
    return {"T_out": hold(t, weather["T_out"].values[sel]), "I_sol": hold(t, I),
            "T_ground": constant(T_g), "times": t}
