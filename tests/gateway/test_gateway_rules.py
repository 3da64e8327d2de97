"""Which forwarding destinations the gateway accepts, and what it says otherwise."""

from __future__ import annotations

import pytest

from openpod.adapters.gateway.errors import BadDestination
from openpod.adapters.gateway.rules import format_address, pod_id_for, usage, wrong_user


@pytest.mark.parametrize("host", ["abc123def456", "a", "pod1", "x" * 63])
def test_pod_ids_on_port_22_pass(host: str) -> None:
    assert pod_id_for(host, 22) == host


def test_the_ssh_config_alias_names_the_pod() -> None:
    """`openpod ssh config` writes `Host *.openpod` + ProxyJump: clients ask for the alias."""
    assert pod_id_for("abc123def456.openpod", 22) == "abc123def456"


@pytest.mark.parametrize(
    "host",
    [
        ".openpod",
        "a.b.openpod",
        "pod1.openpod.openpod",
        "",
        "ABC123",
        "pod-1",
        "pod.example.com",
        "127.0.0.1",
        "::1",
        "x" * 64,
        "pod\n1",
    ],
)
def test_anything_but_a_pod_id_is_refused(host: str) -> None:
    with pytest.raises(BadDestination, match="is not a pod id"):
        pod_id_for(host, 22)


def test_other_ports_are_refused_with_the_way_to_reach_them() -> None:
    with pytest.raises(BadDestination) as refused:
        pod_id_for("abc123", 8888)
    assert str(refused.value) == (
        "pod abc123: the gateway connects to port 22 (the pod's SSH) only, not 8888; "
        "reach other ports with ssh -L through the pod's SSH"
    )


def test_refusals_echo_at_most_a_short_printable_name() -> None:
    with pytest.raises(BadDestination) as refused:
        pod_id_for("\x1b[31m" + "y" * 500, 22)
    assert "\x1b" not in str(refused.value)
    assert len(str(refused.value)) < 200
    assert "\x1b" not in wrong_user("\x1b[2J", "openpod")


def test_usage_and_addresses() -> None:
    assert format_address("gw.example.com", 2222) == "gw.example.com:2222"
    assert format_address("::1", 2222) == "[::1]:2222"
    text = usage("gw.example.com:2222", "openpod")
    assert "use ssh -J openpod@gw.example.com:2222 root@POD_ID\n" in text
