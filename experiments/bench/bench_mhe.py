"""MHE benchmark: processtwin's MovingHorizonEstimator vs do-mpc's ``MHE``, same model and window.

Model: do-mpc's ``batch_reactor`` (processtwin's ``Bioreactor`` with ``K_p=0``), fed at
F = 0.03 L/h, simulated as the plant at rtol 1e-10 with X, S, P and V measured every hour
with the model's declared noise (0.05, 0.02, 0.02 g/L, 0.05 L). Both estimators get the same
window (``--window``, default 10 samples), the same initial estimate and covariance, the
same noise weights (process-noise intensity q per hour as in the EKF tests; do-mpc's
constant-rate noise gets ``P_w = dt / q``), the same bounds (concentrations and volume ≥ 0)
at tol 1e-8 (do-mpc: IPOPT; processtwin: fatrop, both bundled with casadi), each
warm-started from its previous window.
Transcriptions differ as each tool offers them: do-mpc uses its default Radau collocation
(degree 2, one element per step), processtwin RK4 multiple shooting (sub-steps from
``dt_max`` = 0.25 h and the stability bound).

    python experiments/bench/bench_mhe.py [--window 10] [--steps 60]

Prints the median wall time of one estimator step (do-mpc ``make_step`` vs
``LiveMHE.step``, first step excluded), the ratio, the time to build the problem and take
the first step, and each estimator's RMSE against the true states. Requires
``pip install do-mpc`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import processtwin as pt  # noqa: E402
from processtwin.models import Bioreactor  # noqa: E402
from processtwin.solvers import MovingHorizonEstimator  # noqa: E402

MODEL = Bioreactor(K_p=0.0)
X0 = {"X": 1.0, "S": 0.5, "P": 0.0, "V": 120.0}
GUESS = {"X": 1.2, "S": 0.4, "P": 0.05, "V": 119.0}
STD0 = {"X": 0.2, "S": 0.1, "P": 0.05, "V": 1.0}
Q = {"X": 1e-4, "S": 1e-6, "P": 1e-6, "V": 1e-3}  # intensity per hour
FEED, DT, TOL = 0.03, 1.0, 1e-8
STATES = "XSPV"


def plant(steps: int, seed: int = 0):
    t = np.arange(steps + 1) * DT
    res = pt.simulate(MODEL, X0, {"F": FEED}, t, rtol=1e-10, atol=1e-12)
    truth = np.stack([res[k] for k in STATES], axis=1)
    sd = np.array([MODEL.outputs()[k].noise for k in STATES])
    y = truth + np.random.default_rng(seed).normal(size=truth.shape) * sd
    return t[1:], truth[1:], y[1:], sd


def run_do_mpc(times, Y, sd, window):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import do_mpc
    m = MODEL
    model = do_mpc.model.Model("continuous")
    x = {k: model.set_variable("_x", f"{k}_s") for k in STATES}
    inp = model.set_variable("_u", "inp")
    mu = m.mu_max * x["S"] / (m.K_s + x["S"] + x["S"] ** 2 / m.K_i)
    d = inp / x["V"]
    model.set_rhs("X_s", mu * x["X"] - d * x["X"], process_noise=True)
    model.set_rhs("S_s", -mu * x["X"] / m.Y_xs - m.beta * x["X"] / m.Y_ps
                  + d * (200.0 - x["S"]), process_noise=True)  # S_in: an input, 200 g/L
    model.set_rhs("P_s", m.beta * x["X"] - d * x["P"], process_noise=True)
    model.set_rhs("V_s", inp, process_noise=True)
    for k in STATES:
        model.set_meas(f"{k}_meas", x[k], meas_noise=True)
    model.set_meas("inp_meas", inp, meas_noise=False)
    model.setup()
    mhe = do_mpc.estimator.MHE(model)
    mhe.settings.n_horizon = window
    mhe.settings.t_step = DT
    mhe.settings.meas_from_data = True
    mhe.settings.nlpsol_opts = {"ipopt.print_level": 0, "print_time": 0, "ipopt.sb": "yes",
                                "ipopt.tol": TOL}
    P_x = np.diag(1.0 / np.array([STD0[k] for k in STATES]) ** 2)
    P_v = np.diag(1.0 / sd**2)
    P_w = np.diag(DT / np.array([Q[k] for k in STATES]))
    mhe.set_default_objective(P_x, P_v=P_v, P_w=P_w)
    for k in STATES:
        mhe.bounds["lower", "_x", f"{k}_s"] = 0.0
    t_setup = time.perf_counter()
    mhe.setup()
    t_setup = time.perf_counter() - t_setup
    mhe.x0 = np.array([GUESS[k] for k in STATES])
    mhe.set_initial_guess()
    est, wall = [], []
    for y in Y:
        t0 = time.perf_counter()
        xe = mhe.make_step(np.r_[y, FEED].reshape(-1, 1))
        wall.append(time.perf_counter() - t0)
        est.append(np.asarray(xe).ravel())
    return np.array(est), wall, t_setup


def run_processtwin(times, Y, window):
    mhe = MovingHorizonEstimator(MODEL, window=window, channels=tuple(STATES), q=Q,
                                 tol=TOL, gate=float("inf"))
    live = mhe.live(0.0, x0=GUESS, std=STD0, u={"F": FEED})
    est, wall = [], []
    for t, y in zip(times, Y, strict=True):
        t0 = time.perf_counter()
        live.step(float(t), dict(zip(STATES, y, strict=True)))
        wall.append(time.perf_counter() - t0)
        est.append(live.z[:4].copy())
    return np.array(est), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    pt.configure()
    times, truth, Y, sd = plant(args.steps)
    e_dm, t_dm, setup_dm = run_do_mpc(times, Y, sd, args.window)
    e_pt, t_pt = run_processtwin(times, Y, args.window)
    med_dm, med_pt = float(np.median(t_dm[1:])), float(np.median(t_pt[1:]))
    after = slice(args.window, None)  # once the window is full

    def rmse(e):
        return {k: float(np.sqrt(np.mean((e[after, i] - truth[after, i]) ** 2)))
                for i, k in enumerate(STATES)}

    r_dm, r_pt = rmse(e_dm), rmse(e_pt)
    print(f"window {args.window}, {args.steps} samples (1 h apart)")
    print(f"median time per estimator step (first excluded): processtwin "
          f"{med_pt * 1e3:.2f} ms, do-mpc {med_dm * 1e3:.2f} ms, ratio {med_pt / med_dm:.2f}")
    print(f"building + first step: processtwin {t_pt[0] * 1e3:.0f} ms, do-mpc "
          f"{(setup_dm + t_dm[0]) * 1e3:.0f} ms")
    print("RMSE once the window is full [g/L, L]:")
    for k in STATES:
        print(f"  {k}: processtwin {r_pt[k]:.4g}, do-mpc {r_dm[k]:.4g}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "mhe.json").write_text(json.dumps({
        "window": args.window, "steps": args.steps,
        "median_step_s_processtwin": med_pt, "median_step_s_do_mpc": med_dm,
        "ratio": med_pt / med_dm, "build_and_first_step_s_processtwin": t_pt[0],
        "build_and_first_step_s_do_mpc": setup_dm + t_dm[0], "rmse_processtwin": r_pt,
        "rmse_do_mpc": r_dm},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
