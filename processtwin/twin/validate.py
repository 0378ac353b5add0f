"""Validation at the door: every sample a twin receives is checked before it can touch
the estimate, and a rejected one is kept, with its reason, never dropped.

``received = accepted + quarantined``, always (the counters are checked on every batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..model import Model

__all__ = ["REASONS", "Sample", "Validator"]

#: Quarantine reasons, in the order of their codes in the historian.
REASONS = ("unknown_channel", "not_a_number", "not_finite", "out_of_range", "wrong_unit",
           "not_increasing", "duplicate", "future", "bad_time")


@dataclass(frozen=True)
class Sample:
    """One measured value as it arrives.

    Attributes
    ----------
    t : float
        Sampling time [model time unit].
    channel : str
        Flat channel name (``"OUR"``, ``"T_air[2]"``).
    value : Any
        The value as received (checked: a finite number).
    unit : str or None
        The unit the sender stated, if any (checked against the channel's).
    """

    t: Any
    channel: str
    value: Any
    unit: str | None = None


class Validator:
    """Checks samples against a model's measured channels.

    Parameters
    ----------
    model : Model
        The twin's model: its outputs are the channels, with their units and bounds.
    channels : sequence of str, optional
        The measured outputs (default all); vector outputs contribute each element.
    ranges : mapping, optional
        Physical range per channel (leaf or flat name) ``(low, high)`` [channel units],
        overriding the output's declared bounds; a value outside is quarantined.
    max_future : float
        A sample stamped more than this ahead of the newest accepted time [model time
        unit] is quarantined as ``future`` (a clock jump), inf: no check.
    """

    def __init__(self, model: Model, channels: Sequence[str] | None = None, *,
                 ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
                 max_future: float = math.inf) -> None:
        lay = model.layout
        names = list(channels) if channels is not None else list(lay.outputs.names)
        self.units: dict[str, str] = {}
        self.ranges: dict[str, tuple[float, float]] = {}
        for c in names:
            if c not in lay.outputs.names:
                raise ConfigError(f"channel `{c}` is not an output of `{model.name}`; its "
                                  f"outputs are {', '.join(lay.outputs.names)}.")
            leaf = lay.outputs.leaf(c)
            lo, hi = leaf.var.bounds
            for flat in leaf.flat_names():
                self.units[flat] = leaf.var.units
                self.ranges[flat] = (-math.inf if lo is None else float(lo),
                                     math.inf if hi is None else float(hi))
        for key, (lo, hi) in (ranges or {}).items():
            flats = ([key] if key in self.units else
                     [f for f in self.units if f.split("[")[0] == key])
            if not flats:
                raise ConfigError(f"range for `{key}`: not a measured channel; channels "
                                  f"are {', '.join(self.units)}.")
            for f in flats:
                self.ranges[f] = (-math.inf if lo is None else float(lo),
                                  math.inf if hi is None else float(hi))
        if not max_future > 0:
            raise ConfigError(f"`max_future` must be > 0 [{model.time_unit}], got "
                              f"{max_future!r}.")
        self.max_future = float(max_future)
        self.last: dict[str, tuple[float, float]] = {}
        self.newest = -math.inf
        self.received = 0
        self.accepted = 0
        self.quarantined: dict[str, int] = dict.fromkeys(REASONS, 0)

    @property
    def counters(self) -> dict[str, Any]:
        """``received``, ``accepted``, ``quarantined`` (total) and per reason."""
        q = sum(self.quarantined.values())
        return {"received": self.received, "accepted": self.accepted, "quarantined": q,
                "by_reason": dict(self.quarantined)}

    def reason(self, s: Sample) -> str | None:
        """Why ``s`` must be quarantined, or ``None`` when it is good (no state changes)."""
        try:
            t = float(s.t)
        except (TypeError, ValueError):
            return "bad_time"
        if not math.isfinite(t):
            return "bad_time"
        if s.channel not in self.units:
            return "unknown_channel"
        if isinstance(s.value, bool):
            return "not_a_number"
        try:
            v = float(s.value)
        except (TypeError, ValueError):
            return "not_a_number"
        if not math.isfinite(v):
            return "not_finite"
        if s.unit is not None and str(s.unit) != self.units[s.channel]:
            return "wrong_unit"
        lo, hi = self.ranges[s.channel]
        if not lo <= v <= hi:
            return "out_of_range"
        if t > self.newest + self.max_future and math.isfinite(self.newest):
            return "future"
        prev = self.last.get(s.channel)
        if prev is not None:
            if t == prev[0]:
                return "duplicate"
            if t < prev[0]:
                return "not_increasing"
        return None

    def check(self, samples: Iterable[Sample]) -> tuple[list[Sample], list[tuple[Sample,
                                                                                 str]]]:
        """Split a batch into accepted samples and ``(sample, reason)`` pairs, updating
        the per-channel last times and the counters."""
        good: list[Sample] = []
        bad: list[tuple[Sample, str]] = []
        for s in samples:
            self.received += 1
            why = self.reason(s)
            if why is None:
                t = float(s.t)
                self.last[s.channel] = (t, float(s.value))
                self.newest = max(self.newest, t)
                self.accepted += 1
                good.append(Sample(t, s.channel, float(s.value), s.unit))
            else:
                self.quarantined[why] += 1
                bad.append((s, why))
        assert self.received == self.accepted + sum(self.quarantined.values())
        return good, bad

    # ---- checkpoint -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to continue exactly."""
        return {"last": {k: list(v) for k, v in self.last.items()}, "newest": self.newest,
                "received": self.received, "accepted": self.accepted,
                "quarantined": dict(self.quarantined)}

    def restore(self, st: Mapping[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.last = {k: (float(v[0]), float(v[1])) for k, v in st["last"].items()}
        self.newest = float(st["newest"])
        self.received, self.accepted = int(st["received"]), int(st["accepted"])
        self.quarantined = {k: int(st["quarantined"].get(k, 0)) for k in REASONS}
