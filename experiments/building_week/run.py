"""A three-zone building for a winter week on real weather (Sand Point, Alaska, TMY3).

    python experiments/building_week/run.py [--out building_week.png]

Simulates :class:`processtwin.models.Building` (three zones in a row, south-, east- and
north-facing windows) from 8 January with the outdoor temperature and the irradiance on
each zone's windows from pvlib's bundled typical-year file, radiators held at 2.5 kW per
zone by day and 1 kW at night, and prints each zone's mean and minimum temperature and the
week's heat use; the plot shows zone and outdoor temperatures and the solar gains.
"""

from __future__ import annotations

import argparse

import numpy as np

import processtwin as pt
from processtwin.models import Building
from processtwin.weather import building_inputs, example_weather, read_weather

AZIMUTHS = (180.0, 90.0, 0.0)  # south, east, north


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="building_week.png")
    args = ap.parse_args()
    pt.configure()
    weather = read_weather(example_weather("sand_point"))
    b = Building(n_zones=3, floor_area=(120.0, 80.0, 100.0), adjacency=((0, 1, 25.0),
                                                                        (1, 2, 25.0)))
    inp = building_inputs(weather, AZIMUTHS, start="1997-01-08", days=7)
    t = inp.pop("times")
    hour = (t / 3600.0) % 24
    heat = np.where((hour >= 6) & (hour < 22), 2500.0, 1000.0)
    inp["Q_hvac"] = pt.hold(t, np.tile(heat, (3, 1)))
    inp["occupancy"] = pt.hold(t, np.where((hour >= 17) | (hour < 8), 1.0, 0.3))
    grid = np.arange(0.0, 7 * 86400.0 + 1, 900.0)
    res = pt.simulate(b, {"T_i": [20.0] * 3, "T_e": [17.0] * 3}, inp, grid)
    T = np.asarray(res["T_i"])
    print(f"{b.n_zones} zones, 8–15 January, {weather.attrs['station']}: outdoor "
          f"{float(np.min(res['T_out'])):.1f} … {float(np.max(res['T_out'])):.1f} °C")
    for z, az in enumerate(AZIMUTHS):
        print(f"  zone {z} (windows at {az:.0f}°): mean {T[:, z].mean():.2f} °C, "
              f"min {T[:, z].min():.2f} °C")
    print(f"  heat delivered: {heat.sum() * 3 * 3600 / 3.6e9:.2f} MWh over the week")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    days = grid / 86400.0
    for z, az in enumerate(AZIMUTHS):
        a1.plot(days, T[:, z], label=f"zone {z} ({az:.0f}°)")
    a1.plot(days, np.asarray(res["T_out"]), "k--", label="outdoor")
    a1.set_ylabel("temperature [°C]")
    a1.legend(ncol=4, fontsize=8)
    I = np.asarray(res["I_sol"])
    for z in range(3):
        a2.plot(days, I[:, z], label=f"zone {z}")
    a2.set_ylabel("window irradiance [W/m²]")
    a2.set_xlabel("day")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
