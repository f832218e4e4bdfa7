"""The model's own sound (LTX-2's twin makes one with every clip): kept per segment, joined
like the frames, as long as the video, resumed the same, mixed with or replaced by music."""

import threading

import numpy as np
import pytest
from conftest import write_tone

from pipelines.chain import VideoOptions, make_video, resume_video
from pipelines.soundtrack import _shot_sound, read_clip_sound, write_clip_sound
from pipelines.storyboard import parse_storyboard
from pipelines.video_io import probe

pytestmark = pytest.mark.usefixtures("one_thread")

STORY = """fps: 24
width: 64
height: 64
seed: 2
shots:
  - prompt: a paper boat on a rainy street
    seconds: 0.5
    transition: crossfade
    transition_seconds: 0.2
  - prompt: the boat reaches a river at dawn
    seconds: 0.5
"""


def make(tmp_path, name: str, extra: str = "", **kw):
    story = tmp_path / f"{name}.yaml"
    story.write_text(extra + STORY)
    return make_video(story, tmp_path / name, VideoOptions(model="tiny-ltx2"), **kw)


def test_the_models_sound_is_as_long_as_the_video_and_kept_per_segment(tmp_path):
    result = make(tmp_path, "run")
    info = probe(result.video)
    assert info.has_audio and info.frames == 24
    assert abs(info.audio_duration - info.duration) < 0.03
    sound, rate = read_clip_sound(result.run_dir / "soundtrack.wav")
    assert sound.shape[1] == rate  # 24 frames at 24 fps: exactly one second
    assert np.abs(sound).max() > 0.01  # the twin's vocoder makes some sound
    wavs = sorted(p.name for p in (result.run_dir / "segments").glob("*.wav"))
    assert wavs == [f"seg-{i:03d}.wav" for i in range(4)]


def test_a_resumed_run_has_the_same_sound(tmp_path):
    whole = make(tmp_path, "whole")
    stop = threading.Event()
    with pytest.raises(Exception, match="cancel"):
        make(tmp_path, "cut", cancel=stop, on_segment=lambda seg, path: stop.set())
    assert not (tmp_path / "cut" / "video.mp4").exists()
    resumed = resume_video(tmp_path / "cut")
    a = read_clip_sound(whole.run_dir / "soundtrack.wav")[0]
    b = read_clip_sound(resumed.run_dir / "soundtrack.wav")[0]
    assert np.array_equal(a, b)


def test_music_is_mixed_with_the_models_sound_or_replaces_it(tmp_path):
    write_tone(tmp_path / "music.wav", 2.0, rate=16000)
    mixed = make(tmp_path, "mix", "audio: music.wav\n")
    replaced = make(tmp_path, "replace", "audio: music.wav\naudio_mix: replace\n")
    assert (mixed.run_dir / "soundtrack-mix.wav").is_file()
    assert not (replaced.run_dir / "soundtrack-mix.wav").exists()
    assert probe(mixed.video).has_audio and probe(replaced.video).has_audio
    assert mixed.video.read_bytes() != replaced.video.read_bytes()


def test_clips_that_continue_crossfade_their_sound_over_the_shared_frames(tmp_path):
    rate, fps = 240, 24  # 10 samples a frame
    a = write_clip_sound(tmp_path / "a.wav", np.full((1, 90), 0.5, np.float32), rate)
    b = write_clip_sound(tmp_path / "b.wav", np.full((1, 90), -0.5, np.float32), rate)
    # a keeps 9 frames (its last 2 shared with b), b keeps 9: 16 frames made, 16 shown.
    sound = _shot_sound([(a, 0, 9, 7), (b, 2, 9, 9)], fps, fps, rate)
    assert sound.shape == (1, 160)
    assert np.allclose(sound[0, :70], 0.5, atol=1e-3) and np.allclose(
        sound[0, 90:], -0.5, atol=1e-3
    )
    assert np.all(np.diff(sound[0, 70:90]) <= 1e-6)  # the shared frames fade from a to b


def test_audio_mix_is_checked():
    with pytest.raises(ValueError, match=r"^audio_mix: must be one of mix, replace"):
        parse_storyboard("audio_mix: over\nshots: [a]\n")
