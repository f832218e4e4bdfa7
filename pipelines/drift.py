"""Drift metrics, colour correction and bad-frame detection for chained segments.

Each segment is generated from the last frame of the previous one, so small colour and
structure errors compound over a long video. These functions measure how far a frame has moved
from an anchor (the join frame or a reference frame), pull a segment's colours back toward it,
and catch outputs that are clearly broken (NaNs, black, a frozen still) before they are kept.

numpy and OpenCV only; frames are RGB, uint8 unless stated otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

# Reinhard transfer divides by the clip's own standard deviation; on a nearly flat frame that
# would amplify noise without bound, so the per-channel scale is kept within these limits.
_SCALE_LIMITS = (1 / 3, 3.0)


@dataclass
class Drift:
    color: float  # mean abs difference of per-channel Lab mean and std vs the anchor; 0 = same
    ssim: float  # structural similarity vs the anchor (grayscale); 1 = identical

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass
class FrameProblem:
    kind: str  # "nan" | "black" | "frozen"
    detail: str


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (NaN and inf safe: NaN -> 0) or uint8 -> uint8 (same shape).

    uint8 input is returned as is, without a copy.
    """
    arr = np.asarray(frames)
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"frames: expected uint8 or float in [0, 1], got dtype {arr.dtype}")
    out = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    out = np.clip(out, 0.0, 1.0)
    return np.rint(out * 255.0).astype(np.uint8)


def _rgb(frame: np.ndarray, field: str) -> np.ndarray:
    arr = to_uint8(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{field}: expected an (H, W, 3) RGB frame, got shape {arr.shape}")
    return arr


def _lab(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 Lab (L in 0..100, a/b roughly -128..127)."""
    return cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _lab_stats(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = _lab(frame).reshape(-1, 3).astype(np.float64)
    return lab.mean(axis=0), lab.std(axis=0)


def _match_size(frame: np.ndarray, like: np.ndarray) -> np.ndarray:
    h, w = like.shape[:2]
    if frame.shape[:2] == (h, w):
        return frame
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two RGB frames on their luma (11x11 Gaussian, sigma 1.5).

    `b` is resized to `a`'s size if they differ. 1.0 means identical.
    """
    a = _rgb(a, "a")
    b = _match_size(_rgb(b, "b"), a)
    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cov + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return float(np.mean(num / den))


def measure(frame: np.ndarray, anchor: np.ndarray) -> Drift:
    """Colour and structure drift of `frame` relative to `anchor` (uint8 or float RGB frames).

    `frame` is resized to the anchor's size if they differ.
    """
    anchor = _rgb(anchor, "anchor")
    frame = _match_size(_rgb(frame, "frame"), anchor)
    fm, fs = _lab_stats(frame)
    am, as_ = _lab_stats(anchor)
    color = float(np.mean(np.concatenate([np.abs(fm - am), np.abs(fs - as_)])))
    return Drift(color=color, ssim=ssim(frame, anchor))


def match_colors(frames: np.ndarray, anchor: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Reinhard colour transfer of a clip toward `anchor`, uint8 in and out.

    The transform (per-channel Lab mean/std matching) is computed once, from the clip's first
    frame (the join frame), and applied unchanged to every frame, so lighting changes and motion
    inside the clip are kept rather than flattened. `strength` in [0, 1] blends between the
    original (0) and the full transfer (1). Accepts one frame (H, W, 3) or a clip (N, H, W, 3);
    returns the same shape. Returns an unchanged copy when the colours already match.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength: must be within [0, 1], got {strength!r}")
    clip = to_uint8(frames)
    single = clip.ndim == 3
    if single:
        clip = clip[None]
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.shape[0] == 0:
        raise ValueError(f"frames: expected (N, H, W, 3) RGB with N >= 1, got {clip.shape}")
    anchor = _rgb(anchor, "anchor")

    src_mean, src_std = _lab_stats(clip[0])
    dst_mean, dst_std = _lab_stats(anchor)
    scale = np.clip(dst_std / np.maximum(src_std, 1e-6), *_SCALE_LIMITS)
    # x' = (x - src_mean) * scale + dst_mean, blended with the identity by `strength`.
    scale = 1.0 + strength * (scale - 1.0)
    shift = strength * dst_mean + (1.0 - strength) * src_mean - scale * src_mean
    out = clip.copy()
    if np.all(np.abs(scale - 1.0) < 1e-3) and np.all(np.abs(shift) < 1e-2):
        return out[0] if single else out
    scale32, shift32 = scale.astype(np.float32), shift.astype(np.float32)
    for i, frame in enumerate(clip):  # frame by frame: keeps float temporaries small
        lab = _lab(frame) * scale32 + shift32
        rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
        out[i] = np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out[0] if single else out


def check_frames(
    frames: np.ndarray, *, black_threshold: float = 4.0, frozen_threshold: float = 0.5
) -> list[FrameProblem]:
    """Find clearly broken clips. Returns an empty list for a healthy clip.

    - "nan": any non-finite value (float input).
    - "black": more than half the frames have mean brightness below `black_threshold`.
    - "frozen": more than one frame and every consecutive pair differs by less than
      `frozen_threshold` on average (the same image repeated). Not reported for a black clip,
      which is trivially frozen too.

    `frames` is float (N, H, W, 3) in [0, 1] or uint8; thresholds are on the 0-255 scale.
    """
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames: expected (N, H, W, 3) RGB, got shape {arr.shape}")
    problems: list[FrameProblem] = []
    n = arr.shape[0]
    if n == 0:
        return problems
    is_float = np.issubdtype(arr.dtype, np.floating)
    if not is_float and arr.dtype != np.uint8:
        raise ValueError(f"frames: expected uint8 or float in [0, 1], got dtype {arr.dtype}")

    # Per frame on the 0-255 scale, one frame at a time so no full-clip float copy is made.
    def frame255(i: int) -> np.ndarray:
        f = arr[i].astype(np.float32)
        if is_float:
            f = np.nan_to_num(f, nan=0.0, posinf=1.0, neginf=0.0) * 255.0
        return f

    if is_float:
        bad = [i for i in range(n) if not np.isfinite(arr[i]).all()]
        if bad:
            problems.append(
                FrameProblem("nan", f"{len(bad)} of {n} frames contain NaN/inf (first: {bad[0]})")
            )

    means = np.empty(n)
    diffs = np.empty(max(n - 1, 0))
    prev = None
    for i in range(n):
        cur = frame255(i)
        means[i] = float(cur.mean())
        if prev is not None:
            diffs[i - 1] = float(np.abs(cur - prev).mean())
        prev = cur

    dark = int(np.sum(means < black_threshold))
    black = dark * 2 > n
    if black:
        problems.append(
            FrameProblem(
                "black",
                f"{dark} of {n} frames are black (mean brightness < {black_threshold:g}/255)",
            )
        )
    if n > 1 and not black and float(diffs.max()) < frozen_threshold:
        problems.append(
            FrameProblem(
                "frozen",
                f"all {n} frames are the same image (max mean change {diffs.max():.3f}/255 "
                f"< {frozen_threshold:g})",
            )
        )
    return problems
