"""Crash-safe HDF5 historian of a live twin: append-only chunked tables of raw samples,
quarantined samples, estimates with their standard deviations, flags and
recommendations.

The file is written in HDF5's single-writer/multiple-reader (SWMR) mode and flushed after
every batch, so that it is readable at every instant — also while the twin runs, and after
a ``kill -9`` in the middle of a write, when at most the batch being written is missing.
A restarted twin clears the crashed writer's consistency flags
(:func:`~processtwin.twin.h5clear.clear_status_flags`) and appends to the same file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError, DataError
from .h5clear import clear_status_flags
from .validate import REASONS, Sample

__all__ = ["Historian", "read_historian"]

_SAMPLE = np.dtype([("t", "f8"), ("channel", "i2"), ("value", "f8"), ("batch", "i8")])
_QUARANTINE = np.dtype([("t", "f8"), ("channel", "i2"), ("value", "f8"), ("reason", "i2"),
                        ("batch", "i8")])
_INPUT = np.dtype([("t", "f8"), ("input", "i2"), ("value", "f8"), ("batch", "i8")])
_FLAG = np.dtype([("t", "f8"), ("channel", "i2"), ("flag", "i2")])
_CHUNK = 4096


class Historian:
    """Append-only store of everything a twin saw and said.

    Parameters
    ----------
    path : str or Path
        The HDF5 file; created if missing, appended to otherwise (it must have been made
        for the same channels, states and flags).
    channels : sequence of str
        Flat channel names (the validator's).
    states : sequence of str
        Flat names of the estimated quantities (the filter's).
    flags : sequence of str
        Flag names (the filter's ``FLAGS``).
    inputs : sequence of str
        Flat input names (their changes are stored, so a replay or a restart can redo
        the filter exactly).
    meta : dict, optional
        Attributes stored on creation (model name, time unit, …).
    """

    def __init__(self, path: str | Path, *, channels: Sequence[str], states: Sequence[str],
                 flags: Sequence[str], inputs: Sequence[str] = (),
                 meta: dict[str, Any] | None = None) -> None:
        import h5py

        self.path = Path(path)
        self.channels = list(channels)
        self.states = list(states)
        self.flag_names = list(flags)
        self.inputs = list(inputs)
        self._index = {c: i for i, c in enumerate(self.channels)}
        self._input_index = {c: i for i, c in enumerate(self.inputs)}
        self.cleared = False
        if self.path.exists():
            self.cleared = clear_status_flags(self.path)
            f = h5py.File(self.path, "a", libver="latest")
            for key, want in (("channels", self.channels), ("states", self.states),
                              ("flags", self.flag_names), ("inputs", self.inputs)):
                got = json.loads(f.attrs.get(key, "[]"))
                if got != want:
                    f.close()
                    raise ConfigError(f"historian {self.path} was written for {key} {got}; "
                                      f"this twin has {want}.")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = h5py.File(self.path, "w", libver="latest")
            f.attrs.update(channels=json.dumps(self.channels), states=json.dumps(self.states),
                           flags=json.dumps(self.flag_names), reasons=json.dumps(REASONS),
                           inputs=json.dumps(self.inputs),
                           **{k: v for k, v in (meta or {}).items()})
            nz = len(self.states)
            for name, dt, width in (("samples", _SAMPLE, None), ("quarantine", _QUARANTINE,
                                                                  None),
                                    ("inputs", _INPUT, None), ("flags", _FLAG, None),
                                    ("estimates", "f8", 1 + 2 * nz)):
                shape = (0,) if width is None else (0, width)
                f.create_dataset(name, shape=shape, maxshape=(None,) + shape[1:],
                                 chunks=(_CHUNK,) + shape[1:], dtype=dt)
            text = h5py.string_dtype()
            f.create_dataset("quarantine_raw", shape=(0,), maxshape=(None,), chunks=(_CHUNK,),
                             dtype=text)
            f.create_dataset("recommendations", shape=(0,), maxshape=(None,), chunks=(256,),
                             dtype=text)
            f.create_dataset("recommendation_t", shape=(0,), maxshape=(None,), chunks=(256,),
                             dtype="f8")
        f.swmr_mode = True
        self.f = f
        self._ds: dict[str, Any] = {}
        self._rows: dict[str, int] = {}
        self._mem: dict[tuple, Any] = {}
        b = f["samples"]["batch"] if f["samples"].shape[0] else np.zeros(0, np.int64)
        q = f["quarantine"]["batch"] if f["quarantine"].shape[0] else np.zeros(0, np.int64)
        i = f["inputs"]["batch"] if f["inputs"].shape[0] else np.zeros(0, np.int64)
        #: number of the last batch stored (-1: none); batches count from 0
        self.last_batch = int(max([-1, *(int(x.max()) for x in (b, q, i) if len(x))]))

    # ---- writing --------------------------------------------------------------------
    def _append(self, name: str, rows: np.ndarray | list) -> None:
        if len(rows) == 0:
            return
        entry = self._ds.get(name)
        if entry is None:   # looked up once: a group lookup costs more than a small write
            d = self.f[name]
            entry = self._ds[name] = (d, d.id, d.dtype, d.shape[1:])
            self._rows[name] = d.shape[0]
        d, dsid, dtype, tail = entry
        n = self._rows[name]
        if dtype.kind == "O" or not isinstance(rows, np.ndarray):
            d.resize((n + len(rows),) + tail)
            d[n:] = rows
        else:
            # the single writer knows its length; h5py's low-level calls skip the
            # selection machinery of ``d[n:] = rows`` (most of a small append's cost)
            rows = np.ascontiguousarray(rows, dtype=dtype)
            dsid.set_extent((n + len(rows),) + tail)
            space = dsid.get_space()
            space.select_hyperslab((n,) + (0,) * len(tail), rows.shape)
            mem = self._mem.get(rows.shape)
            if mem is None:
                from h5py import h5s

                mem = self._mem[rows.shape] = h5s.create_simple(rows.shape)
            dsid.write(mem, space, rows)
        self._rows[name] = n + len(rows)

    def write_batch(self, batch: int, *, accepted: Sequence[Sample] = (),
                    quarantined: Sequence[tuple[Sample, str]] = (),
                    estimates: Sequence[tuple[float, np.ndarray, np.ndarray]] = (),
                    flags: Sequence[tuple[float, int, int]] = (),
                    recommendations: Sequence[tuple[float, dict]] = (),
                    inputs: tuple[float, dict] | None = None) -> None:
        """Append one batch to every table and flush it to disk.

        Parameters
        ----------
        batch : int
            The batch's number (stored with its samples, quarantine and inputs).
        accepted : sequence of Sample
            Validated samples.
        quarantined : sequence of (Sample, str)
            Rejected samples with their reason (one of
            :data:`~processtwin.twin.validate.REASONS`); the raw sample is kept as text.
        estimates : sequence of (t, z, sd)
            Estimates and standard deviations after each time.
        flags : sequence of (t, channel index, flag code)
            Flags raised.
        recommendations : sequence of (t, dict)
            Recommendations as JSON-serialisable dicts.
        inputs : tuple of (t, mapping), optional
            Inputs applied from ``t`` on (flat names or leaves with per-element values).
        """
        s = np.empty(len(accepted), _SAMPLE)
        for i, a in enumerate(accepted):
            s[i] = (a.t, self._index[a.channel], a.value, batch)
        self._append("samples", s)
        q = np.empty(len(quarantined), _QUARANTINE)
        raw = []
        for i, (a, why) in enumerate(quarantined):
            q[i] = (_float(a.t), self._index.get(a.channel, -1), _float(a.value),
                    REASONS.index(why), batch)
            raw.append(json.dumps({"t": repr(a.t), "channel": repr(a.channel),
                                   "value": repr(a.value), "unit": a.unit, "reason": why}))
        self._append("quarantine", q)
        self._append("quarantine_raw", np.array(raw, dtype=object))
        if inputs is not None:
            t_in, values = inputs
            rows = []
            for name, v in values.items():
                arr = np.asarray(v, dtype=float).ravel()
                names = [name] if arr.size == 1 and name in self._input_index else \
                    [f"{name}[{j}]" for j in range(arr.size)]
                for n, x in zip(names, arr, strict=True):
                    rows.append((t_in, self._input_index[n], x, batch))
            self._append("inputs", np.array(rows, _INPUT))
        if estimates:
            self._append("estimates", np.array([np.concatenate([[t], z, sd])
                                                for t, z, sd in estimates]))
        if flags:
            self._append("flags", np.array([tuple(x) for x in flags], _FLAG))
        if recommendations:
            self._append("recommendation_t", np.array([t for t, _ in recommendations]))
            self._append("recommendations", np.array([json.dumps(r, default=_jsonable)
                                                      for _, r in recommendations],
                                                     dtype=object))
        self.f.flush()
        self.last_batch = batch

    def close(self) -> None:
        """Flush and close the file (a clean stop)."""
        if self.f.id.valid:
            self.f.flush()
            self.f.close()

    def __enter__(self) -> Historian:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def read_historian(path: str | Path, *, start: float | None = None,
                   end: float | None = None) -> dict[str, Any]:
    """Read a historian (also while a twin writes it, or after a crash) into
    ``xarray.Dataset`` objects for a time window.

    Parameters
    ----------
    path : str or Path
        The historian file.
    start, end : float, optional
        Time window ``[start, end]`` [model time unit] (default everything).

    Returns
    -------
    dict
        ``samples`` (one variable per channel over the sampling times, NaN where not
        measured), ``estimates`` (each state and its ``sd_`` over time), ``quarantine``
        (time, channel, value, reason and the raw text), ``flags``, ``recommendations``
        (list of ``(t, dict)``), ``inputs`` (every change: time, flat input, value,
        batch), ``rows`` (the raw sample table in arrival order, with batch numbers) and
        ``attrs``.

    Raises
    ------
    DataError
        Not a historian file.
    """
    import h5py

    try:
        f = h5py.File(path, "r", libver="latest", swmr=True, locking=False)
    except OSError as exc:
        raise DataError(f"cannot read historian {path}: {exc}") from None
    with f:
        if "samples" not in f:
            raise DataError(f"{path} is not a processtwin historian (no `samples`).")
        attrs = {k: (json.loads(v) if k in ("channels", "states", "flags", "reasons",
                                            "inputs") else v) for k, v in f.attrs.items()}
        lo = -np.inf if start is None else start
        hi = np.inf if end is None else end
        s = f["samples"][:]
        s = s[(s["t"] >= lo) & (s["t"] <= hi)]
        times = np.unique(s["t"])
        data = {}
        for i, c in enumerate(attrs["channels"]):
            col = np.full(times.size, np.nan)
            m = s["channel"] == i
            col[np.searchsorted(times, s["t"][m])] = s["value"][m]
            data[c] = ("time", col)
        samples = xr.Dataset(data, coords={"time": times}, attrs={"kind": "measurements"})
        e = f["estimates"][:]
        e = e[(e[:, 0] >= lo) & (e[:, 0] <= hi)] if e.size else e
        nz = len(attrs["states"])
        est = xr.Dataset({**{n: ("time", e[:, 1 + i]) for i, n in enumerate(attrs["states"])},
                          **{f"sd_{n}": ("time", e[:, 1 + nz + i])
                             for i, n in enumerate(attrs["states"])}},
                         coords={"time": e[:, 0] if e.size else np.zeros(0)},
                         attrs={"kind": "estimate"})
        q = f["quarantine"][:]
        raw = f["quarantine_raw"][:]
        keep = ~((q["t"] < lo) | (q["t"] > hi))
        quarantine = xr.Dataset(
            {"t": ("sample", q["t"][keep]),
             "channel": ("sample", [attrs["channels"][i] if i >= 0 else "?"
                                    for i in q["channel"][keep]]),
             "value": ("sample", q["value"][keep]),
             "reason": ("sample", [attrs["reasons"][i] for i in q["reason"][keep]]),
             "raw": ("sample", [r.decode() if isinstance(r, bytes) else r
                                for r in raw[:len(q)][keep]])})
        fl = f["flags"][:]
        fl = fl[(fl["t"] >= lo) & (fl["t"] <= hi)]
        flags = xr.Dataset({"t": ("flag", fl["t"]),
                            "channel": ("flag", [attrs["channels"][i] for i in fl["channel"]]),
                            "flag": ("flag", [attrs["flags"][i] for i in fl["flag"]])})
        rt = f["recommendation_t"][:]
        rs = f["recommendations"][:len(rt)]
        recs = [(float(t), json.loads(r)) for t, r in zip(rt, rs, strict=True)
                if lo <= t <= hi]
        inp = f["inputs"][:]
        inputs = xr.Dataset({"t": ("change", inp["t"]),
                             "input": ("change", [attrs["inputs"][i] for i in inp["input"]]),
                             "value": ("change", inp["value"]),
                             "batch": ("change", inp["batch"])})
        raw_samples = f["samples"][:]
    return {"samples": samples, "estimates": est, "quarantine": quarantine, "flags": flags,
            "recommendations": recs, "inputs": inputs, "rows": raw_samples,
            "attrs": attrs}
