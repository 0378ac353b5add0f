"""Run a twin from its TOML file: a live status line, checkpoints, a clean stop on
Ctrl-C (with a checkpoint), and a restart that continues where it stopped."""

from __future__ import annotations

import itertools
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import build, load_config

__all__ = ["run_twin"]


def _status(twin: Any) -> str:
    c = twin.validator.counters
    est = twin.filter.estimate()
    shown = ", ".join(f"{k} {v[0]:.4g}±{v[1]:.2g}" for k, v in list(est.items())[:4])
    alarms = ", ".join(f"{k} {n}" for k, n in twin.counters.flags.items() if n) or "none"
    rec = twin.recommendation
    r = (f"rec {rec.age(twin.filter.t):.3g} old" if rec is not None else "no rec")
    return (f"t={twin.filter.t:.4g} {twin.model.time_unit} | samples {c['received']} "
            f"(ok {c['accepted']}, quarantined {c['quarantined']}) | {shown} | alarms "
            f"{alarms} | {r}")


def run_twin(path: str | Path, *, echo: Callable[[str], Any] = print,
             live: bool = True, max_batches: int | None = None) -> dict[str, Any]:
    """Run the twin a TOML file describes to the end of its source.

    Parameters
    ----------
    path : str or Path
        The configuration (see :mod:`processtwin.twin.config`).
    echo : callable
        Where the summary goes.
    live : bool
        Show a status line (rewritten in place on a terminal, twice a second).
    max_batches : int, optional
        Stop (with a checkpoint) after this many batches in this run; the next run
        continues.

    Returns
    -------
    dict
        ``batches``, ``counters`` (validation), ``flags``, ``estimate``, ``restarted``
        (whether a checkpoint was restored), ``interrupted``, ``wall_s``, and
        ``recommendation`` (its text, or None).
    """
    cfg = load_config(path)
    twin, batches, opts = build(cfg)
    ckpt = opts["checkpoint"]
    sink, connector = opts["sink"], opts["connector"]
    restarted = False
    if ckpt is not None and Path(ckpt).exists():
        twin.restore(ckpt)
        restarted = True
        echo(f"restored {ckpt}: continuing at batch {twin.next_batch} "
             f"(t = {twin.filter.t:g} {twin.model.time_unit})")
    t0 = time.perf_counter()
    shown = 0.0
    interrupted = False
    tty = sys.stdout.isatty()
    # Ctrl-C between batches only: a batch is validated, filtered and stored as a whole
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def interrupt(*_: Any) -> None:
            stop.set()
            if connector is not None:    # a source waiting for the plant ends now
                connector.stop()

        previous = signal.signal(signal.SIGINT, interrupt)
    try:
        first = twin.next_batch
        # a recorded or simulated source starts again from its beginning: skip what the
        # checkpoint holds; a plant connection delivers only what is new
        todo = batches if connector is not None else itertools.islice(batches, first, None)
        for k, b in enumerate(todo, start=first):
            if max_batches is not None and k - first >= max_batches:
                break
            if stop.is_set():
                raise KeyboardInterrupt
            result = twin.advance(b)
            if sink is not None:
                sink.update(twin, result)
            if ckpt is not None and (k + 1) % opts["checkpoint_every"] == 0:
                twin.checkpoint(ckpt)
            now = time.perf_counter()
            if live and now - shown > 0.5:
                shown = now
                line = _status(twin)
                if tty:
                    sys.stdout.write("\r" + line[:160].ljust(160))
                    sys.stdout.flush()
                else:
                    echo(line)
        if stop.is_set():
            raise KeyboardInterrupt
        twin.wait()
        if sink is not None:       # a recommendation the wait collected goes out too
            sink.update(twin, {"t": twin.filter.t, "flags": []})
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if ckpt is not None:
            twin.checkpoint(ckpt)
        twin.close()
        for end in (connector, sink):
            if end is not None:
                end.close()
        if live and tty:
            sys.stdout.write("\n")
    rec = twin.recommendation
    summary = {"batches": twin.next_batch, "counters": twin.validator.counters,
               "flags": dict(twin.counters.flags), "estimate": twin.filter.estimate(),
               "restarted": restarted, "interrupted": interrupted,
               "wall_s": time.perf_counter() - t0,
               "recommendation": None if rec is None else str(rec.value),
               "truth": opts["truth"]}
    echo(("stopped (Ctrl-C), checkpoint written: " if interrupted else "finished: ")
         + _status(twin))
    return summary
