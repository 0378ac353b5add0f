"""Estimation benchmark: processtwin EKF vs filterpy's ExtendedKalmanFilter vs a numpy EKF.

One fed-batch bioreactor (default parameters, 4 states X, S, P, V; S0 = 1 g/L, F = 0.03 L/h
of a 100 g/L feed) observed online on 2 channels (V, OUR) every 0.5 h for ``--samples``
samples (2000: 1000 h). The noisy data are generated once from ``processtwin.simulate`` plus
Gaussian noise of each channel's ``noise``. The feed is 100 g/L, not the model's 200 g/L
default: at 200 g/L the biomass reaches ~10 g/L at S ~ 1e-3 g/L by ~900 h, where a 0.25 h
RK4 sub-step reaches the edge of its stability region; every filter's prediction then goes
unstable and the filters part (``--s-in 200`` shows it).

All filters do the same maths but one: prediction over dt = 0.5 h by 2 RK4 sub-steps
(``dt_max`` = 0.25 h) of the same rhs. filterpy and the numpy EKF add the process noise as
P' = F P F^T + diag(q) dt (what their users write); processtwin propagates it exactly through
the linearised dynamics (``processtwin.estimate.predict``: the covariance ODE integrated with
the state, more sub-steps where it is stiff), so its estimates differ from theirs by a
fraction of a standard deviation (printed) and its step does more work. Then,
R = diag(noise²), a Joseph-form update on both channels and projection onto the state
bounds. processtwin linearises the RK4 map exactly (forward-mode AD). filterpy and the numpy
EKF use what a filterpy user would write: central finite differences of the numpy RK4 map
(the nominal state and the 2·4 perturbed ones integrated together as the columns of one
array, so one vectorised RK4 pass gives the prediction and the Jacobian) and a hand-written
analytic Jacobian of the (simple) measurement function. processtwin's outlier gate and
stuck-sensor test are switched off (``gate=1e12``, ``stuck_n=10**9``) so that every filter
uses every sample; their book-keeping still runs, so its cost is included.

    python experiments/bench/bench_estimate.py [--samples 2000] [--fleet 10000] [--s-in 100]

Timed, median wall time, per filter step (the four whole-history runs are timed in
interleaved rounds, so that a change in the machine's load hits them alike):

1. processtwin whole history: the compiled ``run`` (``lax.scan``, full per-step record) over
   all samples (total / samples); also ``ExtendedKalmanFilter.filter`` (Dataset in and out).
2. processtwin live: ``LiveFilter.step`` once per sample, wall time per call until the new
   estimate is ready; and ``jax.jit(ekf_step)`` called directly with its arguments already
   on the device (no ``LiveFilter`` book-keeping).
3. fleet: ``jax.vmap`` of ``ekf_step`` over ``--fleet`` twins (each its own state, inputs
   and measurements, one spec): wall time of one update of the whole fleet.
4. filterpy ``ExtendedKalmanFilter`` (RK4 prediction via ``predict_x``, ``update`` with
   ``HJacobian``/``Hx``) and the plain numpy EKF, over the whole history.

Results are printed and written to ``experiments/bench/results/estimate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import filterpy  # noqa: E402
import filterpy.kalman  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

import processtwin as pt  # noqa: E402
from processtwin.estimate import ExtendedKalmanFilter, ekf_step, init_state, run  # noqa: E402
from processtwin.models import Bioreactor  # noqa: E402

DT, FEED, S0 = 0.5, 0.03, 1.0
CHANNELS = ("V", "OUR")
N_SUB = 2  # RK4 sub-steps per sample: ceil(DT / dt_max) with dt_max = 0.25 h
M = Bioreactor()
U_NOM = np.array([FEED, 100.0])  # inputs (F, S_in) held throughout; S_in set by --s-in
# issue "estimation fidelity": with the exact covariance propagation on
TARGETS = {"scan_vs_filterpy": 80.0, "live_step_us": 25.0, "fleet_ms": 10.0}


# ---- data ---------------------------------------------------------------------------
def make_data(n, seed=0):
    """Sample times and noisy (V, OUR) rows."""
    t = np.arange(1, n + 1) * DT
    res = pt.simulate(M, {"S": S0}, {"F": U_NOM[0], "S_in": U_NOM[1]}, np.r_[0.0, t])
    rng = np.random.default_rng(seed)
    outs = M.outputs()
    Y = np.column_stack([res["out:" + c][1:] + rng.normal(0.0, outs[c].noise, n)
                         for c in CHANNELS])
    return t, Y


# ---- numpy model: hand-written rhs, RK4 map, finite-difference and analytic Jacobians --
def rhs_np(z):
    """Bioreactor rhs on the columns of ``z`` (4, m) — or on one state (4,) — at ``U_NOM``."""
    X, S, P, V = z
    F, S_in = U_NOM
    mu = M.mu_max * S / (M.K_s + S + S * S / M.K_i)
    phi = S / (M.K_p + S)
    qp = M.alpha * mu + M.beta * phi
    D = F / V
    return np.array([(mu - D) * X,
                     -(mu / M.Y_xs + qp / M.Y_ps + M.m_s * phi) * X + D * (S_in - S),
                     qp * X - D * P,
                     np.full_like(V, F)])


def rk4_np(z, dt=DT, n=N_SUB):
    """``n`` RK4 sub-steps over ``dt`` (time-invariant rhs, inputs held)."""
    h = dt / n
    for _ in range(n):
        k1 = rhs_np(z)
        k2 = rhs_np(z + h / 2 * k1)
        k3 = rhs_np(z + h / 2 * k2)
        k4 = rhs_np(z + h * k3)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


_EPS = np.finfo(float).eps ** (1 / 3)  # central differences: O(h²) + O(eps/h) balanced


def rk4_and_jac(x):
    """RK4 prediction and its Jacobian by central differences, in one vectorised pass."""
    nx = x.shape[0]
    h = _EPS * np.maximum(np.abs(x), 1.0)
    dz = np.diag(h)
    cols = np.concatenate([x[:, None], x[:, None] + dz, x[:, None] - dz], axis=1)
    out = rk4_np(cols)
    return out[:, 0], (out[:, 1:nx + 1] - out[:, nx + 1:]) / (2 * h)


def hx_np(x):
    """Measured V and OUR."""
    X, S, _, V = x
    mu = M.mu_max * S / (M.K_s + S + S * S / M.K_i)
    return np.array([V, (mu / M.Y_xo + M.m_o) * X])


def hjac_np(x):
    """Analytic Jacobian of :func:`hx_np`."""
    X, S, _, _ = x
    den = M.K_s + S + S * S / M.K_i
    mu = M.mu_max * S / den
    dmu = M.mu_max * (M.K_s - S * S / M.K_i) / den**2
    return np.array([[0.0, 0.0, 0.0, 1.0],
                     [mu / M.Y_xo + M.m_o, dmu / M.Y_xo * X, 0.0, 0.0]])


def numpy_ekf(z0, P0, Y, q, r, lower, upper):
    """Plain numpy EKF: RK4 + finite-difference Jacobian, Joseph-form update."""
    z, P = z0.copy(), P0.copy()
    Q, R, eye = np.diag(q * DT), np.diag(r), np.eye(z0.shape[0])
    for y in Y:
        z, F = rk4_and_jac(z)
        P = F @ P @ F.T + Q
        P = 0.5 * (P + P.T)
        H = hjac_np(z)
        PHT = P @ H.T
        K = np.linalg.solve(H @ PHT + R, PHT.T).T
        z = np.clip(z + K @ (y - hx_np(z)), lower, upper)
        IKH = eye - K @ H
        P = IKH @ P @ IKH.T + K @ R @ K.T
        P = 0.5 * (P + P.T)
    return z, P


class RK4EKF(filterpy.kalman.ExtendedKalmanFilter):
    """filterpy's EKF with the RK4 map as the prediction (``predict`` then propagates
    P with the ``F`` set here)."""

    def predict_x(self, u=0):
        self.x, self.F = rk4_and_jac(self.x)


def filterpy_ekf(z0, P0, Y, q, r, lower, upper):
    f = RK4EKF(dim_x=z0.shape[0], dim_z=len(CHANNELS))
    f.x, f.P = z0.copy(), P0.copy()
    f.Q, f.R = np.diag(q * DT), np.diag(r)
    for y in Y:
        f.predict()
        f.update(y, hjac_np, hx_np)
        f.x = np.clip(f.x, lower, upper)
    return f.x, f.P


# ---- timing helpers -------------------------------------------------------------------
def block(tree):
    return jax.block_until_ready(tree)


def interleaved(fns, rounds):
    """Median wall time of each ``fn``: ``rounds`` rounds, each running every ``fn``
    ``inner`` times in turn (one warm-up call each first: compilation)."""
    for fn, _ in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, (fn, inner) in fns.items():
            for _ in range(inner):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def rel_diff(a, b, scale):
    """max_i |a_i - b_i| / max(|b_i|, scale_i) (the scale guards states near zero)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), scale)))


# ---- benchmark ------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000, help="samples in the history")
    ap.add_argument("--fleet", type=int, default=10_000, help="twins in the fleet update")
    ap.add_argument("--s-in", type=float, default=100.0, help="feed concentration [g/L]")
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds of the whole-history timings")
    ap.add_argument("--repeat", type=int, default=20, help="repeats of the fleet update")
    ap.add_argument("--xla-default", action="store_true",
                    help="keep JAX's and XLA's CPU defaults (small-loop limit 1 kB, async "
                         "dispatch) instead of processtwin.configure()")
    args = ap.parse_args()
    if args.xla_default:
        pt.configure(small_loop_bytes=None, async_dispatch=True)
    elif not pt.configure():
        raise SystemExit("processtwin.configure() came after JAX started; nothing measured.")
    n, nf = args.samples, args.fleet
    U_NOM[1] = args.s_in
    inputs = {"F": FEED, "S_in": args.s_in}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__}, filterpy {filterpy.__version__}, numpy {np.__version__}; "
          f"JAX/XLA CPU settings: "
          f"{'defaults' if args.xla_default else 'processtwin.configure()'}")
    print(f"bioreactor, {len(M.states())} states, channels {', '.join(CHANNELS)}, "
          f"{n} samples every {DT:g} h ({n * DT:g} h), F {FEED:g} L/h, S_in {args.s_in:g} g/L, "
          f"RK4 {N_SUB} sub-steps; fleet {nf}")

    times, Y = make_data(n)
    ekf = ExtendedKalmanFilter(M, channels=CHANNELS, gate=1e12, stuck_n=10**9)
    spec = ekf.spec
    assert spec.dt_max * N_SUB >= DT > spec.dt_max * (N_SUB - 1)
    q, r = np.asarray(spec.q), np.asarray(spec.r)
    lower, upper = np.asarray(spec.lower), np.asarray(spec.upper)
    z0, P0 = ekf.initial({"S": S0})
    U = np.tile(U_NOM, (n, 1))
    finals = {}

    # 1 + 4. whole histories: compiled lax.scan, the Dataset API, filterpy, numpy
    run_jit = jax.jit(run)
    s0 = init_state(spec, 0.0, jnp.asarray(z0), jnp.asarray(P0))
    tj, Yj, Uj = jnp.asarray(times), jnp.asarray(Y), jnp.asarray(U)
    ds = xr.Dataset({c: ("time", Y[:, j]) for j, c in enumerate(CHANNELS)},
                    coords={"time": times})

    def via_api():
        return ekf.filter(ds, x0={"S": S0}, inputs=inputs, t0=0.0).data

    def scan():
        return block(run_jit(spec, s0, tj, Yj, Uj))

    hist = interleaved({
        "scan": (scan, 8),
        "filter": (via_api, 4),
        "filterpy": (lambda: filterpy_ekf(z0, P0, Y, q, r, lower, upper), 1),
        "numpy": (lambda: numpy_ekf(z0, P0, Y, q, r, lower, upper), 1),
    }, args.rounds)
    s_scan, _ = scan()
    finals["scan"] = np.asarray(s_scan.z)
    scale = np.sqrt(np.diag(np.asarray(s_scan.P)))
    out = via_api()
    finals["filter"] = np.array([out[k].values[-1] for k in ekf.names])
    finals["filterpy"] = filterpy_ekf(z0, P0, Y, q, r, lower, upper)[0]
    finals["numpy"] = numpy_ekf(z0, P0, Y, q, r, lower, upper)[0]

    # 2. live: one call per sample, wall time until the new estimate is ready
    def live_pass(health="flag"):
        live = ekf.live(0.0, x0={"S": S0}, u=inputs, on_divergence=health)
        per = np.empty(n)
        for k in range(n):
            sample = {c: Y[k, j] for j, c in enumerate(CHANNELS)}
            t0 = time.perf_counter()
            live.step(times[k], sample)
            z_now = live.z  # the new estimate, on the host
            per[k] = time.perf_counter() - t0
            assert z_now.shape == (len(ekf.names),)
        return live.state, per

    step_jit = jax.jit(ekf_step)
    tl = [jnp.asarray(v) for v in times]
    yl = [jnp.asarray(v) for v in Y]
    u_dev = jnp.asarray(U_NOM)

    def direct_pass():
        s = s0
        per = np.empty(n)
        for k in range(n):
            t0 = time.perf_counter()
            s = block(step_jit(spec, s, tl[k], yl[k], u_dev)[0])
            per[k] = time.perf_counter() - t0
        return s, per

    per_live, per_bare, per_direct = [], [], []
    for rnd in range(3):  # round 0 compiles and warms up
        s_live, per = live_pass()
        per_live += [per] if rnd else []
        _, per = live_pass("off")
        per_bare += [per] if rnd else []
        s_direct, per = direct_pass()
        per_direct += [per] if rnd else []
    per_live, per_direct = np.concatenate(per_live), np.concatenate(per_direct)
    per_bare = np.concatenate(per_bare)
    finals["live"] = np.asarray(s_live.z)
    finals["jit(ekf_step)"] = np.asarray(s_direct.z)

    # 3. fleet: one vmapped update of all twins (each its own state, inputs, data)
    rng = np.random.default_rng(1)
    zf = z0 * (1.0 + 0.05 * rng.standard_normal((nf, z0.shape[0])))
    zf[:, 2] = np.abs(zf[:, 2])
    fleet0 = jax.vmap(lambda z: init_state(spec, 0.0, z, jnp.asarray(P0)))(jnp.asarray(zf))
    Yf = jnp.asarray(Y[0] * (1.0 + 0.01 * rng.standard_normal((nf, len(CHANNELS)))))
    Uf = jnp.asarray(np.c_[FEED * rng.uniform(0.5, 1.5, nf), np.full(nf, args.s_in)])
    t1 = jnp.asarray(times[0])
    vmap_step = jax.jit(jax.vmap(lambda s, t, y, u: ekf_step(spec, s, t, y, u)[0],
                                 in_axes=(0, None, 0, 0)))
    fleet_times = interleaved({
        "fleet": (lambda: block(ekf.fleet_update(fleet0, t1, Yf, Uf)), args.repeat),
        "vmap": (lambda: block(vmap_step(fleet0, t1, Yf, Uf)), args.repeat)}, 1)
    t_fleet, t_vmap = fleet_times["fleet"], fleet_times["vmap"]
    fleet1 = ekf.fleet_update(fleet0, t1, Yf, Uf)[0]
    fleet_vs_vmap = rel_diff(fleet1.z, vmap_step(fleet0, t1, Yf, Uf).z, 1e-12)
    i = nf // 2
    one = step_jit(spec, jax.tree.map(lambda a: a[i], fleet0), t1, Yf[i], Uf[i])[0]
    fleet_err = rel_diff(fleet1.z[i], one.z, 1e-12)

    # ---- report
    rows = [("scan", "processtwin run (lax.scan), whole history", hist["scan"] / n),
            ("filter", "processtwin ExtendedKalmanFilter.filter (Dataset)", hist["filter"] / n),
            ("live", "processtwin LiveFilter.step, per call", float(np.median(per_live))),
            ("live_no_health", "  the same, divergence check off", float(np.median(per_bare))),
            ("jit_step", "processtwin jit(ekf_step), device args, per call",
             float(np.median(per_direct))),
            ("filterpy", "filterpy ExtendedKalmanFilter (RK4, FD Jacobian)",
             hist["filterpy"] / n),
            ("numpy", "numpy EKF (RK4, FD Jacobian, Joseph)", hist["numpy"] / n)]
    per_step = {k: t for k, _, t in rows}
    base = per_step["scan"]
    print("\nper filter step (median wall time; ratio = time / processtwin scan)")
    for _, name, t in rows:
        print(f"  {name:<52} {t * 1e6:10.2f} µs   ratio {t / base:8.1f}x")
    print(f"  {f'processtwin fleet_update ({nf} twins)':<52} {t_fleet * 1e3:10.2f} ms"
          f"   ({t_fleet / nf * 1e6:.2f} µs per twin)")
    print(f"  {'  the same as one jit(vmap(ekf_step))':<52} {t_vmap * 1e3:10.2f} ms"
          f"   (estimates equal to {fleet_vs_vmap:.1e})")
    print("\nfinal estimate (X, S, P, V) of the scan: "
          + ", ".join(f"{v:.6g}" for v in finals["scan"]))
    print("max over states of |z - z_scan| / max(|z_scan|, std of z_scan):")
    diffs = {k: rel_diff(v, finals["scan"], scale) for k, v in finals.items() if k != "scan"}
    for k, d in diffs.items():
        print(f"  {k:<16} {d:9.2e}")
    print(f"  fleet twin #{i} vs a single jit(ekf_step): {fleet_err:.2e}")
    live_us, speedup = per_step["live"] * 1e6, per_step["filterpy"] / base
    checks = {"scan_vs_filterpy": (speedup, speedup >= TARGETS["scan_vs_filterpy"]),
              "live_step_us": (live_us, live_us <= TARGETS["live_step_us"]),
              "fleet_ms": (t_fleet * 1e3, t_fleet * 1e3 <= TARGETS["fleet_ms"])}
    verdict = {k: "met" if ok else "NOT met" for k, (_, ok) in checks.items()}
    print("\ntargets:")
    print(f"  scan >= {TARGETS['scan_vs_filterpy']:g}x filterpy: {speedup:.1f}x — "
          f"{verdict['scan_vs_filterpy']}")
    print(f"  live step <= {TARGETS['live_step_us']:g} µs: {live_us:.1f} µs "
          f"(jit(ekf_step) alone {per_step['jit_step'] * 1e6:.1f} µs) — {verdict['live_step_us']}")
    print(f"  fleet of {nf} <= {TARGETS['fleet_ms']:g} ms: {t_fleet * 1e3:.1f} ms — "
          f"{verdict['fleet_ms']}" + ("" if nf == 10_000 else " (target is for 10,000)"))

    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    pct = (10, 50, 90, 99)
    name = "estimate_xla_default.json" if args.xla_default else "estimate.json"
    (out_dir / name).write_text(json.dumps({
        "samples": n, "dt_h": DT, "rk4_substeps": N_SUB, "channels": list(CHANNELS),
        "inputs": inputs,
        "per_step": [{"key": k, "name": name, "median_s": t, "ratio_vs_scan": t / base}
                     for k, name, t in rows],
        "live_step_percentiles_s": {str(p): float(np.percentile(per_live, p)) for p in pct},
        "jit_step_percentiles_s": {str(p): float(np.percentile(per_direct, p)) for p in pct},
        "fleet_update": {"twins": nf, "median_s": t_fleet, "rel_diff_vs_single": fleet_err,
                         "vmap_median_s": t_vmap, "rel_diff_vs_vmap": fleet_vs_vmap},
        "final_estimate_scan": finals["scan"].tolist(),
        "final_rel_diff_vs_scan": diffs,
        "targets": {k: {"value": v, "target": TARGETS[k], "met": bool(ok)}
                    for k, (v, ok) in checks.items()},
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
