"""What the engine reports as it works, for whoever watches (benchmarks, logs, monitors).

The engine emits small typed events; `watch(callback)` subscribes a callback while a
block runs. Watching is process-wide, not per run: a callback sees every event of every
run in the process while it is subscribed. Callbacks run on the thread that emits (the
segment writer has its own thread), so they must be quick and safe to call from any
thread; an exception in a callback reaches the engine call that emitted it. With nobody
watching, emitting costs one attribute read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchDone:
    """A batch of work items ran (images, keyframes, clips), from `batching.run_batched`."""

    key: str  # the kind of work, as the planner measures it (`batching.cost_key`)
    size: int  # items in the batch
    seconds: float  # the batch call itself
    peak: int | None  # bytes above the start of the call; None where it cannot be measured
    predicted: int | None  # the planner's peak for this batch before it learned from it
    probing: bool  # the planner was still measuring this kind: `predicted` is rough or None


@dataclass(frozen=True)
class SegmentWritten:
    """A finished clip was written to its segment file (colour match, encode, manifest)."""

    index: int  # the segment's index in the run
    seconds: float


@dataclass(frozen=True)
class Stitched:
    """The run's segments were stitched into the final video."""

    seconds: float


Event = BatchDone | SegmentWritten | Stitched


class _Watchers:
    """The subscribed callbacks: a tuple replaced under a lock, so `emit` reads it without one."""

    def __init__(self) -> None:
        self.callbacks: tuple[Callable[[Event], object], ...] = ()
        self.lock = threading.Lock()


_WATCHERS = _Watchers()


def emit(event: Event) -> None:
    """Hand `event` to every callback subscribed now, in subscription order."""
    for callback in _WATCHERS.callbacks:
        callback(event)


@contextlib.contextmanager
def watch(callback: Callable[[Event], object]) -> Iterator[None]:
    """Call `callback(event)` for every event emitted while the block runs."""
    with _WATCHERS.lock:
        _WATCHERS.callbacks = (*_WATCHERS.callbacks, callback)
    try:
        yield
    finally:
        with _WATCHERS.lock:
            rest = list(_WATCHERS.callbacks)
            rest.remove(callback)  # the first match: the same callback may watch twice
            _WATCHERS.callbacks = tuple(rest)
