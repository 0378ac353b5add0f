"""The economic-MPC linear programme, written twice on purpose: as a Pyomo model (the
formulation of record, readable and solvable by any Pyomo LP/MILP solver) and as a HiGHS
matrix (the persistent fast path of the receding horizon). Both are built from the same
:class:`~processtwin.solvers.linearise.AffineSystem`; the tests hold their optima equal.

Decision variables per interval :math:`k = 0 … N-1` (scaled: inputs and outputs declared in
W as kW, time in hours):

* states :math:`x_k` (:math:`x_0` fixed to the estimate), manipulated inputs :math:`u_k`
  within their bounds;
* :math:`p_k`, the priced output (electric power) averaged over the interval
  (trapezoid of its start and end values, exact when it does not depend on the state);
* comfort slacks :math:`s^-_{k,z}, s^+_{k,z} \\ge 0` of each comfort output at the end of
  the interval; the peak :math:`\\hat p \\ge p_k` when a demand charge is priced;
* with staging, :math:`o_k \\in \\{0, 1\\}`: the staged output is 0 when off and within
  ``[min_level, upper]`` when on, with minimum run and off times.

Minimise :math:`\\sum_k \\pi_k\\,\\Delta t\\,p_k + w \\Delta t \\sum_{k,z}(s^-+s^+) +
\\pi_{peak}\\,\\hat p` subject to the sampled dynamics, the bands and the output limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from processtwin.errors import SolverError

from .linearise import AffineSystem

__all__ = ["HighsLP", "LPData", "build_pyomo", "layout_columns", "update_pyomo"]


@dataclass
class LPData:
    """Everything that defines one economic LP besides the sampled model.

    Attributes
    ----------
    affine : AffineSystem
        The sampled model (``A, B, c, C, D, e``).
    x0 : numpy.ndarray
        Estimated state (flat).
    price : numpy.ndarray
        ``(N,)`` energy price of each interval [currency per kWh of the priced output].
    band_lo, band_hi : numpy.ndarray
        ``(N, nz)`` comfort band of each comfort output at the end of each interval
        [output units].
    u_lo, u_hi : numpy.ndarray
        ``(nu,)`` bounds of the manipulated inputs [model units].
    lim_lo, lim_hi : numpy.ndarray
        ``(nl,)`` hard limits of the limited outputs [output units] (±inf: none).
    power : int
        Index (among the affine outputs) of the priced output.
    comfort : numpy.ndarray
        Indices of the comfort outputs.
    limited : numpy.ndarray
        Indices of the limited outputs.
    comfort_price : float
        Price of discomfort [currency per K·h] (per output unit · hour).
    peak_price : float
        Demand charge [currency per kW of the horizon's peak]; 0: none.
    u_scale, y_scale : numpy.ndarray
        Model units per LP unit of each input and output (1000 for W → kW).
    dt_h : float
        Interval length [h].
    staging : tuple or None
        ``(limited index, min_level, upper, min_on, min_off, on_before, run_before)``:
        the staged output's position in ``limited``, its least on level, its upper bound,
        the minimum run and off times [intervals], whether the unit was on before ``k = 0``
        and for how many intervals it had been in that state.
    """

    affine: AffineSystem
    x0: np.ndarray
    price: np.ndarray
    band_lo: np.ndarray
    band_hi: np.ndarray
    u_lo: np.ndarray
    u_hi: np.ndarray
    lim_lo: np.ndarray
    lim_hi: np.ndarray
    power: int
    comfort: np.ndarray
    limited: np.ndarray
    comfort_price: float
    peak_price: float
    u_scale: np.ndarray
    y_scale: np.ndarray
    dt_h: float
    staging: tuple | None = None
    extra: dict = field(default_factory=dict)
    _scaled: dict | None = field(default=None, init=False, repr=False, compare=False)

    # ---- the scaled matrices both formulations read ---------------------------------
    def scaled(self) -> dict[str, np.ndarray]:
        """Dynamics and outputs in LP units: ``B`` per LP input unit, outputs per LP
        output unit (computed once per data; treat as read-only)."""
        if self._scaled is None:
            a = self.affine
            ys = self.y_scale[:, None]
            self._scaled = {"A": a.A, "B": a.B * self.u_scale[None, None, :], "c": a.c,
                            "C": a.C / ys[None],
                            "D": a.D * self.u_scale[None, None, :] / ys[None],
                            "e": a.e / self.y_scale[None, :]}
        return self._scaled

    def initial_fix(self) -> np.ndarray:
        """``(N,)`` forced on/off state from the run or off time carried in (-1: free)."""
        N = self.affine.N
        fix = -np.ones(N)
        if self.staging is None:
            return fix
        _, _, _, min_on, min_off, on_before, run = self.staging
        left = (min_on if on_before else min_off) - run
        if left > 0:
            fix[:min(int(left), N)] = 1.0 if on_before else 0.0
        return fix


def layout_columns(d: LPData) -> dict[str, Any]:
    """Column ranges of the HiGHS formulation: x, u, p, s_lo, s_hi, peak, on."""
    a = d.affine
    N, nx, nu, nz = a.N, a.A.shape[1], a.B.shape[2], len(d.comfort)
    off: dict[str, Any] = {}
    pos = 0
    for name, size in (("x", (N + 1) * nx), ("u", N * nu), ("p", N), ("s_lo", N * nz),
                       ("s_hi", N * nz), ("peak", 1 if d.peak_price > 0 else 0),
                       ("on", N if d.staging is not None else 0)):
        off[name] = (pos, pos + size)
        pos += size
    off["n"] = pos
    return off


# ---- HiGHS matrix ----------------------------------------------------------------------
class HighsLP:
    """The LP as HiGHS matrices, kept in one ``highspy.Highs`` instance that a receding
    horizon updates in place: bounds, costs and the coefficients that changed (each matrix
    entry remembers which entry of the sampled model it came from)."""

    def __init__(self, d: LPData) -> None:
        import highspy

        self.data = d
        s = d.scaled()
        self.pattern = {k: np.any(s[k] != 0.0, axis=0) for k in ("A", "B", "C", "D")}
        self.lp = self._build(d, s)
        self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", False)
        self.h.passModel(self.lp)
        #: the basis of the last solve as status codes, read before a rebuild (``passModel``
        #: drops the instance's basis) so a warm start can still use it
        self.kept: tuple[np.ndarray, np.ndarray] | None = None
        #: whether the last :meth:`update` passed the model anew (its basis then lost)
        self.rebuilt = False
        #: the basis the last warm start set (status codes), for a retry from it
        self.started: tuple[np.ndarray, np.ndarray] | None = None
        #: the last optimal solution (columns, row activities) and its basic variables
        #: (HiGHS's order), as :meth:`hold` took them and :meth:`basis_still_optimal`
        #: moved them
        self.held: dict[str, np.ndarray] | None = None
        #: bounds the last :meth:`update` moved, and only those (none: it changed more)
        self.moved: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._csc: Any = None

    # ---- assembly ---------------------------------------------------------------------
    def _build(self, d: LPData, s: dict) -> Any:
        import highspy

        a = d.affine
        N, nx, nu = a.N, a.A.shape[1], a.B.shape[2]
        cols = layout_columns(d)
        X = cols["x"][0] + np.arange((N + 1) * nx).reshape(N + 1, nx)
        U = cols["u"][0] + np.arange(N * nu).reshape(N, nu)
        P = cols["p"][0] + np.arange(N)
        nz = len(d.comfort)
        SL = cols["s_lo"][0] + np.arange(N * nz).reshape(N, nz)
        SH = cols["s_hi"][0] + np.arange(N * nz).reshape(N, nz)
        self.ri: list[np.ndarray] = []
        self.cj: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.src: list[tuple] = []
        self.nrow = 0
        self.blocks: dict[str, tuple[int, int]] = {}
        kk = np.arange(N)[:, None, None]

        def const(ri: Any, cj: Any, v: Any) -> None:
            ri, cj, v = np.broadcast_arrays(np.asarray(ri), np.asarray(cj),
                                            np.asarray(v, float))
            self.ri.append(ri.ravel())
            self.cj.append(cj.ravel())
            self.v.append(v.ravel())

        def mat(R: Any, C: Any, key: str, factor: float, o: np.ndarray) -> None:
            """Entries ``factor * s[key][k, o, j]`` at rows ``R[k, o]``, columns
            ``C[k, j]``, over the structural pattern only."""
            keep = self.pattern[key][o]                       # (no, nj)
            oo, jj = np.nonzero(keep)
            if not len(oo):
                return
            K = np.broadcast_to(kk[:, :, 0], (N, len(oo)))
            rows = R[:, oo] if R.ndim == 2 else np.broadcast_to(R[:, None], (N, len(oo)))
            cols_ = C[:, jj]
            src = (key, factor, K.ravel(), np.broadcast_to(o[oo], K.shape).ravel(),
                   np.broadcast_to(jj, K.shape).ravel())
            self.ri.append(rows.ravel())
            self.cj.append(cols_.ravel())
            self.v.append(factor * s[key][src[2], src[3], src[4]])
            self.src.append((len(self.v) - 1, *src))

        def block(name: str, n: int) -> np.ndarray:
            self.blocks[name] = (self.nrow, self.nrow + n)
            idx = self.nrow + np.arange(n)
            self.nrow += n
            return idx

        allx = np.arange(nx)
        R = block("dyn", N * nx).reshape(N, nx)
        const(R, X[1:], 1.0)
        mat(R, X[:-1], "A", -1.0, allx)
        mat(R, U, "B", -1.0, allx)
        ip = np.asarray([d.power])
        R = block("p", N)
        const(R, P, 1.0)
        mat(R, X[:-1], "C", -0.5, ip)
        mat(R, X[1:], "C", -0.5, ip)
        mat(R, U, "D", -1.0, ip)

        def output_end(R: np.ndarray, idx: np.ndarray) -> None:
            mat(R, X[1:], "C", 1.0, idx)
            mat(R, U, "D", 1.0, idx)

        if nz:
            R = block("comfort_lo", N * nz).reshape(N, nz)
            output_end(R, d.comfort)
            const(R, SL, 1.0)
            R = block("comfort_hi", N * nz).reshape(N, nz)
            output_end(R, d.comfort)
            const(R, SH, -1.0)
        if len(d.limited):
            R = block("limits", N * len(d.limited)).reshape(N, len(d.limited))
            output_end(R, d.limited)
        if d.peak_price > 0:
            R = block("peak", N)
            const(R, cols["peak"][0], 1.0)
            const(R, P, -1.0)
        if d.staging is not None:
            j, min_level, upper, _, _, on_before, _ = d.staging
            ON = cols["on"][0] + np.arange(N)
            idx = d.limited[j:j + 1]
            ys = d.y_scale[idx[0]]
            R = block("stage_hi", N).reshape(N, 1)
            output_end(R, idx)
            const(R[:, 0], ON, -upper / ys)
            R = block("stage_lo", N).reshape(N, 1)
            output_end(R, idx)
            const(R[:, 0], ON, -min_level / ys)
            _min_times(d, ON, block, const)
        self.cols, self.X, self.U, self.P, self.SL, self.SH = cols, X, U, P, SL, SH
        r = np.concatenate(self.ri)
        c = np.concatenate(self.cj)
        v = np.concatenate(self.v)
        # one CSC matrix; `order` puts the entries (in assembly order) into it
        order = np.lexsort((r, c))
        counts = np.bincount(c, minlength=cols["n"])
        self.order, self.rows, self.cols_of = order, r, c
        self.values = v                      # current values, assembly order
        self.offsets = np.cumsum([0] + [len(b) for b in self.v])
        row_lo, row_hi = self.row_bounds(d, s)
        col_lo, col_hi, cost, integ = _columns(d, cols)
        self.current = {"col_lo": col_lo, "col_hi": col_hi, "cost": cost, "row_lo": row_lo,
                        "row_hi": row_hi}
        lp = highspy.HighsLp()
        lp.num_col_ = cols["n"]
        lp.num_row_ = self.nrow
        lp.col_cost_ = cost
        lp.col_lower_ = col_lo
        lp.col_upper_ = col_hi
        lp.row_lower_ = row_lo
        lp.row_upper_ = row_hi
        self.start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        self.index = r[order].astype(np.int32)
        self.integrality = (np.zeros(cols["n"], np.int32) if integ is None
                            else integ.astype(np.int32))
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = self.start
        lp.a_matrix_.index_ = self.index
        lp.a_matrix_.value_ = v[order]
        if integ is not None:
            lp.integrality_ = [highspy.HighsVarType.kInteger if i else
                               highspy.HighsVarType.kContinuous for i in integ]
        return lp

    def row_bounds(self, d: LPData, s: dict) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of every row but the minimum-time ones, from ``d``."""
        N = d.affine.N
        lo, hi = [s["c"].ravel()], [s["c"].ravel()]
        ep = s["e"][:, d.power]
        lo.append(ep)
        hi.append(ep)
        nz = len(d.comfort)
        if nz:
            ez = s["e"][:, d.comfort]
            ysz = d.y_scale[d.comfort]
            lo += [(d.band_lo / ysz - ez).ravel(), np.full(N * nz, -np.inf)]
            hi += [np.full(N * nz, np.inf), (d.band_hi / ysz - ez).ravel()]
        nl = len(d.limited)
        if nl:
            el = s["e"][:, d.limited]
            ysl = d.y_scale[d.limited]
            llo = np.broadcast_to(d.lim_lo / ysl, (N, nl)) - el
            lhi = np.broadcast_to(d.lim_hi / ysl, (N, nl)) - el
            if d.staging is not None:
                j = d.staging[0]
                llo[:, j], lhi[:, j] = -np.inf, np.inf
            lo.append(llo.ravel())
            hi.append(lhi.ravel())
        if d.peak_price > 0:
            lo.append(np.zeros(N))
            hi.append(np.full(N, np.inf))
        if d.staging is not None:
            e_j = s["e"][:, d.limited[d.staging[0]]]
            lo += [np.full(N, -np.inf), -e_j]
            hi += [-e_j, np.full(N, np.inf)]
            for _, _, _, upper in _min_time_pairs(d):
                lo.append(np.full(len(upper), -np.inf))
                hi.append(upper)
        return np.concatenate(lo), np.concatenate(hi)

    # ---- receding-horizon update ------------------------------------------------------
    def fits(self, d: LPData) -> bool:
        """Whether ``d`` has this LP's structure (sizes, options, sparsity pattern)."""
        o = self.data
        if (d.affine.A.shape != o.affine.A.shape or d.affine.B.shape != o.affine.B.shape
                or d.affine.C.shape != o.affine.C.shape or d.power != o.power
                or not np.array_equal(d.comfort, o.comfort)
                or not np.array_equal(d.limited, o.limited)
                or (d.peak_price > 0) != (o.peak_price > 0)
                or (d.staging is None) != (o.staging is None)
                or (d.staging is not None and d.staging[:5] != o.staging[:5])
                or not np.array_equal(np.isfinite(d.lim_lo), np.isfinite(o.lim_lo))
                or not np.array_equal(np.isfinite(d.lim_hi), np.isfinite(o.lim_hi))):
            return False
        s = d.scaled()
        return all(not np.any((s[k] != 0.0) & ~self.pattern[k][None]) for k in self.pattern)

    def update(self, d: LPData, *, keep_basis: bool = False) -> int:
        """Change the instance to the data of ``d`` (same structure, see :meth:`fits`):
        only what differs from the data it holds — column and row bounds, costs, matrix
        entries (each remembers which entry of the sampled model it came from). When more
        than :attr:`REBUILD_FRACTION` of the entries changed (a moved horizon moves every
        interval's coefficients), the whole model is passed anew instead: one copy is
        cheaper than thousands of single-entry changes, and either way HiGHS must factor
        its basis again. ``keep_basis``: read the instance's basis first (into
        :attr:`kept`), for a warm start after such a rebuild.

        Returns
        -------
        int
            The number of matrix entries that changed.
        """
        before = self.data.scaled()
        self.data = d
        s = d.scaled()
        col_lo, col_hi, cost, _ = _columns(d, self.cols)
        row_lo, row_hi = self.row_bounds(d, s)
        new = {"col_lo": col_lo, "col_hi": col_hi, "cost": cost, "row_lo": row_lo,
               "row_hi": row_hi}
        # the linearisation at another state repeats the same affine terms to the last
        # bits (a 10-zone week: 3,400 row bounds moved by <= 8e-15, each sent to HiGHS and
        # re-checked there); what HiGHS holds stays where a value moved only that much
        new = {k: _unless_roundoff(v, self.current[k]) for k, v in new.items()}
        col_lo, col_hi, cost = new["col_lo"], new["col_hi"], new["cost"]
        row_lo, row_hi = new["row_lo"], new["row_hi"]
        if all(np.array_equal(s[k], before[k]) for k in ("A", "B", "C", "D")):
            vals = self.values          # the same sampled model (a re-plan from a new state)
        else:
            vals = self.values.copy()
            for slot, key, factor, K, O, J in self.src:
                vals[self.offsets[slot]:self.offsets[slot + 1]] = factor * s[key][K, O, J]
        vals = _unless_roundoff(vals, self.values)
        changed = np.flatnonzero(vals != self.values)
        h = self.h
        self.kept, self.rebuilt, self.moved = None, False, None
        if len(changed):
            self._csc = None
        if len(changed) > self.REBUILD_FRACTION * len(vals):
            if keep_basis:
                self.kept = self.read_basis()
            import highspy

            # the array form: assigning to a HighsLp's fields converts element by element
            # (~4.5 ms for a 10-zone week's 111,048 entries)
            status = h.passModel(
                self.lp.num_col_, self.nrow, len(vals), int(highspy.MatrixFormat.kColwise),
                int(highspy.ObjSense.kMinimize), 0.0, cost, col_lo, col_hi, row_lo, row_hi,
                self.start, self.index, np.ascontiguousarray(vals[self.order]),
                self.integrality)
            if status == highspy.HighsStatus.kError:  # (a warning: tiny entries dropped)
                raise SolverError("HiGHS refused the updated economic LP (passModel "
                                  "returned an error).")
            self.rebuilt = True
        else:
            cur = self.current

            def diff(lo: str, hi: str | None = None) -> np.ndarray:
                ne = new[lo] != cur[lo]
                if hi is not None:
                    ne |= new[hi] != cur[hi]
                return np.flatnonzero(ne).astype(np.int32)

            i = diff("col_lo", "col_hi")
            moved = {"cols": (i, cur["col_lo"][i], cur["col_hi"][i])}
            if len(i):
                h.changeColsBounds(len(i), i, col_lo[i], col_hi[i])
            i = diff("cost")
            recosted = len(i) > 0
            if len(i):
                h.changeColsCost(len(i), i, cost[i])
            i = diff("row_lo", "row_hi")
            moved["rows"] = (i, cur["row_lo"][i], cur["row_hi"][i])
            if len(i):
                h.changeRowsBounds(len(i), i, row_lo[i], row_hi[i])
            if not recosted and not len(changed):
                self.moved = moved
            for r, c, v in zip(self.rows[changed].tolist(), self.cols_of[changed].tolist(),
                               vals[changed].tolist(), strict=True):
                h.changeCoeff(r, c, v)
        self.current, self.values = new, vals
        self.started = None
        return len(changed)

    #: share of the matrix entries above which :meth:`update` passes the model anew
    REBUILD_FRACTION = 0.02

    def read_basis(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The instance's basis as status codes ``(columns, rows)``; ``None`` if it has
        none.

        Read as HiGHS's basic variables (one array) and, for the others, the bound each
        sits at in the last solution (the bounds :meth:`update` last passed): 0.85 ms at
        10 zones, where converting HiGHS's status lists costs 4.6 ms. Falls back to those
        lists when HiGHS has no factored basis to report."""
        h = self.h
        status, basic = h.getBasicVariables()
        if status != _ok() or not h.getBasis().valid:
            return self._read_basis_lists()
        cur = self.current
        if len(cur["row_lo"]) != h.getNumRow() or len(cur["col_lo"]) != h.getNumCol():
            return self._read_basis_lists()
        if self.held is not None:
            colv, rowv = self.held["col"], self.held["row"]
        else:
            sol = h.getSolution()
            colv, rowv = np.asarray(sol.col_value), np.asarray(sol.row_value)
        cs = _nonbasic(colv, cur["col_lo"], cur["col_hi"])
        rs = _nonbasic(rowv, cur["row_lo"], cur["row_hi"])
        basic = np.asarray(basic)
        cs[basic[basic >= 0]] = _BASIC
        rs[-1 - basic[basic < 0]] = _BASIC
        return cs, rs

    def _read_basis_lists(self) -> tuple[np.ndarray, np.ndarray] | None:
        b = self.h.getBasis()
        if not b.valid:
            return None
        return (np.fromiter(map(int, b.col_status), np.int8, self.h.getNumCol()),
                np.fromiter(map(int, b.row_status), np.int8, self.h.getNumRow()))

    def set_basis(self, cs: np.ndarray, rs: np.ndarray) -> bool:
        """Give HiGHS the basis of status codes ``cs, rs``; whether it took it."""
        import highspy

        table = _status_table()
        nb = highspy.HighsBasis()
        nb.col_status = [table[v] for v in cs.tolist()]
        nb.row_status = [table[v] for v in rs.tolist()]
        nb.valid = True
        # a basis HiGHS need not repair: taken as it is (~0 ms, where an "alien" one is
        # factored on the way in: 8 ms at 10 zones, then again by the run); HiGHS refuses
        # it if its count of basic variables is wrong, and then repairs it as alien
        nb.alien = False
        ok = self.h.setBasis(nb) == highspy.HighsStatus.kOk
        if not ok:
            nb.alien = True
            ok = self.h.setBasis(nb) == highspy.HighsStatus.kOk
        self.started = (cs, rs) if ok else None
        return ok

    def restore_basis(self) -> bool:
        """After :meth:`update` passed the model anew, start from the basis it kept;
        whether one was set (otherwise the instance still has its own, or none)."""
        return self.kept is not None and self.set_basis(*self.kept)  # kept: rebuilt

    def shifted_basis(self, k: int) -> bool:
        """Start from the previous optimal basis moved ``k`` intervals forward (a receding
        horizon that advanced ``k`` intervals: interval ``i`` of the new horizon is
        interval ``i + k`` of the old one; the last ``k`` repeat the old last interval; the
        fixed initial state keeps its status). The previous basis is the one :meth:`update`
        kept before a rebuild, else the instance's own. Not for MILPs. Returns whether the
        basis was set (``False``: none to shift, or HiGHS refused it — its count of basic
        variables came out wrong — and the instance's own is kept)."""
        N = self.data.affine.N
        if not 1 <= k < N or self.data.staging is not None:
            return False
        basis = self.kept if self.kept is not None else self.read_basis()
        if basis is None:
            return False
        cs, rs = (b.copy() for b in basis)

        def shift(st: np.ndarray, a: int, z: int, per: int, periods: int) -> None:
            if per == 0 or z <= a:
                return
            seg = st[a:z].reshape(periods, per)
            st[a:z] = np.concatenate([seg[k:], np.repeat(seg[-1:], k, axis=0)]).ravel()

        nx = self.data.affine.A.shape[1]
        for name, span in self.cols.items():
            if name in ("n", "peak", "on") or span[1] <= span[0]:
                continue
            a, z = span
            if name == "x":  # x_0 is fixed to the estimate: keep its status
                shift(cs, a + nx, z, nx, N)
            else:
                shift(cs, a, z, (z - a) // N, N)
        for a, z in self.blocks.values():
            if (z - a) % N == 0:
                shift(rs, a, z, (z - a) // N, N)
        return self.set_basis(cs, rs)

    # ---- a re-solve that keeps the basis -----------------------------------------------
    def hold(self) -> None:
        """After an optimal HiGHS solve: hold its solution and basic variables (an LP's;
        a MILP's solution has no basis to move)."""
        self.held = None
        if self.data.staging is not None:
            return
        status, basic = self.h.getBasicVariables()
        if status != _ok():
            return
        sol = self.h.getSolution()
        self.held = {"col": np.array(sol.col_value), "row": np.array(sol.row_value),
                     "basic": np.asarray(basic)}

    def basis_still_optimal(self, tol: float = 1e-9) -> bool:
        r"""Re-solve after an :meth:`update` that moved bounds only (a new state estimate:
        the initial state's; costs and matrix as they were) by keeping the optimal basis.

        The nonbasic variables go to their moved bounds, the basic ones follow by one
        solve with HiGHS's factor of the basis, :math:`B\,\Delta x_B = -A_N \Delta x_N`
        (0.26 ms for a 10-zone week, against ~2.7 ms for HiGHS to re-run without a pivot);
        the reduced costs do not change, so the result is optimal where it is feasible:
        every variable and row activity within its bounds and the rows satisfied, each
        to ``tol`` [LP units] (relative above 1). Otherwise nothing is changed and HiGHS
        must pivot (returns ``False``).

        Returns
        -------
        bool
            Whether the held solution is now the optimum of the updated LP.
        """
        held, moved = self.held, self.moved
        if held is None or moved is None:
            return False
        h, cur = self.h, self.current
        col, row, basic = held["col"].copy(), held["row"].copy(), held["basic"]
        ncol, nrow = len(col), len(row)
        is_basic = np.zeros(ncol + nrow, bool)
        is_basic[np.where(basic >= 0, basic, ncol - 1 - basic)] = True
        rhs = np.zeros(nrow)
        for kind, values, lo, hi, off in (("cols", col, cur["col_lo"], cur["col_hi"], 0),
                                          ("rows", row, cur["row_lo"], cur["row_hi"], ncol)):
            i, old_lo, old_hi = moved[kind]
            nb = ~is_basic[off + i]
            i, old_lo, old_hi = i[nb], old_lo[nb], old_hi[nb]
            if not len(i):
                continue
            v = values[i]
            at_hi = _nonbasic(v, old_lo, old_hi) == _UPPER
            at_zero = ~np.isfinite(old_lo) & ~np.isfinite(old_hi)
            new = np.where(at_hi, hi[i], lo[i])
            new[at_zero] = 0.0
            if not np.all(np.isfinite(new)):
                return False            # a bound it sat at is gone
            dv = new - v
            values[i] = new
            if kind == "cols":
                rhs -= self._matrix()[:, i] @ dv
            else:
                rhs[i] += dv
        if np.any(rhs):
            status, y = h.getBasisSolve(rhs)
            if status != _ok():
                return False
            y = np.asarray(y)
            bc = basic >= 0
            col[basic[bc]] += y[bc]
            row[-1 - basic[~bc]] -= y[~bc]

        def within(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
            with np.errstate(invalid="ignore"):
                return bool(np.all(v >= lo - tol * np.maximum(1.0, np.abs(lo)))
                            and np.all(v <= hi + tol * np.maximum(1.0, np.abs(hi))))

        if not (within(col, cur["col_lo"], cur["col_hi"])
                and within(row, cur["row_lo"], cur["row_hi"])
                and np.all(np.abs(self._matrix() @ col - row)
                           <= tol * np.maximum(1.0, np.abs(row)))):
            return False
        self.held = {"col": col, "row": row, "basic": basic}
        return True

    def _matrix(self) -> Any:
        """The constraint matrix as HiGHS holds it (entries at or below its
        ``small_matrix_value`` dropped), as a scipy CSC matrix."""
        if self._csc is None:
            import scipy.sparse as sp

            _, small = self.h.getOptionValue("small_matrix_value")
            v = np.ascontiguousarray(self.values[self.order])
            v = np.where(np.abs(v) <= small, 0.0, v)
            self._csc = sp.csc_matrix((v, self.index, self.start),
                                      shape=(self.nrow, len(self.start) - 1))
        return self._csc

    def solution(self) -> dict[str, np.ndarray]:
        """Primal values by block (LP units): the held solution, else HiGHS's."""
        col = (self.held["col"] if self.held is not None
               else np.asarray(self.h.getSolution().col_value))
        return {"x": col[self.X], "u": col[self.U], "p": col[self.P],
                "s_lo": col[self.SL], "s_hi": col[self.SH]}


#: change of an LP datum (relative, or absolute below 1) that is roundoff, not a change
ROUNDOFF = 1e-12


def _unless_roundoff(new: np.ndarray, held: np.ndarray) -> np.ndarray:
    """``new``, but ``held``'s value wherever the two differ by no more than
    :data:`ROUNDOFF` times the larger or 1 (LP units are balanced: kW, K, kWh; infinities
    compare exactly)."""
    ne = np.flatnonzero(new != held)
    if not len(ne):
        return new
    a, b = new[ne], held[ne]
    with np.errstate(invalid="ignore"):
        near = (np.isfinite(a) & np.isfinite(b)
                & (np.abs(a - b) <= ROUNDOFF * np.maximum(1.0, np.maximum(np.abs(a),
                                                                          np.abs(b)))))
    if near.any():
        new = new.copy()
        new[ne[near]] = b[near]
    return new


_LOWER, _BASIC, _UPPER, _ZERO = 0, 1, 2, 3  # HiGHS's HighsBasisStatus codes


def _nonbasic(value: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Status codes of nonbasic variables from their values: at the nearer finite bound
    (a fixed one: lower), free ones zero."""
    st = np.full(len(value), _ZERO, np.int8)
    flo, fhi = np.isfinite(lo), np.isfinite(hi)
    with np.errstate(invalid="ignore"):
        upper = fhi & (~flo | (np.abs(value - hi) < np.abs(value - lo)))
    st[flo] = _LOWER
    st[upper] = _UPPER
    return st


@lru_cache(maxsize=1)
def _ok() -> Any:
    import highspy

    return highspy.HighsStatus.kOk


@lru_cache(maxsize=1)
def _status_table() -> list[Any]:
    """HiGHS basis statuses by code (a list lookup: constructing an enum member per entry
    costs ~10x more, and a 10-zone week has 17,000 entries)."""
    import highspy

    members = list(highspy.HighsBasisStatus.__members__.values())
    table: list[Any] = [None] * (max(int(m) for m in members) + 1)
    for m in members:
        table[int(m)] = m
    return table


def _min_time_pairs(d: LPData) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """``(sign, k, t, upper)`` of the minimum run (sign 1) and off (sign −1) rows: a start
    at k keeps the unit on through t (``o_k - o_{k-1} - o_t <= 0``), a stop keeps it off
    (``o_{k-1} - o_k + o_t <= 1``); at ``k = 0`` the carried-in state ``o_{-1}`` moves to
    the right-hand side."""
    N = d.affine.N
    _, _, _, min_on, min_off, on_before, _ = d.staging
    out = []
    for length, sign in ((min_on, 1.0), (min_off, -1.0)):
        pairs = [(k, t) for k in range(N) for t in range(k + 1, min(N, k + int(length)))]
        if not pairs:
            continue
        kk, tt = (np.asarray(v) for v in zip(*pairs, strict=True))
        carried = np.where(kk > 0, 0.0, float(on_before))
        out.append((sign, kk, tt, (0.0 if sign > 0 else 1.0) + sign * carried))
    return out


def _min_times(d: LPData, ON: np.ndarray, block: Any, const: Any) -> None:
    """Add the minimum run and off time rows (see :func:`_min_time_pairs`)."""
    for n, (sign, kk, tt, _) in enumerate(_min_time_pairs(d)):
        R = block(f"min_time_{n}", len(kk))
        const(R, ON[kk], sign)
        const(R, ON[tt], -sign)
        has = kk > 0
        const(R[has], ON[kk[has] - 1], -sign)


def _columns(d: LPData, cols: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    a = d.affine
    N, nx = a.N, a.A.shape[1]
    n = cols["n"]
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    cost = np.zeros(n)
    x0, x1 = cols["x"]
    lo[x0:x0 + nx] = hi[x0:x0 + nx] = d.x0
    u0, u1 = cols["u"]
    lo[u0:u1] = np.tile(d.u_lo / d.u_scale, N)
    hi[u0:u1] = np.tile(d.u_hi / d.u_scale, N)
    p0, p1 = cols["p"]
    cost[p0:p1] = d.price * d.dt_h
    for name in ("s_lo", "s_hi"):
        s0, s1 = cols[name]
        lo[s0:s1] = 0.0
        cost[s0:s1] = d.comfort_price * d.dt_h
    if d.peak_price > 0:
        k0, _ = cols["peak"]
        cost[k0] = d.peak_price
    integ = None
    if d.staging is not None:
        o0, o1 = cols["on"]
        fix = d.initial_fix()
        lo[o0:o1] = np.where(fix >= 0, fix, 0.0)
        hi[o0:o1] = np.where(fix >= 0, fix, 1.0)
        integ = np.zeros(n, bool)
        integ[o0:o1] = True
    return lo, hi, cost, integ


# ---- Pyomo model -----------------------------------------------------------------------
def build_pyomo(d: LPData) -> Any:
    """The same LP as a Pyomo ``ConcreteModel`` with mutable parameters for everything a
    receding-horizon step changes (state, sampled model, prices, bands), so a persistent
    Pyomo solver updates it in place (see :func:`update_pyomo`)."""
    import pyomo.environ as pyo

    s = d.scaled()
    a = d.affine
    N, nx, nu = a.N, a.A.shape[1], a.B.shape[2]
    nz, nl = len(d.comfort), len(d.limited)
    pat = _patterns(s, d)
    m = pyo.ConcreteModel(name="economic_mpc")
    m.K = pyo.RangeSet(0, N - 1)
    m.K1 = pyo.RangeSet(0, N)
    m.I = pyo.RangeSet(0, nx - 1)
    m.J = pyo.RangeSet(0, nu - 1)
    m.Z = pyo.RangeSet(0, nz - 1) if nz else pyo.Set(initialize=[])
    m.L = pyo.RangeSet(0, nl - 1) if nl else pyo.Set(initialize=[])
    mut = {"mutable": True}
    m.x0 = pyo.Param(m.I, initialize=dict(enumerate(d.x0)), **mut)
    m.price = pyo.Param(m.K, initialize=dict(enumerate(d.price)), **mut)
    m.A = pyo.Param(m.K, pat["A"], initialize=0.0, **mut)
    m.B = pyo.Param(m.K, pat["B"], initialize=0.0, **mut)
    m.c = pyo.Param(m.K, m.I, initialize=0.0, **mut)
    m.Cy = pyo.Param(m.K, pat["C"], initialize=0.0, **mut)
    m.Dy = pyo.Param(m.K, pat["D"], initialize=0.0, **mut)
    m.ey = pyo.Param(m.K, pyo.RangeSet(0, a.C.shape[1] - 1), initialize=0.0, **mut)
    m.band_lo = pyo.Param(m.K, m.Z, initialize=0.0, **mut)
    m.band_hi = pyo.Param(m.K, m.Z, initialize=0.0, **mut)
    ulo, uhi = d.u_lo / d.u_scale, d.u_hi / d.u_scale
    m.x = pyo.Var(m.K1, m.I)
    m.u = pyo.Var(m.K, m.J, bounds=lambda _m, k, j: (_finite(ulo[j]), _finite(uhi[j])))
    m.p = pyo.Var(m.K)
    m.s_lo = pyo.Var(m.K, m.Z, domain=pyo.NonNegativeReals)
    m.s_hi = pyo.Var(m.K, m.Z, domain=pyo.NonNegativeReals)
    rowsA, rowsB = _by_row(pat["A"]), _by_row(pat["B"])
    rowsC, rowsD = _by_row(pat["C"]), _by_row(pat["D"])
    m.start = pyo.Constraint(m.I, rule=lambda m, i: m.x[0, i] == m.x0[i])
    m.dyn = pyo.Constraint(m.K, m.I, rule=lambda m, k, i: m.x[k + 1, i] == (
        sum(m.A[k, i, j] * m.x[k, j] for j in rowsA.get(i, ()))
        + sum(m.B[k, i, j] * m.u[k, j] for j in rowsB.get(i, ())) + m.c[k, i]))

    def y_end(m: Any, k: int, o: int) -> Any:
        return (sum(m.Cy[k, o, j] * m.x[k + 1, j] for j in rowsC.get(o, ()))
                + sum(m.Dy[k, o, j] * m.u[k, j] for j in rowsD.get(o, ())) + m.ey[k, o])

    ip = d.power
    m.power = pyo.Constraint(m.K, rule=lambda m, k: m.p[k] == 0.5 * (
        sum(m.Cy[k, ip, j] * (m.x[k, j] + m.x[k + 1, j]) for j in rowsC.get(ip, ())))
        + sum(m.Dy[k, ip, j] * m.u[k, j] for j in rowsD.get(ip, ())) + m.ey[k, ip])
    comfort = [int(o) for o in d.comfort]
    yz = [float(d.y_scale[o]) for o in comfort]
    m.comfort_lo = pyo.Constraint(m.K, m.Z, rule=lambda m, k, z: y_end(m, k, comfort[z])
                                  + m.s_lo[k, z] >= m.band_lo[k, z] / yz[z])
    m.comfort_hi = pyo.Constraint(m.K, m.Z, rule=lambda m, k, z: y_end(m, k, comfort[z])
                                  - m.s_hi[k, z] <= m.band_hi[k, z] / yz[z])
    limited = [int(o) for o in d.limited]
    staged = d.staging[0] if d.staging is not None else -1
    m.limit_lo = pyo.Constraint(m.K, m.L, rule=lambda m, k, q: (
        pyo.Constraint.Skip if q == staged or not np.isfinite(d.lim_lo[q])
        else y_end(m, k, limited[q]) >= float(d.lim_lo[q] / d.y_scale[limited[q]])))
    m.limit_hi = pyo.Constraint(m.K, m.L, rule=lambda m, k, q: (
        pyo.Constraint.Skip if q == staged or not np.isfinite(d.lim_hi[q])
        else y_end(m, k, limited[q]) <= float(d.lim_hi[q] / d.y_scale[limited[q]])))
    cost = (sum(m.price[k] * d.dt_h * m.p[k] for k in m.K)
            + d.comfort_price * d.dt_h * sum(m.s_lo[k, z] + m.s_hi[k, z]
                                             for k in m.K for z in m.Z))
    if d.peak_price > 0:
        m.peak = pyo.Var()
        m.peak_rows = pyo.Constraint(m.K, rule=lambda m, k: m.peak >= m.p[k])
        cost = cost + d.peak_price * m.peak
    if d.staging is not None:
        _pyomo_staging(m, d, y_end, limited)
    m.cost = pyo.Objective(expr=cost, sense=pyo.minimize)
    update_pyomo(m, d)
    return m


def _pyomo_staging(m: Any, d: LPData, y_end: Any, limited: list[int]) -> None:
    import pyomo.environ as pyo

    j, min_level, upper, min_on, min_off, on_before, _ = d.staging
    o = limited[j]
    ys = float(d.y_scale[o])
    fix = d.initial_fix()
    m.on = pyo.Var(m.K, domain=pyo.Binary)
    for k in m.K:
        if fix[k] >= 0:
            m.on[k].fix(int(fix[k]))
    m.stage_hi = pyo.Constraint(m.K, rule=lambda m, k: y_end(m, k, o) <= upper / ys * m.on[k])
    m.stage_lo = pyo.Constraint(m.K, rule=lambda m, k: y_end(m, k, o)
                                >= min_level / ys * m.on[k])
    N = len(m.K)

    def prev(m: Any, k: int) -> Any:
        return m.on[k - 1] if k > 0 else float(on_before)

    on_pairs = [(k, t) for k in range(N) for t in range(k + 1, min(N, k + int(min_on)))]
    off_pairs = [(k, t) for k in range(N) for t in range(k + 1, min(N, k + int(min_off)))]
    m.min_on = pyo.Constraint(on_pairs, rule=lambda m, k, t: m.on[k] - prev(m, k) <= m.on[t])
    m.min_off = pyo.Constraint(off_pairs, rule=lambda m, k, t: prev(m, k) - m.on[k]
                               <= 1 - m.on[t])


def update_pyomo(m: Any, d: LPData) -> None:
    """Write the data of ``d`` into the mutable parameters of a model from
    :func:`build_pyomo` (same structure: sparsity pattern and sizes)."""
    s = d.scaled()
    N, nx = d.affine.N, d.affine.A.shape[1]
    for i in range(nx):
        m.x0[i] = float(d.x0[i])
    for k in range(N):
        m.price[k] = float(d.price[k])
    for name, key in (("A", "A"), ("B", "B"), ("Cy", "C"), ("Dy", "D")):
        par = getattr(m, name)
        mat = s[key]
        for k, i, j in par:
            par[k, i, j] = float(mat[k, i, j])
    for (k, i) in m.c:
        m.c[k, i] = float(s["c"][k, i])
    for (k, o) in m.ey:
        m.ey[k, o] = float(s["e"][k, o])
    for (k, z) in m.band_lo:
        m.band_lo[k, z] = float(d.band_lo[k, z])
        m.band_hi[k, z] = float(d.band_hi[k, z])


def _patterns(s: dict, d: LPData) -> dict[str, list[tuple[int, int]]]:
    """Structural non-zeros of A, B, C, D over the horizon (union over intervals)."""
    out = {}
    for key in ("A", "B", "C", "D"):
        nzr = np.any(s[key] != 0.0, axis=0)
        out[key] = [(int(i), int(j)) for i, j in zip(*np.nonzero(nzr), strict=True)]
    return out


def _by_row(pairs: list[tuple[int, int]]) -> dict[int, list[int]]:
    rows: dict[int, list[int]] = {}
    for i, j in pairs:
        rows.setdefault(i, []).append(j)
    return rows


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
