"""The job store and its worker: real SQLite, real threads, and the tiny twins for videos."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import images
from pipelines.jobs import RUNNERS, JobManager, image_params, run_video, video_params
from pipelines.jobstore import DB_NAME, JobError, JobStore
from pipelines.requests import ImageRequest, VideoRequest
from pipelines.settings import Limits, Runtime
from pipelines.video_io import probe


def prepare_video(storyboard, limits=None, **fields):
    """A video job's params, as the server checks them (the request, then its JSON)."""
    return video_params(VideoRequest(storyboard, **fields), limits or Limits())


def prepare_image(prompt, limits=None, **fields):
    return image_params(ImageRequest(prompt, **fields), limits or Limits())


ROOT = Path(__file__).resolve().parent.parent

# One shot of 2 s at 8 fps without interpolation: 16 frames, two 9-frame clips of the LTX
# twin, the second continuing from the first (so they run one after the other).
STORY = """
fps: 8
interpolate: 1
width: 32
height: 32
seed: 3
shots:
  - prompt: a paper boat on a rainy street
    seconds: 2
"""


def manager(tmp_path, runners=None, **kw) -> JobManager:
    return JobManager(tmp_path / "runs", runners=runners, **kw)


@pytest.fixture
def started():
    """Start managers and stop them after the test, whatever happens."""
    managers = []

    def start(m: JobManager) -> JobManager:
        managers.append(m)
        return m.start()

    yield start
    for m in managers:
        m.stop()


def test_a_job_goes_from_queued_to_done_with_progress_and_outputs(tmp_path, started):
    seen = []

    def fake(ctx):
        seen.append(ctx.store.get(ctx.job.id).status)
        ctx.report(progress=0.5, message="half way", partial=["a.png"])
        (ctx.job.run_dir / "a.png").write_bytes(b"x")
        return {"images": ["a.png"]}

    m = manager(tmp_path, {"image": fake})
    job = m.submit("image", {"prompt": "a cat"})
    assert job.status == "queued" and job.attempts == 0
    assert job.run_dir == m.root / job.id and job.run_dir.is_dir()
    started(m)
    job = m.wait(job.id, timeout=30)
    assert (job.status, job.progress, job.message, job.attempts) == ("done", 1.0, "1 image", 1)
    assert seen == ["running"]
    assert job.outputs == {"partial": ["a.png"], "images": ["a.png"]}
    assert job.files("images") == [job.run_dir / "a.png"]
    assert [j.id for j in m.list()] == [job.id]
    with sqlite3.connect(m.root / DB_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = db.execute("SELECT kind, params, run_dir FROM jobs").fetchone()
    assert row == ("image", json.dumps({"prompt": "a cat"}), job.id)  # folder: the id


def test_one_worker_takes_jobs_in_order_one_at_a_time(tmp_path, started):
    order, running = [], threading.Lock()

    def fake(ctx):
        assert running.acquire(blocking=False), "two jobs ran at once"
        try:
            order.append(ctx.job.params["n"])
            time.sleep(0.05)
        finally:
            running.release()
        return {}

    m = manager(tmp_path, {"image": fake})
    ids = [m.submit("image", {"n": n}).id for n in range(4)]
    started(m)
    assert [m.wait(i, timeout=30).status for i in ids] == ["done"] * 4
    assert order == [0, 1, 2, 3]


def test_an_input_error_fails_at_once_with_its_message(tmp_path, started):
    calls = []

    def fake(ctx):
        calls.append(1)
        raise ValueError("width: must be a multiple of 8 (got 30)")

    m = started(manager(tmp_path, {"image": fake}))
    job = m.wait(m.submit("image", {}).id, timeout=30)
    assert (job.status, job.attempts, len(calls)) == ("failed", 1, 1)
    assert job.message == "width: must be a multiple of 8 (got 30)"


def test_a_job_that_crashes_every_time_is_failed_after_three_attempts(tmp_path, started):
    calls = []

    def fake(ctx):
        calls.append(ctx.job.attempts)
        raise RuntimeError("the device fell over")

    m = started(manager(tmp_path, {"image": fake}))
    job = m.wait(m.submit("image", {}).id, timeout=30)
    assert job.status == "failed" and job.attempts == 3 and calls == [1, 2, 3]
    assert "3 attempts" in job.message and "the device fell over" in job.message


CRASHING_SERVER = textwrap.dedent(
    """
    import os, sys, time
    from pipelines.jobs import JobManager

    def crash(ctx):
        os._exit(3)  # the whole server dies (a segfault, the OOM killer)

    m = JobManager(sys.argv[1], runners={"image": crash}).start()
    job_id = sys.argv[2]
    for _ in range(200):
        if m.get(job_id).finished:
            break
        time.sleep(0.05)
    print(m.get(job_id).status)
    m.stop()
    """
)


def test_a_job_that_kills_the_server_is_failed_after_three_starts(tmp_path):
    runs = tmp_path / "runs"
    job = JobStore(runs).add("image", {"prompt": "a cat"})
    codes = []
    for _ in range(4):
        proc = subprocess.run(
            [sys.executable, "-c", CRASHING_SERVER, str(runs), job.id],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        codes.append(proc.returncode)
    assert codes == [3, 3, 3, 0], proc.stderr
    job = JobStore(runs).get(job.id)
    assert (job.status, job.attempts) == ("failed", 3)
    assert "stopped the server 3 times" in job.message


def test_a_job_left_running_is_interrupted_then_taken_again(tmp_path, started):
    runs = tmp_path / "runs"
    store = JobStore(runs)
    job = store.add("image", {})
    assert store.claim().id == job.id  # a server took it, then died
    assert store.get(job.id).status == "running"
    m = manager(tmp_path, {"image": lambda ctx: {"attempt": ctx.job.attempts}})
    assert m.store.recover() == [job.id]
    assert m.get(job.id).status == "interrupted"
    started(m)
    job = m.wait(job.id, timeout=30)
    assert (job.status, job.attempts, job.outputs) == ("done", 2, {"attempt": 2})


def test_a_server_stopping_in_order_leaves_its_job_interrupted_without_an_attempt(
    tmp_path, started
):
    begun = threading.Event()

    def slow(ctx):
        begun.set()
        ctx.cancel.wait(30)  # the engine stops after its current step
        raise RuntimeError("cancelled")

    m = started(manager(tmp_path, {"video": slow}))
    job = m.submit("video", {})
    assert begun.wait(30)
    m.stop()
    job = m.get(job.id)
    assert (job.status, job.attempts) == ("interrupted", 0)


def test_cancel_a_waiting_job_and_resume_it(tmp_path, started):
    m = manager(tmp_path, {"image": lambda ctx: {}})  # not started: the job waits
    job = m.submit("image", {})
    assert m.cancel(job.id).status == "cancelled"
    with pytest.raises(JobError):
        m.reroll(job.id, 0)  # not a video
    assert m.resume(job.id).status == "queued"
    started(m)
    assert m.wait(job.id, timeout=30).status == "done"
    with pytest.raises(JobError, match="only a stopped job"):
        m.resume(job.id)


def test_only_one_server_per_runs_folder(tmp_path, started):
    started(manager(tmp_path, {}))
    with pytest.raises(JobError, match="another server"):
        manager(tmp_path, {}).start()


def test_requests_over_the_limits_are_refused_before_a_job_exists():
    limits = Limits(max_side=64, max_steps=4, max_count=2)
    with pytest.raises(ValueError, match="^steps: "):
        prepare_video(STORY, model="tiny", steps=50, limits=limits)
    with pytest.raises(ValueError, match="^steps: .*max_steps"):
        prepare_video(STORY + "steps: 9\n", model="tiny", limits=limits)
    with pytest.raises(ValueError, match="^width: "):
        prepare_video(STORY, model="tiny", width=128, limits=limits)
    with pytest.raises(ValueError, match="^count: "):
        prepare_image("a cat", model="tiny", count=3, limits=limits)
    with pytest.raises(ValueError, match="^width: "):
        prepare_image("a cat", model="sd-turbo", limits=limits)  # its 512 px default
    with pytest.raises(ValueError, match="^prompt: "):
        prepare_image("x" * 3000, model="tiny", limits=limits)


def test_a_storyboard_cannot_name_a_file_on_the_server(tmp_path):
    here, missing = tmp_path / "song.mp3", tmp_path / "nothing.mp3"
    here.write_bytes(b"ID3")
    errors = []
    for path in (here, missing):
        with pytest.raises(ValueError, match="^audio: ") as info:
            prepare_video(STORY + f"audio: {path}\n", model="tiny")
        errors.append(str(info.value))
    assert errors[0] == errors[1]  # says nothing about which paths exist


def test_prepared_video_params_are_resolved_and_overridden():
    p = prepare_video(STORY, model="tiny", fps=4.0, seed=11, limits=Limits())
    assert (p["model"], p["mode"], p["fps"], p["seed"], p["frames"]) == (
        "tiny-ltx",
        "continue",
        4,
        11,
        8,
    )
    assert p["storyboard"]["shots"][0]["seed"] == 11  # the shot follows the new seed
    with pytest.raises(ValueError, match="^fps: must be an integer"):
        prepare_video(STORY, model="tiny", fps=2.5)


# ---------------------------------------------------------------------------------------
# Real videos with the tiny twins


def cancel_after_first_segment(ctx):
    """run_video, with the user pressing Cancel as soon as the first segment exists."""
    report = ctx.report

    def watching(*args, **kwargs):
        report(*args, **kwargs)
        if kwargs.get("segments"):
            ctx.cancel.set()

    ctx.report = watching
    return run_video(ctx)


def test_cancel_keeps_segments_and_a_restarted_server_finishes_without_redoing_them(
    tmp_path, started
):
    first = started(manager(tmp_path, {"video": cancel_after_first_segment}))
    job = first.submit("video", prepare_video(STORY, model="tiny"))
    job = first.wait(job.id, timeout=120)
    assert job.status == "cancelled", job.message
    assert job.outputs["segments"] == ["segments/seg-000.mp4"]
    seg0 = job.run_dir / "segments" / "seg-000.mp4"
    stamp = seg0.stat().st_mtime_ns
    manifest = json.loads((job.run_dir / "manifest.json").read_text())
    statuses = [s["status"] for s in manifest["segments"]]
    assert statuses[0] == "done" and set(statuses[1:]) == {"pending"}
    first.stop()

    # The server dies while the job runs again: the row still says running.
    first.store.update(job.id, status="running")
    second = started(manager(tmp_path, dict(RUNNERS)))
    job = second.wait(job.id, timeout=120)
    assert job.status == "done", job.message
    # only the missing segments
    assert job.attempts == 2 and job.outputs["generated"] == len(statuses) - 1
    assert seg0.stat().st_mtime_ns == stamp
    info = probe(job.files("video")[0])
    assert (info.frames, info.fps, info.width, info.height) == (16, 8.0, 32, 32)

    # Re-roll the second segment: a new seed for it, the first one untouched.
    old_seed = manifest["segments"][1]["seed"]
    job = second.reroll(job.id, 1)
    assert job.status == "queued" and job.params["reroll"] == {"segment": 1, "seed": old_seed + 1}
    job = second.wait(job.id, timeout=120)
    assert job.status == "done" and "reroll" not in job.params, job.message
    manifest = json.loads((job.run_dir / "manifest.json").read_text())
    assert manifest["segments"][1]["seed"] == old_seed + 1
    assert seg0.stat().st_mtime_ns == stamp
    assert probe(job.files("video")[0]).frames == 16


def test_rerun_gives_the_same_images(tmp_path, started):
    m = started(manager(tmp_path))
    job = m.wait(
        m.submit("image", prepare_image("a red fox", model="tiny", count=2, seed=5)).id, timeout=120
    )
    assert job.status == "done", job.message
    assert job.outputs["seeds"] == [5, 6]
    again = m.wait(m.rerun(job.id).id, timeout=120)
    assert again.id != job.id and again.status == "done"
    for a, b in zip(job.files("images"), again.files("images"), strict=True):
        # Same seeds, same pictures; batches of another size may round one level apart.
        diff = np.abs(np.asarray(Image.open(a), int) - np.asarray(Image.open(b), int))
        assert diff.max() <= 1 and diff.mean() < 0.01
        assert Image.open(a).size == (64, 64)


def test_store_survives_many_readers_while_a_worker_writes(tmp_path, started):
    def fake(ctx):
        for i in range(50):
            ctx.report(progress=i / 50)
        return {}

    m = started(manager(tmp_path, {"image": fake}))
    ids = [m.submit("image", {}).id for _ in range(3)]
    readers_ok = []

    def read():
        store = JobStore(m.root)
        for _ in range(100):
            store.list()
        readers_ok.append(True)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert readers_ok == [True] * 3
    assert all(m.wait(i, timeout=30).status == "done" for i in ids)
    assert os.path.exists(m.root / DB_NAME)


# ---------------------------------------------------------------------------------------
# Image jobs that share one pipeline call


def spy_on_pipe(monkeypatch, crashes: int = 0, during=None) -> list[list[tuple]]:
    """Record every image pipeline call (prompt, seed, width of each image); the first
    `crashes` calls fail as a device would; `during(n)` runs inside call n."""
    calls: list[list[tuple]] = []
    real = images._call_image_pipe

    def spy(loaded, batch):
        calls.append([(j.prompt, j.seed, j.width) for j in batch])
        if during:
            during(len(calls))
        if len(calls) <= crashes:
            raise RuntimeError("the device fell over")
        return real(loaded, batch)

    monkeypatch.setattr(images, "_call_image_pipe", spy)
    return calls


def test_compatible_image_jobs_share_one_batched_call_and_keep_their_own_images(
    tmp_path, started, monkeypatch
):
    calls = spy_on_pipe(monkeypatch)
    m = manager(tmp_path, runtimes=[Runtime(batch_size=8)])  # not started: the jobs wait
    asks = [  # prompt, count, seed, width (None: the model's 64)
        ("a red fox", 2, 5, None),
        ("a blue bird", 1, 9, 32),  # another size: its own call
        ("a green frog", 1, 7, None),
        ("a grey owl", 2, 1, None),
    ]
    ids = [
        m.submit("image", prepare_image(p, model="tiny", count=n, seed=s, width=w)).id
        for p, n, s, w in asks
    ]
    started(m)
    jobs = [m.wait(i, timeout=120) for i in ids]
    assert [j.status for j in jobs] == ["done"] * 4, [j.message for j in jobs]
    assert [len(c) for c in calls] == [5, 1]  # one batch of 5 images from 3 jobs, then 1
    assert calls[0] == [
        ("a red fox", 5, 64), ("a red fox", 6, 64), ("a green frog", 7, 64),
        ("a grey owl", 1, 64), ("a grey owl", 2, 64),
    ]  # fmt: skip
    assert calls[1] == [("a blue bird", 9, 32)]
    for job, (prompt, count, seed, width) in zip(jobs, asks, strict=True):
        assert job.attempts == 1 and job.progress == 1.0
        assert job.message == f"{count} image{'' if count == 1 else 's'}"
        assert job.outputs["seeds"] == list(range(seed, seed + count))
        files = job.files("images")
        assert len(files) == count and all(f.parent == job.run_dir / "images" for f in files)
        for f, s in zip(files, job.outputs["seeds"], strict=True):
            side = json.loads(f.with_suffix(".json").read_text())
            assert (side["prompt"], side["seed"], side["width"]) == (prompt, s, width or 64)
            assert f"Seed: {s}," in Image.open(f).text["parameters"]

    # Each job's images are the ones it makes alone, one image per call.
    for k, (job, (prompt, count, seed, width)) in enumerate(zip(jobs, asks, strict=True)):
        req = ImageRequest(prompt, seed=seed, count=count, width=width, model="tiny")
        alone = images.make_images(req, tmp_path / f"alone-{k}", runtime=Runtime(batch_size=1))
        for a, b in zip(job.files("images"), alone, strict=True):
            assert a.name == b.path.name
            diff = np.abs(np.asarray(Image.open(a), int) - np.asarray(Image.open(b.path), int))
            assert diff.max() <= 1
    assert all(len(c) == 1 for c in calls[2:])


def test_a_crash_in_a_shared_call_requeues_every_job_of_it_with_its_attempt(
    tmp_path, started, monkeypatch
):
    calls = spy_on_pipe(monkeypatch, crashes=1)
    m = manager(tmp_path, runtimes=[Runtime(batch_size=8)])
    ids = [
        m.submit("image", prepare_image(f"a cat {n}", model="tiny", seed=n)).id for n in range(3)
    ]
    started(m)
    jobs = [m.wait(i, timeout=120) for i in ids]
    assert [len(c) for c in calls] == [3, 3]  # the crashed call, then all three again
    assert [(j.status, j.attempts) for j in jobs] == [("done", 2)] * 3


def test_a_shared_call_that_always_crashes_fails_every_job_after_its_attempts(
    tmp_path, started, monkeypatch
):
    calls = spy_on_pipe(monkeypatch, crashes=99)
    m = manager(tmp_path, runtimes=[Runtime(batch_size=8)], max_attempts=2)
    ids = [
        m.submit("image", prepare_image(f"a cat {n}", model="tiny", seed=n)).id for n in range(3)
    ]
    started(m)
    jobs = [m.wait(i, timeout=120) for i in ids]
    assert [len(c) for c in calls] == [3, 3]
    for job in jobs:
        assert (job.status, job.attempts) == ("failed", 2)
        assert "after 2 attempts" in job.message and "the device fell over" in job.message


def test_a_job_cancelled_during_a_shared_call_keeps_no_images_and_the_others_finish(
    tmp_path, started, monkeypatch
):
    m = manager(tmp_path, runtimes=[Runtime(batch_size=8)])
    ids = [
        m.submit("image", prepare_image(f"a cat {n}", model="tiny", seed=n)).id for n in range(3)
    ]
    calls = spy_on_pipe(monkeypatch, during=lambda n: n == 1 and m.cancel(ids[1]))
    m.cancel(ids[2])  # cancelled while waiting: never taken
    started(m)
    jobs = [m.wait(i, timeout=120) for i in ids]
    assert [len(c) for c in calls] == [2]
    assert [j.status for j in jobs] == ["done", "cancelled", "cancelled"]
    assert len(jobs[0].files("images")) == 1
    assert not jobs[1].files("images") and not (jobs[1].run_dir / "images").exists()


def test_a_cancel_between_claim_and_run_is_not_lost(tmp_path):
    seen = {}

    def runner(ctx):
        seen["cancelled"] = ctx.cancel.is_set()
        return {}

    m = manager(tmp_path, {"image": runner})  # not started: we play the worker's part
    job = m.submit("image", {})
    claimed = m.store.take(job.id, m.max_attempts)  # the worker has claimed it ...
    assert claimed is not None and m.store.get(job.id).status == "running"
    m.cancel(job.id)  # ... and a cancel arrives before its run set anything up
    m._run(claimed, Runtime())
    assert seen["cancelled"] is True
