"""Where a twin's samples come from: the in-process simulated plant (the embedded default)
and replay of recorded data at any speed.

A source is an iterable of :class:`~processtwin.twin.core.Batch`; the connectors for
plants (OPC UA, MQTT) produce the same batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import DataError
from ..model import Model
from ..plant import PlantRun
from .core import Batch
from .validate import Sample

__all__ = ["inject_faults", "paced", "plant_batches", "replay"]


def _flat(channel: str, value: Any) -> list[tuple[str, Any]]:
    v = np.asarray(value)
    if v.ndim == 0:
        return [(channel, value if not isinstance(value, np.generic) else value.item())]
    return [(f"{channel}[{i}]", float(x)) for i, x in enumerate(v.ravel())]


def plant_batches(run: PlantRun, *, inputs: Mapping[float, Mapping[str, Any]] | None = None
                  ) -> Iterator[Batch]:
    """The simulated plant's samples as the twin receives them: one batch per arrival
    time (online values at once, lab assays later, stamped with their sampling time).

    Parameters
    ----------
    run : PlantRun
        From :func:`processtwin.plant.simulated_plant`.
    inputs : mapping, optional
        Input changes by time ``{t: {name: value}}`` [model time unit]: each applied from
        the batch that arrives at ``t`` on (the operator's recipe steps).

    Yields
    ------
    Batch
        The samples of one arrival time (NaN values omitted: not measured).
    """
    changes = sorted((inputs or {}).items())
    by_arrival: dict[float, list[Sample]] = {}
    for arrival, t, values in run.arrivals:
        for c, v in values.items():
            for name, x in _flat(c, v):
                if not (isinstance(x, float) and math.isnan(x)):
                    by_arrival.setdefault(float(arrival), []).append(Sample(float(t), name, x))
    k = 0
    for arrival in sorted(by_arrival):
        u = None
        while k < len(changes) and changes[k][0] <= arrival:
            u = {**(u or {}), **changes[k][1]}
            k += 1
        yield Batch(by_arrival[arrival], u)


def replay(data: str | Path | xr.Dataset, model: Model, *, batch: int = 1) -> Iterator[Batch]:
    """Recorded plant data as batches, in time order.

    Parameters
    ----------
    data : str, Path or xarray.Dataset
        A measurement file (netCDF, HDF5 or CSV, see
        :func:`processtwin.io.read_measurements`), a processtwin historian (``.h5`` with
        a ``samples`` table: its batches are replayed exactly as the twin took them, with
        their input changes) or a Dataset; variables named after model outputs (vector
        outputs with a second dimension), optionally model inputs.
    model : Model
        The twin's model (which variables are outputs and which inputs).
    batch : int
        Sampling times per batch.

    Yields
    ------
    Batch
        Samples of ``batch`` consecutive times; inputs present in the data are applied
        from the batch's last time on when they change.

    Raises
    ------
    DataError
        No output of the model in the data.
    """
    if not isinstance(data, xr.Dataset):
        path = Path(data)
        if path.suffix in (".h5", ".hdf5") and _is_historian(path):
            yield from _historian_batches(path, model)
            return
        else:
            from ..io import read_measurements

            data = read_measurements(path)
    outs = [c for c in model.layout.outputs.names if c in data]
    ins = [c for c in model.layout.inputs.names if c in data]
    flat_outs = [c for c in data.data_vars if c.split("[")[0] in model.layout.outputs.names
                 and c not in outs]
    if not outs and not flat_outs:
        have = ", ".join(map(str, data.data_vars))
        want = ", ".join(model.layout.outputs.names)
        raise DataError(f"the data hold no output of `{model.name}` ({want}); they hold "
                        f"{have}.")
    t = np.asarray(data["time"].values, dtype=float)
    cols = {c: np.asarray(data[c].values) for c in outs + flat_outs + ins}
    last_u: dict[str, Any] = {}
    pending: list[Sample] = []
    for k in range(t.size):
        for c in outs + flat_outs:
            for name, x in _flat(c, cols[c][k]):
                if np.isfinite(x):
                    pending.append(Sample(float(t[k]), name, float(x)))
        u = {c: cols[c][k] for c in ins}
        changed = {c: v for c, v in u.items() if c not in last_u
                   or not np.array_equal(np.asarray(v), np.asarray(last_u[c]))}
        last_u.update(u)
        if (k + 1) % batch == 0 or k == t.size - 1 or changed:
            yield Batch(pending, changed or None)
            pending = []


def _historian_batches(path: Path, model: Model) -> Iterator[Batch]:
    """A historian's batches as the twin took them: its accepted samples by batch number,
    with the input changes of each batch (quarantined samples stay out)."""
    from .core import _unflatten
    from .historian import read_historian

    h = read_historian(path)
    rows, names = h["rows"], h["attrs"]["channels"]
    inp = h["inputs"]
    batches_in = np.asarray(inp["batch"].values)
    current: dict[str, Any] = {}
    last = int(max(rows["batch"].max() if len(rows) else -1,
                   batches_in.max() if batches_in.size else -1))
    for b in range(last + 1):
        sel = rows[rows["batch"] == b]
        samples = [Sample(float(r["t"]), names[r["channel"]], float(r["value"])) for r in sel]
        m = batches_in == b
        u = None
        if m.any():
            flat = dict(zip(inp["input"].values[m], inp["value"].values[m], strict=True))
            u = _unflatten(model, flat, current)
            current.update(u)
        yield Batch(samples, u)


def _is_historian(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r", libver="latest", swmr=True, locking=False) as f:
            return "samples" in f and "channels" in f.attrs
    except OSError:
        return False


def paced(batches: Iterable[Batch], *, speed: float = math.inf,
          seconds_per_unit: float = 1.0) -> Iterator[Batch]:
    """Release batches at ``speed`` times real time (inf: as fast as possible).

    Parameters
    ----------
    batches : iterable of Batch
        The source.
    speed : float
        Model time per wall time, relative (1: real time; 60 with a time unit of seconds:
        a minute per second).
    seconds_per_unit : float
        Seconds in one model time unit (3600 for a model in hours).

    Yields
    ------
    Batch
        The same batches, each no earlier than its newest sampling time allows.
    """
    start_wall = None
    start_t = None
    for b in batches:
        if math.isfinite(speed) and b.samples:
            t = max(s.t for s in b.samples)
            if start_wall is None:
                start_wall, start_t = time.monotonic(), t
            due = start_wall + (t - start_t) * seconds_per_unit / speed
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        yield b


def inject_faults(batches: Iterable[Batch], faults: Iterable[Mapping[str, Any]], *,
                  rng: np.random.Generator | None = None) -> Iterator[Batch]:
    """Sensor faults on a stream of batches, for fault runs and the demo.

    Parameters
    ----------
    batches : iterable of Batch
        The clean stream.
    faults : iterable of mapping
        Each ``{"kind", "channel", "at"}`` plus, by kind: ``spike`` (the sample at or after
        ``at`` multiplied by ``size``, default 5), ``stuck`` (frozen at its value at
        ``at`` for ``duration``, default 5), ``dropout`` (missing for ``duration``),
        ``clock_jump`` (one sample stamped ``jump`` later, default 1e6), ``malformed``
        (one sample whose value is text) [times in model units].
    rng : numpy.random.Generator, optional
        Unused by the deterministic faults above; reserved for random ones.

    Yields
    ------
    Batch
        The stream with the faults applied.
    """
    del rng
    faults = [dict(f) for f in faults]
    done: set[int] = set()
    frozen: dict[int, float] = {}
    for b in batches:
        out = []
        extra = []
        for s in b.samples:
            keep = True
            for i, f in enumerate(faults):
                if s.channel != f["channel"] or s.t < f["at"]:
                    continue
                kind, dur = f["kind"], float(f.get("duration", 5.0))
                if kind == "spike" and i not in done:
                    s = Sample(s.t, s.channel, s.value * float(f.get("size", 5.0)), s.unit)
                    done.add(i)
                elif kind == "stuck" and s.t <= f["at"] + dur:
                    s = Sample(s.t, s.channel, frozen.setdefault(i, s.value), s.unit)
                elif kind == "dropout" and s.t <= f["at"] + dur:
                    keep = False
                elif kind == "clock_jump" and i not in done:
                    s = Sample(s.t + float(f.get("jump", 1e6)), s.channel, s.value, s.unit)
                    done.add(i)
                elif kind == "malformed" and i not in done:
                    extra.append(Sample(s.t, s.channel, "0.0x1e", s.unit))
                    done.add(i)
            if keep:
                out.append(s)
        yield Batch(out + extra, b.inputs)
