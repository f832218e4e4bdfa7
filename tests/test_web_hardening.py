"""The live web app as a hostile or careless client meets it: raw API calls with broken
inputs, uploads that are not what their names say, file-route traversal, a flood of bad
requests, and start-ups that cannot work. Issue 16's web cases, kept as a suite.

Every refused request gets one message naming the input (never `"error": null`), leaves no
traceback in the server's log and submits no job. The server is `python app.py --model
tiny`, started the way tests/test_app.py starts it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, Server, mount_tmpfs, write_tone
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from test_app import CAPS, SHORT

from pipelines.jobstore import JobStore

NAN, INF = float("nan"), float("inf")


SERVER_ENV = CAPS  # the `server` fixture (tests/conftest.py) starts the app with these


def raw(server: Server, api: str, data: list) -> tuple[str, dict | list | None]:
    """A raw API call (no gradio_client to fix it up): the event and its payload."""
    body = json.dumps({"data": data}).encode()  # NaN and Infinity go as JSON's extensions
    request = urllib.request.Request(
        f"{server.url}gradio_api/call/{api}", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        event_id = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{server.url}gradio_api/call/{api}/{event_id}", timeout=60) as r:
        text = r.read().decode()
    event = data_line = None
    for line in text.splitlines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data_line = line.removeprefix("data: ")
    return event or "", json.loads(data_line) if data_line else None


class Watch:
    """What a request did to the server: new lines in its log, new jobs in its store."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.log_at = server.log.stat().st_size
        self.jobs = len(JobStore(server.runs).list(1000))

    def traceback(self) -> str:
        with open(self.server.log, "rb") as fh:
            fh.seek(self.log_at)
            new = fh.read().decode(errors="replace")
        return new if "Traceback" in new else ""

    def new_jobs(self) -> int:
        return len(JobStore(self.server.runs).list(1000)) - self.jobs


def assert_refused(server: Server, api: str, data: list, phrase: str) -> None:
    watch = Watch(server)
    event, payload = raw(server, api, data)
    assert event == "error", (event, payload)
    message = (payload or {}).get("error")
    assert isinstance(message, str) and phrase in message, payload
    assert "\n" not in message.strip(), message
    assert not watch.traceback(), watch.traceback()
    assert watch.new_jobs() == 0


# --------------------------------------------------------------------------- raw API calls


def video_inputs(**changes) -> list:
    names = ["storyboard", "model", "mode", "fps", "width", "height", "seed", "steps",
             "negative_prompt", "audio", "image_model", "loras", "lora_scale", "images",
             "continuity", "reference", "continuity_strength", "clip_frames"]  # fmt: skip
    values = dict.fromkeys(names)
    values["storyboard"] = SHORT
    values.update(changes)
    return [values[n] for n in names]


DEEP_YAML = "shots: " + "[" * 100_000 + "]" * 100_000 + "\n"
DEEP_JSON = '{"shots": ' + "[" * 100_000 + "]" * 100_000 + "}"
BOMB = "shots:\n  - &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
VIDEO_CASES = [  # (inputs, phrase), each sent to /video and to /plan (item 13: the same checks)
    ([], "takes 18 values (storyboard, model, mode, fps"),  # item 14: too few inputs
    ([SHORT], "takes 18 values"),
    (video_inputs()[:9], "got 9; send null for any left at its default"),
    (video_inputs(fps="abc"), "fps: must be an integer (got 'abc')"),  # item 14
    (video_inputs(fps=NAN), "fps: must be a finite number (got nan)"),
    (video_inputs(fps=INF), "fps: must be a finite number (got inf)"),
    (video_inputs(width=-INF), "width: must be a finite number"),
    (video_inputs(fps=True), "fps: must be a number (got True)"),
    (video_inputs(fps=[8]), "fps: must be a number"),
    (video_inputs(height={"a": 1}), "height: must be a number"),
    (video_inputs(seed="7.5"), "seed: must be an integer (got 7.5)"),  # number text counts
    (video_inputs(steps="x"), "steps: must be an integer"),
    (video_inputs(fps=1000), "fps: must be between 1 and 60"),
    (video_inputs(width=99999), "width: must be between 32 and 1280"),
    (video_inputs(steps=9), "steps: must be between 1 and 8"),
    (video_inputs(storyboard=5), "storyboard: must be text (got int)"),
    (video_inputs(storyboard=[1]), "storyboard: must be text (got list)"),
    (video_inputs(storyboard={"shots": ["a"]}), "storyboard: must be text (got dict)"),
    (video_inputs(storyboard=""), "storyboard: paste YAML or JSON"),
    (video_inputs(storyboard=None), "storyboard: paste YAML or JSON"),
    (video_inputs(storyboard=DEEP_YAML), "storyboard: nested too deeply"),  # item 7
    (video_inputs(storyboard=DEEP_JSON), "storyboard: nested too deeply"),  # item 7
    (video_inputs(storyboard=SHORT + "audio: ~nosuchuser9/x.mp3\n"), "audio: a storyboard sent to the server cannot name a file"),  # item 8
    (video_inputs(storyboard=SHORT + "audio: /etc/hostname\n"), "audio: a storyboard sent to the server cannot name a file"),
    (video_inputs(storyboard=SHORT.replace("seconds: 1\n", "seconds: 1e9\n", 1)), "shots[0].seconds: must be <= 600"),  # item 15
    (video_inputs(storyboard="!!python/object/apply:os.system ['touch pwned']\n"), "storyboard: not valid YAML or JSON"),
    (video_inputs(storyboard=BOMB), "shots[0]: must be a mapping or a prompt string (got a list)"),
    (video_inputs(storyboard="shots:\n" + "  - a\n" * 501), "at most 500 shots are allowed"),
    (video_inputs(storyboard=SHORT + "colour: red\n"), "unknown key 'colour'"),
    (video_inputs(model="nonsense"), "model: 'nonsense' is not in the list of choices (auto, tiny, "),
    (video_inputs(mode="sideways"), "mode: 'sideways' is not in the list of choices"),
    (video_inputs(negative_prompt=5), "negative_prompt: must be text"),
    (video_inputs(audio="/etc/passwd"), "audio: must be an uploaded file"),
    (video_inputs(loras=["/etc/passwd"]), "loras: must be an uploaded file"),
    (video_inputs(reference="/etc/passwd"), "reference: must be an uploaded file"),
    (video_inputs(continuity="sideways"), "continuity: 'sideways' is not in the list of choices"),
    (video_inputs(continuity_strength="2"), "continuity_strength: must be > 0 and < 1"),
    (video_inputs(storyboard=SHORT + "reference: /etc/hostname\n"), "reference: a storyboard sent to the server cannot name a file"),
]  # fmt: skip


@pytest.mark.parametrize("api", ["video", "plan"])
@pytest.mark.parametrize("data,phrase", VIDEO_CASES, ids=[p for _, p in VIDEO_CASES])
def test_raw_video_and_plan_calls_get_one_message(server, api, data, phrase):
    assert_refused(server, api, data, phrase)


IMAGE_NAMES = ["prompt", "count", "model", "seed", "width", "height", "steps", "guidance",
               "negative_prompt", "loras", "lora_scale"]  # fmt: skip


def image_inputs(**changes) -> list:
    values = {**dict.fromkeys(IMAGE_NAMES), "prompt": "a cat", **changes}
    return [values[n] for n in IMAGE_NAMES]


def thumbs_inputs(**changes) -> list:
    names = ["rows", "rows_file", "preset", "variants", "model", "format", "loras", "lora_scale"]
    values = {**dict.fromkeys(names), "rows": "prompt\na cat\n", **changes}
    return [values[n] for n in names]


OTHER_CASES = [  # (api, inputs, phrase)
    ("image", [], "takes 11 values (prompt, count, model"),
    ("image", ["a cat"], "takes 11 values"),
    ("image", image_inputs(loras=["/etc/passwd"]), "loras: must be an uploaded file"),
    ("image", image_inputs(lora_scale="9"), "lora_scale: must be between -4 and 4"),
    ("image", image_inputs(prompt=""), "prompt: must be a non-empty string"),
    ("image", image_inputs(prompt=5), "prompt: must be text"),
    ("image", image_inputs(prompt="x" * 2500), "prompt: must be at most 2000 characters (got 2500"),
    ("image", image_inputs(count="x"), "count: must be a number"),
    ("image", image_inputs(count=NAN), "count: must be a finite number"),
    ("image", image_inputs(count=99), "count: 99 is over the maximum value 4"),
    ("image", image_inputs(count=0), "count: 0 is under the minimum value 1"),
    ("image", image_inputs(seed=-5), "seed: must be between 0 and 4294967295"),
    ("image", image_inputs(seed="x"), "seed: must be a number"),
    ("image", image_inputs(width=33), "width: tiny-image needs a multiple of 8"),
    ("image", image_inputs(width=99999), "width: must be between 1 and 1280"),
    ("image", image_inputs(steps=100), "steps: must be between 1 and 8"),
    ("image", image_inputs(guidance=51), "guidance: must be between 0 and 50"),
    ("image", image_inputs(guidance=INF), "guidance: must be a finite number"),
    ("image", image_inputs(negative_prompt=[1]), "negative_prompt: must be text"),
    ("image", image_inputs(model="tiny-ltx"), "model: 'tiny-ltx' is not in the list of choices"),
    ("thumbnails", [], "takes 8 values (rows, rows_file, preset"),
    ("thumbnails", thumbs_inputs(rows=""), "rows: paste CSV with a 'prompt' column"),
    ("thumbnails", thumbs_inputs(rows=5), "rows: must be text"),
    ("thumbnails", thumbs_inputs(rows="title\nx\n"), "the CSV header needs a 'prompt' column"),
    ("thumbnails", thumbs_inputs(rows="prompt\n"), "input: no rows in 'rows.csv'"),  # item 16
    ("thumbnails", thumbs_inputs(rows="prompt,seed\na,x\n"), "rows: no usable row (line 2: seed:"),
    ("thumbnails", thumbs_inputs(rows="prompt,titel\na,b\n"), "input: unknown column 'titel'"),
    ("thumbnails", thumbs_inputs(variants="x"), "variants: must be a number"),
    ("thumbnails", thumbs_inputs(variants=NAN), "variants: must be a finite number"),
    ("thumbnails", thumbs_inputs(variants=99), "variants: 99 is over the maximum value 4"),
    ("thumbnails", thumbs_inputs(preset="cinema"), "preset: unknown 'cinema'"),
    ("thumbnails", thumbs_inputs(preset="9999x9999"), "preset: 9999x9999"),
    ("thumbnails", thumbs_inputs(preset=5), "preset: must be text (got int)"),
    ("thumbnails", thumbs_inputs(format="gif"), "format: 'gif' is not in the list of choices (jpg, png)"),
    ("thumbnails", thumbs_inputs(model=5), "model: 5 is not in the list of choices"),
    ("thumbnails", thumbs_inputs(rows_file="/etc/passwd"), "rows_file: must be an uploaded file"),
    ("jobs", ["abc"], "limit: must be a whole number from 1 to 1000 (got 'abc')"),  # item 14
    ("jobs", [NAN], "limit: must be a whole number from 1 to 1000 (got nan)"),
    ("jobs", [True], "limit: must be a whole number from 1 to 1000 (got True)"),
    ("jobs", [], "takes 1 values (limit)"),
    ("job", ["nope"], "job: no job 'nope'"),
    ("job", ["../../etc/passwd"], "job: no job '../../etc/passwd'"),
    ("job", [5], "job: no job 5"),
    ("job", [], "takes 1 values (job_id)"),
    ("cancel", ["nope"], "job: no job 'nope'"),
    ("cancel", [[1]], "job: no job [1]"),
]  # fmt: skip


@pytest.mark.parametrize(
    "api,data,phrase", OTHER_CASES, ids=[f"{a}: {p}" for a, _, p in OTHER_CASES]
)
def test_raw_image_thumbnails_and_job_calls_get_one_message(server, api, data, phrase):
    assert_refused(server, api, data, phrase)


# --------------------------------------------------------------------------- uploads


def upload_cases(tmp: Path) -> list[tuple[str, Path, str]]:
    (tmp / "notes.mp3").write_text("la la la\n")
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp / "pic.png")
    (tmp / "pic.wav").write_bytes((tmp / "pic.png").read_bytes())
    (tmp / "empty.mp3").write_bytes(b"")
    (tmp / "tool.exe").write_bytes(b"MZ\x90\x00")
    return [
        ("text named .mp3", tmp / "notes.mp3", "audio: the upload is not music"),  # item 13
        ("a PNG named .wav", tmp / "pic.wav", "audio: the upload is not music"),  # item 13
        ("an empty .mp3", tmp / "empty.mp3", "audio: the upload is not music"),
        ("an .exe", tmp / "tool.exe", "audio: .exe file type is not accepted (use .mp3"),
    ]


@pytest.mark.parametrize("api", ["/video", "/plan"])
def test_music_uploads_are_checked_with_the_request(server, client, tmp_path, api):
    """Issue 16, item 13: a music upload that is not audio is refused when the request is
    made (Generate and Plan alike), not when its job runs; a real tone passes."""
    for what, path, phrase in upload_cases(tmp_path):
        watch = Watch(server)
        with pytest.raises(AppError) as info:
            client.predict(SHORT, audio=handle_file(path), api_name=api)
        assert phrase in str(info.value), f"{what}: {info.value}"
        assert watch.new_jobs() == 0 and not watch.traceback(), what
    plan = client.predict(
        SHORT,
        audio=handle_file(write_tone(tmp_path / "song.wav", 0.5, rate=8000)),
        api_name="/plan",
    )
    assert plan.startswith("2 shots")


def test_rows_uploads_are_checked_with_the_request(server, client, tmp_path):
    """A rows file: an .exe is refused by type; a JSONL whose one row is nested 100,000
    levels deep is one bad row (item 7), so the request has no usable row."""
    (tmp_path / "rows.exe").write_bytes(b"MZ")
    (tmp_path / "rows.jsonl").write_text("[" * 100_000 + "\n")
    (tmp_path / "rows.csv").write_bytes(b"\xff\xfe\x00p\x00r")
    cases = [("rows.exe", "rows_file: .exe file type is not accepted (use .csv"),
             ("rows.jsonl", "rows: no usable row (line 1: nested too deeply"),
             ("rows.csv", "rows: no usable row (line 1: not UTF-8 text")]  # fmt: skip
    for name, phrase in cases:
        watch = Watch(server)
        with pytest.raises(AppError) as info:
            client.predict("", rows_file=handle_file(tmp_path / name), api_name="/thumbnails")
        assert phrase in str(info.value), f"{name}: {info.value}"
        assert watch.new_jobs() == 0 and not watch.traceback(), name


# --------------------------------------------------------------------------- file routes


def status(server: Server, path: str) -> int:
    try:
        with urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize(
    "where",
    ["/etc/passwd", "{runs}/jobs.sqlite3", "{runs}/jobs.sqlite3-wal", "{runs}/.jobs.lock",
     "{runs}/.staging", "{runs}/../secret.txt", "{runs}/%2e%2e/secret.txt",
     "{runs}/..%2fsecret.txt", str(ROOT / "app.py"), "{runs}/.gradio"],
)  # fmt: skip
def test_the_file_route_serves_no_file_outside_the_outputs(server, where):
    """Held in the adversarial run: no traversal reaches the job store, its lock, staged
    uploads, a file beside the runs folder, or the code."""
    (server.runs.parent / "secret.txt").write_text("not for you")
    assert status(server, where.replace("{runs}", str(server.runs))) in (403, 404)


# --------------------------------------------------------------------------- floods


def test_a_flood_of_bad_requests_is_answered_and_the_server_stays_up(server):
    """Sixty broken requests at once, of every kind above: each gets its message, none
    crashes a worker or the server, and a good request after them is served."""
    batch = [(api, data, phrase) for api, data, phrase in OTHER_CASES[:20]] + [
        ("plan", data, phrase) for data, phrase in VIDEO_CASES[:40]
    ]
    watch = Watch(server)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda c: raw(server, c[0], c[1]), batch))
    for (api, _, phrase), (event, payload) in zip(batch, answers, strict=True):
        assert event == "error" and phrase in (payload or {}).get("error", ""), (api, payload)
    assert not watch.traceback() and watch.new_jobs() == 0
    event, payload = raw(server, "plan", video_inputs())
    assert event == "complete" and payload[0].startswith("2 shots")


# --------------------------------------------------------------------------- start-up


def app_main(argv: list[str], capsys) -> tuple[int, str]:
    """`python app.py ARGV` in this process (what fails must fail before serving)."""
    import app

    try:
        code = app.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only file system (a tmpfs mounted read-only)."""
    path = mount_tmpfs(tmp_path / "ro", "ro,size=64k")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


STARTS = [  # (argv, env, exit code, phrase); item 6 and item 16
    (["--port", "99999"], {}, 2, "--port: must be from 1 to 65535 (got 99999)"),
    (["--port", "0"], {}, 2, "--port: must be from 1 to 65535"),
    (["--port", "-1"], {}, 2, "--port: must be from 1 to 65535"),
    (["--port", "abc"], {}, 2, "argument --port: invalid int value: 'abc'"),
    (["--runs", "{d}/file"], {}, 2, "--runs: '{d}/file' is a file; give a folder"),
    (["--runs", "{d}/file/runs"], {}, 2, "is a file, so"),
    (["--runs", "~nosuchuser9/runs"], {}, 2, "--runs: no such user's home folder"),
    ([], {"REELCHAIN_QUEUE_SIZE": "abc"}, 2, "REELCHAIN_QUEUE_SIZE: must be a whole number ≥ 1 (got 'abc')"),
    ([], {"REELCHAIN_QUEUE_SIZE": "0"}, 2, "REELCHAIN_QUEUE_SIZE: must be a whole number ≥ 1"),
    ([], {"REELCHAIN_MAX_WAITING_JOBS": "x"}, 2, "REELCHAIN_MAX_WAITING_JOBS: must be a whole number"),
    ([], {"REELCHAIN_MAX_SIDE": "0"}, 2, "REELCHAIN_MAX_SIDE: must be a whole number > 0"),
    ([], {"REELCHAIN_MAX_UPLOAD_BYTES": "lots"}, 2, "REELCHAIN_MAX_UPLOAD_BYTES: must be a whole number"),
    ([], {"REELCHAIN_BATCH_SIZE": "x"}, 2, "(from REELCHAIN_BATCH_SIZE)"),
    (["--model", "nonsense"], {}, 2, "model: unknown 'nonsense'"),
    (["--auth", "nocolon"], {}, 2, "--auth: use USER:PASS"),
    (["--host", "0.0.0.0"], {}, 2, "--host 0.0.0.0 exposes the app"),
]  # fmt: skip


@pytest.mark.parametrize("argv,env,code,phrase", STARTS, ids=[p[:50] for *_, p in STARTS])
def test_a_server_that_cannot_start_says_why_in_one_line(
    argv, env, code, phrase, tmp_path, capsys, monkeypatch
):
    (tmp_path / "file").write_text("x")
    monkeypatch.delenv("REELCHAIN_AUTH", raising=False)
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runs = ["--runs", str(tmp_path / "runs")] if "--runs" not in argv else []
    got, err = app_main([a.replace("{d}", str(tmp_path)) for a in argv] + runs, capsys)
    assert got == code, err
    assert err.count("\n") == 1 and phrase.replace("{d}", str(tmp_path)) in err, err
    assert not (tmp_path / "runs").exists()


def test_runs_on_a_read_only_file_system_is_refused(read_only_dir, capsys):
    got, err = app_main(["--runs", str(read_only_dir / "runs")], capsys)
    assert got == 2 and err.count("\n") == 1 and "--runs: cannot" in err, err
    got, err = app_main(["--runs", str(read_only_dir)], capsys)
    assert got == 2 and err.count("\n") == 1 and "--runs: cannot write in" in err, err


def test_a_port_in_use_stops_the_start_before_any_job_runs(tmp_path, capsys, monkeypatch):
    """Issue 16, item 6: a port already in use is one line, exit 1, and the job manager has
    not started: a queued job is still queued, untouched (before, it ran before the server
    failed to come up)."""
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    store = JobStore(tmp_path / "runs")
    job = store.add("image", {"prompt": "a cat", "model": "tiny", "count": 1})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        got, err = app_main(["--port", str(port), "--runs", str(tmp_path / "runs")], capsys)
    assert got == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --port {port}: cannot serve"), err
    after = store.get(job.id)
    assert (after.status, after.attempts) == ("queued", 0)
    assert not [t for t in threading.enumerate() if t.name.startswith("reelchain-worker")]


def test_a_runs_folder_another_server_uses_is_refused(tmp_path, capsys, monkeypatch):
    from pipelines.jobs import JobManager

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    other = JobManager(tmp_path / "runs").lock()
    try:
        got, err = app_main(["--runs", str(tmp_path / "runs")], capsys)
    finally:
        other.stop()
    assert got == 1 and err.count("\n") == 1 and "another server is using" in err, err


def test_the_real_process_prints_one_line_and_no_traceback(tmp_path):
    """The same start-ups in a real `python app.py` (no test harness around it)."""
    (tmp_path / "file").write_text("x")
    env = {k: v for k, v in os.environ.items() if k not in ("REELCHAIN_AUTH", "SPACE_ID")}
    procs = [
        subprocess.Popen([sys.executable, "app.py", *argv], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for argv in (["--port", "99999", "--runs", str(tmp_path / "r")], ["--runs", str(tmp_path / "file")])
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
