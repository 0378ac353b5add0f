"""The MQTT connector against a real Mosquitto broker (tests/brokers.py): plant → broker →
twin → broker, authentication, a broker restart with sensor faults and malformed
payloads, and guarded setpoint write-back."""

from __future__ import annotations

import ast
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from brokers import mosquitto  # tests/brokers.py (pytest's pythonpath)

from processtwin.errors import ConfigError
from processtwin.models import Bioreactor
from processtwin.plant import simulated_plant
from processtwin.signals import hold
from processtwin.twin import Batch, Twin, TwinRecommendation, read_historian
from processtwin.twin.certs import generate_certificates
from processtwin.twin.mqtt import MqttConnection, MqttSink, MqttSource, publish_plant
from processtwin.twin.setpoints import SetpointGuard
from processtwin.twin.sources import inject_faults, plant_batches

FEED = {0.0: {"F": 0.0}, 10.0: {"F": 0.02}}
AUTH = {"username": "twin", "password": "secret"}
CHANNELS = ["V", "OUR", "X", "S", "P"]



def OPTIMISER(snap: dict) -> dict:
    """A stand-in for the NMPC: always the same feed, stamped with the estimate time."""
    return {"t": snap["t"], "setpoints": {"F": (0.03, "L/h")}}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with mosquitto(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    truth = Bioreactor(mu_max=0.022)
    run = simulated_plant(truth, inputs={"F": hold([0.0, 10.0], [0.0, 0.02])}, until=30.0,
                          seed=1)
    return list(plant_batches(run, inputs=FEED))


def _twin(**kw) -> Twin:
    return Twin(Bioreactor(), estimate=("mu_max",), inputs={"F": 0.0}, threaded=False, **kw)


def _listen(broker, *topics: str) -> tuple[MqttConnection, list[tuple[str, dict]]]:
    """A subscriber (an operator's screen) collecting ``(topic, payload)`` of ``topics``."""
    got: list[tuple[str, dict]] = []
    conn = MqttConnection(broker.host, broker.port, **AUTH,
                          on_message=lambda t, p: got.append((t, json.loads(p))))
    for topic in topics:
        conn.subscribe(topic)
    return conn.connect(), got


def _wait(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _drive(src: MqttSource, twin: Twin, sink: MqttSink | None,
           done: Callable[[list[Batch]], bool]) -> tuple[list[Batch], list[dict]]:
    """The twin's live loop: every batch the source yields, advanced and published; once
    ``done(batches so far)`` the source is stopped (what already arrived is still
    yielded)."""
    got: list[Batch] = []
    results: list[dict] = []
    stopped = False
    for b in src:      # ends by the source's idle timeout if a message never comes
        got.append(b)
        res = twin.advance(b)
        results.append(res)
        if sink is not None:
            sink.update(twin, res)
        if not stopped and done(got):
            src.stop()
            stopped = True
    assert stopped, "the source went idle before every expected message arrived"
    return got, results


def _samples(bs: list[Batch]) -> list:
    return [s for b in bs for s in b.samples]


@pytest.mark.parametrize("mode", ["batch", "topics"])
def test_plant_to_twin_to_operator_through_an_authenticated_broker(broker, batches, mode,
                                                                   tmp_path) -> None:
    prefix = f"e2e-{mode}"
    screen, seen = _listen(broker, *(f"{prefix}/{t}" for t in ("recommendations", "alarms",
                                                               "setpoints/#")))
    src = MqttSource(broker.host, broker.port, channels=CHANNELS, prefix=prefix, **AUTH,
                     client_id=f"{prefix}-twin", idle_timeout_s=10.0).connect()
    sink = MqttSink(src, prefix=prefix)          # shares the source's connection
    report = publish_plant(batches, broker.host, broker.port, prefix=prefix, mode=mode,
                           **AUTH)
    n_inputs = sum(len(b.inputs or {}) for b in batches)
    assert report.acked == report.messages == (
        len(batches) if mode == "batch" else len(_samples(batches)) + n_inputs)
    tw = _twin(historian=tmp_path / "h.h5", optimiser=OPTIMISER, cadence=5.0)
    got, results = _drive(src, tw, sink, lambda _: src.received_messages >= report.messages)
    assert sink.flush(10.0)
    src.close()
    assert src.received_messages == report.messages
    if mode == "batch":
        # one message per batch: the twin receives exactly the plant's batches
        assert got == batches
    else:
        # one message per sample: the same samples and input changes in the same order,
        # batched by arrival window (closed at every input change)
        assert _samples(got) == _samples(batches)
        assert [b.inputs for b in got if b.inputs] == [b.inputs for b in batches if b.inputs]
    # the connector adds nothing: a twin fed the delivered batches in-process agrees
    ref = _twin()
    for b in got:
        ref.advance(b)
    np.testing.assert_array_equal(tw.filter.z, ref.filter.z)
    plain = _twin()
    for b in batches:
        plain.advance(b)
    if mode == "batch":
        np.testing.assert_array_equal(tw.filter.z, plain.filter.z)
    else:
        # The arrival window merges the plant's batches (the filter still steps sample
        # time by sample time, and every input change closes a batch): the same estimate,
        # though other boundaries may reorder floating-point operations (re-filtering for
        # a late lab assay), so equal to rounding rather than promised bit for bit.
        np.testing.assert_allclose(tw.filter.z, plain.filter.z, rtol=1e-12, atol=0)
    assert abs(tw.filter.estimate()["mu_max"][0] - 0.022) < 0.1 * 0.022
    # the operator's screen got every recommendation and alarm the twin made, in order
    runs, alarms = tw.counters.optimiser_runs, [r for r in results if r["flags"]]
    tw.close()
    stored = read_historian(tmp_path / "h.h5")["recommendations"]
    assert runs == sink.counters["recommendations"] == len(stored) >= 1
    if mode == "batch":          # every 5 h of estimate time from the first batch at 0.25 h
        assert [t for t, _ in stored] == [0.25, 5.25, 10.25, 15.25, 20.25, 25.25]
    assert _wait(lambda: len(seen) == runs + len(alarms))
    recs = [p for t, p in seen if t == f"{prefix}/recommendations"]
    assert [r["t"] for r in recs] == [t for t, _ in stored]
    assert all(r["setpoints"] == {"F": {"value": 0.03, "unit": "L/h"}} and not r["fallback"]
               for r in recs)
    assert [p["flags"] for t, p in seen if t == f"{prefix}/alarms"] == [r["flags"]
                                                                      for r in alarms]
    # write-back is off without a guard: every recommended setpoint refused, none sent
    assert sink.counters["setpoints_refused"] == runs and sink.counters["setpoints"] == 0
    assert not [t for t, _ in seen if "/setpoints/" in t]
    screen.close()


def test_wrong_or_missing_credentials_are_refused(broker, batches, caplog) -> None:
    prefix = "auth"
    good = MqttSource(broker.host, broker.port, channels=CHANNELS, prefix=prefix, **AUTH,
                      idle_timeout_s=10.0).connect()
    refused = []
    for kw, who in (({"username": "twin", "password": "wrong"}, "user `twin`"),
                    ({}, "no credentials")):
        bad = MqttSource(broker.host, broker.port, channels=CHANNELS, prefix=prefix, **kw)
        where = re.escape(f"{broker.host}:{broker.port}")
        with (caplog.at_level(logging.ERROR, logger="processtwin.twin.mqtt"),
              pytest.raises(ConfigError, match=rf"{where} refused .*{re.escape(who)}.*"
                                               r"Not authorized \(reason code \d+\)")):
            bad.connect()
        with pytest.raises(ConfigError, match="refused"):
            next(iter(bad))
        refused.append(bad)
    assert {(r.name, r.levelname) for r in caplog.records if "refused" in r.getMessage()
            } == {("processtwin.twin.mqtt", "ERROR")}
    with pytest.raises(ConfigError, match="refused"):
        publish_plant(batches[:3], broker.host, broker.port, prefix=prefix,
                      username="twin", password="wrong")
    report = publish_plant(batches[:3], broker.host, broker.port, prefix=prefix, **AUTH)
    assert report.acked == report.messages > 0
    got, stopped = [], False
    for b in good:      # the authenticated twin receives them; the refused ones nothing
        got.append(b)
        if not stopped and good.received_messages >= report.messages:
            good.stop()
            stopped = True
    good.close()
    assert _samples(got) == _samples(batches[:3])
    assert [s.received_messages for s in refused] == [0, 0]
    with pytest.raises(ConnectionError, match=f"{broker.host}:1 is not reachable"):
        MqttSource(broker.host, 1, channels=CHANNELS, **AUTH).connect()


FAULTS = [{"kind": "spike", "channel": "OUR", "at": 6.0, "size": 5.0},
          {"kind": "stuck", "channel": "V", "at": 12.0, "duration": 3.0},
          {"kind": "dropout", "channel": "OUR", "at": 18.0, "duration": 2.0},
          {"kind": "clock_jump", "channel": "V", "at": 22.0, "jump": 1e6}]


def test_broker_restart_sensor_faults_and_malformed_payloads(broker, batches, tmp_path
                                                            ) -> None:
    prefix = "faults"
    faulty = list(inject_faults(batches, FAULTS))
    raw = [(f"{prefix}/sensors/OUR", b"not json {"),                  # not JSON
           (f"{prefix}/sensors/V", b'{"t": 29.9}'),                   # no value
           (f"{prefix}/sensors/OUR", b'{"t": 29.9, "value": "abc"}'),  # value not a number
           (f"{prefix}/sensors/pH", b'{"t": 29.9, "value": 7.0}'),     # unknown channel
           (f"{prefix}/sensors", b'[{"t": 29.95, "channel": "V", "value": null}]'),
           (f"{prefix}/sensors", b"garbage"),                          # a batch, not JSON
           (f"{prefix}/inputs/F", b'{"value": "fast"}')]                # an input, no number
    # The twin reconnects later than the plant's gateway: what the gateway publishes
    # meanwhile waits at the broker, in the twin's persistent session.
    src = MqttSource(broker.host, broker.port, channels=CHANNELS, prefix=prefix, **AUTH,
                     client_id="faults-twin", batch_window_s=0.02, idle_timeout_s=15.0,
                     reconnect_delay_s=(0.5, 1.0)).connect()
    screen, seen = _listen(broker, f"{prefix}/alarms")
    out: dict = {}

    def gateway() -> None:
        def stream():
            for k, b in enumerate(faulty):
                if k == 60:                       # mid-run: the broker goes away
                    broker.restart()
                yield b
        try:
            out["report"] = publish_plant(stream(), broker.host, broker.port, prefix=prefix,
                                          **AUTH, client_id="faults-plant",
                                          reconnect_delay_s=(0.05, 0.5))
            conn = MqttConnection(broker.host, broker.port, **AUTH).connect()
            for topic, payload in raw:
                conn.publish(topic, payload)
            out["raw_acked"] = conn.flush(10.0)
            conn.close()
        except BaseException as e:       # seen by the test, not lost in the thread
            out["error"] = e

    plant = threading.Thread(target=gateway)
    plant.start()
    tw = _twin(historian=tmp_path / "h.h5", max_future=50.0)
    sink = MqttSink(src, prefix=prefix)

    def done(so_far: list[Batch]) -> bool:
        if plant.is_alive() or "report" not in out:
            return "error" in out
        missing = Counter(out["report"].acked_samples) - Counter(_samples(so_far))
        return not missing and src.counters["malformed"] >= 6

    got, results = _drive(src, tw, sink, done)
    plant.join(timeout=30.0)
    assert "error" not in out, out.get("error")
    report = out["report"]
    assert report.acked == report.messages and out["raw_acked"]
    # the source saw the broker go and come back, and every acknowledged message arrived
    assert src.connection.counters["disconnects"] >= 1
    assert src.connection.counters["connects"] >= 2
    received = [s for s in _samples(got) if s.channel in CHANNELS and isinstance(s.value,
                                                                                float)]
    assert not Counter(report.acked_samples) - Counter(received)
    # every message became a sample or an input change; every sample was counted
    assert src.received_messages == src.counters["samples"] + src.counters["inputs"]
    c = tw.validator.counters
    assert c["received"] == c["accepted"] + c["quarantined"] == src.counters["samples"] \
        == len(_samples(got))
    # QoS 1 is at least once: a message redelivered after the restart is quarantined
    # as a duplicate (or as older than the channel's last), never filtered twice
    extra = len(received) - len(set(received))
    q = c["by_reason"]
    assert q["duplicate"] + q["not_increasing"] + q["future"] - 1 == extra
    assert (q["bad_time"], q["not_a_number"], q["unknown_channel"]) == (3, 3, 1)
    assert src.counters["malformed"] == 6
    assert c["quarantined"] == len(raw) + 1 + extra     # + 1: the clock jump
    assert c["accepted"] == len(set(received)) - 1
    assert sink.flush(10.0)
    src.close()
    tw.close()
    # the historian keeps the malformed payloads' raw text
    h = read_historian(tmp_path / "h.h5")
    kept = {ast.literal_eval(json.loads(r)["value"]) for r in h["quarantine"]["raw"].values}
    assert {p.decode() for _, p in raw[:3]} <= kept
    assert "future" in set(h["quarantine"]["reason"].values)
    # the spike and the stuck sensor were flagged, and the alarm reached the operator
    assert tw.counters.flags["spike"] >= 1 and tw.counters.flags["stuck"] >= 1
    assert any("spike" in r["flags"] for r in results)
    assert _wait(lambda: len(seen) == sink.counters["alarms"])
    assert any("spike" in p["flags"] for _, p in seen)
    screen.close()
    # the twin kept running, and as it would have offline on what it was given
    assert tw.counters.batches == len(got)
    ref = _twin(max_future=50.0)
    for b in got:
        ref.advance(b)
    np.testing.assert_array_equal(tw.filter.z, ref.filter.z)
    assert abs(tw.filter.estimate()["mu_max"][0] - 0.022) < 0.1 * 0.022


def test_a_message_is_acknowledged_only_once_the_twin_took_it(broker, batches) -> None:
    """A twin that dies holding a batch it had not stored gets it again: the source
    acknowledges a message to the broker only when asked for the next batch."""
    prefix, cid = "ack", "ack-twin"
    first = MqttSource(broker.host, broker.port, channels=CHANNELS, prefix=prefix, **AUTH,
                       client_id=cid, batch_window_s=0.0, idle_timeout_s=5.0).connect()
    sent = batches[:10]
    report = publish_plant(sent, broker.host, broker.port, prefix=prefix, **AUTH,
                           mode="batch")
    assert report.acked == report.messages == len(sent)
    it = iter(first)
    taken = [next(it) for _ in range(3)]    # the first two stored, the third in hand
    assert _samples(taken) == _samples(sent[:3])
    it.close()                              # the twin dies with batch 3 not stored
    first.close()
    assert first.connection.counters["delivered_acked"] == 2
    # the close waited for the broker to answer behind those acknowledgements (else a
    # new connection read first may take the session over and drop them)
    assert first.connection.counters["close_syncs"] == 1
    again = MqttSource(broker.host, broker.port, channels=CHANNELS, prefix=prefix, **AUTH,
                       client_id=cid, batch_window_s=0.0, idle_timeout_s=2.0)
    got = list(again)                       # ends after 2 s without a message
    again.close()
    assert _samples(got) == _samples(sent[2:])
    assert again.connection.counters["delivered_acked"] == len(sent) - 2
    with pytest.raises(ConfigError, match="max_messages"):
        MqttSource(broker.host, broker.port, channels=CHANNELS, max_messages=0)


def test_tls_with_client_certificates(batches, tmp_path) -> None:
    """A TLS listener that needs a trusted client certificate and a password: the chain
    runs over it; an untrusted client certificate, a broker certificate the client does
    not trust, and plain TCP on the TLS port are all refused."""
    pki = generate_certificates(tmp_path / "pki", common_name="mqtt-test", days=2)
    other = generate_certificates(tmp_path / "other", common_name="intruder", days=2)
    client = {"ca_certs": str(pki.server_certificate_pem),
              "certfile": str(pki.client_certificate_pem),
              "keyfile": str(pki.client_private_key)}
    with mosquitto(tmp_path / "broker", tls={"cafile": pki.client_certificate_pem,
                                             "certfile": pki.server_certificate_pem,
                                             "keyfile": pki.server_private_key}) as b:
        src = MqttSource(b.host, b.tls_port, channels=CHANNELS, prefix="tls", **AUTH,
                         tls=client, batch_window_s=0.0, idle_timeout_s=10.0).connect()
        sent = batches[:5]
        report = publish_plant(sent, b.host, b.tls_port, prefix="tls", **AUTH, tls=client,
                               mode="batch")
        assert report.acked == len(sent)
        got: list[Batch] = []
        for bt in src:
            got.append(bt)
            if len(got) == len(sent):
                src.stop()
        src.close()
        assert _samples(got) == _samples(sent)
        refused = [dict(client, certfile=str(other.client_certificate_pem),
                        keyfile=str(other.client_private_key)),       # untrusted client
                   dict(client, ca_certs=str(other.server_certificate_pem))]  # wrong CA
        for tls, why in zip(refused, ["did not accept the client certificate",
                                      "TLS handshake .* failed"], strict=True):
            conn = MqttConnection(b.host, b.tls_port, **AUTH, tls=tls, connect_timeout_s=3.0)
            with pytest.raises((ConnectionError, ConfigError), match=why) as err:
                conn.connect()
            assert f"{b.host}:{b.tls_port}" in str(err.value)
        with pytest.raises(ConfigError, match="configure `tls`"):
            MqttConnection(b.host, b.tls_port, **AUTH, connect_timeout_s=3.0).connect()


def test_setpoint_write_back_is_guarded(broker) -> None:
    prefix = "sp"
    screen, seen = _listen(broker, f"{prefix}/#")
    want = TwinRecommendation(10.0, {"t": 10.0, "setpoints": {"F": (0.5, "L/h")}}, 0.1)

    def published_after(sink: MqttSink, mark: str) -> list[dict]:
        # Messages of one connection arrive in order: once the marker is seen, anything
        # the sink published before it has been seen too.
        sink.connection.publish(f"{prefix}/marker", json.dumps({"mark": mark}))
        assert _wait(lambda: any(p == {"mark": mark} for _, p in seen))
        return [p for t, p in seen if t.startswith(f"{prefix}/setpoints/")]

    off = SetpointGuard(Bioreactor())                 # disabled: the default
    sink = MqttSink(broker.host, broker.port, prefix=prefix, guard=off, **AUTH)
    assert sink.write_setpoints(want) == {}
    assert published_after(sink, "off") == []
    assert off.counters["refused"] == 1 == sink.counters["setpoints_refused"]
    assert "disabled" in off.log[-1]
    sink.close()

    on = SetpointGuard(Bioreactor(), enabled=True, envelope={"F": (0.0, 0.05)},
                       rate={"F": 0.01})
    sink = MqttSink(broker.host, broker.port, prefix=prefix, guard=on, **AUTH)
    assert sink.write_setpoints(want) == {"F": 0.05}                   # the envelope
    assert sink.write_setpoints({"t": 11.0, "setpoints": {"F": 0.0}}) == {"F": 0.04}
    assert sink.write_setpoints({"setpoints": {"F": 0.042}}, t=11.5) == {"F": 0.042}
    got = published_after(sink, "on")
    assert got == [{"t": 10.0, "value": 0.05, "unit": "L/h"},
                   {"t": 11.0, "value": 0.04, "unit": "L/h"},   # 0.01 L/h per h from 0.05
                   {"t": 11.5, "value": 0.042, "unit": "L/h"}]
    assert on.counters == {"written": 3, "refused": 0, "clipped": 2}
    assert sink.counters["setpoints"] == 3 and sink.counters["setpoints_refused"] == 0
    with pytest.raises(ConfigError, match="S_in"):          # a disturbance: never written
        sink.write_setpoints({"t": 12.0, "setpoints": {"S_in": 500.0}})
    sink.close()
    screen.close()


def test_processtwin_run_over_mqtt_from_a_toml_file(broker, batches, tmp_path, monkeypatch
                                                    ) -> None:
    """The newcomer's path: a TOML file, `processtwin run`, a broker with a password (from
    the environment), recommendations and guarded setpoints back on the broker."""
    from processtwin.twin.run import run_twin

    prefix = "plant7"
    # the twin's persistent session exists before the plant publishes (as after a first
    # run), so the broker queues everything until the twin connects
    MqttSource(broker.host, broker.port, channels=CHANNELS, prefix=prefix,
               client_id="twin-7", **AUTH).connect().close()
    report = publish_plant(batches, broker.host, broker.port, prefix=prefix, mode="batch",
                           **AUTH)
    assert report.acked == report.messages
    screen, seen = _listen(broker, f"{prefix}/recommendations", f"{prefix}/setpoints/#")
    cfg = tmp_path / "twin.toml"
    cfg.write_text(f"""
[model]
name = "bioreactor"

[estimator]
estimate = ["mu_max"]

[optimiser]
objective = "product"
batch_end = 60.0
interval = 6.0
cadence = 15.0

[source]
kind = "mqtt"
host = "{broker.host}"
port = {broker.port}
prefix = "{prefix}"
client_id = "twin-7"
idle_timeout_s = 3.0

[security]
username = "twin"
password_env = "TWIN7_PASSWORD"
write_setpoints = true
envelope = {{ F = [0.0, 0.01] }}

[historian]
path = "twin.h5"
checkpoint = "twin.ckpt"
""")
    monkeypatch.delenv("TWIN7_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="TWIN7_PASSWORD.*not set"):
        run_twin(cfg, live=False, echo=lambda _: None)
    monkeypatch.setenv("TWIN7_PASSWORD", "secret")
    # stopped after 5 batches (the 6th, fetched but not taken, stays unacknowledged at
    # the broker), then run again from the checkpoint: every sample once, none twice
    s = run_twin(cfg, live=False, echo=lambda _: None, max_batches=5)
    assert s["batches"] == 5
    s = run_twin(cfg, live=False, echo=lambda _: None)
    n = sum(len(b.samples) for b in batches)
    assert s["counters"]["received"] == n == s["counters"]["accepted"]
    assert s["batches"] == len(batches)
    assert _wait(lambda: any(t.endswith("/recommendations") for t, _ in seen))
    recs = read_historian(tmp_path / "twin.h5")["recommendations"]
    assert len(recs) >= 1
    sp = [p for t, p in seen if "/setpoints/" in t]
    assert sp and all(0.0 <= p["value"] <= 0.01 for p in sp)
    screen.close()
