"""Finishing on small synthetic videos: cards exact in frames, captions in the right frames
and the .srt, ducking measured, an empty spec untouched, bad input in one line."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.finishing import Caption, Finishing, Title, check, finish
from pipelines.overlay import safe_area
from pipelines.stitch import Part, stitch
from pipelines.video_io import VideoWriter, probe, read_frames

FPS, W, H = 8, 160, 96


def make_video(path: Path, frames: int, gray=lambda i: 100) -> Path:
    with VideoWriter(path, FPS, W, H) as w:
        for i in range(frames):
            w.write(np.full((H, W, 3), gray(i), np.uint8))
    return path


def tone(path: Path, freq: float, seconds: float, on: tuple[float, float] | None = None) -> Path:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    if on is not None:
        x[(t < on[0]) | (t >= on[1])] = 0
    with wave.open(str(path), "wb") as f:
        f.setnchannels(2)  # stereo: a mono file is spread over two channels at -3 dB
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.repeat(x * 32767, 2).astype("<i2").tobytes())
    return path


def sound_of(path: Path) -> tuple[np.ndarray, int]:
    """The first channel of a file's sound as floats (AAC and Opus decode planar), and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        planes = np.concatenate([f.to_ndarray() for f in container.decode(stream)], axis=1)
        return planes[0].astype(np.float64), stream.rate


def amplitude(x: np.ndarray, rate: int, freq: float, t0: float, t1: float) -> float:
    """Amplitude of one frequency over [t0, t1) s (a lock-in: correlate with sine and cosine)."""
    seg = x[int(t0 * rate) : int(t1 * rate)]
    t = np.arange(len(seg)) / rate
    return 2 * float(np.hypot(np.mean(seg * np.sin(2 * np.pi * freq * t)),
                              np.mean(seg * np.cos(2 * np.pi * freq * t))))  # fmt: skip


def has_caption(frame: np.ndarray) -> bool:
    return int((frame.min(axis=2) > 200).sum()) > 20  # white letters on the grey picture


def test_cards_are_exact_in_frames(tmp_path):
    video = make_video(tmp_path / "in.mp4", 12, gray=lambda i: 60 + 10 * i)
    spec = Finishing(title=Title("Paper boat", 1.0, "#c00000"), end=Title("End", 0.5, "last_frame"))
    out = finish(video, tmp_path / "out.mp4", spec)
    frames = list(read_frames(out))
    assert len(frames) == probe(out).frames == 8 + 12 + 4
    corners = [f[2, 2].astype(int) for f in frames]
    assert all(abs(c - (192, 0, 0)).max() < 12 for c in corners[:8])  # the title's colour
    assert [round((c.mean() - 60) / 10) for c in corners[8:20]] == list(range(12))  # the video
    assert all(abs(c.mean() - 170 * 0.45) < 6 for c in corners[20:])  # last frame, darkened
    assert all(has_caption(f) for f in frames[:8] + frames[20:])  # their texts
    assert not any(has_caption(f) for f in frames[8:20])


def test_captions_burn_into_their_frames_and_the_srt(tmp_path):
    video = make_video(tmp_path / "in.mp4", 24)
    spec = Finishing(
        title=Title("Boat", 1.0),
        captions=(Caption("A paper boat", shot=0), Caption("At dawn", start=2.0, end=2.5)),
    )
    out = finish(video, tmp_path / "out.mp4", spec, shots=[(0.0, 1.0), (1.0, 3.0)])
    frames = list(read_frames(out))[8:]  # after the title card
    burned = [i for i, f in enumerate(frames) if has_caption(f)]
    assert burned == [*range(0, 8), *range(16, 20)]
    left, top, right, bottom = safe_area((W, H))
    outside = np.ones((H, W), bool)
    outside[top:bottom, left:right] = False
    for f in frames:
        assert np.abs(f[outside].astype(int) - 100).max() <= 12  # no text outside the safe area
    assert (tmp_path / "out.srt").read_text() == (
        "1\n00:00:01,000 --> 00:00:02,000\nA paper boat\n\n"
        "2\n00:00:03,000 --> 00:00:03,500\nAt dawn\n"
    )


def test_ducking_lowers_the_music_under_the_voice(tmp_path):
    video = make_video(tmp_path / "in.mp4", 24)
    music = tone(tmp_path / "music.wav", 440, 5.0)
    voice = tone(tmp_path / "voice.wav", 2000, 3.0, on=(1.0, 2.0))
    spec = Finishing(music=music, voice=voice, duck_db=12, fade_seconds=0.25)
    x, rate = sound_of(finish(video, tmp_path / "out.mp4", spec))
    assert len(x) / rate == pytest.approx(3.0, abs=0.05)
    free = amplitude(x, rate, 440, 0.4, 0.8)
    under = amplitude(x, rate, 440, 1.2, 1.8)
    assert free == pytest.approx(0.3, abs=0.03)
    assert 20 * np.log10(under / free) == pytest.approx(-12, abs=1.0)
    assert amplitude(x, rate, 440, 2.5, 2.7) == pytest.approx(free, rel=0.1)  # back up after
    assert amplitude(x, rate, 2000, 1.2, 1.8) == pytest.approx(0.3, abs=0.03)  # the voice
    assert amplitude(x, rate, 440, 0.0, 0.1) < free / 2  # faded in
    assert amplitude(x, rate, 440, 2.9, 3.0) < free / 2  # faded out


def test_the_videos_own_sound_follows_the_title_card(tmp_path):
    picture = make_video(tmp_path / "picture.mp4", 16)
    video = tmp_path / "in.mp4"
    stitch([Part(picture, 16)], video, FPS, audio=tone(tmp_path / "a.wav", 440, 2.0))
    x, rate = sound_of(finish(video, tmp_path / "out.mp4", Finishing(title=Title("Hi", 1.0))))
    assert len(x) / rate == pytest.approx(3.0, abs=0.05)
    assert amplitude(x, rate, 440, 0.1, 0.9) < 0.01  # silent under the title
    assert amplitude(x, rate, 440, 1.8, 2.2) == pytest.approx(0.3, abs=0.03)


def test_an_empty_spec_leaves_the_video_byte_identical(tmp_path):
    video = make_video(tmp_path / "in.mp4", 4)
    out = finish(video, tmp_path / "out.mp4", Finishing())
    assert out.read_bytes() == video.read_bytes()
    assert finish(video, video, Finishing()) == video
    assert not (tmp_path / "out.srt").exists()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Finishing(title=Title("", 1.0)), r"title\.text: must be non-empty"),
        (lambda: Finishing(end=Title("x", 0)), r"end\.seconds: must be > 0"),
        (lambda: Finishing(title=Title("x", 1, "nocolour")), r"title\.background: .*#rrggbb"),
        (
            lambda: Finishing(captions=[Caption("x", shot=0, start=1, end=2)]),
            r"captions\[0\]: give either shot or start and end",
        ),  # fmt: skip
        (
            lambda: Finishing(captions=[Caption("x", start=2, end=1)]),
            r"captions\[0\]\.end: must be after",
        ),
        (lambda: Finishing(duck_db=-3), r"duck_db: must be 0 to 60"),
    ],
)
def test_bad_fields_fail_in_one_line(build, message):
    with pytest.raises(ValueError, match=f"^{message}") as info:
        build()
    assert "\n" not in str(info.value)


def test_bad_input_against_the_video_fails_in_one_line(tmp_path):
    video = make_video(tmp_path / "in.mp4", 8)
    long = Finishing(captions=[Caption("a paper boat drifts " * 6, shot=0)])
    with pytest.raises(
        ValueError, match=r"^captions\[0\]\.text: wraps to \d+ lines at 160 px"
    ) as e:
        finish(video, tmp_path / "out.mp4", long, shots=[(0.0, 1.0)])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a sound")
    with pytest.raises(
        ValueError, match=r"^voice: cannot read 'notes.txt'.*give an audio file"
    ) as v:
        finish(video, tmp_path / "out.mp4", Finishing(voice=notes))
    with pytest.raises(ValueError, match=r"^captions\[0\]\.shot: there is no shot 5"):
        check(Finishing(captions=[Caption("x", shot=5)]), W, H, FPS, shots=2)
    both = Finishing(captions=[Caption("a", start=0, end=0.6), Caption("b", start=0.5, end=1)])
    with pytest.raises(ValueError, match=r"^captions\[1\]: overlaps captions\[0\]"):
        finish(video, tmp_path / "out.mp4", both)
    assert "\n" not in str(e.value) + str(v.value)
    assert not (tmp_path / "out.mp4").exists()
