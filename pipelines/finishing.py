"""Finishing a stitched video: title and end cards, burned-in captions with an .srt beside
the video, and music faded in and out and ducked under a voice.

It runs after the stitch and streams, so memory stays flat however long the video is:
frames are decoded, captioned and encoded one at a time (`stitch.read_frames` into
`stitch.VideoWriter`), and moviepy 2 mixes the sound, which it reads and writes in chunks.
Frames never pass through moviepy: its `ImageSequenceClip` holds every frame and writes
some one index off (see FACTS.md). An empty `Finishing` leaves the video as it is, byte
for byte.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from .files import TMP_MARK, atomic_path, write_text
from .overlay import draw_title, font_path, safe_area
from .video_io import (
    FORMATS,
    VideoInfo,
    VideoWriter,
    audio_duration,
    probe,
    read_frames,
    run_ffmpeg,
)

CARD_FRAMES = ("first_frame", "last_frame")  # card backgrounds taken from the video
_CARD_DIM = 0.45  # a video frame behind a card's text is darkened to this share
_CAPTION_SHARE = 0.055  # caption font size, of the shorter side
_MIN_CAPTION_PX = 8
_MAX_CAPTION_LINES = 2
_AUDIO_RATE = 48_000  # Opus takes only 48 kHz; AAC takes it too
_SOUND_FILES = {".mp4": ".m4a", ".webm": ".opus"}  # AAC for MP4, Opus for WebM
_DUCK_WINDOW = 0.05  # seconds: the voice's level is measured per window
_VOICE_LEVEL = 0.01  # RMS (-40 dBFS): above this the voice is speaking
_DUCK_ATTACK, _DUCK_RELEASE = 0.1, 0.4  # seconds the music goes down before / stays after


@dataclass(frozen=True)
class Title:
    """A card before the video (title) or after it (end)."""

    text: str
    seconds: float = 2.0
    background: str | tuple[int, int, int] = "black"  # a colour, "first_frame" or "last_frame"


@dataclass(frozen=True)
class Caption:
    """Text burned in at the bottom of the picture: under a whole shot, or over a time range
    in seconds of the stitched video (title card not counted)."""

    text: str
    shot: int | None = None
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Finishing:
    """Everything finishing adds; each part optional. Checked on construction: a ValueError
    names the field (``end.seconds``, ``captions[2].start``) and the fix."""

    title: Title | None = None
    end: Title | None = None
    captions: tuple[Caption, ...] = ()
    music: Path | None = None  # replaces the video's own sound; faded in and out
    voice: Path | None = None  # starts with the video; the sound under it is ducked
    duck_db: float = 12.0  # how far the sound under the voice goes down
    fade_seconds: float = 1.0  # music fade in and out

    def __post_init__(self) -> None:
        object.__setattr__(self, "captions", tuple(self.captions))
        for name in ("music", "voice"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        for name in ("title", "end"):
            _check_card(name, getattr(self, name))
        for i, caption in enumerate(self.captions):
            _check_caption(f"captions[{i}]", caption)
        _check_number("duck_db", self.duck_db, 0, 60, "decibels the music goes down")
        _check_number("fade_seconds", self.fade_seconds, 0, 60, "seconds of music fade")

    @property
    def empty(self) -> bool:
        """Nothing to add: finishing returns the video untouched."""
        return not any((self.title, self.end, self.captions, self.music, self.voice))


def _check_number(name: str, value: Any, lo: float, hi: float, what: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not lo <= value <= hi:
        raise ValueError(f"{name}: must be {lo:g} to {hi:g} {what}, got {value!r}")


def _check_text(name: str, text: Any) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name}: must be non-empty text, got {text!r}")


def _check_card(name: str, card: Title | None) -> None:
    if card is None:
        return
    if not isinstance(card, Title):
        raise ValueError(f"{name}: must be a Title(text, seconds, background), got {card!r}")
    _check_text(f"{name}.text", card.text)
    _check_number(f"{name}.seconds", card.seconds, 0, 600, "seconds")
    if card.seconds <= 0:
        raise ValueError(f"{name}.seconds: must be > 0 (got 0); give the card's length")
    _card_colour(name, card.background)


def _card_colour(name: str, background: Any) -> tuple[int, int, int] | None:
    """The card's colour as RGB, or None for a background taken from the video."""
    if background in CARD_FRAMES:
        return None
    if isinstance(background, tuple) and len(background) == 3:
        if all(isinstance(v, int) and 0 <= v <= 255 for v in background):
            return background
    elif isinstance(background, str):
        with contextlib.suppress(ValueError):
            return ImageColor.getrgb(background)[:3]
    raise ValueError(
        f"{name}.background: {background!r} is not a colour; use a name (black), #rrggbb, "
        f"an (r, g, b) tuple, or {' or '.join(CARD_FRAMES)}"
    )


def _check_caption(name: str, caption: Caption) -> None:
    if not isinstance(caption, Caption):
        raise ValueError(f"{name}: must be a Caption(text, shot | start, end), got {caption!r}")
    _check_text(f"{name}.text", caption.text)
    timed = caption.start is not None or caption.end is not None
    if (caption.shot is None) == (not timed):
        raise ValueError(f"{name}: give either shot or start and end, not both or neither")
    if caption.shot is not None:
        if not isinstance(caption.shot, int) or isinstance(caption.shot, bool) or caption.shot < 0:
            raise ValueError(f"{name}.shot: must be a shot index >= 0, got {caption.shot!r}")
        return
    for part in ("start", "end"):
        _check_number(f"{name}.{part}", getattr(caption, part), 0, 1e6, "seconds")
    if caption.end <= caption.start:  # type: ignore[operator]
        raise ValueError(
            f"{name}.end: must be after start ({caption.start:g} s), got {caption.end:g} s"
        )


# --- checks against a video ---------------------------------------------------------------------


def _caption_field(i: int, part: str) -> str:
    return f"captions[{i}].{part}"


@dataclass(frozen=True)
class FieldNames:
    """What `check`'s one-line errors call each part of a spec: the finishing spec's own
    names by default; a storyboard passes its own (`end_card`, `audio`, `shots[3].caption`)."""

    title: str = "title"
    end: str = "end"
    music: str = "music"
    voice: str = "voice"
    caption: Callable[[int, str], str] = _caption_field  # (caption index, "text" | "shot")


def check(
    spec: Finishing,
    width: int,
    height: int,
    fps: float,
    *,
    shots: int | None = None,
    fmt: str = "mp4",
    names: FieldNames = FieldNames(),  # noqa: B008 - frozen, never changed
) -> None:
    """What `spec` needs of a video of this size, rate, shot count and format (`mp4`,
    `webm`, `gif`): cards a frame long at least, captions within two lines and existing
    shots, readable music and voice. Cheap: the faces call it before any generation."""
    for part in ("title", "end"):
        card = getattr(spec, part)
        if card is not None and round(card.seconds * fps) < 1:
            raise ValueError(f"{getattr(names, part)}.seconds: {card.seconds:g} s is shorter "
                             f"than one frame at {fps:g} fps")  # fmt: skip
    for i, caption in enumerate(spec.captions):
        if shots is not None and caption.shot is not None and caption.shot >= shots:
            raise ValueError(f"{names.caption(i, 'shot')}: there is no shot {caption.shot} "
                             f"(the video has {shots})")  # fmt: skip
        lines = caption_lines(caption.text, width, height)
        if len(lines) > _MAX_CAPTION_LINES:
            raise ValueError(
                f"{names.caption(i, 'text')}: wraps to {len(lines)} lines at {width} px wide "
                f"(at most {_MAX_CAPTION_LINES}); shorten it or split it into two captions"
            )
    for part in ("music", "voice"):
        path = getattr(spec, part)
        if path is None:
            continue
        name = getattr(names, part)
        if fmt == "gif":
            raise ValueError(f"{name}: a GIF has no sound; finish to .mp4 or .webm")
        try:
            audio_duration(path)
        except ValueError as exc:
            reason = str(exc).removeprefix("audio: ")
            raise ValueError(f"{name}: {reason}; give an audio file (wav, mp3, m4a)") from None


# --- captions -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _caption_font(width: int, height: int) -> tuple[ImageFont.FreeTypeFont, int]:
    """The caption font at this video size, and its outline width."""
    size = max(_MIN_CAPTION_PX, round(min(width, height) * _CAPTION_SHARE))
    return ImageFont.truetype(str(font_path()), size), max(1, round(size * 0.08))


def caption_lines(text: str, width: int, height: int) -> list[str]:
    """`text` wrapped to the safe area's width at the caption size; explicit newlines are
    kept, and a word wider than a line is broken between characters."""
    font, stroke = _caption_font(width, height)
    left, _, right, _ = safe_area((width, height))
    room = right - left - 2 * stroke
    lines: list[str] = []
    for paragraph in text.splitlines():
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}" if current else word
            if font.getlength(candidate) <= room:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            for ch in word:  # a word alone on its line, broken where it must be
                if current and font.getlength(current + ch) > room:
                    lines.append(current)
                    current = ""
                current += ch
        if current:
            lines.append(current)
    return lines


@dataclass(frozen=True)
class _Timed:
    """A caption placed: output frames [start, end) of the stitched video and its lines."""

    start: int
    end: int
    lines: tuple[str, ...]


def _place_captions(
    spec: Finishing, info: VideoInfo, shots: list[tuple[float, float]] | None
) -> list[_Timed]:
    """Captions in frames of the video, in order; overlapping ones are refused."""
    placed = []
    for i, caption in enumerate(spec.captions):
        if caption.shot is not None:
            if shots is None:
                raise ValueError(f"captions[{i}].shot: pass the shots' times (shots=[...])")
            start, end = shots[caption.shot]
        else:
            start, end = caption.start, caption.end
        first, stop = round(start * info.fps), min(round(end * info.fps), info.frames)
        if stop <= first:
            raise ValueError(
                f"captions[{i}]: {start:g}-{end:g} s shows in no frame of the "
                f"{info.duration:g} s video; move it inside"
            )
        lines = caption_lines(caption.text, info.width, info.height)
        placed.append((first, stop, i, tuple(lines)))
    placed.sort()
    for (_, a_end, a, _), (b_start, _, b, _) in itertools.pairwise(placed):
        if b_start < a_end:
            raise ValueError(f"captions[{b}]: overlaps captions[{a}]; end one before the other")
    return [_Timed(first, stop, lines) for first, stop, _, lines in placed]


def _caption_layer(lines: tuple[str, ...], width: int, height: int) -> tuple[Any, ...]:
    """The caption's pixels and opacity, and where they go: centred at the bottom of the
    safe area, white with a dark outline so they read on any picture."""
    font, stroke = _caption_font(width, height)
    pitch = round(font.size * 1.2) + stroke
    boxes = [font.getbbox(line, stroke_width=stroke, anchor="ls") for line in lines]
    block_w = max(b[2] - b[0] for b in boxes)
    top, bottom = boxes[0][1], (len(lines) - 1) * pitch + boxes[-1][3]
    layer = Image.new("RGBA", (block_w, bottom - top), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for k, (line, box) in enumerate(zip(lines, boxes, strict=True)):
        x = (block_w - (box[2] - box[0])) // 2 - box[0]
        draw.text((x, k * pitch - top), line, font=font, fill=(255, 255, 255, 255),
                  anchor="ls", stroke_width=stroke, stroke_fill=(16, 16, 16, 255))  # fmt: skip
    left, _, right, safe_bottom = safe_area((width, height))
    x0 = left + (right - left - block_w) // 2
    y0 = safe_bottom - layer.height
    rgba = np.asarray(layer, dtype=np.float32)
    return rgba[..., :3], rgba[..., 3:] / 255.0, x0, y0


class _Burner:
    """Burns the caption due at each frame; draws one caption at a time (memory stays flat)."""

    def __init__(self, captions: list[_Timed], width: int, height: int) -> None:
        self.captions, self.size, self.k, self.layer = captions, (width, height), 0, None

    def __call__(self, i: int, frame: np.ndarray) -> np.ndarray:
        while self.k < len(self.captions) and self.captions[self.k].end <= i:
            self.k, self.layer = self.k + 1, None
        if self.k == len(self.captions) or self.captions[self.k].start > i:
            return frame
        if self.layer is None:
            self.layer = _caption_layer(self.captions[self.k].lines, *self.size)
        rgb, alpha, x0, y0 = self.layer
        out = frame.copy()
        region = out[y0 : y0 + rgb.shape[0], x0 : x0 + rgb.shape[1]]
        region[:] = np.rint(region * (1.0 - alpha) + rgb * alpha).astype(np.uint8)
        return out


def _srt(captions: list[_Timed], fps: float, lead: int = 0) -> str:
    """SubRip text of placed captions; `lead` frames (a title card) come before the video."""

    def stamp(frame: int) -> str:
        ms = round((lead + frame) / fps * 1000)
        hours, ms = divmod(ms, 3_600_000)
        minutes, ms = divmod(ms, 60_000)
        return f"{hours:02d}:{minutes:02d}:{ms // 1000:02d},{ms % 1000:03d}"

    blocks = [
        f"{n}\n{stamp(c.start)} --> {stamp(c.end)}\n" + "\n".join(c.lines) + "\n"
        for n, c in enumerate(captions, start=1)
    ]
    return "\n".join(blocks)


# --- cards and frames ---------------------------------------------------------------------------


def _card(card: Title, name: str, info: VideoInfo, first: np.ndarray, last: np.ndarray) -> Any:
    """A card's one frame: its text centred on a colour, or on a darkened video frame."""
    colour = _card_colour(name, card.background)
    if colour is not None:
        base = np.empty((info.height, info.width, 3), np.uint8)
        base[:] = colour
    else:
        frame = first if card.background == "first_frame" else last
        base = np.rint(frame * _CARD_DIM).astype(np.uint8)
    picture, _ = draw_title(Image.fromarray(base), card.text, position="center")
    return np.asarray(picture.convert("RGB"))


def _frames_of(card: Title | None, fps: float) -> int:
    return round(card.seconds * fps) if card is not None else 0


def _write_video(
    video: Path, path: Path, spec: Finishing, info: VideoInfo, captions: list[_Timed]
) -> int:
    """Title card, the video with its captions, end card: one frame at a time. Returns the
    frames written."""
    frames: Iterator[np.ndarray] = read_frames(video)
    first = next(frames)
    burn = _Burner(captions, info.width, info.height)
    with VideoWriter(path, info.fps, info.width, info.height) as writer:
        if spec.title is not None:
            card = _card(spec.title, "title", info, first, first)
            for _ in range(_frames_of(spec.title, info.fps)):
                writer.write(card)
        last = first
        for i, frame in enumerate(itertools.chain([first], frames)):
            writer.write(burn(i, frame))
            last = frame
        if spec.end is not None:
            card = _card(spec.end, "end", info, first, last)
            for _ in range(_frames_of(spec.end, info.fps)):
                writer.write(card)
        return writer.frames_written


# --- sound --------------------------------------------------------------------------------------


def _duck_curve(voice: Path, duck_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Gain over the voice's time: down by `duck_db` while it speaks (from `_DUCK_ATTACK`
    before to `_DUCK_RELEASE` after), 1 elsewhere. A few numbers a second of voice."""
    from moviepy import AudioFileClip

    clip = AudioFileClip(str(voice), fps=_AUDIO_RATE)
    try:
        step = round(_DUCK_WINDOW * _AUDIO_RATE)
        n = math.ceil(clip.duration * _AUDIO_RATE / step)
        levels = np.empty(n)
        for w in range(n):
            t = np.arange(w * step, (w + 1) * step) / _AUDIO_RATE
            levels[w] = np.sqrt(np.mean(clip.get_frame(t[t < clip.duration]) ** 2))
    finally:
        clip.close()
    before = math.ceil(_DUCK_ATTACK / _DUCK_WINDOW)
    after = math.ceil(_DUCK_RELEASE / _DUCK_WINDOW)
    speaking = np.convolve(levels > _VOICE_LEVEL, np.ones(before + after + 1))
    ducked = speaking[before : before + n] > 0
    times = (np.arange(n) + 0.5) * _DUCK_WINDOW
    return times, np.where(ducked, 10 ** (-duck_db / 20), 1.0)


def _ducked(clip: Any, voice: Path, voice_start: float, duck_db: float) -> Any:
    """`clip` turned down under the voice, which starts at `voice_start` of the clip's time."""
    times, gains = _duck_curve(voice, duck_db)
    times = times + voice_start

    def apply(get_frame: Any, t: Any) -> Any:
        gain = np.interp(t, times, gains, left=1.0, right=1.0)
        return get_frame(t) * (gain[:, None] if np.ndim(t) else gain)

    return clip.transform(apply)


def _write_sound(
    spec: Finishing, video: Path, info: VideoInfo, lead: float, total: float, out: Path
) -> bool:
    """Mix the finished sound into `out` with moviepy (chunk by chunk): the music (or the
    video's own sound, moved past the title card), ducked under the voice. False: silent."""
    from moviepy import AudioFileClip, CompositeAudioClip, afx

    opened, layers = [], []
    try:
        bed, voice_at = None, lead
        if spec.music is not None:
            bed = AudioFileClip(str(spec.music), fps=_AUDIO_RATE)
            opened.append(bed)
            bed = bed.subclipped(0, min(bed.duration, total))
            fade = min(spec.fade_seconds, bed.duration / 4)
            if fade > 0:
                bed = bed.with_effects([afx.AudioFadeIn(fade), afx.AudioFadeOut(fade)])
        elif info.has_audio:
            bed = AudioFileClip(str(video), fps=_AUDIO_RATE)
            opened.append(bed)
            bed, voice_at = bed.subclipped(0, min(bed.duration, info.duration)), 0.0
        if spec.voice is not None:
            voice = AudioFileClip(str(spec.voice), fps=_AUDIO_RATE)
            opened.append(voice)
            layers.append(voice.with_start(lead))
            if bed is not None:
                bed = _ducked(bed, spec.voice, voice_at, spec.duck_db)
        if bed is not None:
            layers.insert(0, bed if spec.music is not None else bed.with_start(lead))
        if not layers:
            return False
        codec = {".m4a": "aac", ".opus": "libopus"}[out.suffix]
        mix = CompositeAudioClip(layers).with_duration(total)
        mix.write_audiofile(str(out), fps=_AUDIO_RATE, codec=codec, bitrate="192k", logger=None)
        return True
    finally:
        for clip in opened:
            clip.close()


def _mux(video: Path, sound: Path, out: Path) -> None:
    """Put the finished picture and sound in one file, both copied (no re-encoding)."""
    faststart = ["-movflags", "+faststart"] if out.suffix.lower() == ".mp4" else []
    with atomic_path(out) as tmp:
        run_ffmpeg(["-i", str(video), "-i", str(sound), "-map", "0:v:0", "-map", "1:a:0",
                    "-c", "copy", *faststart, str(tmp)], "adding the sound")  # fmt: skip


# --- entry point --------------------------------------------------------------------------------


def from_storyboard(sb) -> Finishing:
    """What a storyboard asks of finishing (`Storyboard.finishing`): its cards, each shot's
    caption, its voice over the music (faded, ducked). Empty when it asks for none of them."""
    if not sb.finishing:
        return Finishing()

    def card(c) -> Title | None:
        return None if c is None else Title(c.text, c.seconds, c.background)

    captions = [Caption(s.caption, shot=k) for k, s in enumerate(sb.shots) if s.caption]
    return Finishing(
        title=card(sb.title), end=card(sb.end_card), captions=tuple(captions),
        music=Path(sb.audio) if sb.audio else None, voice=Path(sb.voice) if sb.voice else None,
        duck_db=sb.duck_db, fade_seconds=sb.music_fade,
    )  # fmt: skip


def check_storyboard(sb) -> None:
    """`check` of what a storyboard asks, before any generation; a problem is named by the
    storyboard's own field (`shots[3].caption`, `end_card.seconds`, `audio`)."""
    with_caption = [k for k, s in enumerate(sb.shots) if s.caption]
    names = FieldNames(end="end_card", music="audio",
                       caption=lambda i, part: f"shots[{with_caption[i]}].caption")  # fmt: skip
    check(from_storyboard(sb), sb.width, sb.height, sb.fps, shots=len(sb.shots), fmt=sb.format,
          names=names)  # fmt: skip


def shot_times(sb) -> list[tuple[float, float]]:
    """Each shot's (start, end) in seconds of the stitched video."""
    ends = list(itertools.accumulate(sb.shot_frames()))
    return [(a / sb.fps, b / sb.fps) for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def finish(
    video: str | Path,
    out: str | Path,
    spec: Finishing,
    shots: list[tuple[float, float]] | None = None,
) -> Path:
    """Finish a stitched `video` into `out` (.mp4, .webm or .gif): cards, captions (and
    `out`.srt), sound. `shots` are each shot's (start, end) seconds in the video,
    needed by captions given by shot. An empty spec copies the video unchanged."""
    video, out = Path(video), Path(out)
    if spec.empty:
        if out.resolve() != video.resolve():
            with atomic_path(out) as tmp:
                shutil.copyfile(video, tmp)
        return out
    if out.resolve() == video.resolve():
        raise ValueError("out: must differ from the video being finished; give a new path")
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"out: {out.name} is not one of .{', .'.join(FORMATS)}")
    try:
        info = probe(video)
    except ValueError as exc:
        raise ValueError("video" + str(exc).removeprefix("path")) from None
    check(spec, info.width, info.height, info.fps, fmt=fmt,
          shots=None if shots is None else len(shots))  # fmt: skip
    captions = _place_captions(spec, info, shots)
    lead = _frames_of(spec.title, info.fps)
    total = (lead + info.frames + _frames_of(spec.end, info.fps)) / info.fps
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}{TMP_MARK}", dir=out.parent) as tmp:
        picture = Path(tmp) / f"picture.{fmt}"
        _write_video(video, picture, spec, info, captions)
        sound = Path(tmp) / f"sound{_SOUND_FILES.get('.' + fmt, '')}"
        if fmt != "gif" and _write_sound(spec, video, info, lead / info.fps, total, sound):
            _mux(picture, sound, out)
        else:
            with atomic_path(out) as final:
                shutil.move(picture, final)
    if captions:
        write_text(out.with_suffix(".srt"), _srt(captions, info.fps, lead))
    return out
