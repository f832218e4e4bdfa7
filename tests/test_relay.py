"""The relay that runs a video's segments on Ray (`pipelines.relay`): a segment goes out the
moment what it starts from is written, not when a whole wave is. Driven here by a pool
whose clips take as long as each test says (the real pool is in tests/test_scale.py, whose
Ray runs go through the relay and match a local run frame for frame)."""

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from pipelines.clips import Cancelled
from pipelines.relay import relay


@dataclass
class Seg:
    index: int
    depends: int | None


class TimedPool:
    """A pool whose clip for segment k takes `seconds[k]`; it logs every submit and cancel."""

    def __init__(self, seconds: dict[int, float], fail: int | None = None):
        self.seconds, self.fail = seconds, fail
        self.log: list[tuple] = []
        self.cancelled: list[Future] = []
        self._run = ThreadPoolExecutor(8)

    def submit(self, ref, items):
        (item,) = items
        self.log.append(("submit", item[0], item[1], time.monotonic()))

        def work():
            time.sleep(self.seconds[item[0]])
            if item[0] == self.fail:
                raise RuntimeError(f"segment {item[0]} broke")
            return np.full((2, 1, 1, 3), item[1], np.float32)

        return [self._run.submit(work)]

    def take_extra(self, future):
        return None

    def cancel(self, futures):
        self.cancelled += futures


def run(pool, segs, accept=lambda seg, clip, attempt, extra: True, limit=8, cancel=None):
    writer = ThreadPoolExecutor(1)
    written: list[tuple[int, float]] = []

    def write(seg, clip):
        return writer.submit(lambda: written.append((seg.index, time.monotonic())))

    relay(pool, "ref", segs, item=lambda seg, attempt: (seg.index, attempt), accept=accept,
          write=write, limit=limit, cancel=cancel)  # fmt: skip
    writer.shutdown()
    return written


def submitted(pool, index):
    return next(t for kind, i, _, t in pool.log if kind == "submit" and i == index)


def test_a_shots_next_segment_goes_out_when_its_previous_is_written():
    """Two shots of two segments; shot A's first is slow. Shot B's second goes out as soon as
    B's first is written, while A's first still runs (waves would wait for both)."""
    segs = [Seg(0, None), Seg(1, 0), Seg(2, None), Seg(3, 2)]
    pool = TimedPool({0: 0.6, 1: 0.05, 2: 0.05, 3: 0.05})
    written = dict(run(pool, segs))
    assert set(written) == {0, 1, 2, 3}
    assert submitted(pool, 3) < written[0]  # B went on while A's first was still running
    assert submitted(pool, 1) >= written[0]  # a segment never before what it starts from


def test_segments_already_written_release_theirs_and_limit_holds():
    """A segment continuing one written by an earlier run goes out at once; never more
    than `limit` clips are held (in flight or waiting for the writer)."""
    segs = [Seg(1, 0), Seg(2, None), Seg(3, None), Seg(4, None)]  # 0 is on disk already
    pool = TimedPool(dict.fromkeys(range(5), 0.1))
    run(pool, segs, limit=2)
    starts = sorted(t for *_, t in pool.log)
    assert len(pool.log) == 4 and starts[2] - starts[0] > 0.05  # the third waited for room


def test_a_clip_that_is_not_kept_goes_out_again_with_the_next_attempt():
    segs = [Seg(0, None), Seg(1, 0)]
    pool = TimedPool({0: 0.01, 1: 0.01})
    tries = []

    def accept(seg, clip, attempt, extra):
        tries.append((seg.index, attempt, float(clip.flat[0])))
        return not (seg.index == 0 and attempt == 0)

    assert [i for i, _ in run(pool, segs, accept=accept)] == [0, 1]
    assert tries == [(0, 0, 0.0), (0, 1, 1.0), (1, 0, 0.0)]


def test_an_error_cancels_what_is_in_flight_and_leaves():
    segs = [Seg(0, None), Seg(1, None), Seg(2, 1)]
    pool = TimedPool({0: 0.05, 1: 1.0, 2: 0.01}, fail=0)
    with pytest.raises(RuntimeError, match="segment 0 broke"):
        run(pool, segs)
    assert len(pool.cancelled) == 1  # segment 1, still running


def test_a_cancel_stops_the_relay():
    stop = threading.Event()
    segs = [Seg(0, None), Seg(1, 0)]
    pool = TimedPool({0: 0.3, 1: 0.01})
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Cancelled):
        run(pool, segs, cancel=stop)
    assert [i for kind, i, *_ in pool.log] == [0]


def test_segments_that_wait_on_one_another_are_refused_not_spun_on():
    pool = TimedPool({0: 0.01, 1: 0.01})
    with pytest.raises(RuntimeError, match="no segment can start"):
        run(pool, [Seg(0, 1), Seg(1, 0)])
