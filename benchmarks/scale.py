"""Scale-out: the same work on 1 Ray worker and on 2, side by side on a local instance.

Workloads on the tiny twins, one torch thread per worker: 48 thumbnail-sized images
(a CSV's rows, tiny-image at 64 px, 8 steps) and a 12-shot `continue` storyboard (tiny-ltx,
`make_video` with the pool, 96 steps at 64 px). Each pool is started and its models loaded before the clock
runs (workers keep their models); the pools take turns and the best time of each is kept
(timing on a shared machine is noisy). Outputs are compared: with a fixed batch size of 1
they are the same on any number of workers.

    python benchmarks/run.py --only scale
"""

from __future__ import annotations

import time
from pathlib import Path

from .report import Config, Metric, Report, ratio_metric

WORKERS = (1, 2)


def _storyboard(shots: int) -> str:
    # 96 steps at 64 px: a call costs several times what the driver spends writing its
    # segment, as on a GPU (where the driver also has CPUs of its own; here the two workers
    # and the driver share 2 cores; benchmarks/README.md says what fewer steps give).
    lines = ["mode: continue", "fps: 8", "width: 64", "height: 64", "steps: 96", "seed: 3",
             "shots:"]  # fmt: skip
    for k in range(shots):
        lines += [f"  - prompt: a paper boat, scene {k}", "    seconds: 1"]
    return "\n".join(lines) + "\n"


def _rows(n: int):
    from pipelines.images import ImageItem

    return [ImageItem(f"a lighthouse at dusk, row {i}", "", 64, 64, 8, 1.0, i) for i in range(n)]


def _run_video(pool, tmp: Path, tag: str, runtime):
    import numpy as np

    from pipelines.chain import VideoOptions, make_video
    from pipelines.video_io import read_frames

    result = make_video(_storyboard(12), tmp / tag, VideoOptions(model="tiny-ltx"),
                        runtime=runtime, text=True, pool=pool)  # fmt: skip
    return np.stack(list(read_frames(result.video)))


def measure(tmp: Path, repeats: int) -> dict[str, dict]:
    """{workload: {"1": best seconds, "2": best seconds, "same": outputs equal}}."""
    import numpy as np

    from pipelines.scale import Pool
    from pipelines.settings import Runtime

    runtime = Runtime(batch_size=1)
    rows = _rows(48)
    best: dict[tuple[str, int], float] = {}
    out: dict[tuple[str, int], object] = {}
    for turn in range(repeats):
        for n in WORKERS:
            with Pool.start("local", n, runtime, threads=1) as pool:
                pool.preload("tiny-image", "image")
                pool.preload("tiny-ltx", "video")
                for name, work in (
                    ("thumbnail rows", lambda p=pool: p.images("tiny-image", rows)),
                    ("12-shot storyboard",
                     lambda p=pool, n=n, t=turn: _run_video(p, tmp, f"v{n}-{t}", runtime)),
                ):  # fmt: skip
                    t0 = time.perf_counter()
                    out[name, n] = work()
                    best[name, n] = min(best.get((name, n), 1e9), time.perf_counter() - t0)
    table = {}
    for name in ("thumbnail rows", "12-shot storyboard"):
        a, b = out[name, 1], out[name, 2]
        same = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        table[name] = {"1": best[name, 1], "2": best[name, 2], "same": same}
    return table


def bench_scale(cfg: Config, report: Report, tmp: Path) -> None:
    """1 vs 2 Ray workers (a local instance with 2 CPUs) on the same work."""
    try:
        import ray
    except ImportError:
        report.metrics.append(Metric("scale", "2 workers / 1", None, note="skipped: no ray"))
        return
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        table = measure(tmp, repeats=cfg.repeats)
    finally:
        ray.shutdown()
    for name, row in table.items():
        speed = row["1"] / row["2"]
        note = (f"{row['1']:.2f} s on 1 worker, {row['2']:.2f} s on 2; outputs "
                f"{'identical' if row['same'] else 'DIFFER'}; one torch thread per worker, "
                "batch size 1")  # fmt: skip
        report.metrics.append(ratio_metric("scale", f"{name}: 2 workers / 1", speed, "×",
                                           "≥ 1.6", note=note))  # fmt: skip
    report.details["scale"] = table
