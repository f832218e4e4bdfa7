"""Frame planning: the calls that make a storyboard's frames, at the rate motion was made.

Each shot's output frames are fixed up front, so the video has exactly
round(fps × Σ seconds) frames. The frames that feed them are generated at the model's own
motion rate (`gen_rate`): 16 fps for Wan, 8 for CogVideoX-5B; LTX and SVD are told a rate
within what they were trained on. The stitcher retimes a shot's frames to its length, so a
shot's motion plays at the speed it was made at, whatever the storyboard's fps;
`interpolate` is the most output frames one generated frame may stand for.

Models make only some clip lengths (LTX 8k+1, Wan 4k+1, CogVideoX-5B 49). A shot takes the
legal count that costs least while its motion stays within `SPEED_TOLERANCE` of the right
speed; where none does, the call makes more and the surplus at its end is dropped. What the
plan throws away (overlaps made twice, dropped tails, frames a decimating retime skips) is
counted in `plan_data`'s totals.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .models import ModelRef
from .storyboard import Storyboard

FEEDBACK_CHUNK = 8  # generated frames per segment file in feedback mode
SPEED_TOLERANCE = 0.05  # how far retiming may speed motion up or slow it down


@dataclass(frozen=True)
class Models:
    video: ModelRef | None  # None in feedback mode
    image: ModelRef  # keyframes, and every frame in feedback mode


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
    drop: int = 0  # frames made past what the shot needs, cut from its end
    n_out: int = 0  # its share of the shot's rendered frames (crossfade out included)
    fade_out: int = 0  # of those, the frames that blend into the next shot (last segment)
    first_out: int = 0
    status: str = "pending"
    file: str | None = None
    drift: dict[str, Any] | None = None
    tries: int = 0

    @property
    def unique(self) -> int:
        """The frames this segment adds to its shot (not shared with a neighbour, not cut)."""
        return self.frames - self.holdback - self.drop

    @property
    def shown(self) -> int:
        """Output frames its frames become (a shot's last segment: its crossfade out too)."""
        return self.n_out

    def to_dict(self, sb: Storyboard) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # Output frames it lands on; none when its few frames fall between output frames.
        d["frames"] = [self.first_out, self.first_out + self.shown - 1] if self.shown else None
        d["generated_frames"] = self.frames
        d["seconds"] = round(self.shown / sb.fps, 4)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Segment:
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in d.items() if k in names}
        data["frames"] = d["generated_frames"]
        return cls(**data)


def gen_rate(sb: Storyboard, models: Models) -> float:
    """The frame rate a storyboard's frames are generated at: the video model's motion rate
    (as low as `interpolate` allows, within what the model takes), or fps / interpolate for
    image-to-image feedback. Raises ValueError naming `interpolate` where the model's fixed
    rate would need more interpolation than the storyboard allows."""
    ref = models.video
    if ref is None or ref.preset.motion is None:
        return sb.fps / sb.interpolate
    lo, hi = ref.preset.motion
    rate = min(max(math.ceil(sb.fps / sb.interpolate - 1e-9), lo), hi)
    if sb.fps / rate > sb.interpolate + 1e-9:
        need = math.ceil(sb.fps / rate - 1e-9)
        raise ValueError(
            f"interpolate: {ref.label} makes {rate} fps of motion, so at fps {sb.fps} each "
            f"generated frame stands for {sb.fps / rate:g} output frames; set interpolate: "
            f"{need} (or fps: {rate * sb.interpolate} or less)"
        )
    return rate


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
    stretch = sb.fps / gen_rate(sb, models)  # output frames per generated frame
    segments: list[Segment] = []
    first_out = 0
    for k, shot in enumerate(sb.shots):
        total = counts[k] + fades[k]  # output frames this shot renders (tail overlaps next)
        need = max(2.0, (total - 1) / stretch + 1)  # generated frames for true motion
        ends_on_keyframe = (
            sb.mode == "keyframes"
            and k + 1 < len(sb.shots)
            and models.video is not None
            and models.video.takes("last_frame")
        )
        # A clip ending on a given frame cannot be cut after it, unless the model takes
        # that frame at any index (LTX): then it ends there and the rest is cut.
        exact_end = ends_on_keyframe and not models.video.takes("frames_at_indices")
        end_hold = int(ends_on_keyframe and not fades[k])  # see `holdback` below
        sizes, overlap, drops = _split(need + end_hold, models.video, clip_frames, exact_end)
        start = len(segments)
        for c, n in enumerate(sizes):
            last = c == len(sizes) - 1
            segments.append(
                Segment(
                    index=len(segments),
                    shot=k,
                    part=c,
                    seed=(shot.seed + 7919 * c) % 2**32,
                    frames=n,
                    overlap=0 if c == 0 else overlap,
                    # A clip that ends on the next shot's keyframe leaves that frame to the
                    # next shot, which starts on it: on a cut, showing it twice would be a
                    # held frame.
                    holdback=overlap if not last else end_hold,
                    depends=None if c == 0 else len(segments) - 1,
                    last_keyframe=k + 1 if last and ends_on_keyframe else None,
                    drop=drops[c],
                )
            )
        first_out = _place(segments[start:], total, fades, k, first_out)
    return segments


def _place(
    shot_segments: list[Segment], total: int, fades: list[int], k: int, first_out: int
) -> int:
    """Give a shot's segments their share of its `total` rendered frames, by the frames
    each adds (the stitcher retimes the shot's files as one stream; the shares say where
    each segment's frames land). Returns where the next shot starts: its crossfade in
    overlaps this shot's last `fades[k]` frames."""
    shares = _allocate(total, [s.unique for s in shot_segments], [0] * len(shot_segments))
    for seg, share in zip(shot_segments, shares, strict=True):
        seg.first_out = first_out
        seg.n_out = share
        first_out += share
    shot_segments[-1].fade_out = fades[k]
    return first_out - fades[k]


def _split(
    need: float, ref: ModelRef | None, clip_frames: int | None, exact_end: bool
) -> tuple[list[int], int, list[int]]:
    """Frames per call for a shot needing `need` generated frames, the overlap between
    calls, and the frames cut from each call's end.

    Whole clips while more than one is needed (clips of one length batch together, across
    shots too), then a last call that settles the rest (`_last_call`): never cut where it
    must end on a given frame (`exact_end`)."""
    if ref is None:  # feedback: chunks of frames, no overlap (each is new)
        total = _nearest([c for c in (math.floor(need), math.ceil(need)) if c >= 2], need)
        n = math.ceil(total / FEEDBACK_CHUNK)  # even chunks: no one-frame file at the end
        return [total // n + (i < total % n) for i in range(n)], 0, [0] * n
    if ref.family.sections:
        return _split_sections(need, ref.section_window(clip_frames))
    size = ref.legal_frames(clip_frames or ref.preset.frames)
    # Families that take video continue from a run of frames (blended); others from one.
    # A model's own overlap (SkyReels-V2's `overlap_history`) where the clip has room.
    run = ref.family.frame_step + 1
    if ref.preset.overlap and size >= 2 * ref.preset.overlap + 1:
        run = ref.preset.overlap
    overlap = run if ref.takes("video") and size >= 2 * run + 1 else 1
    if size <= overlap:
        raise ValueError(f"clip-frames: {size} frames cannot continue a clip (use more)")
    sizes: list[int] = []
    have = 0  # frames the calls so far add to the shot
    while True:
        offset = overlap if sizes else 0
        x = need - have + offset  # what the next call would need, its overlap included
        if x > size:
            sizes.append(size)
            have += size - offset
            continue
        last, cut = _last_call(need, have, offset, x, ref, exact_end, first=not sizes)
        if not last:
            return sizes, overlap, [0] * len(sizes)
        return [*sizes, last], overlap, [0] * len(sizes) + [cut]


def _split_sections(need: float, window: int) -> tuple[list[int], int, list[int]]:
    """FramePack's calls for a shot: sections of `window` latent frames (4 frames each). A
    shot's first section decodes its start picture's latent and its own: 4w + 1 frames;
    each later one decodes the previous section's latents again with its own, 8w - 3
    frames, of which the first 4w - 3 overlap what is already made (blended, as FramePack
    does). The fewest sections within `SPEED_TOLERANCE` of `need`, else one more, cut."""
    new = 4 * window
    fewer = max(1, math.floor((need - 1) / new))
    n = fewer if _speed_error(new * fewer + 1, need) <= SPEED_TOLERANCE else fewer + 1
    if new + 1 >= need:  # a short shot: one section, cut (a second would all be cut)
        n = 1
    cut = max(0, new * n + 1 - max(2, round(need)))
    sizes = [new + 1] + [2 * new - 3] * (n - 1)
    return sizes, new - 3, [0] * (n - 1) + [cut]


def _last_call(
    need: float, have: int, offset: int, x: float, ref: ModelRef, exact_end: bool, first: bool
) -> tuple[int, int]:
    """A shot's last call (0: none, where stopping short keeps the speed) and the frames cut
    from its end: the cheapest whose motion speed is within `SPEED_TOLERANCE`, else the next
    legal count up, cut to fit (or, where the clip must end on a given frame, the nearest,
    retimed)."""
    least = ref.legal_frames(2)

    def kept(c: int) -> int:
        return have + c - offset if c else have

    options = [] if first or exact_end else [0]
    options += [c for c in ref.legal_around(x) if c > offset and c >= least]
    fits = [c for c in options if _speed_error(kept(c), need) <= SPEED_TOLERANCE]
    if fits:
        return min(fits, key=lambda c: (c, _speed_error(kept(c), need))), 0
    up = max(ref.legal_frames(math.ceil(x)), least)
    if exact_end:
        near = [c for c in (*options, up) if c > offset]
        return min(near, key=lambda c: _speed_error(kept(c), need)), 0
    return up, max(0, kept(up) - max(2, round(need)))


def _speed_error(frames: int, need: float) -> float:
    """How far from true speed `frames` generated frames play when retimed to `need`'s span."""
    return abs(math.log((frames - 1) / (need - 1))) if frames > 1 else math.inf


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


def stretch_of(segments: list[Segment], shot: int, fallback: float) -> float:
    """Output frames per generated frame interval once a shot is retimed: the storyboard's
    rate ratio give or take the rounding to legal counts, one figure for the whole shot."""
    mine = [s for s in segments if s.shot == shot]
    kept = sum(s.unique for s in mine)
    shown = sum(s.shown for s in mine)
    if kept < 2 or shown < 2:
        return fallback
    return (shown - 1) / (kept - 1)


def plan_data(sb: Storyboard, models: Models, segments: list[Segment]) -> dict[str, Any]:
    """The plan as data (`--dry-run --json`, the UI's Plan, `/plan`): one entry per call
    and the totals, with what is thrown away."""
    rate = gen_rate(sb, models)
    rows = []
    for s in segments:
        rows.append(
            {
                "segment": s.index, "shot": s.shot, "frames": s.frames, "kept": s.unique,
                "gen_fps": round(rate, 4), "shown": s.shown,
                "continues": s.depends, "overlap": s.overlap, "dropped": s.drop,
            }
        )  # fmt: skip
    generated = sum(s.frames for s in segments)
    overlaps = sum(s.holdback for s in segments if s.last_keyframe is None)
    dropped = sum(s.drop for s in segments)
    skipped = sum(max(0, _kept(segments, k) - _shown(segments, k)) for k in range(len(sb.shots)))
    return {
        "storyboard": {
            "shots": len(sb.shots), "frames": sb.total_frames, "fps": sb.fps,
            "seconds": round(sb.total_frames / sb.fps, 4), "width": sb.width,
            "height": sb.height, "mode": sb.mode, "interpolate": sb.interpolate,
        },
        "models": {
            "video": models.video.spec if models.video else None, "image": models.image.spec,
        },
        "segments": rows,
        "totals": {
            "calls": len(segments), "keyframes": len(sb.shots), "generated": generated,
            "output": sb.total_frames, "gen_fps": round(rate, 4),
            "thrown_away": overlaps + dropped + skipped, "overlaps": overlaps,
            "dropped": dropped, "skipped": skipped,
            "waste": round((overlaps + dropped + skipped) / generated, 4) if generated else 0.0,
        },
    }  # fmt: skip


def _kept(segments: list[Segment], shot: int) -> int:
    return sum(s.unique for s in segments if s.shot == shot)


def _shown(segments: list[Segment], shot: int) -> int:
    return sum(s.shown for s in segments if s.shot == shot)


def plan_summary(data: dict[str, Any]) -> str:
    """`plan_data` as a creator reads it before spending GPU time: one line per call (what
    it makes, what it becomes), then the totals."""

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    sb, m, t = data["storyboard"], data["models"], data["totals"]
    video = m["video"] or f"{m['image']} (image-to-image)"
    lines = [
        f"{count(sb['shots'], 'shot')}, {sb['frames']} frames at {sb['fps']} fps "
        f"({sb['seconds']:.1f} s), {sb['width']}×{sb['height']}, mode {sb['mode']}; "
        f"video {video}, keyframes {m['image']}",
        "segment  shot  frames  continues  shown  gen fps",
    ]
    for r in data["segments"]:
        cont = "-" if r["continues"] is None else f"{r['continues']} ({r['overlap']})"
        lines.append(f"{r['segment']:>7}  {r['shot']:>4}  {r['frames']:>6}  {cont:>9}  "
                     f"{r['shown']:>5}  {r['gen_fps']:>7g}")  # fmt: skip
    how = (count(t["calls"], "video call") if m["video"] else
           count(t["calls"], "segment") + " (one image-to-image call a frame)")  # fmt: skip
    lines.append(
        f"{how} make{'s' if t['calls'] == 1 else ''} {t['generated']} frames at "
        f"{t['gen_fps']:g} fps of motion for {t['output']} output frames "
        f"({t['output'] / t['generated']:.2f} output frames per generated frame, interpolate "
        f"{sb['interpolate']}); {t['thrown_away']} thrown away ({t['waste']:.1%}: overlaps "
        f"{t['overlaps']}, cut tails {t['dropped']}, skipped {t['skipped']}), after "
        f"{count(t['keyframes'], 'keyframe image')}"
    )
    return "\n".join(lines)
