"""GPU: every family at its published size with random weights (`random:<preset>`) —
the engine against a plain diffusers loop, each batch's peak memory against the
planner's prediction, and the fast paths on the video transformers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .report import Config, Metric, Report, ratio_metric, save_report


def _every_preset() -> tuple[str, ...]:
    from pipelines.models import PRESETS

    return tuple(f"random:{p}" for p in PRESETS)


# Every preset of the registry at its published size, random weights (`random:<preset>`):
# the paths a first real run takes (wan-flf2v-720p's keyframes end on a last frame; FLUX
# reads 256 text tokens; the Wan 2.2 experts hand over).
GPU_MODELS = _every_preset()


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


@dataclass
class _Subject:
    """A built model of the GPU section, its items, and the two ways to run them."""

    loaded: Any
    jobs: list
    plain: Callable[[Any], Any]  # one item, one pipeline call: the naive loop
    engine: Callable[[Any], list]  # every item through the engine, with the given planner
    image: bool


def _build(case: GpuCase, runtime) -> _Subject:
    """Load `case.model` on the runtime's device and make its items: images, or clips
    from one gradient first frame."""
    import numpy as np
    from PIL import Image

    from pipelines import clips, images, models

    ref = models.resolve_model(case.model)
    fam = ref.family
    image = fam.kind == "image"
    loaded = models.load(ref, "text2img" if image else "video", runtime)
    if image:
        jobs = [images.ImageItem(f"a lighthouse at dusk, view {i}", "", case.width, case.height,
                                case.steps, ref.preset.guidance, i) for i in range(case.items)]  # fmt: skip

        def plain(job):  # the naive loop: one pipeline call per prompt
            return images._call_image_pipe(loaded, [job])[0]

        def engine(planner):
            return images.generate(loaded, jobs, runtime=runtime, planner=planner)
    else:
        side = np.linspace(0, 255, case.width, dtype=np.uint8)
        first = Image.fromarray(np.stack([np.tile(side, (case.height, 1))] * 3, -1))
        jobs = [clips.ClipItem(f"a paper boat on a pond, take {i}", first, case.frames,
                              case.width, case.height, case.steps, ref.preset.guidance, i,
                              fps=ref.preset.fps or 8) for i in range(case.items)]  # fmt: skip
        adapter = clips.ADAPTERS[fam.name]

        def plain(job):
            return clips._call(loaded, [job], adapter, None)[0]

        def engine(planner):
            return clips.generate_clips(loaded, jobs, runtime=runtime, planner=planner)

    return _Subject(loaded, jobs, plain, engine, image)


@dataclass
class _EngineJob:
    """One engine job over all items: its time, outputs, and the batches the engine ran."""

    seconds: float
    outputs: list
    batches: list  # of `pipelines.events.BatchDone`, in order


def _engine_job(subject: _Subject, planner, dev) -> _EngineJob:
    from pipelines import events

    seen: list[events.Event] = []
    with events.watch(seen.append):
        t0 = time.perf_counter()
        outputs = subject.engine(planner)
        _sync(dev)
        seconds = time.perf_counter() - t0
    return _EngineJob(seconds, outputs, [e for e in seen if isinstance(e, events.BatchDone)])


def _memory_checks(batches) -> list[dict]:
    """Every batch's measured peak beside the planner's prediction for it, where there was
    one (the first probe of a kind has none)."""
    return [{"batch": b.size, "measured": b.peak, "predicted": b.predicted,
             "after_probes": not b.probing}
            for b in batches if b.peak is not None and b.predicted is not None]  # fmt: skip


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

    from pipelines import models
    from pipelines.batching import Planner
    from pipelines.device import denoisers
    from pipelines.settings import Runtime

    runtime = Runtime(device=device)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    subject = _build(case, runtime)
    _sync(dev)
    build_s = time.perf_counter() - t0
    weights = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else None
    subject.plain(subject.jobs[0])  # warm-up: kernels chosen, caches filled; not timed
    _sync(dev)
    t0 = time.perf_counter()
    plain_out = [subject.plain(job) for job in subject.jobs]
    _sync(dev)
    plain_s = time.perf_counter() - t0
    planner = Planner(runtime, cache_file=tmp / f"planner-{case.model.replace(':', '-')}.json")
    # A first job of the kind (probes timed), then one planned from what it measured.
    first = _engine_job(subject, planner, dev)
    warm = _engine_job(subject, planner, dev)
    same = max(float(np.abs(a - b).max())
               for a, b in zip(plain_out * 2, first.outputs + warm.outputs, strict=True))  # fmt: skip
    result = {
        "case": asdict(case), "build_seconds": build_s, "plain_seconds": plain_s,
        "engine_seconds": first.seconds, "engine_warm_seconds": warm.seconds,
        "frames": case.items * case.frames, "checks": _memory_checks(first.batches + warm.batches),
        "batches": [b.size for b in first.batches], "warm_batches": [b.size for b in warm.batches],
        "weights_bytes": weights, "max_difference_engine_vs_plain": same,
        "peak_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
    }  # fmt: skip

    transformer = any(name.startswith("transformer") for name in denoisers(subject.loaded.pipe))
    result["plain_call_seconds"] = plain_s / case.items
    video_transformer = not subject.image and transformer
    result["fast"] = _time_fast_paths(subject, fast, plain_out[0], dev) if video_transformer else {}
    models.clear_cache()  # the hooks go with the pipeline
    return result


def _time_fast_paths(subject: _Subject, fast: tuple[str, ...], reference, dev) -> dict[str, dict]:
    """One call of the first item with each fast path on, alone, against `reference` (the
    plain loop's output for it, on the same seed); one that cannot run says why."""
    import numpy as np

    from pipelines.device import apply_fast_paths, fast_order

    pipe, plain, job = subject.loaded.pipe, subject.plain, subject.jobs[0]
    out: dict[str, dict] = {}
    for item in fast_order(fast):  # compile last: it is not undone
        why: dict[str, str] = {}
        try:
            if apply_fast_paths(pipe, (item,), why) != (item,):
                out[item] = {"skipped": why.get(item, "not taken")}
                continue
            t0 = time.perf_counter()
            plain(job)  # warm-up with the fast path (a compile happens here)
            _sync(dev)
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            frames = plain(job)  # the same seed as the plain loop's first call
            _sync(dev)
            out[item] = {"seconds": time.perf_counter() - t0, "first_call_seconds": warm_s,
                         "max_difference": float(np.abs(frames - reference).max())}  # fmt: skip
        except Exception as exc:  # say, an attention backend this machine cannot run
            msg = str(exc).splitlines()[0] if str(exc) else ""
            out[item] = {"skipped": f"{type(exc).__name__}: {msg}"}
        finally:
            _undo_fast(pipe, item)
    return out


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
            _report_gpu_case(m, model, what, r, device)
        except Exception as exc:  # one model failing (say, out of memory) still reports
            m.append(Metric("gpu", f"{model}: frames/s, engine / plain loop", None,
                            note=f"failed: {type(exc).__name__}: {exc}"[:300]))  # fmt: skip
            r = {"error": repr(exc)}
            from pipelines.models import clear_cache

            clear_cache()
        # The storyboards run whatever the clip benchmark did: their crash is the news.
        r["storyboards"] = run_gpu_storyboards(model, device, tmp)
        results[model] = r
        _report_storyboards(m, model, r["storyboards"])
        save_report(report, cfg.out)  # a run cut short by a time limit keeps what it measured


def _report_gpu_case(m: list, model: str, what: str, r: dict, device: str) -> None:
    """One model's metrics: frames/s against the plain loop, the worst batch's peak memory
    against the planner's prediction, each fast path's time per call."""
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
    _report_memory(m, model, r, device)
    for item, f in r["fast"].items():
        name = f"{model}: {item} / none, seconds per call"
        if "skipped" in f:
            m.append(Metric("gpu", name, None, note=f"skipped: {f['skipped']}"[:300]))
            continue
        m.append(Metric("gpu", name, round(f["seconds"] / r["plain_call_seconds"], 3), "×",
                        note=f"first call {f['first_call_seconds']:.1f} s; max pixel "
                        f"difference {f['max_difference']:.3g} (random weights: no measure "
                        "of quality)"))  # fmt: skip


def _report_memory(m: list, model: str, r: dict, device: str) -> None:
    """The batch whose peak most exceeded the planner's prediction, after the probes where
    any batch ran after them."""
    from pipelines.batching import SAFETY

    planned = [c for c in r["checks"] if c["after_probes"]] or r["checks"]
    if not planned:
        return
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
        m.append(Metric("gpu", name, round(ratio, 3), "×", note=f"{device} dry run; {note}"))
