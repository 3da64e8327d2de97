"""GPU discovery without NVML (as on every CI machine): no GPUs found, nothing fails."""

from __future__ import annotations

import sys
import types

import pytest

from openpod.adapters.gpus import nvml


def test_no_nvml_library_means_no_gpus() -> None:
    # nvidia-ml-py is installed, but there is no driver library here: nvmlInit fails.
    assert nvml.discover() is None


def test_gpus_are_read_from_nvml_when_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NVML calls discover() makes, answered by a stand-in module (no GPU on CI)."""
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    names = [b"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]
    calls: list[str] = []
    fake.NVMLError = NVMLError  # type: ignore[attr-defined]
    fake.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda h: names[h]  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    found = nvml.discover()
    assert found is not None
    assert [(g.index, g.type, g.uuid) for g in found] == [
        (0, "NVIDIA H100 80GB HBM3", "GPU-0"),
        (1, "NVIDIA H100 80GB HBM3", "GPU-1"),
    ]
    assert calls == ["init", "shutdown"]
