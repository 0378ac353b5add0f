"""Optimiser back-ends (``processtwin.solvers``): CasADi transcription and IPOPT.

CasADi's own ``highs`` plugin is never loaded here (it clashes with highspy).
"""

from .golden import apply_limits, golden_batch, outcome_value, resolve_objective
from .mhe import LiveMHE, MovingHorizonEstimator
from .nmpc import BatchNMPC, Recommendation
from .ocp import OCP, OCPResult

__all__ = ["OCP", "BatchNMPC", "LiveMHE", "MovingHorizonEstimator", "OCPResult",
           "Recommendation", "apply_limits", "golden_batch", "outcome_value",
           "resolve_objective"]
