"""Results round-trip exactly through netCDF-4/HDF5 (h5py engine)."""

import numpy as np
import pytest
import xarray as xr

import processtwin as pt
from processtwin.models import Bioreactor

T = np.linspace(0.0, 30.0, 31)


def test_single_run_round_trip(tmp_path):
    res = pt.simulate(Bioreactor(), None, {"F": pt.hold([0.0, 10.0], [0.0, 0.02])}, T)
    path = pt.save(res, tmp_path / "run.nc")
    back = pt.load(path)
    xr.testing.assert_identical(back, res.data)
    assert back["X"].attrs["units"] == "g/L"
    np.testing.assert_array_equal(back["P"].values, res["P"])  # bit-exact


def test_ensemble_round_trip_h5(tmp_path, rng):
    res = pt.ensemble(Bioreactor(), None, {"F": rng.uniform(0, 0.05, 6)}, T,
                      params={"mu_max": rng.uniform(0.01, 0.03, 6)})
    back = pt.load(pt.save(res.data, tmp_path / "ens.h5"))
    xr.testing.assert_identical(back, res.data)
    assert not (tmp_path / "ens.h5.tmp").exists()


def test_load_missing_file(tmp_path):
    with pytest.raises(pt.DataError, match="no such file"):
        pt.load(tmp_path / "nope.nc")


def test_save_into_a_missing_directory_is_a_data_error(tmp_path):
    ds = xr.Dataset({"a": ("time", [1.0, 2.0])})
    with pytest.raises(pt.DataError, match="directory .*missing does not exist"):
        pt.save(ds, tmp_path / "missing" / "x.nc")
