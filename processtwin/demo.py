"""The embedded default job behind ``processtwin demo`` / ``make demo``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .io import save
from .models import Bioreactor
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
