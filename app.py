"""Reelchain web UI and API; also the Hugging Face Space entry point.

    python app.py [--model M] [--host 127.0.0.1] [--port 7860] [--auth USER:PASS] [--share]
                  [--runs DIR]

The page only displays and forwards. Every generation is a job owned by the server
(`pipelines.jobs`): a button or an API call checks the request, submits a job to the store
in the runs folder, and the page follows the job by polling the store. Closing the tab, or
a client that disconnects, does not stop a job; History shows every job, and a restarted
server continues the jobs it was running.

API (gradio_client), every option after the first input has a default:
    /video       storyboard YAML/JSON text → the final video file
    /thumbnails  CSV text (prompt[,title,negative_prompt,seed,preset]) → image files + zip
    /image       prompt → images with their parameters
    /jobs, /job, /cancel   list jobs, one job, cancel a job

Security: binds 127.0.0.1. Any other host, or --share, needs --auth USER:PASS (or
REELCHAIN_AUTH=user:pass); without it the app exits with code 2. Caps come from
`Limits.from_env()` (REELCHAIN_MAX_SIDE=..., ...) and are checked on the server for every
request. Only the runs folder is served.
"""

from __future__ import annotations

import argparse
import functools
import html
import inspect
import json
import math
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.cli import OneLineParser, add_runtime_flags, runtime_from_args
from pipelines.jobs import (
    AUDIO_SUFFIXES,
    ROWS_SUFFIXES,
    Job,
    JobContext,
    JobError,
    JobManager,
    JobStore,
    Runner,
)
from pipelines.settings import Limits, Runtime

TITLE = "Reelchain"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_RUNS = "runs"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
QUEUE_SIZE = 64  # requests waiting in Gradio's queue (API calls wait for their job)
CONCURRENCY = 16  # requests handled at once; the work itself runs one job per device
MAX_WAITING_JOBS = 100  # jobs waiting for a worker; more submissions are refused
POLL_SECONDS = 1.0  # how often an open page looks at its job
HISTORY_SECONDS = 5.0  # how often the History table looks at the store
HISTORY_ROWS = 100
GPU_SECONDS = {"video": 1200, "image": 120, "thumbnails": 600}  # @spaces.GPU(duration=...)

MODE_CHOICES = [
    ("from the storyboard", ""),
    ("continue", "continue"),
    ("keyframes", "keyframes"),
    ("feedback", "feedback"),
]
THUMBNAIL_PRESETS = ["youtube", "shorts", "square"]
SHOT_HEADERS = ["prompt", "seconds", "transition"]
DEFAULT_SHOTS = [
    ["a paper boat on a rainy street", 2, "crossfade"],
    ["the boat reaches a river at dawn", 2, "cut"],
]
EXAMPLE_STORYBOARD = """\
fps: 8
seed: 7
shots:
  - prompt: a paper boat on a rainy street, cinematic
    seconds: 1
    transition: crossfade
    transition_seconds: 0.25
  - prompt: the boat reaches a river at dawn
    seconds: 1
"""
EXAMPLE_ROWS = """\
prompt,title
a lighthouse in a storm,Storm Week
a cosy cabin in the snow,Winter Vlog
"""
HISTORY_HEADERS = ["id", "kind", "status", "progress", "message", "created"]
CSS = """
.rc-status {font-size: 0.95rem}
.rc-status progress {width: 100%; height: 0.8rem}
"""


def model_choices(kind: str) -> list[str]:
    """Registry names the UI offers: presets and tiny twins, never paths. Video jobs may
    also take an image model (feedback mode)."""
    from pipelines.models import FAMILIES, PRESETS, twin_presets

    presets = {**twin_presets(), **PRESETS}
    wanted = "image" if kind == "thumbnails" else kind
    names = [
        n for n, p in presets.items() if wanted == "video" or FAMILIES[p.family].kind == wanted
    ]
    return ["tiny", *names]


def default_model(kind: str, server_model: str | None) -> str:
    """The server's `--model` where it suits the tab, else the tab's default preset."""
    if server_model and server_model in model_choices(kind):
        return server_model
    return "ltx-video" if kind == "video" else "sd-turbo"


def check_model(name: str | None, kind: str, fallback: str) -> str:
    """A model from the registry, by name (an API call may send anything)."""
    name = (name or "").strip() or fallback
    if name not in model_choices(kind):
        raise ValueError(
            f"model: unknown {name!r}; choose a preset (see `python -m pipelines models`)"
        )
    return name


def on_gpu(runner: Runner, seconds: int) -> Runner:
    """On a ZeroGPU Space, run a job runner under `spaces.GPU(duration=seconds)`; elsewhere
    return it unchanged. ZeroGPU runs the decorated function in another process, so it gets
    plain arguments (the job id, the runs folder, settings) and reports through the store;
    Cancel cannot reach that process (the job stops when its GPU time is up)."""
    try:
        import spaces
    except ImportError:
        return runner

    @spaces.GPU(duration=seconds)
    def on_device(job_id: str, runs: str, runtime: Runtime, limits: Limits) -> dict:
        store = JobStore(runs)
        return runner(JobContext(store.get(job_id), store, runtime, limits, threading.Event()))

    @functools.wraps(runner)
    def run(ctx: JobContext) -> dict:
        return on_device(ctx.job.id, str(ctx.store.root), ctx.runtime, ctx.limits)

    return run


def user_errors(fn: Callable) -> Callable:
    """The engine's one-line `ValueError`s (and job errors) become `gr.Error` for users."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, JobError) as exc:
            raise gr.Error(str(exc).splitlines()[0], print_exception=False) from None

    return wrapper


class Blocks(gr.Blocks):
    """gr.Blocks whose events refuse inputs they cannot read with one line naming the input.

    Gradio answers a raw API call with too few inputs, or with text, NaN or Infinity in a
    number field, with `"error": null` and a server traceback (the failure is in its own
    processing, before a handler runs), and its own refusals (a value not among a
    dropdown's choices, over a slider's maximum, a file of the wrong type) name no input
    and print a traceback too. `validate_inputs` is where Gradio checks a request before
    processing it, so the checks go there (Gradio 6; tests/test_web_hardening.py fails if a
    new Gradio stops calling it). Null means an input's default, for every input.
    """

    def validate_inputs(self, block_fn, inputs: list[Any]) -> None:
        names = _input_names(block_fn)
        if len(inputs) < len(block_fn.inputs):
            raise gr.Error(
                f"inputs: {block_fn.api_name or block_fn.name} takes {len(names)} values "
                f"({', '.join(names)}), got {len(inputs)}; send null for any left at its default",
                print_exception=False,
            )
        for i, (name, block) in enumerate(zip(names, block_fn.inputs, strict=False)):
            if inputs[i] is None and isinstance(block, gr.Slider):
                inputs[i] = block.value  # a slider cannot take null: its default instead
            problem = _input_problem(block, inputs[i])
            if problem:
                raise gr.Error(f"{name}: {problem}", print_exception=False)
        super().validate_inputs(block_fn, inputs)


def _input_names(block_fn) -> list[str]:
    """An event's inputs by the handler's parameter names (what an API caller sees), or by
    the components' labels where the handler takes other arguments too."""
    n = len(block_fn.inputs)
    try:
        params = [
            p.name for p in inspect.signature(block_fn.fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]  # fmt: skip
    except (TypeError, ValueError):
        params = []
    if len(params) >= n:
        return params[len(params) - n :]
    return [str(getattr(b, "label", None) or f"input {i}") for i, b in enumerate(block_fn.inputs)]


def _input_problem(block: Any, value: Any) -> str | None:
    """What is wrong with a raw input value for its component, in words that name the fix
    (None: nothing). Null is always allowed: it means the default."""
    if value is None:
        return None
    if isinstance(block, gr.Number | gr.Slider):
        return _number_problem(block, value)
    if _takes_text(block):
        return None if isinstance(value, str) else f"must be text (got {type(value).__name__})"
    if isinstance(block, gr.Dropdown | gr.Radio):
        allowed = [c[1] if isinstance(c, tuple | list) else c for c in block.choices or []]
        if allowed and value not in allowed:  # (no choices yet: filled in by the page)
            shown = ", ".join(str(a) or "''" for a in allowed)
            return f"{value!r:.60} is not in the list of choices ({shown})"
        return None
    if isinstance(block, gr.File):
        if not isinstance(value, dict):
            return "must be an uploaded file (gradio_client: handle_file(path))"
        name = str(value.get("orig_name") or value.get("path") or "")
        suffix = Path(name).suffix.lower()
        if block.file_types and suffix not in block.file_types:
            return f"{suffix or 'no'} file type is not accepted (use {', '.join(block.file_types)})"
    return None


def _number_problem(block: Any, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number (got {value!r:.60})"
    if not math.isfinite(value):
        return f"must be a finite number (got {value!r})"
    low, high = getattr(block, "minimum", None), getattr(block, "maximum", None)
    if high is not None and value > high:
        return f"{value:g} is over the maximum value {high:g}"
    if low is not None and value < low:
        return f"{value:g} is under the minimum value {low:g}"
    return None


def _takes_text(block: Any) -> bool:
    """A text box, or a dropdown that takes any text (a preset as WxH)."""
    return isinstance(block, gr.Textbox) or (
        isinstance(block, gr.Dropdown) and bool(block.allow_custom_value)
    )


def shots_to_storyboard(rows: list[list[Any]] | None) -> str:
    """The shots table as storyboard JSON (empty prompts are skipped)."""
    shots = []
    for n, row in enumerate(rows or [], start=1):
        cells = [*list(row), None, None, None][:3]
        prompt = str(cells[0] or "").strip()
        if not prompt:
            continue
        shot: dict[str, Any] = {"prompt": prompt}
        if cells[1] not in (None, ""):
            try:
                shot["seconds"] = float(cells[1])
            except (TypeError, ValueError):
                raise ValueError(
                    f"shots: row {n} seconds must be a number (got {cells[1]!r})"
                ) from None
        if str(cells[2] or "").strip():
            shot["transition"] = str(cells[2]).strip().lower()
        shots.append(shot)
    if not shots:
        raise ValueError("shots: write at least one prompt in the table, or paste a storyboard")
    return json.dumps({"shots": shots})


def status_html(job: Job | None, ahead: int = 0) -> str:
    if job is None:
        return "<div class='rc-status'>No job yet.</div>"
    where = f" · {ahead} job(s) ahead" if job.status in ("queued", "interrupted") and ahead else ""
    note = f" · {html.escape(job.message)}" if job.message and job.message != job.status else ""
    return (
        f"<div class='rc-status'><b>{html.escape(job.status)}</b> · job "
        f"<code>{html.escape(job.id)}</code>{where}{note}"
        f"<br><progress value='{job.progress:.3f}' max='1'></progress></div>"
    )


@dataclass
class Actions:
    """What the page and the API can do; each handler checks, submits or reads jobs."""

    jobs: JobManager
    limits: Limits
    server_model: str | None = None
    max_waiting: int = MAX_WAITING_JOBS

    def _submit(self, kind: str, params: dict, files: dict | None = None) -> Job:
        if self.jobs.store.waiting() >= self.max_waiting:
            raise ValueError(f"queue: {self.max_waiting} jobs are waiting; try again later")
        return self.jobs.submit(kind, params, files)

    def _finished(self, job: Job) -> Job:
        """Wait for a job (it runs on the server whatever happens to this request)."""
        job = self.jobs.wait(job.id)
        if not job.finished:
            raise ValueError(
                f"{job.kind}: the server is stopping; job {job.id} continues when it starts "
                "again (see History)"
            )
        if job.status != "done":
            raise ValueError(f"{job.kind}: job {job.id} {job.status}: {job.message}")
        return job

    # -- video ------------------------------------------------------------------------

    def _video_request(
        self, storyboard, model, mode, fps, width, height, seed, steps, negative, audio
    ) -> tuple[dict, dict]:
        """A video job's checked params and uploaded files (what Generate and Plan check)."""
        from pipelines.jobs import check_audio, prepare_video

        model = check_model(model, "video", default_model("video", self.server_model))
        params = prepare_video(
            storyboard, model=model, mode=mode or None, fps=_given(fps), width=_given(width),
            height=_given(height), seed=_given(seed, blank=-1), steps=_given(steps),
            negative_prompt=negative, limits=self.limits,
        )  # fmt: skip
        files = {}
        if audio:  # checked now, also by Plan: a file that is not music fails here
            name = "audio" + check_audio(audio, self.limits)
            params["audio"], files[name] = name, audio
        return params, files

    def _video_job(self, *request) -> Job:
        return self._submit("video", *self._video_request(*request))

    @user_errors
    def video(
        self,
        storyboard: str,
        model: str | None = None,
        mode: str | None = None,
        fps: float | None = None,
        width: float | None = None,
        height: float | None = None,
        seed: float | None = None,
        steps: float | None = None,
        negative_prompt: str | None = None,
        audio: str | None = None,
    ) -> str:
        """Storyboard (YAML or JSON) → the final video file. Options left out (or 0; -1 for
        the seed) take the storyboard's values, then the model's. Music is an upload."""
        job = self._video_job(
            storyboard, model, mode, fps, width, height, seed, steps, negative_prompt, audio
        )
        return str(self._finished(job).files("video")[0])

    @user_errors
    def start_video(
        self, shots, storyboard, model, mode, fps, width, height, seed, steps, negative, audio
    ):
        """The page's Generate: submit and return at once; the timer follows the job."""
        text = storyboard if (storyboard or "").strip() else shots_to_storyboard(shots)
        job = self._video_job(text, model, mode, fps, width, height, seed, steps, negative, audio)
        gr.Info(f"Job {job.id} submitted", duration=4)
        return job.id, status_html(job, self.jobs.store.position(job.id)), None

    @user_errors
    def plan(
        self,
        storyboard: str,
        model: str | None = None,
        mode: str | None = None,
        fps: float | None = None,
        width: float | None = None,
        height: float | None = None,
        seed: float | None = None,
        steps: float | None = None,
        negative_prompt: str | None = None,
        audio: str | None = None,
    ) -> str:
        """What `video` would make with these options — one line per segment (its shot, the
        frames its call makes, what it continues from, the output frames it becomes) and the
        totals — checked like `video`, without running anything."""
        from pipelines.jobs import video_plan

        params, _files = self._video_request(
            storyboard, model, mode, fps, width, height, seed, steps, negative_prompt, audio
        )
        return video_plan(params, self.limits)

    @user_errors
    def plan_video(self, shots, storyboard, *options):
        """The page's Plan button: the table or the storyboard text, as Generate takes them."""
        text = storyboard if (storyboard or "").strip() else shots_to_storyboard(shots)
        return self.plan(text, *options)

    def watch_video(self, job_id: str | None, seen: dict | None):
        """Timer tick: update only what changed since the last tick."""
        keep = (gr.skip(),) * 5
        if not job_id:
            return *keep, seen
        try:
            job = self.jobs.get(job_id)
        except JobError:
            return *keep, seen
        segments = [str(p) for p in job.files("segments")]
        videos = [str(p) for p in job.files("video")]
        now = {
            "id": job.id,
            "status": [job.status, job.progress, job.message],
            "segments": len(segments),
            "video": videos[0] if videos else None,
        }
        seen = seen or {}
        if now == seen:
            return *keep, seen
        fresh = seen.get("id") != job.id
        ahead = self.jobs.store.position(job.id) if job.status == "queued" else 0
        status = (
            status_html(job, ahead) if fresh or now["status"] != seen.get("status") else gr.skip()
        )
        if fresh or now["segments"] != seen.get("segments"):
            latest, gallery = (segments[-1] if segments else None), segments
        else:
            latest, gallery = gr.skip(), gr.skip()
        if fresh or now["video"] != seen.get("video"):
            final = download = now["video"]
        else:
            final = download = gr.skip()
        return status, latest, gallery, final, download, now

    def cancel_video(self, job_id: str | None):
        if not job_id:
            return gr.skip()
        job = self.jobs.cancel(job_id)
        return status_html(job)

    # -- images -----------------------------------------------------------------------

    @user_errors
    def image(
        self,
        prompt: str,
        count: float | None = None,
        model: str | None = None,
        seed: float | None = None,
        width: float | None = None,
        height: float | None = None,
        steps: float | None = None,
        guidance: float | None = None,
        negative_prompt: str | None = None,
    ):
        """Prompt → images (PNG with A1111-style parameters) and each one's parameters."""
        from pipelines.jobs import prepare_image

        model = check_model(model, "image", default_model("image", self.server_model))
        params = prepare_image(
            prompt, model=model, count=count or 1, seed=seed or 0, width=_given(width),
            height=_given(height), steps=_given(steps), guidance=_given(guidance, blank=-1),
            negative_prompt=negative_prompt or "", limits=self.limits,
        )  # fmt: skip
        job = self._finished(self._submit("image", params))
        images = [str(p) for p in job.files("images")]
        seeds = job.outputs.get("seeds", [])
        details = [
            {"file": Path(p).name, "seed": s, "parameters": text}
            for p, s, text in zip(images, seeds, job.outputs.get("parameters", []), strict=False)
        ]
        return [(p, f"seed {s}") for p, s in zip(images, seeds, strict=False)], details

    # -- thumbnails -------------------------------------------------------------------

    @user_errors
    def thumbnails(
        self,
        rows: str,
        rows_file: str | None = None,
        preset: str | None = None,
        variants: float | None = None,
        model: str | None = None,
        format: str | None = None,
    ):
        """CSV text (or an uploaded CSV/JSONL/TXT file) → thumbnails, a zip and a report."""
        from pipelines.jobs import check_upload, prepare_thumbnails

        model = check_model(model, "thumbnails", default_model("thumbnails", self.server_model))
        staged = None
        if rows_file:
            source = Path(rows_file)
            check_upload(source, ROWS_SUFFIXES, self.limits, "rows")
        else:
            text = rows or ""
            if not text.strip():
                raise ValueError("rows: paste CSV with a 'prompt' column, or upload a file")
            if len(text.encode("utf-8")) > self.limits.max_upload_bytes:
                raise ValueError(f"rows: over the limit of {self.limits.max_upload_bytes} bytes")
            # Each paste gets its own folder, and the file the name messages show: a line
            # such as "no rows in 'rows.csv'" names no internal staging file.
            staged = self.jobs.root / ".staging" / secrets.token_hex(8)
            staged.mkdir(parents=True)
            source = staged / "rows.csv"
            source.write_text(text, encoding="utf-8")
        try:
            params = prepare_thumbnails(
                source, model=model, preset=preset or "youtube", variants=variants or 1,
                format=format or "jpg", limits=self.limits,
            )  # fmt: skip
            job = self._submit("thumbnails", params, {params["input"]: source})
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
        job = self._finished(job)
        images = [str(p) for p in job.files("images")]
        archive = job.files("zip")
        failed = job.outputs.get("failed", [])
        report = f"{len(images)} thumbnail(s) from {job.outputs.get('rows', 0)} row(s)"
        if failed:
            report += "; skipped: " + "; ".join(f"line {n}: {why}" for n, why in failed)
        return images, str(archive[0]) if archive else None, report

    # -- jobs -------------------------------------------------------------------------

    @user_errors
    def list_jobs(self, limit: int = 50) -> list[dict]:
        """Every job, newest first: id, kind, status, progress, message, params, outputs."""
        if limit is None:
            limit = 50
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit != limit:
            raise ValueError(f"limit: must be a whole number from 1 to 1000 (got {limit!r})")
        return [j.as_dict() for j in self.jobs.list(int(max(1, min(limit, 1000))))]

    @user_errors
    def job(self, job_id: str) -> dict:
        """One job's row."""
        return self.jobs.get(_job_id(job_id)).as_dict()

    @user_errors
    def cancel(self, job_id: str) -> dict:
        """Cancel a job: a waiting one at once, a running one after its current step."""
        return self.jobs.cancel(_job_id(job_id)).as_dict()

    def history_rows(self) -> list[list[Any]]:
        return [
            [j.id, j.kind, j.status, f"{j.progress:.0%}", j.message, j.as_dict()["created"]]
            for j in self.jobs.list(HISTORY_ROWS)
        ]

    def tick_history(self, seen: list | None):
        rows = self.history_rows()
        return (gr.skip(), seen) if rows == seen else (rows, rows)

    def refresh_history(self, selected: str | None):
        ids = [j.id for j in self.jobs.list(HISTORY_ROWS)]
        pick = selected if selected in ids else (ids[0] if ids else None)
        return self.history_rows(), gr.update(choices=ids, value=pick)

    def show_job(self, job_id: str | None):
        try:
            job = self.jobs.get(job_id) if job_id else None
        except JobError:
            job = None
        if job is None:
            hidden = gr.update(value=None, visible=False)
            return "", None, hidden, hidden, None
        videos = job.files("video")
        images = [str(p) for p in job.files("images")]
        files = [str(p) for p in [*videos, *job.files("zip")]]
        return (
            status_html(job),
            job.as_dict(),
            gr.update(value=images, visible=bool(images)),
            gr.update(value=str(videos[0]) if videos else None, visible=bool(videos)),
            files or None,
        )

    @user_errors
    def act(self, action: str, job_id: str | None, segment: float | None, seed: float | None):
        if not job_id:
            raise ValueError("job: pick a job in the table first")
        if action == "resume":
            job = self.jobs.resume(job_id)
        elif action == "cancel":
            job = self.jobs.cancel(job_id)
        elif action == "rerun":
            job = self.jobs.rerun(job_id)
        elif action == "reroll":
            if segment is None:
                raise ValueError("segment: give the number of the segment to re-roll (from 0)")
            new_seed = _given(seed, blank=-1)
            job = self.jobs.reroll(
                job_id, int(segment), None if new_seed is None else int(new_seed)
            )
        else:
            raise ValueError(f"action: unknown {action!r}")
        gr.Info(f"Job {job.id}: {job.message or job.status}", duration=4)
        return job.id


def _job_id(value: Any) -> str:
    """A job id from an API call (which may send anything): text, or one line saying so."""
    if not isinstance(value, str):
        raise ValueError(f"job: no job {value!r:.60} (a job id is text, as /jobs lists them)")
    return value


def _number(label: str, info: str, value: int = 0, **kw) -> gr.Number:
    """A whole number whose "use the default" value (0, or -1 for seeds) says so in `info`."""
    return gr.Number(value=value, label=label, info=info, precision=0, **kw)


def _given(value: float | None, blank: float = 0) -> float | None:
    """None for the value a form sends for "default" (0; -1 or less for seeds)."""
    return None if value is None or value <= blank else value


def create_demo(
    jobs: JobManager,
    *,
    limits: Limits | None = None,
    model: str | None = None,
    max_waiting: int = MAX_WAITING_JOBS,
) -> gr.Blocks:
    """The page. `jobs` runs everything; `model` is the server's default preset."""
    limits = limits or jobs.limits
    app = Actions(jobs, limits, model, max_waiting)

    with Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {TITLE}\nStoryboards into long videos, one short generation at a time; "
            "images and batch thumbnails. Jobs run on the server: close the tab and come "
            "back, History keeps everything."
        )
        with gr.Tabs():
            # -- Video ---------------------------------------------------------------
            with gr.Tab("Video", id="video"):
                job_id = gr.BrowserState(None, storage_key="reelchain-video-job")
                seen = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=3):
                        shots = gr.Dataframe(
                            value=DEFAULT_SHOTS,
                            headers=SHOT_HEADERS,
                            datatype=["str", "number", "str"],
                            column_count=3,
                            type="array",
                            interactive=True,
                            label="Shots (transition: cut or crossfade into the next shot)",
                        )
                        storyboard = gr.Textbox(
                            label="Storyboard",
                            info="YAML or JSON; when not empty it is used instead of the table",
                            lines=6,
                            placeholder="shots:\n  - prompt: ...\n    seconds: 2",
                            elem_id="storyboard",
                        )
                        with gr.Row():
                            video_model = gr.Dropdown(
                                model_choices("video"),
                                value=default_model("video", model),
                                label="Model",
                            )
                            mode = gr.Dropdown(MODE_CHOICES, value="", label="Mode")
                        with gr.Row():
                            fps = _number("FPS", "0: the storyboard's, then the model's")
                            width = _number("Width", "0: the storyboard's, then the model's")
                            height = _number("Height", "0: the storyboard's, then the model's")
                            seed = _number("Seed", "-1: the storyboard's", value=-1)
                        audio = gr.File(
                            label="Music (optional)", file_types=list(AUDIO_SUFFIXES), height=150
                        )
                        with gr.Accordion("Advanced", open=False):
                            video_steps = _number(
                                "Steps", f"0: the model's; at most {limits.max_steps}"
                            )
                            video_negative = gr.Textbox(label="Negative prompt")
                        with gr.Row():
                            generate = gr.Button("Generate", variant="primary", elem_id="generate")
                            plan_button = gr.Button("Plan", elem_id="plan")
                            stop = gr.Button("Cancel", variant="stop")
                        plan_text = gr.Code(
                            label="Plan: what Generate would make", language=None,
                            interactive=False, elem_id="plan-text", lines=4, wrap_lines=True,
                            show_line_numbers=False,
                        )  # fmt: skip
                        gr.Examples([[EXAMPLE_STORYBOARD]], inputs=[storyboard], label="Examples")
                    with gr.Column(scale=2):
                        status = gr.HTML(status_html(None), elem_id="video-status")
                        final = gr.Video(
                            label="Video", buttons=["download"], height=360, elem_id="final-video"
                        )
                        download = gr.File(label="Download", height=90)
                        latest = gr.Video(
                            label="Latest segment", autoplay=True, loop=True, height=240
                        )
                        segments = gr.Gallery(label="Segments", columns=4, height=200)
                api_video = gr.File(label="video", visible=False)
                api_trigger = gr.Button(visible=False)

                video_inputs = [storyboard, video_model, mode, fps, width, height, seed,
                                video_steps, video_negative, audio]  # fmt: skip
                generate.click(
                    app.start_video,
                    [shots, *video_inputs],
                    [job_id, status, seen],
                    api_visibility="private",
                )
                plan_button.click(
                    app.plan_video, [shots, *video_inputs], [plan_text], api_visibility="private"
                )
                stop.click(app.cancel_video, [job_id], [status], api_visibility="private")
                timer = gr.Timer(POLL_SECONDS)
                timer.tick(
                    app.watch_video,
                    [job_id, seen],
                    [status, latest, segments, final, download, seen],
                    show_progress="hidden",
                    api_visibility="private",
                    concurrency_limit=None,
                )
                api_trigger.click(app.video, video_inputs, [api_video], api_name="video")
                api_plan = gr.Button(visible=False)
                api_plan.click(app.plan, video_inputs, [plan_text], api_name="plan")

            # -- Thumbnails ----------------------------------------------------------
            with gr.Tab("Thumbnails", id="thumbnails"):
                with gr.Row():
                    with gr.Column():
                        rows = gr.Textbox(
                            label="Rows",
                            info="CSV with a header: prompt, and optionally title, "
                            "negative_prompt, seed, preset",
                            lines=6,
                            placeholder=EXAMPLE_ROWS,
                        )
                        rows_file = gr.File(
                            label="Or upload a file (used instead of the text)",
                            file_types=list(ROWS_SUFFIXES),
                            height=120,
                        )
                        with gr.Row():
                            preset = gr.Dropdown(
                                THUMBNAIL_PRESETS, value="youtube", allow_custom_value=True,
                                label="Preset", info="or WxH, e.g. 1280x720",
                            )  # fmt: skip
                            variants = gr.Slider(
                                1, limits.max_count, value=1, step=1, label="Variants per row"
                            )
                        with gr.Accordion("Advanced", open=False):
                            thumb_model = gr.Dropdown(
                                model_choices("image"),
                                value=default_model("thumbnails", model),
                                label="Model",
                            )
                            fmt = gr.Radio(["jpg", "png"], value="jpg", label="Format")
                        make = gr.Button("Make thumbnails", variant="primary")
                        gr.Examples([[EXAMPLE_ROWS]], inputs=[rows], label="Examples")
                    with gr.Column():
                        thumbs = gr.Gallery(label="Thumbnails", columns=2)
                        thumbs_zip = gr.File(label="All thumbnails (zip)")
                        thumbs_report = gr.Markdown()
                make.click(
                    app.thumbnails,
                    [rows, rows_file, preset, variants, thumb_model, fmt],
                    [thumbs, thumbs_zip, thumbs_report],
                    api_name="thumbnails",
                )

            # -- Image ---------------------------------------------------------------
            with gr.Tab("Image", id="image"):
                with gr.Row():
                    with gr.Column():
                        prompt = gr.Textbox(label="Prompt", lines=2, elem_id="image-prompt")
                        with gr.Row():
                            count = gr.Slider(
                                1, limits.max_count, value=1, step=1, label="Variants"
                            )
                            image_model = gr.Dropdown(
                                model_choices("image"),
                                value=default_model("image", model),
                                label="Model",
                            )
                        with gr.Accordion("Advanced", open=False):
                            image_seed = gr.Number(value=0, label="Seed", precision=0)
                            with gr.Row():
                                image_width = _number("Width", "0: the model's")
                                image_height = _number("Height", "0: the model's")
                            with gr.Row():
                                image_steps = _number("Steps", "0: the model's")
                                guidance = gr.Number(
                                    value=-1, label="Guidance", info="-1: the model's"
                                )
                            image_negative = gr.Textbox(label="Negative prompt")
                        draw = gr.Button("Generate", variant="primary")
                        gr.Examples(
                            [["a red fox in fresh snow, golden hour"]], inputs=[prompt],
                            label="Examples",
                        )  # fmt: skip
                    with gr.Column():
                        gallery = gr.Gallery(label="Images", columns=2)
                        image_params = gr.JSON(label="Parameters")
                gr.on(
                    [prompt.submit, draw.click],
                    app.image,
                    [prompt, count, image_model, image_seed, image_width, image_height,
                     image_steps, guidance, image_negative],
                    [gallery, image_params],
                    api_name="image",
                )  # fmt: skip

            # -- History -------------------------------------------------------------
            with gr.Tab("History", id="history") as history_tab:
                with gr.Row():
                    refresh = gr.Button("Refresh", size="sm", scale=0, min_width=120)
                table = gr.Dataframe(
                    headers=HISTORY_HEADERS, type="array", interactive=False, label="Jobs",
                    max_height=320, elem_id="history-table",
                )  # fmt: skip
                with gr.Row():
                    picked = gr.Dropdown([], label="Job", scale=2)
                    segment_no = gr.Number(
                        value=0, label="Segment", info="from 0", precision=0, minimum=0
                    )
                    new_seed = _number("New seed", "-1: the segment's seed + 1", value=-1)
                with gr.Row():
                    resume = gr.Button("Resume")
                    reroll = gr.Button("Re-roll segment")
                    rerun = gr.Button("Re-run (same seed)")
                    cancel = gr.Button("Cancel", variant="stop")
                job_status = gr.HTML()
                with gr.Row():
                    job_video = gr.Video(
                        label="Video", buttons=["download"], height=360, visible=False
                    )
                    job_images = gr.Gallery(label="Images", columns=3, visible=False)
                job_files = gr.File(label="Files", file_count="multiple")
                job_details = gr.JSON(label="Parameters and outputs")

                job_view = [job_status, job_details, job_images, job_video, job_files]
                for trigger in (refresh.click, history_tab.select, demo.load):
                    trigger(
                        app.refresh_history, [picked], [table, picked], api_visibility="private"
                    )
                picked.change(app.show_job, [picked], job_view, api_visibility="private")
                history_seen = gr.State(None)
                gr.Timer(HISTORY_SECONDS).tick(
                    app.tick_history,
                    [history_seen],
                    [table, history_seen],
                    show_progress="hidden",
                    api_visibility="private",
                    concurrency_limit=None,
                )

                def pick_row(evt: gr.SelectData, data):
                    row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
                    return data[row][0] if data and row < len(data) else gr.skip()

                table.select(pick_row, [table], [picked], api_visibility="private")
                for button, action in ((resume, "resume"), (reroll, "reroll"),
                                       (rerun, "rerun"), (cancel, "cancel")):  # fmt: skip
                    button.click(
                        functools.partial(app.act, action),
                        [picked, segment_no, new_seed],
                        [picked],
                        api_visibility="private",
                    ).then(
                        app.refresh_history, [picked], [table, picked], api_visibility="private"
                    ).then(app.show_job, [picked], job_view, api_visibility="private")

        gr.api(app.list_jobs, api_name="jobs")
        gr.api(app.job, api_name="job")
        gr.api(app.cancel, api_name="cancel")
    return demo


# ---------------------------------------------------------------------------------------
# Starting the server


class Refused(Exception):
    """The server will not start as asked (exit code 2, one line)."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=f"{TITLE} web UI and API")
    p.add_argument("--model", default=None, help="default preset (tiny works offline)")
    p.add_argument("--host", default=None, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="or REELCHAIN_AUTH")
    p.add_argument("--share", action="store_true", help="a public gradio.live link (needs --auth)")
    p.add_argument(
        "--runs",
        type=Path,
        default=Path(os.environ.get("REELCHAIN_RUNS", DEFAULT_RUNS)),
        help="job folders and the job store (default: runs, or REELCHAIN_RUNS)",
    )
    add_runtime_flags(p)
    return p


def env_count(name: str, default: int, env: dict[str, str]) -> int:
    """A whole number ≥ 1 from an environment variable; `Refused` names the variable."""
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise Refused(f"{name}: must be a whole number ≥ 1 (got {raw!r})")
    return value


def runs_folder(path: Path) -> Path:
    """The runs folder, made if needed; `Refused` (one line) where it cannot be: a file, a
    path through a file, a read-only file system, no permission, an unknown `~user`."""
    from pipelines.files import check_writable_folder

    try:
        runs = path.expanduser()
    except RuntimeError:  # `~someone/` of a user this machine does not have
        raise Refused(
            f"--runs: no such user's home folder in '{path}'; write the full path"
        ) from None
    try:
        check_writable_folder(runs, "--runs")
        runs.mkdir(parents=True, exist_ok=True)
        return check_writable_folder(runs, "--runs").resolve()
    except ValueError as exc:
        raise Refused(str(exc)) from None
    except OSError as exc:
        raise Refused(f"--runs: cannot make {str(runs)!r} ({exc.strerror or exc})") from None


def exposure(args: argparse.Namespace, env: dict[str, str]) -> tuple[str, tuple[str, str] | None]:
    """The host to bind and the login, or `Refused`: a server reachable by others needs a
    password. On a Hugging Face Space the Space itself decides who may reach it."""
    on_space = bool(env.get("SPACE_ID"))
    host = args.host or (env.get("GRADIO_SERVER_NAME", "0.0.0.0") if on_space else DEFAULT_HOST)
    raw = args.auth if args.auth is not None else env.get("REELCHAIN_AUTH")
    auth = None
    if raw:
        user, sep, password = raw.partition(":")
        if not (sep and user and password):
            raise Refused("--auth: use USER:PASS (both non-empty)")
        auth = (user, password)
    exposed = args.share or host not in LOCAL_HOSTS
    if exposed and auth is None and not on_space:
        how = "--share" if args.share else f"--host {host}"
        raise Refused(
            f"{how} exposes the app to the network; give --auth USER:PASS "
            "(or set REELCHAIN_AUTH=user:pass), or bind 127.0.0.1"
        )
    return host, auth


def private_paths(runs: Path) -> list[str]:
    """Files in the runs folder that are not outputs: the job store, its lock, staging."""
    from pipelines.jobs import DB_NAME, LOCK_NAME

    names = [DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_NAME, ".staging"]
    return [str(runs / name) for name in names]


def main(argv: list[str] | None = None) -> int:
    """Start the server. Every refusal is one line: exit 2 for settings, 1 when the port
    or the runs folder is taken. Jobs start only once the web server is up."""
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    try:
        host, auth = exposure(args, env)
        if not 1 <= args.port <= 65535:
            raise Refused(f"--port: must be from 1 to 65535 (got {args.port})")
        if args.model:
            check_model(args.model, "video", args.model)
        limits = Limits.from_env()
        runtime = runtime_from_args(args)
        queue_size = env_count("REELCHAIN_QUEUE_SIZE", QUEUE_SIZE, env)
        max_waiting = env_count("REELCHAIN_MAX_WAITING_JOBS", MAX_WAITING_JOBS, env)
        runs = runs_folder(args.runs)
    except (Refused, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.share or host not in LOCAL_HOSTS:
        print(
            f"warning: {TITLE} is reachable from other machines "
            f"({'a share link' if args.share else host}); "
            "only people with the password can use it, and jobs run on this machine",
            file=sys.stderr,
        )
    os.environ.setdefault("GRADIO_TEMP_DIR", str(runs / ".gradio"))  # uploads stay in runs
    from pipelines.jobs import RUNNERS

    runners = {kind: on_gpu(fn, GPU_SECONDS[kind]) for kind, fn in RUNNERS.items()}
    try:
        jobs = JobManager(runs, runtimes=[runtime], limits=limits, runners=runners).lock()
    except (JobError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        demo = create_demo(jobs, limits=limits, model=args.model, max_waiting=max_waiting)
        if not serve(demo, args, host, auth, runs, limits, queue_size):
            return 1
        jobs.start()  # the server is up: now queued and interrupted jobs run

        def stop(signum: int, frame: Any) -> None:
            """Ctrl-C or SIGTERM: running jobs stop after their current step (and continue
            on the next start), waiting API calls return, then the web server closes."""
            jobs.stop()
            raise KeyboardInterrupt

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        demo.block_thread()
    finally:
        jobs.stop()
    return 0


def serve(demo: gr.Blocks, args, host: str, auth, runs: Path, limits: Limits, queue: int) -> bool:
    """Bind and start the web server without blocking; False (one line said) when the port
    cannot be bound (in use, or not on this machine)."""
    try:
        demo.queue(max_size=queue, default_concurrency_limit=CONCURRENCY).launch(
            server_name=host,
            server_port=args.port,
            auth=auth,
            share=args.share,
            allowed_paths=[str(runs)],
            blocked_paths=private_paths(runs),
            max_file_size=limits.max_upload_bytes,
            footer_links=["api"],
            ssr_mode=False,
            css=CSS,
            prevent_thread_lock=True,
        )
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(
            f"error: --port {args.port}: cannot serve on {host}:{args.port} ({reason}); stop "
            "what uses the port or choose another --port",
            file=sys.stderr,
        )
        demo.close()
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
