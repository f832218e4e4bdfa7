"""Long video: the share of a storyboard run's wall time spent inside pipeline calls,
and the peak memory of a 4× longer video against the short one."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .report import ROOT, Config, Report, ratio_metric, timed

SHORT_RUN = "short"  # the timed run's folder in the section's work dir (economy reads it)


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


@contextlib.contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Sum the seconds the engine reports (`pipelines.events`) in each phase of a run while
    the block runs: pipeline calls, segment writes, the final stitch. The sums are there
    once the block ends."""
    from pipelines import events

    phase_of = {events.BatchDone: "pipeline calls", events.SegmentWritten: "segment writes",
                events.Stitched: "final stitch"}  # fmt: skip
    spent = dict.fromkeys(phase_of.values(), 0.0)
    seen: list[events.Event] = []  # appended from the segment writer's thread too
    with events.watch(seen.append):
        yield spent
    for e in seen:
        spent[phase_of[type(e)]] += e.seconds


def calibrate_video_size(model: str, sides: tuple[int, ...], goal: float) -> tuple[int, float]:
    """The side (of `sides`) whose single clip call takes closest to `goal` seconds."""
    from PIL import Image

    from pipelines.batching import Planner
    from pipelines.clips import ClipItem, generate_clips
    from pipelines.models import load, resolve_model
    from pipelines.settings import Runtime

    ref = resolve_model(model, "video")
    loaded = load(ref, "video", Runtime())
    runtime = Runtime(batch_size=1)
    best: tuple[int, float] | None = None
    for side in sides:
        job = ClipItem("calibration", Image.new("RGB", (side, side), (90, 120, 150)),
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
        wall = timed(lambda: make_video(story, tmp / SHORT_RUN, opts, runtime=runtime, text=True))
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
