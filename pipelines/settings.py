"""Typed settings shared by the CLI, the web UI and the Python API.

One object per concern, so the faces never thread long positional argument lists:

- `Runtime`: how to run (device, dtype, offload, batch size, memory budget, fast paths,
  a Ray cluster), with the flags every command and `app.py` take (`add_runtime_flags`);
- `Limits`: caps enforced on every request (UI widgets, API calls, CLI).

What to make is a request (`pipelines.requests`). Every field here can also come from an
environment variable (`REELCHAIN_<FIELD>`), so a Space or a cluster sets caps without
code. Validation raises `ValueError` with one line that names the field and the fix; the
CLI turns it into exit code 2, the UI into `gr.Error`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

OFFLOAD_CHOICES = ("auto", "none", "model", "group", "sequential")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# Opt-in fast paths (`--fast cache,compile,attention:flash`); none is on by default, since
# each must be measured on a GPU first. `attention:<backend>` takes one of diffusers'
# local attention backends (the `*_hub` ones download kernels, so they are left out).
FAST_CHOICES = ("cache", "compile", "attention:<backend>")
ATTENTION_BACKENDS = ("native", "flash", "flash_varlen", "flex", "sage", "sage_varlen",
                      "xformers", "_native_cudnn", "_native_efficient", "_native_flash",
                      "_native_math")  # fmt: skip

_SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(value: str | int | None, field_name: str = "memory-budget") -> int | None:
    """Parse a memory size such as `12GB`, `512M`, `1.5g` or a plain byte count."""
    if value is None or value == "" or value == "auto":
        return None
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(value).upper())
        if not m:
            raise ValueError(
                f"{field_name}: cannot read {value!r} as a size (use e.g. 24GB, 512MB or 8G)"
            )
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    if size <= 0:
        raise ValueError(f"{field_name}: must be > 0 (got {value!r})")
    return size


def parse_batch_size(value: str | int | None) -> int | None:
    """`auto` (None) or a positive integer."""
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"batch-size: use 'auto' or a whole number ≥ 1 (got {value!r})") from None
    if n < 1:
        raise ValueError(f"batch-size: must be ≥ 1 (got {n})")
    return n


def parse_fast(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """`cache,compile` (or a sequence) into a checked tuple; `none` or empty: no fast path."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if item in ("", "none"):
            continue
        kind, _, backend = item.partition(":")
        if not (
            item in ("cache", "compile") or (kind == "attention" and backend in ATTENTION_BACKENDS)
        ):
            raise ValueError(
                f"fast: unknown {item!r} (choose from: {', '.join(FAST_CHOICES)} "
                f"with <backend> one of {', '.join(ATTENTION_BACKENDS)}; comma-separated)"
            )
        if item not in out:
            out.append(item)
    if sum(i.startswith("attention:") for i in out) > 1:
        raise ValueError("fast: give at most one attention:<backend>")
    return tuple(out)


EXIT_INVALID = 2  # the exit code of a command given input it cannot take


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix (exit code 2 as before)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(
            EXIT_INVALID,
            f"error: {message} (see `{self.prog} --help`)\n",
        )


def parse_workers(value: str | int | None) -> int | None:
    """None (one per GPU) or a whole number of Ray workers ≥ 1."""
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"workers: use a whole number ≥ 1 (got {value!r})") from None
    if n < 1:
        raise ValueError(f"workers: must be a whole number ≥ 1 (got {n})")
    return n


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    """The device, memory and cluster knobs, shared by every command and by `app.py`; each
    falls back to its `REELCHAIN_*` environment variable."""
    g = p.add_argument_group("memory, device and cluster")
    g.add_argument("--batch-size", default=None, help="auto (default) or a whole number")
    g.add_argument("--memory-budget", default=None, help="cap on memory to plan for, e.g. 12GB")
    g.add_argument("--offload", default=None, choices=OFFLOAD_CHOICES)
    g.add_argument("--dtype", default=None, choices=DTYPE_CHOICES)
    g.add_argument("--device", default=None, choices=DEVICE_CHOICES)
    g.add_argument("--fast", default=None, metavar="LIST",
                   help="opt-in fast paths, comma-separated: cache, compile, "
                   "attention:<backend> (e.g. attention:flash); off by default")  # fmt: skip
    g.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on Ray workers: local (a private instance), auto (the running "
                   "cluster) or ray://HOST:PORT")  # fmt: skip
    g.add_argument("--workers", default=None, metavar="N",
                   help="Ray workers (default: one per GPU; needed where there is none)")  # fmt: skip


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    return Runtime.from_options(
        device=args.device, dtype=args.dtype, offload=args.offload,
        batch_size=args.batch_size, memory_budget=args.memory_budget, fast=args.fast,
        ray=args.ray, workers=args.workers,
    )  # fmt: skip


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: unknown {value!r} (choose one of: {', '.join(choices)})")
    return value


@dataclass(frozen=True)
class Runtime:
    """How the engine runs: shared by every generating command."""

    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    offload: str = "auto"  # auto | none | model | group | sequential
    batch_size: int | None = None  # None = planned from free memory
    memory_budget: int | None = None  # bytes; None = measured free memory
    cache_dir: Path | None = None  # planner cache; None = ~/.cache/reelchain
    fast: tuple[str, ...] = ()  # opt-in fast paths: cache, compile, attention:<backend>
    ray: str | None = None  # a Ray cluster's address (`local`, `auto`, `ray://...`): scale out
    workers: int | None = None  # Ray workers; None: one per GPU of the cluster

    def __post_init__(self) -> None:
        object.__setattr__(self, "fast", parse_fast(self.fast))
        _choice("device", self.device, DEVICE_CHOICES)
        _choice("dtype", self.dtype, DTYPE_CHOICES)
        _choice("offload", self.offload, OFFLOAD_CHOICES)
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch-size: must be ≥ 1 (got {self.batch_size})")
        if self.workers is not None and not self.ray:
            raise ValueError("workers: they are Ray workers; give --ray ADDRESS too")

    @classmethod
    def from_options(
        cls,
        *,
        device: str | None = None,
        dtype: str | None = None,
        offload: str | None = None,
        batch_size: str | int | None = None,
        memory_budget: str | int | None = None,
        fast: str | tuple[str, ...] | None = None,
        ray: str | None = None,
        workers: str | int | None = None,
        env: dict[str, str] | None = None,
    ) -> Runtime:
        """Options win over `REELCHAIN_*` environment variables, which win over defaults. A
        bad variable is one line naming the variable (the flag was never typed)."""
        env = os.environ if env is None else env

        def pick(value, key, parse):
            if value is not None:
                return parse(value)
            raw = env.get(f"REELCHAIN_{key}")
            try:
                return parse(raw)
            except ValueError as exc:
                raise ValueError(f"{exc} (from REELCHAIN_{key})") from None

        def choice(name, choices):
            return lambda v: _choice(name, "auto" if v is None else v, choices)

        return cls(
            device=pick(device, "DEVICE", choice("device", DEVICE_CHOICES)),
            dtype=pick(dtype, "DTYPE", choice("dtype", DTYPE_CHOICES)),
            offload=pick(offload, "OFFLOAD", choice("offload", OFFLOAD_CHOICES)),
            batch_size=pick(batch_size, "BATCH_SIZE", parse_batch_size),
            memory_budget=pick(memory_budget, "MEMORY_BUDGET", parse_size),
            fast=pick(fast, "FAST", parse_fast),
            ray=pick(ray, "RAY", lambda v: (v or "").strip() or None),
            workers=pick(workers, "WORKERS", parse_workers),
        )


@dataclass(frozen=True)
class Limits:
    """Caps enforced on every request, whatever face it came through.

    Defaults suit a local workstation; a shared Space tightens them with environment
    variables (`REELCHAIN_MAX_SIDE=768`, ...), read by `Limits.from_env()`.
    """

    max_side: int = 4096
    max_steps: int = 150
    max_count: int = 16
    max_batch: int = 64
    max_prompt_chars: int = 2000
    max_seconds_total: float = 3600.0
    max_shot_seconds: float = 600.0
    max_shots: int = 500
    max_fps: int = 60
    max_frames: int = 216_000
    max_upload_bytes: int = 200 * 2**20
    max_rows: int = 1000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"Limits.{f.name}: must be a positive number (got {value!r})")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        """Caps from `REELCHAIN_MAX_*` variables; a bad value is one line naming the variable
        (an operator reads which variable to fix, not which dataclass field it fills)."""
        env = os.environ if env is None else env
        changes = {}
        for f in dataclasses.fields(cls):
            name = f"REELCHAIN_{f.name.upper()}"
            raw = env.get(name)
            if raw is None:
                continue
            whole = f.type not in ("float", float)
            try:
                value = int(raw) if whole else float(raw)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value) or value <= 0:
                kind = "a whole number" if whole else "a number"
                raise ValueError(f"{name}: must be {kind} > 0 (got {raw!r})")
            changes[f.name] = value
        return dataclasses.replace(cls(), **changes)

    def check_prompt(self, prompt: str, name: str = "prompt") -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{name}: must be a non-empty text")
        if len(prompt) > self.max_prompt_chars:
            raise ValueError(
                f"{name}: {len(prompt)} characters is over the limit of {self.max_prompt_chars}"
            )
        return prompt.strip()
