"""One place where a model's variables become flat vectors and back, for every backend.

A model declares its states, inputs, outputs and ports as named tuples of :class:`Var`
(:func:`~processtwin.model.variables`); a variable may be a scalar or a 1-D vector whose
length is fixed or given by a static field of the model (``shape="n_cells"``). A composed
:class:`~processtwin.system.System` nests the tuples of its units. :class:`Group` is the
resolved layout of one such tuple for one model instance: every leaf's dotted name, shape,
dimension name and slice of the flat vector. Every consumer (simulation, estimation,
optimisation, the Dataset writer, the CLI) ravels and unravels through it, as
``jax.flatten_util.ravel_pytree`` does for pytrees, but for JAX and NumPy arrays, CasADi
SX/MX column vectors and Pyomo expression lists alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .declare import Var, check_value
from .errors import ConfigError, ModelError, suggest
from .ops import numpy_ops

__all__ = ["Group", "Layout", "Leaf"]


@dataclass(frozen=True)
class Leaf:
    """One variable of a resolved layout.

    Attributes
    ----------
    name : str
        Dotted name (``"T"``; ``"pipe.T"`` inside a system).
    var : Var
        The declared metadata (units, bounds, kind, ...).
    shape : tuple of int
        ``()`` for a scalar, ``(n,)`` for a vector.
    dim : str or None
        Name of the vector's dimension in Datasets (``"cell"``); ``None`` for a scalar.
    start, size : int
        Position and length in the flat vector.
    """

    name: str
    var: Var
    shape: tuple[int, ...]
    dim: str | None
    start: int
    size: int

    @property
    def stop(self) -> int:
        """End (exclusive) of the leaf in the flat vector."""
        return self.start + self.size

    def flat_names(self) -> list[str]:
        """Names of the leaf's elements in the flat vector (``T[0]``, ``T[1]``, ...)."""
        if not self.shape:
            return [self.name]
        return [f"{self.name}[{i}]" for i in range(self.size)]


class Group:
    """Resolved layout of one variables tuple (states, inputs, outputs or ports).

    Built by :meth:`Model.layout <processtwin.model.Model.layout>`; not constructed by
    users. ``entries`` are ``(field, Leaf | Group)`` pairs in declaration order; nested
    groups are the units of a composed system.

    Parameters
    ----------
    typ : type
        The variables tuple type (a ``NamedTuple`` from
        :func:`~processtwin.model.variables`) whose instances this group ravels and builds.
    entries : sequence of (str, Leaf or Group)
        ``(field, Leaf | Group)`` pairs in the order of ``typ``'s fields: a
        :class:`Leaf` for a variable, a nested :class:`Group` for a unit of a system.
        The leaves' ``start`` and ``size`` must tile the flat vector in this order.
    what : str
        What the variables are (``"state"``, ``"input"``, ``"output"``, ``"port"``, ...),
        used in error messages.
    owner : str
        Name of the model the group belongs to, used in error messages.
    """

    def __init__(self, typ: type, entries: Sequence[tuple[str, Leaf | Group]], what: str,
                 owner: str) -> None:
        self.typ = typ
        self.entries = tuple(entries)
        self.what = what
        self.owner = owner
        self.leaves: tuple[Leaf, ...] = tuple(self._walk())
        self.size = sum(leaf.size for leaf in self.leaves)
        self.by_name: Mapping[str, Leaf] = MappingProxyType({lf.name: lf for lf in self.leaves})
        self.scalar = all(not lf.shape for lf in self.leaves)
        self.vars: Mapping[str, Var] = MappingProxyType({lf.name: lf.var for lf in self.leaves})

    def _walk(self) -> Iterator[Leaf]:
        for _, e in self.entries:
            if isinstance(e, Group):
                yield from e.leaves
            else:
                yield e

    # ---- lookup -----------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Dotted names of the leaves, in order."""
        return tuple(self.by_name)

    def __len__(self) -> int:
        return len(self.leaves)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def leaf(self, name: str) -> Leaf:
        """The leaf called ``name``; :class:`ConfigError` with the closest name otherwise."""
        try:
            return self.by_name[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} `{name}` of model `{self.owner}`"
                              + suggest(name, self.by_name)) from None

    def indices(self, names: Sequence[str]) -> np.ndarray:
        """Flat indices of the leaves ``names``, concatenated in that order.

        Parameters
        ----------
        names : sequence of str
            Dotted leaf names (a vector leaf contributes all its elements).

        Returns
        -------
        numpy.ndarray of intp
            Positions in the flat vector; empty for no names.

        Raises
        ------
        ConfigError
            An unknown name (with the closest known one).
        """
        return np.concatenate([np.arange(self.leaf(n).start, self.leaf(n).stop)
                               for n in names]).astype(np.intp) if names else np.zeros(
                                   0, np.intp)

    def flat_names(self) -> list[str]:
        """Names of every element of the flat vector."""
        return [n for lf in self.leaves for n in lf.flat_names()]

    # ---- tree <-> leaves <-> vector -------------------------------------------------------
    def leaf_values(self, tree: Any) -> list[Any]:
        """The leaf values of a (possibly nested) tuple, in layout order."""
        out: list[Any] = []
        for field, e in self.entries:
            value = getattr(tree, field)
            if isinstance(e, Group):
                out.extend(e.leaf_values(value))
            else:
                out.append(value)
        return out

    def from_leaves(self, values: Sequence[Any]) -> Any:
        """Build the (possibly nested) tuple from leaf values in layout order."""
        it = iter(values)
        return self._build(it)

    def _build(self, it: Iterator[Any]) -> Any:
        kw = {}
        for field, e in self.entries:
            kw[field] = e._build(it) if isinstance(e, Group) else next(it)
        return self.typ(**kw)

    def ravel(self, tree: Any, ops: Any) -> Any:
        """Flat vector of a tuple of values in the backend of ``ops`` (a scalar given for
        a vector leaf is broadcast).

        Parameters
        ----------
        tree : tuple
            An instance of this group's tuple type (nested for a system) [variable units].
        ops : Ops
            The backend namespace (``jax_ops``, ``numpy_ops``, ``casadi_ops``,
            ``pyomo_ops``); its ``name`` selects the kind of vector built.

        Returns
        -------
        vector
            Length :attr:`size`: a JAX or NumPy array, a CasADi column vector or a list
            of Pyomo expressions.
        """
        return self.ravel_leaves(self.leaf_values(tree), ops)

    def ravel_leaves(self, values: Sequence[Any], ops: Any) -> Any:
        """Flat vector from leaf values in layout order.

        Parameters
        ----------
        values : sequence
            One value per leaf in the order of :attr:`leaves` [variable units]; a scalar
            given for a vector leaf is broadcast.
        ops : Ops
            The backend namespace; its ``name`` selects the kind of vector built.

        Returns
        -------
        vector
            Length :attr:`size`, as for :meth:`ravel`.

        Raises
        ------
        ModelError
            A CasADi or Pyomo value whose length differs from its vector leaf's.
        """
        backend = ops.name
        if backend == "jax":
            import jax.numpy as jnp

            if self.scalar:
                if not values:
                    return jnp.zeros(0)
                return jnp.stack([jnp.asarray(v) for v in values])
            parts = []
            for v, lf in zip(values, self.leaves, strict=True):
                v = jnp.asarray(v)
                if v.size != 1 and v.shape != lf.shape:
                    raise ModelError(f"{self.what} `{lf.name}` of `{self.owner}` has shape "
                                     f"{lf.shape}, got an expression of shape {v.shape}.")
                parts.append(jnp.reshape(jnp.broadcast_to(v, lf.shape), (lf.size,)))
            return jnp.concatenate(parts)
        if backend == "numpy":
            if not values:
                return np.zeros(0)
            return np.concatenate([np.reshape(np.broadcast_to(np.asarray(v, dtype=float),
                                                              lf.shape), (lf.size,))
                                   for v, lf in zip(values, self.leaves, strict=True)])
        if backend == "casadi":
            import casadi as ca

            parts = []
            for v, lf in zip(values, self.leaves, strict=True):
                if lf.shape and _casadi_numel(v) == 1:
                    v = ca.repmat(v, lf.size, 1)
                elif lf.shape and _casadi_numel(v) != lf.size:
                    raise ModelError(f"{self.what} `{lf.name}` of `{self.owner}` has "
                                     f"{lf.size} elements, got an expression of "
                                     f"{_casadi_numel(v)}.")
                parts.append(v)
            return ca.vertcat(*parts) if parts else ca.DM.zeros(0, 1)
        if backend == "pyomo":
            flat: list[Any] = []
            for v, lf in zip(values, self.leaves, strict=True):
                if not lf.shape:
                    flat.append(v)
                elif hasattr(v, "__len__"):
                    if len(v) != lf.size:
                        raise ModelError(f"{self.what} `{lf.name}` of `{self.owner}` has "
                                         f"{lf.size} elements, got {len(v)}.")
                    flat.extend(list(v))
                else:
                    flat.extend([v] * lf.size)
            return flat
        raise ConfigError(f"unknown backend `{backend}`.")

    def unravel(self, vec: Any, ops: Any) -> Any:
        """The tuple whose flat vector is ``vec`` (the last axis for JAX/NumPy arrays, so
        ``(time, n)`` gives leaves over time).

        Parameters
        ----------
        vec : vector
            Flat vector of length :attr:`size` in the backend of ``ops`` (for JAX/NumPy
            the last axis; leading axes are kept) [variable units].
        ops : Ops
            The backend namespace of ``vec``.

        Returns
        -------
        tuple
            An instance of this group's tuple type (nested for a system).
        """
        return self.from_leaves(self.unravel_leaves(vec, ops))

    def unravel_leaves(self, vec: Any, ops: Any) -> list[Any]:
        """Leaf values (scalars or vectors) from the flat vector ``vec``.

        Parameters
        ----------
        vec : vector
            Flat vector of length :attr:`size` in the backend of ``ops`` (for JAX/NumPy
            the last axis) [variable units].
        ops : Ops
            The backend namespace of ``vec``.

        Returns
        -------
        list
            One value per leaf in the order of :attr:`leaves`: an element for a scalar
            leaf, a slice (a :class:`~processtwin.ops.PyomoVector` for Pyomo) for a
            vector leaf.
        """
        backend = ops.name
        if backend in ("jax", "numpy"):
            return [vec[..., lf.start] if not lf.shape else vec[..., lf.start:lf.stop]
                    for lf in self.leaves]
        if backend == "casadi":
            return [vec[lf.start] if not lf.shape else vec[lf.start:lf.stop]
                    for lf in self.leaves]
        if backend == "pyomo":
            from .ops import PyomoVector

            items = list(vec)
            return [items[lf.start] if not lf.shape else PyomoVector(items[lf.start:lf.stop])
                    for lf in self.leaves]
        raise ConfigError(f"unknown backend `{backend}`.")

    def as_mapping(self, given: Any, argument: str) -> dict[str, Any]:
        """Values by leaf name from ``None``, a mapping by (dotted) name or a tuple of this
        group's type; names are checked.

        Parameters
        ----------
        given : mapping, tuple or None
            The values as the user gave them [variable units].
        argument : str
            The argument's name, for the message (``"x0"``, ``"inputs"``).

        Raises
        ------
        ConfigError
            ``given`` is of another kind, or names an unknown leaf (with the closest name).
        """
        if given is None:
            return {}
        if isinstance(given, tuple) and hasattr(given, "_fields"):
            return dict(zip(self.names, self.leaf_values(given), strict=True))
        if not isinstance(given, Mapping):
            raise ConfigError(f"`{argument}` must be a mapping of {self.what} name to value, "
                              f"got {type(given).__name__}.")
        for k in given:
            self.leaf(k)
        return dict(given)

    def assemble(self, given: Any, ops: Any) -> Any:
        """Flat vector from defaults overridden by ``given`` (a mapping by name, a tuple of
        this group's type, or ``None``), without validation: values may be traced
        (``jax.grad`` through an initial state) or symbolic.

        Parameters
        ----------
        given : mapping, tuple or None
            Values by dotted leaf name (missing leaves take their declared default), a
            complete tuple of this group's type, or ``None`` for all defaults [variable
            units].
        ops : Ops
            The backend namespace of the result.

        Returns
        -------
        vector
            Length :attr:`size`, as for :meth:`ravel`.

        Raises
        ------
        ConfigError
            ``given`` is of another kind, or names an unknown leaf.
        """
        if isinstance(given, tuple) and hasattr(given, "_fields"):
            return self.ravel(given, ops)
        given = self.as_mapping(given, f"{self.what} values")
        return self.ravel_leaves([given.get(lf.name, lf.var.default) for lf in self.leaves],
                                 ops)

    # ---- host-side values -----------------------------------------------------------------
    def defaults(self) -> np.ndarray:
        """Flat vector of the declared defaults."""
        return np.concatenate([np.broadcast_to(np.asarray(lf.var.default, dtype=float),
                                               lf.shape).reshape(lf.size)
                               for lf in self.leaves]) if self.leaves else np.zeros(0)

    def bounds(self, strict_margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Flat lower and upper bounds (``±inf`` where unbounded); an exclusive bound is
        moved inwards by ``strict_margin`` relative to its magnitude (at least absolute)."""
        lo, hi = [], []
        for lf in self.leaves:
            a, b = lf.var.bounds
            a = -np.inf if a is None else a + (strict_margin * max(abs(a), 1.0)
                                               if lf.var.strict else 0.0)
            b = np.inf if b is None else b - (strict_margin * max(abs(b), 1.0)
                                              if lf.var.strict else 0.0)
            lo += [a] * lf.size
            hi += [b] * lf.size
        return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)

    def values(self, given: Any = None, base: Any = None, /, *, check: bool = True,
               **kw: Any) -> np.ndarray:
        """Validated flat vector from defaults (or ``base``), a mapping by dotted name (or a
        tuple of this group's type, or a flat sequence) and keyword overrides.

        Parameters
        ----------
        given : mapping, tuple, sequence or None
            Values by dotted leaf name, a tuple of this group's type, or a flat sequence
            of all :attr:`size` values in layout order (positional only) [variable
            units]; ``None``: defaults only.
        base : array (size,), optional
            The values of the leaves not given (positional only), e.g. the inputs held
            so far; default: the declared defaults.
        check : bool
            Check every given value against its variable's bounds.
        **kw : float or array
            More values by leaf name, overriding ``given`` [variable units]; a vector
            leaf takes a scalar (broadcast) or one value per element.

        Returns
        -------
        numpy.ndarray
            Flat vector of length :attr:`size`; unset leaves at their declared default.

        Raises
        ------
        ConfigError
            Unknown name (with the closest known one).
        ModelError
            Wrong number of values, wrong vector length, or a value out of bounds.
        """
        vec = self.defaults() if base is None else np.array(base, dtype=float)
        if vec.shape != (self.size,):
            raise ModelError(f"{self.what} of `{self.owner}`: `base` needs {self.size} values, "
                             f"got shape {vec.shape}.")
        if given is not None:
            if isinstance(given, Mapping) or (isinstance(given, tuple)
                                              and hasattr(given, "_fields")):
                given = self.as_mapping(given, f"{self.what} values")
            else:
                seq = np.asarray(given, dtype=float).reshape(-1)
                if seq.size != self.size:
                    raise ModelError(f"{self.what} of `{self.owner}` needs {self.size} values "
                                     f"({', '.join(self.flat_names())}), got {seq.size}.")
                given = dict(zip(self.names, self.unravel_leaves(seq, numpy_ops),
                                 strict=True))
            kw = {**given, **kw}
        for k, v in kw.items():
            lf = self.leaf(k)
            try:
                arr = np.asarray(v, dtype=float)
            except (TypeError, ValueError):
                raise ModelError(f"{self.what} `{k}` of `{self.owner}` must be a number "
                                 f"[{lf.var.units}], got {v!r}.") from None
            if lf.shape and np.ndim(arr) not in (0, 1):
                raise ModelError(f"{self.what} `{k}` of `{self.owner}` is a vector over "
                                 f"`{lf.dim}` of length {lf.size}, got shape {np.shape(arr)}.")
            if lf.shape and np.ndim(arr) == 1 and np.shape(arr)[0] != lf.size:
                raise ModelError(f"{self.what} `{k}` of `{self.owner}` needs {lf.size} values "
                                 f"over `{lf.dim}`, got {np.shape(arr)[0]}.")
            if not lf.shape and np.ndim(arr) != 0:
                raise ModelError(f"{self.what} `{k}` of `{self.owner}` is a scalar "
                                 f"[{lf.var.units}], got shape {np.shape(arr)}.")
            if check:
                check_value(self.what, k, arr, lf.var.units, lf.var.bounds, lf.var.strict)
            vec[lf.start:lf.stop] = np.broadcast_to(arr, lf.shape).reshape(lf.size)
        return vec

    def to_dict(self, vec: Any) -> dict[str, Any]:
        """Dotted name → value (float for scalars, array for vectors) of a flat vector."""
        v = np.asarray(vec, dtype=float)
        return {lf.name: (float(v[lf.start]) if not lf.shape else v[lf.start:lf.stop].copy())
                for lf in self.leaves}

    def __repr__(self) -> str:
        return f"<{self.what}s of {self.owner}: {', '.join(self.flat_names()[:8])}" + (
            ", ...>" if self.size > 8 else ">")


def _casadi_numel(v: Any) -> int:
    if hasattr(v, "numel"):
        return int(v.numel())
    return int(np.size(v))


@dataclass(frozen=True)
class Layout:
    """The resolved layouts of a model instance: states, inputs, outputs and ports.

    Attributes
    ----------
    states, inputs, outputs, ports : Group
        The resolved layout of each of the model's variables tuples (empty groups where
        the model declares none).
    dims : mapping of str to int
        Dimension name → length, over every vector leaf (the dimensions of Datasets).
    """

    states: Group
    inputs: Group
    outputs: Group
    ports: Group
    dims: Mapping[str, int]


def resolve(typ: type, what: str, model: Any, prefix: str = "", start: int = 0,
            dims: dict[str, int] | None = None) -> Group:
    """Resolve the variables tuple ``typ`` of a unit ``model`` into a :class:`Group`.

    Parameters
    ----------
    typ : type
        A variables tuple type from :func:`~processtwin.model.variables` (its ``_vars``
        map each field to a :class:`~processtwin.model.Var`).
    what : str
        What the variables are (``"state"``, ``"input"``, ...), for error messages.
    model : Model
        The unit model instance: its static fields size vectors declared with
        ``shape="n_..."``; its ``name`` appears in messages.
    prefix : str
        Prefix of the leaves' dotted names (``"pipe."`` for a unit of a system).
    start : int
        Position of the first leaf in the flat vector (a unit's offset in a system).
    dims : dict of str to int, optional
        Dimension name → length collected so far; updated in place with this unit's
        dimensions (a clash of lengths gets the dimension name prefixed). ``None``: a
        fresh dict.

    Returns
    -------
    Group

    Raises
    ------
    ModelError
        A field that is not a ``Var``, or a vector sized by a missing or non-positive
        field.
    """
    dims = {} if dims is None else dims
    entries: list[tuple[str, Leaf | Group]] = []
    pos = start
    for field, spec in typ._vars.items():
        if not isinstance(spec, Var):
            raise ModelError(f"{what} `{field}` of `{model.name}` must be a Var, got "
                             f"{type(spec).__name__}.")
        shape, dim = _shape_of(model, field, spec, what)
        size = int(np.prod(shape)) if shape else 1
        if dim is not None:
            dim = prefix + dim if dim in dims and dims[dim] != size else dim
            dims[dim] = size
        entries.append((field, Leaf(prefix + field, spec, shape, dim, pos, size)))
        pos += size
    return Group(typ, entries, what, model.name)


def _shape_of(model: Any, field: str, spec: Var, what: str) -> tuple[tuple[int, ...],
                                                                    str | None]:
    if spec.shape is None:
        return (), None
    n = spec.shape
    if isinstance(n, str):
        if not hasattr(model, n):
            raise ModelError(f"{what} `{field}` of `{model.name}` is sized by `{n}`, which is "
                             "not a field of the model" + suggest(n, _static_fields(model)))
        fld = getattr(model, "__dataclass_fields__", {}).get(n)
        if fld is not None and not fld.metadata.get("static"):
            # a size that is an ordinary field would be traced and not part of the
            # model's structure (its compiled programs and layouts are shared by value)
            raise ModelError(f"`{n}` of `{model.name}` sizes {what} `{field}`; declare it "
                             f"with `dimension(...)` (a static field), not as a parameter "
                             f"or a plain field.")
        n_val = getattr(model, n)
        if isinstance(n_val, bool) or not isinstance(n_val, int | np.integer) or n_val < 1:
            raise ModelError(f"`{n}` of `{model.name}` sizes {what} `{field}` and must be a "
                             f"positive integer, got {n_val!r}.")
        dim = spec.dim or (n.removeprefix("n_").rstrip("s") or field)
        n = int(n_val)
    else:
        dim = spec.dim or f"{field}_index"
    return (int(n),), dim


def _static_fields(model: Any) -> list[str]:
    return [f.name for f in getattr(model, "__dataclass_fields__", {}).values()
            if f.metadata.get("static")]
