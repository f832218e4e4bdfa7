"""Video files in and out: streaming encode (an ffmpeg pipe), decode and probe (PyAV).

Nothing here holds a whole video in memory: frames are piped one at a time into the ffmpeg
binary shipped with imageio-ffmpeg and decoded one at a time with PyAV. Every file is
written to a temporary name beside its final path and renamed only after the encoder
exited cleanly (`pipelines.files.atomic_path`); per-segment files are fragmented MP4, which
stays decodable if the process is killed half-way.

Colour: RGB goes to BT.709 limited-range YUV 4:2:0 with accurate rounding and comes back
with accurate rounding (swscale's default rounding darkens every generation by about one
level, which adds up when segments are decoded and re-encoded into the final video). Every
reader of video in the engine decodes through `read_frames`, so all see the same pixels.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from pipelines.files import atomic_path

FORMATS = ("mp4", "webm", "gif")
QUALITIES = ("final", "segment")

# swscale flags: accurate rounding and full chroma interpolation keep colours stable across
# repeated encode/decode generations (see module docstring).
_SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int"
_YUV_FILTER = f"scale=out_color_matrix=bt709:out_range=tv:flags={_SWS_FLAGS},format=yuv420p"
_BT709_TAGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
_FRAGMENTED = ["-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-flush_packets", "1"]
_GIF_FILTER = "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a"

_AUDIO_FADE_S = 0.5
_STDERR_TAIL = 2000


@functools.lru_cache(maxsize=1)
def _ffmpeg() -> str:
    """Path of the ffmpeg binary shipped with imageio-ffmpeg, looked up on first use."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], what: str) -> None:
    """Run the ffmpeg binary quietly with `args` (inputs, filters, the output path); a
    failure raises RuntimeError naming `what` it was doing, with ffmpeg's last words."""
    cmd = [_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}) {what}: {tail}")


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
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield to_rgb(frame)


def to_rgb(frame: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
    """A decoded PyAV frame as RGB uint8 (scaled to width × height when given), with the
    accurate rounding every reader in the engine uses."""
    return frame.to_ndarray(
        width=width, height=height, format="rgb24", interpolation=_decode_flags()
    )


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
    faststart = ["-movflags", "+faststart"] if fmt == "mp4" else []
    with atomic_path(out_path) as tmp:
        run_ffmpeg(["-i", str(video), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
                    "-c:v", "copy", "-af", ",".join(filters), *codec, *faststart, str(tmp)],
                   "adding audio")  # fmt: skip
