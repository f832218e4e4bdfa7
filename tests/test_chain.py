"""Storyboard to video, for real: the twins, ffmpeg, the run folder, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines import clips
from pipelines.chain import VideoOptions, make_video, plan, read_storyboard, resume_video
from pipelines.video_io import probe, read_frames

ROOT = Path(__file__).resolve().parent.parent

STORY = """
fps: 8
width: 32
height: 32
seed: 7
shots:
  - prompt: a paper boat on a rainy street
    seconds: 2
    transition: crossfade
    transition_seconds: 0.5
  - prompt: the boat reaches a river at dawn
    seconds: 2.5
  - prompt: a lighthouse at night
    seconds: 1.5
"""


def write_story(tmp_path, text=STORY, name="story.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def frames_of(path):
    return np.stack(list(read_frames(path)))


def manifest(run):
    return json.loads((Path(run) / "manifest.json").read_text())


@pytest.mark.parametrize(
    "mode,model",
    [
        ("continue", "tiny-ltx"),
        ("keyframes", "tiny-wan"),
        ("keyframes", "tiny-svd"),
        ("feedback", "tiny"),
    ],
)
def test_each_mode_gives_the_storyboards_frames_fps_and_size(tmp_path, mode, model):
    result = make_video(
        write_story(tmp_path), tmp_path / "run", VideoOptions(model=model, mode=mode)
    )
    info = probe(result.video)
    assert (info.frames, info.fps, info.width, info.height) == (48, 8.0, 32, 32)  # 8 × 6 s
    m = manifest(tmp_path / "run")
    assert m["status"] == "done" and m["mode"] == mode
    for seg in m["segments"]:
        assert seg["status"] == "done" and (tmp_path / "run" / seg["file"]).is_file()
        assert {
            "index",
            "shot",
            "seed",
            "frames",
            "status",
            "file",
            "drift",
            "seconds",
        } <= seg.keys()
        assert "ssim" in seg["drift"]["join"] and "color" in seg["drift"]["join"]
    assert m["placement"]["text2img"]["device"] == "cpu"
    assert (tmp_path / "run" / "poster.jpg").is_file()
    resolved = json.loads((tmp_path / "run" / "storyboard.json").read_text())
    assert resolved["shots"][1]["transition"] == "cut" and resolved["interpolate"] == 2


def test_frame_count_is_exact_for_awkward_lengths(tmp_path, monkeypatch):
    seen = []
    real = clips._call

    def spy(loaded, batch, adapter, cancel):
        seen.extend(batch)
        return real(loaded, batch, adapter, cancel)

    monkeypatch.setattr(clips, "_call", spy)
    lengths = [1.3, 0.7, 2.05, 1.75]
    story = "fps: 12\nwidth: 32\nheight: 32\nshots:\n" + "".join(
        f"  - prompt: shot {i}\n    seconds: {s}\n" for i, s in enumerate(lengths)
    )
    # The LTX twin makes 24 fps of motion (LTX's trained rate) in 9-frame clips: the 1.3 s
    # shot (16 frames at 12 fps) needs 31 generated frames, four clips of 9 sharing a
    # frame each (33), the last cut by 2.
    sb, models = read_storyboard(story, VideoOptions(model="tiny"), text=True)
    segs = plan(sb, models)
    assert [(s.frames, s.drop) for s in segs if s.shot == 0] == [(9, 0)] * 3 + [(9, 2)]
    result = make_video(write_story(tmp_path, story), tmp_path / "run", VideoOptions(model="tiny"))
    assert probe(result.video).frames == round(12 * sum(lengths))
    assert {job.fps for job in seen} == {24}  # the rate the frames are generated at


def test_feedback_shots_split_into_even_segment_files():
    story = "mode: feedback\nfps: 8\nshots:\n  - prompt: a\n    seconds: 2.25\n  - prompt: b\n    seconds: 4.1\n"
    sb, models = read_storyboard(story, VideoOptions(model="tiny"), text=True)
    by_shot = [[s.frames for s in plan(sb, models) if s.shot == k] for k in range(2)]
    assert by_shot == [[5, 5], [6, 6, 5]]  # 10 and 17 generated frames: not [8, 2], [8, 8, 1]


def _ltx_plan(seconds):
    story = "mode: continue\nshots:\n" + "".join(
        f"  - prompt: shot {i}\n    seconds: {s}\n" for i, s in enumerate(seconds)
    )
    sb, models = read_storyboard(story, VideoOptions(model="ltx-video"), text=True)
    return sb, models, plan(sb, models)


def test_each_shot_takes_the_cheapest_legal_counts_that_keep_its_speed():
    from pipelines.plan import SPEED_TOLERANCE

    # ltx-video: 24 fps of motion for a 24 fps video, 8k+1 frames, 161 a call, 9 frames of
    # overlap when continuing: whole clips (one length batches across shots), then the rest.
    sb, models, segs = _ltx_plan([2, 3, 5, 10, 197 / 24])
    by_shot = [[s.frames for s in segs if s.shot == k] for k in range(5)]
    assert by_shot == [[49], [73], [121], [161, 81], [161, 41]]
    ref = models.video
    for k, need in enumerate(sb.shot_frames()):
        kept = sum(s.unique for s in segs if s.shot == k)
        assert abs(np.log((kept - 1) / (need - 1))) <= SPEED_TOLERANCE
        if len(by_shot[k]) == 1:  # no cheaper legal count keeps the speed
            cheaper = [c for c in range(2, by_shot[k][0]) if ref.legal_frames(c) == c]
            assert all(abs(np.log((c - 1) / (need - 1))) > SPEED_TOLERANCE for c in cheaper)
    # A shot too short for any legal count within the tolerance is cut to its length.
    sb, _, segs = _ltx_plan([8.9, 2 / 24])
    assert [(s.frames, s.drop) for s in segs] == [(161, 0), (57, 0), (9, 7)]


def test_continue_conditions_each_clip_on_the_previous_clips_last_frame(tmp_path, monkeypatch):
    seen = []  # (job, output) for every clip the pipeline made, in call order
    real = clips._call

    def spy(loaded, batch, adapter, cancel):
        out = real(loaded, batch, adapter, cancel)
        seen.extend(zip(batch, out, strict=True))
        return out

    monkeypatch.setattr(clips, "_call", spy)
    story = "fps: 8\nwidth: 32\nheight: 32\ninterpolate: 1\nshots:\n  - prompt: a long river\n    seconds: 4\n"
    make_video(write_story(tmp_path, story), tmp_path / "run", VideoOptions(model="tiny-ltx"))
    m = manifest(tmp_path / "run")
    assert len(m["segments"]) >= 3
    run = tmp_path / "run"
    for seg in m["segments"][1:]:
        assert seg["depends"] == seg["index"] - 1
        job = next(j for j, _ in seen if j.seed == seg["seed"])
        tail = np.asarray(
            __import__("PIL.Image").Image.open(
                run / f"segments/seg-{seg['depends']:03d}-tail-0.png"
            )
        )
        assert np.array_equal(np.asarray(job.first), tail)
        # and that tail is the previous clip's last frame (after colour matching)
        prev_job, prev_out = next(
            (j, o) for j, o in seen if j.seed == m["segments"][seg["depends"]]["seed"]
        )
        from pipelines import drift

        anchor = np.asarray(__import__("PIL.Image").Image.open(run / "keyframes/shot-000.png"))
        expected = drift.match_colors(drift.to_uint8(prev_out), anchor)[-1]
        assert np.array_equal(tail, expected)


def test_keyframes_batches_keyframes_and_independent_clips(tmp_path, monkeypatch):
    sizes = []
    real = clips._call

    def spy(loaded, batch, adapter, cancel):
        sizes.append(len(batch))
        return real(loaded, batch, adapter, cancel)

    monkeypatch.setattr(clips, "_call", spy)
    from pipelines import images

    image_sizes = []
    real_img = images._call_image_pipe

    def spy_img(loaded, batch):
        image_sizes.append(len(batch))
        return real_img(loaded, batch)

    monkeypatch.setattr(images, "_call_image_pipe", spy_img)
    from pipelines.settings import Runtime

    make_video(
        write_story(tmp_path),
        tmp_path / "run",
        VideoOptions(model="tiny-svd", mode="keyframes"),
        runtime=Runtime(batch_size=4),
    )
    assert max(image_sizes) == 3  # all three keyframes in one call
    assert max(sizes) > 1  # clips that do not depend on each other ran together


def test_keyframes_mode_ends_clips_on_the_next_keyframe(tmp_path):
    sb, models = read_storyboard(
        write_story(tmp_path), VideoOptions(model="tiny-wan-flf2v", mode="keyframes")
    )
    segs = plan(sb, models)
    lasts = [s for s in segs if s.last_keyframe is not None]
    assert [s.last_keyframe for s in lasts] == [1, 2]
    # The next shot starts on that keyframe, so on a cut the clip leaves its own last frame
    # out (both would show the same picture: a held frame at every join); a crossfade (shot
    # 0 into 1) blends the two anyway.
    assert [s.holdback for s in lasts] == [0, 1] and segs[-1].holdback == 0


def test_keyframes_mode_crossfades_for_models_without_a_last_frame(tmp_path):
    """Wan 2.1 image-to-video (the wan-i2v-480p preset) has no last frame: its shots join
    by crossfades, as SVD's do; the first-and-last-frame preset ends on the keyframes."""
    story = write_story(tmp_path, STORY.replace("width: 32", "width: 64").replace("height: 32",
                                                "height: 64"))  # fmt: skip

    def ends(model):
        sb, models = read_storyboard(story, VideoOptions(model=model, mode="keyframes"))
        segs = plan(sb, models)
        lasts = [max((s for s in segs if s.shot == k), key=lambda s: s.part) for k in (0, 1)]
        return [s.last_keyframe for s in lasts], [s.fade_out > 0 for s in lasts]

    assert ends("wan-i2v-480p") == ([None, None], [True, True])  # crossfades
    assert ends("wan-flf2v-720p") == ([1, 2], [True, False])  # shot 0 asked for a crossfade


def test_keyframes_joins_show_the_shared_keyframe_once(tmp_path):
    result = make_video(write_story(tmp_path), tmp_path / "run",
                        VideoOptions(model="tiny-wan-flf2v", mode="keyframes", seed=3))  # fmt: skip
    segs = manifest(tmp_path / "run")["segments"]
    for s in segs:
        written = probe(tmp_path / "run" / s["file"]).frames
        assert written == s["generated_frames"] - s["holdback"] - s["drop"]
    assert [s["holdback"] for s in segs if s["last_keyframe"] is not None] == [0, 1]
    assert probe(result.video).frames == manifest(tmp_path / "run")["frames"]


def test_overlap_is_blended_for_families_that_take_video(tmp_path):
    opts = VideoOptions(model="tiny-ltx", clip_frames=25)
    story = "fps: 8\nwidth: 32\nheight: 32\ninterpolate: 1\nshots:\n  - prompt: a long river\n    seconds: 6\n"
    sb, models = read_storyboard(write_story(tmp_path, story), opts)
    segs = plan(sb, models, opts.clip_frames)
    assert segs[1].overlap == 9 and segs[0].holdback == 9
    result = make_video(write_story(tmp_path, story), tmp_path / "run", opts)
    assert probe(result.video).frames == 48


RUNNER = """
import sys
from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(*argv, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, *map(str, argv)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


LONG = "fps: 8\nwidth: 32\nheight: 32\nseed: 3\nshots:\n" + "".join(
    f"  - prompt: scene {i}\n    seconds: 2\n" for i in range(10)
)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_same_frames(tmp_path):
    story = write_story(tmp_path, LONG)
    args = ("--model", "tiny-svd", "--batch-size", "1")
    ref = _cli("video", story, "--out", tmp_path / "ref", *args)
    victim = _cli("video", story, "--out", tmp_path / "run", *args)
    mpath = tmp_path / "run" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            done = [s for s in json.loads(mpath.read_text())["segments"] if s["status"] == "done"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            done = []
        if len(done) >= 2:
            break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()[-2000:]
    before = manifest(tmp_path / "run")
    finished = {
        s["file"]: (tmp_path / "run" / s["file"]).stat().st_mtime_ns
        for s in before["segments"]
        if s["status"] == "done"
    }
    assert 2 <= len(finished) < len(before["segments"]), "the kill must land mid-run"
    resumed = _cli("video", "--resume", tmp_path / "run")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-2000:]
    for file, mtime in finished.items():  # finished segments were not made again
        assert (tmp_path / "run" / file).stat().st_mtime_ns == mtime
    assert np.array_equal(
        frames_of(tmp_path / "run" / "video.mp4"), frames_of(tmp_path / "ref" / "video.mp4")
    )
    assert not list((tmp_path / "run" / "segments").glob(".*"))  # no temporary leftovers


def test_reroll_changes_only_that_segment_and_what_continues_from_it(tmp_path):
    story = "fps: 8\nwidth: 32\nheight: 32\ninterpolate: 1\nshots:\n  - prompt: a\n    seconds: 2.5\n  - prompt: b\n    seconds: 2.5\n"
    run = tmp_path / "run"
    make_video(write_story(tmp_path, story), run, VideoOptions(model="tiny-ltx"))
    before = manifest(run)["segments"]
    assert len(before) >= 4
    data = {s["index"]: (run / s["file"]).read_bytes() for s in before}
    target = next(s for s in before if s["shot"] == 0 and s["part"] == 0)
    first_video = frames_of(run / "video.mp4")
    resume_video(run, reroll=target["index"], seed=12345)
    after = manifest(run)["segments"]
    redo = {target["index"]}
    for s in before:  # what continues from it, directly or through another segment
        if s["depends"] in redo:
            redo.add(s["index"])
    assert len(redo) < len(before)
    for s in after:
        changed = (run / s["file"]).read_bytes() != data[s["index"]]
        assert changed == (s["index"] in redo), s["index"]
    assert after[target["index"]]["seed"] == 12345
    new_video = frames_of(run / "video.mp4")
    assert new_video.shape == first_video.shape and not np.array_equal(new_video, first_video)


def test_resume_of_a_finished_run_makes_nothing(tmp_path, monkeypatch):
    run = tmp_path / "run"
    make_video(write_story(tmp_path), run, VideoOptions(model="tiny"))
    calls = []
    monkeypatch.setattr(clips, "_call", lambda *a: calls.append(a))
    result = resume_video(run)
    assert calls == [] and result.generated == 0 and probe(result.video).frames == 48


@pytest.mark.parametrize(
    "story,field",
    [
        ("shots: []\n", "shots"),
        ("shots:\n  - prompt: a\n    seconds: 0\n", "shots[0].seconds"),
        ("shots:\n  - prompt: a\n    seconds: 100000\n", "shots[0].seconds"),
        ("fps: 0\nshots:\n  - prompt: a\n", "fps"),
        ("width: 48\nshots:\n  - prompt: a\n", "width: tiny-ltx needs a multiple of 32"),
        ("audio: missing.mp3\nshots:\n  - prompt: a\n", "audio"),
        ("shots:\n  - prompt: a\n    secs: 2\n", "unknown key 'secs'"),
        ("{not yaml: [", "storyboard"),
    ],
)
def test_bad_storyboards_exit_2_naming_the_field(cli, tmp_path, story, field):
    code, _, err = cli(
        "video", write_story(tmp_path, story), "--out", tmp_path / "run", "--model", "tiny"
    )
    assert code == 2, err
    assert err.count("\n") == 1 and field in err, err
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_the_plan_and_loads_and_writes_nothing(cli, tmp_path):
    story = write_story(tmp_path, "fps: 24\nshots:\n  - prompt: a\n    seconds: 3\n"
                        "  - prompt: b\n    seconds: 10\n")  # fmt: skip
    before = sorted(tmp_path.rglob("*"))
    # ltx-video's weights are not here (no hub): planning must not need them.
    code, out, err = cli("video", story, "--dry-run", "--model", "ltx-video")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("2 shots, 312 frames at 24 fps (13.0 s), 768×512")
    rows = [line.split() for line in lines[2:-1]]
    # LTX makes 24 fps of motion: a 24 fps video needs a frame made for each it shows.
    assert rows == [["0", "0", "73", "-", "72", "24"], ["1", "1", "161", "-", "157", "24"],
                    ["2", "1", "81", "1", "(9)", "83", "24"]]  # fmt: skip
    assert lines[-1].startswith("3 video calls make 315 frames at 24 fps of motion for 312 "
                                "output frames (0.99")  # fmt: skip
    assert sorted(tmp_path.rglob("*")) == before
    code, _, err = cli("video", write_story(tmp_path, "shots: []\n", "bad.yaml"), "--dry-run")
    assert code == 2 and err.startswith("error: shots") and err.count("\n") == 1, err
    code, _, err = cli("video", "--resume", tmp_path / "run", "--dry-run")
    assert code == 2 and "drop --resume" in err, err
    # What the real run would refuse, the dry run refuses too.
    code, _, err = cli("video", story, "--dry-run", "--reroll", "3")
    assert code == 2 and err.startswith("error: reroll"), err
    code, _, err = cli("video", story, "--dry-run", "--out", story)
    assert code == 2 and err.startswith("error: out:") and "is a file" in err, err


@pytest.mark.parametrize(
    ("env", "phrase"),
    [
        ({"REELCHAIN_MAX_SECONDS_TOTAL": "2"}, "limit max_seconds_total"),
        ({"REELCHAIN_MAX_SHOTS": "1"}, "limit max_shots"),
        ({"REELCHAIN_MAX_SIDE": "24"}, "max_side"),
    ],
)
def test_the_deployments_caps_hold_for_cli_videos(cli, tmp_path, monkeypatch, env, phrase):
    """The same `REELCHAIN_MAX_*` caps as the UI's: a storyboard over one is refused with one
    line (exit 2) before anything is made."""
    story = write_story(tmp_path, "fps: 8\nwidth: 32\nheight: 32\nshots:\n"
                        "  - prompt: a\n    seconds: 2\n  - prompt: b\n    seconds: 2\n")  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, _, err = cli("video", story, "--out", tmp_path / "run", "--model", "tiny-ltx")
    assert code == 2 and err.startswith("error: ") and phrase in err, err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_usage_errors_point_to_the_right_help(capsys):
    from pipelines.cli import main

    def usage_error(*argv):
        with pytest.raises(SystemExit) as info:
            main(list(argv))
        assert info.value.code == 2
        return capsys.readouterr().err

    assert usage_error("--bogus").endswith("(see `python -m pipelines --help`)\n")
    assert usage_error("video", "--clip-frames", "x").endswith(
        "(see `python -m pipelines video --help`)\n"
    )


def test_a_native_size_only_model_refuses_other_sizes_before_loading(cli, tmp_path):
    """CogVideoX-5b-I2V (1.0) makes 720×480 only; a storyboard at another size stops at
    once (no weights are needed to say so), not after its keyframes."""
    story = write_story(tmp_path, "width: 512\nheight: 512\nshots:\n  - prompt: a\n")
    code, _, err = cli("video", story, "--out", tmp_path / "run", "--model", "cogvideox-5b-i2v")
    assert code == 2, err
    assert err.count("\n") == 1 and "width: cogvideox-5b-i2v makes 720×480 only" in err
    assert not (tmp_path / "run").exists()


def test_video_model_in_feedback_mode_is_refused(cli, tmp_path):
    code, _, err = cli(
        "video",
        write_story(tmp_path),
        "--out",
        tmp_path / "r",
        "--model",
        "tiny-ltx",
        "--mode",
        "feedback",
    )
    assert code == 2 and "feedback mode needs an image model" in err


def test_out_folder_with_a_run_is_not_overwritten(cli, tmp_path):
    story = write_story(tmp_path)
    assert cli("video", story, "--out", tmp_path / "run", "--model", "tiny")[0] == 0
    code, _, err = cli("video", story, "--out", tmp_path / "run", "--model", "tiny")
    assert code == 2 and "--resume" in err


def test_audio_track_is_trimmed_to_the_video(tmp_path):
    import wave

    wav = tmp_path / "music.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        t = np.arange(16000 * 10) / 16000
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes())
    story = STORY.replace("seed: 7", "seed: 7\naudio: music.wav")
    result = make_video(write_story(tmp_path, story), tmp_path / "run", VideoOptions(model="tiny"))
    info = probe(result.video)
    assert info.has_audio and abs(info.audio_duration - info.duration) < 0.15


def test_disk_full_while_writing_keeps_finished_segments(tmp_path, monkeypatch):
    import errno

    from pipelines import video_io

    real_write = video_io.VideoWriter.write
    count = {"n": 0}

    def full(self, frames):
        count["n"] += 1
        if count["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, frames)

    monkeypatch.setattr(video_io.VideoWriter, "write", full)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="No space"):
        make_video(write_story(tmp_path), run, VideoOptions(model="tiny-ltx"))
    done = [s for s in manifest(run)["segments"] if s["status"] == "done"]
    assert len(done) == 2 and all((run / s["file"]).is_file() for s in done)
    monkeypatch.setattr(video_io.VideoWriter, "write", real_write)
    result = resume_video(run)
    assert probe(result.video).frames == 48


def test_out_of_memory_at_batch_one_makes_shorter_clips(tmp_path, monkeypatch):
    import torch

    real = clips._call

    def small_memory(loaded, batch, adapter, cancel):
        if batch[0].num_frames > 9:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(loaded, batch, adapter, cancel)

    monkeypatch.setattr(clips, "_call", small_memory)
    story = "fps: 8\nwidth: 32\nheight: 32\ninterpolate: 1\nshots:\n  - prompt: a river\n    seconds: 4\n"
    run = tmp_path / "run"
    result = make_video(
        write_story(tmp_path, story), run, VideoOptions(model="tiny-ltx", clip_frames=17)
    )
    assert probe(result.video).frames == 32  # the video keeps its length
    m = manifest(run)
    assert m["ladder"] and all(s["generated_frames"] == 9 for s in m["segments"])
    assert "frames 17→9" in m["ladder"][0]


def test_cli_takes_the_keyframe_model_and_clip_frames(cli, tmp_path):
    code, out, err = cli(
        "video",
        write_story(tmp_path),
        "--out",
        tmp_path / "run",
        "--model",
        "tiny-ltx",
        "--image-model",
        "tiny-image",
        "--clip-frames",
        "17",
    )
    assert code == 0, err
    m = manifest(tmp_path / "run")
    assert m["image_model"] == "tiny-image" and m["clip_frames"] == 17
    code, _, err = cli(
        "video",
        write_story(tmp_path),
        "--out",
        tmp_path / "r2",
        "--model",
        "tiny-ltx",
        "--clip-frames",
        "10",
    )
    assert code == 2 and "clip-frames: tiny-ltx needs 8k+1 frames (got 10; use 17)" in err


def test_unreadable_audio_fails_before_any_generation(cli, tmp_path, monkeypatch):
    (tmp_path / "music.mp3").write_bytes(b"not audio at all")
    calls = []
    monkeypatch.setattr(clips, "_call", lambda *a: calls.append(a))
    story = STORY.replace("seed: 7", "seed: 7\naudio: music.mp3")
    code, _, err = cli(
        "video", write_story(tmp_path, story), "--out", tmp_path / "run", "--model", "tiny"
    )
    assert code == 2 and err.startswith("error: audio: cannot read 'music.mp3'") and calls == []


def test_frozen_clips_are_made_again_and_never_reported_done(tmp_path, monkeypatch):
    real = clips._call
    state = {"frozen": 1}

    def sometimes_frozen(loaded, batch, adapter, cancel):
        out = real(loaded, batch, adapter, cancel)
        if state["frozen"]:
            state["frozen"] -= 1
            out = [np.repeat(o[:1], len(o), axis=0) for o in out]  # one image repeated
        return out

    monkeypatch.setattr(clips, "_call", sometimes_frozen)
    story = "fps: 8\nwidth: 32\nheight: 32\nshots:\n  - prompt: a\n    seconds: 1\n"
    make_video(write_story(tmp_path, story), tmp_path / "run", VideoOptions(model="tiny-ltx"))
    seg = manifest(tmp_path / "run")["segments"][0]
    assert seg["status"] == "done" and seg["tries"] == 2

    # Made again (its file damaged), it comes out the same: the manifest keeps the seed that
    # made it, not the one whose clip was frozen.
    first = (tmp_path / "run" / seg["file"]).read_bytes()
    (tmp_path / "run" / seg["file"]).write_bytes(first[: len(first) // 2])
    resume_video(tmp_path / "run")
    assert (tmp_path / "run" / seg["file"]).read_bytes() == first

    state["frozen"] = 99  # never healthy: the run stops, the segment is marked failed
    with pytest.raises(RuntimeError, match="frozen frames after 3 tries"):
        make_video(write_story(tmp_path, story), tmp_path / "run2", VideoOptions(model="tiny-ltx"))
    seg = manifest(tmp_path / "run2")["segments"][0]
    assert seg["status"] == "failed" and not (tmp_path / "run2" / "video.mp4").exists()


@pytest.mark.parametrize(
    "story,model,extra",
    [
        # a crossfade longer than the next shot's first clip share
        (
            '{"fps":24,"width":64,"height":64,"shots":[{"prompt":"a","seconds":1.5,"transition":"crossfade",'
            '"transition_seconds":0.5},{"prompt":"b","seconds":1}]}',
            "tiny",
            (),
        ),
        (
            '{"fps":8,"width":32,"height":32,"shots":[{"prompt":"a","seconds":4,"transition":"crossfade",'
            '"transition_seconds":3},{"prompt":"b","seconds":4}]}',
            "tiny",
            (),
        ),
        (
            '{"fps":8,"width":32,"height":32,"shots":[{"prompt":"a","seconds":2,"transition":"crossfade"},'
            '{"prompt":"b","seconds":2}]}',
            "tiny-svd",
            ("--clip-frames", "2"),
        ),
    ],
)
def test_crossfades_always_fit_the_next_shot(cli, tmp_path, story, model, extra):
    path = write_story(tmp_path, story, "story.json")
    code, out, err = cli("video", path, "--out", tmp_path / "run", "--model", model, *extra)
    assert code == 0, err
    data = json.loads(story)
    assert probe(Path(out.strip())).frames == round(
        data["fps"] * sum(s["seconds"] for s in data["shots"])
    )


def test_one_frame_clips_are_refused(cli, tmp_path):
    code, _, err = cli(
        "video",
        write_story(tmp_path),
        "--out",
        tmp_path / "r",
        "--model",
        "tiny-svd",
        "--clip-frames",
        "1",
    )
    assert code == 2 and "clip-frames: must be at least 2" in err


def test_a_crash_mid_wave_keeps_the_clips_already_made(tmp_path, monkeypatch):
    real = clips._call
    calls = {"n": 0}

    def crash_on_sixth(loaded, batch, adapter, cancel):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(loaded, batch, adapter, cancel)

    monkeypatch.setattr(clips, "_call", crash_on_sixth)
    story = "fps: 8\nwidth: 32\nheight: 32\nshots:\n" + "".join(
        f"  - prompt: s{i}\n    seconds: 1\n" for i in range(8)
    )
    from pipelines.settings import Runtime

    with pytest.raises(KeyboardInterrupt):
        make_video(
            write_story(tmp_path, story),
            tmp_path / "run",
            VideoOptions(model="tiny-wan"),
            runtime=Runtime(batch_size=1),
        )
    done = [s for s in manifest(tmp_path / "run")["segments"] if s["status"] == "done"]
    assert len(done) == 5 and all((tmp_path / "run" / s["file"]).is_file() for s in done)


def test_resume_removes_only_its_own_leftovers(cli, tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / ".env").write_text("S=1\n")
    (run / ".video.partial-abc.mp4").write_bytes(b"half")
    assert cli("video", write_story(tmp_path), "--out", run, "--model", "tiny")[0] == 0
    (run / "segments" / ".seg-000.partial-xyz.mp4").write_bytes(b"half")
    assert cli("video", "--resume", run)[0] == 0
    assert (run / ".env").read_text() == "S=1\n"
    assert not list(run.glob("**/.*partial-*"))


def test_cli_seed_overrides_and_resume_refuses_new_settings(cli, tmp_path):
    run = tmp_path / "run"
    assert (
        cli("video", write_story(tmp_path), "--out", run, "--model", "tiny", "--seed", "99")[0] == 0
    )
    assert json.loads((run / "storyboard.json").read_text())["seed"] == 99
    code, _, err = cli("video", "--resume", run, "--model", "tiny-wan")
    assert code == 2 and "resume: the run folder fixes --model" in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = cli("video", write_story(tmp_path), "--out", afile, "--model", "tiny")
    assert code == 2 and err.startswith("error: out:")


def test_feedback_with_a_light_touch_runs_at_least_one_step(tmp_path):
    """Strength 0.2 at the image model's 2 steps would run int(0.4) = 0 denoising steps,
    which fails inside diffusers; the steps are raised so that one runs."""
    story = "fps: 8\nwidth: 32\nheight: 32\nmode: feedback\nshots:\n  - prompt: a pond\n" \
            "    seconds: 1\n    strength: 0.2\n"  # fmt: skip
    result = make_video(write_story(tmp_path, story), tmp_path / "run", VideoOptions(model="tiny"))
    assert probe(result.video).frames == 8
