"""What a solver's return status means: one vocabulary for every NLP in ``solvers/``.

IPOPT (and fatrop through CasADi's unified status) report dozens of codes. A user needs
five: the solve **converged**; it stopped at an iteration or time **limit** (the problem may
well be feasible); it hit a **numerical** failure (NaN, step computation, restoration
failure); the problem is **infeasible** — claimed only after a softened re-solve of the same
problem needs slack; or it **failed** for another reason.
"""

from __future__ import annotations

__all__ = ["CONVERGED", "classify"]

CONVERGED = ("Solve_Succeeded", "Solved_To_Acceptable_Level")

_IPOPT = {
    "Solve_Succeeded": "converged", "Solved_To_Acceptable_Level": "converged",
    "Maximum_Iterations_Exceeded": "limit", "Maximum_CpuTime_Exceeded": "limit",
    "Maximum_WallTime_Exceeded": "limit", "User_Requested_Stop": "limit",
    # IPOPT's own "infeasible" is local and unverified: a candidate, checked by the caller
    "Infeasible_Problem_Detected": "infeasible?", "Restoration_Failed": "infeasible?",
    "Invalid_Number_Detected": "numerical", "Error_In_Step_Computation": "numerical",
    "Search_Direction_Becomes_Too_Small": "numerical", "Diverging_Iterates": "numerical",
    "NonIpopt_Exception_Thrown": "numerical", "Unrecoverable_Exception": "numerical",
    "Insufficient_Memory": "failed", "Internal_Error": "failed",
    "Not_Enough_Degrees_Of_Freedom": "failed", "Invalid_Problem_Definition": "failed",
    "Invalid_Option": "failed",
}

_UNIFIED = {"SOLVER_RET_SUCCESS": "converged", "SOLVER_RET_LIMITED": "limit",
            "SOLVER_RET_INFEASIBLE": "infeasible?", "SOLVER_RET_NAN": "numerical",
            "SOLVER_RET_EXCEPTION": "numerical"}


def classify(stats: dict) -> str:
    """The class of a CasADi ``nlpsol`` outcome from its ``stats()``.

    Parameters
    ----------
    stats : dict
        ``solver.stats()`` after a solve (``return_status``, ``unified_return_status``,
        ``success``).

    Returns
    -------
    str
        ``"converged"``, ``"limit"``, ``"numerical"``, ``"failed"`` or ``"infeasible?"``
        (the solver's own claim of infeasibility, still to be verified).
    """
    raw = str(stats.get("return_status", ""))
    if raw in _IPOPT:
        return _IPOPT[raw]
    if stats.get("success"):
        return "converged"
    return _UNIFIED.get(str(stats.get("unified_return_status", "")), "failed")
