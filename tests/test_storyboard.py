"""Storyboard parsing and validation: the contract users write against.

Error assertions check the whole message shape users see (field path first, then the
fix), since those one-liners are the interface for anyone with a typo in a storyboard.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pipelines.storyboard import (
    _MOTION_FIELDS,
    _SHOT_FIELDS,
    _STORYBOARD_FIELDS,
    FORMATS,
    MODES,
    TRANSITIONS,
    Limits,
    Motion,
    Shot,
    Storyboard,
    StoryboardError,
    load_storyboard,
    parse_storyboard,
)

FULL_YAML = """\
mode: feedback
fps: 8
width: 256
height: 256
seed: 7
model: tiny
negative_prompt: blurry
audio: music.mp3
interpolate: 2
color_match: true
steps: null
guidance: null
format: mp4
shots:
  - prompt: a paper boat on a rainy street
    seconds: 2
    negative_prompt: ""
    seed: 11
    transition: crossfade
    transition_seconds: 0.5
  - prompt: the boat reaches a river at dawn
    seconds: 2
    motion: {zoom: 1.02, pan_x: 0, pan_y: 0, rotate: 0}
    strength: 0.45
"""


def two_shots(**top: Any) -> dict[str, Any]:
    """A minimal valid storyboard as data, with top-level overrides."""
    return {"shots": [{"prompt": "a", "seconds": 2}, {"prompt": "b", "seconds": 2}], **top}


def error_of(data: Any, **kwargs: Any) -> str:
    with pytest.raises(StoryboardError) as info:
        Storyboard.from_dict(data, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def with_shot(index: int, **fields: Any) -> dict[str, Any]:
    data = two_shots()
    data["shots"][index].update(fields)
    return data


# --- formats ------------------------------------------------------------------------------


def test_full_contract_example_parses(tmp_path: Path) -> None:
    (tmp_path / "music.mp3").write_bytes(b"ID3")
    path = tmp_path / "board.yaml"
    path.write_text(FULL_YAML, encoding="utf-8")
    sb = load_storyboard(path)
    assert (sb.mode, sb.fps, sb.width, sb.height, sb.seed) == ("feedback", 8, 256, 256, 7)
    assert (sb.model, sb.negative_prompt, sb.format) == ("tiny", "blurry", "mp4")
    assert sb.audio == str(tmp_path / "music.mp3")
    assert (sb.interpolate, sb.color_match, sb.steps, sb.guidance) == (2, True, None, None)
    first, second = sb.shots
    assert first == Shot(
        prompt="a paper boat on a rainy street",
        seconds=2.0,
        negative_prompt="",
        seed=11,
        transition="crossfade",
        transition_seconds=0.5,
        motion=Motion(),
        strength=0.45,
    )
    assert second.negative_prompt == "blurry"  # inherited
    assert second.seed == 7 + 1  # storyboard seed + shot index
    assert second.motion == Motion(zoom=1.02)
    assert second.transition == "cut"
    assert second.transition_seconds == 0.0


def test_defaults_are_filled_in() -> None:
    sb = parse_storyboard("shots:\n  - prompt: a boat\n")
    assert sb.to_dict() == {
        "mode": "continue",
        "fps": 8,
        "width": 256,
        "height": 256,
        "seed": 0,
        "model": None,
        "negative_prompt": "",
        "audio": None,
        "interpolate": 2,
        "color_match": True,
        "steps": None,
        "guidance": None,
        "format": "mp4",
        "loras": [],
        "continuity": "none",
        "reference": None,
        "continuity_strength": 0.5,
        "title": None,
        "end_card": None,
        "voice": None,
        "duck_db": 12.0,
        "music_fade": 1.0,
        "audio_mix": "mix",
        "shots": [
            {
                "prompt": "a boat",
                "seconds": 2.0,
                "negative_prompt": "",
                "seed": 0,
                "transition": "cut",
                "transition_seconds": 0.0,
                "motion": {"zoom": 1.0, "pan_x": 0.0, "pan_y": 0.0, "rotate": 0.0},
                "strength": 0.45,
                "image": None,
                "caption": None,
                "loras": [],
                "loras_mode": "replace",
            }
        ],
    }


def test_null_means_default() -> None:
    sb = parse_storyboard(
        "fps:\nseed: 3\nnegative_prompt: ugly\n"
        "shots:\n  - {prompt: a, seconds: null, seed: null, negative_prompt: null}\n"
    )
    assert sb.fps == 8
    assert sb.shots[0].seconds == 2.0
    assert sb.shots[0].seed == 3
    assert sb.shots[0].negative_prompt == "ugly"


def test_crossfade_gets_default_seconds() -> None:
    sb = Storyboard.from_dict(with_shot(0, transition="crossfade"))
    assert sb.shots[0].transition_seconds == 0.5


def test_json_text_and_file(tmp_path: Path) -> None:
    text = json.dumps({"fps": 12, "shots": [{"prompt": "a", "seconds": 1.5}]})
    sb = parse_storyboard(text)
    assert (sb.fps, sb.shots[0].seconds) == (12, 1.5)
    path = tmp_path / "b.json"
    path.write_text(text, encoding="utf-8")
    assert load_storyboard(path) == sb
    assert parse_storyboard(text, fmt="json") == sb


def test_txt_one_shot_per_line(tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_text("# a comment\n\n  a paper boat  \n   # indented comment\nthe river\n")
    sb = load_storyboard(path)
    assert [(s.prompt, s.seconds) for s in sb.shots] == [("a paper boat", 2.0), ("the river", 2.0)]
    assert sb.mode == "continue" and sb.fps == 8


def test_txt_errors_give_the_line() -> None:
    text = "# title\nfine\n\n" + "x" * 50 + "\n"
    with pytest.raises(StoryboardError) as info:
        parse_storyboard(text, fmt="txt", limits=Limits(max_prompt_chars=10))
    assert str(info.value) == (
        "shots[1].prompt: must be at most 10 characters (got 50; limit max_prompt_chars) (line 4)"
    )
    with pytest.raises(ValueError, match=r"^shots: at least one shot is required$"):
        parse_storyboard("# only comments\n\n", fmt="txt")


def test_top_level_list_is_the_shots() -> None:
    sb = parse_storyboard("- a paper boat\n- prompt: the river\n  seconds: 3\n")
    assert [(s.prompt, s.seconds) for s in sb.shots] == [("a paper boat", 2.0), ("the river", 3.0)]
    assert sb == parse_storyboard('["a paper boat", {"prompt": "the river", "seconds": 3}]')


def test_plain_string_shots_inside_mapping() -> None:
    sb = parse_storyboard("seed: 5\nshots: [one, two]")
    assert [(s.prompt, s.seed) for s in sb.shots] == [("one", 5), ("two", 6)]


def test_yaml_flow_style_starting_with_brace_is_accepted() -> None:
    sb = parse_storyboard("{fps: 10, shots: [a]}")
    assert sb.fps == 10


def test_yaml_merge_keys_are_not_duplicates() -> None:
    sb = parse_storyboard(
        "shots:\n  - &base {prompt: a, seconds: 3, seed: 9}\n  - {<<: *base, prompt: b}\n"
    )
    assert (sb.shots[1].prompt, sb.shots[1].seconds, sb.shots[1].seed) == ("b", 3.0, 9)


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_bytes("\ufeffshots: [a]\n".encode())
    assert load_storyboard(path).shots[0].prompt == "a"


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        (
            "{fps: 8,, shots: [",
            None,
            "storyboard: not valid JSON (line 1, column 2: Expecting property name enclosed in "
            "double quotes)",
        ),
        (
            '{"fps": 8 "shots": []}',
            None,
            "storyboard: not valid JSON (line 1, column 11: Expecting ',' delimiter)",
        ),
        ("fps: 8\nshots: [a\n", None, "storyboard: not valid YAML or JSON (line 3: "),
        ("fps: 8\n  bad: indent: here\n", None, "storyboard: not valid YAML or JSON (line 2: "),
        ("fps: 8\nfps: 9\nshots: [a]", None, "storyboard: not valid YAML or JSON (line 2: "),
        ('{"shots": ["a"], "shots": ["b"]}', None, "storyboard: duplicate key 'shots'"),
        ("fps: 8\nshots: [a]", "json", "storyboard: not valid JSON (line 1, column 1: "),
        ("", None, "storyboard: is empty"),
        ("   \n# only a comment\n", None, "storyboard: is empty"),
        ("just some words", None, "storyboard: must be a mapping with 'shots', or a list of "),
        ("42", None, "storyboard: must be a mapping with 'shots', or a list of shots (got 42)"),
        ("- 42\n", None, "shots[0]: must be a mapping or a prompt string (got 42)"),
    ],
)
def test_unparseable_text(text: str, fmt: str | None, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_storyboard(text, fmt=fmt)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_duplicate_yaml_key_is_named() -> None:
    with pytest.raises(ValueError, match=r"\(line 2: duplicate key 'fps'\)$"):
        parse_storyboard("fps: 8\nfps: 9\nshots: [a]")


def test_unknown_fmt() -> None:
    with pytest.raises(ValueError, match=r"^fmt: must be one of yaml, json, txt or None"):
        parse_storyboard("shots: [a]", fmt="toml")


# --- files --------------------------------------------------------------------------------


def test_load_rejects_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "b.md"
    path.write_text("shots: [a]")
    with pytest.raises(ValueError) as info:
        load_storyboard(path)
    assert str(info.value) == (
        "storyboard: unsupported file type '.md' (allowed: .json, .txt, .yaml, .yml)"
    )


def test_load_accepts_yml_and_upper_case_suffix(tmp_path: Path) -> None:
    for name in ("b.yml", "B.YAML"):
        path = tmp_path / name
        path.write_text("shots: [a]")
        assert load_storyboard(path).shots[0].prompt == "a"


def test_load_missing_directory_and_binary(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match=r"^storyboard: file not found: '.*nope\.yaml'$"):
        load_storyboard(missing)
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"^storyboard: (not a file|cannot read)"):
        load_storyboard(folder)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match=r"^storyboard: cannot read '.*bin\.yaml': not UTF-8"):
        load_storyboard(binary)


# --- unknown keys -------------------------------------------------------------------------


def test_unknown_top_level_key_suggests_the_closest() -> None:
    message = error_of(two_shots(fsp=8))
    assert message == (
        "storyboard: unknown key 'fsp' (allowed: mode, fps, width, height, seed, model, "
        "negative_prompt, audio, interpolate, color_match, steps, guidance, format, loras, "
        "continuity, reference, continuity_strength, title, end_card, voice, duck_db, "
        "music_fade, audio_mix, shots); "
        "did you mean 'fps'?"
    )


def test_unknown_shot_key_names_the_shot() -> None:
    message = error_of(with_shot(1, secs=2))
    assert message.startswith("shots[1]: unknown key 'secs' (allowed: prompt, seconds, ")
    assert message.endswith("; did you mean 'seconds'?")


def test_unknown_motion_key() -> None:
    assert error_of(with_shot(0, motion={"zom": 1.1})) == (
        "shots[0].motion: unknown key 'zom' (allowed: zoom, pan_x, pan_y, rotate); "
        "did you mean 'zoom'?"
    )


def test_unknown_key_without_a_close_match() -> None:
    message = error_of(two_shots(colour_grading_lut="x"))
    assert message.startswith("storyboard: unknown key 'colour_grading_lut' (allowed: ")
    assert "did you mean" not in message


# --- field validation ---------------------------------------------------------------------

TOP_LEVEL_ERRORS = [
    ({"fps": 0}, "fps: must be between 1 and 60 (got 0)"),
    ({"fps": 61}, "fps: must be between 1 and 60 (got 61; limit max_fps)"),
    ({"fps": 7.5}, "fps: must be an integer (got 7.5)"),
    ({"fps": "8"}, "fps: must be an integer (got '8')"),
    ({"fps": True}, "fps: must be an integer (got true)"),
    ({"width": 250}, "width: must be a multiple of 8 between 32 and 4096 (got 250)"),
    ({"width": 24}, "width: must be a multiple of 8 between 32 and 4096 (got 24)"),
    ({"height": 4104}, "height: must be a multiple of 8 between 32 and 4096 (got 4104; limit "),
    ({"seed": -1}, "seed: must be between 0 and 4294967295 (got -1)"),
    ({"seed": 2**32}, "seed: must be between 0 and 4294967295 (got 4294967296)"),
    ({"mode": "feedbak"}, "mode: must be one of continue, keyframes, feedback (got 'feedbak'); "),
    ({"mode": 3}, "mode: must be one of continue, keyframes, feedback (got 3)"),
    ({"format": "avi"}, "format: must be one of mp4, webm, gif (got 'avi')"),
    ({"model": ""}, "model: must be a non-empty string (got '')"),
    ({"model": 7}, "model: must be a non-empty string (got 7)"),
    ({"negative_prompt": ["x"]}, "negative_prompt: must be a string (got a list)"),
    ({"negative_prompt": "x" * 2001}, "negative_prompt: must be at most 2000 characters (got "),
    ({"interpolate": 0}, "interpolate: must be between 1 and 8 (got 0)"),
    ({"interpolate": 9}, "interpolate: must be between 1 and 8 (got 9)"),
    ({"color_match": "yes"}, "color_match: must be true or false (got 'yes')"),
    ({"color_match": 1}, "color_match: must be true or false (got 1)"),
    ({"steps": 0}, "steps: must be between 1 and 150 (got 0)"),
    ({"steps": 2.5}, "steps: must be an integer (got 2.5)"),
    ({"guidance": -1}, "guidance: must be between 0 and 100 (got -1)"),
    ({"guidance": "high"}, "guidance: must be a number (got 'high')"),
    ({"guidance": float("nan")}, "guidance: must be a finite number (got nan)"),
    ({"audio": 5}, "audio: must be a file path (got 5)"),
    ({"audio": "x.mp3"}, "audio: file not found: 'x.mp3'"),
    ({"shots": []}, "shots: at least one shot is required"),
    ({"shots": "a boat"}, "shots: must be a list of shots (got 'a boat')"),
    ({"shots": None}, "shots: at least one shot is required"),
]


@pytest.mark.parametrize(("changes", "message"), TOP_LEVEL_ERRORS)
def test_top_level_field_errors(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    assert error_of(two_shots(**changes), base_dir=tmp_path).startswith(message)


def test_missing_shots_key() -> None:
    assert error_of({"fps": 8}) == "shots: at least one shot is required"


SHOT_ERRORS = [
    ({"prompt": ""}, "shots[1].prompt: must be a non-empty string (got '')"),
    ({"prompt": "   "}, "shots[1].prompt: must be a non-empty string (got '   ')"),
    ({"prompt": 12}, "shots[1].prompt: must be a non-empty string (got 12)"),
    ({"prompt": None}, "shots[1].prompt: must be a non-empty string"),
    ({"prompt": "x" * 2001}, "shots[1].prompt: must be at most 2000 characters (got 2001; limit"),
    ({"seconds": 0}, "shots[1].seconds: must be > 0 (got 0)"),
    ({"seconds": -2}, "shots[1].seconds: must be > 0 (got -2)"),
    ({"seconds": 601}, "shots[1].seconds: must be <= 600 (got 601; limit max_shot_seconds)"),
    ({"seconds": "2"}, "shots[1].seconds: must be a number (got '2')"),
    ({"seconds": True}, "shots[1].seconds: must be a number (got true)"),
    ({"seconds": float("inf")}, "shots[1].seconds: must be a finite number (got inf)"),
    ({"seed": 1.5}, "shots[1].seed: must be an integer (got 1.5)"),
    ({"seed": -3}, "shots[1].seed: must be between 0 and 4294967295 (got -3)"),
    ({"negative_prompt": 3}, "shots[1].negative_prompt: must be a string (got 3)"),
    ({"transition": "dissolve"}, "shots[1].transition: must be one of cut, crossfade (got "),
    ({"transition": "crossfade"}, "shots[1].transition: the last shot has no next shot to "),
    ({"transition_seconds": "1"}, "shots[1].transition_seconds: must be a number (got '1')"),
    ({"motion": {"zoom": 3}}, "shots[1].motion.zoom: must be between 0.5 and 2 (got 3)"),
    ({"motion": {"zoom": 0.4}}, "shots[1].motion.zoom: must be between 0.5 and 2 (got 0.4)"),
    ({"motion": {"pan_x": 600}}, "shots[1].motion.pan_x: must be between -512 and 512 (got 600)"),
    ({"motion": {"pan_y": "up"}}, "shots[1].motion.pan_y: must be a number (got 'up')"),
    ({"motion": {"rotate": -181}}, "shots[1].motion.rotate: must be between -180 and 180 (got"),
    ({"motion": 1.02}, "shots[1].motion: must be a mapping (got 1.02)"),
    ({"strength": 0}, "shots[1].strength: must be > 0 and < 1 (got 0)"),
    ({"strength": 1}, "shots[1].strength: must be > 0 and < 1 (got 1)"),
    ({"strength": False}, "shots[1].strength: must be a number (got false)"),
]


@pytest.mark.parametrize(("fields", "message"), SHOT_ERRORS)
def test_shot_field_errors(fields: dict[str, Any], message: str) -> None:
    assert error_of(with_shot(1, **fields)).startswith(message)


def test_choices_are_case_insensitive() -> None:
    sb = Storyboard.from_dict(two_shots(mode="Feedback", format=" GIF "))
    assert (sb.mode, sb.format) == ("feedback", "gif")
    assert sb.mode in MODES and sb.format in FORMATS
    assert sb.shots[0].transition in TRANSITIONS


def test_integral_floats_are_integers() -> None:
    sb = Storyboard.from_dict(two_shots(fps=12.0, steps=30.0))
    assert (sb.fps, sb.steps) == (12, 30)
    assert isinstance(sb.fps, int) and isinstance(sb.steps, int)


def test_numbers_are_stored_as_floats() -> None:
    sb = Storyboard.from_dict(two_shots(guidance=7))
    assert isinstance(sb.guidance, float)
    assert isinstance(sb.shots[0].seconds, float)


def test_prompts_are_stripped() -> None:
    sb = Storyboard.from_dict({"negative_prompt": " blurry ", "shots": ["  a boat \n"]})
    assert (sb.negative_prompt, sb.shots[0].prompt) == ("blurry", "a boat")


def test_total_length_limit() -> None:
    data = {"shots": [{"prompt": str(i), "seconds": 600} for i in range(7)]}
    assert error_of(data) == (
        "shots: total length must be <= 3600 seconds (got 4200; limit max_seconds_total)"
    )


def test_shot_count_limit() -> None:
    data = {"shots": ["a"] * 501}
    assert error_of(data) == "shots: at most 500 shots are allowed (got 501; limit max_shots)"


def test_per_shot_seed_wraps_into_range() -> None:
    sb = Storyboard.from_dict({"seed": 2**32 - 1, "shots": ["a", "b", "c"]})
    assert [s.seed for s in sb.shots] == [2**32 - 1, 0, 1]


# --- transitions --------------------------------------------------------------------------


def three_shots(*seconds: float) -> dict[str, Any]:
    return {"shots": [{"prompt": f"p{i}", "seconds": s} for i, s in enumerate(seconds)]}


def test_crossfade_must_be_shorter_than_both_neighbours() -> None:
    data = three_shots(2, 0.8, 2)
    data["shots"][0].update(transition="crossfade", transition_seconds=0.8)
    assert error_of(data) == (
        "shots[0].transition_seconds: must be < 0.8, the shorter of shots[0] and shots[1] (got 0.8)"
    )
    data["shots"][0]["transition_seconds"] = 0.7
    assert Storyboard.from_dict(data).shots[0].transition_seconds == 0.7


def test_crossfade_seconds_must_be_positive() -> None:
    for value in (0, -0.5):
        data = three_shots(2, 2, 2)
        data["shots"][1].update(transition="crossfade", transition_seconds=value)
        assert error_of(data) == f"shots[1].transition_seconds: must be > 0 (got {value:g})"


def test_crossfade_on_last_shot() -> None:
    data = three_shots(2, 2, 2, 2)
    data["shots"][3]["transition"] = "crossfade"
    assert error_of(data) == (
        "shots[3].transition: the last shot has no next shot to crossfade into; use 'cut'"
    )


def test_transition_seconds_on_a_cut_is_an_error() -> None:
    data = with_shot(0, transition_seconds=1.0)
    assert error_of(data) == (
        "shots[0].transition_seconds: only applies to transition 'crossfade' (got 1 on a cut); "
        "set transition: crossfade or remove it"
    )
    assert Storyboard.from_dict(with_shot(0, transition_seconds=0)).shots[0].transition == "cut"


def test_crossfades_in_and_out_must_leave_part_of_the_shot() -> None:
    data = three_shots(2, 1, 2)
    for shot in data["shots"][:2]:
        shot.update(transition="crossfade", transition_seconds=0.5)
    assert error_of(data) == (
        "shots[1].seconds: must be longer than its crossfades in and out together "
        "(0.5 + 0.5) (got 1)"
    )
    data["shots"][1]["seconds"] = 1.01
    Storyboard.from_dict(data)


# --- frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fps", "seconds"),
    [
        (24, [1.3, 0.7, 2.05]),
        (8, [0.1, 0.2, 0.3, 0.15, 1.0]),
        (30, [1 / 3, 1 / 3, 1 / 3, 0.05]),
        (25, [0.33] * 37),
        (60, [599.99, 0.37, 0.02]),
    ],
)
def test_shot_frames_sum_to_total(fps: int, seconds: list[float]) -> None:
    sb = Storyboard.from_dict(three_shots(*seconds) | {"fps": fps})
    frames = sb.shot_frames()
    assert sum(frames) == sb.total_frames == round(fps * sum(seconds))
    assert len(frames) == len(seconds) and min(frames) >= 1


def test_shot_frames_awkward_example() -> None:
    sb = Storyboard.from_dict(three_shots(1.3, 0.7, 2.05) | {"fps": 24})
    assert sb.total_seconds == pytest.approx(4.05)
    assert sb.shot_frames() == [31, 17, 49]
    assert sb.total_frames == 97


def test_a_shot_without_frames_is_an_error() -> None:
    data = three_shots(2, 0.05, 2)
    assert error_of(data) == (
        "shots[1].seconds: gets 0 frames at fps 8 (got 0.05); raise seconds or fps"
    )
    assert Storyboard.from_dict(data | {"fps": 24}).shot_frames()[1] == 1


# --- audio --------------------------------------------------------------------------------


def test_audio_is_relative_to_the_storyboard_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    board_dir = tmp_path / "boards"
    (board_dir / "sound").mkdir(parents=True)
    (board_dir / "sound" / "music.mp3").write_bytes(b"ID3")
    path = board_dir / "b.yaml"
    path.write_text("audio: sound/../sound/music.mp3\nshots: [a]\n")
    monkeypatch.chdir(tmp_path)  # the current folder must not matter
    sb = load_storyboard(Path("boards") / "b.yaml")
    assert sb.audio == str(board_dir / "sound" / "music.mp3")
    assert os.path.isabs(sb.audio)


def test_audio_base_dir_for_text_and_absolute_paths(tmp_path: Path) -> None:
    music = tmp_path / "music.mp3"
    music.write_bytes(b"ID3")
    sb = parse_storyboard("audio: music.mp3\nshots: [a]", base_dir=tmp_path)
    assert sb.audio == str(music)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sb = parse_storyboard(f"audio: {json.dumps(str(music))}\nshots: [a]", base_dir=elsewhere)
    assert sb.audio == str(music)


def test_audio_must_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "tracks").mkdir()
    assert error_of(two_shots(audio="tracks"), base_dir=tmp_path) == "audio: not a file: 'tracks'"
    assert error_of(two_shots(audio="gone.mp3"), base_dir=tmp_path) == (
        "audio: file not found: 'gone.mp3'"
    )


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "data", "message"),
    [
        (Limits(max_fps=24), two_shots(fps=30), "fps: must be between 1 and 24 (got 30; limit "),
        (
            Limits(max_side=512),
            two_shots(width=768),
            "width: must be a multiple of 8 between 32 and 512 (got 768; limit max_side)",
        ),
        (
            Limits(max_shot_seconds=10),
            with_shot(0, seconds=12),
            "shots[0].seconds: must be <= 10 (got 12; limit max_shot_seconds)",
        ),
        (
            Limits(max_seconds_total=3),
            two_shots(),
            "shots: total length must be <= 3 seconds (got 4; limit max_seconds_total)",
        ),
        (
            Limits(max_prompt_chars=5),
            with_shot(1, prompt="a long prompt"),
            "shots[1].prompt: must be at most 5 characters (got 13; limit max_prompt_chars)",
        ),
        (
            Limits(max_prompt_chars=5),
            two_shots(negative_prompt="too long"),
            "negative_prompt: must be at most 5 characters (got 8; limit max_prompt_chars)",
        ),
        (
            Limits(max_shots=1),
            two_shots(),
            "shots: at most 1 shots are allowed (got 2; limit max_shots)",
        ),
    ],
)
def test_limits_tighten_bounds(limits: Limits, data: dict[str, Any], message: str) -> None:
    assert error_of(data, limits=limits).startswith(message)
    Storyboard.from_dict(data)  # fine under the default limits


def test_limits_defaults_and_checks() -> None:
    assert Limits() == Limits(
        max_seconds_total=3600.0,
        max_shot_seconds=600.0,
        max_fps=60,
        max_side=4096,
        max_prompt_chars=2000,
        max_shots=500,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        Limits().max_fps = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"^Limits\.max_fps: must be a positive number"):
        Limits(max_fps=0)


# --- resolved form ------------------------------------------------------------------------


def test_round_trip_through_dict_and_json(tmp_path: Path) -> None:
    (tmp_path / "music.mp3").write_bytes(b"ID3")
    sb = parse_storyboard(FULL_YAML, base_dir=tmp_path)
    data = sb.to_dict()
    assert Storyboard.from_dict(data) == sb
    assert Storyboard.from_dict(json.loads(json.dumps(data))) == sb
    assert parse_storyboard(json.dumps(data)) == sb
    assert data["audio"] == str(tmp_path / "music.mp3")


def test_from_dict_does_not_mutate_its_input() -> None:
    data = two_shots(fps=12)
    before = copy.deepcopy(data)
    Storyboard.from_dict(data)
    assert data == before


def test_resolved_objects_are_frozen() -> None:
    sb = Storyboard.from_dict(two_shots())
    with pytest.raises(dataclasses.FrozenInstanceError):
        sb.fps = 1  # type: ignore[misc]
    assert isinstance(sb.shots, tuple)


def test_replace_applies_overrides_and_revalidates() -> None:
    sb = Storyboard.from_dict(two_shots())
    changed = sb.replace(mode="keyframes", model="tiny")
    assert (changed.mode, changed.model, changed.shots) == ("keyframes", "tiny", sb.shots)
    assert sb.mode == "continue"
    with pytest.raises(ValueError, match=r"^mode: must be one of continue, keyframes, feedback"):
        sb.replace(mode="loop")
    with pytest.raises(
        ValueError, match=r"^storyboard: unknown key 'modell'.*did you mean 'model'"
    ):
        sb.replace(modell="tiny")
    with pytest.raises(ValueError, match=r"^fps: must be between 1 and 12 \(got 24; limit max_fps"):
        sb.replace(fps=24, limits=Limits(max_fps=12))


def test_replace_moves_inherited_seeds_and_negative_prompts() -> None:
    sb = Storyboard.from_dict(
        {
            "seed": 10,
            "negative_prompt": "blurry",
            "shots": ["a", {"prompt": "b", "seed": 99, "negative_prompt": "dark"}, "c"],
        }
    )
    changed = sb.replace(seed=20, negative_prompt="noisy")
    assert [s.seed for s in changed.shots] == [20, 99, 22]
    assert [s.negative_prompt for s in changed.shots] == ["noisy", "dark", "noisy"]


def test_replace_shots() -> None:
    sb = Storyboard.from_dict(two_shots())
    shorter = sb.replace(shots=sb.shots[:1])
    assert shorter.shots == sb.shots[:1]
    with pytest.raises(ValueError, match=r"^shots: at least one shot is required$"):
        sb.replace(shots=())


def test_schema_tables_match_the_dataclasses() -> None:
    """The field tables drive parsing; a dataclass field missing from them would never be
    read, and one extra would fail at construction."""

    def names(cls: type) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    assert [f.name for f in _STORYBOARD_FIELDS] == names(Storyboard)
    assert [f.name for f in _SHOT_FIELDS] == names(Shot)
    assert [f.name for f in _MOTION_FIELDS] == names(Motion)


def test_errors_are_value_errors_with_a_path() -> None:
    with pytest.raises(ValueError) as info:
        Storyboard.from_dict(with_shot(1, seconds=0))
    error = info.value
    assert isinstance(error, StoryboardError)
    assert (error.path, error.problem) == ("shots[1].seconds", "must be > 0 (got 0)")


def test_steps_obey_the_limits():
    from pipelines.settings import Limits

    with pytest.raises(ValueError, match=r"^steps: .*limit max_steps"):
        parse_storyboard("steps: 80\nshots:\n  - prompt: a\n", limits=Limits(max_steps=50))
