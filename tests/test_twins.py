"""The tiny twins are the real diffusers pipelines, and they behave the way the engine assumes."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.twins import TWIN_FAMILIES, TWINS, TwinInfo, build_twin

VIDEO_FAMILIES = tuple(family for family in TWIN_FAMILIES if TWINS[family].num_frames)


pytestmark = pytest.mark.usefixtures("one_thread")


def _image(width: int, height: int, rgb: tuple[int, int, int] = (200, 40, 90)) -> Image.Image:
    return Image.new("RGB", (width, height), rgb)


def _run(pipe, family: str, *, seed: int = 0, **overrides) -> np.ndarray:
    """Call a twin the way the engine does, at its default size, and return the array.

    Images come back as (batch, H, W, 3) and videos as (batch, frames, H, W, 3).
    """
    info = TWINS[family]
    width = overrides.pop("width", info.width)
    height = overrides.pop("height", info.height)
    kwargs: dict = {
        "width": width,
        "height": height,
        "num_inference_steps": info.steps,
        "generator": torch.Generator("cpu").manual_seed(seed),
        "output_type": "np",
    }
    if family != "svd":
        kwargs["prompt"] = "a red kite over the dunes, 35mm"
    if info.num_frames is not None:
        kwargs["num_frames"] = info.num_frames
        kwargs["image"] = _image(width, height)
    if family == "wan-flf2v":  # it reads the tokens of two pictures, first and last
        kwargs["last_image"] = _image(width, height, (0, 0, 255))
    if family == "hunyuanvideo15":  # its size is the first frame's aspect bucket
        del kwargs["width"], kwargs["height"]
    if family == "ltx2":  # its first frame is a condition; told the rate of its motion
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        kwargs["conditions"] = [LTX2VideoCondition(frames=kwargs.pop("image"), index=0)]
        kwargs["frame_rate"] = 24
    if family == "framepack":  # F1 samples forward; one section is asked for with <= 33 frames
        kwargs |= {"latent_window_size": 9, "sampling_type": "vanilla", "num_frames": 33}
    kwargs.update(overrides)
    out = pipe(**kwargs)
    return np.asarray(out.images if info.num_frames is None else out.frames)


def _realign(pipe):
    """Copy every parameter into fresh memory (see the save/load note in pipelines.twins)."""
    with torch.no_grad():
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                for param in component.parameters():
                    param.data = param.data.clone()
    return pipe


def _reload(pipe, path):
    pipe.save_pretrained(path, safe_serialization=True)
    loaded = type(pipe).from_pretrained(path)
    loaded.set_progress_bar_config(disable=True)
    return loaded


# ---------------------------------------------------------------------------- registry


def test_registry_covers_every_family():
    assert TWIN_FAMILIES == ("sd", "flux", "svd", "ltx", "wan", "wan-flf2v", "wan22", "cogvideox",
                             "wan22-ti2v", "hunyuanvideo15", "ltx2", "skyreels-df",
                             "framepack")  # fmt: skip
    assert tuple(TWINS) == TWIN_FAMILIES
    for name, info in TWINS.items():
        assert isinstance(info, TwinInfo)
        assert info.name == name
        assert info.steps == 2
        assert info.width % info.size_multiple == 0
        assert info.height % info.size_multiple == 0
    assert TWINS["sd"].num_frames is None and TWINS["flux"].num_frames is None
    assert {f: TWINS[f].size_multiple for f in TWIN_FAMILIES} == {
        "sd": 8,
        "flux": 16,
        "svd": 8,
        "ltx": 32,
        "wan": 16,
        "wan-flf2v": 16,
        "wan22": 16,
        "cogvideox": 16,
        "wan22-ti2v": 32,
        "hunyuanvideo15": 16,
        "ltx2": 32,
        "skyreels-df": 16,
        "framepack": 16,
    }


def test_twin_info_is_frozen():
    with pytest.raises(AttributeError):
        TWINS["sd"].width = 128  # type: ignore[misc]


def test_unknown_family_names_the_choices():
    with pytest.raises(ValueError) as excinfo:
        build_twin("x")
    assert str(excinfo.value) == (
        "unknown twin family 'x'; choose one of: sd, flux, svd, ltx, wan, wan-flf2v, wan22, "
        "cogvideox, wan22-ti2v, hunyuanvideo15, ltx2, skyreels-df, framepack"
    )


# ---------------------------------------------------------------------------- building


@pytest.mark.parametrize("family", TWIN_FAMILIES)
def test_twin_is_the_real_pipeline_on_cpu_float32_eval(family):
    pipe = build_twin(family)
    assert type(pipe).__name__ == TWINS[family].pipeline_class
    modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
    assert modules
    for module in modules:
        assert not module.training
        assert all(not m.training for m in module.modules())
        for param in module.parameters():
            assert param.device.type == "cpu"
            assert param.dtype == torch.float32


def test_each_build_is_fresh():
    first, second = build_twin("ltx"), build_twin("ltx")
    assert first is not second
    assert first.transformer is not second.transformer
    assert first.tokenizer is not second.tokenizer


def test_build_leaves_global_rng_alone():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    build_twin("sd")
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_sets_the_weights():
    def weights(seed):
        return next(build_twin("wan", seed=seed).transformer.parameters())

    assert torch.equal(weights(0), weights(0))
    assert not torch.equal(weights(0), weights(1))


# ---------------------------------------------------------------------------- calling


@pytest.mark.parametrize("family", TWIN_FAMILIES)
def test_default_call_shape_and_determinism(family):
    info = TWINS[family]
    first = _run(build_twin(family), family)
    second = _run(build_twin(family), family)

    if info.num_frames is None:
        assert first.shape == (1, info.height, info.width, 3)
    else:
        # The default count comes back unchanged; the engine relies on it.
        assert first.shape == (1, info.num_frames, info.height, info.width, 3)
    assert first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert np.array_equal(first, second)


@pytest.mark.parametrize("family", TWIN_FAMILIES)
def test_generator_seed_changes_the_output(family):
    pipe = build_twin(family)
    assert not np.array_equal(_run(pipe, family, seed=0), _run(pipe, family, seed=1))


@pytest.mark.parametrize(
    ("family", "requested", "returned"),
    [
        ("svd", 2, 2),
        ("svd", 6, 6),
        ("ltx", 8, 1),
        ("ltx", 10, 9),
        ("ltx", 17, 17),
        ("wan", 10, 9),
        ("wan", 12, 13),  # 4k rounds up, not down
        ("wan", 13, 13),
        ("cogvideox", 8, 8),
        ("cogvideox", 12, 9),
        ("cogvideox", 13, 16),
        ("cogvideox", 17, 17),
        ("wan22-ti2v", 10, 9),
        ("hunyuanvideo15", 10, 9),  # floored to 4k+1, silently
        ("hunyuanvideo15", 13, 13),
        ("ltx2", 10, 9),  # floored to 8k+1, silently
        ("ltx2", 17, 17),
        ("skyreels-df", 10, 9),  # as Wan: 4k rounds up, 4k+2 and 4k+3 down
        ("skyreels-df", 12, 13),
        ("framepack", 1, 37),  # whole sections of 36 frames after the first
        ("framepack", 33, 37),
        ("framepack", 37, 73),  # counted in 33-frame windows: 37 asks for two sections
    ],
)
def test_returned_frame_count(family, requested, returned):
    frames = _run(build_twin(family), family, num_frames=requested)
    assert frames.shape[1] == returned


@pytest.mark.parametrize("family", [f for f in VIDEO_FAMILIES if f != "cogvideox"])
def test_non_square_size(family):
    step = TWINS[family].size_multiple
    # LTX-2's reflect-padded decoder needs two latent rows at least: 64 px of its 32x VAE.
    height = 2 * step if family == "ltx2" else step
    frames = _run(build_twin(family), family, width=2 * height, height=height, num_frames=9)
    assert frames.shape[2:] == (height, 2 * height, 3)


def test_a_learned_position_table_holds_cogvideox_to_its_size():
    with pytest.raises(ValueError, match="not possible to generate videos at a different"):
        _run(build_twin("cogvideox"), "cogvideox", width=32, height=16, num_frames=9)


@pytest.mark.parametrize("family", ["ltx", "wan"])
def test_sizes_off_the_multiple_are_rejected(family):
    step = TWINS[family].size_multiple
    with pytest.raises(ValueError, match="divisible"):
        _run(build_twin(family), family, width=step + 8, height=step + 8)


# ---------------------------------------------------------------------------- per family


def test_sd_derives_img2img():
    from diffusers import AutoPipelineForImage2Image

    img2img = AutoPipelineForImage2Image.from_pipe(build_twin("sd"))
    img2img.set_progress_bar_config(disable=True)
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    out = img2img(
        prompt="a lighthouse",
        image=_image(64, 64),
        strength=0.6,
        num_inference_steps=4,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (1, 64, 64, 3)


def test_ltx_derives_image_to_video():
    from diffusers import LTXImageToVideoPipeline

    ltx = build_twin("ltx")
    i2v = LTXImageToVideoPipeline.from_pipe(ltx)
    i2v.set_progress_bar_config(disable=True)
    assert i2v.transformer is ltx.transformer
    frames = _run(i2v, "ltx")
    assert frames.shape == (1, 9, 32, 32, 3)


def test_ltx_conditions_on_images_and_videos_at_frame_indices():
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    ltx = build_twin("ltx")
    clip = [_image(32, 32, (10, 10 * i, 200)) for i in range(9)]
    conditions = [
        LTXVideoCondition(video=clip, frame_index=0),
        LTXVideoCondition(image=_image(32, 32), frame_index=16),
    ]
    frames = _run(ltx, "ltx", image=None, conditions=conditions, num_frames=17)
    assert frames.shape == (1, 17, 32, 32, 3)

    shorthand = _run(ltx, "ltx", image=[_image(32, 32)] * 2, frame_index=[0, 8], num_frames=17)
    assert shorthand.shape == (1, 17, 32, 32, 3)


def test_wan_first_and_last_frame():
    wan = build_twin("wan22")
    first_only = _run(wan, "wan22")
    first_and_last = _run(wan, "wan22", last_image=_image(32, 32, (0, 0, 255)))
    assert first_and_last.shape == first_only.shape == (1, 9, 32, 32, 3)
    assert not np.array_equal(first_only, first_and_last)


def test_wan_22_ti2v_ignores_a_last_frame_as_published():
    """Why the preset takes the first frame only: `last_image` changes nothing."""
    ti2v = build_twin("wan22-ti2v")
    assert ti2v.config.expand_timesteps
    first_only = _run(ti2v, "wan22-ti2v")
    assert np.array_equal(
        first_only, _run(ti2v, "wan22-ti2v", last_image=_image(32, 32, (0, 0, 9)))
    )


def test_hunyuanvideo_15_makes_the_size_of_the_pictures_aspect_bucket():
    pipe = build_twin("hunyuanvideo15")
    for (w, h), made in (((32, 32), (32, 32)), ((64, 32), (32, 16)), ((40, 40), (32, 32))):
        frames = _run(pipe, "hunyuanvideo15", image=_image(w, h))
        assert frames.shape[2:4] == made[::-1]


def test_ltx_2_returns_a_soundtrack_with_its_frames():
    pipe = build_twin("ltx2")
    kwargs = dict(prompt="a bell", height=64, width=64, num_frames=17, frame_rate=24,
                  num_inference_steps=2, output_type="np")  # fmt: skip
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    out = pipe(conditions=[LTX2VideoCondition(frames=_image(64, 64), index=0)], **kwargs,
               generator=torch.Generator("cpu").manual_seed(0))  # fmt: skip
    assert np.asarray(out.frames).shape == (1, 17, 64, 64, 3)
    rate = pipe.vocoder.config.output_sampling_rate
    assert tuple(out.audio.shape[:2]) == (1, 2)
    assert abs(out.audio.shape[-1] / rate - 17 / 24) < 0.05  # its 25 latents a second, rounded


def test_wan_runs_both_experts():
    wan = build_twin("wan22")
    calls = {"transformer": 0, "transformer_2": 0}
    for name in calls:

        def count(*_, name=name):
            calls[name] += 1

        getattr(wan, name).register_forward_pre_hook(count)
    _run(wan, "wan22", guidance_scale=1.0)
    assert calls == {"transformer": 1, "transformer_2": 1}


def test_skyreels_df_continues_from_frames_and_returns_them_first():
    """The video-to-video pipeline over the same components: the given frames come back
    first, then `num_frames` new ones (the first `overlap_history` of them redo the tail)."""
    from diffusers import SkyReelsV2DiffusionForcingVideoToVideoPipeline

    v2v = SkyReelsV2DiffusionForcingVideoToVideoPipeline(**build_twin("skyreels-df").components)
    v2v.set_progress_bar_config(disable=True)
    given = [_image(32, 32, (40 * i, 90, 200)) for i in range(5)]
    generator = torch.Generator("cpu").manual_seed(0)
    frames = v2v(video=given, prompt="a red kite", height=32, width=32, num_frames=17,
                 overlap_history=5, base_num_frames=17, num_inference_steps=2,
                 generator=generator, output_type="np").frames  # fmt: skip
    assert frames.shape == (1, 5 + 17, 32, 32, 3)
    np.testing.assert_allclose(frames[0, :5], np.stack(given) / 255, rtol=0, atol=1e-6)


def test_skyreels_df_tells_16_fps_from_every_other_rate():
    """Its fps embedding has two rows: one for 16 fps, one for anything else."""
    pipe = build_twin("skyreels-df")
    made = {fps: _run(pipe, "skyreels-df", fps=fps) for fps in (16, 24, 30)}
    assert not np.array_equal(made[16], made[24])
    assert np.array_equal(made[24], made[30])


# ---------------------------------------------------------------------------- tokenizers


def test_framepack_tokenizer_makes_the_system_template_its_crop_start():
    """HunyuanVideo's Llama 3 template is cropped at token 95: the twin's tokenizer makes the
    system part exactly 95 tokens, so the crop leaves the prompt (and its closing token)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (
        DEFAULT_PROMPT_TEMPLATE as TEMPLATE,
    )

    tokenizer = build_twin("framepack").tokenizer
    system = TEMPLATE["template"].split("{}")[0]
    assert len(tokenizer(system).input_ids) == TEMPLATE["crop_start"] == 95
    prompt = "a red kite over the dunes, 35mm"
    ids = tokenizer(TEMPLATE["template"].format(prompt)).input_ids
    assert ids[95:] == tokenizer(prompt + "<|eot_id|>", add_special_tokens=False).input_ids
    assert tokenizer.padding_side == "right"  # the transformer keeps the first sum(mask) tokens


@pytest.mark.parametrize("family", ["sd", "ltx", "framepack"])
def test_tokenizer_takes_any_text_and_survives_save(family, tmp_path):
    tokenizer = build_twin(family).tokenizer
    text = "Any ASCII: ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./ 0123456789 \t\n and caf\u00e9 \u2603"
    ids = tokenizer(text).input_ids
    assert len(ids) > 10
    tokenizer.save_pretrained(tmp_path)
    reloaded = type(tokenizer).from_pretrained(tmp_path)
    assert reloaded(text).input_ids == ids


# ---------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("family", ["sd", "ltx", "wan", "skyreels-df", "framepack"])
def test_save_load_roundtrip(family, tmp_path):
    twin = build_twin(family)
    expected = _run(twin, family)

    reloaded = _reload(twin, tmp_path / "twin")
    assert type(reloaded) is type(twin)
    reloaded_output = _run(reloaded, family)
    # Memory-mapped weights may round differently in the last bits; see pipelines.twins.
    np.testing.assert_allclose(reloaded_output, expected, rtol=0, atol=1e-5)
    # Loading is itself deterministic ...
    assert np.array_equal(
        _run(type(twin).from_pretrained(tmp_path / "twin"), family), reloaded_output
    )
    # ... and every weight and config came back exactly.
    assert np.array_equal(_run(_realign(reloaded), family), expected)
