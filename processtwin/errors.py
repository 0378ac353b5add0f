"""Domain exceptions. Each subclasses the builtin a caller would already catch."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigError", "DataError", "ModelError", "SolverError", "suggest"]


class ModelError(ValueError):
    """A model, its parameters or its states are invalid (out of bounds, wrong type)."""


class DataError(ValueError):
    """Input data (time grids, input signals, measurements) are invalid."""


class ConfigError(ValueError):
    """An option or a name given by the user is unknown or inconsistent."""


class SolverError(RuntimeError):
    """A numerical solver failed (integration, optimisation)."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean `x`?"`` for the closest choice, or the list of choices."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; expected one of {', '.join(f'`{c}`' for c in choices)}."
