"""The district-heating twin for a winter day: heat pump → pipes → substation → radiators.

    python experiments/district_heating_day/run.py [--out district_heating_day.png]

Simulates :func:`processtwin.models.district_heating` (a 40 kW air-source plant, 2 × 300 m
of DN50 pipe, a plate-exchanger substation and a three-zone building with radiators) over
15 January of the Sand Point typical year: outdoor air is both the heat pump's source and
the building's ambient, the plant modulates with a heating curve of the outdoor
temperature and the radiator valves are opened by day. Prints the day's heat, electricity,
mean COP, pipe losses and the zone temperatures, and plots the supply and return
temperatures, zone temperatures and electric power.
"""

from __future__ import annotations

import argparse

import numpy as np

import processtwin as pt
from processtwin.models import district_heating
from processtwin.weather import building_inputs, example_weather, read_weather


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="district_heating_day.png")
    args = ap.parse_args()
    pt.configure()
    weather = read_weather(example_weather("sand_point"))
    dh = district_heating()
    w = building_inputs(weather, (180.0, 90.0, 0.0), start="1997-01-15", days=1)
    t = w.pop("times")
    T_out = np.asarray(w["T_out"].values)
    hour = (t / 3600.0) % 24
    day = (hour >= 6) & (hour < 22)
    inputs = {
        "building.T_out": w["T_out"], "building.I_sol": w["I_sol"],
        "building.T_ground": w["T_ground"], "plant.T_src": w["T_out"],
        "plant.y": pt.hold(t, np.clip(0.35 + 0.02 * (5.0 - T_out), 0.2, 1.0)),
        "plant.m_w": 0.8,
        "emitters.m_w": pt.hold(t, np.tile(np.where(day, 0.08, 0.03), (3, 1))),
        "building.occupancy": pt.hold(t, np.where(day, 0.4, 1.0)),
    }
    grid = np.arange(0.0, 86400.0 + 1, 300.0)
    res = pt.simulate(dh, None, inputs, grid, solver="rodas")
    P_el = np.asarray(res["out:plant.P_el"])
    u = dh.units["plant"]
    Q = np.array([float(u.heat(None, u.Inputs(y, 0.8, 0.0, T)))
                  for y, T in zip(np.asarray(res["plant.y"]), np.asarray(res["plant.T_src"]),
                                  strict=True)])
    losses = 0.0
    for k in ("supply_pipe", "return_pipe"):
        pipe = dh.units[k]
        Tw = np.asarray(res[f"{k}.T_w"])
        loss = pipe.U * pipe.L / pipe.n_cells * (Tw - np.asarray(res[f"{k}.T_amb"])[:, None])
        losses += np.trapezoid(loss.sum(axis=1), grid)
    kwh = 3.6e6
    print(f"district heating, 15 January, {weather.attrs['station']}: outdoor "
          f"{T_out.min():.1f} … {T_out.max():.1f} °C")
    print(f"  heat from the plant {np.trapezoid(Q, grid) / kwh:.1f} kWh, electricity "
          f"{np.trapezoid(P_el, grid) / kwh:.1f} kWh, mean COP "
          f"{np.trapezoid(Q, grid) / np.trapezoid(P_el, grid):.2f}")
    print(f"  pipe losses {losses / kwh:.2f} kWh; supply "
          f"{float(np.mean(res['plant.T_sup'])):.1f} °C on average")
    Ti = np.asarray(res["building.T_i"])
    for z in range(Ti.shape[1]):
        print(f"  zone {z}: {Ti[:, z].min():.1f} … {Ti[:, z].max():.1f} °C")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = grid / 3600.0
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    a1.plot(h, np.asarray(res["plant.T_sup"]), label="plant supply")
    a1.plot(h, np.asarray(res["out:supply_pipe.T_out"]), label="substation inlet")
    a1.plot(h, np.asarray(res["out:return_pipe.T_out"]), label="plant return")
    a1.plot(h, np.asarray(res["out:emitters.T_ret"]), label="radiator return")
    a1.set_ylabel("water [°C]")
    a1.legend(ncol=2, fontsize=8)
    for z in range(Ti.shape[1]):
        a2.plot(h, Ti[:, z], label=f"zone {z}")
    a2.plot(h, np.asarray(res["building.T_out"]), "k--", label="outdoor")
    a2.set_ylabel("air [°C]")
    a2.legend(ncol=4, fontsize=8)
    a3.plot(h, P_el / 1e3)
    a3.set_ylabel("heat pump [kW el]")
    a3.set_xlabel("hour")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
