"""The route map: one line per host, `host ip:port[:sha256]`, in a file HAProxy loads at start.

The hash of a private pod's token rides in the same entry as its address, so a route and its
privacy change together, both in the file (one atomic rename) and over the runtime API (one
`set map`): there is no moment, and no crash point, where a private pod is reachable
without its token. (A second host → hash map would need its writes ordered against the
first, in the file and at runtime, to never open a private pod.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from openpod.adapters.edge.model import InvalidRoute, Route

HEADER = "# openpod edge routes: host ip:port[:sha256 of a private pod's token]"


def map_value(route: Route) -> str:
    return f"{route.upstream}:{route.token_sha256}" if route.token_sha256 else route.upstream


def route_from_map(host: str, value: str) -> Route:
    ip, _, rest = value.partition(":")
    port, _, digest = rest.partition(":")
    return Route(host, f"{ip}:{port}", digest or None)


class RouteMap:
    """The routes the edge should hold, with their file lines kept alongside so that one
    change re-renders one line, not ten thousand."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._routes: dict[str, Route] = {}
        self._lines: dict[str, str] = {}
        for route in sorted(routes, key=lambda r: r.host):
            self.put(route)

    @classmethod
    def parse(cls, text: str) -> RouteMap:
        """The routes of a map file; the first entry of a host wins, as in HAProxy's lookups."""
        found = cls()
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            host, _, value = line.partition(" ")
            try:
                route = route_from_map(host, value.strip())
            except InvalidRoute as error:
                raise InvalidRoute(f"route map line {number}: {error}") from None
            if route.host not in found.routes:
                found.put(route)
        return found

    @property
    def routes(self) -> Mapping[str, Route]:
        return self._routes

    def put(self, route: Route) -> None:
        self._routes[route.host] = route
        self._lines[route.host] = f"{route.host} {map_value(route)}"

    def drop(self, host: str) -> None:
        self._routes.pop(host, None)
        self._lines.pop(host, None)

    def text(self) -> str:
        return "\n".join([HEADER, *self._lines.values()]) + "\n"
