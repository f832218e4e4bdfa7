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
import logging
import math
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import __version__, drift
from .batching import OutOfMemory, Planner
from .clips import Cancelled, ClipJob, generate_clips
from .files import remove_partials
from .images import ImageJob, check_size, generate
from .models import ModelRef, load, resolve_model
from .runs import MANIFEST_VERSION, RunFolder, load_png, save_png
from .settings import Limits, Runtime
from .stitch import Part, VideoWriter, audio_duration, stitch
from .storyboard import Storyboard, StoryboardError, StoryboardSource, read_storyboard_file

log = logging.getLogger(__name__)

FEEDBACK_CHUNK = 8  # generated frames per segment file in feedback mode
MAX_TRIES = 3  # a clip with broken (NaN, black, frozen) frames is made again with new seeds


@dataclass(frozen=True)
class VideoOptions:
    """Options of a video run that are not in the storyboard (the faces set these)."""

    model: str | None = None  # wins over the storyboard's `model`
    mode: str | None = None  # wins over the storyboard's `mode`
    image_model: str | None = None  # keyframes and feedback; None: tiny twin or sd-turbo
    clip_frames: int | None = None  # frames per clip; None: the model's default
    seed: int | None = None  # wins over the storyboard's `seed` (shots' own seeds stay)
    max_parallel: int = 8  # clips held in memory at once (bounds RAM)
    limits: Limits = field(default_factory=Limits)


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


@dataclass(frozen=True)
class Models:
    video: ModelRef | None  # None in feedback mode
    image: ModelRef  # keyframes, and every frame in feedback mode


def resolve_models(spec: str | None, mode: str, image_spec: str | None) -> Models:
    if mode == "feedback":
        ref = resolve_model(spec, "image")
        if ref.family.kind != "image":
            raise ValueError(
                f"model: feedback mode needs an image model, {ref.label} is a video model "
                "(use mode continue or keyframes, or an image model such as sd-turbo)"
            )
        return Models(None, ref)
    ref = resolve_model(spec, "video")
    if ref.family.kind != "video":
        raise ValueError(
            f"model: {ref.label} is an image model; use mode feedback, or a video model "
            "such as ltx-video (see `python -m pipelines models`)"
        )
    default_image = "tiny-image" if ref.kind == "twin" else None
    return Models(ref, resolve_model(image_spec or default_image, "image"))


def read_storyboard(
    source: str | Path, opts: VideoOptions, *, text: bool = False
) -> tuple[Storyboard, Models]:
    """Load a storyboard (a file, or text when `text`), with the model's size and fps as
    defaults, CLI options applied, and every model rule checked."""
    limits = opts.limits
    source = StoryboardSource(str(source), None, None) if text else read_storyboard_file(source)
    # The storyboard names the model, and the model gives the defaults for what the
    # storyboard leaves out (size, fps): read once, parse twice (microseconds).
    raw = source.parse(limits=limits)
    mode = opts.mode or raw.mode
    models = resolve_models(opts.model or raw.model, mode, opts.image_model)
    p = (models.video or models.image).preset
    defaults = {"width": p.width, "height": p.height, "fps": p.fps or 8}
    sb = source.parse(limits=limits, defaults=defaults)
    changes = {"mode": mode, "model": (models.video or models.image).spec}
    if opts.seed is not None:
        changes["seed"] = opts.seed
    sb = sb.replace(limits=limits, **changes)
    check_storyboard(sb, models, opts)
    return sb, models


def check_storyboard(sb: Storyboard, models: Models, opts: VideoOptions) -> None:
    check_size(models.image, sb.width, sb.height)
    if models.video:
        check_size(models.video, sb.width, sb.height)
        fam = models.video.family
        if opts.clip_frames is not None and opts.clip_frames < 2:
            raise ValueError(f"clip-frames: must be at least 2 (got {opts.clip_frames})")
        if opts.clip_frames is not None and fam.legal_frames(opts.clip_frames) != opts.clip_frames:
            raise ValueError(
                f"clip-frames: {models.video.label} needs {fam.frame_step}k+1 frames "
                f"(got {opts.clip_frames}; use {fam.legal_frames(opts.clip_frames)})"
            )
    if sb.audio:  # an unreadable track fails now, not after the whole video is made
        try:
            audio_duration(Path(sb.audio))
        except ValueError as exc:
            raise StoryboardError("audio", str(exc).removeprefix("audio: ")) from None
    if sb.total_frames > opts.limits.max_frames:
        raise ValueError(
            f"shots: {sb.total_frames} frames is over the limit of {opts.limits.max_frames}"
        )


# ---------------------------------------------------------------------------------------
# 2. The plan


@dataclass
class Segment:
    """One generation call's worth of video, and where its frames land in the output."""

    index: int
    shot: int
    part: int  # clip number within the shot
    seed: int
    frames: int  # frames the call makes
    overlap: int  # frames at its start that continue the previous segment (0: from keyframe)
    holdback: int  # frames at its end kept out of its file: the next segment blends them in
    depends: int | None  # segment it continues from
    last_keyframe: int | None  # shot whose keyframe it must end on (keyframes mode)
    n_out: int = 0
    fade_out: int = 0
    first_out: int = 0
    status: str = "pending"
    file: str | None = None
    drift: dict[str, Any] | None = None
    tries: int = 0

    @property
    def unique(self) -> int:
        return self.frames - self.holdback

    def to_dict(self, sb: Storyboard) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["frames"] = [self.first_out, self.first_out + self.n_out + self.fade_out - 1]
        d["generated_frames"] = self.frames
        d["seconds"] = round((self.n_out + self.fade_out) / sb.fps, 4)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Segment:
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in d.items() if k in names}
        data["frames"] = d["generated_frames"]
        return cls(**data)


def _crossfades(sb: Storyboard, models: Models) -> list[int]:
    """Output frames each shot crossfades into the next (0 for a cut)."""
    counts = sb.shot_frames()
    fades = []
    forced = (
        sb.mode == "keyframes" and models.video is not None and not models.video.takes("last_frame")
    )
    for k, shot in enumerate(sb.shots):
        if k == len(sb.shots) - 1:
            fades.append(0)
            continue
        seconds = shot.transition_seconds if shot.transition == "crossfade" else 0.0
        if forced and not seconds:
            # Without a last-frame condition, keyframes mode joins shots by crossfading.
            seconds = min(0.5, shot.seconds / 2, sb.shots[k + 1].seconds / 2)
        d = round(seconds * sb.fps)
        fades.append(max(0, min(d, counts[k] - 1, counts[k + 1])))
    return fades


def plan(sb: Storyboard, models: Models, clip_frames: int | None = None) -> list[Segment]:
    """Cut every shot into segments and fix each segment's output frames."""
    counts = sb.shot_frames()
    fades = _crossfades(sb, models)
    segments: list[Segment] = []
    first_out = 0
    for k, shot in enumerate(sb.shots):
        total = counts[k] + fades[k]  # output frames this shot renders (tail overlaps next)
        # Generated frames for exactly `interpolate`× (fractional); the counts made are the
        # legal ones nearest to it, and the stitcher retimes them to the shot's length.
        gen = max(2.0, (total - 1) / sb.interpolate + 1)
        sizes, overlap = _split(gen, models, clip_frames)
        start = len(segments)
        for c, n in enumerate(sizes):
            last = c == len(sizes) - 1
            ends_on_keyframe = (
                last
                and sb.mode == "keyframes"
                and k + 1 < len(sb.shots)
                and models.video is not None
                and models.video.takes("last_frame")
            )
            seg = Segment(
                index=len(segments),
                shot=k,
                part=c,
                seed=(shot.seed + 7919 * c) % 2**32,
                frames=n,
                overlap=0 if c == 0 else overlap,
                # A clip that ends on the next shot's keyframe leaves that frame to the next
                # shot, which starts on it: on a cut, showing it twice would be a held frame.
                holdback=overlap if not last else int(ends_on_keyframe and not fades[k]),
                depends=None if c == 0 else len(segments) - 1,
                last_keyframe=k + 1 if ends_on_keyframe else None,
            )
            segments.append(seg)
        shot_segments = segments[start:]
        # The first segment takes the previous shot's crossfade in; the last one keeps its
        # own crossfade out on top of at least one frame of its own.
        fade_in = fades[k - 1] if k else 0
        mins = [1] * len(shot_segments)
        mins[0] = max(1, fade_in)
        mins[-1] = fades[k] + (max(1, fade_in) if len(shot_segments) == 1 else 1)
        shares = _allocate(total, [s.unique for s in shot_segments], mins)
        for seg, share in zip(shot_segments, shares, strict=True):
            seg.first_out = first_out
            seg.n_out = share
            first_out += share
        shot_segments[-1].n_out -= fades[k]
        shot_segments[-1].fade_out = fades[k]
        first_out -= fades[k]
    return segments


def _split(gen: float, models: Models, clip_frames: int | None) -> tuple[list[int], int]:
    """Frames per call for a shot needing about `gen` generated frames, and the overlap
    between calls.

    The shot's total is the nearest the model's legal counts allow, on either side: the
    stitcher retimes a shot's frames to its output length, so a few frames fewer means a
    little more interpolation and a few more a little less, while rounding always up (8k+1
    turns 36.5 frames into 41) spends up to a fifth more of the GPU on frames it then squeezes.
    """
    if models.video is None:  # feedback: chunks of frames, no overlap (each is new)
        total = _nearest([c for c in (math.floor(gen), math.ceil(gen)) if c >= 2], gen)
        n = math.ceil(total / FEEDBACK_CHUNK)  # even chunks: no one-frame file at the end
        return [total // n + (i < total % n) for i in range(n)], 0
    fam = models.video.family
    size = fam.legal_frames(clip_frames or models.video.preset.frames)
    # Families that take video continue from a run of frames (blended); others from one.
    run = fam.frame_step + 1
    overlap = run if models.video.takes("video") and size >= 2 * run + 1 else 1
    least = fam.legal_frames(2)
    if fam.legal_frames(math.ceil(gen)) <= size:
        return [_nearest([c for c in fam.legal_around(gen) if c >= least], gen)], overlap
    if size <= overlap:
        raise ValueError(f"clip-frames: {size} frames cannot continue a clip (use more)")
    sizes = [size]
    have = size  # unique frames so far
    while have < gen:
        x = gen - have + overlap  # what the next call would need, its overlap included
        if fam.legal_frames(math.ceil(x)) > size:
            sizes.append(size)
            have += size - overlap
            continue
        # The last call, or none (a count of `overlap` adds nothing) when that is nearer, or
        # when stopping keeps the shot within a tenth of `interpolate`× (a whole call for a
        # frame or two costs more than slightly more interpolation).
        if math.log((gen - 1) / (have - 1)) > math.log(1.1):
            c = _nearest([overlap] + [c for c in fam.legal_around(x) if c > overlap], gen,
                         have - overlap)  # fmt: skip
            if c > overlap:
                sizes.append(c)
        break
    return sizes, overlap


def _nearest(counts: list[int], gen: float, offset: int = 0) -> int:
    """The count c whose shot total (offset + c generated frames) is nearest to `gen`, by
    the ratio of frame intervals (what interpolation has to stretch); ties go to fewer."""
    return min(sorted(set(counts)), key=lambda c: abs(math.log((offset + c - 1) / (gen - 1))))


def _allocate(total: int, weights: list[int], mins: list[int]) -> list[int]:
    """Split `total` output frames by weight (largest remainder), each at least its minimum."""
    n = len(weights)
    if total < sum(mins):
        raise ValueError("shots: a shot is too short for its crossfades; lengthen it or its fps")
    wsum = sum(weights)
    exact = [total * w / wsum for w in weights]
    shares = [max(m, int(x)) for m, x in zip(mins, exact, strict=True)]
    order = sorted(range(n), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    i = 0
    while sum(shares) < total:
        shares[order[i % n]] += 1
        i += 1
    while sum(shares) > total:
        j = max((i for i in range(n) if shares[i] > mins[i]), key=shares.__getitem__)
        shares[j] -= 1
    return shares


# ---------------------------------------------------------------------------------------
# 3.–5. Running a plan


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
    planner: Planner = field(init=False)
    # Finished clips are written (colour match, drift, encode, tails) on one writer thread
    # while the next call runs; `flush` waits for them.
    _writer: ThreadPoolExecutor | None = field(default=None, init=False)
    _writes: list[Future] = field(default_factory=list, init=False)
    _save_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.planner = Planner(self.runtime, max_batch=self.opts.limits.max_batch)

    def write_later(self, seg: Segment, clip: np.ndarray) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="reelchain-writer")
        self._writes.append(self._writer.submit(_write_segment, self, seg, clip))

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
        self.flush(raising=False)
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None

    def load(self, ref: ModelRef, task: str):
        """Load (or reuse) a model, and record where and how it runs in the manifest."""
        loaded = load(ref, task, self.runtime)
        self.manifest.setdefault("placement", {})[task] = loaded.placement.describe()
        return loaded

    def save(self) -> None:
        with self._save_lock:  # the writer thread saves too
            self.manifest["segments"] = [s.to_dict(self.sb) for s in self.segments]
            self.run.save_manifest(self.manifest)


def plan_summary(sb: Storyboard, models: Models, segments: list[Segment]) -> str:
    """The plan as a creator reads it before spending GPU time: one line per call (what it
    makes, what it becomes), then the totals. Nothing is loaded or written."""

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    video = models.video.spec if models.video else f"{models.image.spec} (image-to-image)"
    lines = [
        f"{count(len(sb.shots), 'shot')}, {sb.total_frames} frames at {sb.fps} fps "
        f"({sb.total_frames / sb.fps:.1f} s), {sb.width}×{sb.height}, mode {sb.mode}; "
        f"video {video}, keyframes {models.image.spec}",
        "segment  shot  frames  continues  shown    gen fps",
    ]
    for seg in segments:
        fps = _clip_fps(sb, segments, seg.shot) if models.video else "-"
        cont = "-" if seg.depends is None else f"{seg.depends} ({seg.overlap})"
        lines.append(f"{seg.index:>7}  {seg.shot:>4}  {seg.frames:>6}  {cont:>9}  "
                     f"{seg.n_out + seg.fade_out:>5}  {fps:>9}")  # fmt: skip
    generated = sum(s.frames for s in segments)
    how = (count(len(segments), "video call") if models.video else
           count(len(segments), "segment") + " (one image-to-image call a frame)")  # fmt: skip
    lines.append(
        f"{how} make{'s' if len(segments) == 1 else ''} {generated} frames for {sb.total_frames} output frames "
        f"({sb.total_frames / generated:.2f} output frames per generated frame, interpolate "
        f"{sb.interpolate}), after {count(len(sb.shots), 'keyframe image')}"
    )
    return "\n".join(lines)


def plan_text(storyboard: str | Path, opts: VideoOptions, *, text: bool = False) -> str:
    """Check a storyboard (a file, or YAML/JSON text when `text`) and return its plan as
    `plan_summary` writes it; nothing is loaded or written."""
    sb, models = read_storyboard(storyboard, opts, text=text)
    return plan_summary(sb, models, plan(sb, models, opts.clip_frames))


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
) -> VideoResult:
    """Turn a storyboard (a file, or YAML/JSON text when `text`) into a run folder + video."""
    opts = opts or VideoOptions()
    runtime = runtime or Runtime()
    sb, models = read_storyboard(storyboard, opts, text=text)
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
        "frames": sb.total_frames,
        "video": None,
        "segments": [],
    }
    ctx = _Context(run, sb, models, opts, runtime, segments, manifest, cancel, on_segment)
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
        return _resume_claimed(run, reroll, seed, runtime, opts, cancel, on_segment)
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
    _make_keyframes(ctx)
    todo = [s for s in ctx.segments if s.status != "done"]
    generated = len(todo)
    with tqdm(total=len(ctx.segments), initial=len(ctx.segments) - len(todo), desc="segments",
              unit="seg", file=sys.stderr, dynamic_ncols=True) as bar:  # fmt: skip
        while todo:
            done = {s.index for s in ctx.segments if s.status == "done"}
            ready = [s for s in todo if s.depends is None or s.depends in done]
            wave = ready[: max(1, ctx.opts.max_parallel)]
            _generate_wave(ctx, wave)
            bar.update(len(wave))
            todo = [s for s in todo if s.status != "done"]
    return _finish(ctx, generated)


def _make_keyframes(ctx: _Context) -> None:
    """One keyframe per shot (text-to-image, batched), each written as soon as it exists."""
    sb, run = ctx.sb, ctx.run
    missing = [k for k in range(len(sb.shots)) if not run.keyframe(k).is_file()]
    if not missing:
        return
    ref = ctx.models.image
    p = ref.preset
    steps = sb.steps if (sb.steps and ctx.models.video is None) else p.steps
    guidance = p.guidance if (sb.guidance is None or ctx.models.video) else sb.guidance
    jobs = [
        ImageJob(sb.shots[k].prompt, sb.shots[k].negative_prompt, sb.width, sb.height,
                 steps, guidance, sb.shots[k].seed)
        for k in missing
    ]  # fmt: skip
    loaded = ctx.load(ref, "text2img")

    def write(i: int, arr: np.ndarray) -> None:
        save_png(drift.to_uint8(arr), run.keyframe(missing[i]))

    with tqdm(total=len(jobs), desc="keyframes", file=sys.stderr, leave=False) as bar:

        def deliver(i, arr):
            write(i, arr)
            bar.update(1)
            if ctx.cancel is not None and ctx.cancel.is_set():
                raise Cancelled("cancelled")  # finished keyframes are on disk already

        generate(loaded, jobs, runtime=ctx.runtime, planner=ctx.planner, on_result=deliver)


def _conditioning(ctx: _Context, seg: Segment) -> list[np.ndarray]:
    """The frames a segment starts from: its shot's keyframe, or the previous tail."""
    if seg.depends is None:
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
            problems = drift.check_frames(clip)
            seg.tries = attempt + 1
            if problems and attempt + 1 < MAX_TRIES:
                log.warning("segment %d: %s; trying again", seg.index, problems[0].detail)
                bad.append(seg)
                return
            if problems:
                seg.status = "failed"
                seg.drift = {"problems": [p.kind for p in problems]}
                ctx.save()
                raise RuntimeError(
                    f"segment {seg.index} (shot {seg.shot}): {problems[0].kind} frames after "
                    f"{MAX_TRIES} tries; reroll it with --resume DIR --reroll {seg.index}"
                )
            ctx.write_later(seg, clip)

        _generate_or_shorten(ctx, pending, attempt, keep, bad)
        pending = bad


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
    fam = ctx.models.video.family
    changed = False
    for seg in segs:
        new = fam.legal_frames(seg.frames // 2 + 1)
        if new < seg.frames and new > seg.overlap + seg.holdback:
            step = f"segment {seg.index}: frames {seg.frames}→{new}"
            log.warning("out of memory; %s", step)
            ctx.manifest.setdefault("ladder", []).append(step)
            seg.frames, changed = new, True
    if changed:
        ctx.save()
    return changed


def _retry_seed(seed: int, attempt: int) -> int:
    return (seed + 104729 * attempt) % 2**32


def _generate(
    ctx: _Context, segs: list[Segment], attempt: int, keep: Callable[[Segment, np.ndarray], None]
) -> None:
    """Make the segments' clips; `keep(segment, clip)` runs as each clip exists."""
    sb = ctx.sb
    if ctx.models.video is None:
        for seg, clip in zip(segs, _feedback(ctx, segs, attempt), strict=True):
            keep(seg, clip)
        return
    p = ctx.models.video.preset
    steps = sb.steps or p.steps
    guidance = p.guidance if sb.guidance is None else sb.guidance
    jobs = []
    for seg in segs:
        shot = sb.shots[seg.shot]
        cond = [Image.fromarray(f) for f in _conditioning(ctx, seg)]
        last = (
            Image.fromarray(load_png(ctx.run.keyframe(seg.last_keyframe)))
            if seg.last_keyframe is not None
            else None
        )
        jobs.append(
            ClipJob(
                prompt=shot.prompt,
                first=cond[-1] if len(cond) == 1 else cond[0],
                num_frames=seg.frames,
                width=sb.width,
                height=sb.height,
                steps=steps,
                guidance=guidance,
                seed=_retry_seed(seg.seed, attempt),
                fps=_clip_fps(sb, ctx.segments, seg.shot),
                negative_prompt=shot.negative_prompt,
                last=last,
                video=tuple(cond) if len(cond) > 1 else None,
            )
        )
    loaded = ctx.load(ctx.models.video, "video")
    generate_clips(
        loaded,
        jobs,
        runtime=ctx.runtime,
        planner=ctx.planner,
        cancel=ctx.cancel,
        on_result=lambda i, clip: keep(segs[i], clip),
    )


def _stretch(sb: Storyboard, segments: list[Segment], shot: int) -> float:
    """Output frames per generated frame interval once the shot is retimed: `interpolate`
    give or take the rounding to legal frame counts, one figure for the whole shot (so the
    calls of one shot agree). Models conditioned on a frame rate (LTX, SVD) are asked for
    `_clip_fps`, so motion plays at the speed they made it."""
    mine = [s for s in segments if s.shot == shot]
    kept = sum(s.unique for s in mine)
    shown = sum(s.n_out + s.fade_out for s in mine)
    if kept < 2 or shown < 2:
        return float(sb.interpolate)
    return (shown - 1) / (kept - 1)


def _clip_fps(sb: Storyboard, segments: list[Segment], shot: int) -> int:
    """The frame rate a shot's clips are asked for: the rate they are shown at, never above
    the video's own (a shot that drops generated frames does not ask for slow motion)."""
    return max(1, min(sb.fps, round(sb.fps / _stretch(sb, segments, shot))))


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
    loaded = ctx.load(ctx.models.image, "text2img")
    prev = [_conditioning(ctx, s)[-1] for s in segs]
    out: list[list[np.ndarray]] = [[] for _ in segs]
    # Motion is per output frame; a generated frame spans the shot's stretch of them.
    stretch = [_stretch(sb, ctx.segments, s.shot) for s in segs]
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
                ImageJob(shot.prompt, shot.negative_prompt, sb.width, sb.height, steps, guidance,
                         _retry_seed((seg.seed + t) % 2**32, attempt), Image.fromarray(init),
                         shot.strength)
            )  # fmt: skip
        if ctx.cancel is not None and ctx.cancel.is_set():
            raise Cancelled("cancelled")
        results = generate(loaded, jobs, runtime=ctx.runtime, planner=ctx.planner)
        for i, arr in zip(active, results, strict=True):
            out[i].append(arr)
            prev[i] = drift.to_uint8(arr)
    return [np.stack(frames) for frames in out]


def _write_segment(ctx: _Context, seg: Segment, clip: np.ndarray) -> None:
    """Colour-match, blend the overlap, write the segment file and its tail, then the manifest."""
    sb, run = ctx.sb, ctx.run
    frames = drift.to_uint8(clip)
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
    with VideoWriter(path, sb.fps, sb.width, sb.height, quality="segment") as w:
        w.write(keep)
    seg.status, seg.file, seg.drift = "done", run.rel(path), report
    ctx.save()
    if ctx.on_segment:
        ctx.on_segment(seg, path)


def _finish(ctx: _Context, generated: int) -> VideoResult:
    sb, run = ctx.sb, ctx.run
    parts = [Part(run.root / s.file, s.n_out, s.fade_out) for s in ctx.segments]
    audio = Path(sb.audio) if sb.audio else None
    video = run.root / f"video.{sb.format}"
    result = stitch(parts, video, sb.fps, audio=audio, poster=run.root / "poster.jpg")
    ctx.manifest.update(status="done", video=video.name, poster="poster.jpg")
    ctx.save()
    return VideoResult(run.root, video, result.poster, result.frames, result.fps,
                       result.width, result.height, len(ctx.segments), generated)  # fmt: skip


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
        elif decoded_frames(path) != seg.frames - seg.holdback:
            problem = "is damaged"
        else:
            continue
        log.warning("segment %d: its file %s; making it again", seg.index, problem)
        seg.status = "pending"


def _recheck_conditioning(run: RunFolder, segments: list[Segment]) -> None:
    """What the segments left to make start from must read whole. A finished segment whose
    tail PNGs are gone or damaged is made again with its own seed (its frames, so its tails,
    come out the same), and so on up the chain; a damaged keyframe is removed so that it is
    made again like a missing one."""
    from .runs import readable_png

    changed = True
    while changed:
        changed = False
        todo = [s for s in segments if s.status != "done"]
        for dep in {s.depends for s in todo if s.depends is not None}:
            prev = segments[dep]
            tails = [run.tail(prev.index, i) for i in range(prev.holdback or 1)]
            if prev.status == "done" and not all(readable_png(t) for t in tails):
                log.warning("segment %d: its last frames are gone; making it again", dep)
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
    _recheck_conditioning(run, segments)  # what the segments left to make start from
    runtime = runtime or Runtime()
    if runtime.batch_size is None and manifest.get("batch_size"):
        runtime = dataclasses.replace(runtime, batch_size=manifest["batch_size"])
    if not runtime.fast and manifest.get("fast"):  # the same fast paths, the same frames
        runtime = dataclasses.replace(runtime, fast=tuple(manifest["fast"]))
    _remove_leftovers(run)
    manifest["status"] = "running"
    ctx = _Context(run, sb, models, opts, runtime, segments, manifest, cancel, on_segment)
    ctx.save()
    return _execute(ctx)
