"""The Kube API client and the list/watch caches the Kubernetes runtime reads from.

Why lightkube: it is async, small (httpx underneath, no generated API classes per group),
ships typed models of the official schema (a wrong field type fails before anything is
sent), reads kubeconfig files, and its watch already follows `resourceVersion` from event
to event (bookmarks included). kubernetes_asyncio would bring aiohttp and a second HTTP
stack for the same calls.

What it lacks is added here: `allowWatchBookmarks=true` on every watch request (a small
transport wrapper: lightkube has no parameter for it), and the informer's own rules: list,
then watch from the list's resourceVersion; on 410 Gone (an ERROR event or a 410 answer)
list again, since the objects changed meanwhile are not replayable; on a dropped watch
reconnect from the last resourceVersion seen (a bookmark's included) without a list.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.config.client_adapter import verify_cluster
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource

from openpod.adapters.runtimes import _kube_manifests as manifests

log = logging.getLogger("openpod.runtime.kubernetes")

R = TypeVar("R", bound=NamespacedResource)


class _WatchBookmarks(httpx2.AsyncBaseTransport):
    """Adds `allowWatchBookmarks=true` to watch requests: the server then sends its
    current resourceVersion now and then, so a reconnect rarely needs a new list."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.params.get("watch") == "true":
            request.url = request.url.copy_add_param("allowWatchBookmarks", "true")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_client(
    kube_config: KubeConfig,
    context: str | None,
    namespace: str,
    watch_seconds: int,
    request_seconds: float,
) -> AsyncClient:
    """An AsyncClient for the context (None: the current one), TLS and auth from the config."""
    single = kube_config.get(context)
    if single is None or single.user is None:
        raise ValueError("the kubeconfig has no current context with a user")
    verify = verify_cluster(single.cluster, single.user, single.abs_file)
    transport = _WatchBookmarks(httpx2.AsyncHTTPTransport(verify=verify))
    # Reads may wait a whole server-side watch timeout; sync calls have their own deadline.
    timeout = httpx2.Timeout(request_seconds, read=watch_seconds + 30.0)
    return AsyncClient(
        config=single, namespace=namespace, timeout=timeout, transport=transport, trust_env=False
    )


def status_code(error: BaseException) -> int | None:
    """The HTTP status of an API failure (an ERROR event's or a response's), else None."""
    if isinstance(error, ApiError) and error.status is not None:
        return error.status.code
    if isinstance(error, httpx2.HTTPStatusError):
        return error.response.status_code
    return None


def describe(error: httpx2.HTTPError) -> str:
    """A failure in words safe to show: the API's own message, never a header or token."""
    if isinstance(error, ApiError) and error.status is not None:
        status = error.status
        return f"Kubernetes refused it ({status.code} {status.reason}): {status.message}"
    if isinstance(error, httpx2.HTTPStatusError):
        return f"Kubernetes answered {error.response.status_code}"
    detail = str(error)  # the socket's or TLS's own words: no request headers in them
    suffix = f" ({detail})" if detail else ""
    return f"the Kubernetes API cannot be reached: {type(error).__name__}{suffix}"


class Informer(Generic[R]):
    """A cache of the openpod-managed objects of one kind in one namespace.

    run() lives on the runtime's event loop; the reads (`snapshot`, `get`) come from the
    agent's worker threads, hence the lock. `on_change` is called after every change.
    """

    def __init__(
        self,
        client: AsyncClient,
        resource: type[R],
        namespace: str,
        on_change: Callable[[], None],
        *,
        watch_seconds: int = 240,
        retry_seconds: float = 1.0,
    ) -> None:
        self._client = client
        self._resource = resource
        self._namespace = namespace
        self._on_change = on_change
        self._watch_seconds = watch_seconds
        self._retry_seconds = retry_seconds
        self._objects: dict[str, R] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.lists = 0  # how many times it listed (tests, metrics)
        self.last_error: str | None = None

    def snapshot(self) -> list[R]:
        with self._lock:
            return list(self._objects.values())

    def get(self, name: str) -> R | None:
        with self._lock:
            return self._objects.get(name)

    async def run(self) -> None:
        selector = {manifests.MANAGED_BY: manifests.MANAGER}
        while True:
            try:
                await self._list(selector)
                await self._watch(selector)  # returns on 410 Gone: list again
            except asyncio.CancelledError:
                raise
            except httpx2.HTTPError as error:
                self.last_error = describe(error)
                log.warning("listing %s failed: %s", self._resource.__name__, self.last_error)
                await asyncio.sleep(self._retry_seconds)
            except (OSError, ValueError) as error:  # ValueError: an undecodable object
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning("listing %s failed: %s", self._resource.__name__, self.last_error)
                await asyncio.sleep(self._retry_seconds)

    async def _list(self, selector: dict[str, Any]) -> None:
        found = self._client.list(self._resource, namespace=self._namespace, labels=selector)
        objects = {_name(obj): obj async for obj in found}
        with self._lock:
            self._objects = objects
            self.resource_version = found.resourceVersion
            self.lists += 1
        self.last_error = None
        self.synced.set()
        self._on_change()

    async def _watch(self, selector: dict[str, Any]) -> None:
        while True:
            try:
                stream = self._client.watch(
                    self._resource,
                    namespace=self._namespace,
                    labels=selector,
                    resource_version=self.resource_version,
                    server_timeout=self._watch_seconds,
                )
                async for kind, obj in stream:
                    self._apply(kind, obj)
            except OSError as error:  # below httpx: a socket that broke
                self.last_error = f"{type(error).__name__}: {error}"
                log.info("watch of %s dropped (%s): reconnecting", self._kind, self.last_error)
                await asyncio.sleep(min(self._retry_seconds, 0.2))
            except httpx2.HTTPError as error:
                if status_code(error) == 410:
                    log.info("watch of %s: resourceVersion expired, listing again", self._kind)
                    return
                if isinstance(error, httpx2.HTTPStatusError):
                    raise  # 401, 403, 404...: list again after a pause, reporting it
                self.last_error = describe(error)
                log.info("watch of %s dropped (%s): reconnecting", self._kind, self.last_error)
                await asyncio.sleep(min(self._retry_seconds, 0.2))

    @property
    def _kind(self) -> str:
        return self._resource.__name__

    def _apply(self, kind: str, obj: R) -> None:
        metadata = getattr(obj, "metadata", None)
        version = getattr(metadata, "resourceVersion", None)
        with self._lock:
            if version:
                self.resource_version = version
            if kind == "BOOKMARK":
                return
            if kind == "DELETED":
                self._objects.pop(_name(obj), None)
            else:  # ADDED, MODIFIED
                self._objects[_name(obj)] = obj
        self._on_change()


def _name(obj: NamespacedResource) -> str:
    metadata = getattr(obj, "metadata", None)
    name = getattr(metadata, "name", None)
    return str(name)
