"""Editor timelines: read back by opentimelineio and the EDL adapter, checked against the
frames the stitcher really made (a synthetic run) and against a tiny real run."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from conftest import write_tone

from pipelines import timeline
from pipelines.files import read_json, write_json
from pipelines.stitch import Part, stitch
from pipelines.video_io import VideoWriter, probe, read_frames

FPS = 8
SIDE = 32


def _gray(position: float) -> float:
    """The grey level of a synthetic shot's stream frame: its position, readable after coding."""
    return 20 + 5 * position


def make_run(
    root: Path,
    files: list[list[int]],
    shown: list[int],
    fades: list[int],
    audio: Path | None = None,
) -> Path:
    """A run folder as `chain` leaves it: segment files (flat grey frames, each shot's frames
    counting up), manifest, storyboard, and the video made by the real stitcher."""
    segments, parts, index, first_out = [], [], 0, 0
    for k, counts in enumerate(files):
        paths, position = [], 0
        for n in counts:
            path = root / "segments" / f"seg-{index:03d}.mp4"
            with VideoWriter(path, FPS, SIDE, SIDE, quality="segment") as w:
                for i in range(n):
                    w.write(np.full((SIDE, SIDE, 3), round(_gray(position + i)), np.uint8))
            position += n
            segments.append({"index": index, "shot": k, "n_out": 0, "fade_out": 0,
                             "first_out": first_out, "status": "done",
                             "file": f"segments/{path.name}"})  # fmt: skip
            paths.append(path)
            index += 1
        segments[-len(counts)]["n_out"] = shown[k] + fades[k]
        segments[-1]["fade_out"] = fades[k]
        parts.append(Part(paths[0], shown[k], fades[k], tuple(paths[1:])))
        first_out += shown[k]
    stitch(parts, root / "video.mp4", FPS, audio=audio)
    write_json(root / "manifest.json", {"version": 1, "status": "done", "video": "video.mp4",
                                        "fps": FPS, "segments": segments})  # fmt: skip
    write_json(root / "storyboard.json", {"fps": FPS, "audio": str(audio) if audio else None})
    return root


# Shot 0 speeds up a little and dissolves into shot 1 over frames its short last file holds
# only in part; shot 1 is interpolated (fewer frames than it shows); shot 2 is decimated.
FILES, SHOWN, FADES = [[7, 7, 3], [5, 6], [9]], [12, 20, 6], [4, 0, 0]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return make_run(root, FILES, SHOWN, FADES, audio=write_tone(root / "music.wav", 3.0))


def _clips(tl) -> list[tuple[int, otio.schema.Clip]]:
    """(first output frame, clip) of each clip on the video track."""
    track = tl.video_tracks()[0]
    return [(round(c.range_in_parent().start_time.value), c) for c in track.find_clips()]


def _speed(clip) -> float:
    warps = [e for e in clip.effects if isinstance(e, otio.schema.LinearTimeWarp)]
    return warps[0].time_scalar if warps else 1.0


def test_otio_reads_back_with_the_videos_frames(synthetic):
    paths = timeline.write_timelines(synthetic)
    assert [p.name for p in paths] == ["timeline.otio", "timeline.edl"]
    tl = otio.adapters.read_from_file(str(synthetic / "timeline.otio"))
    frames = probe(synthetic / "video.mp4").frames
    assert frames == sum(SHOWN)
    assert tl.video_tracks()[0].duration() == otio.opentime.RationalTime(frames, FPS)
    assert sum(c.duration().value for _, c in _clips(tl)) == frames


def test_clips_show_the_frames_the_stitcher_made(synthetic):
    """Relinking the files in the timeline gives video.mp4's frames, outside the dissolve."""
    tl = otio.adapters.read_from_file(str(synthetic / "timeline.otio"))
    video = [float(f.mean()) for f in read_frames(synthetic / "video.mp4")]
    offsets, index = {}, 0  # file name -> where it starts in its shot's stream
    for counts in FILES:
        for start in np.cumsum([0, *counts[:-1]]):
            offsets[f"seg-{index:03d}"] = int(start)
            index += 1
    blended = set(range(SHOWN[0] - 1, SHOWN[0] + FADES[0]))  # the dissolve, and its lead-in
    checked = 0
    for start, clip in _clips(tl):
        in_point = clip.source_range.start_time.value
        for t in range(start, start + round(clip.duration().value)):
            if t in blended:
                continue
            position = offsets[clip.name] + in_point + (t - start) * _speed(clip)
            assert video[t] == pytest.approx(_gray(position), abs=4), (clip.name, t)
            checked += 1
    assert checked == sum(SHOWN) - len(blended)


def test_every_clip_and_handle_lies_in_its_file(synthetic):
    """What each clip shows, its dissolve handle included, is media its file has."""
    tl = otio.adapters.read_from_file(str(synthetic / "timeline.otio"))
    track = tl.video_tracks()[0]
    for i, item in enumerate(track):
        if isinstance(item, otio.schema.Transition):
            continue
        handle = 0
        if i + 1 < len(track) and isinstance(track[i + 1], otio.schema.Transition):
            handle = track[i + 1].out_offset.value
        exact = item.metadata["reelchain"]["position"]
        assert item.source_range.start_time.value == pytest.approx(exact, abs=0.5)
        shown = exact + (item.duration().value + handle - 1) * _speed(item)
        assert shown < item.media_reference.available_range.duration.value, item.name


def test_dissolve_where_the_stitcher_crossfades(synthetic):
    tl = otio.adapters.read_from_file(str(synthetic / "timeline.otio"))
    track = tl.video_tracks()[0]
    transitions = [t for t in track if isinstance(t, otio.schema.Transition)]
    assert len(transitions) == 1
    dissolve = transitions[0]
    assert dissolve.transition_type == otio.schema.TransitionTypes.SMPTE_Dissolve
    assert dissolve.range_in_parent() == otio.opentime.TimeRange(
        otio.opentime.RationalTime(SHOWN[0], FPS), otio.opentime.RationalTime(FADES[0], FPS)
    )
    before = track[track.index(dissolve) - 1]
    assert before.name == "seg-002"  # the handle comes from the shot's last file


def test_audio_track_holds_the_storyboards_audio(synthetic):
    tl = otio.adapters.read_from_file(str(synthetic / "timeline.otio"))
    (audio,) = tl.audio_tracks()
    (clip,) = audio.find_clips()
    assert clip.media_reference.target_url == (synthetic / "music.wav").resolve().as_uri()
    assert clip.duration() == otio.opentime.RationalTime(3 * FPS, FPS)  # the tone is 3 s long


def test_edl_parses_back_with_the_same_cut(synthetic):
    text = (synthetic / "timeline.edl").read_text()
    edl = otio.adapters.read_from_string(text, "cmx_3600", rate=24)
    track = edl.tracks[0]
    assert edl.duration() == otio.opentime.RationalTime(3 * sum(SHOWN), 24)  # 8 fps at 24 ticks
    cuts = [round(t.range_in_parent().start_time.value) for t in track
            if isinstance(t, otio.schema.Transition)]  # fmt: skip
    assert cuts == [3 * SHOWN[0]]
    assert len(track.find_clips()) == len(_clips(otio.adapters.read_from_file(
        str(synthetic / "timeline.otio"))))  # fmt: skip


def test_fcpxml_refused_where_it_would_lose_the_cut(synthetic):
    with pytest.raises(ValueError, match=r"^format: fcpxml .*dissolve"):
        timeline.export(synthetic, "fcpxml")


def test_fcpxml_of_a_plain_cut(tmp_path):
    """Cuts only and files at the video's speed: FCPXML carries that cut."""
    run = make_run(tmp_path, [[5], [3, 4]], [5, 7], [0, 0])
    out = timeline.export(run, "fcpxml", tmp_path / "cut.fcpxml")
    sequence = ET.parse(out).getroot().find("./project/sequence")
    assert sequence is not None and sequence.get("duration") == "3/2s"  # 12 frames at 8 fps
    assert len(sequence.findall("./spine/clip")) == 3


def test_bad_requests_name_the_field(tmp_path, synthetic, monkeypatch):
    with pytest.raises(ValueError, match=r"^format: unknown 'mov'"):
        timeline.export(synthetic, "mov")
    with pytest.raises(ValueError, match=r"^run: no manifest.json"):
        timeline.export(tmp_path, "otio")
    with pytest.raises(ValueError, match=r"^format: edl counts time at .* 7 fps"):
        timeline._rate("edl", 7)
    monkeypatch.setattr(otio.adapters, "available_adapter_names", lambda: ["otio_json"])
    with pytest.raises(ValueError, match=r"^format: edl needs the otio-cmx3600-adapter package"):
        timeline.export(synthetic, "edl")
    assert [p.name for p in timeline.write_timelines(synthetic)] == ["timeline.otio"]


@pytest.mark.slow
def test_a_real_tiny_run(tmp_path):
    """The twins' run: its manifest's shots and crossfade land where the timeline says."""
    from pipelines import VideoOptions, make_video

    music = write_tone(tmp_path / "music.wav", 5.0)
    story = tmp_path / "story.yaml"
    story.write_text(
        f"fps: 8\nwidth: 32\nheight: 32\nseed: 3\naudio: {music}\nshots:\n"
        "  - {prompt: a boat, seconds: 1, transition: crossfade, transition_seconds: 0.5}\n"
        "  - {prompt: a river, seconds: 1}\n"
    )
    result = make_video(story, tmp_path / "run", VideoOptions(model="tiny"))
    paths = timeline.write_timelines(result.run_dir)
    assert {p.suffix for p in paths} == {".otio", ".edl"}
    tl = otio.adapters.read_from_file(str(result.run_dir / "timeline.otio"))
    assert tl.video_tracks()[0].duration().value == probe(result.video).frames == 16
    manifest = read_json(result.run_dir / "manifest.json")
    second = next(s for s in manifest["segments"] if s["shot"] == 1)
    (dissolve,) = [t for t in tl.video_tracks()[0] if isinstance(t, otio.schema.Transition)]
    assert dissolve.range_in_parent().start_time.value == second["first_out"]
    assert dissolve.out_offset.value == 4  # 0.5 s at 8 fps
    (audio,) = tl.audio_tracks()[0].find_clips()
    assert audio.duration().value == 16 and audio.name == "music"


def test_every_run_writes_its_timeline(tmp_path):
    """A finished run folder holds timeline.otio (and the EDL), named in its manifest."""
    import json

    import opentimelineio as otio

    from pipelines.chain import VideoOptions, make_video

    story = tmp_path / "story.yaml"
    story.write_text("fps: 8\nwidth: 32\nheight: 32\nshots:\n  - prompt: a\n    seconds: 1\n"
                     "    transition: crossfade\n  - prompt: b\n    seconds: 1\n")  # fmt: skip
    result = make_video(story, tmp_path / "run", VideoOptions(model="tiny-wan22"))
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["timelines"][:2] == ["timeline.otio", "timeline.edl"]
    timeline = otio.adapters.read_from_file(str(result.run_dir / "timeline.otio"))
    assert timeline.duration().to_frames() == result.frames == 16
