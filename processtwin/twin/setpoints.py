"""Writing setpoints back to the plant, guarded: off unless enabled, never outside the
actuator envelope, never faster than the rate limits.

Every connector that writes to a plant (OPC UA, MQTT) passes the recommendation's
setpoints through one :class:`SetpointGuard`; what it refuses or clips is counted and
logged, so an operator can always tell what the twin wrote and why not more.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..model import Model

__all__ = ["SetpointGuard", "setpoints_of"]

log = logging.getLogger("processtwin.twin.setpoints")


class SetpointGuard:
    """The gate between a twin's recommendations and the plant's actuators.

    Parameters
    ----------
    model : Model
        The twin's model: only its manipulated inputs may be written, never outside
        their declared bounds.
    enabled : bool
        Write-back on; off (the default) refuses every write and counts it.
    envelope : mapping, optional
        Input → ``(low, high)`` [input units]: the actuator envelope, intersected with
        the declared bounds (``None`` for an open side).
    rate : mapping, optional
        Input → largest change per model time unit [input units / model time unit] from
        the last written value; the first write of an input is limited by the envelope
        only.

    Attributes
    ----------
    counters : dict
        ``written`` (values sent), ``refused`` (values not sent: write-back disabled),
        ``clipped`` (values sent after clipping to the envelope or rate).
    log : list of str
        One line per refusal or clip, newest last.
    """

    def __init__(self, model: Model, *, enabled: bool = False,
                 envelope: Mapping[str, tuple[float | None, float | None]] | None = None,
                 rate: Mapping[str, float] | None = None) -> None:
        self.model = model
        self.enabled = bool(enabled)
        self.units: dict[str, str] = {}
        self.bounds: dict[str, tuple[float, float]] = {}
        for name, var in model.inputs().items():
            if var.kind != "manipulated" or var.shape is not None:
                continue
            lo, hi = var.bounds
            self.units[name] = var.units
            self.bounds[name] = (-math.inf if lo is None else float(lo),
                                 math.inf if hi is None else float(hi))
        for name, (lo, hi) in (envelope or {}).items():
            blo, bhi = self.bounds[self._known(name, "envelope")]
            lo = blo if lo is None else max(blo, float(lo))
            hi = bhi if hi is None else min(bhi, float(hi))
            if not lo <= hi:
                raise ConfigError(f"envelope of `{name}`: [{lo:g}, {hi:g}] "
                                  f"{self.units[name]} is empty (declared bounds "
                                  f"[{blo:g}, {bhi:g}]).")
            self.bounds[name] = (lo, hi)
        self.rate: dict[str, float] = {}
        for name, r in (rate or {}).items():
            self._known(name, "rate")
            if not (isinstance(r, int | float) and r > 0):
                raise ConfigError(f"rate limit of `{name}`: expected a number > 0 "
                                  f"[{self.units[name]}/{model.time_unit}], got {r!r}.")
            self.rate[name] = float(r)
        self.last: dict[str, tuple[float, float]] = {}
        self.counters = {"written": 0, "refused": 0, "clipped": 0}
        self.log: list[str] = []

    def _known(self, name: str, what: str) -> str:
        if name not in self.bounds:
            raise ConfigError(f"{what} for `{name}`: not a scalar manipulated input of "
                              f"`{self.model.name}`; those are "
                              f"{', '.join(self.bounds) or '(none)'}.")
        return name

    def _note(self, line: str) -> None:
        self.log.append(line)
        log.warning(line)

    def check(self, t: float, setpoints: Mapping[str, float]) -> dict[str, float]:
        """The values that may be written at ``t``.

        Parameters
        ----------
        t : float
            Model time of the write [model time unit].
        setpoints : mapping
            Input → requested value [input units].

        Returns
        -------
        dict
            Input → value to write (clipped to the envelope and rate limit); empty when
            write-back is disabled.

        Raises
        ------
        ConfigError
            An input that is not a scalar manipulated input of the model, or a value
            that is not a finite number.
        """
        out: dict[str, float] = {}
        for name, v in setpoints.items():
            self._known(name, "setpoint")
            try:
                want = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"setpoint `{name}`: expected a number "
                                  f"[{self.units[name]}], got {v!r}.") from None
            if not math.isfinite(want):
                raise ConfigError(f"setpoint `{name}`: expected a finite number "
                                  f"[{self.units[name]}], got {want!r}.")
            if not self.enabled:
                self.counters["refused"] += 1
                self._note(f"t={t:g}: setpoint {name} = {want:g} {self.units[name]} not "
                           "written: write-back is disabled")
                continue
            lo, hi = self.bounds[name]
            val = min(max(want, lo), hi)
            why = "envelope" if val != want else ""
            if name in self.rate and name in self.last:
                t_last, v_last = self.last[name]
                step = self.rate[name] * max(float(t) - t_last, 0.0)
                limited = min(max(val, v_last - step), v_last + step)
                if limited != val:
                    val, why = limited, "rate limit"
            if why:
                self.counters["clipped"] += 1
                self._note(f"t={t:g}: setpoint {name} = {want:g} {self.units[name]} "
                           f"clipped to {val:g} ({why})")
            self.counters["written"] += 1
            self.last[name] = (float(t), val)
            out[name] = val
        return out


def setpoints_of(recommendation: Any) -> dict[str, float]:
    """The numeric setpoints of a recommendation.

    Parameters
    ----------
    recommendation : Recommendation, TwinRecommendation or dict
        A :class:`~processtwin.solvers.Recommendation` (``setpoints`` of
        ``(value, units)``), a twin's recommendation wrapping one, or a dict with a
        ``setpoints`` entry.

    Returns
    -------
    dict
        Input → value; empty for a fallback recommendation (the plant keeps what it
        has) or one without setpoints.
    """
    rec = getattr(recommendation, "value", recommendation)
    get = rec.get if isinstance(rec, Mapping) else (lambda k, d=None: getattr(rec, k, d))
    if get("fallback", False):
        return {}
    out: dict[str, float] = {}
    for name, v in (get("setpoints", None) or {}).items():
        out[name] = float(v[0] if isinstance(v, tuple | list) else v)
    return out
