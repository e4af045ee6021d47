"""Where the network runs: device choice, compute precision, memory budget.

``auto`` picks CUDA when a GPU is present, else the CPU. bfloat16 is used
only where the hardware does it natively (AMX / AVX512-BF16 CPUs, GPUs);
elsewhere emulated bfloat16 is slower than float32.
"""

from __future__ import annotations

import os

import torch

from .errors import UNetError

DEFAULT_CPU_BUDGET = 1 << 30  # bytes of activations per batch on the CPU


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for ``device`` ("auto", "cpu", "cuda", ... or a device).

    Raises
    ------
    UNetError
        When the named device is not present.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UNetError("CUDA was requested but no CUDA GPU is available; use --device cpu")
    return dev


def native_bfloat16(device: torch.device) -> bool:
    """True where bfloat16 matrix work is done in hardware (AMX/AVX512-BF16, or a GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()) or bool(
            getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        )
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The compute dtype for ``precision`` ("auto", "float32", "bfloat16"); None is float32."""
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto":
        if os.environ.get("NAPARI_UNET_PRECISION") == "float32":
            return None
        return torch.bfloat16 if native_bfloat16(device) else None
    raise UNetError(f"unknown precision {precision!r}; use auto, float32 or bfloat16")


def default_memory_budget(device: torch.device) -> int:
    """Bytes that tiled prediction may use: half of what is free on a GPU, a fixed budget on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    return DEFAULT_CPU_BUDGET


def cpu_name() -> str:
    """The CPU's model name (speed figures are reported with it)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
