"""A real Mosquitto broker for the connector tests, started on a free loopback port.

Not a test module and independent of pytest: ``with mosquitto(tmp_path) as broker:`` gives a
broker that needs a password (``allow_anonymous false``), keeps its sessions and queued
QoS 1 messages across :meth:`Broker.restart` (persistence in ``tmp_path``) and is always
killed afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Broker", "find_mosquitto", "mosquitto"]

_HINT = ("run `make services` (or `apt-get install mosquitto`) to install the Mosquitto "
         "broker the MQTT tests run against")


def find_mosquitto() -> tuple[str, str]:
    """Paths of the ``mosquitto`` and ``mosquitto_passwd`` binaries.

    Returns
    -------
    tuple of str
        ``(mosquitto, mosquitto_passwd)``, looked up on ``PATH`` and in ``/usr/sbin`` and
        ``/usr/bin`` (Debian installs the broker in ``/usr/sbin``).

    Raises
    ------
    FileNotFoundError
        A binary is missing; the message says how to install it.
    """
    found = []
    for name in ("mosquitto", "mosquitto_passwd"):
        path = shutil.which(name) or next(
            (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name)
             if os.access(p, os.X_OK)), None)
        if path is None:
            raise FileNotFoundError(f"`{name}` not found on PATH nor in /usr/sbin: {_HINT}.")
        found.append(path)
    return found[0], found[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One Mosquitto process on ``host:port`` with its configuration in ``directory``.

    Parameters
    ----------
    directory : Path
        Where the configuration, password file, persistence database and log live.
    users : mapping
        User name → password accepted by the broker.
    tls : mapping, optional
        ``cafile`` (the client certificates it trusts), ``certfile`` and ``keyfile``
        (its own, PEM): a second listener on ``tls_port`` that speaks only TLS and
        requires a trusted client certificate (besides the password).
    start_timeout_s : float
        Longest wait for the broker to accept connections [s].
    """

    host = "127.0.0.1"

    def __init__(self, directory: Path, users: Mapping[str, str], *,
                 tls: Mapping[str, str | Path] | None = None,
                 start_timeout_s: float = 10.0) -> None:
        self.binary, passwd = find_mosquitto()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.tls_port = _free_port() if tls else None
        self.start_timeout_s = float(start_timeout_s)
        self.log = self.directory / "mosquitto.log"
        pw_file = self.directory / "passwd"
        pw_file.unlink(missing_ok=True)
        for k, (user, password) in enumerate(users.items()):
            subprocess.run([passwd, "-b", *(["-c"] if k == 0 else []), str(pw_file), user,
                            password], check=True, capture_output=True, timeout=30)
        if not users:
            pw_file.touch()
        # Started as root Mosquitto drops to user `mosquitto`, which cannot read a private
        # tmp_path: stay the user who runs the tests.
        me = pwd.getpwuid(os.geteuid()).pw_name
        self.config = self.directory / "mosquitto.conf"
        self.config.write_text(
            f"user {me}\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous false\n"
            f"password_file {pw_file}\n"
            # Sessions, subscriptions and queued QoS 1 messages are written on a clean
            # shutdown (SIGTERM) and read back on start: what restart() relies on.
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            # The default offline queue (1000 per client) is enough for the tests, but a
            # silent drop would read as a connector bug: make it explicit and larger.
            "max_queued_messages 100000\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
            + ("" if not tls else
               f"listener {self.tls_port} {self.host}\n"
               f"cafile {tls['cafile']}\ncertfile {tls['certfile']}\n"
               f"keyfile {tls['keyfile']}\nrequire_certificate true\n"
               "tls_version tlsv1.2\n"))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections.

        Raises
        ------
        RuntimeError
            The broker exited or did not listen within ``start_timeout_s``; the message
            holds the end of its log.
        """
        if self.process is not None:
            return
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") \
                    if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} "
                                   f"{self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} within "
                           f"{self.start_timeout_s:g} s. {self._log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker cleanly (SIGTERM: it saves its persistence database), killing
        it if it has not exited within ``timeout_s``.

        Parameters
        ----------
        timeout_s : float
            Longest wait for a clean exit [s].
        """
        p, self.process = self.process, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=timeout_s)
        if p.stderr:
            p.stderr.close()

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), if it runs."""
        p, self.process = self.process, None
        if p is not None:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stderr:
                p.stderr.close()

    def restart(self) -> None:
        """Stop the broker cleanly and start it again on the same port, keeping its
        sessions and queued messages."""
        self.stop()
        self.start()

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return "Log: " + self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@contextmanager
def mosquitto(tmp_path: str | Path, users: Mapping[str, str] | None = None,
              tls: Mapping[str, str | Path] | None = None) -> Iterator[Broker]:
    """A running Mosquitto broker on a free loopback port, killed afterwards.

    Parameters
    ----------
    tmp_path : str or Path
        Directory for its configuration, password file, persistence and log.
    users : mapping, optional
        User name → password (default ``{"twin": "secret"}``); anonymous clients are
        refused.
    tls : mapping, optional
        A TLS listener too (see :class:`Broker`).

    Yields
    ------
    Broker
        With ``host``, ``port``, ``restart()`` and ``stop()``.
    """
    broker = Broker(Path(tmp_path), {"twin": "secret"} if users is None else users,
                    tls=tls)
    try:
        broker.start()
        yield broker
    finally:
        broker.kill()
