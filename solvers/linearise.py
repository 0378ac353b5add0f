"""Linearise any model around an operating point and a forecast, and sample it exactly:
the discrete affine, time-varying system an LP controller plans with.

Interval :math:`k` of length :math:`\\Delta t` holds the manipulated inputs :math:`u_k` and
the forecast disturbances :math:`d_k`. Around the reference :math:`(\\bar x, \\bar u_k, d_k)`
the model's right-hand side is :math:`f \\approx A_k x + B_k u + f_k` (Jacobians by
``jax.jacfwd`` of the model's own equations, never written twice), which the zero-order hold
samples exactly with one matrix exponential,

.. math::

    \\exp\\!\\left(\\begin{bmatrix} A & B & f \\\\ 0 & 0 & 0 \\end{bmatrix}\\Delta t\\right)
    = \\begin{bmatrix} \\Phi & \\Gamma & c \\\\ 0 & I & 0 \\\\ 0 & 0 & 1 \\end{bmatrix},
    \\qquad x_{k+1} = \\Phi_k x_k + \\Gamma_k u_k + c_k,

and the outputs the same way, :math:`y = C_k x + D_k u + e_k`. A model that is linear in
states and inputs for given disturbances (every building here) is then exact; when
:math:`A, B` do not change along the forecast one exponential serves the whole horizon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.linalg import expm

from processtwin.errors import ConfigError
from processtwin.model import Model

__all__ = ["AffineSystem", "forecast_matrix", "linearise"]


@dataclass(frozen=True)
class AffineSystem:
    """A sampled affine time-varying model over ``N`` intervals of ``dt``.

    ``x[k+1] = A[k] x[k] + B[k] u[k] + c[k]`` and ``y = C[k] x + D[k] u + e[k]`` during
    interval ``k`` (flat vectors in the model's layout order).

    Attributes
    ----------
    dt : float
        Interval length [model time unit].
    A, B, c : numpy.ndarray
        ``(N, nx, nx)``, ``(N, nx, nu)``, ``(N, nx)``: the sampled dynamics.
    C, D, e : numpy.ndarray
        ``(N, ny, nx)``, ``(N, ny, nu)``, ``(N, ny)``: the outputs.
    states, controls, outputs : tuple of str
        Flat names (``"T_i[0]"``) of the state, manipulated-input and output vectors.
    x_ref : numpy.ndarray
        State the model was linearised at.
    u_ref : numpy.ndarray
        ``(N, nu)`` inputs it was linearised at.
    """

    dt: float
    A: np.ndarray
    B: np.ndarray
    c: np.ndarray
    C: np.ndarray
    D: np.ndarray
    e: np.ndarray
    states: tuple[str, ...]
    controls: tuple[str, ...]
    outputs: tuple[str, ...]
    x_ref: np.ndarray
    u_ref: np.ndarray

    @property
    def N(self) -> int:
        """Number of intervals."""
        return int(self.A.shape[0])

    def simulate(self, x0: Any, u: Any) -> np.ndarray:
        """States ``(N + 1, nx)`` from ``x0`` under the inputs ``u`` ``(N, nu)``."""
        x = np.empty((self.N + 1, self.A.shape[1]))
        x[0] = np.asarray(x0, dtype=float)
        u = np.asarray(u, dtype=float)
        for k in range(self.N):
            x[k + 1] = self.A[k] @ x[k] + self.B[k] @ u[k] + self.c[k]
        return x


@lru_cache(maxsize=32)
def _indices(model: Model) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    lay = model.layout
    man = [n for n, v in model.inputs().items() if v.kind == "manipulated"]
    dis = [n for n, v in model.inputs().items() if v.kind != "manipulated"]
    return lay.inputs.indices(man), lay.inputs.indices(dis), man, dis


@lru_cache(maxsize=32)
def _names(model: Model, outputs: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Flat names of the states, the manipulated inputs and the kept outputs."""
    lay = model.layout
    im = _indices(model)[0]
    flat_in, flat_out = lay.inputs.flat_names(), lay.outputs.flat_names()
    return (tuple(lay.states.flat_names()), tuple(flat_in[i] for i in im),
            tuple(flat_out[i] for i in lay.outputs.indices(list(outputs))))


def forecast_matrix(model: Model, forecast: Mapping[str, Any], n: int, *,
                    kind: str = "disturbance") -> np.ndarray:
    """The ``(n, nd)`` matrix of a model's disturbances (or, ``kind="manipulated"``, its
    manipulated inputs) over ``n`` intervals, in layout order.

    Parameters
    ----------
    model : Model
        The model.
    forecast : mapping
        Input name → a constant, an array ``(n,)`` or ``(n, size)`` for a vector input (or
        ``(size,)`` held); missing names take their declared default.
    n : int
        Number of intervals.
    kind : {"disturbance", "manipulated"}
        Which inputs.

    Returns
    -------
    numpy.ndarray
        ``(n, nd)`` values in the flat layout order of those inputs.

    Raises
    ------
    ConfigError
        An unknown name, or an array of the wrong length (expected vs got).
    """
    lay = model.layout
    names = [nm for nm, v in model.inputs().items()
             if (v.kind == "manipulated") == (kind == "manipulated")]
    unknown = sorted(set(forecast) - set(names))
    if unknown:
        raise ConfigError(f"`{model.name}` has no {kind} input {', '.join(unknown)}; its "
                          f"{kind} inputs are {', '.join(names) or 'none'}.")
    cols = []
    for nm in names:
        leaf = lay.inputs.leaf(nm)
        size = leaf.size
        v = np.asarray(forecast.get(nm, leaf.var.default), dtype=float)
        if v.ndim == 0:
            v = np.full((n, size), float(v))
        elif v.ndim == 1 and size > 1 and v.shape[0] == size and n != size:
            v = np.tile(v, (n, 1))
        elif v.ndim == 1:
            if v.shape[0] != n:
                raise ConfigError(f"input `{nm}` has {v.shape[0]} values; the horizon has "
                                  f"{n} intervals.")
            v = np.repeat(v[:, None], size, axis=1)
        if v.shape != (n, size):
            raise ConfigError(f"input `{nm}` must be ({n},) or ({n}, {size}) values over "
                              f"the horizon, got shape {v.shape}.")
        if not np.all(np.isfinite(v)):
            raise ConfigError(f"input `{nm}` has non-finite values over the horizon.")
        cols.append(v)
    return np.concatenate(cols, axis=1) if cols else np.zeros((n, 0))


@lru_cache(maxsize=32)
def _jacobians(model: Model, outputs: tuple[str, ...]) -> Any:
    """jit(vmap) of the rhs and output values and Jacobians over the intervals."""
    import jax
    import jax.numpy as jnp

    from processtwin.ops import jax_ops

    lay = model.layout
    im, idist, _, _ = _indices(model)
    nu_all = len(lay.inputs.flat_names())
    out_idx = lay.outputs.indices(list(outputs))

    def full_u(u: Any, d: Any) -> Any:
        return jnp.zeros(nu_all, u.dtype).at[im].set(u).at[idist].set(d)

    def f(x: Any, u: Any, d: Any) -> Any:
        xs = lay.states.unravel(x, jax_ops)
        return lay.states.ravel(model.rhs(0.0, xs, lay.inputs.unravel(full_u(u, d), jax_ops),
                                          jax_ops), jax_ops)

    def g(x: Any, u: Any, d: Any) -> Any:
        xs = lay.states.unravel(x, jax_ops)
        y = lay.outputs.ravel(model.measure(0.0, xs, lay.inputs.unravel(full_u(u, d),
                                                                        jax_ops), jax_ops),
                              jax_ops)
        return y[out_idx]

    def one(x: Any, u: Any, d: Any) -> Any:
        return (f(x, u, d), jax.jacfwd(f, 0)(x, u, d), jax.jacfwd(f, 1)(x, u, d),
                g(x, u, d), jax.jacfwd(g, 0)(x, u, d), jax.jacfwd(g, 1)(x, u, d))

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def linearise(model: Model, x: Any, forecast: Mapping[str, Any] | np.ndarray, dt: float,
              n: int | None = None, *, u_ref: Mapping[str, Any] | np.ndarray | None = None,
              outputs: Sequence[str] | None = None) -> AffineSystem:
    """Linearise ``model`` at state ``x`` along a disturbance forecast and sample it with a
    zero-order hold of ``dt``.

    Parameters
    ----------
    model : Model
        A continuous-time model (its parameters as given).
    x : mapping or array
        State to linearise at (the estimate), by name or flat.
    forecast : mapping or numpy.ndarray
        Disturbances over the horizon (see :func:`forecast_matrix`), or that matrix.
    dt : float
        Interval length [model time unit].
    n : int, optional
        Number of intervals (default: the forecast's length).
    u_ref : mapping or numpy.ndarray, optional
        Manipulated inputs to linearise at (default their declared defaults).
    outputs : sequence of str, optional
        Outputs to keep (default all).

    Returns
    -------
    AffineSystem
        The sampled model.

    Raises
    ------
    ConfigError
        A discrete-time model, ``dt`` ≤ 0, or inputs of the wrong shape.
    """
    if model.is_discrete:
        raise ConfigError(f"`{model.name}` is a discrete-time model; the LP controller "
                          "samples continuous-time models only.")
    if not dt > 0:
        raise ConfigError(f"`dt` must be > 0 [{model.time_unit}], got {dt!r}.")
    lay = model.layout
    outputs = tuple(outputs) if outputs is not None else tuple(lay.outputs.names)
    if isinstance(forecast, np.ndarray):
        d = np.atleast_2d(np.asarray(forecast, dtype=float))
        n = d.shape[0] if n is None else n
    else:
        if n is None:
            lengths = {np.shape(v)[0] for v in forecast.values() if np.ndim(v) >= 1}
            if len(lengths) != 1:
                raise ConfigError("give `n` (the number of intervals): the forecast's "
                                  "lengths are " + (str(sorted(lengths)) or "undefined"))
            n = lengths.pop()
        d = forecast_matrix(model, forecast, n)
    if isinstance(u_ref, np.ndarray):
        u = np.broadcast_to(np.asarray(u_ref, dtype=float), (n, len(_indices(model)[0])))
    else:
        u = forecast_matrix(model, u_ref or {}, n, kind="manipulated")
    xv = lay.states.values(x) if not isinstance(x, np.ndarray) else np.asarray(x, float)
    fv, A, B, gv, C, D = (np.asarray(a) for a in _jacobians(model, outputs)(xv, u, d))
    nx, nu = A.shape[1], B.shape[2]
    aff = fv - np.einsum("kij,j->ki", A, xv) - np.einsum("kij,kj->ki", B, u)
    same = bool(np.array_equal(A, np.broadcast_to(A[0], A.shape))
                and np.array_equal(B, np.broadcast_to(B[0], B.shape)))
    Ad = np.empty_like(A)
    Bd = np.empty_like(B)
    cd = np.empty_like(aff)
    for k in range(n) if not same else (0,):
        M = np.zeros((nx + nu + 1, nx + nu + 1))
        M[:nx, :nx] = A[k]
        M[:nx, nx:nx + nu] = B[k]
        M[:nx, -1] = aff[k]
        E = expm(M * dt)
        Ad[k], Bd[k], cd[k] = E[:nx, :nx], E[:nx, nx:nx + nu], E[:nx, -1]
    if same:
        # one exponential for the horizon: the affine term by the same integral matrix
        M = np.zeros((2 * nx, 2 * nx))
        M[:nx, :nx] = A[0]
        M[:nx, nx:] = np.eye(nx)
        E = expm(M * dt)
        Ad[:] = E[:nx, :nx]
        Bd[:] = E[:nx, nx:] @ B[0]
        cd[:] = aff @ E[:nx, nx:].T
    e = gv - np.einsum("kij,j->ki", C, xv) - np.einsum("kij,kj->ki", D, u)
    states, controls, out_names = _names(model, outputs)
    return AffineSystem(dt=float(dt), A=Ad, B=Bd, c=cd, C=C, D=D, e=e, states=states,
                        controls=controls, outputs=out_names, x_ref=xv, u_ref=u)
