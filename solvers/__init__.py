"""Optimiser back-ends (``processtwin.solvers``): CasADi transcription and IPOPT for
recipes, NMPC and MHE; Pyomo and HiGHS for the economic MPC of buildings.

CasADi's own ``highs`` plugin is never loaded here (it clashes with highspy).
"""

from .empc import Comfort, EconomicMPC, EMPCPlan, Staging
from .golden import apply_limits, golden_batch, outcome_value, resolve_objective
from .mhe import LiveMHE, MovingHorizonEstimator
from .nmpc import BatchNMPC, Recommendation
from .ocp import OCP, OCPResult

__all__ = ["OCP", "BatchNMPC", "Comfort", "EMPCPlan", "EconomicMPC", "LiveMHE",
           "MovingHorizonEstimator", "OCPResult", "Recommendation", "Staging", "apply_limits",
           "golden_batch", "outcome_value", "resolve_objective"]
