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
import contextlib
import dataclasses
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

from pipelines.jobs import (
    JobContext,
    JobManager,
    Runner,
    image_params,
    thumbnail_params,
    video_params,
    video_plan,
)
from pipelines.jobstore import Job, JobError, JobStore
from pipelines.overlay import THUMBNAIL_SIZES
from pipelines.requests import (
    AUDIO_SUFFIXES,
    LORA_SUFFIXES,
    PICTURE_SUFFIXES,
    ROWS_SUFFIXES,
    THUMBNAIL_FORMATS,
    ImageRequest,
    ThumbnailRequest,
    VideoRequest,
    check_audio,
    check_upload,
    fields_of,
    look_uploads,
    lora_uploads,
    renamed_loras,
)
from pipelines.settings import Limits, OneLineParser, Runtime, add_runtime_flags, runtime_from_args

TITLE = "Reelchain"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_RUNS = "runs"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
QUEUE_SIZE = 64  # requests waiting in Gradio's queue (API calls wait for their job)
CONCURRENCY = 16  # requests handled at once; the work itself runs one job per device
API_CONCURRENCY = 16  # blocking API calls (each waits for its job) handled at once
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
    return ["auto", "tiny", *names] if kind == "video" else ["tiny", *names]


def default_model(kind: str, server_model: str | None) -> str:
    """The server's `--model` where it suits the tab, else the tab's default: for video
    `auto` (the best preset this server's GPU runs; the tiny twins without one)."""
    if server_model and server_model in model_choices(kind):
        return server_model
    return "auto" if kind == "video" else "sd-turbo"


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
            and not isinstance(p.default, gr.Progress)  # Gradio's, not an input
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
    if getattr(block, "takes_number", False):
        if isinstance(value, str):
            return None  # the request's check names text that is no number
        return _number_problem(block, value)
    if _takes_text(block):
        return None if isinstance(value, str) else f"must be text (got {type(value).__name__})"
    if isinstance(block, gr.Dropdown | gr.Radio):
        allowed = [c[1] if isinstance(c, tuple | list) else c for c in block.choices or []]
        if allowed and value not in allowed:  # (no choices yet: filled in by the page)
            shown = ", ".join(str(a) or "''" for a in allowed)
            return f"{value!r:.60} is not in the list of choices ({shown})"
        return None
    if isinstance(block, gr.File | gr.Image):
        many = getattr(block, "file_count", "single") == "multiple"
        for item in value if many and isinstance(value, list) else [value]:
            problem = _upload_problem(block, item)
            if problem:
                return problem
    return None


def _upload_problem(block: Any, value: Any) -> str | None:
    """An uploaded file's problem (not an upload, or a type the input does not take)."""
    if not isinstance(value, dict):
        return "must be an uploaded file (gradio_client: handle_file(path))"
    name = str(value.get("orig_name") or value.get("path") or "")
    suffix = Path(name).suffix.lower()
    types = getattr(block, "file_types", None)
    if types and suffix not in types:
        return f"{suffix or 'no'} file type is not accepted (use {', '.join(types)})"
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


def number_box(**kw) -> gr.Textbox:
    """An optional number: a text box, since Gradio's number box cannot be empty (it shows
    and sends 0); empty text is the default. A function, not a gr.Textbox subclass: Gradio
    writes a .pyi stub beside the module of any component subclass."""
    box = gr.Textbox(placeholder=kw.pop("placeholder", "default"), **kw)
    box.takes_number = True
    return box


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


# The inputs of each kind, in the order the API takes them: a request's fields (the UI and
# the API offer the same ones), then the uploads the kind takes.
VIDEO_INPUTS = ["storyboard", *(n for n, _, s in fields_of(VideoRequest) if s.ui)]
IMAGE_INPUTS = [n for n, _, s in fields_of(ImageRequest) if s.ui or n == "prompt"]
THUMBNAIL_INPUTS = ["rows", "rows_file", *(n for n, _, s in fields_of(ThumbnailRequest) if s.ui)]


VIDEO_DOC = (
    "Storyboard (YAML or JSON) → the final video file. Options left out take the "
    "storyboard's values, then the model's. Music is an upload."
)
PLAN_DOC = (
    "What /video would make with these options — one line per segment and the "
    "totals — checked like /video, without running anything."
)
IMAGE_DOC = "Prompt → images (PNG with A1111-style parameters) and each one's parameters."
THUMBNAILS_DOC = "CSV text (or an uploaded CSV/JSONL/TXT file) → thumbnails, a zip and a report."


def endpoint(fn: Callable[[dict], Any], names: list[str], doc: str) -> Callable:
    """`fn(values)` as a function of named parameters (what the API lists and the input
    checks name), the first required, the others None for "the storyboard's, then the
    model's"; a progress tracker as Gradio gives one."""

    def call(*args, progress: gr.Progress = gr.Progress(), **kwargs):  # noqa: B008
        return fn(dict(zip(names, args, strict=False)) | kwargs, progress)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(n, kind, default=inspect.Parameter.empty if not i else None)
              for i, n in enumerate(names)]  # fmt: skip
    params.append(inspect.Parameter("progress", kind, default=gr.Progress()))
    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    call.__name__, call.__doc__ = fn.__name__, doc
    return call


def request_from(cls: type, values: dict, **fixed: Any):
    """A request from a form's or an API call's values ("" and None: the default). The
    page's number boxes are text, so they can be empty: their text becomes a number."""
    kinds = {name: kind for name, kind, _spec in fields_of(cls)}
    given = {}
    for name, value in values.items():
        if name in kinds and kinds[name] in (int, float) and isinstance(value, str):
            value = _number_text(value)
        if name in kinds and value not in (None, ""):
            given[name] = value
    return cls(**(given | fixed))


def _number_text(text: str) -> float | int | str:
    """A number box's text as a number; text that is no number stays text, for the
    request's check to name ("must be a number (got 'abc')")."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


@dataclass
class Actions:
    """What the page and the API can do; each handler checks a request, submits or reads
    jobs. Errors are the engine's one-line `ValueError`s, shown as `gr.Error`."""

    jobs: JobManager
    limits: Limits
    server_model: str | None = None
    max_waiting: int = MAX_WAITING_JOBS

    def __post_init__(self) -> None:
        """The API's endpoints, one per kind: a request's fields as named parameters."""
        self.video = endpoint(user_errors(self._video), VIDEO_INPUTS, VIDEO_DOC)
        self.plan = endpoint(user_errors(self._plan), VIDEO_INPUTS, PLAN_DOC)
        self.image = endpoint(user_errors(self._image), IMAGE_INPUTS, IMAGE_DOC)
        self.thumbnails = endpoint(user_errors(self._thumbnails), THUMBNAIL_INPUTS,
                                   THUMBNAILS_DOC)  # fmt: skip

    def _submit(self, kind: str, params: dict, files: dict | None = None) -> Job:
        if self.jobs.store.waiting() >= self.max_waiting:
            raise ValueError(f"queue: {self.max_waiting} jobs are waiting; try again later")
        return self.jobs.submit(kind, params, files)

    def _finished(self, job: Job, progress: gr.Progress | None = None) -> Job:
        """Wait for a job (it runs on the server whatever happens to this request),
        reporting its progress to the client as it goes."""
        while not job.finished:
            if progress is not None:
                progress(job.progress, desc=job.message or job.status)
            job = self.jobs.wait(job.id, timeout=POLL_SECONDS)
            if not job.finished and self.jobs.stopping:
                raise ValueError(
                    f"{job.kind}: the server is stopping; job {job.id} continues when it "
                    "starts again (see History)"
                )
        if job.status != "done":
            raise ValueError(f"{job.kind}: job {job.id} {job.status}: {job.message}")
        return job

    # -- video ------------------------------------------------------------------------

    def _video_request(self, values: dict) -> tuple[dict, dict]:
        """A video job's checked params and uploaded files (what Generate and Plan check)."""
        fallback = default_model("video", self.server_model)
        req = request_from(VideoRequest, values, audio=None, loras=None, images=None,
                           reference=None,
                           model=check_model(values.get("model"), "video", fallback))  # fmt: skip
        if values.get("image_model"):
            check_model(values["image_model"], "image", "")
        fields, names = look_uploads(values, req.lora_scale, self.limits)
        params = video_params(req, self.limits, (fields, names))
        files = {name: path for path, name in names.items()}
        if values.get("audio"):  # checked now, also by Plan: a file that is not music fails
            name = "audio" + check_audio(values["audio"], self.limits)
            params["audio"], files[name] = name, values["audio"]
        return params, files

    def _video(self, values: dict, progress) -> str:
        job = self._submit("video", *self._video_request(values))
        return str(self._finished(job, progress).files("video")[0])

    def _plan(self, values: dict, progress=None) -> str:
        params, _files = self._video_request(values)
        return video_plan(params, self.limits)

    @user_errors
    def start_video(self, shots, *inputs):
        """The page's Generate: submit and return at once; the timer follows the job."""
        job = self._submit("video", *self._video_request(_page_values(shots, inputs)))
        gr.Info(f"Job {job.id} submitted", duration=4)
        return job.id, status_html(job, self.jobs.store.position(job.id)), None

    @user_errors
    def plan_video(self, shots, *inputs):
        """The page's Plan button: the table or the storyboard text, as Generate takes them."""
        return self._plan(_page_values(shots, inputs))

    def watch_video(self, job_id: str | None, seen: dict | None):
        """Timer tick: update only what changed since the last tick."""
        keep = (gr.skip(),) * 5
        try:
            job = self.jobs.get(job_id) if job_id else None
        except JobError:
            job = None
        if job is None:
            return *keep, seen
        segments = [str(p) for p in job.files("segments")]
        videos = [str(p) for p in job.files("video")]
        now = {"id": job.id, "status": [job.status, job.progress, job.message],
               "segments": len(segments), "video": videos[0] if videos else None}  # fmt: skip
        seen = seen or {}
        if now == seen:
            return *keep, seen
        fresh = seen.get("id") != job.id

        def changed(key: str) -> bool:
            return fresh or now[key] != seen.get(key)

        ahead = self.jobs.store.position(job.id) if job.status == "queued" else 0
        status = status_html(job, ahead) if changed("status") else gr.skip()
        latest = (segments[-1] if segments else None) if changed("segments") else gr.skip()
        gallery = segments if changed("segments") else gr.skip()
        final = now["video"] if changed("video") else gr.skip()
        return status, latest, gallery, final, final, now

    def cancel_video(self, job_id: str | None):
        return status_html(self.jobs.cancel(job_id)) if job_id else gr.skip()

    # -- images -----------------------------------------------------------------------

    def _image(self, values: dict, progress):
        """Prompt → images (PNG with A1111-style parameters) and each one's parameters."""
        fallback = default_model("image", self.server_model)
        req = request_from(ImageRequest, values, loras=(),
                           model=check_model(values.get("model"), "image", fallback))  # fmt: skip
        loras, names = lora_uploads(values, req.lora_scale, self.limits)
        params = image_params(dataclasses.replace(req, loras=loras), self.limits)
        params["loras"] = renamed_loras(params["loras"], names)
        files = {name: path for path, name in names.items()}
        job = self._finished(self._submit("image", params, files), progress)
        images = [str(p) for p in job.files("images")]
        seeds = job.outputs.get("seeds", [])
        details = [
            {"file": Path(p).name, "seed": s, "parameters": text}
            for p, s, text in zip(images, seeds, job.outputs.get("parameters", []), strict=False)
        ]
        return [(p, f"seed {s}") for p, s in zip(images, seeds, strict=False)], details

    # -- thumbnails -------------------------------------------------------------------

    def _thumbnails(self, values: dict, progress):
        """CSV text (or an uploaded CSV/JSONL/TXT file) → thumbnails, a zip and a report."""
        fallback = default_model("thumbnails", self.server_model)
        req = request_from(ThumbnailRequest, values, loras=(),
                           model=check_model(values.get("model"), "thumbnails", fallback))  # fmt: skip
        loras, names = lora_uploads(values, req.lora_scale, self.limits)
        req = dataclasses.replace(req, loras=loras)
        with self._rows_file(values.get("rows"), values.get("rows_file")) as source:
            params = thumbnail_params(req, source, self.limits)
            params["loras"] = renamed_loras(params["loras"], names)
            files = {params["input"]: source} | {name: path for path, name in names.items()}
            job = self._submit("thumbnails", params, files)
        job = self._finished(job, progress)
        images = [str(p) for p in job.files("images")]
        archive = job.files("zip")
        failed = job.outputs.get("failed", [])
        report = f"{len(images)} thumbnail(s) from {job.outputs.get('rows', 0)} row(s)"
        if failed:
            report += "; skipped: " + "; ".join(f"line {n}: {why}" for n, why in failed)
        return images, str(archive[0]) if archive else None, report

    @contextlib.contextmanager
    def _rows_file(self, text: str | None, upload: str | None):
        """The rows to read: the upload, or the pasted text in a file of its own (named
        `rows.csv`, so a message names no internal staging file), removed afterwards."""
        if upload:
            check_upload(upload, ROWS_SUFFIXES, self.limits, "rows")
            yield Path(upload)
            return
        if not (text or "").strip():
            raise ValueError("rows: paste CSV with a 'prompt' column, or upload a file")
        if len(text.encode("utf-8")) > self.limits.max_upload_bytes:
            raise ValueError(f"rows: over the limit of {self.limits.max_upload_bytes} bytes")
        staged = self.jobs.root / ".staging" / secrets.token_hex(8)
        staged.mkdir(parents=True)
        try:
            (staged / "rows.csv").write_text(text, encoding="utf-8")
            yield staged / "rows.csv"
        finally:
            shutil.rmtree(staged, ignore_errors=True)

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
    def resume_job(self, job_id: str | None, segment=None, seed=None) -> str:
        return self._acted(self.jobs.resume(_picked(job_id)))

    @user_errors
    def rerun_job(self, job_id: str | None, segment=None, seed=None) -> str:
        return self._acted(self.jobs.rerun(_picked(job_id)))

    @user_errors
    def cancel_job(self, job_id: str | None, segment=None, seed=None) -> str:
        return self._acted(self.jobs.cancel(_picked(job_id)))

    @user_errors
    def reroll_job(self, job_id: str | None, segment: float | None, seed: str | None) -> str:
        if segment is None:
            raise ValueError("segment: give the number of the segment to re-roll (from 0)")
        new_seed = _number_text(seed) if isinstance(seed, str) and seed.strip() else None
        if new_seed is not None and not isinstance(new_seed, int):
            raise ValueError(f"seed: must be a whole number or empty (got {seed!r:.40})")
        return self._acted(self.jobs.reroll(_picked(job_id), int(segment), new_seed))

    def _acted(self, job: Job) -> str:
        gr.Info(f"Job {job.id}: {job.message or job.status}", duration=4)
        return job.id


def _page_values(shots, inputs: tuple) -> dict:
    """The page's video inputs by name; the table stands in for an empty storyboard box."""
    values = dict(zip(VIDEO_INPUTS, inputs, strict=True))
    if not (values["storyboard"] or "").strip():
        values["storyboard"] = shots_to_storyboard(shots)
    return values


def _picked(job_id: str | None) -> str:
    if not job_id:
        raise ValueError("job: pick a job in the table first")
    return job_id


def _job_id(value: Any) -> str:
    """A job id from an API call (which may send anything): text, or one line saying so."""
    if not isinstance(value, str):
        raise ValueError(f"job: no job {value!r:.60} (a job id is text, as /jobs lists them)")
    return value


def field_input(cls: type, name: str, **kw) -> gr.components.Component:
    """The page's input for a request field: its label and help from the field, empty (the
    storyboard's, then the model's) by default."""
    kinds = {n: (kind, spec) for n, kind, spec in fields_of(cls)}
    kind, spec = kinds[name]
    label = kw.pop("label", name.replace("_", " ").capitalize())
    info = kw.pop("info", f"{spec.help}; empty: the default")
    if spec.choices:  # "" (not None, which a dropdown shows as blank): the default
        return gr.Dropdown([("from the storyboard", ""), *spec.choices], value="", label=label,
                           info=spec.help, **kw)  # fmt: skip
    if kind in (int, float):  # text, not gr.Number: a Number box cannot be empty
        return number_box(value="", label=label, info=info, placeholder="default", **kw)
    return gr.Textbox(label=label, info=spec.help, **kw)


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
            video_tab(app, model)
            thumbnails_tab(app, model)
            image_tab(app, model)
            history_tab(app, demo)
        gr.api(app.list_jobs, api_name="jobs")
        gr.api(app.job, api_name="job")
        gr.api(app.cancel, api_name="cancel")
    return demo


# The blocking API endpoints wait for their job: their own concurrency group, so waiting
# calls never take the slots the page's clicks need.
API = dict(concurrency_id="api", concurrency_limit=API_CONCURRENCY)


def video_tab(app: Actions, model: str | None) -> None:
    """Shots (a table or storyboard text), the request's options, Generate, Plan, Cancel;
    the job's status, segments as they finish and the video."""
    with gr.Tab("Video", id="video"):
        job_id = gr.BrowserState(None, storage_key="reelchain-video-job")
        seen = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                shots, inputs = _video_inputs(model, app.limits)
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    plan_button = gr.Button("Plan", elem_id="plan")
                    stop = gr.Button("Cancel", variant="stop")
                plan_text = gr.Code(
                    label="Plan: what Generate would make", language=None, interactive=False,
                    elem_id="plan-text", lines=4, wrap_lines=True, show_line_numbers=False,
                )  # fmt: skip
                gr.Examples([[EXAMPLE_STORYBOARD]], inputs=[inputs[0]], label="Examples")
            with gr.Column(scale=2):
                status = gr.HTML(status_html(None), elem_id="video-status")
                final = gr.Video(label="Video", buttons=["download"], height=360,
                                 elem_id="final-video")  # fmt: skip
                download = gr.File(label="Download", height=90)
                latest = gr.Video(label="Latest segment", autoplay=True, loop=True, height=240)
                segments = gr.Gallery(label="Segments", columns=4, height=200)
        private = dict(api_visibility="private")
        generate.click(app.start_video, [shots, *inputs], [job_id, status, seen], **private)
        plan_button.click(app.plan_video, [shots, *inputs], [plan_text], **private)
        stop.click(app.cancel_video, [job_id], [status], **private)
        gr.Timer(POLL_SECONDS).tick(
            app.watch_video, [job_id, seen], [status, latest, segments, final, download, seen],
            show_progress="hidden", concurrency_limit=None, **private,
        )  # fmt: skip
        hidden = gr.Button(visible=False)
        hidden.click(app.video, inputs, [gr.File(visible=False)], api_name="video", **API)
        hidden.click(app.plan, inputs, [plan_text], api_name="plan", **API)


def _video_inputs(model: str | None, limits: Limits) -> tuple[gr.Dataframe, list]:
    """The shots table and the video request's inputs, in `VIDEO_INPUTS` order."""
    shots = gr.Dataframe(
        value=DEFAULT_SHOTS, headers=SHOT_HEADERS, datatype=["str", "number", "str"],
        column_count=3, type="array", interactive=True,
        label="Shots (transition: cut or crossfade into the next shot)",
    )  # fmt: skip
    w = {"storyboard": gr.Textbox(
        label="Storyboard", info="YAML or JSON; when not empty it is used instead of the table",
        lines=6, placeholder="shots:\n  - prompt: ...\n    seconds: 2", elem_id="storyboard")}  # fmt: skip
    with gr.Row():
        w["model"] = gr.Dropdown(model_choices("video"), value=default_model("video", model),
                                 label="Model")  # fmt: skip
        w["mode"] = gr.Dropdown(MODE_CHOICES, value="", label="Mode")
        w["image_model"] = gr.Dropdown([("default", ""), *model_choices("image")], value="",
                                       label="Keyframe model")  # fmt: skip
    with gr.Row():
        for name in ("fps", "width", "height", "seed"):
            w[name] = field_input(VideoRequest, name)
    w["audio"] = gr.File(label="Music (optional)", file_types=list(AUDIO_SUFFIXES), height=150)
    with gr.Accordion("Look: start pictures, one look across shots, LoRAs", open=False):
        w["images"] = gr.File(
            label="Start pictures (a number in the name picks the shot: 2.png → shot 2; "
            "otherwise shots 1, 2, … in order)", file_count="multiple",
            file_types=list(PICTURE_SUFFIXES), height=150)  # fmt: skip
        with gr.Row():
            w["continuity"] = field_input(VideoRequest, "continuity")
            w["continuity_strength"] = field_input(VideoRequest, "continuity_strength")
        w["reference"] = gr.Image(label="Reference picture (continuity: reference)",
                                  type="filepath", height=160)  # fmt: skip
        with gr.Row():
            w["loras"] = gr.File(label="LoRAs for the keyframe model (.safetensors)",
                                 file_count="multiple", file_types=list(LORA_SUFFIXES),
                                 height=150)  # fmt: skip
            w["lora_scale"] = field_input(VideoRequest, "lora_scale", label="LoRA scale")
    with gr.Accordion("Advanced", open=False):
        for name in VIDEO_INPUTS:
            if name not in w:  # every other field of the request: steps, clip frames, ...
                w[name] = field_input(VideoRequest, name)
    return shots, [w[name] for name in VIDEO_INPUTS]


def thumbnails_tab(app: Actions, model: str | None) -> None:
    """CSV text or an uploaded rows file → thumbnails, a zip and a report."""
    with gr.Tab("Thumbnails", id="thumbnails"), gr.Row():
        with gr.Column():
            w = {"rows": gr.Textbox(
                label="Rows", lines=6, placeholder=EXAMPLE_ROWS,
                info="CSV with a header: prompt, and optionally title, negative_prompt, seed, "
                "preset"),
                "rows_file": gr.File(label="Or upload a file (used instead of the text)",
                                     file_types=list(ROWS_SUFFIXES), height=120)}  # fmt: skip
            with gr.Row():
                w["preset"] = gr.Dropdown(list(THUMBNAIL_SIZES), value="youtube", label="Preset",
                                          allow_custom_value=True, info="or WxH, e.g. 1280x720")  # fmt: skip
                w["variants"] = gr.Slider(1, app.limits.max_count, value=1, step=1,
                                          label="Variants per row")  # fmt: skip
            with gr.Accordion("Advanced", open=False):
                w["model"] = gr.Dropdown(model_choices("image"), label="Model",
                                         value=default_model("thumbnails", model))  # fmt: skip
                w["format"] = gr.Radio(list(THUMBNAIL_FORMATS), value="jpg", label="Format")
                _lora_inputs(w, ThumbnailRequest)
            make = gr.Button("Make thumbnails", variant="primary")
            gr.Examples([[EXAMPLE_ROWS]], inputs=[w["rows"]], label="Examples")
        with gr.Column():
            outputs = [gr.Gallery(label="Thumbnails", columns=2),
                       gr.File(label="All thumbnails (zip)"), gr.Markdown()]  # fmt: skip
    make.click(app.thumbnails, [w[n] for n in THUMBNAIL_INPUTS], outputs, api_name="thumbnails",
               **API)  # fmt: skip


def _lora_inputs(w: dict, cls: type) -> None:
    """LoRA uploads and their scale, for the image model of a tab's request."""
    with gr.Row():
        w["loras"] = gr.File(label="LoRAs (.safetensors)", file_count="multiple",
                             file_types=list(LORA_SUFFIXES), height=150)  # fmt: skip
        w["lora_scale"] = field_input(cls, "lora_scale", label="LoRA scale")


def image_tab(app: Actions, model: str | None) -> None:
    """Prompt → images, with the request's options."""
    with gr.Tab("Image", id="image"), gr.Row():
        with gr.Column():
            w = {"prompt": gr.Textbox(label="Prompt", lines=2, elem_id="image-prompt")}
            with gr.Row():
                w["count"] = gr.Slider(1, app.limits.max_count, value=1, step=1, label="Variants")
                w["model"] = gr.Dropdown(model_choices("image"), label="Model",
                                         value=default_model("image", model))  # fmt: skip
            with gr.Accordion("Advanced", open=False):
                w["seed"] = gr.Number(value=0, label="Seed", precision=0)
                _lora_inputs(w, ImageRequest)
                for name in IMAGE_INPUTS:
                    if name not in w:  # size, steps, guidance, negative prompt, ...
                        w[name] = field_input(ImageRequest, name)
            draw = gr.Button("Generate", variant="primary")
            gr.Examples([["a red fox in fresh snow, golden hour"]], inputs=[w["prompt"]],
                        label="Examples")  # fmt: skip
        with gr.Column():
            outputs = [gr.Gallery(label="Images", columns=2), gr.JSON(label="Parameters")]
    gr.on([w["prompt"].submit, draw.click], app.image, [w[n] for n in IMAGE_INPUTS], outputs,
          api_name="image", **API)  # fmt: skip


def history_tab(app: Actions, demo: gr.Blocks) -> None:
    """Every job of the store; one picked: its files, and resume, re-roll, re-run, cancel."""
    private = dict(api_visibility="private")
    with gr.Tab("History", id="history") as tab:
        with gr.Row():
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=120)
        table = gr.Dataframe(headers=HISTORY_HEADERS, type="array", interactive=False,
                             label="Jobs", max_height=320, elem_id="history-table")  # fmt: skip
        with gr.Row():
            picked = gr.Dropdown([], label="Job", scale=2)
            segment_no = gr.Number(value=0, label="Segment", info="from 0", precision=0, minimum=0)
            new_seed = number_box(label="New seed", placeholder="segment's seed + 1",
                                  info="empty: the segment's seed + 1")  # fmt: skip
        with gr.Row():
            buttons = {fn: gr.Button(label) for fn, label in (
                (app.resume_job, "Resume"), (app.reroll_job, "Re-roll segment"),
                (app.rerun_job, "Re-run (same seed)"))}  # fmt: skip
            buttons[app.cancel_job] = gr.Button("Cancel", variant="stop")
        job_view = [gr.HTML(), gr.JSON(label="Parameters and outputs")]
        with gr.Row():
            job_view[2:2] = [gr.Gallery(label="Images", columns=3, visible=False),
                             gr.Video(label="Video", buttons=["download"], height=360,
                                      visible=False)]  # fmt: skip
        job_view.append(gr.File(label="Files", file_count="multiple"))
    status, details, images, video, files = job_view
    view = [status, details, images, video, files]
    for trigger in (refresh.click, tab.select, demo.load):
        trigger(app.refresh_history, [picked], [table, picked], **private)
    picked.change(app.show_job, [picked], view, **private)
    seen = gr.State(None)
    gr.Timer(HISTORY_SECONDS).tick(app.tick_history, [seen], [table, seen], concurrency_limit=None,
                                   show_progress="hidden", **private)  # fmt: skip

    def pick_row(evt: gr.SelectData, data):
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        return data[row][0] if data and row < len(data) else gr.skip()

    table.select(pick_row, [table], [picked], **private)
    for fn, button in buttons.items():
        button.click(fn, [picked, segment_no, new_seed], [picked], **private).then(
            app.refresh_history, [picked], [table, picked], **private
        ).then(app.show_job, [picked], view, **private)


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
    from pipelines.jobs import LOCK_NAME
    from pipelines.jobstore import DB_NAME

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
        if runtime.ray:  # the workers start now: a bad address or count is refused here
            from pipelines.scale import pool_for

            pool_for(runtime)
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
