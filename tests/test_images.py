import json

import numpy as np
import pytest
from conftest import assert_same_alone_or_batched, twin_names
from PIL import Image

from pipelines.images import ImageItem, generate
from pipelines.models import load, resolve_model
from pipelines.settings import Runtime


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_image_command_writes_png_with_parameters_and_sidecar(cli, tmp_path):
    code, out, err = cli(
        "image",
        "a lighthouse at dusk",
        "--model",
        "tiny",
        "--out",
        tmp_path,
        "--seed",
        "5",
        "--negative",
        "fog",
        "--guidance",
        "2",
    )
    assert code == 0, err
    path = tmp_path / out.strip()
    assert path.suffix == ".png" and path.exists()
    img = Image.open(path)
    params = img.text["parameters"]
    assert params.startswith("a lighthouse at dusk\nNegative prompt: fog\n")
    for field in (
        "Steps: 2",
        "Sampler: ",
        "CFG scale: 2",
        "Seed: 5",
        "Size: 64x64",
        "Model: tiny-image",
    ):
        assert field in params
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["seed"] == 5 and side["parameters"] == params
    assert side["placement"]["device"] == "cpu" and side["placement"]["dtype"] == "float32"
    assert {"torch", "diffusers", "transformers"} <= side["versions"].keys()
    # no temporary files left beside the outputs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_same_inputs_same_pixels(cli, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cli("image", "a red bicycle", "--model", "tiny", "--out", a, "--seed", "3")
    cli("image", "a red bicycle", "--model", "tiny", "--out", b, "--seed", "3")
    pa, pb = next(a.glob("*.png")), next(b.glob("*.png"))
    assert np.array_equal(pixels(pa), pixels(pb))
    cli("image", "a red bicycle", "--model", "tiny", "--out", b, "--seed", "4")
    assert not np.array_equal(pixels(pa), pixels(b / pa.name.replace("-3", "-4")))


@pytest.mark.parametrize("name", twin_names("image"))
def test_an_image_is_the_same_alone_or_in_a_batch(name):
    loaded = load(resolve_model(name, "image"), "text2img")
    p = loaded.ref.preset
    items = [ImageItem(f"prompt {i}", "", p.width, p.height, 2, 1.0, 100 + i) for i in range(4)]
    assert_same_alone_or_batched(
        lambda batch, size: generate(loaded, batch, runtime=Runtime(batch_size=size)), items
    )


def test_count_gives_consecutive_seeds(cli, tmp_path):
    code, out, _ = cli(
        "image", "a cat", "--model", "tiny", "--out", tmp_path, "--count", "3", "--seed", "9"
    )
    assert code == 0
    seeds = sorted(
        json.loads((tmp_path / p).with_suffix(".json").read_text())["seed"] for p in out.split()
    )
    assert seeds == [9, 10, 11]


def test_init_image_runs_image_to_image(cli, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (80, 48), (200, 30, 30)).save(init)
    code, out, err = cli(
        "image",
        "a red wall",
        "--model",
        "tiny",
        "--out",
        tmp_path / "o",
        "--init",
        init,
        "--strength",
        "0.5",
        "--steps",
        "4",
    )
    assert code == 0, err
    path = tmp_path / "o" / out.strip()
    assert Image.open(path).size == (64, 64)
    assert "Denoising strength: 0.5" in Image.open(path).text["parameters"]


@pytest.mark.parametrize(
    "argv,field",
    [
        (["--model", "nope"], "model:"),
        (["--width", "60"], "width:"),
        (["--steps", "0"], "steps:"),
        (["--count", "0"], "count:"),
        (["--strength", "1.5", "--init", "x.png"], "strength:"),
        (["--batch-size", "zero"], "batch-size:"),
        (["--memory-budget", "lots"], "memory-budget:"),
    ],
)
def test_bad_input_exit_2_one_line(cli, tmp_path, argv, field):
    code, out, err = cli("image", "a cat", "--model", "tiny", "--out", tmp_path, *argv)
    assert code == 2
    assert err.count("\n") == 1 and field in err, err
    assert not list(tmp_path.iterdir())


def test_unreadable_init_image_exit_2(cli, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    code, _, err = cli("image", "a cat", "--model", "tiny", "--out", tmp_path / "o", "--init", bad)
    assert code == 2 and err.startswith("error: init: cannot read image 'broken.png'")


def test_size_error_suggests_legal_sizes(cli, tmp_path):
    code, _, err = cli("image", "a cat", "--model", "tiny", "--out", tmp_path, "--width", "100")
    assert code == 2 and "multiple of 8" in err and "96 or 104" in err


def test_uncached_model_offline_exit_1(cli, tmp_path):
    code, _, err = cli("image", "a cat", "--model", "sd-turbo", "--out", tmp_path)
    assert code == 1 and err.count("\n") == 1 and "--model tiny" in err


def test_a_presets_own_size_obeys_the_caps(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("REELCHAIN_MAX_SIDE", "48")
    code, _, err = cli("image", "a cat", "--model", "tiny", "--out", tmp_path)
    assert code == 2 and "width: tiny-image makes 64 px, over the limit of 48" in err


@pytest.mark.parametrize("steps,strength,ran", [(1, 0.6, 2), (2, 0.3, 4), (4, 0.5, 4)])
def test_image_to_image_runs_at_least_one_step(cli, tmp_path, steps, strength, ran):
    """diffusers runs int(steps × strength) steps and fails on none (sd-turbo is 1 step);
    the steps are raised until one runs, and the sidecar says how many were asked for."""
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    code, _, err = cli("image", "a red wall", "--model", "tiny", "--out", tmp_path / "o",
                       "--init", init, "--strength", strength, "--steps", steps)  # fmt: skip
    assert code == 0, err
    (sidecar,) = (tmp_path / "o").glob("*.json")
    assert json.loads(sidecar.read_text())["steps"] == ran


def test_python_api_image_to_image_jobs_also_run_one_step():
    loaded = load(resolve_model("tiny", "image"), "text2img")
    init = Image.new("RGB", (64, 64), (20, 90, 200))
    (out,) = generate(loaded, [ImageItem("a", "", 64, 64, 1, 1.0, 5, init, 0.6)])
    assert out.shape == (64, 64, 3) and np.isfinite(out).all()
