"""Thermal lines: a district-heating pipe, a counter-flow heat exchanger that fouls, and a
stratified storage tank — finite-volume models with N cells (time unit: seconds).

Only :mod:`processtwin.model` is imported here (backend-free equations). Water properties
are constants at 60 °C and 5 bar from IAPWS-95 (Wagner & Pruß 2002, *J. Phys. Chem. Ref.
Data* 31, 387): density 983.2 kg/m3, isobaric heat capacity 4185 J/(kg K); pass others for
other temperatures (they vary by < 2 % between 40 and 90 °C).

Every unit has ``stored_energy(x, ops)`` [J, relative to 0 °C] and ``heat_flows(t, x, u,
ops)`` [W, positive into the unit] with ``d stored / dt = Σ heat_flows`` exactly: the
energy balance the tests close.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from processtwin.model import Model, ModelError, Var, dimension, param, variables

__all__ = ["CounterflowHeatExchanger", "Pipe", "StorageTank"]

RHO_W = 983.2  # kg/m3, water at 60 °C, 5 bar (IAPWS-95)
CP_W = 4185.0  # J/(kg K), likewise

# ---- pipe ---------------------------------------------------------------------------------
PipeState = variables(
    "PipeState",
    T=Var("degC", "water temperature in each cell", default=60.0, shape="n_cells"),
    T_w=Var("degC", "pipe wall and insulation temperature in each cell", default=55.0,
            shape="n_cells"),
)
PipeInputs = variables(
    "PipeInputs",
    m_dot=Var("kg/s", "mass flow of water", default=5.0, bounds=(0.0, None),
              kind="manipulated"),
    T_in=Var("degC", "inlet water temperature", default=60.0, kind="disturbance"),
    T_amb=Var("degC", "ground (ambient) temperature around the pipe", default=10.0,
              kind="disturbance"),
)
PipeOutputs = variables(
    "PipeOutputs",
    T_out=Var("degC", "outlet temperature sensor", kind="online", noise=0.1),
)
PipePorts = variables(
    "PipePorts",
    T_out=Var("degC", "temperature of the water leaving the pipe", kind="port"),
    m_dot=Var("kg/s", "mass flow leaving the pipe", kind="port"),
)


class Pipe(Model):
    r"""District-heating pipe: plug flow in N finite volumes, wall capacity, ground loss.

    ``n_cells`` finite volumes; the wall stores heat and loses it to the ground (time
    unit: s).

    For cell :math:`i` of length :math:`\Delta x = L / N`, water mass
    :math:`m = \rho A \Delta x` and wall heat capacity :math:`c_w \Delta x`, with the flow
    :math:`\dot m \ge 0` entering at cell 1 (first-order upwind),

    .. math::

        m c_p \dot T_i = \dot m c_p (T_{i-1} - T_i) - h \pi D \Delta x (T_i - T_{w,i}),
        \qquad T_0 \equiv T_{in},

        c_w \Delta x\, \dot T_{w,i} = h \pi D \Delta x (T_i - T_{w,i})
        - U \Delta x\, (T_{w,i} - T_{amb}).

    The transport delay :math:`\rho A L / \dot m` emerges from the cells (a step arrives
    spread by the scheme's numerical dispersion, standard deviation
    :math:`\tau/\sqrt N` for the tanks-in-series it is). In steady state the outlet is
    :math:`T_{amb} + (T_{in} - T_{amb}) (1 + UA/(N \dot m c_p))^{-N}`, which tends to the
    analytic :math:`T_{amb} + (T_{in} - T_{amb}) e^{-UA/(\dot m c_p)}` at first order in
    :math:`1/N`, with :math:`UA = L / (1/(h\pi D) + 1/U)` the series conductance of film and
    insulation (Incropera, DeWitt, Bergman & Lavine (2007), *Fundamentals of Heat and Mass
    Transfer*, 6th ed., §8.3.3).

    Defaults: a DN100 pre-insulated steel pipe, 1 km (inner diameter 107.1 mm, EN 10217
    114.3 × 3.6 mm); linear heat-loss coefficient 0.3 W/(m K), typical of series-2 insulation
    of EN 253 bonded pipes; film coefficient 4000 W/(m2 K) (Dittus–Boelter at ~1 m/s);
    wall heat capacity 4800 J/(m K) (9.8 kg/m of steel at 490 J/(kg K)).
    """

    L: float = param(1000.0, units="m", bounds=(0.0, None), strict=True, doc="pipe length")
    D: float = param(0.1071, units="m", bounds=(0.0, None), strict=True,
                     doc="inner diameter")
    U: float = param(0.3, units="W/(m K)", bounds=(0.0, None),
                     doc="heat-loss coefficient of the insulation per metre of pipe")
    h: float = param(4000.0, units="W/(m2 K)", bounds=(0.0, None), strict=True,
                     doc="film coefficient water to wall")
    c_w: float = param(4800.0, units="J/(m K)", bounds=(0.0, None), strict=True,
                       doc="heat capacity of wall and insulation per metre")
    rho: float = param(RHO_W, units="kg/m3", bounds=(0.0, None), strict=True,
                       doc="water density")
    cp: float = param(CP_W, units="J/(kg K)", bounds=(0.0, None), strict=True,
                      doc="water isobaric heat capacity")
    n_cells: int = dimension(20, doc="finite volumes along the pipe")

    name: ClassVar[str] = "pipe"
    State: ClassVar[type] = PipeState
    Inputs: ClassVar[type] = PipeInputs
    Outputs: ClassVar[type] = PipeOutputs
    Ports: ClassVar[type] = PipePorts
    time_unit: ClassVar[str] = "s"

    def _film(self, x: Any) -> Any:
        """Heat flow water → wall in each cell [W]."""
        return self.h * math.pi * self.D * (self.L / self.n_cells) * (x.T - x.T_w)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the water and wall temperatures [K/s]."""
        dx = self.L / self.n_cells
        m_cell = self.rho * math.pi * self.D**2 / 4 * dx
        q_film = self._film(x)
        upstream = ops.shift(x.T, 1, u.T_in)
        return PipeState(
            T=(u.m_dot * self.cp * (upstream - x.T) - q_film) / (m_cell * self.cp),
            T_w=(q_film - self.U * dx * (x.T_w - u.T_amb)) / (self.c_w * dx))

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Outlet temperature sensor [°C]."""
        return PipeOutputs(T_out=ops.index(x.T, -1))

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """The water leaving: its temperature [°C] and mass flow [kg/s]."""
        return PipePorts(T_out=ops.index(x.T, -1), m_dot=u.m_dot)

    def stored_energy(self, x: Any, ops: Any) -> Any:
        """Heat held by water and wall relative to 0 °C [J]."""
        dx = self.L / self.n_cells
        m_cell = self.rho * math.pi * self.D**2 / 4 * dx
        return m_cell * self.cp * ops.sum(x.T) + self.c_w * dx * ops.sum(x.T_w)

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Heat flows into the pipe [W]: ``advected`` (in minus out with the water) and
        ``ground`` (the loss, negative)."""
        dx = self.L / self.n_cells
        return {"advected": u.m_dot * self.cp * (u.T_in - ops.index(x.T, -1)),
                "ground": -self.U * dx * ops.sum(x.T_w - u.T_amb)}

    def __check_init__(self) -> None:
        if self.n_cells < 1:
            raise ModelError(f"`{self.name}`: `n_cells` must be at least 1, got "
                             f"{self.n_cells}.")


# ---- counter-flow heat exchanger --------------------------------------------------------
HXState = variables(
    "HXState",
    T_h=Var("degC", "hot-side fluid in each segment (hot enters at segment 1)", default=70.0,
            shape="n_segments", dim="segment"),
    T_c=Var("degC", "cold-side fluid in each segment (cold enters at the last)",
            default=45.0, shape="n_segments", dim="segment"),
    R_f=Var("m2 K/W", "fouling resistance", default=0.0, bounds=(0.0, None)),
)
HXInputs = variables(
    "HXInputs",
    m_h=Var("kg/s", "hot-side mass flow", default=2.0, bounds=(0.0, None),
            kind="disturbance"),
    T_h_in=Var("degC", "hot-side inlet temperature", default=75.0, kind="disturbance"),
    m_c=Var("kg/s", "cold-side mass flow", default=2.0, bounds=(0.0, None),
            kind="manipulated"),
    T_c_in=Var("degC", "cold-side inlet temperature", default=40.0, kind="disturbance"),
)
HXOutputs = variables(
    "HXOutputs",
    T_h_out=Var("degC", "hot-side outlet temperature sensor", kind="online", noise=0.1),
    T_c_out=Var("degC", "cold-side outlet temperature sensor", kind="online", noise=0.1),
)
HXPorts = variables(
    "HXPorts",
    T_h_out=Var("degC", "hot-side outlet temperature", kind="port"),
    m_h=Var("kg/s", "hot-side mass flow leaving", kind="port"),
    T_c_out=Var("degC", "cold-side outlet temperature", kind="port"),
    m_c=Var("kg/s", "cold-side mass flow leaving", kind="port"),
)


class CounterflowHeatExchanger(Model):
    r"""Counter-flow heat exchanger in N segments whose fouling resistance grows.

    ``n_segments`` segments (time unit: s) — a district-heating substation's plate
    exchanger.

    The hot stream enters segment 1 and the cold stream segment N; in segment :math:`i`
    (area :math:`A/N`, hold-ups :math:`M_h/N`, :math:`M_c/N`) the exchanged heat is
    :math:`q_i = (A/N)\,(T_{h,i} - T_{c,i}) / (1/U + R_f)` and

    .. math::

        \tfrac{M_h}{N} c_h \dot T_{h,i} = \dot m_h c_h (T_{h,i-1} - T_{h,i}) - q_i, \qquad
        \tfrac{M_c}{N} c_c \dot T_{c,i} = \dot m_c c_c (T_{c,i+1} - T_{c,i}) + q_i,

    with :math:`T_{h,0} = T_{h,in}`, :math:`T_{c,N+1} = T_{c,in}`. Fouling follows the
    asymptotic law of Kern & Seaton (1959, *Br. Chem. Eng.* 4, 258),
    :math:`\dot R_f = (R_f^\infty - R_f) / \tau_f`: the degradation a twin tracks from the
    four temperatures and two flows. In steady state the exchanger approaches the
    ε-NTU effectiveness of a counter-flow exchanger as N grows (Incropera et al. 2007,
    eq. 11.29a), at first order in :math:`1/N`.

    Defaults: a 300 kW district-heating substation plate exchanger, 10 m2 at a clean
    U = 4000 W/(m2 K) (plate exchangers 3000–7000 W/(m2 K): VDI Heat Atlas 2010, C3),
    5 kg of water per side; fouling towards 2e-4 m2 K/W (TEMA's allowance for treated
    district-heating water, 1.76e-4 m2 K/W) over 90 days.
    """

    A: float = param(10.0, units="m2", bounds=(0.0, None), strict=True,
                     doc="heat-transfer area")
    U: float = param(4000.0, units="W/(m2 K)", bounds=(0.0, None), strict=True,
                     doc="clean overall heat-transfer coefficient")
    M_h: float = param(5.0, units="kg", bounds=(0.0, None), strict=True,
                       doc="hot-side fluid hold-up")
    M_c: float = param(5.0, units="kg", bounds=(0.0, None), strict=True,
                       doc="cold-side fluid hold-up")
    cp_h: float = param(CP_W, units="J/(kg K)", bounds=(0.0, None), strict=True,
                        doc="hot-side heat capacity")
    cp_c: float = param(CP_W, units="J/(kg K)", bounds=(0.0, None), strict=True,
                        doc="cold-side heat capacity")
    R_f_inf: float = param(2e-4, units="m2 K/W", bounds=(0.0, None),
                           doc="asymptotic fouling resistance")
    tau_f: float = param(90 * 86400.0, units="s", bounds=(0.0, None), strict=True,
                         doc="time constant of fouling build-up")
    n_segments: int = dimension(10, doc="segments along the exchanger")

    name: ClassVar[str] = "heat_exchanger"
    State: ClassVar[type] = HXState
    Inputs: ClassVar[type] = HXInputs
    Outputs: ClassVar[type] = HXOutputs
    Ports: ClassVar[type] = HXPorts
    time_unit: ClassVar[str] = "s"

    def duty(self, x: Any) -> Any:
        """Heat transferred hot → cold in each segment [W]."""
        return (self.A / self.n_segments) * (x.T_h - x.T_c) / (1.0 / self.U + x.R_f)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of both streams' temperatures [K/s] and of fouling [m2 K/(W s)]."""
        n = self.n_segments
        q = self.duty(x)
        hot_up = ops.shift(x.T_h, 1, u.T_h_in)
        cold_up = ops.shift(x.T_c, -1, u.T_c_in)
        return HXState(
            T_h=(u.m_h * self.cp_h * (hot_up - x.T_h) - q) / (self.M_h / n * self.cp_h),
            T_c=(u.m_c * self.cp_c * (cold_up - x.T_c) + q) / (self.M_c / n * self.cp_c),
            R_f=(self.R_f_inf - x.R_f) / self.tau_f)

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """The two outlet temperature sensors [°C]."""
        return HXOutputs(T_h_out=ops.index(x.T_h, -1), T_c_out=ops.index(x.T_c, 0))

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Both outlet streams: temperatures [°C] and flows [kg/s]."""
        return HXPorts(T_h_out=ops.index(x.T_h, -1), m_h=u.m_h,
                       T_c_out=ops.index(x.T_c, 0), m_c=u.m_c)

    def stored_energy(self, x: Any, ops: Any) -> Any:
        """Heat held by both streams relative to 0 °C [J]."""
        n = self.n_segments
        return (self.M_h / n * self.cp_h * ops.sum(x.T_h)
                + self.M_c / n * self.cp_c * ops.sum(x.T_c))

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Heat advected into the exchanger by each stream [W] (no loss to ambient)."""
        return {"hot": u.m_h * self.cp_h * (u.T_h_in - ops.index(x.T_h, -1)),
                "cold": u.m_c * self.cp_c * (u.T_c_in - ops.index(x.T_c, 0))}


# ---- stratified storage tank -------------------------------------------------------------
TankState = variables(
    "TankState",
    T=Var("degC", "water temperature of each layer, top first", default=60.0,
          shape="n_layers"),
)
TankInputs = variables(
    "TankInputs",
    m_top=Var("kg/s", "flow entering at the top (charging) and leaving at the bottom",
              default=0.0, bounds=(0.0, None), kind="manipulated"),
    T_top_in=Var("degC", "temperature of the water entering at the top", default=70.0,
                 kind="disturbance"),
    m_bot=Var("kg/s", "flow entering at the bottom (discharging) and leaving at the top",
              default=0.0, bounds=(0.0, None), kind="manipulated"),
    T_bot_in=Var("degC", "temperature of the water entering at the bottom", default=40.0,
                 kind="disturbance"),
    T_amb=Var("degC", "room temperature around the tank", default=15.0, kind="disturbance"),
)
TankOutputs = variables(
    "TankOutputs",
    T_meas=Var("degC", "temperature sensor in each layer", kind="online", noise=0.2,
               shape="n_layers"),
)
TankPorts = variables(
    "TankPorts",
    T_top=Var("degC", "temperature of the water leaving at the top", kind="port"),
    m_top_out=Var("kg/s", "flow leaving at the top", kind="port"),
    T_bottom=Var("degC", "temperature of the water leaving at the bottom", kind="port"),
    m_bot_out=Var("kg/s", "flow leaving at the bottom", kind="port"),
)


class StorageTank(Model):
    r"""Stratified hot-water storage tank in N layers with charge and discharge flows.

    ``n_layers`` layers, top first (time unit: s).

    A flow :math:`\dot m_{top}` enters the top layer and leaves the bottom one (charging);
    :math:`\dot m_{bot}` enters the bottom and leaves the top (discharging into a load).
    Layer :math:`i` (mass :math:`M/N`, top first) exchanges heat by both flows (upwind),
    conduction between neighbours (:math:`k A / \Delta z` with an effective conductivity
    including the wall), loss through its share of the jacket, and buoyant mixing when it is
    warmer than the layer above (an inversion, mixed away at the rate
    :math:`G_{mix}\,\max(T_{i} - T_{i-1}, 0)`, the maximum smoothed over 1 mK) — the
    multi-node model of Kleinbach, Beckman
    & Klein (1993, *Solar Energy* 50, 155) in its plug-flow form:

    .. math::

        \tfrac{M}{N} c_p \dot T_i = \dot m_{top} c_p (T_{i-1} - T_i)
        + \dot m_{bot} c_p (T_{i+1} - T_i) + G_{cond}(T_{i-1} - 2T_i + T_{i+1})
        - \tfrac{UA}{N} (T_i - T_{amb}) + \text{mixing},

    with :math:`T_0 = T_{top,in}`, :math:`T_{N+1} = T_{bot,in}` for the flows and no
    conduction through the ends.

    Defaults: a 2 m3 buffer tank 2 m high (D = 1.13 m), jacket UA 3 W/K (~0.4 W/(m2 K) over
    7.4 m2, 100 mm of mineral wool), effective conductivity 1.5 W/(m K) (water 0.65 plus
    the steel wall's share: Kleinbach et al. 1993).
    """

    M: float = param(2000.0 * RHO_W / 1000.0, units="kg", bounds=(0.0, None), strict=True,
                     doc="water mass")
    H: float = param(2.0, units="m", bounds=(0.0, None), strict=True, doc="tank height")
    UA: float = param(3.0, units="W/K", bounds=(0.0, None), doc="jacket heat-loss conductance")
    k_eff: float = param(1.5, units="W/(m K)", bounds=(0.0, None),
                         doc="effective vertical conductivity (water and wall)")
    G_mix: float = param(1e4, units="W/K", bounds=(0.0, None),
                         doc="conductance of buoyant mixing across an inversion")
    cp: float = param(CP_W, units="J/(kg K)", bounds=(0.0, None), strict=True,
                      doc="water isobaric heat capacity")
    n_layers: int = dimension(10, doc="layers from top to bottom")

    name: ClassVar[str] = "storage_tank"
    State: ClassVar[type] = TankState
    Inputs: ClassVar[type] = TankInputs
    Outputs: ClassVar[type] = TankOutputs
    Ports: ClassVar[type] = TankPorts
    time_unit: ClassVar[str] = "s"

    def _exchange(self, x: Any, ops: Any) -> tuple[Any, Any]:
        """Heat into each layer from the one above and from the one below [W] by
        conduction and buoyant mixing (none through the ends)."""
        area = self.M / RHO_W / self.H
        g = self.k_eff * area / (self.H / self.n_layers)
        above = ops.shift(x.T, 1, 0.0)
        below = ops.shift(x.T, -1, 0.0)
        has_above = ops.shift(ops.full(self.n_layers, 1.0), 1, 0.0)
        has_below = ops.shift(ops.full(self.n_layers, 1.0), -1, 0.0)
        # an inversion (a layer warmer than the one above) mixes the two; the smooth
        # positive part (width 1 mK) keeps the equations differentiable for optimisers and
        # moves at most G_mix * 0.5 mK (5 W) between equal layers
        from_above = has_above * (g * (above - x.T)
                                  - self.G_mix * ops.smooth_max(x.T - above, 0.0, 1e-3))
        from_below = has_below * (g * (below - x.T)
                                  + self.G_mix * ops.smooth_max(below - x.T, 0.0, 1e-3))
        return from_above, from_below

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the layer temperatures [K/s]."""
        n = self.n_layers
        above, below = self._exchange(x, ops)
        flows = (u.m_top * self.cp * (ops.shift(x.T, 1, u.T_top_in) - x.T)
                 + u.m_bot * self.cp * (ops.shift(x.T, -1, u.T_bot_in) - x.T))
        loss = self.UA / n * (x.T - u.T_amb)
        return TankState(T=(flows + above + below - loss) / (self.M / n * self.cp))

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """A temperature sensor in every layer [°C]."""
        return TankOutputs(T_meas=x.T)

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """The water leaving at the top (the discharge flow) and at the bottom (the charge
        flow) [°C, kg/s]."""
        return TankPorts(T_top=ops.index(x.T, 0), m_top_out=u.m_bot,
                         T_bottom=ops.index(x.T, -1), m_bot_out=u.m_top)

    def stored_energy(self, x: Any, ops: Any) -> Any:
        """Heat held by the water relative to 0 °C [J]."""
        return self.M / self.n_layers * self.cp * ops.sum(x.T)

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Heat advected in by each flow and lost through the jacket [W]."""
        return {"charge": u.m_top * self.cp * (u.T_top_in - ops.index(x.T, -1)),
                "discharge": u.m_bot * self.cp * (u.T_bot_in - ops.index(x.T, 0)),
                "jacket": -self.UA / self.n_layers * ops.sum(x.T - u.T_amb)}
