"""``processtwin schedule``: the energy manager's plan of a building's heat pump against
weather and prices."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .cli_values import out_path, parse_params, parse_x0

__all__ = ["schedule_cmd"]


def _weather(spec: str) -> Path:
    from .weather import EXAMPLES, example_weather

    if spec in EXAMPLES:
        return example_weather(spec)
    p = Path(spec)
    if not p.is_file():
        raise click.UsageError(f"--weather {spec!r}: no such file (or one of the shipped "
                               f"examples: {', '.join(EXAMPLES)}).")
    return p


def _hours(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.split("-"))
    except ValueError:
        raise click.UsageError(f"--occupied must be START-END hours, e.g. 6-22, got "
                               f"{text!r}.") from None
    if not (0 <= a <= 24 and 0 <= b <= 24):
        raise click.UsageError(f"--occupied hours must be within 0–24, got {text!r}.")
    return a, b


def _day_of_year(text: str) -> None:
    import datetime as dt

    try:
        dt.date.fromisoformat(f"2001-{text}")
    except ValueError:
        raise click.UsageError(f"--start must be a day of the year as MM-DD (e.g. 01-08), "
                               f"got {text!r}.") from None


@click.command("schedule")
@click.argument("model", required=False, metavar="[MODEL]", default="building_hp")
@click.option("--weather", "weather_spec", default="greensboro", show_default=True,
              help="TMY3/EPW weather file, or a shipped example (greensboro, sand_point).")
@click.option("--prices", "prices_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="CSV of prices [currency/kWh]: a time column (ISO "
                                 "date-times, or `hour` [h] / `time_s` [s]) and `price`, "
                                 "any time step (15 min, hourly, blocks; each price "
                                 "holds until the next row, hours pay the mean); the "
                                 "first row is the plan's start; a day's rows (before "
                                 "24:00, the last held to midnight) repeat daily. "
                                 "Default: a time-of-use tariff 0.12/0.25/0.40.")
@click.option("--start", default="01-08", show_default=True,
              help="First day, MM-DD (within the weather file's year).")
@click.option("--days", type=float, default=7.0, show_default=True, help="Length [d].")
@click.option("--zones", type=int, default=None,
              help="Number of zones, 100 m2 each in a row, 20 m2 of wall between "
                   "neighbours (default the model's own).")
@click.option("--facing", default=None, metavar="AZ,AZ,...",
              help="Window azimuth of each zone [deg from north] (default all 180: south).")
@click.option("--occupied", default="6-22", show_default=True,
              help="Occupied hours of each day (START-END); outside them the set-back band.")
@click.option("--band", default="21:24", show_default=True, metavar="LO:HI",
              help="Occupied comfort band [°C].")
@click.option("--setback", default="16:28", show_default=True, metavar="LO:HI",
              help="Unoccupied comfort band [°C].")
@click.option("--comfort-price", type=float, default=1.0, show_default=True,
              help="Price of discomfort [currency per K·h per zone].")
@click.option("--peak-price", type=float, default=0.0, show_default=True,
              help="Demand charge [currency per kW of the period's peak].")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Model parameter value.")
@click.option("--x0", "x0", multiple=True, metavar="NAME=VALUE", help="Initial state value.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also simulate the thermostat (deadband, set-back) on the same weather.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=out_path,
              help="Write the plan Dataset here (netCDF).")
def schedule_cmd(model: str, weather_spec: str, prices_path: Path | None, start: str,
                 days: float, zones: int | None, facing: str | None, occupied: str,
                 band: str, setback: str, comfort_price: float, peak_price: float,
                 params: tuple[str, ...], x0: tuple[str, ...], baseline: bool,
                 out: Path | None) -> None:
    """Plan MODEL's heat pump (default building_hp; a plain `building` gets its heat pump)
    hour by hour over DAYS as one linear programme (Pyomo formulation, HiGHS): least
    energy cost plus priced discomfort, within the heat pump's capacity. Prints cost,
    energy, discomfort and peak beside the thermostat's on the same weather."""
    from .errors import ConfigError
    from .io import save
    from .kpi import building_kpis
    from .registry import load_model
    from .solvers.building_loop import (
        as_heat_pump_building,
        hourly_weather,
        occupancy_schedule,
        require_building,
        schedule_building,
    )
    from .solvers.empc import Comfort
    from .tariffs import interval_prices, read_prices, time_of_use
    from .weather import building_inputs, read_weather

    if not (np.isfinite(days) and days > 0):
        raise ConfigError(f"--days must be > 0 [d], got {days:g}.")
    _day_of_year(start)
    m = load_model(model)
    if zones is not None:
        if zones < 1:
            raise ConfigError(f"--zones must be ≥ 1, got {zones}.")
        if not hasattr(m, "n_zones"):
            raise ConfigError(f"--zones: `{m.name}` has no zones.")
        import dataclasses

        kw = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.init}
        m = type(m)(**{**kw, "n_zones": zones, "floor_area": (), "window_area": (),
                       "ground_area": (), "adjacency": tuple(
                           (i, i + 1, 20.0) for i in range(zones - 1))})
    m = as_heat_pump_building(m)
    require_building(m, "`processtwin schedule`",
                     "For another unit, plan it from Python with `EconomicMPC`.")
    p = parse_params(m, params)
    m = m.replace(**p) if p else m
    n_zones = getattr(m, "n_zones", 1)
    az = [180.0] * n_zones if facing is None else [float(v) for v in facing.split(",")]
    if len(az) != n_zones:
        raise ConfigError(f"--facing has {len(az)} azimuths; the building has {n_zones} "
                          "zones.")
    hours = int(round(days * 24))
    w = read_weather(_weather(weather_spec))
    wx = hourly_weather(building_inputs(w, az, start=f"2001-{start}", days=days + 1))
    if prices_path is not None:
        t_price, price = read_prices(prices_path)
        price = interval_prices(t_price, price, hours, source=str(prices_path))
    else:
        price = time_of_use(np.arange(hours + 24) * 3600.0)

    def pair(text: str, opt: str) -> tuple[float, float]:
        try:
            lo, hi = (float(v) for v in text.split(":"))
        except ValueError:
            raise click.UsageError(f"{opt} must be LO:HI [°C], got {text!r}.") from None
        return lo, hi

    comfort = Comfort(occupied=pair(band, "--band"), unoccupied=pair(setback, "--setback"),
                      price=comfort_price)
    occ = occupancy_schedule(len(wx["T_out"]), _hours(occupied))
    plan, ds, base = schedule_building(m, wx, price, hours=hours, occupancy=occ,
                                       x0=parse_x0(m, x0), comfort=comfort,
                                       baseline=baseline, peak_price=peak_price)
    area = float(sum(m.areas()["floor"]))
    click.echo(f"{m.name}: {n_zones} zone(s), {area:g} m2, {hours} h from {start} "
               f"({w.attrs.get('station', weather_spec)}): {plan.status} in "
               f"{plan.solve_time_s:.2f} s")
    if not plan.ok:
        click.secho(f"  no plan: {plan.message}", fg="red", err=True)
        raise SystemExit(1)
    k = building_kpis(ds.isel(time=slice(None)).assign(T_air=ds["T_i"]), floor_area=area)
    rows = [("plan (economic MPC)", k)] + ([("thermostat", base)] if base else [])
    click.echo(f"  {'':22s}{'cost':>10s}{'energy':>12s}{'discomfort':>14s}{'peak':>9s}")
    click.echo(f"  {'':22s}{'[currency]':>10s}{'[kWh]':>12s}{'[K h/zone]':>14s}{'[kW]':>9s}")
    for name, v in rows:
        click.echo(f"  {name:22s}{v['cost']:10.2f}{v['energy_kWh']:12.1f}"
                   f"{v['discomfort_Kh_per_zone']:14.2f}{v['peak_kW']:9.2f}")
    if base:
        click.echo(f"  saving vs thermostat: {100 * (1 - k['cost'] / base['cost']):.1f} % "
                   "of cost")
    if plan.active:
        click.echo("  active constraints: " + "; ".join(plan.active))
    if out is not None:
        save(ds, out)
        click.echo(f"wrote {out}")
