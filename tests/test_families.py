"""The long-video families of issue 13 on their twins: Wan 2.2 TI2V-5B and I2V-A14B,
HunyuanVideo 1.5 image-to-video and LTX-2; what each refuses before any work; and
`--model auto`, which picks the best of the video presets that fits the GPU."""

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import chain, device, models
from pipelines.chain import VideoOptions, make_video
from pipelines.clips import ClipItem, generate_clips
from pipelines.models import load, resolve_model
from pipelines.settings import Runtime
from pipelines.traits import config_traits
from pipelines.video_io import probe

NEW_TWINS = ["tiny-wan22-ti2v", "tiny-wan22", "tiny-hunyuanvideo15", "tiny-ltx2"]
GB = 2**30


pytestmark = pytest.mark.usefixtures("one_thread")


def two_shots(side: int = 32, mode: str = "continue", extra: str = "") -> str:
    return (
        f"mode: {mode}\nfps: 8\nwidth: {side}\nheight: {side}\nseed: 3\n{extra}shots:\n"
        "  - prompt: a paper boat on a rainy street\n    seconds: 1\n"
        "  - prompt: a lighthouse at dusk\n    seconds: 1\n"
    )


def side_of(spec: str) -> int:
    return 64 if spec == "tiny-ltx2" else 32


def spy_calls(monkeypatch, cls, also=None):
    """Record the keyword arguments of every call of a pipeline class (and `also(pipe)`
    during the call)."""
    seen = []
    real = cls.__call__

    @functools.wraps(real)  # the engine reads the signature
    def call(self, *args, **kwargs):
        seen.append(kwargs | ({"during": also(self)} if also else {}))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", call)
    return seen


# ---------------------------------------------------------------------------------------
# Every new family through the whole chain


@pytest.mark.parametrize("mode", ["continue", "keyframes"])
@pytest.mark.parametrize("spec", NEW_TWINS)
def test_every_new_family_runs_each_mode_through_the_chain(tmp_path, spec, mode):
    side = side_of(spec)
    result = make_video(two_shots(side, mode), tmp_path / "run", VideoOptions(model=spec),
                        text=True)  # fmt: skip
    info = probe(result.video)
    assert (info.frames, info.fps, info.width, info.height) == (16, 8.0, side, side)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    ends = [s for s in manifest["segments"] if s["last_keyframe"] is not None]
    # Keyframes mode ends shots on the next keyframe where the model takes a last frame
    # (Wan 2.2 A14B); the first-frame-only families crossfade instead.
    assert bool(ends) == (mode == "keyframes" and spec == "tiny-wan22")


def test_hunyuanvideo_15_gets_its_guidance_through_its_guider_and_no_size(tmp_path, monkeypatch):
    from diffusers import HunyuanVideo15ImageToVideoPipeline

    seen = spy_calls(monkeypatch, HunyuanVideo15ImageToVideoPipeline,
                     also=lambda pipe: pipe.guider.guidance_scale)  # fmt: skip
    make_video(two_shots(extra="guidance: 4.5\n"), tmp_path / "run",
               VideoOptions(model="tiny-hunyuanvideo15"), text=True)  # fmt: skip
    assert seen and {kw["during"] for kw in seen} == {4.5}
    assert not {"height", "width", "guidance_scale", "callback_on_step_end"} & set(seen[0])
    pipe = load(resolve_model("tiny-hunyuanvideo15", "video"), "video").pipe
    assert pipe.guider.guidance_scale == 6.0  # the loaded guider is back after each call


def test_ltx_2_is_told_its_rate_and_continues_from_the_last_frames(tmp_path, monkeypatch):
    from diffusers import LTX2ConditionPipeline

    seen = spy_calls(monkeypatch, LTX2ConditionPipeline)
    text = two_shots(64).replace("seconds: 1\n  - prompt: a lighthouse", "seconds: 2\n"
                                 "  - prompt: a lighthouse")  # fmt: skip
    # 25-frame clips: long enough to continue from the previous clip's last 9 frames.
    opts = VideoOptions(model="tiny-ltx2", clip_frames=25)
    make_video(text, tmp_path / "run", opts, text=True)
    assert {kw["frame_rate"] for kw in seen} == {24}  # 8 fps of video, 24 of motion
    assert {kw["use_cross_timestep"] for kw in seen} == {False}  # LTX-2.0's settings
    assert {kw["spatio_temporal_guidance_blocks"] for kw in seen} == {(29,)}
    starts = [kw["conditions"][0] for kw in seen]
    assert all(c.index == 0 for c in starts)
    assert any(isinstance(c.frames, list) and len(c.frames) == 9 for c in starts)  # overlap
    assert any(isinstance(c.frames, Image.Image) for c in starts)  # a shot's keyframe


def test_ltx_2_hands_back_each_clips_soundtrack():
    loaded = load(resolve_model("tiny-ltx2", "video"), "video")
    jobs = [ClipItem(f"take {i}", Image.new("RGB", (64, 64), (60 * i, 90, 160)), 17, 64, 64, 2,
                    3.0, i, fps=24) for i in range(2)]  # fmt: skip
    heard = {}
    frames = generate_clips(loaded, jobs, on_extra=lambda i, audio: heard.setdefault(i, audio))
    assert [f.shape for f in frames] == [(17, 64, 64, 3)] * 2
    assert sorted(heard) == [0, 1]
    for audio in heard.values():
        assert audio.samples.dtype == np.float32 and audio.samples.shape[0] == 2  # stereo
        assert audio.rate == loaded.pipe.vocoder.config.output_sampling_rate
        assert abs(audio.seconds - 17 / 24) < 0.05
        assert np.abs(audio.samples).max() <= 1.0


# ---------------------------------------------------------------------------------------
# What a family cannot do: one line naming the field and the model, before any work


@pytest.mark.parametrize(
    "spec,size,message",
    [
        ("wan2.2-ti2v-5b", (1280, 720),
         r"^height: wan2\.2-ti2v-5b needs a multiple of 32 \(got 720; use 704 or 736\)$"),
        ("hunyuanvideo-1.5-i2v", (832, 480),
         r"^width: hunyuanvideo-1\.5-i2v makes one size per aspect ratio, about 640² pixels "
         r"\(got 832×480, which it would make 816×480\); set width: 816 and height: 480$"),
        ("ltx-2", (784, 512), r"^width: ltx-2 needs a multiple of 32 \(got 784; use 768 or 800\)$"),
    ],
)  # fmt: skip
def test_a_size_the_model_does_not_make_is_one_line_before_any_work(spec, size, message):
    text = f"width: {size[0]}\nheight: {size[1]}\nshots:\n  - prompt: a\n    seconds: 2\n"
    with pytest.raises(ValueError, match=message):
        chain.read_storyboard(text, VideoOptions(model=spec), text=True)


def test_the_sizes_hunyuanvideo_15_makes_plan(tmp_path, cli):
    """Its native 848×480, and a portrait bucket, plan (nothing loads); the CLI refuses
    another size with exit 2 and one line."""
    for w, h in ((848, 480), (480, 832)):  # its buckets round unevenly
        text = f"width: {w}\nheight: {h}\nshots:\n  - prompt: a\n    seconds: 2\n"
        sb, _ = chain.read_storyboard(text, VideoOptions(model="hunyuanvideo-1.5-i2v"), text=True)
        assert (sb.width, sb.height) == (w, h)
    path = tmp_path / "story.yaml"
    path.write_text("width: 640\nheight: 480\nshots:\n  - prompt: a\n    seconds: 2\n")
    code, _, err = cli("video", path, "--model", "hunyuanvideo-1.5-i2v", "--dry-run")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: width: hunyuanvideo-1.5-i2v makes one size per aspect ratio")


def test_wan_22_ti2v_takes_no_last_frame(tmp_path):
    """TI2V pins the first frame only (a last one is silently ignored by the pipeline): the
    plan crossfades in keyframes mode, and a clip asked to end on a frame is refused."""
    ref = resolve_model("wan2.2-ti2v-5b", "video")
    assert not ref.takes("last_frame") and ref.takes("first_frame")
    sb, models_ = chain.read_storyboard(two_shots(mode="keyframes"),
                                        VideoOptions(model="tiny-wan22-ti2v"), text=True)  # fmt: skip
    segments = chain.plan(sb, models_)
    assert all(s.last_keyframe is None for s in segments)
    assert any(s.fade_out for s in segments)  # shots crossfade instead
    loaded = load(resolve_model("tiny-wan22-ti2v", "video"), "video")
    frame = Image.new("RGB", (32, 32))
    job = ClipItem("a", frame, 9, 32, 32, 2, 3.0, 0, last=frame)
    with pytest.raises(ValueError, match=r"^model: tiny-wan22-ti2v cannot end a clip on a "):
        generate_clips(loaded, [job])


def test_wan_22_a14b_ends_shots_on_the_next_keyframe():
    ref = resolve_model("wan2.2-i2v-a14b", "video")
    assert ref.takes("last_frame") and dict(ref.preset.call) == {"guidance_scale_2": 3.5}
    assert resolve_model("tiny-wan22", "video").preset.fp32 == ("vae",)  # no image encoder


def test_rules_read_from_the_configs_of_new_families():
    with pytest.raises(ValueError, match=r"^model: hv-t2v is a text-to-video HunyuanVideo 1\.5"):
        config_traits("hunyuanvideo15", {"transformer": {"task_type": "t2v"}}, "hv-t2v")
    hv720 = {"transformer": {"task_type": "i2v", "target_size": 960},
             "vae": {"spatial_compression_ratio": 16}, "guider": {"guidance_scale": 1.0}}  # fmt: skip
    rules = config_traits("hunyuanvideo15", hv720, "hv720")
    assert (rules["width"], rules["height"], rules["aspect_target"], rules["guidance"]) == (
        1280, 720, 960, 1.0)  # fmt: skip
    assert config_traits("ltx2", {"transformer": {"cross_attn_mod": True}}, "ltx-2.3") == {
        "call": ()  # LTX-2.3 and later: the pipeline's own defaults
    }
    assert config_traits("ltx2", {"transformer": {"cross_attn_mod": False}}, "ltx-2")["call"] == (
        models.PRESETS["ltx-2"].call
    )


def test_a_saved_ltx_2_twin_reads_back_as_ltx_2(tmp_path):
    folder = tmp_path / "ltx2"
    load(resolve_model("tiny-ltx2", "video"), "video").pipe.save_pretrained(folder)
    ref = resolve_model(str(folder), "video")
    assert ref.family.name == "ltx2" and ref.preset.call == models.PRESETS["ltx-2"].call


# ---------------------------------------------------------------------------------------
# --model auto


def fake_gpu(monkeypatch, free_gb: float) -> None:
    """A CUDA device with `free_gb` free, whatever this machine has."""
    monkeypatch.setattr(device, "pick_device", lambda pref="auto": torch.device("cuda"))
    monkeypatch.setattr(device, "free_memory",
                        lambda dev, budget=None: min(int(free_gb * GB), budget or 2**62))  # fmt: skip


@pytest.mark.parametrize(
    "free_gb,preset,offload",
    [
        (8, "svd-xt", "model"),  # the only one whose largest part fits with head-room
        (16, "ltx-video", "model"),
        (24, "wan2.2-ti2v-5b", "model"),  # its 11 GB text encoder at a time
        (80, "wan2.2-i2v-a14b", "model"),  # one 14B expert at a time
    ],
)
def test_auto_picks_the_best_preset_that_fits_the_gpu(monkeypatch, capsys, free_gb, preset,
                                                       offload):  # fmt: skip
    fake_gpu(monkeypatch, free_gb)
    choice = models.choose_auto(int(free_gb * GB))
    assert (choice.preset, choice.offload) == (preset, offload)
    ref = resolve_model("auto", "video")
    assert (ref.spec, ref.kind) == (preset, "hub")
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith(f"model auto: {preset}, the best video model for {free_gb} GB free")
    assert "model offload" in line


def test_auto_is_the_default_video_model_on_a_gpu_and_honours_the_budget(monkeypatch, capsys):
    fake_gpu(monkeypatch, 80)
    assert resolve_model(None, "video").spec == "wan2.2-i2v-a14b"
    budget = Runtime(memory_budget=16 * GB)
    assert resolve_model(None, "video", budget).spec == "ltx-video"
    assert resolve_model(None, "image").spec == "sd-turbo"  # images keep their default
    assert models.choose_auto(80 * GB, pref="none").preset == "hunyuanvideo-1.5-i2v"
    streamed = models.choose_auto(80 * GB, pref="group")  # asked for: the best, streamed
    assert (streamed.preset, streamed.offload) == ("wan2.2-i2v-a14b", "group")
    tiny = models.choose_auto(2 * GB)
    assert (tiny.preset, tiny.offload) == ("svd-xt", "group") and "slow" in tiny.line


def test_auto_on_a_cpu_means_the_tiny_twins_in_one_line(capsys):
    assert resolve_model(None, "video").spec == "ltx-video"  # the CPU default stays
    ref = resolve_model("auto", "video", Runtime(device="cpu"))
    assert (ref.spec, ref.kind) == ("tiny-ltx", "twin")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("model auto: tiny-ltx, the offline")


def test_a_run_on_auto_records_and_resumes_the_preset_it_chose(monkeypatch, tmp_path, cli):
    fake_gpu(monkeypatch, 24)
    path = tmp_path / "story.yaml"
    path.write_text("shots:\n  - prompt: a\n    seconds: 2\n")
    code, out, err = cli("video", path, "--model", "auto", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["models"]["video"] == "wan2.2-ti2v-5b"
    assert (plan["storyboard"]["width"], plan["storyboard"]["fps"]) == (1280, 24)
    assert "model auto: wan2.2-ti2v-5b" in err


def test_the_models_command_marks_what_fits_this_machine(monkeypatch, cli):
    fake_gpu(monkeypatch, 24)
    code, out, _ = cli("models")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert rows["wan2.2-ti2v-5b"].rstrip().endswith("model offload ← auto")
    assert rows["svd-xt"].rstrip().endswith("whole")
    assert "group offload" in rows["wan2.2-i2v-a14b"]
    assert "this machine: cuda, 24.0 GB free; model auto: wan2.2-ti2v-5b" in out
