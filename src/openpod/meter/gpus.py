"""NVML samples of the pod's own GPUs, through pynvml imported only when there are GPUs.

No pynvml, no driver or a failing call: no samples (never a failure of the meter).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("openpod.meter")


class GpuSampler:
    def __init__(self, indices: Sequence[int]) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        if not indices:
            return
        try:
            import pynvml
        except ImportError:
            log.info("no pynvml: no GPU samples")
            return
        try:
            pynvml.nvmlInit()
            self._handles = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in indices]
        except (pynvml.NVMLError, OSError) as error:
            log.info("NVML not available (%s): no GPU samples", error)
            self._handles = []
            return
        self._nvml = pynvml

    def sample(self) -> list[dict[str, int]]:
        """One sample per GPU: utilisation %, memory used (bytes), power (mW); [] without NVML."""
        nvml = self._nvml
        if nvml is None:
            return []
        samples = []
        for index, handle in self._handles:
            sample = {"index": index}
            for name, read in (
                ("util", lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                ("mem_used", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used),
                ("power_mw", nvml.nvmlDeviceGetPowerUsage),
            ):
                try:
                    sample[name] = int(read(handle))
                except (nvml.NVMLError, TypeError, ValueError):
                    continue  # e.g. no power reading on this board
            samples.append(sample)
        return samples

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._nvml = None
