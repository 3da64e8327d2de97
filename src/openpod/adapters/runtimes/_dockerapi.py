"""The few calls of the Docker Engine API the Docker runtime makes, over httpx.

dockerd answers HTTP on a unix socket (`unix:///var/run/docker.sock`, the default) or on
TCP (`http://127.0.0.1:2375`). The API is small and stable (v1.41, Docker 20.10+), so no
SDK: each call is one request, and a refusal becomes a `DockerError` carrying dockerd's own
message, which names what is wrong ("No such image: ...", "port is already allocated").
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

API_VERSION = "v1.41"  # Docker 20.10; newer daemons serve it too


class DockerError(Exception):
    """dockerd refused a call or could not be reached; `status` 0 means unreachable."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class NotFound(DockerError):
    """404: no such container, image or volume."""


def _client(host: str, timeout: float) -> httpx.Client:
    if host.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=host.removeprefix("unix://"))
        return httpx.Client(transport=transport, base_url="http://docker", timeout=timeout)
    if host.startswith(("http://", "https://", "tcp://")):
        base = "http://" + host.removeprefix("tcp://") if host.startswith("tcp://") else host
        return httpx.Client(base_url=base, timeout=timeout)
    raise ValueError(f"docker host must be unix://PATH, tcp://HOST:PORT or http(s)://: {host!r}")


class DockerApi:
    """A synchronous client; safe to share between threads (httpx.Client is)."""

    def __init__(self, host: str = "unix:///var/run/docker.sock", timeout: float = 30.0) -> None:
        self.host = host
        self._socket = host.removeprefix("unix://") if host.startswith("unix://") else None
        self._http = _client(host, timeout)

    def close(self) -> None:
        self._http.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        if self._socket is not None and not os.path.exists(self._socket):
            # Said before httpx tries: its failed unix connect leaves a socket unclosed.
            raise DockerError(0, f"cannot reach dockerd at {self.host}: no such socket")
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            response = self._http.request(
                method,
                f"/{API_VERSION}{path}",
                params=params,
                json=body,
                content=content,
                headers=headers,
                **extra,
            )
        except httpx.TransportError as exc:
            raise DockerError(0, f"cannot reach dockerd at {self.host}: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text.strip() or response.reason_phrase
            kind = NotFound if response.status_code == 404 else DockerError
            raise kind(response.status_code, message)
        return response

    # -- system, images -------------------------------------------------------------------

    def ping(self) -> None:
        self._call("GET", "/_ping")

    def image(self, ref: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/images/{quote(ref, safe='/:@')}/json").json()
        return answer

    def pull(self, ref: str, timeout: float = 600.0) -> None:
        """Pull `ref` from its registry; dockerd streams progress and reports a failure as a
        JSON line with `error`, still under a 200."""
        name, tag = _split_ref(ref)
        response = self._call(
            "POST", "/images/create", params={"fromImage": name, "tag": tag}, timeout=timeout
        )
        for line in response.text.splitlines():
            if '"error"' in line:
                raise DockerError(500, str(json.loads(line).get("error", line)))

    def import_tar(self, chunks: Iterator[bytes], repo: str, tag: str) -> None:
        """`docker import`: an image from a root filesystem tarball."""
        response = self._call(
            "POST",
            "/images/create",
            params={"fromSrc": "-", "repo": repo, "tag": tag},
            content=chunks,
            headers={"Content-Type": "application/x-tar"},
            timeout=600.0,
        )
        if '"error"' in response.text:
            raise DockerError(500, response.text.strip())

    # -- containers -----------------------------------------------------------------------

    def create(self, name: str, body: dict[str, Any]) -> str:
        answer = self._call("POST", "/containers/create", params={"name": name}, body=body).json()
        return str(answer["Id"])

    def start(self, ref: str) -> None:
        self._call("POST", f"/containers/{ref}/start")

    def inspect(self, ref: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/containers/{ref}/json").json()
        return answer

    def stop(self, ref: str, grace_seconds: float) -> None:
        """SIGTERM (the image's StopSignal), SIGKILL after the grace; 304 when not running."""
        grace = max(0, int(grace_seconds + 0.999))
        self._call("POST", f"/containers/{ref}/stop", params={"t": grace}, timeout=grace + 30)

    def remove_container(self, ref: str) -> None:
        """Force-remove (killing it if it runs) with its anonymous volumes; gone is fine."""
        with contextlib.suppress(NotFound):
            self._call("DELETE", f"/containers/{ref}", params={"force": "true", "v": "true"})

    def containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Every container (running or not) carrying all of `labels`."""
        wanted = [f"{k}={v}" for k, v in labels.items()]
        answer: list[dict[str, Any]] = self._call(
            "GET",
            "/containers/json",
            params={"all": "true", "filters": json.dumps({"label": wanted})},
        ).json()
        return answer

    def logs(self, ref: str, tail: int = 50) -> str:
        """The last lines of stdout and stderr, demultiplexed (no TTY)."""
        raw = self._call(
            "GET",
            f"/containers/{ref}/logs",
            params={"stdout": "true", "stderr": "true", "tail": str(tail)},
        ).content
        return _demux(raw).decode("utf-8", "replace")

    # -- volumes --------------------------------------------------------------------------

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        """Create the named volume, or keep it if it is there (idempotent in dockerd)."""
        self._call("POST", "/volumes/create", body={"Name": name, "Labels": labels})

    def volume(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/volumes/{name}").json()
        return answer

    def volumes(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Every volume carrying all of `labels`."""
        wanted = [f"{k}={v}" for k, v in labels.items()]
        params = {"filters": json.dumps({"label": wanted})}
        answer = self._call("GET", "/volumes", params=params).json()
        return list(answer.get("Volumes") or [])

    def remove_volume(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            self._call("DELETE", f"/volumes/{name}", params={"force": "true"})


def _split_ref(ref: str) -> tuple[str, str]:
    """`repo[:tag][@digest]` -> (repo, tag or digest); a colon in a registry port is no tag."""
    if "@" in ref:
        name, digest = ref.split("@", 1)
        return name, digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


def _demux(raw: bytes) -> bytes:
    """Docker's multiplexed log stream: 8-byte headers (stream, 0, 0, 0, big-endian size)."""
    out = bytearray()
    at = 0
    while at + 8 <= len(raw):
        size = int.from_bytes(raw[at + 4 : at + 8], "big")
        out += raw[at + 8 : at + 8 + size]
        at += 8 + size
    return bytes(out) if out or not raw else raw
