"""Where the network runs: device choice, compute precision, memory budget.

``auto`` picks an NVIDIA GPU (CUDA) when present, then an Apple GPU (MPS),
then the CPU. bfloat16 is used only where the hardware does it natively
(AMX / AVX512-BF16 CPUs, CUDA GPUs); elsewhere, Apple GPUs included, the
network runs in float32 (emulated bfloat16 is slower than float32).
"""

from __future__ import annotations

import os

import torch

from .errors import UNetError

DEFAULT_CPU_BUDGET = 1 << 30  # bytes of activations per batch on the CPU


def mps_available() -> bool:
    """True when an Apple GPU can run torch here (Metal Performance Shaders)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """The device choices present on this machine: "auto", then the GPUs, then "cpu"."""
    names = ["auto"]
    if torch.cuda.is_available():
        names.append("cuda")
    if mps_available():
        names.append("mps")
    return names + ["cpu"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for ``device`` ("auto", "cpu", "cuda", "cuda:1", "mps" or a device).

    ``auto`` (or None) picks CUDA, then MPS, then the CPU.

    Raises
    ------
    UNetError
        When the name is not a device, or the named device is not present.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UNetError(
            f"unknown device {device!r}; use one of {', '.join(available_devices())}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UNetError("CUDA was requested but no CUDA GPU is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UNetError(f"there is no {dev}: {torch.cuda.device_count()} CUDA GPU(s) here")
    if dev.type == "mps" and not mps_available():
        raise UNetError("an Apple GPU (mps) was requested but none is available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UNetError(
            f"device {dev.type!r} is not supported; use one of {', '.join(available_devices())}"
        )
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
    if device.type == "mps":
        # Apple GPUs share the machine's memory: half of what Metal recommends, less what is in use.
        mps = torch.mps
        free = mps.recommended_max_memory() - mps.driver_allocated_memory()
        return max(int(free * 0.5), DEFAULT_CPU_BUDGET // 4)
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
