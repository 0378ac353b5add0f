"""Unit models (``processtwin.models``): pure physics, parameters with units and defaults.

Files here import :mod:`processtwin.model` only — never jax, casadi, pyomo or numpy.
"""

from .bioreactor import Bioreactor, BioreactorInputs, BioreactorOutputs, BioreactorState

__all__ = [
    "REGISTRY",
    "Bioreactor",
    "BioreactorInputs",
    "BioreactorOutputs",
    "BioreactorState",
]

#: Models by their command-line name.
REGISTRY = {cls.name: cls for cls in (Bioreactor,)}
