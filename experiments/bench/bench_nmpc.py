"""NMPC benchmark: processtwin vs do-mpc on do-mpc's ``batch_reactor`` example.

Same model (Bajpai–Reuss reduced penicillin fed-batch: processtwin's ``Bioreactor`` —
``alpha=0``, ``m_s=0`` — is do-mpc's ``batch_reactor`` with Bajpai & Reuss's non-growth
production saturation ``K_p = 2e-4 g/L`` written into do-mpc's model too, which keeps the
substrate from going negative when it runs out), horizon 20, 1 h steps, same
objective (mterm = lterm = -P, rterm on the feed 1.0), same bounds (0 ≤ X ≤ 3.7,
S ≥ -0.01 (processtwin: S ≥ 0, the model's physical bound), 0 ≤ P ≤ 3, V ≥ 0,
0 ≤ F ≤ 0.2 L/h), nominal Y_x = 0.5 and S_in = 200 g/L (n_robust = 0), and the same
transcription: Radau collocation of degree 3 with one element per step. Both run in closed
loop for ``--steps`` steps against processtwin's simulator (rtol 1e-10), each warm-started
from its previous solution; both use IPOPT (bundled with casadi) at tol 1e-10.

    python experiments/bench/bench_nmpc.py [--steps 150]

Reports the step-0 optimum of both (first feed move and objective), their relative
difference, and the median wall time of one NMPC step (``make_step`` vs ``OCP.solve``).
Requires ``pip install do-mpc`` (the ``bench`` extra).
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
from processtwin.solvers import OCP  # noqa: E402

MODEL = Bioreactor()
X0 = {"X": 1.0, "S": 0.5, "P": 0.0, "V": 120.0}
N, DT, TOL = 20, 1.0, 1e-10
# the controllers' state bounds (both): the state handed to a controller is projected onto
# them with --project (do-mpc applies its bounds to the initial node too, so a plant state a
# hair above X = 3.7 — the collocation model's mismatch — makes its problem infeasible)
STATE_BOUNDS = {"X": (0.0, 3.7), "S": (-0.01, None), "P": (0.0, 3.0), "V": (0.0, None)}
PROJECT = False
PEER_OPTS: dict = {}  # extra IPOPT options for do-mpc (--peer-adaptive)


def measured(x):
    """The plant state as handed to a controller (projected with ``--project``)."""
    if not PROJECT:
        return dict(x)
    out = {}
    for k, v in x.items():
        lo, hi = STATE_BOUNDS[k]
        out[k] = min(max(v, lo), hi if hi is not None else v)
    return out


def do_mpc_controller():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import do_mpc
    model = do_mpc.model.Model("continuous")
    X_s = model.set_variable("_x", "X_s")
    S_s = model.set_variable("_x", "S_s")
    P_s = model.set_variable("_x", "P_s")
    V_s = model.set_variable("_x", "V_s")
    inp = model.set_variable("_u", "inp")
    Y_x = model.set_variable("_p", "Y_x")
    S_in = model.set_variable("_p", "S_in")
    m = MODEL
    mu = m.mu_max * S_s / (m.K_s + S_s + S_s**2 / m.K_i)
    model.set_rhs("X_s", mu * X_s - inp / V_s * X_s)
    phi = S_s / (m.K_p + S_s)
    model.set_rhs("S_s", -mu * X_s / Y_x - m.beta * phi * X_s / m.Y_ps
                  + inp / V_s * (S_in - S_s))
    model.set_rhs("P_s", m.beta * phi * X_s - inp / V_s * P_s)
    model.set_rhs("V_s", inp)
    model.setup()
    mpc = do_mpc.controller.MPC(model)
    mpc.settings.n_horizon = N
    mpc.settings.n_robust = 0
    mpc.settings.t_step = DT
    mpc.settings.state_discretization = "collocation"
    mpc.settings.collocation_type = "radau"
    mpc.settings.collocation_deg = 3
    mpc.settings.collocation_ni = 1
    mpc.settings.store_full_solution = True
    mpc.settings.nlpsol_opts = {"ipopt.print_level": 0, "print_time": 0, "ipopt.sb": "yes",
                                "ipopt.tol": TOL, **PEER_OPTS}
    mpc.set_objective(mterm=-P_s, lterm=-P_s)
    mpc.set_rterm(inp=1.0)
    mpc.bounds["lower", "_x", "X_s"] = 0.0
    mpc.bounds["lower", "_x", "S_s"] = -0.01
    mpc.bounds["lower", "_x", "P_s"] = 0.0
    mpc.bounds["lower", "_x", "V_s"] = 0.0
    mpc.bounds["upper", "_x", "X_s"] = 3.7
    mpc.bounds["upper", "_x", "P_s"] = 3.0
    mpc.bounds["lower", "_u", "inp"] = 0.0
    mpc.bounds["upper", "_u", "inp"] = 0.2
    mpc.set_uncertainty_values(Y_x=np.array([m.Y_xs]), S_in=np.array([200.0]))
    mpc.setup()
    return mpc


def processtwin_controller():
    return (OCP(MODEL, N * DT, N, controls=("F",), method="collocation", degree=3)
            .initial_state(**X0)
            .bound_input("F", 0.0, 0.2, previous=0.0)
            .constrain("X", upper=3.7)
            .constrain("P", upper=3.0)
            .minimise(mayer=lambda x: -x.P, stage=lambda x, u: -x.P, du_weight={"F": 1.0},
                      stage_rule="rectangle"))  # do-mpc's lterm: one term per step


def plant_step(x, u):
    u = min(max(float(u), 0.0), 0.2)  # the actuator: IPOPT may return -1e-8
    r = pt.simulate(MODEL, x, {"F": u}, [0.0, DT], rtol=1e-10, atol=1e-12)
    # the substrate at ~1e-13 g/L may come back a hair below 0: the plant is at its bound
    return {k: max(float(r[k][-1]), 0.0) for k in "XSPV"}


def run_do_mpc(steps):
    mpc = do_mpc_controller()
    x = dict(X0)
    vec = np.array([[x[k]] for k in "XSPV"])
    mpc.x0 = vec
    mpc.set_initial_guess()
    times, failures, Ps = [], [], []
    for k in range(steps):
        xm = measured(x)
        vec = np.array([[xm[s]] for s in "XSPV"])
        t0 = time.perf_counter()
        u = float(mpc.make_step(vec)[0, 0])
        if not mpc.solver_stats["success"]:
            failures.append((k, mpc.solver_stats["return_status"]))
        times.append(time.perf_counter() - t0)
        if k == 0:
            u0 = u
        x = plant_step(x, u)
        Ps.append(x["P"])
    if failures:
        print(f"do-mpc: {len(failures)} of {steps} steps did not converge, first "
              f"{failures[0]}")
    return u0, times, x, Ps, failures


def run_processtwin(steps):
    ocp = processtwin_controller()
    x, u, prev, times, Ps = dict(X0), 0.0, None, [], []
    for k in range(steps):
        t0 = time.perf_counter()
        ocp.initial_state(**measured(x))
        ocp.bound_input("F", 0.0, 0.2, previous=u)
        res = ocp.solve(tol=TOL, warm_start=prev)
        u = res.first_move()["F"]  # the move to apply (no Dataset built)
        times.append(time.perf_counter() - t0)
        if k == 0:
            u0, obj0 = u, res.objective
        assert res.success, (k, res.status)  # raises otherwise: every step must converge
        prev = res
        x = plant_step(x, u)
        Ps.append(x["P"])
    return u0, obj0, times, x, Ps


def main():
    global TOL, PROJECT, PEER_OPTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--tol", type=float, default=TOL, help="IPOPT tolerance (both)")
    ap.add_argument("--project", action="store_true",
                    help="hand both controllers the plant state projected onto their state "
                         "bounds")
    ap.add_argument("--peer-adaptive", action="store_true",
                    help="give do-mpc's IPOPT the adaptive barrier update processtwin uses "
                         "for warm-started steps (default: do-mpc's own options)")
    args = ap.parse_args()
    TOL, PROJECT = args.tol, args.project
    PEER_OPTS = {"ipopt.mu_strategy": "adaptive"} if args.peer_adaptive else {}
    pt.configure()
    u_dm, t_dm, x_dm, P_dm, fail_dm = run_do_mpc(args.steps)
    u_pt, obj_pt, t_pt, x_pt, P_pt = run_processtwin(args.steps)
    # the loops agree while both converge: compare the product up to do-mpc's first failure
    n_ok = fail_dm[0][0] if fail_dm else args.steps
    rel_ok = float(np.max(np.abs(np.subtract(P_pt[:n_ok], P_dm[:n_ok]))
                          / np.maximum(np.abs(P_dm[:n_ok]), 1e-12))) if n_ok else float("nan")
    rel_u0 = abs(u_pt - u_dm) / max(abs(u_dm), 1e-12)
    med_dm, med_pt = float(np.median(t_dm[1:])), float(np.median(t_pt[1:]))
    print(f"step-0 feed: processtwin {u_pt:.10g} L/h, do-mpc {u_dm:.10g} L/h "
          f"(relative difference {rel_u0:.2e}); processtwin objective {obj_pt:.10g}")
    rel_P = abs(x_pt["P"] - x_dm["P"]) / abs(x_dm["P"])
    print(f"final P after {args.steps} steps: processtwin {x_pt['P']:.8g}, do-mpc "
          f"{x_dm['P']:.8g} g/L (relative difference {rel_P:.2e}, target <= 1e-4); "
          f"largest relative difference of P over the {n_ok} steps before do-mpc's first "
          f"failed solve: {rel_ok:.2e}; processtwin: every step converged")
    print(f"median time per NMPC step (excluding the first): processtwin {med_pt * 1e3:.2f} ms, "
          f"do-mpc {med_dm * 1e3:.2f} ms, ratio {med_pt / med_dm:.2f}")
    print(f"first step (includes building): processtwin {t_pt[0] * 1e3:.0f} ms, "
          f"do-mpc {t_dm[0] * 1e3:.0f} ms")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "nmpc.json").write_text(json.dumps({
        "u0_processtwin": u_pt, "u0_do_mpc": u_dm, "u0_rel_diff": rel_u0,
        "median_step_s_processtwin": med_pt, "median_step_s_do_mpc": med_dm,
        "ratio": med_pt / med_dm, "final_P_processtwin": x_pt["P"],
        "final_P_do_mpc": x_dm["P"], "final_P_rel_diff": rel_P, "steps": args.steps,
        "do_mpc_failed_steps": len(fail_dm), "do_mpc_first_failure": fail_dm[0] if fail_dm
        else None, "P_rel_diff_before_failure": rel_ok, "tol": TOL},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
