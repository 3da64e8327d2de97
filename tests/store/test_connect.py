"""Connect info recorded as it becomes true, and the gateway's directory over the store."""

from __future__ import annotations

import asyncio

import pytest

from openpod.adapters.gateway.directory import Refused
from openpod.adapters.store import Account, Database, Pod
from openpod.protocol import PodReport
from openpod.services import accounts, connect, node_channel, pods
from openpod.services.gateway_directory import StoreDirectory
from tests.store.test_store import ED25519, _request, _setup

LINKS = connect.ConnectSettings(
    proxy_domain="proxy.example", proxy_scheme="https", proxy_port=443,
    gateway_host="gw.example", gateway_port=2222,
)  # fmt: skip


def _running_pod(db: Database, **kw: object) -> tuple[str, str, str]:
    user_id, _ = _setup(db)
    with db.transaction() as s:
        user = s.get(Account, user_id)
        assert user is not None
        accounts.add_ssh_key(s, user, ED25519, None)
        pod = pods.create_pod(s, user, _request(**kw))
        assert pod.node_id is not None
        pod_id, node_id = pod.id, pod.node_id
    report = PodReport(pod_id=pod_id, generation=1, phase="running", ssh_ready=True,
                       port_mappings={"22": 40001, "8888": 40002}, ready_ports=[22],
                       ssh_user="root", ssh_host_key="ssh-ed25519 AAAA")  # fmt: skip
    with db.transaction() as s:
        node_channel.apply_report(s, node_id, report, LINKS)
    return user_id, pod_id, node_id


def test_running_pod_records_its_commands_urls_and_ready_times(db: Database) -> None:
    _, pod_id, node_id = _running_pod(db)
    with db.transaction(readonly=True) as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        assert pod.ssh_command == f"ssh -J openpod@gw.example:2222 root@{pod_id}"
        assert pod.http_urls == {"8888": f"https://{pod_id}-8888.proxy.example/"}
        assert set(pod.ready_at) == {"22"}
        first_ready = pod.ready_at["22"]
    later = PodReport(pod_id=pod_id, generation=1, phase="running", ssh_ready=True,
                      port_mappings={"22": 40001, "8888": 40002}, ready_ports=[22, 8888])  # fmt: skip
    with db.transaction() as s:
        node_channel.apply_report(s, node_id, later, LINKS)
    with db.transaction(readonly=True) as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        assert set(pod.ready_at) == {"22", "8888"}
        assert pod.ready_at["22"] == first_ready  # the first time it answered, kept
    stopped = PodReport(pod_id=pod_id, generation=1, phase="exited", exit_code=0)
    with db.transaction() as s:
        node_channel.apply_report(s, node_id, stopped, LINKS)
    with db.transaction(readonly=True) as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        assert (pod.ssh_command, pod.http_urls, pod.ready_at) == (None, {}, {})


def test_a_pod_with_its_own_address_is_reached_there(db: Database) -> None:
    """A Kubernetes pod reports its Pod IP: the edge and the gateway dial it on the container
    ports; users get the gateway command only (a Pod IP is reached inside the cluster)."""
    user_id, _ = _setup(db)
    with db.transaction() as s:
        user = s.get(Account, user_id)
        assert user is not None
        accounts.add_ssh_key(s, user, ED25519, None)
        pod = pods.create_pod(s, user, _request())
        assert pod.node_id is not None
        pod_id, node_id = pod.id, pod.node_id
    report = PodReport(pod_id=pod_id, generation=1, phase="running", ssh_ready=True,
                       port_mappings={"22": 22, "8888": 8888}, ready_ports=[22, 8888],
                       address="127.0.0.42")  # fmt: skip
    with db.transaction() as s:
        node_channel.apply_report(s, node_id, report, LINKS)
    with db.transaction(readonly=True) as s:
        seen = s.get(Pod, pod_id)
        assert seen is not None
        assert connect.target_host(seen) == "127.0.0.42"
        assert connect.direct_command(seen) is None
        assert seen.ssh_command == f"ssh -J openpod@gw.example:2222 root@{pod_id}"
    directory = StoreDirectory(db)
    caller = asyncio.run(directory.caller_for_key(ED25519))
    assert caller is not None
    target = asyncio.run(directory.target_for(caller, pod_id))
    assert (target.host, target.port) == ("127.0.0.42", 22)
    with db.transaction() as s:
        node_channel.apply_report(
            s, node_id, PodReport(pod_id=pod_id, generation=1, phase="exited", exit_code=0), LINKS
        )
    with db.transaction(readonly=True) as s:
        ended = s.get(Pod, pod_id)
        assert ended is not None and ended.address is None


def test_urls_leave_out_the_schemes_default_port() -> None:
    plain = connect.ConnectSettings(proxy_domain="Proxy.Localhost", proxy_port=8480)
    assert connect.http_url(plain, "abc", 8888) == "http://abc-8888.proxy.localhost:8480/"
    assert connect.http_url(LINKS, "abc", 80) == "https://abc-80.proxy.example/"


def test_access_tokens_are_derived_per_pod() -> None:
    one = connect.access_token(b"k" * 32, "pod1")
    assert one == connect.access_token(b"k" * 32, "pod1")
    assert one != connect.access_token(b"k" * 32, "pod2")
    assert one != connect.access_token(b"x" * 32, "pod1")
    assert len(connect.token_sha256(one)) == 64


def test_gateway_directory_knows_keys_and_owners(db: Database) -> None:
    user_id, pod_id, _ = _running_pod(db)
    directory = StoreDirectory(db)
    caller = asyncio.run(directory.caller_for_key(ED25519))
    assert caller is not None
    assert caller.account_id == user_id
    target = asyncio.run(directory.target_for(caller, pod_id))
    assert (target.pod_id, target.host, target.port) == (pod_id, "127.0.0.1", 40001)
    assert asyncio.run(directory.caller_for_key("ssh-ed25519 AAAA broken")) is None
    with db.transaction() as s:
        stranger, _ = accounts.create_account(s, "stranger")
    from openpod.adapters.gateway.directory import Caller

    outsider = Caller(stranger.id, "stranger", "SHA256:x")
    with pytest.raises(Refused, match=f"^no such pod {pod_id}$"):
        asyncio.run(directory.target_for(outsider, pod_id))
    with pytest.raises(Refused, match=r"^no such pod nopod$"):
        asyncio.run(directory.target_for(caller, "nopod"))
    with db.transaction() as s:
        owner = s.get(Account, user_id)
        assert owner is not None
        pods.stop_pod(s, owner, pod_id)
    with pytest.raises(Refused, match=f"pod {pod_id} is not running \\(STOPPING\\)"):
        asyncio.run(directory.target_for(caller, pod_id))


def test_one_ssh_key_belongs_to_one_account(db: Database) -> None:
    from openpod.services.errors import Conflict

    with db.transaction() as s:
        first, _ = accounts.create_account(s, "first")
        accounts.add_ssh_key(s, first, ED25519, None)
        second, _ = accounts.create_account(s, "second")
    with db.transaction() as s, pytest.raises(Conflict, match="in use by another account"):
        accounts.add_ssh_key(s, second, ED25519, None)
