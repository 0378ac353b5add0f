"""Find a model from a short specification: a built-in name, an installed plugin, or a user's
own file or module.

Specifications accepted by :func:`load_model` (and by every ``MODEL`` argument of the
``processtwin`` command):

``bioreactor``
    A built-in model (:data:`processtwin.models.REGISTRY`) or one that an installed package
    registers under the entry-point group ``processtwin.models``.
``path/to/plant.py:MyReactor``
    The attribute ``MyReactor`` of a Python file, imported by path. ``path/to/plant.py``
    alone picks the file's only concrete Model subclass.
``package.module:Name``
    The attribute ``Name`` of an importable module.

The attribute may be a :class:`~processtwin.model.Model` subclass (constructed with its
defaults), a Model instance, or a zero-argument factory returning one (a composed
:class:`~processtwin.system.System`, a model with non-default sizes). Nothing is imported
until a model is asked for: listing plugins does not import them, and a broken plugin
fails only when it is used, with a :class:`~processtwin.errors.ConfigError` naming it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ConfigError, suggest
from .model import Model

__all__ = ["ENTRY_POINT_GROUP", "EntryPointModel", "available_models", "load_model"]

#: Entry-point group under which installed packages register models.
ENTRY_POINT_GROUP = "processtwin.models"

_FORMS = "A model of your own is given as `path/to/plant.py:Name` or `package.module:Name`."


class EntryPointModel:
    """Zero-argument factory of a model registered by an installed package.

    The entry point is imported on the first call, not when it is listed, so one broken
    plugin does not break the others.

    Parameters
    ----------
    entry_point : importlib.metadata.EntryPoint
        An entry point of the group :data:`ENTRY_POINT_GROUP`, whose object is a Model
        subclass, a Model instance or a zero-argument factory returning one.
    """

    def __init__(self, entry_point: metadata.EntryPoint) -> None:
        self.entry_point = entry_point
        self.target: Any = None  # the imported object, once called

    @property
    def source(self) -> str:
        """Where the model comes from: the distribution and the object path."""
        ep = self.entry_point
        dist = getattr(ep, "dist", None)
        where = f"`{ep.value}`"
        if dist is not None:
            where += f" of {dist.name} {dist.version}"
        return f"entry point {where}"

    def __call__(self) -> Model:
        ep = self.entry_point
        if self.target is None:
            try:
                self.target = ep.load()
            except Exception as exc:
                raise ConfigError(f"model `{ep.name}` ({self.source}) failed to import: "
                                  f"{_why(exc)}.") from exc
        return _as_model(self.target, f"`{ep.value}` (model `{ep.name}`)")

    def __repr__(self) -> str:
        return f"EntryPointModel({self.entry_point.name!r}, {self.entry_point.value!r})"


def available_models() -> dict[str, Callable[[], Model]]:
    """Every model known by name: the built-in ones and those of installed packages.

    Installed packages register models in ``pyproject.toml``::

        [project.entry-points."processtwin.models"]
        my_reactor = "my_package.models:MyReactor"

    Returns
    -------
    dict
        Name → zero-argument callable returning a model instance. Built-in models come
        first; plugin models are :class:`EntryPointModel` factories, imported on first call.

    Warns
    -----
    UserWarning
        For an entry point whose name is taken by a built-in model or by an earlier entry
        point (the first one is kept), or when the installed packages cannot be read.
    """
    from .models import REGISTRY

    out: dict[str, Callable[[], Model]] = dict(REGISTRY)
    try:
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # corrupt metadata of some installed package
        warnings.warn(f"could not read the `{ENTRY_POINT_GROUP}` entry points: {_why(exc)}",
                      UserWarning, stacklevel=2)
        return out
    for ep in eps:
        factory = EntryPointModel(ep)
        if ep.name in out:
            kept = "a built-in model" if ep.name in REGISTRY else out[ep.name].source
            warnings.warn(f"model `{ep.name}` from {factory.source} is ignored: the name is "
                          f"taken by {kept}.", UserWarning, stacklevel=2)
            continue
        out[ep.name] = factory
    return out


def load_model(spec: str) -> Model:
    """Build the model named by ``spec``.

    Parameters
    ----------
    spec : str
        A registered name (``"bioreactor"``, or a plugin's name), a file and attribute
        (``"path/to/plant.py:MyReactor"``; the file alone if it defines exactly one concrete
        Model subclass) or a module and attribute (``"package.module:Name"``). The
        attribute may be a Model subclass, a Model instance or a zero-argument factory.
        A file is executed afresh on every call (edits are picked up) as a module of a
        unique name; its folder is on ``sys.path`` while it runs, so it can import its
        neighbours.

    Returns
    -------
    Model
        The model instance.

    Raises
    ------
    ConfigError
        An unknown name (with the closest known ones), a missing file or module, a file
        or module without that attribute (with the closest Model names it has), an
        attribute that is not a model, or code that raises while importing or building the
        model (with the file and line where it did).

    Examples
    --------
    >>> load_model("bioreactor")                       # doctest: +SKIP
    >>> load_model("plants/tank.py:HeatedTank")        # doctest: +SKIP
    >>> load_model("my_package.models:make_plant")     # doctest: +SKIP
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a model specification must be a non-empty string, got {spec!r}.")
    spec = spec.strip()
    target, attr = _split(spec)
    if _is_path(target):
        return _from_file(Path(target), attr)
    if attr is not None:
        return _from_module(target, attr)
    known = available_models()
    if target not in known:
        raise ConfigError(f"unknown model `{target}`" + suggest(target, known) + " " + _FORMS)
    factory = known[target]
    if isinstance(factory, EntryPointModel):
        return factory()
    return _as_model(factory, f"built-in model `{target}`")


# ---- parsing --------------------------------------------------------------------------------
def _split(spec: str) -> tuple[str, str | None]:
    """``"a/b.py:Name"`` → ``("a/b.py", "Name")``; the last colon separates, so a Windows
    drive (``C:\\plant.py``) is part of the path."""
    head, sep, attr = spec.rpartition(":")
    if sep and head and attr and not re.search(r"[\\/]", attr):
        return head, attr
    return spec, None


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target or (
        os.altsep is not None and os.altsep in target)


# ---- files and modules ----------------------------------------------------------------------
def _from_file(path: Path, attr: str | None) -> Model:
    if not path.is_file():
        hint = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        if path.suffix != ".py":
            hint += "; a model file ends in `.py`"
        raise ConfigError(f"model file `{path}` does not exist{hint}.")
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_processtwin_user_{stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"`{path}` cannot be imported as a Python file.")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before it runs (dataclasses and pickling look classes up by module name).
    sys.modules[name] = module
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"importing `{path}` failed{_location(exc)}: {_why(exc)}.") from exc
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return _attribute(module, attr, f"`{path}`")


def _from_module(modname: str, attr: str) -> Model:
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == modname or modname.startswith(missing + "."):
            file = modname.replace(".", "/") + ".py"
            hint = (f"; did you mean the file, `{file}:{attr}`?" if Path(file).is_file() else
                    " (a file is given by its path, `plant.py:Name`).")
            raise ConfigError(f"no module `{modname}`: it is not installed or not on "
                              f"`sys.path`{hint}") from exc
        raise ConfigError(f"importing `{modname}` failed{_location(exc)}: "
                          f"{_why(exc)}.") from exc
    except Exception as exc:
        raise ConfigError(f"importing `{modname}` failed{_location(exc)}: "
                          f"{_why(exc)}.") from exc
    return _attribute(module, attr, f"module `{modname}`")


def _attribute(module: Any, attr: str | None, where: str) -> Model:
    models = _model_names(module)
    if attr is None:
        own = [k for k in models if isinstance(getattr(module, k), type)
               and getattr(module, k).__module__ == module.__name__]
        if len(own) != 1:
            found = ", ".join(f"`{k}`" for k in own) if own else "none"
            raise ConfigError(f"{where}: name the model as `FILE:Name`; the file should define "
                              f"exactly one concrete Model subclass, found {found}.")
        attr = own[0]
    if not hasattr(module, attr):
        if models:
            hint = suggest(attr, models)
        else:
            hint = "; it defines no Model subclass or instance (a factory works too)."
        raise ConfigError(f"{where} has no attribute `{attr}`" + hint)
    return _as_model(getattr(module, attr), f"`{attr}` of {where}")


def _model_names(module: Any) -> list[str]:
    """Names in ``module`` bound to concrete Model subclasses or to Model instances."""
    out = []
    for k, v in vars(module).items():
        if k.startswith("_"):
            continue
        if isinstance(v, Model) or (isinstance(v, type) and issubclass(v, Model)
                                    and _concrete(v)):
            out.append(k)
    return out


def _concrete(cls: type) -> bool:
    # Model itself, `Abstract*` classes and System (which needs its units) are not models.
    return cls is not Model and not cls.__name__.startswith("Abstract") and not (
        cls.__dict__.get("_composite", False))


# ---- objects to models ----------------------------------------------------------------------
def _as_model(obj: Any, what: str) -> Model:
    """A Model instance from a Model subclass, a Model instance or a zero-argument factory."""
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, type):
        if not issubclass(obj, Model):
            raise ConfigError(f"{what} is the class `{obj.__name__}`, not a processtwin "
                              "Model subclass.")
        if not _concrete(obj):
            raise ConfigError(f"{what} is the abstract class `{obj.__name__}`; name a "
                              "concrete Model subclass or a factory.")
        kind = "constructing"
    elif callable(obj):
        kind = "calling the factory"
    else:
        raise ConfigError(f"{what} is of type `{type(obj).__name__}`, not a Model subclass, a "
                          "Model instance or a zero-argument factory returning one.")
    try:
        model = obj()
    except Exception as exc:
        raise ConfigError(f"{kind} {what} failed{_location(exc)}: {_why(exc)}.") from exc
    if not isinstance(model, Model):
        raise ConfigError(f"{what} returned an object of type `{type(model).__name__}`, not a "
                          "processtwin Model instance.")
    return model


def _why(exc: BaseException) -> str:
    text = str(exc).rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _location(exc: BaseException) -> str:
    """`` (plant.py, line 12)``: the innermost frame of the user's code, if any.

    Frames in processtwin itself, the standard library and installed packages are skipped
    (an error raised by the model contract points at the user's class statement).
    """
    skip = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    skip.update(str(Path(m.__file__).resolve().parent) for k, m in list(sys.modules.items())
                if (k == "processtwin" or k.startswith("processtwin."))
                and getattr(m, "__file__", None))
    prefixes = tuple(d + os.sep for d in skip)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith("<"):
            continue
        filename = str(Path(frame.filename).resolve())
        if not filename.startswith(prefixes):
            return f" ({filename}, line {frame.lineno})"
    return ""
