"""Scale-out on a local Ray instance: the same jobs on 1 worker and on 2, one torch thread each.

    python benchmarks/scale.py [--rounds 2] [--repeats 3] [--cpus 2] [--batch-size 1|auto]

Workloads: 24 tiny-image ImageJobs (64 px, 2 steps) and 12 tiny-ltx first-frame ClipJobs
(32 px, 9 frames, 2 steps). Each pool is started and its models loaded before the clock
runs (steady state: workers keep their models); the pools take turns for `--rounds`
rounds of `--repeats` runs each, and the best time of each is kept, since timing on a shared machine is noisy. The
outputs of the two pools are compared (exactly with a fixed batch size). Prints a table;
nothing is asserted. `benchmarks/run.py` can call `measure` for its scale section.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def workloads():
    from PIL import Image

    from pipelines.clips import ClipJob
    from pipelines.images import ImageJob

    images = [ImageJob(f"a lighthouse at dusk, take {i}", "", 64, 64, 2, 1.0, i) for i in range(24)]
    firsts = [Image.new("RGB", (32, 32), (20 * i, 90, 200 - 15 * i)) for i in range(12)]
    clips = [ClipJob(f"a paper boat, shot {i}", im, 9, 32, 32, 2, 3.0, i) for i, im in enumerate(firsts)]  # fmt: skip
    return {"images": ("tiny-image", images), "clips": ("tiny-ltx", clips)}


def measure(rounds: int = 2, repeats: int = 3, batch_size: int | None = 1) -> dict[str, dict]:
    """{workload: {"1": best seconds, "2": best seconds, "ratio", "same", "max_diff"}}."""
    import numpy as np

    from pipelines.scale import Pool
    from pipelines.settings import Runtime

    runtime = Runtime(batch_size=batch_size)
    work = workloads()
    best: dict[tuple[str, int], float] = {}
    outputs: dict[tuple[str, int], list] = {}
    for _ in range(rounds):
        for n in (1, 2):
            with Pool.start("local", n, runtime, threads=1) as pool:
                for spec, jobs in work.values():
                    pool.preload(spec, "video" if spec == "tiny-ltx" else "image")
                    pool.run(spec, jobs[: 2 * n])  # warm: every worker has made one
                for _ in range(repeats):
                    for name, (spec, jobs) in work.items():
                        t0 = time.perf_counter()
                        outputs[name, n] = pool.run(spec, jobs)
                        took = time.perf_counter() - t0
                        best[name, n] = min(best.get((name, n), took), took)
    table = {}
    for name in work:
        a, b = outputs[name, 1], outputs[name, 2]
        diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
        table[name] = {
            "1": best[name, 1],
            "2": best[name, 2],
            "ratio": best[name, 1] / best[name, 2],
            "same": all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)),
            "max_diff": diff,
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="turns of each pool")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each workload a turn")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--batch-size", default="1", help="1 (exact comparison) or auto")
    args = parser.parse_args(argv)
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    try:
        batch = None if args.batch_size == "auto" else int(args.batch_size)
        table = measure(args.rounds, args.repeats, batch)
    finally:
        ray.shutdown()
    print(
        f"| workload | 1 worker (s) | 2 workers (s) | speed-up | same output | batch {args.batch_size} |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in table.items():
        same = "yes" if row["same"] else f"max diff {row['max_diff']:.1e}"
        print(f"| {name} | {row['1']:.2f} | {row['2']:.2f} | {row['ratio']:.2f}× | {same} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
