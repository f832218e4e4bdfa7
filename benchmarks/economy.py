"""Generation economy: output frames per generated frame and what the plan throws away,
for the long-video run and for every video preset's plan; and what interpolating more
costs in picture, against the true frames of real footage."""

from __future__ import annotations

import json
from pathlib import Path

from .report import Metric, Report, ratio_metric
from .video import storyboard_yaml


def bench_economy(report: Report, run_dir: Path, model: str) -> None:
    """What generation costs: output frames per generated frame, and the share of generated
    frames thrown away (overlaps made twice, cut tails, frames a retime skips), for the
    measured run and, planned only (nothing loaded), for every video preset over shots of
    1.5–7 s at 24 fps. Frames are generated at each model's motion rate, so the ratio is
    fixed by the model (Wan 16 fps of motion for a 24 fps video: 1.5); waste is the
    planner's to keep low."""
    from pipelines.chain import VideoOptions, plan, read_storyboard
    from pipelines.models import DEFAULT_VIDEO_PRESET, PRESETS
    from pipelines.plan import plan_data

    manifest = json.loads((run_dir / "manifest.json").read_text())
    generated = sum(s["generated_frames"] for s in manifest["segments"])
    m = report.metrics
    m.append(Metric("economy", f"output / generated frames, {model} run",
                    round(manifest["frames"] / generated, 3), "×",
                    note=f"{manifest['frames']} frames at 8 fps from {generated} generated in "
                    f"{len(manifest['segments'])} clips: the LTX twin makes 24 fps of motion, "
                    "as LTX does; reported, no target"))  # fmt: skip
    seconds = [1.5 + 0.5 * i for i in range(12)]  # 1.5 to 7 s

    def planned(preset: str) -> dict:
        fps = 24
        hi = PRESETS[preset].motion[1]
        text = storyboard_yaml(len(seconds), None, seconds).replace(
            "shots:\n", f"fps: {fps}\ninterpolate: {max(2, -(-fps // hi))}\nshots:\n"
        )
        sb, models = read_storyboard(text, VideoOptions(model=preset), text=True)
        return plan_data(sb, models, plan(sb, models))["totals"]

    t = planned(DEFAULT_VIDEO_PRESET)
    m.append(ratio_metric("economy", f"thrown away, {DEFAULT_VIDEO_PRESET} plan, shots of 1.5–7 s",
                          100 * t["waste"], "%", "≤ 5",
                          note=f"24 fps, 12 shots: {t['thrown_away']} of {t['generated']} "
                          f"generated frames (overlaps {t['overlaps']}, cut tails "
                          f"{t['dropped']}, skipped {t['skipped']})"))  # fmt: skip
    for preset, p in PRESETS.items():
        if p.motion is None:
            continue
        t = planned(preset)
        m.append(Metric("economy", f"output / generated frames, {preset} plan",
                        round(t["output"] / t["generated"], 3), "×",
                        note=f"24 fps over shots of 1.5–7 s, {t['gen_fps']:g} fps of motion; "
                        f"{t['waste']:.1%} thrown away; reported, no target"))  # fmt: skip
    bench_interpolation(report)


def interpolation_psnr(frames, k: int, flow: bool) -> float:
    """Keep every k-th frame, rebuild the others with the stitcher's retiming, and return
    the PSNR (dB) of the rebuilt frames against the true ones."""
    import numpy as np

    from pipelines.interpolate import retime

    n = (len(frames) - 1) // k * k + 1
    keys = list(frames[:n:k])
    rebuilt = list(retime(keys, len(keys), n, flow=flow))
    made = [i for i in range(n) if i % k]
    mse = np.mean([np.mean((rebuilt[i].astype(np.float64) - frames[i]) ** 2) for i in made])
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def interpolation_sources() -> dict[str, object]:
    """Real pictures with true in-between frames: gradio's bundled footage (a turning
    earth, 30 fps, every 2nd frame kept) and a film still (gradio's groot.jpeg) under a
    camera pan with a slow zoom, and with a photographed cheetah crossing it."""
    import cv2
    import gradio
    import numpy as np
    from PIL import Image

    from pipelines.video_io import read_frames

    assets = Path(gradio.__file__).parent / "media_assets"
    earth = np.stack(list(read_frames(assets / "videos" / "world.mp4")))[:241:2]
    still = np.asarray(Image.open(assets / "images" / "groot.jpeg").convert("RGB"))
    cheetah = Image.open(assets / "images" / "cheetah.jpg").convert("RGB").resize((120, 82))
    patch = np.asarray(cheetah)

    def camera(t: int, speed: float) -> np.ndarray:
        z = 1 + 0.003 * t
        m = np.float32([[z, 0, -speed * t], [0, z, -0.4 * speed * t]])
        return cv2.warpAffine(still, m, (480, 270), flags=cv2.INTER_AREA)

    def crossing(t: int) -> np.ndarray:
        f = camera(t, 1.0)
        x, y = 20 + 6 * t, int(100 + 12 * np.sin(t / 6))
        f[y : y + 82, x : x + 120] = patch
        return f

    return {
        "turning earth (real footage)": earth,
        "camera pan over a film still": np.stack([camera(t, 4.0) for t in range(61)]),
        "a cheetah photo crossing the still": np.stack([crossing(t) for t in range(55)]),
    }


def bench_interpolation(report: Report) -> None:
    """What interpolating more costs in picture: the frames the stitcher makes between
    kept frames against the true ones, at 2× and 3×, with optical flow and a plain blend."""
    m = report.metrics
    try:
        sources = interpolation_sources()
    except (ImportError, OSError, ValueError) as exc:
        m.append(Metric("economy", "interpolated vs true frames", None, note=f"skipped: {exc}"))
        return
    details = report.details.setdefault("interpolation_psnr_db", {})
    for name, frames in sources.items():
        for k in (2, 3):
            flow_db, blend_db = (interpolation_psnr(frames, k, f) for f in (True, False))
            details[f"{name}, {k}x"] = {"flow": flow_db, "blend": blend_db}  # type: ignore[index]
            m.append(Metric("economy", f"interpolated vs true frames, {k}×: {name}",
                            round(flow_db, 2), "dB PSNR",
                            note=f"{len(frames)} frames {frames.shape[2]}×{frames.shape[1]}; "
                            f"a plain blend: {blend_db:.2f} dB"))  # fmt: skip
