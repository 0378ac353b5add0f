"""Command-line values: ``NAME=VALUE`` assignments parsed against a model's layout, and
compact summaries of (vector) results for the terminal."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["label", "number", "numbers", "out_path", "parse_assignments", "parse_inputs",
           "parse_params", "parse_x0", "summary"]


def parse_assignments(items: tuple[str, ...], what: str) -> dict[str, str]:
    """``("a=1", "b=2")`` → ``{"a": "1", "b": "2"}``; anything else is a usage error.

    Parameters
    ----------
    items : tuple of str
        The ``NAME=VALUE`` texts of a repeatable option.
    what : str
        The option, for the message (``"--x0"``).
    """
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=what)
        out[name.strip()] = value.strip()
    return out


def number(text: str, name: str, what: str) -> float:
    """``text`` as a float; anything else is a usage error naming ``name`` and ``what``.

    Parameters
    ----------
    text : str
        The value as typed.
    name : str
        The variable it is for, for the message.
    what : str
        The option, for the message.
    """
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"`{name}`: expected a number, got {text!r}",
                                 param_hint=what) from None


def numbers(text: str, name: str, what: str) -> Any:
    """``20`` → 20.0 (broadcast over a vector); ``20,21,22`` → an array, one per element.

    Parameters
    ----------
    text : str
        The value(s) as typed.
    name : str
        The variable they are for, for the message.
    what : str
        The option, for the message.
    """
    import numpy as np

    parts = text.split(",")
    if len(parts) == 1:
        return number(text, name, what)
    return np.array([number(v.strip(), name, what) for v in parts])


def parse_params(model: Any, items: tuple[str, ...]) -> dict[str, float]:
    """Parameter values by (dotted) name from ``--param NAME=VALUE`` texts, names checked.

    Parameters
    ----------
    model : Model
        The model the parameters belong to.
    items : tuple of str
        The ``NAME=VALUE`` texts [parameter units].
    """
    from .errors import ConfigError, suggest

    p = {k: number(v, k, "--param") for k, v in parse_assignments(items, "--param").items()}
    known = model.parameters()
    for k in p:
        if k not in known:
            raise ConfigError(f"unknown parameter `{k}` of model `{model.name}`"
                              + suggest(k, known))
    return p


def parse_x0(model: Any, items: tuple[str, ...]) -> dict[str, Any]:
    """Initial states by (dotted) name, validated against the layout (names, lengths,
    bounds); only the names given.

    Parameters
    ----------
    model : Model
        The model the states belong to.
    items : tuple of str
        The ``NAME=VALUE`` texts of ``--x0`` [state units].
    """
    x = {k: numbers(v, k, "--x0") for k, v in parse_assignments(items, "--x0").items()}
    model.layout.states.values(x)
    return x


def parse_inputs(model: Any, items: tuple[str, ...]) -> dict[str, Any]:
    """``0.01`` or ``1,2,3`` (constant) or ``0:0.0,20:0.01`` (piecewise-constant schedule;
    a vector input takes each value on all its elements).

    Parameters
    ----------
    model : Model
        The model the inputs belong to.
    items : tuple of str
        The ``NAME=VALUE`` texts of ``--input`` [input units; schedule times in the model's
        time unit].
    """
    from .signals import hold

    group = model.layout.inputs
    out: dict[str, Any] = {}
    for name, text in parse_assignments(items, "--input").items():
        group.leaf(name)  # an unknown (dotted) name fails here, with the closest known one
        if ":" not in text:
            out[name] = numbers(text, name, "--input")
            group.values({name: out[name]})  # vector length and bounds
            continue
        times, values = [], []
        for part in text.split(","):
            t, _, v = part.partition(":")
            times.append(number(t, name, "--input"))
            values.append(number(v, name, "--input"))
        out[name] = hold(times, values)
    return out


def label(leaf: Any) -> str:
    """``X`` for a scalar, ``T[cell: 50]`` for a vector.

    Parameters
    ----------
    leaf : Leaf
        A variable of a model's layout.
    """
    return leaf.name if not leaf.shape else f"{leaf.name}[{leaf.dim}: {leaf.size}]"


def summary(value: Any) -> str:
    """A number, or a vector as first/last/min/max (never every element).

    Parameters
    ----------
    value : float or array
        The value to show.
    """
    import numpy as np

    a = np.asarray(value, dtype=float).reshape(-1)
    if a.size == 1:
        return f"{a[0]:.6g}"
    if np.all(a == a[0]):
        return f"{a[0]:.6g} (all {a.size})"
    return f"first {a[0]:.6g}, last {a[-1]:.6g}, min {a.min():.6g}, max {a.max():.6g}"


def out_path(ctx: Any, param: Any, value: Any) -> Any:
    """Click callback of an ``--out FILE`` option: refuse, before any work, a file whose
    directory does not exist or cannot be written.

    Parameters
    ----------
    ctx, param : click.Context, click.Parameter
        Click's.
    value : pathlib.Path or None
        The file given.

    Returns
    -------
    pathlib.Path or None
        ``value``.
    """
    import os

    if value is None:
        return value
    parent = value.resolve().parent
    if not parent.is_dir():
        raise click.BadParameter(f"cannot write {value}: directory {parent} does not "
                                 "exist.", ctx, param)
    if not os.access(parent, os.W_OK):
        raise click.BadParameter(f"cannot write {value}: directory {parent} is not "
                                 "writable.", ctx, param)
    return value
