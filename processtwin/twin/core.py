"""The live twin: one object that owns a model, its estimator, an optional optimiser with
its own cadence, and a historian, and advances on each batch of samples.

Per batch: validate every sample (:class:`~processtwin.twin.validate.Validator`; rejects to
quarantine), filter the accepted ones in time order (late ones re-filtered exactly),
store raw samples, quarantine, estimates with σ, flags and recommendations (one flush),
then start the optimiser if its cadence is due. The optimiser runs in a worker thread, off
the estimation path: a slow solve never delays the next estimate, its result is kept only
if it came within the deadline, and the last good recommendation stays valid, labelled with
its age. :meth:`Twin.checkpoint` / :meth:`Twin.restore` save and reload the full state so a
restarted twin continues exactly where it stopped.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..estimate import FLAGS, ExtendedKalmanFilter
from ..model import Model
from .historian import Historian
from .validate import REASONS, Sample, Validator

__all__ = ["Batch", "Twin", "TwinRecommendation"]

_FLAG_BITS = list(FLAGS.items())


@dataclass
class Batch:
    """Samples that arrived together, and the inputs the plant applies from the batch's
    last sampling time on (``None``: unchanged)."""

    samples: list[Sample]
    inputs: Mapping[str, Any] | None = None


@dataclass
class TwinRecommendation:
    """A recommendation and when it was made.

    Attributes
    ----------
    t : float
        Estimate time it was computed from [model time unit].
    value : Any
        What the optimiser returned (e.g. a :class:`~processtwin.solvers.Recommendation`).
    wall_s : float
        Wall time of the solve [s].
    """

    t: float
    value: Any
    wall_s: float

    def age(self, now: float) -> float:
        """Model time since the estimate it came from [model time unit]."""
        return now - self.t


@dataclass
class _Counters:
    batches: int = 0
    filtered: int = 0
    optimiser_runs: int = 0
    optimiser_late: int = 0
    optimiser_failed: int = 0
    flags: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLAGS, 0))


class Twin:
    """A live twin of ``model``.

    Parameters
    ----------
    model : Model
        The twin's model (nominal parameters).
    channels : sequence of str, optional
        Measured outputs (default all).
    estimate : sequence of str
        Parameters tracked by the EKF as slowly drifting states.
    filter_options : mapping, optional
        Further :class:`~processtwin.estimate.ExtendedKalmanFilter` options (``q``, ``r``,
        ``gate``, …).
    x0, std : mapping, optional
        Initial estimate and its standard deviations.
    t0 : float
        Start time [model time unit].
    inputs : mapping, optional
        Inputs applied from ``t0`` on.
    historian : str, Path or Historian, optional
        Where everything is stored (appended to if it exists).
    ranges : mapping, optional
        Physical range per channel for validation (see
        :class:`~processtwin.twin.validate.Validator`).
    max_future : float
        Clock-jump limit of validation [model time unit].
    history : int
        Samples kept for exact re-filtering of late ones.
    optimiser : callable, optional
        ``optimiser(snapshot) -> recommendation``; ``snapshot`` has ``t``, ``estimate``
        (name → (value, σ)), ``z`` and ``inputs``.
    cadence : float, optional
        Model time between optimiser runs [model time unit].
    deadline_s : float, optional
        Wall-time limit of one optimiser run [s]; a later result is discarded (counted).
    threaded : bool
        Run the optimiser in a worker thread (off the estimation path); ``False`` runs it
        inline (deterministic, for tests and replays).
    """

    def __init__(self, model: Model, *, channels: Sequence[str] | None = None,
                 estimate: Sequence[str] = (), filter_options: Mapping[str, Any] | None = None,
                 x0: Mapping[str, Any] | None = None, std: Mapping[str, float] | None = None,
                 t0: float = 0.0, inputs: Mapping[str, Any] | None = None,
                 historian: str | Path | Historian | None = None,
                 ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
                 max_future: float = math.inf, history: int = 2000,
                 optimiser: Callable[[dict], Any] | None = None, cadence: float | None = None,
                 deadline_s: float | None = None, threaded: bool = True) -> None:
        if optimiser is not None and not (cadence is not None and cadence > 0):
            raise ConfigError(f"an optimiser needs a `cadence` > 0 [{model.time_unit}], got "
                              f"{cadence!r}.")
        self.model = model
        self.ekf = ExtendedKalmanFilter(model, estimate=tuple(estimate), channels=channels,
                                        **dict(filter_options or {}))
        self.validator = Validator(model, self.ekf.channels, ranges=ranges,
                                   max_future=max_future)
        self.inputs = dict(inputs or {})
        self.filter = self.ekf.live(float(t0), x0=x0, std=std, u=self.inputs,
                                    history=history)
        if isinstance(historian, Historian) or historian is None:
            self.historian = historian
        else:
            self.historian = Historian(historian, channels=self.ekf.flat_channels,
                                       states=self.ekf.flat_names, flags=list(FLAGS),
                                       inputs=model.layout.inputs.flat_names(),
                                       meta={"model": model.name,
                                             "time_unit": model.time_unit})
        self.optimiser, self.cadence, self.deadline_s = optimiser, cadence, deadline_s
        self.threaded = bool(threaded)
        self._pool = ThreadPoolExecutor(max_workers=1) if optimiser and threaded else None
        self._job: tuple[Future, float, float] | None = None
        self._next_opt = float(t0)
        self.recommendation: TwinRecommendation | None = None
        self._pending_recs: list[tuple[float, dict]] = []
        self.counters = _Counters()
        self._slot = {c: self.ekf.channel_slots[c.split("[")[0]] for c in
                      self.ekf.flat_channels}

    # ---- one batch ------------------------------------------------------------------
    def advance(self, batch: Batch | Iterable[Sample]) -> dict[str, Any]:
        """Take one batch: validate, filter, store, maybe optimise.

        Parameters
        ----------
        batch : Batch or iterable of Sample
            The samples (and optionally the inputs from their last time on).

        Returns
        -------
        dict
            ``t`` (estimate time), ``accepted``, ``quarantined``, ``flags`` (names raised
            in this batch), ``recommendation_age`` (model time, NaN without one).
        """
        if not isinstance(batch, Batch):
            batch = Batch(list(batch))
        good, bad = self.validator.check(batch.samples)
        estimates, flags, late = self._filter(good)
        for s in late:       # older than the history kept: quarantined, not lost
            good.remove(s)
            bad.append((s, "not_increasing"))
            self.validator.accepted -= 1
            self.validator.quarantined["not_increasing"] += 1
        applied = None
        if batch.inputs is not None:
            self.inputs.update(batch.inputs)
            self.filter.set_inputs(self.inputs)
            applied = (self.filter.t, dict(batch.inputs))
        self._collect()
        self._maybe_optimise()
        recs, self._pending_recs = self._pending_recs, []
        if self.historian is not None:
            self.historian.write_batch(self.counters.batches, accepted=good, quarantined=bad,
                                       estimates=estimates, flags=flags,
                                       recommendations=recs, inputs=applied)
        self.counters.batches += 1
        now = self.filter.t
        return {"t": now, "accepted": len(good), "quarantined": len(bad),
                "flags": sorted({_FLAG_BITS[k][0] for _, _, k in flags}),
                "recommendation_age": (self.recommendation.age(now) if self.recommendation
                                       else math.nan)}

    def _filter(self, good: list[Sample]) -> tuple[list, list, list[Sample]]:
        """Filter accepted samples by sampling time: ``(estimates, flags, too late)``."""
        estimates, flags, late = [], [], []
        by_time: dict[float, list[Sample]] = {}
        for s in good:
            by_time.setdefault(s.t, []).append(s)
        for t in sorted(by_time):
            try:
                self.filter.step(t, self._row(by_time[t]))
            except DataError:
                late += by_time[t]
                continue
            self.counters.filtered += len(by_time[t])
            estimates.append((self.filter.t, self.filter.z.copy(), self.filter.sd.copy()))
            bits = self.filter.last_flags()
            for j in np.nonzero(bits)[0]:
                for k, (name, bit) in enumerate(_FLAG_BITS):
                    if bits[j] & bit:
                        flags.append((t, int(j), k))
                        self.counters.flags[name] += 1
        return estimates, flags, late

    def _row(self, samples: list[Sample]) -> dict[str, Any]:
        y: dict[str, Any] = {}
        for s in samples:
            slot = self._slot[s.channel]
            leaf = s.channel.split("[")[0]
            if isinstance(slot, slice):
                arr = y.setdefault(leaf, np.full(slot.stop - slot.start, np.nan))
                arr[int(s.channel.split("[")[1].rstrip("]"))] = s.value
            else:
                y[leaf] = s.value
        return y

    # ---- the optimiser, off the estimation path -------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What the optimiser sees: time, estimate (name → (value, σ)), flat estimate and
        the inputs in force."""
        return {"t": self.filter.t, "estimate": self.filter.estimate(),
                "z": self.filter.z.copy(), "inputs": dict(self.inputs)}

    def _run(self, snap: dict) -> tuple[Any, float]:
        t0 = time.perf_counter()
        out = self.optimiser(snap)  # type: ignore[misc]
        return out, time.perf_counter() - t0

    def _maybe_optimise(self) -> None:
        if self.optimiser is None or self.filter.t < self._next_opt or self._job is not None:
            return
        snap = self.snapshot()
        self._next_opt = snap["t"] + float(self.cadence)  # type: ignore[arg-type]
        self.counters.optimiser_runs += 1
        if self._pool is None:
            try:
                out, wall = self._run(snap)
            except Exception:     # an optimiser failure must not stop the twin
                self.counters.optimiser_failed += 1
                return
            self._accept(snap["t"], out, wall)
            return
        self._job = (self._pool.submit(self._run, snap), snap["t"], time.perf_counter())

    def _collect(self) -> None:
        if self._job is None:
            return
        fut, t_snap, started = self._job
        late = (self.deadline_s is not None
                and time.perf_counter() - started > self.deadline_s)
        if not fut.done():
            if late:   # past its deadline: keep the last good one, drop this one
                self.counters.optimiser_late += 1
                fut.cancel()
                self._job = None
            return
        self._job = None
        try:
            out, wall = fut.result()
        except Exception:
            self.counters.optimiser_failed += 1
            return
        if self.deadline_s is not None and wall > self.deadline_s:
            self.counters.optimiser_late += 1
            return
        self._accept(t_snap, out, wall)

    def _accept(self, t: float, out: Any, wall: float) -> None:
        self.recommendation = TwinRecommendation(t, out, wall)
        self._pending_recs.append((t, _as_dict(out, wall)))

    def wait(self) -> None:
        """Wait for a running optimiser job and collect it (end of a replay)."""
        if self._job is not None:
            self._job[0].result()
            self._collect()
        if self._pending_recs and self.historian is not None:   # stored, not held back
            recs, self._pending_recs = self._pending_recs, []
            self.historian.write_batch(max(self.counters.batches - 1, 0),
                                       recommendations=recs)

    # ---- checkpoint -----------------------------------------------------------------
    def checkpoint(self, path: str | Path) -> None:
        """Save the full state (filter, late-sample history, validator, last
        recommendation, counters) atomically: written to a temporary file, synced, then
        renamed over ``path``."""
        state = {"version": 1, "model": self.model.name,
                 "filter": self.filter.checkpoint(), "validator": self.validator.state(),
                 "inputs": self.inputs, "next_opt": self._next_opt,
                 "recommendation": (None if self.recommendation is None else
                                    (self.recommendation.t,
                                     _as_dict(self.recommendation.value,
                                              self.recommendation.wall_s),
                                     self.recommendation.wall_s)),
                 "counters": self.counters}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def restore(self, path: str | Path) -> None:
        """Continue from :meth:`checkpoint` (only load checkpoints you wrote: they are
        pickles).

        Raises
        ------
        ConfigError
            A checkpoint of another model, channels or estimated quantities.
        """
        with open(path, "rb") as fh:
            state = pickle.load(fh)
        if state.get("model") != self.model.name:
            raise ConfigError(f"checkpoint {path} is of model `{state.get('model')}`, this "
                              f"twin's is `{self.model.name}`.")
        self.filter.restore(state["filter"])
        self.validator.restore(state["validator"])
        self.inputs = dict(state["inputs"])
        self._next_opt = float(state["next_opt"])
        rec = state["recommendation"]
        self.recommendation = None if rec is None else TwinRecommendation(rec[0], rec[1],
                                                                          rec[2])
        self.counters = state["counters"]
        self._catch_up()

    def _catch_up(self) -> None:
        """Redo the batches the historian stored after the checkpoint (a crash between
        checkpoints): the historian is the log, so the filter ends where the stored data
        end, and the source resumes at batch :attr:`next_batch`."""
        h = self.historian
        if h is None or h.last_batch < self.counters.batches:
            return
        rows = h.f["samples"][:]
        q = h.f["quarantine"][:]
        inp = h.f["inputs"][:]
        names = h.channels
        flat_inputs = h.inputs
        for b in range(self.counters.batches, h.last_batch + 1):
            good = [Sample(float(r["t"]), names[r["channel"]], float(r["value"]))
                    for r in rows[rows["batch"] == b]]
            self.validator.check(good)
            for r in q[q["batch"] == b]:
                self.validator.received += 1
                self.validator.quarantined[REASONS[r["reason"]]] += 1
            self._filter(good)
            changes = inp[inp["batch"] == b]
            if len(changes):
                self.inputs.update(_unflatten(self.model, {flat_inputs[r["input"]]: r["value"]
                                                           for r in changes}, self.inputs))
                self.filter.set_inputs(self.inputs)
            self.counters.batches = b + 1

    @property
    def next_batch(self) -> int:
        """Number of the next batch the twin expects (batches count from 0): where a
        source resumes after :meth:`restore`."""
        return self.counters.batches

    def close(self) -> None:
        """Stop the worker and close the historian."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self.historian is not None:
            self.historian.close()


def _unflatten(model: Model, flat: Mapping[str, float], current: Mapping[str, Any]
               ) -> dict[str, Any]:
    """Flat input values (``"Q[1]"``) back onto leaves, keeping unchanged elements."""
    out: dict[str, Any] = {}
    lay = model.layout
    for name, v in flat.items():
        leaf = name.split("[")[0]
        if "[" not in name:
            out[leaf] = float(v)
            continue
        size = lay.inputs.leaf(leaf).size
        base = np.asarray(out.get(leaf, current.get(leaf, np.zeros(size))), dtype=float)
        arr = np.broadcast_to(base, (size,)).copy()
        arr[int(name.split("[")[1].rstrip("]"))] = v
        out[leaf] = arr
    return out


def _as_dict(out: Any, wall: float) -> dict[str, Any]:
    """A recommendation as JSON-ready data for the historian."""
    if isinstance(out, dict):
        return {**out, "wall_s": wall}
    d: dict[str, Any] = {"wall_s": wall, "text": str(out)}
    for k in ("t", "setpoints", "expected", "benefit", "status", "fallback", "message"):
        if hasattr(out, k):
            d[k] = getattr(out, k)
    return d
