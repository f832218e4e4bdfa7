"""Drift metrics, colour matching and bad-frame checks on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.drift import Drift, check_frames, match_colors, measure, ssim, to_uint8


def scene(i: int = 0, width: int = 96, height: int = 64) -> np.ndarray:
    """Smooth colour gradients plus a bright disc that moves with `i`."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    f = np.empty((height, width, 3), np.float32)
    f[..., 0] = 60 + 120 * x / width
    f[..., 1] = 50 + 100 * y / height
    f[..., 2] = 140 - 60 * x / width
    cx, cy = 20 + 3 * i, height / 2
    f[(x - cx) ** 2 + (y - cy) ** 2 < 100] = (230, 220, 180)
    return f.astype(np.uint8)


def clip(n: int = 6) -> np.ndarray:
    return np.stack([scene(i) for i in range(n)])


def tint(frames: np.ndarray, gain=(1.15, 0.9, 0.8), offset=(12, 0, -10)) -> np.ndarray:
    out = frames.astype(np.float32) * np.array(gain, np.float32) + np.array(offset, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def test_measure_identical_frames() -> None:
    f = scene()
    d = measure(f, f)
    assert d.color == pytest.approx(0.0, abs=1e-9)
    assert d.ssim == pytest.approx(1.0)
    assert d.as_dict() == {"color": d.color, "ssim": d.ssim}
    assert isinstance(d, Drift)


def test_measure_grows_with_change() -> None:
    anchor = scene()
    small = measure(tint(anchor[None], (1.03, 1.0, 1.0), (2, 0, 0))[0], anchor)
    large = measure(tint(anchor[None])[0], anchor)
    assert 0 < small.color < large.color
    noisy = np.clip(anchor + np.random.default_rng(0).normal(0, 25, anchor.shape), 0, 255).astype(
        np.uint8
    )
    assert ssim(noisy, anchor) < 0.8 < ssim(scene(1), anchor) < 1.0


def test_measure_accepts_float_and_other_sizes() -> None:
    anchor = scene()
    assert measure(anchor.astype(np.float32) / 255, anchor).color < 0.05
    bigger = np.repeat(np.repeat(anchor, 2, axis=0), 2, axis=1)
    assert measure(bigger, anchor).ssim > 0.95


def test_match_colors_pulls_tinted_clip_back() -> None:
    anchor = scene(0)
    tinted = tint(clip())
    before = measure(tinted[0], anchor).color
    fixed = match_colors(tinted, anchor)
    assert fixed.shape == tinted.shape and fixed.dtype == np.uint8
    after = measure(fixed[0], anchor).color
    assert after < before / 5
    # The same transform for every frame: motion stays, later frames also move toward their
    # untinted originals.
    for i in range(1, len(fixed)):
        orig = scene(i)
        assert (
            np.abs(fixed[i].astype(int) - orig).mean() < np.abs(tinted[i].astype(int) - orig).mean()
        )
    half = measure(match_colors(tinted, anchor, strength=0.5)[0], anchor).color
    assert after < half < before


def test_match_colors_identity_and_single_frame() -> None:
    frames = clip(3)
    same = match_colors(frames, frames[0])
    assert np.array_equal(same, frames) and same is not frames
    assert np.array_equal(match_colors(frames, scene(5), strength=0.0), frames)
    one = match_colors(tint(frames[:1])[0], frames[0])
    assert one.shape == frames[0].shape
    with pytest.raises(ValueError, match="strength"):
        match_colors(frames, frames[0], strength=1.5)


def test_match_colors_flat_frame_stays_bounded() -> None:
    flat = np.full((2, 32, 32, 3), 100, np.uint8)
    out = match_colors(flat, scene())
    assert out.dtype == np.uint8 and np.isfinite(out.astype(float)).all()


def test_check_frames_healthy_moving_clip() -> None:
    assert check_frames(clip()) == []
    assert check_frames(clip().astype(np.float32) / 255) == []
    assert check_frames(clip(1)) == []  # a single frame cannot be frozen


def test_check_frames_nan() -> None:
    frames = clip().astype(np.float32) / 255
    frames[2, 5, 5, 1] = np.nan
    problems = check_frames(frames)
    assert [p.kind for p in problems] == ["nan"]
    assert "1 of 6" in problems[0].detail


def test_check_frames_black() -> None:
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    frames[0] = 128  # one good frame does not rescue the clip
    frames[1:] = np.random.default_rng(0).integers(0, 3, frames[1:].shape, dtype=np.uint8)
    assert [p.kind for p in check_frames(frames)] == ["black"]
    all_nan = np.full((3, 8, 8, 3), np.nan, np.float32)
    assert [p.kind for p in check_frames(all_nan)] == ["nan", "black"]


def test_check_frames_frozen() -> None:
    still = np.repeat(scene()[None], 4, axis=0)
    assert [p.kind for p in check_frames(still)] == ["frozen"]
    jitter = still.astype(np.int16) + np.random.default_rng(1).integers(-1, 2, still.shape)
    jitter = np.clip(jitter, 0, 255).astype(np.uint8)
    assert [p.kind for p in check_frames(jitter, frozen_threshold=1.0)] == ["frozen"]
    assert check_frames(still[:1]) == []


def test_to_uint8() -> None:
    f = np.array([[[0.0, 0.5, 1.0], [np.nan, 2.0, -1.0]]], np.float32)
    assert to_uint8(f).tolist() == [[[0, 128, 255], [0, 255, 0]]]
    u = np.zeros((2, 2, 3), np.uint8)
    assert to_uint8(u) is u
    with pytest.raises(ValueError, match="frames"):
        to_uint8(np.zeros((2, 2, 3), np.int32))
