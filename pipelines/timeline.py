"""Editor timelines of a finished run: OpenTimelineIO, and CMX 3600 EDL and FCPXML through
OTIO's adapters, so a creator can finish the cut in Resolve, Premiere or Final Cut.

One video track holds every segment file as a clip, in order; the crossfades between shots
are SMPTE dissolves; the storyboard's audio is a clip on an audio track.

Retimed segments. The stitcher retimes a shot's files as one stream: output frame j of a
shot shows the stream at j·(N−1)/(M−1) (N frames in its files, M rendered). So a file's
clip fills exactly the output frames whose position falls in that file, starts at the file
frame the first of them shows (rounded to a whole frame; the exact position is in the clip's
metadata) and plays at the shot's one speed, a LinearTimeWarp of source frames per output
frame. Why: clip boundaries and durations are video.mp4's frame for frame, so they sum to
its length and an editor who relinks the files gets the same cut at the same motion speed;
squeezing each whole file into its manifest share would give every clip its own speed and
move the joins. A dissolve's outgoing frames are the handle after the shot's last clip;
where they reach into a later file (a short last segment), that file comes in one frame
before the cut and plays to its end across the dissolve: cut and dissolve stay in place.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .files import read_json, write_text
from .video_io import audio_duration, probe

log = logging.getLogger(__name__)

# format: (file suffix, OTIO adapter name, the PyPI package that provides the adapter)
FORMATS: dict[str, tuple[str, str, str | None]] = {
    "otio": (".otio", "otio_json", None),
    "edl": (".edl", "cmx_3600", "otio-cmx3600-adapter"),
    "fcpxml": (".fcpxml", "fcpx_xml", "otio-fcpx-xml-adapter"),
}
_NTSC = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001))
# Rates each adapter can count time in; a run at another rate is counted at the lowest
# whole multiple of its fps found here (an 8 fps run in a 24 fps EDL: 3 ticks a frame).
_RATES: dict[str, tuple[Fraction, ...]] = {
    "edl": (*map(Fraction, (24, 25, 30, 48, 50, 60)), *_NTSC[:2]),
    "fcpxml": (*map(Fraction, (24, 25, 30, 50, 60)), *_NTSC),
}


@dataclass(frozen=True)
class Cut:
    """One segment file on the video track."""

    segment: int
    shot: int
    file: Path
    file_frames: int
    file_fps: float
    record: int  # output frames the clip fills on the track
    position: Fraction  # file frame (exact stream position) its first output frame shows
    speed: float  # file frames per output frame (0: a held frame)


@dataclass(frozen=True)
class RunCut:
    """What a run's video is made of: each shot's clips and its dissolve into the next."""

    name: str
    fps: float
    frames: int
    shots: list[list[Cut]]
    fades: list[int]  # output frames each shot dissolves into the next (0: a cut)
    audio: Path | None


def read_cut(run_dir: str | Path) -> RunCut:
    """The cut of a finished run folder, checked against its video's frame count."""
    root = Path(run_dir)
    manifest = _load(root / "manifest.json")
    storyboard = _load(root / "storyboard.json")
    if manifest.get("status") != "done" or not manifest.get("video"):
        raise ValueError(
            f"run: '{root.name}' has no finished video (status {manifest.get('status')!r}); "
            "finish it with `video --resume` first"
        )
    segments = manifest.get("segments") or []
    for seg in segments:
        if seg.get("status") != "done" or not seg.get("file"):
            raise ValueError(
                f"run: segment {seg.get('index')} of '{root.name}' is not done; "
                "finish the run with `video --resume` first"
            )
    n_shots = 1 + max((s["shot"] for s in segments), default=-1)
    by_shot = [[s for s in segments if s["shot"] == k] for k in range(n_shots)]
    shots = [_shot_cuts(root, segs) for segs in by_shot]
    fades = [segs[-1].get("fade_out", 0) for segs in by_shot]
    cut = manifest.get("stitched") or manifest["video"]  # the stitch, before any title card
    frames = probe(root / cut).frames
    placed = sum(c.record for shot in shots for c in shot)
    if placed != frames:
        raise ValueError(
            f"run: {cut} has {frames} frames but its segments make {placed}; "
            "stitch it again with `video --resume`"
        )
    # The sound the stitch put in (music, the model's own, or both mixed); runs made before
    # the manifest said so carry the storyboard's music.
    audio = manifest["sound"] if "sound" in manifest else storyboard.get("audio")
    return RunCut(root.name, float(storyboard["fps"]), frames, shots, fades,
                  Path(audio) if audio else None)  # fmt: skip


def _load(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except FileNotFoundError:
        raise ValueError(f"run: no {path.name} in '{path.parent}'; is it a run folder?") from None
    except ValueError as exc:
        raise ValueError(f"run: {path.name} is damaged ({exc})") from None


def _shot_cuts(root: Path, segs: list[dict[str, Any]]) -> list[Cut]:
    """A shot's clips, following the stitcher's arithmetic (`stitch.retime` over the shot's
    files read as one stream, `chain` giving it sum(n_out) frames, fade included)."""
    infos = [probe(root / s["file"]) for s in segs]
    counts = [i.frames for i in infos]
    starts = list(itertools.accumulate(counts, initial=0))
    fade = int(segs[-1].get("fade_out", 0))
    rendered = sum(int(s["n_out"]) for s in segs)
    step, den = (starts[-1] - 1, rendered - 1) if rendered > 1 else (0, 1)
    speed = step / den
    m = len(segs)
    record, first = [0] * m, [Fraction(0)] * m
    for j in range(rendered - fade):
        pos = Fraction(j * step, den)
        k = min(bisect.bisect_right(starts, math.floor(pos)) - 1, m - 1)
        if not record[k]:
            first[k] = pos - starts[k]
        record[k] += 1
    speeds = [speed] * m
    last = max(k for k in range(m) if record[k])
    if fade and last < m - 1:  # the dissolve's outgoing frames lie past the last clip's file
        record[last] -= 1
        record[-1], first[-1], speeds[-1] = 1, Fraction(0), (counts[-1] - 1) / fade
    return [
        Cut(int(segs[k]["index"]), int(segs[k]["shot"]), root / segs[k]["file"], counts[k],
            infos[k].fps, record[k], first[k], speeds[k])
        for k in range(m) if record[k]
    ]  # fmt: skip


# --- OTIO ---------------------------------------------------------------------------------------


def build(cut: RunCut, rate: float | None = None) -> Any:
    """An `opentimelineio.schema.Timeline` of the cut, times counted at `rate` (a whole
    multiple of the run's fps; default the fps itself)."""
    import opentimelineio as otio

    rate = float(rate or cut.fps)
    tick = rate / cut.fps  # timeline units per output frame
    timeline = otio.schema.Timeline(name=cut.name, global_start_time=_rt(0, rate))
    timeline.metadata["reelchain"] = {"fps": cut.fps, "frames": cut.frames}
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for k, clips in enumerate(cut.shots):
        for c in clips:
            video.append(_clip(c, rate, tick))
        if cut.fades[k] and k + 1 < len(cut.shots):
            video.append(
                otio.schema.Transition(
                    name=f"shot {k} to {k + 1}",
                    transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                    in_offset=_rt(0, rate),
                    out_offset=_rt(cut.fades[k] * tick, rate),
                )
            )
    timeline.tracks.append(video)
    if cut.audio is not None:
        timeline.tracks.append(_audio_track(cut, rate, tick))
    return timeline


def _rt(value: float, rate: float) -> Any:
    import opentimelineio as otio

    return otio.opentime.RationalTime(value, rate)


def _clip(c: Cut, rate: float, tick: float) -> Any:
    import opentimelineio as otio

    media = rate / c.file_fps  # timeline units per file frame
    in_point = math.floor(c.position + Fraction(1, 2))
    ref = otio.schema.ExternalReference(
        target_url=c.file.resolve().as_uri(),
        available_range=otio.opentime.TimeRange(_rt(0, rate), _rt(c.file_frames * media, rate)),
    )
    clip = otio.schema.Clip(
        name=c.file.stem,
        media_reference=ref,
        source_range=otio.opentime.TimeRange(
            _rt(in_point * media, rate), _rt(c.record * tick, rate)
        ),
    )
    scalar = c.speed * media / tick  # media time per record time
    if scalar == 0:
        clip.effects.append(otio.schema.FreezeFrame())
    elif not math.isclose(scalar, 1.0, rel_tol=1e-12):
        clip.effects.append(otio.schema.LinearTimeWarp(name="retime", time_scalar=scalar))
    clip.metadata["reelchain"] = {
        "segment": c.segment, "shot": c.shot, "position": float(c.position), "speed": c.speed,
    }  # fmt: skip
    return clip


def _audio_track(cut: RunCut, rate: float, tick: float) -> Any:
    """The storyboard's audio as the stitcher lays it: from the start, trimmed to the video."""
    import opentimelineio as otio

    assert cut.audio is not None
    track = otio.schema.Track(name="A1", kind=otio.schema.TrackKind.Audio)
    try:
        seconds = audio_duration(cut.audio)
    except ValueError:
        seconds = 0.0  # gone or unreadable: still named, for the editor to relink
    frames = cut.frames if seconds <= 0 else min(cut.frames, math.floor(seconds * cut.fps))
    available = None
    if seconds > 0:
        available = otio.opentime.TimeRange(_rt(0, rate), _rt(seconds * rate, rate))
    ref = otio.schema.ExternalReference(
        target_url=cut.audio.resolve().as_uri(), available_range=available
    )
    track.append(
        otio.schema.Clip(
            name=cut.audio.stem,
            media_reference=ref,
            source_range=otio.opentime.TimeRange(_rt(0, rate), _rt(frames * tick, rate)),
        )
    )
    return track


# --- files --------------------------------------------------------------------------------------


def export(run_dir: str | Path, fmt: str, out: Path | None = None) -> Path:
    """Write the run's timeline as `fmt` (otio, edl or fcpxml) to `out` (default
    RUN/timeline.<suffix>) and return the path."""
    _check_format(fmt)
    return _write(read_cut(run_dir), fmt, out or Path(run_dir) / f"timeline{FORMATS[fmt][0]}")


def write_timelines(run_dir: str | Path) -> list[Path]:
    """Write timeline.otio, and timeline.edl and timeline.fcpxml where their adapters are
    installed and can carry this run's cut; return the paths written."""
    _check_format("otio")
    cut = read_cut(run_dir)
    written = []
    for fmt, (suffix, _, _) in FORMATS.items():
        try:
            _check_format(fmt)
            written.append(_write(cut, fmt, Path(run_dir) / f"timeline{suffix}"))
        except ValueError as exc:
            if fmt == "otio":
                raise
            log.info("timeline: no %s written: %s", fmt, exc)
    return written


def _write(cut: RunCut, fmt: str, out: Path) -> Path:
    import opentimelineio as otio

    timeline = build(cut, _rate(fmt, cut.fps))
    if fmt == "fcpxml":
        _check_fcpx(timeline)
    return write_text(out, otio.adapters.write_to_string(timeline, adapter_name=FORMATS[fmt][1]))


def _check_format(fmt: str) -> None:
    """A known format whose adapter is installed, or one ValueError naming `format`."""
    if fmt not in FORMATS:
        raise ValueError(f"format: unknown {fmt!r} (use {', '.join(FORMATS)})")
    _, adapter, package = FORMATS[fmt]
    try:
        import opentimelineio as otio
    except ImportError:
        raise ValueError(
            f"format: {fmt} needs the opentimelineio package (pip install opentimelineio)"
        ) from None
    if adapter not in otio.adapters.available_adapter_names():
        raise ValueError(f"format: {fmt} needs the {package} package (pip install {package})")


def _rate(fmt: str, fps: float) -> float | None:
    """The rate `fmt` counts time in: fps itself, or its lowest whole multiple it supports."""
    rates = _RATES.get(fmt)
    if rates is None:
        return None
    exact = Fraction(fps).limit_denominator(100_000)
    for rate in sorted(rates):
        if (rate / exact).denominator == 1:
            return float(rate)
    names = ", ".join(f"{float(r):g}" for r in sorted(rates))
    raise ValueError(
        f"format: {fmt} counts time at {names} fps, and {fps:g} fps divides none of them; "
        "export otio"
    )


def _check_fcpx(timeline: Any) -> None:
    """otio-fcpx-xml-adapter 1.0 writes neither transitions nor time warps: refuse a
    timeline that would open as a different cut."""
    import opentimelineio as otio

    dissolves = sum(1 for _ in timeline.find_children(descended_from_type=otio.schema.Transition))
    retimed = sum(1 for c in timeline.find_clips() if c.effects)
    if dissolves or retimed:
        raise ValueError(
            f"format: fcpxml (otio-fcpx-xml-adapter) drops dissolves and speed changes, and "
            f"this run has {dissolves} dissolve(s) and {retimed} retimed clip(s); export otio "
            "or edl"
        )
