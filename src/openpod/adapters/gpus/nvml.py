"""GPU discovery through NVML (nvidia-ml-py); no NVML, no driver or no GPU → None."""

from __future__ import annotations

import logging

from openpod.domain.gpus import GpuDevice

log = logging.getLogger("openpod.gpus")


def discover() -> tuple[GpuDevice, ...] | None:
    """The host's NVIDIA GPUs by index with their long names, or None where NVML is absent."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        log.info("NVML not available (%s): using declared GPUs", error)
        return None
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            devices.append(
                GpuDevice(
                    index=index,
                    type=name.decode() if isinstance(name, bytes) else str(name),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return tuple(devices) or None
    finally:
        pynvml.nvmlShutdown()
