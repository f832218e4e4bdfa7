"""FramePack in flat memory: peak RSS of a 4× longer shot, one call against one per section.

diffusers' `HunyuanVideoFramepackPipeline` holds every decoded frame of the video (float32,
on the device) until its one call returns; Reelchain makes one section per call and
streams each section's frames into the encoder, so a longer shot should cost no more
memory. Both ways make a short shot (2 sections) and a 4× longer one (8) with the FramePack
twin at 256×256 (`--quick`: 128×128), each in a fresh process with two malloc arenas (the
default, one per thread, adds tens of MiB of noise to either way); the metrics are
Reelchain's long / short ratio of peak resident memory, and the long shot's peak of the
one call over Reelchain's (whose process also holds the keyframe model and the encoder).

    python benchmarks/run.py --only sections
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .report import ROOT, Config, Report, ratio_metric
from .video import peak_rss_of

SHORT, LONG = 2, 8  # sections of 36 frames (1.2 s at 30 fps)

# diffusers' one call: `num_frames` 33 per section (its own count), F1's forward order.
ONE_CALL = """
import sys, torch
from PIL import Image
from pipelines.twins import build_twin
sections, side = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
pipe = build_twin("framepack")
with torch.inference_mode():
    out = pipe(image=Image.new("RGB", (side, side), (40, 90, 160)), prompt="a paper boat",
               height=side, width=side, num_frames=33 * sections, latent_window_size=9,
               num_inference_steps=2, sampling_type="vanilla", output_type="np")
print("FRAMES", out.frames[0].shape[0])
"""

# Reelchain: the whole engine (keyframe, sections, encoder, stitch) on a one-shot storyboard.
SECTIONS = """
import sys, torch
from pipelines.chain import VideoOptions, make_video
from pipelines.settings import Runtime
sections, side, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
story = (f"fps: 30\\nwidth: {side}\\nheight: {side}\\nsteps: 2\\nseed: 1\\nshots:\\n"
         f"  - prompt: a paper boat\\n    seconds: {sections * 1.2}\\n")
result = make_video(story, out, VideoOptions(model="tiny-framepack"), text=True,
                    runtime=Runtime(batch_size=1))
print("FRAMES", result.frames)
"""


def measure(tmp: Path, side: int) -> dict[str, dict[int, tuple[int, float]]]:
    """{way: {sections: (peak RSS bytes, seconds)}}, each run in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
               MALLOC_ARENA_MAX="2")  # fmt: skip
    runs: dict[str, dict[int, tuple[int, float]]] = {"one call": {}, "sections": {}}
    for n in (SHORT, LONG):
        runs["one call"][n] = peak_rss_of([sys.executable, "-c", ONE_CALL, str(n), str(side)], env)
        out = str(tmp / f"run-{n}")
        cmd = [sys.executable, "-c", SECTIONS, str(n), str(side), out]
        runs["sections"][n] = peak_rss_of(cmd, env)
        for way in runs:
            peak, secs = runs[way][n]
            print(f"  {way}, {n} sections: peak RSS {peak / 2**20:.0f} MiB, {secs:.0f} s")
    return runs


def bench_sections(cfg: Config, report: Report, tmp: Path) -> None:
    side = 128 if report.quick else 256
    runs = measure(tmp, side)
    mib = {w: {n: runs[w][n][0] / 2**20 for n in (SHORT, LONG)} for w in runs}
    ours, theirs = mib["sections"], mib["one call"]
    report.metrics += [
        ratio_metric("sections", f"peak RSS, {LONG} / {SHORT} FramePack sections, one a call",
                     ours[LONG] / ours[SHORT], "×", "≤ 1.10",
                     note=f"{ours[SHORT]:.0f} vs {ours[LONG]:.0f} MiB at {side}×{side}; "
                     f"diffusers' one call: {theirs[SHORT]:.0f} vs {theirs[LONG]:.0f} MiB"),
        ratio_metric("sections", f"peak RSS at {LONG} sections, diffusers' one call / ours",
                     theirs[LONG] / ours[LONG], "×", "≥ 1.00",
                     note="ours: the whole engine (keyframe model, encoder, stitch)"),
    ]  # fmt: skip
    report.details["sections"] = {w: {str(n): v for n, v in r.items()} for w, r in runs.items()}
