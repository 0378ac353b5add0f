"""HVAC plant: an air-source heat pump and a chiller with temperature-dependent COP,
hydronic emitters (EN 442) for several zones and an air-handling unit (time unit: s).

Only :mod:`processtwin.model` is imported here (backend-free equations). Electric power is
an output and a port of every unit that draws it, so it can be priced. Units holding
water have ``stored_energy`` [J] and ``heat_flows`` [W, into the unit] as in
:mod:`processtwin.models.thermal`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from processtwin.model import Model, ModelError, Var, dimension, param, setting, variables

from .thermal import CP_W

__all__ = ["AirHandlingUnit", "Chiller", "HeatPump", "HydronicEmitters"]

T0 = 273.15  # K at 0 °C

# ---- vapour-compression units -----------------------------------------------------------
HeatPumpState = variables(
    "HeatPumpState",
    T_sup=Var("degC", "water leaving the condenser", default=45.0, bounds=(0.0, 100.0)),
)
HeatPumpInputs = variables(
    "HeatPumpInputs",
    y=Var("-", "compressor modulation (fraction of the capacity)", default=0.5,
          bounds=(0.0, 1.0), kind="manipulated"),
    m_w=Var("kg/s", "water flow through the condenser", default=0.4, bounds=(0.0, None),
            kind="manipulated"),
    T_ret=Var("degC", "water returning to the condenser", default=38.0, kind="disturbance"),
    T_src=Var("degC", "source (outdoor air) temperature", default=7.0, kind="disturbance"),
)
HeatPumpOutputs = variables(
    "HeatPumpOutputs",
    T_sup=Var("degC", "supply temperature sensor", kind="online", noise=0.1),
    P_el=Var("W", "electric power meter", kind="online", noise=20.0),
)
HeatPumpPorts = variables(
    "HeatPumpPorts",
    T_sup=Var("degC", "temperature of the water leaving", kind="port"),
    m_w=Var("kg/s", "water flow leaving", kind="port"),
    P_el=Var("W", "electric power drawn", kind="port"),
    Q=Var("W", "heat delivered to the water", kind="port"),
)


class HeatPump(Model):
    r"""Air-source heat pump heating water, with a temperature-dependent COP (time unit: s).

    The compressor delivers :math:`Q = y\,Q_{nom}\,(1 + c_Q (T_{src} - 7\,°C))` to the
    condenser water (capacity falls as the source cools; EN 14511-2 (2018) rates at A7/W35),
    whose
    hold-up :math:`M` mixes it into the supply:
    :math:`M c_p \dot T_{sup} = Q - \dot m_w c_p (T_{sup} - T_{ret})`. The electric power is
    :math:`P_{el} = Q / COP` with, by ``cop_model``,

    * ``"carnot"``: :math:`COP = \eta\,T_c / (T_c - T_e)`, the Carnot COP between the
      condensing and evaporating temperatures :math:`T_c = T_{sup} + \Delta T_c`,
      :math:`T_e = T_{src} - \Delta T_e` [K], scaled by the Carnot fraction :math:`\eta`;
    * ``"curve"``: a manufacturer-style quadratic in the lift,
      :math:`COP = a_0 + a_1 \Delta T + a_2 \Delta T^2` with
      :math:`\Delta T = T_{sup} - T_{src}`, limited (smoothly) to the Carnot COP of
      the same two temperatures.

    Either is at most the Carnot COP :math:`T_{sup}/(T_{sup} - T_{src})` everywhere in the
    envelope. A lift below 5 K is floored smoothly (the envelope ends there).

    Defaults: a 10 kW residential unit, A7/W35 COP 4.1 with the Carnot model (η = 0.5,
    5 K approaches); capacity −2.5 %/K below 7 °C; the curve's coefficients are a
    least-squares fit (within 0.013) to datasheet-style EN 14511 points A7/W35 4.5,
    A2/W35 3.9, A-7/W35 3.0, A7/W55 2.6 (lifts 28–48 K; use it inside that range); 20 kg
    of water and condenser metal.
    """

    Q_nom: float = param(10e3, units="W", bounds=(0.0, None), strict=True,
                         doc="heating capacity at A7/W35")
    c_Q: float = param(0.025, units="1/K", bounds=(0.0, None),
                       doc="relative capacity change per kelvin of source temperature")
    eta: float = param(0.5, units="-", bounds=(0.0, 1.0), strict=True,
                       doc="Carnot fraction (carnot model)")
    dT_cond: float = param(5.0, units="K", bounds=(0.0, None), doc="condenser approach")
    dT_evap: float = param(5.0, units="K", bounds=(0.0, None), doc="evaporator approach")
    a0: float = param(9.701, units="-", doc="COP curve: constant (curve model)")
    a1: float = param(-0.23805, units="1/K", doc="COP curve: linear coefficient")
    a2: float = param(0.0018753, units="1/K2", doc="COP curve: quadratic coefficient")
    M: float = param(20.0, units="kg", bounds=(0.0, None), strict=True,
                     doc="water-equivalent hold-up of the condenser")
    cp: float = param(CP_W, units="J/(kg K)", bounds=(0.0, None), strict=True,
                      doc="water isobaric heat capacity")
    cop_model: str = setting("carnot", doc="COP correlation: 'carnot' or 'curve'")

    name: ClassVar[str] = "heat_pump"
    State: ClassVar[type] = HeatPumpState
    Inputs: ClassVar[type] = HeatPumpInputs
    Outputs: ClassVar[type] = HeatPumpOutputs
    Ports: ClassVar[type] = HeatPumpPorts
    time_unit: ClassVar[str] = "s"

    def __check_init__(self) -> None:
        if self.cop_model not in ("carnot", "curve"):
            raise ModelError(f"`{self.name}`: `cop_model` must be 'carnot' or 'curve', got "
                             f"{self.cop_model!r}.")

    def heat(self, x: Any, u: Any) -> Any:
        """Heat delivered to the water [W]."""
        return u.y * self.Q_nom * (1.0 + self.c_Q * (u.T_src - 7.0))

    def carnot(self, T_hot: Any, T_cold: Any, ops: Any) -> Any:
        """Carnot heating COP between two temperatures [°C]; the lift floored at 5 K."""
        lift = ops.smooth_max(T_hot - T_cold, 5.0, 0.5)
        return (T_hot + T0) / lift

    def cop(self, x: Any, u: Any, ops: Any) -> Any:
        """Coefficient of performance at the current temperatures [-]."""
        if self.cop_model == "carnot":
            return self.eta * self.carnot(x.T_sup + self.dT_cond, u.T_src - self.dT_evap, ops)
        lift = x.T_sup - u.T_src
        curve = self.a0 + self.a1 * lift + self.a2 * lift**2
        return ops.smooth_min(curve, self.carnot(x.T_sup, u.T_src, ops), 0.05)

    def power(self, x: Any, u: Any, ops: Any) -> Any:
        """Electric power [W]."""
        return self.heat(x, u) / self.cop(x, u, ops)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the supply temperature [K/s]."""
        return HeatPumpState(T_sup=(self.heat(x, u) - u.m_w * self.cp * (x.T_sup - u.T_ret))
                             / (self.M * self.cp))

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Supply temperature [°C] and electric power [W]."""
        return HeatPumpOutputs(T_sup=x.T_sup, P_el=self.power(x, u, ops))

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """The supply water [°C, kg/s], electric power and heat [W]."""
        return HeatPumpPorts(T_sup=x.T_sup, m_w=u.m_w, P_el=self.power(x, u, ops),
                             Q=self.heat(x, u))

    def stored_energy(self, x: Any, ops: Any) -> Any:
        """Heat held by the condenser water relative to 0 °C [J]."""
        return self.M * self.cp * x.T_sup

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Condenser heat and heat advected with the water [W]."""
        return {"condenser": self.heat(x, u),
                "advected": u.m_w * self.cp * (u.T_ret - x.T_sup)}


ChillerState = variables(
    "ChillerState",
    T_sup=Var("degC", "chilled water leaving the evaporator", default=8.0,
              bounds=(0.0, 100.0)),
)
ChillerInputs = variables(
    "ChillerInputs",
    y=Var("-", "compressor modulation (fraction of the capacity)", default=0.5,
          bounds=(0.0, 1.0), kind="manipulated"),
    m_w=Var("kg/s", "chilled-water flow", default=1.0, bounds=(0.0, None), kind="manipulated"),
    T_ret=Var("degC", "chilled water returning", default=13.0, kind="disturbance"),
    T_src=Var("degC", "heat-rejection (outdoor air) temperature", default=30.0,
              kind="disturbance"),
)
ChillerOutputs = variables(
    "ChillerOutputs",
    T_sup=Var("degC", "chilled-water supply sensor", kind="online", noise=0.1),
    P_el=Var("W", "electric power meter", kind="online", noise=50.0),
)
ChillerPorts = variables(
    "ChillerPorts",
    T_sup=Var("degC", "temperature of the chilled water leaving", kind="port"),
    m_w=Var("kg/s", "chilled-water flow leaving", kind="port"),
    P_el=Var("W", "electric power drawn", kind="port"),
    Q=Var("W", "heat removed from the water", kind="port"),
)


class Chiller(Model):
    r"""Air-cooled chiller with a Carnot-fraction COP (time unit: s).

    Removes :math:`Q = y\,Q_{nom}\,(1 - c_Q (T_{src} - 35\,°C))` from the chilled water
    (EN 14511-2 (2018) rates at 35 °C air, 12/7 °C water):
    :math:`M c_p \dot T_{sup} = -Q + \dot m_w c_p (T_{ret} - T_{sup})`, drawing
    :math:`P_{el} = Q/COP`, :math:`COP = \eta\,T_e/(T_c - T_e)` with
    :math:`T_e = T_{sup} - \Delta T_e`, :math:`T_c = T_{src} + \Delta T_c` [K] — at most
    the Carnot cooling COP of the two temperatures.

    Defaults: a 50 kW unit, EER 3.2 at the rating point (η = 0.4), −1.5 %/K of capacity
    above 35 °C, 50 kg of water-equivalent hold-up.
    """

    Q_nom: float = param(50e3, units="W", bounds=(0.0, None), strict=True,
                         doc="cooling capacity at 35 °C air")
    c_Q: float = param(0.015, units="1/K", bounds=(0.0, None),
                       doc="relative capacity change per kelvin of rejection temperature")
    eta: float = param(0.4, units="-", bounds=(0.0, 1.0), strict=True,
                       doc="Carnot fraction")
    dT_cond: float = param(10.0, units="K", bounds=(0.0, None), doc="condenser approach")
    dT_evap: float = param(5.0, units="K", bounds=(0.0, None), doc="evaporator approach")
    M: float = param(50.0, units="kg", bounds=(0.0, None), strict=True,
                     doc="water-equivalent hold-up of the evaporator")
    cp: float = param(CP_W, units="J/(kg K)", bounds=(0.0, None), strict=True,
                      doc="water isobaric heat capacity")

    name: ClassVar[str] = "chiller"
    State: ClassVar[type] = ChillerState
    Inputs: ClassVar[type] = ChillerInputs
    Outputs: ClassVar[type] = ChillerOutputs
    Ports: ClassVar[type] = ChillerPorts
    time_unit: ClassVar[str] = "s"

    def cooling(self, x: Any, u: Any) -> Any:
        """Heat removed from the water [W]."""
        return u.y * self.Q_nom * (1.0 - self.c_Q * (u.T_src - 35.0))

    def cop(self, x: Any, u: Any, ops: Any) -> Any:
        """Cooling coefficient of performance [-] (lift floored at 5 K)."""
        T_e = x.T_sup - self.dT_evap
        lift = ops.smooth_max(u.T_src + self.dT_cond - T_e, 5.0, 0.5)
        return self.eta * (T_e + T0) / lift

    def power(self, x: Any, u: Any, ops: Any) -> Any:
        """Electric power [W]."""
        return self.cooling(x, u) / self.cop(x, u, ops)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the chilled-water temperature [K/s]."""
        return ChillerState(T_sup=(-self.cooling(x, u) + u.m_w * self.cp * (u.T_ret - x.T_sup))
                            / (self.M * self.cp))

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Supply temperature [°C] and electric power [W]."""
        return ChillerOutputs(T_sup=x.T_sup, P_el=self.power(x, u, ops))

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """The chilled water [°C, kg/s], electric power and heat removed [W]."""
        return ChillerPorts(T_sup=x.T_sup, m_w=u.m_w, P_el=self.power(x, u, ops),
                            Q=self.cooling(x, u))

    def stored_energy(self, x: Any, ops: Any) -> Any:
        """Heat held by the chilled water relative to 0 °C [J]."""
        return self.M * self.cp * x.T_sup

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Evaporator heat (negative) and heat advected with the water [W]."""
        return {"evaporator": -self.cooling(x, u),
                "advected": u.m_w * self.cp * (u.T_ret - x.T_sup)}


# ---- hydronic emitters ------------------------------------------------------------------
EmitterState = variables(
    "EmitterState",
    T_r=Var("degC", "water leaving each zone's emitter", default=40.0, bounds=(0.0, 100.0),
            shape="n_zones"),
)
EmitterInputs = variables(
    "EmitterInputs",
    T_sup=Var("degC", "supply water temperature", default=55.0, kind="disturbance"),
    m_w=Var("kg/s", "water flow through each zone's emitter (its valve)", default=0.05,
            bounds=(0.0, None), kind="manipulated", shape="n_zones"),
    T_room=Var("degC", "air temperature of each zone", default=20.0, kind="disturbance",
               shape="n_zones"),
)
EmitterOutputs = variables(
    "EmitterOutputs",
    T_ret=Var("degC", "mixed return temperature sensor", kind="online", noise=0.1),
)
EmitterPorts = variables(
    "EmitterPorts",
    Q=Var("W", "heat emitted into each zone", kind="port", shape="n_zones"),
    T_ret=Var("degC", "mixed temperature of the water returning", kind="port"),
    m_w=Var("kg/s", "total water flow returning", kind="port"),
)


class HydronicEmitters(Model):
    r"""Radiators or floor heating, one per zone, fed from one supply (EN 442).

    ``n_zones`` zones (time unit: s).

    Each zone's emitter gives off the characteristic of EN 442-2 (2014)
    :math:`Q = s\,Q_{nom}\,(\Delta T/\Delta T_{nom})^{n}` with the excess temperature
    :math:`\Delta T = (T_{sup} + T_r)/2 - T_{room}` (arithmetic mean; floored smoothly at 0)
    and holds water and metal :math:`C`:
    :math:`s C \dot T_r = \dot m c_p (T_{sup} - T_r) - Q`. The returns mix:
    :math:`T_{ret} = \sum \dot m_i T_{r,i} / \sum \dot m_i`.

    ``scale`` sizes each zone's emitter relative to the nominal one (empty: all 1).
    Defaults: panel radiators of 2 kW at EN 442's 75/65/20 °C (ΔT 50 K), exponent 1.3
    (radiators; floor heating ~1.1), 80 kJ/K each (15 kg of water, 30 kg of steel).
    """

    Q_nom: float = param(2000.0, units="W", bounds=(0.0, None), strict=True,
                         doc="nominal output at a 50 K excess temperature")
    n: float = param(1.3, units="-", bounds=(1.0, 2.0), doc="EN 442 radiator exponent")
    C: float = param(80e3, units="J/K", bounds=(0.0, None), strict=True,
                     doc="heat capacity of one emitter (water and metal)")
    cp: float = param(CP_W, units="J/(kg K)", bounds=(0.0, None), strict=True,
                      doc="water isobaric heat capacity")
    n_zones: int = dimension(1, doc="zones, one emitter each")
    scale: tuple = setting((), doc="relative size of each zone's emitter (empty: all 1)")

    name: ClassVar[str] = "emitters"
    State: ClassVar[type] = EmitterState
    Inputs: ClassVar[type] = EmitterInputs
    Outputs: ClassVar[type] = EmitterOutputs
    Ports: ClassVar[type] = EmitterPorts
    time_unit: ClassVar[str] = "s"

    def __check_init__(self) -> None:
        if self.scale and (len(self.scale) != self.n_zones
                           or any(not (float(s) > 0) for s in self.scale)):
            raise ModelError(f"`{self.name}`: `scale` must hold {self.n_zones} positive "
                             f"sizes (one per zone), got {self.scale!r}.")

    def _size(self, ops: Any) -> Any:
        if not self.scale:
            return ops.full(self.n_zones, 1.0)
        return ops.concat([float(s) for s in self.scale])

    def emitted(self, x: Any, u: Any, ops: Any) -> Any:
        """Heat given off into each zone [W]."""
        excess = ops.smooth_max((u.T_sup + x.T_r) / 2 - u.T_room, 0.0, 0.5)
        return self._size(ops) * self.Q_nom * (excess / 50.0) ** self.n

    def _mixed(self, x: Any, u: Any, ops: Any) -> Any:
        # Σ m T_r / Σ m, written about the mean so that a vanishing flow returns the mean
        # emitter temperature (no 0/0; 1e-6 kg/s of regularisation)
        mean = ops.sum(x.T_r) / self.n_zones
        return mean + ops.sum(u.m_w * (x.T_r - mean)) / (ops.sum(u.m_w) + 1e-6)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of each emitter's water temperature [K/s]."""
        size = self._size(ops)
        return EmitterState(T_r=(u.m_w * self.cp * (u.T_sup - x.T_r)
                                 - self.emitted(x, u, ops)) / (size * self.C))

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Mixed return temperature [°C]."""
        return EmitterOutputs(T_ret=self._mixed(x, u, ops))

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Heat into each zone [W]; the mixed return water [°C, kg/s]."""
        return EmitterPorts(Q=self.emitted(x, u, ops), T_ret=self._mixed(x, u, ops),
                            m_w=ops.sum(u.m_w))

    def stored_energy(self, x: Any, ops: Any) -> Any:
        """Heat held by the emitters relative to 0 °C [J]."""
        return self.C * ops.sum(self._size(ops) * x.T_r)

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Heat advected in with the water and emitted into the zones (negative) [W]."""
        return {"advected": ops.sum(u.m_w * self.cp * (u.T_sup - x.T_r)),
                "emitted": -ops.sum(self.emitted(x, u, ops))}


# ---- air-handling unit ------------------------------------------------------------------
AHUState = variables(
    "AHUState",
    T_sa=Var("degC", "supply air temperature after the coil", default=18.0),
)
AHUInputs = variables(
    "AHUInputs",
    V_air=Var("m3/s", "supply air flow", default=1.0, bounds=(0.0, None), kind="manipulated"),
    T_sa_set=Var("degC", "supply air temperature setpoint", default=18.0,
                 kind="manipulated"),
    f_oa=Var("-", "outdoor-air fraction of the supply (economiser)", default=0.3,
             bounds=(0.0, 1.0), kind="manipulated"),
    T_oa=Var("degC", "outdoor air temperature", default=5.0, kind="disturbance"),
    T_ra=Var("degC", "return air temperature", default=21.0, kind="disturbance"),
)
AHUOutputs = variables(
    "AHUOutputs",
    T_sa=Var("degC", "supply air temperature sensor", kind="online", noise=0.2),
    P_fan=Var("W", "fan electric power meter", kind="online", noise=10.0),
)
AHUPorts = variables(
    "AHUPorts",
    T_sa=Var("degC", "supply air temperature", kind="port"),
    V_air=Var("m3/s", "supply air flow", kind="port"),
    Q_coil=Var("W", "coil heat into the air (negative: cooling)", kind="port"),
    P_fan=Var("W", "fan electric power", kind="port"),
)


class AirHandlingUnit(Model):
    r"""Air-handling unit: mixing box, heating/cooling coil and supply fan (time unit: s).

    Outdoor and return air mix, :math:`T_{mix} = f_{oa} T_{oa} + (1 - f_{oa}) T_{ra}`; the
    coil brings the supply air to its setpoint with a first-order lag,
    :math:`\tau \dot T_{sa} = T_{sa,set} - T_{sa}`, exchanging
    :math:`Q_{coil} = \rho c_p \dot V (T_{sa} - T_{mix})`. The fan draws the affinity-law
    power :math:`P_{nom} (\dot V/\dot V_{nom})^3`, never below its minimum
    :math:`P_{min}` (smoothly: motor and drive losses).

    Defaults: a 2 m3/s unit with a 1.5 kW fan at nominal flow (specific fan power
    750 W/(m3/s), class SFP 2 of EN 16798-3 (2017)), 150 W minimum, 60 s coil lag; air at
    1.2 kg/m3
    and 1006 J/(kg K).
    """

    V_nom: float = param(2.0, units="m3/s", bounds=(0.0, None), strict=True,
                         doc="nominal air flow")
    P_nom: float = param(1500.0, units="W", bounds=(0.0, None), doc="fan power at nominal flow")
    P_min: float = param(150.0, units="W", bounds=(0.0, None), doc="minimum fan power")
    tau: float = param(60.0, units="s", bounds=(0.0, None), strict=True,
                       doc="coil and sensor lag")
    rho_a: float = param(1.2, units="kg/m3", bounds=(0.0, None), strict=True,
                         doc="air density")
    cp_a: float = param(1006.0, units="J/(kg K)", bounds=(0.0, None), strict=True,
                        doc="air isobaric heat capacity")

    name: ClassVar[str] = "air_handling_unit"
    State: ClassVar[type] = AHUState
    Inputs: ClassVar[type] = AHUInputs
    Outputs: ClassVar[type] = AHUOutputs
    Ports: ClassVar[type] = AHUPorts
    time_unit: ClassVar[str] = "s"

    def fan_power(self, u: Any, ops: Any) -> Any:
        """Fan electric power [W]."""
        return ops.smooth_max(self.P_nom * (u.V_air / self.V_nom) ** 3, self.P_min, 5.0)

    def coil(self, x: Any, u: Any) -> Any:
        """Coil heat into the air [W] (negative when cooling)."""
        mixed = u.f_oa * u.T_oa + (1.0 - u.f_oa) * u.T_ra
        return self.rho_a * self.cp_a * u.V_air * (x.T_sa - mixed)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the supply air temperature [K/s]."""
        return AHUState(T_sa=(u.T_sa_set - x.T_sa) / self.tau)

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Supply air temperature [°C] and fan power [W]."""
        return AHUOutputs(T_sa=x.T_sa, P_fan=self.fan_power(u, ops))

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Supply air [°C, m3/s], coil heat and fan power [W]."""
        return AHUPorts(T_sa=x.T_sa, V_air=u.V_air, Q_coil=self.coil(x, u),
                        P_fan=self.fan_power(u, ops))
