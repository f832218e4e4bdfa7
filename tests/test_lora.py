"""LoRAs on the twins: made with peft, loaded once, switched per call, checked in one line."""

import numpy as np
import pytest
from conftest import make_lora
from PIL import Image

from pipelines.clips import ClipItem, generate_clips
from pipelines.images import ImageItem, a1111_parameters, generate
from pipelines.lora import Lora, check_lora, parse_lora
from pipelines.models import load, resolve_model


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    return {
        "a": make_lora("sd", d / "a", seed=1),
        "b": make_lora("sd", d / "b", seed=2),
        "ltx": make_lora("ltx", d / "ltx", seed=3),
    }


pytestmark = pytest.mark.usefixtures("one_thread")


def image(loaded, *loras):
    job = ImageItem("a lighthouse", "", 64, 64, 2, 1.0, 7, loras=tuple(loras))
    return generate(loaded, [job])[0]


def test_a_lora_changes_the_picture_and_scale_0_does_not(loras):
    loaded = load(resolve_model("tiny-image", "image"), "text2img")
    plain = image(loaded)
    a = check_lora(Lora(str(loras["a"])))
    with_a = image(loaded, a)
    assert np.abs(with_a - plain).max() > 1e-3
    np.testing.assert_allclose(image(loaded, Lora(a.path, 0.0)), plain, atol=1e-6)
    b = check_lora(Lora(str(loras["b"])))
    both = image(loaded, a, b)
    assert np.abs(both - with_a).max() > 1e-3 and np.abs(both - image(loaded, b)).max() > 1e-3


def test_switching_per_call_equals_separate_runs(loras):
    """Adapters load once and only switch: A, none, B on one pipeline give what each gives
    on a fresh one."""
    from pipelines.models import clear_cache

    a, b = (check_lora(Lora(str(loras[k]), 0.8)) for k in "ab")
    loaded = load(resolve_model("tiny-image", "image"), "text2img")
    switched = [image(loaded, a), image(loaded), image(loaded, b)]
    alone = []
    for each in ((a,), (), (b,)):
        clear_cache()
        alone.append(image(load(resolve_model("tiny-image", "image"), "text2img"), *each))
    for x, y in zip(switched, alone, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_a_lora_on_a_video_model(loras):
    loaded = load(resolve_model("tiny-ltx", "video"), "video")
    lora = check_lora(Lora(str(loras["ltx"])))
    first = Image.new("RGB", (32, 32), (200, 40, 40))

    def clip(*each):
        return generate_clips(loaded, [ClipItem("a", first, 9, 32, 32, 2, 3.0, 0, loras=each)])[0]

    plain = clip()
    assert np.abs(clip(lora) - plain).max() > 1e-4
    np.testing.assert_allclose(clip(Lora(lora.path, 0.0)), plain, atol=1e-6)


def test_bad_loras_are_one_line_naming_the_field(loras, tmp_path):
    with pytest.raises(ValueError, match=r"^lora: 'x.bin' is not a \.safetensors file"):
        check_lora(Lora(str(tmp_path / "x.bin")))
    with pytest.raises(ValueError, match=r"^lora: file not found"):
        check_lora(Lora(str(tmp_path / "gone.safetensors")))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"^lora: cannot read 'junk.safetensors'"):
        check_lora(Lora(str(junk)))
    with pytest.raises(ValueError, match=r"^lora: scale must be from -4 to 4"):
        parse_lora(f"{loras['a']}:9")
    assert parse_lora(f"{loras['a']}:0.5").scale == 0.5
    loaded = load(resolve_model("tiny-image", "image"), "text2img")
    wrong = check_lora(Lora(str(loras["ltx"])))
    with pytest.raises(ValueError, match=r"^lora: 'pytorch_lora_weights' does not fit tiny-image"):
        image(loaded, wrong)
    image(loaded)  # the model still works after the refusal


def test_parameters_name_each_lora_as_a1111_does(loras):
    job = ImageItem("a fox", "", 64, 64, 2, 1.0, 1, loras=(Lora(str(loras["a"]), 0.7),))
    assert a1111_parameters(job, "tiny-image", "PLMS").splitlines()[0] == (
        "a fox <lora:pytorch_lora_weights:0.7>"
    )
