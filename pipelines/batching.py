"""Batch planner and out-of-memory ladder.

Independent work items (images, keyframes, clips, thumbnail rows) run in batches as
large as free memory allows. The cost of an item is measured, not guessed: the first
item of a new kind (model, size, frames, steps) runs alone, the next two together (or
more, when even n times the first item's whole peak fits), and the difference of their
peak memory is the cost of one more item. Those probes are real work, not thrown away.
Where peaks cannot be measured, the batch doubles after each success instead. The
estimate is kept for the session and in a small JSON file.

Running out of memory never ends a job on the first try: only the failed items are
retried, with a halved batch, then with each memory saver the caller offers (VAE tiling,
offload), and only then does `OutOfMemory` name everything that was tried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Generic, TypeVar

from .device import free_memory, is_out_of_memory, release_memory
from .events import BatchDone, emit
from .files import write_json
from .settings import Runtime

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SAFETY = 0.80  # plan for at most this share of free memory
UNMEASURED_MAX = 8  # the largest batch tried blind, where peaks cannot be measured


class OutOfMemory(RuntimeError):
    """Out of memory at batch size 1 with every saver on."""


@dataclass
class Cost:
    """Measured memory of one kind of work: base + per_item × batch, in bytes."""

    base: int = 0
    per_item: int = 0
    max_ok: int = 0  # largest batch that ran
    min_fail: int = 0  # smallest batch that ran out of memory (0 = never)

    def fits(self, free: int) -> int:
        if self.per_item <= 0:
            return 0
        return int((free * SAFETY - self.base) // self.per_item)

    def predict(self, batch: int) -> int | None:
        """The peak bytes a batch should take, or None before anything was measured."""
        return self.base + self.per_item * batch if self.per_item > 0 else None


def _cost(key: str, raw: object) -> Cost:
    """A cache entry as a `Cost`: Cost's fields, whole numbers ≥ 0 (anything else is damage)."""
    names = [f.name for f in fields(Cost)]
    if not isinstance(raw, dict) or not set(raw) <= set(names):
        raise ValueError(f"entry {key!r} is not an object with {', '.join(names)}")
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"entry {key!r}: {name} {value!r} is not a whole number ≥ 0")
    return Cost(**raw)


@dataclass
class Planner:
    """Chooses batch sizes from free memory and measured costs.

    `runtime.batch_size` fixes the size; `runtime.memory_budget` caps the free memory
    figure (so a test, or a user sharing a GPU, can plan for less than the card has).
    """

    runtime: Runtime = field(default_factory=Runtime)
    max_batch: int = 64
    cache_file: Path | None = None
    costs: dict[str, Cost] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.cache_file is None:
            base = self.runtime.cache_dir or Path(
                os.environ.get("REELCHAIN_CACHE", Path.home() / ".cache" / "reelchain")
            )
            self.cache_file = Path(base) / "planner.json"
        self.costs = self._load_cache()

    def _load_cache(self) -> dict[str, Cost]:
        """The measured costs in the cache file. A cache that does not read (damaged, hand
        edited, from another version) is only an optimisation: it is ignored with a warning
        naming it, and rewritten, instead of breaking every generating command."""
        try:
            raw = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        else:
            try:
                if not isinstance(raw, dict):
                    raise ValueError("not a JSON object")
                return {k: _cost(k, v) for k, v in raw.items()}
            except ValueError as exc:
                problem = str(exc)
        log.warning(
            "planner cache %s does not read (%s); ignoring it and starting afresh",
            self.cache_file,
            problem.splitlines()[0] if problem else "damaged",
        )
        self._save()
        return {}

    def size_for(self, key: str, device, remaining: int) -> int:
        """The batch size for the next batch of `key` with `remaining` items left."""
        if self.runtime.batch_size:
            return max(1, min(self.runtime.batch_size, remaining))
        cost = self.costs.get(key)
        if cost is not None and cost.min_fail and cost.min_fail <= 2:
            return 1  # two did not fit: no probing at 2 again
        cap = min(self.max_batch, cost.min_fail - 1 if cost and cost.min_fail else self.max_batch)
        if cost is not None and cost.max_ok and cost.per_item <= 0:
            # Peaks cannot be measured here (no /proc, or a device without peak statistics):
            # double the largest batch that ran, up to UNMEASURED_MAX; after an out-of-memory
            # error, halve the gap between what ran and what did not.
            n = (cost.max_ok + cost.min_fail) // 2 if cost.min_fail else 2 * cost.max_ok
            return max(1, min(n, UNMEASURED_MAX, cap, remaining))
        if cost is None or cost.per_item <= 0:
            return 1  # probe: the first item runs alone, measured
        free = free_memory(device, self.runtime.memory_budget)
        if cost.max_ok < 2:
            # Second probe: two items together, or more when even the worst case fits: n
            # items never need more than n times one item's whole peak (`base` after the
            # first probe), so the first job of a kind is not spent in small batches.
            n = int(free * SAFETY // max(cost.base, 1))
            return max(1, min(max(2, n), cap, remaining))
        return max(1, min(cost.fits(free), cap, remaining))

    def observe(self, key: str, batch: int, peak: int | None) -> None:
        """Record a batch that ran, with its measured peak (bytes above the baseline).

        The probes fix the model: batch 1 gives base + per_item, the second probe (a batch
        of n ≥ 2) gives per_item as the difference over n - 1. A first measurement in a batch
        of several (after runs with a fixed batch size) counts it all per item. Later batches
        only ever raise per_item (when they measured more than predicted), so the estimate
        never drifts down into an out-of-memory error.
        """
        with self._lock:
            cost = self.costs.setdefault(key, Cost())
            probing = cost.max_ok < 2
            cost.max_ok = max(cost.max_ok, batch)
            if peak is None:
                self._save()  # what ran still counts where nothing can be measured
                return
            if batch == 1 and probing:
                cost.base = peak
                cost.per_item = max(cost.per_item, peak // 2 or 1)
            elif batch >= 2 and probing and cost.base:
                total_one = cost.base
                cost.per_item = max(1, -(-(peak - total_one) // (batch - 1)))
                cost.base = max(0, total_one - cost.per_item)
            elif cost.per_item <= 0:
                cost.base, cost.per_item = 0, max(1, -(-peak // batch))
            elif peak > cost.base + cost.per_item * batch:
                cost.per_item = max(cost.per_item, -(-(peak - cost.base) // batch))
            self._save()

    def learn_oom(self, key: str, batch: int) -> None:
        with self._lock:
            cost = self.costs.setdefault(key, Cost())
            cost.min_fail = batch if not cost.min_fail else min(cost.min_fail, batch)
            if cost.max_ok >= batch:
                cost.max_ok = batch - 1
            self._save()

    def _save(self) -> None:
        with contextlib.suppress(OSError):
            write_json(self.cache_file, {k: asdict(v) for k, v in self.costs.items()})


# ---------------------------------------------------------------------------------------
# Measuring peak memory of one call


@contextlib.contextmanager
def measure_peak(device) -> Iterator[list[int | None]]:
    """Yield a one-element list that holds the call's peak bytes above the start, or None.

    CUDA: the allocator's peak statistics. CPU (Linux): the process's peak resident set
    (VmHWM), reset by writing 5 to /proc/self/clear_refs; None where that is not allowed.
    """
    out: list[int | None] = [None]
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out[0] = max(0, torch.cuda.max_memory_allocated(device) - start)
        return
    start = _rss()
    reset = _reset_hwm()
    yield out
    if reset and start is not None:
        hwm = _hwm()
        out[0] = None if hwm is None else max(0, hwm - start)


def _status_field(name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss() -> int | None:
    return _status_field("VmRSS")


def _hwm() -> int | None:
    return _status_field("VmHWM")


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Running a queue of items in batches, with the out-of-memory ladder


@dataclass
class Saver:
    """A rung of the ladder below batch size 1: a name for messages and how to apply it."""

    name: str
    apply: Callable[[], None]


@dataclass
class BatchReport(Generic[R]):
    results: list[R]
    batch_sizes: list[int]  # the size of every batch that ran, in order
    tried: list[str]  # rungs of the ladder that were stepped on


def run_batched(
    items: Sequence[T],
    call: Callable[[list[T]], list[R]],
    *,
    planner: Planner,
    key: str,
    device,
    savers: Sequence[Saver] = (),
    on_result: Callable[[int, R], None] | None = None,
    max_batch: int | None = None,
    on_failure: Callable[[], None] | None = None,
) -> BatchReport[R]:
    """Run `call` over `items` in planned batches; results come back in the items' order.

    `call` must return one result per item, and an item's result must not depend on its
    batch-mates (per-item seeds), so that retries and resizes change nothing but speed.
    `on_result(index, result)` runs as soon as a result exists (for streaming writes).
    `max_batch` caps the size for calls that cannot take more (one conditioning per call).
    `on_failure` runs before a retry (clears state a failed call left, such as a cache).
    """
    results: list[R | None] = [None] * len(items)
    pending = deque(range(len(items)))
    sizes: list[int] = []
    tried: list[str] = []
    ladder = list(savers)
    cap = max_batch  # after an OOM, no batch larger than this in this run
    while pending:
        size = planner.size_for(key, device, len(pending))
        if cap is not None:
            size = min(size, cap)
        batch = [pending.popleft() for _ in range(min(size, len(pending)))]
        try:
            with measure_peak(device) as peak:
                t0 = time.perf_counter()
                out = call([items[i] for i in batch])
                elapsed = time.perf_counter() - t0
        except BaseException as exc:
            if not is_out_of_memory(exc):
                raise
            release_memory()
            if on_failure:
                on_failure()
            pending.extendleft(reversed(batch))
            planner.learn_oom(key, len(batch))
            if len(batch) > 1:
                # Half the batch, or the largest that has run for this kind if that is more
                # (`learn_oom` keeps it below the size that just failed).
                cap = max(1, len(batch) // 2, planner.costs[key].max_ok)
                tried.append(f"batch {len(batch)}→{cap}")
                log.warning("out of memory at batch %d; retrying with %d", len(batch), cap)
                continue
            if ladder:
                saver = ladder.pop(0)
                saver.apply()
                tried.append(saver.name)
                log.warning("out of memory at batch 1; retrying with %s", saver.name)
                continue
            steps = ", ".join(tried) or "batch 1"
            raise OutOfMemory(
                f"out of memory at batch size 1 after trying: {steps}; lower width/height or "
                "frames, or set --memory-budget / --offload sequential"
            ) from exc
        if len(out) != len(batch):
            raise RuntimeError(f"batch call returned {len(out)} results for {len(batch)} items")
        sizes.append(len(batch))
        known = planner.costs.get(key) or Cost()  # before it learns from this batch
        predicted, probing = known.predict(len(batch)), known.max_ok < 2
        planner.observe(key, len(batch), peak[0])
        emit(BatchDone(key, len(batch), elapsed, peak[0], predicted, probing))
        log.debug("batch of %d took %.2fs", len(batch), elapsed)
        for i, r in zip(batch, out, strict=True):
            results[i] = r
            if on_result:
                on_result(i, r)
    return BatchReport(results, sizes, tried)  # type: ignore[arg-type]


def group_indices(items: Sequence[T], key: Callable[[T], object]) -> list[list[int]]:
    """Indices of items that can share a call (equal `key`), groups in first-seen order."""
    groups: dict[object, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    return list(groups.values())


def run_group(
    items: Sequence[T],
    idxs: list[int],
    out: list,
    call: Callable[[list[T]], list[R]],
    *,
    on_result: Callable[[int, R], None] | None = None,
    **kwargs,
) -> BatchReport[R]:
    """`run_batched` over `items[i] for i in idxs`, each result stored at `out[i]` (and
    passed to `on_result(i, result)`) under its index in the whole list."""

    def deliver(j: int, result: R) -> None:
        out[idxs[j]] = result
        if on_result:
            on_result(idxs[j], result)

    return run_batched([items[i] for i in idxs], call, on_result=deliver, **kwargs)


def cost_key(loaded, width: int, height: int, steps: int, frames: int = 1) -> str:
    """What the planner measures per kind of work: model, task, size, frames, steps, fast paths."""
    fast = ",".join(loaded.placement.fast) or "-"
    return f"{loaded.ref.label}|{loaded.task}|{width}x{height}|f{frames}|s{steps}|{fast}"


def ladder_for(loaded) -> list[Saver]:
    """The memory savers still available for a loaded pipeline, cheapest first: VAE
    tiling, then on a GPU model offload (only where the largest component fits beside its
    activations) and group offload, which every GPU ladder keeps. Each rung records itself
    in the loaded model's placement, which manifests and sidecars print."""
    from .device import enable_vae_savers, model_offload_fits

    pipe, placement = loaded.pipe, loaded.placement
    rungs = [
        Saver("VAE tiling", lambda: enable_vae_savers(pipe, tiling=True)),
    ]
    if placement.device.type == "cpu":
        return rungs
    largest = int(loaded.ref.preset.largest_gb * 2**30)
    if placement.offload == "none" and model_offload_fits(
        free_memory(placement.device) + _on_device(pipe, placement.device), largest
    ):
        rungs.append(Saver("model offload", lambda: _offload(loaded, "model")))
    if placement.offload in ("none", "model"):
        rungs.append(Saver("group offload", lambda: _offload(loaded, "group")))
    return rungs


def _offload(loaded, mode: str) -> None:
    from .device import set_offload

    set_offload(loaded.pipe, loaded.placement.offload, mode, loaded.placement.device)
    loaded.place(dataclasses.replace(loaded.placement, offload=mode, vae_tiling=True))


def _on_device(pipe, device) -> int:
    """Bytes of the pipeline's weights on `device` now (freed when it offloads)."""
    import torch

    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for t in component.parameters():
                if t.device.type == device.type:
                    total += t.numel() * t.element_size()
    return total
