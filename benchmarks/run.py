"""Reelchain benchmarks: the engine's claims measured side by side in one run.

    python benchmarks/run.py [--quick] [--only SECTION ...] [--out benchmarks/results]

Writes `benchmarks.json` and `benchmarks.md` (a table: metric, measured, target, met?, plus
the machine) into `--out` and prints the table. Everything runs offline on the tiny twins;
every number is measured on this machine, nothing is asserted. Sections, one module each
beside this one (`report.py` holds what they share; this file is the command line):

1. `batching.py`: images/s with the planner (auto) vs one call per prompt vs the best fixed size;
2. `video.py`: share of wall time inside pipeline calls; peak RSS of a 4x longer video;
3. `encoding.py`: the streaming writer vs a raw ffmpeg pipe and vs moviepy;
4. `economy.py`: output frames per generated frame, what the plan throws away, and what
   interpolating costs in picture (run with the video section, from its run);
5. `fast.py`: seconds per call with and without an opt-in fast path (first-block cache);
6. `scale.py`: the same work on one Ray worker and on two;
7. `sections.py`: FramePack's peak memory over a 4x longer shot, one call per section
   against diffusers' one call;
8. `gpu.py`: full-size configurations (only where CUDA is available).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package from the root, and keep
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # its modules off the top level

from benchmarks.batching import bench_batching
from benchmarks.economy import bench_economy
from benchmarks.encoding import bench_encoding
from benchmarks.fast import bench_fast
from benchmarks.gpu import GPU_MODELS, bench_gpu
from benchmarks.report import ROOT, Config, Report, machine_info, markdown, save_report
from benchmarks.scale import bench_scale
from benchmarks.sections import bench_sections
from benchmarks.video import SHORT_RUN, bench_video


def bench_video_and_economy(cfg: Config, report: Report, tmp: Path) -> None:
    """The long-video section, then the economy of the run it timed (from its manifest)."""
    bench_video(cfg, report, tmp)
    bench_economy(report, tmp / SHORT_RUN, report.details["video"]["model"])  # type: ignore[index]


SECTIONS = {"batching": bench_batching, "video": bench_video_and_economy,
            "encoding": bench_encoding, "fast": bench_fast, "scale": bench_scale,
            "sections": bench_sections, "gpu": bench_gpu}  # fmt: skip


def quiet_progress_bars() -> None:
    """Silence diffusers' per-call progress bars in this process (the pipelines set their
    own bar options, so TQDM_DISABLE alone does not reach them)."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils

    pipeline_utils.is_torch_dist_rank_zero = lambda: False  # bars show on rank zero only


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", nargs="*",
                        choices=tuple(SECTIONS),
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
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reelchain-bench-") as d:
        for name, fn in SECTIONS.items():
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


if __name__ == "__main__":
    sys.exit(main())
