"""Backend namespaces injected into model equations.

A model's ``rhs`` and ``measure`` use ``+ - * / **`` and these functions only, so the
same equations are traced by JAX, built as CasADi SX/MX expressions and written as Pyomo
expressions. Every namespace has the same members:

``exp, log, sqrt, tanh, abs, where(cond, a, b), gt(a, b), lt(a, b), maximum, minimum,
smooth_max(a, b, eps), smooth_min(a, b, eps), concat(seq)``, and for vector variables
(1-D: JAX/NumPy arrays, CasADi column vectors, :class:`PyomoVector` lists)
``index(x, i), shift(x, k, fill), sum(x), dot(a, b), matvec(A, x), full(n, value)``.
Elementwise arithmetic (``+ - * / **``) and the functions above act element by element
on vectors in every backend; ``matvec`` takes a constant matrix (a NumPy array), so its
structural zeros stay zeros in CasADi's and Pyomo's sparsity.

``smooth_max(a, b, eps) = (a + b + sqrt((a - b)**2 + eps**2)) / 2`` is a twice
differentiable approximation of ``max`` for optimisers (error at most ``eps/2``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Ops", "PyomoVector", "casadi_ops", "jax_ops", "numpy_ops", "pyomo_ops"]


@dataclass(frozen=True)
class Ops:
    """A namespace of elementary functions for one numerical backend.

    Use the module's instances (``jax_ops``, ``numpy_ops``, ``casadi_ops``,
    ``pyomo_ops``); model equations receive one as their ``ops`` argument. The functions
    keep the units of their arguments where that makes sense (``abs``, ``where``,
    ``maximum``, ``minimum``, ``concat``, ``sum``); ``exp``, ``log`` and ``tanh`` need
    dimensionless arguments.

    Attributes
    ----------
    name : {"jax", "numpy", "casadi", "pyomo"}
        The backend; :class:`~processtwin.layout.Group` ravels and unravels by it.
    exp, log, sqrt, tanh, abs : callable
        Elementwise ``f(x)``: exponential, natural logarithm, square root, hyperbolic
        tangent and absolute value (CasADi's ``fabs``).
    where : callable
        ``where(cond, a, b)``: ``a`` where ``cond`` holds, else ``b``, elementwise
        (CasADi ``if_else``, Pyomo ``Expr_if``).
    gt, lt : callable
        ``gt(a, b)``, ``lt(a, b)``: the comparisons ``a > b`` and ``a < b`` as conditions
        for ``where``; Pyomo, which has no strict relations in expressions, uses ``>=``
        and ``<=``.
    maximum, minimum : callable
        Elementwise ``maximum(a, b)``, ``minimum(a, b)`` (non-smooth; see
        :meth:`smooth_max` and :meth:`smooth_min` for optimisers).
    concat : callable
        ``concat(seq)``: one vector of the scalars and vectors in ``seq``, in order.
    sum : callable
        ``sum(x)``: the sum of the elements of a vector.
    """

    name: str
    exp: Callable[[Any], Any]
    log: Callable[[Any], Any]
    sqrt: Callable[[Any], Any]
    tanh: Callable[[Any], Any]
    abs: Callable[[Any], Any]
    where: Callable[[Any, Any, Any], Any]
    gt: Callable[[Any, Any], Any]
    lt: Callable[[Any, Any], Any]
    maximum: Callable[[Any, Any], Any]
    minimum: Callable[[Any, Any], Any]
    concat: Callable[[Sequence[Any]], Any]
    sum: Callable[[Any], Any]
    _take: Callable[[Any, int, int], Any]
    _join: Callable[[Sequence[Any]], Any]
    _full: Callable[[int, Any], Any]
    _matvec: Callable[[Any, Any], Any]

    def index(self, x: Any, i: int) -> Any:
        """Element ``i`` of the vector ``x`` (a static int; negative counts from the end).

        Parameters
        ----------
        x : vector
            A 1-D vector of this backend (JAX/NumPy array, CasADi column,
            :class:`PyomoVector`) [any units].
        i : int
            Static position; negative counts from the end.

        Returns
        -------
        scalar
            ``x[i]`` [units of ``x``].
        """
        return x[int(i)]

    def full(self, n: int, value: Any) -> Any:
        """A vector of ``n`` copies of the scalar ``value``.

        Parameters
        ----------
        n : int
            Static length of the vector.
        value : scalar
            The value of every element (a number or a scalar expression of this backend)
            [any units].

        Returns
        -------
        vector
            Of length ``n`` [units of ``value``].
        """
        return self._full(int(n), value)

    def shift(self, x: Any, k: int = 1, fill: Any = 0.0) -> Any:
        """Neighbours along a vector: ``y[i] = x[i - k]``, ``fill`` where ``i - k`` is
        outside ``x``.

        ``shift(T, 1, T_in)`` is each cell's upstream neighbour (the first cell's is the
        inlet), ``shift(T, -1, T[-1])`` its downstream neighbour with a zero-gradient end:
        the stencils of upwind and finite-volume schemes. ``k`` is a static int; with
        ``|k| ≥`` the length of ``x`` every element is ``fill``.

        Parameters
        ----------
        x : vector
            A 1-D vector of this backend [any units].
        k : int
            Static shift: ``k > 0`` takes the neighbour ``k`` places before (upstream),
            ``k < 0`` the one ``|k|`` places after; ``0`` returns ``x``.
        fill : scalar
            Value for the elements whose neighbour lies outside ``x`` (a boundary value,
            e.g. the inlet) [units of ``x``].

        Returns
        -------
        vector
            The shifted vector, of the length of ``x``.
        """
        n = _length(x)
        k = int(k)
        if k == 0:
            return x
        if abs(k) >= n:  # every element's neighbour is outside (a single cell)
            return self._full(n, fill)
        if k > 0:
            return self._join([self._full(k, fill), self._take(x, 0, n - k)])
        return self._join([self._take(x, -k, n), self._full(-k, fill)])

    def dot(self, a: Any, b: Any) -> Any:
        """Inner product of two vectors of equal length.

        Parameters
        ----------
        a, b : vector
            1-D vectors of this backend of equal length [any units].

        Returns
        -------
        scalar
            ``Σ a_i b_i`` [units of ``a`` × units of ``b``].
        """
        return self.sum(a * b)

    def matvec(self, A: Any, x: Any) -> Any:
        """Product ``A @ x`` of a constant matrix ``A`` (NumPy, shape (m, n)) and a vector
        ``x`` of length n.

        Parameters
        ----------
        A : array_like, shape (m, n)
            Constant matrix (converted to a float NumPy array); its zeros stay structural
            zeros in CasADi and Pyomo [any units].
        x : vector
            A 1-D vector of this backend of length n [any units].

        Returns
        -------
        vector
            Of length m [units of ``A`` × units of ``x``].

        Raises
        ------
        ValueError
            ``A`` is not 2-D or its number of columns is not the length of ``x``.
        """
        import numpy as np

        A = np.asarray(A, dtype=float)
        if A.ndim != 2 or A.shape[1] != _length(x):
            raise ValueError(f"`matvec`: matrix of shape {A.shape} and a vector of length "
                             f"{_length(x)}.")
        return self._matvec(A, x)

    def smooth_max(self, a: Any, b: Any, eps: float = 1e-6) -> Any:
        """Smooth maximum of ``a`` and ``b`` with width ``eps`` (same units as a, b)."""
        return 0.5 * (a + b + self.sqrt((a - b) ** 2 + eps**2))

    def smooth_min(self, a: Any, b: Any, eps: float = 1e-6) -> Any:
        """Smooth minimum of ``a`` and ``b`` with width ``eps`` (same units as a, b)."""
        return 0.5 * (a + b - self.sqrt((a - b) ** 2 + eps**2))

    def __repr__(self) -> str:
        return f"<ops {self.name}>"


def _make_jax() -> Ops:
    import jax.numpy as jnp

    return Ops(
        name="jax",
        exp=jnp.exp,
        log=jnp.log,
        sqrt=jnp.sqrt,
        tanh=jnp.tanh,
        abs=jnp.abs,
        where=jnp.where,
        gt=jnp.greater,
        lt=jnp.less,
        maximum=jnp.maximum,
        minimum=jnp.minimum,
        concat=lambda xs: jnp.concatenate([jnp.reshape(jnp.asarray(x), (-1,)) for x in xs]),
        sum=jnp.sum,
        _take=lambda x, a, b: x[a:b],
        _join=lambda xs: jnp.concatenate([jnp.reshape(jnp.asarray(x), (-1,)) for x in xs]),
        _full=lambda n, v: jnp.broadcast_to(jnp.asarray(v), (n,)),
        _matvec=lambda A, x: jnp.asarray(A, dtype=x.dtype) @ x,
    )


def _make_numpy() -> Ops:
    import numpy as np

    return Ops(
        name="numpy",
        exp=np.exp,
        log=np.log,
        sqrt=np.sqrt,
        tanh=np.tanh,
        abs=np.abs,
        where=np.where,
        gt=np.greater,
        lt=np.less,
        maximum=np.maximum,
        minimum=np.minimum,
        concat=lambda xs: np.concatenate([np.reshape(np.asarray(x), (-1,)) for x in xs]),
        sum=np.sum,
        _take=lambda x, a, b: x[a:b],
        _join=lambda xs: np.concatenate([np.reshape(np.asarray(x), (-1,)) for x in xs]),
        _full=lambda n, v: np.full(n, v, dtype=float),
        _matvec=lambda A, x: A @ x,
    )


def _make_casadi() -> Ops:
    import casadi as ca

    return Ops(
        name="casadi",
        exp=ca.exp,
        log=ca.log,
        sqrt=ca.sqrt,
        tanh=ca.tanh,
        abs=ca.fabs,
        where=lambda c, a, b: ca.if_else(c, a, b),
        gt=lambda a, b: a > b,
        lt=lambda a, b: a < b,
        maximum=ca.fmax,
        minimum=ca.fmin,
        concat=lambda xs: ca.vertcat(*xs),
        sum=ca.sum1,
        _take=lambda x, a, b: x[a:b],
        _join=lambda xs: ca.vertcat(*xs),
        _full=lambda n, v: ca.repmat(v, n, 1),
        _matvec=_casadi_matvec,
    )


def _casadi_matvec(A: Any, x: Any) -> Any:
    import casadi as ca
    import numpy as np

    # nonzeros in column-major order, the order of CasADi's compressed-column storage
    cols, rows = np.nonzero(A.T)
    sp = ca.Sparsity.triplet(A.shape[0], A.shape[1], rows.tolist(), cols.tolist())
    return ca.mtimes(ca.DM(sp, A[rows, cols].tolist()), x)


def _make_pyomo() -> Ops:
    import pyomo.environ as pyo

    def where(c: Any, a: Any, b: Any) -> Any:
        return pyo.Expr_if(IF=c, THEN=a, ELSE=b)

    def ge(a: Any, b: Any) -> Any:  # Pyomo has no strict relational in expressions
        return a >= b

    def le(a: Any, b: Any) -> Any:
        return a <= b

    def concat(xs: Sequence[Any]) -> PyomoVector:
        out: list[Any] = []
        for x in xs:
            out.extend(x.items if isinstance(x, PyomoVector) else [x])
        return PyomoVector(out)

    def matvec(A: Any, x: Any) -> PyomoVector:
        items = list(x)
        return PyomoVector([sum(float(A[i, j]) * items[j] for j in range(A.shape[1])
                                if A[i, j] != 0) for i in range(A.shape[0])])

    return Ops(
        name="pyomo",
        exp=_elementwise(pyo.exp),
        log=_elementwise(pyo.log),
        sqrt=_elementwise(pyo.sqrt),
        tanh=_elementwise(pyo.tanh),
        abs=_elementwise(abs),
        where=_elementwise(where),
        gt=_elementwise(ge),
        lt=_elementwise(le),
        maximum=_elementwise(lambda a, b: where(a >= b, a, b)),
        minimum=_elementwise(lambda a, b: where(a <= b, a, b)),
        concat=concat,
        sum=lambda x: sum(list(x)),
        _take=lambda x, a, b: PyomoVector(list(x)[a:b]),
        _join=concat,
        _full=lambda n, v: PyomoVector([v] * n),
        _matvec=matvec,
    )


def _length(x: Any) -> int:
    if hasattr(x, "numel") and hasattr(x, "size1"):  # CasADi
        return int(x.numel())
    if hasattr(x, "shape"):
        return int(x.shape[0])
    return len(x)


def _elementwise(f: Callable[..., Any]) -> Callable[..., Any]:
    """Apply ``f`` element by element when any argument is a :class:`PyomoVector`."""
    def g(*args: Any) -> Any:
        n = next((len(a) for a in args if isinstance(a, PyomoVector)), None)
        if n is None:
            return f(*args)
        cols = [a.items if isinstance(a, PyomoVector) else [a] * n for a in args]
        return PyomoVector([f(*row) for row in zip(*cols, strict=True)])

    return g


class PyomoVector:
    """A vector of Pyomo expressions with elementwise arithmetic (the Pyomo counterpart
    of a 1-D array). Iterate or index it to get the expressions.

    Parameters
    ----------
    items : sequence
        The elements: Pyomo expressions, variables or numbers, in order (copied into the
        list :attr:`items`).
    """

    __slots__ = ("items",)

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:
        return iter(self.items)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return PyomoVector(self.items[i])
        return self.items[i]

    def _op(self, other: Any, f: Callable[[Any, Any], Any]) -> PyomoVector:
        if isinstance(other, PyomoVector):
            if len(other) != len(self):
                raise ValueError(f"vectors of length {len(self)} and {len(other)}.")
            return PyomoVector([f(a, b) for a, b in zip(self.items, other.items, strict=True)])
        return PyomoVector([f(a, other) for a in self.items])

    def __add__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: a + b)

    def __radd__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: b + a)

    def __sub__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: a - b)

    def __rsub__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: b - a)

    def __mul__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: a * b)

    def __rmul__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: b * a)

    def __truediv__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: a / b)

    def __rtruediv__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: b / a)

    def __pow__(self, o: Any) -> PyomoVector:
        return self._op(o, lambda a, b: a**b)

    def __neg__(self) -> PyomoVector:
        return PyomoVector([-a for a in self.items])

    def __repr__(self) -> str:
        return f"PyomoVector({self.items!r})"


class _Lazy:
    """Build a backend namespace on first attribute access, so importing
    :mod:`processtwin.ops` never imports CasADi or Pyomo."""

    def __init__(self, factory: Callable[[], Ops]) -> None:
        self._factory = factory
        self._ops: Ops | None = None

    def _get(self) -> Ops:
        if self._ops is None:
            self._ops = self._factory()
        return self._ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __repr__(self) -> str:
        return repr(self._get())


jax_ops: Ops = _Lazy(_make_jax)  # type: ignore[assignment]
numpy_ops: Ops = _Lazy(_make_numpy)  # type: ignore[assignment]
casadi_ops: Ops = _Lazy(_make_casadi)  # type: ignore[assignment]
pyomo_ops: Ops = _Lazy(_make_pyomo)  # type: ignore[assignment]
