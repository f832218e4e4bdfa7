"""The benchmark's GPU section, run on the CPU with twins: the same code a GPU runs."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import economy, gpu  # noqa: E402
from benchmarks.report import Config, Report  # noqa: E402


@pytest.mark.parametrize("model", ["tiny-image", "tiny-ltx"])
def test_gpu_case_compares_the_engine_with_a_plain_diffusers_loop(model, tmp_path):
    image = model == "tiny-image"
    case = gpu.GpuCase(model, 5, 64 if image else 32, 64 if image else 32, 1 if image else 9, 2)
    r = gpu.run_gpu_case(case, "cpu", tmp_path)
    # The first job probes (1 alone, then all 4 others: plenty of memory here); the second
    # job runs as one planned batch.
    assert r["batches"] == [1, 4] and r["warm_batches"] == [5]
    assert r["frames"] == 5 * case.frames
    assert r["plain_seconds"] > 0 and r["engine_seconds"] > 0
    # Same seeds, same pixels: batching changes speed, not results.
    assert r["max_difference_engine_vs_plain"] < 1e-3
    # Every batch after the first has the planner's prediction beside the measured peak.
    assert len(r["checks"]) == 2 and [c["after_probes"] for c in r["checks"]] == [False, True]
    assert all(c["predicted"] > 0 for c in r["checks"])


def test_gpu_section_is_skipped_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the section runs for real")
    report = Report(True, {})
    gpu.bench_gpu(Config.for_mode(True), report, tmp_path)
    assert [(m.section, m.measured, m.note) for m in report.metrics] == [
        ("gpu", None, "skipped: no CUDA")
    ]


def test_gpu_section_reports_each_model(tmp_path):
    cfg = Config.for_mode(True)
    cfg.gpu_device, cfg.gpu_models = "cpu", ("tiny-svd",)
    report = Report(True, {})
    gpu.bench_gpu(cfg, report, tmp_path)
    names = [m.name for m in report.metrics]
    assert names == [
        "tiny-svd: frames/s, engine / plain loop",
        "tiny-svd: peak memory / planner's prediction",
        "tiny-svd: 2-shot storyboard, continue",
        "tiny-svd: 2-shot storyboard, keyframes",
    ]
    runs = report.details["gpu"]["tiny-svd"]["storyboards"]
    assert {mode: r["frames"] for mode, r in runs.items()} == {"continue": 14, "keyframes": 14}
    note = report.metrics[0].note
    assert report.metrics[0].measured > 0 and "batches [1, 3]" in note and "batches [4]" in note


def test_quick_gpu_cases_are_native_size_with_short_clips():
    ltx = gpu.gpu_case("random:ltx-video", quick=True)
    assert (ltx.width, ltx.height, ltx.frames, ltx.steps, ltx.items) == (768, 512, 17, 2, 4)
    # CogVideoX 1.0's learned position table only takes its native 49 frames at 720×480.
    cog = gpu.gpu_case("random:cogvideox-5b-i2v", quick=True)
    assert (cog.width, cog.height, cog.frames) == (720, 480, 49)
    sd = gpu.gpu_case("random:sd-turbo", quick=False)
    assert (sd.frames, sd.steps, sd.items) == (1, 1, 24)
    from pipelines.models import PRESETS

    assert set(gpu.GPU_MODELS) == {f"random:{p}" for p in PRESETS}  # every preset


def test_gpu_results_are_written_after_each_model(tmp_path, monkeypatch):
    # A GPU run under a time limit keeps what it measured: results are on disk after every
    # model, and a model that fails is reported while the others still run.
    cfg = Config.for_mode(True)
    cfg.gpu_device, cfg.gpu_models, cfg.out = "cpu", ("tiny-svd", "tiny-ltx"), tmp_path / "out"
    on_disk = []
    real = gpu.run_gpu_case

    def spy(case, device, tmp, *fast):
        path = cfg.out / "benchmarks.json"
        on_disk.append(json.loads(path.read_text())["details"]["gpu"] if path.exists() else None)
        if case.model == "tiny-ltx":
            raise MemoryError("injected")
        return real(case, device, tmp, *fast)

    monkeypatch.setattr(gpu, "run_gpu_case", spy)
    report = Report(True, {"cpu": "x", "cores": 2, "ram": "1", "gpu": "none",
                                 "torch": "t", "python": "p", "date": "d"})  # fmt: skip
    report.details["finished"] = False
    gpu.bench_gpu(cfg, report, tmp_path)
    assert on_disk[0] is None and list(on_disk[1]) == ["tiny-svd"]
    final = json.loads((cfg.out / "benchmarks.json").read_text())["details"]["gpu"]
    assert "MemoryError" in final["tiny-ltx"]["error"] and "batches" in final["tiny-svd"]
    # The failed model's storyboards still ran: what a first real run would meet.
    assert final["tiny-ltx"]["storyboards"]["continue"]["frames"] > 0
    table = (cfg.out / "benchmarks.md").read_text()
    assert "so far (the run has not ended)" in table and "failed: MemoryError" in table


def test_gpu_case_times_each_fast_path_alone_and_reports_why_one_is_skipped(tmp_path):
    case = gpu.GpuCase("tiny-ltx", 3, 32, 32, 9, 2)
    fast = ("attention:_native_math", "cache", "attention:_native_cudnn")
    r = gpu.run_gpu_case(case, "cpu", tmp_path, fast)
    assert list(r["fast"]) == ["attention:_native_math", "attention:_native_cudnn", "cache"]
    math = r["fast"]["attention:_native_math"]
    assert math["seconds"] > 0 and math["max_difference"] < 1e-4  # the same attention, in math
    # cuDNN attention cannot run on CPU tensors: the call fails, is reported, and switched off.
    assert r["fast"]["attention:_native_cudnn"]["skipped"].startswith("RuntimeError")
    assert "transformer block" in r["fast"]["cache"]["skipped"]  # the twin has one block
    cfg = Config.for_mode(True)
    cfg.gpu_device, cfg.gpu_models, cfg.gpu_fast = "cpu", ("tiny-ltx",), fast
    report = Report(True, {})
    gpu.bench_gpu(cfg, report, tmp_path)
    notes = {m.name: m.note for m in report.metrics}
    assert notes["tiny-ltx: cache / none, seconds per call"].startswith("skipped: 1 transformer")


def test_interpolation_psnr_scores_the_made_frames_against_the_true_ones():
    import cv2
    import numpy as np

    rng = np.random.default_rng(5)
    scene = cv2.GaussianBlur(rng.standard_normal((160, 220, 3)).astype(np.float32), (0, 0), 5)
    scene = ((scene - scene.min()) / np.ptp(scene) * 255).astype(np.uint8)
    frames = np.stack([scene[40 - t : 136 - t, 3 * t : 3 * t + 128] for t in range(13)])
    flow, blend = (
        economy.interpolation_psnr(frames, 3, True),
        economy.interpolation_psnr(frames, 3, False),
    )
    assert flow > blend + 6, (flow, blend)  # flow follows the texture; a blend ghosts it
    still = np.repeat(frames[:1], 7, 0)
    assert economy.interpolation_psnr(still, 2, True) > 60  # nothing moves: nothing to get wrong


def test_the_command_line_runs_as_a_file_and_writes_the_table(tmp_path):
    # `python benchmarks/run.py` (a file, not a module) still finds its package; without
    # CUDA the GPU section is the quickest complete run: skipped, reported, written.
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the GPU section would run for real")
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--only", "gpu",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (out / "benchmarks.md").read_text()
    assert "| gpu | full-size configurations | — | — | — | skipped: no CUDA |" in table
    assert table in proc.stdout and "[gpu]" in proc.stdout
    assert json.loads((out / "benchmarks.json").read_text())["details"]["finished"] is True


@pytest.mark.parametrize("model,frames", [("tiny-framepack", 37), ("tiny-skyreels-df", 17)])
def test_gpu_case_runs_the_long_video_families(model, frames, tmp_path):
    """The GPU section's code on the long-video twins: FramePack through its own section
    loop, SkyReels-V2 through its pipeline; the engine gives the plain loop's pixels."""
    r = gpu.run_gpu_case(gpu.GpuCase(model, 2, 32, 32, frames, 2), "cpu", tmp_path)
    assert r["frames"] == 2 * frames and r["max_difference_engine_vs_plain"] < 1e-3
    assert set(r["fast"]) == {"cache"}
