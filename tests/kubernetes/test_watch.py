"""Status by list and watch: resourceVersion, bookmarks, 410 Gone, dropped watches."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from openpod.adapters.runtimes.base import PodPhase
from openpod.adapters.runtimes.kubernetes import KubernetesRuntime
from tests.kubernetes.conftest import API_TOKEN, launch_of, observe_until, pod_ip
from tests.support.kubeapi import KubeApiServer
from tests.support.net import wait_until


def pod_watches(api: KubeApiServer) -> list[dict[str, list[str]]]:
    return [parse_qs(r.query) for r in api.watch_requests() if r.kind == "pods"]


def test_watches_ask_for_bookmarks_from_the_listed_version(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    runtime.start(launch_of("podwww111"))
    (first,) = pod_watches(api)
    assert first["allowWatchBookmarks"] == ["true"]
    assert first["labelSelector"] == ["app.kubernetes.io/managed-by=openpod"]
    assert first["resourceVersion"] == ["0"]  # the empty store's list version
    lists = [
        r for r in api.requests if (r.method, r.kind) == ("GET", "pods") and "watch=" not in r.query
    ]
    assert len(lists) == 1 and runtime.pods.lists == 1


@pytest.mark.parametrize("abrupt", [False, True], ids=["closed", "cut"])
def test_a_dropped_watch_reconnects_from_its_version_without_a_list(
    api: KubeApiServer, runtime: KubernetesRuntime, abrupt: bool
) -> None:
    runtime.start(launch_of("podwww222"))
    seen = runtime.pods.resource_version
    assert seen is not None and int(seen) > 0
    api.drop_watches(abrupt=abrupt)
    wait_until(lambda: len(pod_watches(api)) == 2, 10, "the watch to reconnect")
    assert int(pod_watches(api)[-1]["resourceVersion"][0]) >= int(seen)
    api.run_pod("openpod-podwww222-1", ip := pod_ip())
    obs = observe_until(runtime, "podwww222", lambda o: o.address == ip, "the update")
    assert obs.phase is PodPhase.RUNNING
    assert runtime.pods.lists == 1  # no list again: nothing was missed


def test_410_gone_during_a_watch_lists_again(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    runtime.start(launch_of("podwww333"))
    api.expire_watches()  # an ERROR event, status 410, on the open watch
    wait_until(lambda: runtime.pods.lists == 2, 10, "a new list after 410 Gone")
    api.run_pod("openpod-podwww333-1", pod_ip())
    observe_until(runtime, "podwww333", lambda o: o.phase is PodPhase.RUNNING, "running")


@pytest.mark.parametrize("as_event", [True, False], ids=["error-event", "410-answer"])
def test_what_changed_while_the_watch_was_gone_is_seen_after_410(
    api: KubeApiServer, runtime: KubernetesRuntime, as_event: bool
) -> None:
    """A Pod deleted (and another changed) while the watch was away: events that the
    server no longer keeps. Only a new list can show them; the runtime must make one."""
    runtime.start(launch_of("podwww444"))
    runtime.start(launch_of("podwww555"))
    api.gone_as_event = as_event
    api.hold_watches()
    api.drop_watches(abrupt=True)
    wait_until(lambda: api.waiting_watches() >= 2, 10, "the reconnects to wait at the server")
    api.remove_object("pods", "openpod-podwww444-1")  # as `kubectl delete pod` would
    api.run_pod("openpod-podwww555-1", ip := pod_ip())
    api.forget_history()
    api.release_watches()
    wait_until(lambda: runtime.pods.lists >= 2, 10, "a new list after 410 Gone")
    # The claim of podwww444 is still there: stopped, not running, not absent.
    assert runtime.observe("podwww444").phase is PodPhase.STOPPED
    assert runtime.observe("podwww555").address == ip


def test_bookmarks_let_a_reconnect_skip_the_list(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    """Other kinds move the resourceVersion on; without bookmarks the Pod watch's version
    would fall behind what the server keeps, and a reconnect would need a new list."""
    runtime.start(launch_of("podwww666"))
    api.history_limit = 2
    for n in range(6):
        body = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"unrelated-{n}", "namespace": "openpod"}, "data": {},
        }  # fmt: skip
        answer = httpx.post(
            f"{api.url}/api/v1/namespaces/openpod/configmaps",
            json=body,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert answer.status_code == 201
    latest = api.version
    wait_until(lambda: runtime.pods.resource_version == str(latest), 10, "a bookmark at the latest")
    api.drop_watches(abrupt=True)
    wait_until(lambda: len(pod_watches(api)) == 2, 10, "the watch to reconnect")
    assert pod_watches(api)[-1]["resourceVersion"] == [str(latest)]
    api.run_pod("openpod-podwww666-1", pod_ip())
    observe_until(runtime, "podwww666", lambda o: o.phase is PodPhase.RUNNING, "running")
    assert runtime.pods.lists == 1
