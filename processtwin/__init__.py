"""processtwin: physics-based process digital twins.

Model (first-principles units), simulate (JAX/diffrax), estimate and optimise. Importing
the package has no global side effects: entry points call :func:`configure` (float64 and
single-kernel small loops on the CPU) before their first JAX computation.
"""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, ModelError, SolverError  # noqa: E402
from .io import load, save  # noqa: E402
from .model import Model, Var, dimension, param, variables  # noqa: E402
from .registry import available_models, load_model  # noqa: E402
from .runtime import SMALL_LOOP_BYTES, configure  # noqa: E402
from .signals import Signal, constant, hold, linear  # noqa: E402
from .simulate import SimulationResult, ensemble, simulate, trajectory  # noqa: E402
from .system import System  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "Model",
    "ModelError",
    "SMALL_LOOP_BYTES",
    "SimulationResult",
    "Signal",
    "SolverError",
    "System",
    "Var",
    "__version__",
    "available_models",
    "configure",
    "constant",
    "dimension",
    "ensemble",
    "hold",
    "linear",
    "load_model",
    "load",
    "param",
    "save",
    "simulate",
    "trajectory",
    "variables",
]
