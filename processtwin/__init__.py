"""processtwin: physics-based process digital twins.

Model (first-principles units), simulate (JAX/diffrax), estimate and optimise. Importing
the package has no global side effects: entry points call :func:`configure` (float64 and
single-kernel small loops on the CPU) before their first JAX computation.
"""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, ModelError, SolverError  # noqa: E402
from .io import load, save  # noqa: E402
from .model import Model, Var, param, variables  # noqa: E402
from .runtime import SMALL_LOOP_BYTES, configure  # noqa: E402
from .signals import Signal, constant, hold, linear  # noqa: E402
from .simulate import SimulationResult, ensemble, simulate, trajectory  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "Model",
    "ModelError",
    "SMALL_LOOP_BYTES",
    "SimulationResult",
    "Signal",
    "SolverError",
    "Var",
    "__version__",
    "configure",
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
