"""Streaming video encoding, decoding, retiming and the final stitch.

Long videos are built from many short segment files. Nothing here ever holds a whole video in
memory: frames are piped one at a time into an ffmpeg subprocess (the binary shipped with
imageio-ffmpeg) and decoded one at a time with PyAV, so memory stays flat however long the
output is.

Every file is written to a temporary name beside its final path and renamed only after the
encoder exited cleanly (`pipelines.files.atomic_path`), so a crash never leaves a truncated
video at a final path. Per-segment files use fragmented MP4, which stays decodable even if the
process is killed half-way.

Colour: RGB is converted to BT.709 limited-range YUV 4:2:0 with accurate rounding and decoded
back with accurate rounding. Default swscale rounding darkens every decode/encode generation by
about one level, which adds up when segments are decoded and re-encoded into the final video.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import subprocess
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import cv2
import numpy as np

from pipelines.files import TMP_MARK, atomic_path

FORMATS = ("mp4", "webm", "gif")
QUALITIES = ("final", "segment")

# swscale flags: accurate rounding and full chroma interpolation keep colours stable across
# repeated encode/decode generations (see module docstring).
_SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int"
_YUV_FILTER = f"scale=out_color_matrix=bt709:out_range=tv:flags={_SWS_FLAGS},format=yuv420p"
_BT709_TAGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
_FRAGMENTED = ["-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-flush_packets", "1"]
_GIF_FILTER = "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a"

# Optical flow is computed on frames scaled down to at most this many pixels on the long side:
# Optical flow's cost grows with area while motion between neighbouring frames is coarse anyway.
_FLOW_MAX_SIDE = 320
_AUDIO_FADE_S = 0.5
_STDERR_TAIL = 2000


@functools.lru_cache(maxsize=1)
def _ffmpeg() -> str:
    """Path of the ffmpeg binary shipped with imageio-ffmpeg, looked up on first use."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def _decode_flags() -> Any:
    from av.video.reformatter import Interpolation

    return Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


def _format_of(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(
            f"path: unsupported suffix '{path.suffix}' for '{path.name}'; use one of "
            + ", ".join("." + f for f in FORMATS)
        )
    return fmt


def _fps_arg(fps: float) -> str:
    """ffmpeg rate as an exact fraction, so 23.976 becomes 2997/125 rather than a rounded float."""
    frac = Fraction(fps).limit_denominator(100_000)
    return f"{frac.numerator}/{frac.denominator}"


def _check_fps(fps: float) -> float:
    if not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps: must be a finite number > 0, got {fps!r}")
    return float(fps)


def _encoder_args(fmt: str, quality: str, fps: float) -> list[str]:
    if fmt == "mp4":
        args = ["-vf", _YUV_FILTER, "-c:v", "libx264", "-preset", "veryfast"]
        if quality == "segment":
            # Near-transparent quality: segments are decoded and re-encoded once more.
            # A keyframe every second makes fragments small, so a killed writer loses little.
            gop = str(max(1, round(fps)))
            # flush_packets: each fragment reaches the file as soon as it is complete.
            args += ["-crf", "14", "-g", gop, *_FRAGMENTED]
        else:
            args += ["-crf", "18", "-movflags", "+faststart"]
        return args + ["-pix_fmt", "yuv420p", *_BT709_TAGS]
    if fmt == "webm":
        crf = "20" if quality == "segment" else "31"
        return [
            "-vf", _YUV_FILTER, "-c:v", "libvpx-vp9", "-crf", crf, "-b:v", "0",
            "-deadline", "good", "-cpu-used", "5", "-row-mt", "1",
            "-pix_fmt", "yuv420p", *_BT709_TAGS,
        ]  # fmt: skip
    # GIF: palettegen needs every frame before the first can be mapped, so ffmpeg buffers the
    # clip internally. GIFs are meant for short previews only.
    return ["-vf", _GIF_FILTER, "-loop", "0"]


class VideoWriter:
    """Streaming video writer: RGB frames go straight into an ffmpeg subprocess.

    The container comes from the suffix of `path`:

    - ``.mp4``: H.264 yuv420p (BT.709). quality "final": crf 18 with ``+faststart`` so browsers
      can start playing before the download ends; quality "segment": crf 14, fragmented MP4
      (keyframe every second), which stays decodable if the writing process dies.
    - ``.webm``: VP9 yuv420p (BT.709), constant quality.
    - ``.gif``: palette GIF (palettegen/paletteuse). ffmpeg buffers the whole clip for the palette.

    The file is written to a temporary name beside `path` and renamed onto `path` only when
    `close()` succeeds. An exception inside a ``with`` block kills the encoder and removes the
    temporary file, so nothing ever stands at `path` unless it is complete.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        *,
        quality: str = "final",
    ) -> None:
        self.path = Path(path)
        self.format = _format_of(self.path)
        self.fps = _check_fps(fps)
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
            if self.format == "mp4" and value % 2:
                raise ValueError(
                    f"{name}: H.264 yuv420p needs even dimensions, got {value}; "
                    "crop or pad the frames to an even size"
                )
        if quality not in QUALITIES:
            raise ValueError(f"quality: must be one of {QUALITIES}, got {quality!r}")
        self.width, self.height, self.quality = int(width), int(height), quality
        self.frames_written = 0
        self._closed = False
        exe = _ffmpeg()  # before creating any file: a missing binary leaves nothing behind
        encoder = _encoder_args(self.format, quality, self.fps)
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        cmd = [
            exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-framerate", _fps_arg(self.fps), "-i", "pipe:0",
            "-an", *encoder, str(self._tmp),
        ]  # fmt: skip
        try:
            # Lives as long as the writer; closed in close()/_abort().
            self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
            self._proc: subprocess.Popen[bytes] = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except BaseException as exc:
            self._abort(exc)
            raise

    def write(self, frame_or_frames: np.ndarray) -> None:
        """Encode one frame (H, W, 3) or a batch (N, H, W, 3) of uint8 RGB."""
        if self._closed:
            raise ValueError(f"writer for '{self.path.name}' is already closed")
        arr = frame_or_frames
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"frame: expected a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.uint8:
            raise ValueError(
                f"frame: expected dtype uint8, got {arr.dtype}; convert with drift.to_uint8"
            )
        shape = (self.height, self.width, 3)
        if arr.ndim == 3:
            n = 1
        elif arr.ndim == 4:
            n = arr.shape[0]
        else:
            n = -1
        if n < 0 or arr.shape[-3:] != shape:
            raise ValueError(
                f"frame: expected shape {shape} or (N, *{shape}) of RGB, got {arr.shape}"
            )
        if n == 0:
            return
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(np.ascontiguousarray(arr).data)
        except (BrokenPipeError, OSError) as exc:
            err = RuntimeError(f"ffmpeg stopped while writing '{self.path.name}': {self._tail()}")
            self._abort(err)
            raise err from exc
        self.frames_written += n

    def close(self) -> Path:
        """Finish encoding and move the file onto its final path. Returns the final path."""
        if self._closed:
            return self.path
        if self.frames_written == 0:
            err = ValueError(f"frames: nothing was written to '{self.path.name}'")
            self._abort(err)
            raise err
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self._proc.stdin.close()
        rc = self._proc.wait()
        if rc != 0:
            err = RuntimeError(f"ffmpeg failed ({rc}) writing '{self.path.name}': {self._tail()}")
            self._abort(err)
            raise err
        self._closed = True
        self._stderr.close()
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Stop the encoder and remove the temporary file; nothing is left at the final path."""
        if not self._closed:
            self._abort(RuntimeError(f"writing '{self.path.name}' was aborted"))

    def _abort(self, exc: BaseException) -> None:
        self._closed = True
        proc = getattr(self, "_proc", None)
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            proc.wait()
        with contextlib.suppress(Exception):
            self._stderr.close()
        # Throws `exc` into atomic_path, which deletes the temporary file and re-raises it;
        # the context manager then reports it as unhandled instead of raising.
        with contextlib.suppress(Exception):
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)

    def _tail(self) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return "(no ffmpeg output)"
        return text[-_STDERR_TAIL:] or "(no ffmpeg output)"

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._abort(exc)
        else:
            self.close()

    def __del__(self) -> None:
        # Safety net for a writer dropped without close(): never leave a temp file or process.
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.abort()


@dataclass
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int
    duration: float  # frames / fps, in seconds
    has_audio: bool
    audio_duration: float = 0.0  # seconds; 0.0 without audio


def _open(path: str | Path, field: str = "path") -> Any:
    import av

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{field}: no such file '{p}'")
    try:
        return av.open(str(p))
    except Exception as exc:
        raise ValueError(f"{field}: cannot read '{p.name}': {_av_reason(exc)}") from exc


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode the first video stream of `path` into RGB uint8 frames, one at a time, in order.

    The file is checked before returning, so a missing file fails here, not on first `next()`.
    """
    container = _open(path)
    if not container.streams.video:
        container.close()
        raise ValueError(f"path: no video stream in '{Path(path).name}'")
    return _decode(container)


def _decode(container: Any) -> Iterator[np.ndarray]:
    flags = _decode_flags()
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24", interpolation=flags)


def probe(path: str | Path) -> VideoInfo:
    """Frame count, rate, size and audio presence of a video file.

    The frame count comes from the container index where there is one (MP4) and otherwise from
    counting packets (fragmented MP4, WebM, GIF), which needs no decoding.
    """
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"path: no video stream in '{Path(path).name}'")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        audio_duration = 0.0
        if container.streams.audio:
            audio = container.streams.audio[0]
            if audio.duration and audio.time_base:
                audio_duration = float(audio.duration * audio.time_base)
            elif container.duration:
                audio_duration = container.duration / 1_000_000
        frames = stream.frames
        if frames <= 0:
            frames = sum(1 for packet in container.demux(stream) if packet.size)
        if fps > 0:
            duration = frames / fps
        else:
            duration = (container.duration or 0) / 1_000_000
        return VideoInfo(
            frames=frames,
            fps=fps,
            width=width,
            height=height,
            duration=duration,
            has_audio=bool(container.streams.audio),
            audio_duration=audio_duration,
        )


# --- retiming -----------------------------------------------------------------------------------


def retime(
    frames: Iterable[np.ndarray], n_in: int, n_out: int, *, flow: bool = True
) -> Iterator[np.ndarray]:
    """Resample `n_in` frames to exactly `n_out` frames, streaming (holds two input frames).

    Output frame j sits at position p = j*(n_in-1)/(n_out-1) of the input (n_out == 1: the first
    frame). Integer positions yield the input frame itself, unchanged (the same array object, so
    do not modify yielded frames in place); fractional positions are interpolated between the two
    neighbours, with DIS optical flow when `flow` is true (both neighbours warped toward
    the position and blended), else a linear blend. n_out < n_in drops frames.

    Raises ValueError if `frames` does not yield exactly `n_in` frames.
    """
    if not isinstance(n_in, (int, np.integer)) or n_in < 1:
        raise ValueError(f"n_in: must be an integer >= 1, got {n_in!r}")
    if not isinstance(n_out, (int, np.integer)) or n_out < 0:
        raise ValueError(f"n_out: must be an integer >= 0, got {n_out!r}")
    return _retime(iter(frames), int(n_in), int(n_out), flow)


def _retime(it: Iterator[np.ndarray], n_in: int, n_out: int, flow: bool) -> Iterator[np.ndarray]:
    den = max(n_out - 1, 1)
    step = n_in - 1 if n_out > 1 else 0
    idx = -1  # input index of `cur`
    prev: np.ndarray | None = None
    cur: np.ndarray | None = None
    flows: tuple[np.ndarray, np.ndarray] | None = None
    for j in range(n_out):
        # Exact integer arithmetic: position j*step/den = i0 + rem/den.
        i0, rem = divmod(j * step, den)
        need = i0 + (1 if rem else 0)
        while idx < need:
            try:
                nxt = next(it)
            except StopIteration:
                raise ValueError(f"n_in: expected {n_in} frames, got only {idx + 1}") from None
            prev, cur, idx, flows = cur, nxt, idx + 1, None
        assert cur is not None
        if rem == 0:
            yield cur
            continue
        assert prev is not None
        t = rem / den
        if flow:
            if flows is None:
                flows = _flows(prev, cur)
            yield _flow_blend(prev, cur, t, flows)
        else:
            yield cv2.addWeighted(prev, 1.0 - t, cur, t, 0.0)
    # Consume and count the rest: a wrong n_in would silently retime to the wrong speed.
    while idx < n_in - 1:
        try:
            next(it)
        except StopIteration:
            raise ValueError(f"n_in: expected {n_in} frames, got only {idx + 1}") from None
        idx += 1
    if next(it, None) is not None:
        raise ValueError(f"n_in: expected {n_in} frames, got more")


def _flows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense flow a->b and b->a at full resolution (computed on a reduced copy)."""
    h, w = a.shape[:2]
    scale = min(1.0, _FLOW_MAX_SIDE / max(h, w))
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        ga = cv2.resize(ga, size, interpolation=cv2.INTER_AREA)
        gb = cv2.resize(gb, size, interpolation=cv2.INTER_AREA)
    # DIS (OpenCV's dense inverse search): the same interpolation error as Farneback on moving
    # texture, at a quarter of the time on small frames (measured: 2.4 vs 9.9 ms a pair at
    # 176 px, mean error 3.16 vs 3.19 against the true middle frame; a blend errs by 12.8).
    # DIS needs a side of 12 px or more; thumbnails-sized frames keep Farneback.
    if max(ga.shape) >= 16:
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        fab, fba = dis.calc(ga, gb, None), dis.calc(gb, ga, None)
    else:
        params = dict(flow=None, pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5,
                      poly_sigma=1.1, flags=0)  # fmt: skip
        fab = cv2.calcOpticalFlowFarneback(ga, gb, **params)
        fba = cv2.calcOpticalFlowFarneback(gb, ga, **params)
    if scale < 1.0:
        sx, sy = w / ga.shape[1], h / ga.shape[0]
        out = []
        for f in (fab, fba):
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
            f[..., 0] *= sx
            f[..., 1] *= sy
            out.append(f)
        fab, fba = out
    return fab, fba


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinate maps for cv2.remap, shared by every interpolated frame of one size."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = False
    gy.flags.writeable = False
    return gx, gy


def _flow_blend(
    a: np.ndarray, b: np.ndarray, t: float, flows: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Frame at time t in (0, 1) between a and b: backward-warp both toward t and blend.

    The flows from time t back to each frame combine both measured flows under linear
    motion (Jiang et al., Super SloMo, 2018): F(t→a) = -(1-t)t F(a→b) + t² F(b→a),
    F(t→b) = (1-t)² F(a→b) - t(1-t) F(b→a), which is right where the flow varies across the
    frame (a zoom) and not only for a flat pan. A pixel whose warp samples outside a frame
    (content entering at the border on a pan) is taken from the other frame alone instead of
    half from a smeared edge. Measured on real footage and a panned photograph against the
    true frames (`benchmarks/run.py`, economy): up to 12 dB better at the borders of a pan.
    """
    fab, fba = flows
    s = 1.0 - t
    wa, in_a = _warp(a, cv2.addWeighted(fab, -s * t, fba, t * t, 0.0))
    wb, in_b = _warp(b, cv2.addWeighted(fab, s * s, fba, -t * s, 0.0))
    out = cv2.addWeighted(wa, s, wb, t, 0.0)
    # Where one warp samples outside its frame, the other frame alone gives the pixel (where
    # both do, a corner neither frame shows, the blend stays).
    out = cv2.copyTo(wa, cv2.bitwise_and(in_a, cv2.bitwise_not(in_b)), out)
    return cv2.copyTo(wb, cv2.bitwise_and(in_b, cv2.bitwise_not(in_a)), out)


def _warp(frame: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`frame` sampled at x + flow(x), and a mask (255) of where that lies inside it."""
    h, w = frame.shape[:2]
    gx, gy = _grid(h, w)
    x = cv2.add(gx, flow[..., 0])
    y = cv2.add(gy, flow[..., 1])
    warped = cv2.remap(frame, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.bitwise_and(cv2.inRange(x, 0, w - 1), cv2.inRange(y, 0, h - 1))
    return warped, inside


# --- stitch -------------------------------------------------------------------------------------


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


def _probe_field(path: str | Path, field: str) -> VideoInfo:
    """`probe`, with errors naming `field` (e.g. ``parts[2].path``) instead of ``path``."""
    try:
        return probe(path)
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith("path:"):
            msg = field + msg[len("path") :]
        raise ValueError(msg) from exc


def _av_reason(exc: BaseException) -> str:
    """Short reason for a PyAV/OS error, without the full path that ffmpeg appends."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def audio_duration(audio: Path) -> float:
    """Validate that `audio` decodes; return its duration in seconds (0.0 if unknown)."""
    import av

    if not audio.is_file():
        reason = "no such file"
    else:
        try:
            with av.open(str(audio)) as container:
                if not container.streams.audio:
                    reason = "no audio stream"
                else:
                    stream = container.streams.audio[0]
                    if next(iter(container.decode(stream)), None) is None:
                        reason = "no audio samples"
                    elif stream.duration and stream.time_base:
                        return float(stream.duration * stream.time_base)
                    else:
                        return (container.duration or 0) / 1_000_000
        except Exception as exc:  # PyAV raises many types, several of them ValueError subclasses
            reason = _av_reason(exc)
    raise ValueError(f"audio: cannot read '{audio.name}': {reason}")


def _mux_audio(
    video: Path, audio: Path, out_path: Path, fmt: str, duration: float, audio_len: float
) -> None:
    """Copy the video stream and add `audio` trimmed (or padded) to `duration`, faded in/out."""
    end = min(duration, audio_len) if audio_len > 0 else duration
    fade = min(_AUDIO_FADE_S, end / 4)
    filters = [f"atrim=end={duration:.6f}", "asetpts=PTS-STARTPTS"]
    if fade > 0:
        filters += [
            f"afade=t=in:st=0:d={fade:.6f}",
            f"afade=t=out:st={end - fade:.6f}:d={fade:.6f}",
        ]
    filters.append(f"apad=whole_dur={duration:.6f}")
    codec = ["-c:a", "aac", "-b:a", "192k"] if fmt == "mp4" else ["-c:a", "libopus", "-b:a", "128k"]
    with atomic_path(out_path) as tmp:
        cmd = [
            _ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-i", str(video), "-i", str(audio),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-af", ",".join(filters), *codec,
        ]  # fmt: skip
        if fmt == "mp4":
            cmd += ["-movflags", "+faststart"]
        cmd.append(str(tmp))
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            tail = proc.stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}) adding audio: {tail}")


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
    audio_len = 0.0
    if audio is not None:
        audio = Path(audio)
        audio_len = audio_duration(audio)
    width, height = infos[0][0].width, infos[0][0].height
    total = sum(int(p.n_out) for p in parts)
    poster_index = total // 3
    poster_frame: np.ndarray | None = None

    use_audio = audio is not None and fmt != "gif"
    with contextlib.ExitStack() as stack:
        if use_audio:
            # Video first to a scratch file beside the output, then the audio is muxed in
            # (video stream copied, not re-encoded).
            out_path.parent.mkdir(parents=True, exist_ok=True)
            fd, scratch = tempfile.mkstemp(
                prefix=f".{out_path.stem}{TMP_MARK}video-",
                suffix=out_path.suffix,
                dir=out_path.parent,
            )
            os.close(fd)
            video_path = Path(scratch)
            stack.callback(video_path.unlink, missing_ok=True)
        else:
            video_path = out_path
        writer = stack.enter_context(VideoWriter(video_path, fps, width, height))
        written = 0
        tail: deque[np.ndarray] = deque()  # previous part's fade_out frames
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
                if written == poster_index:
                    poster_frame = frame.copy()
                writer.write(frame)
                written += 1
            tail = new_tail
        if written != total:  # guarded by retime's exact counts; never publish a wrong file
            raise RuntimeError(f"stitch produced {written} frames, expected {total}")
        writer.close()
        if use_audio:
            assert audio is not None
            _mux_audio(video_path, audio, out_path, fmt, total / fps, audio_len)

    poster_path = None
    if poster is not None and poster_frame is not None:
        poster_path = _write_poster(poster_frame, Path(poster))
    return StitchResult(
        path=out_path,
        frames=total,
        fps=fps,
        width=width,
        height=height,
        duration=total / fps,
        poster=poster_path,
    )
