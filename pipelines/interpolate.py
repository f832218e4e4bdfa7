"""Retiming: a run of frames resampled to any other count, with optical-flow in-betweens.

A shot's frames are made at the model's motion rate and shown at the storyboard's fps;
`retime` streams them to the exact output count, holding two input frames at a time.
In-between frames warp both neighbours along Super SloMo's linear-motion flows (DIS
optical flow), and a pixel whose warp leaves one frame (content entering on a pan) comes
from the other alone.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

# Flow is computed on frames scaled down to at most this many pixels on the long side: its
# cost grows with area while motion between neighbouring frames is coarse anyway.
_FLOW_MAX_SIDE = 320


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
    # DIS (OpenCV's dense inverse search): Farneback's interpolation error on moving texture
    # at a fraction of its time (benchmarks/README.md). DIS needs a side of 12 px or more;
    # thumbnails-sized frames keep Farneback.
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
