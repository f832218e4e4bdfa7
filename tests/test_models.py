import json

import pytest
from PIL import Image

from pipelines.models import FAMILIES, PRESETS, ModelUnavailable, load, resolve_model
from pipelines.settings import Runtime


def test_every_family_has_a_preset_and_a_twin():
    for fam in FAMILIES.values():
        assert any(p.family == fam.name for p in PRESETS.values()), fam.name
        ref = resolve_model(f"tiny-{fam.name}", fam.kind)
        assert ref.kind == "twin" and ref.family is fam


def test_tiny_picks_a_twin_per_task():
    assert resolve_model("tiny", "image").family.name == "image"
    assert resolve_model("tiny", "video").family.kind == "video"
    assert resolve_model("tiny-sd", "image").label == "tiny-image"


def test_defaults_are_the_real_presets():
    assert resolve_model(None, "image").label == "sd-turbo"
    assert resolve_model(None, "video").label == "ltx-video"


@pytest.mark.parametrize(
    "family,n,legal",
    [("ltx", 10, 17), ("ltx", 9, 9), ("wan", 10, 13), ("svd", 10, 10), ("cogvideox", 2, 9)],
)
def test_legal_frames_round_up(family, n, legal):
    assert FAMILIES[family].legal_frames(n) == legal


def test_unknown_model_names_the_field():
    with pytest.raises(ValueError, match=r"^model: unknown 'nope'"):
        resolve_model("nope")


def test_local_folder_family_from_model_index(tmp_path):
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "WanImageToVideoPipeline"})
    )
    assert resolve_model(str(tmp_path), "video").family.name == "wan"
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "MysteryPipeline"}))
    with pytest.raises(ValueError, match="MysteryPipeline"):
        resolve_model(str(tmp_path))


def test_folder_without_index_is_refused(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        resolve_model(str(tmp_path))


def test_uncached_hub_model_offline_is_one_clear_line():
    with pytest.raises(ModelUnavailable) as info:
        resolve_model("someone/not-cached-model", "image")
    msg = str(info.value)
    assert "\n" not in msg and "--model tiny" in msg and "cannot be reached" in msg


def test_uncached_preset_offline_is_one_clear_line():
    with pytest.raises(ModelUnavailable, match="--model tiny"):
        load(resolve_model("sd-turbo"), "text2img", Runtime(device="cpu"))


def test_loaded_pipelines_are_cached_and_img2img_shares_components():
    ref = resolve_model("tiny", "image")
    a = load(ref, "text2img", Runtime())
    assert load(ref, "text2img", Runtime()) is a
    b = load(ref, "img2img", Runtime())
    assert type(b.pipe).__name__.endswith("Img2ImgPipeline")
    assert b.pipe.unet is a.pipe.unet and b.pipe.vae is a.pipe.vae


def test_models_command_prints_the_table(cli):
    code, out, _ = cli("models")
    assert code == 0
    for name in [*PRESETS, "tiny-ltx", "tiny-wan", "random:<preset>"]:
        assert name in out


def test_the_python_api_is_exported_lazily():
    import subprocess
    import sys

    code = "import sys, pipelines; assert 'torch' not in sys.modules; from pipelines import make_video, VideoOptions, make_images, make_thumbnails, Runtime"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], cwd=__import__("pathlib").Path(__file__).parent.parent
        ).returncode
        == 0
    )


def test_random_weights_resolve_to_the_presets_architecture():
    ref = resolve_model("random:ltx-video", "video")
    assert ref.kind == "random" and ref.family.name == "ltx"
    assert ref.label == "random:ltx-video"  # its own planner costs, apart from the real model
    assert (ref.preset.width, ref.preset.frames) == (PRESETS["ltx-video"].width, 161)
    with pytest.raises(ValueError, match=r"^model: 'random:nope' names no preset.*ltx-video"):
        resolve_model("random:nope", "video")


def test_random_weights_are_built_where_they_run(monkeypatch):
    """`random:<preset>` builds through pipelines.fullsize on the placement's device and
    dtype (a spy stands in for the multi-gigabyte build)."""
    import torch

    import pipelines.fullsize as fullsize
    from pipelines.models import clear_cache, load
    from pipelines.settings import Runtime
    from pipelines.twins import build_twin

    calls = []

    def spy(preset, *, device, dtype, **kwargs):
        calls.append((preset, torch.device(device).type, dtype))
        return build_twin("sd")

    monkeypatch.setattr(fullsize, "build_fullsize", spy)
    clear_cache()
    try:
        loaded = load(resolve_model("random:sd-turbo", "image"), "text2img", Runtime(device="cpu"))
        assert calls == [("sd-turbo", "cpu", torch.float32)]
        assert loaded.placement.device.type == "cpu"
    finally:
        clear_cache()


def test_vae_tiling_when_free_memory_is_short():
    """Tiling flattens the VAE's decode peak: on with any offload, or with less than twice
    the model's need free (a 720×480 CogVideoX decode needs over 20 GB of RAM untiled)."""
    from pipelines.device import plan_placement
    from pipelines.settings import Runtime

    gib = 2**30
    rt = Runtime(device="cpu", memory_budget=30 * gib)
    assert plan_placement(rt, 24 * gib).vae_tiling  # cogvideox-5b-i2v on a 30 GB budget
    assert not plan_placement(rt, 4 * gib).vae_tiling  # sd-turbo


def test_image_to_image_keeps_the_jobs_size_where_the_pipeline_takes_one():
    """FLUX image-to-image makes its default 1024 px unless told the size (the FLUX twin)."""
    from pipelines.images import ImageItem, generate
    from pipelines.models import call_parameters, load
    from pipelines.settings import Runtime

    loaded = load(resolve_model("tiny-flux", "image"), "text2img", Runtime())
    i2i = load(loaded.ref, "img2img", Runtime())
    assert {"width", "height"} <= call_parameters(type(i2i.pipe))
    init = Image.new("RGB", (64, 48), (10, 200, 30))
    (out,) = generate(loaded, [ImageItem("a", "", 64, 48, 2, 0.0, 1, init, 0.6)])
    assert out.shape == (48, 64, 3)
