"""What only real checkpoints would show, caught on the twins: each case here failed (or
could not be checked) before the twins mirrored their presets' switches."""

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TWO_SHOTS
from PIL import Image

from pipelines import batching, chain, clips, device, images, models
from pipelines.chain import VideoOptions, make_video
from pipelines.clips import ClipItem, generate_clips
from pipelines.keyframes import keyframe_size
from pipelines.models import load, resolve_model
from pipelines.settings import Runtime

pytestmark = pytest.mark.usefixtures("one_thread")


def spy_calls(monkeypatch, cls):
    """Record the keyword arguments of every call of a pipeline class."""
    seen = []
    real = cls.__call__

    @functools.wraps(real)  # the engine reads the signature
    def call(self, *args, **kwargs):
        seen.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", call)
    return seen


def story(tmp_path, text=TWO_SHOTS, mode=None):
    path = tmp_path / "story.yaml"
    path.write_text(text if mode is None else f"mode: {mode}\n{text}")
    return path


# ---------------------------------------------------------------------------------------
# 1 and 5: LTX, every clip one way, decode settings of a timestep-conditioned VAE


def test_every_ltx_clip_runs_through_the_condition_pipeline_with_decode_noise(
    tmp_path, monkeypatch
):
    from diffusers import LTXConditionPipeline, LTXImageToVideoPipeline

    assert load(resolve_model("tiny-ltx", "video"), "video").pipe.vae.config.timestep_conditioning
    condition = spy_calls(monkeypatch, LTXConditionPipeline)
    image_to_video = spy_calls(monkeypatch, LTXImageToVideoPipeline)
    make_video(story(tmp_path), tmp_path / "run", VideoOptions(model="tiny-ltx"))
    assert image_to_video == []  # its decode noise needs a generator on the GPU
    assert len(condition) >= 2
    for kw in condition:  # the same sampling for the first clip of a shot and the others
        assert kw["decode_timestep"] == 0.05 and kw["decode_noise_scale"] == 0.025
        assert "conditions" in kw and "image" not in kw
        gens = kw["generator"] if isinstance(kw["generator"], list) else [kw["generator"]]
        assert all(g.device.type == "cpu" for g in gens)


def test_ltx_first_frame_clips_batch_and_equal_alone():
    loaded = load(resolve_model("tiny-ltx", "video"), "video")
    jobs = [
        ClipItem(f"take {i}", Image.new("RGB", (32, 32), (60 * i, 90, 160)), 9, 32, 32, 2, 3.0, i)
        for i in range(3)
    ]
    sizes = []
    planner = batching.Planner(Runtime())
    real = planner.observe
    planner.observe = lambda key, batch, peak: (sizes.append(batch), real(key, batch, peak))
    together = generate_clips(loaded, jobs, planner=planner, runtime=Runtime(batch_size=3))
    assert max(sizes) > 1
    for i, job in enumerate(jobs):
        (alone,) = generate_clips(loaded, [job])
        np.testing.assert_allclose(together[i], alone, atol=1e-5)


def test_ltx_ends_a_cut_clip_on_the_next_keyframe_at_its_last_kept_frame(tmp_path, monkeypatch):
    """In keyframes mode LTX takes the next keyframe at any frame index: a clip made longer
    than the shot needs ends on the keyframe at its last kept frame, and the rest is cut."""
    from diffusers import LTXConditionPipeline

    seen = spy_calls(monkeypatch, LTXConditionPipeline)
    make_video(story(tmp_path, mode="keyframes"), tmp_path / "run", VideoOptions(model="tiny-ltx"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    ends = [s for s in manifest["segments"] if s["last_keyframe"] is not None]
    assert ends and any(s["drop"] for s in ends)
    made = {len(kw["conditions"]): kw for kw in seen}
    assert 2 in made  # a call with a first frame and an end keyframe
    for seg in ends:  # the end condition sits on the clip's last kept frame
        kw = next(kw for kw in seen if len(kw["conditions"]) == 2
                  and kw["num_frames"] == seg["generated_frames"])  # fmt: skip
        assert kw["conditions"][1].frame_index == seg["generated_frames"] - seg["drop"] - 1


# ---------------------------------------------------------------------------------------
# 2 and 8: dtypes are what was asked, float32 only where a model needs it


IMAGE_TWINS = ["tiny-image", "tiny-flux"]
VIDEO_TWINS = ["tiny-ltx", "tiny-wan", "tiny-wan-flf2v", "tiny-wan22", "tiny-svd", "tiny-cogvideox",
               "tiny-wan22-ti2v", "tiny-hunyuanvideo15", "tiny-ltx2"]  # fmt: skip
WIDE_TWINS = ("tiny-flux", "tiny-ltx2")  # 64 px at least (LTX-2: two latent rows)


def component_dtypes(pipe) -> dict[str, torch.dtype]:
    return {
        name: next(c.parameters()).dtype
        for name, c in pipe.components.items()
        if isinstance(c, torch.nn.Module) and any(True for _ in c.parameters())
    }


def expected_dtype(ref, name):
    return torch.float32 if name in ref.preset.fp32 else torch.bfloat16


@pytest.mark.parametrize("spec", IMAGE_TWINS + VIDEO_TWINS)
def test_every_task_of_every_twin_keeps_the_asked_dtype(spec):
    runtime = Runtime(dtype="bfloat16")
    kind = "image" if spec in IMAGE_TWINS else "video"
    ref = resolve_model(spec, kind)
    tasks = ["text2img", "img2img"] if kind == "image" else ["video"]
    loaded = [load(ref, task, runtime) for task in tasks]
    for each in loaded:
        dtypes = component_dtypes(each.pipe)
        assert dtypes and all(d == expected_dtype(ref, n) for n, d in dtypes.items()), dtypes
        assert str(each.placement.dtype) == "torch.bfloat16"
    if kind == "image":  # the derived pipeline shares the very modules, uncast
        base, derived = loaded
        assert derived.pipe.unet is base.pipe.unet if hasattr(base.pipe, "unet") else True


def test_wan_keeps_its_vae_and_image_encoder_in_float32():
    ref = resolve_model("tiny-wan", "video")
    assert ref.preset.fp32 == ("vae", "image_encoder")
    pipe = load(ref, "video", Runtime(dtype="bfloat16")).pipe
    assert pipe.vae.dtype == torch.float32 and pipe.image_encoder.dtype == torch.float32
    assert pipe.transformer.dtype == torch.bfloat16


def test_an_explicit_dtype_is_honoured_for_twins_and_float32_stays_the_cpu_default():
    ref = resolve_model("tiny-image", "image")
    assert load(ref, "text2img", Runtime()).pipe.unet.dtype == torch.float32
    assert load(ref, "text2img", Runtime(dtype="bfloat16")).pipe.unet.dtype == torch.bfloat16


def test_image_to_image_keeps_the_progress_bar_settings():
    ref = resolve_model("tiny-image", "image")
    base = load(ref, "text2img")
    derived = load(ref, "img2img")
    assert derived.pipe._progress_bar_config == base.pipe._progress_bar_config


BF16_RUNS = [
    *[(spec, mode) for spec in VIDEO_TWINS for mode in ("continue", "keyframes")],
    ("tiny-image", "feedback"),
    ("tiny-flux", "feedback"),
]


@pytest.mark.parametrize("spec,mode", BF16_RUNS)
def test_every_family_runs_the_whole_chain_in_bfloat16(tmp_path, spec, mode):
    runtime = Runtime(dtype="bfloat16")
    text = TWO_SHOTS
    if spec in WIDE_TWINS:
        text = text.replace("width: 32\nheight: 32", "width: 64\nheight: 64")
    result = make_video(story(tmp_path, text, mode), tmp_path / "run", VideoOptions(model=spec),
                        runtime=runtime)  # fmt: skip
    assert result.frames == 16
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert {p["dtype"] for p in manifest["placement"].values()} == {"bfloat16"}
    kind = "image" if mode == "feedback" else "video"
    ref = resolve_model(spec, kind)
    used = [(ref, "text2img" if kind == "image" else "video")]
    if kind == "video":  # and the image model that made the keyframes
        used.append((resolve_model("tiny-image", "image"), "text2img"))
    for each, task in used:
        for name, dtype in component_dtypes(load(each, task, runtime).pipe).items():
            assert dtype == expected_dtype(each, name), (each.label, name, dtype)


# ---------------------------------------------------------------------------------------
# 3: CogVideoX-5B takes 49 frames only


def test_cogvideox_5b_plans_49_frame_clips_only_and_drops_what_it_does_not_need(tmp_path):
    ref = resolve_model("tiny-cogvideox", "video")
    assert ref.preset.fixed_frames and ref.preset.frames == 49
    assert ref.legal_frames(9) == 49 and ref.frame_rule == "49 only"
    text = "fps: 8\nwidth: 32\nheight: 32\nshots:\n  - prompt: a\n    seconds: 2\n" \
           "  - prompt: b\n    seconds: 9\n"  # fmt: skip
    sb, models_ = chain.read_storyboard(text, VideoOptions(model="tiny-cogvideox"), text=True)
    segs = chain.plan(sb, models_)
    assert {s.frames for s in segs} == {49}
    assert segs[0].drop == 49 - 16  # 2 s at its 8 fps: the rest is cut, not sped up
    with pytest.raises(ValueError, match=r"^clip-frames: tiny-cogvideox needs 49 only frames"):
        chain.read_storyboard(text, VideoOptions(model="tiny-cogvideox", clip_frames=17),
                              text=True)  # fmt: skip


def test_cogvideox_5b_clips_are_never_shortened_by_the_out_of_memory_ladder(tmp_path, monkeypatch):
    def no_memory(loaded, batch, adapter, cancel):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(clips, "_call", no_memory)
    path = story(tmp_path, TWO_SHOTS.replace("seconds: 1\n  - prompt: a lighthouse at dusk\n"
                                             "    seconds: 1\n", "seconds: 1\n"))  # fmt: skip
    try:
        with pytest.raises(batching.OutOfMemory):
            make_video(path, tmp_path / "run", VideoOptions(model="tiny-cogvideox"))
    finally:
        models.clear_cache()  # the ladder switched VAE tiling on for the cached pipeline
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "ladder" not in manifest
    assert {s["generated_frames"] for s in manifest["segments"]} == {49}


def test_cogvideox_5b_video_has_the_storyboards_frames(tmp_path):
    from pipelines.video_io import probe

    result = make_video(story(tmp_path), tmp_path / "run", VideoOptions(model="tiny-cogvideox"))
    info = probe(result.video)
    assert (info.frames, info.fps, info.width, info.height) == (16, 8.0, 32, 32)


# ---------------------------------------------------------------------------------------
# 4: motion at the rate each model made it


@pytest.mark.parametrize(
    "spec,fps,interpolate,rate",
    [
        ("wan-i2v-480p", 24, 2, 16),
        ("wan-flf2v-720p", 30, 2, 16),
        ("cogvideox-5b-i2v", 24, 3, 8),
        ("cogvideox-5b-i2v", 8, 1, 8),
        ("ltx-video", 24, 2, 24),  # told the rate: within its trained 24-30
        ("ltx-video", 60, 2, 30),
        ("ltx-video", 8, 2, 24),
        ("svd-xt", 24, 2, 12),
        ("svd-xt", 8, 2, 7),  # conditioned at 6 (diffusers passes fps - 1), its default
    ],
)
def test_frames_are_generated_at_the_models_motion_rate(spec, fps, interpolate, rate):
    from pipelines.plan import gen_rate

    text = f"fps: {fps}\ninterpolate: {interpolate}\nshots:\n  - prompt: a\n    seconds: 5\n"
    sb, models_ = chain.read_storyboard(text, VideoOptions(model=spec), text=True)
    assert gen_rate(sb, models_) == rate


def test_a_wan_shot_plays_at_its_own_speed(tmp_path):
    """A 5 s Wan shot at 24 fps: about 80 frames at 16 fps (5 s of motion), not 61 (3.8 s)."""
    from pipelines.plan import SPEED_TOLERANCE

    text = "fps: 24\nshots:\n  - prompt: a\n    seconds: 5\n"
    sb, models_ = chain.read_storyboard(text, VideoOptions(model="wan-i2v-480p"), text=True)
    (seg,) = chain.plan(sb, models_)
    assert seg.frames in (77, 81)  # Wan's legal counts around 80
    assert abs((seg.unique - 1) / 16 / (119 / 24) - 1) <= SPEED_TOLERANCE


def test_a_fixed_motion_rate_beyond_interpolate_is_one_line_naming_it():
    text = "fps: 24\nshots:\n  - prompt: a\n    seconds: 2\n"
    with pytest.raises(ValueError, match=r"^interpolate: cogvideox-5b-i2v makes 8 fps .* set "
                                         r"interpolate: 3 \(or fps: 16 or less\)$"):  # fmt: skip
        chain.read_storyboard(text, VideoOptions(model="cogvideox-5b-i2v"), text=True)


def test_fps_conditioned_models_are_told_the_rate_they_generate_at(tmp_path, monkeypatch):
    from diffusers import LTXConditionPipeline

    seen = spy_calls(monkeypatch, LTXConditionPipeline)
    make_video(story(tmp_path), tmp_path / "run", VideoOptions(model="tiny-ltx"))
    assert {kw["frame_rate"] for kw in seen} == {24}  # an 8 fps video of 24 fps motion


# ---------------------------------------------------------------------------------------
# 6: keyframes at the image model's own scale


def test_keyframes_are_made_at_the_image_models_pixel_count_then_scaled(tmp_path, monkeypatch):
    sd = resolve_model("sd-turbo", "image")
    assert keyframe_size(sd, 1280, 720) == (680, 384)  # about 512², 16:9, multiples of 8
    assert keyframe_size(resolve_model("flux-schnell", "image"), 1280, 720) == (1360, 768)
    sizes = []
    real = images.generate

    def spy(loaded, jobs, **kw):
        sizes.extend((j.width, j.height) for j in jobs)
        return real(loaded, jobs, **kw)

    monkeypatch.setattr(images, "generate", spy)
    text = TWO_SHOTS.replace("width: 32\nheight: 32", "width: 64\nheight: 32")
    result = make_video(story(tmp_path, text), tmp_path / "run", VideoOptions(model="tiny-ltx"))
    assert set(sizes) == {(88, 48)}  # the twin's 64² area at 2:1
    assert Image.open(result.run_dir / "keyframes" / "shot-000.png").size == (64, 32)


# ---------------------------------------------------------------------------------------
# 7: offload from the largest component


GB = 2**30


@pytest.mark.parametrize(
    "preset,free_gb,mode",
    [
        ("flux-schnell", 80, "none"),
        ("flux-schnell", 40, "model"),  # its 23.8 GB transformer fits with head-room
        ("flux-schnell", 24, "group"),  # it does not: model offload would fail
        ("wan-i2v-480p", 48, "group"),  # 32.8 GB transformer
        ("wan-i2v-480p", 56, "model"),
        ("ltx-video", 16, "model"),
    ],
)
def test_offload_is_chosen_from_the_largest_component(preset, free_gb, mode):
    p = models.PRESETS[preset]
    got = device.choose_offload(int(p.memory_gb * GB), free_gb * GB, "auto",
                                torch.device("cuda"), int(p.largest_gb * GB))  # fmt: skip
    assert got == mode


class FakePipe:
    def __init__(self):
        self.calls = []
        self.vae = None

    @property
    def components(self):
        return {}

    def enable_model_cpu_offload(self, device=None):
        self.calls.append("model")

    def enable_group_offload(self, **kwargs):
        self.calls.append("group")

    def remove_all_hooks(self):
        self.calls.append("remove")


@pytest.mark.parametrize("free_gb,rungs", [(80, ["VAE tiling", "model offload", "group offload"]),
                                           (30, ["VAE tiling", "group offload"])])  # fmt: skip
def test_the_gpu_ladder_keeps_group_offload_and_records_each_rung(monkeypatch, free_gb, rungs):
    monkeypatch.setattr(batching, "free_memory", lambda dev, budget=None: free_gb * GB)
    ref = resolve_model("wan-i2v-480p", "video")
    placement = device.Placement(torch.device("cuda"), torch.bfloat16, "none", False)
    loaded = models.LoadedModel(ref, FakePipe(), placement, "video")
    ladder = batching.ladder_for(loaded)
    assert [r.name for r in ladder] == rungs
    for rung in ladder[1:]:
        rung.apply()
    assert loaded.pipe.calls == (["model", "remove", "group"] if len(rungs) == 3 else ["group"])
    assert loaded.placement.offload == "group"


# ---------------------------------------------------------------------------------------
# 8 and 9: Wan and FLUX settings from the model cards


def test_wan_gets_its_model_cards_negative_prompt_where_the_storyboard_gives_none(
    tmp_path, monkeypatch
):
    from diffusers import WanImageToVideoPipeline

    seen = spy_calls(monkeypatch, WanImageToVideoPipeline)
    text = TWO_SHOTS.replace("  - prompt: a lighthouse at dusk\n",
                             "  - prompt: a lighthouse at dusk\n    negative_prompt: fog\n")  # fmt: skip
    make_video(story(tmp_path, text), tmp_path / "run", VideoOptions(model="tiny-wan"))
    negatives = {n for kw in seen for n in kw["negative_prompt"]}
    assert negatives == {models.WAN_NEGATIVE_PROMPT, "fog"}


def test_wan_22_gets_two_guidance_scales_and_a_boundary(tmp_path, monkeypatch):
    from diffusers import WanImageToVideoPipeline

    ref = resolve_model("tiny-wan22", "video")
    assert dict(ref.preset.call) == {"guidance_scale_2": 3.5} and ref.takes("last_frame")
    folder = tmp_path / "wan22"
    load(ref, "video").pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("boundary_ratio", None)
    (folder / "model_index.json").write_text(json.dumps(index))
    loaded = load(resolve_model(str(folder), "video"), "video")
    assert loaded.pipe.config.boundary_ratio == 0.9  # else the high-noise expert alone
    seen = spy_calls(monkeypatch, WanImageToVideoPipeline)
    make_video(story(tmp_path), tmp_path / "run", VideoOptions(model="tiny-wan22"))
    assert {kw["guidance_scale_2"] for kw in seen} == {3.5}


def test_a_wan_21_image_to_video_folder_is_planned_without_last_frames(tmp_path):
    folder = tmp_path / "wan21"
    load(resolve_model("tiny-wan", "video"), "video").pipe.save_pretrained(folder)
    ref = resolve_model(str(folder), "video")
    assert not ref.takes("last_frame")  # read from its configs, before anything loads
    sb, models_ = chain.read_storyboard(story(tmp_path, mode="keyframes"),
                                        VideoOptions(model=str(folder)))  # fmt: skip
    segs = chain.plan(sb, models_)
    assert all(s.last_keyframe is None for s in segs) and segs[0].fade_out > 0


def test_flux_schnell_is_called_with_its_text_length_and_sizes_on_its_multiple(
    tmp_path, monkeypatch
):
    from diffusers import FluxPipeline

    from pipelines.images import make_images
    from pipelines.requests import ImageRequest

    ref = resolve_model("tiny-flux", "image")
    assert ref.size_multiple == 16 and dict(ref.preset.call) == {"max_sequence_length": 256}
    with pytest.raises(ValueError, match=r"^width: tiny-flux needs a multiple of 16 \(got 72"):
        make_images(ImageRequest("a", width=72, height=64, model="tiny-flux"), tmp_path)
    seen = spy_calls(monkeypatch, FluxPipeline)
    (result,) = make_images(ImageRequest("a", width=80, height=48, model="tiny-flux"), tmp_path)
    assert seen[0]["max_sequence_length"] == 256
    assert Image.open(result.path).size == (80, 48)  # asked and written agree


# ---------------------------------------------------------------------------------------
# 10: half-precision weight variants


def test_fp16_variants_are_loaded_where_the_repo_ships_them(monkeypatch):
    from diffusers import StableDiffusionPipeline

    asked = []

    class Fake:
        @classmethod
        def from_pretrained(cls, source, **kwargs):
            asked.append(kwargs.get("variant"))
            if kwargs.get("variant"):
                raise OSError("no fp16 files in this cache")
            return "pipe"

    monkeypatch.setattr(models, "_import_class", lambda name: Fake)
    sd = resolve_model("sd-turbo", "image")
    assert sd.preset.variant == "fp16"
    assert models._from_pretrained(sd, {"default": torch.float16}, half=True) == "pipe"
    assert asked == ["fp16", None]  # tried, then the full weights this cache holds
    asked.clear()
    models._from_pretrained(sd, {"default": torch.float32}, half=False)
    assert asked == [None]
    assert {p.name for p in models.PRESETS.values() if p.variant} == {"sd-turbo", "sdxl-turbo",
                                                                     "svd-xt"}  # fmt: skip
    assert StableDiffusionPipeline  # imported: the class exists in this diffusers


# ---------------------------------------------------------------------------------------
# 11: one line, before any work, for what cannot work


def test_ltx_releases_before_095_are_refused_with_one_line(tmp_path):
    folder = tmp_path / "ltx-091"
    load(resolve_model("tiny-ltx", "video"), "video").pipe.save_pretrained(folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "use_dynamic_shifting": True}))
    with pytest.raises(ValueError, match=r"^model: ltx-091 is an LTX-Video release before 0\.9\.5"):
        resolve_model(str(folder), "video")


@pytest.mark.parametrize("backend,ok", [("flash", False), ("sage", False),
                                        ("flash_varlen", False), ("_native_cudnn", True)])  # fmt: skip
def test_attention_backends_that_cannot_take_ltxs_mask_are_refused(tmp_path, cli, backend, ok):
    path = story(tmp_path)
    code, out, err = cli("video", path, "--model", "tiny-ltx", "--dry-run", "--fast",
                         f"attention:{backend}")  # fmt: skip
    if ok:
        assert code == 0, err
    else:
        assert code == 2 and err.startswith(f"error: fast: attention:{backend} cannot take")
        assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------
# 12: cancel reaches every family


@pytest.mark.parametrize("spec", ["tiny-svd", "tiny-ltx", "tiny-wan", "tiny-cogvideox",
                                  "tiny-wan22-ti2v", "tiny-hunyuanvideo15", "tiny-ltx2"])  # fmt: skip
def test_cancel_stops_a_call_at_the_end_of_a_step(spec):
    import threading

    loaded = load(resolve_model(spec, "video"), "video")
    ref = loaded.ref
    denoiser = getattr(loaded.pipe, "transformer", None) or loaded.pipe.unet
    cancel = threading.Event()
    calls = []

    def step(*args):
        calls.append(1)
        cancel.set()

    hook = denoiser.register_forward_hook(step)
    side = ref.preset.width  # HunyuanVideo 1.5 has no step callbacks: a hook stops it
    job = ClipItem("a", Image.new("RGB", (side, side)), ref.preset.frames, side, side, 6, 3.0, 0)
    try:
        with pytest.raises(clips.Cancelled):
            generate_clips(loaded, [job], cancel=cancel)
    finally:
        hook.remove()
    # One step's denoiser passes (LTX-2 runs three: text, spatio-temporal and modality
    # guidance), not six steps' worth.
    assert 0 < len(calls) <= 3


# ---------------------------------------------------------------------------------------
# Plans as data


def test_dry_run_json_is_the_plan_as_one_object(tmp_path, cli):
    code, out, err = cli("video", story(tmp_path), "--model", "tiny-ltx", "--dry-run", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) >= {"segments", "totals"}
    seg = data["segments"][0]
    assert set(seg) >= {"shot", "frames", "gen_fps", "shown", "continues"}
    totals = data["totals"]
    assert totals["generated"] == sum(s["frames"] for s in data["segments"])
    assert totals["output"] == 16 == sum(s["shown"] for s in data["segments"])
    assert totals["thrown_away"] == totals["overlaps"] + totals["dropped"] + totals["skipped"]
    code, _, err = cli("video", story(tmp_path), "--model", "tiny-ltx", "--json")
    assert code == 2 and err.startswith("error: json:")
    # With a crossfade, the frames it blends count in both shots' `shown`.
    fade = TWO_SHOTS.replace(
        "seconds: 1\n  - prompt: a lighthouse",
        "seconds: 1\n    transition: crossfade\n  - prompt: a lighthouse",
    )
    code, out, err = cli("video", story(tmp_path, fade), "--model", "tiny-ltx", "--dry-run",
                         "--json")  # fmt: skip
    data = json.loads(out)
    assert sum(s["shown"] for s in data["segments"]) == 16 + 4  # 0.5 s crossfade at 8 fps


def test_the_default_preset_throws_away_under_5_percent_over_shots_of_15_to_7_s():
    generated = thrown = 0
    for tenths in range(15, 71, 5):
        text = f"fps: 24\nshots:\n  - prompt: a\n    seconds: {tenths / 10}\n"
        data = json.loads(chain.plan_text(text, VideoOptions(), text=True, as_json=True))
        generated += data["totals"]["generated"]
        thrown += data["totals"]["thrown_away"]
    assert thrown / generated < 0.05


def grid_cases():
    for name, p in models.PRESETS.items():
        if models.FAMILIES[p.family].kind != "video":
            continue
        modes = ["continue", "keyframes"]
        for fps in (8, 24, 30):
            for mode in modes:
                yield name, fps, mode


@pytest.mark.parametrize("preset,fps,mode", list(grid_cases()))
def test_plan_grid_legal_counts_trained_rates_and_true_speed(preset, fps, mode):
    from pipelines.plan import plan_data

    p = models.PRESETS[preset]
    lo, hi = p.motion
    interpolate = max(2, -(-fps // hi))
    seconds = [1.5, 2.2, 3.0, 3.7, 4.5, 5.2, 6.0, 7.0]
    shots = "".join(f"  - prompt: shot {i}\n    seconds: {s}\n"
                    + ("    transition: crossfade\n" if i % 3 == 1 and i < 7 else "")
                    for i, s in enumerate(seconds))  # fmt: skip
    size = f"width: {p.width}\nheight: {p.height}\n" if p.native_only else ""
    text = f"mode: {mode}\nfps: {fps}\ninterpolate: {interpolate}\n{size}shots:\n{shots}"
    sb, models_ = chain.read_storyboard(text, VideoOptions(model=preset), text=True)
    data = plan_data(sb, models_, chain.plan(sb, models_))
    ref = models_.video
    for seg in data["segments"]:
        assert ref.legal_frames(seg["frames"]) == seg["frames"], seg
        if p.fixed_frames:
            assert seg["frames"] == p.frames
        assert lo <= seg["gen_fps"] <= hi
        if lo == hi:
            assert seg["gen_fps"] == lo
        # Within 10%, give or take the one output frame a share rounds to.
        motion, shown = seg["kept"] / seg["gen_fps"], seg["shown"] / fps
        assert abs(motion - shown) <= 0.10 * shown + 1 / fps, (seg, motion, shown)
    assert data["totals"]["output"] == sb.total_frames


def test_the_models_table_gives_each_models_motion_rate(cli):
    code, out, _ = cli("models")
    assert code == 0
    rows = {r["preset"]: r for r in models.table_rows()}
    assert rows["wan-i2v-480p"]["motion"] == "16 fps"
    assert rows["ltx-video"]["motion"] == "24–30 fps"
    assert rows["cogvideox-5b-i2v"]["motion"] == "8 fps"
    assert rows["sd-turbo"]["motion"] == "-"
    assert "motion" in out.splitlines()[0]


def test_twin_rules_derived_from_their_own_configs_match_the_presets_they_mirror():
    """Each twin's configs, read the way a hub model's are, give its preset's rules."""
    from pipelines.traits import config_traits
    from pipelines.twins import TWINS

    for info in TWINS.values():
        if not info.mirrors:
            continue
        preset = models.PRESETS[info.mirrors]
        derived = config_traits(info.family, models.twin_configs(info.name), info.name)
        for key, value in derived.items():
            if key in ("width", "height", "frames", "aspect_target"):  # the twin's small size
                continue
            assert getattr(preset, key) == value, (info.name, key)


def test_folder_models_get_their_rules_from_their_configs(tmp_path):
    folder = tmp_path / "cog"
    load(resolve_model("tiny-cogvideox", "video"), "video").pipe.save_pretrained(folder)
    ref = resolve_model(str(folder), "video")
    p = ref.preset
    assert (p.fixed_frames, p.frames, p.native_only, p.width, p.height) == (True, 49, True, 32, 32)
    assert p.motion == (8, 8)
    assert Path(folder / "model_index.json").is_file()
    assert dataclasses.is_dataclass(p)


def test_rules_read_from_configs_of_models_without_a_preset():
    """Layouts no preset has yet, as a hub id or folder would bring them."""
    from pipelines.traits import config_traits

    ti2v = {"model_index": {"_class_name": "WanPipeline", "expand_timesteps": True,
                            "transformer": ["diffusers", "WanTransformer3DModel"]},
            "vae": {"z_dim": 48}}  # fmt: skip
    rules = config_traits("wan", ti2v, "wan-ti2v")
    assert (rules["size_multiple"], rules["motion"], rules["conditioning"]) == (
        32,
        (24, 24),
        ("text", "first_frame"),
    )  # 16x VAE with 2x2 patches; 24 fps; no last frame
    cog15 = {"model_index": {}, "transformer": {"patch_size_t": 2}}
    assert config_traits("cogvideox", cog15, "cog15") == {"motion": (16, 16)}
    flux_dev = {"model_index": {"_class_name": "FluxPipeline"},
                "transformer": {"guidance_embeds": True}}  # fmt: skip
    assert config_traits("image", flux_dev, "dev") == {"size_multiple": 16}  # 512 tokens


def test_a_run_planned_for_slow_motion_is_not_resumed_half_new(tmp_path, cli, capsys):
    """A version-1 manifest (clips planned at fps / interpolate) would mix two motion speeds
    in one shot if resumed: one line says to make it again."""
    run = tmp_path / "old"
    make_video(story(tmp_path), run, VideoOptions(model="tiny-ltx"))
    capsys.readouterr()  # the first run's progress bars
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "version": 1}))
    code, _, err = cli("video", "--resume", run)
    assert code == 2 and err.splitlines()[-1].startswith("error: resume: this run was planned by")
