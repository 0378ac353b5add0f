"""State and parameter estimation: continuous-discrete EKF, RTS smoother, live filtering."""

from .api import ExtendedKalmanFilter, LiveFilter
from .core import FLAGS, FilterSpec, FilterState, Record, ekf_step, init_state, run, transition

__all__ = [
    "FLAGS",
    "ExtendedKalmanFilter",
    "FilterSpec",
    "FilterState",
    "LiveFilter",
    "Record",
    "ekf_step",
    "init_state",
    "run",
    "transition",
]
