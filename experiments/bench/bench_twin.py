"""Live-twin benchmark: sustained replay throughput and MQTT end-to-end latency.

1. **Throughput** — the bioreactor twin (EKF tracking ``mu_max``, optimiser off) replays a
   recorded 150 h batch sampled every 36 s (V and OUR online, lab assays of X, S, P every
   4 h): validate → EKF → historian (SWMR HDF5, flushed after every batch), pinned to one
   core. Replay hands the twin ``--batch`` sampling times per batch (1: one flush per
   sampling time, the live worst case; 10 and 100: a recorded file read in blocks, as
   :func:`processtwin.twin.sources.replay` does with ``batch=``). Reported: samples per
   second (after compilation: the first 200 batches are not timed), µs per sample, and
   the historian's file size per million samples.
2. **Latency** — a plant gateway publishes single samples (QoS 1, JSON ``{t, value,
   unit}``) to a Mosquitto broker on loopback (started from the project's own
   ``tests/brokers.py``, with a password file) at ``--rate`` samples/s; the twin
   subscribes (``MqttSource``, batch window 0), validates, filters and stores; latency =
   wall time from just before ``publish`` to the historian flush of the batch holding the
   sample. Reported: median, p99 and max over ``--seconds`` of traffic.

    python experiments/bench/bench_twin.py [--batch 1 10 100] [--rate 100] [--seconds 20]

Results are printed and written to ``experiments/bench/results/twin.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _replay_throughput(batch: int, data, tmp: Path) -> dict:
    from processtwin.models import Bioreactor
    from processtwin.twin import Twin
    from processtwin.twin.sources import replay

    path = tmp / f"replay_{batch}.h5"
    twin = Twin(Bioreactor(), estimate=("mu_max",), inputs={"F": 0.0}, threaded=False,
                historian=path)
    batches = list(replay(data, twin.model, batch=batch))
    warm = max(200 // batch, 2)
    for b in batches[:warm]:
        twin.advance(b)
    timed = batches[warm:]
    n = sum(len(b.samples) for b in timed)
    t0 = time.perf_counter()
    for b in timed:
        twin.advance(b)
    wall = time.perf_counter() - t0
    total = twin.validator.counters["received"]
    twin.close()
    size = path.stat().st_size
    return {"batch": batch, "samples": n, "batches": len(timed), "wall_s": wall,
            "samples_per_s": n / wall, "us_per_sample": wall / n * 1e6,
            "historian_MB_per_million_samples": size / total}


def _mqtt_latency(rate: float, seconds: float, data, tmp: Path) -> dict:
    import numpy as np

    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    from brokers import mosquitto

    from processtwin.models import Bioreactor
    from processtwin.twin import Twin
    from processtwin.twin.mqtt import MqttConnection, MqttSource

    model = Bioreactor()
    units = {c: v.units for c, v in model.outputs().items()}
    t = data["time"].values
    rows = [(float(t[k]), c, float(data[c].values[k])) for k in range(t.size)
            for c in ("V", "OUR")]
    n = min(int(rate * seconds), len(rows))
    rows = rows[:n]
    sent: dict[tuple[float, str], float] = {}
    with mosquitto(tmp / "broker") as broker:
        auth = {"username": "twin", "password": "secret"}
        twin = Twin(model, estimate=("mu_max",), inputs={"F": 0.0}, threaded=False,
                    historian=tmp / "mqtt.h5")
        source = MqttSource(broker.host, broker.port, channels=["V", "OUR", "X", "S", "P"],
                            batch_window_s=0.0, idle_timeout_s=5.0, until=rows[-1][0],
                            client_id="bench-twin", **auth).connect()
        gateway = MqttConnection(broker.host, broker.port, client_id="bench-gateway",
                                 **auth).connect()

        def publish() -> None:
            start = time.perf_counter()
            for i, (ts, c, v) in enumerate(rows):
                due = start + i / rate
                while (now := time.perf_counter()) < due:
                    time.sleep(min(due - now, 0.002))
                sent[(ts, c)] = time.perf_counter()
                gateway.publish(f"processtwin/sensors/{c}",
                                json.dumps({"t": ts, "value": v, "unit": units[c]}))

        # compile before the clock starts: the first samples go in directly, one per
        # batch as from the broker (the second of a sampling time re-filters it: a late
        # sample), the rest through the broker
        from processtwin.twin import Sample

        for ts, c, v in rows[:6]:
            twin.advance([Sample(ts, c, v)])
        rows = rows[6:]
        n = len(rows)
        pub = threading.Thread(target=publish, daemon=True)
        pub.start()
        latency = []
        for b in source:
            twin.advance(b)      # validated, filtered, stored and flushed
            done = time.perf_counter()
            latency += [done - sent[(s.t, s.channel)] for s in b.samples]
            if len(latency) >= n:
                break
        pub.join(timeout=10)
        source.close()
        gateway.close()
        twin.close()
    lat = np.asarray(latency) * 1e3
    return {"rate_per_s": rate, "samples": len(latency), "p50_ms": float(np.median(lat)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--rate", type=float, default=100.0, help="MQTT samples per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="MQTT traffic [s]")
    ap.add_argument("--no-mqtt", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})   # one core
    import processtwin

    processtwin.configure()
    from processtwin.models import Bioreactor
    from processtwin.plant import simulated_plant
    from processtwin.signals import hold

    run = simulated_plant(Bioreactor(mu_max=0.022),
                          inputs={"F": hold([0.0, 10.0, 40.0], [0.0, 0.02, 0.04])},
                          until=150.0, dt=0.01, lab_every=4.0, lab_delay=0.0, seed=1)
    data = run.data
    out = {"machine": platform.processor() or platform.machine(), "cores_used": 1,
           "throughput": [], "target_samples_per_s": 5000, "target_p99_ms": 20.0}
    with tempfile.TemporaryDirectory() as d:
        for b in args.batch:
            r = _replay_throughput(b, data, Path(d))
            out["throughput"].append(r)
            print(f"replay, {b:4d} times/batch: {r['samples_per_s']:8.0f} samples/s "
                  f"({r['us_per_sample']:.0f} µs/sample, {r['samples']} samples); historian "
                  f"{r['historian_MB_per_million_samples']:.1f} MB per million samples")
        if not args.no_mqtt:
            r = _mqtt_latency(args.rate, args.seconds, data, Path(d))
            out["mqtt_latency"] = r
            print(f"MQTT publish → estimate stored at {r['rate_per_s']:g} samples/s: "
                  f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max "
                  f"{r['max_ms']:.2f} ms ({r['samples']} samples)")
    if not args.no_save:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "twin.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
