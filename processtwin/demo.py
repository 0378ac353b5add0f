"""The embedded default job behind ``processtwin demo`` / ``make demo``."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .estimate import ExtendedKalmanFilter
from .io import save
from .models import Bioreactor
from .plant import simulated_plant
from .signals import hold
from .simulate import ensemble, simulate
from .solvers import BatchNMPC

__all__ = ["run_demo"]

#: A plausible operator recipe: batch phase, then stepped feed [L/h] (Bajpai–Reuss scale).
FEED_TIMES = (0.0, 10.0, 40.0, 90.0)
FEED_VALUES = (0.0, 0.02, 0.04, 0.03)
#: When the demo operator asks the twin for a recommendation [h].
RECOMMEND_AT = 60.0


def run_demo(out_dir: str | Path, *, members: int = 1000, seed: int = 0,
             echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Simulate a 150 h fed-batch and an ensemble with parametric uncertainty.

    Writes ``batch.nc``, ``ensemble.nc``, ``demo.png`` and ``report.md`` into ``out_dir``
    and returns the headline numbers.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = Bioreactor()
    t = np.linspace(0.0, 150.0, 151)
    feed = hold(FEED_TIMES, FEED_VALUES)
    batch = simulate(model, None, {"F": feed}, t)
    save(batch, out / "batch.nc")

    rng = np.random.default_rng(seed)
    # ±10 % (1σ) on the kinetic constants that vary most from batch to batch, ±3 % on the
    # feed concentration; truncated to stay inside the parameters' bounds.
    params = {
        "mu_max": np.clip(rng.normal(model.mu_max, 0.1 * model.mu_max, members), 1e-4, None),
        "Y_xs": np.clip(rng.normal(model.Y_xs, 0.05 * model.Y_xs, members), 0.05, None),
        "beta": np.clip(rng.normal(model.beta, 0.1 * model.beta, members), 0.0, None),
    }
    s_in = rng.normal(200.0, 6.0, members)
    ens = ensemble(model, None, {"F": feed, "S_in": s_in}, t, params=params,
                   chunk_size=max(1, members // 4), progress=True)
    save(ens, out / "ensemble.nc")

    p_final = ens["P"][:, -1]
    q = np.percentile(p_final, [10, 50, 90])
    headline = {
        "P_final_nominal": float(batch["P"][-1]),
        "P_final_p10": float(q[0]), "P_final_p50": float(q[1]), "P_final_p90": float(q[2]),
        "X_final_nominal": float(batch["X"][-1]),
        "V_final": float(batch["V"][-1]),
        "batch_ms": batch.stats["wall_time_s"] * 1e3,
        "ensemble_s": ens.stats["wall_time_s"],
        "members": members,
    }
    _plot(batch, ens, out / "demo.png")
    live = _live_twin(model, feed, out, echo)
    headline.update(live)
    lines = [
        "# processtwin demo: fed-batch bioreactor",
        "",
        f"Model `{model.name}` (Bajpai & Reuss penicillin kinetics), 150 h, feed recipe "
        + ", ".join(f"{v:g} L/h from {tt:g} h" for tt, v in zip(FEED_TIMES, FEED_VALUES,
                                                               strict=True)) + ".",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| final product, nominal | {headline['P_final_nominal']:.3f} g/L |",
        f"| final product, ensemble P10 / P50 / P90 | {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f} g/L |",
        f"| final biomass, nominal | {headline['X_final_nominal']:.3f} g/L |",
        f"| final volume | {headline['V_final']:.2f} L |",
        f"| one batch (incl. validation) | {headline['batch_ms']:.1f} ms |",
        f"| {members} members | {headline['ensemble_s']:.2f} s (first call includes "
        "compilation) |",
        "",
        "![trajectories](demo.png)",
        "",
        "## Live twin: simulated plant → EKF",
        "",
        f"The plant's true μmax is {live['mu_max_true']:.4f} 1/h (the model's nominal value is "
        f"{model.mu_max:.4f}); volume and OUR arrive every 15 min, lab assays every 4 h, 2 h "
        "late (re-filtered at their sampling time).",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| μmax estimate at 150 h | {live['mu_max_est']:.4f} ± {live['mu_max_std']:.4f} 1/h |",
        f"| biomass estimate vs truth at 150 h | {live['X_est']:.3f} vs {live['X_true']:.3f} "
        "g/L |",
        f"| samples processed / re-filtered for late lab assays | {live['samples']} / "
        f"{live['refiltered']} |",
        f"| median live step | {live['step_us']:.0f} µs |",
        "",
        "![estimation](estimate.png)",
        "",
        f"## Recommendation at {RECOMMEND_AT:g} h",
        "",
        "```",
        live["recommendation"],
        "```",
        "",
        "Files: `batch.nc`, `ensemble.nc` (netCDF-4/HDF5, open with `xarray.open_dataset`).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    echo(f"nominal batch: final product {headline['P_final_nominal']:.3f} g/L, biomass "
         f"{headline['X_final_nominal']:.3f} g/L, volume {headline['V_final']:.1f} L "
         f"({headline['batch_ms']:.1f} ms)")
    echo(f"ensemble of {members}: final product P10/P50/P90 = {q[0]:.3f} / {q[1]:.3f} / "
         f"{q[2]:.3f} g/L ({headline['ensemble_s']:.2f} s)")
    echo(f"report: {out / 'report.md'}  plot: {out / 'demo.png'}")
    return headline


def _live_twin(model: Bioreactor, feed: Any, out: Path, echo: Callable[[str], Any]
               ) -> dict[str, Any]:
    """Stream a simulated plant (true mu_max 20 % above nominal) into a live EKF."""
    truth_model = model.replace(mu_max=1.2 * model.mu_max)
    plant = simulated_plant(truth_model, inputs={"F": feed}, until=150.0, dt=0.25,
                            lab_every=4.0, lab_delay=2.0, seed=1)
    ekf = ExtendedKalmanFilter(model, estimate=["mu_max"],
                               q={"mu_max": (2e-4) ** 2})
    feed_times, feed_values = np.asarray(feed.times).tolist(), np.asarray(feed.values).tolist()

    def feed_at(t: float) -> float:  # the plant's recipe, looked up on the host
        return feed_values[max(bisect.bisect_right(feed_times, t) - 1, 0)]

    twin = ekf.live(0.0, u={"F": feed_at(0.0)})
    steps = []
    rec = None
    for arrival, t_sample, y in plant.arrivals:
        u = {"F": feed_at(t_sample)} if arrival == t_sample else None
        t0 = time.perf_counter()
        twin.step(t_sample, y, u)
        steps.append(time.perf_counter() - t0)
        if rec is None and arrival >= RECOMMEND_AT:  # the operator asks what to do next
            est_now = twin.estimate()
            nmpc = BatchNMPC(model, batch_end=150.0, interval=3.0)
            rec = nmpc.recommend(arrival, {s: est_now[s][0] for s in model.states()},
                                 params={"mu_max": est_now["mu_max"][0]},
                                 u_now=feed_at(arrival))
            echo(f"recommendation at {arrival:g} h (shrinking-horizon NMPC on the estimate):")
            echo("  " + str(rec).replace("\n", "\n  "))
    est = twin.estimate()
    data = plant.data
    batch_est = ekf.filter(data, t0=0.0, smooth=True).data
    save(batch_est, out / "estimate.nc")
    _plot_estimate(plant, batch_est, truth_model, out / "estimate.png")
    result = {
        "mu_max_true": truth_model.mu_max, "mu_max_est": est["mu_max"][0],
        "mu_max_std": est["mu_max"][1], "X_est": est["X"][0],
        "X_true": float(plant.truth["X"].values[-1]), "samples": len(steps),
        "refiltered": twin.refiltered, "step_us": float(np.median(steps[10:]) * 1e6),
        "recommendation": str(rec) if rec is not None else "",
    }
    echo(f"live twin: mu_max {result['mu_max_est']:.4f} ± {result['mu_max_std']:.4f} 1/h "
         f"(plant truth {result['mu_max_true']:.4f}, nominal {model.mu_max:.4f}); "
         f"X {result['X_est']:.3f} g/L (truth {result['X_true']:.3f}); "
         f"{result['samples']} samples, {result['refiltered']} re-filtered for late lab "
         f"assays, median step {result['step_us']:.0f} µs")
    return result


def _plot_estimate(plant: Any, est: Any, truth_model: Bioreactor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = est["time"].values
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    for ax, name in zip(axes.flat, ["X", "S", "P", "mu_max"], strict=True):
        m, sd = est[name].values, est[f"{name}_std"].values
        ax.fill_between(t, m - 2 * sd, m + 2 * sd, alpha=0.3, label="EKF ±2σ")
        ax.plot(t, m, lw=1, label="EKF (live)")
        ax.plot(t, est[f"{name}_smooth"].values, lw=1, ls=":", label="RTS smoother")
        if name == "mu_max":
            ax.axhline(truth_model.mu_max, color="k", ls="--", lw=1, label="plant truth")
        else:
            ax.plot(plant.truth["time"], plant.truth[name], "k--", lw=1, label="plant truth")
            if name in plant.data:
                ax.plot(t, plant.data[name].values, "r.", ms=4, label="lab assay")
        ax.set_ylabel(f"{name} [{est[name].attrs['units']}]")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("time [h]")
    axes[1, 1].legend(fontsize=8)
    fig.suptitle("Live twin: EKF tracks the plant and its growth rate from noisy, late data")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot(batch: Any, ens: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = batch.t
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    for ax, (name, units) in zip(axes.flat, [("X", "g/L"), ("S", "g/L"), ("P", "g/L"),
                                             ("OUR", "g/(L h)")], strict=True):
        e = ens[name] if name != "OUR" else ens["out:OUR"]
        lo, mid, hi = np.percentile(e, [10, 50, 90], axis=0)
        ax.fill_between(t, lo, hi, alpha=0.3, label="ensemble P10–P90")
        ax.plot(t, mid, lw=1, label="ensemble median")
        ax.plot(t, batch[name] if name != "OUR" else batch["out:OUR"], "k--", lw=1,
                label="nominal")
        ax.set_ylabel(f"{name} [{units}]")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("time [h]")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Fed-batch bioreactor: nominal batch and parametric-uncertainty ensemble")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
