"""State and parameter estimation: continuous-discrete EKF, RTS smoother, live filtering."""

from .api import EstimationResult, ExtendedKalmanFilter, UnscentedKalmanFilter
from .core import FLAGS, FilterSpec, FilterState, Record, ekf_step, init_state, run, transition
from .live import LiveFilter
from .observability import ObservabilityReport, observability
from .ukf import run_ukf, ukf_step

__all__ = [
    "FLAGS",
    "EstimationResult",
    "ExtendedKalmanFilter",
    "FilterSpec",
    "FilterState",
    "LiveFilter",
    "ObservabilityReport",
    "UnscentedKalmanFilter",
    "Record",
    "ekf_step",
    "init_state",
    "observability",
    "run",
    "run_ukf",
    "transition",
    "ukf_step",
]
