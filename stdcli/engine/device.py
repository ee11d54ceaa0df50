"""The few device facts the engine needs: waiting for it, copying small tables to it, its free memory, its name."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on the device; on CUDA through pinned memory, so the copy does not wait for the GPU."""
    if device.type != "cuda":
        return table.to(device)
    return table.pin_memory().to(device, non_blocking=True)


def free_memory_bytes(device: torch.device) -> int:
    """Memory that can still be allocated on the device (CUDA: free per the driver; CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62  # unknown: do not refuse


def device_label(device: torch.device) -> str:
    """What step costs are remembered under: the GPU's name, or the CPU's core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}:{os.cpu_count()}cpus"
