"""The edge proxy: only this package talks to the edge proxy (HAProxy).

Pods' HTTP ports are served at `{pod_id}-{port}.{domain}`; `EdgeProxy` starts HAProxy with a
host → address map and changes that map at runtime, without reloads. It knows nothing of
pods or the store: the services layer decides which routes exist and hands them over.
"""

from openpod.adapters.edge.haproxy import EdgeProxy
from openpod.adapters.edge.model import EdgeError, EdgeSettings, InvalidRoute, Route

__all__ = ["EdgeError", "EdgeProxy", "EdgeSettings", "InvalidRoute", "Route"]
