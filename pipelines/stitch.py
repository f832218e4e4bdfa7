"""The final stitch: a run's segment files into one video with exact frame counts.

Each shot's segment files are read as one stream, retimed to the shot's output frames
(`pipelines.interpolate`), crossfaded into the next shot, and piped into the encoder
(`pipelines.video_io`), with the storyboard's audio muxed in and a poster taken on the way.
Memory holds a crossfade's tail and two frames, however long the video.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipelines.files import TMP_MARK, atomic_path
from pipelines.interpolate import retime
from pipelines.video_io import (
    VideoInfo,
    VideoWriter,
    _check_fps,
    _format_of,
    _mux_audio,
    _probe_field,
    audio_duration,
    read_frames,
)


@dataclass
class Part:
    """A stretch of the final video from one or more files read as one stream (a shot's
    segment files: retimed together, its motion keeps one speed across their joins)."""

    path: Path
    n_out: int  # output frames this part contributes, before overlap with the next part
    fade_out: int = 0  # extra frames at its end that crossfade into the next part's first frames
    more: tuple[Path, ...] = ()  # files read on after `path`, in order

    @property
    def files(self) -> tuple[Path, ...]:
        return (Path(self.path), *map(Path, self.more))


@dataclass
class StitchResult:
    path: Path
    frames: int
    fps: float
    width: int
    height: int
    duration: float
    poster: Path | None = None


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    shrink = w * h > width * height
    return cv2.resize(
        frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def _check_parts(parts: list[Part]) -> list[list[VideoInfo]]:
    if not parts:
        raise ValueError("parts: need at least one Part")
    infos = []
    for k, part in enumerate(parts):
        if not isinstance(part.n_out, (int, np.integer)) or part.n_out < 1:
            raise ValueError(f"parts[{k}].n_out: must be an integer >= 1, got {part.n_out!r}")
        if not isinstance(part.fade_out, (int, np.integer)) or part.fade_out < 0:
            raise ValueError(f"parts[{k}].fade_out: must be an integer >= 0, got {part.fade_out!r}")
        if k == len(parts) - 1 and part.fade_out:
            raise ValueError(
                f"parts[{k}].fade_out: the last part has nothing to fade into; set it to 0"
            )
        if k + 1 < len(parts) and part.fade_out > parts[k + 1].n_out:
            raise ValueError(
                f"parts[{k}].fade_out: {part.fade_out} exceeds parts[{k + 1}].n_out "
                f"({parts[k + 1].n_out}); the crossfade must lie within the next part"
            )
        files = []
        for path in part.files:
            info = _probe_field(path, f"parts[{k}].path")
            if info.frames < 1:
                raise ValueError(f"parts[{k}].path: '{path.name}' has no frames")
            files.append(info)
        infos.append(files)
    return infos


def _read_part(part: Part, infos: list[VideoInfo], k: int) -> Iterator[np.ndarray]:
    """A part's files as one stream of frames, each file held to its header's frame count
    (a damaged file must not shift the frames of the rest)."""
    for path, info in zip(part.files, infos, strict=True):
        count = 0
        for frame in read_frames(path):
            count += 1
            if count > info.frames:
                break
            yield frame
        if count != info.frames:
            raise ValueError(
                f"parts[{k}].path: '{path.name}' decoded to a different number of frames than "
                f"its header says ({count} of {info.frames}); re-encode the segment"
            )


def _write_poster(frame: np.ndarray, poster: Path) -> Path:
    from PIL import Image

    with atomic_path(poster) as tmp:
        Image.fromarray(frame).save(tmp, format="JPEG", quality=90)
    return poster


def stitch(
    parts: list[Part],
    out_path: str | Path,
    fps: float,
    *,
    audio: Path | None = None,
    flow: bool = True,
    poster: Path | None = None,
) -> StitchResult:
    """Join segment files into one video with exact frame counts, cuts and crossfades.

    Each part is decoded streaming and retimed to ``n_out + fade_out`` frames. The last
    ``fade_out`` frames of part k are blended into the first ``fade_out`` frames of part k+1
    (which count toward part k+1's n_out) with weight (i+1)/(d+1) for the incoming part, so the
    output has exactly ``sum(n_out)`` frames. Memory holds the crossfade tail plus two frames.

    Output size is the first part's size; other parts are resized to it (INTER_AREA when
    shrinking, INTER_LINEAR when enlarging, aspect ratio not preserved).

    `audio` (any format ffmpeg reads) is trimmed or padded with silence to the video's duration
    and faded in/out over 0.5 s: AAC in MP4, Opus in WebM, ignored for GIF. It is validated
    before any encoding starts. `poster`, if given, receives a JPEG of the frame at one third
    of the video.
    """
    out_path = Path(out_path)
    fmt = _format_of(out_path)
    fps = _check_fps(fps)
    infos = _check_parts(parts)
    audio = Path(audio) if audio is not None and fmt != "gif" else None
    audio_len = audio_duration(audio) if audio is not None else 0.0  # checked before encoding
    width, height = infos[0][0].width, infos[0][0].height
    total = sum(int(p.n_out) for p in parts)
    poster_frame: np.ndarray | None = None
    with contextlib.ExitStack() as stack:
        video_path = _scratch_beside(out_path, stack) if audio is not None else out_path
        writer = stack.enter_context(VideoWriter(video_path, fps, width, height))
        written = 0
        for frame in _joined_frames(parts, infos, width, height, flow):
            if written == total // 3:
                poster_frame = frame.copy()
            writer.write(frame)
            written += 1
        if written != total:  # guarded by retime's exact counts; never publish a wrong file
            raise RuntimeError(f"stitch produced {written} frames, expected {total}")
        writer.close()
        if audio is not None:
            _mux_audio(video_path, audio, out_path, fmt, total / fps, audio_len)
    poster_path = None
    if poster is not None and poster_frame is not None:
        poster_path = _write_poster(poster_frame, Path(poster))
    return StitchResult(out_path, total, fps, width, height, total / fps, poster_path)


def _scratch_beside(out_path: Path, stack: contextlib.ExitStack) -> Path:
    """A scratch file beside the output for the video alone (the audio is muxed in after,
    the video stream copied); removed when `stack` closes."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(
        prefix=f".{out_path.stem}{TMP_MARK}video-", suffix=out_path.suffix, dir=out_path.parent
    )
    os.close(fd)
    stack.callback(Path(scratch).unlink, missing_ok=True)
    return Path(scratch)


def _joined_frames(
    parts: list[Part], infos: list, width: int, height: int, flow: bool
) -> Iterator[np.ndarray]:
    """The output frames, streamed: each part retimed to `n_out + fade_out` frames, its last
    `fade_out` frames blended into the next part's first ones."""
    tail: deque[np.ndarray] = deque()  # the previous part's fade_out frames
    for k, (part, info) in enumerate(zip(parts, infos, strict=True)):
        n_out, fade_out = int(part.n_out), int(part.fade_out)
        d = len(tail)
        new_tail: deque[np.ndarray] = deque()
        frames = (_resize(f, width, height) for f in _read_part(part, info, k))
        out = retime(frames, sum(i.frames for i in info), n_out + fade_out, flow=flow)
        for i, frame in enumerate(out):
            if i >= n_out:
                new_tail.append(frame)
                continue
            if i < d:
                alpha = (i + 1) / (d + 1)
                frame = cv2.addWeighted(tail.popleft(), 1.0 - alpha, frame, alpha, 0.0)
            yield frame
        tail = new_tail
