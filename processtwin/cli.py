"""The ``processtwin`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["main"]


def _configure() -> None:
    # Entry points, not imports, set up JAX (the library never changes it on import).
    from .runtime import configure

    configure()


def _get_model(name: str) -> Any:
    from .errors import ConfigError, suggest
    from .models import REGISTRY

    if name not in REGISTRY:
        raise ConfigError(f"unknown model `{name}`" + suggest(name, REGISTRY))
    return REGISTRY[name]


def _parse_assignments(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=what)
        out[name.strip()] = value.strip()
    return out


def _number(text: str, name: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"`{name}`: expected a number, got {text!r}",
                                 param_hint=what) from None


def _parse_input(name: str, text: str) -> Any:
    """``0.01`` (constant) or ``0:0.0,20:0.01,80:0.02`` (piecewise-constant schedule)."""
    from .signals import hold

    if ":" not in text:
        return _number(text, name, "--input")
    times, values = [], []
    for part in text.split(","):
        t, _, v = part.partition(":")
        times.append(_number(t, name, "--input"))
        values.append(_number(v, name, "--input"))
    return hold(times, values)


class _Group(click.Group):
    """Turn the library's domain errors into clean command-line errors (exit code 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        from .errors import ConfigError, DataError, ModelError, SolverError

        try:
            return super().invoke(ctx)
        except (ConfigError, DataError, ModelError) as exc:
            raise click.UsageError(str(exc), ctx) from None
        except SolverError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(package_name="processtwin")
def main() -> None:
    """processtwin: physics-based process digital twins."""
    _configure()


@main.command("models")
def models_cmd() -> None:
    """List models with their states, inputs, outputs and parameters (with units)."""
    from .models import REGISTRY

    for name, cls in REGISTRY.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        click.secho(f"{name}", bold=True, nl=False)
        click.echo(f"  — {doc}  (time unit: {cls.time_unit})")
        for title, specs in (("states", cls.states()), ("inputs", cls.inputs()),
                             ("outputs", cls.outputs())):
            click.echo(f"  {title}:")
            for k, v in specs.items():
                extra = "" if v.kind == "state" else f" [{v.kind}]"
                default = f" default {v.default:g}" if title != "outputs" else (
                    f" noise σ {v.noise:g}")
                click.echo(f"    {k:<8} {v.units:<10} {v.doc}{extra};{default}")
        click.echo("  parameters:")
        for k, p in cls.parameters().items():
            lo, hi = p.bounds
            rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            click.echo(f"    {k:<8} {p.default:<10g} {p.units:<10} {rng:<14} {p.doc}")


@main.command("simulate")
@click.argument("model")
@click.option("--until", type=float, required=True, help="End time [model time unit, h].")
@click.option("--every", type=float, default=1.0, show_default=True,
              help="Output interval [model time unit].")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="Input: a constant or a hold schedule T:V,T:V,...")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Parameter value.")
@click.option("--x0", "x0", multiple=True, metavar="NAME=VALUE", help="Initial state value.")
@click.option("--solver", default="tsit5", show_default=True,
              type=click.Choice(["tsit5", "dopri5", "dopri8", "kvaerno5"]))
@click.option("--rtol", type=float, default=1e-8, show_default=True)
@click.option("--atol", type=float, default=1e-10, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the Dataset to this netCDF/HDF5 file.")
def simulate_cmd(model: str, until: float, every: float, inputs: tuple[str, ...],
                 params: tuple[str, ...], x0: tuple[str, ...], solver: str, rtol: float,
                 atol: float, out: Path | None) -> None:
    """Simulate MODEL from t=0 to --until and print a summary."""
    import numpy as np

    from .io import save
    from .simulate import simulate

    cls = _get_model(model)
    if not until > 0 or not every > 0:
        raise click.BadParameter("--until and --every must be positive")
    t = np.arange(0.0, until + 1e-9 * until, every)
    if t[-1] < until:
        t = np.append(t, until)
    p = {k: _number(v, k, "--param") for k, v in _parse_assignments(params, "--param").items()}
    u = {k: _parse_input(k, v) for k, v in _parse_assignments(inputs, "--input").items()}
    x = {k: _number(v, k, "--x0") for k, v in _parse_assignments(x0, "--x0").items()}
    res = simulate(cls(), x, u, t, params=p, solver=solver, rtol=rtol, atol=atol)
    click.echo(f"{cls.name}: t = 0 … {until:g} {cls.time_unit}, {res.stats['num_steps']} steps "
               f"({solver}, rtol {rtol:g}), {res.stats['wall_time_s'] * 1e3:.1f} ms")
    for k, spec in cls.states().items():
        v = res[k]
        click.echo(f"  {k:<6} {v[0]:>12.5g} → {v[-1]:>12.5g} {spec.units:<8} {spec.doc}")
    if out is not None:
        save(res, out)
        click.echo(f"wrote {out}")


@main.command("estimate")
@click.argument("model")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Plant data: .nc/.h5 or CSV with a `time` column.")
@click.option("--estimate-param", "estimate", multiple=True, metavar="NAME",
              help="Parameter to track as a random walk (repeatable).")
@click.option("--channel", "channels", multiple=True, metavar="NAME",
              help="Output to use (repeatable; default: those in the data).")
@click.option("--x0", "x0", multiple=True, metavar="NAME=VALUE", help="Initial estimate.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Nominal parameter value.")
@click.option("--smooth/--no-smooth", default=False, show_default=True,
              help="Also compute RTS-smoothed estimates.")
@click.option("--method", default="ekf", show_default=True, type=click.Choice(["ekf", "ukf"]),
              help="Extended or unscented Kalman filter.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the estimate Dataset here.")
def estimate_cmd(model: str, data_path: Path, estimate: tuple[str, ...],
                 channels: tuple[str, ...], x0: tuple[str, ...], params: tuple[str, ...],
                 smooth: bool, method: str, out: Path | None) -> None:
    """Estimate states (and parameters) of MODEL from plant data (EKF or UKF)."""
    import numpy as np

    from .estimate import ExtendedKalmanFilter, UnscentedKalmanFilter
    from .io import read_measurements, save

    cls = _get_model(model)
    p = {k: _number(v, k, "--param") for k, v in _parse_assignments(params, "--param").items()}
    x = {k: _number(v, k, "--x0") for k, v in _parse_assignments(x0, "--x0").items()}
    data = read_measurements(data_path)
    if not channels:
        channels = tuple(c for c in cls.outputs() if c in data.data_vars)
    kind = UnscentedKalmanFilter if method == "ukf" else ExtendedKalmanFilter
    ekf = kind(cls().replace(**p), estimate=estimate, channels=channels)
    est = ekf.filter(data, x0=x, smooth=smooth)
    t = est["time"].values
    click.echo(f"{cls.name}: {t.size} samples, t = {t[0]:g} … {t[-1]:g} {cls.time_unit}, "
               f"channels {', '.join(channels)}; {est.attrs['rejected_samples']} rejected")
    for name in ekf.names:
        units = est[name].attrs["units"]
        click.echo(f"  {name:<8} {est[name].values[-1]:>12.5g} ± "
                   f"{est[f'{name}_std'].values[-1]:<10.3g} {units}")
    nis = float(np.nansum(est["nis"])) / max(int(est["nis_dof"].sum()), 1)
    click.echo(f"  NIS per degree of freedom: {nis:.2f} (1 when the filter is consistent)")
    for c in channels:
        flags = est[f"{c}_flag"].values
        if flags.any():
            click.echo(f"  {c}: flagged at {int((flags > 0).sum())} samples, first at "
                       f"t={t[np.argmax(flags > 0)]:g}")
    if out is not None:
        save(est, out)
        click.echo(f"wrote {out}")


@main.command("optimise")
@click.argument("model")
@click.option("--until", type=float, default=150.0, show_default=True,
              help="Batch length [model time unit].")
@click.option("--intervals", type=int, default=50, show_default=True,
              help="Control intervals (feed constant on each).")
@click.option("--objective", default="product", show_default=True,
              type=click.Choice(["product", "product_mass"]))
@click.option("--f-max", "f_max", type=float, default=0.2, show_default=True,
              help="Pump capacity [L/h].")
@click.option("--x-max", "x_max", type=float, default=3.7, show_default=True,
              help="Biomass limit [g/L].")
@click.option("--v-max", "v_max", type=float, default=None, help="Final volume limit [L].")
@click.option("--method", default="collocation", show_default=True,
              type=click.Choice(["collocation", "shooting"]))
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Parameter value.")
@click.option("--x0", "x0", multiple=True, metavar="NAME=VALUE", help="Initial state value.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the plan Dataset here.")
def optimise_cmd(model: str, until: float, intervals: int, objective: str, f_max: float,
                 x_max: float, v_max: float | None, method: str, params: tuple[str, ...],
                 x0: tuple[str, ...], out: Path | None) -> None:
    """Optimise the feed recipe of a whole batch of MODEL (golden batch)."""
    from .io import save
    from .solvers import golden_batch, outcome_value

    cls = _get_model(model)
    p = {k: _number(v, k, "--param") for k, v in _parse_assignments(params, "--param").items()}
    x = {k: _number(v, k, "--x0") for k, v in _parse_assignments(x0, "--x0").items()}
    res = golden_batch(cls().replace(**p), until=until, intervals=intervals,
                       objective=objective, x0=x, F_max=f_max, X_max=x_max, V_max=v_max,
                       method=method)
    plan = res.plan
    click.echo(f"{cls.name}: {res.status} in {res.stats['iterations']} iterations "
               f"({res.stats['wall_time_s']:.2f} s, {method})")
    click.echo(f"  {plan.attrs['objective_doc']}: {outcome_value(objective, plan):.5g}")
    F = plan["F"].values
    click.echo(f"  feed F [L/h]: first {F[0]:.4g}, max {F.max():.4g}, last {F[-2]:.4g}; "
               f"fed volume {float((F[:-1] * (until / intervals)).sum()):.3g} L")
    if res.active:
        shown = ", ".join(dict.fromkeys(a.split(" at ")[0] for a in res.active))
        click.echo(f"  active constraints: {shown}")
    if out is not None:
        save(plan, out)
        click.echo(f"wrote {out}")


@main.command("recommend")
@click.argument("model")
@click.option("--state", "state_path", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path), required=True,
              help="Estimate file written by `processtwin estimate` (latest time is used).")
@click.option("--horizon", type=float, default=20.0, show_default=True,
              help="Prediction horizon [model time unit].")
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="Control interval [model time unit].")
@click.option("--objective", default="product", show_default=True,
              type=click.Choice(["product", "product_mass"]))
@click.option("--feed", type=float, default=0.0, show_default=True,
              help="Feed being applied now [L/h].")
@click.option("--f-max", "f_max", type=float, default=0.2, show_default=True,
              help="Pump capacity [L/h].")
@click.option("--x-max", "x_max", type=float, default=3.7, show_default=True,
              help="Biomass limit [g/L].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the planned trajectory here.")
def recommend_cmd(model: str, state_path: Path, horizon: float, interval: float,
                  objective: str, feed: float, f_max: float, x_max: float,
                  out: Path | None) -> None:
    """Recommend MODEL's next setpoints from the latest estimate (NMPC over --horizon)."""
    from .io import load, save
    from .solvers import BatchNMPC

    cls = _get_model(model)
    est = load(state_path)
    missing = [s for s in cls.states() if s not in est]
    if missing:
        raise click.UsageError(f"{state_path}: no estimate of state(s) "
                               f"{', '.join(missing)}; write it with `processtwin estimate`.")
    last = est.isel(time=-1)
    t_now = float(last["time"])
    x = {s: float(last[s]) for s in cls.states()}
    params = {p: float(last[p]) for p in est.attrs.get("estimated_parameters", "").split()}
    nmpc = BatchNMPC(cls(), batch_end=t_now + horizon, interval=interval, objective=objective,
                     F_max=f_max, X_max=x_max)
    rec = nmpc.recommend(t_now, x, params=params, u_now=feed)
    click.echo(str(rec))
    if rec.plan is not None and out is not None:
        save(rec.plan, out)
        click.echo(f"wrote {out}")


@main.command("demo")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default="report",
              show_default=True)
@click.option("--members", type=int, default=1000, show_default=True,
              help="Ensemble size (parametric uncertainty).")
@click.option("--seed", type=int, default=0, show_default=True)
def demo_cmd(out_dir: Path, members: int, seed: int) -> None:
    """Run the embedded default: a fed-batch batch and an uncertainty ensemble."""
    from .demo import run_demo

    run_demo(out_dir, members=members, seed=seed, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
