"""Batching: images/s of the planner (empty and warm cache) against one call per
prompt and against the best size of a fixed sweep, on the SD twin."""

from __future__ import annotations

from pathlib import Path

from .report import Config, Metric, Report, ratio_metric, timed


def bench_batching(cfg: Config, report: Report, tmp: Path) -> None:
    from pipelines import events
    from pipelines.batching import Planner
    from pipelines.images import ImageItem, generate
    from pipelines.models import load, resolve_model
    from pipelines.settings import Runtime

    loaded = load(resolve_model("tiny-image", "image"), "text2img", Runtime())
    jobs = [ImageItem(f"a lighthouse, view {i}", "", 64, 64, 4, 1.0, i) for i in range(cfg.prompts)]
    counter = iter(range(10_000))

    def run(batch_size: int | None, cache: Path | None = None) -> tuple[float, list[int]]:
        """Images/s over all prompts with a fresh planner (and a fresh cache file unless
        `cache` is given), and the batch sizes it ran."""
        runtime = Runtime(batch_size=batch_size)
        cache = cache or tmp / f"planner-{next(counter)}.json"
        planner = Planner(runtime, cache_file=cache)
        seen: list[events.Event] = []
        with events.watch(seen.append):
            seconds = timed(lambda: generate(loaded, jobs, runtime=runtime, planner=planner))
        calls = [e.size for e in seen if isinstance(e, events.BatchDone)]
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
