"""Recipes: the control profile over a whole batch (or horizon) that optimises an outcome,
for any model — the objective and the operating limits are data the model declares
(:class:`~processtwin.goals.Objective`, :class:`~processtwin.goals.Limit`) or the user
gives, never names known to the solver."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from processtwin.errors import ConfigError, suggest
from processtwin.goals import Limit, Objective, parse_objective
from processtwin.model import Model
from processtwin.ops import casadi_ops, numpy_ops

from .ocp import OCP, OCPResult

__all__ = ["apply_limits", "golden_batch", "outcome_value", "resolve_objective"]


def resolve_objective(model: Model, objective: str | Objective | None) -> Objective:
    """The objective meant by a name the model declares, a text expression or an
    :class:`Objective`.

    Parameters
    ----------
    model : Model
        The model.
    objective : str, Objective or None
        A declared name (``processtwin models`` lists them), a text such as
        ``"max P*V"`` (see :func:`processtwin.goals.parse_objective`), an
        :class:`Objective`, or ``None`` for the model's first declared objective.

    Returns
    -------
    Objective
    """
    if isinstance(objective, Objective):
        return objective
    declared = dict(type(model).objectives)
    if objective is None:
        if not declared:
            raise ConfigError(f"model `{model.name}` declares no objective: give one, e.g. "
                              "`max <expression of its states>`.")
        return next(iter(declared.values()))
    if objective in declared:
        return declared[objective]
    if objective.split(None, 1)[0] in ("max", "min", "maximise", "minimise", "maximize",
                                       "minimize"):
        return parse_objective(model, objective)
    raise ConfigError(f"unknown objective `{objective}` of model `{model.name}`"
                      + (suggest(objective, declared) if declared else
                         " (it declares none)")
                      + "; or write one as `max <expression>` / `min <expression>`.")


def merged_limits(model: Model, limits: Mapping[str, Any] | None) -> dict[str, Limit]:
    """The model's declared limits updated by ``limits`` (name → ``(lower, upper)``, a
    :class:`Limit`, or ``None`` to drop the declared one)."""
    out = dict(type(model).limits)
    for name, v in (limits or {}).items():
        if v is None:
            out.pop(name, None)
        elif isinstance(v, Limit):
            out[name] = v
        else:
            lo, hi = v
            out[name] = Limit(lo, hi, "given")
    return out


def apply_limits(ocp: OCP, limits: Mapping[str, Limit]) -> OCP:
    """Put operating limits on an OCP: control bounds on its controls, path (or terminal)
    constraints on states and outputs.

    Parameters
    ----------
    ocp : OCP
        The problem.
    limits : mapping
        Name → :class:`Limit` (bounds naming parameters are read from the OCP's model).

    Returns
    -------
    OCP
        ``ocp``, for chaining.
    """
    lay = ocp.model.layout
    known = (*lay.inputs.names, *lay.states.names, *lay.outputs.names)
    for name, lim in limits.items():
        lo, hi = lim.values(ocp.model)
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"limit on `{name}`: lower bound {lo:g} > upper bound {hi:g}.")
        if name in ocp.control_slots:
            ocp.bound_input(name, lo, hi)
        elif name in lay.inputs:
            continue  # an input that is not optimised here: nothing to bound
        elif name in lay.states or name in lay.outputs:
            ocp.constrain(name, lo, hi, terminal=lim.terminal)
        else:
            raise ConfigError(f"limit on unknown variable `{name}` of model "
                              f"`{ocp.model.name}`" + suggest(name, known))
    return ocp


def set_objective(ocp: OCP, obj: Objective, du_weight: Any = None) -> OCP:
    """Make ``obj`` the OCP's objective (negated when maximised) with move penalties
    (``du_weight``; ``None``: the objective's default)."""
    model = ocp.model
    du_weight = obj.du_weight if du_weight is None else du_weight
    sign = -1.0 if obj.sense == "max" else 1.0
    mayer = ((lambda x, T: sign * obj.terminal(model, x, T, casadi_ops))
             if obj.terminal is not None else None)
    stage = ((lambda x, u: sign * obj.stage(model, x, u, casadi_ops))
             if obj.stage is not None else None)
    if isinstance(du_weight, Mapping):
        weights = dict(du_weight)
    else:
        weights = {c: float(du_weight) for c in ocp.controls} if du_weight else {}
    return ocp.minimise(mayer=mayer, stage=stage, du_weight=weights)


def golden_batch(model: Model, *, horizon: float, intervals: int = 50,
                 objective: str | Objective | None = None, x0: dict[str, Any] | None = None,
                 limits: Mapping[str, Any] | None = None, du_weight: Any = None,
                 method: str = "collocation", elements: int = 1,
                 free_time: tuple[float, float] | None = None, starts: int = 1,
                 tol: float = 1e-10, verify: bool = True) -> OCPResult:
    """Optimise the manipulated inputs of a whole batch (or horizon).

    Parameters
    ----------
    model : Model
        Any model with manipulated inputs (all of them are optimised).
    horizon : float
        Batch length [model time unit] (the initial guess with ``free_time``).
    intervals : int
        Control intervals (each control constant on each).
    objective : str or Objective, optional
        A name the model declares (the bioreactor: ``"product"``, ``"product_mass"``,
        ``"productivity"``), a text ``"max <expr>"`` / ``"min <expr>"``, or an
        :class:`~processtwin.goals.Objective`; default the model's first declared one.
    x0 : dict, optional
        Initial state (the model's defaults otherwise) [state units].
    limits : mapping, optional
        Changes to the model's declared operating limits: name → ``(lower, upper)``
        [its units], a :class:`~processtwin.goals.Limit`, or ``None`` to drop one.
    du_weight : float or mapping, optional
        Penalty on squared control moves [objective units per (input units)²], one for
        every control or per control: regularises singular arcs (default the
        objective's own ``du_weight``).
    method : {"collocation", "shooting"}
        Transcription.
    elements : int
        Collocation elements per interval.
    free_time : (float, float), optional
        Free batch length within these bounds [model time unit] (needed by objectives
        per batch hour).
    starts : int
        Multistart: the default start plus ``starts - 1`` sampled ones.
    tol : float
        IPOPT's convergence tolerance on the scaled NLP error [-] (``ipopt.tol``).
    verify : bool
        Re-simulate the recipe with the JAX simulator (:meth:`OCP.verify`):
        ``stats["outcome_resimulated"]`` and ``stats["violations_resimulated"]``.

    Returns
    -------
    OCPResult
        ``plan`` is an ``xarray.Dataset`` with the recipe (hold) and the predicted states
        and outputs; its attrs name the objective; ``stats["outcome"]`` is the predicted
        outcome (in the objective's units, without the move penalty).
    """
    obj = resolve_objective(model, objective)
    if obj.free_time and free_time is None:
        raise ConfigError(f"objective `{obj.doc}` is per unit of batch time: give "
                          "`free_time=(T_min, T_max)`.")
    controls = tuple(lf.name for lf in model.layout.inputs.leaves
                     if lf.var.kind == "manipulated")
    if not controls:
        raise ConfigError(f"model `{model.name}` has no manipulated input to optimise.")
    ocp = OCP(model, horizon, intervals, controls=controls, method=method,
              elements=elements, free_time=free_time)
    ocp.initial_state(**(x0 or {}))
    apply_limits(ocp, merged_limits(model, limits))
    set_objective(ocp, obj, du_weight)
    res = ocp.solve(tol=tol, starts=starts)
    res.stats["outcome"] = outcome_value(model, obj, res.plan)
    if verify:
        from .check import objective_on, resimulate

        check = ocp.verify(res)
        p = ocp.p_values()
        T = float(res.plan["time"].values[-1])
        p[-1] = T
        J = objective_on(ocp, resimulate(ocp, res.plan, p), T)
        res.stats["outcome_resimulated"] = -J if obj.sense == "max" else J
        res.stats["violations_resimulated"] = check["violations"]
    res.plan.attrs.update(objective=str(objective or obj.doc), objective_doc=obj.doc,
                          objective_units=obj.units, objective_sense=obj.sense)
    return res


def outcome_value(model: Model, objective: str | Objective | None, plan: Any) -> float:
    """The outcome of a plan (or a simulation Dataset): the objective's terminal value at
    the last time plus its stage rate integrated by the trapezoidal rule over the plan's
    times, without move penalties.

    Parameters
    ----------
    model : Model
        The model the plan is of.
    objective : str, Objective or None
        As for :func:`golden_batch`.
    plan : xarray.Dataset
        Trajectory over ``time`` with the model's states (and, for a stage rate, its
        inputs by name or at their defaults).

    Returns
    -------
    float
        The outcome, in the objective's units.
    """
    obj = resolve_objective(model, objective)
    lay = model.layout
    t = np.asarray(plan["time"].values, float)

    def row(group: Any, k: int) -> Any:
        vals = [np.asarray(plan[lf.name].values[k], float) if lf.name in plan
                else np.asarray(lf.var.default, float) for lf in group.leaves]
        return group.from_leaves([v if v.ndim else float(v) for v in vals])

    value = 0.0
    if obj.terminal is not None:
        value += float(obj.terminal(model, row(lay.states, -1), t[-1] - t[0], numpy_ops))
    if obj.stage is not None:
        rates = [float(obj.stage(model, row(lay.states, k), row(lay.inputs, k), numpy_ops))
                 for k in range(t.size)]
        value += float(np.trapezoid(rates, t))
    return value
