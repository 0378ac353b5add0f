"""The contract redesign leaves the bioreactor's results unchanged (to 1e-12).

The reference was written by ``tests/data/make_bioreactor_reference.py`` at the last
commit before the redesign; the same script, run on today's code, must reproduce it.
"""

import importlib.util
from pathlib import Path

import numpy as np
import xarray as xr

DATA = Path(__file__).with_name("data")


def test_bioreactor_results_unchanged_by_the_redesign():
    spec = importlib.util.spec_from_file_location("make_reference",
                                                  DATA / "make_bioreactor_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    now = module.reference()
    with xr.open_dataset(DATA / "bioreactor_reference.nc", engine="h5netcdf") as ref:
        ref = ref.load()
    assert set(now.data_vars) == set(ref.data_vars)
    for name in ref.data_vars:
        a, b = now[name].values, ref[name].values
        scale = np.maximum(np.abs(b), 1.0)
        np.testing.assert_array_less(np.abs(a - b) / scale, 1e-12, err_msg=name)
