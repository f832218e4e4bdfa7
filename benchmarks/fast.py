"""Fast paths (opt-in): seconds per call with and without the first-block cache, on the
Wan twin given more blocks."""

from __future__ import annotations

from pathlib import Path

from .report import Config, Metric, Report, timed


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
