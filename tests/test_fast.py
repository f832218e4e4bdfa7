"""Opt-in fast paths (`Runtime.fast`): parsing, and each one switched on for real on a twin."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import pipelines.device as device
import pipelines.twins as twins
from pipelines.clips import ClipItem, generate_clips
from pipelines.models import clear_cache, load, resolve_model
from pipelines.settings import Runtime


@pytest.fixture(autouse=True)
def fresh_models():
    """These tests load twins with hooks and swapped transformers: keep them to themselves."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def deeper_twins(monkeypatch):
    """Twins whose transformers have 3 blocks (the shipped ones have 1; the first-block
    cache needs a first block and more to skip)."""
    build = twins.build_twin

    def build_deeper(family, **kw):
        pipe = build(family, **kw)
        for name in device.DENOISERS:
            module = getattr(pipe, name, None)
            if module is not None and "num_layers" in module.config:
                torch.manual_seed(0)
                setattr(pipe, name, type(module).from_config({**module.config, "num_layers": 3}))
        return pipe

    monkeypatch.setattr(twins, "build_twin", build_deeper)


def clip_job(preset, **kw):
    first = Image.new("RGB", (preset.width, preset.height), (200, 40, 40))
    return ClipItem("a paper boat", first, preset.frames, preset.width, preset.height, 2,
                   preset.guidance, 0, **kw)  # fmt: skip


def run_clip(family, fast=()):
    ref = resolve_model(f"tiny-{family}", "video")
    runtime = Runtime(fast=fast)
    loaded = load(ref, "video", runtime)
    return loaded, generate_clips(loaded, [clip_job(ref.preset)], runtime=runtime)[0]


# ---------------------------------------------------------------------------------------
# Parsing and validation


def test_fast_parses_comma_lists_from_options_and_environment():
    assert Runtime().fast == ()
    assert Runtime(fast=("cache", "compile")).fast == ("cache", "compile")
    opts = Runtime.from_options(fast=" cache, attention:native,cache ", env={})
    assert opts.fast == ("cache", "attention:native")
    assert Runtime.from_options(env={"REELCHAIN_FAST": "compile"}).fast == ("compile",)
    # The option wins over the environment; `none` turns every fast path off.
    assert Runtime.from_options(fast="none", env={"REELCHAIN_FAST": "compile"}).fast == ()


@pytest.mark.parametrize("bad", ["turbo", "attention", "attention:flash_hub", "cache:0.1"])
def test_unknown_fast_path_names_the_field_and_the_choices(bad):
    with pytest.raises(ValueError, match=r"^fast: unknown .*cache, compile, attention:<backend>"):
        Runtime(fast=(bad,))


def test_one_attention_backend_at_most():
    with pytest.raises(ValueError, match="^fast: give at most one"):
        Runtime.from_options(fast="attention:native,attention:flex", env={})


def test_cli_unknown_fast_path_exits_2_with_one_line(cli, tmp_path):
    code, out, err = cli("image", "a boat", "--out", tmp_path, "--model", "tiny", "--fast", "turbo")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: fast: unknown 'turbo'")


def test_cli_reads_the_environment_too(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("REELCHAIN_FAST", "cache,warp")
    code, _, err = cli("image", "a boat", "--out", tmp_path, "--model", "tiny")
    assert code == 2 and "fast: unknown 'warp'" in err


# ---------------------------------------------------------------------------------------
# Each fast path on a twin


def test_cache_skips_blocks_and_is_recorded(deeper_twins, monkeypatch):
    _, plain = run_clip("ltx")
    loaded, cached = run_clip("ltx", ("cache",))
    assert loaded.placement.fast == ("cache",)
    assert loaded.placement.describe()["fast"] == "cache"
    assert loaded.pipe.transformer.is_cache_enabled
    assert cached.shape == plain.shape and np.isfinite(cached).all()

    # With a threshold nothing stays under, every step after the first reuses the tail.
    monkeypatch.setattr(device, "CACHE_THRESHOLD", 1e9)
    clear_cache()
    ran = []

    def count_blocks(loaded):
        for block in loaded.pipe.transformer.transformer_blocks:
            block.attn1.register_forward_pre_hook(lambda *_: ran.append(1))

    count_blocks(load(resolve_model("tiny-ltx", "video"), "video", Runtime()))
    run_clip("ltx")
    full, ran[:] = len(ran), []
    count_blocks(load(resolve_model("tiny-ltx", "video"), "video", Runtime(fast=("cache",))))
    run_clip("ltx", ("cache",))
    assert full == 2 * 3  # 2 steps, 3 blocks (LTX batches the guidance pair)
    assert len(ran) == 3 + 1  # step 1 runs every block; step 2 only the first


def test_cache_skips_with_a_warning_where_it_cannot_apply(caplog):
    with caplog.at_level(logging.WARNING, logger="pipelines.device"):
        loaded, clip = run_clip("svd", ("cache",))  # a UNet
        one_block, _ = run_clip("wan", ("cache",))  # the shipped twin: 1 block
    assert loaded.placement.fast == () and loaded.placement.describe()["fast"] == "none"
    assert one_block.placement.fast == ()
    assert "no cache hooks" in caplog.text and "1 transformer block" in caplog.text
    assert clip.ndim == 4


def test_native_attention_runs_and_matches_the_default():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    _, plain = run_clip("ltx")
    loaded, native = run_clip("ltx", ("attention:native",))
    assert loaded.placement.fast == ("attention:native",)
    assert np.allclose(native, plain, atol=1e-5)
    assert _AttentionBackendRegistry._active_backend == before  # the process default stays


def test_attention_backend_that_is_not_installed_is_invalid_input():
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed")
    with pytest.raises(ValueError, match=r"^fast: attention:flash cannot run here"):
        run_clip("ltx", ("attention:flash",))


def test_compile_wraps_the_denoiser_in_place(monkeypatch):
    compiled = []

    def record(fn, *args, **kwargs):  # torch.compile itself takes minutes on this CPU
        compiled.append(fn.__self__)
        return fn

    monkeypatch.setattr(torch, "compile", record)
    loaded, clip = run_clip("ltx", ("compile",))
    assert loaded.placement.fast == ("compile",)
    # Regional: each repeated block, not the whole transformer.
    assert compiled == list(loaded.pipe.transformer.transformer_blocks)
    assert clip.ndim == 4

    compiled.clear()
    loaded, _ = run_clip("svd", ("compile",))  # no repeated blocks listed: the whole UNet
    assert compiled == [loaded.pipe.unet]


def test_fast_paths_are_part_of_the_model_cache_key():
    ref = resolve_model("tiny-ltx", "video")
    plain = load(ref, "video", Runtime())
    assert load(ref, "video", Runtime(fast=("attention:native",))) is not plain
    assert load(ref, "video", Runtime()) is plain
