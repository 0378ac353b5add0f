"""Every public function and class documents every argument; every model variable and
parameter carries units.

As python-control's meta-test does: each argument of the public API (``processtwin``,
``processtwin.estimate``, ``processtwin.solvers``, ``processtwin.models`` and the public
functions and classes of ``layout``, ``system``, ``ops``, ``registry``, ``declare`` and
``cli_values``) must appear in a
numpydoc ``Parameters`` (or ``Other Parameters``) section with a description: the
function's docstring, or for a class its docstring or its ``__init__``'s. Where the
constructor's arguments *are* the attributes (a dataclass, an equinox Module or a
NamedTuple) an ``Attributes`` section counts too. The constructor arguments of a model
class are its parameters and sizes, documented by their own ``doc`` (and units), and the
fields of a ``variables(...)`` tuple by their ``Var``; a subclass that inherits its
constructor shares the documentation of the class that defines it. ``self``, ``cls`` and private
(``_x``) arguments are exempt; ``*args``/``**kwargs`` must be documented like any other
argument (as ``*args`` or ``args``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Any

import pytest

import processtwin
from processtwin.model import Model, parameter_info
from processtwin.models import REGISTRY

PACKAGES = ("processtwin", "processtwin.estimate", "processtwin.solvers", "processtwin.models")
MODULES = ("processtwin.layout", "processtwin.system", "processtwin.ops", "processtwin.registry",
           "processtwin.declare", "processtwin.cli_values")

PARAM_SECTIONS = ("Parameters", "Other Parameters")


# ---- numpydoc, the parts needed -------------------------------------------------------------
def sections(doc: str | None) -> dict[str, list[str]]:
    """Section title → its lines (numpydoc: a title underlined with dashes)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, list[str]] = {}
    current: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"\s*-{3,}\s*", nxt):
            current = line.strip()
            out.setdefault(current, [])
            i += 2
            continue
        if current is not None:
            out[current].append(line)
        i += 1
    return out


def documented(lines: list[str]) -> dict[str, str]:
    """Argument name → description in the lines of one section (``a, b : type`` documents
    both; ``**kw : type`` documents ``kw``)."""
    out: dict[str, str] = {}
    indents = [len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()]
    if not indents:
        return out
    base = min(indents)
    names: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == base:
            head = line.strip().split(" : ", 1)[0].rstrip(" :")
            names = [n.strip().lstrip("*") for n in head.split(",") if n.strip()]
            for n in names:
                out.setdefault(n, "")
        else:
            for n in names:
                out[n] = (out[n] + " " + line.strip()).strip()
    return out


# ---- what is public -------------------------------------------------------------------------
def public_objects() -> dict[str, Any]:
    """Qualified name → every public function and class this test covers."""
    found: dict[str, Any] = {}
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found[f"{pkg}.{name}"] = obj
    for modname in MODULES:
        mod = importlib.import_module(modname)
        names = set(getattr(mod, "__all__", ())) | {
            k for k, v in vars(mod).items() if not k.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v))
            and getattr(v, "__module__", None) == modname}
        for name in sorted(names):
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found[f"{modname}.{name}"] = obj
    return found


def _signature(obj: Any) -> inspect.Signature | None:
    if inspect.isclass(obj) and obj.__init__ is not object.__init__ and (
            getattr(obj.__init__, "__objclass__", None) is not None):
        return None  # an __init__ inherited from a builtin (exceptions): no Python signature
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _arguments(obj: Any) -> list[str]:
    sig = _signature(obj)
    if sig is None:
        return []
    return [p.name for p in sig.parameters.values()
            if p.name not in ("self", "cls") and not p.name.startswith("_")]


def _is_record(cls: type) -> bool:
    """Whether the constructor's arguments are the attributes (dataclass, equinox Module,
    NamedTuple)."""
    return dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields"))


def argument_docs(obj: Any) -> dict[str, str]:
    """Documented argument → description, from every place numpydoc allows for ``obj``."""
    docs: list[str | None] = [obj.__doc__]
    titles = list(PARAM_SECTIONS)
    if inspect.isclass(obj):
        # the class that defines the constructor documents it (a subclass that inherits
        # ``__init__``, as the UKF does the EKF's, shares those arguments and their docs)
        owner = next((c for c in obj.__mro__ if "__init__" in c.__dict__), obj)
        if owner is not obj and owner.__module__.startswith("processtwin"):
            docs.append(owner.__doc__)
        init = owner.__dict__.get("__init__")
        if init is not None and init.__doc__ is not None:
            docs.append(init.__doc__)
        if _is_record(obj):
            titles.append("Attributes")
    out: dict[str, str] = {}
    for doc in docs:
        secs = sections(doc)
        for title in titles:
            for k, v in documented(secs.get(title, [])).items():
                if v or k not in out:
                    out[k] = v
    if inspect.isclass(obj) and issubclass(obj, Model) and not obj._composite:
        for f in dataclasses.fields(obj):  # parameters and sizes document themselves
            doc = f.metadata.get("doc")
            if doc:
                out.setdefault(f.name, doc)
    vars_ = getattr(obj, "_vars", None)  # a `variables(...)` tuple: its Var docs
    if inspect.isclass(obj) and vars_:
        for k, v in vars_.items():
            if v.doc:
                out.setdefault(k, v.doc)
    return out


def missing_docs() -> list[str]:
    """``module.function: arg`` for every undocumented argument (or empty description)."""
    missing = []
    for qualname, obj in public_objects().items():
        docs = argument_docs(obj)
        for arg in _arguments(obj):
            if arg not in docs:
                missing.append(f"{qualname}: {arg}")
            elif not docs[arg].strip():
                missing.append(f"{qualname}: {arg} (no description)")
    return missing


# ---- the meta-tests -------------------------------------------------------------------------
def test_the_parser_reads_numpydoc():
    def f(a, b, c, *args, d=1, **kwargs):
        """Summary.

        Parameters
        ----------
        a : int
            First [m].
        b, c : float
            Two at once.
        *args : float
            More.
        d :
            Untyped.
        **kwargs
            Options.

        Returns
        -------
        int
        """

    docs = argument_docs(f)
    assert set(docs) == {"a", "b", "c", "args", "d", "kwargs"}
    assert docs["a"] == "First [m]." and docs["c"] == "Two at once."
    assert _arguments(f) == ["a", "b", "c", "args", "d", "kwargs"]

    def g(x, y):
        """No sections; ``x`` is mentioned in prose only."""

    assert argument_docs(g) == {}


def test_the_public_api_is_covered():
    objs = public_objects()
    for name in ("processtwin.simulate", "processtwin.estimate.ExtendedKalmanFilter",
                 "processtwin.solvers.OCP", "processtwin.models.Bioreactor",
                 "processtwin.layout.Group", "processtwin.system.System",
                 "processtwin.ops.Ops", "processtwin.registry.load_model"):
        assert name in objs, name
    assert sum(len(_arguments(o)) for o in objs.values()) > 100


def test_every_public_argument_is_documented():
    missing = missing_docs()
    assert not missing, (f"{len(missing)} undocumented arguments (numpydoc `Parameters`):\n"
                         + "\n".join(missing))


# ---- units on every model variable and parameter ---------------------------------------------
def _model_classes() -> dict[str, type]:
    mod = processtwin.models
    return {k: getattr(mod, k) for k in mod.__all__
            if inspect.isclass(getattr(mod, k)) and issubclass(getattr(mod, k), Model)}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_variable_and_parameter_has_units_and_a_description(name):
    model = REGISTRY[name]()
    lay = model.layout
    bad = []
    for group in (lay.states, lay.inputs, lay.outputs, lay.ports):
        for leaf in group.leaves:
            if not (isinstance(leaf.var.units, str) and leaf.var.units.strip()):
                bad.append(f"{group.what} `{leaf.name}`: no units")
            if not leaf.var.doc.strip():
                bad.append(f"{group.what} `{leaf.name}`: no description")
    for k, info in parameter_info(model).items():
        if not (isinstance(info.units, str) and info.units.strip()):
            bad.append(f"parameter `{k}`: no units")
        if not info.doc.strip():
            bad.append(f"parameter `{k}`: no description")
    assert not bad, f"{name}: " + "; ".join(bad)


def test_every_model_class_is_checked_for_units():
    """The classes in ``processtwin.models.__all__`` are all reachable from the registry,
    so the test above covers every model the package exports."""
    registered = {type(REGISTRY[k]()) for k in REGISTRY}
    for unit in (REGISTRY["fed_batch_plant"]().units.values()):
        registered.add(type(unit))
    unchecked = set(_model_classes().values()) - registered
    assert not unchecked, sorted(c.__name__ for c in unchecked)
