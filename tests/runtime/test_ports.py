"""Host ports for pods: below the ephemeral range, distinct, stable across runs when free."""

from __future__ import annotations

import socket

from openpod.adapters.runtimes.readiness import POD_PORT_RANGE, allocate_ports


def test_ports_come_from_the_pod_range_distinct_and_avoiding_others() -> None:
    avoid = set(range(POD_PORT_RANGE[0], POD_PORT_RANGE[0] + 100))
    mapping = allocate_ports("127.0.0.1", [22, 8888, 6006], avoid, {})
    ports = list(mapping.values())
    assert sorted(mapping) == [22, 6006, 8888]
    assert len(set(ports)) == 3
    assert all(POD_PORT_RANGE[0] <= p <= POD_PORT_RANGE[1] for p in ports)
    assert not avoid & set(ports)


def test_a_previous_port_is_reused_when_free_and_replaced_when_taken() -> None:
    first = allocate_ports("127.0.0.1", [22], set(), {})
    assert allocate_ports("127.0.0.1", [22], set(), first) == first
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first[22]))
        squatter.listen()
        moved = allocate_ports("127.0.0.1", [22], set(), first)
    assert moved[22] != first[22]
