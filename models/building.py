"""Multi-zone building: a grey-box thermal network of air and envelope nodes per zone
(time unit: s).

:class:`AbstractBuilding` holds what building models share: the zones, their floor, window
and ground areas, the internal walls between them, and the inputs, outputs and ports — so
one building model replaces another in a system. :class:`Building` is the TiTe grey box;
:class:`~models.building_iso.Building5R1C` the ISO 13790 5R1C network.

Only :mod:`processtwin.model` is imported here (backend-free equations).
"""

from __future__ import annotations

from typing import Any, ClassVar

from processtwin.model import Model, ModelError, Var, dimension, param, setting, variables

__all__ = ["AbstractBuilding", "Building"]

BuildingState = variables(
    "BuildingState",
    T_i=Var("degC", "indoor air and interior of each zone", default=20.0, shape="n_zones"),
    T_e=Var("degC", "building envelope (thermal mass) of each zone", default=15.0,
            shape="n_zones"),
)
BuildingInputs = variables(
    "BuildingInputs",
    Q_hvac=Var("W", "heat delivered to each zone by the HVAC (negative: cooling)",
               default=0.0, kind="manipulated", shape="n_zones"),
    T_out=Var("degC", "outdoor air temperature", default=0.0, kind="disturbance"),
    T_ground=Var("degC", "ground temperature under the slab", default=10.0,
                 kind="disturbance"),
    I_sol=Var("W/m2", "solar irradiance on each zone's windows (their orientation)",
              default=0.0, bounds=(0.0, None), kind="disturbance", shape="n_zones"),
    occupancy=Var("-", "occupancy (fraction of full), for the internal gains", default=0.5,
                  bounds=(0.0, 1.0), kind="disturbance"),
)
BuildingOutputs = variables(
    "BuildingOutputs",
    T_air=Var("degC", "room temperature sensor of each zone", kind="online", noise=0.1,
              shape="n_zones"),
)
BuildingPorts = variables(
    "BuildingPorts",
    T_air=Var("degC", "air temperature of each zone", kind="port", shape="n_zones"),
)


class AbstractBuilding(Model):
    """Zones of a building: their count, geometry and the internal walls between them.

    What every building model shares (Bacher & Madsen (2011) TiTe, ISO 13790:2008 5R1C):
    settings per zone (tuples; empty: the defaults) ``floor_area`` [m2] (default 100),
    ``window_area`` [m2] (default 15 % of the floor), ``ground_area`` [m2] (default the
    floor: single storey) and ``adjacency`` [(zone, zone, m2), ...]; the parameters of
    windows (U 1.3 W/(m2 K), g 0.6: double low-e), ventilation and infiltration (0.5 air
    changes per hour at 2.7 m storey height), slab (0.3 W/(m2 K)), internal walls
    (1.5 W/(m2 K)) and internal gains (2 W/m2 plus 6 W/m2 at full occupancy, ISO 17772-1
    residential); and the inputs, outputs and ports, so that one building model replaces
    another in a system.
    """

    n_zones: int = dimension(1, doc="thermal zones")
    floor_area: tuple = setting((), units="m2", doc="floor area of each zone (default 100)")
    window_area: tuple = setting((), units="m2",
                                 doc="window area of each zone (default 15 % of the floor)")
    ground_area: tuple = setting((), units="m2",
                                 doc="slab area of each zone (default its floor)")
    adjacency: tuple = setting((), units="m2",
                               doc="internal walls as (zone, zone, area) triples")
    # what every zone model has: windows, air change, storey, slab, internal walls, gains
    U_win: float = param(1.3, units="W/(m2 K)", bounds=(0.0, None), doc="window U-value")
    g: float = param(0.6, units="-", bounds=(0.0, 1.0), doc="window solar transmittance")
    n_ach: float = param(0.5, units="1/h", bounds=(0.0, None),
                         doc="ventilation and infiltration air changes")
    height: float = param(2.7, units="m", bounds=(0.0, None), strict=True,
                          doc="storey height")
    U_g: float = param(0.3, units="W/(m2 K)", bounds=(0.0, None), doc="slab-on-ground U-value")
    U_int: float = param(1.5, units="W/(m2 K)", bounds=(0.0, None),
                         doc="internal wall U-value")
    q_base: float = param(2.0, units="W/m2", bounds=(0.0, None), doc="base internal gains")
    q_occ: float = param(6.0, units="W/m2", bounds=(0.0, None),
                         doc="internal gains at full occupancy")
    rho_a: float = param(1.2, units="kg/m3", bounds=(0.0, None), strict=True,
                         doc="air density")
    cp_a: float = param(1006.0, units="J/(kg K)", bounds=(0.0, None), strict=True,
                        doc="air isobaric heat capacity")

    Inputs: ClassVar[type] = BuildingInputs
    Outputs: ClassVar[type] = BuildingOutputs
    Ports: ClassVar[type] = BuildingPorts
    time_unit: ClassVar[str] = "s"

    def __check_init__(self) -> None:
        n = self.n_zones
        for key in ("floor_area", "window_area", "ground_area"):
            v = getattr(self, key)
            if v and len(v) != n:
                raise ModelError(f"`{self.name}`: `{key}` has {len(v)} values but the "
                                 f"building has {n} zones.")
            if v and any(not float(a) >= 0 for a in v):
                raise ModelError(f"`{self.name}`: `{key}` must be areas ≥ 0 [m2], got {v!r}.")
        if self.floor_area and any(not float(a) > 0 for a in self.floor_area):
            raise ModelError(f"`{self.name}`: every `floor_area` must be > 0 [m2], got "
                             f"{self.floor_area!r}.")
        for k, wall in enumerate(self.adjacency):
            if len(wall) != 3:
                raise ModelError(f"`{self.name}`: adjacency entry {k} must be (zone, zone, "
                                 f"area), got {wall!r}.")
            i, j, area = wall
            for z in (i, j):
                if isinstance(z, bool) or not isinstance(z, int) or not 0 <= z < n:
                    raise ModelError(f"`{self.name}`: adjacency entry {k} names zone {z!r}; "
                                     f"the building has zones 0 … {n - 1}.")
            if i == j or not float(area) > 0:
                raise ModelError(f"`{self.name}`: adjacency entry {k} must join two "
                                 f"different zones by an area > 0 [m2], got {wall!r}.")

    # ---- geometry (static) ------------------------------------------------------------
    def areas(self) -> dict[str, tuple[float, ...]]:
        """Floor, window and ground areas of each zone [m2], defaults filled in."""
        n = self.n_zones
        floor = tuple(float(a) for a in self.floor_area) or (100.0,) * n
        window = tuple(float(a) for a in self.window_area) or tuple(0.15 * a for a in floor)
        ground = tuple(float(a) for a in self.ground_area) or floor
        return {"floor": floor, "window": window, "ground": ground}

    def coupling(self) -> list[list[float]]:
        """The internal-wall area Laplacian (n × n) [m2]: ``(L T)_i = Σ_j A_ij (T_j - T_i)``."""
        n = self.n_zones
        L = [[0.0] * n for _ in range(n)]
        for i, j, area in self.adjacency:
            L[i][j] += float(area)
            L[j][i] += float(area)
            L[i][i] -= float(area)
            L[j][j] -= float(area)
        return L

    def _vec(self, values: tuple[float, ...], ops: Any) -> Any:
        return ops.concat(list(values))


class Building(AbstractBuilding):
    r"""Multi-zone building: an air and an envelope node per zone, coupled by internal walls.

    ``n_zones`` zones, each the TiTe grey-box of Bacher & Madsen (2011), *Energy Build.*
    43, 1511 (time unit: s).

    Zone :math:`i` (floor area :math:`A_i`, windows :math:`A_{w,i}`, ground contact
    :math:`A_{g,i}`):

    .. math::

        C_i \dot T_{i} &= H_{ie}(T_{e} - T_{i}) + (H_{win} + H_{ve})(T_{out} - T_{i})
            + \sum_j H_{ij}(T_{j} - T_{i}) + g A_{w} I_{sol} + Q_{int} + Q_{hvac}, \\
        C_e \dot T_{e} &= H_{ie}(T_{i} - T_{e}) + H_{ea}(T_{out} - T_{e})
            + H_{g}(T_{ground} - T_{e}),

    with capacities and conductances per m2 of floor (:math:`C_i = c_i A_i`,
    :math:`H_{ie} = h_{ie} A_i`, :math:`H_{ea} = h_{ea} A_i`), windows
    :math:`H_{win} = U_{win} A_w`, ventilation and infiltration
    :math:`H_{ve} = \rho_a c_a\,n\,h\,A_i / 3600`, ground :math:`H_g = U_g A_g`, internal
    walls :math:`H_{ij} = U_{int} A_{ij}` from the ``adjacency`` list
    :math:`(i, j, A_{ij})`, and internal gains
    :math:`Q_{int} = A_i (q_{base} + q_{occ}\,\mathrm{occupancy})`. Any such network is
    linear: its steady state solves :math:`G\,T = q`, and a zone's step response is a sum of
    exponentials.

    Settings (per zone, tuples; empty: the defaults below): ``floor_area`` [m2],
    ``window_area`` [m2] (default 15 % of the floor), ``ground_area`` [m2] (default the
    floor: single storey), ``adjacency`` [(zone, zone, m2), ...].

    Defaults (a medium-weight dwelling, 100 m2 per zone): interior capacity 15 kJ/(m2 K)
    (air and furnishings); envelope 165 kJ/(m2 K) (ISO 13790:2008, Table 12, "medium");
    air–mass coupling 22.75 W/(m2 K) (ISO 13790's h_ms = 9.1 W/(m2 K) over A_m = 2.5 A);
    opaque envelope 0.6 W/(m2 K) of floor; windows U 1.3 W/(m2 K), g 0.6 (double low-e);
    0.5 air changes per hour at 2.7 m storey height; slab 0.3 W/(m2 K); internal walls
    1.5 W/(m2 K); internal gains 2 W/m2 plus 6 W/m2 at full occupancy (ISO 17772-1
    residential).
    """

    c_i: float = param(15e3, units="J/(m2 K)", bounds=(0.0, None), strict=True,
                       doc="interior heat capacity per m2 of floor")
    c_e: float = param(165e3, units="J/(m2 K)", bounds=(0.0, None), strict=True,
                       doc="envelope heat capacity per m2 of floor")
    h_ie: float = param(22.75, units="W/(m2 K)", bounds=(0.0, None),
                        doc="air–envelope conductance per m2 of floor")
    h_ea: float = param(0.6, units="W/(m2 K)", bounds=(0.0, None),
                        doc="envelope–outdoor conductance per m2 of floor")
    name: ClassVar[str] = "building"
    State: ClassVar[type] = BuildingState

    def _conductances(self, ops: Any) -> dict[str, Any]:
        a = self.areas()
        floor = self._vec(a["floor"], ops)
        return {
            "floor": floor,
            "C_i": self.c_i * floor, "C_e": self.c_e * floor,
            "H_ie": self.h_ie * floor, "H_ea": self.h_ea * floor,
            "H_out": self.U_win * self._vec(a["window"], ops)
            + self.rho_a * self.cp_a * self.n_ach / 3600.0 * self.height * floor,
            "H_g": self.U_g * self._vec(a["ground"], ops),
            "solar": self.g * self._vec(a["window"], ops),
        }

    def _flows(self, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Every heat flow [W, vectors over zones]: into the air node and into the
        envelope node."""
        c = self._conductances(ops)
        internal = (self.U_int * ops.matvec(self.coupling(), x.T_i) if self.adjacency
                    else 0.0 * x.T_i)
        return {
            "air_envelope": c["H_ie"] * (x.T_e - x.T_i),
            "air_outdoor": c["H_out"] * (u.T_out - x.T_i),
            "internal_walls": internal,
            "solar": c["solar"] * u.I_sol,
            "gains": c["floor"] * (self.q_base + self.q_occ * u.occupancy),
            "hvac": u.Q_hvac,
            "envelope_outdoor": c["H_ea"] * (u.T_out - x.T_e),
            "ground": c["H_g"] * (u.T_ground - x.T_e),
        }

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the air and envelope temperatures [K/s]."""
        c = self._conductances(ops)
        f = self._flows(x, u, ops)
        air = (f["air_envelope"] + f["air_outdoor"] + f["internal_walls"] + f["solar"]
               + f["gains"] + f["hvac"])
        envelope = -f["air_envelope"] + f["envelope_outdoor"] + f["ground"]
        return BuildingState(T_i=air / c["C_i"], T_e=envelope / c["C_e"])

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Room temperature of each zone [°C]."""
        return BuildingOutputs(T_air=x.T_i)

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Air temperature of each zone [°C], for its emitters."""
        return BuildingPorts(T_air=x.T_i)

    def stored_energy(self, x: Any, ops: Any) -> Any:
        """Heat held by air, interior and envelope relative to 0 °C [J]."""
        c = self._conductances(ops)
        return ops.sum(c["C_i"] * x.T_i) + ops.sum(c["C_e"] * x.T_e)

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Heat flows into the building [W], summed over zones (internal exchanges
        cancel)."""
        f = self._flows(x, u, ops)
        return {k: ops.sum(f[k]) for k in ("air_outdoor", "solar", "gains", "hvac",
                                           "envelope_outdoor", "ground")}
