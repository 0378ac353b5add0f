"""Systems composed of units connected by ports; a :class:`System` is itself a Model.

A unit declares ``Ports`` (physical connections: an outlet stream's temperature or flow,
a broth transfer) and computes them in ``ports(t, x, u, ops)``. A connection
``("feed.outlet", "reactor.F")`` feeds a port of one unit into an input of another; the
inputs left unconnected stay inputs of the system. The system's states, inputs, outputs,
ports and parameters are those of its units under dotted names (``reactor.X``), so
simulate, ensemble, the filters and the optimisers accept it unchanged, and it can be a
unit of a larger system.

A port may depend on its unit's inputs (feedthrough: a mixer's outlet temperature on its
inlet temperatures). The feedthrough structure is read once, at construction, from the
Jacobian sparsity of the unit's ``ports`` built as CasADi SX; a chain of feedthroughs that
closes on itself is an algebraic loop and is refused. Ports are then evaluated in as many
passes as the longest feedthrough chain, which is exact (each pass settles one more link).
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import equinox as eqx

from .errors import ModelError, suggest
from .layout import Group, Layout, Leaf
from .model import Model, ParamInfo, Scalar

__all__ = ["System"]

# Wiring by system structure (see System._analyse).
_WIRING: dict[Any, Any] = {}


class _Wiring(NamedTuple):
    sources: Mapping[tuple[str, str], tuple[str, str]]  # (unit, input) -> (unit, port)
    passes: int  # port evaluation passes (longest feedthrough chain + 1)
    port_units: tuple[str, ...]  # units whose ports feed a connection


def _split(path: str) -> tuple[str, str]:
    unit, sep, rest = path.partition(".")
    if not sep or not unit or not rest:
        raise ModelError(f"connection end {path!r} must be `unit.variable`.")
    return unit, rest


def _regroup(group: Group, prefix: str, start: int, what: str, owner: str,
             keep: Any = None, dims: dict[str, int] | None = None) -> Group:
    """``group`` with every name prefixed, positions from ``start``, and (``keep``) only
    the leaves whose unit-level name is in ``keep``."""
    entries: list[tuple[str, Leaf | Group]] = []
    pos = start
    dims = {} if dims is None else dims
    fields = {}
    for field, e in group.entries:
        if isinstance(e, Group):
            sub = _regroup(e, prefix, pos, what, owner, keep, dims)
            if sub.leaves:
                entries.append((field, sub))
                fields[field] = None
                pos += sub.size
            continue
        if keep is not None and e.name not in keep:
            continue
        dim = e.dim
        if dim is not None:
            if dim in dims and dims[dim] != e.size:
                dim = prefix + dim
            dims[dim] = e.size
        entries.append((field, Leaf(prefix + e.name, e.var, e.shape, dim, pos, e.size)))
        fields[field] = None
        pos += e.size
    typ = group.typ if keep is None else NamedTuple(  # type: ignore[misc]
        f"Free{group.typ.__name__}", [(f, Any) for f in fields])
    return Group(typ, entries, what, owner)


class System(Model):
    """Units connected by ports, usable wherever a Model is.

    Parameters
    ----------
    units : mapping or sequence of (str, Model)
        The units by name (names without dots, unique).
    connections : sequence of (str, str)
        ``("source.port", "target.input")`` pairs: the port of one unit drives the input
        of another (same units, same shape).
    name : str
        Name of the system (in Datasets and messages).

    Raises
    ------
    ModelError
        A duplicate or dotted unit name, a dangling connection (unknown unit, port or
        input), an input driven twice, ports whose units or shapes differ, units with
        different time units or sample times, or an algebraic loop — each naming the unit
        and the port.

    Examples
    --------
    >>> plant = System({"feed": FeedTank(), "reactor": Bioreactor()},
    ...                [("feed.outflow", "reactor.F")])
    """

    _composite = True
    units: dict[str, Model]
    connections: tuple[tuple[str, str], ...] = eqx.field(static=True)
    order: tuple[str, ...] = eqx.field(static=True)
    label: str = eqx.field(static=True)

    def __init__(self, units: Mapping[str, Model] | Sequence[tuple[str, Model]],
                 connections: Sequence[tuple[str, str]] = (), *, name: str = "system"
                 ) -> None:
        pairs = list(units.items()) if isinstance(units, Mapping) else list(units)
        seen: set[str] = set()
        for entry in pairs:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise ModelError(f"`units` must map names to models, got {entry!r}.")
            uname, unit = entry
            if not isinstance(uname, str) or not uname.isidentifier():
                raise ModelError(f"unit name {uname!r} must be an identifier (no dots).")
            if keyword.iskeyword(uname):
                raise ModelError(f"unit name `{uname}` is a Python keyword; name it e.g. "
                                 f"`{uname}_{type(unit).__name__.lower()}`.")
            if uname in seen:
                raise ModelError(f"duplicate unit name `{uname}` in system `{name}`.")
            if not isinstance(unit, Model):
                raise ModelError(f"unit `{uname}` must be a processtwin Model, got "
                                 f"{type(unit).__name__}.")
            seen.add(uname)
        if not pairs:
            raise ModelError(f"system `{name}` needs at least one unit.")
        self.units = dict(pairs)
        self.order = tuple(k for k, _ in pairs)
        conns = []
        for c in connections:
            if not (isinstance(c, Sequence) and len(c) == 2 and all(isinstance(s, str)
                                                                   for s in c)):
                raise ModelError(f"a connection is a pair (\"unit.port\", \"unit.input\"), "
                                 f"got {c!r}.")
            conns.append((str(c[0]), str(c[1])))
        self.connections = tuple(conns)
        self.label = str(name)
        self._analyse()

    # ---- class-level contract, per instance ------------------------------------------
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label

    @property
    def time_unit(self) -> str:  # type: ignore[override]
        return self.units[self.order[0]].time_unit

    @property
    def sample_time(self) -> float | None:  # type: ignore[override]
        return self.units[self.order[0]].sample_time

    @property
    def is_discrete(self) -> bool:
        return self.units[self.order[0]].is_discrete

    @property
    def State(self) -> type:  # type: ignore[override]
        return self.layout.states.typ

    @property
    def Inputs(self) -> type:  # type: ignore[override]
        return self.layout.inputs.typ

    @property
    def Outputs(self) -> type:  # type: ignore[override]
        return self.layout.outputs.typ

    @property
    def Ports(self) -> type:  # type: ignore[override]
        return self.layout.ports.typ

    # ---- structure ----------------------------------------------------------------------
    def _layout_key(self) -> Any:
        return (System, self.label, self.order, self.connections,
                tuple(self.units[k]._layout_key() for k in self.order))

    def _analyse(self) -> _Wiring:
        key = self._layout_key()
        if key in _WIRING:
            return _WIRING[key]
        units, sysname = self.units, self.label
        tu = {k: u.time_unit for k, u in units.items()}
        if len(set(tu.values())) > 1:
            raise ModelError(f"units of system `{sysname}` have different time units: "
                             + ", ".join(f"{k} [{v}]" for k, v in tu.items()) + ".")
        disc = {k: (u.is_discrete, u.sample_time) for k, u in units.items()}
        if len(set(disc.values())) > 1:
            raise ModelError(f"units of system `{sysname}` mix continuous and discrete time "
                             "(or different sample times): " + ", ".join(
                                 f"{k}: {'dt=' + str(s) if d else 'continuous'}"
                                 for k, (d, s) in disc.items()) + ".")
        sources: dict[tuple[str, str], tuple[str, str]] = {}
        for src, dst in self.connections:
            su, sp = _split(src)
            du, di = _split(dst)
            for u_ in (su, du):
                if u_ not in units:
                    raise ModelError(f"connection {src} → {dst}: no unit `{u_}` in system "
                                     f"`{sysname}`" + suggest(u_, units))
            ports = units[su].layout.ports
            if sp not in ports:
                what = ("has no ports" if not ports.names else "has no port `" + sp + "`"
                        + suggest(sp, ports.names))
                raise ModelError(f"connection {src} → {dst}: unit `{su}` {what}"
                                 + ("" if what.endswith(("?", ".")) else "."))
            inputs = units[du].layout.inputs
            if di not in inputs:
                raise ModelError(f"connection {src} → {dst}: unit `{du}` has no input "
                                 f"`{di}`" + suggest(di, inputs.names))
            if (du, di) in sources:
                other = ".".join(sources[(du, di)])
                raise ModelError(f"input `{dst}` is connected twice (from `{other}` and "
                                 f"`{src}`).")
            a, b = ports.leaf(sp), inputs.leaf(di)
            if a.var.units != b.var.units:
                raise ModelError(f"connection {src} → {dst}: port `{sp}` of `{su}` is in "
                                 f"[{a.var.units}] but input `{di}` of `{du}` expects "
                                 f"[{b.var.units}].")
            if a.shape != b.shape:
                raise ModelError(f"connection {src} → {dst}: port `{sp}` of `{su}` has shape "
                                 f"{a.shape} but input `{di}` of `{du}` has {b.shape}.")
            sources[(du, di)] = (su, sp)
        port_units = tuple(k for k in self.order if any(s[0] == k for s in sources.values()))
        # feedthrough: which ports of a unit depend on which of its inputs
        through = {k: _feedthrough(units[k]) for k in port_units}
        # longest chain of port -> input -> port dependencies; a cycle is an algebraic loop
        depth: dict[tuple[str, str], int] = {}
        state: dict[tuple[str, str], int] = {}

        def visit(node: tuple[str, str], path: list[tuple[str, str]]) -> int:
            if state.get(node) == 2:
                return depth[node]
            if state.get(node) == 1:
                loop = path[path.index(node):] + [node]
                raise ModelError(f"algebraic loop in system `{sysname}`: "
                                 + " → ".join(f"{u}.{p}" for u, p in loop)
                                 + " (each port depends on its unit's inputs without a state "
                                   "in between); break it with a state (e.g. a small "
                                   "volume or a sensor lag).")
            state[node] = 1
            u, p = node
            d = 0
            for inp in through.get(u, {}).get(p, ()):
                src = sources.get((u, inp))
                if src is not None:
                    d = max(d, 1 + visit(src, [*path, node]))
            state[node], depth[node] = 2, d
            return d

        for node in {s for s in sources.values()}:
            visit(node, [])
        wiring = _Wiring(sources, 1 + max(depth.values(), default=0), port_units)
        _WIRING[key] = wiring
        return wiring

    def _make_layout(self) -> Layout:
        wiring = self._analyse()
        groups = []
        dims: dict[str, int] = {}
        for attr, what in (("states", "state"), ("inputs", "input"), ("outputs", "output"),
                           ("ports", "port")):
            entries: list[tuple[str, Leaf | Group]] = []
            pos = 0
            for k in self.order:
                g = getattr(self.units[k].layout, attr)
                keep = None
                if attr == "inputs":
                    keep = {n for n in g.names if (k, n) not in wiring.sources}
                sub = _regroup(g, f"{k}.", pos, what, self.label, keep, dims)
                if sub.leaves:
                    entries.append((k, sub))
                    pos += sub.size
            typ = NamedTuple(f"{what.capitalize()}Of_{self.label}",  # type: ignore[misc]
                             [(k, Any) for k, _ in entries])
            typ._vars = {}  # a nested (system) tuple: the leaves are in the layout
            groups.append(Group(typ, entries, what, self.label))
        return Layout(*groups, dims)

    # ---- parameters -----------------------------------------------------------------------
    def parameters(self) -> Mapping[str, ParamInfo]:  # type: ignore[override]
        """Metadata of every unit's parameters under dotted names (``reactor.mu_max``); a
        parameter's default is its value in the unit as composed (a system's factory sizes
        its units)."""
        out = {}
        for k in self.order:
            unit = self.units[k]
            for n, info in unit.parameters().items():
                out[f"{k}.{n}"] = ParamInfo(f"{k}.{n}", unit.get(n), info.units,
                                            info.bounds, info.strict, info.doc)
        return out

    def params(self) -> dict[str, Any]:
        """Current parameter values by dotted name."""
        return {f"{k}.{n}": v for k in self.order
                for n, v in type(self.units[k]).params(self.units[k]).items()}

    def get(self, name: str) -> Any:
        unit, _, rest = name.partition(".")
        if unit not in self.units or not rest:
            return super().get(name)  # raises with a suggestion
        return self.units[unit].get(rest)

    def _where(self, name: str) -> Any:
        unit, _, rest = name.partition(".")
        inner = self.units[unit]._where(rest)
        return lambda m: inner(m.units[unit])

    # ---- equations ------------------------------------------------------------------------
    def _unit_args(self, t: Scalar, x: Any, u: Any, ops: Any) -> dict[str, tuple[Any, Any]]:
        """Each unit's (state, full inputs), with connected inputs from the ports."""
        wiring = self._analyse()
        lay = self.layout
        xs = {k: getattr(x, k) for k, _ in lay.states.entries}
        free: dict[str, dict[str, Any]] = {}
        for k, g in lay.inputs.entries:
            assert isinstance(g, Group)
            vals = g.leaf_values(getattr(u, k))
            free[k] = {lf.name[len(k) + 1:]: v for lf, v in zip(g.leaves, vals, strict=True)}
        port_vals: dict[tuple[str, str], Any] = {}

        def inputs_of(k: str) -> Any:
            g = self.units[k].layout.inputs
            vals = []
            for lf in g.leaves:
                src = wiring.sources.get((k, lf.name))
                if src is None:
                    vals.append(free[k][lf.name])
                elif src in port_vals:
                    vals.append(port_vals[src])
                else:  # not settled yet (earlier pass): a placeholder, exact later
                    vals.append(lf.var.default)
            return g.from_leaves(vals)

        for _ in range(wiring.passes if wiring.sources else 0):
            new = {}
            for k in wiring.port_units:
                unit = self.units[k]
                pg = unit.layout.ports
                pv = pg.leaf_values(unit.ports(t, xs[k], inputs_of(k), ops))
                new.update({(k, lf.name): v for lf, v in zip(pg.leaves, pv, strict=True)})
            port_vals = new
        return {k: (xs[k], inputs_of(k)) for k in self.order}

    def unit_values(self, t: Scalar, x: Any, u: Any, ops: Any) -> dict[str, tuple[Any, Any]]:
        """Each unit's own state and complete inputs (connected ones from the ports) at
        the system's state ``x`` and free inputs ``u``, by unit name: for per-unit
        diagnostics such as energy balances.

        Parameters
        ----------
        t : scalar
            Time [model time unit].
        x, u : State, Inputs
            The system's state and inputs (as given to :meth:`rhs`).
        ops : Ops
            The backend namespace.

        Returns
        -------
        dict
            Unit name → ``(State, Inputs)`` of that unit.
        """
        return self._unit_args(t, x, u, ops)

    def rhs(self, t: Scalar, x: Any, u: Any, ops: Any) -> Any:
        """Every unit's rhs with its connected inputs taken from the ports."""
        args = self._unit_args(t, x, u, ops)
        return self.State(**{k: self.units[k].rhs(t, *args[k], ops) for k in self.order})

    def step(self, t: Scalar, x: Any, u: Any, dt: Any, ops: Any) -> Any:
        """Every unit's step (discrete-time systems)."""
        args = self._unit_args(t, x, u, ops)
        return self.State(**{k: self.units[k].step(t, *args[k], dt, ops) for k in self.order})

    def measure(self, t: Scalar, x: Any, u: Any, ops: Any) -> Any:
        """Every unit's outputs."""
        args = self._unit_args(t, x, u, ops)
        present = {k for k, _ in self.layout.outputs.entries}
        return self.Outputs(**{k: self.units[k].measure(t, *args[k], ops)
                               for k in self.order if k in present})

    def ports(self, t: Scalar, x: Any, u: Any, ops: Any) -> Any:
        """Every unit's ports (so a system can be a unit of a larger one)."""
        args = self._unit_args(t, x, u, ops)
        present = {k for k, _ in self.layout.ports.entries}
        return self.Ports(**{k: self.units[k].ports(t, *args[k], ops)
                             for k in self.order if k in present})


def _feedthrough(unit: Model) -> dict[str, set[str]]:
    """Port name → the unit's inputs it depends on (structurally, CasADi SX)."""
    import casadi as ca

    from .model import parameter_info
    from .ops import casadi_ops

    lay = unit.layout
    if not lay.ports.leaves:
        return {}
    # parameters as symbols: the sparsity must be structural, not that of today's values
    # (a gain of 0 would hide a feedthrough that the next parameter set has)
    unit = unit.with_params({k: ca.SX.sym(k.replace(".", "_")) for k in parameter_info(unit)})
    xs = ca.SX.sym("x", lay.states.size)
    us = ca.SX.sym("u", lay.inputs.size)
    out = unit.ports(0.0, lay.states.unravel(xs, casadi_ops), lay.inputs.unravel(us, casadi_ops),
                     casadi_ops)
    p = lay.ports.ravel(out, casadi_ops)
    sp = ca.jacobian(p, us).sparsity()
    rows, cols = sp.get_triplet()
    dep: dict[str, set[str]] = {lf.name: set() for lf in lay.ports.leaves}
    port_of = [lf.name for lf in lay.ports.leaves for _ in range(lf.size)]
    input_of = [lf.name for lf in lay.inputs.leaves for _ in range(lf.size)]
    for r, c in zip(rows, cols, strict=True):
        dep[port_of[r]].add(input_of[c])
    return dep

