import av
import cv2
import numpy as np
import pytest

from pipelines import frames
from pipelines.frames import FrameScore, best_frames

W, H, FPS = 128, 96, 10
COLOURS = {"A": (200, 40, 40), "B": (30, 50, 200), "C": (40, 170, 60)}


def scene_a(i):
    """Red with a white checkerboard and a moving yellow ball."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = COLOURS["A"]
    for y in range(0, H, 16):
        for x in range(0, W, 16):
            if (x // 16 + y // 16) % 2 == 0:
                img[y : y + 8, x : x + 8] = 255
    cv2.circle(img, (20 + 3 * i, 48), 10, (255, 230, 0), -1)
    return img


def scene_b(i):
    """Blue with moving yellow diagonal stripes."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = COLOURS["B"]
    for x in range(-20, W, 12):
        cv2.line(img, (x + i, 0), (x + i + 30, H), (250, 220, 40), 3)
    return img


def scene_c(i):
    """Green with dark bouncing dots and a white bar."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = COLOURS["C"]
    for k in range(5):
        cv2.circle(img, (15 + k * 25, 30 + (k * 17 + i * 2) % 40), 8, (10, 30, 10), -1)
    cv2.rectangle(img, (10, 70), (118, 86), (240, 240, 240), -1)
    return img


def storyboard():
    """A (1.5 s), black (1 s), B (1.5 s), blurred crossfade B->C (1 s), C (1.5 s)."""
    shots = [("A", scene_a(i)) for i in range(15)]
    shots += [("black", np.full((H, W, 3), 4, np.uint8)) for _ in range(10)]
    shots += [("B", scene_b(i)) for i in range(15)]
    for i in range(10):
        a = (i + 1) / 11
        mix = (1 - a) * scene_b(15 + i).astype(np.float32) + a * scene_c(i).astype(np.float32)
        shots.append(("fade", cv2.GaussianBlur(mix, (0, 0), 2.0).clip(0, 255).astype(np.uint8)))
    shots += [("C", scene_c(10 + i)) for i in range(15)]
    return shots


def write_video(path, images):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "16", "preset": "ultrafast"}
        for img in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    shots = storyboard()
    path = write_video(tmp_path_factory.mktemp("video") / "scenes.mp4", [img for _, img in shots])
    return path, [label for label, _ in shots]


def check_picks(picks, labels):
    assert all(isinstance(score, FrameScore) for score, _ in picks)
    times = [score.time for score, _ in picks]
    assert times == sorted(times)
    assert len({score.index for score, _ in picks}) == len(picks)
    for score, rgb in picks:
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        assert rgb.mean() > 40  # never black
        assert labels[score.index] in COLOURS  # never black, never mid-crossfade
        assert not 4.0 <= score.time < 5.0
        assert score.sharpness > 0 and 0 < score.brightness < 1


def scene_of(rgb):
    """The scene whose background colour is nearest to the frame's median colour (RGB)."""
    median = np.median(rgb.reshape(-1, 3), axis=0)
    return min(COLOURS, key=lambda k: np.abs(median - COLOURS[k]).sum())


def test_picks_sharp_frames_from_distinct_scenes(video):
    path, labels = video
    picks = best_frames(path, 3)
    assert len(picks) == 3
    check_picks(picks, labels)
    assert {labels[score.index] for score, _ in picks} == {"A", "B", "C"}
    # The arrays are RGB (not BGR): each pick looks like its scene.
    assert [scene_of(rgb) for _, rgb in picks] == [labels[s.index] for s, _ in picks]


def test_more_frames_than_scenes_still_returns_usable_frames(video):
    path, labels = video
    picks = best_frames(path, 8)
    assert 3 < len(picks) <= 8
    check_picks(picks, labels)
    assert {labels[score.index] for score, _ in picks} == {"A", "B", "C"}


def test_sample_every_and_min_gap(video):
    path, labels = video
    picks = best_frames(path, 3, sample_every=2, min_gap_seconds=1.0)
    check_picks(picks, labels)
    assert all(score.index % 2 == 0 for score, _ in picks)
    times = [score.time for score, _ in picks]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:], strict=False))
    # An explicit gap is a hard rule: a 6.5 s video has room for at most 3 picks 3 s apart.
    picks = best_frames(path, 8, min_gap_seconds=3.0)
    assert 1 <= len(picks) <= 3
    check_picks(picks, labels)


def test_unknown_length_keeps_memory_bounded(video, monkeypatch):
    path, labels = video
    monkeypatch.setattr(frames, "MAX_SAMPLES", 8)
    monkeypatch.setattr(frames, "_estimate_frames", lambda container, stream: 0)
    seen = []
    real = frames._mark_transitions
    monkeypatch.setattr(
        frames, "_mark_transitions", lambda s, rate: (seen.append(len(s)), real(s, rate))
    )
    picks = best_frames(path, 2)
    assert seen and seen[0] < 2 * 8
    assert 1 <= len(picks) <= 2
    check_picks(picks, labels)


def test_black_video_returns_one_frame_with_a_warning(tmp_path):
    path = write_video(tmp_path / "black.mp4", [np.zeros((H, W, 3), np.uint8)] * 12)
    with pytest.warns(UserWarning, match="no well-exposed"):
        picks = best_frames(path, 3)
    assert len(picks) == 1


def test_unreadable_inputs(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a video\n" * 50)
    with pytest.raises(ValueError, match=r"from-video: cannot read 'notes.txt': "):
        best_frames(notes, 3)
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"from-video: cannot read 'noise.mp4': "):
        best_frames(noise, 3)
    with pytest.raises(ValueError, match=r"from-video: cannot read 'missing.mp4': no such file"):
        best_frames(tmp_path / "missing.mp4", 3)
    with pytest.raises(ValueError, match="n: must be at least 1"):
        best_frames(notes, 0)
    with pytest.raises(ValueError, match="sample_every"):
        best_frames(notes, 1, sample_every=0)
