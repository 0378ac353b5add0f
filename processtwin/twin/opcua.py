"""OPC UA connector: a simulated plant served as a PLC would, and the twin's client.

Address space (namespace :data:`NAMESPACE`, string node ids):

``Plant/Sensors/<channel>``  (``Sensors.<channel>``, Double)
    The PLC view of a sensor: its value, SourceTimestamp = ``start_time`` + t (model
    time mapped to UTC, 100 ns resolution), and an ``EngineeringUnits`` property.
``Plant/Sensors/<channel>/Sample``  (``Sensors.<channel>.Sample``, Double[3])
    ``[frame, t, value]``, written together with the value: the exact model sampling
    time ``t`` as a float64 (a SourceTimestamp cannot carry it exactly) and the number
    of the frame the sample belongs to. The twin subscribes to these.
``Plant/Stream/Frame``  (String, JSON) and ``Plant/Stream/Ack``  (Int64, writable)
    One frame is a set of samples with at most one per channel: ``{"seq", "batch",
    "channels", "last", "inputs", "end"}``. A :class:`~processtwin.twin.core.Batch` is
    published as one frame, or several when a channel occurs more than once in it;
    the last frame of a batch carries the batch's input changes.
``Plant/Setpoints/<input>``  (Double, writable)
    One per scalar manipulated input of the model: what the twin asks for.
``Plant/Twin/Recommendation``  (String, JSON, writable)
    The last recommendation the twin wrote and what the guard let through.

Why frames and acknowledgements: a data-change subscription samples node values, so
two changes of one node within a publishing interval, or a change to an equal value,
can reach the client as one notification. The server therefore publishes frame k+1
only after the client has written ``Ack = k`` (all samples of frame k received), and
every sample node value includes its frame number (so it always changes). Every
published sample arrives exactly once, in order per channel, whatever the publishing
interval or queue size, and the client rebuilds the published batches exactly (same
samples, order and inputs): estimates equal in-process replay bit for bit. The plant
server therefore runs at the pace of its one twin; ``paced`` batches slow it down to
real time. A client that connects later (a restarted twin) continues after the last
acknowledged frame, so no sample is taken twice.

Security: only Basic256Sha256 with SignAndEncrypt is offered (no None endpoint); a
client must present a certificate the server was told to trust (checked when the
session is created, and again when it is activated, so a client on an unencrypted
channel is refused too), optionally with a user name and password.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import hmac
import json
import logging
import math
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Client, Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ..declare import TIME_UNITS
from ..errors import ConfigError
from ..model import Model
from .certs import application_uri_of, load_certificate
from .core import Batch, TwinRecommendation
from .setpoints import SetpointGuard, setpoints_of
from .validate import Sample

__all__ = ["NAMESPACE", "OpcUaSink", "OpcUaSource", "PlantServer"]

log = logging.getLogger("processtwin.twin.opcua")

#: Namespace URI of the plant's nodes.
NAMESPACE = "urn:processtwin:plant"
_POLICY = ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt
_END = object()
#: Session timeout the client asks for [ms] (the asyncua server's maximum).
_SESSION_TIMEOUT_MS = 600_000


class _Loop:
    """An asyncio event loop in a daemon thread; coroutines are run on it with a
    timeout, and closing it cancels what is left, so nothing leaks between tests."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def submit(self, coro: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Any, timeout: float, what: str) -> Any:
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"{what}: no result within {timeout:g} s.") from None

    def close(self, timeout: float) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


def _file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"`{what}`: no file {p}.")
    return p


def _fingerprint(cert: x509.Certificate | bytes | None) -> bytes | None:
    if cert is None or cert == b"":
        return None
    if isinstance(cert, bytes | bytearray):
        cert = x509.load_der_x509_certificate(bytes(cert))
    return cert.fingerprint(hashes.SHA256())


def _setpoint_inputs(model: Model) -> dict[str, str]:
    """The scalar manipulated inputs (name → units): the ones a setpoint can write."""
    return {n: v.units for n, v in model.inputs().items()
            if v.kind == "manipulated" and v.shape is None}


def _jsonable(v: Any) -> Any:
    return np.asarray(v).tolist() if isinstance(v, np.ndarray | list | tuple) else v


class _Users:
    """asyncua user manager: a session is activated only on a secure channel whose
    peer certificate is trusted, and with the right user name and password if set."""

    def __init__(self, trusted: set[bytes], username: str | None, password: str | None
                 ) -> None:
        self.trusted, self.username, self.password = trusted, username, password

    def get_user(self, iserver: Any, username: str | None = None,
                 password: str | None = None, certificate: Any = None) -> User | None:
        del iserver
        if _fingerprint(certificate) not in self.trusted:
            log.warning("session refused: no trusted client certificate on the channel")
            return None
        if self.username is not None and not (
                hmac.compare_digest(str(username or ""), self.username)
                and hmac.compare_digest(str(password or ""), str(self.password))):
            log.warning("session refused: wrong user name or password (%r)", username)
            return None
        return User(role=UserRole.User, name=username or "twin")


class PlantServer:
    """A simulated plant behind an encrypted OPC UA server, run in a background thread.

    Parameters
    ----------
    model : Model
        The plant's model: its outputs are the sensor channels (with their units), its
        scalar manipulated inputs the setpoint nodes.
    batches : iterable of Batch
        What the plant measures, in order (e.g. :func:`~processtwin.twin.sources.
        plant_batches`, optionally :func:`~processtwin.twin.sources.paced`); iterated
        in a worker thread, so a paced source does not block the server.
    certificate, private_key : str or Path
        The server's application instance certificate (DER or PEM) and key (PEM).
    trusted : str, Path or sequence of them
        Certificates of the clients allowed to connect (any other is refused).
    username, password : str, optional
        Credentials a client must also give (default: none, the certificate is the
        identity).
    host : str
        Address to listen on.
    port : int
        TCP port, 0: a free one (see :attr:`url`).
    setpoints : mapping, optional
        Initial setpoint values [input units] (default 0.0).
    start_time : datetime.datetime, optional
        UTC time of model time 0 for the SourceTimestamps (default: when started).
    timeout : float
        Limit of starting and stopping [s].

    Attributes
    ----------
    url : str
        The endpoint, once started.
    counters : dict
        ``batches``, ``frames`` and ``samples`` published (and acknowledged).
    writes : list of (str, float)
        Every setpoint a client wrote, in order [input units].
    """

    def __init__(self, model: Model, batches: Iterable[Batch], *, certificate: str | Path,
                 private_key: str | Path, trusted: str | Path | Sequence[str | Path],
                 username: str | None = None, password: str | None = None,
                 host: str = "127.0.0.1", port: int = 0,
                 setpoints: Mapping[str, float] | None = None,
                 start_time: datetime.datetime | None = None, timeout: float = 30.0
                 ) -> None:
        if (username is None) != (password is None):
            raise ConfigError("`username` and `password` go together; got only one.")
        self.model = model
        self._batches = batches
        self.certificate = _file(certificate, "certificate")
        self.private_key = _file(private_key, "private_key")
        trusted = [trusted] if isinstance(trusted, str | Path) else list(trusted)
        if not trusted:
            raise ConfigError("`trusted`: at least one client certificate is needed.")
        self._trusted = {_fingerprint(load_certificate(_file(p, "trusted"))) for p in trusted}
        self._users = _Users(self._trusted, username, password)  # type: ignore[arg-type]
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self.units = _setpoint_inputs(model)
        self._initial = {n: 0.0 for n in self.units}
        for n, v in (setpoints or {}).items():
            if n not in self.units:
                raise ConfigError(f"setpoint `{n}`: not a scalar manipulated input of "
                                  f"`{model.name}`; those are {', '.join(self.units)}.")
            self._initial[n] = float(v)
        self.channels = list(model.layout.outputs.flat_names())
        lay = model.layout.outputs
        self._channel_units = {c: lay.leaf(c.split("[")[0]).var.units for c in self.channels}
        self.start_time = start_time
        self.seconds_per_unit = float(TIME_UNITS.get(model.time_unit, 1))
        self.url = ""
        self.counters = {"batches": 0, "frames": 0, "samples": 0}
        self.writes: list[tuple[str, float]] = []
        self._loop: _Loop | None = None
        self._publisher: concurrent.futures.Future | None = None
        self._done = threading.Event()
        self._acked = 0
        self._used = False

    # ---- life cycle -----------------------------------------------------------------
    def start(self) -> PlantServer:
        """Listen and start publishing; returns ``self``.

        Raises
        ------
        ConnectionError
            The server could not listen on :attr:`host`/:attr:`port`.
        """
        if self._used:
            raise ConfigError("this PlantServer was started before; its batches are "
                              "consumed, make a new one.")
        self._used = True
        self._loop = _Loop("processtwin-opcua-plant")
        try:
            self._loop.run(self._start(), self.timeout, "OPC UA plant server start")
        except OSError as e:
            self.stop()
            raise ConnectionError(f"OPC UA plant server: cannot listen on {self.host}:"
                                  f"{self.port} ({e}).") from e
        except BaseException:
            self.stop()
            raise
        self._publisher = self._loop.submit(self._publish())
        log.info("plant server %s: Basic256Sha256 SignAndEncrypt, %d channels", self.url,
                 len(self.channels))
        return self

    def stop(self) -> None:
        """Stop publishing and close the server (idempotent)."""
        lp, self._loop = self._loop, None
        if lp is None:
            return
        if self._publisher is not None:
            self._publisher.cancel()
        if getattr(self, "_server", None) is not None:
            try:
                lp.run(self._server.stop(), self.timeout, "OPC UA plant server stop")
            except Exception as e:      # closing: report, never mask the caller's error
                log.warning("plant server %s: stop failed: %s", self.url, e)
        lp.close(self.timeout)

    def __enter__(self) -> PlantServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_done(self, timeout: float) -> bool:
        """Wait until the end of the data has been acknowledged by the twin.

        Parameters
        ----------
        timeout : float
            Longest wait [s].

        Returns
        -------
        bool
            Whether everything was published and acknowledged.
        """
        return self._done.wait(timeout)

    # ---- what clients wrote -----------------------------------------------------------
    def setpoint(self, name: str) -> float:
        """The value of the setpoint node ``name`` [input units].

        Parameters
        ----------
        name : str
            A scalar manipulated input of the model.

        Returns
        -------
        float
            The node's current value.
        """
        if name not in self.units:
            raise ConfigError(f"no setpoint node `{name}`; there are "
                              f"{', '.join(self.units) or '(none)'}.")
        self._started()
        return float(self._server.read_attribute_value(self._nid(f"Setpoints.{name}")
                                                       ).Value.Value)

    @property
    def recommendation(self) -> str:
        """The text of the recommendation node (JSON; empty before the first write)."""
        self._started()
        return str(self._server.read_attribute_value(self._nid("Twin.Recommendation")
                                                     ).Value.Value)

    def _started(self) -> None:
        if self._loop is None:
            raise ConfigError("the PlantServer is not running; call `start()` first.")

    # ---- inside the server's loop -------------------------------------------------------
    def _nid(self, name: str) -> ua.NodeId:
        return ua.NodeId(name, self._idx)

    async def _start(self) -> None:
        srv = Server(user_manager=self._users)  # type: ignore[arg-type]
        await srv.init()
        srv.set_endpoint(f"opc.tcp://{self.host}:{self.port}/processtwin/plant")
        srv.set_server_name(f"processtwin plant ({self.model.name})")
        srv.application_type = ua.ApplicationType.Server
        await srv.set_application_uri(application_uri_of(self.certificate))
        await srv.load_certificate(str(self.certificate))
        await srv.load_private_key(str(self.private_key))
        srv.set_security_policy([_POLICY])
        srv.set_identity_tokens([ua.UserNameIdentityToken if self._users.username
                                 else ua.AnonymousIdentityToken])
        srv.set_certificate_validator(self._validate)
        self._server = srv
        self._idx = idx = await srv.register_namespace(NAMESPACE)
        plant = await srv.nodes.objects.add_object(self._nid("Plant"), f"{idx}:Plant")
        sensors = await plant.add_folder(self._nid("Sensors"), f"{idx}:Sensors")
        for c in self.channels:
            var = await sensors.add_variable(self._nid(f"Sensors.{c}"), f"{idx}:{c}", math.nan,
                                             varianttype=ua.VariantType.Double)
            unit = self._channel_units[c]
            await var.add_property(self._nid(f"Sensors.{c}.EngineeringUnits"),
                                   "0:EngineeringUnits",
                                   ua.EUInformation(NamespaceUri="", UnitId=-1,
                                                    DisplayName=ua.LocalizedText(unit),
                                                    Description=ua.LocalizedText(unit)))
            await var.add_variable(self._nid(f"Sensors.{c}.Sample"), f"{idx}:Sample",
                                   [0.0, math.nan, math.nan],
                                   varianttype=ua.VariantType.Double)
        stream = await plant.add_folder(self._nid("Stream"), f"{idx}:Stream")
        await stream.add_variable(self._nid("Stream.Frame"), f"{idx}:Frame", "",
                                  varianttype=ua.VariantType.String)
        ack = await stream.add_variable(self._nid("Stream.Ack"), f"{idx}:Ack", 0,
                                        varianttype=ua.VariantType.Int64)
        await ack.set_writable()
        folder = await plant.add_folder(self._nid("Setpoints"), f"{idx}:Setpoints")
        for n, v in self._initial.items():
            node = await folder.add_variable(self._nid(f"Setpoints.{n}"), f"{idx}:{n}", v,
                                             varianttype=ua.VariantType.Double)
            await node.set_writable()
            srv.set_attribute_value_setter(node.nodeid, self._setpoint_written)
        twin = await plant.add_folder(self._nid("Twin"), f"{idx}:Twin")
        rec = await twin.add_variable(self._nid("Twin.Recommendation"), f"{idx}:Recommendation",
                                      "", varianttype=ua.VariantType.String)
        await rec.set_writable()
        self._ack_event = asyncio.Event()
        srv.set_attribute_value_setter(ack.nodeid, self._ack_written)
        await srv.start()
        self.port = srv.bserver.port  # type: ignore[union-attr]
        self.url = f"opc.tcp://{self.host}:{self.port}/processtwin/plant"
        if self.start_time is None:
            self.start_time = datetime.datetime.now(datetime.UTC)

    async def _validate(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        """At CreateSession: a well-formed OPC UA client certificate (validity, URI,
        key usage) that is one of the trusted ones."""
        opts = CertificateValidatorOptions.EXT_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        await CertificateValidator(opts).validate(cert, app)
        if _fingerprint(cert) not in self._trusted:
            log.warning("plant server %s: refused untrusted client certificate %s (%s)",
                        self.url, cert.subject.rfc4514_string(), app.ApplicationUri)
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    def _ack_written(self, node: Any, attr: ua.AttributeIds, dv: ua.DataValue) -> None:
        node.attributes[attr].value = dv
        self._acked = max(self._acked, int(dv.Value.Value))
        self._ack_event.set()

    def _setpoint_written(self, node: Any, attr: ua.AttributeIds, dv: ua.DataValue) -> None:
        node.attributes[attr].value = dv
        name = str(node.nodeid.Identifier).removeprefix("Setpoints.")
        self.writes.append((name, float(dv.Value.Value)))
        log.info("plant server: setpoint %s = %g %s", name, dv.Value.Value, self.units[name])

    async def _write(self, name: str, value: Any, vtype: ua.VariantType,
                     stamp: datetime.datetime | None = None) -> None:
        await self._server.write_attribute_value(
            self._nid(name), ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=stamp))

    def _stamp(self, t: float) -> datetime.datetime | None:
        try:
            return self.start_time + datetime.timedelta(seconds=t * self.seconds_per_unit)
        except (OverflowError, ValueError, TypeError):   # a clock jump beyond year 9999
            return None

    async def _frame(self, seq: int, info: dict[str, Any]) -> None:
        """Write one frame and wait until the twin has taken it."""
        await self._write("Stream.Frame", json.dumps({"seq": seq, **info}),
                          ua.VariantType.String)
        while self._acked < seq:
            self._ack_event.clear()
            if self._acked < seq:
                await self._ack_event.wait()
        self.counters["frames"] += 1

    async def _publish(self) -> None:
        loop = asyncio.get_running_loop()
        it = iter(self._batches)
        seq = 0
        try:
            for k in range(2**62):
                b = await loop.run_in_executor(None, next, it, _END)
                if b is _END:
                    break
                frames: list[list[Sample]] = [[]]
                for s in b.samples:   # a channel at most once per frame, order kept
                    if any(x.channel == s.channel for x in frames[-1]):
                        frames.append([])
                    frames[-1].append(s)
                for j, frame in enumerate(frames):
                    seq += 1
                    for s in frame:
                        try:
                            v = float(s.value)
                        except (TypeError, ValueError):  # a PLC Double: NaN, quarantined
                            log.warning("plant server: %s = %r at t=%r is not a number; "
                                        "published as NaN", s.channel, s.value, s.t)
                            v = math.nan
                        t = float(s.t)
                        stamp = self._stamp(t)
                        await self._write(f"Sensors.{s.channel}", v, ua.VariantType.Double,
                                          stamp)
                        await self._write(f"Sensors.{s.channel}.Sample", [float(seq), t, v],
                                          ua.VariantType.Double, stamp)
                    last = j == len(frames) - 1
                    inputs = ({n: _jsonable(v) for n, v in b.inputs.items()}
                              if last and b.inputs is not None else None)
                    await self._frame(seq, {"batch": k, "channels": [s.channel for s in frame],
                                            "last": last, "inputs": inputs, "end": False})
                    self.counters["samples"] += len(frame)
                self.counters["batches"] += 1
            await self._frame(seq + 1, {"batch": None, "channels": [], "last": True,
                                        "inputs": None, "end": True})
            self._done.set()
            log.info("plant server %s: all %d batches published and acknowledged", self.url,
                     self.counters["batches"])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("plant server %s: publishing failed", self.url)


class _Session:
    """One encrypted client session on its own event loop (shared code of the source
    and the sink)."""

    def __init__(self, url: str, *, certificate: str | Path | None, private_key: str | Path,
                 server_certificate: str | Path, username: str | None,
                 password: str | None, timeout: float) -> None:
        if certificate is None:
            raise ConfigError(f"OPC UA endpoint {url}: a client `certificate` is required; "
                              "the plant server offers only Basic256Sha256 SignAndEncrypt.")
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ConfigError(f"`timeout` must be > 0 [s], got {timeout!r}.")
        if (username is None) != (password is None):
            raise ConfigError("`username` and `password` go together; got only one.")
        self.url = url
        self.certificate = _file(certificate, "certificate")
        self.private_key = _file(private_key, "private_key")
        self.server_certificate = _file(server_certificate, "server_certificate")
        self.uri = application_uri_of(self.certificate)
        self.username, self.password, self.timeout = username, password, float(timeout)
        self.loop: _Loop | None = None
        self.client: Client | None = None
        self.idx = 0

    def open(self) -> None:
        self.loop = _Loop("processtwin-opcua-client")
        try:
            # the client's own request timeout fires first; this one bounds the whole
            # sequence (socket, hello, channel, session, activation)
            self.loop.run(self._connect(), 4 * self.timeout, f"OPC UA endpoint {self.url}")
        except TimeoutError:
            self.close()
            raise ConnectionError(f"OPC UA endpoint {self.url}: no answer within "
                                  f"{4 * self.timeout:g} s (is {self.server_certificate} "
                                  "the server's certificate?).") from None
        except BaseException:
            self.close()
            raise

    async def _connect(self) -> None:
        c = Client(self.url, timeout=self.timeout)
        c.application_uri = self.uri
        c.name = "processtwin twin"
        c.session_timeout = _SESSION_TIMEOUT_MS
        if self.username is not None:
            c.set_user(self.username)
            c.set_password(str(self.password))
        try:
            await c.set_security(SecurityPolicyBasic256Sha256,
                                 certificate=str(self.certificate),
                                 private_key=str(self.private_key),
                                 server_certificate=str(self.server_certificate),
                                 mode=ua.MessageSecurityMode.SignAndEncrypt)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"OPC UA endpoint {self.url}: cannot load the client key "
                              f"{self.private_key} or a certificate ({e}).") from e
        try:
            await c.connect()
        except Exception as e:
            c.disconnect_socket()
            raise ConnectionError(f"OPC UA endpoint {self.url}: {_why(e, self)}") from e
        except BaseException:       # cancelled: still close the socket
            c.disconnect_socket()
            raise
        self.client = c
        try:
            self.idx = await c.get_namespace_index(NAMESPACE)
        except ValueError:
            await c.disconnect()
            self.client = None
            raise ConfigError(f"OPC UA endpoint {self.url}: no namespace {NAMESPACE}; not "
                              "a processtwin plant server.") from None

    def node(self, name: str) -> Any:
        return self.client.get_node(ua.NodeId(name, self.idx))  # type: ignore[union-attr]

    def run(self, coro: Any, what: str) -> Any:
        if self.loop is None:
            raise ConnectionError(f"OPC UA endpoint {self.url}: not connected.")
        return self.loop.run(coro, self.timeout, f"OPC UA endpoint {self.url}: {what}")

    def close(self) -> None:
        lp = self.loop
        if lp is None:
            return
        if self.client is not None:
            try:
                lp.run(self.client.disconnect(), self.timeout, "disconnect")
            except Exception as e:
                log.warning("OPC UA endpoint %s: disconnect failed: %s", self.url, e)
            self.client = None
        lp.close(self.timeout)
        self.loop = None


def _why(e: BaseException, s: _Session) -> str:
    """What a failed connection means, in the words of the one who configures it."""
    name = type(e).__name__
    if "BadCertificateUntrusted" in name:
        return f"the server does not trust the client certificate {s.certificate}."
    if "BadCertificate" in name:
        return f"the server refused the client certificate {s.certificate} ({name})."
    if "BadUserAccessDenied" in name:
        return "access denied (certificate, user name or password not accepted)."
    if "BadIdentityToken" in name:
        return ("identity not accepted (does the server want a user name and password?) "
                f"({name}).")
    if isinstance(e, ConnectionRefusedError):
        return "connection refused: no server listens there."
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return (f"no answer within {s.timeout:g} s (is {s.server_certificate} the "
                "server's certificate?).")
    if "mismatch" in str(e).lower():
        return f"the server's certificate is not {s.server_certificate}."
    return f"{name}: {e}"


class OpcUaSource:
    """The plant's samples over OPC UA, as batches for a twin.

    Iterating connects (Basic256Sha256 SignAndEncrypt), subscribes to the sample nodes
    of ``channels`` and yields each published batch exactly (see the module notes on
    frames), stamped with the units the server declares; it ends when the server
    signals the end of the data or :meth:`stop` is called. A source is iterated once.

    Parameters
    ----------
    url : str
        The server's endpoint (``opc.tcp://host:port/path``).
    channels : sequence of str, optional
        Flat channel names to subscribe to (default: every sensor node).
    certificate, private_key : str or Path
        This client's certificate (DER or PEM; its subjectAltName URI is announced as
        the application URI) and private key (PEM).
    server_certificate : str or Path
        The certificate the server must present.
    username, password : str, optional
        Credentials, when the server wants them.
    timeout : float
        Limit of connecting and of the wait for the next batch [s]; a silent server
        raises :class:`TimeoutError`.
    publishing_interval : float
        Requested publishing interval of the subscription [ms].
    queue_size : int
        Requested queue size of each monitored item (the frame protocol needs 1).

    Attributes
    ----------
    counters : dict
        ``batches``, ``frames`` and ``samples`` received.
    """

    def __init__(self, url: str, *, channels: Sequence[str] | None = None,
                 certificate: str | Path | None, private_key: str | Path,
                 server_certificate: str | Path, username: str | None = None,
                 password: str | None = None, timeout: float = 30.0,
                 publishing_interval: float = 5.0, queue_size: int = 16) -> None:
        self._s = _Session(url, certificate=certificate, private_key=private_key,
                           server_certificate=server_certificate, username=username,
                           password=password, timeout=timeout)
        self.url, self.timeout = url, float(timeout)
        self.channels = None if channels is None else list(channels)
        self.publishing_interval, self.queue_size = float(publishing_interval), int(queue_size)
        self.counters = {"batches": 0, "frames": 0, "samples": 0}
        self._q: queue.Queue = queue.Queue()
        self._used = False
        self._by_node: dict[Any, str] = {}
        self._units: dict[str, str] = {}
        self._pending: dict[int, dict[str, tuple[float, float]]] = {}
        self._markers: dict[int, dict[str, Any]] = {}
        self._expected: int | None = None
        self._batch: list[Sample] = []

    def __iter__(self) -> Iterator[Batch]:
        if self._used:
            raise ConfigError(f"OPC UA source {self.url}: already iterated; make a new one.")
        self._used = True
        self._s.open()
        try:
            self._s.run(self._subscribe(), "subscribe")
            while True:
                try:
                    item = self._q.get(timeout=self.timeout)
                except queue.Empty:
                    raise TimeoutError(f"OPC UA endpoint {self.url}: no batch within "
                                       f"{self.timeout:g} s ({self._waiting()}).") from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._s.close()

    def stop(self) -> None:
        """End the iteration after the batches already received (thread-safe)."""
        self._q.put(_END)

    def _waiting(self) -> str:
        k = self._expected
        if k is None:
            return "no frame seen yet"
        have = set(self._pending.get(k, {}))
        want = [c for c in self._markers.get(k, {}).get("channels", []) if c in self._units]
        return (f"frame {k}: " + ("marker not received" if k not in self._markers else
                                  f"missing {', '.join(c for c in want if c not in have)}"))

    async def _subscribe(self) -> None:
        s = self._s
        kids = await s.node("Sensors").get_children()
        have = [str((await k.read_browse_name()).Name) for k in kids]
        names = have if self.channels is None else self.channels
        unknown = [c for c in names if c not in have]
        if unknown:
            raise ConfigError(f"OPC UA endpoint {self.url}: no sensor channel "
                              f"{', '.join(f'`{c}`' for c in unknown)}; the plant has "
                              f"{', '.join(have)}.")
        units = await s.client.read_values(  # type: ignore[union-attr]
            [s.node(f"Sensors.{c}.EngineeringUnits") for c in names])
        for c, u in zip(names, units, strict=True):
            if not isinstance(u, ua.EUInformation):
                raise ConfigError(f"OPC UA endpoint {self.url}: no sensor channel `{c}`.")
            self._units[c] = u.DisplayName.Text
        nodes = [s.node(f"Sensors.{c}.Sample") for c in names] + [s.node("Stream.Frame")]
        self._by_node = {n.nodeid: c for n, c in zip(nodes, [*names, ""], strict=True)}
        self._ack = s.node("Stream.Ack")
        # frames up to the last acknowledged one were taken (by a twin before a restart):
        # continue with the next, so none is taken twice
        self._expected = int(await self._ack.read_value()) + 1
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.publishing_interval,
            # a keep-alive every second when idle; the subscription lives on without
            # publish requests for the lifetime count of intervals
            RequestedMaxKeepAliveCount=max(1, math.ceil(1000.0 / self.publishing_interval)),
            RequestedLifetimeCount=10_000, MaxNotificationsPerPublish=10_000,
            PublishingEnabled=True, Priority=0)
        sub = await s.client.create_subscription(params, self)  # type: ignore[union-attr]
        await sub.subscribe_data_change(nodes, queuesize=self.queue_size,
                                        sampling_interval=0.0)
        log.info("OPC UA source %s: subscribed to %d channels", self.url, len(names))

    async def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        """asyncua's subscription callback (in the client's loop): collect, complete
        frames, acknowledge.

        Parameters
        ----------
        node : asyncua.Node
            The node that changed.
        val : Any
            Its new value.
        data : Any
            The notification (unused).
        """
        del data
        name = self._by_node.get(node.nodeid)
        if name is None:
            return
        if name == "":
            if not val:
                return      # nothing published yet
            marker = json.loads(val)
            if int(marker["seq"]) >= (self._expected or 0):
                self._markers[int(marker["seq"])] = marker
        else:
            seq, t, v = val
            if int(seq) >= (self._expected or 0):
                self._pending.setdefault(int(seq), {})[name] = (t, v)
        acked, end = self._complete()
        if acked is not None:
            try:
                await self._ack.write_value(ua.DataValue(ua.Variant(acked,
                                                                    ua.VariantType.Int64)))
            except Exception as e:
                self._q.put(ConnectionError(f"OPC UA endpoint {self.url}: acknowledging "
                                            f"frame {acked} failed ({e})."))
        if end:     # only once the server knows: the consumer closes the session next
            self._q.put(_END)

    def _complete(self) -> tuple[int | None, bool]:
        """Take every frame that is complete, in order (no awaits: one task at a time):
        the last one taken, to acknowledge, and whether it ends the data."""
        done = None
        while self._expected is not None and self._expected in self._markers:
            k = self._expected
            m = self._markers[k]
            got = self._pending.get(k, {})
            want = [c for c in m["channels"] if c in self._units]
            if any(c not in got for c in want):
                break
            self._batch += [Sample(got[c][0], c, got[c][1], self._units[c]) for c in want]
            self.counters["frames"] += 1
            self.counters["samples"] += len(want)
            del self._markers[k]
            self._pending = {j: p for j, p in self._pending.items() if j > k}
            self._expected, done = k + 1, k
            if m["end"]:
                return done, True
            if m["last"]:
                inputs = m["inputs"]
                if inputs is not None:
                    inputs = {n: np.asarray(v, dtype=float) if isinstance(v, list) else v
                              for n, v in inputs.items()}
                self._q.put(Batch(self._batch, inputs))
                self.counters["batches"] += 1
                self._batch = []
        return done, False

    def status_change_notification(self, status: Any) -> None:
        """asyncua's callback for a subscription status change: the end of the stream.

        Parameters
        ----------
        status : asyncua.ua.StatusChangeNotification
            The new status.
        """
        self._q.put(ConnectionError(f"OPC UA endpoint {self.url}: subscription status "
                                    f"changed to {status.Status}."))


class OpcUaSink:
    """Writes a twin's recommendations to the plant, guarded.

    Each :meth:`write` passes the recommendation's setpoints through the guard (off by
    default: nothing written, each refusal counted in ``guard.counters``), writes the
    values it lets through to the ``Setpoints`` nodes, and the recommendation, with
    what was written, as JSON to ``Twin/Recommendation``.

    Parameters
    ----------
    url : str
        The server's endpoint.
    guard : SetpointGuard
        The gate (:class:`~processtwin.twin.setpoints.SetpointGuard`).
    certificate, private_key, server_certificate : str or Path
        As for :class:`OpcUaSource`.
    username, password : str, optional
        Credentials, when the server wants them.
    timeout : float
        Limit of connecting and of each write [s].
    """

    def __init__(self, url: str, *, guard: SetpointGuard, certificate: str | Path | None,
                 private_key: str | Path, server_certificate: str | Path,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 30.0) -> None:
        if not isinstance(guard, SetpointGuard):
            raise ConfigError(f"`guard` must be a SetpointGuard, got {type(guard).__name__}.")
        self.guard = guard
        self._s = _Session(url, certificate=certificate, private_key=private_key,
                           server_certificate=server_certificate, username=username,
                           password=password, timeout=timeout)
        self.url = url

    def open(self) -> OpcUaSink:
        """Connect (also done by the first write); returns ``self``."""
        if self._s.loop is None:
            self._s.open()
        return self

    def write(self, recommendation: Any, t: float | None = None) -> dict[str, float]:
        """Write one recommendation's setpoints, as far as the guard allows.

        Parameters
        ----------
        recommendation : TwinRecommendation, Recommendation or dict
            What the optimiser proposed (see
            :func:`~processtwin.twin.setpoints.setpoints_of`).
        t : float, optional
            Model time of the write [model time unit] (default: the recommendation's
            ``t``).

        Returns
        -------
        dict
            Input → value written [input units] (empty when the guard refused).
        """
        if t is None:
            t = recommendation.t if isinstance(recommendation, TwinRecommendation) else \
                _get(recommendation, "t")
        if t is None:
            raise ConfigError("`t` is needed: the recommendation has no time.")
        wanted = setpoints_of(recommendation)
        allowed = self.guard.check(float(t), wanted)
        self.open()
        text = json.dumps({"t": float(t), "requested": wanted, "written": allowed,
                           "guard": dict(self.guard.counters)})
        self._s.run(self._write(allowed, text), "write setpoints")
        return allowed

    async def _write(self, allowed: Mapping[str, float], text: str) -> None:
        nodes = [self._s.node(f"Setpoints.{n}") for n in allowed]
        values = [ua.DataValue(ua.Variant(float(v), ua.VariantType.Double))
                  for v in allowed.values()]
        nodes.append(self._s.node("Twin.Recommendation"))
        values.append(ua.DataValue(ua.Variant(text, ua.VariantType.String)))
        await self._s.client.write_values(nodes, values)  # type: ignore[union-attr]
        log.info("OPC UA sink %s: wrote %s", self.url, allowed or "no setpoint")

    def close(self) -> None:
        """Disconnect."""
        self._s.close()

    def __enter__(self) -> OpcUaSink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _get(rec: Any, key: str) -> Any:
    rec = getattr(rec, "value", rec)
    return rec.get(key) if isinstance(rec, Mapping) else getattr(rec, key, None)
