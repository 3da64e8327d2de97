"""Ports, GPU declarations, env, ids and money."""

from __future__ import annotations

import re

import pytest

from openpod.domain import ids, money
from openpod.domain.env import validate_env
from openpod.domain.errors import InvalidEnv, InvalidGpuSpec, InvalidPortSpec
from openpod.domain.gpus import GpuDevice, parse_gpu_declaration
from openpod.domain.ports import PortSpec, parse_ports


def test_ports_parse_sort_and_always_include_ssh() -> None:
    assert parse_ports("8888/http") == (PortSpec(22, "tcp"), PortSpec(8888, "http"))
    assert parse_ports(["8888/HTTP", "22/tcp", "6006/http"]) == (
        PortSpec(22, "tcp"),
        PortSpec(6006, "http"),
        PortSpec(8888, "http"),
    )
    assert parse_ports("") == (PortSpec(22, "tcp"),)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("8888/udpx", "protocol 'udpx' is not one of http, tcp"),
        ("70000/tcp", "70000 is outside 1-65535"),
        ("0/tcp", "outside 1-65535"),
        ("8888", "must look like 8888/http"),
        ("abc/tcp", "'abc' is not a port number"),
        ("8888/http,8888/tcp", "port 8888 is listed more than once"),
        ("22/tcp,,80/http", "empty item"),
    ],
)
def test_bad_ports_are_named(spec: str, message: str) -> None:
    with pytest.raises(InvalidPortSpec, match=re.escape(message)):
        parse_ports(spec)


def test_gpu_declarations() -> None:
    assert parse_gpu_declaration("NVIDIA GeForce RTX 4090:2,NVIDIA H200:1") == (
        GpuDevice(0, "NVIDIA GeForce RTX 4090"),
        GpuDevice(1, "NVIDIA GeForce RTX 4090"),
        GpuDevice(2, "NVIDIA H200"),
    )
    for bad in ("NVIDIA H200", "NVIDIA H200:0", ":2", "NVIDIA H200:x"):
        with pytest.raises(InvalidGpuSpec):
            parse_gpu_declaration(bad)


def test_env_rules() -> None:
    assert validate_env({"A_B": "x y"}) == {"A_B": "x y"}
    for bad, message in [
        ({"1A": "x"}, "not a valid variable name"),
        ({"OPENPOD_POD_ID": "x"}, "reserved"),
        ({"PUBLIC_KEY": "x"}, "reserved"),
        ({"A": "x\ny"}, "newline"),
        ({"A": "x" * 40000}, "32 KiB"),
    ]:
        with pytest.raises(InvalidEnv, match=message):
            validate_env(bad)


def test_ids_and_secrets() -> None:
    pod_ids = {ids.new_pod_id() for _ in range(200)}
    assert len(pod_ids) == 200
    assert all(re.fullmatch(r"[a-z][a-z0-9]{11}", p) for p in pod_ids)
    secret = ids.new_secret("op")
    assert secret.startswith("op_") and len(secret) > 40
    assert ids.hash_secret(secret) != secret and len(ids.hash_secret(secret)) == 64
    assert ids.secret_hint(secret) == secret[:7] + "…"


def test_money_is_exact_integers() -> None:
    rate = 830555555555556
    assert money.cost(3600, 8, rate) == 3600 * 8 * rate
    assert money.per_hour(rate, 18) == "2.9900"
    assert money.per_hour(191666666666667, 18) == "0.6900"
    assert money.per_hour(1108333333333333, 18) == "3.9900"  # 3.98999999... rounds up
    assert money.per_hour(5, 0) == "18000"
    assert money.per_hour(1, 6) == "0.0036"
    with pytest.raises(ValueError, match="negative"):
        money.cost(-1, 1, 1)
