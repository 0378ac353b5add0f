"""Starting points of an OCP and the way back from the NLP's solution to a plan.

A start is a full decision vector: controls per interval, the states at the nodes (by
default simulated from the controls with the interval map, so the start satisfies the
dynamics), collocation states interpolated between the nodes, the final time when it is
free. Guesses come as constants or profiles by name, or as a previous plan interpolated onto
the new grid; extra starts for a multistart are sampled within the control bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from processtwin.errors import ConfigError, suggest

from .transcription import NLP, control_bounds, radau, split_parameters

if TYPE_CHECKING:
    from .ocp import OCP

__all__ = ["Start", "make_start", "plan_dataset", "sample_starts", "start_vector"]


class Start:
    """One starting point: controls ``U`` (M × nu), states ``X`` (N+1 × nx) or ``None``
    (simulate them), final time ``T`` [model time unit], and where it came from."""

    def __init__(self, U: np.ndarray, X: np.ndarray | None, T: float, origin: str) -> None:
        self.U, self.X, self.T, self.origin = U, X, T, origin


def _clip_controls(ocp: OCP, U: np.ndarray) -> np.ndarray:
    lo, hi = control_bounds(ocp)
    return np.clip(U, lo, hi)


def default_controls(ocp: OCP) -> np.ndarray:
    """The previous inputs (else the inputs' defaults), clipped to the bounds, on every
    interval (M × nu) [input units]."""
    row: list[float] = []
    for c, sl in ocp.control_slots.items():
        lf = ocp.model.layout.inputs.leaf(c)
        row += list(np.broadcast_to(np.asarray(ocp.u_prev.get(c, lf.var.default), float),
                                    (sl.stop - sl.start,)))
    return _clip_controls(ocp, np.tile(np.asarray(row, float), (ocp.M, 1)))


def _profile(ocp: OCP, name: str, value: Any, rows: int, size: int, what: str,
             units: str) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.ndim == 0 or (a.ndim == 1 and a.size == size and rows != size):
        a = np.broadcast_to(a, (rows, size))
    elif a.ndim == 1 and a.size == rows:
        a = np.broadcast_to(a[:, None], (rows, size))
    if a.shape != (rows, size) or not np.all(np.isfinite(a)):
        raise ConfigError(f"the guess of {what} `{name}` must be a finite constant or one "
                          f"value per {'interval' if what == 'control' else 'node'} "
                          f"({rows}{f' × {size}' if size > 1 else ''}) [{units}], got "
                          f"shape {np.shape(value)}.")
    return np.array(a)


def _from_plan(ocp: OCP, plan: xr.Dataset) -> Start:
    """A previous plan (an :class:`OCPResult` plan, a simulation) interpolated onto this
    OCP's grid: controls held, states linear in time (times relative to each start)."""
    lay = ocp.model.layout
    t_old = np.asarray(plan["time"].values, float)
    t_old = t_old - t_old[0]
    t_new = np.arange(ocp.N + 1) * ocp.h
    missing = [n for n in lay.states.names if n not in plan]
    if missing:
        raise ConfigError(f"the guess plan has no state(s) {', '.join(missing)} of model "
                          f"`{ocp.model.name}`: give a plan of this model.")
    X = np.zeros((ocp.N + 1, lay.states.size))
    for lf in lay.states.leaves:
        v = np.asarray(plan[lf.name].values, float).reshape(t_old.size, -1)
        for j in range(lf.size):
            X[:, lf.start + j] = np.interp(t_new, t_old, v[:, j])
    U = default_controls(ocp)
    for c, sl in ocp.control_slots.items():
        if c not in plan:
            continue
        v = np.asarray(plan[c].values, float).reshape(t_old.size, -1)
        k = np.clip(np.searchsorted(t_old, t_new[:ocp.M] + 1e-12 * ocp.h, side="right") - 1,
                    0, t_old.size - 1)
        U[:, sl] = v[k]
    T = float(t_old[-1]) if ocp.free_time is not None else ocp.T
    return Start(_clip_controls(ocp, U), X, T, "previous plan")


def make_start(ocp: OCP, guess: Any, origin: str = "guess") -> Start:
    """A :class:`Start` from a user's guess.

    Parameters
    ----------
    ocp : OCP
        The problem.
    guess : None, mapping, OCPResult or xarray.Dataset
        ``None``: the default start (previous or default inputs held, states simulated);
        a mapping of control and state names to constants or profiles (per interval for
        controls, per node for states) plus optionally ``"T"`` (free final time); or a
        previous plan, interpolated onto the new grid.
    origin : str
        Label of the start in the stats.
    """
    if guess is None:
        return Start(default_controls(ocp), None, ocp.T, "default")
    plan = getattr(guess, "plan", guess)
    if isinstance(plan, xr.Dataset):
        return _from_plan(ocp, plan)
    if not isinstance(guess, Mapping):
        raise ConfigError("`guess` must be a mapping of names to values, a previous "
                          f"OCPResult or a plan Dataset, got {type(guess).__name__}.")
    lay = ocp.model.layout
    U = default_controls(ocp)
    X: np.ndarray | None = None
    T = ocp.T
    for name, value in guess.items():
        if name == "T":
            if ocp.free_time is None:
                raise ConfigError("a guess of the final time `T` needs a free final time "
                                  "(OCP(..., free_time=(T_min, T_max))).")
            T = float(value)
        elif name in ocp.control_slots:
            sl = ocp.control_slots[name]
            lf = lay.inputs.leaf(name)
            U[:, sl] = _profile(ocp, name, value, ocp.M, sl.stop - sl.start, "control",
                                lf.var.units)
        elif name in lay.states:
            lf = lay.states.leaf(name)
            if X is None:
                X = np.full((ocp.N + 1, lay.states.size), np.nan)
            X[:, lf.start:lf.stop] = _profile(ocp, name, value, ocp.N + 1, lf.size, "state",
                                              lf.var.units)
        else:
            raise ConfigError(f"the guess names `{name}`, which is neither a control nor a "
                              f"state of this OCP" + suggest(name, (*ocp.controls,
                                                                    *lay.states.names, "T")))
    return Start(_clip_controls(ocp, U), X, T, origin)


def sample_starts(ocp: OCP, n: int, rng: np.random.Generator) -> list[Start]:
    """``n`` starts with each control held at a level drawn uniformly within its bounds
    (around its default where a bound is infinite), states simulated."""
    lo, hi = control_bounds(ocp)
    base = default_controls(ocp)[0]
    span = np.maximum(np.abs(base), 1.0)
    lo = np.where(np.isfinite(lo), lo, base - span)
    hi = np.where(np.isfinite(hi), hi, base + span)
    out = []
    for i in range(n):
        level = rng.uniform(lo, hi)
        T = ocp.T
        if ocp.free_time is not None:
            T = float(rng.uniform(*ocp.free_time))
        out.append(Start(np.tile(level, (ocp.M, 1)), None, T, f"sampled {i + 1}"))
    return out


def simulate_nodes(ocp: OCP, nlp: NLP, x0: np.ndarray, U: np.ndarray, T: float,
                   p: np.ndarray) -> np.ndarray:
    """States at the nodes (N+1 × nx) under the controls ``U`` with the interval map."""
    N, M = ocp.N, ocp.M
    TH, D = split_parameters(ocp, p)
    step = nlp.fns["step"]
    out = [np.asarray(x0, float)]
    for k in range(N):
        x = np.asarray(step(out[-1], U[min(k, M - 1)], D[k], TH[k], T / N)[0]).ravel()
        if not np.all(np.isfinite(x)):  # a guess that blows the model up: hold the state
            x = out[-1].copy()
        out.append(x)
    return np.array(out)


def start_vector(ocp: OCP, nlp: NLP, start: Start, x0: np.ndarray, p: np.ndarray
                 ) -> np.ndarray:
    """The NLP decision vector of a start, inside the variable bounds."""
    w = np.zeros(nlp.lbw.size)
    T = start.T
    if ocp.free_time is not None:
        T = float(np.clip(T, *ocp.free_time))
    X = simulate_nodes(ocp, nlp, x0, start.U, T, p)
    if start.X is not None:
        X = np.where(np.isfinite(start.X), start.X, X)
    X[0] = x0
    b = nlp.blocks
    w[b["X"]] = X.ravel()
    w[b["U"]] = start.U.ravel()
    if "Xc" in b:
        tau, *_ = radau(ocp.degree)
        pos = np.array([(e + tau[j + 1]) / ocp.elements for e in range(ocp.elements)
                        for j in range(ocp.degree)])
        Xc = X[:-1, None, :] + pos[None, :, None] * (X[1:] - X[:-1])[:, None, :]
        w[b["Xc"]] = Xc.reshape(-1)
    if "T" in b:
        w[b["T"]] = T
    return np.clip(w, nlp.lbw, nlp.ubw)


def first_controls(ocp: OCP, nlp: NLP, w: np.ndarray) -> dict[str, Any]:
    """The first interval's controls of the solution ``w`` by name, clipped onto their
    bounds as :func:`plan_dataset` does (a float, or an array for a vector input)."""
    U = _clip_controls(ocp, w[nlp.blocks["U"]].reshape(ocp.M, ocp.nu))[0]
    out: dict[str, Any] = {}
    for c, sl in ocp.control_slots.items():
        v = U[sl]
        out[c] = float(v[0]) if v.size == 1 and ocp.model.layout.inputs.leaf(c).shape == () \
            else v.copy()
    return out


def plan_dataset(ocp: OCP, nlp: NLP, w: np.ndarray, p: np.ndarray) -> xr.Dataset:
    """The solution ``w`` as a Dataset: states and outputs at the nodes, controls (hold),
    slacks of soft constraints."""
    from processtwin.dataset import build, dim_coords, leaf_items

    lay = ocp.model.layout
    N, M, nx, nu = ocp.N, ocp.M, lay.states.size, ocp.nu
    b = nlp.blocks
    X = w[b["X"]].reshape(N + 1, nx)
    U = w[b["U"]].reshape(M, nu)
    # IPOPT may leave a control a hair (~1e-8) outside its bounds: the plan is what an
    # actuator gets, and what `simulate` re-checks, so it is clipped onto them
    U = _clip_controls(ocp, U)
    U = np.vstack([U, np.repeat(U[-1:], N + 1 - M, axis=0)])
    T = float(w[b["T"]][0]) if "T" in b else ocp.T
    TH, D = split_parameters(ocp, p)
    TH, D = np.vstack([TH, TH[-1:]]), np.vstack([D, D[-1:]])
    t = np.arange(N + 1) * T / N
    taken: set[str] = set()
    data: dict[str, Any] = dict(leaf_items(lay.states, X, "state", ("time",), taken=taken))
    u_full = np.tile(lay.inputs.defaults(), (N + 1, 1))
    for c, sl in ocp.control_slots.items():
        lf = lay.inputs.leaf(c)
        u_full[:, lf.start:lf.stop] = U[:, sl]
    for name, (dims, v, attrs) in leaf_items(lay.inputs, u_full, "input", ("time",),
                                             taken=taken, prefix="u_"):
        if name.removeprefix("u_") in ocp.control_slots:
            data[name] = (dims, v, {**attrs, "interpolation": "hold"})
    if lay.outputs.size:
        Y = np.asarray(nlp.fns["out"].map(N + 1)(X.T, U.T, D.T, TH.T)).T
        data.update(leaf_items(lay.outputs, Y, "output", ("time",), taken=taken,
                               prefix="y_"))
    if nlp.slacks:
        data["slack"] = (("constraint",), w[b["S"]],
                         {"long_name": "violation of soft constraints", "role": "diagnostic"})
    coords: dict[str, Any] = {"time": ("time", t, {"units": ocp.model.time_unit}),
                              **dim_coords(lay.dims)}
    if nlp.slacks:
        coords["constraint"] = ("constraint", [ocp.label(lbl, T / N) for lbl, _ in nlp.slacks])
    attrs = {"model": ocp.model.name, "method": ocp.method, "intervals": N}
    if ocp.method == "collocation":
        attrs.update(degree=ocp.degree, elements=ocp.elements)
    return build(data, coords, attrs)
