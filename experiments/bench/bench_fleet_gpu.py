"""Fleet update on whatever JAX backend is present (a GPU where there is one): one vmapped
EKF step of N bioreactor twins, each with its own state, inputs and sample.

The same update as ``bench_estimate.py``'s fleet (``ExtendedKalmanFilter.fleet_update``:
bioreactor, channels V and OUR, 0.5 h interval, exact continuous-discrete covariance
propagation), at fleet sizes from 10,000 to
1,000,000; per size: median wall time of the compiled update (after a warm-up call), time
per twin, and the largest relative difference of one twin's estimate from the same step run
alone on the CPU. Needs only jax, numpy and processtwin's estimation (no peers), so it runs
on an accelerator machine's own Python:

    PYTHONPATH=. python experiments/bench/bench_fleet_gpu.py [--sizes 10000 100000 1000000]

Writes ``results/fleet_<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import processtwin as pt
from processtwin.estimate import ExtendedKalmanFilter, ekf_step, init_state
from processtwin.models import Bioreactor

DT, FEED, S_IN, S0 = 0.5, 0.03, 100.0, 1.0
CHANNELS = ("V", "OUR")


def fleet_inputs(ekf: ExtendedKalmanFilter, n: int, seed: int = 1):
    """States, samples and inputs of ``n`` twins scattered around the nominal batch."""
    z0, P0 = ekf.initial({"S": S0})
    rng = np.random.default_rng(seed)
    zf = z0 * (1.0 + 0.05 * rng.standard_normal((n, z0.shape[0])))
    zf[:, 2] = np.abs(zf[:, 2])
    y_nom = np.array([z0[3], 0.01])  # V [L] and an OUR [mol/(L h)] of the right size
    Y = y_nom * (1.0 + 0.01 * rng.standard_normal((n, len(CHANNELS))))
    U = np.c_[FEED * rng.uniform(0.5, 1.5, n), np.full(n, S_IN)]
    return zf, P0, Y, U


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=20, help="timed updates per size")
    args = ap.parse_args()
    pt.configure()
    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    print(f"jax {jax.__version__}, backend {backend} ({device})")
    ekf = ExtendedKalmanFilter(Bioreactor(), channels=CHANNELS, gate=1e12, stuck_n=10**9)
    spec = ekf.spec
    def step(states, t, Y, U):  # the fleet API: chunks of twins on a CPU, one vmap elsewhere
        return ekf.fleet_update(states, t, Y, U)[0]

    one = jax.jit(lambda s, t, y, u: ekf_step(spec, s, t, y, u)[0])  # on the CPU: its inputs are
    rows = []
    for n in args.sizes:
        zf, P0, Y, U = fleet_inputs(ekf, n)
        fleet = jax.vmap(init_state, in_axes=(None, None, 0, None))(
            spec, 0.0, jnp.asarray(zf), jnp.asarray(P0))
        t1, Yd, Ud = jnp.asarray(DT), jnp.asarray(Y), jnp.asarray(U)
        t0 = time.perf_counter()
        out = jax.block_until_ready(step(fleet, t1, Yd, Ud))
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            jax.block_until_ready(step(fleet, t1, Yd, Ud))
            times.append(time.perf_counter() - t0)
        i = n // 2
        cpu = jax.devices("cpu")[0]
        member = jax.device_put(jax.tree.map(lambda a, i=i: a[i], fleet), cpu)
        ref = np.asarray(one(member, *(jax.device_put(v, cpu) for v in (DT, Y[i], U[i]))).z)
        got = np.asarray(out.z[i])
        diff = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)))
        med = float(np.median(times))
        rows.append({"twins": n, "median_s": med, "per_twin_s": med / n,
                     "first_call_s": first, "rel_diff_vs_cpu_single": diff})
        print(f"  {n:>9} twins: {med * 1e3:9.3f} ms  ({med / n * 1e9:8.1f} ns per twin; "
              f"first call {first:.2f} s; twin {i} vs the CPU step alone {diff:.1e})")
    out_path = Path(__file__).parent / "results" / f"fleet_{backend}.json"
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps({"jax": jax.__version__, "backend": backend,
                                    "device": device, "dt_h": DT, "channels": CHANNELS,
                                    "sizes": rows}, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
