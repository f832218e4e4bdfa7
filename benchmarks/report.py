"""What every section shares: the run's sizes, the metrics it reports, the machine it
ran on, and the report written as JSON and as a markdown table."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
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


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


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


def save_report(report: Report, out: Path | None) -> None:
    """Write the JSON and the markdown table so far (`details.finished` says whether the
    run ended)."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out / "benchmarks.md").write_text(markdown(report))
