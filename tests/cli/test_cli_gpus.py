"""``openpod gpu list``."""

from __future__ import annotations

import json
from typing import Any

GPU_TYPES = [
    {
        "id": "NVIDIA GeForce RTX 4090",
        "displayName": "RTX 4090",
        "memoryInGb": 24,
        "ratePerSecond": "191666666666666",
        "pricePerHour": "$0.69",
        "free": 3,
        "total": 4,
    }
]


def test_gpu_list_table(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/gpu-types", GPU_TYPES)
    result = cli("gpu", "list")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header == ["ID", "NAME", "MEMORY", "$/HR", "RATE/S", "FREE/TOTAL"]
    row = result.stdout.splitlines()[1]
    for cell in ("NVIDIA GeForce RTX 4090", "RTX 4090", "24 GB", "$0.69", "191666666666666", "3/4"):
        assert cell in row
    request = fake_api.requests[0]
    assert request.headers["Authorization"] == "Bearer op_testkey123"


def test_gpu_list_json_is_plain(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/gpu-types", GPU_TYPES)
    result = cli("gpu", "list", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == GPU_TYPES
    assert result.stderr == ""


def test_gpu_list_empty(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/gpu-types", [])
    result = cli("gpu", "list")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no GPU types"
