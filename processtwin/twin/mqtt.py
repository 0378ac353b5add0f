"""MQTT connector: sensor samples from a broker into the twin, recommendations, alarms and
guarded setpoints back out.

Topics under a ``prefix`` (default ``processtwin``), payloads JSON:

========================================  =========================================
``{prefix}/sensors/{channel}``            one sample ``{"t", "value", "unit"}`` of a flat
                                          channel (``OUR``, ``T_air[2]``)
``{prefix}/sensors``                      one batch: a list of samples
                                          ``{"t", "channel", "value", "unit"}``, one
                                          such sample, or
                                          ``{"samples": [...], "inputs": {name: value}}``
``{prefix}/inputs/{name}``                an input the plant applies ``{"t", "value"}``
``{prefix}/recommendations``              what the twin recommends (:class:`MqttSink`)
``{prefix}/alarms``                       anomaly flags ``{"t", "flags"}``
``{prefix}/setpoints/{name}``             guarded write-back ``{"t", "value", "unit"}``
========================================  =========================================

Times are model time, values in the channel's units. Nothing the broker delivers is
dropped: a payload that cannot be read becomes a :class:`~processtwin.twin.Sample` whose
value is the raw text, so the validator quarantines it and the historian keeps the text.
The source holds a persistent session (``clean_session=False``, fixed client id, QoS 1):
after the broker goes away it reconnects, and what was queued meanwhile is delivered.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, suggest
from .core import Batch, Twin, TwinRecommendation
from .setpoints import SetpointGuard, setpoints_of
from .validate import Sample

try:
    import paho.mqtt.client as mqtt
except ImportError as e:  # pragma: no cover - an optional dependency
    raise ImportError("processtwin.twin.mqtt needs paho-mqtt >= 2.0: pip install "
                      "'processtwin[mqtt]'.") from e

__all__ = ["MqttConnection", "MqttSink", "MqttSource", "PublishReport", "publish_plant",
           "recommendation_payload"]

log = logging.getLogger("processtwin.twin.mqtt")

_TLS_KEYS = ("ca_certs", "certfile", "keyfile")
_POLL_S = 0.25          # longest blocking wait: errors and stop() are seen within it
_STOP = object()


def _check_prefix(prefix: str) -> str:
    if not (isinstance(prefix, str) and prefix and not prefix.startswith("/")
            and not prefix.endswith("/") and not set(prefix) & {"+", "#"}):
        raise ConfigError(f"`prefix`: expected a topic level like `plant1/twin` (no "
                          f"wildcards, no leading or trailing `/`), got {prefix!r}.")
    return prefix


def _check_qos(qos: int) -> int:
    if qos not in (0, 1, 2):
        raise ConfigError(f"`qos`: expected 0, 1 or 2, got {qos!r}.")
    return int(qos)


def _json(obj: Any) -> str:
    def default(v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        return str(v)

    return json.dumps(obj, default=default)


class MqttConnection:
    """One client connection to a broker: connects (waiting for the broker's answer),
    reconnects and re-subscribes after a loss, and counts acknowledged publications.

    Parameters
    ----------
    host : str
        Broker host name or address.
    port : int
        Broker TCP port.
    username, password : str, optional
        Credentials (``password`` needs ``username``).
    tls : mapping, optional
        ``ca_certs``, ``certfile``, ``keyfile`` (paths) for a TLS connection; ``None``:
        plain TCP.
    client_id : str, optional
        Client identifier; required for a persistent session (random otherwise).
    persistent : bool
        Keep the session at the broker (``clean_session=False``): subscriptions and
        queued QoS ≥ 1 messages survive a disconnection.
    on_message : callable, optional
        ``on_message(topic, payload)`` for each message received, called in the
        network thread (must be quick); with ``manual_ack``
        ``on_message(topic, payload, token)``, and the message is acknowledged to the
        broker only by :meth:`ack` ``(token)``.
    manual_ack : bool
        Acknowledge received QoS ≥ 1 messages only when told (:meth:`ack`), so that a
        message the application has not stored yet is redelivered after a crash.
    keepalive_s : int
        Keep-alive interval [s].
    connect_timeout_s : float
        Longest wait for the broker's answer to connect and subscribe [s].
    reconnect_delay_s : tuple of float
        ``(first, longest)`` wait before a reconnection attempt, doubling from the first
        [s].
    """

    def __init__(self, host: str, port: int, *, username: str | None = None,
                 password: str | None = None, tls: Mapping[str, str] | None = None,
                 client_id: str | None = None, persistent: bool = False,
                 on_message: Callable[..., None] | None = None, manual_ack: bool = False,
                 keepalive_s: int = 30, connect_timeout_s: float = 10.0,
                 reconnect_delay_s: tuple[float, float] = (0.5, 30.0)) -> None:
        if not (isinstance(host, str) and host):
            raise ConfigError(f"`host`: expected a host name or address, got {host!r}.")
        if not (isinstance(port, int) and 0 < port < 65536):
            raise ConfigError(f"`port`: expected a TCP port 1-65535, got {port!r}.")
        if password is not None and username is None:
            raise ConfigError("`password` given without `username`.")
        lo, hi = (float(x) for x in reconnect_delay_s)
        if not 0 < lo <= hi:
            raise ConfigError(f"`reconnect_delay_s`: expected (first, longest) with 0 < "
                              f"first <= longest [s], got {reconnect_delay_s!r}.")
        if persistent and not client_id:
            raise ConfigError("a persistent session needs a fixed `client_id`.")
        self.host, self.port, self.username = host, int(port), username
        self.client_id = client_id or f"processtwin-{uuid.uuid4().hex[:12]}"
        self.connect_timeout_s = float(connect_timeout_s)
        self.keepalive_s = int(keepalive_s)
        self._handler = on_message
        self.manual_ack = bool(manual_ack)
        self._options = (persistent, username, password, None if tls is None else dict(tls),
                         (lo, hi))
        self.client = self._new_client()      # checks the options now, not at connect
        self._used = False
        self._subs: list[tuple[str, int]] = []
        self._connack = threading.Event()
        self._suback = threading.Event()
        self._gone = threading.Event()        # set on every disconnection
        self._unsubacked: set[int] = set()    # mids of the UNSUBSCRIBEs answered
        self._synced = threading.Event()      # set on each of them
        self._lock = threading.Lock()
        self._acks: deque[int] = deque()      # mids acknowledged, appended by paho's thread
        self._outstanding: dict[int, int] = {}  # mid -> message number, not yet acked
        self._started = False
        self.connected = False
        #: The broker's refusal (or of a subscription), raised by :meth:`connect`.
        self.error: ConfigError | None = None
        self.counters = {"connects": 0, "disconnects": 0, "published": 0, "acked": 0,
                         "delivered_acked": 0, "ack_stale": 0, "close_syncs": 0}
        self._session = 0                     # connection number, for manual acks

    def __repr__(self) -> str:
        return f"MqttConnection({self.host}:{self.port}, client_id={self.client_id!r})"

    def _new_client(self) -> mqtt.Client:
        """A paho client with the options; one per connection attempt (paho keeps the
        sockets of its network thread for the client's lifetime)."""
        persistent, username, password, tls, (lo, hi) = self._options
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=not persistent, protocol=mqtt.MQTTv311,
                        manual_ack=self.manual_ack)
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            for k in tls:
                if k not in _TLS_KEYS:
                    raise ConfigError(f"`tls`: unknown key `{k}`{suggest(k, _TLS_KEYS)}")
            c.tls_set(**{k: tls.get(k) for k in _TLS_KEYS})
        # paho takes integral delays in its signature but waits with time.sleep: the
        # fractional delays the tests use work.
        c.reconnect_delay_set(lo, hi)  # type: ignore[arg-type]
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_subscribe, c.on_publish, c.on_message = (self._on_subscribe, self._on_publish,
                                                      self._on_message)
        c.on_unsubscribe = self._on_unsubscribe
        return c

    # ---- paho callbacks (network thread) -----------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            who = f"user `{self.username}`" if self.username else "no credentials"
            self.error = ConfigError(
                f"MQTT broker {self.host}:{self.port} refused the connection of client "
                f"`{self.client_id}` ({who}): {reason} (reason code {reason.value}); check "
                "the username, password and the broker's access rules.")
            log.error("%s", self.error)
            client.disconnect()       # no retries with credentials the broker refused
            self._connack.set()
            return
        self.connected = True
        self._session += 1
        self.counters["connects"] += 1
        if self.counters["connects"] > 1:
            log.info("reconnected to %s:%s (session present: %s)", self.host, self.port,
                     flags.session_present)
        if self._subs:
            self._suback.clear()
            client.subscribe(list(self._subs))
        self._connack.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._gone.set()
        if self.counters["connects"] == 0 and not self._connack.is_set():
            tls = self._options[3]
            why = (" over TLS: the broker did not accept the client certificate "
                   "(`certfile`/`keyfile`), or the listener wants another protocol"
                   if tls is not None else "; if the listener speaks TLS, configure `tls`")
            self.error = ConfigError(
                f"MQTT broker {self.host}:{self.port} closed the connection of client "
                f"`{self.client_id}` before answering it ({reason}){why}.")
            log.error("%s", self.error)
            client.disconnect()
            self._connack.set()
            return
        if self.connected:
            self.counters["disconnects"] += 1
            if reason.is_failure:
                log.warning("lost the connection to %s:%s (%s); reconnecting", self.host,
                            self.port, reason)
        self.connected = False

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list,
                      properties: Any) -> None:
        bad = [str(r) for r in reasons if r.is_failure]
        if bad:
            self.error = ConfigError(
                f"MQTT broker {self.host}:{self.port} refused the subscription to "
                f"{', '.join(t for t, _ in self._subs)}: {', '.join(bad)}.")
            log.error("%s", self.error)
        self._suback.set()

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                        properties: Any) -> None:
        self._unsubacked.add(mid)
        self._synced.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self._acks.append(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.manual_ack:
            token = (client, self._session, msg.mid, msg.qos)
            if self._handler is None:
                self.ack(token)
            else:
                self._handler(msg.topic, msg.payload, token)
        elif self._handler is not None:
            self._handler(msg.topic, msg.payload)

    def ack(self, token: tuple) -> bool:
        """Acknowledge a received message to the broker (with ``manual_ack``).

        Parameters
        ----------
        token : tuple
            The token ``on_message`` was called with.

        Returns
        -------
        bool
            True when acknowledged; False when it arrived on an earlier connection
            (the broker redelivers it on this one, as a duplicate).
        """
        client, session, mid, qos = token
        if qos == 0:
            return True
        if client is not self.client or session != self._session or not self.connected:
            self.counters["ack_stale"] += 1
            return False
        client.ack(mid, qos)
        self.counters["delivered_acked"] += 1
        return True

    # ---- use ---------------------------------------------------------------------------
    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe to ``topic``, now and after every reconnection.

        Parameters
        ----------
        topic : str
            Topic filter (wildcards allowed).
        qos : int
            Largest QoS the broker sends with.
        """
        self._subs.append((topic, _check_qos(qos)))
        if self.connected:
            self._suback.clear()
            self.client.subscribe(topic, qos)

    def connect(self) -> MqttConnection:
        """Connect and start the network thread, waiting for the broker's answer (and
        for the subscriptions to be granted); nothing happens when already connected.

        Returns
        -------
        MqttConnection
            ``self``.

        Raises
        ------
        ConfigError
            The broker refused the connection (credentials, access rules) or a
            subscription; the message names host:port and the broker's reason code.
        ConnectionError
            The broker cannot be reached.
        TimeoutError
            No answer within ``connect_timeout_s``.
        """
        if self._started:
            if self.error is not None:
                raise self.error
            return self
        if self._used:
            self.client = self._new_client()
            self.error = None
            self._connack.clear()
            self._outstanding.clear()
            self._acks.clear()
        self._used = True
        try:
            self.client.connect(self.host, self.port, keepalive=self.keepalive_s)
        except ssl.SSLError as e:
            self.client.loop_stop()
            _close_sockets_of(e)
            log.error("TLS handshake with MQTT broker %s:%s failed: %s", self.host,
                      self.port, e)
            raise ConnectionError(
                f"TLS handshake with MQTT broker {self.host}:{self.port} failed: {e}; check "
                "that `ca_certs` holds the certificate (or its CA) the broker presents and "
                "that it names this host.") from e
        except OSError as e:
            self.client.loop_stop()
            raise ConnectionError(f"MQTT broker {self.host}:{self.port} is not reachable: "
                                  f"{e}.") from e
        self._started = True
        self.client.loop_start()
        answered = self._connack.wait(self.connect_timeout_s)
        if answered and self.error is None and self._subs:
            answered = self._suback.wait(self.connect_timeout_s)
        if self.error is not None or not answered:
            err = self.error or TimeoutError(
                f"MQTT broker {self.host}:{self.port} did not answer within "
                f"{self.connect_timeout_s:g} s.")
            self.close()
            raise err
        return self

    def publish(self, topic: str, payload: str | bytes, *, qos: int = 1,
                retain: bool = False) -> int:
        """Publish one message; while disconnected it is queued and sent on reconnection.

        Parameters
        ----------
        topic : str
            Topic (no wildcards).
        payload : str or bytes
            Message body.
        qos : int
            Quality of service (1: acknowledged by the broker, resent until it is).
        retain : bool
            Ask the broker to keep it for later subscribers.

        Returns
        -------
        int
            The message's number (from 0), see :meth:`unacked`.

        Raises
        ------
        ConnectionError
            The connection was closed, or paho refused the message.
        """
        if not self._started:
            if self._used:
                raise ConnectionError(f"{self} is closed: publish to `{topic}` refused.")
            self.connect()
        with self._lock:
            self._settle()
            info = self.client.publish(topic, payload, qos=_check_qos(qos), retain=retain)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise ConnectionError(f"MQTT publish to {self.host}:{self.port} `{topic}` "
                                      f"failed: {mqtt.error_string(info.rc)}.")
            k = self.counters["published"]
            self.counters["published"] += 1
            self._outstanding[info.mid] = k
            return k

    def _settle(self) -> None:
        """Match acknowledgements to messages (caller holds the lock)."""
        while self._acks:
            if self._outstanding.pop(self._acks.popleft(), None) is not None:
                self.counters["acked"] += 1

    def unacked(self) -> list[int]:
        """Numbers of the messages the broker has not acknowledged yet.

        Returns
        -------
        list of int
            In publication order.
        """
        with self._lock:
            self._settle()
            return sorted(self._outstanding.values())

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the broker acknowledged every message published.

        Parameters
        ----------
        timeout_s : float
            Longest wait [s].

        Returns
        -------
        bool
            True when nothing is left unacknowledged.
        """
        deadline = time.monotonic() + timeout_s
        while self.unacked():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Disconnect and stop the network thread (a persistent session stays at the
        broker)."""
        if self._started:
            was = self.connected
            if was and self.counters["delivered_acked"]:
                self._sync()
            self._gone.clear()
            self.client.disconnect()
            # paho's thread stops without writing what is still queued (acknowledgements
            # of delivered messages): wait until the DISCONNECT behind them went out
            if was and not self._gone.wait(self.connect_timeout_s):
                log.warning("%s: the broker did not see the disconnection within %g s",
                            self, self.connect_timeout_s)
            self.client.loop_stop()
            self._started = False
        self.connected = False

    def _sync(self) -> None:
        """One round trip before disconnecting, so that the broker has processed the
        acknowledgements sent before it.

        A broker may read a new connection of the same client (a restarted twin taking
        over the persistent session) before the rest of the old one's socket: the
        acknowledgements still unread there are dropped and their messages redelivered.
        The broker answers an UNSUBSCRIBE (of a topic nobody subscribed to: the session
        is unchanged) only after the packets before it on this connection.
        """
        deadline = time.monotonic() + self.connect_timeout_s
        rc, mid = self.client.unsubscribe(_SYNC_TOPIC)
        while rc == mqtt.MQTT_ERR_SUCCESS and mid not in self._unsubacked:
            self._synced.clear()
            left = deadline - time.monotonic()
            if mid in self._unsubacked or left <= 0:
                break
            self._synced.wait(min(left, 0.05))
        if rc == mqtt.MQTT_ERR_SUCCESS and mid in self._unsubacked:
            self.counters["close_syncs"] += 1
        else:
            log.warning("%s: the broker did not confirm the acknowledgements within %g s "
                        "(they may be redelivered)", self, self.connect_timeout_s)


#: A topic filter nobody subscribes to: the close's round trip unsubscribes from it.
_SYNC_TOPIC = "$processtwin/close-sync"


def _close_sockets_of(error: BaseException) -> None:
    """Close the sockets a failed TLS handshake left open in paho's frames (paho-mqtt
    2.2 does not close them; they would linger until garbage collection)."""
    tb = error.__traceback__
    while tb is not None:
        for v in tb.tb_frame.f_locals.values():
            if isinstance(v, socket.socket):
                v.close()
        tb = tb.tb_next


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _sample(channel: str, obj: Any, raw: str) -> tuple[Sample, bool]:
    """One sample from a decoded payload: ``(sample, well formed)``; a malformed one keeps
    the raw text as its value (and its stated time, or NaN) for the quarantine."""
    if not isinstance(obj, dict):
        return Sample(math.nan, channel, raw), False
    t, v, unit = obj.get("t", math.nan), obj.get("value"), obj.get("unit")
    unit = unit if isinstance(unit, str) else None
    if _number(t) and _number(v) and (obj.get("unit") is None or unit is not None):
        return Sample(float(t), channel, float(v), unit), True
    return Sample(t, channel, raw, unit), False


def _input_value(v: Any) -> Any:
    if _number(v):
        return float(v)
    if isinstance(v, list) and v and all(_number(x) for x in v):
        return np.asarray(v, dtype=float)
    return None


class MqttSource:
    """Sensor samples from an MQTT broker as the twin's batches.

    Iterating yields a :class:`~processtwin.twin.Batch` per batch window: the samples
    that arrived within ``batch_window_s`` of the first, in arrival order. A message on
    ``{prefix}/sensors`` is a batch of its own; an input message (``{prefix}/inputs/...``)
    closes the batch it arrives in, whose inputs it sets (applied from the batch's last
    sampling time on). Iteration ends on :meth:`stop`, at ``until`` or after
    ``idle_timeout_s`` without a message; iterating again continues where it ended.

    Parameters
    ----------
    host : str
        Broker host name or address.
    port : int
        Broker TCP port.
    channels : sequence of str
        The flat channels the twin measures (a message of another channel is passed on,
        to be quarantined as ``unknown_channel``, and logged once).
    prefix : str
        Topic prefix of this plant.
    username, password : str, optional
        Credentials.
    tls : mapping, optional
        ``ca_certs``, ``certfile``, ``keyfile`` for TLS.
    client_id : str, optional
        Fixed client id of the persistent session; give one so that messages queued
        while the twin was down are delivered when it comes back (default: one made up
        for this object, valid across reconnections only).
    batch_window_s : float
        Arrival window of a batch [s].
    max_messages : int
        A batch also closes after this many messages: a broker holds back deliveries
        beyond its in-flight limit until they are acknowledged (Mosquitto: 20), so a
        longer window would only wait.
    qos : int
        Subscription QoS (1: nothing lost, duplicates possible, which the validator
        quarantines). A message is acknowledged to the broker only after the twin has
        taken the batch holding it (when the iteration asks for the next batch, or at
        :meth:`commit`), so what a crashed twin had not stored is delivered again.
    idle_timeout_s : float, optional
        End the iteration after this long without a message [s] (``None``: never).
    until : float, optional
        End the iteration after the batch with a sample stamped at or after ``until``
        [model time unit].
    connect_timeout_s : float
        Longest wait for the broker's answer [s].
    reconnect_delay_s : tuple of float
        ``(first, longest)`` wait before a reconnection attempt [s].
    """

    def __init__(self, host: str, port: int, *, channels: Sequence[str],
                 prefix: str = "processtwin", username: str | None = None,
                 password: str | None = None, tls: Mapping[str, str] | None = None,
                 client_id: str | None = None, batch_window_s: float = 0.05,
                 max_messages: int = 16, qos: int = 1,
                 idle_timeout_s: float | None = None, until: float | None = None,
                 connect_timeout_s: float = 10.0,
                 reconnect_delay_s: tuple[float, float] = (0.5, 30.0)) -> None:
        if isinstance(channels, str) or not channels or not all(
                isinstance(c, str) and c for c in channels):
            raise ConfigError(f"`channels`: expected a non-empty sequence of channel names, "
                              f"got {channels!r}.")
        if not (isinstance(batch_window_s, int | float) and batch_window_s >= 0):
            raise ConfigError(f"`batch_window_s`: expected a number >= 0 [s], got "
                              f"{batch_window_s!r}.")
        if idle_timeout_s is not None and not idle_timeout_s > 0:
            raise ConfigError(f"`idle_timeout_s`: expected a number > 0 [s] or None, got "
                              f"{idle_timeout_s!r}.")
        if not (isinstance(max_messages, int) and max_messages >= 1):
            raise ConfigError(f"`max_messages`: expected an integer >= 1, got "
                              f"{max_messages!r}.")
        self.max_messages = max_messages
        self.channels = list(channels)
        self.prefix = _check_prefix(prefix)
        self.batch_window_s = float(batch_window_s)
        self.idle_timeout_s = idle_timeout_s
        self.until = until
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.connection = MqttConnection(
            host, port, username=username, password=password, tls=tls,
            client_id=client_id or f"processtwin-source-{uuid.uuid4().hex[:12]}",
            persistent=True, on_message=self._on_message, manual_ack=True,
            connect_timeout_s=connect_timeout_s, reconnect_delay_s=reconnect_delay_s)
        self.connection.subscribe(f"{self.prefix}/sensors/#", _check_qos(qos))
        self.connection.subscribe(f"{self.prefix}/inputs/#", qos)
        #: ``messages`` received, ``samples`` and ``inputs`` made of them, ``malformed``
        #: (samples holding raw text), ``unknown_channel``, ``batches`` yielded.
        self.counters = {"messages": 0, "samples": 0, "inputs": 0, "malformed": 0,
                         "unknown_channel": 0, "batches": 0}
        self._unknown: set[str] = set()
        self._pending: list[Sample] = []
        self._opened = 0.0
        self._ready: list[Batch] = []
        self._tokens: list[tuple] = []        # of the messages in _pending
        self._ready_tokens: list[list[tuple]] = []
        self._taken: list[tuple] = []         # of the batches yielded, not yet acked

    @property
    def received_messages(self) -> int:
        """Messages the broker delivered so far."""
        return self.counters["messages"]

    def _on_message(self, topic: str, payload: bytes, token: tuple) -> None:
        self.counters["messages"] += 1
        self._queue.put((time.monotonic(), topic, payload, token))

    def commit(self) -> int:
        """Acknowledge to the broker the messages of every batch yielded so far.

        Call it once the twin has stored those batches (:func:`processtwin.twin.run`
        does after each); iterating on does it too.

        Returns
        -------
        int
            Messages acknowledged now.
        """
        taken, self._taken = self._taken, []
        return sum(self.connection.ack(tok) for tok in taken)

    def connect(self) -> MqttSource:
        """Connect and subscribe (see :meth:`MqttConnection.connect` for the errors).

        Returns
        -------
        MqttSource
            ``self``.
        """
        self.connection.connect()
        return self

    def stop(self) -> None:
        """End the iteration once the messages received so far are yielded."""
        self._queue.put(_STOP)

    def close(self) -> None:
        """Disconnect (the session, with what it queues, stays at the broker)."""
        self.connection.close()
        left = self._queue.qsize() + len(self._pending)
        if left:
            log.warning("closing %s with %d received messages not yet iterated",
                        self.connection, left)

    def __enter__(self) -> MqttSource:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- messages to samples -----------------------------------------------------------
    def _known(self, s: Sample) -> Sample:
        if s.channel not in self.channels:
            self.counters["unknown_channel"] += 1
            if s.channel not in self._unknown:
                self._unknown.add(s.channel)
                log.warning("samples of unknown channel `%s` on %s/sensors (quarantined)",
                            s.channel, self.prefix)
        return s

    def _parse_sample(self, channel: str, obj: Any, raw: str) -> Sample:
        s, ok = _sample(channel, obj, raw)
        self.counters["samples"] += 1
        self.counters["malformed"] += not ok
        return self._known(s)

    def _parse_batch(self, raw: str, obj: Any) -> Batch:
        """A message on ``{prefix}/sensors``: a list of samples or ``{samples, inputs}``."""
        items, inputs = obj, None
        if isinstance(obj, dict) and "samples" in obj:
            items, inputs = obj["samples"], obj.get("inputs")
        elif isinstance(obj, dict) and "channel" in obj:
            items = [obj]
        if not isinstance(items, list):
            return Batch([self._parse_sample("?", None, raw)])
        samples = [self._parse_sample(str(it["channel"]) if isinstance(it, dict)
                                      and "channel" in it else "?", it, _json(it))
                   for it in items]
        u: dict[str, Any] = {}
        if isinstance(inputs, dict):
            for name, v in inputs.items():
                x = _input_value(v)
                if x is None:
                    samples.append(self._parse_sample(f"inputs/{name}", None, _json(v)))
                else:
                    u[str(name)] = x
                    self.counters["inputs"] += 1
        elif inputs is not None:
            samples.append(self._parse_sample("inputs", None, _json(inputs)))
        return Batch(samples, u or None)

    def _take(self, arrival: float, topic: str, payload: bytes, token: tuple) -> None:
        """Turn one message into samples or inputs, closing batches into ``_ready``."""
        raw = payload.decode("utf-8", errors="replace")
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if self._pending and arrival >= self._opened + self.batch_window_s:
            self._close()
        rest = topic[len(self.prefix) + 1:] if topic.startswith(self.prefix + "/") else topic
        if rest == "sensors":
            self._close()
            self._ready.append(self._parse_batch(raw, obj))
            self._ready_tokens.append([token])
        elif rest.startswith("inputs/"):
            name = rest[len("inputs/"):]
            x = _input_value(obj.get("value")) if isinstance(obj, dict) else None
            if x is None:      # kept, with its text, as a sample to quarantine
                self._add(arrival, self._parse_sample(rest, obj, raw), token)
            else:
                self.counters["inputs"] += 1
                self._tokens.append(token)
                self._close({name: x})
        else:
            channel = rest[len("sensors/"):] if rest.startswith("sensors/") else rest
            self._add(arrival, self._parse_sample(channel, obj, raw), token)

    def _add(self, arrival: float, s: Sample, token: tuple) -> None:
        if not self._pending:
            self._opened = arrival
        self._pending.append(s)
        self._tokens.append(token)
        if len(self._tokens) >= self.max_messages:
            self._close()

    def _close(self, inputs: dict[str, Any] | None = None) -> None:
        if self._pending or inputs:
            self._ready.append(Batch(self._pending, inputs))
            self._ready_tokens.append(self._tokens)
            self._pending, self._tokens = [], []

    def _reached(self, b: Batch) -> bool:
        if self.until is None:
            return False
        return any(_number(s.t) and s.t >= self.until for s in b.samples)

    def __iter__(self) -> Iterator[Batch]:
        self.connect()
        last = time.monotonic()
        while True:
            while self._ready:
                b = self._ready.pop(0)
                self._taken += self._ready_tokens.pop(0)
                self.counters["batches"] += 1
                yield b
                self.commit()
                if self._reached(b):
                    return
            if self.connection.error is not None:
                raise self.connection.error
            now = time.monotonic()
            if self._pending:
                wait = self._opened + self.batch_window_s - now
            elif self.idle_timeout_s is not None:
                wait = last + self.idle_timeout_s - now
            else:
                wait = _POLL_S
            try:
                item = self._queue.get(timeout=min(max(wait, 0.0), _POLL_S))
            except queue.Empty:
                now = time.monotonic()
                if self._pending and now >= self._opened + self.batch_window_s:
                    self._close()
                elif (not self._pending and self.idle_timeout_s is not None
                      and now >= last + self.idle_timeout_s):
                    return
                continue
            if item is _STOP:
                self._close()
                while self._ready:
                    self._taken += self._ready_tokens.pop(0)
                    self.counters["batches"] += 1
                    yield self._ready.pop(0)
                    self.commit()
                return
            last = item[0]
            self._take(*item)


def recommendation_payload(recommendation: Any) -> dict[str, Any]:
    """A recommendation as the JSON published on ``{prefix}/recommendations``.

    Parameters
    ----------
    recommendation : TwinRecommendation, Recommendation or dict
        What the optimiser returned, or the twin's record of it.

    Returns
    -------
    dict
        ``t`` [model time unit], ``setpoints`` (name → ``{"value", "unit"}``),
        ``status``, ``fallback`` and ``text``.
    """
    t = recommendation.t if isinstance(recommendation, TwinRecommendation) else None
    rec = getattr(recommendation, "value", recommendation) \
        if isinstance(recommendation, TwinRecommendation) else recommendation
    get = rec.get if isinstance(rec, Mapping) else (lambda k, d=None: getattr(rec, k, d))
    sp = {}
    for name, v in (get("setpoints", None) or {}).items():
        value, unit = (v[0], v[1]) if isinstance(v, tuple | list) else (v, None)
        if isinstance(value, np.ndarray | np.generic):
            value = value.tolist()
        sp[str(name)] = {"value": value, "unit": unit}
    text = str(rec) if not isinstance(rec, Mapping) else get("text", None) or "; ".join(
        f"{n} = {d['value']} {d['unit'] or ''}".strip() for n, d in sp.items())
    t_rec = get("t", None)
    return {"t": float(t_rec if t_rec is not None else t if t is not None else math.nan),
            "setpoints": sp, "status": get("status", None),
            "fallback": bool(get("fallback", False)), "text": text}


class MqttSink:
    """Publishes what a twin says: recommendations, alarms and guarded setpoint writes.

    Parameters
    ----------
    connection : str, MqttConnection or MqttSource
        A broker host (a connection of the sink's own is made), or an existing
        connection to share (a source's).
    port : int
        Broker TCP port (with a host).
    prefix : str
        Topic prefix of this plant.
    guard : SetpointGuard, optional
        Gate of setpoint writes; ``None``: write-back disabled (every write refused,
        counted and logged), as with a disabled guard.
    qos : int
        Publication QoS.
    username, password : str, optional
        Credentials (with a host).
    tls : mapping, optional
        ``ca_certs``, ``certfile``, ``keyfile`` (with a host).
    client_id : str, optional
        Client id (with a host).
    """

    def __init__(self, connection: str | MqttConnection | MqttSource, port: int = 1883, *,
                 prefix: str = "processtwin", guard: SetpointGuard | None = None,
                 qos: int = 1, username: str | None = None, password: str | None = None,
                 tls: Mapping[str, str] | None = None, client_id: str | None = None) -> None:
        if isinstance(connection, MqttSource):
            connection = connection.connection
        self._own = isinstance(connection, str)
        self.connection = (MqttConnection(connection, port, username=username,
                                          password=password, tls=tls, client_id=client_id)
                           if isinstance(connection, str) else connection)
        self.prefix = _check_prefix(prefix)
        self.guard = guard
        self.qos = _check_qos(qos)
        self.counters = {"recommendations": 0, "alarms": 0, "setpoints": 0,
                         "setpoints_refused": 0}
        self._last: Any = None

    def _send(self, topic: str, payload: dict[str, Any]) -> None:
        self.connection.publish(f"{self.prefix}/{topic}", _json(payload), qos=self.qos)

    def publish_recommendation(self, recommendation: Any) -> dict[str, Any]:
        """Publish a recommendation on ``{prefix}/recommendations``.

        Parameters
        ----------
        recommendation : TwinRecommendation, Recommendation or dict
            See :func:`recommendation_payload`.

        Returns
        -------
        dict
            The payload published.
        """
        payload = recommendation_payload(recommendation)
        self._send("recommendations", payload)
        self.counters["recommendations"] += 1
        return payload

    def publish_alarms(self, t: float, flags: Sequence[str]) -> dict[str, Any]:
        """Publish anomaly flags on ``{prefix}/alarms``.

        Parameters
        ----------
        t : float
            Estimate time [model time unit].
        flags : sequence of str
            Flag names raised (``spike``, ``stuck``, …).

        Returns
        -------
        dict
            The payload published.
        """
        payload = {"t": float(t), "flags": list(flags)}
        self._send("alarms", payload)
        self.counters["alarms"] += 1
        return payload

    def write_setpoints(self, recommendation: Any, t: float | None = None
                        ) -> dict[str, float]:
        """Write a recommendation's setpoints through the guard, one message per input
        on ``{prefix}/setpoints/{input}``.

        Parameters
        ----------
        recommendation : TwinRecommendation, Recommendation or dict
            Its numeric setpoints are requested (none for a fallback).
        t : float, optional
            Time of the write [model time unit] (default the recommendation's).

        Returns
        -------
        dict
            Input → value published [input units] (clipped by the guard).

        Raises
        ------
        ConfigError
            No time, or a setpoint the guard does not know.
        """
        want = setpoints_of(recommendation)
        if t is None:
            t = recommendation_payload(recommendation)["t"]
        if not (_number(t) and math.isfinite(t)):
            raise ConfigError(f"setpoint write: expected a finite time [model time unit], "
                              f"got {t!r}.")
        if self.guard is None:
            if want:
                self.counters["setpoints_refused"] += len(want)
                log.warning("t=%g: setpoints %s not written: write-back is disabled (no "
                            "SetpointGuard)", t, ", ".join(f"{k} = {v:g}"
                                                           for k, v in want.items()))
            return {}
        allowed = self.guard.check(t, want)
        self.counters["setpoints_refused"] += len(want) - len(allowed)
        for name, v in allowed.items():
            self._send(f"setpoints/{name}", {"t": float(t), "value": v,
                                             "unit": self.guard.units[name]})
            self.counters["setpoints"] += 1
        return allowed

    def update(self, twin: Twin, result: Mapping[str, Any]) -> None:
        """Publish after ``result = twin.advance(batch)``: its flags as an alarm, a new
        recommendation and its guarded setpoints.

        Parameters
        ----------
        twin : Twin
            The twin that advanced.
        result : mapping
            What :meth:`~processtwin.twin.Twin.advance` returned.
        """
        if result.get("flags"):
            self.publish_alarms(result["t"], result["flags"])
        rec = twin.recommendation
        if rec is not None and rec is not self._last:
            self._last = rec
            self.publish_recommendation(rec)
            self.write_setpoints(rec)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the broker acknowledged everything published.

        Parameters
        ----------
        timeout_s : float
            Longest wait [s].

        Returns
        -------
        bool
            True when nothing is left unacknowledged.
        """
        return self.connection.flush(timeout_s)

    def close(self) -> None:
        """Flush and disconnect a connection of the sink's own (a shared one stays)."""
        if self._own:
            self.connection.flush(self.connection.connect_timeout_s)
            self.connection.close()


@dataclass
class PublishReport:
    """What :func:`publish_plant` sent.

    Attributes
    ----------
    messages : int
        Messages published.
    acked : int
        Messages the broker acknowledged (PUBACK).
    samples : list of Sample
        Samples published, in order.
    acked_samples : list of Sample
        Samples of the acknowledged messages.
    """

    messages: int = 0
    acked: int = 0
    samples: list[Sample] = field(default_factory=list)
    acked_samples: list[Sample] = field(default_factory=list)


def _sample_json(s: Sample, channel: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"t": s.t, "value": s.value}
    if channel:
        d["channel"] = s.channel
    if s.unit is not None:
        d["unit"] = s.unit
    return d


def publish_plant(batches: Iterable[Batch], host: str, port: int, *,
                  prefix: str = "processtwin", mode: str = "topics",
                  username: str | None = None, password: str | None = None,
                  tls: Mapping[str, str] | None = None, client_id: str | None = None,
                  qos: int = 1, timeout_s: float = 30.0,
                  reconnect_delay_s: tuple[float, float] = (0.1, 2.0)) -> PublishReport:
    """Publish batches of samples as a plant's gateway would (tests, benchmark, examples).

    Parameters
    ----------
    batches : iterable of Batch
        E.g. :func:`~processtwin.twin.sources.plant_batches`; consumed lazily.
    host : str
        Broker host name or address.
    port : int
        Broker TCP port.
    prefix : str
        Topic prefix of the plant.
    mode : {"topics", "batch"}
        ``"topics"``: one message per sample on ``{prefix}/sensors/{channel}`` and per
        input change on ``{prefix}/inputs/{name}``; ``"batch"``: one message per batch
        on ``{prefix}/sensors`` (the source then yields the batches unchanged).
    username, password : str, optional
        Credentials.
    tls : mapping, optional
        ``ca_certs``, ``certfile``, ``keyfile`` for TLS.
    client_id : str, optional
        Client id of the publisher.
    qos : int
        Publication QoS.
    timeout_s : float
        Longest wait for the last acknowledgements [s].
    reconnect_delay_s : tuple of float
        ``(first, longest)`` wait before a reconnection attempt [s].

    Returns
    -------
    PublishReport
        Messages and samples published and acknowledged.

    Raises
    ------
    ConfigError
        An unknown ``mode``, or the broker refused the connection.
    """
    if mode not in ("topics", "batch"):
        raise ConfigError(f"`mode`: unknown `{mode}`{suggest(mode, ('topics', 'batch'))}")
    prefix = _check_prefix(prefix)
    conn = MqttConnection(host, port, username=username, password=password, tls=tls,
                          client_id=client_id, reconnect_delay_s=reconnect_delay_s).connect()
    report = PublishReport()
    carried: dict[int, list[Sample]] = {}   # message number -> its samples
    try:
        for b in batches:
            if mode == "batch":
                body: dict[str, Any] = {"samples": [_sample_json(s, True)
                                                    for s in b.samples]}
                if b.inputs:
                    body["inputs"] = dict(b.inputs)
                carried[conn.publish(f"{prefix}/sensors", _json(body), qos=qos)] = \
                    list(b.samples)
            else:
                for s in b.samples:
                    k = conn.publish(f"{prefix}/sensors/{s.channel}",
                                     _json(_sample_json(s, False)), qos=qos)
                    carried[k] = [s]
                t_last = max((s.t for s in b.samples if _number(s.t)), default=None)
                for name, v in (b.inputs or {}).items():
                    carried[conn.publish(f"{prefix}/inputs/{name}",
                                         _json({"t": t_last, "value": v}), qos=qos)] = []
            report.samples += b.samples
        if not conn.flush(timeout_s):
            log.warning("publish_plant: %d messages not acknowledged by %s:%s within "
                        "%g s", len(conn.unacked()), host, port, timeout_s)
        unacked = set(conn.unacked())
    finally:
        conn.close()
    report.messages = conn.counters["published"]
    report.acked = report.messages - len(unacked)
    report.acked_samples = [s for k in sorted(carried) if k not in unacked
                            for s in carried[k]]
    return report
