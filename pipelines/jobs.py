"""Jobs that belong to the server, not to a browser tab.

A long video must survive a closed tab, a dropped API client and a restarted server. So a
face (the web UI, an API call) never runs the engine itself: it checks the request, then
*submits a job*: a row in a SQLite store in the runs folder. One worker thread per device
takes queued jobs in order and runs them; the page and the API only read the store.

The store and its rows are `pipelines.jobstore`; this module runs them.

Status moves `queued → running → done | failed | cancelled`. Attempts are counted when a
job starts. A server that starts and finds a job `running` was stopped under it (killed,
crashed, out of memory): the job becomes `interrupted` and is taken again in order; a
video job continues from its run folder's last finished segment (`chain.resume_video`).
A job that has started `MAX_ATTEMPTS` times and still not finished is marked failed rather
than crashing the server in a loop. A `ValueError` from the engine is a problem with the
input: the job fails at once with its message. Cancelling sets the job's cancel event; the
engine stops after the current step and keeps finished segments, so it can be resumed.

Jobs that can share a run do: a worker that takes an image job also takes the waiting
image jobs with the same model, size, steps and guidance (and no init image), up to
`Limits.max_batch` images in all, and makes all their images in one `images.generate`
call, so two people asking at once share the device's batches. Each job still has its
own folder, outputs, attempts, cancel and status; its images are the ones it would have
made alone (each image has its own seed).

Requests (`pipelines.requests`) are checked before a job is submitted (`video_params`,
`image_params`, `thumbnail_params`), against `Limits`, so a face can refuse a bad request
at once with the engine's own one-line message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import atomic_path, read_json
from .jobstore import MAX_ATTEMPTS, WAITING, Job, JobError, JobStore
from .requests import (
    ROWS_SUFFIXES,
    ImageRequest,
    ThumbnailRequest,
    VideoRequest,
    check_upload,
    loras_in_folder,
)
from .settings import Limits, Runtime
from .storyboard import map_look_files

if TYPE_CHECKING:
    from .images import ImageOrder

log = logging.getLogger(__name__)

LOCK_NAME = ".jobs.lock"
POLL_SECONDS = 0.5  # an idle worker looks at the store this often (and on every submit)

# ---------------------------------------------------------------------------------------
# Running jobs


@dataclass
class JobContext:
    """What a runner gets: its job, where to report, how it runs, and its cancel event."""

    job: Job
    store: JobStore
    runtime: Runtime
    limits: Limits
    cancel: threading.Event
    outputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outputs = dict(self.job.outputs)

    def report(
        self, progress: float | None = None, message: str | None = None, **outputs: Any
    ) -> None:
        self.outputs.update(outputs)
        changes: dict[str, Any] = {"outputs": self.outputs}
        if progress is not None:
            changes["progress"] = max(0.0, min(1.0, float(progress)))
        if message is not None:
            changes["message"] = message
        self.store.update(self.job.id, **changes)


Runner = Callable[[JobContext], dict[str, Any]]


def _rel(path: Path, root: Path) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


def run_video(ctx: JobContext) -> dict[str, Any]:
    """A new run, or a resume of the run folder (after a stop, a cancel, or a re-roll)."""
    from .chain import make_request, resume_video

    job, root = ctx.job, ctx.job.run_dir
    params = job.params
    req = VideoRequest.from_json(dict(params))
    if req.audio:  # the upload, under the name the server gave it in the job's folder
        req = dataclasses.replace(req, audio=str(root / req.audio))
    in_folder = map_look_files(req.storyboard, lambda name: str(root / Path(name).name))
    req = dataclasses.replace(req, storyboard=in_folder)
    opts = req.options(ctx.limits)

    def on_segment(segment, path) -> None:
        segments = read_json(root / "manifest.json")["segments"]
        done = [s for s in segments if s["status"] == "done" and s.get("file")]
        ctx.report(
            progress=0.05 + 0.9 * len(done) / len(segments),
            message=f"segment {segment.index + 1} of {len(segments)} finished",
            segments=[s["file"] for s in sorted(done, key=lambda s: s["index"])],
        )

    common = dict(runtime=ctx.runtime, cancel=ctx.cancel, on_segment=on_segment)
    reroll = params.get("reroll")
    if reroll:
        ctx.report(message=f"re-rolling segment {reroll['segment']}")
        result = resume_video(
            root, reroll=reroll["segment"], seed=reroll["seed"], opts=opts, **common
        )
        ctx.store.update(job.id, params={k: v for k, v in params.items() if k != "reroll"})
    elif (root / "manifest.json").is_file():
        ctx.report(message="continuing from the last finished segment")
        result = resume_video(root, opts=opts, **common)
    else:
        ctx.report(progress=0.0, message="making keyframes")
        result = make_request(req, root, ctx.limits, **common)
    segments = read_json(root / "manifest.json")["segments"]
    return {
        "video": _rel(result.video, root),
        "poster": _rel(result.poster, root) if result.poster else None,
        "segments": [s["file"] for s in segments if s.get("file")],
        "frames": result.frames,
        "fps": result.fps,
        "width": result.width,
        "height": result.height,
        "generated": result.generated,
    }


class JobCancelled(RuntimeError):
    """Every job of a group was cancelled: the call stops after its current batch."""


def image_order(params: Mapping[str, Any], root: Path, limits: Limits) -> ImageOrder:
    """An image job's params (a checked request's JSON) as an `ImageOrder` for its folder."""
    from .images import plan_images

    req = ImageRequest.from_json(loras_in_folder(dict(params), root))
    return plan_images(req.checked(limits), root / "images")


def image_group(params: Mapping[str, Any], limits: Limits) -> tuple[tuple, int] | None:
    """What decides which image jobs share a call: the `ImageOrder.batch_key` (model,
    size, steps, guidance, no init image) and how many images the job makes. None when
    the params do not resolve: such a job runs alone and fails there with its message."""
    try:
        order = image_order(params, Path(), limits)
    except Exception:
        return None
    key = order.batch_key
    return None if key is None else (key, len(order.items))


def run_images(ctxs: Sequence[JobContext]) -> list[dict[str, Any] | Exception]:
    """Image jobs with the same `image_group` key, through one `images.generate` call (the
    planner batches their images together); each job's images, sidecars and outputs go to
    its own folder. One outcome per job: its outputs, or the exception that ended it.

    A job cancelled before the call is left out of it; one cancelled during the call has
    the rest of its images discarded. When every job is cancelled the call stops after its
    current batch. An exception from the call itself ends every job of the group.
    """
    from .batching import Planner
    from .images import write_image
    from .scale import maker_for

    outcomes: list[dict[str, Any] | Exception | None] = [None] * len(ctxs)
    orders: dict[int, ImageOrder] = {}
    for k, ctx in enumerate(ctxs):
        if ctx.cancel.is_set():
            outcomes[k] = JobCancelled("cancelled")
            continue
        try:
            orders[k] = image_order(ctx.job.params, ctx.job.run_dir, ctx.limits)
        except ValueError as exc:
            outcomes[k] = exc
    if not orders:
        return outcomes  # type: ignore[return-value]
    first = ctxs[next(iter(orders))]
    runtime, limits = first.runtime, first.limits
    flat = [(k, i) for k, order in orders.items() for i in range(len(order.items))]
    results: dict[int, list] = {k: [None] * len(order.items) for k, order in orders.items()}
    others = len(orders) - 1
    for k, order in orders.items():
        shared = f", batched with {others} other job(s)" if others else ""
        ctxs[k].report(progress=0.05, message=f"making {len(order.items)} image(s){shared}")
    maker = maker_for(orders[next(iter(orders))].ref, "image", runtime)

    def deliver(n: int, arr) -> None:
        k, i = flat[n]
        ctx = ctxs[k]
        if not ctx.cancel.is_set():
            results[k][i] = write_image(orders[k], i, arr, maker)
            made = sum(r is not None for r in results[k])
            ctx.report(progress=0.05 + 0.9 * made / len(results[k]))
        if all(ctxs[j].cancel.is_set() for j in orders):
            raise JobCancelled("cancelled")

    maker.run(
        [orders[k].items[i] for k, i in flat],
        planner=Planner(runtime, max_batch=limits.max_batch),
        on_result=deliver,
    )
    for k in orders:
        if ctxs[k].cancel.is_set():
            outcomes[k] = JobCancelled("cancelled")
            continue
        root = ctxs[k].job.run_dir
        outcomes[k] = {
            "images": [_rel(r.path, root) for r in results[k]],
            "parameters": [r.parameters for r in results[k]],
            "seeds": [r.seed for r in results[k]],
        }
    return outcomes  # type: ignore[return-value]


def run_image(ctx: JobContext) -> dict[str, Any]:
    """One image job on its own (a group of one)."""
    (outcome,) = run_images([ctx])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def run_thumbnails(ctx: JobContext) -> dict[str, Any]:
    from .thumbnails import make_thumbnails

    p, root = ctx.job.params, ctx.job.run_dir
    opts = ThumbnailRequest.from_json(loras_in_folder(dict(p), root)).options(ctx.limits)
    ctx.report(progress=0.05, message="making thumbnails")
    out = root / "thumbnails"
    report = make_thumbnails(
        root / p["input"], out, opts, runtime=ctx.runtime, say=lambda line: log.info(line)
    )
    if not report.files:
        reasons = "; ".join(f"line {n}: {why}" for n, why in report.failed[:3])
        raise ValueError(f"input: no thumbnail was made ({reasons or 'no rows'})")
    archive = root / "thumbnails.zip"
    with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for path in [*report.files, report.manifest]:
            if path is not None:
                zf.write(path, Path(path).name)
    return {
        "images": [_rel(f, root) for f in report.files],
        "zip": _rel(archive, root),
        "manifest": _rel(report.manifest, root) if report.manifest else None,
        "contact": _rel(report.contact, root) if report.contact else None,
        "failed": [[n, why] for n, why in report.failed],
        "rows": report.rows,
    }


RUNNERS: dict[str, Runner] = {"video": run_video, "image": run_image, "thumbnails": run_thumbnails}


@dataclass(frozen=True)
class Grouping:
    """How waiting jobs of one kind share a run: `key(params, limits)` gives a job's group
    and size (None: it runs alone); `run` takes the group's contexts, one outcome each."""

    key: Callable[[Mapping[str, Any], Limits], tuple[Any, int] | None]
    run: Callable[[Sequence[JobContext]], list[dict[str, Any] | Exception]]


GROUPINGS: dict[str, Grouping] = {"image": Grouping(image_group, run_images)}


def summary(outputs: Mapping[str, Any]) -> str:
    """What a finished job made, in a few words (the History message)."""

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    if outputs.get("video"):
        fps = outputs.get("fps") or 0
        segments = count(len(outputs.get("segments", [])), "segment")
        return f"{outputs.get('frames')} frames at {fps:g} fps, {segments}"
    if outputs.get("zip"):
        failed = len(outputs.get("failed", []))
        skipped = f", {count(failed, 'row')} skipped" if failed else ""
        return count(len(outputs.get("images", [])), "thumbnail") + skipped
    if outputs.get("images"):
        return count(len(outputs["images"]), "image")
    return "done"


class JobManager:
    """The store plus one worker thread per device (a `Runtime` each).

    `start()` marks jobs left `running` as interrupted, then starts the workers; they take
    waiting jobs oldest first. Only one server may use a runs folder at a time.
    """

    def __init__(
        self,
        runs: str | Path,
        *,
        runtimes: Sequence[Runtime] | None = None,
        limits: Limits | None = None,
        runners: Mapping[str, Runner] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.store = JobStore(runs)
        self.runtimes = list(runtimes or [Runtime()])
        self.limits = limits or Limits()
        self.runners = dict(RUNNERS if runners is None else runners)
        self.max_attempts = max_attempts
        # Jobs share a run only where the stock runner runs them (not a replaced runner).
        self._groupings = {
            kind: g for kind, g in GROUPINGS.items() if self.runners.get(kind) is RUNNERS[kind]
        }
        self._cancels: dict[str, threading.Event] = {}
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock_file = None

    @property
    def root(self) -> Path:
        return self.store.root

    def lock(self) -> JobManager:
        """Claim the runs folder for this server (`JobError` while another server has it);
        `start` does it too. A server locks before it binds its port and starts only once
        the port is bound, so a server that cannot come up never runs a queued job."""
        if self._lock_file is None:
            self._lock_runs_folder()
        return self

    def start(self) -> JobManager:
        self.lock()
        for job_id in self.store.recover():
            log.warning("job %s was interrupted; it will continue", job_id)
        self._stop.clear()
        for i, runtime in enumerate(self.runtimes):
            t = threading.Thread(
                target=self._work, args=(runtime,), name=f"reelchain-worker-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float | None = 10) -> None:
        """Stop taking jobs; a running job is asked to stop (cancel) and left interrupted."""
        self._stop.set()
        for event in list(self._cancels.values()):
            event.set()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _lock_runs_folder(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: one server per folder is up to the operator
            return
        fh = open(self.root / LOCK_NAME, "a")  # noqa: SIM115 (held for the server's life)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise JobError(
                f"runs: another server is using {self.root}; stop it or choose another --runs"
            ) from None
        self._lock_file = fh

    # -- submitting and changing jobs ----------------------------------------------------

    def submit(
        self,
        kind: str,
        params: Mapping[str, Any],
        files: Mapping[str, bytes | str | Path] | None = None,
    ) -> Job:
        if kind not in self.runners:
            raise ValueError(f"kind: this server does not run {kind!r} jobs")
        job = self.store.add(kind, params, files)
        self._notify()
        return job

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def list(self, limit: int = 200, kind: str | None = None) -> list[Job]:
        return self.store.list(limit, kind)

    def cancel(self, job_id: str) -> Job:
        """A waiting job is cancelled at once; a running one stops after its current step."""
        job = self.store.get(job_id)
        if self.store.move(job_id, WAITING, "cancelled", message="cancelled before it started"):
            return self.store.get(job_id)
        if job.status == "running":
            # The worker may not have set up the job's event yet: make it here, it takes it.
            self._cancels.setdefault(job_id, threading.Event()).set()
            self.store.update(job_id, message="cancelling after the current step")
        return self.store.get(job_id)

    def resume(self, job_id: str) -> Job:
        """Queue a stopped job again (attempts start over); a video continues its run."""
        self._cancels.pop(job_id, None)  # a cancel of its last run is not for the next one
        job = self.store.get(job_id)
        if not self.store.move(
            job_id, ("failed", "cancelled", "interrupted"), "queued",
            attempts=0, message="queued to continue",
        ):  # fmt: skip
            raise JobError(f"resume: job {job_id} is {job.status}; only a stopped job resumes")
        queued = self.store.get(job_id)  # as queued: the worker may take it at once
        self._notify()
        return queued

    def reroll(self, job_id: str, segment: int, seed: int | None = None) -> Job:
        """Make one segment of a video again with a new seed (and what continues from it),
        keep every other segment, and stitch again. The seed is fixed now, so a reroll that
        is interrupted and taken again gives the same frames."""
        job = self.store.get(job_id)
        if job.kind != "video":
            raise JobError(f"reroll: job {job_id} is not a video")
        manifest_path = job.run_dir / "manifest.json"
        if not manifest_path.is_file():
            raise JobError(f"reroll: job {job_id} has no finished segments yet")
        segments = read_json(manifest_path)["segments"]
        if not (isinstance(segment, int) and 0 <= segment < len(segments)):
            raise ValueError(f"segment: must be from 0 to {len(segments) - 1} (got {segment})")
        if seed is None:
            seed = (segments[segment]["seed"] + 1) % 2**32
        if not (isinstance(seed, int) and 0 <= seed < 2**32):
            raise ValueError(f"seed: must be from 0 to {2**32 - 1} (got {seed})")
        params = dict(job.params)
        params["reroll"] = {"segment": segment, "seed": seed}
        params["rerolls"] = [*params.get("rerolls", []), params["reroll"]]
        if not self.store.move(
            job_id, ("done", "failed", "cancelled", "interrupted"), "queued",
            attempts=0, progress=0.0, params=params,
            message=f"queued to re-roll segment {segment}",
        ):  # fmt: skip
            raise JobError(f"reroll: job {job_id} is {job.status}; wait until it stops")
        queued = self.store.get(job_id)  # as queued: the worker may take it at once
        self._notify()
        return queued

    def rerun(self, job_id: str) -> Job:
        """A new job with the same parameters and inputs (same seeds: the same result)."""
        job = self.store.get(job_id)
        params = {k: v for k, v in job.params.items() if k not in ("reroll", "rerolls")}
        names = [params[key] for key in ("audio", "input") if params.get(key)]
        if job.kind == "video":
            names += look_files(params)
        names += [spec.rpartition(":")[0] for spec in params.get("loras") or ()]
        files = {name: job.run_dir / name for name in names if (job.run_dir / name).is_file()}
        return self.submit(job.kind, params, files)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.25) -> Job:
        """Block until the job is done, failed or cancelled, `timeout` passes, or this
        server stops (the job then continues when it starts again)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            if job.finished or (end is not None and time.monotonic() >= end):
                return job
            if self._stop.is_set():
                time.sleep(poll)  # let a job that is being stopped record it
                return self.store.get(job_id)
            time.sleep(poll)

    @property
    def stopping(self) -> bool:
        """Whether this server is stopping (waiting API calls return; jobs continue later)."""
        return self._stop.is_set()

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- the worker ----------------------------------------------------------------------

    def _work(self, runtime: Runtime) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim(self.max_attempts)
            except sqlite3.Error:
                log.exception("job store: cannot take a job")
                job = None
            if job is None:
                with self._wake:
                    self._wake.wait(POLL_SECONDS)
                continue
            if job.kind not in self._groupings:
                self._run(job, runtime)
                continue
            try:
                group = [job, *self._take_like(job)]
            except Exception:  # noqa: BLE001 - the worker lives on; the job runs alone
                log.exception("cannot take jobs to run with %s", job.id)
                group = [job]
            self._run_group(group, runtime)

    def _take_like(self, job: Job) -> list[Job]:
        """The waiting jobs that can share `job`'s run (same kind and group key), oldest
        first, as many as fit in one batch (`Limits.max_batch` items in all), taken."""
        grouping = self._groupings[job.kind]
        found = grouping.key(job.params, self.limits)
        if found is None:
            return []
        key, size = found
        room = self.limits.max_batch - size
        taken: list[Job] = []
        for other in self.store.waiting_jobs(job.kind, self.max_attempts):
            if room <= 0:
                break
            if other.id == job.id:
                continue
            theirs = grouping.key(other.params, self.limits)
            if theirs is None or theirs[0] != key or theirs[1] > room:
                continue
            took = self.store.take(other.id, self.max_attempts)
            if took is not None:
                taken.append(took)
                room -= theirs[1]
        if taken:
            log.info("job %s: running with %d waiting job(s) of its kind", job.id, len(taken))
        return taken

    def _run(self, job: Job, runtime: Runtime) -> None:
        cancel = self._cancels.setdefault(job.id, threading.Event())
        ctx = JobContext(job, self.store, runtime, self.limits, cancel)
        runner = self.runners[job.kind]
        try:
            try:
                outcome: dict[str, Any] | Exception = runner(ctx)
            except Exception as exc:
                outcome = exc
            self._finish(ctx, outcome)
        finally:
            self._cancels.pop(job.id, None)

    def _run_group(self, jobs: Sequence[Job], runtime: Runtime) -> None:
        """Jobs that share one run; each is then done, failed or re-queued on its own."""
        ctxs = []
        for job in jobs:
            cancel = self._cancels.setdefault(job.id, threading.Event())
            ctxs.append(JobContext(job, self.store, runtime, self.limits, cancel))
        try:
            try:
                outcomes = self._groupings[jobs[0].kind].run(ctxs)
            except Exception as exc:  # the shared call failed: every job of it did
                outcomes = [exc] * len(ctxs)
            for ctx, outcome in zip(ctxs, outcomes, strict=True):
                self._finish(ctx, outcome)
        finally:
            for job in jobs:
                self._cancels.pop(job.id, None)

    def _finish(self, ctx: JobContext, outcome: dict[str, Any] | Exception) -> None:
        if isinstance(outcome, Exception):
            self._failed(ctx.job, ctx, outcome)
            return
        outputs = {**ctx.outputs, **outcome}
        self.store.update(
            ctx.job.id, status="done", progress=1.0, message=summary(outputs), outputs=outputs
        )

    def _failed(self, job: Job, ctx: JobContext, exc: Exception) -> None:
        from .files import describe_os_error

        text = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        text = text.splitlines()[0] if text else type(exc).__name__
        if ctx.cancel.is_set() and self._stop.is_set():
            # A server stopping in good order is no crash: the attempt does not count.
            self.store.update(
                job.id, status="interrupted", attempts=max(0, job.attempts - 1),
                message="the server stopped; it continues on restart", outputs=ctx.outputs,
            )  # fmt: skip
        elif ctx.cancel.is_set():
            self.store.update(
                job.id, status="cancelled", outputs=ctx.outputs,
                message="cancelled; finished work is kept (resume it)",
            )  # fmt: skip
        elif isinstance(exc, ValueError):
            self.store.update(job.id, status="failed", message=text, outputs=ctx.outputs)
        elif job.attempts < self.max_attempts:
            log.warning("job %s: attempt %d failed: %s", job.id, job.attempts, text, exc_info=exc)
            self.store.update(
                job.id, status="queued", outputs=ctx.outputs,
                message=f"attempt {job.attempts} failed ({type(exc).__name__}: {text}); "
                "trying again",
            )  # fmt: skip
            self._notify()
        else:
            log.error("job %s failed after %d attempts", job.id, job.attempts, exc_info=exc)
            self.store.update(
                job.id, status="failed", outputs=ctx.outputs,
                message=f"failed after {job.attempts} attempts: {type(exc).__name__}: {text}",
            )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Requests into job params: what the store keeps


def video_params(req: VideoRequest, limits: Limits, look=None) -> dict[str, Any]:
    """A video request checked as the server takes it (its storyboard names no file; music
    is an upload, `audio` its name in the job's folder): the request's JSON, which History
    shows and a re-run repeats, with its length for the table. `look`: `look_uploads`'
    fields and names; checked with the request, then kept in the resolved storyboard under
    their names in the job's folder."""
    fields, names = look or ({}, {})
    checked = dataclasses.replace(req, **fields).checked(limits, files=False)
    named = {os.path.normpath(path): name for path, name in names.items()}
    storyboard = map_look_files(checked.storyboard, lambda p: named.get(os.path.normpath(p), p))
    kept = dataclasses.replace(checked, storyboard=storyboard, loras=None, images=None,
                               reference=None)  # fmt: skip
    return kept.to_json() | kept.summary()


def look_files(params: Mapping[str, Any]) -> list[str]:
    """The names of a video job's look uploads in its folder."""
    names: list[str] = []
    map_look_files(params["storyboard"], lambda name: names.append(name) or name)
    return sorted(set(names))


def video_plan(params: Mapping[str, Any], limits: Limits | None = None) -> str:
    """What a video job with these params would make: the plan as `python -m pipelines
    video --dry-run` prints it. Nothing is loaded; uploads change no plan and are left out."""
    from .chain import plan_request

    req = VideoRequest.from_json(dict(params))
    sb = map_look_files(req.storyboard, lambda name: None)
    if sb.get("continuity") == "reference":  # no reference: nothing to keep to
        sb["continuity"] = "none"
    return plan_request(dataclasses.replace(req, audio=None, storyboard=sb), limits or Limits())


def image_params(req: ImageRequest, limits: Limits) -> dict[str, Any]:
    """An image request checked, the model's defaults filled in: its JSON."""
    return req.checked(limits).to_json()


def thumbnail_params(req: ThumbnailRequest, rows_file: str | Path, limits: Limits) -> dict:
    """A thumbnails request and its rows file, checked with a dry run: the request's JSON
    with the rows counted. The caller stores the file in the job's folder as `input`."""
    from .thumbnails import make_thumbnails

    suffix = check_upload(rows_file, ROWS_SUFFIXES, limits, "rows")
    opts = req.options(limits, dry_run=True)
    width, height = opts.size
    if max(width, height) > limits.max_side:
        raise ValueError(
            f"preset: {width}x{height} is over the limit of {limits.max_side} px a side"
        )
    report = make_thumbnails(Path(rows_file), None, opts, say=lambda line: None)
    if report.rows and len(report.failed) >= report.rows:
        n, why = report.failed[0]
        raise ValueError(f"rows: no usable row (line {n}: {why})")
    params = dataclasses.replace(req, model=opts.model, input=Path(f"rows{suffix}")).to_json()
    return params | {"rows": report.rows, "bad_rows": [[n, why] for n, why in report.failed]}
