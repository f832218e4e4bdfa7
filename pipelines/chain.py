"""Chaining short generations into one long video.

1. Validate the storyboard against the model (sizes, frame rules, what it can take).
2. Plan segments: each shot is cut into clips the model can make; each clip's output
   frames are fixed up front, so the video has exactly round(fps × Σ seconds) frames.
3. Keyframes: one text-to-image per shot, in batches. Every shot starts from its own
   keyframe, so drift cannot pile up from shot to shot.
4. Segments whose conditioning exists are generated together (across shots, in batches),
   colour-matched to the shot's keyframe, checked for broken frames, and written at once
   (segment file + the lossless frames the next segment is conditioned on + manifest).
5. Stitch: segment files stream through retiming (interpolation), crossfades and audio
   into the final file.

Modes: `continue` (each clip starts on the previous clip's last frame, or last frames
with a blended overlap where the family takes video), `keyframes` (the last clip of a
shot also ends on the next shot's keyframe where the family takes a last frame,
otherwise the shots crossfade), `feedback` (image-to-image on the previous frame warped
by the shot's motion, with any image model).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import __version__, drift, events, finishing
from .batching import OutOfMemory, Planner
from .clips import Cancelled, ClipItem
from .files import remove_partials
from .finishing import finish, from_storyboard, shot_times
from .framepack import SectionState, readable_state
from .images import ImageItem, check_size
from .keyframes import make_keyframes
from .lora import loras_for
from .models import ModelRef, check_fast, load, resolve_model
from .plan import Models, Segment, gen_rate, plan, plan_data, plan_summary, stretch_of
from .relay import relay
from .runs import MANIFEST_VERSION, RunFolder, load_png, save_png
from .scale import maker_for, pool_for
from .settings import Limits, Runtime
from .soundtrack import mix_sounds, write_clip_sound, write_soundtrack
from .stitch import Part, stitch
from .storyboard import (
    Storyboard,
    StoryboardError,
    StoryboardSource,
    named_files,
    read_storyboard_file,
)
from .timeline import write_timelines
from .video_io import VideoWriter, audio_duration, probe

log = logging.getLogger(__name__)

MAX_TRIES = 3  # a clip with broken (NaN, black, frozen) frames is made again with new seeds


@dataclass(frozen=True)
class VideoOptions:
    """The engine's options of a video run (a `requests.VideoRequest` makes them): each
    set one wins over the storyboard's value; None leaves the storyboard's, then the
    model's."""

    model: str | None = None
    mode: str | None = None
    image_model: str | None = None  # keyframes and feedback; None: tiny twin or sd-turbo
    clip_frames: int | None = None  # frames per clip; None: the model's default
    seed: int | None = None  # the storyboard's seed (shots' own seeds stay)
    fps: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    negative_prompt: str | None = None
    audio: str | None = None  # a music file on this machine
    loras: tuple[str, ...] | None = None  # `PATH[:SCALE]` LoRAs for the keyframe model
    images: tuple[str, ...] | None = None  # `SHOT:PATH` start pictures (shots from 1)
    continuity: str | None = None
    reference: str | None = None  # a picture: `continuity: reference` unless set otherwise
    continuity_strength: float | None = None
    max_parallel: int = 8  # clips held in memory at once (bounds RAM)
    limits: Limits = field(default_factory=Limits)

    def overrides(self) -> dict[str, Any]:
        """The storyboard fields these options set."""
        names = ("seed", "fps", "width", "height", "steps", "negative_prompt", "audio", "loras",
                 "continuity", "reference", "continuity_strength")  # fmt: skip
        given = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        if self.reference and not self.continuity:
            given["continuity"] = "reference"
        return given


@dataclass
class VideoResult:
    run_dir: Path
    video: Path
    poster: Path | None
    frames: int
    fps: float
    width: int
    height: int
    segments: int
    generated: int  # segments made by this call (0 on a resume with nothing left)


# ---------------------------------------------------------------------------------------
# 1. Resolving models and the storyboard


def resolve_models(
    spec: str | None, mode: str, image_spec: str | None, runtime: Runtime | None = None
) -> Models:
    if mode == "feedback":
        ref = resolve_model(spec, "image", runtime)
        if ref.family.kind != "image":
            raise ValueError(
                f"model: feedback mode needs an image model, {ref.label} is a video model "
                "(use mode continue or keyframes, or an image model such as sd-turbo)"
            )
        return Models(None, ref)
    ref = resolve_model(spec, "video", runtime)
    if ref.family.kind != "video":
        raise ValueError(
            f"model: {ref.label} is an image model; use mode feedback, or a video model "
            "such as ltx-video (see `python -m pipelines models`)"
        )
    default_image = "tiny-image" if ref.kind == "twin" else None
    image = resolve_model(image_spec or default_image, "image", runtime)
    if image.family.kind != "image":  # keyframes are text-to-image
        raise ValueError(
            f"image-model: {image.label} is a video model; keyframes need an image model such "
            "as sd-turbo or tiny"
        )
    return Models(ref, image)


def read_storyboard(
    source: str | Path, opts: VideoOptions, *, text: bool = False, runtime: Runtime | None = None
) -> tuple[Storyboard, Models]:
    """Load a storyboard (a file, or text when `text`), with the model's size and fps as
    defaults, CLI options applied, and every model rule checked. `runtime` names the
    device `--model auto` is chosen for."""
    limits = opts.limits
    source = StoryboardSource(str(source), None, None) if text else read_storyboard_file(source)
    # The storyboard names the model, and the model gives the defaults for what the
    # storyboard leaves out (size, fps): read once, parse twice (microseconds).
    raw = source.parse(limits=limits)
    mode = opts.mode or raw.mode
    models = resolve_models(opts.model or raw.model, mode, opts.image_model, runtime)
    p = (models.video or models.image).preset
    defaults = {"width": p.width, "height": p.height, "fps": p.fps or 8}
    sb = source.parse(limits=limits, defaults=defaults)
    changes = {"mode": mode, "model": (models.video or models.image).spec, **opts.overrides()}
    sb = sb.replace(limits=limits, **changes)
    if opts.images:
        sb = sb.replace(limits=limits, shots=_with_images(sb, opts.images))
    check_storyboard(sb, models, opts)
    return sb, models


def _with_images(sb: Storyboard, images: tuple[str, ...]) -> list[dict[str, Any]]:
    """The storyboard's shots with `SHOT:PATH` start pictures set (shots from 1)."""
    shots = [dataclasses.asdict(shot) for shot in sb.shots]
    for text in images:
        number, sep, path = str(text).partition(":")
        if not sep or not number.strip().isdigit() or not path.strip():
            raise ValueError(f"images: write SHOT:PATH, e.g. 2:start.png (got {text!r})")
        k = int(number)
        if not 1 <= k <= len(shots):
            raise ValueError(f"images: there is no shot {k} (the storyboard has {len(shots)})")
        shots[k - 1]["image"] = os.path.abspath(os.path.expanduser(path.strip()))
    return shots


def read_request(req, limits: Limits, *, runtime: Runtime | None = None, files: bool = True):
    """A `VideoRequest`'s storyboard (a file, text, or an already resolved dict) read with
    its options; `files=False` (a server) refuses a storyboard that names a file on this
    machine, without saying which files exist (music comes as an upload)."""
    source, text = req.storyboard, True
    if isinstance(source, dict):
        source = json.dumps(source)
    elif isinstance(source, Path):
        text = False
    elif not isinstance(source, str) or not source.strip():
        if not files:  # the page and the API
            raise ValueError(
                "storyboard: paste YAML or JSON with shots, or fill in the shots table"
            )
        raise ValueError("storyboard: give a storyboard file, or YAML or JSON with shots")
    opts = dataclasses.replace(req.options(limits), audio=req.audio if files else None)
    if not files:  # refused before any is read: the answer must not tell which files exist
        named = named_files(source) if text else []
        if named:
            fix = "upload the music instead" if named[0] == "audio" else "use the command line"
            raise ValueError(f"{named[0]}: a storyboard sent to the server cannot name a file; "
                             f"{fix}")  # fmt: skip
    return read_storyboard(source, opts, text=text, runtime=runtime)


def check_storyboard(sb: Storyboard, models: Models, opts: VideoOptions) -> None:
    if models.video:
        check_size(models.video, sb.width, sb.height)
        _check_clip_frames(models.video, opts.clip_frames)
    else:  # feedback mode makes every frame at the video's size
        check_size(models.image, sb.width, sb.height)
    gen_rate(sb, models)  # the model's motion rate within `interpolate`
    if sb.audio:  # an unreadable track fails now, not after the whole video is made
        try:
            audio_duration(Path(sb.audio))
        except ValueError as exc:
            raise StoryboardError("audio", str(exc).removeprefix("audio: ")) from None
    if sb.finishing:  # captions that fit, a voice that reads: before any generation
        finishing.check_storyboard(sb)
    if sb.total_frames > opts.limits.max_frames:
        raise ValueError(
            f"shots: {sb.total_frames} frames is over the limit of {opts.limits.max_frames}"
        )


def _check_clip_frames(ref: ModelRef, clip_frames: int | None) -> None:
    if clip_frames is None:
        return
    if clip_frames < 2:
        raise ValueError(f"clip-frames: must be at least 2 (got {clip_frames})")
    if ref.family.sections:  # a section's frames: 8w - 3 for w latent frames, w ≥ 2
        use = 8 * ref.section_window(clip_frames) - 3
        if use != clip_frames:
            raise ValueError(f"clip-frames: {ref.label} makes sections of 8k-3 frames, k ≥ 2 "
                             f"(got {clip_frames}; use {use})")  # fmt: skip
        return
    if ref.legal_frames(clip_frames) != clip_frames:
        raise ValueError(
            f"clip-frames: {ref.label} needs {ref.frame_rule} frames "
            f"(got {clip_frames}; use {ref.legal_frames(clip_frames)})"
        )


# ---------------------------------------------------------------------------------------
# 3.–5. Running a plan


_TASK = {"image": "text2img", "video": "video"}  # the manifest's name for where each ran


@dataclass
class _Context:
    run: RunFolder
    sb: Storyboard
    models: Models
    opts: VideoOptions
    runtime: Runtime
    segments: list[Segment]
    manifest: dict[str, Any]
    cancel: threading.Event | None
    on_segment: Callable[[Segment, Path], None] | None
    pool: Any = None  # a `scale.Pool`: calls run on its Ray workers
    planner: Planner = field(init=False)
    # Finished clips are written (colour match, drift, encode, tails) on one writer thread
    # while the next call runs; `flush` waits for them.
    _writer: ThreadPoolExecutor | None = field(default=None, init=False)
    _writes: list[Future] = field(default_factory=list, init=False)
    _save_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    # What a clip leaves besides its frames (LTX-2's sound, FramePack's state), by segment,
    # until the writer keeps it beside the segment.
    extras: dict[int, Any] = field(default_factory=dict, init=False)
    _makers: dict[tuple[str, str], Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.planner = Planner(self.runtime, max_batch=self.opts.limits.max_batch)
        if self.pool is None:  # `--ray ADDRESS`: the process's pool
            self.pool = pool_for(self.runtime)

    def write_later(self, seg: Segment, clip: np.ndarray) -> Future:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="reelchain-writer")
        future = self._writer.submit(_write_segment, self, seg, clip)
        self._writes.append(future)
        return future

    def flush(self, *, raising: bool = True) -> None:
        """Wait for every clip handed to the writer; re-raise the first failure (unless an
        error is already on its way: then the writes finish and the first error wins)."""
        writes, self._writes = self._writes, []
        errors = []
        for future in writes:
            try:
                future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
        if errors and raising:
            raise errors[0]
        for exc in errors:  # not raising: another error is already on its way
            log.error("writing a segment failed: %s", exc)

    def close(self) -> None:
        """Finish the writes, stop the writer, and give up the run folder's claim."""
        self.flush(raising=False)
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        self.run.release()

    def images(self, ref: ModelRef, items: list, on_result=None) -> list[np.ndarray]:
        """Text-to-image or image-to-image items, here or on the Ray workers."""
        return self._make(ref, "image", items, on_result=on_result)

    def clips(self, ref: ModelRef, items: list, on_result=None, on_extra=None) -> list[np.ndarray]:
        """Clips, here or spread over the Ray workers (each batches its share); `on_extra`
        hears what clips leave besides frames, for families that leave something."""
        on_extra = on_extra if ref.family.sound or ref.family.sections else None
        return self._make(ref, "video", items, on_result=on_result, on_extra=on_extra)

    def _make(self, ref: ModelRef, kind: str, items: list, **kw) -> list[np.ndarray]:
        """Items made where `scale.maker_for` says (the workers load a model once a run);
        where it ran goes into the manifest after each call (the out-of-memory ladder may
        have moved it)."""
        maker = self.maker(ref, kind)
        try:
            return maker.run(items, planner=self.planner, cancel=self.cancel, **kw)
        finally:
            self._record(ref, _TASK[kind], maker.placement)

    def maker(self, ref: ModelRef, kind: str):
        """Where `kind` work of `ref` runs this run (`scale.maker_for`), made once: a pool's
        workers load the model then, and the manifest records where."""
        if (ref.spec, kind) not in self._makers:
            maker = self._makers[ref.spec, kind] = maker_for(ref, kind, self.runtime, self.pool)
            self._record(ref, _TASK[kind], maker.placement)
        return self._makers[ref.spec, kind]

    def load(self, ref: ModelRef, task: str):
        """Load (or reuse) a model here, and record where and how it runs in the manifest."""
        loaded = load(ref, task, self.runtime)
        self._record(ref, task, loaded.placement.describe())
        return loaded

    def _record(self, ref: ModelRef, task: str, placement: dict) -> None:
        where = dict(placement)
        if self.pool is not None:
            where["workers"] = len(self.pool.workers)
        self.manifest.setdefault("placement", {})[task] = where

    def save(self) -> None:
        with self._save_lock:  # the writer thread saves too
            self.manifest["segments"] = [s.to_dict(self.sb) for s in self.segments]
            self.run.save_manifest(self.manifest)


def plan_text(
    storyboard: str | Path,
    opts: VideoOptions,
    *,
    text: bool = False,
    as_json: bool = False,
    fast: tuple[str, ...] = (),
    runtime: Runtime | None = None,
) -> str:
    """Check a storyboard (a file, or YAML/JSON text when `text`) as a run with `fast`
    would, and return its plan as a creator reads it or (`as_json`) as `plan.plan_data`;
    nothing is loaded or written."""
    sb, models = read_storyboard(storyboard, opts, text=text, runtime=runtime)
    check_fast(models.video or models.image, fast)
    data = plan_data(sb, models, plan(sb, models, opts.clip_frames))
    return json.dumps(data, indent=2) if as_json else plan_summary(data)


def plan_request(
    req, limits: Limits, *, as_json: bool = False, runtime: Runtime | None = None
) -> str:
    """The plan of a checked `VideoRequest` (`plan_text`); nothing is loaded or written."""
    runtime = runtime or Runtime()
    return plan_text(json.dumps(req.storyboard), req.options(limits), text=True,
                     as_json=as_json, fast=runtime.fast, runtime=runtime)  # fmt: skip


def make_request(
    req,
    out_dir: str | Path,
    limits: Limits,
    *,
    runtime: Runtime | None = None,
    cancel: threading.Event | None = None,
    on_segment: Callable[[Segment, Path], None] | None = None,
) -> VideoResult:
    """A checked `VideoRequest` into a run folder and its video (`make_video`)."""
    return make_video(json.dumps(req.storyboard), out_dir, req.options(limits), text=True,
                      runtime=runtime, cancel=cancel, on_segment=on_segment)  # fmt: skip


def new_run_folder(out_dir: str | Path, *, claim: bool = True) -> RunFolder:
    """The folder a new run goes into, claimed for the run's life (made if needed); refused
    with one line if it is a file, holds a run or other work, or another run is writing
    into it. Without `claim` (a dry run) the same checks, and nothing is written."""
    from .files import check_writable_folder, folder_busy

    run = RunFolder(check_writable_folder(out_dir))
    _check_free_folder(run)
    if not claim:
        if folder_busy(run.root):
            raise ValueError(_busy_message(run))
        return run
    if not run.claim():
        raise ValueError(_busy_message(run))
    try:
        _check_free_folder(run)  # a run that ended just before the claim may have left one
    except ValueError:
        run.release()
        raise
    _remove_leftovers(run)  # of a run killed before its manifest existed
    return run


def make_video(
    storyboard: str | Path,
    out_dir: str | Path,
    opts: VideoOptions | None = None,
    *,
    runtime: Runtime | None = None,
    text: bool = False,
    cancel: threading.Event | None = None,
    on_segment: Callable[[Segment, Path], None] | None = None,
    pool: Any = None,
) -> VideoResult:
    """Turn a storyboard (a file, or YAML/JSON text when `text`) into a run folder + video;
    with a `scale.Pool`, the keyframes and clips are made on its Ray workers."""
    opts = opts or VideoOptions()
    runtime = runtime or Runtime()
    sb, models = read_storyboard(storyboard, opts, text=text, runtime=runtime)
    check_fast(models.video or models.image, runtime.fast)
    run = new_run_folder(out_dir)
    segments = plan(sb, models, opts.clip_frames)
    run.root.mkdir(parents=True, exist_ok=True)
    from .files import write_json

    write_json(run.storyboard_path, sb.to_dict())
    manifest = {
        "version": MANIFEST_VERSION,
        "reelchain": __version__,
        "status": "running",
        "mode": sb.mode,
        "model": models.video.spec if models.video else None,
        "image_model": models.image.spec,
        "clip_frames": opts.clip_frames,
        "batch_size": runtime.batch_size,  # a fixed size is kept on resume: same batches, same bits
        "fast": list(runtime.fast),
        "fps": sb.fps,
        "gen_fps": gen_rate(sb, models),  # the motion rate every clip is made at
        "frames": sb.total_frames,
        "video": None,
        "segments": [],
    }
    ctx = _Context(run, sb, models, opts, runtime, segments, manifest, cancel, on_segment, pool)
    ctx.save()
    return _execute(ctx)


def resume_video(
    run_dir: str | Path,
    *,
    reroll: int | None = None,
    seed: int | None = None,
    runtime: Runtime | None = None,
    opts: VideoOptions | None = None,
    cancel: threading.Event | None = None,
    on_segment: Callable[[Segment, Path], None] | None = None,
    pool: Any = None,
) -> VideoResult:
    """Finish an interrupted run; with `reroll`, make segment K (and what continues from
    it) again with a new seed, keep everything else, and stitch again."""
    run = RunFolder(Path(run_dir))
    if not run.root.is_dir():
        raise ValueError(f"resume: no such run folder {str(run_dir)!r}")
    if not run.claim():  # nothing is written to claim a folder that exists
        raise ValueError(
            f"resume: {run.root} is being run by another process right now; wait for it to "
            "end (resume it then if it did not finish)"
        )
    try:
        return _resume_claimed(run, reroll, seed, runtime, opts, cancel, on_segment, pool)
    finally:
        run.release()


def _remove_leftovers(run: RunFolder) -> None:
    """Temporary files of writes a killed run never finished (never at a final path). Only
    the run that holds the folder's claim calls this, so no other run's files are touched."""
    for folder in (run.root, run.root / "segments", run.root / "keyframes"):
        if folder.is_dir():
            remove_partials(folder)


def _execute(ctx: _Context) -> VideoResult:
    try:
        return _execute_plan(ctx)
    finally:
        ctx.close()


def _execute_plan(ctx: _Context) -> VideoResult:
    make_keyframes(ctx)
    todo = [s for s in ctx.segments if s.status != "done"]
    generated = len(todo)
    with tqdm(total=len(ctx.segments), initial=len(ctx.segments) - len(todo), desc="segments",
              unit="seg", file=sys.stderr, dynamic_ncols=True) as bar:  # fmt: skip
        if ctx.pool is not None and ctx.models.video is not None:
            todo = _relay(ctx, todo, bar)
        while todo:
            done = {s.index for s in ctx.segments if s.status == "done"}
            ready = [s for s in todo if s.depends is None or s.depends in done]
            # Every ready segment, up to `max_parallel` clips in memory at once, and at least
            # one per Ray worker so that none idles.
            workers = len(ctx.pool.workers) if ctx.pool is not None else 0
            wave = ready[: max(1, ctx.opts.max_parallel, workers)]
            _generate_wave(ctx, wave)
            bar.update(len(wave))
            todo = [s for s in todo if s.status != "done"]
    return _finish(ctx, generated)


def _relay(ctx: _Context, todo: list[Segment], bar) -> list[Segment]:
    """On Ray, the segments as a relay (`relay.relay`): each goes out the moment what it
    starts from is written. Out of memory, the rest go in waves, which shorten clips."""
    ref = ctx.models.video
    ctx.maker(ref, "video")  # the workers load the model, and the manifest says where

    def accept(seg: Segment, clip: np.ndarray, attempt: int, extra: Any) -> bool:
        if extra is not None:
            ctx.extras[seg.index] = extra
        return _accept(ctx, seg, clip, attempt)

    try:
        relay(ctx.pool, ref, todo, item=lambda seg, attempt: _clip_item(ctx, seg, attempt),
              accept=accept, write=ctx.write_later, cancel=ctx.cancel,
              limit=max(ctx.opts.max_parallel, len(ctx.pool.workers)),
              on_written=lambda seg: bar.update(1))  # fmt: skip
    except OutOfMemory:
        ctx.flush()
    except BaseException:
        ctx.flush(raising=False)  # clips already made are written before the error leaves
        raise
    return [s for s in todo if s.status != "done"]


def _conditioning(ctx: _Context, seg: Segment, frames: bool = True) -> list[np.ndarray]:
    """The frames a segment starts from: its shot's keyframe, or the previous tail (not
    `frames`: the keyframe, which a section of FramePack reads with its state)."""
    if seg.depends is None or not frames:
        return [load_png(ctx.run.keyframe(seg.shot))]
    prev = ctx.segments[seg.depends]
    return [load_png(ctx.run.tail(prev.index, i)) for i in range(prev.holdback or 1)]


def _generate_wave(ctx: _Context, wave: list[Segment]) -> None:
    """Make a wave of segments; each is checked the moment its clip exists and written on
    the writer thread while the next call runs. The wave waits for its writes before it
    ends, also on an error, so a crash or a cancel mid-wave keeps every clip already made."""
    try:
        _generate_attempts(ctx, wave)
    except BaseException:
        ctx.flush(raising=False)  # clips already made are written before the error leaves
        raise
    ctx.flush()  # the next wave conditions on these segments' tails


def _generate_attempts(ctx: _Context, wave: list[Segment]) -> None:
    pending = list(wave)
    for attempt in range(MAX_TRIES):
        if not pending:
            return
        bad: list[Segment] = []

        def keep(seg: Segment, clip: np.ndarray, attempt: int = attempt, bad=bad) -> None:
            if _accept(ctx, seg, clip, attempt):
                ctx.write_later(seg, clip)
            else:
                bad.append(seg)

        _generate_or_shorten(ctx, pending, attempt, keep, bad)
        pending = bad


def _accept(ctx: _Context, seg: Segment, clip: np.ndarray, attempt: int) -> bool:
    """Whether a segment's clip is kept: NaN, black or frozen frames are made again with the
    next seed (False), and after `MAX_TRIES` the segment is marked failed (one line)."""
    problems = drift.check_frames(clip)
    seg.tries = attempt + 1
    if problems and attempt + 1 < MAX_TRIES:
        log.warning("segment %d: %s; trying again", seg.index, problems[0].detail)
        return False
    if problems:
        seg.status = "failed"
        seg.drift = {"problems": [p.kind for p in problems]}
        ctx.save()
        raise RuntimeError(
            f"segment {seg.index} (shot {seg.shot}): {problems[0].kind} frames after "
            f"{MAX_TRIES} tries; reroll it with --resume DIR --reroll {seg.index}"
        )
    if attempt:  # the seed that made it: made again, it makes the same frames
        seg.seed = _retry_seed(seg.seed, attempt)
    return True


def _generate_or_shorten(
    ctx: _Context,
    segs: list[Segment],
    attempt: int,
    keep: Callable[[Segment, np.ndarray], None],
    bad: list[Segment],
) -> None:
    """The last rung of the out-of-memory ladder: fewer frames per clip.

    When a clip does not fit even at batch 1 with every memory saver on, each failing
    segment is made with about half the frames; the stitcher still gives it the same
    output frames (more interpolation), so the video keeps its length. The new counts go
    into the manifest, so a resume makes the same segments.
    """
    while True:
        try:
            return _generate(ctx, segs, attempt, keep)
        except OutOfMemory:
            ctx.flush()  # which clips are done is known once their writes finish
            segs = [s for s in segs if s.status != "done" and s not in bad]
            if ctx.models.video is None or not _shorten(ctx, segs):
                raise


def _shorten(ctx: _Context, segs: list[Segment]) -> bool:
    """Halve the failing segments' clips where the model takes shorter ones (a learned
    table over time fixes CogVideoX-5B's at 49: it is never shortened)."""
    ref = ctx.models.video
    if ref.preset.fixed_frames or ref.family.sections:
        return False
    changed = False
    for seg in segs:
        new = ref.legal_frames(seg.frames // 2 + 1)
        if new < seg.frames and new > seg.overlap + seg.holdback:
            step = f"segment {seg.index}: frames {seg.frames}→{new}"
            log.warning("out of memory; %s", step)
            ctx.manifest.setdefault("ladder", []).append(step)
            # Fewer frames, all kept: the stitcher retimes them to the segment's share.
            seg.frames, seg.drop, changed = new, 0, True
    if changed:
        ctx.save()
    return changed


def _retry_seed(seed: int, attempt: int) -> int:
    return (seed + 104729 * attempt) % 2**32


def _generate(
    ctx: _Context, segs: list[Segment], attempt: int, keep: Callable[[Segment, np.ndarray], None]
) -> None:
    """Make the segments' clips; `keep(segment, clip)` runs as each clip exists."""
    if ctx.models.video is None:
        for seg, clip in zip(segs, _feedback(ctx, segs, attempt), strict=True):
            keep(seg, clip)
        return
    jobs = [_clip_item(ctx, seg, attempt) for seg in segs]
    ctx.clips(ctx.models.video, jobs, on_result=lambda i, clip: keep(segs[i], clip),
              on_extra=lambda i, extra: ctx.extras.__setitem__(segs[i].index, extra))  # fmt: skip


def _clip_item(ctx: _Context, seg: Segment, attempt: int) -> ClipItem:
    """A segment's call: what it starts from (its keyframe, the previous clip's last frames,
    or FramePack's state), what it ends on, and the seed of this attempt."""
    sb, p = ctx.sb, ctx.models.video.preset
    shot = sb.shots[seg.shot]
    # FramePack continues from the previous section's state, not from its frames.
    history = None
    if ctx.models.video.family.sections and seg.depends is not None:
        history = SectionState.load(ctx.run.state(seg.depends))
    cond = [Image.fromarray(f) for f in _conditioning(ctx, seg, frames=history is None)]
    last = None
    if seg.last_keyframe is not None:
        last = Image.fromarray(load_png(ctx.run.keyframe(seg.last_keyframe)))
    return ClipItem(
        prompt=shot.prompt,
        first=cond[-1] if len(cond) == 1 else cond[0],
        num_frames=seg.frames,
        width=sb.width,
        height=sb.height,
        steps=sb.steps or p.steps,
        guidance=p.guidance if sb.guidance is None else sb.guidance,
        seed=_retry_seed(seg.seed, attempt),
        fps=round(gen_rate(sb, ctx.models)),
        negative_prompt=shot.negative_prompt,
        last=last,
        last_index=None if last is None else seg.frames - seg.drop - 1,
        video=tuple(cond) if len(cond) > 1 else None,
        loras=loras_for(shot.loras, "video"),
        history=history,
    )


def warp(frame: np.ndarray, zoom: float, pan_x: float, pan_y: float, rotate: float) -> np.ndarray:
    """The feedback camera: zoom and rotate about the centre, then pan (pixels)."""
    import cv2

    h, w = frame.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rotate, zoom)
    m[0, 2] += pan_x
    m[1, 2] += pan_y
    return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _feedback(ctx: _Context, segs: list[Segment], attempt: int) -> list[np.ndarray]:
    """Deforum-style: each frame is image-to-image on the previous one, warped by the
    shot's motion. Frame t of every segment in the wave runs in one batch."""
    sb = ctx.sb
    p = ctx.models.image.preset
    steps = sb.steps or max(p.steps, 2)
    guidance = p.guidance if sb.guidance is None else sb.guidance
    prev = [_conditioning(ctx, s)[-1] for s in segs]
    out: list[list[np.ndarray]] = [[] for _ in segs]
    # Motion is per output frame; a generated frame spans the shot's stretch of them.
    fallback = sb.fps / gen_rate(sb, ctx.models)
    stretch = [stretch_of(ctx.segments, s.shot, fallback) for s in segs]
    for i, seg in enumerate(segs):
        if seg.depends is None:  # a shot's first frame is its keyframe
            out[i].append(prev[i].astype(np.float32) / 255.0)
    for t in range(max(s.frames for s in segs)):
        active = [i for i, s in enumerate(segs) if len(out[i]) < s.frames]
        if not active:
            break
        jobs = []
        for i in active:
            seg, shot = segs[i], sb.shots[segs[i].shot]
            m, k = shot.motion, stretch[i]
            init = warp(prev[i], m.zoom**k, m.pan_x * k, m.pan_y * k, m.rotate * k)
            jobs.append(
                ImageItem(shot.prompt, shot.negative_prompt, sb.width, sb.height, steps, guidance,
                         _retry_seed((seg.seed + t) % 2**32, attempt), Image.fromarray(init),
                         shot.strength, loras=loras_for(shot.loras, "image"))
            )  # fmt: skip
        if ctx.cancel is not None and ctx.cancel.is_set():
            raise Cancelled("cancelled")
        results = ctx.images(ctx.models.image, jobs)
        for i, arr in zip(active, results, strict=True):
            out[i].append(arr)
            prev[i] = drift.to_uint8(arr)
    return [np.stack(frames) for frames in out]


def _write_segment(ctx: _Context, seg: Segment, clip: np.ndarray) -> None:
    """Colour-match, blend the overlap, write the segment file and its tail, then the manifest."""
    t0 = time.perf_counter()
    sb, run = ctx.sb, ctx.run
    frames = drift.to_uint8(clip[: len(clip) - seg.drop])  # a cut tail is never written
    anchor = load_png(run.keyframe(seg.shot))
    report: dict[str, Any] = {"before": drift.measure(frames[0], anchor).as_dict()}
    if sb.color_match:
        frames = drift.match_colors(frames, anchor)
    report["join"] = drift.measure(frames[0], anchor).as_dict()
    report["end"] = drift.measure(frames[-1], anchor).as_dict()
    report["corrected"] = sb.color_match
    if seg.overlap and seg.depends is not None:
        tail = _conditioning(ctx, seg)
        o = min(len(tail), seg.overlap, len(frames))
        for i in range(o):  # fade from the previous segment's frames into this one's
            w = (i + 1) / (o + 1)
            frames[i] = np.rint((1 - w) * tail[i] + w * frames[i]).astype(np.uint8)
    keep = frames[: len(frames) - seg.holdback] if seg.holdback else frames
    for i, f in enumerate(frames[len(frames) - (seg.holdback or 1) :]):
        save_png(f, run.tail(seg.index, i))
    path = run.segment(seg.index)
    extra = ctx.extras.pop(seg.index, None)  # kept before the segment counts as done
    if isinstance(extra, SectionState):
        extra.save(run.state(seg.index))
    elif extra is not None:
        write_clip_sound(path.with_suffix(".wav"), extra.samples, extra.rate)
    with VideoWriter(path, sb.fps, sb.width, sb.height, quality="segment") as w:
        w.write(keep)
    seg.status, seg.file, seg.drift = "done", run.rel(path), report
    ctx.save()
    events.emit(events.SegmentWritten(seg.index, time.perf_counter() - t0))
    if ctx.on_segment:
        ctx.on_segment(seg, path)


def _finish(ctx: _Context, generated: int) -> VideoResult:
    sb, run = ctx.sb, ctx.run
    by_shot = [[s for s in ctx.segments if s.shot == k] for k in range(len(sb.shots))]
    parts = []
    for mine in by_shot:  # a shot's files retimed as one stream
        files = [run.root / s.file for s in mine]
        shown = sum(s.n_out for s in mine) - mine[-1].fade_out
        parts.append(Part(files[0], shown, mine[-1].fade_out, tuple(files[1:])))
    audio = _sound_of(ctx, by_shot)
    # The sound the video carries, for the editor's timeline too.
    ctx.manifest["sound"] = None if audio is None else str(audio)
    video = run.root / f"video.{sb.format}"
    # With cards, captions or a voice, the stitch is kept beside the finished video.
    stitched = run.root / f"stitched.{sb.format}" if sb.finishing else video
    t0 = time.perf_counter()
    result = stitch(parts, stitched, sb.fps, audio=audio, poster=run.root / "poster.jpg")
    events.emit(events.Stitched(time.perf_counter() - t0))
    if sb.finishing:
        finish(stitched, video, from_storyboard(sb), shots=shot_times(sb))
        info = probe(video)
        result = dataclasses.replace(result, frames=info.frames)
        ctx.manifest.update(stitched=stitched.name,
                            srt=video.with_suffix(".srt").name if any(s.caption for s in sb.shots) else None)  # fmt: skip
    ctx.manifest.update(status="done", video=video.name, poster="poster.jpg")
    ctx.save()
    # The cut for an editor: the segment files with their in/out points and dissolves.
    ctx.manifest["timelines"] = [p.name for p in write_timelines(run.root)]
    ctx.save()
    return VideoResult(run.root, video, result.poster, result.frames, result.fps,
                       result.width, result.height, len(ctx.segments), generated)  # fmt: skip


def _sound_of(ctx: _Context, by_shot: list[list[Segment]]) -> Path | None:
    """The video's sound: the storyboard's music, the model's own soundtrack, or both mixed
    (`audio_mix`); None for a silent video. `by_shot`: each shot's segments."""
    sb, run = ctx.sb, ctx.run
    music = Path(sb.audio) if sb.audio else None
    if music is not None and sb.audio_mix == "replace":
        return music
    shots = [[(run.segment(s.index).with_suffix(".wav"), s.overlap, s.frames - s.drop, s.n_out)
              for s in mine] for mine in by_shot]  # fmt: skip
    fades = [mine[-1].fade_out for mine in by_shot]
    own = write_soundtrack(shots, fades, gen_rate(sb, ctx.models), sb.fps,
                           run.root / "soundtrack.wav")  # fmt: skip
    if own is None or music is None:
        return own or music
    return mix_sounds(own, music, run.root / "soundtrack-mix.wav")


# ---------------------------------------------------------------------------------------
# Checking a run folder before a run starts or resumes


def _check_free_folder(run: RunFolder) -> None:
    """Refuse a folder that already holds work: a run (resume it), thumbnails, or another
    tool's manifest.json. The advice differs, so the kind of manifest is read."""
    from .files import read_json
    from .runs import THUMBNAILS_KIND

    if not run.manifest_path.exists():
        return
    try:
        data = read_json(run.manifest_path)
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("kind") == THUMBNAILS_KIND:
        raise ValueError(f"out: {run.root} holds thumbnails; choose another --out for the video")
    if isinstance(data, dict) and data.get("version") == MANIFEST_VERSION and "segments" in data:
        raise ValueError(
            f"out: {run.root} already holds a run; use --resume {run.root} or another --out"
        )
    raise ValueError(
        f"out: {run.root} holds a manifest.json that is not a video run's; choose another --out"
    )


def _busy_message(run: RunFolder) -> str:
    return (
        f"out: {run.root} is being written by another run right now; wait for it to end, "
        "or choose another --out"
    )


def _saved_storyboard(run: RunFolder, opts: VideoOptions) -> Storyboard:
    """storyboard.json of a run, or one line saying the run cannot continue without it."""
    from .files import read_json

    try:
        return Storyboard.from_dict(read_json(run.storyboard_path), limits=opts.limits)
    except FileNotFoundError:
        problem = "is missing"
    except (OSError, ValueError) as exc:
        problem = f"is damaged ({exc})"
    raise ValueError(
        f"resume: storyboard.json {problem}; the run cannot continue (start it again with "
        "another --out)"
    )


def _saved_segments(manifest: dict[str, Any]) -> list[Segment]:
    """The manifest's segments, or one line naming the first that does not read."""
    segments = []
    for k, d in enumerate(manifest["segments"]):
        try:
            seg = Segment.from_dict(d)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"resume: manifest.json is damaged (segment {k}: {exc!r})") from None
        if seg.index != k or (seg.depends is not None and not 0 <= seg.depends < k):
            raise ValueError(f"resume: manifest.json is damaged (segment {k} is out of order)")
        segments.append(seg)
    if not segments:
        raise ValueError("resume: manifest.json is damaged (it lists no segments)")
    return segments


def _recheck_segments(run: RunFolder, segments: list[Segment]) -> None:
    """A segment the manifest calls done is made again (with its own seed, so with the same
    frames) when its file is gone or does not decode to its frames (truncated, damaged)."""
    from .runs import decoded_frames

    for seg in segments:
        if seg.status != "done":
            continue
        path = run.segment(seg.index)  # where the run writes it: a manifest names no other file
        if seg.file != run.rel(path) or not path.is_file():
            problem = "is missing"
        elif decoded_frames(path) != seg.frames - seg.holdback - seg.drop:
            problem = "is damaged"
        else:
            continue
        log.warning("segment %d: its file %s; making it again", seg.index, problem)
        seg.status = "pending"


def _recheck_conditioning(run: RunFolder, segments: list[Segment], sections: bool) -> None:
    """What the segments left to make start from must read whole. A finished segment whose
    tail PNGs (or, for a family that makes `sections`, its state) are gone or damaged is
    made again with its own seed (its frames, so its tails, come out the same), and so on
    up the chain; a damaged keyframe is removed so that it is
    made again like a missing one."""
    from .runs import readable_png

    changed = True
    while changed:
        changed = False
        todo = [s for s in segments if s.status != "done"]
        for dep in {s.depends for s in todo if s.depends is not None}:
            prev = segments[dep]
            tails = [run.tail(prev.index, i) for i in range(prev.holdback or 1)]
            kept = all(readable_png(t) for t in tails)
            kept = kept and (not sections or readable_state(run.state(prev.index)))
            if prev.status == "done" and not kept:
                what = "last frames or state" if sections else "last frames"
                log.warning("segment %d: its %s are gone; making it again", dep, what)
                prev.status, changed = "pending", True
    todo = [s for s in segments if s.status != "done"]
    shots = {s.shot for s in todo} | {s.last_keyframe for s in todo if s.last_keyframe is not None}
    for shot in shots:
        path = run.keyframe(shot)
        if path.is_file() and not readable_png(path):
            log.warning("keyframe %d is damaged; making it again", shot)
            path.unlink()


def _resume_claimed(
    run: RunFolder,
    reroll: int | None,
    seed: int | None,
    runtime: Runtime | None,
    opts: VideoOptions | None,
    cancel: threading.Event | None,
    on_segment: Callable[[Segment, Path], None] | None,
    pool: Any = None,
) -> VideoResult:
    """`resume_video` once the folder is claimed: the manifest and what is on disk decide
    what is made again."""
    manifest = run.load_manifest()
    opts = opts or VideoOptions()
    opts = dataclasses.replace(
        opts,
        model=manifest["model"] or manifest["image_model"],
        image_model=manifest["image_model"],
        clip_frames=manifest.get("clip_frames"),
    )
    sb = _saved_storyboard(run, opts)
    models = resolve_models(opts.model, sb.mode, opts.image_model)
    segments = _saved_segments(manifest)
    _recheck_segments(run, segments)  # a finished segment that is gone or damaged: again
    if reroll is not None:
        if not 0 <= reroll < len(segments):
            raise ValueError(f"reroll: segment {reroll} does not exist (0 to {len(segments) - 1})")
        if seed is not None and not 0 <= seed < 2**32:
            raise ValueError(f"seed: must be from 0 to {2**32 - 1} (got {seed})")
        target = segments[reroll]
        target.seed = seed if seed is not None else (target.seed + 1) % 2**32
        redo = {reroll}
        for s in segments:  # everything that continues from a rerolled segment
            if s.depends in redo:
                redo.add(s.index)
        for i in redo:
            segments[i].status = "pending"
            segments[i].tries = 0
    elif seed is not None:
        raise ValueError("seed: use it with --reroll K")
    sections = models.video is not None and models.video.family.sections
    _recheck_conditioning(run, segments, sections)  # what those left to make start from
    runtime = runtime or Runtime()
    if runtime.batch_size is None and manifest.get("batch_size"):
        runtime = dataclasses.replace(runtime, batch_size=manifest["batch_size"])
    if not runtime.fast and manifest.get("fast"):  # the same fast paths, the same frames
        runtime = dataclasses.replace(runtime, fast=tuple(manifest["fast"]))
    check_fast(models.video or models.image, runtime.fast)
    _remove_leftovers(run)
    manifest["status"] = "running"
    ctx = _Context(run, sb, models, opts, runtime, segments, manifest, cancel, on_segment, pool)
    ctx.save()
    return _execute(ctx)
