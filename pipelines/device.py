"""Device, dtype, free memory, memory savers and opt-in fast paths.

Chosen once at load time (diffusers' habit: components are set up once, a call never
mutates them). Free memory comes from one function, `free_memory`, that a memory budget
overrides, so the planner and the tests see the same figure whatever the hardware.

Fast paths (`Runtime.fast`) are diffusers' own: first-block cache hooks on the video
transformers, an attention backend, `torch.compile`. Each is an opt-in until measured on
a GPU; the ones a model cannot take are skipped with a warning, and `Placement.fast`
records only those that were switched on.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    fast: tuple[str, ...] = ()  # asked for in the plan; after `apply_placement`, what is on

    def describe(self) -> dict[str, str | bool]:
        return {
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "offload": self.offload,
            "vae_tiling": self.vae_tiling,
            "fast": ",".join(self.fast) or "none",
        }


def choose_offload(need: int, free: int, pref: str, device: torch.device, largest: int = 0) -> str:
    """Offload only where it helps: never on CPU; on a GPU, by need against free memory.

    `need` is the model's rough weight + activation footprint in bytes, `largest` its
    largest single component. With 20% head-room for `need` the whole model stays on the
    device. Model offload moves whole components in turn, so it needs the largest one (a
    FLUX or Wan transformer: 24 to 33 GB) on the device with head-room for its activations;
    short of that, groups of layers stream (group offload).
    """
    if pref != "auto":
        return "none" if device.type == "cpu" else pref
    if device.type == "cpu" or need <= 0:
        return "none"
    if free >= need * 1.2:
        return "none"
    if model_offload_fits(free, largest):
        return "model"
    return "group"


def model_offload_fits(free: int, largest: int) -> bool:
    """Whether the largest component and its activations (half as much again) fit."""
    return largest > 0 and free >= largest * 1.5


def plan_placement(runtime: Runtime, need: int, largest: int = 0) -> Placement:
    device = pick_device(runtime.device)
    dtype = pick_dtype(device, runtime.dtype)
    free = free_memory(device, runtime.memory_budget)
    offload = choose_offload(need, free, runtime.offload, device, largest)
    # Tiling trades a little speed for a flat VAE peak; worth it when memory is short: with
    # offload, or with less than twice the model's need free (a 720x480 CogVideoX decode
    # alone asks a CPU for more than 20 GB untiled, and 9 GB tiled).
    tiling = offload != "none" or free < 2 * need
    return Placement(device, dtype, offload, vae_tiling=tiling, fast=runtime.fast)


def apply_placement(pipe, placement: Placement) -> Placement:
    """Move a loaded pipeline onto its device with its memory savers switched on, then
    switch on the fast paths it asks for. Returns the placement with `fast` narrowed to
    the fast paths that are on."""
    enable_vae_savers(pipe, tiling=placement.vae_tiling)
    set_offload(pipe, "none", placement.offload, placement.device)
    return dataclasses.replace(placement, fast=apply_fast_paths(pipe, placement.fast))


def set_offload(pipe, current: str, mode: str, device: torch.device) -> None:
    """Put a pipeline under offload `mode` (none | model | group | sequential), undoing the
    accelerate hooks of `current` first (a rung of the out-of-memory ladder moves from
    none or model offload down to group offload)."""
    if current in ("model", "sequential"):
        pipe.remove_all_hooks()
    if mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif mode == "group":
        pipe.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=device.type == "cuda",
        )
    else:
        pipe.to(device)


# ---------------------------------------------------------------------------------------
# Fast paths (opt-in)

DENOISERS = ("transformer", "transformer_2", "unet")  # pipeline components that denoise
CACHE_THRESHOLD = 0.05  # diffusers' FirstBlockCacheConfig default; higher skips more


def denoisers(pipe) -> dict[str, torch.nn.Module]:
    return {name: m for name in DENOISERS if (m := getattr(pipe, name, None)) is not None}


def fast_order(fast: tuple[str, ...]) -> list[str]:
    """Fast paths in the order they must go on: the attention backend and the cache hooks
    change what the modules run, so compilation comes last and sees both."""
    rank = {"attention": 0, "cache": 1, "compile": 2}
    return sorted(fast, key=lambda f: rank[f.partition(":")[0]])


def apply_fast_paths(
    pipe, fast: tuple[str, ...], skipped: dict[str, str] | None = None
) -> tuple[str, ...]:
    """Switch on each fast path in `fast` for every denoiser that takes it; `skipped`, when
    given, receives why each fast path that no denoiser took was left off. They go on in
    `fast_order`.
    """
    applied = []
    for item in fast_order(fast):
        kind, _, arg = item.partition(":")
        modules = denoisers(pipe)
        why_not = {name: why for name, m in modules.items() if (why := _FAST[kind](m, arg))}
        if len(why_not) < len(modules):
            applied.append(item)
        elif skipped is not None:
            skipped[item] = "; ".join(why_not.values()) or "no denoiser"
        for name, why in why_not.items():
            log.warning(
                "fast: %s skipped for the %s (%s): %s",
                item,
                name,
                type(modules[name]).__name__,
                why,
            )
    return tuple(f for f in fast if f in applied)


# Each fast path switches itself on for one denoiser, or returns why it cannot.


def _enable_cache(module: torch.nn.Module, _arg: str) -> str | None:
    """First-block cache: when the first block's residual barely changes from the last
    step, reuse the other blocks' residual. Transformers with diffusers' `CacheMixin` and
    at least two blocks only (LTX, Wan, CogVideoX); the UNets (SD, SVD) have no cache hooks."""
    from diffusers.hooks import FirstBlockCacheConfig
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
    from diffusers.models.cache_utils import CacheMixin

    if not isinstance(module, CacheMixin):
        return "diffusers has no cache hooks for it"
    blocks = sum(
        len(child)
        for name, child in module.named_children()
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList)
    )
    if blocks < 2:
        return f"{blocks} transformer block(s); the cache needs a first block and more to skip"
    module.enable_cache(FirstBlockCacheConfig(threshold=CACHE_THRESHOLD))
    return None


def _set_attention(module: torch.nn.Module, backend: str) -> str | None:
    """diffusers' attention dispatcher, for models whose processors go through it (LTX,
    Wan); older processors (SD and SVD UNets, CogVideoX) always call PyTorch's SDPA."""
    if not any(
        hasattr(getattr(m, "processor", None), "_attention_backend") for m in module.modules()
    ):
        return "its attention processors always call PyTorch's SDPA"
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    # `set_attention_backend` also makes the backend the process-wide default; keep the
    # default as it was, so other models loaded without the option are unchanged.
    before = _AttentionBackendRegistry._active_backend
    try:
        module.set_attention_backend(backend)
    except (RuntimeError, ImportError) as exc:  # the backend's package is missing
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"fast: attention:{backend} cannot run here ({msg})") from exc
    finally:
        _AttentionBackendRegistry.set_active_backend(before)
    return None


def attention_takes_float_mask(backend: str) -> bool:
    """Whether a diffusers attention backend takes a float (additive) attention mask.

    diffusers has no flag for it: each backend's function decides. Flash and sage raise on
    any mask; the variable-length kernels turn the mask into sequence lengths and accept
    booleans only. An unknown name is left to diffusers' own error."""
    import inspect

    from diffusers.models.attention_dispatch import AttentionBackendName
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

    try:
        name = AttentionBackendName(backend)
    except ValueError:
        return True
    if "attn_mask" not in registry._supported_arg_names.get(name, ()):
        return False
    source = inspect.getsource(registry._backends[name])
    return "is not supported" not in source and "_normalize_attn_mask" not in source


def _compile(module: torch.nn.Module, _arg: str) -> str | None:
    """`torch.compile` in place (the module object, its hooks and its pipeline stay the
    same): regional, the repeated blocks only, where the model lists them (diffusers'
    advice: much shorter compile times, about the same speed); else the whole module."""
    if getattr(module, "_repeated_blocks", None):
        module.compile_repeated_blocks()
    else:
        module.compile()
    return None


_FAST = {"cache": _enable_cache, "attention": _set_attention, "compile": _compile}


def reset_fast_state(pipe) -> None:
    """Forget cached residuals. diffusers does this at the end of every pipeline call; a
    call that raised (out of memory, cancelled) skips it, so a retry calls this first."""
    for module in denoisers(pipe).values():
        reset = getattr(module, "_reset_stateful_cache", None)
        if reset is not None and getattr(module, "is_cache_enabled", False):
            reset()


def enable_vae_savers(pipe, *, tiling: bool) -> None:
    """VAE slicing (free: decode one item of a batch at a time); tiling on request.

    Not slicing for timestep-conditioned LTX VAEs (0.9.1+): diffusers 0.42's sliced decode
    pairs the latents and timesteps wrongly (`for z, t in (z.split(1), temb.split(1))`),
    which fails for a batch of three or more and, for two, decodes one clip's latents at
    the other's values."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return
    if not getattr(vae, "config", {}).get("timestep_conditioning"):
        with contextlib.suppress(AttributeError, NotImplementedError):
            vae.enable_slicing()
    if tiling:
        with contextlib.suppress(AttributeError, NotImplementedError):
            vae.enable_tiling()


# What PyTorch's CPU and MPS allocators say when an allocation fails: a plain RuntimeError.
_ALLOCATOR_FAILURES = ("DefaultCPUAllocator: can't allocate memory", "MPS backend out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """The real OOM errors: CUDA's `torch.OutOfMemoryError`, the host's `MemoryError`, and
    the RuntimeError of PyTorch's CPU and MPS allocators (a tensor bigger than the RAM left)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _ALLOCATOR_FAILURES)


def release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
