"""Unit models (``processtwin.models``): pure physics, parameters with units and defaults.

Files here import :mod:`processtwin.model` only — never jax, casadi, pyomo or numpy.
"""

from .bioreactor import Bioreactor, BioreactorInputs, BioreactorOutputs, BioreactorState
from .double_integrator import DoubleIntegrator

__all__ = [
    "REGISTRY",
    "Bioreactor",
    "BioreactorInputs",
    "BioreactorOutputs",
    "BioreactorState",
    "DoubleIntegrator",
]

#: Models by their command-line name.
REGISTRY = {cls.name: cls for cls in (Bioreactor, DoubleIntegrator)}
