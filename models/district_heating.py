"""A district-heating system twin composed by ports: heat-pump plant → supply pipe →
substation heat exchanger → building emitters → return pipe.

Only :mod:`processtwin.model` and :mod:`processtwin.system` are imported here (the
composition is structure, not equations).
"""

from __future__ import annotations

from processtwin.system import System

from .building import Building
from .hvac import HeatPump, HydronicEmitters
from .thermal import CounterflowHeatExchanger, Pipe

__all__ = ["district_heating"]

#: The default block of flats: three zones (floor areas in m2) in a row.
ZONES = (120.0, 80.0, 100.0)
WALLS = ((0, 1, 25.0), (1, 2, 25.0))


def district_heating(*, plant: HeatPump | None = None, supply: Pipe | None = None,
                     substation: CounterflowHeatExchanger | None = None,
                     emitters: HydronicEmitters | None = None, building: Building | None = None,
                     return_pipe: Pipe | None = None) -> System:
    """A small district-heating network serving one building, as one system named
    ``"district_heating"`` (time unit: s).

    The plant's heat pump heats the primary water (``plant.y`` modulation, ``plant.m_w``
    pump flow); the supply pipe carries it to the substation's plate exchanger and the
    return pipe brings it back to the condenser. On the secondary side the exchanger feeds
    the building's radiators, one per zone (``emitters.m_w`` valves), whose heat goes into
    the zones and whose mixed return comes back to the exchanger. Free inputs are the
    modulation, the two flows, the outdoor, ground and source temperatures, irradiance and
    occupancy; the states are all units' (``supply_pipe.T``, ``building.T_i``, …).

    Defaults: a 40 kW air-source plant (:class:`~processtwin.models.HeatPump` scaled,
    200 kg of water in the plant), 300 m of DN50 pre-insulated pipe each way (54.5 mm
    inside, 0.2 W/(m K)), a 4 m2 plate exchanger, and a three-zone, 300 m2 building with
    radiators sized to the zones (2 kW per 40 m2); each unit's own defaults otherwise.

    Parameters
    ----------
    plant, supply, substation, emitters, building, return_pipe : optional
        Units replacing the defaults (the emitters must have as many zones as the building).

    Returns
    -------
    System
        The composed network; its variables are addressed as ``"unit.var"``.
    """
    pipe = dict(L=300.0, D=0.0545, U=0.2, c_w=2000.0, n_cells=15)
    building = building or Building(n_zones=len(ZONES), floor_area=ZONES, adjacency=WALLS)
    areas = building.areas()["floor"]
    units = {
        "plant": plant or HeatPump(Q_nom=40e3, M=200.0),
        "supply_pipe": supply or Pipe(**pipe),
        "substation": substation or CounterflowHeatExchanger(A=4.0, M_h=3.0, M_c=3.0),
        "emitters": emitters or HydronicEmitters(n_zones=building.n_zones,
                                                 scale=tuple(a / 40.0 for a in areas)),
        "building": building,
        "return_pipe": return_pipe or Pipe(**pipe),
    }
    return System(units, [
        ("plant.T_sup", "supply_pipe.T_in"), ("plant.m_w", "supply_pipe.m_dot"),
        ("supply_pipe.T_out", "substation.T_h_in"), ("supply_pipe.m_dot", "substation.m_h"),
        ("substation.T_h_out", "return_pipe.T_in"), ("substation.m_h", "return_pipe.m_dot"),
        ("return_pipe.T_out", "plant.T_ret"),
        ("substation.T_c_out", "emitters.T_sup"),
        ("emitters.T_ret", "substation.T_c_in"), ("emitters.m_w", "substation.m_c"),
        ("emitters.Q", "building.Q_hvac"), ("building.T_air", "emitters.T_room"),
    ], name="district_heating")
