"""Golden-batch recipes: the feed profile that maximises a batch's outcome."""

from __future__ import annotations

from typing import Any

from processtwin.errors import ConfigError, suggest
from processtwin.model import Model

from .ocp import OCP, OCPResult

__all__ = ["OBJECTIVES", "golden_batch", "outcome_value"]

#: Named batch objectives (to maximise) of a fed-batch bioreactor state at the end.
OBJECTIVES = {
    "product": ("final product concentration P(T) [g/L]", lambda x: x.P),
    "product_mass": ("final product mass P(T) V(T) [g]", lambda x: x.P * x.V / 1000.0),
}


def golden_batch(model: Model, *, horizon: float = 150.0, intervals: int = 50,
                 objective: str = "product", x0: dict[str, float] | None = None,
                 F_max: float = 0.2, X_max: float | None = 3.7, V_max: float | None = None,
                 S_max: float | None = None, oxygen_limit: bool = True,
                 du_weight: float = 1.0, method: str = "collocation",
                 tol: float = 1e-10) -> OCPResult:
    """Optimise the feed profile of a whole batch.

    Parameters
    ----------
    model : Model
        A fed-batch model with states ``X, S, P, V``, manipulated input ``F`` and output
        ``OUR`` (e.g. :class:`processtwin.models.Bioreactor`).
    horizon : float
        Batch length [model time unit, h for the bioreactor] (the OCP's ``horizon``).
    intervals : int
        Control intervals (the feed is constant on each).
    objective : {"product", "product_mass"}
        Maximise the final product concentration (as in Srinivasan et al. 2003 and do-mpc's
        ``batch_reactor``) or the final product mass. The product-mass problem has several
        local optima (feeding late trades dilution for biomass mass); IPOPT returns one.
    x0 : dict, optional
        Initial state (defaults of the model otherwise).
    F_max : float
        Pump capacity [L/h].
    X_max, V_max, S_max : float, optional
        Path limits: biomass [g/L] (broth viscosity / oxygen transfer), substrate [g/L]
        (overflow metabolism), final volume [L] (vessel working volume).
    oxygen_limit : bool
        Constrain ``OUR ≤ OTR_max`` on every node (vessel oxygen transfer).
    du_weight : float
        Penalty on squared feed moves [(L/h)⁻²]: regularises the singular arc.
    method : {"collocation", "shooting"}
        Transcription.
    tol : float
        IPOPT's convergence tolerance on the scaled NLP error [-] (``ipopt.tol``).

    Returns
    -------
    OCPResult
        ``plan`` is an ``xarray.Dataset`` with the recipe ``F`` (hold) and the predicted
        states and outputs; ``objective`` is the minimised value (negated outcome plus the
        move penalty).
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective `{objective}`" + suggest(objective, OBJECTIVES))
    _, outcome = OBJECTIVES[objective]
    ocp = OCP(model, horizon, intervals, controls=("F",), method=method)
    ocp.initial_state(**(x0 or {}))
    ocp.bound_input("F", 0.0, F_max)
    if X_max is not None:
        ocp.constrain("X", upper=X_max)
    if S_max is not None:
        ocp.constrain("S", upper=S_max)
    if V_max is not None:
        ocp.constrain("V", upper=V_max, terminal=True)
    if oxygen_limit:
        ocp.constrain("OUR", upper=float(model.OTR_max))
    ocp.minimise(mayer=lambda x: -outcome(x), du_weight={"F": du_weight})
    res = ocp.solve(tol=tol)
    res.plan.attrs.update(objective=objective, objective_doc=OBJECTIVES[objective][0])
    return res


def outcome_value(objective: str, plan: Any) -> float:
    """The batch outcome of a plan (or simulation Dataset) at its final time.

    Parameters
    ----------
    objective : {"product", "product_mass"}
        Name of the outcome in :data:`OBJECTIVES`.
    plan : xarray.Dataset
        Trajectory over ``time`` with the fed-batch states (``P`` [g/L] and, for
        ``"product_mass"``, ``V`` [L]): an :class:`OCPResult` plan or the ``.data`` of a
        simulation.

    Returns
    -------
    float
        The outcome at the last time, in the units of :data:`OBJECTIVES` (``"product"``:
        [g/L], ``"product_mass"``: [g]).
    """
    last = plan.isel(time=-1)
    return float(OBJECTIVES[objective][1](last))
