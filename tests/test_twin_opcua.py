"""The OPC UA connector, end to end over an encrypted loopback link: simulated plant →
PlantServer → OpcUaSource → Twin → OpcUaSink → the plant's setpoint node, against the
same twin fed in process; the security profile (Basic256Sha256 SignAndEncrypt only,
trusted certificates only, user names); the guarded write-back."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from collections.abc import Iterator

import numpy as np
import pytest

# the OPC UA connector is an optional extra (`pip install processtwin[opcua]`); the dev
# install has it, and the tests run, never skip
from asyncua import Client, ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from processtwin.errors import ConfigError
from processtwin.models import Bioreactor
from processtwin.plant import simulated_plant
from processtwin.signals import hold
from processtwin.twin import Batch, Twin
from processtwin.twin.certs import (
    application_uri_of,
    generate_certificate,
    generate_certificates,
    load_certificate,
)
from processtwin.twin.opcua import OpcUaSink, OpcUaSource, PlantServer
from processtwin.twin.setpoints import SetpointGuard
from processtwin.twin.sources import plant_batches

FEED = {0.0: {"F": 0.0}, 10.0: {"F": 0.02}}
TIMEOUT = 10.0      # [s] every wait in this file: a broken link fails, never hangs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    pair = generate_certificates(d, common_name="pt-test", days=2)
    # a second, self-signed certificate claiming the client's URI: not trusted
    other = generate_certificate(d / "other_cert.der", d / "other_key.pem",
                                 application_uri=pair.client_uri, common_name="intruder")
    return pair, other


@pytest.fixture(scope="module")
def plant():
    return simulated_plant(Bioreactor(mu_max=0.022),
                           inputs={"F": hold([0.0, 10.0], [0.0, 0.02])}, until=24.0, seed=1)


def _client_kw(certs, **kw):
    pair, _ = certs
    return {"certificate": pair.client_certificate, "private_key": pair.client_private_key,
            "server_certificate": pair.server_certificate, "timeout": TIMEOUT, **kw}


def _server(certs, batches, **kw) -> PlantServer:
    pair, _ = certs
    return PlantServer(Bioreactor(), batches, certificate=pair.server_certificate,
                       private_key=pair.server_private_key, trusted=pair.client_certificate,
                       timeout=TIMEOUT, **kw)


@pytest.fixture(scope="module")
def idle_server(certs):
    """A server with nothing to publish: for the security and write-back tests."""
    with _server(certs, [], setpoints={"F": 0.01}) as srv:
        yield srv


def _twin(**kw) -> Twin:
    return Twin(Bioreactor(), estimate=("mu_max",), inputs={"F": 0.0}, threaded=False,
                optimiser=lambda snap: {"setpoints": {"F": (0.5, "L/h")}, "t": snap["t"]},
                cadence=5.0, **kw)


def _rows(batches) -> list[tuple[float, str, float]]:
    return [(s.t, s.channel, s.value) for b in batches for s in b.samples]


# ---- certificates ---------------------------------------------------------------------
def test_certificates_follow_the_opc_ua_application_profile(certs, tmp_path) -> None:
    pair, _ = certs
    for path, uri in ((pair.server_certificate, pair.server_uri),
                      (pair.client_certificate, pair.client_uri)):
        cert = x509.load_der_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and ku.content_commitment and ku.key_encipherment
        assert ku.data_encipherment and not ku.key_agreement
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert cert.public_key().key_size == 2048
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        assert cert.issuer == cert.subject
        assert application_uri_of(path) == uri
    for key in (pair.server_private_key, pair.client_private_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pair.server_uri != pair.client_uri
    with pytest.raises(ConfigError, match="exists"):
        generate_certificates(pair.server_certificate.parent)
    with pytest.raises(ConfigError, match="`days`"):
        generate_certificates(tmp_path, days=0)
    (tmp_path / "junk.der").write_bytes(b"not a certificate")
    with pytest.raises(ConfigError, match="DER or PEM"):
        load_certificate(tmp_path / "junk.der")


# ---- end to end -----------------------------------------------------------------------
def test_encrypted_link_delivers_every_sample_and_the_twin_equals_in_process(
        certs, plant, tmp_path) -> None:
    batches = list(plant_batches(plant, inputs=FEED))
    # one batch with a channel twice (published as two frames) and a batch repeating
    # another exactly (equal node values must still arrive; the twin quarantines them)
    published = ([Batch(batches[0].samples + batches[1].samples, batches[0].inputs)]
                 + batches[2:11] + [Batch(list(batches[10].samples))] + batches[11:])
    guard = SetpointGuard(Bioreactor(), enabled=True, envelope={"F": (0.0, 0.05)})
    with _server(certs, published) as srv:
        assert srv.url.startswith("opc.tcp://127.0.0.1:")
        source = OpcUaSource(srv.url, **_client_kw(certs))
        twin = _twin(historian=tmp_path / "h.h5")
        received, last = [], None
        with OpcUaSink(srv.url, guard=guard, **_client_kw(certs)) as sink:
            for b in source:
                received.append(b)
                twin.advance(b)
                if twin.recommendation is not last:
                    last = twin.recommendation
                    assert sink.write(last) == {"F": 0.05}     # clipped to the envelope
        assert srv.wait_done(TIMEOUT)
        node_value, node_text, writes = srv.setpoint("F"), srv.recommendation, srv.writes
        frames = srv.counters["frames"]
    # every published sample arrived, once, in order, with its exact time and value
    assert _rows(received) == _rows(published)
    assert set(_rows(received)) == set(_rows(published))
    assert [len(b.samples) for b in received] == [len(b.samples) for b in published]
    assert [b.inputs for b in received] == [b.inputs for b in published]
    assert frames == len(published) + 1 + 1       # one batch in two frames, end of data
    assert {s.unit for b in received for s in b.samples} == {"L", "g/(L h)", "g/L"}
    c = twin.validator.counters
    assert c["received"] == len(_rows(published))
    assert c["by_reason"]["duplicate"] == len(batches[10].samples) == c["quarantined"]
    # the same twin fed in process: the same estimate, bit for bit
    ref = _twin()
    for b in published:
        ref.advance(b)
    np.testing.assert_array_equal(twin.filter.z, ref.filter.z)
    assert twin.filter.t == ref.filter.t == published[-1].samples[-1].t
    assert twin.validator.counters == ref.validator.counters
    # the recommendation reached the plant's setpoint node, clipped by the guard
    runs = twin.counters.optimiser_runs
    assert runs == ref.counters.optimiser_runs >= 4
    assert guard.counters == {"written": runs, "refused": 0, "clipped": runs}
    assert node_value == 0.05 and writes == [("F", 0.05)] * runs
    rec = json.loads(node_text)
    assert rec["t"] == twin.recommendation.t and rec["written"] == {"F": 0.05}
    assert rec["requested"] == {"F": 0.5}
    twin.close()
    ref.close()


# ---- security -------------------------------------------------------------------------
def test_only_basic256sha256_sign_and_encrypt_and_no_client_without_certificate(
        certs, idle_server) -> None:
    url = idle_server.url

    async def probe() -> tuple[list, list[str]]:
        refused = []
        c = Client(url, timeout=TIMEOUT)
        endpoints = await c.connect_and_get_server_endpoints()
        with pytest.raises(ua.UaError, match="No matching endpoints"):
            await c.connect()     # an unsecured client finds no endpoint it could use
        # a client that ignores the endpoints: an unsecured channel, then a session
        c = Client(url, timeout=TIMEOUT)
        await c.connect_socket()
        try:
            await c.send_hello()
            await c.open_secure_channel()
            p = ua.CreateSessionParameters(
                ClientDescription=ua.ApplicationDescription(
                    ApplicationUri="urn:anyone", ApplicationType=ua.ApplicationType.Client),
                EndpointUrl=url, SessionName="anyone", ClientNonce=b"0" * 32,
                RequestedSessionTimeout=10_000)
            await c.uaclient.create_session(p)
            a = ua.ActivateSessionParameters(
                UserIdentityToken=ua.AnonymousIdentityToken(PolicyId="anonymous"))
            try:
                await c.uaclient.activate_session(a)
            except ua.UaStatusCodeError as e:
                refused.append(type(e).__name__)
        finally:
            c.disconnect_socket()
        return endpoints, refused

    endpoints, refused = asyncio.run(asyncio.wait_for(probe(), 3 * TIMEOUT))
    assert {(e.SecurityPolicyUri.rsplit("#")[-1], e.SecurityMode) for e in endpoints} == {
        ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)}
    assert refused == ["BadUserAccessDenied"]
    with pytest.raises(ConfigError, match="certificate.*required"):
        OpcUaSource(url, **_client_kw(certs, certificate=None))


def test_untrusted_or_wrong_certificates_are_refused_naming_the_endpoint(
        certs, idle_server) -> None:
    pair, (other_cert, other_key) = certs
    url = idle_server.url
    intruder = OpcUaSource(url, **_client_kw(certs, certificate=other_cert,
                                             private_key=other_key))
    with pytest.raises(ConnectionError, match="does not trust the client certificate") as e:
        next(iter(intruder))
    assert url in str(e.value) and str(other_cert) in str(e.value)
    # a client that expects another server certificate never gets a channel
    sink = OpcUaSink(url, guard=SetpointGuard(Bioreactor(), enabled=True),
                     **_client_kw(certs, server_certificate=other_cert, timeout=1.0))
    with pytest.raises(ConnectionError, match=url):
        sink.open()
    sink.close()
    assert idle_server.setpoint("F") == 0.01


def test_user_name_and_password_are_checked(certs) -> None:
    with _server(certs, [], username="operator", password="s3cret") as srv:
        wrong = OpcUaSource(srv.url, **_client_kw(certs, username="operator",
                                                  password="guess"))
        with pytest.raises(ConnectionError, match="access denied"):
            next(iter(wrong))
        anonymous = OpcUaSource(srv.url, **_client_kw(certs))
        with pytest.raises(ConnectionError, match="identity not accepted"):
            next(iter(anonymous))
        right = OpcUaSource(srv.url, **_client_kw(certs, username="operator",
                                                  password="s3cret"))
        assert list(right) == []         # an empty stream: connected, then end of data
        assert srv.wait_done(TIMEOUT)


def test_an_unknown_channel_is_named(certs, idle_server) -> None:
    source = OpcUaSource(idle_server.url, channels=["V", "pH"], **_client_kw(certs))
    with pytest.raises(ConfigError, match="no sensor channel `pH`; the plant has V, OUR"):
        next(iter(source))


# ---- write-back -----------------------------------------------------------------------
def test_setpoints_refused_when_the_guard_is_off_and_clipped_when_on(
        certs, idle_server) -> None:
    rec = {"setpoints": {"F": (0.5, "L/h")}, "t": 3.0}
    before = idle_server.setpoint("F")
    off = SetpointGuard(Bioreactor())
    with OpcUaSink(idle_server.url, guard=off, **_client_kw(certs)) as sink:
        assert sink.write(rec) == {}
    assert off.counters == {"written": 0, "refused": 1, "clipped": 0}
    assert idle_server.setpoint("F") == before == 0.01
    assert json.loads(idle_server.recommendation)["written"] == {}
    on = SetpointGuard(Bioreactor(), enabled=True, envelope={"F": (0.0, 0.3)})
    with OpcUaSink(idle_server.url, guard=on, **_client_kw(certs)) as sink:
        assert sink.write(rec) == {"F": 0.3}
        assert idle_server.setpoint("F") == 0.3
        assert sink.write({"setpoints": {"F": (0.1, "L/h")}}, t=4.0) == {"F": 0.1}
    assert idle_server.setpoint("F") == 0.1
    assert on.counters == {"written": 2, "refused": 0, "clipped": 1}
    assert idle_server.writes[-2:] == [("F", 0.3), ("F", 0.1)]
    with pytest.raises(ConfigError, match="SetpointGuard"):
        OpcUaSink(idle_server.url, guard=None, **_client_kw(certs))  # type: ignore[arg-type]


# ---- bounded waits --------------------------------------------------------------------
def test_a_silent_server_times_out_stop_ends_the_stream_and_a_restart_resumes(
        certs, plant) -> None:
    stream = plant_batches(plant)
    first, second = next(stream), next(stream)
    go, more = threading.Event(), threading.Event()

    def slow() -> Iterator[Batch]:
        go.wait(TIMEOUT)
        yield first
        more.wait(TIMEOUT)        # the plant falls silent after one batch
        yield second

    with _server(certs, slow()) as srv:
        try:
            silent = OpcUaSource(srv.url, **_client_kw(certs, timeout=0.5))
            with pytest.raises(TimeoutError, match=f"{srv.url}: no batch within 0.5 s"):
                next(iter(silent))
            go.set()
            source = OpcUaSource(srv.url, **_client_kw(certs))
            got = []
            for b in source:
                got.append(b)
                threading.Timer(0.2, source.stop).start()
            assert _rows(got) == _rows([first])
            assert not srv.wait_done(0.0)
            # a restarted twin continues after what was acknowledged: no sample twice
            threading.Timer(0.5, more.set).start()
            resumed = list(OpcUaSource(srv.url, channels=["OUR"], **_client_kw(certs)))
            assert _rows(resumed) == [r for r in _rows([second]) if r[1] == "OUR"]
            assert srv.wait_done(TIMEOUT)
        finally:
            go.set()
            more.set()
    assert srv.counters == {"batches": 2, "frames": 3, "samples": len(_rows([first, second]))}
