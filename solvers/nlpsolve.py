"""Solving an OCP's NLP with IPOPT: starts, multistart, warm start, honest outcomes.

One NLP is built per problem structure and one IPOPT instance per option set; every start
of a multistart reuses both. The outcome of each IPOPT run is classified
(:mod:`.status`); a run that may be infeasible is re-solved with every constraint softened —
only if that needs slack is the problem called *infeasible*, and each named constraint is
checked on a re-simulation of the softened plan before it is reported. When the softened
problem needs no slack, the original is re-solved from its solution (``recovered``).
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import casadi as ca
import numpy as np
import xarray as xr

from processtwin.errors import ConfigError, SolverError

from .guess import Start, first_controls, make_start, plan_dataset, sample_starts, start_vector
from .status import classify
from .structured import constraint_jacobian, lagrangian_hessian

if TYPE_CHECKING:
    from .ocp import OCP

__all__ = ["OCPResult", "solve_ocp"]


@dataclass
class OCPResult:
    """Outcome of :meth:`OCP.solve`.

    Attributes
    ----------
    success : bool
        A start converged.
    status : str
        ``"converged"``, ``"infeasible"`` (a softened re-solve needs slack),
        ``"limit"`` (iteration or time limit), ``"numerical"`` or ``"failed"``.
    objective : float
        Objective value at the returned point (without slack penalties).
    data : xarray.Dataset
        The plan: states and outputs at the nodes (``time``, N+1), controls per interval
        (held from each node, last value repeated at the final node), slacks of soft
        constraints. Also available as :attr:`plan`.
    active : list of str
        Constraints at their bound (``name`` at time ``t``) at the optimum.
    stats : dict
        ``wall_time_s`` (all starts) [s], ``build_time_s`` [s] (0 when the NLP was
        reused), ``iterations`` (of the returned start), ``solver_status`` (IPOPT's),
        ``starts`` (one dict per start: ``origin``, ``status``, ``objective``,
        ``iterations``, ``wall_time_s``), ``best_start`` (its index) and ``recovered``.
    w_opt : numpy.ndarray or None
        NLP decision vector at the returned point (see
        :mod:`processtwin.solvers.transcription`); with ``lam_g`` and ``lam_x`` the warm
        start of a later solve of the same NLP.
    lam_g : numpy.ndarray or None
        Multipliers of the NLP constraints [objective units per constraint unit].
    lam_x : numpy.ndarray or None
        Multipliers of the variable bounds [objective units per variable unit].
    message : str
        What happened when the solve did not converge (empty otherwise).

    The Dataset is built when first read (a receding-horizon loop that applies the first
    move via :meth:`first_move` never pays for it).
    """

    success: bool
    status: str
    objective: float
    _data: Any  # the Dataset, or a function that builds it
    active: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    w_opt: Any = None
    lam_g: Any = None
    lam_x: Any = None
    message: str = ""
    _first: dict = field(default_factory=dict, repr=False)

    @property
    def data(self) -> xr.Dataset:
        """The plan as a Dataset (built on first access)."""
        if callable(self._data):
            self._data = self._data()
        return self._data

    @property
    def plan(self) -> xr.Dataset:
        """The planned trajectory (the same Dataset as :attr:`data`)."""
        return self.data

    def first_move(self) -> dict[str, Any]:
        """The controls of the first interval by name [input units] (a float, or an array
        for a vector input), clipped onto their bounds as in the plan — what a receding-
        horizon loop applies — without building the Dataset."""
        return dict(self._first)

    @property
    def solver_status(self) -> str:
        """IPOPT's own return status of the returned start."""
        return str(self.stats.get("solver_status", ""))


def _solver(ocp: OCP, nlp: Any, key: tuple, warm: bool) -> Any:
    cache = ocp._compiled
    if key not in cache:
        tol, max_iter, wall = key[1:]
        opts = {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes",
                "ipopt.tol": tol, "ipopt.max_iter": max_iter, "expand": ocp.expand}
        if ocp.expand and ocp.structured:
            # exact derivatives from one instance of each interval Function: SX speed
            # without expanding (and differentiating) the whole NLP
            hess, jac = lagrangian_hessian(nlp), constraint_jacobian(nlp)
            if hess is not None and jac is not None:
                opts.update({"expand": False, "hess_lag": hess, "jac_g": jac})
        if wall is not None:
            opts["ipopt.max_wall_time"] = float(wall)
        if warm:  # primal-dual warm start from the previous solution
            # (with the adaptive barrier update a warm-started receding-horizon step is
            # ~13 % faster on do-mpc's batch_reactor loop, same optimum: bench_nmpc.py)
            opts.update({"ipopt.warm_start_init_point": "yes",
                         "ipopt.warm_start_bound_push": 1e-9,
                         "ipopt.warm_start_mult_bound_push": 1e-9,
                         "ipopt.mu_init": 1e-6, "ipopt.mu_strategy": "adaptive"})
        cache[key] = ca.nlpsol(f"ocp{len(cache)}", "ipopt", nlp.nlp, opts)
    return cache[key]


def _run(solver: Any, args: dict) -> tuple[dict, dict, float]:
    start = _time.perf_counter()
    sol = solver(**args)
    return sol, solver.stats(), _time.perf_counter() - start


def _slack_penalty(nlp: Any, w: np.ndarray) -> float:
    if not nlp.slacks:
        return 0.0
    return float(np.dot(w[nlp.blocks["S"]], [wt for _, wt in nlp.slacks]))


def _active(ocp: OCP, nlp: Any, sol: dict, h: float) -> list[str]:
    g = np.asarray(sol["g"]).ravel()
    lam = np.asarray(sol["lam_g"]).ravel()
    rows = zip(nlp.gname, g, nlp.lbg, nlp.ubg, lam, strict=True)
    return [ocp.label(n, h) for n, gv, lo, hi, la in rows
            if lo != hi and abs(la) > 1e-8 and (abs(gv - hi) < 1e-6 or abs(gv - lo) < 1e-6)]


def _check_warm(ocp: OCP, nlp: Any, warm: Any) -> None:
    sizes = (nlp.lbw.size, nlp.lbg.size)
    got = (np.size(warm.w_opt) if warm.w_opt is not None else 0,
           np.size(warm.lam_g) if warm.lam_g is not None else 0)
    if warm.w_opt is None or got != sizes or np.size(warm.lam_x) != sizes[0]:
        raise ConfigError(f"`warm_start` is a result of a different NLP ({got[0]} variables "
                          f"and {got[1]} constraints; this one has {sizes[0]} and "
                          f"{sizes[1]}): warm-start only the same problem, or pass the "
                          "earlier result as `guess=` to interpolate it onto this grid.")


def _starts(ocp: OCP, guess: Any, starts: Any, seed: int) -> list[Start]:
    if isinstance(starts, bool) or not isinstance(starts, (int, np.integer, Sequence)):
        raise ConfigError(f"`starts` must be a number of starts ≥ 1 or a sequence of "
                          f"guesses, got {starts!r}.")
    if isinstance(starts, (int, np.integer)):
        if starts < 1:
            raise ConfigError(f"`starts` must be ≥ 1, got {starts}.")
        first = make_start(ocp, guess, "default" if guess is None else "guess")
        return [first, *sample_starts(ocp, int(starts) - 1, np.random.default_rng(seed))]
    given = [make_start(ocp, g, f"start {i}") for i, g in enumerate(starts)]
    if not given:
        raise ConfigError("`starts` is an empty sequence: give at least one guess.")
    return ([make_start(ocp, guess, "guess")] if guess is not None else []) + given


def solve_ocp(ocp: OCP, *, guess: Any, starts: Any, seed: int, warm_start: Any, tol: float,
              max_iter: int, diagnose: bool, max_wall_time: float | None,
              raise_on_failure: bool) -> OCPResult:
    """Solve ``ocp`` (see :meth:`OCP.solve` for the arguments)."""
    t_build = _time.perf_counter()
    built = ocp._prob is None
    if built:
        ocp._prob = ocp.build()
    nlp = ocp._prob
    p = ocp.p_values()
    x0 = ocp.x0_vector()
    nx = x0.size
    lbw, ubw = nlp.lbw.copy(), nlp.ubw.copy()
    lbw[:nx] = ubw[:nx] = x0  # the initial state enters as bounds
    if warm_start is not None:
        _check_warm(ocp, nlp, warm_start)
        if guess is not None:
            raise ConfigError("give `warm_start` (the same NLP's previous solution, primal "
                              "and dual) or `guess` (a start to interpolate), not both.")
    todo = _starts(ocp, guess, starts, seed)
    warm = warm_start is not None
    solver = _solver(ocp, nlp, (warm, tol, max_iter, max_wall_time), warm)
    build_time = _time.perf_counter() - t_build if built else 0.0
    base = dict(lbx=lbw, ubx=ubw, lbg=nlp.lbg, ubg=nlp.ubg, p=p)
    outcomes, runs = [], []
    t_all = _time.perf_counter()
    for i, start in enumerate(todo):
        args = dict(base)
        if warm and i == 0:
            args.update(x0=warm_start.w_opt, lam_x0=warm_start.lam_x, lam_g0=warm_start.lam_g)
            run_solver, origin = solver, "warm start"
        else:
            args["x0"] = start_vector(ocp, nlp, start, x0, p)
            run_solver = (solver if not warm else
                          _solver(ocp, nlp, (False, tol, max_iter, max_wall_time), False))
            origin = start.origin
        sol, st, wall = _run(run_solver, args)
        cls = classify(st)
        w = np.asarray(sol["x"]).ravel()
        if cls == "converged" and not np.all(np.isfinite(w)):
            cls = "numerical"
        f = float(sol["f"]) - _slack_penalty(nlp, w)
        outcomes.append({"origin": origin, "status": cls, "solver_status": st["return_status"],
                         "objective": f, "iterations": int(st.get("iter_count", -1)),
                         "wall_time_s": wall, "_rank": float(sol["f"])})
        runs.append((sol, st, w, f))
    good = [i for i, o in enumerate(outcomes) if o["status"] == "converged"]
    # the best start by the NLP's own objective (slack penalties of soft constraints in)
    best = min(good, key=lambda i: outcomes[i]["_rank"]) if good else 0
    for o in outcomes:
        o.pop("_rank")
    sol, st, w, f = runs[best]
    stats = {"wall_time_s": _time.perf_counter() - t_all, "build_time_s": build_time,
             "iterations": outcomes[best]["iterations"], "solver_status": st["return_status"],
             "starts": outcomes, "best_start": best, "recovered": False}
    if good:
        return _result(ocp, nlp, sol, w, f, p, "converged", stats)
    cls, message = outcomes[best]["status"], ""
    unverified = cls == "infeasible?"
    if cls == "limit":
        message = _limit_message(st, max_iter, max_wall_time)
    elif diagnose:
        verdict, message, sol_soft = _diagnose(ocp, st, tol, max_iter, p)
        if verdict == "feasible":
            # the softened problem meets every constraint: start the original there
            args = dict(base, x0=np.clip(_hard_start(ocp, nlp, sol_soft), lbw, ubw))
            cold = solver if not warm else _solver(ocp, nlp, (False, tol, max_iter,
                                                              max_wall_time), False)
            sol2, st2, wall2 = _run(cold, args)
            stats["wall_time_s"] += wall2
            w2 = np.asarray(sol2["x"]).ravel()
            if classify(st2) == "converged" and np.all(np.isfinite(w2)):
                stats.update(recovered=True, iterations=int(st2.get("iter_count", -1)),
                             solver_status=st2["return_status"])
                return _result(ocp, nlp, sol2, w2, float(sol2["f"]) - _slack_penalty(nlp, w2),
                               p, "converged", stats)
            message += (" Re-solving the original from that point failed too "
                        f"({st2['return_status']}).")
        cls = "infeasible" if verdict == "infeasible" else ("failed" if unverified else cls)
    else:
        cls = "failed" if unverified else cls
        message = (f"IPOPT failed ({st['return_status']}); not diagnosed (diagnose=False)"
                   + (", so its claim of local infeasibility is unverified." if unverified
                      else "."))
    res = _result(ocp, nlp, sol, w, f, p, cls, stats, message=message, success=False)
    if raise_on_failure:
        raise SolverError(message, status=cls, result=res)
    return res


def _hard_start(ocp: OCP, nlp: Any, sol_soft: dict) -> np.ndarray:
    """The decision vector of the hard NLP from a solution of the softened one (same
    blocks except the slacks)."""
    w_soft = np.asarray(sol_soft["x"]).ravel()
    soft = ocp._diag_nlp
    w = np.zeros(nlp.lbw.size)
    for name, sl in nlp.blocks.items():
        if name != "S":
            w[sl] = w_soft[soft.blocks[name]]
    return w


def _limit_message(st: dict, max_iter: int, wall: float | None) -> str:
    it = st.get("iterations") or {}
    inf_pr = it.get("inf_pr", [float("nan")])[-1] if it else float("nan")
    what = ("wall-time limit" + (f" ({wall:g} s)" if wall is not None else "")
            if "Time" in st["return_status"] else f"iteration limit ({max_iter})")
    return (f"IPOPT stopped at its {what} after {st.get('iter_count', '?')} iterations "
            f"({st['return_status']}): the problem is not shown to be infeasible; the last "
            f"iterate still violates the constraints by {inf_pr:.3g} (scaled). Raise "
            "`max_iter`, give a better `guess` or more `starts`.")


def _diagnose(ocp: OCP, st: dict, tol: float, max_iter: int, p: np.ndarray
              ) -> tuple[str, str, Any]:
    """Least-violation re-solve with every constraint softened: ``("infeasible", message,
    sol)`` when it needs slack (each constraint checked by re-simulation), else
    ``("feasible", message, sol)`` (or ``("unknown", ...)`` if it fails too)."""
    from .check import violations_of

    soft = ocp.build(soften_all=True)
    ocp._diag_nlp = soft
    opts = {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes", "ipopt.tol": tol,
            "ipopt.max_iter": max_iter}
    solver = ca.nlpsol("diag", "ipopt", soft.nlp, opts)
    nx = ocp.model.layout.states.size
    lbw, ubw = soft.lbw.copy(), soft.ubw.copy()
    lbw[:nx] = ubw[:nx] = ocp.x0_vector()
    w0 = start_vector(ocp, soft, make_start(ocp, None), ocp.x0_vector(), p)
    sol = solver(x0=w0, lbx=lbw, ubx=ubw, lbg=soft.lbg, ubg=soft.ubg, p=p)
    st_s = solver.stats()
    raw = st["return_status"]
    if classify(st_s) != "converged":
        return ("unknown", f"IPOPT failed ({raw}), and so did the softened re-solve "
                f"({st_s['return_status']}), which relaxes every constraint but not the "
                "states' physical bounds." + _leaves_bounds(ocp, soft, p) + " Otherwise "
                "it is likely badly scaled or needs a better `guess`.", None)
    w = np.asarray(sol["x"]).ravel()
    vals = w[soft.blocks["S"]] if soft.slacks else np.zeros(0)
    # only constraints that are hard in the user's problem: a soft one may be violated
    user_soft = {(name, terminal) for group, terminal in ((ocp.path, False),
                                                          (ocp.terminal, True))
                 for name, (_, soft_w) in group.items() if soft_w is not None}
    worst: dict[str, float] = {}
    for (label, _), v in zip(soft.slacks, vals, strict=True):
        base = label.split("`")[1].split("[")[0]
        if (base, label.endswith(" at end")) in user_soft:
            continue
        if v > 1e-6:
            key = label.split(" at t=")[0]
            worst[key] = max(worst.get(key, 0.0), float(v))
    if not worst:
        return ("feasible", f"IPOPT failed ({raw}) but every constraint can be met (the "
                "softened re-solve needs no slack): the problem is feasible.", sol)
    plan = plan_dataset(ocp, soft, w, p)
    try:
        resim = violations_of(ocp, plan, p)
    except Exception as exc:  # noqa: BLE001 - the check is best effort; say so
        resim, note = None, f" (not re-simulated: {exc})"
    else:
        note = ""
    parts = []
    for k, v in sorted(worst.items(), key=lambda kv: -kv[1]):
        if resim is None:
            parts.append(f"{k} is violated by up to {v:.4g}")
        elif resim.get(k, 0.0) > 1e-6 * max(1.0, v):
            parts.append(f"{k} is violated by up to {v:.4g} (re-simulated: {resim[k]:.4g})")
        else:
            parts.append(f"{k} is violated by up to {v:.4g} in the NLP but not when the "
                         "softened plan is re-simulated (a discretisation artefact)")
    binding = _binding(ocp, soft, sol, w, set(worst))
    against = (". It is held there by " + ", ".join(binding) + " (at their bounds)"
               if binding else "")
    return ("infeasible", f"infeasible problem (IPOPT: {raw}). With every constraint "
            "softened the least violation needs: " + "; ".join(parts) + note + against
            + ". These constraints conflict with the dynamics, the initial state and the "
            "input bounds.", sol)


def _leaves_bounds(ocp: OCP, nlp: Any, p: np.ndarray) -> str:
    """Whether the discretised dynamics leave the states' physical bounds under the
    default start: then no plan can respect them at this grid (stiff dynamics)."""
    from .guess import make_start, simulate_nodes

    start = make_start(ocp, None)
    X = simulate_nodes(ocp, nlp, ocp.x0_vector(), start.U, ocp.T, p)
    lay = ocp.model.layout
    lo, hi = lay.states.bounds()
    names = lay.states.flat_names()
    bad = [(names[j], float(X[:, j].min()) if np.any(X[:, j] < lo[j]) else
            float(X[:, j].max())) for j in range(len(names))
           if np.any(X[:, j] < lo[j] - 1e-12) or np.any(X[:, j] > hi[j] + 1e-12)]
    if not bad:
        return ""
    shown = ", ".join(f"`{n}` (reaches {v:.3g})" for n, v in bad)
    return (f" Simulated on this grid ({ocp.N} intervals, {ocp.substeps} RK4 sub-steps "
            f"each, as the initial guess) the default start already leaves the physical "
            f"bounds of {shown}: the "
            "dynamics are too stiff for this grid — use more `intervals`, `elements` or "
            "`substeps`, or bounds that keep the plant away from that regime.")


def _binding(ocp: OCP, soft: Any, sol: dict, w: np.ndarray, violated: set[str]) -> list[str]:
    """Constraints and control bounds that are met but binding (non-zero multiplier) in the
    softened solution: the other side of the conflict."""
    lam = np.asarray(sol["lam_g"]).ravel()
    g = np.asarray(sol["g"]).ravel()
    out: dict[str, None] = {}
    for name, gv, hi, la in zip(soft.gname, g, soft.ubg, lam, strict=True):
        key = name.split(" at t=")[0]
        if (key.startswith("`") and key not in violated and abs(la) > 1e-6
                and abs(gv - hi) < 1e-6):
            out[key] = None
    lam_u = np.asarray(sol["lam_x"]).ravel()[soft.blocks["U"]].reshape(ocp.M, ocp.nu)
    U = w[soft.blocks["U"]].reshape(ocp.M, ocp.nu)
    lo, hi = (soft.lbw[soft.blocks["U"]].reshape(ocp.M, ocp.nu),
              soft.ubw[soft.blocks["U"]].reshape(ocp.M, ocp.nu))
    for c, sl in ocp.control_slots.items():
        for j in range(sl.start, sl.stop):
            if np.any((np.abs(lam_u[:, j]) > 1e-6) & (np.abs(U[:, j] - hi[:, j]) < 1e-7)):
                out[f"`{c}` ≤ {hi[0, j]:g}"] = None
            if np.any((np.abs(lam_u[:, j]) > 1e-6) & (np.abs(U[:, j] - lo[:, j]) < 1e-7)):
                out[f"`{c}` ≥ {lo[0, j]:g}"] = None
    return list(out)


def _result(ocp: OCP, nlp: Any, sol: dict, w: np.ndarray, f: float, p: np.ndarray,
            status: str, stats: dict, *, message: str = "", success: bool = True
            ) -> OCPResult:
    ok = np.all(np.isfinite(w))
    w_plan = np.where(np.isfinite(w), w, 0.0)

    def plan() -> xr.Dataset:
        return plan_dataset(ocp, nlp, w_plan, p)

    T = float(w_plan[nlp.blocks["T"]][0]) if "T" in nlp.blocks else ocp.T
    h = T / ocp.N
    active = _active(ocp, nlp, sol, h) if success and ok else []
    if success and "T" in nlp.blocks:
        T = float(w[nlp.blocks["T"]][0])
        for bound, word in ((ocp.free_time[0], "≥"), (ocp.free_time[1], "≤")):
            if abs(T - bound) <= 1e-7 * max(1.0, bound):
                active.append(f"final time {word} {bound:g}")
    active = list(dict.fromkeys(active))  # a node and the collocation point on it
    result = OCPResult(success, status, f, plan, active, stats, w,
                       np.asarray(sol["lam_g"]).ravel(), np.asarray(sol["lam_x"]).ravel(),
                       message, first_controls(ocp, nlp, w_plan))
    if success:
        ocp._last_result = result
    return result
