"""The native long-video families (issue 13) on their twins: SkyReels-V2 diffusion forcing
(windows overlapping by `overlap_history` frames, the later ones through its video-to-video
pipeline) and FramePack F1 (one section per segment, its history latents kept beside each
segment): the frames, the plan, the same frames after a SIGKILL and a resume, and what
each refuses before any work."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import clips, framepack
from pipelines.chain import VideoOptions, make_video
from pipelines.framepack import SectionState
from pipelines.models import load, resolve_model
from pipelines.plan import Models, plan
from pipelines.storyboard import parse_storyboard
from pipelines.video_io import probe
from tests.test_hardening import frames_of, harness

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGE = resolve_model("tiny-image", "image")


def story(fps: int, seconds: float = 2, shots: int = 2, side: int = 32) -> str:
    return f"fps: {fps}\nwidth: {side}\nheight: {side}\nseed: 5\nshots:\n" + "".join(
        f"  - prompt: scene {i}\n    seconds: {seconds}\n" for i in range(shots)
    )


# ---------------------------------------------------------------------------------------
# The plan: each family's own way of continuing


def test_framepack_plans_sections_that_overlap_by_the_previous_section():
    """A shot's first section is 4w + 1 frames (its picture and w latents), each later one
    8w - 3 (the previous section's latents decoded again, then its own), overlapping by
    4w - 3; the last is cut to the shot's length. At 30 fps a 3 s shot needs 90 frames."""
    ref = resolve_model("framepack-f1", "video")
    sb = parse_storyboard(story(30, seconds=3, shots=1, side=32))
    segs = plan(sb, Models(video=ref, image=IMAGE))
    assert [s.frames for s in segs] == [37, 69, 69]
    assert [s.overlap for s in segs] == [0, 33, 33] and [s.holdback for s in segs] == [33, 33, 0]
    assert sum(s.frames - s.overlap for s in segs) - segs[-1].drop == 90


@pytest.mark.parametrize("seconds", [0.5, 1.0, 1.2])
def test_a_short_framepack_shot_is_one_section_cut(seconds):
    """Under one section's length a shot is that section, cut: a second section would add
    only frames that are cut away."""
    ref = resolve_model("framepack-f1", "video")
    sb = parse_storyboard(story(30, seconds=seconds, shots=1, side=32))
    (seg,) = plan(sb, Models(video=ref, image=IMAGE))
    assert seg.frames == 37 and seg.frames - seg.drop == round(30 * seconds)


def test_skyreels_windows_overlap_by_its_overlap_history():
    """SkyReels-V2 diffusion forcing continues over 17 frames (its README's
    `overlap_history`), 97-frame windows: 80 new frames a window."""
    ref = resolve_model("skyreels-v2-df-1.3b", "video")
    sb = parse_storyboard(story(24, seconds=10, shots=1, side=32))
    segs = plan(sb, Models(video=ref, image=IMAGE))
    assert {s.overlap for s in segs[1:]} == {17} and segs[0].frames == 97
    twin = resolve_model("tiny-skyreels-df", "video")  # 17-frame windows: its family's 5
    assert {s.overlap for s in plan(sb, Models(video=twin, image=IMAGE))[1:]} == {5}


# ---------------------------------------------------------------------------------------
# The whole chain on the twins


@pytest.mark.parametrize("mode", ["continue", "keyframes"])
@pytest.mark.parametrize("spec,fps", [("tiny-skyreels-df", 24), ("tiny-framepack", 30)])
def test_a_long_video_family_makes_the_storyboard_it_is_given(tmp_path, spec, fps, mode):
    """Frames, rate and size as the storyboard says; every shot in several segments (in
    keyframes mode the shots crossfade: neither family ends a clip on a given frame)."""
    path = tmp_path / "story.yaml"
    path.write_text(f"mode: {mode}\n" + story(fps))
    result = make_video(path, tmp_path / "run", VideoOptions(model=spec))
    info = probe(result.video)
    assert (info.width, info.height, info.frames) == (32, 32, 4 * fps)
    assert info.fps == pytest.approx(fps)
    segments = json.loads((tmp_path / "run" / "manifest.json").read_text())["segments"]
    assert all(sum(s["shot"] == k for s in segments) >= 2 for k in (0, 1))
    states = sorted(p.name for p in (tmp_path / "run" / "segments").glob("*-state.safetensors"))
    if spec == "tiny-framepack":  # each section's history latents, for the next
        assert states == [f"seg-{s['index']:03d}-state.safetensors" for s in segments]
    else:
        assert states == []


def test_skyreels_continues_through_its_video_to_video_pipeline(monkeypatch, tmp_path):
    """A shot's first window starts from its picture (image-to-video), each later one from
    the previous window's last frames (video-to-video over the same components, which
    returns those frames first: they are not the clip's)."""
    from diffusers import SkyReelsV2DiffusionForcingVideoToVideoPipeline as V2V

    seen = []
    real = V2V.__call__

    def call(self, *args, **kwargs):
        seen.append((len(kwargs["video"]), kwargs["overlap_history"], kwargs["num_frames"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(V2V, "__call__", call)
    loaded = load(resolve_model("tiny-skyreels-df", "video"), "video")
    start = Image.new("RGB", (32, 32), (200, 40, 40))
    job = clips.ClipItem("a", start, 17, 32, 32, 2, 3.0, seed=1, fps=24)
    (first,) = clips.generate_clips(loaded, [job])
    tail = tuple(Image.fromarray((f * 255).round().astype(np.uint8)) for f in first[-5:])
    (later,) = clips.generate_clips(loaded, [clips.ClipItem("a", tail[0], 17, 32, 32, 2, 3.0,
                                                            seed=2, fps=24, video=tail)])  # fmt: skip
    assert seen == [(5, 5, 17)] and later.shape == (17, 32, 32, 3)
    v2v = clips._V2V[loaded.pipe]
    assert v2v.transformer is loaded.pipe.transformer and v2v.vae is loaded.pipe.vae


# ---------------------------------------------------------------------------------------
# FramePack's sections are diffusers' own sampling, one call at a time


def test_framepack_sections_make_what_the_pipeline_makes_in_one_call(monkeypatch):
    """Two sections made one call each, the state passed between them, give the frames
    diffusers' pipeline makes in one call (F1, "vanilla" order) from the same noise: the
    first section's frames, then the second's new frames (the overlap is blended at the
    stitch in both)."""
    loaded = load(resolve_model("tiny-framepack", "video"), "video")
    pipe = loaded.pipe
    gen = torch.Generator().manual_seed(0)
    noise = [torch.randn(1, 16, 9, 4, 4, generator=gen) for _ in range(2)]
    image_latent = torch.randn(1, 16, 1, 4, 4, generator=gen)
    feed = []
    monkeypatch.setattr(pipe, "prepare_latents", lambda *a, **k: feed.pop(0))
    monkeypatch.setattr(pipe, "prepare_image_latents", lambda *a, **k: image_latent)
    start = Image.new("RGB", (32, 32), (30, 90, 200))
    feed[:] = list(noise)
    whole = pipe(image=start, prompt="a boat", height=32, width=32, num_frames=66,
                 latent_window_size=9, num_inference_steps=2, guidance_scale=10.0,
                 sampling_type="vanilla", output_type="np").frames[0]  # fmt: skip
    feed[:] = list(noise)
    job = clips.ClipItem("a boat", start, 37, 32, 32, 2, 10.0, seed=0, fps=30)
    with torch.inference_mode():
        one, state = framepack.make_section(pipe, job)
        two, _ = framepack.make_section(pipe, clips.ClipItem(
            "a boat", start, 69, 32, 32, 2, 10.0, seed=0, fps=30, history=state))  # fmt: skip
    assert whole.shape[0] == 37 + 36 and one.shape[0] == 37 and two.shape[0] == 69
    np.testing.assert_allclose(one[:4], whole[:4], atol=1e-5)  # before the blended overlap
    np.testing.assert_allclose(two[33:], whole[37:], atol=1e-5)  # the second's new frames


def test_framepack_runs_with_the_first_block_cache(tmp_path):
    """`--fast cache` on FramePack's own section loop: each transformer call inside a cache
    context (else diffusers refuses it), the cache reset after each section."""
    from pipelines.settings import Runtime

    path = tmp_path / "story.yaml"
    path.write_text(story(30, seconds=2.4, shots=1))
    result = make_video(path, tmp_path / "run", VideoOptions(model="tiny-framepack"),
                        runtime=Runtime(fast=("cache",)))  # fmt: skip
    assert probe(result.video).frames == 72
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["fast"] == ["cache"]


def test_a_section_state_is_kept_exactly(tmp_path):
    """Bit for bit, also for the strided view of the history a section keeps (safetensors
    alone writes a strided array's memory as if it were contiguous)."""
    history = np.random.rand(1, 16, 29, 4, 4).astype(np.float32)[:, :, -19:]
    state = SectionState(np.random.rand(1, 16, 1, 4, 4).astype(np.float32), history)
    path = tmp_path / "s.safetensors"
    state.save(path)
    back = SectionState.load(path)
    assert np.array_equal(back.image, state.image) and np.array_equal(back.history, state.history)
    path.write_bytes(path.read_bytes()[:100])
    assert not framepack.readable_state(path)


# ---------------------------------------------------------------------------------------
# Nothing lost: SIGKILL, then resume, the same frames


@pytest.mark.slow
@pytest.mark.parametrize("spec,fps", [("tiny-skyreels-df", 24), ("tiny-framepack", 30)])
def test_killed_mid_shot_a_long_video_resumes_frame_identical(tmp_path, spec, fps):
    """SIGKILLed entering its third call (or, FramePack, just before a section's state
    lands), a run resumed gives the frames of a run never killed; a section whose state
    was lost, or damaged, is made again (with its own seed: the same frames)."""
    path = tmp_path / "story.yaml"
    path.write_text(story(fps))
    argv = ["video", str(path), "--model", spec, "--batch-size", "1"]
    kills = {"call": {"call": "pipelines.clips:_call", "nth": 3}}
    if spec == "tiny-framepack":
        kills["state"] = {"replace": "segments/seg-001-state.safetensors", "when": "before"}
    tasks = [{"kind": "run", "argv": [*argv, "--out", str(tmp_path / "ref")]}]
    for name, at in kills.items():
        out = str(tmp_path / name)
        tasks += [{"kind": "kill", "argv": [*argv, "--out", out], "at": at},
                  {"kind": "resume", "argv": [*argv, "--out", out], "out": out}]  # fmt: skip
    if spec == "tiny-framepack":  # a finished section whose state is damaged
        out = str(tmp_path / "damaged")
        tasks += [{"kind": "kill", "argv": [*argv, "--out", out], "at": kills["call"]},
                  {"kind": "truncate", "path": f"{out}/segments/seg-000-state.safetensors"},
                  {"kind": "resume", "argv": [*argv, "--out", out], "out": out}]  # fmt: skip
    results = harness(tasks, warm=(spec, "tiny-image"))
    assert results[0]["code"] == 0, results[0]["err"]
    reference = frames_of(tmp_path / "ref" / "video.mp4")
    kinds = [t["kind"] for t in tasks]
    assert [r["signal"] for r, k in zip(results, kinds, strict=True) if k == "kill"] == [9] * (
        kinds.count("kill")
    )
    resumed = [r for r, k in zip(results, kinds, strict=True) if k == "resume"]
    assert all(r["code"] == 0 for r in resumed), [r["err"][-800:] for r in resumed]
    for name in [*kills, *(["damaged"] if spec == "tiny-framepack" else [])]:
        assert np.array_equal(frames_of(tmp_path / name / "video.mp4"), reference), name
    if spec == "tiny-framepack":  # both shots' first sections were done; shot 0's made again
        assert "segment 0: its last frames or state are gone" in resumed[-1]["err"]


# ---------------------------------------------------------------------------------------
# Re-rolling a section, and what is refused before any work


def test_rerolling_a_section_makes_it_and_the_rest_of_its_shot_again(tmp_path):
    """A re-rolled FramePack section gets a new seed; the sections after it read its new
    state, so they are made again too; the other shot is untouched."""
    from pipelines.chain import resume_video

    path = tmp_path / "story.yaml"
    path.write_text(story(30, seconds=3))
    run = tmp_path / "run"
    make_video(path, run, VideoOptions(model="tiny-framepack"))
    segments = json.loads((run / "manifest.json").read_text())["segments"]
    assert [s["shot"] for s in segments] == [0, 0, 0, 1, 1, 1]
    before = {s["index"]: (run / s["file"]).read_bytes() for s in segments}
    states = {i: (run / f"segments/seg-{i:03d}-state.safetensors").read_bytes() for i in before}
    resume_video(run, reroll=1)
    changed = {i for i in before if (run / segments[i]["file"]).read_bytes() != before[i]}
    assert changed == {1, 2}
    assert {i for i in states
            if (run / f"segments/seg-{i:03d}-state.safetensors").read_bytes() != states[i]} == {1, 2}  # fmt: skip


@pytest.mark.parametrize(
    "flags,error",
    [
        (("--model", "tiny-framepack", "--clip-frames", "40"),
         "clip-frames: tiny-framepack makes sections of 8k-3 frames, k ≥ 2 (got 40; use 37)"),
        (("--model", "tiny-framepack", "--clip-frames", "5"),
         "clip-frames: tiny-framepack makes sections of 8k-3 frames, k ≥ 2 (got 5; use 13)"),
        (("--model", "tiny-skyreels-df", "--clip-frames", "18"),
         "clip-frames: tiny-skyreels-df needs 4k+1 frames (got 18; use 21)"),
        (("--model", "tiny-framepack", "--width", "40"),
         "width: tiny-framepack needs a multiple of 16 (got 40; use 32 or 48)"),
    ],
)  # fmt: skip
def test_what_a_long_video_family_cannot_do_is_one_line_before_any_work(cli, tmp_path, flags,
                                                                          error):  # fmt: skip
    path = tmp_path / "story.yaml"
    path.write_text(story(30))
    code, _, err = cli("video", path, "--out", tmp_path / "run", *flags)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and error in lines[0], err
    assert not (tmp_path / "run").exists()


def test_the_models_table_names_every_repo_a_preset_loads_from():
    from pipelines.models import table_rows

    rows = {r["preset"]: r for r in table_rows()}
    source = rows["framepack-f1"]["source"]
    assert source.startswith("hunyuanvideo-community/HunyuanVideo + transformer from "
                             "lllyasviel/FramePack_F1_I2V_HY_20250503")  # fmt: skip
    assert rows["tiny-framepack"]["source"] == "twin:framepack"  # nothing to download
    assert rows["skyreels-v2-df-14b"]["memory"] == "~44 GB"
