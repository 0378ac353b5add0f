"""A plan checked against the accurate simulator: the NLP's discretisation is never the
last word.

The plan's controls (held per interval) and the other inputs are re-simulated with the JAX
simulator at tight tolerances on a fine grid (16 points per interval); the objective, the
states at the nodes and every constraint are evaluated on that trajectory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from processtwin.errors import ConfigError, SolverError

from .transcription import split_parameters

if TYPE_CHECKING:
    from .nlpsolve import OCPResult
    from .ocp import OCP

__all__ = ["objective_on", "resimulate", "verify_plan", "violations_of"]

_FINE = 16  # re-simulated points per interval (even: Simpson)


def resimulate(ocp: OCP, plan: xr.Dataset, p: np.ndarray, *, rtol: float = 1e-10,
               atol: float = 1e-12) -> dict[str, np.ndarray]:
    """Re-simulate a plan: states, controls, other inputs, θ on the fine grid.

    Parameters
    ----------
    ocp : OCP
        The problem the plan solves.
    plan : xarray.Dataset
        Its plan (states at the nodes, controls held).
    p : numpy.ndarray
        The NLP parameters of the solve (:meth:`OCP.p_values`).
    rtol, atol : float
        Simulator tolerances [-, state units].

    Returns
    -------
    dict
        ``t`` (fine grid), ``interval`` (index of each point's interval), ``X``
        (points × nx), ``U`` (points × nu), ``D`` (points × nd), ``TH`` (points × nθ).
    """
    from processtwin.simulate import simulate

    lay = ocp.model.layout
    N = ocp.N
    t_nodes = np.asarray(plan["time"].values, float)
    h = (t_nodes[-1] - t_nodes[0]) / N
    TH, D = split_parameters(ocp, p)
    if TH.size and np.ptp(TH, axis=0).max() > 0:
        raise ConfigError("the plan has parameters that vary between intervals; the "
                          "simulator takes one value per parameter, so it is not "
                          "re-simulated.")
    model = ocp.model.with_params({n: float(TH[0, i]) for i, n in
                                   enumerate(ocp.theta_names)})
    U = np.zeros((N, ocp.nu))
    for c, sl in ocp.control_slots.items():
        U[:, sl] = np.asarray(plan[c].values, float).reshape(N + 1, -1)[:N]
    inputs: dict[str, Any] = {}
    starts = t_nodes[:-1]
    from processtwin.signals import hold

    for c, sl in ocp.control_slots.items():
        v = U[:, sl]
        inputs[c] = hold(starts, v[:, 0] if not lay.inputs.leaf(c).shape else v.T)
    for name, sl in ocp.other_slots.items():
        v = D[:, sl]
        inputs[name] = hold(starts, v[:, 0] if not lay.inputs.leaf(name).shape else v.T)
    if model.is_discrete:
        per = ocp.substeps_per_interval
        frac = np.arange(per) / per
    else:
        frac = np.arange(_FINE) / _FINE
    t = np.concatenate([t_nodes[k] + frac * h for k in range(N)] + [t_nodes[-1:]])
    interval = np.minimum(np.floor((t - t_nodes[0]) / h + 1e-9).astype(int), N - 1)
    x0 = lay.states.to_dict(np.asarray([float(plan[lf.name].values.reshape(N + 1, -1)[0, j])
                                        for lf in lay.states.leaves for j in
                                        range(lf.size)]))
    try:
        sim = simulate(model, x0, inputs, t, rtol=rtol, atol=atol)
    except SolverError:  # stiff: the implicit solver
        sim = simulate(model, x0, inputs, t, rtol=rtol, atol=atol, solver="kvaerno5")
    X = np.column_stack([np.asarray(sim[lf.name]).reshape(t.size, -1)
                         for lf in lay.states.leaves])
    return {"t": t, "interval": interval, "X": X, "U": U[interval], "D": D[interval],
            "TH": TH[interval] if TH.size else np.zeros((t.size, 0))}


def _values(ocp: OCP, name: str, r: dict) -> np.ndarray:
    """A state's or output's values on the re-simulated grid (points × elements)."""
    lay = ocp.model.layout
    if name in lay.states:
        lf = lay.states.leaf(name)
        return r["X"][:, lf.start:lf.stop]
    lf = lay.outputs.leaf(name)
    out = ocp._prob.fns["out"] if ocp._prob is not None else ocp.build().fns["out"]
    Y = np.asarray(out.map(r["t"].size)(r["X"].T, r["U"].T, r["D"].T, r["TH"].T)).T
    return Y[:, lf.start:lf.stop]


def violations_of(ocp: OCP, plan: xr.Dataset, p: np.ndarray, r: dict | None = None
                  ) -> dict[str, float]:
    """Largest violation of each constraint on the re-simulated plan.

    Parameters
    ----------
    ocp : OCP
        The problem.
    plan : xarray.Dataset
        A plan of it.
    p : numpy.ndarray
        NLP parameters of the solve.
    r : dict, optional
        A re-simulation from :func:`resimulate` (made if not given).

    Returns
    -------
    dict
        Constraint label without its time (``"`X` ≤ 3.7"``, ``"`V` ≤ 0.5 at end"``) →
        largest violation ≥ 0 [the variable's units].
    """
    r = resimulate(ocp, plan, p) if r is None else r
    lay = ocp.model.layout
    out: dict[str, float] = {}
    groups = [(n, v, False) for n, v in ocp.path.items()]
    groups += [(n, v, True) for n, v in ocp.terminal.items()]
    for name, ((lo, hi), _), terminal in groups:
        vals = _values(ocp, name, r)
        vals = vals[-1:] if terminal else vals[1:]
        lf = lay.states.leaf(name) if name in lay.states else lay.outputs.leaf(name)
        for bound, sign, word in ((lo, -1.0, "≥"), (hi, 1.0, "≤")):
            if bound is None:
                continue
            for e, el in enumerate(lf.flat_names()):
                key = f"`{el}` {word} {bound:g}" + (" at end" if terminal else "")
                out[key] = max(0.0, float(np.max(sign * (vals[:, e] - bound))))
    return out


def objective_on(ocp: OCP, r: dict, T: float) -> float:
    """The OCP's Mayer and stage terms on a re-simulated trajectory (Simpson for the stage
    cost), without move penalties and time cost.

    Parameters
    ----------
    ocp : OCP
        The problem (its ``mayer`` and ``stage``).
    r : dict
        A re-simulation from :func:`resimulate`.
    T : float
        Horizon length [model time unit].

    Returns
    -------
    float
        The terms' value [objective units].
    """
    if ocp._prob is None:
        ocp._prob = ocp.build()
    J = 0.0
    if ocp.mayer is not None:
        J += float(ocp._prob.fns["mayer"](r["X"][-1], T))
    if ocp.stage is not None and ocp.stage_rule == "rectangle":
        stage = ocp._prob.fns["stage"]
        per = ocp.substeps_per_interval if ocp.model.is_discrete else _FINE
        starts = slice(0, ocp.N * per, per)
        L = np.asarray(stage.map(ocp.N)(r["X"][starts].T, r["U"][starts].T,
                                        r["D"][starts].T, r["TH"][starts].T)).ravel()
        J += T / ocp.N * float(L.sum())
    elif ocp.stage is not None and not ocp.model.is_discrete:
        stage = ocp._prob.fns["stage"]
        n = r["t"].size
        # the left limit at each node: the interval's own inputs at its end
        L = np.asarray(stage.map(n)(r["X"].T, r["U"].T, r["D"].T, r["TH"].T)).ravel()
        h = T / ocp.N
        for k in range(ocp.N):
            sl = slice(k * _FINE, (k + 1) * _FINE + 1)
            vals = L[sl].copy()
            xs_end = r["X"][(k + 1) * _FINE]
            vals[-1] = float(stage(xs_end, r["U"][k * _FINE], r["D"][k * _FINE],
                                   r["TH"][k * _FINE]))
            wts = np.ones(_FINE + 1)
            wts[1:-1:2], wts[2:-1:2] = 4.0, 2.0
            J += h / (3 * _FINE) * float(wts @ vals)
    elif ocp.stage is not None:  # a discrete-time model: the sum over its samples
        stage = ocp._prob.fns["stage"]
        n = r["t"].size - 1
        L = np.asarray(stage.map(n)(r["X"][:-1].T, r["U"][:-1].T, r["D"][:-1].T,
                                    r["TH"][:-1].T)).ravel()
        J += float(ocp.model.sample_time * L.sum())
    return J


def _objective(ocp: OCP, r: dict, U_plan: np.ndarray, T: float) -> float:
    """The whole objective on the re-simulated trajectory, move penalties and time cost
    from the plan's controls."""
    J = objective_on(ocp, r, T)
    prev = {c: np.broadcast_to(np.asarray(ocp.u_prev[c], float), (sl.stop - sl.start,))
            for c, sl in ocp.control_slots.items() if c in ocp.u_prev}
    for c, sl in ocp.control_slots.items():
        if c not in ocp.du_weight:
            continue
        Uc = U_plan[:ocp.M, sl]
        steps = np.diff(np.vstack([prev[c][None, :], Uc]) if c in prev else Uc, axis=0)
        J += ocp.du_weight[c] * float(np.sum(steps ** 2))
    return J + ocp.time_weight * T


def verify_plan(ocp: OCP, result: OCPResult, *, rtol: float = 1e-10, atol: float = 1e-12
                ) -> dict:
    """See :meth:`OCP.verify`."""
    plan = result.plan
    p = ocp.p_values()
    T = float(plan["time"].values[-1] - plan["time"].values[0])
    p[-1] = T
    r = resimulate(ocp, plan, p, rtol=rtol, atol=atol)
    lay = ocp.model.layout
    per = ocp.substeps_per_interval if ocp.model.is_discrete else _FINE
    nodes = r["X"][::per]
    err = {}
    for lf in lay.states.leaves:
        planned = np.asarray(plan[lf.name].values, float).reshape(ocp.N + 1, -1)
        err[lf.name] = float(np.max(np.abs(planned - nodes[:, lf.start:lf.stop])))
    U_plan = np.column_stack([np.asarray(plan[c].values, float).reshape(ocp.N + 1, -1)
                              for c in ocp.controls]) if ocp.controls else \
        np.zeros((ocp.N + 1, 0))
    return {"objective": result.objective,
            "objective_resimulated": _objective(ocp, r, U_plan, T),
            "state_error": err,
            "violations": {k: v for k, v in violations_of(ocp, plan, p, r).items() if v > 0}}
