"""The moving-horizon estimation NLP: one window of samples as a CasADi problem.

Nodes ``0..N`` of the window are the estimate before the window (node 0, its prior) and the
``N`` samples in it. The decision variables are the augmented state at every node and one
normalised process-noise vector per interval,

.. math::

    \\min_{z_0..z_N,\\ v_1..v_N}\\ \\|A^{-1}(z_0 - \\bar z)\\|^2
    + \\sum_{j=1}^{N} \\|W_j (y_j - h(z_j))\\|^2 + \\sum_{j=1}^{N} \\|v_j\\|^2
    \\quad\\text{s.t.}\\quad z_j = \\phi_j(z_{j-1}) + L_j v_j,\\ \\ \\ell \\le z_j \\le u,

with ``A Aᵀ`` the prior covariance, ``W_j`` the whitening of the measurement noise of the
channels used at sample ``j`` (``W_j R W_jᵀ = I`` on them, zero columns for the others;
``diag(1/σ)`` for independent channels), ``φ_j`` the model over the
interval (RK4, or a discrete model's own map) and ``L_j L_jᵀ`` the process-noise
covariance the interval adds. ``v`` rather than ``w = L v`` keeps the cost's Hessian regular
where the noise covariance is singular (a parameter held constant). Every interval has the
same number of sub-steps, so one CasADi ``Function`` of the interval map, mapped over the
window, builds the whole problem.
"""

from __future__ import annotations

from typing import Any

import casadi as ca
import numpy as np

from processtwin.estimate.core import FilterSpec
from processtwin.ops import casadi_ops

from .status import classify

__all__ = ["WindowNLP"]


def _model_at(spec: FilterSpec, z: Any) -> Any:
    nx = spec.nx
    if not spec.estimate:
        return spec.model
    return spec.model.with_params({k: z[nx + i] for i, k in enumerate(spec.estimate)})


def _rhs(spec: FilterSpec, t: Any, z: Any, u: Any) -> Any:
    model = _model_at(spec, z)
    lay = model.layout
    x = lay.states.unravel(z[:spec.nx], casadi_ops)
    dx = lay.states.ravel(model.rhs(t, x, lay.inputs.unravel(u, casadi_ops), casadi_ops),
                          casadi_ops)
    return ca.vertcat(dx, ca.SX.zeros(spec.nz - spec.nx))


def _interval_map(spec: FilterSpec, substeps: int) -> ca.Function:
    """``(z, u, t, h) -> z(t + h)``: ``substeps`` RK4 steps of length ``h / substeps``; a
    discrete-time model takes its own map once per sample period in ``h`` (at most
    ``substeps`` of them)."""
    z = ca.SX.sym("z", spec.nz)
    u = ca.SX.sym("u", spec.model.layout.inputs.size)
    t = ca.SX.sym("t")
    h = ca.SX.sym("h")
    model = spec.model
    zz = z
    if model.is_discrete:
        dt = model.sample_time
        n = ca.round(h / dt)
        for i in range(substeps):
            m = _model_at(spec, zz)
            lay = m.layout
            x1 = lay.states.ravel(m.step(t + i * dt, lay.states.unravel(zz[:spec.nx], casadi_ops),
                                         lay.inputs.unravel(u, casadi_ops), dt, casadi_ops),
                                  casadi_ops)
            zz = ca.if_else(i < n, ca.vertcat(x1, zz[spec.nx:]), zz)
    else:
        hs = h / substeps
        for i in range(substeps):
            ti = t + i * hs
            k1 = _rhs(spec, ti, zz, u)
            k2 = _rhs(spec, ti + hs / 2, zz + hs / 2 * k1, u)
            k3 = _rhs(spec, ti + hs / 2, zz + hs / 2 * k2, u)
            k4 = _rhs(spec, ti + hs, zz + hs * k3, u)
            zz = zz + hs / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return ca.Function("phi", [z, u, t, h], [zz])


def _measure_map(spec: FilterSpec) -> ca.Function:
    """``(z, u, t) -> y`` of the filter's channels."""
    z = ca.SX.sym("z", spec.nz)
    u = ca.SX.sym("u", spec.model.layout.inputs.size)
    t = ca.SX.sym("t")
    model = _model_at(spec, z)
    lay = model.layout
    y = lay.outputs.ravel(model.measure(t, lay.states.unravel(z[:spec.nx], casadi_ops),
                                        lay.inputs.unravel(u, casadi_ops), casadi_ops),
                          casadi_ops)
    idx = [int(i) for i in lay.outputs.indices(spec.channels)]
    return ca.Function("h", [z, u, t], [y[idx]])



class WindowNLP:
    """The MHE problem of a window of ``N`` samples, built once and re-solved.

    Parameters
    ----------
    spec : FilterSpec
        Model, tracked parameters, measurement noise and bounds (the EKF's).
    N : int
        Samples in the window.
    substeps : int
        RK4 sub-steps per interval (continuous time) or the most model samples per
        interval (discrete time).
    tol : float
        IPOPT's convergence tolerance.
    max_iter : int
        IPOPT's iteration limit.
    """

    def __init__(self, spec: FilterSpec, N: int, substeps: int, tol: float = 1e-8,
                 max_iter: int = 100) -> None:
        nz, nu, ny = spec.nz, spec.model.layout.inputs.size, spec.ny
        self.N, self.nz, self.nu, self.ny, self.substeps = N, nz, nu, ny, substeps
        phi = _interval_map(spec, substeps)
        hm = _measure_map(spec)
        Z = ca.SX.sym("Z", nz, N + 1)
        V = ca.SX.sym("V", nz, N)
        # parameters: prior mean and inverse factor, node times, samples and weights,
        # interval inputs, noise factors (column-major nz × nz per interval)
        zbar = ca.SX.sym("zbar", nz)
        Ainv = ca.SX.sym("Ainv", nz, nz)
        T = ca.SX.sym("T", 1, N + 1)
        Y = ca.SX.sym("Y", ny, N)
        W = ca.SX.sym("W", ny * ny, N)
        U = ca.SX.sym("U", nu, N)
        L = ca.SX.sym("L", nz * nz, N)
        Zn = phi.map(N)(Z[:, :N], U, T[:, :N], T[:, 1:] - T[:, :N])
        LV = ca.horzcat(*[ca.reshape(L[:, j], nz, nz) @ V[:, j] for j in range(N)])
        g = ca.vec(Z[:, 1:] - Zn - LV)
        Yh = hm.map(N)(Z[:, 1:], U, T[:, 1:])
        res = ca.vertcat(*[ca.reshape(W[:, j], ny, ny) @ (Y[:, j] - Yh[:, j])
                           for j in range(N)])
        J = ca.sumsqr(Ainv @ (Z[:, 0] - zbar)) + ca.sumsqr(res) + ca.sumsqr(V)
        # stage order (z_0, v_1, z_1, v_2, ..., z_N): what a structure-exploiting solver reads
        x = ca.vertcat(*[ca.vertcat(Z[:, j], V[:, j]) for j in range(N)], Z[:, N])
        p = ca.vertcat(zbar, ca.vec(Ainv), ca.vec(T), ca.vec(Y), ca.vec(W), ca.vec(U),
                       ca.vec(L))
        self._nlp = {"x": x, "f": J, "g": g, "p": p}
        self._tol, self._max_iter = tol, max_iter
        self._solvers: dict[str, Any] = {}
        lo = np.asarray(spec.lower, dtype=float)
        hi = np.asarray(spec.upper, dtype=float)
        free = np.full(nz, np.inf)
        self.lbx = np.concatenate([*[np.r_[lo, -free]] * N, lo])
        self.ubx = np.concatenate([*[np.r_[hi, free]] * N, hi])
        self.n_g = nz * N
        self.covariance = self._covariance_fn(spec, phi, hm)

    def solver(self, name: str) -> Any:
        """The CasADi solver ``name`` ("fatrop" or "ipopt") of this problem, built once.

        fatrop (Vanroye et al. 2023) exploits the stage structure of the window (an
        interior-point method on the Riccati recursion): about twice as fast as IPOPT
        here. IPOPT is the fall-back when fatrop fails."""
        if name not in self._solvers:
            if name == "fatrop":
                opts = {"structure_detection": "auto", "equality": [True] * (self.nz * self.N),
                        "expand": True, "fatrop.print_level": 0, "print_time": False,
                        "fatrop.tol": self._tol, "fatrop.max_iter": self._max_iter,
                        # windows start from the previous one, shifted: near the optimum
                        "fatrop.mu_init": 1e-5}
            elif name == "ipopt":
                opts = {"ipopt.print_level": 0, "ipopt.sb": "yes", "print_time": False,
                        "ipopt.tol": self._tol, "ipopt.max_iter": self._max_iter,
                        "ipopt.mu_strategy": "adaptive"}
            else:
                raise ValueError(f"unknown MHE solver {name!r}; use 'fatrop' or 'ipopt'.")
            self._solvers[name] = ca.nlpsol(f"mhe_{name}", name, self._nlp, opts)
        return self._solvers[name]

    def _covariance_fn(self, spec: FilterSpec, phi: ca.Function, hm: ca.Function
                       ) -> ca.Function:
        """``(Z, U, T, L, P0, W) -> P_N``: the Gauss–Newton covariance of the last node, i.e.
        the Kalman covariance recursion linearised along the solution ``Z`` from the prior
        covariance ``P0``, with the whitened measurements ``W_j y_j`` (unit noise) taken
        one at a time."""
        nz, nu, N = self.nz, self.nu, self.N
        z = ca.SX.sym("z", nz)
        u = ca.SX.sym("u", nu)
        t = ca.SX.sym("t")
        h = ca.SX.sym("h")
        A = ca.Function("A", [z, u, t, h], [ca.jacobian(phi(z, u, t, h), z)]).map(N)
        H = ca.Function("H", [z, u, t], [ca.jacobian(hm(z, u, t), z)]).map(N)
        Z = ca.MX.sym("Z", nz, N + 1)
        U = ca.MX.sym("U", nu, N)
        T = ca.MX.sym("T", 1, N + 1)
        L = ca.MX.sym("L", nz * nz, N)
        P0 = ca.MX.sym("P0", nz, nz)
        W = ca.MX.sym("W", self.ny * self.ny, N)
        As = A(Z[:, :N], U, T[:, :N], T[:, 1:] - T[:, :N])
        Hs = H(Z[:, 1:], U, T[:, 1:])
        ny = self.ny
        P = P0
        for j in range(N):
            Aj = As[:, j * nz:(j + 1) * nz]
            Lj = ca.reshape(L[:, j], nz, nz)
            P = Aj @ P @ Aj.T + Lj @ Lj.T
            Hj = ca.reshape(W[:, j], ny, ny) @ Hs[:, j * nz:(j + 1) * nz]
            for c in range(ny):  # whitened: unit noise; a zero row changes nothing
                hc = Hj[c, :]
                Ph = P @ hc.T
                P = P - (Ph @ Ph.T) / (hc @ Ph + 1.0)
            P = 0.5 * (P + P.T)
        return ca.Function("P_N", [Z, U, T, L, P0, W], [P]).expand()

    def solve(self, zbar: np.ndarray, P0: np.ndarray, T: np.ndarray, Y: np.ndarray,
              W: np.ndarray, U: np.ndarray, L: np.ndarray,
              guess: tuple[np.ndarray, np.ndarray], solver: str = "fatrop"
              ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Solve one window.

        Parameters
        ----------
        zbar, P0 : arrays (nz,), (nz, nz)
            Prior mean and covariance of node 0.
        T : array (N + 1,)
            Node times [model time unit], non-decreasing.
        Y : array (N, ny)
            Samples (0 where not used).
        W : array (N, ny, ny)
            Whitening of each sample's used channels (see the module notes).
        U : array (N, nu)
            Inputs held over each interval.
        L : array (N, nz, nz)
            Process-noise factors per interval.
        guess : arrays (N + 1, nz), (N, nz)
            Starting point: states at the nodes and normalised noises.
        solver : {"fatrop", "ipopt"}
            Which NLP solver.

        Returns
        -------
        Z, V, info
            States (N + 1, nz), normalised noises (N, nz), and ``status`` (converged,
            limit, infeasible, numerical or failed), ``success``, ``solver``,
            ``iterations``, ``objective``.
        """
        C = np.linalg.cholesky(P0)
        Ainv = np.linalg.solve(C, np.eye(self.nz))
        # CasADi is column-major: a matrix parameter's columns (one per node) are contiguous
        p = np.concatenate([zbar, Ainv.ravel(order="F"), T, Y.ravel(),
                            np.transpose(W, (0, 2, 1)).ravel(), U.ravel(),
                            np.transpose(L, (0, 2, 1)).ravel()])
        Zg, Vg = guess
        x0 = np.concatenate([np.hstack([Zg[:-1], Vg]).ravel(), Zg[-1]])
        nlpsol = self.solver(solver)
        sol = nlpsol(x0=x0, p=p, lbx=self.lbx, ubx=self.ubx, lbg=0.0, ubg=0.0)
        st = nlpsol.stats()
        x = np.asarray(sol["x"]).ravel()
        nz, N = self.nz, self.N
        stages = x[:2 * nz * N].reshape(N, 2 * nz)
        Z = np.vstack([stages[:, :nz], x[2 * nz * N:]])
        V = stages[:, nz:]
        ok = bool(st["success"]) and bool(np.all(np.isfinite(x)))
        status = "converged" if ok else classify(st)
        if status == "infeasible?":  # the solver's own, unverified claim
            status = "failed"
        if not ok and status == "converged":  # "succeeded" on non-finite values
            status = "numerical"
        return Z, V, {"status": status, "success": ok, "solver": solver,
                      "iterations": int(st.get("iter_count", -1)),
                      "objective": float(sol["f"])}

    def last_covariance(self, Z: np.ndarray, U: np.ndarray, T: np.ndarray, L: np.ndarray,
                        P0: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Gauss–Newton covariance of the last node (see :meth:`_covariance_fn`)."""
        N = self.N
        P = self.covariance(Z.T, U.T, T[None, :], np.transpose(L, (0, 2, 1)).reshape(N, -1).T,
                            P0, np.transpose(W, (0, 2, 1)).reshape(N, -1).T)
        return np.asarray(P)
