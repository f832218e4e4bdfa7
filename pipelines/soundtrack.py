"""The model's own sound (LTX-2 makes a soundtrack with every clip), joined like the frames.

Each segment's clip sound is kept whole beside its video file (`segments/seg-007.wav`),
written with the segment, so a resumed run has it. At the stitch, a shot's sound is its
segments' sound joined as their frames are (where a clip continues the previous one over
shared frames, the two sounds crossfade over those frames), fitted to the shot's length in
the video (the same retime as its frames, within a few percent), and shots crossfade into
each other where their pictures do. The result streams into one WAV, a shot at a time.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .files import atomic_path
from .video_io import run_ffmpeg


def write_clip_sound(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A clip's float samples (channels, n) in [-1, 1] as a 16-bit WAV, atomically."""
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as out:
        _open(out, samples.shape[0], rate)
        out.writeframes(_pcm(samples))
    return path


def _open(out: wave.Wave_write, channels: int, rate: int) -> None:
    out.setnchannels(channels)
    out.setsampwidth(2)
    out.setframerate(rate)


def _pcm(samples: np.ndarray) -> bytes:
    """Float samples (channels, n) in [-1, 1] as interleaved 16-bit little-endian PCM."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    return np.ascontiguousarray(pcm.T).tobytes()


def read_clip_sound(path: Path) -> tuple[np.ndarray, int]:
    """(samples (channels, n) float32, rate) of a WAV `write_clip_sound` wrote."""
    with wave.open(str(path), "rb") as src:
        channels, rate, n = src.getnchannels(), src.getframerate(), src.getnframes()
        pcm = np.frombuffer(src.readframes(n), dtype="<i2").reshape(n, channels)
    return pcm.T.astype(np.float32) / 32767, rate


def write_soundtrack(
    shots: Sequence[Sequence[tuple[Path, int, int, int]]],
    fades: Sequence[int],
    gen_fps: float,
    fps: float,
    out: Path,
) -> Path | None:
    """The whole video's sound into `out` (WAV); None when no segment has sound.

    `shots`: per shot, its segments as (sound file, overlap, frames kept, output frames),
    where frames kept are the generated frames up to the cut tail (the next segment's
    overlap included) and output frames its share of the shot in the video. `fades`: the
    output frames each shot crossfades into the next."""
    files = [seg[0] for shot in shots for seg in shot]
    if not files or not all(f.is_file() for f in files):
        return None
    rate = read_clip_sound(files[0])[1]
    with atomic_path(out) as tmp, wave.open(str(tmp), "wb") as dst:
        carry: np.ndarray | None = None  # the end of the last shot, to crossfade
        for k, shot in enumerate(shots):
            sound = _shot_sound(shot, gen_fps, fps, rate)
            if carry is not None:
                n = min(carry.shape[1], sound.shape[1])
                sound[:, :n] = _crossfade(carry[:, :n], sound[:, :n])
            tail = round(fades[k] / fps * rate) if k + 1 < len(shots) else 0
            body, carry = sound[:, : sound.shape[1] - tail], sound[:, sound.shape[1] - tail :]
            if k == 0:
                _open(dst, body.shape[0], rate)
            dst.writeframes(_pcm(body))
    return out


def _shot_sound(
    segments: Sequence[tuple[Path, int, int, int]], gen_fps: float, fps: float, rate: int
) -> np.ndarray:
    """One shot's sound: its segments joined over their shared frames, fitted to the
    shot's output length."""
    per_frame = rate / gen_fps
    joined: np.ndarray | None = None
    for path, overlap, kept, _shown in segments:
        sound, _ = read_clip_sound(path)
        sound = sound[:, : round(kept * per_frame)]
        if joined is None:
            joined = sound
            continue
        n = min(round(overlap * per_frame), joined.shape[1], sound.shape[1])
        if n:
            sound = sound.copy()
            sound[:, :n] = _crossfade(joined[:, joined.shape[1] - n :], sound[:, :n])
        joined = np.concatenate([joined[:, : joined.shape[1] - n], sound], axis=1)
    assert joined is not None
    target = round(sum(seg[3] for seg in segments) / fps * rate)
    return _fit(joined, target)


def _crossfade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a` fading out while `b` fades in (equal lengths), linear as the frames blend."""
    ramp = np.linspace(0.0, 1.0, a.shape[1], dtype=np.float32)
    return a * (1.0 - ramp) + b * ramp


def _fit(sound: np.ndarray, n: int) -> np.ndarray:
    """`sound` resampled to `n` samples (the shot's retime: a few percent, so a pitch
    change of as much, as the frames' motion speeds up or slows down)."""
    if sound.shape[1] == n or n == 0 or sound.shape[1] < 2:
        return np.pad(sound, ((0, 0), (0, max(0, n - sound.shape[1]))))[:, :n]
    x = np.linspace(0, sound.shape[1] - 1, n)
    grid = np.arange(sound.shape[1])
    return np.stack([np.interp(x, grid, ch) for ch in sound]).astype(np.float32)


def mix_sounds(own: Path, music: Path, out: Path) -> Path:
    """The model's soundtrack and the storyboard's music, mixed at equal weight for the
    soundtrack's length (ffmpeg's amix, streaming), into `out` (WAV)."""
    with atomic_path(out) as tmp:
        run_ffmpeg(["-i", str(own), "-i", str(music), "-filter_complex",
                    "amix=inputs=2:duration=first:normalize=0", "-c:a", "pcm_s16le", "-f", "wav",
                    str(tmp)], "mixing the sound")  # fmt: skip
    return out
