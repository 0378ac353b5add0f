"""The ``processtwin`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from .cli_values import (
    label,
    number,
    out_path,
    parse_assignments,
    parse_inputs,
    parse_params,
    parse_x0,
    summary,
)

__all__ = ["main"]


def _configure() -> None:
    # Entry points, not imports, set up JAX (the library never changes it on import).
    from .runtime import configure

    configure()


def _model_spec(positional: str | None, option: str | None) -> str:
    if positional and option and positional != option:
        raise click.UsageError(f"MODEL given twice: {positional!r} and --model {option!r}.")
    spec = option or positional
    if not spec:
        raise click.UsageError("missing MODEL: a name (see `processtwin models`), "
                               "`path/to/plant.py:Name` or `package.module:Name`.")
    return spec


def _model_argument(f: Any) -> Any:
    """MODEL, positional or as ``--model SPEC``: a name, ``plant.py:Name`` or ``module:Name``."""
    f = click.option("--model", "model_opt", metavar="SPEC", default=None,
                     help="The model, instead of MODEL: a name, path/to/plant.py:Name or "
                          "package.module:Name.")(f)
    return click.argument("model", required=False, metavar="[MODEL]")(f)


def _load(positional: str | None, option: str | None) -> Any:
    from .registry import load_model

    return load_model(_model_spec(positional, option))


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
@_model_argument
def models_cmd(model: str | None, model_opt: str | None) -> None:
    """List the models (built-in and installed) or describe MODEL: states, inputs, outputs
    (vectors with their dimension, `T[cell: 50]`) and parameters with units and bounds."""
    from .errors import ConfigError
    from .registry import EntryPointModel, available_models, load_model

    spec = _model_spec(model, model_opt) if (model or model_opt) else None
    known = available_models()
    if spec is not None and spec not in known:  # a file or a module
        instance = load_model(spec)
        _describe(instance, type(instance), f"from {spec}")
        return
    for name, factory in known.items():
        if spec is not None and name != spec:
            continue
        plugin = isinstance(factory, EntryPointModel)
        source = factory.source if plugin else "built-in"
        try:
            instance = factory()
        except ConfigError as exc:  # a broken plugin is listed, not fatal
            if spec is not None:
                raise
            click.secho(name, bold=True, nl=False)
            click.echo(f"  — could not be loaded ({source}): {exc}")
            continue
        _describe(instance, factory.target if plugin else factory, source, name)


def _describe(model: Any, origin: Any, source: str, name: str | None = None) -> None:
    """Print ``model``; the first line of ``origin``'s docstring (its class or factory)."""
    import inspect

    from .model import Model

    origin = type(origin) if isinstance(origin, Model) else origin
    doc = inspect.cleandoc(origin.__doc__ or "")
    if isinstance(origin, type) and doc.startswith(f"{origin.__name__}("):
        doc = ""  # the signature dataclasses write for a class without a docstring
    clock = f"time unit: {model.time_unit}" + (
        f", sample time {model.sample_time:g}" if model.is_discrete else "")
    click.secho(name or model.name, bold=True, nl=False)
    click.echo(f"  — {doc.splitlines()[0]}" if doc else "", nl=False)
    click.echo(f"  ({clock}{'; ' + source if source else ''})")
    lay = model.layout
    if lay.dims:
        click.echo("  dimensions: " + ", ".join(f"{d} = {n}" for d, n in lay.dims.items()))
    for title, group in (("states", lay.states), ("inputs", lay.inputs),
                         ("outputs", lay.outputs), ("ports", lay.ports)):
        if not group.leaves and title == "ports":
            continue
        click.echo(f"  {title}:" + ("" if group.leaves else " none"))
        width = max((len(label(lf)) for lf in group.leaves), default=0)
        for lf in group.leaves:
            v = lf.var
            kind = "" if v.kind in ("state", "port") else f" [{v.kind}]"
            extra = {"outputs": f"; noise σ {v.noise:g}", "ports": ""}.get(
                title, f"; default {summary(v.default)}")
            click.echo(f"    {label(lf):<{width}}  {v.units:<10} {v.doc}{kind}{extra}")
    params = model.parameters()
    click.echo("  parameters:" + ("" if params else " none"))
    width = max((len(k) for k in params), default=0)
    for k, p in params.items():
        lo, hi = p.bounds
        op = ("(", ")") if p.strict else ("[", "]")
        rng = (f"{op[0]}{'-inf' if lo is None else f'{lo:g}'}, "
               f"{'inf' if hi is None else f'{hi:g}'}{op[1]}")
        click.echo(f"    {k:<{width}}  {summary(model.get(k)):<10} {p.units:<10} {rng:<14} "
                   f"{p.doc}")
    objectives, limits = type(model).objectives, type(model).limits
    if objectives:
        click.echo("  objectives (optimise --objective NAME):")
        width = max(len(k) for k in objectives)
        for k, o in objectives.items():
            click.echo(f"    {k:<{width}}  {o.sense} {o.doc} [{o.units}]"
                       + (" (free final time)" if o.free_time else ""))
    if limits:
        click.echo("  operating limits (change with --limit):")
        width = max(len(k) for k in limits)
        for k, lim in limits.items():
            lo, hi = lim.values(model)
            rng = (f"{'-inf' if lo is None else f'{lo:g}'} … {'inf' if hi is None else f'{hi:g}'}")
            click.echo(f"    {k:<{width}}  {rng:<14} {lim.doc}"
                       + (" (at the end)" if lim.terminal else ""))


@main.command("simulate")
@_model_argument
@click.option("--until", type=float, required=True, help="End time [model time unit].")
@click.option("--every", type=float, default=1.0, show_default=True,
              help="Output interval [model time unit].")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="Input: a constant (`1.5`; a vector `1,2,3` or one value for all), or a "
                   "hold schedule T:V,T:V,...")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Parameter value (dotted names inside a system: reactor.mu_max=0.03).")
@click.option("--x0", "x0", multiple=True, metavar="NAME=VALUE",
              help="Initial state (a vector: `T=20` for every element or `T=20,21,22`).")
@click.option("--solver", default="tsit5", show_default=True,
              type=click.Choice(["tsit5", "dopri5", "dopri8", "kvaerno5", "rodas"]))
@click.option("--rtol", type=float, default=1e-8, show_default=True)
@click.option("--atol", type=float, default=1e-10, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=out_path,
              help="Write the Dataset to this netCDF/HDF5 file.")
def simulate_cmd(model: str | None, model_opt: str | None, until: float, every: float,
                 inputs: tuple[str, ...], params: tuple[str, ...], x0: tuple[str, ...],
                 solver: str, rtol: float, atol: float, out: Path | None) -> None:
    """Simulate MODEL from t=0 to --until and print a summary.

    MODEL is a name (see `processtwin models`), path/to/plant.py:Name or
    package.module:Name."""

    from .io import save
    from .simulate import simulate

    m = _load(model, model_opt)
    if not until > 0 or not every > 0:
        raise click.BadParameter("--until and --every must be positive")
    t = np.arange(0.0, until + 1e-9 * until, every)
    if t[-1] < until:
        t = np.append(t, until)
    p = parse_params(m, params)
    m = m.replace(**p) if p else m
    u = parse_inputs(m, inputs)
    x = parse_x0(m, x0)
    res = simulate(m, x, u, t, solver=solver, rtol=rtol, atol=atol)
    click.echo(f"{m.name}: t = 0 … {until:g} {m.time_unit}, {res.stats['num_steps']} steps "
               f"({solver}, rtol {rtol:g}), {res.stats['wall_time_s'] * 1e3:.1f} ms")
    leaves = m.layout.states.leaves
    width = max(len(label(lf)) for lf in leaves)
    for lf in leaves:
        v = np.asarray(res[lf.name])
        if not lf.shape:
            click.echo(f"  {lf.name:<{width}} {v[0]:>12.6g} → {v[-1]:>12.6g} "
                       f"{lf.var.units:<8} {lf.var.doc}")
        else:  # a profile: its summary at the start and the end
            click.echo(f"  {label(lf):<{width}} {lf.var.units} {lf.var.doc}")
            click.echo(f"  {'':<{width}}   t = {t[0]:g}: {summary(v[0])}")
            click.echo(f"  {'':<{width}}   t = {t[-1]:g}: {summary(v[-1])}")
    if out is not None:
        save(res, out)
        click.echo(f"wrote {out}")


@main.command("estimate")
@_model_argument
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Plant data: .nc/.h5 or CSV with a `time` column.")
@click.option("--estimate-param", "estimate", multiple=True, metavar="NAME",
              help="Parameter to track as a random walk (repeatable).")
@click.option("--channel", "channels", multiple=True, metavar="NAME",
              help="Output to use (repeatable; default: those in the data).")
@click.option("--x0", "x0", multiple=True, metavar="NAME=VALUE",
              help="Initial estimate (a vector: one value for all elements or `1,2,3`).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Nominal parameter value.")
@click.option("--smooth/--no-smooth", default=False, show_default=True,
              help="Also compute RTS-smoothed estimates.")
@click.option("--method", default="ekf", show_default=True,
              type=click.Choice(["ekf", "ukf", "mhe"]),
              help="Extended or unscented Kalman filter, or moving-horizon estimation.")
@click.option("--window", default=20, show_default=True, type=click.IntRange(min=1),
              help="MHE: samples in the estimation window.")
@click.option("--time-column", default="time", show_default=True,
              help="Name of the time column (CSV) or variable (netCDF).")
@click.option("--inputs-apply", default="next", show_default=True,
              type=click.Choice(["next", "previous"]),
              help="Input records hold from their stamp on (next), or acted over the "
                   "interval ending at their stamp (previous).")
@click.option("--noise", "noise", multiple=True, metavar="CHANNEL=SIGMA",
              help="Measurement noise standard deviation of a channel [channel units].")
@click.option("--gate", "gates", multiple=True, metavar="CHANNEL=NIS",
              help="Gate of a channel (NIS threshold; inf: never gated).")
@click.option("--observability/--no-observability", default=True, show_default=True,
              help="Check first which states the channels can determine.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=out_path,
              help="Write the estimate Dataset here.")
def estimate_cmd(model: str | None, model_opt: str | None, data_path: Path,
                 estimate: tuple[str, ...], channels: tuple[str, ...], x0: tuple[str, ...],
                 params: tuple[str, ...], smooth: bool, method: str, window: int,
                 time_column: str,
                 inputs_apply: str, noise: tuple[str, ...], gates: tuple[str, ...],
                 observability: bool, out: Path | None) -> None:
    """Estimate states (and parameters) of MODEL from plant data (EKF, UKF or MHE)."""

    from .estimate import ExtendedKalmanFilter, UnscentedKalmanFilter
    from .io import read_measurements, save

    m = _load(model, model_opt)
    p = parse_params(m, params)
    m = m.replace(**p) if p else m
    x = parse_x0(m, x0)
    data = read_measurements(data_path, time=time_column)
    if not channels:
        channels = tuple(c for c in m.layout.outputs.names if c in data.data_vars)
        if not channels:
            raise click.UsageError(
                f"{data_path} has none of the outputs of `{m.name}` "
                f"({', '.join(m.layout.outputs.names) or 'none declared'}); name the data "
                "variables after them, or pick them with --channel.")
    if smooth and method == "mhe":
        raise click.UsageError("--smooth is for the Kalman filters; the MHE window is its own "
                               "smoother (use --method ekf or ukf).")
    r = {k: number(v, k, "--noise") for k, v in parse_assignments(noise, "--noise").items()}
    gate = {k: number(v, k, "--gate") for k, v in parse_assignments(gates, "--gate").items()}
    options = {"estimate": estimate, "channels": channels, "r": r or None,
               "gate": gate or 15.13}
    if method == "mhe":
        from .solvers import MovingHorizonEstimator

        ekf = MovingHorizonEstimator(m, window=window, **options)
    else:
        kind = UnscentedKalmanFilter if method == "ukf" else ExtendedKalmanFilter
        ekf = kind(m, **options)
    if observability:
        times = np.unique(np.asarray(data["time"].values, dtype=float)) if np.issubdtype(
            np.asarray(data["time"].values).dtype, np.number) else None
        if times is not None and times.size > 1:
            rep = ekf.observability(x, None, dt=float(np.median(np.diff(times))),
                                    samples=int(min(times.size, 50)))
            if rep.unobservable or rep.weak:
                click.echo(str(rep))
    result = ekf.filter(data, x0=x, smooth=smooth, inputs_apply=inputs_apply)
    est = result.data
    t = est["time"].values
    click.echo(f"{m.name}: {t.size} samples, t = {t[0]:g} … {t[-1]:g} {m.time_unit}, "
               f"channels {', '.join(channels)}; {est.attrs['rejected_samples']} rejected")
    if method == "mhe":
        st = result.stats
        outcomes = ", ".join(f"{n} {k}" for k, n in st["solver_status"].items())
        click.echo(f"  MHE window {st['window']}: {st['step_time_s'] * 1e3:.2f} ms per "
                   f"sample (median), {outcomes}"
                   + (f"; {st['fallback_steps']} samples kept the EKF's estimate"
                      if st["fallback_steps"] else ""))
    states = m.layout.states
    width = max(len(label(states.leaf(n)) if n in states else n) for n in ekf.names)
    for name in ekf.names:
        units = est[name].attrs["units"]
        value, std = est[name].values[-1], est[f"{name}_std"].values[-1]
        if np.ndim(value) == 0:
            click.echo(f"  {name:<{width}} {value:>12.5g} ± {std:<10.3g} {units}")
        else:  # a profile: summary of the final estimate and its largest uncertainty
            shown = label(states.leaf(name)) if name in states else name
            click.echo(f"  {shown:<{width}} {summary(value)} {units}; "
                       f"σ up to {np.max(std):.3g}")
    nis = float(np.nansum(est["nis"])) / max(int(est["nis_dof"].sum()), 1)
    click.echo(f"  NIS per degree of freedom: {nis:.2f} (1 when the filter is consistent)")
    if est.attrs.get("divergence"):
        click.secho(f"  DIVERGENCE {est.attrs['divergence']}", fg="red")
    for c in channels:
        flags = np.asarray(est[f"{c}_flag"].values)
        hit = (flags > 0).reshape(flags.shape[0], -1).any(axis=1)  # any element of a vector
        if hit.any():
            click.echo(f"  {c}: flagged at {int(hit.sum())} samples, first at "
                       f"t={t[np.argmax(hit)]:g}")
    if out is not None:
        save(est, out)
        click.echo(f"wrote {out}")


def _limits(items: tuple[str, ...]) -> dict[str, Any]:
    from .goals import parse_limit

    out: dict[str, Any] = {}
    for text in items:
        if text.endswith("=none"):  # drop a declared limit
            out[text.removesuffix("=none")] = None
            continue
        name, lim = parse_limit(text)
        out[name] = lim
    return out


def _free_time(text: str | None, unit: str) -> tuple[float, float] | None:
    from .errors import ConfigError

    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--free-time must be LOW:HIGH [{unit}], got {text!r}.") from None
    return lo, hi


def _objective_options(f: Any) -> Any:
    f = click.option("--objective", default=None,
                     help="A name the model declares (see `processtwin models MODEL`) or an "
                          "expression: 'max P*V', 'min integral(F)'. Default: the model's "
                          "first.")(f)
    f = click.option("--limit", "limits", multiple=True, metavar="LIMIT",
                     help="An operating limit, adding to or replacing the model's: "
                          "'X<=3.7', '0<=F<=0.1', 'V<=150 at end', 'OUR<=OTR_max'; "
                          "'NAME=none' drops one.")(f)
    return click.option("--du-weight", "du_weight", type=float, default=None,
                        help="Weight of squared control moves [objective units per (input "
                             "units)^2]; default the objective's.")(f)


def _show_controls(m: Any, plan: Any, controls: tuple[str, ...], h: float) -> None:
    inputs = m.inputs()
    for c in controls:
        v = np.asarray(plan[c].values, float)[:-1]
        click.echo(f"  {c} [{inputs[c].units}]: first {summary(v[0])}; max {v.max():.4g}, "
                   f"min {v.min():.4g}; ∫ dt = {float(v.sum(axis=0).sum() * h):.4g} "
                   f"({inputs[c].units})·{m.time_unit}")


@main.command("optimise")
@_model_argument
@click.option("--until", type=float, required=True,
              help="Horizon (batch length) [model time unit]; the initial guess with "
                   "--free-time.")
@click.option("--intervals", type=int, default=50, show_default=True,
              help="Control intervals (each control constant on each).")
@_objective_options
@click.option("--method", default="collocation", show_default=True,
              type=click.Choice(["collocation", "shooting"]))
@click.option("--elements", type=int, default=1, show_default=True,
              help="Collocation elements per interval.")
@click.option("--starts", type=int, default=1, show_default=True,
              help="Multistart: the default start plus STARTS-1 sampled in the bounds.")
@click.option("--free-time", "free_time", default=None, metavar="LOW:HIGH",
              help="Free final time within these bounds [model time unit].")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Parameter value.")
@click.option("--x0", "x0", multiple=True, metavar="NAME=VALUE", help="Initial state value.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=out_path,
              help="Write the plan Dataset here.")
def optimise_cmd(model: str | None, model_opt: str | None, until: float, intervals: int,
                 objective: str | None, limits: tuple[str, ...], du_weight: float | None,
                 method: str, elements: int, starts: int, free_time: str | None,
                 params: tuple[str, ...], x0: tuple[str, ...], out: Path | None) -> None:
    """Optimise MODEL's manipulated inputs over a whole batch (a recipe): the objective and
    the operating limits the model declares, or those given. A failed solve exits non-zero
    and prints no recipe."""
    from .errors import ConfigError
    from .io import save
    from .solvers import golden_batch

    m = _load(model, model_opt)
    p = parse_params(m, params)
    m = m.replace(**p) if p else m
    x = parse_x0(m, x0)
    if not (np.isfinite(until) and until > 0):
        raise ConfigError(f"--until must be a time > 0 [{m.time_unit}], got {until:g}.")
    res = golden_batch(m, horizon=until, intervals=intervals, objective=objective, x0=x,
                       limits=_limits(limits), du_weight=du_weight, method=method,
                       elements=elements, starts=starts,
                       free_time=_free_time(free_time, m.time_unit))
    plan = res.plan
    T = float(plan["time"].values[-1])
    click.echo(f"{m.name}: {res.status} ({res.solver_status}) in "
               f"{res.stats['iterations']} iterations ({res.stats['wall_time_s']:.2f} s, "
               f"{method}{f', best of {starts} starts' if starts > 1 else ''})")
    units = f" {plan.attrs['objective_units']}" if plan.attrs["objective_units"] else ""
    click.echo(f"  {plan.attrs['objective_doc']}: {res.stats['outcome']:.6g}{units} "
               "predicted, "
               f"{res.stats['outcome_resimulated']:.6g} re-simulated"
               + (f" (T = {T:.4g} {m.time_unit})" if free_time else ""))
    for broken, v in res.stats["violations_resimulated"].items():
        if v > 1e-6:
            click.secho(f"  re-simulated plan breaks {broken} by {v:.3g}: refine --intervals "
                        "or --elements", fg="yellow")
    controls = tuple(c for c in m.layout.inputs.names if c in plan)
    _show_controls(m, plan, controls, T / intervals)
    if res.active:
        shown = ", ".join(dict.fromkeys(a.split(" at ")[0] for a in res.active))
        click.echo(f"  active constraints: {shown}")
    if out is not None:
        save(plan, out)
        click.echo(f"wrote {out}")


def _estimate_file(path: Path, m: Any) -> Any:
    from .io import load

    try:
        est = load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a usage error
        raise click.UsageError(f"{path} is not a readable estimate file ({exc}); write one "
                               "with `processtwin estimate ... --out est.nc`.") from None
    names = m.layout.states.names
    missing = [s for s in names if s not in est]
    if missing:
        raise click.UsageError(f"{path}: no estimate of state(s) {', '.join(missing)} of "
                               f"model `{m.name}`; write one with `processtwin estimate`.")
    no_sd = [s for s in names if f"{s}_std" not in est]
    if no_sd or "time" not in est.coords or est.sizes.get("time", 0) < 1:
        raise click.UsageError(f"{path} holds states but no estimate (no "
                               f"`{(no_sd or names)[0]}_std`): it looks like a plan, a "
                               "simulation or a plant record; write an estimate with "
                               "`processtwin estimate`.")
    return est


@main.command("recommend")
@_model_argument
@click.option("--state", "state_path", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path), required=True,
              help="Estimate file written by `processtwin estimate` (latest time is used).")
@click.option("--horizon", type=float, default=20.0, show_default=True,
              help="Prediction horizon [model time unit].")
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="Control interval [model time unit].")
@_objective_options
@click.option("--u", "u_now", multiple=True, metavar="NAME=VALUE",
              help="A manipulated input's value applied now [input units] (default its "
                   "declared default).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=out_path,
              help="Write the planned trajectory here.")
def recommend_cmd(model: str | None, model_opt: str | None, state_path: Path, horizon: float,
                  interval: float, objective: str | None, limits: tuple[str, ...],
                  du_weight: float | None, u_now: tuple[str, ...], out: Path | None) -> None:
    """Recommend MODEL's next setpoints from the latest estimate (NMPC over --horizon with
    the model's objective and limits, or those given). A failed solve says FALLBACK and
    exits non-zero."""
    from .errors import ConfigError
    from .io import save
    from .solvers import BatchNMPC

    m = _load(model, model_opt)
    for what, v in (("--horizon", horizon), ("--interval", interval)):
        if not (np.isfinite(v) and v > 0):
            raise ConfigError(f"{what} must be a time > 0 [{m.time_unit}], got {v:g}.")
    est = _estimate_file(state_path, m)
    last = est.isel(time=-1)
    t_now = float(last["time"])
    x = {s: np.asarray(last[s].values, float) for s in m.layout.states.names}
    x = {k: float(v) if v.ndim == 0 else v for k, v in x.items()}
    params = {p: float(last[p]) for p in est.attrs.get("estimated_parameters", "").split()}
    u = {k: number(v, k, "--u") for k, v in parse_assignments(u_now, "--u").items()}
    nmpc = BatchNMPC(m, batch_end=t_now + horizon, interval=interval, objective=objective,
                     limits=_limits(limits), du_weight=du_weight)
    rec = nmpc.recommend(t_now, x, params=params, u_now=u)
    click.echo(str(rec))
    if rec.plan is not None and out is not None:
        save(rec.plan, out)
        click.echo(f"wrote {out}")
    if rec.fallback:
        raise click.ClickException("the optimiser failed: the setpoints above are a "
                                   "fallback, not an optimised plan.")


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


def _register() -> None:
    from .cli_schedule import schedule_cmd

    main.add_command(schedule_cmd)


_register()


@main.command("certs")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--common-name", default="processtwin", show_default=True,
              help="Base of the subject names and application URIs (urn:NAME:server/client).")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True,
              help="Validity from now [days].")
@click.option("--hostname", "hostnames", multiple=True,
              help="Host name or IP address for the certificates (repeatable; default "
                   "localhost, 127.0.0.1 and this host).")
@click.option("--overwrite", is_flag=True, help="Replace existing certificate files.")
def certs_cmd(out_dir: Path, common_name: str, days: int, hostnames: tuple[str, ...],
              overwrite: bool) -> None:
    """Generate self-signed OPC UA certificates (Basic256Sha256: RSA 2048, SHA-256) for
    the plant server and the twin client into OUT_DIR, for tests and first use (PEM
    copies too, for MQTT over TLS)."""
    from .twin.certs import generate_certificates

    c = generate_certificates(out_dir, common_name=common_name, days=days,
                              hostnames=list(hostnames) or None, overwrite=overwrite)
    click.echo(f"server certificate  {c.server_certificate}  ({c.server_uri})")
    click.echo(f"server private key  {c.server_private_key}")
    click.echo(f"client certificate  {c.client_certificate}  ({c.client_uri})")
    click.echo(f"client private key  {c.client_private_key}")
    click.echo(f"PEM copies (MQTT over TLS)  {c.server_certificate_pem}, "
               f"{c.client_certificate_pem}")
    click.echo("keep the private keys private (written with mode 0600); trust each side's "
               "certificate on the other")


@main.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True, help="No live status line.")
@click.option("--batches", type=int, default=None,
              help="Stop after this many batches (with a checkpoint); the next run continues.")
def run_cmd(config: Path, quiet: bool, batches: int | None) -> None:
    """Run the twin described by CONFIG (TOML: model, estimator, optimiser, source,
    historian): a live status line, checkpoints; Ctrl-C stops cleanly with a checkpoint
    and the next run continues from it."""
    from .twin.run import run_twin

    s = run_twin(config, echo=click.echo, live=not quiet, max_batches=batches)
    c = s["counters"]
    click.echo(f"  {s['batches']} batches, {c['received']} samples: {c['accepted']} "
               f"accepted, {c['quarantined']} quarantined"
               + (f" ({', '.join(f'{k} {n}' for k, n in c['by_reason'].items() if n)})"
                  if c["quarantined"] else "")
               + f"; {s['wall_s']:.2f} s")
    if any(s["flags"].values()):
        click.echo("  alarms: " + ", ".join(f"{k} ×{n}" for k, n in s["flags"].items() if n))
    if s["recommendation"]:
        click.echo("  last recommendation:\n    " + s["recommendation"].replace("\n", "\n    "))
