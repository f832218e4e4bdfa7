"""Scale-out on Ray: a pool of workers that each keep a loaded model, fed jobs by the driver.

Why it is built this way:

- One worker per GPU (`num_gpus=1`), or on a cluster without GPUs `workers` of them with an
  equal share of its CPUs. A worker loads a model once through `models.load` with the
  driver's `Runtime`, keeps it, and runs the same `generate_clips` / `generate` as a local
  run: the planner and the out-of-memory ladder work inside each worker, and a job's pixels
  do not depend on the worker that made it (every job has its own seed).
- Workers never touch a run folder: jobs (prompts, PIL conditioning images) go out, float32
  frames come back through the object store, and the driver writes. A worker on another
  node needs no shared disk.
- The driver gives each free worker its share of the queue, one call at a time (inside it
  the engine batches), and the worker streams each result back the moment it exists (a Ray
  streaming generator). A killed worker so loses only the jobs it had not finished: they go
  back to the queue for a live worker, or for the same one once Ray has restarted it.
- Jobs are futures, so a caller submits more while others run: a shot's next clip as soon
  as its previous one has returned.
- `ray[client]`, not `ray[data]`: the same actors serve a video's dependency-ordered clips
  and a CSV's rows. Ray Data's `map_batches` cannot take jobs whose inputs are earlier
  results, and on a small machine actors that hold the CPUs leave none for its tasks. The
  client extra is for `ray://` addresses; Ray Client cannot stream a call's results, so
  there each job is a call of its own (no batching inside a worker).

Use:

    with Pool.start("local", workers=2, runtime=runtime) as pool:
        images = pool.images("tiny", jobs, on_result=write)        # rows, keyframes
        futures = pool.submit(video_ref, [first_clip_of_each_shot])  # a video's relay:
        done, _ = concurrent.futures.wait(futures, return_when=FIRST_COMPLETED)
        # ... write each finished clip, then submit the clips that continue from it

Joining a cluster (`auto`, `HOST:PORT`, `ray://HOST:PORT`) needs the same Python packages on
its nodes; this package itself travels with the job. Nothing here imports Ray until
`Pool.start`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .clips import Cancelled, ClipItem
from .images import ImageItem
from .models import ModelRef, resolve_model
from .settings import Runtime

log = logging.getLogger(__name__)

Job = ClipItem | ImageItem
Loader = Callable[[ModelRef, str, Runtime], Any]  # `models.load`'s signature

MAX_TRIES = 3  # deaths of its worker a job survives (a job may be what kills it)
MAX_CHUNK = 32  # the most jobs one worker takes at a time (results stream back anyway)
START_TIMEOUT = 300.0  # seconds for every worker to start (a cold node imports torch)
FREE_WAIT = 3.0  # seconds to wait for CPUs/GPUs a closing pool is giving back
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before calling it unreachable
POLL = 0.02  # seconds between looks at the workers while calls run
CONTROL = "control"  # the actors' concurrency group that answers while a call runs


class WorkerLoadError(RuntimeError):
    """A worker ran out of memory loading a model; the other workers take its jobs."""


class NoWorker(RuntimeError):
    """No live worker can run a job: every one died, or none can load its model."""


# ---------------------------------------------------------------------------------------
# Checking the request: one line that names the field, before any work


@dataclass(frozen=True)
class WorkerShape:
    """What each worker holds on the cluster, and how many there are."""

    count: int
    gpus: int  # 1: a GPU worker; 0: a CPU worker
    cpus: int
    threads: int | None  # torch threads per worker; None: as Ray leaves them

    def needs(self) -> dict[str, float]:
        """What all the workers hold together, in Ray's resource names."""
        return {"CPU": self.cpus * self.count, "GPU": self.gpus * self.count}


def check_address(address: str | None) -> str:
    """`local`, `auto`, `HOST:PORT` or `ray://HOST:PORT`; an explicit address must answer
    within a few seconds (`ray.init` would otherwise retry for a minute)."""
    text = (address or "").strip()
    if text in ("local", "auto"):
        return text
    host, _, port = text.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"ray: cannot read {text!r} as an address (use local, auto, HOST:PORT or "
            "ray://HOST:PORT)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ValueError(
            f"ray: cannot reach {text} ({exc.strerror or type(exc).__name__}); start the "
            "cluster with `ray start --head`, or use --ray local"
        ) from None
    return text


def check_counts(workers: int | None, threads: int | None) -> None:
    """`workers` and `threads`: None, or whole numbers ≥ 1."""
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"{name}: must be a whole number ≥ 1 (got {value!r})")


def worker_shape(
    resources: dict[str, float], workers: int | None, device: str, threads: int | None = None
) -> WorkerShape:
    """How many workers, and what each holds, on a cluster with `resources` (Ray's totals).

    GPU workers where the runtime's device allows CUDA and the cluster has GPUs: by default
    one per GPU. Otherwise CPU workers, whose number must be given: each gets an equal
    share of the CPUs, and as many torch threads."""
    check_counts(workers, threads)
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "cuda" and gpus == 0:
        raise ValueError(
            "device: the Ray cluster has no GPU; use --device cpu with --workers N for CPU "
            "workers, or join a cluster with GPUs"
        )
    if device in ("auto", "cuda") and gpus > 0:
        count = workers or gpus
        if count > gpus:
            raise ValueError(
                f"workers: {count} GPU workers but the Ray cluster has {gpus} GPU(s); use "
                f"--workers {gpus} or fewer"
            )
        return WorkerShape(count, 1, min(1, cpus // count), threads)
    if workers is None:
        raise ValueError(
            "workers: the Ray cluster has no GPU for this run; give --workers N to run N CPU "
            "workers"
        )
    if workers > cpus:
        raise ValueError(
            f"workers: {workers} CPU workers but the Ray cluster has {cpus} CPU(s); use "
            f"--workers {max(1, cpus)} or fewer"
        )
    share = cpus // workers
    return WorkerShape(workers, 0, share, threads or share)


def _check_free(free: dict[str, float], shape: WorkerShape) -> None:
    """Refuse workers the cluster has but cannot give now (other jobs hold them): they
    would wait for ever."""
    for name, need in shape.needs().items():
        have = int(free.get(name, 0) + 1e-9)
        if need > have:
            raise ValueError(
                f"workers: {shape.count} worker(s) need {need} {name}(s) but only {have} are "
                "free on the Ray cluster (other work holds the rest); use fewer --workers"
            )


# ---------------------------------------------------------------------------------------
# The worker: a Ray actor (wrapped in `ray.remote` by `Pool.start`)


@dataclass(frozen=True)
class ModelInfo:
    """What a worker says about a model it loaded: for manifests and image sidecars."""

    placement: dict[str, str | bool]
    sampler: str


class Worker:
    """One Ray actor: a model cache (`models.load`'s), a planner, the engine's entry points.

    `run` is a generator: Ray streams each yielded result to the driver as it is made.
    `info` and `stop` run in their own concurrency group, so they answer mid-call."""

    def __init__(self, runtime: Runtime, threads: int | None, load: Loader | None) -> None:
        import torch

        from .batching import Planner
        from .models import load as models_load

        if threads:
            torch.set_num_threads(threads)
        self.runtime = runtime
        self.planner = Planner(runtime)
        self.load = load or models_load
        self.stopping = threading.Event()
        self.call = 0  # the driver's number for the call running now

    def info(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": context.get_node_id(), "gpus": ray.get_gpu_ids()}

    def stop(self, call: int) -> None:
        """Stop call number `call`, if it still runs, at the end of its current step (at the
        end of its batch, for images); a later call is left alone."""
        if call == self.call:
            self.stopping.set()

    def prepare(self, ref: ModelRef, kind: str) -> ModelInfo:
        """Load a model now (not at its first job), and say where it runs."""
        from .images import sampler_name

        loaded = self._load(ref, kind)
        return ModelInfo(loaded.placement.describe(), sampler_name(loaded.pipe))

    def run(
        self, ref: ModelRef, kind: str, jobs: list[Job], call: int = 0
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Make `jobs` with `ref`, yielding (position in `jobs`, frames) as each exists, so a
        result the driver has received survives this process dying later in the call."""
        if call != self.call:  # a stopped call stays stopped (Ray Client: a call per job)
            self.call = call
            self.stopping.clear()
        results: queue.SimpleQueue = queue.SimpleQueue()
        worker = threading.Thread(target=self._work, args=(ref, kind, jobs, results), daemon=True)
        worker.start()
        while (item := results.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
        worker.join()

    def run_list(self, ref: ModelRef, kind: str, jobs: list[Job], call: int = 0) -> list:
        """`run`, for Ray Client (which cannot stream): every result at the end."""
        return [arr for _, arr in self.run(ref, kind, jobs, call)]

    def _work(self, ref: ModelRef, kind: str, jobs: list[Job], results: queue.SimpleQueue) -> None:
        """The engine call, on a thread: its `on_result` cannot yield, so it queues."""
        from .clips import generate_clips
        from .images import generate

        # What a clip leaves besides its frames (its sound, a section's state) comes just
        # before its frames.
        extras: dict[int, Any] = {}

        def put(i: int, arr: np.ndarray) -> None:
            extra = extras.pop(i, None)
            results.put((i, arr if extra is None else (arr, extra)))
            if self.stopping.is_set():
                raise Cancelled("cancelled")

        try:
            loaded = self._load(ref, kind)
            common = dict(runtime=self.runtime, planner=self.planner, on_result=put)
            if kind == "video":
                generate_clips(loaded, jobs, cancel=self.stopping,
                               on_extra=extras.__setitem__, **common)  # fmt: skip
            else:
                generate(loaded, jobs, **common)
        except BaseException as exc:  # noqa: BLE001 - raised again in `run`, for the driver
            results.put(exc)
            return
        results.put(None)

    def _load(self, ref: ModelRef, kind: str):
        from .device import is_out_of_memory, release_memory

        try:
            return self.load(ref, "video" if kind == "video" else "text2img", self.runtime)
        except BaseException as exc:
            if not is_out_of_memory(exc):
                raise
            release_memory()
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WorkerLoadError(f"cannot load {ref.label}: out of memory ({reason})") from None


# ---------------------------------------------------------------------------------------
# The driver's side: the queue, the workers' states, and the thread that feeds them


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as the driver sees it (for progress lines, the UI and tests)."""

    rank: int
    pid: int
    node: str
    state: str  # free | busy | restarting | dead
    done: int  # results it returned
    cannot_load: tuple[str, ...]  # models it ran out of memory loading


@dataclass(eq=False)
class _Task:
    ref: ModelRef
    kind: str  # video | image
    job: Job
    future: Future
    tries: int = 0  # deaths of its worker so far
    started: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.ref.spec, self.ref.kind, self.kind)


@dataclass(eq=False)
class _Slot:
    rank: int
    actor: Any
    pid: int = 0
    node: str = ""
    state: str = "free"
    cannot: dict[tuple, str] = field(default_factory=dict)  # key → label
    done: int = 0
    probes: int = 0  # looks at it while Ray restarts it


@dataclass(eq=False)
class _Call:
    """One worker's share of the queue in flight: the tasks it took, and what brings their
    results: one stream (`Worker.run`), or under Ray Client, which cannot stream, one
    `Worker.run_list` call per task (the worker runs them in turn; no batching)."""

    slot: _Slot
    tasks: list[_Task]
    number: int  # for `Worker.stop`
    # Each open piece (a stream or an object ref; they hash by identity and by object id)
    # → the position of its task, None for a stream (it carries the positions).
    pieces: dict[Any, int | None] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)

    def unfinished(self) -> list[_Task]:
        return [t for i, t in enumerate(self.tasks) if i not in self.finished]


class Pool:
    """Ray workers that keep models loaded; jobs in, frames out, in the caller's order.

    `submit` queues jobs and returns a future per job; `clips` and `images` run a list and
    wait. A thread on the driver gives each free worker its share of the queue and resolves
    futures as results stream in. Start one with `Pool.start`; `close` it (or use `with`).
    """

    def __init__(
        self,
        ray,
        slots: list[_Slot],
        shape: WorkerShape,
        *,
        own: bool,
        streams: bool,
        say,
        max_chunk: int,
    ) -> None:
        self._ray = ray
        self._slots = slots
        self._shape = shape
        self._own = own  # this pool connected to (or started) Ray, so it disconnects
        self._say_line = say or log.warning
        self._max_chunk = max_chunk
        # Guards the queue and the workers' states; the feeding thread holds it while it
        # handles a result, so callbacks added to futures run under it: keep them short.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._pending: deque[_Task] = deque()
        self._calls: dict[Any, _Call] = {}  # every open piece → its call
        self._streams = streams  # False under Ray Client, which cannot stream results
        self._probes: dict[Any, _Slot] = {}  # info() of a worker Ray is restarting
        self._numbered = 0  # calls started
        self._closing = False
        self.notes: list[str] = []  # every line said about workers (for a manifest)
        self.retried = 0  # jobs that went back to the queue after their worker died
        self._extras: dict[Future, Any] = {}  # what clips leave besides frames, until delivered
        self._thread = threading.Thread(target=self._serve, name="reelchain-pool", daemon=True)
        self._thread.start()

    @classmethod
    def start(
        cls,
        address: str = "local",
        workers: int | None = None,
        runtime: Runtime | None = None,
        *,
        threads: int | None = None,
        max_chunk: int = MAX_CHUNK,
        load: Loader | None = None,
        say: Callable[[str], None] | None = None,
    ) -> Pool:
        """Connect to Ray and start the workers; bad input is one ValueError line naming
        the field, raised before any worker starts.

        `address`: `local` (a private instance on this machine), `auto` (the cluster this
        machine belongs to), `HOST:PORT` or `ray://HOST:PORT`; a process already connected
        to Ray keeps that connection. `workers`: default one per GPU; required without GPUs.
        `threads`: torch threads per worker (default: a CPU worker's share of the CPUs).
        `load`: how a worker loads a model (default `models.load`; tests inject failures).
        `say`: where lines about workers go (default: a logged warning)."""
        runtime = runtime or Runtime()
        address = check_address(address)
        check_counts(workers, threads)
        import ray
        from ray.util.client import ray as client

        own = _connect(ray, address)
        try:
            shape = worker_shape(ray.cluster_resources(), workers, runtime.device, threads)
            _check_free(_wait_free(ray, shape.needs(), timeout=FREE_WAIT), shape)
            slots = _start_workers(ray, shape, runtime, load)
        except BaseException:
            if own:
                ray.shutdown()
            raise
        streams = not client.is_connected()
        return cls(
            ray, slots, shape, own=own, streams=streams, say=say, max_chunk=max(1, max_chunk)
        )

    # -- what callers use ---------------------------------------------------------------

    def submit(self, model: ModelRef | str, jobs: Sequence[Job]) -> list[Future]:
        """Queue jobs (all ClipJobs for a video model, or all ImageJobs for an image model);
        one future per job, resolved with its float32 frames (clips: (F, H, W, 3), images:
        (H, W, 3)) or the error that stopped it. Safe to call from any thread, and from a
        result's callback: a shot's next clip can go in as soon as its previous one is out."""
        if not jobs:
            return []
        ref, kind = _model_for(model, jobs)
        tasks = [_Task(ref, kind, job, Future()) for job in jobs]
        with self._lock:
            if self._closing:
                raise RuntimeError("pool: closed")
            self._pending.extend(tasks)
            self._dispatch()  # at once: a free worker starts now, not at the next look
        self._wake.set()
        return [t.future for t in tasks]

    def take_extra(self, future: Future) -> Any:
        """What a clip of `submit` left besides its frames (its sound, a section's state),
        once; None for one that left nothing."""
        with self._lock:
            return self._extras.pop(future, None)

    def clips(
        self,
        model: ModelRef | str,
        jobs: Sequence[ClipItem],
        *,
        on_result: Callable[[int, np.ndarray], None] | None = None,
        cancel: threading.Event | None = None,
        on_extra: Callable[[int, Any], None] | None = None,
    ) -> list[np.ndarray]:
        """`clips.generate_clips` across the workers: float32 (F, H, W, 3) clips in job
        order; `on_result(i, clip)` runs on this thread as each arrives, after
        `on_extra(i, extra)` for a clip that leaves more (its sound, a section's state)."""
        return self.run(model, jobs, on_result=on_result, cancel=cancel, on_extra=on_extra)

    def images(
        self,
        model: ModelRef | str,
        jobs: Sequence[ImageItem],
        *,
        on_result: Callable[[int, np.ndarray], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[np.ndarray]:
        """`images.generate` across the workers: float32 (H, W, 3) images in job order."""
        return self.run(model, jobs, on_result=on_result, cancel=cancel)

    def run(
        self,
        model: ModelRef | str,
        jobs: Sequence[Job],
        *,
        on_result: Callable[[int, np.ndarray], None] | None = None,
        cancel: threading.Event | None = None,
        on_extra: Callable[[int, Any], None] | None = None,
    ) -> list[np.ndarray]:
        """Submit `jobs` and wait for all; the first error (or `cancel` being set) cancels
        the rest and is raised here."""
        futures = self.submit(model, jobs)
        index = {f: i for i, f in enumerate(futures)}
        out: list[np.ndarray | None] = [None] * len(futures)
        waiting = set(futures)
        try:
            while waiting:
                done, waiting = wait(waiting, timeout=0.1, return_when=FIRST_COMPLETED)
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                for f in sorted(done, key=index.__getitem__):
                    if cancel is not None and cancel.is_set():  # `on_result` may set it
                        raise Cancelled("cancelled")
                    out[index[f]] = f.result()
                    with self._lock:
                        extra = self._extras.pop(f, None)
                    if extra is not None and on_extra:
                        on_extra(index[f], extra)
                    if on_result:
                        on_result(index[f], out[index[f]])
        except BaseException:
            self.cancel(waiting)
            raise
        return out  # type: ignore[return-value]

    def preload(self, model: ModelRef | str, kind: str = "image") -> ModelInfo:
        """Load a model on every live worker now, so that a worker short of memory is
        reported (and left out) before the first job; returns where the first of them runs
        it (placement, sampler: what manifests and sidecars record). `kind` (`video` or
        `image`) picks what `tiny` means when `model` is a spec."""
        ref = model if isinstance(model, ModelRef) else resolve_model(model, kind)
        key = (ref.spec, ref.kind, ref.family.kind)
        calls = [
            (s, s.actor.prepare.remote(ref, ref.family.kind))
            for s in self._live()
            if key not in s.cannot
        ]
        infos = []
        for slot, call in calls:
            try:
                infos.append(self._ray.get(call))
            except self._ray.exceptions.RayActorError as exc:
                with self._lock:
                    self._say(f"worker {slot.rank} (pid {slot.pid}) died ({type(exc).__name__})")
            except Exception as exc:  # noqa: BLE001 - a load failure, or raised as it is
                cause = getattr(exc, "cause", None) or exc
                if not isinstance(cause, WorkerLoadError):
                    raise cause from None
                with self._lock:
                    slot.cannot[key] = ref.label
                    self._say(f"worker {slot.rank} (pid {slot.pid}): {cause}")
        if not infos:
            raise NoWorker(f"no worker can load {ref.label}; see the lines above")
        return infos[0]

    def cancel(self, futures) -> None:
        """Cancel jobs: queued ones never run; a worker whose every job in its current call
        is cancelled stops at the end of its current step."""
        futures = list(futures)
        running = [f for f in futures if not f.cancel() and not f.done()]
        with self._lock:
            for f in futures:  # what arrived with frames nobody will take
                self._extras.pop(f, None)
            if running:
                self._cancel_running(set(running))

    @property
    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [
                WorkerInfo(s.rank, s.pid, s.node, s.state, s.done, tuple(s.cannot.values()))
                for s in self._slots
            ]

    def close(self) -> None:
        """Stop the workers (unfinished jobs fail with a closed-pool error) and, if this
        pool connected to Ray, disconnect (a `local` instance ends)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake.set()
        self._thread.join(timeout=10)
        closed = RuntimeError("pool: closed before the job ran")
        for task in [*self._pending, *self._running()]:
            _settle(task.future, error=closed)
        for slot in self._slots:
            with contextlib.suppress(Exception):
                self._ray.kill(slot.actor, no_restart=True)
        _wait_free(self._ray, self._shape.needs(), timeout=10)
        if self._own:
            self._ray.shutdown()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the feeding thread ---------------------------------------------------------------

    def _serve(self) -> None:
        """Hand out work, then wait for the next result (or a restarted worker), until
        `close`. A fault in this loop fails every job rather than leaving callers waiting."""
        try:
            while not self._closing:
                with self._lock:
                    self._dispatch()
                    waiting = [*self._calls, *self._probes]
                if not waiting:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                ready, _ = self._ray.wait(waiting, num_returns=1, timeout=POLL)
                with self._lock:
                    for item in ready:
                        if item in self._calls:
                            self._advance(self._calls[item], item)
                        else:
                            self._probed(item, self._probes.pop(item))
        except BaseException as exc:  # noqa: BLE001 - handed to every caller
            log.exception("pool: the feeding thread failed")
            with self._lock:
                self._closing = True
            for task in [*self._pending, *self._running()]:
                _settle(task.future, error=exc)

    def _running(self) -> list[_Task]:
        calls = {id(c): c for c in self._calls.values()}.values()
        return [t for c in calls for t in c.tasks]

    def _cancel_running(self, cancels: set[Future]) -> None:
        """Cancel futures that `Future.cancel` could not (under the lock): a retried job in
        the queue, or a job in a call; a call left with nothing to do is stopped."""
        stopped = Cancelled("cancelled")
        for task in [t for t in self._pending if t.future in cancels]:
            self._pending.remove(task)
            _settle(task.future, error=stopped)
        calls = {id(c): c for c in self._calls.values()}.values()
        for call in list(calls):  # settling runs callbacks, which may submit
            left = call.unfinished()
            for task in left:
                if task.future in cancels:
                    _settle(task.future, error=stopped)
            if left and all(t.future.done() for t in left):
                call.slot.actor.stop.remote(call.number)

    def _dispatch(self) -> None:
        """Give every free worker its share of the queue (under the lock)."""
        self._pending = deque(t for t in self._pending if not t.future.done())
        given: set[int] = set()
        for slot in self._slots:
            if slot.state != "free" or not self._pending:
                continue
            chunk = self._chunk_for(slot, given)
            given.add(slot.rank)
            if chunk:
                self._start_call(slot, chunk)
        self._fail_orphans()

    def _chunk_for(self, slot: _Slot, given: set[int]) -> list[_Task]:
        """The oldest queued model's jobs this worker can load: its fair share of them,
        counting the workers that can take some and have not been given any this round
        (busy ones take theirs when they are free)."""
        first = next((t for t in self._pending if t.key not in slot.cannot), None)
        if first is None:
            return []
        same = [t for t in self._pending if t.key == first.key]
        able = [
            s
            for s in self._slots
            if s.state != "dead" and first.key not in s.cannot and s.rank not in given
        ]
        share = -(-len(same) // max(1, len(able)))
        return same[: min(share, self._max_chunk)]

    def _start_call(self, slot: _Slot, chunk: list[_Task]) -> None:
        tasks = []
        for task in chunk:
            self._pending.remove(task)
            if task.started or task.future.set_running_or_notify_cancel():
                task.started = True
                tasks.append(task)
        if not tasks:
            return
        first = tasks[0]
        self._numbered += 1
        jobs = [t.job for t in tasks]
        call = _Call(slot, tasks, self._numbered)
        if self._streams:
            pieces = [(slot.actor.run.remote(first.ref, first.kind, jobs, call.number), None)]
        else:
            pieces = [
                (slot.actor.run_list.remote(first.ref, first.kind, [job], call.number), pos)
                for pos, job in enumerate(jobs)
            ]
        for piece, pos in pieces:
            call.pieces[piece] = pos
            self._calls[piece] = call
        slot.state = "busy"

    def _fail_orphans(self) -> None:
        """Jobs no live worker can run fail now, with the reason (rather than wait)."""
        live = self._live()
        for task in list(self._pending):
            if any(task.key not in s.cannot for s in live):
                continue
            self._pending.remove(task)
            if live:
                why = f"no worker can load {task.ref.label} (each ran out of memory loading it)"
            else:
                why = "every worker died"
            _settle(task.future, error=NoWorker(f"{why}; see the lines above"))

    def _advance(self, call: _Call, piece: Any) -> None:
        """Take the next thing a piece of a call holds: a result, its end, or a failure."""
        death = (
            self._ray.exceptions.RayActorError,
            self._ray.exceptions.WorkerCrashedError,
            self._ray.exceptions.ObjectLostError,
        )
        pos = call.pieces[piece]
        try:
            if pos is None:  # a stream: (position, frames) pairs
                pos, arr = self._ray.get(next(piece))
            else:  # one `run_list` call of one job
                (arr,) = self._ray.get(piece)
                del call.pieces[piece], self._calls[piece]
        except StopIteration:
            for task in call.unfinished():  # the engine returns one result per job
                _settle(task.future, error=RuntimeError("the worker returned no result for it"))
            self._end(call, requeue=[])
            return
        except death as exc:
            self._lost(call, exc)
            return
        except Exception as exc:  # noqa: BLE001 - the worker's own error, sorted below
            self._failed(call, getattr(exc, "cause", None) or exc)
            return
        call.finished.add(pos)
        call.slot.done += 1
        future = call.tasks[pos].future
        if isinstance(arr, tuple):  # frames and what the clip leaves besides them
            arr, self._extras[future] = arr
        # A copy: writable, and the object store's copy is freed at once.
        _settle(future, result=np.array(arr))
        if not call.pieces:
            self._end(call, requeue=[])

    def _end(self, call: _Call, requeue: list[_Task]) -> None:
        """A call is over: its worker is free again; `requeue` goes back to the front."""
        for piece in call.pieces:
            del self._calls[piece]
        call.pieces.clear()
        if call.slot.state == "busy":
            call.slot.state = "free"
        self._pending.extendleft(reversed([t for t in requeue if not t.future.done()]))

    def _failed(self, call: _Call, error: BaseException) -> None:
        """The worker raised: out of memory loading the model leaves that model to the
        other workers; any other error is the jobs' own (a bad job, out of memory at batch
        size 1 with every saver on, a cancel) and fails the call's unfinished jobs."""
        left = call.unfinished()
        if isinstance(error, WorkerLoadError):
            slot, key = call.slot, call.tasks[0].key
            slot.cannot[key] = call.tasks[0].ref.label
            others = sum(1 for s in self._live() if key not in s.cannot)
            self._say(f"worker {slot.rank} (pid {slot.pid}): {error}; {others} other(s) go on")
            self._end(call, requeue=left)
            return
        for task in left:
            _settle(task.future, error=error)
        self._end(call, requeue=[])

    def _lost(self, call: _Call, error: BaseException) -> None:
        """The worker's process died: its unfinished jobs go back to the queue (a job
        whose worker died MAX_TRIES times fails), and the driver waits for Ray to restart
        it (or to say it is gone)."""
        slot, left = call.slot, call.unfinished()
        slot.state = "restarting"
        reason = type(error).__name__
        self._say(
            f"worker {slot.rank} (pid {slot.pid}) died ({reason}); {len(left)} unfinished "
            "job(s) go back to the queue"
        )
        again = []
        for task in left:
            task.tries += 1
            if task.tries >= MAX_TRIES:
                _settle(task.future, error=NoWorker(f"its worker died {task.tries} times"))
            else:
                again.append(task)
        self.retried += len(again)
        self._end(call, requeue=again)
        self._probe(slot)

    def _probe(self, slot: _Slot) -> None:
        slot.probes += 1
        self._probes[slot.actor.info.remote()] = slot

    def _probed(self, ref, slot: _Slot) -> None:
        """A restarting worker answered: back at work, still restarting, or gone."""
        try:
            info = self._ray.get(ref)
        except self._ray.exceptions.ActorUnavailableError:
            if slot.probes < 20:
                self._probe(slot)
                return
            info = None
        except self._ray.exceptions.RayActorError:
            info = None
        if info is None:
            slot.state = "dead"
            self._say(f"worker {slot.rank} is gone; {len(self._live())} left")
            return
        slot.pid, slot.node, slot.state, slot.probes = info["pid"], info["node"], "free", 0
        self._say(f"worker {slot.rank} restarted (pid {slot.pid})")

    def _live(self) -> list[_Slot]:
        return [s for s in self._slots if s.state != "dead"]

    def _say(self, line: str) -> None:
        self.notes.append(line)
        self._say_line(line)


def _settle(future: Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve a future once (a cancelled or already settled one is left as it is)."""
    if future.done():
        return
    if not future.running() and not future.set_running_or_notify_cancel():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _wait_free(ray, need: dict[str, float], timeout: float) -> dict[str, float]:
    """Ray's free resources once they cover `need`, or after `timeout` seconds: a killed
    actor's CPUs and GPUs come back a moment after it is marked dead."""
    deadline = time.monotonic() + timeout
    while True:
        free = ray.available_resources()
        if all(free.get(k, 0) + 1e-9 >= v for k, v in need.items()):
            return free
        if time.monotonic() >= deadline:
            return free
        time.sleep(0.1)


def _model_for(model: ModelRef | str, jobs: Sequence[Job]) -> tuple[ModelRef, str]:
    """The model and its kind (`video` for ClipJobs, `image` for ImageJobs), checked."""
    kinds = {"video" if isinstance(j, ClipItem) else "image" if isinstance(j, ImageItem) else "?"
             for j in jobs}  # fmt: skip
    if len(kinds) != 1 or "?" in kinds:
        raise ValueError("jobs: give only ClipJobs (a video model) or only ImageJobs")
    kind = kinds.pop()
    ref = model if isinstance(model, ModelRef) else resolve_model(model, kind)
    if ref.family.kind != kind:
        raise ValueError(
            f"model: {ref.label} is not a{'' if kind == 'video' else 'n'} {kind} model"
        )
    return ref, kind


def _connect(ray, address: str) -> bool:
    """Connect to Ray (start a private instance for `local`); True if this call did."""
    if ray.is_initialized():
        return False
    if address == "local":  # "local", not None: None would join a cluster found on this machine
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        return True
    # Workers on other nodes import this package from the driver's copy.
    env = {"py_modules": [str(Path(__file__).resolve().parent)]}
    try:
        ray.init(address=address, runtime_env=env, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ValueError(f"ray: cannot join {address!r} ({_why(exc)})") from None
    return True


def _why(exc: BaseException) -> str:
    """One line on why joining failed; Ray's own message names only the address."""
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    token = "set RAY_AUTH_MODE=token, with the cluster's token in RAY_AUTH_TOKEN"
    if any("InvalidAuthToken" in str(e) or "AuthenticationError" in str(e) for e in chain):
        return f"the cluster wants its token: {token}"
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if os.environ.get("RAY_AUTH_MODE") != "token":
        line += f"; if the cluster uses token authentication, {token}"
    return line


def _start_workers(ray, shape: WorkerShape, runtime: Runtime, load: Loader | None) -> list[_Slot]:
    """Start the actors and wait until each answers (it has imported torch)."""
    for name in ("info", "stop"):  # these answer while `run` runs
        ray.method(concurrency_group=CONTROL)(getattr(Worker, name))
    remote = ray.remote(concurrency_groups={CONTROL: 1})(Worker)
    actors = [
        remote.options(
            num_cpus=shape.cpus, num_gpus=shape.gpus, max_restarts=MAX_TRIES, max_task_retries=0
        ).remote(runtime, shape.threads, load)
        for _ in range(shape.count)
    ]
    infos = [a.info.remote() for a in actors]
    ready, _ = ray.wait(infos, num_returns=len(infos), timeout=START_TIMEOUT)
    if len(ready) < len(infos):
        for actor in actors:
            ray.kill(actor, no_restart=True)
        raise RuntimeError(
            f"workers: {len(ready)} of {len(infos)} started within {START_TIMEOUT:.0f} s"
        )
    slots = []
    for rank, (actor, info) in enumerate(zip(actors, ray.get(infos), strict=True)):
        slots.append(_Slot(rank, actor, info["pid"], info["node"]))
    return slots


_POOLS: dict[tuple[str, int | None], Pool] = {}
_POOLS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Maker:
    """Where a run's images or clips are made: this machine's loaded model, or the Ray
    workers of a pool (the same engine call runs inside each). `sampler` and `placement`
    are what sidecars and manifests record; the placement is read at each call, as the
    out-of-memory ladder may move a model loaded here."""

    sampler: str
    where: Callable[[], dict[str, Any]]
    # (items, planner=, on_result=, cancel=, on_extra=) → images or clips, in order
    run: Callable[..., list[np.ndarray]]

    @property
    def placement(self) -> dict[str, Any]:
        return self.where()


def maker_for(ref: ModelRef, kind: str, runtime: Runtime, pool: Pool | None = None) -> Maker:
    """The one place that picks where `kind` ("image" or "video") work runs: `pool`, else
    the runtime's own (`--ray`), else the model loaded here. A Ray worker that cannot load
    the model is reported in one line and left out, before the first item."""
    from .clips import generate_clips
    from .images import generate, sampler_name
    from .models import load

    pool = pool or pool_for(runtime)
    if pool is not None:
        info = pool.preload(ref, kind)
        placement = {**info.placement, "workers": len(pool.workers)}
        make = pool.images if kind == "image" else pool.clips

        def on_pool(items, planner=None, on_result=None, cancel=None, **extra):
            return make(ref, items, on_result=on_result, cancel=cancel, **extra)

        return Maker(info.sampler, lambda: placement, on_pool)
    loaded = load(ref, "text2img" if kind == "image" else "video", runtime)

    def here(items, planner=None, on_result=None, cancel=None, **extra):
        if kind == "image":  # an image call is short: a cancel waits for its end
            return generate(loaded, items, runtime=runtime, planner=planner, on_result=on_result)
        return generate_clips(loaded, items, runtime=runtime, planner=planner, cancel=cancel,
                              on_result=on_result, **extra)  # fmt: skip

    return Maker(sampler_name(loaded.pipe), loaded.placement.describe, here)


def pool_for(runtime: Runtime) -> Pool | None:
    """The pool a runtime asks for (`--ray ADDRESS --workers N`), started once per process
    and kept (a server's jobs share it), closed when the process exits; None without
    `--ray`. The workers run with the same runtime, less the cluster options."""
    if not runtime.ray:
        return None
    key = (runtime.ray, runtime.workers)
    with _POOLS_LOCK:
        if key not in _POOLS:
            import atexit
            import dataclasses

            local = dataclasses.replace(runtime, ray=None, workers=None)
            pool = Pool.start(runtime.ray, runtime.workers, local)
            atexit.register(pool.close)
            _POOLS[key] = pool
        return _POOLS[key]
