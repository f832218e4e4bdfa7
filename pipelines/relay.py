"""Segments on Ray as a relay: each goes out the moment what it starts from is written.

Waves (the chain's way on one machine, where a wave's clips batch together) wait for a
whole wave and its writes before the next; on a cluster a worker then idles while the
driver writes, or while a longer clip of the wave finishes. Here every segment whose
predecessor is written is queued on the pool at once (up to `limit` clips held, in flight
or waiting to be written); a finished clip is checked and handed to the writer, and its
written segment releases the next one of its shot. Seeds and conditioning are the waves'
own, so the frames are too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

import numpy as np

from .clips import Cancelled, ClipItem


def relay(
    pool: Any,
    ref: Any,
    todo: list,
    *,
    item: Callable[[Any, int], ClipItem],
    accept: Callable[[Any, np.ndarray, int, Any], bool],
    write: Callable[[Any, np.ndarray], Future],
    limit: int,
    cancel: threading.Event | None = None,
    on_written: Callable[[Any], None] | None = None,
) -> None:
    """Make `todo` (segments with `index` and `depends`; the others are written) on `pool`:
    `item(seg, attempt)` is its call, `accept(seg, clip, attempt, extra)` keeps a clip
    (False: the next attempt goes out), `write(seg, clip)` writes it on the writer. The
    first error cancels what is in flight and leaves; writes already handed over finish."""
    todo_ids = {s.index for s in todo}
    waiting = list(todo)
    flying: dict[Future, tuple[Any, int]] = {}
    writing: dict[Future, Any] = {}
    written: set[int] = set()

    def send(seg: Any, attempt: int) -> None:
        (future,) = pool.submit(ref, [item(seg, attempt)])
        flying[future] = (seg, attempt)

    try:
        while waiting or flying or writing:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            room = max(1, limit) - len(flying) - len(writing)
            for seg in [s for s in waiting if _ready(s, todo_ids, written)][: max(0, room)]:
                waiting.remove(seg)
                send(seg, 0)
            if not flying and not writing:  # a plan whose segments wait on one another
                raise RuntimeError(f"relay: no segment can start ({len(waiting)} waiting)")
            done, _ = wait([*flying, *writing], timeout=0.1, return_when=FIRST_COMPLETED)
            for future in done:
                if future in writing:
                    seg = writing.pop(future)
                    future.result()  # a failed write ends the run
                    written.add(seg.index)
                    if on_written:
                        on_written(seg)
                    continue
                seg, attempt = flying.pop(future)
                clip = future.result()
                if accept(seg, clip, attempt, pool.take_extra(future)):
                    writing[write(seg, clip)] = seg
                else:
                    send(seg, attempt + 1)
    except BaseException:
        pool.cancel(list(flying))
        raise


def _ready(seg: Any, todo_ids: set[int], written: set[int]) -> bool:
    """Whether what a segment starts from exists: its keyframe, or a written predecessor
    (one not to make in this run is written already)."""
    return seg.depends is None or seg.depends not in todo_ids or seg.depends in written
