"""Write ``bioreactor_reference.nc``: the bioreactor's simulation, ensemble and EKF
estimate as computed before the contract redesign, so that the redesign can be checked to
leave them unchanged (``tests/test_reference.py``).

Run from the repository root at the commit to take the reference from (it was generated
at 1e8fe32, the last commit before the redesign)::

    python tests/data/make_bioreactor_reference.py

It uses only the public API common to both versions.
"""

from pathlib import Path

import numpy as np
import xarray as xr

import processtwin as pt

pt.configure()
from processtwin.estimate import ExtendedKalmanFilter  # noqa: E402
from processtwin.models import Bioreactor  # noqa: E402

T = np.linspace(0.0, 150.0, 151)
FEED = pt.hold([0.0, 10.0, 40.0, 90.0], [0.0, 0.02, 0.04, 0.01])


def reference() -> xr.Dataset:
    """The quantities compared, as one Dataset."""
    model = Bioreactor(mu_max=0.025)
    sim = pt.simulate(model, {"X": 1.2, "V": 118.0}, {"F": FEED}, T)
    ens = pt.ensemble(model, None, {"F": FEED}, T,
                      params={"mu_max": np.array([0.018, 0.022, 0.026])})
    rng = np.random.default_rng(5)
    data = xr.Dataset(
        {c: ("time", sim["out:" + c][1:] + rng.normal(0.0, s, T.size - 1))
         for c, s in (("V", 0.05), ("OUR", 0.002))},
        coords={"time": T[1:]})
    est = ExtendedKalmanFilter(Bioreactor(), estimate=["mu_max"], channels=["V", "OUR"])
    out = est.filter(data, x0={"X": 1.2, "V": 118.0}, inputs={"F": 0.02}, t0=0.0,
                     smooth=True)
    out = getattr(out, "data", out)  # a Dataset before the redesign, a result after
    aug = ("X", "S", "P", "V", "mu_max")

    def stack(fmt: str) -> np.ndarray:
        return np.stack([out[fmt.format(k)].values for k in aug], axis=1)

    return xr.Dataset({
        "sim_states": (("time", "state"), np.stack([sim[k] for k in "XSPV"], axis=1)),
        "sim_OUR": ("time", sim["out:OUR"]),
        "ens_P": (("scenario", "time"), ens["P"]),
        "est_z": (("sample", "aug"), stack("{}")),
        "est_std": (("sample", "aug"), stack("{}_std")),
        "est_smooth": (("sample", "aug"), stack("{}_smooth")),
        "est_nis": ("sample", out["nis"].values),
    })


if __name__ == "__main__":
    ds = reference()
    path = Path(__file__).with_name("bioreactor_reference.nc")
    ds.to_netcdf(path, engine="h5netcdf")
    print(f"wrote {path}")
