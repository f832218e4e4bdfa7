"""The web app for real: `python app.py --model tiny` in a subprocess, called with gradio_client."""

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, Server, write_tone
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.jobstore import JobStore
from pipelines.video_io import probe

CAPS = {"REELCHAIN_MAX_SIDE": "1280", "REELCHAIN_MAX_STEPS": "8", "REELCHAIN_MAX_COUNT": "4"}

SHORT = """
fps: 8
width: 32
height: 32
shots:
  - prompt: a paper boat on a rainy street
    seconds: 1
    transition: crossfade
    transition_seconds: 0.25
  - prompt: the boat reaches a river at dawn
    seconds: 1
"""
# Sixteen segments made one after another (a few seconds in all here, a second each on a
# cold server): time to disconnect a client, or kill the server, in the middle.
LONG = """
fps: 8
interpolate: 1
width: 32
height: 32
shots:
  - prompt: a long river journey
    seconds: 16
"""
LONG_FRAMES = 128


SERVER_ENV = CAPS  # the `server` fixture (tests/conftest.py) starts the app with these


def wait_for(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def new_job(store: JobStore, before: set[str], *, segments: int | None = None):
    """The job that appeared after `before` (once running with `segments` finished)."""

    def check():
        for job in store.list():
            if job.id in before:
                continue
            if segments is None:
                return job
            if job.status == "running" and len(job.outputs.get("segments", [])) >= segments:
                return job
        return None

    return check


def calling(url: str) -> str:
    """A client program that asks for the long video and waits for it."""
    return f"from gradio_client import Client; Client({url!r}).predict({LONG!r}, api_name='/video')"


def test_video_api_gives_a_video_of_the_storyboards_length(server, client, tmp_path):
    path = client.predict(SHORT, api_name="/video")
    info = probe(path)
    assert (info.frames, info.fps, info.width, info.height) == (16, 8.0, 32, 32)  # 8 fps × 2 s
    assert not info.has_audio
    jobs = client.predict(api_name="/jobs")
    assert jobs[0]["kind"] == "video" and jobs[0]["status"] == "done"
    assert Path(server.runs / jobs[0]["id"] / "video.mp4").is_file()  # folder: the job id

    # Options after the text: a seed, another size, and music (an upload, never a path).
    path = client.predict(
        SHORT,
        seed=5,
        width=64,
        audio=handle_file(write_tone(tmp_path / "song.wav", 2.0, rate=8000)),
        api_name="/video",
    )
    info = probe(path)
    assert (info.frames, info.width, info.height, info.has_audio) == (16, 64, 32, True)
    job = client.predict(api_name="/jobs")[0]
    assert job["params"]["seed"] == 5 and job["params"]["audio"] == "audio.wav"


def test_plan_api_says_what_video_would_make_and_makes_nothing(server, client):
    before = len(client.predict(api_name="/jobs"))
    text = client.predict(SHORT, fps=16, api_name="/plan")
    lines = text.splitlines()
    assert lines[0].startswith("2 shots, 32 frames at 16 fps (2.0 s), 32×32")
    # 24 fps of motion (the LTX twin's) for a 16 fps video: 2 s need 47 frames, in 9s.
    assert lines[-1].startswith("7 video calls make 63 frames at 24 fps of motion for 32 output")
    assert len(client.predict(api_name="/jobs")) == before  # no job, nothing run
    with pytest.raises(AppError, match="shots"):
        client.predict("shots: []\n", api_name="/plan")


def test_plan_refuses_music_that_generate_would_refuse(tmp_path):
    import gradio as gr

    import app
    from pipelines.settings import Limits

    actions = app.Actions(jobs=None, limits=Limits(max_upload_bytes=1000))  # plan needs no jobs
    song = write_tone(tmp_path / "song.wav", 0.1, rate=8000)  # 1.6 kB: over this server's cap
    with pytest.raises(gr.Error, match="audio: .* over the limit of 1000"):
        actions.plan(SHORT, audio=str(song))
    assert actions.plan(SHORT).startswith("2 shots, 16 frames at 8 fps")


def test_the_pages_number_boxes_may_be_empty_and_hold_text():
    """Gradio's number box cannot be empty, so the page's optional numbers are text:
    empty is the default, number text is the number, other text is named."""
    import gradio as gr

    import app
    from pipelines.requests import VideoRequest
    from pipelines.settings import Limits

    req = app.request_from(VideoRequest, {"storyboard": SHORT, "fps": "", "seed": "0",
                                          "width": " 64 ", "steps": None})  # fmt: skip
    assert (req.fps, req.seed, req.width, req.steps) == (None, 0, 64, None)
    actions = app.Actions(jobs=None, limits=Limits())
    assert actions.plan(SHORT, fps="12").startswith("2 shots, 24 frames at 12 fps")
    with pytest.raises(gr.Error, match="fps: must be an integer .got 'twelve'"):
        actions.plan(SHORT, fps="twelve")


def test_image_api_gives_images_with_their_parameters(client):
    images, details = client.predict("a red fox in the snow", count=2, seed=3, api_name="/image")
    assert len(images) == 2 and [d["seed"] for d in details] == [3, 4]
    for item, d in zip(images, details, strict=True):
        assert Image.open(item["image"]).size == (64, 64)  # the image twin's size
        assert "Seed: " in d["parameters"] and "Model: tiny-image" in d["parameters"]


def test_thumbnails_api_gives_preset_sized_images_and_a_zip(client):
    rows = "prompt,title\na lighthouse in a storm,Storm Week\na cosy cabin,Winter Vlog\n"
    images, archive, report = client.predict(rows, preset="128x72", api_name="/thumbnails")
    assert len(images) == 2 and "2 thumbnail(s)" in report
    assert all(Image.open(i["image"]).size == (128, 72) for i in images)
    with zipfile.ZipFile(archive) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".jpg")]) == 2
    # Every option has a default: the YouTube preset.
    images, _, _ = client.predict("prompt\na red kite over hills\n", api_name="/thumbnails")
    assert [Image.open(i["image"]).size for i in images] == [(1280, 720)]


@pytest.mark.parametrize(
    "api,args,kwargs,field",
    [
        ("/image", ["a cat"], {"width": 2048}, "width"),
        ("/image", ["a cat"], {"steps": 50}, "steps"),
        ("/image", ["a cat"], {"count": 9}, "maximum value 4"),  # the slider says
        ("/image", ["x" * 2500], {}, "prompt"),
        ("/video", [SHORT + "steps: 50\n"], {}, "steps"),
        ("/video", [SHORT + "audio: /etc/hostname\n"], {}, "audio"),
        ("/video", [SHORT.replace("seconds: 1\n", "seconds: 5000\n", 1)], {}, "shots[0].seconds"),
        ("/video", [SHORT], {"model": "/etc"}, "not in the list of choices"),
        ("/thumbnails", ["prompt\na cat\n"], {"variants": 9}, "maximum value 4"),
        ("/thumbnails", ["prompt\na cat\n"], {"preset": "4000x4000"}, "preset"),
        ("/thumbnails", ["title\nno prompt column\n"], {}, "input"),
    ],
)
def test_requests_over_the_caps_are_refused(client, api, args, kwargs, field):
    """Checked on the server, whatever the widgets allow; the message names the field."""
    before = len(client.predict(api_name="/jobs"))
    with pytest.raises(AppError) as info:
        client.predict(*args, **kwargs, api_name=api)
    message = str(info.value)
    assert message.startswith(f"{field}: ") or field in message, message
    assert len(client.predict(api_name="/jobs")) == before  # refused before a job existed


def test_a_client_that_disconnects_does_not_stop_its_job(server):
    store = JobStore(server.runs)
    before = {j.id for j in store.list()}
    caller = subprocess.Popen([sys.executable, "-c", calling(server.url)], cwd=ROOT, env=server.env)
    try:
        job = wait_for(new_job(store, before), 120, "the job")
    finally:
        caller.kill()  # the client goes away as soon as its job exists
        caller.wait(30)
    assert not store.get(job.id).finished
    job = wait_for(lambda: store.get(job.id).finished and store.get(job.id), 180, "the job")
    assert job.status == "done", job.message
    assert probe(job.files("video")[0]).frames == LONG_FRAMES
    listed = {j["id"]: j for j in server.client().predict(api_name="/jobs")}
    assert listed[job.id]["status"] == "done"


def test_a_server_killed_mid_job_finishes_it_after_a_restart(tmp_path):
    runs = tmp_path / "runs"
    first = Server(runs).start()
    store = JobStore(runs)
    caller = subprocess.Popen(
        [sys.executable, "-c", calling(first.url)], cwd=ROOT, env=first.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        job = wait_for(new_job(store, set(), segments=1), 120, "the job's first segment")
        first.kill()
    finally:
        caller.kill()
        caller.wait(30)
    job = store.get(job.id)
    assert job.status == "running" and job.attempts == 1  # as the killed server left it
    seg0 = job.run_dir / "segments" / "seg-000.mp4"
    stamp = seg0.stat().st_mtime_ns
    second = Server(runs, port=first.port).start()
    try:
        job = wait_for(lambda: store.get(job.id).finished and store.get(job.id), 180, "the job")
    finally:
        second.stop()
    assert job.status == "done" and job.attempts == 2, job.message
    assert probe(job.files("video")[0]).frames == LONG_FRAMES
    assert seg0.stat().st_mtime_ns == stamp  # finished segments are not made again
    manifest = json.loads((job.run_dir / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in manifest["segments"])


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0"),
        (["--share"], "--share"),
        (["--host", "0.0.0.0", "--auth", "nopassword"], "--auth"),
        (["--model", "/some/folder"], "model"),
        (["--batch-size", "0"], "batch-size"),
        (["--memory-budget", "lots"], "memory-budget"),
    ],
)
def test_the_app_refuses_to_start_exposed_without_a_password(tmp_path, args, needle):
    env = {k: v for k, v in os.environ.items() if k not in ("REELCHAIN_AUTH", "SPACE_ID")}
    proc = subprocess.run(
        [sys.executable, "app.py", "--runs", str(tmp_path / "runs"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_importing_the_app_starts_nothing():
    code = (
        "import sys, threading; sys.argv = ['app.py', '--host', '0.0.0.0']; import app; "
        "assert not [t for t in threading.enumerate() if t.name.startswith('reelchain')]; "
        "assert 'torch' not in sys.modules; print(app.create_demo.__name__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "create_demo", proc.stderr


def test_only_outputs_in_the_runs_folder_are_served(server, client):
    client.predict("prompt\na small boat\n", preset="128x72", api_name="/thumbnails")
    job = JobStore(server.runs).list()[0]
    output = job.files("images")[0]

    def status(path: Path) -> int:
        try:
            with urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status(output) == 200
    assert status(server.runs / "jobs.sqlite3") == 403  # every job's prompts
    assert status(ROOT / "app.py") == 403
    assert status(Path("/etc/hostname")) == 403


def test_jobs_run_under_spaces_gpu_when_the_package_is_there(tmp_path, monkeypatch):
    import types

    import app
    from pipelines.jobs import JobManager

    durations = []
    fake = types.ModuleType("spaces")

    def gpu(duration):
        durations.append(duration)
        return lambda fn: fn

    fake.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    runner = app.on_gpu(lambda ctx: {"pid": os.getpid(), "prompt": ctx.job.params["p"]}, 60)
    jobs = JobManager(tmp_path / "runs", runners={"image": runner}).start()
    try:
        job = jobs.wait(jobs.submit("image", {"p": "a cat"}).id, timeout=30)
    finally:
        jobs.stop()
    assert (job.status, job.outputs["prompt"], durations) == ("done", "a cat", [60])
    monkeypatch.delitem(sys.modules, "spaces")
    if importlib.util.find_spec("spaces") is None:
        plain = object()
        assert app.on_gpu(plain, 60) is plain  # no package: unchanged


def test_an_exposed_server_asks_for_the_password_and_says_it_is_exposed(tmp_path):
    s = Server(tmp_path / "runs", {"REELCHAIN_AUTH": "maker:s3cret"}, args=("--host", "0.0.0.0"))
    s.start()
    try:
        with pytest.raises(Exception):  # noqa: B017 (the client cannot even read the config)
            Client(s.url, verbose=False)
        client = Client(s.url, auth=("maker", "s3cret"), verbose=False)
        assert client.predict(api_name="/jobs") == []
    finally:
        s.stop()
    assert "warning: " in s.log.read_text() and "0.0.0.0" in s.log.read_text()


def test_the_servers_device_and_memory_knobs_are_the_clis():
    """`app.py` takes the same --batch-size/--memory-budget/--offload/--dtype/--device/--fast
    as the CLI, each falling back to its REELCHAIN_* variable."""
    import app
    from pipelines.settings import runtime_from_args

    args = app.build_parser().parse_args(["--batch-size", "3", "--memory-budget", "2GB",
                                          "--offload", "none", "--fast", "cache"])  # fmt: skip
    rt = runtime_from_args(args)
    assert (rt.batch_size, rt.memory_budget, rt.offload, rt.fast) == (3, 2 * 2**30, "none",
                                                                      ("cache",))  # fmt: skip
