"""processtwin: physics-based process digital twins.

Model (first-principles units), simulate (JAX/diffrax), estimate and optimise. Importing
the package has no global side effects: float64 is enabled by the entry points that need it
(``jax.config.update("jax_enable_x64", True)``).
"""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, ModelError, SolverError  # noqa: E402
from .io import load, save  # noqa: E402
from .model import Model, Var, param, variables  # noqa: E402
from .signals import Signal, constant, hold, linear  # noqa: E402
from .simulate import SimulationResult, ensemble, simulate, trajectory  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "Model",
    "ModelError",
    "SimulationResult",
    "Signal",
    "SolverError",
    "Var",
    "__version__",
    "constant",
    "ensemble",
    "hold",
    "linear",
    "load",
    "param",
    "save",
    "simulate",
    "trajectory",
    "variables",
]
