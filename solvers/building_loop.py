"""The building in closed loop: a conventional thermostat baseline and the economic MPC
on the same simulated plant, weather and prices, recorded for the BOPTEST KPIs.

The plant (a :class:`~processtwin.models.HeatPumpBuilding`, its parameters possibly unlike
the controller's model) is simulated with the adaptive solver every ``control_s``; the
thermostat acts on the measured room temperatures at that rate, the MPC every ``dt`` of
its own from an EKF estimate of every state (the envelope temperatures are not measured)
and a forecast of the weather that errs more the further it looks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from processtwin.errors import ConfigError
from processtwin.model import Model
from processtwin.tariffs import noisy_forecast

from .empc import Comfort, EconomicMPC, _dist_names

__all__ = ["Thermostat", "as_heat_pump_building", "closed_loop", "hourly_weather",
           "occupancy_schedule", "require_building", "schedule_building",
           "thermostat_baseline"]


@dataclass(frozen=True)
class Thermostat:
    """On/off thermostat per zone with a deadband and a night set-back: the conventional
    baseline.

    Attributes
    ----------
    heating : tuple of float
        Heating setpoint when occupied and when set back [°C].
    cooling : tuple of float
        Cooling setpoint when occupied and when set back [°C].
    deadband : float
        Total deadband around each setpoint [K] (on below ``sp - db/2``, off above
        ``sp + db/2``).
    threshold : float
        Occupied when the occupancy is at least this [-].

    Notes
    -----
    When on, a zone takes its floor-area share of the heat pump's capacity at the current
    outdoor temperature, so the unit never exceeds its capacity. The defaults hold a room
    inside the 21–24 °C occupied band (16–28 °C set back) once it has got there.
    """

    heating: tuple[float, float] = (21.5, 16.5)
    cooling: tuple[float, float] = (23.5, 27.5)
    deadband: float = 1.0
    threshold: float = 0.5

    def control(self, T_air: np.ndarray, occupied: bool, mode: np.ndarray,
                cap_heat: np.ndarray, cap_cool: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decision: ``(Q_heat [W], Q_cool [W], mode)`` per zone from the measured
        temperatures [°C], the previous ``mode`` (+1 heating, −1 cooling, 0 off) and each
        zone's share of the capacity [W]."""
        sp_h = self.heating[0] if occupied else self.heating[1]
        sp_c = self.cooling[0] if occupied else self.cooling[1]
        half = self.deadband / 2.0
        mode = mode.copy()
        mode[(mode == 1) & (T_air > sp_h + half)] = 0
        mode[(mode == -1) & (T_air < sp_c - half)] = 0
        mode[T_air < sp_h - half] = 1
        mode[T_air > sp_c + half] = -1
        return (np.where(mode == 1, cap_heat, 0.0), np.where(mode == -1, cap_cool, 0.0), mode)


def hourly_weather(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Plain hourly arrays from :func:`processtwin.weather.building_inputs`: ``T_out``
    ``(H,)`` [°C], ``I_sol`` ``(H, zones)`` [W/m2], ``T_ground`` [°C]."""
    T_out = np.asarray(inputs["T_out"].values, dtype=float)
    I_sol = np.asarray(inputs["I_sol"].values, dtype=float)
    I_sol = I_sol.T if I_sol.shape[0] != T_out.shape[0] else I_sol
    return {"T_out": T_out, "I_sol": I_sol,
            "T_ground": float(np.ravel(inputs["T_ground"].values)[0])}


def closed_loop(controller: Thermostat | EconomicMPC, plant: Model, *,
                weather: Mapping[str, Any], occupancy: np.ndarray, prices: np.ndarray,
                hours: int, x0: Mapping[str, Any], control_s: float = 300.0,
                comfort: Comfort | None = None, forecast_error: bool = True,
                estimator: bool = True, seed: int = 0,
                sensor_noise: float = 0.1) -> xr.Dataset:
    """Run ``controller`` on ``plant`` for ``hours`` and record what happened.

    Parameters
    ----------
    controller : Thermostat or EconomicMPC
        The baseline, or an economic MPC (its model is the controller's model; its
        ``dt`` must be a whole number of ``control_s``).
    plant : Model
        The simulated building (``HeatPumpBuilding`` variables).
    weather : mapping
        Hourly truth, as from :func:`hourly_weather`: long enough for the run plus the
        MPC's horizon.
    occupancy : numpy.ndarray
        Hourly occupancy [-], as long as ``weather``.
    prices : numpy.ndarray
        Hourly energy price [currency/kWh], as long as ``weather``.
    hours : int
        Length of the run [h].
    x0 : mapping
        Initial plant state.
    control_s : float
        Plant simulation and thermostat step [s].
    comfort : Comfort, optional
        Band for the record (default the MPC's, else :class:`Comfort`'s defaults).
    forecast_error : bool
        Give the MPC forecasts with errors growing with lead time (0.5 K + 0.1 K/h, at
        most 3 K outdoors; 10 % + 2 %/h irradiance, at most 50 %).
    estimator : bool
        The MPC plans from an EKF estimate of the states from the noisy room
        temperatures (else from the true state).
    seed : int
        Random seed of the sensor noise and the forecast errors.
    sensor_noise : float
        Standard deviation of the room temperature sensors [K].

    Returns
    -------
    xarray.Dataset
        Over ``time`` [s] every ``control_s``: ``T_air`` (true), ``T_meas``, ``T_env``,
        ``Q_heat``, ``Q_cool`` [W], ``P_el`` [W], ``price``, ``band_lo``, ``band_hi``,
        ``T_out``; attributes ``step_time_ms`` (mean computation per decision),
        ``decisions``, ``fallbacks`` and the controller.
    """
    from processtwin.estimate import ExtendedKalmanFilter
    from processtwin.simulate import simulate

    require_building(plant, "closed_loop's plant")
    rng = np.random.default_rng(seed)
    is_mpc = isinstance(controller, EconomicMPC)
    comfort = comfort or (controller.comfort if is_mpc else Comfort())
    nz = plant.n_zones
    T_out_h, I_h, T_g = weather["T_out"], weather["I_sol"], float(weather["T_ground"])
    need = hours + (controller.horizon * int(round(controller.dt / 3600.0)) if is_mpc else 0)
    for name, arr in (("T_out", T_out_h), ("I_sol", I_h), ("occupancy", occupancy),
                      ("prices", prices)):
        if len(arr) < need:
            raise ConfigError(f"`{name}` covers {len(arr)} h; the run needs {need} h (its "
                              "length plus the MPC's horizon).")
    per_hour = int(round(3600.0 / control_s))
    steps = hours * per_hour
    every = int(round(controller.dt / control_s)) if is_mpc else 1
    if is_mpc and (every * control_s != controller.dt or controller.dt % 3600 != 0):
        raise ConfigError("the MPC's `dt` must be a whole number of hours and of "
                          "`control_s`.")
    lay = plant.layout
    x = {k: np.asarray(v, dtype=float) for k, v in x0.items()}
    mode = np.zeros(nz, int)
    Qh = np.zeros(nz)
    Qc = np.zeros(nz)
    rec: dict[str, list] = {k: [] for k in ("T_air", "T_meas", "T_env", "Q_heat", "Q_cool",
                                            "P_el", "price", "band_lo", "band_hi", "T_out")}
    lf = None
    if is_mpc and estimator:
        ekf = ExtendedKalmanFilter(controller.model, channels=("T_air",),
                                   q={"T_i": (0.05**2) / 3600.0, "T_e": (0.02**2) / 3600.0})
        lf = ekf.live(0.0, x0=dict(x), std={"T_i": 0.5, "T_e": 1.0},
                      u=_inputs(Qh, Qc, T_out_h[0], T_g, I_h[0], occupancy[0]))
    times_ms: list[float] = []
    decisions = fallbacks = 0
    for n in range(steps + 1):
        t = n * control_s
        hr = n // per_hour
        T_air = np.asarray(x["T_i"], dtype=float)
        T_meas = T_air + sensor_noise * rng.standard_normal(nz)
        hr = min(hr, len(T_out_h) - 1)          # the closing row of a run to the end
        occ = occupancy[min(hr, len(occupancy) - 1)]
        u_now = _inputs(Qh, Qc, T_out_h[hr], T_g, I_h[hr], occ)
        if lf is not None and n > 0:
            lf.step(t, {"T_air": T_meas})
        if n < steps:
            t0 = time.perf_counter()
            if is_mpc and n % every == 0:
                xe = lf.z[:len(lay.states.flat_names())] if lf is not None else \
                    lay.states.values(x)
                N = controller.horizon
                hh = hr + np.arange(N)
                fc = {"T_out": T_out_h[hh], "I_sol": I_h[hh], "occupancy": occupancy[hh],
                      "T_ground": T_g}
                if forecast_error:
                    lead = np.arange(N) * 3600.0
                    fc["T_out"] = noisy_forecast(T_out_h[hh], lead, sigma0=0.5,
                                                 growth_per_h=0.1, cap=3.0, rng=rng)
                    fc["I_sol"] = noisy_forecast(I_h[hh], lead, sigma0=0.1,
                                                 growth_per_h=0.02, cap=0.5, rng=rng,
                                                 relative=True)
                    fc["T_out"][0] = T_out_h[hr]        # the current hour is measured
                    fc["I_sol"][0] = I_h[hr]
                plan = controller.plan(np.asarray(xe), fc, prices[hh], t=t)
                decisions += 1
                fallbacks += not plan.ok
                u = plan.u[0]
                Qh, Qc = u[:nz].copy(), u[nz:2 * nz].copy()
                times_ms.append((time.perf_counter() - t0) * 1e3)
            elif not is_mpc:
                area = np.asarray(plant.areas()["floor"])
                cap_h, cap_c = plant.capacities(_Weather(T_out_h[hr]))
                share = area / area.sum()
                Qh, Qc, mode = controller.control(T_meas, occ >= controller.threshold, mode,
                                                  cap_h * share, cap_c * share)
                decisions += 1
                times_ms.append((time.perf_counter() - t0) * 1e3)
            u_now = _inputs(Qh, Qc, T_out_h[hr], T_g, I_h[hr], occ)
            if lf is not None:
                lf.set_inputs(u_now)
        y = _measure(plant, x, u_now)
        lo, hi = comfort.bands(np.array([occ]), nz)
        for k, v in (("T_air", T_air), ("T_meas", T_meas), ("T_env", x["T_e"]),
                     ("Q_heat", Qh), ("Q_cool", Qc), ("P_el", y["P_el"]),
                     ("price", prices[min(hr, len(prices) - 1)]), ("band_lo", lo[0]),
                     ("band_hi", hi[0]), ("T_out", T_out_h[hr])):
            rec[k].append(np.array(v, dtype=float, copy=True))
        if n < steps:
            res = simulate(plant, x, u_now, np.array([0.0, control_s]), rtol=1e-8,
                           atol=1e-8)
            x = {leaf.name: np.asarray(res[leaf.name])[-1] for leaf in lay.states.leaves}
    grid = np.arange(steps + 1) * control_s
    zone = ("time", "zone")
    ds = xr.Dataset(
        {"T_air": (zone, np.array(rec["T_air"]), {"units": "degC"}),
         "T_meas": (zone, np.array(rec["T_meas"]), {"units": "degC"}),
         "T_env": (zone, np.array(rec["T_env"]), {"units": "degC"}),
         "Q_heat": (zone, np.array(rec["Q_heat"]), {"units": "W"}),
         "Q_cool": (zone, np.array(rec["Q_cool"]), {"units": "W"}),
         "P_el": ("time", np.array(rec["P_el"]), {"units": "W"}),
         "price": ("time", np.array(rec["price"]), {"units": "currency/kWh"}),
         "band_lo": (zone, np.array(rec["band_lo"]), {"units": "degC"}),
         "band_hi": (zone, np.array(rec["band_hi"]), {"units": "degC"}),
         "T_out": ("time", np.array(rec["T_out"]), {"units": "degC"})},
        coords={"time": ("time", grid, {"units": "s"})})
    ds.attrs.update(controller="economic MPC" if is_mpc else "thermostat",
                    step_time_ms=float(np.mean(times_ms)) if times_ms else 0.0,
                    step_time_ms_max=float(np.max(times_ms)) if times_ms else 0.0,
                    decisions=decisions, fallbacks=fallbacks, control_s=control_s)
    return ds


class _Weather:
    """The outdoor temperature as an input tuple (for ``capacities``)."""

    def __init__(self, T_out: float) -> None:
        self.T_out = float(T_out)


def _inputs(Qh: np.ndarray, Qc: np.ndarray, T_out: float, T_g: float, I_sol: np.ndarray,
            occ: float) -> dict[str, Any]:
    return {"Q_heat": np.asarray(Qh, float), "Q_cool": np.asarray(Qc, float),
            "T_out": float(T_out), "T_ground": float(T_g),
            "I_sol": np.asarray(I_sol, float), "occupancy": float(occ)}


def _measure(plant: Model, x: Mapping[str, Any], u: Mapping[str, Any]) -> dict[str, Any]:
    from processtwin.ops import numpy_ops

    lay = plant.layout
    xs = lay.states.unravel(lay.states.values(dict(x), check=False), numpy_ops)
    us = lay.inputs.unravel(lay.inputs.values(dict(u), check=False), numpy_ops)
    y = plant.measure(0.0, xs, us, numpy_ops)
    return {k: np.asarray(v) for k, v in y._asdict().items()}


def occupancy_schedule(hours: int, occupied: tuple[int, int] = (6, 22), *,
                       present: float = 1.0, absent: float = 0.3) -> np.ndarray:
    """Hourly occupancy [-]: ``present`` during ``[start, end)`` hours of each day (the
    comfort band's occupied hours), ``absent`` otherwise (night set-back)."""
    h = np.arange(hours) % 24
    a, b = occupied
    on = (h >= a) & (h < b) if a <= b else (h >= a) | (h < b)
    return np.where(on, present, absent)


def as_heat_pump_building(model: Model) -> Model:
    """A plain :class:`~processtwin.models.Building` as the same building with its
    reversible heat pump (:class:`~processtwin.models.HeatPumpBuilding`, which has a power
    to price); any other model is returned unchanged."""
    from processtwin.models import Building, HeatPumpBuilding

    if type(model) is Building:
        import dataclasses

        return HeatPumpBuilding(**{f.name: getattr(model, f.name)
                                   for f in dataclasses.fields(model) if f.init})
    return model


def schedule_building(model: Model, weather: Mapping[str, Any], prices: np.ndarray, *,
                      hours: int, occupancy: np.ndarray, x0: Mapping[str, Any] | None = None,
                      comfort: Comfort | None = None, baseline: bool = True,
                      **mpc: Any) -> tuple[Any, xr.Dataset, dict | None]:
    """Plan a building's heat pump over a whole period as one LP (a planning study), and
    compare with the thermostat on the same weather.

    Parameters
    ----------
    model : Model
        A :class:`~processtwin.models.HeatPumpBuilding` (a plain ``Building`` is given its
        heat pump, see :func:`as_heat_pump_building`).
    weather : mapping
        Hourly ``T_out``, ``I_sol`` ``(hours, zones)``, ``T_ground`` (see
        :func:`hourly_weather`).
    prices : numpy.ndarray
        Hourly energy price [currency/kWh].
    hours : int
        Length of the plan [h].
    occupancy : numpy.ndarray
        Hourly occupancy [-].
    x0 : mapping, optional
        Initial state (default: the model's defaults).
    comfort : Comfort, optional
        Comfort band and price.
    baseline : bool
        Also run the :class:`Thermostat` in closed loop (no forecast error) and return its
        KPIs.
    **mpc
        Further :class:`~processtwin.solvers.empc.EconomicMPC` options (``peak_price``,
        ``staging``, ``limits``).

    Returns
    -------
    plan, dataset, baseline_kpis
        The :class:`~processtwin.solvers.empc.EMPCPlan`, its Dataset (with the forecast,
        price and band) and the thermostat's KPIs (``None`` without ``baseline``).
    """
    from processtwin.kpi import building_kpis

    model = as_heat_pump_building(model)
    comfort = comfort or Comfort()
    ctrl = EconomicMPC(model, dt=3600.0, horizon=int(hours), comfort=comfort, **mpc)
    fc = {"T_out": weather["T_out"][:hours], "I_sol": weather["I_sol"][:hours],
          "occupancy": occupancy[:hours], "T_ground": weather["T_ground"]}
    x = x0 if x0 is not None else {}
    plan = ctrl.plan(x, fc, prices[:hours])
    ds = plan.dataset(model)
    ds["T_out"] = ("time", np.append(fc["T_out"], fc["T_out"][-1]), {"units": "degC"})
    ds["price"] = ("time", np.append(prices[:hours], prices[hours - 1]),
                   {"units": "currency/kWh"})
    # the band of each hour from its start, as the thermostat's record holds it: the KPIs
    # of plan and baseline count discomfort the same way
    lo, hi = comfort.bands(occupancy[:hours], model.n_zones)
    dim = ("time", model.layout.outputs.leaf(comfort.output).dim or "zone")
    ds["band_lo"] = (dim, np.vstack([lo, lo[-1:]]), {"units": "degC"})
    ds["band_hi"] = (dim, np.vstack([hi, hi[-1:]]), {"units": "degC"})
    base = None
    if baseline:
        x_start = {leaf.name: model.layout.states.values(x)[
            model.layout.states.indices([leaf.name])] for leaf in model.layout.states.leaves}
        rec = closed_loop(Thermostat(), model, weather=weather, occupancy=occupancy,
                          prices=prices, hours=int(hours), x0=x_start, sensor_noise=0.0,
                          comfort=comfort)
        base = building_kpis(rec, floor_area=float(sum(model.areas()["floor"])))
    return plan, ds, base


def thermostat_baseline(mpc: EconomicMPC, forecast: Mapping[str, Any], prices: Any, *,
                        thermostat: Thermostat | None = None, control_s: float = 300.0
                        ) -> Any:
    """The thermostat's cost and discomfort over an MPC's horizon from the same state and
    forecast: the ``baseline`` of :meth:`EconomicMPC.recommend
    <processtwin.solvers.empc.EconomicMPC.recommend>`.

    The controller's model (a ``HeatPumpBuilding``) is sampled exactly every
    ``control_s`` (:func:`~processtwin.solvers.linearise.linearise`) and the thermostat
    acts on its room temperatures at that rate.

    Parameters
    ----------
    mpc : EconomicMPC
        The MPC (its model, interval, horizon, power output and comfort band).
    forecast : mapping
        The disturbances over the horizon (as given to the MPC).
    prices : array
        Energy price per MPC interval [currency/kWh].
    thermostat : Thermostat, optional
        The baseline controller (default :class:`Thermostat`).
    control_s : float
        Thermostat step [model time unit]; ``mpc.dt`` must be a whole number of them.

    Returns
    -------
    callable
        ``baseline(plan) -> (cost [currency], discomfort [K·h summed over zones])``.
    """
    from .linearise import forecast_matrix, linearise

    thermostat = thermostat or Thermostat()
    model = mpc.model
    require_building(model, "the thermostat baseline")
    sub = int(round(mpc.dt / control_s))
    if sub < 1 or abs(sub * control_s - mpc.dt) > 1e-9 * mpc.dt:
        raise ConfigError(f"`control_s` must divide the MPC interval {mpc.dt:g}, got "
                          f"{control_s:g}.")
    N = mpc.horizon
    d = np.repeat(forecast_matrix(model, forecast, N), sub, axis=0)
    price = np.repeat(np.broadcast_to(np.asarray(prices, dtype=float), (N,)), sub)
    dist = _dist_names(model)
    occ = d[:, dist.index(mpc.comfort.schedule)]
    T_out = d[:, dist.index("T_out")]
    area = np.asarray(model.areas()["floor"])
    share = area / area.sum()
    nz = model.n_zones
    lo, hi = mpc.comfort.bands(occ, nz)
    h = control_s * mpc.hours / mpc.dt

    def baseline(plan: Any) -> tuple[float, float]:
        aff = linearise(model, plan.x[0], d, control_s,
                        outputs=(mpc.power, mpc.comfort.output))
        x = np.asarray(plan.x[0], dtype=float)
        mode = np.zeros(nz, int)
        cost = disc = 0.0
        u = np.zeros(aff.B.shape[2])
        for k in range(N * sub):
            T = aff.C[k, 1:] @ x + aff.D[k, 1:] @ u + aff.e[k, 1:]
            cap_h, cap_c = model.capacities(_Weather(T_out[k]))
            Qh, Qc, mode = thermostat.control(T, occ[k] >= thermostat.threshold, mode,
                                              cap_h * share, cap_c * share)
            u = np.concatenate([Qh, Qc])
            P = float(aff.C[k, 0] @ x + aff.D[k, 0] @ u + aff.e[k, 0])
            # each step's values held over it, as the KPIs of a record count them
            cost += price[k] * P / 1e3 * h
            disc += float(np.sum(np.maximum(lo[k] - T, 0) + np.maximum(T - hi[k], 0))) * h
            x = aff.A[k] @ x + aff.B[k] @ u + aff.c[k]
        return cost, disc

    return baseline


def require_building(model: Model, what: str,
                     hint: str = "For another unit pass your own `baseline(plan) -> (cost, "
                                 "discomfort)` to `EconomicMPC.recommend`.") -> None:
    """Raise a :class:`~processtwin.errors.ConfigError` unless ``model`` is a heat-pump
    building (zones with floor areas and heat-pump capacities; inputs ``Q_heat``,
    ``Q_cool``, ``T_out``, ``I_sol``, ``T_ground``, ``occupancy``).

    Parameters
    ----------
    model : Model
        The model to check.
    what : str
        What needs it (starts the message).
    hint : str
        What to do instead (ends the message).
    """
    needs = ("Q_heat", "Q_cool", "T_out", "I_sol", "T_ground", "occupancy")
    missing = [n for n in needs if n not in model.inputs()]
    if missing or not all(hasattr(model, a) for a in ("areas", "capacities", "n_zones")):
        raise ConfigError(
            f"{what} needs a heat-pump building (like `HeatPumpBuilding`: zones with floor "
            f"areas and heat-pump capacities; inputs {', '.join(needs)}); `{model.name}` "
            + (f"has no input {', '.join(missing)}" if missing else "is not one")
            + f". {hint}")
