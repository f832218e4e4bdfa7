"""The Ray pool on a local instance with 2 CPU workers (one torch thread each): the same
pixels as a local run, a SIGKILLed worker's jobs retried, a worker that cannot load a model
left out, and bad input refused in one line before any work."""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import models
from pipelines.clips import Cancelled, ClipItem, generate_clips
from pipelines.images import ImageItem, generate
from pipelines.settings import Runtime

ray = pytest.importorskip("ray")

from pipelines.scale import Pool, WorkerShape, worker_shape  # noqa: E402

RUNTIME = Runtime(batch_size=1)  # one job per call: the same numbers on any worker


def oom_once(flag: str):
    """A loader that runs out of memory (the real torch class) the first time any worker
    loads tiny-wan; a file made with O_EXCL decides which worker, across processes."""

    def load(ref, task, runtime):
        if ref.spec == "tiny-wan":
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return models.load(ref, task, runtime)

    return load


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the local references, as the workers run
    ray.init(num_cpus=2, include_dashboard=False)
    flag = str(tmp_path_factory.mktemp("scale") / "oom-once")
    p = Pool.start("local", 2, RUNTIME, threads=1, load=oom_once(flag))
    yield p
    p.close()
    ray.shutdown()
    torch.set_num_threads(before)


def local(spec: str, jobs):
    if isinstance(jobs[0], ClipItem):
        loaded = models.load(models.resolve_model(spec, "video"), "video", RUNTIME)
        return generate_clips(loaded, jobs, runtime=RUNTIME)
    loaded = models.load(models.resolve_model(spec, "image"), "text2img", RUNTIME)
    return generate(loaded, jobs, runtime=RUNTIME)


def image_jobs(n: int, seed: int = 0) -> list[ImageItem]:
    return [ImageItem(f"a lighthouse, take {i}", "", 32, 32, 2, 1.0, seed + i) for i in range(n)]


def clip_job(first: Image.Image, seed: int, prompt: str = "a paper boat") -> ClipItem:
    return ClipItem(prompt, first, 9, 32, 32, 2, 3.0, seed)


def picture(color) -> Image.Image:
    return Image.new("RGB", (32, 32), color)


def last_frame(clip: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(clip[-1], 0, 1) * 255).round().astype(np.uint8))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_images_from_two_workers_match_a_local_run(pool):
    jobs = image_jobs(8)
    seen = []
    got = pool.images("tiny-image", jobs, on_result=lambda i, arr: seen.append(i))
    assert same(got, local("tiny-image", jobs))
    assert sorted(seen) == list(range(8))
    assert all(w.done > 0 for w in pool.workers)  # the work was spread


def test_clips_match_and_shots_chain_as_results_arrive(pool):
    jobs = [clip_job(picture((40 * i, 90, 200)), seed=i) for i in range(4)]
    assert same(pool.clips("tiny-ltx", jobs), local("tiny-ltx", jobs))

    # Two shots of two clips each: a shot's second clip starts on its first clip's last
    # frame, and goes in as soon as that clip is back.
    starts = {"boat": picture((200, 40, 40)), "river": picture((40, 40, 200))}
    futures = {pool.submit("tiny-ltx", [clip_job(im, 7, shot)])[0]: (shot, 0)
               for shot, im in starts.items()}  # fmt: skip
    made = {}
    while futures:
        done, _ = wait(futures, return_when=FIRST_COMPLETED)
        for f in done:
            shot, k = futures.pop(f)
            made[shot, k] = f.result()
            if k == 0:
                nxt = pool.submit("tiny-ltx", [clip_job(last_frame(made[shot, 0]), 8, shot)])
                futures[nxt[0]] = (shot, 1)
    for shot, im in starts.items():
        (first,) = local("tiny-ltx", [clip_job(im, 7, shot)])
        (second,) = local("tiny-ltx", [clip_job(last_frame(first), 8, shot)])
        assert same([made[shot, 0], made[shot, 1]], [first, second])


def test_a_bad_job_fails_with_the_engines_own_error(pool):
    with pytest.raises(ValueError, match=r"^frames: tiny-ltx needs 8k\+1 frames per clip"):
        pool.clips(
            "tiny-ltx", [dataclasses.replace(clip_job(picture((9, 9, 9)), 1), num_frames=10)]
        )


def test_a_worker_that_cannot_load_the_model_is_left_out(pool):
    jobs = [clip_job(picture((30 * i, 200, 90)), seed=20 + i) for i in range(4)]
    got = pool.clips("tiny-wan", jobs)
    assert same(got, local("tiny-wan", jobs))
    lines = [n for n in pool.notes if "cannot load" in n]
    assert len(lines) == 1 and "tiny-wan: out of memory (CUDA out of memory" in lines[0]
    assert sorted(w.cannot_load for w in pool.workers) == [(), ("tiny-wan",)]


def test_cancel_stops_queued_and_running_jobs(pool):
    stop = threading.Event()
    seen = []

    def stop_at_first(i, arr):
        seen.append(i)
        stop.set()

    done_before = sum(w.done for w in pool.workers)
    with pytest.raises(Cancelled):
        pool.images("tiny-image", image_jobs(40, seed=300), on_result=stop_at_first, cancel=stop)
    deadline = time.monotonic() + 30
    while any(w.state != "free" for w in pool.workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(seen) == 1 and all(w.state == "free" for w in pool.workers)
    assert sum(w.done for w in pool.workers) - done_before < 40


def test_a_killed_workers_unfinished_jobs_run_again_elsewhere(pool):
    jobs = image_jobs(12, seed=100)
    victim = pool.workers[0]
    assert ray.get(pool._slots[0].actor.info.remote())["pid"] == victim.pid
    seen, killed = [], []

    def kill_after_its_first(i, arr):
        # Killed once it has returned a result: that one must not be made again.
        if not killed and pool.workers[0].done > victim.done:
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(pool.workers[0].done - victim.done)
        seen.append(i)

    got = pool.images("tiny-image", jobs, on_result=kill_after_its_first)
    assert same(got, local("tiny-image", jobs))
    assert sorted(seen) == list(range(12))  # each result once
    assert 1 <= pool.retried <= 6 - killed[0]  # of its 6: the unfinished ones only
    assert any(f"worker 0 (pid {victim.pid}) died" in n for n in pool.notes)
    deadline = time.monotonic() + 60
    while pool.workers[0].state != "free" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pool.workers[0].state == "free" and pool.workers[0].pid != victim.pid


@pytest.mark.parametrize(
    ("address", "workers", "runtime", "error"),
    [
        ("127.0.0.1:1", 1, RUNTIME, "ray: cannot reach 127.0.0.1:1"),
        ("ray://127.0.0.1:1", 1, RUNTIME, "ray: cannot reach ray://127.0.0.1:1"),
        ("my cluster", 1, RUNTIME, "ray: cannot read 'my cluster' as an address"),
        ("local", 0, RUNTIME, "workers: must be a whole number ≥ 1 (got 0)"),
        ("local", 3, RUNTIME, "workers: 3 CPU workers but the Ray cluster has 2 CPU(s)"),
        ("local", None, RUNTIME, "workers: the Ray cluster has no GPU for this run"),
        ("local", 1, Runtime(device="cuda"), "device: the Ray cluster has no GPU"),
        ("local", 1, RUNTIME, "workers: 1 worker(s) need 2 CPU(s) but only 0 are free"),
    ],
)
def test_bad_input_is_one_line_before_any_work(pool, address, workers, runtime, error):
    with pytest.raises(ValueError) as info:
        Pool.start(address, workers, runtime)
    assert str(info.value).startswith(error) and "\n" not in str(info.value)
    assert len(pool.workers) == 2 and ray.is_initialized()


def test_worker_shapes_on_gpu_and_cpu_clusters():
    gpu_box = {"CPU": 16.0, "GPU": 2.0}
    assert worker_shape(gpu_box, None, "auto") == WorkerShape(2, 1, 1, None)
    assert worker_shape(gpu_box, 4, "cpu") == WorkerShape(4, 0, 4, 4)
    with pytest.raises(ValueError, match=r"^workers: 3 GPU workers but the Ray cluster has 2 GPU"):
        worker_shape(gpu_box, 3, "auto")


def test_nothing_imports_ray_without_a_pool():
    code = (
        "import sys, pipelines.scale, pipelines.chain, pipelines.cli; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


STORY = """fps: 8
width: 32
height: 32
seed: 5
shots:
  - prompt: a paper boat on a rainy street
    seconds: 1
    transition: crossfade
    transition_seconds: 0.25
  - prompt: a lighthouse at dusk
    seconds: 1
  - prompt: a red kite over the dunes
    seconds: 1
"""


@pytest.mark.parametrize("mode", ["continue", "keyframes", "feedback"])
def test_a_video_made_on_two_workers_is_frame_identical_to_a_local_one(pool, tmp_path, mode):
    from pipelines.chain import VideoOptions, make_video
    from pipelines.video_io import read_frames

    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    spec = "tiny-image" if mode == "feedback" else "tiny-wan22"
    opts = VideoOptions(model=spec, mode=mode)
    here = make_video(story, tmp_path / "here", opts, runtime=RUNTIME)
    there = make_video(story, tmp_path / "there", opts, runtime=RUNTIME, pool=pool)
    a, b = (np.stack(list(read_frames(r.video))) for r in (here, there))
    assert a.shape == b.shape and np.array_equal(a, b)
    manifest = (tmp_path / "there" / "manifest.json").read_text()
    assert '"workers": 2' in manifest


def on_the_pool(pool, monkeypatch) -> Runtime:
    """A runtime that asks for `--ray local --workers 2`, answered by the module's pool."""
    from pipelines import scale

    monkeypatch.setitem(scale._POOLS, ("local", 2), pool)
    return dataclasses.replace(RUNTIME, ray="local", workers=2)


def test_thumbnails_and_images_on_two_workers_match_a_local_run(pool, tmp_path, monkeypatch):
    from pipelines.images import make_images
    from pipelines.requests import ImageRequest
    from pipelines.thumbnails import ThumbnailOptions, make_thumbnails

    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,title\n" + "".join(f"a lighthouse {i},Take {i}\n" for i in range(6)))
    opts = ThumbnailOptions(model="tiny", preset="128x72", variants=2)
    ray_runtime = on_the_pool(pool, monkeypatch)
    here = make_thumbnails(rows, tmp_path / "here", opts, runtime=RUNTIME)
    done_before = [w.done for w in pool.workers]
    there = make_thumbnails(rows, tmp_path / "there", opts, runtime=ray_runtime)
    assert [p.name for p in there.files] == [p.name for p in here.files]  # row order
    assert len(here.files) == 12
    assert all(
        a.read_bytes() == b.read_bytes() for a, b in zip(here.files, there.files, strict=True)
    )
    assert all(
        w.done > d for w, d in zip(pool.workers, done_before, strict=True)
    )  # both workers made some

    req = ImageRequest("a red kite", count=3, model="tiny")
    a = make_images(req, tmp_path / "img-here", runtime=RUNTIME)
    b = make_images(req, tmp_path / "img-there", runtime=ray_runtime)
    assert [x.path.read_bytes() for x in a] == [y.path.read_bytes() for y in b]
    assert '"workers": 2' in b[0].sidecar.read_text()


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (
            ["--ray", "local", "--workers", "0"],
            "error: workers: must be a whole number ≥ 1 (got 0)",
        ),
        (["--ray", "127.0.0.1:1", "--workers", "1"], "error: ray: cannot reach 127.0.0.1:1"),
        (["--workers", "2"], "error: workers: they are Ray workers; give --ray ADDRESS too"),
    ],
)
@pytest.mark.parametrize("command", ["image", "video", "thumbnails", "app"])
def test_every_face_refuses_a_bad_cluster_in_one_line(tmp_path, command, flags, error):
    from conftest import ROOT, TWO_SHOTS

    story = tmp_path / "story.yaml"
    story.write_text(TWO_SHOTS)
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt\na lighthouse\n")
    argv = {
        "image": ["-m", "pipelines", "image", "a kite", "--model", "tiny", "--out", str(tmp_path)],
        "video": ["-m", "pipelines", "video", str(story), "--model", "tiny", "--out",
                  str(tmp_path / "run")],
        "thumbnails": ["-m", "pipelines", "thumbnails", str(rows), "--model", "tiny", "--out",
                       str(tmp_path / "thumbs")],
        "app": ["app.py", "--model", "tiny", "--runs", str(tmp_path / "runs")],
    }[command]  # fmt: skip
    out = subprocess.run([sys.executable, *argv, *flags], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(error), out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "thumbs").exists()


def test_the_web_ui_runs_its_jobs_on_two_workers(tmp_path, one_thread):
    """`app.py --ray local --workers 2`: jobs made on the workers, through gradio_client,
    are the same as a local run; the job store and History stay on this (the head) node."""
    from conftest import Server

    from pipelines.chain import VideoOptions, make_video
    from pipelines.thumbnails import ThumbnailOptions, make_thumbnails
    from pipelines.video_io import read_frames

    runs = tmp_path / "runs"
    server = Server(runs, {"REELCHAIN_BATCH_SIZE": "1"}, args=("--ray", "local", "--workers", "2"))
    server.start(timeout=240)
    try:
        client = server.client()
        video = client.predict(STORY, model="tiny", api_name="/video")
        rows = "prompt,title\n" + "".join(f"a kite {i},Kite {i}\n" for i in range(4))
        images, _, _ = client.predict(rows, preset="128x72", api_name="/thumbnails")
        jobs = client.predict(api_name="/jobs")
    finally:
        server.stop()
    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    here = make_video(story, tmp_path / "here", VideoOptions(model="tiny"), runtime=RUNTIME)
    a, b = (np.stack(list(read_frames(v))) for v in (here.video, video))
    assert a.shape == b.shape and np.array_equal(a, b)
    (tmp_path / "rows.csv").write_text(rows)
    local_thumbs = make_thumbnails(tmp_path / "rows.csv", tmp_path / "thumbs",
                                   ThumbnailOptions(model="tiny", preset="128x72"), runtime=RUNTIME)  # fmt: skip
    assert [Path(i["image"]).read_bytes() for i in images] == [
        p.read_bytes() for p in local_thumbs.files
    ]
    assert [j["status"] for j in jobs] == ["done", "done"]
    video_job = next(j for j in jobs if j["kind"] == "video")
    assert '"workers": 2' in (runs / video_job["id"] / "manifest.json").read_text()
    assert (runs / "jobs.sqlite3").is_file()


def test_a_killed_driver_is_finished_by_resume_on_one_machine(tmp_path, one_thread):
    """`video --ray local --workers 2` SIGKILLed after its first segments; `video --resume`
    without Ray finishes the run, frame-identical to a run that was never on Ray."""
    from conftest import ROOT

    from pipelines.chain import VideoOptions, make_video
    from pipelines.video_io import read_frames

    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    env = {**os.environ, "REELCHAIN_BATCH_SIZE": "1", "OMP_NUM_THREADS": "1"}  # as the workers
    base = [sys.executable, "-m", "pipelines", "video"]
    driver = subprocess.Popen([*base, str(story), "--model", "tiny", "--out", str(tmp_path / "run"),
                               "--ray", "local", "--workers", "2"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    segments = tmp_path / "run" / "segments"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if segments.is_dir() and len(list(segments.glob("*.mp4"))) >= 1:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before it could be killed"
    driver.send_signal(signal.SIGKILL)  # the driver alone: its Ray workers are orphaned
    driver.wait(30)
    assert not (tmp_path / "run" / "video.mp4").exists()
    done = subprocess.run([*base, "--resume", str(tmp_path / "run")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    here = make_video(story, tmp_path / "here", VideoOptions(model="tiny"), runtime=RUNTIME)
    a, b = (np.stack(list(read_frames(v))) for v in (here.video, tmp_path / "run" / "video.mp4"))
    assert a.shape == b.shape and np.array_equal(a, b)


def test_ltx2s_own_sound_comes_back_from_the_workers(pool, tmp_path):
    from pipelines.chain import VideoOptions, make_video
    from pipelines.soundtrack import read_clip_sound

    story = tmp_path / "story.yaml"
    story.write_text(STORY.replace("width: 32", "width: 64").replace("height: 32", "height: 64"))
    opts = VideoOptions(model="tiny-ltx2")
    here = make_video(story, tmp_path / "here", opts, runtime=RUNTIME)
    there = make_video(story, tmp_path / "there", opts, runtime=RUNTIME, pool=pool)
    a, b = (read_clip_sound(r.run_dir / "soundtrack.wav")[0] for r in (here, there))
    assert a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("spec,fps", [("tiny-framepack", 30), ("tiny-skyreels-df", 24)])
def test_long_video_families_on_two_workers_match_a_local_run(pool, tmp_path, spec, fps,
                                                             monkeypatch):  # fmt: skip
    """FramePack's section state comes back from the workers with the frames (and goes out
    with the next section); SkyReels' windows seed their overlap noise themselves: either
    way, the same video as on one machine. On the workers the segments go as a relay."""
    from pipelines import chain
    from pipelines.chain import VideoOptions, make_video
    from pipelines.video_io import read_frames

    relayed = []
    real = chain.relay
    monkeypatch.setattr(chain, "relay", lambda *a, **k: relayed.append(len(a[2])) or real(*a, **k))

    story = tmp_path / "story.yaml"
    story.write_text(STORY.replace("fps: 8", f"fps: {fps}").replace("seconds: 1", "seconds: 2"))
    opts = VideoOptions(model=spec)
    here = make_video(story, tmp_path / "here", opts, runtime=RUNTIME)
    there = make_video(story, tmp_path / "there", opts, runtime=RUNTIME, pool=pool)
    a, b = (np.stack(list(read_frames(r.video))) for r in (here, there))
    assert a.shape == b.shape and np.array_equal(a, b)
    states = sorted(p.name for p in (there.run_dir / "segments").glob("*-state.safetensors"))
    assert bool(states) == (spec == "tiny-framepack")
    assert relayed == [there.segments]  # every segment, once, through the relay
