"""Faults for the reliability tests: a TCP proxy that can refuse and reset.

:class:`TcpProxy` listens on 127.0.0.1 and forwards every connection to a
target (PostgreSQL in the tests). :meth:`TcpProxy.stop` closes the listener
(new connections are refused) and resets every live connection (RST, as a
crashed server or a broken network would); :meth:`TcpProxy.start` listens
again on the same port.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from driftline.broker import free_port


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None):
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._running = threading.Event()
        #: connections accepted so far
        self.accepted = 0

    def start(self) -> "TcpProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:  # the port of a just-closed listener may take a moment
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._running.set()
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if not self._running.is_set():
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source)
            self._close(sink)

    def _close(self, sock: socket.socket, reset: bool = False) -> None:
        with self._lock:
            self._conns.discard(sock)
        try:
            if reset:  # linger 0: close sends RST, like a dead peer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass

    def reset(self) -> int:
        """Reset every live connection; returns how many there were."""
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            self._close(sock, reset=True)
        return len(conns) // 2

    def stop(self) -> int:
        """Refuse new connections and reset the live ones."""
        self._running.clear()
        listener, self._listener = self._listener, None
        if self._accepting is not None:
            self._accepting.join(5)
        if listener is not None:
            listener.close()
        return self.reset()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
