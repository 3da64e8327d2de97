"""GPU declarations for nodes without NVML: `NVIDIA GeForce RTX 4090:2,NVIDIA H200:1`."""

from dataclasses import dataclass

from openpod.domain.errors import InvalidGpuSpec


@dataclass(frozen=True)
class GpuDevice:
    """One GPU of a node: its index on the host and its type's long name."""

    index: int
    type: str
    uuid: str | None = None


def parse_gpu_declaration(spec: str) -> tuple[GpuDevice, ...]:
    """`TYPE:COUNT[,TYPE:COUNT...]` → devices with indices 0..n-1 in declaration order."""
    devices: list[GpuDevice] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, sep, count_text = item.rpartition(":")
        if not sep or not name.strip():
            raise InvalidGpuSpec(f"GPU declaration {item!r} must look like 'NVIDIA H200:2'")
        if not count_text.strip().isdigit() or int(count_text) < 1:
            raise InvalidGpuSpec(f"GPU declaration {item!r}: count must be a positive integer")
        for _ in range(int(count_text)):
            devices.append(GpuDevice(index=len(devices), type=name.strip()))
    return tuple(devices)
