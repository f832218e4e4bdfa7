"""Engine events: what a watcher sees of a real tiny run, and nothing once it stops."""

import threading

import torch
from conftest import TWO_SHOTS

from pipelines import events
from pipelines.batching import Planner, run_batched
from pipelines.chain import VideoOptions, make_video
from pipelines.settings import Runtime


def test_watch_sees_each_batch_segment_and_stitch_while_the_block_runs(tmp_path):
    seen = []  # (event, the thread it came from)
    runtime = Runtime(cache_dir=tmp_path / "cache")  # a fresh planner: its probes are seen
    with events.watch(lambda e: seen.append((e, threading.current_thread().name))):
        result = make_video(
            TWO_SHOTS, tmp_path / "run", VideoOptions(model="tiny"), runtime=runtime, text=True
        )

    batches = [e for e, _ in seen if isinstance(e, events.BatchDone)]
    kinds = {e.key for e in batches}
    assert len(kinds) == 2  # keyframes, then clips
    assert sum(e.size for e in batches) >= 2 + result.segments  # keyframes, clips
    assert all(e.size >= 1 and e.seconds > 0 and (e.peak or 0) >= 0 for e in batches)
    for key in kinds:
        mine = [e for e in batches if e.key == key]
        # The first batch of a kind is a probe: nothing was known to predict it from.
        assert mine[0].probing and mine[0].predicted is None
        if mine[0].peak is not None:  # measured: every later batch has a prediction
            assert all(e.predicted > 0 for e in mine[1:])

    written = [(e, thread) for e, thread in seen if isinstance(e, events.SegmentWritten)]
    assert sorted(e.index for e, _ in written) == list(range(result.segments))
    assert all(e.seconds > 0 and thread.startswith("reelchain-writer") for e, thread in written)
    stitched = [e for e, _ in seen if isinstance(e, events.Stitched)]
    assert len(stitched) == 1 and stitched[0].seconds > 0 and seen[-1][0] is stitched[0]

    # After the block the callback is gone: the engine's next batch reaches nobody.
    count = len(seen)
    planner = Planner(runtime, cache_file=tmp_path / "planner.json")
    run_batched([1, 2, 3], lambda b: b, planner=planner, key="after", device=torch.device("cpu"))
    assert len(seen) == count


def test_watchers_nest_and_each_sees_only_its_own_block(tmp_path):
    outer, inner = [], []
    planner = Planner(Runtime(), cache_file=tmp_path / "planner.json")

    def batch(items):
        return run_batched(
            items, lambda b: b, planner=planner, key="nest", device=torch.device("cpu")
        )

    with events.watch(outer.append):
        batch([1])
        with events.watch(inner.append):
            batch([2, 3])
        batch([4])
    assert [e.size for e in outer] == [1, 2, 1] and [e.size for e in inner] == [2]
    assert outer[1] is inner[0]  # one event, handed to both
