"""The planner and the out-of-memory ladder, with the real error classes injected."""

import numpy as np
import pytest
import torch

from pipelines import images
from pipelines.batching import Cost, OutOfMemory, Planner, Saver, run_batched
from pipelines.images import ImageItem, generate
from pipelines.models import load, resolve_model
from pipelines.settings import Runtime


def planner(tmp_path, **kw):
    return Planner(Runtime(**kw), cache_file=tmp_path / "planner.json")


def test_probes_then_plans_from_measured_cost(tmp_path):
    p = planner(tmp_path, memory_budget=1000)
    cpu = torch.device("cpu")
    assert p.size_for("k", cpu, 10) == 1  # first probe: alone
    p.observe("k", 1, 300)
    assert p.size_for("k", cpu, 10) == 2  # second probe: two together
    p.observe("k", 2, 400)
    cost = p.costs["k"]
    assert cost.per_item == 100 and cost.base == 200
    assert p.size_for("k", cpu, 10) == 6  # (1000 × 0.8 − 200) / 100
    assert p.size_for("k", cpu, 3) == 3  # never more than what is left
    # remembered across sessions, in the cache file
    assert (
        Planner(Runtime(memory_budget=1000), cache_file=tmp_path / "planner.json").size_for(
            "k", cpu, 10
        )
        == 6
    )


def test_second_probe_takes_more_when_even_the_worst_case_fits(tmp_path):
    p = planner(tmp_path, memory_budget=10_000)
    cpu = torch.device("cpu")
    p.observe("k", 1, 300)
    # n items never need more than n × 300: 26 fit in 8000, so the first job's other 20
    # items run together, and that batch is the second probe.
    assert p.size_for("k", cpu, 20) == 20
    assert p.size_for("k", cpu, 40) == 26
    p.observe("k", 20, 300 + 19 * 100)
    cost = p.costs["k"]
    assert (cost.base, cost.per_item, cost.max_ok) == (200, 100, 20)
    assert p.size_for("k", cpu, 100) == 64  # (8000 − 200) / 100 = 78, capped at max_batch
    # a second probe that ran out of memory is not tried that large again
    q = planner(tmp_path / "q", memory_budget=10_000)
    q.observe("k", 1, 300)
    q.learn_oom("k", 26)
    assert q.size_for("k", cpu, 40) == 25


def test_without_peak_measurements_batches_double_then_close_in_on_the_limit(tmp_path):
    cpu = torch.device("cpu")
    p = planner(tmp_path)
    limit, sizes = 5, []  # batches above 5 run out of memory; nothing can be measured
    for _ in range(9):
        n = p.size_for("k", cpu, 100)
        sizes.append(n)
        if n > limit:
            p.learn_oom("k", n)
        else:
            p.observe("k", n, None)  # no /proc, no peak statistics
    # Doubling up to the blind cap (8), then halving the gap: one failure per step, and
    # the limit, once found, is kept (also by the next planner, from the cache file).
    assert sizes == [1, 2, 4, 8, 6, 5, 5, 5, 5]
    assert planner(tmp_path).size_for("k", cpu, 100) == 5
    q = planner(tmp_path / "q")
    for _ in range(6):
        q.observe("k", q.size_for("k", cpu, 100), None)
    assert q.size_for("k", cpu, 100) == 8  # never more than UNMEASURED_MAX blind


def test_after_an_oom_a_job_keeps_the_largest_batch_that_ran(tmp_path):
    p = planner(tmp_path)
    p.costs["k"] = Cost(max_ok=4, min_fail=8)  # 4 ran; 8 did not; nothing measured yet
    call = Flaky(limit=5)
    report = run_batched(list(range(20)), call, planner=p, key="k", device=torch.device("cpu"))
    assert report.results == [x * 10 for x in range(20)]
    # 6 (between 4 and 8) fails; the job goes on at 4, which ran before, not at 6 // 2 = 3.
    assert call.calls[0] == 6 and set(call.calls[1:]) == {4}, call.calls


def test_runs_with_a_fixed_batch_size_teach_the_automatic_planner(tmp_path):
    cpu = torch.device("cpu")
    fixed = planner(tmp_path, batch_size=8)
    fixed.observe("k", fixed.size_for("k", cpu, 20), 800)  # measured, in a batch of 8
    auto = planner(tmp_path, memory_budget=2000)
    cost = auto.costs["k"]
    assert (cost.base, cost.per_item, cost.max_ok) == (0, 100, 8)  # all of it per item
    assert auto.size_for("k", cpu, 100) == 16  # 2000 × 0.8 / 100, not a blind doubling


def test_fixed_batch_size_wins(tmp_path):
    assert planner(tmp_path, batch_size=5).size_for("k", torch.device("cpu"), 12) == 5


def test_an_oom_lowers_the_estimate(tmp_path):
    p = planner(tmp_path, memory_budget=10_000)
    p.costs["k"] = Cost(base=0, per_item=100, max_ok=8)
    assert p.size_for("k", torch.device("cpu"), 100) == 64
    p.learn_oom("k", 16)
    assert p.size_for("k", torch.device("cpu"), 100) == 15


class Flaky:
    """Runs the real call, but raises the real OOM class when a batch is too large."""

    def __init__(self, limit, error=torch.OutOfMemoryError, after=0):
        self.limit, self.error, self.after, self.calls = limit, error, after, []

    def __call__(self, batch):
        self.calls.append(len(batch))
        if len(batch) > self.limit and len(self.calls) > self.after:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in batch]


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, MemoryError])
def test_ladder_halves_the_batch_and_retries_only_what_failed(tmp_path, error):
    call = Flaky(limit=2, error=error)
    done = []
    report = run_batched(
        list(range(10)),
        call,
        planner=planner(tmp_path, batch_size=8),
        key="k",
        device=torch.device("cpu"),
        on_result=lambda i, r: done.append(i),
    )
    assert report.results == [x * 10 for x in range(10)]
    assert sorted(done) == list(range(10)) and len(done) == 10  # nothing delivered twice
    assert call.calls[:3] == [8, 4, 2] and max(call.calls[3:]) <= 2
    assert report.tried == ["batch 8→4", "batch 4→2"]


def test_mid_job_oom_keeps_finished_work(tmp_path):
    call = Flaky(limit=1, after=2)  # the first two batches of 2 run, then memory shrinks
    report = run_batched(
        list(range(7)),
        call,
        planner=planner(tmp_path, batch_size=2),
        key="k",
        device=torch.device("cpu"),
    )
    assert report.results == [x * 10 for x in range(7)]
    assert report.batch_sizes[:2] == [2, 2] and sum(report.batch_sizes) == 7


def test_savers_then_a_clear_message(tmp_path):
    applied = []
    savers = [
        Saver("VAE tiling", lambda: applied.append("tiling")),
        Saver("model offload", lambda: applied.append("offload")),
    ]
    with pytest.raises(OutOfMemory) as info:
        run_batched(
            [1, 2],
            Flaky(limit=0),
            planner=planner(tmp_path, batch_size=2),
            key="k",
            device=torch.device("cpu"),
            savers=savers,
        )
    assert applied == ["tiling", "offload"]
    msg = str(info.value)
    assert "batch 2→1" in msg and "VAE tiling" in msg and "model offload" in msg and "\n" not in msg


def test_a_saver_that_helps_completes_the_job(tmp_path):
    call = Flaky(limit=0)

    def enough_now():
        call.limit = 1

    report = run_batched(
        [1, 2, 3],
        call,
        planner=planner(tmp_path, batch_size=1),
        key="k",
        device=torch.device("cpu"),
        savers=[Saver("VAE tiling", enough_now)],
    )
    assert report.results == [10, 20, 30] and report.tried == ["VAE tiling"]


def test_other_errors_are_not_swallowed(tmp_path):
    def broken(batch):
        raise ValueError("bad")

    with pytest.raises(ValueError):
        run_batched([1], broken, planner=planner(tmp_path), key="k", device=torch.device("cpu"))


@pytest.mark.parametrize("where", ["first call", "vae decode"])
def test_real_pipeline_oom_gives_the_same_images(tmp_path, monkeypatch, where):
    """OOM injected into the real SD twin (first call / inside VAE decode): same output."""
    loaded = load(resolve_model("tiny", "image"), "text2img")
    jobs = [ImageItem(f"prompt {i}", "", 64, 64, 2, 1.0, 40 + i) for i in range(4)]
    expected = generate(
        loaded, jobs, runtime=Runtime(batch_size=1), planner=planner(tmp_path / "a", batch_size=1)
    )

    raised = {"n": 0}
    if where == "first call":
        real = images._call_image_pipe

        def once(loaded_, batch):
            if raised["n"] == 0:
                raised["n"] += 1
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return real(loaded_, batch)

        monkeypatch.setattr(images, "_call_image_pipe", once)
    else:
        vae = loaded.pipe.vae
        real_decode = vae.decode

        def decode(z, *a, **kw):
            if z.shape[0] > 1 and raised["n"] == 0:
                raised["n"] += 1
                raise torch.OutOfMemoryError("CUDA out of memory in VAE decode (injected)")
            return real_decode(z, *a, **kw)

        monkeypatch.setattr(vae, "decode", decode)
        monkeypatch.setattr(vae, "use_slicing", False)
    got = generate(
        loaded, jobs, runtime=Runtime(batch_size=4), planner=planner(tmp_path / "b", batch_size=4)
    )
    assert raised["n"] == 1
    for a, b in zip(got, expected, strict=True):
        assert np.abs(a - b).max() < 2e-3


def test_later_small_batches_do_not_corrupt_the_estimate(tmp_path):
    p = planner(tmp_path, memory_budget=10_000)
    p.observe("k", 1, 1100)  # base 1000 + one item 100
    p.observe("k", 2, 1200)
    for _ in range(4):  # the tails of later queues, or a fixed --batch-size 2
        p.observe("k", 2, 1200)
    assert (p.costs["k"].base, p.costs["k"].per_item) == (1000, 100)


def test_an_oom_at_two_is_remembered(tmp_path):
    p = planner(tmp_path)
    p.observe("k", 1, 100)
    p.learn_oom("k", 2)
    assert p.size_for("k", torch.device("cpu"), 10) == 1


def test_the_cpu_allocators_failure_is_out_of_memory(tmp_path):
    """On a CPU, PyTorch reports a failed allocation as a RuntimeError, not MemoryError: a
    real one (a 4 EiB tensor) steps down the ladder like CUDA's error."""
    from pipelines.device import is_out_of_memory

    with pytest.raises(RuntimeError) as info:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_out_of_memory(info.value)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    calls = []

    def call(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            torch.empty(2**62, dtype=torch.uint8)  # the allocator's own error, for real
        return [x * 10 for x in batch]

    report = run_batched(list(range(6)), call, planner=planner(tmp_path, batch_size=6), key="k",
                         device=torch.device("cpu"))  # fmt: skip
    assert report.results == [x * 10 for x in range(6)] and calls[:3] == [6, 3, 1]
