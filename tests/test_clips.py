"""Every image-to-video family's adapter, run for real against its tiny twin."""

import numpy as np
import pytest
from conftest import assert_same_alone_or_batched, twin_names
from PIL import Image

from pipelines.clips import ClipItem, generate_clips
from pipelines.models import FAMILIES, load, resolve_model
from pipelines.settings import Runtime

VIDEO_FAMILIES = [f.name for f in FAMILIES.values() if f.kind == "video"]


def twin(family):
    ref = resolve_model(f"tiny-{family}", "video")
    return load(ref, "video", Runtime()), ref.preset


def frame(color, size):
    return Image.new("RGB", size, color)


def job(preset, seed=0, **kw):
    size = (preset.width, preset.height)
    base = dict(
        prompt="a paper boat",
        first=frame((200, 40, 40), size),
        num_frames=preset.frames,
        width=preset.width,
        height=preset.height,
        steps=2,
        guidance=preset.guidance,
        seed=seed,
    )
    return ClipItem(**(base | kw))


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_first_frame_clip_has_the_asked_shape(family):
    loaded, preset = twin(family)
    (clip,) = generate_clips(loaded, [job(preset)])
    assert clip.shape == (preset.frames, preset.height, preset.width, 3)
    assert clip.dtype == np.float32 and np.isfinite(clip).all()


@pytest.mark.parametrize("name", twin_names("video"))
def test_clips_are_the_same_alone_or_batched(name):
    loaded = load(resolve_model(name, "video"), "video", Runtime())
    preset = loaded.ref.preset
    items = [
        job(preset, seed=s, first=frame(c, (preset.width, preset.height)))
        for s, c in ((1, (250, 0, 0)), (2, (0, 0, 250)), (3, (0, 250, 0)))
    ]
    assert_same_alone_or_batched(
        lambda batch, size: generate_clips(loaded, batch, runtime=Runtime(batch_size=size)), items
    )


@pytest.mark.parametrize("family", ["ltx", "wan-flf2v", "wan22"])
def test_first_and_last_frame(family, monkeypatch):
    loaded, preset = twin(family)
    size = (preset.width, preset.height)
    last = frame((0, 0, 250), size)
    seen = {}
    pipe_cls = type(load(loaded.ref, "video").pipe)
    real = pipe_cls.__call__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pipe_cls, "__call__", spy)
    (clip,) = generate_clips(loaded, [job(preset, last=last)])
    assert clip.shape == (preset.frames, preset.height, preset.width, 3)
    if "last_image" in seen:  # Wan: first-and-last-frame arguments
        assert seen["last_image"] is last
    else:  # LTX: a condition on the clip's last frame index
        (end,) = [c for c in seen["conditions"] if c.frame_index == preset.frames - 1]
        assert end.image is last


def test_ltx_last_frame_changes_the_clip():
    loaded, preset = twin("ltx")
    size = (preset.width, preset.height)
    a = generate_clips(loaded, [job(preset, last=frame((0, 0, 250), size))])[0]
    b = generate_clips(loaded, [job(preset, last=frame((0, 250, 0), size))])[0]
    assert np.abs(a - b).max() > 1e-4


def test_ltx_continues_from_several_frames():
    loaded, preset = twin("ltx")
    size = (preset.width, preset.height)
    video = tuple(frame((20 * i, 0, 0), size) for i in range(preset.frames))
    (clip,) = generate_clips(loaded, [job(preset, video=video)])
    assert clip.shape == (preset.frames, preset.height, preset.width, 3)


def test_illegal_frame_count_names_the_rule():
    loaded, preset = twin("wan")
    with pytest.raises(
        ValueError, match=r"frames: tiny-wan needs 4k\+1 frames per clip \(got 10; use 13\)"
    ):
        generate_clips(loaded, [job(preset, num_frames=10)])


def test_last_frame_refused_where_the_family_cannot():
    loaded, preset = twin("svd")
    with pytest.raises(ValueError, match="last frame"):
        generate_clips(loaded, [job(preset, last=frame((0, 0, 0), (preset.width, preset.height)))])


def test_a_learned_position_table_fixes_the_clip_size():
    """A transformer with a learned position table (CogVideoX-5B image-to-video) is held to
    its native size, read from its config, whatever the preset says (hub ids, folders)."""
    from pipelines.clips import _native_size, check_job

    loaded = load(resolve_model("tiny-cogvideox", "video"), "video", Runtime())
    assert _native_size(loaded.pipe) == (32, 32)
    job = ClipItem("a", Image.new("RGB", (64, 32)), 49, 64, 32, 2, 3.0, 0)
    with pytest.raises(ValueError, match=r"^width: tiny-cogvideox makes 32×32 only"):
        check_job(loaded, job)
    check_job(loaded, ClipItem("a", Image.new("RGB", (32, 32)), 49, 32, 32, 2, 3.0, 0))


def test_wan_first_and_last_frame_models_also_make_first_frame_clips():
    """FLF2V reads two images' CLIP tokens; a clip with a first frame only (continue mode,
    a shot's inner clips) would fail inside the pipeline without the adapter's pairing."""
    import dataclasses

    from pipelines.clips import ADAPTERS, _call

    flf = load(resolve_model("tiny-wan-flf2v", "video"), "video", Runtime())
    first, last = Image.new("RGB", (32, 32), (200, 40, 40)), Image.new("RGB", (32, 32), "blue")
    alone = ClipItem("a", first, 9, 32, 32, 2, 3.0, 0)
    both = dataclasses.replace(alone, last=last)
    adapter = ADAPTERS["wan"]
    with pytest.raises(RuntimeError):  # what the pipeline does on its own
        _call(flf, [alone], dataclasses.replace(adapter, around=None), None)
    for job in (alone, both):
        (clip,) = _call(flf, [job], adapter, None)
        assert clip.shape == (9, 32, 32, 3) and np.isfinite(clip).all()
    assert "encode_image" not in vars(flf.pipe)  # the pairing is undone after the call


def test_wan_21_image_to_video_cannot_end_on_a_last_frame():
    """Wan 2.1 I2V reads one picture's CLIP tokens; diffusers encodes first and last frame as
    two and the call fails. The preset says so (keyframes mode crossfades instead), and a
    model of that layout from elsewhere is refused with one line before the call."""
    import dataclasses

    from pipelines.clips import check_job

    assert not resolve_model("wan-i2v-480p", "video").takes("last_frame")
    assert resolve_model("wan-flf2v-720p", "video").takes("last_frame")
    twin = load(resolve_model("tiny-wan", "video"), "video", Runtime())
    # As a model from elsewhere whose preset says nothing, its pipeline still refuses.
    elsewhere = dataclasses.replace(twin.ref, preset=dataclasses.replace(twin.ref.preset,
                                                                         conditioning=None))  # fmt: skip
    i2v = dataclasses.replace(twin, ref=elsewhere)
    job = ClipItem("a", Image.new("RGB", (32, 32)), 9, 32, 32, 2, 3.0, 0)
    check_job(i2v, job)
    with pytest.raises(ValueError, match=r"^model: tiny-wan cannot end a clip on a given last"):
        check_job(i2v, dataclasses.replace(job, last=Image.new("RGB", (32, 32))))
    (clip,) = generate_clips(i2v, [job])
    assert clip.shape == (9, 32, 32, 3)


def test_svd_is_conditioned_on_the_clips_frame_rate_less_one(monkeypatch):
    # SVD was trained with fps - 1 as a time id; diffusers subtracts the 1 itself.
    loaded, preset = twin("svd")
    pipe_class = type(loaded.pipe)
    seen = []
    real = pipe_class._get_add_time_ids

    def spy(self, fps, *args, **kwargs):
        seen.append(fps)
        return real(self, fps, *args, **kwargs)

    monkeypatch.setattr(pipe_class, "_get_add_time_ids", spy)
    generate_clips(loaded, [job(preset, fps=12)])
    assert seen == [11]
