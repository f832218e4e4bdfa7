"""Reelchain benchmarks: the engine's claims measured side by side in one run.

    python benchmarks/run.py [--quick] [--out benchmarks/results]

Writes `benchmarks.json` and `benchmarks.md` (a table: metric, measured, target, met?, plus
the machine) into `--out` and prints the table. Everything runs offline on the tiny twins;
every number is measured on this machine, nothing is asserted. Sections:

1. batching: images/s with the planner (auto) vs one call per prompt vs the best fixed size;
2. long video: share of wall time inside pipeline calls; peak RSS of a 4x longer video;
3. encoding: the streaming writer vs a raw ffmpeg pipe and vs moviepy;
4. generation economy: output frames per generated frame, and what the plan throws away;
5. fast paths: seconds per call with and without an opt-in fast path (first-block cache);
6. GPU: full-size configurations (only where CUDA is available).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Metric:
    section: str
    name: str
    measured: float | None  # None: not measured (skipped)
    unit: str = ""
    target: str = ""  # e.g. "≥ 2"; empty: reported only
    met: bool | None = None  # None: no target, or skipped
    note: str = ""


@dataclass
class Config:
    """Sizes of every measurement; `--quick` picks the small one."""

    prompts: int
    batch_sizes: tuple[int, ...]
    repeats: int
    shots: int
    encode_frames: int
    encode_side: int
    rss_batches: tuple[str, ...]  # --batch-size values of the peak-RSS runs
    gpu_device: str | None = None  # None: cuda when present, else the GPU section is skipped
    gpu_models: tuple[str, ...] = ()  # empty: GPU_MODELS
    out: Path | None = None  # where results are written, also after every section and GPU model
    gpu_fast: tuple[str, ...] = ("cache",)  # fast paths the GPU section times on video models

    @classmethod
    def for_mode(cls, quick: bool) -> Config:
        if quick:
            return cls(32, (1, 2, 4, 8, 16, 32), 2, 12, 600, 256, ("auto",))
        return cls(48, (1, 2, 4, 8, 16, 32), 3, 12, 600, 512, ("auto", "1"))


@dataclass
class Report:
    quick: bool
    machine: dict[str, str]
    metrics: list[Metric] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0


def ratio_metric(section, name, value, unit, target, note="") -> Metric:
    """A metric with a `≥ x` / `≤ x` target; `met` is computed from the measured value."""
    op, bound = target.split()
    bound_f = float(bound.rstrip("×"))
    met = value >= bound_f if op == "≥" else value <= bound_f
    return Metric(section, name, round(value, 3), unit, target, met, note)


# ---------------------------------------------------------------------------------------
# The machine


def machine_info() -> dict[str, str]:
    import torch

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu,
        "cores": str(len(os.sched_getaffinity(0))),
        "ram": ram,
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def quiet_progress_bars() -> None:
    """Silence diffusers' per-call progress bars in this process (the pipelines set their
    own bar options, so TQDM_DISABLE alone does not reach them)."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils

    pipeline_utils.is_torch_dist_rank_zero = lambda: False  # bars show on rank zero only


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# 1. Batching


def bench_batching(cfg: Config, report: Report, tmp: Path) -> None:
    import pipelines.images as images
    from pipelines.batching import Planner
    from pipelines.images import ImageJob, generate
    from pipelines.models import load, resolve_model
    from pipelines.settings import Runtime

    loaded = load(resolve_model("tiny-image", "image"), "text2img", Runtime())
    jobs = [ImageJob(f"a lighthouse, view {i}", "", 64, 64, 4, 1.0, i) for i in range(cfg.prompts)]
    counter = iter(range(10_000))

    def run(batch_size: int | None, cache: Path | None = None) -> tuple[float, list[int]]:
        """Images/s over all prompts with a fresh planner (and a fresh cache file unless
        `cache` is given), and the batch sizes it ran."""
        runtime = Runtime(batch_size=batch_size)
        cache = cache or tmp / f"planner-{next(counter)}.json"
        planner = Planner(runtime, cache_file=cache)
        calls: list[int] = []
        original = images._call_image_pipe

        def counting(loaded, batch):
            calls.append(len(batch))
            return original(loaded, batch)

        images._call_image_pipe = counting
        try:
            seconds = timed(lambda: generate(loaded, jobs, runtime=runtime, planner=planner))
        finally:
            images._call_image_pipe = original
        return len(jobs) / seconds, calls

    run(2)  # warm-up: weights paged in, kernels chosen; not timed

    # Round robin, best of `repeats`: load from other processes hits every setting alike.
    # "auto" starts from an empty planner cache each time, so its probes (a batch of 1,
    # then of 2) are timed; "auto, warm" reuses the estimates a previous run saved.
    warm_cache = tmp / "planner-warm.json"
    run(None, warm_cache)
    labels = ["auto", "auto, warm", *map(str, cfg.batch_sizes)]
    rates = dict.fromkeys(labels, 0.0)
    batches: dict[str, list[int]] = {}
    for _ in range(cfg.repeats):
        for label in labels:
            if label == "auto":
                rate, calls = run(None)
            elif label == "auto, warm":
                rate, calls = run(None, warm_cache)
            else:
                rate, calls = run(int(label))
            if rate > rates[label]:
                rates[label], batches[label] = rate, calls
    for label in labels:
        print(f"  batch {label}: {rates[label]:.1f} images/s, batches {batches[label]}")

    auto, naive = rates["auto"], rates["1"]
    fixed = [str(b) for b in cfg.batch_sizes]
    best_label = max(fixed, key=rates.__getitem__)
    best = rates[best_label]
    setup = f"SD twin, {cfg.prompts} prompts, 64×64, 4 steps, best of {cfg.repeats}"
    sweep = ", ".join(f"{k}: {rates[k]:.1f}" for k in fixed)
    m = report.metrics
    m.append(Metric("batching", "images/s, auto (planner, empty cache)", round(auto, 2), "img/s",
                    note=f"{setup}; batches {batches['auto']}"))  # fmt: skip
    m.append(Metric("batching", "images/s, auto (planner cache warm)",
                    round(rates["auto, warm"], 2), "img/s",
                    note=f"batches {batches['auto, warm']}"))  # fmt: skip
    m.append(Metric("batching", "images/s, one call per prompt", round(naive, 2), "img/s"))
    m.append(Metric("batching", f"images/s, best fixed size ({best_label})", round(best, 2),
                    "img/s", note=f"sweep {sweep}"))  # fmt: skip
    m.append(ratio_metric("batching", "auto / one call per prompt", auto / naive, "×", "≥ 2"))
    m.append(ratio_metric("batching", "auto / best fixed size", auto / best, "×", "≥ 0.9",
                          note="empty cache: the probes (1 image, then as many as surely "
                          "fit) are timed"))  # fmt: skip
    m.append(ratio_metric("batching", "auto (cache warm) / best fixed size",
                          rates["auto, warm"] / best, "×", "≥ 0.9",
                          note="estimates from an earlier run, as in a session's later jobs"))  # fmt: skip
    report.details["batching"] = {"images_per_second": rates, "batches": batches}


# ---------------------------------------------------------------------------------------
# 2. Long video (and 4. generation economy, from the same run)


def storyboard_yaml(shots: int, side: int | None, seconds: float | Sequence[float] = 2.0) -> str:
    """A continue-mode storyboard of `shots` shots (`seconds` each, or each its own)."""
    lengths = [seconds] * shots if isinstance(seconds, (int, float)) else list(seconds)
    lines = ["mode: continue", "seed: 11"]
    if side:
        lines += ["fps: 8", f"width: {side}", f"height: {side}"]
    lines.append("shots:")
    subjects = ["a paper boat", "a lighthouse", "a red kite", "a night train"]
    for k in range(shots):
        lines.append(f"  - prompt: {subjects[k % len(subjects)]}, scene {k}, soft light")
        lines.append(f"    seconds: {lengths[k]}")
    return "\n".join(lines) + "\n"


TIMED = {  # what the video run's wall time is split into: (module, function)
    "pipeline calls": [("pipelines.clips", "_call"), ("pipelines.images", "_call_image_pipe")],
    "segment writes": [("pipelines.chain", "_write_segment")],
    "final stitch": [("pipelines.chain", "_finish")],
}


@contextlib.contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Sum the seconds spent inside each group of `TIMED` functions while the block runs."""
    import importlib

    spent = dict.fromkeys(TIMED, 0.0)
    originals = []

    def wrap(fn, phase):
        def inner(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - t0

        return inner

    for phase, targets in TIMED.items():
        for module_name, attr in targets:
            module = importlib.import_module(module_name)
            originals.append((module, attr, getattr(module, attr)))
            setattr(module, attr, wrap(getattr(module, attr), phase))
    try:
        yield spent
    finally:
        for module, attr, fn in originals:
            setattr(module, attr, fn)


def calibrate_video_size(model: str, sides: tuple[int, ...], goal: float) -> tuple[int, float]:
    """The side (of `sides`) whose single clip call takes closest to `goal` seconds."""
    from PIL import Image

    from pipelines.batching import Planner
    from pipelines.clips import ClipJob, generate_clips
    from pipelines.models import load, resolve_model
    from pipelines.settings import Runtime

    ref = resolve_model(model, "video")
    loaded = load(ref, "video", Runtime())
    runtime = Runtime(batch_size=1)
    best: tuple[int, float] | None = None
    for side in sides:
        job = ClipJob("calibration", Image.new("RGB", (side, side), (90, 120, 150)),
                      ref.preset.frames, side, side, ref.preset.steps, 3.0, 0)  # fmt: skip
        times = []
        for _ in range(3):  # the first call at a new size warms up; best of the rest
            with tempfile.TemporaryDirectory() as d:
                planner = Planner(runtime, cache_file=Path(d) / "p.json")
                times.append(
                    timed(
                        lambda p=planner, j=job: generate_clips(
                            loaded, [j], runtime=runtime, planner=p
                        )
                    )  # fmt: skip
                )
        t = min(times)
        print(f"  {model} {side}×{side}×{ref.preset.frames}: {t:.2f} s per call")
        if best is None or abs(t - goal) < abs(best[1] - goal):
            best = (side, t)
        if t > goal * 1.5:
            break
    assert best is not None
    return best


def peak_rss_of(cmd: list[str], env: dict[str, str]) -> tuple[int, float]:
    """Peak resident set (bytes) of the largest process `cmd` ran, and its wall time.

    A fresh wrapper process runs `cmd` and reports RUSAGE_CHILDREN, so earlier runs in this
    process do not mask the number.
    """
    wrapper = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.call(sys.argv[1:])\n"
        "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    kib = int(next(ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK_KIB")).split()[1])
    return kib * 1024, wall


def bench_video(cfg: Config, report: Report, tmp: Path) -> None:
    from pipelines.chain import VideoOptions, make_video
    from pipelines.settings import Runtime

    model = "tiny-wan"  # the tiny LTX twin stays under 0.1 s per call up to 320×320
    side, call_s = calibrate_video_size(model, (96, 128, 144, 160, 176, 192), goal=0.5)
    runtime = Runtime(cache_dir=tmp / "cache")
    opts = VideoOptions(model=model)

    # Warm-up: load the models and run every kind of call once, untimed.
    make_video(storyboard_yaml(1, side), tmp / "warm", opts, runtime=runtime, text=True)

    story = storyboard_yaml(cfg.shots, side)
    with phase_timer() as spent:
        wall = timed(lambda: make_video(story, tmp / "short", opts, runtime=runtime, text=True))
    inside = spent["pipeline calls"]
    share = inside / wall
    split = ", ".join(f"{k} {v:.1f} s" for k, v in spent.items())
    m = report.metrics
    m.append(ratio_metric("long video", "share of wall time inside pipeline calls", share, "",
                          "≥ 0.85",
                          note=f"{cfg.shots} shots × 2 s, {model} {side}×{side} "
                          f"({call_s:.2f} s/call), models loaded; {wall:.1f} s wall: {split}"))  # fmt: skip
    report.details["video"] = {"model": model, "side": side, "call_s": call_s,
                               "wall_s": wall, "phases_s": spent}  # fmt: skip

    # Peak RSS: a 4× longer video against the short one, each in a fresh process with an
    # empty planner cache; with planned batches, and in the full run also with one clip per
    # call (which separates growth with length from growth with batch size).
    rss: dict[str, dict[str, tuple[int, float]]] = {}
    for batch in cfg.rss_batches:
        rss[batch] = {}
        for name, shots in (("short", cfg.shots), ("long", cfg.shots * 4)):
            run_id = f"{name}-b{batch}"
            env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
                       REELCHAIN_CACHE=str(tmp / f"cache-{run_id}"))  # fmt: skip
            path = tmp / f"{name}.yaml"
            path.write_text(storyboard_yaml(shots, side))
            cmd = [sys.executable, "-m", "pipelines", "video", str(path), "--out",
                   str(tmp / f"cli-{run_id}"), "--model", model, "--batch-size", batch]  # fmt: skip
            peak, secs = rss[batch][name] = peak_rss_of(cmd, env)
            print(f"  {name} ({shots} shots, batch {batch}): peak RSS {peak / 2**20:.0f} MiB, "
                  f"{secs:.1f} s")  # fmt: skip
        (short_rss, short_s), (long_rss, long_s) = rss[batch]["short"], rss[batch]["long"]
        m.append(ratio_metric("long video", f"peak RSS, 4× longer video / short (batch {batch})",
                              long_rss / short_rss, "×", "≤ 1.10",
                              note=f"fresh processes: {short_rss / 2**20:.0f} MiB "
                              f"({cfg.shots} shots, {short_s:.0f} s) vs {long_rss / 2**20:.0f} "
                              f"MiB ({cfg.shots * 4} shots, {long_s:.0f} s)"))  # fmt: skip
    report.details["video"] |= {"peak_rss_bytes_and_seconds": rss}

    bench_economy(report, tmp / "short", model)


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


# ---------------------------------------------------------------------------------------
# 3. Encoding


def pattern_frames(n: int, side: int):
    """`n` frames of a moving pattern (compresses like real footage, unlike noise)."""
    import numpy as np

    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    frames = []
    for i in range(n):
        t = i / 24
        r = 0.5 + 0.5 * np.sin(6.28 * (x * 2 + t))
        g = 0.5 + 0.5 * np.sin(6.28 * (y * 3 - t * 0.7))
        b = 0.5 + 0.5 * np.sin(6.28 * (x + y + t * 0.3))
        frames.append((np.stack([r, g, b], -1) * 255).astype(np.uint8))
    return frames


def bench_encoding(cfg: Config, report: Report, tmp: Path) -> None:
    import imageio_ffmpeg

    from pipelines.video_io import VideoWriter, _encoder_args

    n, side, fps = cfg.encode_frames, cfg.encode_side, 24
    frames = pattern_frames(n, side)

    def ours() -> None:
        with VideoWriter(tmp / "ours.mp4", fps, side, side) as w:
            for f in frames:
                w.write(f)

    def raw_pipe(extra: tuple[str, ...] = ()) -> None:
        gen = imageio_ffmpeg.write_frames(
            str(tmp / "raw.mp4"), (side, side), fps=fps, codec="libx264", quality=None,
            pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
            output_params=[*extra, "-preset", "veryfast", "-crf", "18", "-movflags", "+faststart"],
        )  # fmt: skip
        gen.send(None)
        for f in frames:
            gen.send(f)
        gen.close()

    def moviepy() -> None:
        from moviepy import ImageSequenceClip

        clip = ImageSequenceClip(frames, fps=fps)
        clip.write_videofile(str(tmp / "moviepy.mp4"), codec="libx264", preset="veryfast",
                             ffmpeg_params=["-crf", "18"], audio=False, logger=None)  # fmt: skip

    # The writer converts to BT.709 with accurate rounding; the same filter on the raw pipe
    # separates the cost of that conversion from the cost of the writer itself.
    yuv = ("-vf", _encoder_args("mp4", "final", fps)[1])
    runs = (("writer", ours), ("pipe", raw_pipe), ("pipe+filter", lambda: raw_pipe(yuv)),
            ("moviepy", moviepy))  # fmt: skip
    rates = dict.fromkeys((name for name, _ in runs), 0.0)
    for _ in range(5):  # round robin, best of 5: other load on the machine hits all alike
        for name, fn in runs:
            rates[name] = max(rates[name], n / timed(fn))
    for name, rate in rates.items():
        print(f"  {name}: {rate:.0f} frames/s")
    setup = f"{n} frames {side}×{side}, H.264 yuv420p veryfast crf 18, best of 5"
    args = " ".join(_encoder_args("mp4", "final", fps))
    m = report.metrics
    m.append(Metric("encoding", "frames/s, streaming writer", round(rates["writer"], 1), "fps",
                    note=f"{setup}; writer args: {args}"))  # fmt: skip
    m.append(
        Metric(
            "encoding",
            "frames/s, raw ffmpeg pipe",
            round(rates["pipe"], 1),
            "fps",
            note="imageio-ffmpeg write_frames, default swscale (no accurate rounding)",
        )
    )
    m.append(
        Metric(
            "encoding",
            "frames/s, raw pipe with the writer's colour filter",
            round(rates["pipe+filter"], 1),
            "fps",
            note="the same -vf (BT.709, accurate rounding) on the raw pipe",
        )
    )
    m.append(Metric("encoding", "frames/s, moviepy ImageSequenceClip", round(rates["moviepy"], 1),
                    "fps", note="holds every frame in memory"))  # fmt: skip
    m.append(ratio_metric("encoding", "writer / raw ffmpeg pipe", rates["writer"] / rates["pipe"],
                          "×", "≥ 0.9"))  # fmt: skip
    m.append(
        Metric(
            "encoding",
            "writer / raw pipe with the same filter",
            round(rates["writer"] / rates["pipe+filter"], 3),
            "×",
            note="the writer's own overhead",
        )
    )
    m.append(Metric("encoding", "writer / moviepy", round(rates["writer"] / rates["moviepy"], 3),
                    "×", note="reported, no target"))  # fmt: skip
    report.details["encoding"] = {"frames_per_second": rates}


# ---------------------------------------------------------------------------------------
# 5. Fast paths (opt-in)


def bench_fast(cfg: Config, report: Report, tmp: Path) -> None:
    """The Wan twin's pipeline called directly, with and without the first-block cache.

    The shipped twin has one transformer block, which the cache cannot take (it skips the
    blocks after the first); this run gives both of its transformers 4 blocks.
    """
    import numpy as np
    import torch
    from PIL import Image

    from pipelines.device import apply_fast_paths, denoisers
    from pipelines.twins import build_twin

    side, frames, steps, layers = 96, 9, 8, 4
    repeats = 7  # calls are short; more repeats cost little and steady the minimum
    pipes, ran = {}, {}
    for fast in ((), ("cache",)):
        pipe = build_twin("wan22")
        for name, module in denoisers(pipe).items():
            torch.manual_seed(0)
            setattr(pipe, name, type(module).from_config({**module.config, "num_layers": layers}))
        pipe.set_progress_bar_config(disable=True)
        assert apply_fast_paths(pipe, fast) == fast
        label = ",".join(fast) or "none"
        pipes[label], ran[label] = pipe, []
        for module in denoisers(pipe).values():  # a skipped block never reaches its attention
            for block in module.blocks:
                block.attn1.register_forward_pre_hook(lambda *_, r=ran[label]: r.append(1))

    first = Image.new("RGB", (side, side), (90, 120, 150))
    kwargs = dict(image=first, prompt="a paper boat at dusk", height=side, width=side,
                  num_frames=frames, num_inference_steps=steps, guidance_scale=3.0,
                  output_type="np")  # fmt: skip

    def call(label: str):
        return pipes[label](**kwargs, generator=torch.Generator().manual_seed(0)).frames[0]

    outputs = {label: call(label) for label in pipes}  # warm-up, and the outputs compared
    blocks = {label: len(r) for label, r in ran.items()}
    seconds = dict.fromkeys(pipes, float("inf"))
    for _ in range(repeats):  # round robin, best of `repeats`
        for label in pipes:
            seconds[label] = min(seconds[label], timed(lambda label=label: call(label)))
    diff = float(np.abs(outputs["cache"] - outputs["none"]).max())
    for label in pipes:
        print(f"  fast={label}: {seconds[label]:.2f} s per call, {blocks[label]} block calls")
    setup = (f"Wan twin with {layers} blocks, {side}×{side}×{frames}, {steps} steps, best of "
             f"{repeats}; CPU twin with random weights: to be measured on a GPU before any "
             "fast path becomes a default")  # fmt: skip
    m = report.metrics
    m.append(Metric("fast paths", "seconds per call, no fast path", round(seconds["none"], 3),
                    "s", note=setup))  # fmt: skip
    m.append(Metric("fast paths", "seconds per call, first-block cache",
                    round(seconds["cache"], 3), "s",
                    note=f"threshold 0.05 (diffusers' default); ran {blocks['cache']} of "
                    f"{blocks['none']} block calls"))  # fmt: skip
    m.append(Metric("fast paths", "cache / none, seconds per call",
                    round(seconds["cache"] / seconds["none"], 3), "×",
                    note="reported, no target"))  # fmt: skip
    m.append(Metric("fast paths", "cache vs none, max pixel difference", round(diff, 4), "",
                    note="frames in [0, 1]; random weights, so no measure of quality"))  # fmt: skip
    report.details["fast"] = {"seconds_per_call": seconds, "block_calls": blocks,
                              "max_pixel_difference": diff}  # fmt: skip


# ---------------------------------------------------------------------------------------
# 6. GPU


# Every family of the registry at its published size, random weights (`random:<preset>`).
GPU_MODELS = ("random:sd-turbo", "random:ltx-video", "random:wan-i2v-480p", "random:svd-xt",
              "random:cogvideox-5b-i2v")  # fmt: skip


@dataclass
class GpuCase:
    """One model of the GPU section: how many items, and of what size."""

    model: str
    items: int
    width: int
    height: int
    frames: int  # 1 for images
    steps: int


def gpu_case(model: str, quick: bool) -> GpuCase:
    """The preset's native size; `--quick` shortens clips (except CogVideoX 1.0, whose learned
    position table fixes 49 frames at 720×480) and takes fewer steps."""
    from pipelines.models import resolve_model

    ref = resolve_model(model)
    p, fam = ref.preset, ref.family
    steps = min(p.steps, 2 if quick else 4)
    if fam.kind == "image":
        return GpuCase(model, 12 if quick else 24, p.width, p.height, 1, steps)
    frames = p.frames
    if quick and not p.fixed_frames:  # CogVideoX-5B: 49-frame clips only
        frames = min(frames, ref.legal_frames(17))
    # Quick: 4 clips — the probing job and the planned one each run them all, and a GPU
    # lent for minutes has to fit five full-size models.
    return GpuCase(model, 4 if quick else 6, p.width, p.height, frames, steps)


def _recording_planner(runtime, cache_file: Path):
    """A planner that records, for every batch, its prediction beside the measured peak."""
    from pipelines.batching import Planner

    class Recording(Planner):
        checks: list[dict]
        batches: list[int]

        def observe(self, key: str, batch: int, peak: int | None) -> None:
            self.batches.append(batch)
            cost = self.costs.get(key)
            if peak is not None and cost is not None and cost.per_item > 0:
                self.checks.append({"batch": batch, "measured": peak,
                                    "predicted": cost.base + cost.per_item * batch,
                                    "after_probes": cost.max_ok >= 2})  # fmt: skip
            super().observe(key, batch, peak)

    planner = Recording(runtime, cache_file=cache_file)
    planner.checks, planner.batches = [], []
    return planner


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_gpu_case(case: GpuCase, device: str, tmp: Path, fast: tuple[str, ...] = ("cache",)) -> dict:
    """Build `case.model`, time a plain diffusers loop (one pipeline call per item) against
    the engine (planner, batches), record every batch's peak memory against the planner's
    prediction, and, for video transformers, one call with each fast path in `fast` (the
    first-block cache, an attention backend, `torch.compile`), one at a time."""
    import numpy as np
    import torch
    from PIL import Image

    from pipelines import clips, images, models
    from pipelines.device import apply_fast_paths, denoisers, fast_order
    from pipelines.settings import Runtime

    runtime = Runtime(device=device)
    ref = models.resolve_model(case.model)
    fam = ref.family
    image = fam.kind == "image"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    loaded = models.load(ref, "text2img" if image else "video", runtime)
    if image:
        jobs = [images.ImageJob(f"a lighthouse at dusk, view {i}", "", case.width, case.height,
                                case.steps, ref.preset.guidance, i) for i in range(case.items)]  # fmt: skip

        def plain(job):  # the naive loop: one pipeline call per prompt
            return images._call_image_pipe(loaded, [job])[0]

        def engine(planner):
            return images.generate(loaded, jobs, runtime=runtime, planner=planner)
    else:
        side = np.linspace(0, 255, case.width, dtype=np.uint8)
        first = Image.fromarray(np.stack([np.tile(side, (case.height, 1))] * 3, -1))
        jobs = [clips.ClipJob(f"a paper boat on a pond, take {i}", first, case.frames,
                              case.width, case.height, case.steps, ref.preset.guidance, i,
                              fps=ref.preset.fps or 8) for i in range(case.items)]  # fmt: skip
        adapter = clips.ADAPTERS[fam.name]

        def plain(job):
            return clips._call(loaded, [job], adapter, None)[0]

        def engine(planner):
            return clips.generate_clips(loaded, jobs, runtime=runtime, planner=planner)

    _sync(dev)
    build_s = time.perf_counter() - t0
    weights = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else None
    plain(jobs[0])  # warm-up: kernels chosen, caches filled; not timed
    _sync(dev)
    t0 = time.perf_counter()
    plain_out = [plain(job) for job in jobs]
    _sync(dev)
    plain_s = time.perf_counter() - t0
    planner = _recording_planner(runtime, tmp / f"planner-{case.model.replace(':', '-')}.json")
    seconds, outputs, batches = [], [], []
    for _ in range(2):  # a first job of the kind (probes timed), then one planned from them
        start = len(planner.batches)
        t0 = time.perf_counter()
        outputs += engine(planner)
        _sync(dev)
        seconds.append(time.perf_counter() - t0)
        batches.append(planner.batches[start:])
    same = max(float(np.abs(a - b).max()) for a, b in zip(plain_out * 2, outputs, strict=True))
    result = {
        "case": asdict(case), "build_seconds": build_s, "plain_seconds": plain_s,
        "engine_seconds": seconds[0], "engine_warm_seconds": seconds[1],
        "frames": case.items * case.frames, "checks": planner.checks, "batches": batches[0],
        "warm_batches": batches[1], "weights_bytes": weights,
        "max_difference_engine_vs_plain": same,
        "peak_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
    }  # fmt: skip

    transformer = any(name.startswith("transformer") for name in denoisers(loaded.pipe))
    result["plain_call_seconds"] = plain_s / case.items
    result["fast"] = {}
    if not image and transformer:
        for item in fast_order(fast):  # compile last: it is not undone
            why: dict[str, str] = {}
            try:
                if apply_fast_paths(loaded.pipe, (item,), why) != (item,):
                    result["fast"][item] = {"skipped": why.get(item, "not taken")}
                    continue
                t0 = time.perf_counter()
                plain(jobs[0])  # warm-up with the fast path (a compile happens here)
                _sync(dev)
                warm_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = plain(jobs[0])  # the same seed as the plain loop's first call
                _sync(dev)
                result["fast"][item] = {"seconds": time.perf_counter() - t0,
                                        "first_call_seconds": warm_s,
                                        "max_difference": float(np.abs(out - plain_out[0]).max())}  # fmt: skip
            except Exception as exc:  # say, an attention backend this machine cannot run
                msg = str(exc).splitlines()[0] if str(exc) else ""
                result["fast"][item] = {"skipped": f"{type(exc).__name__}: {msg}"}
            finally:
                _undo_fast(loaded.pipe, item)
    models.clear_cache()  # the hooks go with the pipeline
    return result


def _undo_fast(pipe, item: str) -> None:
    """Switch a measured fast path off again, so the next one is measured alone."""
    from pipelines.device import _set_attention, denoisers

    for module in denoisers(pipe).values():
        if item == "cache" and getattr(module, "is_cache_enabled", False):
            module.disable_cache()
        elif item.startswith("attention:"):
            _set_attention(module, "native")


def run_gpu_storyboards(model: str, device: str, tmp: Path) -> dict[str, dict]:
    """A 2-shot storyboard through `make_video` in each mode the model takes (continue and
    keyframes for video models, feedback for image models), at its native size and rate,
    2 steps: the paths a creator's first real run takes (keyframes, conditioning, decode,
    writing, stitch), which the clip benchmark above does not. A mode that fails is
    reported with its error; the others still run."""
    from pipelines.chain import VideoOptions, make_video
    from pipelines.models import resolve_model
    from pipelines.settings import Runtime

    ref = resolve_model(model)
    p = ref.preset
    video = ref.family.kind == "video"
    modes = ("continue", "keyframes") if video else ("feedback",)
    image_model = model if not video else ("tiny" if p.is_twin else "random:sd-turbo")
    fps = p.fps or 8
    story = (f"fps: {fps}\nwidth: {p.width}\nheight: {p.height}\nsteps: 2\nseed: 1\n"
             "shots:\n  - prompt: a paper boat on a rainy street\n    seconds: 1\n"
             "  - prompt: a lighthouse at dusk\n    seconds: 1\n")  # fmt: skip
    out: dict[str, dict] = {}
    for mode in modes:
        opts = VideoOptions(model=model, mode=mode, image_model=image_model)
        run_dir = tmp / f"story-{model.replace(':', '-')}-{mode}"
        t0 = time.perf_counter()
        try:
            result = make_video(story, run_dir, opts, runtime=Runtime(device=device), text=True)
        except Exception as exc:  # the crash a first real run would meet: reported
            out[mode] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        out[mode] = {"seconds": time.perf_counter() - t0, "frames": result.frames,
                     "segments": result.segments, "expected_frames": 2 * fps}  # fmt: skip
    return out


def _report_storyboards(m: list, model: str, runs: dict[str, dict]) -> None:
    for mode, r in runs.items():
        name = f"{model}: 2-shot storyboard, {mode}"
        if "error" in r:
            m.append(Metric("gpu", name, None, note=f"failed: {r['error']}"))
            continue
        note = (f"{r['frames']} frames (storyboard: {r['expected_frames']}), "
                f"{r['segments']} segments, keyframes included")  # fmt: skip
        m.append(Metric("gpu", name, round(r["seconds"], 2), "s", note=note))


def bench_gpu(cfg: Config, report: Report, tmp: Path) -> None:
    """Full-size configurations with random weights (`random:<preset>`) on CUDA.

    `--gpu-device cpu` with twin models (`--gpu-models tiny-image tiny-ltx`) runs the same
    code on a CPU; that is how the tests check it."""
    import torch

    from pipelines.batching import SAFETY

    device = cfg.gpu_device or ("cuda" if torch.cuda.is_available() else None)
    m = report.metrics
    if device is None:
        m.append(Metric("gpu", "full-size configurations", None, note="skipped: no CUDA"))
        return
    results = report.details.setdefault("gpu", {})
    for model in cfg.gpu_models or GPU_MODELS:
        case = gpu_case(model, report.quick)
        what = (f"{case.items} × {case.width}×{case.height}" + (f"×{case.frames}" if case.frames
                > 1 else "") + f", {case.steps} steps")  # fmt: skip
        print(f"  {model}: {what}", flush=True)
        try:
            r = run_gpu_case(case, device, tmp, cfg.gpu_fast)
        except Exception as exc:  # one model failing (say, out of memory) still reports
            m.append(Metric("gpu", f"{model}: frames/s, engine / plain loop", None,
                            note=f"failed: {type(exc).__name__}: {exc}"[:300]))  # fmt: skip
            results[model] = {"error": repr(exc)}
            from pipelines.models import clear_cache

            clear_cache()
            save_report(report, cfg.out)
            continue
        r["storyboards"] = run_gpu_storyboards(model, device, tmp)
        _report_storyboards(m, model, r["storyboards"])
        results[model] = r
        save_report(report, cfg.out)  # a run cut short by a time limit keeps what it measured
        plain_fps, engine_fps = r["frames"] / r["plain_seconds"], r["frames"] / r["engine_seconds"]
        warm_fps = r["frames"] / r["engine_warm_seconds"]
        batches, warm = r["batches"], r["warm_batches"]
        print(f"    plain {plain_fps:.2f} frames/s, engine {engine_fps:.2f} frames/s (batches "
              f"{batches}), then {warm_fps:.2f} (batches {warm}), build "
              f"{r['build_seconds']:.0f} s", flush=True)  # fmt: skip
        m.append(Metric("gpu", f"{model}: frames/s, engine / plain loop",
                        round(engine_fps / plain_fps, 3), "×",
                        note=f"{what}; plain {plain_fps:.3g} frames/s, engine {engine_fps:.3g} "
                        f"(batches {batches}, probes timed), a second job {warm_fps:.3g} "
                        f"(batches {warm}, {warm_fps / plain_fps:.3g}×); outputs differ by at "
                        f"most {r['max_difference_engine_vs_plain']:.2g}"))  # fmt: skip
        planned = [c for c in r["checks"] if c["after_probes"]] or r["checks"]
        if planned:
            worst = max(planned, key=lambda c: c["measured"] / max(1, c["predicted"]))
            gib = 2**30
            note = (f"batch {worst['batch']}: {worst['measured'] / gib:.2f} GiB measured vs "
                    f"{worst['predicted'] / gib:.2f} GiB predicted (above the weights"
                    + (f", {r['weights_bytes'] / gib:.1f} GiB" if r["weights_bytes"] else "")
                    + (f"; peak of the run {r['peak_bytes'] / gib:.1f} GiB" if r["peak_bytes"]
                       else "") + ")")  # fmt: skip
            name = f"{model}: peak memory / planner's prediction"
            ratio = worst["measured"] / max(1, worst["predicted"])
            if device == "cuda":  # the planner keeps 1 - SAFETY of free memory in reserve
                note += f"; fits while ≤ 1/{SAFETY:g} of the prediction"
                m.append(ratio_metric("gpu", name, ratio, "×", f"≤ {1 / SAFETY:g}", note=note))
            else:  # a dry run: resident-set peaks of tiny models are mostly noise
                m.append(
                    Metric("gpu", name, round(ratio, 3), "×", note=f"{device} dry run; {note}")
                )
        for item, f in r["fast"].items():
            name = f"{model}: {item} / none, seconds per call"
            if "skipped" in f:
                m.append(Metric("gpu", name, None, note=f"skipped: {f['skipped']}"[:300]))
                continue
            m.append(Metric("gpu", name, round(f["seconds"] / r["plain_call_seconds"], 3), "×",
                            note=f"first call {f['first_call_seconds']:.1f} s; max pixel "
                            f"difference {f['max_difference']:.3g} (random weights: no measure "
                            "of quality)"))  # fmt: skip


# ---------------------------------------------------------------------------------------
# Output


def fmt_value(m: Metric) -> str:
    if m.measured is None:
        return "—"
    return f"{m.measured:g} {m.unit}".strip()


def markdown(report: Report) -> str:
    mc = report.machine
    lines = [
        f"# Reelchain benchmarks ({'quick' if report.quick else 'full'})",
        "",
        f"Machine: {mc['cpu']}, {mc['cores']} cores, {mc['ram']} RAM, GPU: {mc['gpu']}; "
        f"torch {mc['torch']}, Python {mc['python']}; {mc['date']}; "
        f"total {report.seconds:.0f} s"
        + ("." if report.details.get("finished", True) else " so far (the run has not ended)."),
        "",
        "| section | metric | measured | target | met? | note |",
        "|---|---|---|---|---|---|",
    ]
    for m in report.metrics:
        met = "—" if m.met is None else ("yes" if m.met else "**no**")
        note = m.note.replace("|", "\\|")
        lines.append(
            f"| {m.section} | {m.name} | {fmt_value(m)} | {m.target or '—'} | {met} | {note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", nargs="*",
                        choices=("batching", "video", "encoding", "fast", "gpu"),
                        help="run only these sections")  # fmt: skip
    parser.add_argument("--gpu-device", help="run the GPU section on this device (cpu: a "
                        "dry run of its code with --gpu-models twins)")  # fmt: skip
    parser.add_argument("--gpu-models", nargs="*", default=(),
                        help=f"models of the GPU section (default: {' '.join(GPU_MODELS)})")  # fmt: skip
    parser.add_argument("--gpu-fast", default="cache",
                        help="fast paths the GPU section times, one at a time, on each video "
                        "transformer (default: cache; e.g. cache,attention:_native_cudnn,"
                        "compile)")  # fmt: skip
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import logging
    import warnings

    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    quiet_progress_bars()

    from pipelines.settings import parse_fast

    try:
        # Each is measured alone, so several attention backends may be compared.
        gpu_fast = tuple(f for item in args.gpu_fast.split(",") for f in parse_fast(item))
    except ValueError as exc:
        parser.error(f"--gpu-{exc}")
    cfg = dataclasses.replace(Config.for_mode(args.quick), gpu_device=args.gpu_device,
                              gpu_models=tuple(args.gpu_models), out=args.out,
                              gpu_fast=gpu_fast)  # fmt: skip
    report = Report(args.quick, machine_info())
    report.details["finished"] = False
    sections = {"batching": bench_batching, "video": bench_video,
                "encoding": bench_encoding, "fast": bench_fast, "gpu": bench_gpu}  # fmt: skip
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reelchain-bench-") as d:
        for name, fn in sections.items():
            if args.only and name not in args.only:
                continue
            print(f"[{name}]", flush=True)
            work = Path(d) / name
            work.mkdir()
            t = time.perf_counter()
            fn(cfg, report, work)
            report.details.setdefault("section_seconds", {})[name] = time.perf_counter() - t  # type: ignore[index]
            report.seconds = time.perf_counter() - t0
            save_report(report, args.out)
    report.details["finished"] = True
    save_report(report, args.out)
    print()
    print(markdown(report))
    return 0


def save_report(report: Report, out: Path | None) -> None:
    """Write the JSON and the markdown table so far (`details.finished` says whether the
    run ended)."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out / "benchmarks.md").write_text(markdown(report))


if __name__ == "__main__":
    sys.exit(main())
