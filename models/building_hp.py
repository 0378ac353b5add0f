"""A building heated and cooled by a reversible air-source heat pump: the energy manager's
unit (time unit: s).

:class:`HeatPumpBuilding` is the TiTe multi-zone :class:`~processtwin.models.Building`
whose heating and cooling come from one reversible heat pump; its electric power is an
output, so it can be priced, and the heat pump's load an output, so its capacity is a limit.

Only :mod:`processtwin.model` is imported here (backend-free equations).
"""

from __future__ import annotations

from typing import Any, ClassVar

from processtwin.model import Limit, Var, param, variables

from .building import Building, BuildingInputs, BuildingOutputs, BuildingState

__all__ = ["HeatPumpBuilding"]

T0 = 273.15  # K at 0 °C

HeatPumpBuildingInputs = variables(
    "HeatPumpBuildingInputs",
    Q_heat=Var("W", "heat the heat pump delivers to each zone's emitter", default=0.0,
               bounds=(0.0, None), kind="manipulated", shape="n_zones"),
    Q_cool=Var("W", "heat the heat pump (cooling mode) removes from each zone",
               default=0.0, bounds=(0.0, None), kind="manipulated", shape="n_zones"),
    # the zones' disturbances, as the building declares them
    **{k: BuildingInputs._vars[k] for k in ("T_out", "T_ground", "I_sol", "occupancy")},
)
HeatPumpBuildingOutputs = variables(
    "HeatPumpBuildingOutputs",
    T_air=BuildingOutputs._vars["T_air"],
    P_el=Var("W", "heat pump electric power meter", kind="online", noise=20.0),
    load=Var("-", "heat pump load: delivered heat over the heating capacity plus removed "
             "heat over the cooling capacity", kind="online", noise=0.01),
)


class HeatPumpBuilding(Building):
    r"""Multi-zone building heated and cooled by one reversible air-source heat pump
    (time unit: s).

    The zones are those of :class:`~processtwin.models.Building` (Bacher & Madsen (2011)
    TiTe) with :math:`Q_{hvac,i} = Q_{heat,i} - Q_{cool,i}`. The heat pump draws

    .. math::

        P_{el} = \frac{\sum_i Q_{heat,i}}{COP_h} + \frac{\sum_i Q_{cool,i}}{COP_c},\qquad
        COP_h = \eta_h \frac{T_c}{T_c - T_e},\quad COP_c = \eta_c \frac{T_e'}{T_c' - T_e'}

    (temperatures in K, lifts floored smoothly at 5 K, so never above Carnot). Heating
    condenses at :math:`T_c = T_{sup} + \Delta T_c` with the weather-compensated supply
    temperature of the emitters, :math:`T_{sup} = T_{sup,d} + (T_{sup,0} - T_{sup,d})
    (T_{out} - T_{out,d})/(T_{out,0} - T_{out,d})` (the heating curve, 45 °C at −10 °C
    outdoors to 30 °C at 15 °C), and evaporates at :math:`T_e = T_{out} - \Delta T_e`;
    cooling evaporates at :math:`T_e' = T_{chw} - \Delta T_e` and condenses at
    :math:`T_c' = T_{out} + \Delta T_c`. Capacities follow the outdoor temperature as in
    :class:`~processtwin.models.HeatPump` and :class:`~processtwin.models.Chiller`,
    :math:`Q_{h,max} = q_h A (1 + c_h (T_{out} - 7))`,
    :math:`Q_{c,max} = q_c A (1 - c_c (T_{out} - 35))` over the floor area :math:`A`, and the
    output ``load`` :math:`= \sum Q_{heat}/Q_{h,max} + \sum Q_{cool}/Q_{c,max}` is limited
    to 1 (a reversible unit heats or cools; over an hour it may split the hour).

    For a given outdoor temperature the power is linear in the delivered heat, and the
    zones are linear: linearised around the forecast (as the economic MPC in
    :mod:`processtwin.solvers` does) the model is exact in states and controls.

    Defaults: the building's (100 m2 medium-weight dwelling per zone); heat pump sized at
    80 W/m2 of floor at A7 (EN 14511-2 (2018) rating), −2.5 %/K below 7 °C, Carnot fraction
    0.45 with 5 K approaches (COP 3.7 at A7/W35); cooling 60 W/m2 at 35 °C, −1.5 %/K above,
    Carnot fraction 0.42, 12 °C chilled water, 10 K condenser approach (EER 3.1 at 35 °C).
    """

    q_heat: float = param(80.0, units="W/m2", bounds=(0.0, None), strict=True,
                          doc="heating capacity per m2 of floor at A7")
    c_heat: float = param(0.025, units="1/K", bounds=(0.0, None),
                          doc="relative heating capacity change per kelvin of outdoor air")
    eta_heat: float = param(0.45, units="-", bounds=(0.0, 1.0), strict=True,
                            doc="Carnot fraction in heating")
    q_cool: float = param(60.0, units="W/m2", bounds=(0.0, None), strict=True,
                          doc="cooling capacity per m2 of floor at 35 °C")
    c_cool: float = param(0.015, units="1/K", bounds=(0.0, None),
                          doc="relative cooling capacity change per kelvin of outdoor air")
    eta_cool: float = param(0.42, units="-", bounds=(0.0, 1.0), strict=True,
                            doc="Carnot fraction in cooling")
    dT_cond: float = param(5.0, units="K", bounds=(0.0, None),
                           doc="condenser approach in heating")
    dT_evap: float = param(5.0, units="K", bounds=(0.0, None), doc="evaporator approach")
    dT_cond_cool: float = param(10.0, units="K", bounds=(0.0, None),
                                doc="condenser approach in cooling")
    T_chw: float = param(12.0, units="degC", doc="chilled-water temperature in cooling")
    T_sup_design: float = param(45.0, units="degC",
                                doc="heating-curve supply temperature at T_out_design")
    T_out_design: float = param(-10.0, units="degC", doc="heating-curve design outdoor")
    T_sup_mild: float = param(30.0, units="degC",
                              doc="heating-curve supply temperature at T_out_mild")
    T_out_mild: float = param(15.0, units="degC", doc="heating-curve mild outdoor")

    name: ClassVar[str] = "building_hp"
    State: ClassVar[type] = BuildingState
    Inputs: ClassVar[type] = HeatPumpBuildingInputs
    Outputs: ClassVar[type] = HeatPumpBuildingOutputs
    limits: ClassVar[dict] = {
        "load": Limit(None, 1.0, "heat pump capacity (heating plus cooling share)"),
    }

    def supply_temperature(self, u: Any) -> Any:
        """Weather-compensated emitter supply temperature (the heating curve) [°C]."""
        slope = (self.T_sup_mild - self.T_sup_design) / (self.T_out_mild - self.T_out_design)
        return self.T_sup_design + slope * (u.T_out - self.T_out_design)

    def cop_heat(self, u: Any, ops: Any) -> Any:
        """Heating COP at the outdoor and supply temperatures [-]."""
        T_c = self.supply_temperature(u) + self.dT_cond
        T_e = u.T_out - self.dT_evap
        return self.eta_heat * (T_c + T0) / ops.smooth_max(T_c - T_e, 5.0, 0.5)

    def cop_cool(self, u: Any, ops: Any) -> Any:
        """Cooling COP (EER) at the outdoor temperature [-]."""
        T_e = self.T_chw - self.dT_evap
        T_c = u.T_out + self.dT_cond_cool
        return self.eta_cool * (T_e + T0) / ops.smooth_max(T_c - T_e, 5.0, 0.5)

    def capacities(self, u: Any) -> tuple[Any, Any]:
        """Heating and cooling capacity of the heat pump at the outdoor temperature [W]."""
        area = sum(self.areas()["floor"])
        return (self.q_heat * area * (1.0 + self.c_heat * (u.T_out - 7.0)),
                self.q_cool * area * (1.0 - self.c_cool * (u.T_out - 35.0)))

    def power(self, u: Any, ops: Any) -> Any:
        """Electric power of the heat pump [W]."""
        return (ops.sum(u.Q_heat) / self.cop_heat(u, ops)
                + ops.sum(u.Q_cool) / self.cop_cool(u, ops))

    def _zone_inputs(self, u: Any) -> Any:
        return _ZoneInputs(u.Q_heat - u.Q_cool, u.T_out, u.T_ground, u.I_sol, u.occupancy)

    def _flows(self, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        return super()._flows(x, self._zone_inputs(u), ops)

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Room temperature of each zone [°C], heat pump power [W] and load [-]."""
        cap_h, cap_c = self.capacities(u)
        return HeatPumpBuildingOutputs(
            T_air=x.T_i, P_el=self.power(u, ops),
            load=ops.sum(u.Q_heat) / cap_h + ops.sum(u.Q_cool) / cap_c)

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Heat flows into the building [W], summed over zones (``hvac``: heating minus
        cooling)."""
        return super().heat_flows(t, x, self._zone_inputs(u), ops)


class _ZoneInputs:
    """The building's inputs seen by the zones: the net HVAC heat per zone."""

    __slots__ = ("I_sol", "Q_hvac", "T_ground", "T_out", "occupancy")

    def __init__(self, Q_hvac: Any, T_out: Any, T_ground: Any, I_sol: Any,
                 occupancy: Any) -> None:
        self.Q_hvac, self.T_out, self.T_ground = Q_hvac, T_out, T_ground
        self.I_sol, self.occupancy = I_sol, occupancy
