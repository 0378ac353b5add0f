"""Optimal-control problems on a processtwin model, solved by IPOPT (CasADi).

:class:`OCP` is a :class:`~processtwin.solvers.problem.Problem` (horizon — fixed or free —,
controls and their bounds and rate limits, path and terminal constraints, soft constraints,
objective, forecasts) that builds and solves itself: the NLP is built in
:mod:`.transcription` (multiple shooting or Radau collocation with several elements per
interval, from one CasADi ``Function`` of the model's own equations mapped over the
horizon), started from :mod:`.guess` and solved in :mod:`.nlpsolve` (guesses, multistart,
primal-dual warm start, honest failure classes, a diagnosis of infeasibility checked by
re-simulation). CasADi's ``highs`` plugin is never loaded here (it clashes with highspy;
see DESIGN.md).
"""

from __future__ import annotations

import re
from typing import Any, Self

import numpy as np

from processtwin.errors import ConfigError
from processtwin.model import Model

from .nlpsolve import OCPResult, solve_ocp
from .problem import Problem
from .transcription import NLP, transcribe

__all__ = ["OCP", "OCPResult"]


class OCP(Problem):
    """An optimal-control problem on a fixed or free horizon with piecewise-constant
    controls, that builds, solves and verifies itself.

    Constructed and set up as a :class:`~processtwin.solvers.problem.Problem` (its
    parameters: model, horizon, intervals, controls, method, degree, elements, substeps,
    control_horizon, runtime, free_time); :meth:`solve` builds the NLP once per structure
    and solves it, :meth:`verify` re-simulates a plan.
    """

    # ---- the NLP (built in .transcription, solved in .nlpsolve) ----------------------
    @property
    def theta_names(self) -> tuple[str, ...]:
        """Parameters that are NLP parameters (``runtime`` and those set with
        :meth:`parameter`), in the order of the per-interval vector θ."""
        return self.runtime + tuple(n for n in self.params if n not in self.runtime)

    @property
    def substeps_per_interval(self) -> int:
        """RK4 sub-steps per interval; for a discrete-time model its samples per interval."""
        if self.model.is_discrete:
            return int(round(self.h / self.model.sample_time))
        return self.substeps

    def p_values(self) -> np.ndarray:
        """Numeric NLP parameters: θ per interval, the other inputs per interval, the
        previous controls, the horizon length."""
        N = self.N
        th = np.zeros((N, len(self.theta_names)))
        for i, n in enumerate(self.theta_names):
            th[:, i] = (self.runtime_values[n] if n in self.runtime
                        else np.broadcast_to(self.params[n], (N,)))
        lay = self.model.layout
        d = np.zeros((N, self.nd))
        for name, sl in self.other_slots.items():
            lf = lay.inputs.leaf(name)
            if name in self.disturbances:
                v = self.disturbances[name]
                v = v[:, None] if (v.ndim == 1 and v.shape[0] == N and not
                                   (lf.shape and v.shape == lf.shape)) else v
                d[:, sl] = np.broadcast_to(v, (N, lf.size))
            else:
                d[:, sl] = np.broadcast_to(np.asarray(lf.var.default, float), (N, lf.size))
        prev = [np.broadcast_to(np.asarray(self.u_prev.get(c, 0.0), dtype=float),
                                (sl.stop - sl.start,)) for c, sl in self.control_slots.items()]
        return np.concatenate([th.ravel(), d.ravel(), *prev, [self.T]])

    def set_horizon(self, horizon: float) -> Self:
        """Change the horizon length (same number of intervals) without rebuilding: the
        shrinking horizon of a batch keeps one NLP and its warm start.

        Parameters
        ----------
        horizon : float
            New horizon length [model time unit], > 0; the intervals scale with it.

        Returns
        -------
        Self
            ``self``, for chaining.
        """
        if not (np.isfinite(horizon) and horizon > 0):
            raise ConfigError(f"`horizon` must be a finite time > 0, got {horizon!r}.")
        if self.free_time is not None:
            raise ConfigError("the horizon of this OCP is free (`free_time`): the solver "
                              "chooses it; give a start for it with `guess={'T': ...}`.")
        model = self.model
        if model.is_discrete and abs(float(horizon) / self.N - self.h) > 1e-12 * self.h:
            # the NLP applies the model's map a fixed number of times per interval
            raise ConfigError(f"discrete-time model `{model.name}`: the horizon is built as "
                              f"{self.N} intervals of {self.h:g} {model.time_unit} "
                              f"({round(self.h / model.sample_time)} samples each); "
                              f"{float(horizon):g} {model.time_unit} would change the "
                              "samples per interval — build a new OCP.")
        self.T = float(horizon)
        self.h = self.T / self.N
        return self

    @staticmethod
    def at_node(pos: float) -> str:
        # constraint labels carry the node position; times are filled in with the
        # current interval length when reported (the horizon may change between solves)
        return f"t=<{float(pos)!r}>"

    def label(self, label: str, h: float | None = None) -> str:
        """A constraint label with node positions turned into times [model time unit].

        Parameters
        ----------
        label : str
            A constraint label from the NLP (``t=<k>`` node positions).
        h : float, optional
            Interval length [model time unit] (default the current one).
        """
        h = self.h if h is None else h
        return re.sub(r"t=<([^>]+)>", lambda m: f"t={float(m.group(1)) * h:g}", label)

    def interval_model_numeric(self) -> Model:
        """The model with the NLP parameters at their current values (time-varying ones at
        their first interval's value)."""
        vals = {n: float(np.broadcast_to(self.params[n], (self.N,))[0]) for n in self.params}
        vals.update(self.runtime_values)
        return self.model.with_params(vals) if vals else self.model

    def x0_vector(self) -> np.ndarray:
        """The fixed initial state as a flat vector [state units]."""
        return self.model.layout.states.values(self.x0)

    def build(self, soften_all: bool = False) -> NLP:
        """Build the NLP; with ``soften_all`` every constraint gets a slack (diagnosis).

        Parameters
        ----------
        soften_all : bool
            Give every state/output constraint a slack (the least-violation problem).

        Returns
        -------
        NLP
        """
        return transcribe(self, soften_all)

    def initial_point(self, guess: Any = None) -> np.ndarray:
        """The NLP decision vector a solve starts from (see ``guess`` of :meth:`solve`).

        Parameters
        ----------
        guess : mapping, OCPResult or xarray.Dataset, optional
            As for :meth:`solve`.

        Returns
        -------
        numpy.ndarray
            The start, inside the variable bounds [each variable's units].
        """
        from .guess import make_start, start_vector

        if self._prob is None:
            self._prob = self.build()
        return start_vector(self, self._prob, make_start(self, guess), self.x0_vector(),
                            self.p_values())

    def solve(self, *, guess: Any = None, starts: Any = 1, seed: int = 0,
              warm_start: OCPResult | None = None, tol: float = 1e-10, max_iter: int = 3000,
              diagnose: bool = True, max_wall_time: float | None = None,
              raise_on_failure: bool = True) -> OCPResult:
        """Solve with IPOPT, from a guess or several starts, and classify the outcome.

        Parameters
        ----------
        guess : mapping, OCPResult or xarray.Dataset, optional
            Initial guess: control and state names → constants or profiles (one value
            per interval for a control, per node for a state; ``"T"`` for a free final
            time), or a previous plan interpolated onto this grid. Unnamed states are
            simulated from the guessed controls. Default: the previous (else default)
            inputs held, states simulated.
        starts : int or sequence
            Multistart: an int ``n`` runs the guess plus ``n - 1`` starts sampled within
            the control bounds; a sequence runs each of its guesses. All reuse one built
            NLP; the best converged solve is returned, every start's outcome is in
            ``stats["starts"]``.
        seed : int
            Seed of the sampled starts.
        warm_start : OCPResult, optional
            A previous result of this same NLP: primal-dual warm start from its
            ``w_opt``, ``lam_x`` and ``lam_g``. A result of a differently sized problem is
            a :class:`~processtwin.errors.ConfigError` (use ``guess=`` to interpolate it).
        tol : float
            IPOPT's convergence tolerance on the scaled NLP error [-] (``ipopt.tol``).
        max_iter : int
            IPOPT's iteration limit.
        diagnose : bool
            On a failure that may be infeasibility, re-solve with every constraint
            softened: only if that needs slack is the problem called infeasible, naming
            the constraints, each checked by re-simulating the softened plan.
        max_wall_time : float, optional
            Wall-time limit of each IPOPT run [s].
        raise_on_failure : bool
            Raise :class:`~processtwin.errors.SolverError` (with ``status`` and the failed
            ``result``) when no start converged; otherwise return the failed result
            (``success`` False).

        Returns
        -------
        OCPResult

        Raises
        ------
        SolverError
            No start converged (``status``: ``"infeasible"``, ``"limit"``,
            ``"numerical"`` or ``"failed"``).
        """
        return solve_ocp(self, guess=guess, starts=starts, seed=seed, warm_start=warm_start,
                         tol=tol, max_iter=max_iter, diagnose=diagnose,
                         max_wall_time=max_wall_time, raise_on_failure=raise_on_failure)

    def verify(self, result: OCPResult, *, rtol: float = 1e-10, atol: float = 1e-12
               ) -> dict:
        """Re-simulate a plan with the JAX simulator (adaptive, tight tolerances): the
        objective re-simulated beside the predicted one, the largest deviation of the
        states, and every constraint's worst value on the re-simulated trajectory.

        Parameters
        ----------
        result : OCPResult
            A result of this OCP.
        rtol, atol : float
            Tolerances of the re-simulation [-, state units].

        Returns
        -------
        dict
            ``objective`` (predicted), ``objective_resimulated``, ``state_error`` (state
            → largest |plan − re-simulation| at the nodes [state units]) and
            ``violations`` (constraint label → largest violation > 0 [its units]).
        """
        from .check import verify_plan

        return verify_plan(self, result, rtol=rtol, atol=atol)
