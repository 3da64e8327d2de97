"""``openpod usage``: the table, ``--pod``, ``--json``, errors and the empty answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openpod.cli import usage
from openpod.domain import money

H100 = {
    "podId": "abc123",
    "gpuType": "NVIDIA H100 80GB HBM3",
    "gpuCount": 1,
    "ratePerSecond": "3000000000000000",
    "seconds": 3601,
    "amount": "10803000000000000000",
    "settledSeconds": 3600,
    "settledAmount": "10800000000000000000",
    "pendingSeconds": 1,
    "pendingAmount": "3000000000000000",
    "running": True,
    "runs": 1,
}
RTX = {
    "podId": "k3x9q2m7v1c4",
    "gpuType": "NVIDIA GeForce RTX 4090",
    "gpuCount": 2,
    "ratePerSecond": "191666666666666",
    "seconds": 59,
    "amount": "22616666666666588",
    "settledSeconds": 59,
    "settledAmount": "22616666666666588",
    "pendingSeconds": 0,
    "pendingAmount": "0",
    "running": False,
    "runs": 2,
}


def test_usage_table_renders_the_numbers(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/usage", [H100, RTX])
    result = cli("usage")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "POD",
        "GPU",
        "RATE/HR",
        "SECONDS",
        "AMOUNT",
        "SETTLED",
        "PENDING",
        "RUNNING",
    ]
    for cell in (
        "abc123",
        "1x NVIDIA H100 80GB HBM3",
        "10.8000",  # 3e15 base units a second, one GPU, an hour
        "3601 (1:00:01)",
        "10.8030",
        "10.8000",
        "0.0030",
        "yes",
    ):
        assert cell in lines[1]
    for cell in ("2x NVIDIA GeForce RTX 4090", "1.3800", "59 (0:00:59)", "0.0226", "0.0000", "no"):
        assert cell in lines[2]
    assert len(lines) == 3
    assert fake_api.sent("GET", "/usage")[0].url.params.get("pod") is None


def test_usage_pod_passes_the_query_param(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/usage", [H100])
    result = cli("usage", "--pod", "abc123")
    assert result.exit_code == 0, result.output
    assert fake_api.sent("GET", "/usage")[0].url.params["pod"] == "abc123"
    assert "abc123" in result.stdout


def test_usage_json_is_the_raw_answer(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/usage", [H100, RTX])
    result = cli("usage", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [H100, RTX]
    assert result.stderr == ""


def test_usage_unknown_pod_exits_3_with_the_api_message(cli: Any, fake_api: Any) -> None:
    fake_api.error("GET", "/usage", 404, "pod nope not found")
    result = cli("usage", "--pod", "nope")
    assert result.exit_code == 3
    assert result.stderr == "error: pod nope not found\n"
    assert result.stdout == ""


def test_usage_empty(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/usage", [])
    result = cli("usage")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no usage yet"


def test_usage_shows_what_is_no_integer_as_sent(cli: Any, fake_api: Any) -> None:
    odd = {"podId": "p1", "gpuType": "X", "gpuCount": 1, "amount": "n/a", "running": False}
    fake_api.on("GET", "/usage", [odd])
    result = cli("usage")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split() == [
        "p1",
        "1x",
        "X",
        "-",
        "-",
        "n/a",
        "-",
        "-",
        "no",
    ]


@pytest.mark.parametrize(
    ("units", "shown"),
    [
        (0, "0.0000"),
        (49999999999999, "0.0000"),
        (50000000000000, "0.0001"),
        (10803000000000000000, "10.8030"),
        (10**24, "1000000.0000"),
    ],
)
def test_tokens_rounds_half_up(units: int, shown: str) -> None:
    assert usage.tokens(units) == shown


@pytest.mark.parametrize("rate", [1, 191666666666666, 3000000000000000, 138888888888889])
def test_tokens_agrees_with_the_price_per_hour(rate: int) -> None:
    assert usage.tokens(rate * 3600) == money.per_hour(rate, usage.TOKEN_DECIMALS)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0:00:00"), (59, "0:00:59"), (3601, "1:00:01"), (90000, "25:00:00")]
)
def test_clock(seconds: int, shown: str) -> None:
    assert usage.clock(seconds) == shown
