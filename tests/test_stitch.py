"""Streaming writer, decoder, retiming and stitch, on small synthetic clips."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tone
from PIL import Image

from pipelines.interpolate import retime
from pipelines.stitch import Part, stitch
from pipelines.video_io import FORMATS, VideoWriter, probe, read_frames

REPO = Path(__file__).resolve().parents[1]
BITS = 8
BAND = 16  # px per index bit: wide enough to survive 4:2:0 chroma and compression


def index_frame(i: int, width: int = BITS * BAND, height: int = 64) -> np.ndarray:
    """Top half: the frame index in binary (bright/dark bands). Bottom half: moving colours."""
    f = np.zeros((height, width, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            f[: height // 2, b * BAND : (b + 1) * BAND] = 235
    x = np.arange(width)[None, :] / width
    y = np.arange(height - height // 2)[:, None] / height
    f[height // 2 :, :, 0] = (128 + 80 * np.sin(2 * np.pi * (x + i / 20))).astype(np.uint8)
    f[height // 2 :, :, 1] = (128 + 80 * np.cos(2 * np.pi * (y + i / 15))).astype(np.uint8)
    f[height // 2 :, :, 2] = 90
    return f


def decode_index(f: np.ndarray) -> int:
    h = f.shape[0]
    value = 0
    for b in range(BITS):
        band = f[4 : h // 2 - 4, b * BAND + 4 : (b + 1) * BAND - 4]
        if band.mean() > 128:
            value |= 1 << b
    return value


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def colour_clip(rgb: tuple[int, int, int], n: int, size: int = 64) -> np.ndarray:
    """Solid colour with a small white square moving right: something for the flow to track."""
    clip = np.empty((n, size, size, 3), np.uint8)
    clip[:] = rgb
    for i in range(n):
        x = 4 + i * 2
        clip[i, 4:12, x : x + 8] = 255
    return clip


def write_clip(path: Path, clip: np.ndarray, fps: float = 12, quality: str = "segment") -> Path:
    n, h, w, _ = clip.shape
    with VideoWriter(path, fps, w, h, quality=quality) as writer:
        writer.write(clip)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- VideoWriter / read_frames / probe ----------------------------------------------------------


@pytest.mark.parametrize("quality", ["final", "segment"])
def test_writer_roundtrip_keeps_every_frame_in_order(tmp_path: Path, quality: str) -> None:
    n = 45
    src = [index_frame(i) for i in range(n)]
    out = tmp_path / "clip.mp4"
    with VideoWriter(out, 12, 128, 64, quality=quality) as writer:
        writer.write(src[0])
        writer.write(np.stack(src[1:20]))  # batches too
        for f in src[20:]:
            writer.write(f)
    assert writer.frames_written == n
    assert leftovers(tmp_path) == ["clip.mp4"]

    decoded = list(read_frames(out))
    assert [decode_index(f) for f in decoded] == list(range(n))
    assert all(f.shape == (64, 128, 3) and f.dtype == np.uint8 for f in decoded)
    assert min(psnr(a, b) for a, b in zip(src, decoded, strict=True)) > 35

    info = probe(out)
    assert (info.frames, info.width, info.height) == (n, 128, 64)
    assert info.fps == pytest.approx(12)
    assert info.duration == pytest.approx(n / 12)
    assert not info.has_audio


def test_writer_colours_do_not_drift_across_generations(tmp_path: Path) -> None:
    clip = colour_clip((180, 60, 40), 6)
    for gen in range(3):
        path = write_clip(tmp_path / f"gen{gen}.mp4", clip)
        clip = np.stack(list(read_frames(path)))
    assert np.abs(clip[:, 20:, 20:].reshape(-1, 3).mean(0) - (180, 60, 40)).max() < 1.5


def test_writer_validates_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="width"):
        VideoWriter(tmp_path / "a.mp4", 12, 63, 64)
    with pytest.raises(ValueError, match="height"):
        VideoWriter(tmp_path / "a.mp4", 12, 64, 0)
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "a.mp4", 0, 64, 64)
    with pytest.raises(ValueError, match="quality"):
        VideoWriter(tmp_path / "a.mp4", 12, 64, 64, quality="best")
    with pytest.raises(ValueError, match=r"\.mp4"):
        VideoWriter(tmp_path / "a.avi", 12, 64, 64)
    assert leftovers(tmp_path) == []

    with VideoWriter(tmp_path / "b.mp4", 12, 64, 64) as writer:
        with pytest.raises(ValueError, match="dtype uint8"):
            writer.write(np.zeros((64, 64, 3), np.float32))
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((64, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((64, 64), np.uint8))
        writer.write(np.zeros((64, 64, 3), np.uint8))
    assert probe(tmp_path / "b.mp4").frames == 1


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(out, 12, 128, 64) as writer:
        for i in range(10):
            writer.write(index_frame(i))
        raise RuntimeError("boom")
    assert leftovers(tmp_path) == []


def test_close_without_frames_leaves_nothing(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "empty.mp4", 12, 64, 64)
    with pytest.raises(ValueError, match="frames"):
        writer.close()
    assert leftovers(tmp_path) == []


def test_killed_writer_leaves_nothing_at_final_path(tmp_path: Path) -> None:
    """SIGKILL the writing process and its encoder together (as an OOM kill or crash would)."""
    final = tmp_path / "seg.mp4"
    script = (
        "import time\n"
        "from pipelines.video_io import VideoWriter\n"
        "from tests.test_stitch import index_frame\n"
        f"w = VideoWriter({str(final)!r}, 12, 128, 64, quality='segment')\n"
        "i = 0\n"
        "while True:\n"
        "    w.write(index_frame(i % 256))\n"
        "    i += 1\n"
        "    if i == 60:\n"
        "        print('ready', flush=True)\n"
        "    if i > 60:\n"
        "        time.sleep(0.01)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # own process group, so ffmpeg dies with it
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    # The fragmented temp file still decodes up to the last complete fragment, in order.
    (tmp,) = tmp_path.glob(".seg.*.mp4")
    indices = [decode_index(f) for f in read_frames(tmp)]
    assert len(indices) >= 24 and indices == list(range(len(indices)))


# --- retime -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", [False, True])
@pytest.mark.parametrize("n_out", [0, 1, 2, 5, 10, 19, 31])
def test_retime_exact_counts_and_integer_positions(n_out: int, flow: bool) -> None:
    n_in = 10
    src = [index_frame(i, width=64, height=32) for i in range(n_in)]
    out = list(retime(iter(src), n_in, n_out, flow=flow))
    assert len(out) == n_out
    for j, frame in enumerate(out):
        assert frame.shape == src[0].shape and frame.dtype == np.uint8
        num = j * (n_in - 1)
        den = max(n_out - 1, 1)
        if n_out == 1 or num % den == 0:
            assert np.array_equal(frame, src[0 if n_out == 1 else num // den])


def test_retime_linear_blend_and_single_input() -> None:
    a = np.full((8, 8, 3), 0, np.uint8)
    b = np.full((8, 8, 3), 200, np.uint8)
    out = list(retime([a, b], 2, 5, flow=False))
    assert [int(f[0, 0, 0]) for f in out] == [0, 50, 100, 150, 200]
    held = list(retime([b], 1, 4))
    assert len(held) == 4 and all(np.array_equal(f, b) for f in held)


def test_retime_flow_moves_content_halfway() -> None:
    def square(x: int) -> np.ndarray:
        f = np.full((48, 64, 3), 30, np.uint8)
        f[16:32, x : x + 16] = 220
        return f

    mid = list(retime([square(10), square(26)], 2, 3, flow=True))[1]
    bright = mid[..., 0] > 125
    cx = np.nonzero(bright)[1].mean()
    assert abs(cx - (18 + 7.5)) < 2.5  # centre of the square at x = 18..33


def test_retime_flow_keeps_content_entering_at_the_border_of_a_pan() -> None:
    # A camera pan over a textured scene: every frame shows 6 px new on the right. Keep every
    # third frame, rebuild the two between, and compare with the true frames: the strip
    # where content enters must come from the frame that has it, not a smeared edge.
    import cv2

    rng = np.random.default_rng(3)
    scene = np.zeros((96, 400, 3), np.float32)  # texture at three scales, like a photograph
    for sigma, amplitude in ((16, 1.0), (6, 0.6), (2, 0.3)):
        noise = cv2.GaussianBlur(rng.standard_normal(scene.shape).astype(np.float32), (0, 0), sigma)
        scene += amplitude * noise / noise.std()
    scene = ((scene - scene.min()) / (scene.max() - scene.min()) * 255).astype(np.uint8)
    truth = [scene[:, 6 * i : 6 * i + 160].copy() for i in range(13)]
    rebuilt = list(retime(truth[::3], 5, 13, flow=True))
    blended = list(retime(truth[::3], 5, 13, flow=False))
    between = [i for i in range(13) if i % 3]
    edge = np.s_[8:-8, -24:]  # the entering side (rows off the top and bottom borders)
    flow_db = min(psnr(rebuilt[i][edge], truth[i][edge]) for i in between)
    blend_db = min(psnr(blended[i][edge], truth[i][edge]) for i in between)
    assert flow_db > 32 and flow_db > blend_db + 10, (flow_db, blend_db)
    whole = min(psnr(rebuilt[i][8:-8], truth[i][8:-8]) for i in between)
    assert whole > 40, whole


def test_retime_checks_input_count() -> None:
    frames = [np.zeros((4, 4, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match="n_in"):
        list(retime(frames, 4, 6))
    with pytest.raises(ValueError, match="n_in"):
        list(retime(frames, 2, 6))
    with pytest.raises(ValueError, match="n_in"):
        retime(frames, 0, 6)
    with pytest.raises(ValueError, match="n_out"):
        retime(frames, 3, -1)


# --- stitch -------------------------------------------------------------------------------------

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


@pytest.fixture
def three_parts(tmp_path: Path) -> list[Part]:
    a = write_clip(tmp_path / "a.mp4", colour_clip(RED, 16))
    b = write_clip(tmp_path / "b.mp4", colour_clip(GREEN, 12))
    c = write_clip(tmp_path / "c.mp4", colour_clip(BLUE, 8, size=96))  # resized to 64x64
    # a: 10 own frames + 4 crossfading into b; b -> c: hard cut.
    return [Part(a, n_out=10, fade_out=4), Part(b, n_out=12), Part(c, n_out=8)]


def background(frame: np.ndarray) -> np.ndarray:
    return frame[32:, :].reshape(-1, 3).mean(0)  # below the moving square


def test_stitch_cuts_and_crossfade(tmp_path: Path, three_parts: list[Part]) -> None:
    out = tmp_path / "out" / "final.mp4"
    res = stitch(three_parts, out, 24)
    assert res.path == out and res.frames == 30 and (res.width, res.height) == (64, 64)
    assert res.duration == pytest.approx(30 / 24)

    info = probe(out)
    assert (info.frames, info.width, info.height) == (30, 64, 64)
    assert info.fps == pytest.approx(24)
    frames = list(read_frames(out))
    assert len(frames) == 30
    bg = [background(f) for f in frames]
    for i in range(10):
        assert np.abs(bg[i] - RED).max() < 6
    fade = bg[10:14]
    for k, c in enumerate(fade):
        alpha = (k + 1) / 5
        assert np.abs(c - ((1 - alpha) * np.array(RED) + alpha * np.array(GREEN))).max() < 6
        assert GREEN[0] + 10 < c[0] < RED[0] - 10 and RED[1] + 10 < c[1] < GREEN[1] - 10
    assert all(fade[k][1] < fade[k + 1][1] for k in range(3))  # green rises through the fade
    for i in range(14, 22):
        assert np.abs(bg[i] - GREEN).max() < 6
    for i in range(22, 30):
        assert np.abs(bg[i] - BLUE).max() < 6
    assert leftovers(out.parent) == ["final.mp4"]


def test_a_part_reads_several_files_as_one_stream_across_a_crossfade(tmp_path: Path) -> None:
    """A shot made of several segment files is retimed as one stream: 6 red frames then 6
    green ones become 8 output frames plus a 4-frame crossfade into the next (blue) part,
    and every file is held to its own frame count."""
    a1 = write_clip(tmp_path / "a1.mp4", colour_clip(RED, 6))
    a2 = write_clip(tmp_path / "a2.mp4", colour_clip(GREEN, 6))
    b = write_clip(tmp_path / "b.mp4", colour_clip(BLUE, 10))
    out = tmp_path / "joined.mp4"
    res = stitch([Part(a1, 8, fade_out=4, more=(a2,)), Part(b, 10)], out, 12, flow=False)
    assert res.frames == probe(out).frames == 18
    bg = [background(f) for f in read_frames(out)]
    assert np.abs(bg[0] - RED).max() < 6  # the first file starts the shot
    fade = bg[8:12]  # the second file's green blends into blue
    assert all(f[2] > GREEN[2] + 10 for f in fade) and fade[0][1] > fade[-1][1]
    assert np.abs(bg[-1] - BLUE).max() < 6


def test_stitch_with_audio(tmp_path: Path, three_parts: list[Part]) -> None:
    wav = write_tone(tmp_path / "music.wav", 4.0, rate=44100)  # trimmed to the video
    out = tmp_path / "with_audio.mp4"
    res = stitch(three_parts, out, 12, audio=wav, flow=False)
    info = probe(out)
    assert info.has_audio and info.frames == 30
    assert info.duration == pytest.approx(2.5)
    assert info.audio_duration == pytest.approx(res.duration, abs=0.1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stitch_pads_short_audio(tmp_path: Path, three_parts: list[Part]) -> None:
    wav = write_tone(tmp_path / "short.wav", 1.0, rate=44100)
    info = probe(stitch(three_parts, tmp_path / "padded.mp4", 12, audio=wav, flow=False).path)
    assert info.has_audio and info.audio_duration == pytest.approx(2.5, abs=0.1)


def test_stitch_bad_audio_fails_before_encoding(tmp_path: Path, three_parts: list[Part]) -> None:
    out = tmp_path / "out" / "x.mp4"
    with pytest.raises(ValueError, match=r"^audio: cannot read 'missing\.wav'"):
        stitch(three_parts, out, 12, audio=tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 10)
    with pytest.raises(ValueError, match=r"^audio: cannot read 'junk\.wav'"):
        stitch(three_parts, out, 12, audio=junk)
    assert not out.parent.exists() or leftovers(out.parent) == []


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "mp4"])
def test_stitch_webm_and_gif_decode_with_poster(
    tmp_path: Path, three_parts: list[Part], fmt: str
) -> None:
    wav = write_tone(tmp_path / "music.wav", 3.0, rate=44100)
    out = tmp_path / f"final.{fmt}"
    poster = tmp_path / "poster.jpg"
    res = stitch(three_parts, out, 10, audio=wav, poster=poster, flow=False)
    frames = list(read_frames(out))
    assert len(frames) == 30 and frames[0].shape == (64, 64, 3)
    info = probe(out)
    assert info.frames == 30
    assert info.has_audio == (fmt == "webm")  # audio is dropped for GIF
    assert res.poster == poster and poster.read_bytes()[:2] == b"\xff\xd8"
    with Image.open(poster) as img:
        assert img.format == "JPEG" and img.size == (64, 64)
        # Frame 10 of 30 is the first crossfade frame: mostly red, some green.
        r, g, _ = np.asarray(img.convert("RGB"))[40:, :].reshape(-1, 3).mean(0)
        assert r > g > GREEN[0] + 5


def test_stitch_validates_parts(tmp_path: Path, three_parts: list[Part]) -> None:
    out = tmp_path / "v.mp4"
    a, b, c = three_parts
    with pytest.raises(ValueError, match=r"parts\[2\]\.fade_out"):
        stitch([a, b, Part(c.path, 8, fade_out=2)], out, 12)
    with pytest.raises(ValueError, match=r"parts\[0\]\.fade_out"):
        stitch([Part(a.path, 10, fade_out=13), b], out, 12)
    with pytest.raises(ValueError, match=r"parts\[1\]\.path"):
        stitch([a, Part(tmp_path / "nope.mp4", 5)], out, 12)
    with pytest.raises(ValueError, match=r"parts\[0\]\.n_out"):
        stitch([Part(a.path, 0)], out, 12)
    with pytest.raises(ValueError, match="fps"):
        stitch([a, b], out, -1)
    with pytest.raises(ValueError, match="parts"):
        stitch([], out, 12)
    assert not out.exists()
