"""The embedded default job behind ``processtwin demo`` / ``make demo``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .io import save
from .models import Bioreactor
from .plant import simulated_plant
from .signals import hold
from .simulate import ensemble, simulate

__all__ = ["run_demo"]

#: A plausible operator recipe: batch phase, then stepped feed [L/h] (Bajpai–Reuss scale).
FEED_TIMES = (0.0, 10.0, 40.0, 90.0)
FEED_VALUES = (0.0, 0.02, 0.04, 0.03)


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
        "## Live twin: simulated plant → validation → EKF → NMPC → historian",
        "",
        f"The twin runtime (`processtwin.twin.Twin`) against the embedded simulated plant: "
        f"true μmax {live['mu_max_true']:.4f} 1/h (the model's nominal value is "
        f"{model.mu_max:.4f}); volume and OUR every 15 min, lab assays every 4 h, 2 h late "
        "(re-filtered at their sampling time); sensor faults injected mid-batch: "
        + "; ".join(f"{f['kind']} on {f['channel']} at {f['at']:g} h" for f in FAULTS)
        + ". Everything is in the historian `twin.h5` (`processtwin.twin.read_historian`); "
        "`twin.ckpt` continues the twin.",
        "",
        "| quantity | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in live["table"]],
        "",
        "![estimation](estimate.png)",
        "",
        "## Last recommendation",
        "",
        "```",
        live["recommendation"],
        "```",
        "",
        "Files: `batch.nc`, `ensemble.nc`, `estimate.nc` (netCDF-4/HDF5, open with "
        "`xarray.open_dataset`), `twin.h5` (the historian), `twin.ckpt` (checkpoint).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    echo(f"nominal batch: final product {headline['P_final_nominal']:.3f} g/L, biomass "
         f"{headline['X_final_nominal']:.3f} g/L, volume {headline['V_final']:.1f} L "
         f"({headline['batch_ms']:.1f} ms)")
    echo(f"ensemble of {members}: final product P10/P50/P90 = {q[0]:.3f} / {q[1]:.3f} / "
         f"{q[2]:.3f} g/L ({headline['ensemble_s']:.2f} s)")
    echo(f"report: {out / 'report.md'}  plot: {out / 'demo.png'}")
    return headline


#: Sensor faults the demo plant suffers mid-batch [h]: a spike and a stuck OUR probe, a
#: garbled volume reading and a volume sample stamped a day late (clock jump).
FAULTS = ({"kind": "spike", "channel": "OUR", "at": 75.0, "size": 4.0},
          {"kind": "stuck", "channel": "OUR", "at": 100.0, "duration": 6.0},
          {"kind": "malformed", "channel": "V", "at": 50.0},
          {"kind": "clock_jump", "channel": "V", "at": 120.0, "jump": 24.0})
#: Model time between NMPC recommendations [h].
CADENCE = 30.0


def _live_twin(model: Bioreactor, feed: Any, out: Path, echo: Callable[[str], Any]
               ) -> dict[str, Any]:
    """Run the twin runtime against the embedded simulated plant (true μmax 20 % above
    nominal, faults injected mid-batch): validation, EKF, NMPC every ``CADENCE`` hours and
    the historian, as fast as the machine allows."""
    from .twin import Twin, read_historian
    from .twin.config import _nmpc
    from .twin.sources import inject_faults, plant_batches

    truth_model = model.replace(mu_max=1.2 * model.mu_max)
    plant = simulated_plant(truth_model, inputs={"F": feed}, until=150.0, dt=0.25,
                            lab_every=4.0, lab_delay=2.0, seed=1)
    recipe = {float(t): {"F": float(v)} for t, v in zip(feed.times, feed.values,
                                                         strict=True)}
    hist = out / "twin.h5"
    hist.unlink(missing_ok=True)     # the demo starts a fresh record every run
    optimiser = _nmpc(model, {"batch_end": 150.0, "interval": 3.0}, list(model.states()))
    twin = Twin(model, estimate=("mu_max",), filter_options={"q": {"mu_max": (2e-4) ** 2}},
                inputs={"F": recipe[0.0]["F"]}, historian=hist, max_future=10.0,
                optimiser=optimiser, cadence=CADENCE, threaded=False)
    steps, alarms = [], []
    t0 = time.perf_counter()
    for batch in inject_faults(plant_batches(plant, inputs=recipe), FAULTS):
        t_step = time.perf_counter()
        res = twin.advance(batch)
        steps.append(time.perf_counter() - t_step)
        if res["flags"]:
            alarms.append((res["t"], res["flags"]))
    wall = time.perf_counter() - t0
    twin.checkpoint(out / "twin.ckpt")
    twin.close()
    h = read_historian(hist)
    est = twin.filter.estimate()
    c = twin.validator.counters
    recs = h["recommendations"]
    flags = {k: n for k, n in twin.counters.flags.items() if n}
    rec = twin.recommendation.value if twin.recommendation is not None else None
    h["estimates"].to_netcdf(out / "estimate.nc")
    _plot_estimate(plant, h, truth_model, alarms, out / "estimate.png")
    result = {
        "mu_max_true": truth_model.mu_max, "mu_max_est": est["mu_max"][0],
        "mu_max_std": est["mu_max"][1], "X_est": est["X"][0],
        "X_true": float(plant.truth["X"].values[-1]), "received": c["received"],
        "accepted": c["accepted"], "quarantined": c["quarantined"],
        "by_reason": {k: n for k, n in c["by_reason"].items() if n}, "flags": flags,
        "first_alarm": alarms[0] if alarms else None, "recommendations": len(recs),
        "batches": twin.next_batch, "step_us": float(np.median(steps) * 1e6),
        "twin_s": wall, "historian_kB": hist.stat().st_size / 1e3,
        "recommendation": str(rec) if rec is not None else "",
        "refiltered": twin.filter.refiltered,
    }
    rows = [("samples received / accepted / quarantined",
             f"{c['received']} / {c['accepted']} / {c['quarantined']} ("
             + ", ".join(f"{k} {n}" for k, n in result["by_reason"].items()) + ")"),
            ("alarms raised", ", ".join(f"{k} {n}" for k, n in flags.items()) or "none"),
            ("first alarm", f"t = {alarms[0][0]:g} h: {', '.join(alarms[0][1])}"
             if alarms else "none"),
            ("mu_max estimate (truth, nominal)",
             f"{est['mu_max'][0]:.4f} ± {est['mu_max'][1]:.4f} 1/h "
             f"({truth_model.mu_max:.4f}, {model.mu_max:.4f})"),
            ("X at 150 h, estimate vs truth", f"{est['X'][0]:.3f} vs {result['X_true']:.3f} "
             "g/L"),
            ("NMPC recommendations", f"{len(recs)} (every {CADENCE:g} h)"),
            ("historian", f"{hist.name}, {result['historian_kB']:.0f} kB, "
             f"{twin.next_batch} batches"),
            ("wall time / median batch", f"{wall:.1f} s / {result['step_us']:.0f} µs")]
    width = max(len(k) for k, _ in rows)
    echo("live twin (runtime: simulated plant → validation → EKF → NMPC → historian):")
    for k, v in rows:
        echo(f"  {k.ljust(width)}  {v}")
    if rec is not None:
        echo(f"last recommendation (t = {twin.recommendation.t:g} h):")
        echo("  " + str(rec).replace("\n", "\n  "))
    result["table"] = rows
    return result


def _plot_estimate(plant: Any, h: dict, truth_model: Bioreactor, alarms: list,
                   path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est = h["estimates"]
    t = est["time"].values
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    for ax, name in zip(axes.flat, ["X", "S", "P", "mu_max"], strict=True):
        m, sd = est[name].values, est[f"sd_{name}"].values
        ax.fill_between(t, m - 2 * sd, m + 2 * sd, alpha=0.3, label="twin ±2σ")
        ax.plot(t, m, lw=1, label="twin (live EKF)")
        if name == "mu_max":
            ax.axhline(truth_model.mu_max, color="k", ls="--", lw=1, label="plant truth")
        else:
            ax.plot(plant.truth["time"], plant.truth[name], "k--", lw=1, label="plant truth")
            if name in h["samples"]:
                ax.plot(h["samples"]["time"], h["samples"][name], "r.", ms=4,
                        label="lab assay")
        for ta, _ in alarms[:1]:
            ax.axvline(ta, color="tab:red", lw=0.8, ls=":", label="first alarm")
        units = (truth_model.states()[name].units if name in truth_model.states()
                 else type(truth_model).parameters()[name].units)
        ax.set_ylabel(f"{name} [{units}]")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("time [h]")
    axes[1, 1].legend(fontsize=8)
    fig.suptitle("Live twin: the runtime tracks the plant and its growth rate through "
                 "sensor faults")
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
