"""A small typed HTTP client for the openpod REST API (see ``docs/api.md``).

Every failure becomes an :class:`ApiError` carrying the HTTP status and the server's ``detail``;
``ApiError.exit_code`` maps it to the CLI's documented exit codes (:class:`ExitCode`).

The seam for tests: commands get their client from :func:`make_client`, which calls the factory
installed with :func:`set_client_factory` (by default :func:`default_client_factory`). A test can
install a factory that passes an ``httpx.MockTransport`` to :class:`ApiClient`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from openpod import __version__
from openpod.cli import config as cfg
from openpod.cli.errors import UNREACHABLE, ApiError, ExitCode

__all__ = [
    "ApiClient",
    "ApiError",
    "ClientFactory",
    "ExitCode",
    "Json",
    "default_client_factory",
    "make_client",
    "set_client_factory",
]

Json = dict[str, Any]
"""A JSON object as the API returns it (camelCase keys)."""


def _error_detail(response: httpx.Response) -> str:
    """The human message of an error response (``{"detail": ...}`` or the body text)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):  # 422 from the validator: [{loc, msg}, ...]
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg")))
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        return str(detail)
    text = response.text.strip()
    return text[:500] if text else f"HTTP {response.status_code} {response.reason_phrase}"


class ApiClient:
    """A synchronous client for the openpod API: one method per route the CLI uses."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        headers = {"User-Agent": f"openpod-cli/{__version__}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )
        self._timeout = timeout

    def close(self) -> None:
        """Close the underlying connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and return the decoded JSON answer (``None`` for an empty body).

        Raises :class:`ApiError` for error statuses and connection failures.
        """
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.ConnectError as exc:
            raise ApiError(
                UNREACHABLE, f"cannot reach the openpod API at {self.base_url}: {exc}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(
                UNREACHABLE,
                f"cannot reach the openpod API at {self.base_url}: "
                f"no answer in time ({type(exc).__name__})",
            ) from exc
        except httpx.TransportError as exc:
            raise ApiError(
                UNREACHABLE, f"cannot reach the openpod API at {self.base_url}: {exc}"
            ) from exc
        if response.is_error:
            detail = _error_detail(response)
            if response.status_code == 401 and not self.api_key:
                detail += (
                    " (no API key configured: run `openpod config --api-key KEY`"
                    " or set OPENPOD_API_KEY)"
                )
            raise ApiError(response.status_code, detail)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code, f"the API answered {method} {path} with invalid JSON"
            ) from exc

    def _object(self, method: str, path: str, **kwargs: Any) -> Json:
        """A request whose answer must be a JSON object."""
        data = self.request(method, path, **kwargs)
        if not isinstance(data, dict):
            raise ApiError(200, f"the API answered {method} {path} with no JSON object")
        return data

    def _list(self, path: str, **kwargs: Any) -> list[Json]:
        """A GET whose answer must be a JSON list of objects."""
        data = self.request("GET", path, **kwargs)
        if not isinstance(data, list):
            raise ApiError(200, f"the API answered GET {path} with no JSON list")
        return [item for item in data if isinstance(item, dict)]

    # --- GPU types -----------------------------------------------------------------------------

    def list_gpu_types(self) -> list[Json]:
        """``GET /gpu-types``."""
        return self._list("/gpu-types")

    # --- pods ----------------------------------------------------------------------------------

    def create_pod(self, body: Json) -> Json:
        """``POST /pods``."""
        return self._object("POST", "/pods", json=body)

    def list_pods(self, *, include_terminated: bool = False) -> list[Json]:
        """``GET /pods``."""
        flag = "true" if include_terminated else "false"
        return self._list("/pods", params={"includeTerminated": flag})

    def get_pod(self, pod_id: str) -> Json:
        """``GET /pods/{id}``."""
        return self._object("GET", f"/pods/{_seg(pod_id)}")

    def stop_pod(self, pod_id: str) -> Json:
        """``POST /pods/{id}/stop``."""
        return self._object("POST", f"/pods/{_seg(pod_id)}/stop")

    def start_pod(self, pod_id: str) -> Json:
        """``POST /pods/{id}/start``."""
        return self._object("POST", f"/pods/{_seg(pod_id)}/start")

    def terminate_pod(self, pod_id: str) -> Json:
        """``DELETE /pods/{id}``."""
        return self._object("DELETE", f"/pods/{_seg(pod_id)}")

    def ssh_gateway(self) -> Json:
        """``GET /ssh-gateway``."""
        return self._object("GET", "/ssh-gateway")

    def access_token(self, pod_id: str) -> Json:
        """``GET /pods/{id}/access-token``."""
        return self._object("GET", f"/pods/{_seg(pod_id)}/access-token")

    def wait_pod(self, pod_id: str, status: str, timeout: int) -> Json:
        """``GET /pods/{id}/wait``: a server-side wait of at most ``timeout`` seconds.

        Raises :class:`ApiError` 408 when it times out, 409 if the pod failed or ended first.
        """
        return self._object(
            "GET",
            f"/pods/{_seg(pod_id)}/wait",
            params={"status": status, "timeout": timeout},
            timeout=max(self._timeout, timeout + 15.0),
        )

    # --- usage ---------------------------------------------------------------------------------

    def usage(self, pod: str | None = None) -> list[Json]:
        """``GET /usage[?pod=POD]``: one entry per pod of the caller (or only ``pod``)."""
        return self._list("/usage", params={"pod": pod} if pod else None)

    # --- account and providers -----------------------------------------------------------------

    def me(self) -> Json:
        """``GET /me``."""
        return self._object("GET", "/me")

    def set_wallet(self, address: str | None) -> Json:
        """``PATCH /me``: the account's wallet address (null clears it)."""
        return self._object("PATCH", "/me", json={"walletAddress": address})

    def list_api_keys(self) -> list[Json]:
        """``GET /api-keys``."""
        return self._list("/api-keys")

    def create_api_key(self) -> Json:
        """``POST /api-keys``: the answer holds the new key, shown once."""
        return self._object("POST", "/api-keys")

    def revoke_api_key(self, key_id: str) -> None:
        """``DELETE /api-keys/{id}``."""
        self.request("DELETE", f"/api-keys/{_seg(key_id)}")

    def become_provider(self, payout_wallet: str) -> Json:
        """``POST /providers``."""
        return self._object("POST", "/providers", json={"payoutWallet": payout_wallet})

    def register_node(self, name: str, public_host: str | None) -> Json:
        """``POST /nodes``: the answer holds the node token, shown once."""
        body: Json = {"name": name}
        if public_host:
            body["publicHost"] = public_host
        return self._object("POST", "/nodes", json=body)

    def list_nodes(self) -> list[Json]:
        """``GET /nodes``."""
        return self._list("/nodes")

    # --- SSH keys ------------------------------------------------------------------------------

    def list_ssh_keys(self) -> list[Json]:
        """``GET /ssh-keys``."""
        return self._list("/ssh-keys")

    def add_ssh_key(self, public_key: str, name: str | None = None) -> Json:
        """``POST /ssh-keys``."""
        body: Json = {"publicKey": public_key}
        if name:
            body["name"] = name
        return self._object("POST", "/ssh-keys", json=body)

    def remove_ssh_key(self, key_id: str) -> None:
        """``DELETE /ssh-keys/{id}``."""
        self.request("DELETE", f"/ssh-keys/{_seg(key_id)}")


def _seg(value: str) -> str:
    """Quote an id for use as one URL path segment."""
    return quote(value, safe="")


ClientFactory = Callable[[cfg.Config], ApiClient]
"""Builds the client a command uses from the effective config."""


def default_client_factory(config: cfg.Config) -> ApiClient:
    """The real client: HTTP to ``config.api_url`` with ``config.api_key``."""
    return ApiClient(config.api_url, config.api_key)


_factory: ClientFactory = default_client_factory


def set_client_factory(factory: ClientFactory | None) -> ClientFactory:
    """Install the factory commands use to build their client (``None``: the default).

    Returns the factory that was installed before, so a test can restore it.
    """
    global _factory
    previous = _factory
    _factory = factory or default_client_factory
    return previous


def make_client() -> ApiClient:
    """The client for a command: the installed factory applied to the effective config."""
    try:
        config = cfg.load()
    except cfg.ConfigError as exc:
        raise ApiError(400, str(exc)) from exc
    return _factory(config)
