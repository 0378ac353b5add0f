"""Storage of Datasets to netCDF-4/HDF5 files through h5py (engine ``h5netcdf``)."""

from __future__ import annotations

import os
from typing import Any

import xarray as xr

from .errors import DataError

__all__ = ["load", "read_measurements", "save"]


def save(result: Any, path: str | os.PathLike) -> str:
    """Write a result (or an ``xarray.Dataset``) to a netCDF-4/HDF5 file.

    The file is written to ``path + ".tmp"`` and renamed, so a crash never leaves a
    half-written file under ``path``.

    Parameters
    ----------
    result : SimulationResult, xarray.Dataset or object with ``.data``
        What to write: a Dataset as is, anything else through its ``.data`` Dataset
        (e.g. a :class:`~processtwin.simulate.SimulationResult`).
    path : str or os.PathLike
        Destination file (conventionally ``.nc``); an existing file is replaced.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    DataError
        ``result`` is neither a Dataset nor has a ``.data`` Dataset, or the directory of
        ``path`` does not exist.
    """
    ds = result.data if hasattr(result, "data") and not isinstance(result, xr.Dataset) else result
    if not isinstance(ds, xr.Dataset):
        raise DataError(f"can only save a Dataset or a result with `.data`, got "
                        f"{type(result).__name__}.")
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DataError(f"cannot write {path}: directory {parent} does not exist.")
    tmp = path + ".tmp"
    ds.to_netcdf(tmp, engine="h5netcdf", invalid_netcdf=False)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a Dataset written by :func:`save` (fully into memory, file closed).

    Parameters
    ----------
    path : str or os.PathLike
        The netCDF-4/HDF5 file to read.

    Returns
    -------
    xarray.Dataset
        The stored Dataset as written (for a saved result: units in each variable's
        ``units`` attribute).

    Raises
    ------
    DataError
        No file at ``path``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path!r}.")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def read_measurements(path: str | os.PathLike, *, time: str = "time") -> xr.Dataset:
    """Read plant data: netCDF/HDF5 (``.nc``, ``.h5``) or CSV with a header row and a
    time column. Variables are named after model outputs (NaN = not measured) and may
    include model inputs.

    Parameters
    ----------
    path : str or path-like
        The file.
    time : str
        Name of the time column or coordinate [model time unit, or datetimes]; renamed
        to ``time``.

    Raises
    ------
    DataError
        A missing file, no such time column, or a non-numeric column.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path!r}.")
    if path.lower().endswith(".csv"):
        import pandas as pd

        frame = pd.read_csv(path)
        if time not in frame.columns:
            raise DataError(f"{path}: CSV needs a `{time}` column, got columns "
                            f"{', '.join(map(str, frame.columns))}.")
        bad = [c for c in frame.columns if c != time and frame[c].dtype.kind not in "fiu"]
        if bad:
            raise DataError(f"{path}: column `{bad[0]}` is not numeric.")
        ds = xr.Dataset.from_dataframe(frame.set_index(time))
        return ds.rename({time: "time"}) if time != "time" else ds
    ds = load(path)
    if time != "time":
        if time not in ds.variables:
            raise DataError(f"{path}: no time variable `{time}`; it has "
                            f"{', '.join(map(str, ds.variables))}.")
        ds = ds.rename({time: "time"})
    return ds
