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
    """A numerical solver failed (integration, optimisation).

    Parameters
    ----------
    message : str
        What failed and why.
    status : str
        Class of the failure: ``"infeasible"`` (only when a softened re-solve needs
        slack), ``"limit"`` (iteration or time limit), ``"numerical"`` or ``"failed"``.
    result : object, optional
        The failed solve's result (its stats, the last iterate), for inspection.
    """

    def __init__(self, message: str, *, status: str = "failed", result: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.result = result


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean `x`?"`` for the closest choice, or the list of choices."""
    choices = list(choices)
    if not choices:
        return "; there is none."
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; expected one of {', '.join(f'`{c}`' for c in choices)}."
