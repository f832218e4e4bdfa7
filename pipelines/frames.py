"""Pick thumbnail-worthy frames from a video without a model.

A good thumbnail frame is sharp, properly exposed, not caught mid-transition, and unlike
the other picks. All of that can be judged from cheap image statistics, so this runs on
any machine in about the time it takes to decode the video twice:

1. Stream-decode and score a regular sample of frames (about 300) at a small analysis
   size: sharpness (variance of the Laplacian), brightness, a colour histogram and a tiny
   colour thumbnail. Only these small summaries are kept, never full frames.
2. Reject near-black and washed-out frames, and frames inside transitions: a blend of its
   neighbours (crossfade, fade through black) or a sharp dip in sharpness (blur wipe).
3. Greedily take the best-scoring frames, skipping ones too similar in colour to a pick
   or too close in time to one, relaxing those rules only if there are not enough frames.
4. Decode again and keep just the chosen frames at full resolution.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from .video_io import to_rgb

MAX_SAMPLES = 300  # frames scored per video: enough to cover every scene, cheap to hold
_ANALYSIS_SIDE = 256  # longest side of the analysis frame; sharpness is measured here
_THUMB = 24  # side of the colour thumbnail used to recognise blends of neighbours
_HIST_BINS = (12, 4, 4)  # hue, saturation, value
_DARK_MEAN = 0.08  # mean brightness below this: black or near-black frame
_BRIGHT_MEAN = 0.92  # mean brightness above this: washed out
_FLAT_LOW = 0.6  # washed out also when even the darkest 5% is this bright ...
_FLAT_STD = 0.06  # ... and the contrast (std of brightness) is this low
_BLUR_RATIO = 0.3  # sharpness below this share of the sharpest frame on each side: a dip
_MIX_DIFF = 10.0  # neighbours must differ this much (mean abs, 0..255) to judge a blend
_MIX_ERR = 0.3  # a blend is this close to its neighbours' average (share of their diff) ...
_MIX_NEAR = 0.2  # ... and this far from either neighbour (so a hard cut is no blend)
_MIX_SHARP = 0.9  # ... and softer than the sharper neighbour (blending lowers edge contrast)
_SIMILAR = 0.3  # Bhattacharyya histogram distance below this: same-looking picks
# FFmpeg "decodes" any text file as ANSI art (tty demuxer); these are never real footage.
_TEXT_CODECS = {"ansi", "bintext", "xbin", "idf"}


@dataclass
class FrameScore:
    """Why a frame was picked: its position and the statistics behind its score."""

    index: int  # decode-order frame number
    time: float  # seconds from the start of the stream
    sharpness: float  # variance of the Laplacian of the analysis frame
    brightness: float  # mean luma, 0..1
    score: float  # higher is better


@dataclass
class _Sample:
    frame: FrameScore
    hist: np.ndarray  # normalised HSV histogram, float32
    thumb: np.ndarray  # _THUMB x _THUMB x 3, uint8
    exposure_ok: bool
    dark: bool
    transition: bool = False


def _error(path: Path, reason: object) -> ValueError:
    """One line naming the video (never its folder): an FFmpeg error's own words only."""
    reason = getattr(reason, "strerror", None) or reason
    return ValueError(f"from-video: cannot read '{path.name}': {reason}")


def _analyse(rgb: np.ndarray, index: int, time: float) -> _Sample:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    mean = float(gray.mean()) / 255.0
    low = float(np.percentile(gray, 5)) / 255.0
    std = float(gray.std()) / 255.0
    dark = mean < _DARK_MEAN
    washed = mean > _BRIGHT_MEAN or (low > _FLAT_LOW and std < _FLAT_STD)
    # Sharpness ranks frames; exposure far from mid-grey costs up to half the score.
    exposure = 1.0 - 0.5 * min(1.0, ((mean - 0.5) / 0.5) ** 2)
    score = math.log1p(sharpness) * exposure
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(_HIST_BINS), [0, 180, 0, 256, 0, 256])
    hist = (hist / max(1.0, float(hist.sum()))).astype(np.float32)
    thumb = cv2.resize(rgb, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA)
    return _Sample(
        FrameScore(index, time, sharpness, mean, score), hist, thumb, not (dark or washed), dark
    )


def _analysis_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, _ANALYSIS_SIDE / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def _estimate_frames(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Frame count from the header, or duration x rate; 0 when the file does not say."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    return int(duration * float(rate)) if duration and rate else 0


def _sample(path: Path, sample_every: int | None) -> tuple[list[_Sample], float]:
    """Decode once, analysing every k-th frame; returns samples and samples per second."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _error(path, exc) from exc
    samples: list[_Sample] = []
    with container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        adaptive = sample_every is None
        if sample_every is None:
            total = _estimate_frames(container, stream)
            step = max(1, math.ceil(total / MAX_SAMPLES)) if total else 1
        else:
            step = sample_every
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % step:
                    continue
                aw, ah = _analysis_size(frame.width, frame.height)
                rgb = to_rgb(frame, aw, ah)
                time = float(frame.time) - start if frame.time is not None else index / rate
                samples.append(_analyse(rgb, index, time))
                if adaptive and len(samples) >= 2 * MAX_SAMPLES:
                    # Length unknown up front: halve the sampling rate, memory stays bounded.
                    samples, step = samples[::2], step * 2
        except (av.error.FFmpegError, ValueError) as exc:
            if not samples:
                raise _error(path, exc) from exc
            warnings.warn(
                f"from-video: '{path.name}' is damaged after frame {samples[-1].frame.index}; "
                "using the frames before it",
                stacklevel=3,
            )
    if not samples:
        raise _error(path, "no decodable frames")
    return samples, rate / step


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The first video stream; refused when there is none or it is text posing as video."""
    if not container.streams.video:
        raise _error(path, "no video stream")
    stream = container.streams.video[0]
    if stream.codec_context.name in _TEXT_CODECS:
        raise _error(path, f"text, not video (FFmpeg reads it as {stream.codec_context.name})")
    return stream


def check_video(video_path: str | Path) -> None:
    """Refuse, with `best_frames`' own one line, a file it would refuse; reads one frame.

    `best_frames` keeps the frames before any damage, so a video whose first frame decodes
    is one it accepts: a dry run checks this much and no more."""
    path = Path(video_path)
    if not path.is_file():
        raise _error(path, "no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _error(path, exc) from exc
    with container:
        stream = _video_stream(container, path)
        try:
            frame = next(iter(container.decode(stream)), None)
        except (av.error.FFmpegError, ValueError) as exc:
            raise _error(path, exc) from exc
    if frame is None:
        raise _error(path, "no decodable frames")


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _mark_transitions(samples: list[_Sample], per_second: float) -> None:
    """Flag samples inside crossfades, fades and blur wipes.

    Looks up to about one second either side, so a transition spanning several samples is
    still seen: inside a linear crossfade every frame is the average of frames equally far
    on both sides, while at a hard cut a frame equals one side instead.
    """
    reach = max(2, min(8, round(per_second)))
    thumbs = [s.thumb.astype(np.float32) for s in samples]
    sharp = [s.frame.sharpness for s in samples]
    count = len(samples)
    for i, sample in enumerate(samples):
        for d in range(1, reach + 1):
            p, q = i - d, i + d
            if p < 0 or q >= count:
                break
            apart = _mean_abs(thumbs[p], thumbs[q])
            if apart < _MIX_DIFF:
                continue
            blend_err = _mean_abs(thumbs[i], (thumbs[p] + thumbs[q]) / 2)
            near = min(_mean_abs(thumbs[i], thumbs[p]), _mean_abs(thumbs[i], thumbs[q]))
            softer = sharp[i] < _MIX_SHARP * max(sharp[p], sharp[q])
            if blend_err < _MIX_ERR * apart and near > _MIX_NEAR * apart and softer:
                sample.transition = True
                break
        if sample.transition:
            continue
        sides = []
        for window in (range(max(0, i - reach), i), range(i + 1, min(count, i + reach + 1))):
            values = [sharp[j] for j in window if samples[j].exposure_ok]
            if values:
                sides.append(max(values))
        if sides and sharp[i] < _BLUR_RATIO * min(sides):
            sample.transition = True


def _similar(a: _Sample, b: _Sample) -> bool:
    distance = cv2.compareHist(a.hist, b.hist, cv2.HISTCMP_BHATTACHARYYA)
    return distance < _SIMILAR


def _choose(samples: list[_Sample], n: int, min_gap: float, relax_gap: bool) -> list[_Sample]:
    """Greedy: best score first, skipping look-alikes and near neighbours in time.

    If that leaves fewer than `n`, the look-alike rule is dropped, then (unless the caller
    set the gap) the time gap, so a video with few scenes still yields `n` frames when it
    has that many usable ones.
    """
    ranked = sorted(samples, key=lambda s: s.frame.score, reverse=True)
    chosen: list[_Sample] = []
    rules = [(True, True), (False, True)] + ([(False, False)] if relax_gap else [])
    for use_similar, use_gap in rules:
        for cand in ranked:
            if len(chosen) >= n:
                return chosen
            if any(c is cand for c in chosen):
                continue
            if use_gap and any(abs(c.frame.time - cand.frame.time) < min_gap for c in chosen):
                continue
            if use_similar and any(_similar(c, cand) for c in chosen):
                continue
            chosen.append(cand)
    return chosen


def _decode_frames(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    """Second pass: full-resolution RGB for just the chosen frame numbers."""
    found: dict[int, np.ndarray] = {}
    last = max(indices)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index in indices:
                    found[index] = to_rgb(frame)
                if index >= last:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        if not found:
            raise _error(path, exc) from exc
    return found


def best_frames(
    video_path: str | Path,
    n: int,
    *,
    sample_every: int | None = None,
    min_gap_seconds: float | None = None,
) -> list[tuple[FrameScore, np.ndarray]]:
    """The `n` best thumbnail frames of a video as (score, RGB uint8 array), sorted by time.

    `sample_every` scores every k-th frame (default: enough to score about 300 frames).
    `min_gap_seconds` keeps picks at least that far apart in time, strictly; the default
    (the video's length / 3n) is relaxed when needed to reach `n`. Fewer than `n` frames
    come back when the video has fewer usable ones; if none is usable, the single best
    decodable frame is returned with a warning.
    """
    if n < 1:
        raise ValueError(f"n: must be at least 1, got {n}")
    if sample_every is not None and sample_every < 1:
        raise ValueError(f"sample_every: must be at least 1, got {sample_every}")
    if min_gap_seconds is not None and min_gap_seconds < 0:
        raise ValueError(f"min_gap_seconds: must be 0 or more, got {min_gap_seconds}")
    path = Path(video_path)
    if not path.is_file():
        raise _error(path, "no such file")

    samples, per_second = _sample(path, sample_every)
    _mark_transitions(samples, per_second)
    usable = [s for s in samples if s.exposure_ok and not s.transition]
    if not usable:
        # Nothing passes: fall back to one frame, preferring lit frames to black ones.
        fallback = max(samples, key=lambda s: (not s.dark, s.exposure_ok, s.frame.score))
        warnings.warn(
            f"from-video: '{path.name}' has no well-exposed, steady frame; "
            f"returning frame {fallback.frame.index} anyway",
            stacklevel=2,
        )
        chosen = [fallback]
    else:
        gap = min_gap_seconds
        if gap is None:
            gap = (samples[-1].frame.time - samples[0].frame.time) / (3 * n)
        chosen = _choose(usable, n, gap, relax_gap=min_gap_seconds is None)

    frames = _decode_frames(path, {s.frame.index for s in chosen})
    picked = [(s.frame, frames[s.frame.index]) for s in chosen if s.frame.index in frames]
    return sorted(picked, key=lambda item: item[0].time)
