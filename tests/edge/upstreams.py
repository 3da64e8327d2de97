"""Pods as the edge sees them: small servers on 127.0.0.1 in threads of the test process.

`Upstream` answers every request with what it saw (its name, the path, the headers), and has
a few special paths: `/stream` (a chunked event stream), `/hang` (no answer until the test
ends), `/upload` (counts and hashes the body as it arrives, never holding it).
`EchoWebSocket` echoes WebSocket messages.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.sync.server import Server, ServerConnection, serve

READ_SIZE = 1 << 20


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.release = threading.Event()  # lets /hang requests go at teardown

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client (the edge) going away mid-answer is part of these tests, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/stream":
            query = parse_qs(url.query)
            self._stream(int(query["n"][0]), float(query["interval"][0]))
        elif url.path == "/hang":
            self.server.release.wait(60)
            self._json({"released": True})
        else:
            self._json(self._seen())

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/upload":
            self._json(self._seen())
            return
        left = int(self.headers["Content-Length"])
        digest, count = hashlib.sha256(), 0
        while left:
            chunk = self.rfile.read1(min(left, READ_SIZE))
            if not chunk:
                break
            digest.update(chunk)
            count += len(chunk)
            left -= len(chunk)
        self._json({"bytes": count, "sha256": digest.hexdigest()})

    def _seen(self) -> dict[str, Any]:
        headers: dict[str, list[str]] = {}
        for key, value in self.headers.items():
            headers.setdefault(key.lower(), []).append(value)
        return {"name": self.server.name, "path": self.path, "headers": headers}

    def _json(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, n: int, interval: float) -> None:
        """Server-sent events: one every `interval` seconds, each flushed as it is made."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(n):
            event = f"data: {i}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            if i < n - 1:
                time.sleep(interval)  # the pace of the stream under test, not a synchronisation
        self.wfile.write(b"0\r\n\r\n")


class Upstream:
    """An HTTP pod on 127.0.0.1:<free port>, serving until `close()`."""

    def __init__(self, name: str) -> None:
        self._server = _Server(name)
        self.port = int(self._server.server_address[1])
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.start()

    def close(self) -> None:
        self._server.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class EchoWebSocket:
    """A WebSocket pod that sends every message back."""

    def __init__(self) -> None:
        self._server: Server = serve(self._echo, "127.0.0.1", 0, compression=None)
        self.port = int(self._server.socket.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def _echo(connection: ServerConnection) -> None:
        for message in connection:
            connection.send(message)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)
