"""What a model's users optimise and the limits they operate within, declared as data.

A model declares its named objectives (:class:`Objective`: a terminal value and/or a rate
integrated over the horizon, to maximise or minimise, with units) and its operating limits
(:class:`Limit`: bounds on inputs, states or outputs — a pump's capacity, a broth's
viscosity limit, a vessel's oxygen transfer — numbers or names of parameters). The
optimisers in :mod:`processtwin.solvers` read them; no solver knows a model's names.
Users may also write objectives and limits as text (the command line): see
:func:`parse_objective` and :func:`parse_limit`.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["Limit", "Objective", "parse_limit", "parse_objective"]


@dataclass(frozen=True)
class Objective:
    """A quantity to optimise over a horizon, declared with a model.

    Attributes
    ----------
    doc : str
        What it is, for reports (e.g. ``"final product mass P(T) V(T)"``).
    units : str
        Its units (e.g. ``"g"``).
    sense : {"max", "min"}
        Maximise or minimise.
    terminal : callable, optional
        ``terminal(model, x, T, ops)``: the value at the end of the horizon from the final
        ``State`` ``x`` and the horizon length ``T`` [model time unit] [units].
    stage : callable, optional
        ``stage(model, x, u, ops)``: a rate integrated over the horizon [units per model
        time unit]; the objective is ``terminal + ∫ stage dt``.
    free_time : bool
        The objective is meant for a free final time (a productivity per batch hour).
    du_weight : float
        Default weight of squared control moves between intervals, which regularises
        singular arcs [units per (input units)²]; 0 for none.
    """

    doc: str
    units: str
    sense: str = "max"
    terminal: Callable[..., Any] | None = None
    stage: Callable[..., Any] | None = None
    free_time: bool = False
    du_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.sense not in ("max", "min"):
            raise ConfigError(f"objective `{self.doc}`: `sense` must be 'max' or 'min', got "
                              f"{self.sense!r}.")
        if self.terminal is None and self.stage is None:
            raise ConfigError(f"objective `{self.doc}` needs a `terminal` value or a "
                              "`stage` rate.")


@dataclass(frozen=True)
class Limit:
    """An operating limit on an input, state or output.

    Attributes
    ----------
    lower, upper : float, str or None
        Bounds [the variable's units]: a number, the name of a parameter of the model
        (read at solve time, so an estimated or changed parameter moves the limit) or
        ``None`` (no bound on that side).
    doc : str
        Why the limit exists (pump capacity, broth viscosity, ...).
    terminal : bool
        The limit applies at the end of the horizon only (a vessel's final volume).
    """

    lower: float | str | None = None
    upper: float | str | None = None
    doc: str = ""
    terminal: bool = False

    def values(self, model: Any) -> tuple[float | None, float | None]:
        """The bounds as numbers, parameters read from ``model``.

        Parameters
        ----------
        model : Model
            The model whose parameters named bounds refer to.
        """
        def num(v: Any) -> float | None:
            if v is None or not isinstance(v, str):
                return None if v is None else float(v)
            return float(model.get(v))

        return num(self.lower), num(self.upper)


_FUNCS = {"exp": "exp", "log": "log", "sqrt": "sqrt", "tanh": "tanh"}
_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)


def _check(node: ast.AST, names: set[str], text: str, inside: bool = False) -> None:
    """Only arithmetic on known names and numbers, ``integral(...)`` at the top level."""
    if isinstance(node, ast.Expression):
        return _check(node.body, names, text)
    if isinstance(node, ast.BinOp) and isinstance(node.op, _OPS):
        _check(node.left, names, text, inside)
        return _check(node.right, names, text, inside)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _check(node.operand, names, text, inside)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return None
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ConfigError(f"objective `{text}`: unknown name `{node.id}`; use "
                              + ", ".join(f"`{n}`" for n in sorted(names)) + ".")
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords \
            and len(node.args) == 1:
        if node.func.id == "integral":
            if inside:
                raise ConfigError(f"objective `{text}`: `integral(...)` cannot be nested.")
            return _check(node.args[0], names | {"__stage__"}, text, True)
        if node.func.id in _FUNCS:
            return _check(node.args[0], names, text, inside)
    raise ConfigError(f"objective `{text}`: only + - * / ** on names and numbers, "
                      "exp/log/sqrt/tanh and integral(...) are allowed, got "
                      f"`{ast.unparse(node)}`.")


def _evaluate(node: ast.AST, env: dict[str, Any], ops: Any, stage_env: Any) -> Any:
    if isinstance(node, ast.BinOp):
        a, b = (_evaluate(node.left, env, ops, stage_env),
                _evaluate(node.right, env, ops, stage_env))
        return {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                ast.Div: lambda: a / b, ast.Pow: lambda: a ** b}[type(node.op)]()
    if isinstance(node, ast.UnaryOp):
        v = _evaluate(node.operand, env, ops, stage_env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    if node.func.id == "integral":
        return stage_env(node.args[0])
    return getattr(ops, _FUNCS[node.func.id])(_evaluate(node.args[0], env, ops, stage_env))


def _split_integrals(node: ast.AST) -> tuple[list[ast.AST], list[tuple[float, ast.AST]]]:
    """Terms of a sum: those without ``integral`` and ``(sign, integrand)`` pairs."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        t1, i1 = _split_integrals(node.left)
        t2, i2 = _split_integrals(node.right)
        if isinstance(node.op, ast.Sub):
            t2 = [ast.UnaryOp(ast.USub(), t) for t in t2]
            i2 = [(-s, e) for s, e in i2]
        return t1 + t2, i1 + i2
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        t, i = _split_integrals(node.operand)
        return [ast.UnaryOp(ast.USub(), x) for x in t], [(-s, e) for s, e in i]
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "integral":
        return [], [(1.0, node.args[0])]
    if "integral(" in ast.unparse(node):
        raise ConfigError(f"objective: `integral(...)` may only be added or subtracted, got "
                          f"`{ast.unparse(node)}`.")
    return [node], []


def parse_objective(model: Any, text: str) -> Objective:
    """An objective written as text: ``"max P*V/1000"``, ``"min integral(Q_hvac)"``,
    ``"max P*V/T - 0.1*integral(F)"``.

    The expression may use the model's state names and ``T_f`` (horizon length; also
    ``T`` when the model has no state called T) at the end, and ``integral(...)`` of
    states, inputs and outputs; it starts with ``max`` or ``min``.

    Parameters
    ----------
    model : Model
        The model whose names the expression uses.
    text : str
        The objective.

    Returns
    -------
    Objective

    Raises
    ------
    ConfigError
        An unknown name, a disallowed construct or a missing ``max``/``min``.
    """
    words = text.strip().split(None, 1)
    if len(words) != 2 or words[0] not in ("max", "min", "maximise", "minimise",
                                           "maximize", "minimize"):
        raise ConfigError(f"objective `{text}` must start with `max` or `min`, e.g. "
                          "`max P*V` or `min integral(Q_hvac)`.")
    sense = "max" if words[0].startswith("max") else "min"
    lay = model.layout
    try:
        tree = ast.parse(words[1], mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"objective `{text}` is not an expression: {exc.msg}.") from None
    # the horizon length: `T_f`, and `T` too unless the model has a variable called T
    horizon = {"T_f"} | ({"T"} if "T" not in lay.states.names else set())
    end_names = set(lay.states.names) | horizon
    rate_names = set(lay.states.names) | set(lay.inputs.names) | set(lay.outputs.names)
    _check(tree, end_names | rate_names, text)
    terms, integrals = _split_integrals(tree.body)
    for t in terms:
        _check(ast.Expression(t), end_names, text)
    for _, e in integrals:
        _check(ast.Expression(e), rate_names, text, True)

    def names_in(nodes: Any) -> set[str]:
        return {n.id for e in nodes for n in ast.walk(e) if isinstance(n, ast.Name)}

    uses_horizon = bool(names_in(terms) & horizon)
    needs_outputs = bool(names_in([e for _, e in integrals]) & set(lay.outputs.names))

    def terminal(m: Any, x: Any, T: Any, ops: Any) -> Any:
        env = {**x._asdict(), **{h: T for h in horizon}}
        return sum((_evaluate(t, env, ops, None) for t in terms), 0.0)

    def stage(m: Any, x: Any, u: Any, ops: Any) -> Any:
        env = {**u._asdict(), **x._asdict()}
        if needs_outputs:
            env.update(m.measure(0.0, x, u, ops)._asdict())
        return sum((s * _evaluate(e, env, ops, None) for s, e in integrals), 0.0)

    return Objective(words[1], "", sense, terminal if terms else None,
                     stage if integrals else None, free_time=uses_horizon)


def parse_limit(text: str) -> tuple[str, Limit]:
    """A limit written as text: ``"X<=3.7"``, ``"0<=F<=0.2"``, ``"V<=150 at end"``,
    ``"OUR<=OTR_max"`` (a parameter name as a bound), ``"F=0:0.2"``.

    Parameters
    ----------
    text : str
        The limit.

    Returns
    -------
    (str, Limit)
        The variable's name and its limit.

    Raises
    ------
    ConfigError
        Not one of the forms above, or lower > upper.
    """
    s = text.replace(" ", "")
    terminal = s.endswith("atend") or s.endswith("@end")
    s = s.removesuffix("atend").removesuffix("@end")

    def bound(v: str) -> float | str | None:
        if v == "":
            return None
        try:
            f = float(v)
        except ValueError:
            if v.isidentifier():
                return v
            raise ConfigError(f"limit `{text}`: bound `{v}` is neither a number nor a "
                              "parameter name.") from None
        if math.isnan(f):
            raise ConfigError(f"limit `{text}`: a bound cannot be NaN.")
        return f

    if "=" in s and "<" not in s and ">" not in s and ":" in s:
        name, rng = s.split("=", 1)
        lo, hi = (bound(v) for v in rng.split(":", 1))
    else:
        parts = s.replace(">=", "≥").replace("<=", "≤").replace("≥", "|≥|").replace(
            "≤", "|≤|").split("|")
        if len(parts) == 3 and parts[1] == "≤":
            a, b = parts[0], parts[2]
            name, lo, hi = (b, bound(a), None) if _is_num(a) else (a, None, bound(b))
        elif len(parts) == 3 and parts[1] == "≥":
            a, b = parts[0], parts[2]
            name, lo, hi = (b, None, bound(a)) if _is_num(a) else (a, bound(b), None)
        elif len(parts) == 5 and parts[1] == parts[3] == "≤":
            name, lo, hi = parts[2], bound(parts[0]), bound(parts[4])
        else:
            raise ConfigError(f"limit `{text}` must read `NAME<=VALUE`, `NAME>=VALUE`, "
                              "`LOW<=NAME<=HIGH` or `NAME=LOW:HIGH` (optionally `at end`).")
    if not name.replace(".", "_").replace("[", "_").replace("]", "").isidentifier():
        raise ConfigError(f"limit `{text}`: `{name}` is not a variable name.")
    if isinstance(lo, float) and isinstance(hi, float) and lo > hi:
        raise ConfigError(f"limit `{text}`: lower bound {lo:g} > upper bound {hi:g}.")
    return name, Limit(lo, hi, "given", terminal)


def _is_num(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True
