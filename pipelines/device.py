"""Device, dtype, free memory and memory savers.

Chosen once at load time (diffusers' habit: components are set up once, a call never
mutates them). Free memory comes from one function, `free_memory`, that a memory budget
overrides, so the planner and the tests see the same figure whatever the hardware.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from .settings import Runtime

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(pref: str = "auto") -> torch.device:
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA is not available on this machine (use --device auto or cpu)")
    if pref == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: MPS is not available on this machine (use --device auto or cpu)")
    return torch.device(pref)


def pick_dtype(device: torch.device, pref: str = "auto") -> torch.dtype:
    """CUDA: bf16 where supported, else fp16; MPS: fp16; CPU: fp32 (half is slow or missing)."""
    if pref != "auto":
        return _DTYPES[pref]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def free_memory(device: torch.device, budget: int | None = None) -> int:
    """Bytes available for the models' work on `device`; `budget` (when given) caps it."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
    else:
        import psutil

        free = psutil.virtual_memory().available
    return min(free, budget) if budget else free


@dataclass(frozen=True)
class Placement:
    """Where and how a pipeline runs; recorded in every sidecar and manifest."""

    device: torch.device
    dtype: torch.dtype
    offload: str  # none | model | group | sequential
    vae_tiling: bool

    def describe(self) -> dict[str, str | bool]:
        return {
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "offload": self.offload,
            "vae_tiling": self.vae_tiling,
        }


def choose_offload(need: int, free: int, pref: str, device: torch.device) -> str:
    """Offload only where it helps: never on CPU; on a GPU, by need against free memory.

    `need` is the model's rough weight + activation footprint in bytes. With 20% head-room
    the whole model stays on the device; with at least half of it, whole modules move in
    turn (model offload, small cost); with less, groups of layers stream (group offload).
    """
    if pref != "auto":
        return "none" if device.type == "cpu" else pref
    if device.type == "cpu" or need <= 0:
        return "none"
    if free >= need * 1.2:
        return "none"
    if free >= need * 0.5:
        return "model"
    return "group"


def plan_placement(runtime: Runtime, need: int) -> Placement:
    device = pick_device(runtime.device)
    dtype = pick_dtype(device, runtime.dtype)
    free = free_memory(device, runtime.memory_budget)
    offload = choose_offload(need, free, runtime.offload, device)
    # Tiling trades a little speed for a flat VAE peak; worth it when memory is short.
    return Placement(device, dtype, offload, vae_tiling=offload != "none")


def apply_placement(pipe, placement: Placement) -> None:
    """Move a loaded pipeline onto its device with its memory savers switched on."""
    enable_vae_savers(pipe, tiling=placement.vae_tiling)
    if placement.offload == "model":
        pipe.enable_model_cpu_offload(device=placement.device)
    elif placement.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=placement.device)
    elif placement.offload == "group":
        pipe.enable_group_offload(
            onload_device=placement.device,
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=placement.device.type == "cuda",
        )
    else:
        pipe.to(placement.device)


def enable_vae_savers(pipe, *, tiling: bool) -> None:
    """VAE slicing always (free: decode one item of a batch at a time); tiling on request."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return
    with contextlib.suppress(AttributeError, NotImplementedError):
        vae.enable_slicing()
    if tiling:
        with contextlib.suppress(AttributeError, NotImplementedError):
            vae.enable_tiling()


def is_out_of_memory(exc: BaseException) -> bool:
    """The real OOM classes: CUDA's (`torch.OutOfMemoryError`) and the host's `MemoryError`."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError))


def release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
