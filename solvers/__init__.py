"""Optimiser back-ends (``processtwin.solvers``): CasADi transcription and IPOPT.

CasADi's own ``highs`` plugin is never loaded here (it clashes with highspy).
"""

from .golden import OBJECTIVES, golden_batch, outcome_value
from .mhe import LiveMHE, MovingHorizonEstimator
from .nmpc import BatchNMPC, Recommendation
from .ocp import OCP, OCPResult

__all__ = ["OBJECTIVES", "OCP", "BatchNMPC", "LiveMHE", "MovingHorizonEstimator", "OCPResult",
           "Recommendation", "golden_batch", "outcome_value"]
