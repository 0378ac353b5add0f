"""Unit models and composed systems (``processtwin.models``): pure physics, parameters
with units and defaults.

Files here import :mod:`processtwin.model` (and, for composed systems,
:mod:`processtwin.system`) only — never jax, casadi, pyomo or numpy.
"""

from collections.abc import Callable

from processtwin.model import Model

from .bioreactor import Bioreactor, BioreactorInputs, BioreactorOutputs, BioreactorState
from .building import Building
from .building_hp import HeatPumpBuilding
from .building_iso import Building5R1C
from .district_heating import district_heating
from .double_integrator import DoubleIntegrator
from .feed_vessel import FeedVessel
from .hvac import AirHandlingUnit, Chiller, HeatPump, HydronicEmitters
from .lti import DiscreteTripleTank
from .plant import fed_batch_plant
from .tank_cascade import TankCascade
from .thermal import CounterflowHeatExchanger, Pipe, StorageTank

__all__ = [
    "REGISTRY",
    "AirHandlingUnit",
    "Bioreactor",
    "BioreactorInputs",
    "BioreactorOutputs",
    "BioreactorState",
    "Building",
    "Building5R1C",
    "Chiller",
    "CounterflowHeatExchanger",
    "DiscreteTripleTank",
    "DoubleIntegrator",
    "FeedVessel",
    "HeatPump",
    "HeatPumpBuilding",
    "HydronicEmitters",
    "Pipe",
    "StorageTank",
    "TankCascade",
    "district_heating",
    "fed_batch_plant",
]

#: Models by their command-line name: zero-argument callables returning a model instance
#: with default parameters (a unit's class, or the factory of a composed system).
REGISTRY: dict[str, Callable[[], Model]] = {
    **{cls.name: cls for cls in (Bioreactor, DoubleIntegrator, TankCascade, FeedVessel,
                                 DiscreteTripleTank, Pipe, CounterflowHeatExchanger,
                                 StorageTank, HeatPump, Chiller, HydronicEmitters,
                                 AirHandlingUnit, Building, Building5R1C,
                                 HeatPumpBuilding)},
    "fed_batch_plant": fed_batch_plant,
    "district_heating": district_heating,
}
