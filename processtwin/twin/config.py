"""A twin described by a TOML file, validated with errors that name the key, what was
expected and what was received.

.. code-block:: toml

    [model]
    name = "bioreactor"                 # registry name, path/to/plant.py:Name or module:Name
    params = { mu_max = 0.02 }

    [estimator]
    estimate = ["mu_max"]               # parameters tracked as drifting states
    q = { mu_max = 4e-8 }               # process-noise intensity [units² per time unit]
    x0 = { X = 1.0 }
    history = 2000                      # samples kept to re-filter late ones
    max_future = 10.0                   # clock-jump limit [model time unit]
    ranges = { V = [0.0, 200.0] }       # physical range per channel

    [optimiser]                         # optional
    kind = "nmpc"                       # shrinking-horizon NMPC of the model's inputs
    objective = "product"
    batch_end = 150.0
    interval = 3.0
    cadence = 10.0                      # model time between runs
    deadline_s = 5.0

    [source]
    kind = "simulated"                  # "simulated" (the embedded plant) or "replay"
    until = 150.0
    truth = { mu_max = 0.024 }          # the plant's true parameters
    inputs = { F = [[0.0, 0.0], [10.0, 0.02], [40.0, 0.04]] }   # (time, value) steps
    seed = 1
    speed = "max"                       # or a factor of real time
    faults = [{ kind = "spike", channel = "OUR", at = 60.0, size = 10.0 }]
    # kind = "replay": path = "records.nc", batch = 10 (sampling times per batch)
    # kind = "mqtt": host = "127.0.0.1", port = 1883, prefix = "plant1",
    #   client_id = "twin-1" (persistent session), batch_window_s = 0.05,
    #   idle_timeout_s = 60.0, until = 150.0; recommendations, alarms and guarded setpoints
    #   are published back under the prefix
    # kind = "opcua": url = "opc.tcp://127.0.0.1:4840/processtwin/", timeout_s = 30.0;
    #   guarded setpoints are written to the server's Setpoints nodes

    [security]
    write_setpoints = false             # write-back to the plant: off unless true
    envelope = { F = [0.0, 0.05] }      # actuator envelope [input units]
    rate = { F = 0.01 }                 # largest change per model time unit
    username = "twin"                   # MQTT / OPC UA user
    password_env = "TWIN_PASSWORD"      # the password comes from this variable, never the file
    certificate = "certs/client_cert.der"       # OPC UA (Basic256Sha256 SignAndEncrypt):
    private_key = "certs/client_key.pem"        # `processtwin certs certs` makes a pair
    server_certificate = "certs/server_cert.der"
    # tls_ca, tls_cert, tls_key: MQTT over TLS

    [historian]
    path = "twin.h5"
    checkpoint = "twin.ckpt"
    checkpoint_every = 50               # batches
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["TwinConfig", "load_config"]

_TABLES = {
    "model": {"name": str, "params": dict},
    "estimator": {"estimate": list, "channels": list, "q": dict, "r": dict, "gate": float,
                  "x0": dict, "std": dict, "history": int, "max_future": float,
                  "ranges": dict},
    "optimiser": {"kind": str, "objective": str, "batch_end": float, "interval": float,
                  "cadence": float, "deadline_s": float, "limits": dict},
    "source": {"kind": str, "until": float, "truth": dict, "inputs": dict, "seed": int,
               "speed": (str, float), "faults": list, "path": str, "dt": float,
               "lab_every": float, "lab_delay": float, "batch": int,
               "host": str, "port": int, "prefix": str, "client_id": str,
               "batch_window_s": float, "idle_timeout_s": float, "url": str,
               "timeout_s": float},
    "historian": {"path": str, "checkpoint": str, "checkpoint_every": int},
    "security": {"write_setpoints": bool, "envelope": dict, "rate": dict, "username": str,
                 "password_env": str, "certificate": str, "private_key": str,
                 "server_certificate": str, "tls_ca": str, "tls_cert": str,
                 "tls_key": str},
}
_KINDS = ("simulated", "replay", "mqtt", "opcua")
_REQUIRED = {"model": ("name",), "source": ("kind",)}
_FAULTS = ("spike", "stuck", "dropout", "clock_jump", "malformed")


@dataclass(frozen=True)
class TwinConfig:
    """A validated twin description (the TOML tables as plain dicts)."""

    model: dict
    estimator: dict
    optimiser: dict | None
    source: dict
    historian: dict
    security: dict
    base: Path

    def path(self, p: str) -> Path:
        """A path from the file, relative to the file's folder."""
        q = Path(p)
        return q if q.is_absolute() else self.base / q


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {str: "a string", float: "a number", int: "a whole number", dict: "a table",
            list: "an array", bool: "true/false"}[t]


def _check(table: str, key: str, value: Any, want: Any) -> Any:
    types = want if isinstance(want, tuple) else (want,)
    for t in types:
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t not in (float, int) and isinstance(value, t):
            return value
    raise ConfigError(f"[{table}] {key}: expected {_type_name(want)}, got {value!r}.")


def load_config(path: str | Path) -> TwinConfig:
    """Read and validate a twin's TOML file.

    Parameters
    ----------
    path : str or Path
        The TOML file.

    Returns
    -------
    TwinConfig
        The validated tables.

    Raises
    ------
    ConfigError
        A missing file, invalid TOML (with the line), an unknown table or key (with the
        known ones), a missing required key, or a value of the wrong type or out of range
        (naming the key, expected and received).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"twin configuration {path} does not exist.")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}.") from None
    unknown = sorted(set(raw) - set(_TABLES))
    if unknown:
        raise ConfigError(f"{path}: unknown table [{unknown[0]}]; tables are "
                          f"{', '.join(f'[{t}]' for t in _TABLES)}.")
    out: dict[str, dict] = {}
    for table, keys in _TABLES.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: [{table}] must be a table, got {given!r}.")
        for k in _REQUIRED.get(table, ()):
            if k not in given and (table in raw or table in _REQUIRED):
                raise ConfigError(f"{path}: [{table}] {k} is required.")
        bad = sorted(set(given) - set(keys))
        if bad:
            raise ConfigError(f"{path}: [{table}] unknown key `{bad[0]}`; keys are "
                              f"{', '.join(keys)}.")
        out[table] = {k: _check(table, k, v, keys[k]) for k, v in given.items()}
    src = out["source"]
    if src["kind"] not in _KINDS:
        raise ConfigError(f"[source] kind: expected one of {', '.join(map(repr, _KINDS))}, "
                          f"got {src['kind']!r}.")
    for kind, need in (("replay", ("path",)), ("mqtt", ("host", "port")),
                       ("opcua", ("url",))):
        for k in need:
            if src["kind"] == kind and k not in src:
                raise ConfigError(f"[source] {k} is required with kind = '{kind}'.")
    if "port" in src and not 0 < src["port"] < 65536:
        raise ConfigError(f"[source] port: expected a TCP port 1-65535, got {src['port']!r}.")
    if "batch" in src and src["batch"] < 1:
        raise ConfigError(f"[source] batch: expected a whole number ≥ 1, got "
                          f"{src['batch']!r}.")
    sec = out["security"]
    if src["kind"] == "opcua":
        for k in ("certificate", "private_key", "server_certificate"):
            if k not in sec:
                raise ConfigError(f"[security] {k} is required with an OPC UA source "
                                  "(Basic256Sha256 SignAndEncrypt; `processtwin certs DIR` "
                                  "makes a self-signed pair).")
    if "password_env" in sec and "username" not in sec:
        raise ConfigError("[security] password_env needs a username.")
    for k in ("envelope", "rate"):
        for name, v in sec.get(k, {}).items():
            ok = (isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, int | float) for x in v)) if k == "envelope" else \
                (isinstance(v, int | float) and not isinstance(v, bool) and v > 0)
            if not ok:
                want = "[low, high]" if k == "envelope" else "a number > 0"
                raise ConfigError(f"[security] {k}.{name}: expected {want}, got {v!r}.")
    if src["kind"] == "simulated" and not src.get("until", 0) > 0:
        raise ConfigError(f"[source] until: expected a time > 0, got {src.get('until')!r}.")
    speed = src.get("speed", "max")
    if isinstance(speed, str) and speed != "max" or isinstance(speed, float) and not speed > 0:
        raise ConfigError(f"[source] speed: expected \"max\" or a factor > 0, got {speed!r}.")
    for i, f in enumerate(src.get("faults", [])):
        if not isinstance(f, dict) or f.get("kind") not in _FAULTS:
            raise ConfigError(f"[source] faults[{i}]: expected a table with kind one of "
                              f"{', '.join(_FAULTS)}, got {f!r}.")
        for k in ("channel", "at"):
            if k not in f:
                raise ConfigError(f"[source] faults[{i}]: `{k}` is required.")
    for name, steps in src.get("inputs", {}).items():
        if not (isinstance(steps, list) and all(isinstance(s, list) and len(s) == 2
                                                 for s in steps)):
            raise ConfigError(f"[source] inputs.{name}: expected an array of [time, value] "
                              f"pairs, got {steps!r}.")
    opt = out["optimiser"] or None
    if opt is not None:
        if opt.get("kind", "nmpc") != "nmpc":
            raise ConfigError(f"[optimiser] kind: expected 'nmpc', got {opt['kind']!r}.")
        for k in ("batch_end", "interval", "cadence"):
            if k not in opt:
                raise ConfigError(f"[optimiser] {k} is required.")
            if not opt[k] > 0:
                raise ConfigError(f"[optimiser] {k}: expected a number > 0, got {opt[k]!r}.")
    est = out["estimator"]
    if "history" in est and est["history"] < 1:
        raise ConfigError(f"[estimator] history: expected a whole number ≥ 1, got "
                          f"{est['history']!r}.")
    for ch, rng in est.get("ranges", {}).items():
        if not (isinstance(rng, list) and len(rng) == 2):
            raise ConfigError(f"[estimator] ranges.{ch}: expected [low, high], got {rng!r}.")
    if "checkpoint_every" in out["historian"] and out["historian"]["checkpoint_every"] < 1:
        raise ConfigError("[historian] checkpoint_every: expected a whole number ≥ 1, got "
                          f"{out['historian']['checkpoint_every']!r}.")
    return TwinConfig(model=out["model"], estimator=est, optimiser=opt, source=src,
                      historian=out["historian"], security=out["security"],
                      base=path.parent)


def build(cfg: TwinConfig) -> tuple[Any, Iterator[Any], dict[str, Any]]:
    """The twin, its source and run options from a configuration.

    Returns
    -------
    twin, batches, options
        ``options``: ``checkpoint`` path or None, ``checkpoint_every``, ``truth`` (the
        simulated plant's run or None), ``sink`` (recommendations, alarms and guarded
        setpoints back to the plant, or None) and ``connector`` (the MQTT/OPC UA source,
        or None: a simulated or replayed source, which a restart skips to
        ``twin.next_batch``).
    """
    import numpy as np

    from ..plant import simulated_plant
    from ..registry import load_model
    from ..signals import hold
    from .core import Twin
    from .sources import inject_faults, paced, plant_batches, replay

    model = load_model(cfg.model["name"])
    if cfg.model.get("params"):
        model = model.replace(**cfg.model["params"])
    est = cfg.estimator
    src = cfg.source
    steps = {k: sorted((float(a), b) for a, b in v) for k, v in src.get("inputs", {}).items()}
    u0 = {k: v[0][1] for k, v in steps.items() if v and v[0][0] <= 0.0}
    optimiser = None
    if cfg.optimiser is not None:
        optimiser = _nmpc(model, cfg.optimiser, list(model.states()))
    filter_options = {k: est[k] for k in ("q", "r", "gate") if k in est}
    hist = cfg.historian
    twin = Twin(model, channels=est.get("channels"), estimate=est.get("estimate", ()),
                filter_options=filter_options, x0=est.get("x0"), std=est.get("std"),
                inputs=u0, historian=cfg.path(hist["path"]) if "path" in hist else None,
                ranges={k: tuple(v) for k, v in est.get("ranges", {}).items()},
                max_future=est.get("max_future", math.inf),
                history=est.get("history", 2000), optimiser=optimiser,
                cadence=(cfg.optimiser or {}).get("cadence"),
                deadline_s=(cfg.optimiser or {}).get("deadline_s"))
    truth = connector = None
    if src["kind"] == "simulated":
        plant_model = model.replace(**src["truth"]) if src.get("truth") else model
        signals = {k: hold([a for a, _ in v], [b for _, b in v]) for k, v in steps.items()}
        truth = simulated_plant(plant_model, inputs=signals, until=src["until"],
                                dt=src.get("dt", 0.25), lab_every=src.get("lab_every", 4.0),
                                lab_delay=src.get("lab_delay", 2.0), seed=src.get("seed", 0))
        changes: dict[float, dict] = {}
        for k, v in steps.items():
            for a, b in v:
                changes.setdefault(a, {})[k] = b
        batches: Iterator[Any] = plant_batches(truth, inputs=changes)
        batches = inject_faults(batches, src.get("faults", []),
                                rng=np.random.default_rng(src.get("seed", 0)))
    elif src["kind"] == "replay":
        batches = replay(cfg.path(src["path"]), model, batch=src.get("batch", 1))
    else:       # a live plant: its own pace, resumed where it is (not from the start)
        connector = _connector(cfg, twin)
        batches = connector
    if connector is None:
        speed = src.get("speed", "max")
        seconds = {"s": 1.0, "min": 60.0, "h": 3600.0}.get(model.time_unit, 1.0)
        batches = paced(batches, speed=math.inf if speed == "max" else float(speed),
                        seconds_per_unit=seconds)
    return twin, batches, {"checkpoint": cfg.path(hist["checkpoint"]) if "checkpoint" in hist
                           else None, "checkpoint_every": hist.get("checkpoint_every", 50),
                           "truth": truth, "sink": _sink(cfg, twin),
                           "connector": connector}


def _password(sec: Mapping[str, Any]) -> str | None:
    """The password named by ``password_env`` (never stored in the file)."""
    import os

    name = sec.get("password_env")
    if name is None:
        return None
    if name not in os.environ:
        raise ConfigError(f"[security] password_env: environment variable `{name}` is not "
                          "set.")
    return os.environ[name]


def _guard(cfg: TwinConfig, model: Any) -> Any:
    from .setpoints import SetpointGuard

    sec = cfg.security
    return SetpointGuard(model, enabled=sec.get("write_setpoints", False),
                         envelope={k: tuple(v) for k, v in sec.get("envelope", {}).items()},
                         rate=sec.get("rate"))


def _tls(sec: Mapping[str, Any], cfg: TwinConfig) -> dict[str, str] | None:
    keys = {"tls_ca": "ca_certs", "tls_cert": "certfile", "tls_key": "keyfile"}
    tls = {v: str(cfg.path(sec[k])) for k, v in keys.items() if k in sec}
    return tls or None


def _opcua_keys(cfg: TwinConfig) -> dict[str, Any]:
    sec = cfg.security
    return {"certificate": cfg.path(sec["certificate"]),
            "private_key": cfg.path(sec["private_key"]),
            "server_certificate": cfg.path(sec["server_certificate"]),
            "username": sec.get("username"), "password": _password(sec)}


def _connector(cfg: TwinConfig, twin: Any) -> Any:
    """The batches of a plant connection (MQTT or OPC UA)."""
    src, sec = cfg.source, cfg.security
    channels = list(twin.validator.units)
    if src["kind"] == "mqtt":
        from .mqtt import MqttSource

        return MqttSource(src["host"], src["port"], channels=channels,
                          prefix=src.get("prefix", "processtwin"),
                          username=sec.get("username"), password=_password(sec),
                          tls=_tls(sec, cfg), client_id=src.get("client_id", "processtwin"),
                          batch_window_s=src.get("batch_window_s", 0.05),
                          idle_timeout_s=src.get("idle_timeout_s"), until=src.get("until"))
    from .opcua import OpcUaSource

    return OpcUaSource(src["url"], channels=channels, timeout=src.get("timeout_s", 30.0),
                       **_opcua_keys(cfg))


def _sink(cfg: TwinConfig, twin: Any) -> Any:
    """Where recommendations, alarms and guarded setpoints go: back over the plant's
    connection (``None`` for simulated and replayed sources)."""
    src, sec = cfg.source, cfg.security
    if src["kind"] == "mqtt":
        from .mqtt import MqttSink

        return MqttSink(src["host"], src["port"], prefix=src.get("prefix", "processtwin"),
                        guard=_guard(cfg, twin.model), username=sec.get("username"),
                        password=_password(sec), tls=_tls(sec, cfg),
                        client_id=src.get("client_id", "processtwin") + "-sink")
    if src["kind"] == "opcua":
        from .opcua import OpcUaSink

        sink = OpcUaSink(src["url"], guard=_guard(cfg, twin.model), **_opcua_keys(cfg))
        last = [None]

        class _Writes:   # the runner's sink protocol: update(twin, result), close()
            def update(self, tw: Any, result: Any) -> None:
                rec = tw.recommendation
                if rec is not None and rec is not last[0]:
                    last[0] = rec
                    sink.write(rec)

            def close(self) -> None:
                sink.close()

        return _Writes()
    return None


def _nmpc(model: Any, opt: Mapping[str, Any], states: list[str]) -> Any:
    """The optimiser of a twin: a shrinking-horizon NMPC recommendation from the
    snapshot's estimate (estimated parameters included)."""
    from ..solvers import BatchNMPC

    nmpc = BatchNMPC(model, batch_end=opt["batch_end"], interval=opt["interval"],
                     objective=opt.get("objective"),
                     limits={k: tuple(v) for k, v in opt.get("limits", {}).items()} or None,
                     deadline_s=opt.get("deadline_s"))
    params = set(type(model).parameters())

    def run(snap: dict) -> Any:
        est = snap["estimate"]
        x = {s: est[s][0] for s in states if s in est}
        p = {k: v[0] for k, v in est.items() if k in params}
        u_now = {k: v for k, v in snap["inputs"].items()
                 if model.inputs()[k].kind == "manipulated"}
        return nmpc.recommend(snap["t"], x, params=p or None,
                              u_now=next(iter(u_now.values())) if len(u_now) == 1 else u_now)

    return run
