"""The CLI as a hostile or careless user meets it: bad input, damaged run folders, SIGKILL at
sixteen moments, a full disk, races. Issue 16's cases, kept as a suite.

Most cases are rows of tables run in-process (`cli` fixture): the input, the exit code, a
phrase the one stderr line must contain, and that nothing is left at a final path. Kills
and races run in forked children of `tests/harness.py` (real SIGKILL, real processes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import mount_tmpfs

from pipelines.stitch import read_frames

ROOT = Path(__file__).resolve().parent.parent


def frames_of(path) -> np.ndarray:
    return np.stack(list(read_frames(path)))


def tree(root: Path) -> dict[str, int]:
    """Every file under `root` with its size: what a refused command must leave unchanged."""
    return {
        str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()
    }


def harness(tasks: list[dict], warm: tuple[str, ...] = ("tiny-ltx", "tiny-image")) -> list:
    """Run tasks in forked children of one warmed-up process (see tests/harness.py)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "harness.py")],
        input=json.dumps({"warm": list(warm), "tasks": tasks}),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def one_line(err: str) -> str:
    """The one line a failing command prints (progress bars aside)."""
    lines = [line for line in err.splitlines() if line.startswith(("error:", "interrupted:"))]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- forked runs
#
# Races, kills and the runs they are compared with, in two harness processes for the whole
# module (each start costs seconds): phase 1 makes the references, the races and the kills;
# the tests look at what the kills left; phase 2 resumes them (and damages some first).

STORY_A = "fps: 8\nwidth: 32\nheight: 32\nseed: 1\nshots:\n  - prompt: race a\n    seconds: 1\n"
STORY_B = (
    "fps: 8\nwidth: 32\nheight: 32\nseed: 2\nshots:\n  - prompt: race b one\n    seconds: 1\n"
    "  - prompt: race b two\n    seconds: 1\n"
)
RACES = 4  # two `video` runs into one folder, released together by a barrier, four times

# Two shots; the first is three clips, each continuing from the last frame of the one
# before (its tail PNG), the second crossfades in: segments 0 → 1 → 2, and 3 on its own.
# (The LTX twin makes 24 fps of motion, 8 new frames a clip.) With --batch-size 1 the
# calls are seg 0, seg 3 (one wave), seg 1, seg 2.
KILL_STORY = """\
fps: 24
width: 32
height: 32
seed: 5
shots:
  - prompt: a long river journey
    seconds: 0.75
    transition: crossfade
    transition_seconds: 0.125
  - prompt: the sea at dusk
    seconds: 0.375
"""
KILL_ARGS = ("--model", "tiny-ltx", "--batch-size", "1")
# Sixteen moments: around every kind of write (before its rename: a whole temporary file is
# left; after it: the file stands but the manifest does not know yet), inside a pipeline
# call, inside the writer thread's encode, and in the stitch.
KILL_POINTS = {
    "before storyboard.json": {"replace": "storyboard.json", "when": "before"},
    "after storyboard.json": {"replace": "storyboard.json", "when": "after"},
    "after the first manifest": {"replace": "manifest.json", "when": "after"},
    "after keyframe 0": {"replace": "keyframes/shot-000.png", "when": "after"},
    "before keyframe 1": {"replace": "keyframes/shot-001.png", "when": "before"},
    "in the first video call": {"call": "pipelines.clips:_call", "nth": 1},
    "after segment 0's tail": {"replace": "segments/seg-000-tail-0.png", "when": "after"},
    "before segment 0's file": {"replace": "segments/seg-000.mp4", "when": "before"},
    "after segment 0's file": {"replace": "segments/seg-000.mp4", "when": "after"},
    "encoding segment 3": {"call": "pipelines.stitch:VideoWriter.write", "nth": 2},
    "in the third video call": {"call": "pipelines.clips:_call", "nth": 3},
    "after segment 1's file": {"replace": "segments/seg-001.mp4", "when": "after"},
    "before the stitch": {"call": "pipelines.chain:stitch", "nth": 1},
    "mid-stitch": {"call": "pipelines.stitch:VideoWriter.write", "nth": 10},
    "before video.mp4": {"replace": "video.mp4", "when": "before"},
    "after the poster": {"replace": "poster.jpg", "when": "after"},
}
# Damage to a run killed in its third video call (segments 0 and 3 done, 1 and 2 not).
DAMAGE = {
    "missing tail": [("unlink", "segments/seg-000-tail-0.png")],
    "truncated tail": [("truncate", "segments/seg-000-tail-0.png")],
    "truncated segment": [("truncate", "segments/seg-000.mp4")],
    "truncated last segment": [("truncate", "segments/seg-003.mp4")],
    "missing segment and tail": [("unlink", "segments/seg-000.mp4"),
                                 ("unlink", "segments/seg-000-tail-0.png")],
    "truncated keyframe": [("truncate", "keyframes/shot-000.png")],
}  # fmt: skip
ROWS = "a lighthouse\na harbour\na forest\na desert\na glacier\n"
SMALL = ("--model", "tiny", "--preset", "64x64")


class Forked:
    """The module's forked runs: `plan(key, task)` in phase 1 or 2, results by key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.phases: list[dict[str, dict]] = [{}, {}]
        self.results: dict[str, dict] = {}

    def plan(self, phase: int, key: str, task: dict) -> None:
        self.phases[phase][key] = task

    def run(self, phase: int) -> None:
        tasks = self.phases[phase]
        for key, result in zip(tasks, harness(list(tasks.values())), strict=True):
            self.results[key] = result


def video_argv(story: Path, out: Path) -> list[str]:
    return ["video", str(story), "--out", str(out), *KILL_ARGS]


@pytest.fixture(scope="module")
def forked(tmp_path_factory) -> Forked:
    root = tmp_path_factory.mktemp("forked")
    f = Forked(root)
    for name, text in (("a.yaml", STORY_A), ("b.yaml", STORY_B), ("kill.yaml", KILL_STORY)):
        (root / name).write_text(text)
    # Two batches into one folder (the harness holds the claim's holder until the other ends).
    (root / "ta.txt").write_text("".join(f"a lighthouse {i}\n" for i in range(8)))
    (root / "tb.txt").write_text("".join(f"a forest {i}\n" for i in range(6)))
    (root / "rows.txt").write_text(ROWS)
    for i in range(RACES):
        argvs = [["video", str(root / n), "--out", str(root / f"race{i}"), "--model", "tiny"]
                 for n in ("a.yaml", "b.yaml")]  # fmt: skip
        f.plan(0, f"race{i}", {"kind": "race", "argvs": argvs})
    for i in range(2):
        argvs = [["thumbnails", str(root / n), "--out", str(root / f"thumbs{i}"), *SMALL]
                 for n in ("ta.txt", "tb.txt")]  # fmt: skip
        f.plan(0, f"thumbs race{i}", {"kind": "race", "argvs": argvs})
    story = root / "kill.yaml"
    f.plan(0, "ref", {"kind": "run", "argv": video_argv(story, root / "ref")})
    for i, (name, at) in enumerate(KILL_POINTS.items()):
        out = root / f"kill{i:02d}"
        f.plan(0, f"kill:{name}", {"kind": "kill", "argv": video_argv(story, out), "at": at})
        f.plan(
            1, f"resume:{name}", {"kind": "resume", "argv": video_argv(story, out), "out": str(out)}
        )
    third_call = {"call": "pipelines.clips:_call", "nth": 3}
    for i, (name, ops) in enumerate(DAMAGE.items()):
        out = root / f"damaged{i}"
        f.plan(
            0, f"kill:{name}", {"kind": "kill", "argv": video_argv(story, out), "at": third_call}
        )
        for k, (op, path) in enumerate(ops):
            f.plan(1, f"{name} {k}", {"kind": op, "path": str(out / path)})
        f.plan(
            1, f"resume:{name}", {"kind": "resume", "argv": video_argv(story, out), "out": str(out)}
        )
    rows = ["thumbnails", str(root / "rows.txt"), "--out", str(root / "rows-out"), *SMALL]
    at = {"replace": "4-1-a-desert.jpg", "when": "before"}
    f.plan(0, "kill:rows", {"kind": "kill", "argv": rows, "at": at})
    f.plan(1, "rows again", {"kind": "run", "argv": rows})
    f.run(0)
    f.kill_signals = {k[5:]: r["signal"] for k, r in f.results.items() if k.startswith("kill:")}
    f.killed = {name: whole_files(root / f"kill{i:02d}") for i, name in enumerate(KILL_POINTS)}
    f.plan(
        1,
        "resume race",
        {"kind": "race", "argvs": [["video", "--resume", str(root / "race0")]] * 2},
    )
    f.run(1)
    return f


def whole_files(run: Path) -> dict[str, int]:
    """Every file at a final path reads whole (a half-written one would not); returns the
    segments the manifest calls done, with their files' mtimes."""
    from PIL import Image

    for path in run.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".mp4":
            assert len(frames_of(path)) > 0, path
        elif path.suffix in (".png", ".jpg"):
            with Image.open(path) as im:
                im.load()
    manifest = run / "manifest.json"
    if not manifest.is_file():
        return {}
    segments = json.loads(manifest.read_text())["segments"]
    return {
        s["file"]: (run / s["file"]).stat().st_mtime_ns for s in segments if s["status"] == "done"
    }


# --------------------------------------------------------------------------- 1. races


def test_two_runs_into_one_folder_at_once_one_is_refused_never_mixed(forked):
    """Issue 16, item 1: two `video` runs into the same --out released together. Exactly one
    runs; the other gets one line naming the folder, exit 2; the folder holds one run's
    storyboard, manifest and video, never a mix. Two resumes of one folder: the same."""
    for i in range(RACES):
        out, runs = forked.root / f"race{i}", forked.results[f"race{i}"]["runs"]
        assert sorted(r["code"] for r in runs) == [0, 2], runs
        line = one_line(next(r for r in runs if r["code"] == 2)["err"])
        assert str(out) in line, line
        assert "being written by another run" in line or "already holds a run" in line, line
        story = json.loads((out / "storyboard.json").read_text())
        manifest = json.loads((out / "manifest.json").read_text())
        frames = round(story["fps"] * sum(s["seconds"] for s in story["shots"]))
        assert manifest["frames"] == frames == len(frames_of(out / "video.mp4"))
        assert all(s["status"] == "done" for s in manifest["segments"])
        assert len({s["shot"] for s in manifest["segments"]}) == len(story["shots"])
    resumes = forked.results["resume race"]["runs"]
    assert sorted(r["code"] for r in resumes) == [0, 2], resumes
    line = one_line(next(r for r in resumes if r["code"])["err"])
    assert "being run by another process" in line, line


def test_two_thumbnails_batches_into_one_folder_at_once_one_is_refused(forked):
    """Issue 16, item 1, for thumbnails: two batches into one --out released together,
    twice: one runs, the other is refused with one line (exit 2); the manifest is one's."""
    for i in range(2):
        out, runs = forked.root / f"thumbs{i}", forked.results[f"thumbs race{i}"]["runs"]
        assert sorted(r["code"] for r in runs) == [0, 2], runs
        line = one_line(next(r for r in runs if r["code"])["err"])
        assert "being written by another run" in line and str(out) in line, line
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["input"] == ("ta.txt" if len(manifest["rows"]) == 8 else "tb.txt")
        assert all(r["status"] == "done" for r in manifest["rows"])


# --------------------------------------------------------------------------- 2. SIGKILL


def test_sigkill_at_sixteen_moments_then_resume_gives_the_same_frames(forked):
    """A run killed at any of sixteen moments leaves only whole files at final paths; the
    resume (or, killed before its manifest existed, the same command again) makes only what
    is missing and gives a video frame-identical to an uninterrupted run, with no leftovers."""
    assert forked.results["ref"]["code"] == 0, forked.results["ref"]["err"]
    assert {n: forked.kill_signals[n] for n in KILL_POINTS} == dict.fromkeys(KILL_POINTS, 9)
    reference = frames_of(forked.root / "ref" / "video.mp4")
    for i, name in enumerate(KILL_POINTS):
        run = forked.root / f"kill{i:02d}"
        resumed = forked.results[f"resume:{name}"]
        assert resumed["code"] == 0, f"{name}: {resumed['err']}"
        assert np.array_equal(frames_of(run / "video.mp4"), reference), name
        for file, mtime in forked.killed[name].items():  # finished segments: not made again
            assert (run / file).stat().st_mtime_ns == mtime, f"{name}: {file} was made again"
        assert not [p for p in run.rglob("*") if ".partial-" in p.name], name


def test_damaged_tails_and_segments_are_made_again_on_resume(forked):
    """Issue 16, items 3 and 4: a finished segment's missing or damaged tail PNG, or a
    truncated segment file, no longer blocks every resume: the segment is made again with
    its own seed (so the same frames), and the video is frame-identical to an uninterrupted
    run. The run is killed in its third video call (segments 0 and 3 done, 1 and 2 not)."""
    reference = frames_of(forked.root / "ref" / "video.mp4")
    for i, name in enumerate(DAMAGE):
        assert forked.kill_signals[name] == 9, name
        resumed = forked.results[f"resume:{name}"]
        assert resumed["code"] == 0, f"{name}: {resumed['err']}"
        assert np.array_equal(frames_of(forked.root / f"damaged{i}" / "video.mp4"), reference), name


# --------------------------------------------------------------------------- 3. thumbnails


def test_a_killed_thumbnails_batch_keeps_its_finished_rows_and_no_partial_file(forked):
    """Issue 16, item 5: killed while writing row 4 (the manifest is saved at most once a
    second, so it still calls rows 1-3 pending), a batch run again makes rows 4 and 5 only:
    rows 1-3 are on disk, carrying their fingerprints; row 4's `.partial-` file is gone."""
    assert forked.kill_signals["rows"] == 9
    again = forked.results["rows again"]
    assert again["code"] == 0, again["err"]
    out = forked.root / "rows-out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generated"] == 2  # rows 4 and 5; before the fix, all five again
    assert [r["status"] for r in manifest["rows"]] == ["skipped-existing"] * 3 + ["done"] * 2
    assert not [p for p in out.iterdir() if ".partial-" in p.name]


def test_a_refused_from_video_run_leaves_a_rows_folder_as_it_was(cli, tmp_path):
    """Issue 16, item 2: `--from-video` into a folder that holds a finished rows batch: a
    refused run (a 0-byte video) changes nothing, a good one keeps the rows in the manifest,
    and the rows batch run again makes nothing."""
    rows = tmp_path / "rows.txt"
    rows.write_text("a lighthouse\na harbour\n")
    out = tmp_path / "out"
    assert cli("thumbnails", rows, "--out", out, *SMALL)[0] == 0
    before = tree(tmp_path)
    manifest = (out / "manifest.json").read_bytes()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    before = tree(tmp_path)
    for dry in ((), ("--dry-run",)):  # item 17: the dry run refuses it too
        code, _, err = cli("thumbnails", "--from-video", empty, "--out", out, "--preset", "64x64",
                           *dry)  # fmt: skip
        assert code == 2 and "from-video: cannot read 'empty.mp4'" in one_line(err), err
        assert tree(tmp_path) == before and (out / "manifest.json").read_bytes() == manifest
    video = make_video_file(tmp_path / "clip.mp4")
    code, _, err = cli("thumbnails", "--from-video", video, "--out", out, "--preset", "64x64")
    assert code == 0, err
    entries = json.loads((out / "manifest.json").read_text())["rows"]
    assert [e["line"] for e in entries if "video" not in e] == [1, 2]
    code, printed, err = cli("thumbnails", rows, "--out", out, *SMALL)
    assert code == 0 and len(printed.split()) == 2, err  # this input's rows, not the video's
    data = json.loads((out / "manifest.json").read_text())
    assert data["generated"] == 0 and any("video" in e for e in data["rows"])


def make_video_file(path: Path, frames: int = 12) -> Path:
    from pipelines.stitch import VideoWriter

    with VideoWriter(path, 8, 64, 48) as writer:
        for i in range(frames):
            img = np.zeros((48, 64, 3), np.uint8)
            img[:, : 16 + 4 * i] = (200, 60 + 10 * i, 40)
            img[::8, ::8] = 255
            writer.write(img)
    return path


# --------------------------------------------------------------------------- 4. refused input
#
# Each row: the command (`{d}` is the case's own folder), the exit code, a phrase the one
# stderr line must contain, and the files the case starts with. A refused command leaves
# its folder exactly as it was: nothing at a final path, nothing at all.


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    code: int
    phrase: str
    files: tuple[tuple[str, object], ...] = ()  # name → text, bytes, or a builder(path, shared)
    env: tuple[tuple[str, str], ...] = ()


def case(*argv, code=2, phrase, files=None, env=None, id=None):
    c = Case(tuple(map(str, argv)), code, phrase, tuple((files or {}).items()),
             tuple((env or {}).items()))  # fmt: skip
    return pytest.param(c, id=id or f"{' '.join(c.argv)[:60]} | {phrase[:40]}")


SB = "fps: 8\nwidth: 32\nheight: 32\n"
SHOT = "shots:\n  - prompt: a\n"


def storyboard(text, phrase, *, name="s.yaml", model="tiny", id=None, more=None):
    """A storyboard checked by `video --dry-run` (the same checks a run makes first)."""
    return case("video", f"{{d}}/{name}", "--model", model, "--dry-run", phrase=phrase,
                files={name: text, **(more or {})}, id=id or f"storyboard {text[:60]!r}")  # fmt: skip


def top(field_value, phrase):
    """The storyboard's settings with one of them (or a new key) set to `field_value`."""
    key = field_value.partition(":")[0]
    settings = [line for line in SB.splitlines() if not line.startswith(f"{key}:")]
    text = "\n".join([*settings, field_value]) + "\n" + SHOT
    return storyboard(text, phrase, id=f"storyboard {field_value}")


def shot(kv, phrase):
    text = SB + "shots:\n  - prompt: a\n    " + kv.replace("\n", "\n    ") + "\n  - prompt: b\n"
    return storyboard(text, phrase, id=f"shot {kv}")


def deep_yaml(levels: int) -> str:
    return "shots: " + "[" * levels + "]" * levels + "\n"


def alias_bomb() -> str:
    """Billion laughs: nine levels of nine aliases (9**9 strings if it were ever expanded)."""
    lines = ["shots:", "  - &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size (a decompression bomb's header) and holds almost nothing."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 9))
            + chunk(b"IEND", b""))  # fmt: skip


def small_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = small_png()


STORYBOARD_CASES = [
    # settings
    top("fps: 0", "fps: must be between 1 and 60"),
    top("fps: -8", "fps: must be between 1 and 60"),
    top("fps: 1000", "fps: must be between 1 and 60"),
    top("fps: eight", "fps: must be an integer"),
    top("fps: true", "fps: must be an integer (got true)"),
    top("fps: 8.5", "fps: must be an integer"),
    top("fps: .nan", "fps: must be a finite number"),
    top("fps: [8]", "fps: must be an integer (got a list)"),
    top("width: 0", "width: must be a multiple of 8"),
    top("width: 33", "width: must be a multiple of 8"),
    top("width: 100000", "width: must be a multiple of 8"),
    top("width: wide", "width: must be an integer"),
    top("height: 24", "height: must be a multiple of 8"),
    top("height: 8192", "limit max_side"),
    top("seed: -1", "seed: must be between 0 and 4294967295"),
    top("seed: 4294967296", "seed: must be between 0 and 4294967295"),
    top("seed: 1.5", "seed: must be an integer"),
    top("seed: x", "seed: must be an integer"),
    top("mode: sideways", "mode: must be one of continue, keyframes, feedback"),
    top("mode: 5", "mode: must be one of"),
    top("interpolate: 0", "interpolate: must be between 1 and 8"),
    top("interpolate: 9", "interpolate: must be between 1 and 8"),
    top("interpolate: 1.5", "interpolate: must be an integer"),
    top("color_match: maybe", "color_match: must be true or false"),
    top("steps: 0", "steps: must be between 1 and 150"),
    top("steps: 100000", "limit max_steps"),
    top("guidance: -1", "guidance: must be between 0 and 100"),
    top("guidance: 1000", "guidance: must be between 0 and 100"),
    top("format: avi", "format: must be one of mp4, webm, gif"),
    top("model: ''", "model: must be a non-empty string"),
    top("model: 5", "model: must be a non-empty string (got 5); put it in quotes"),
    top("model: " + "x" * 201, "model: must be at most 200 characters"),
    top("negative_prompt: 5", "negative_prompt: must be a string"),
    top("negative_prompt: [a, b]", "negative_prompt: must be a string (got a list)"),
    top("audio: missing.mp3", "audio: file not found: 'missing.mp3'"),
    top("audio: ~nosuchuser9/x.mp3", "audio: no such user's home folder"),  # item 8
    top("audio: /", "audio: not a file"),
    top("audio: 5", "audio: must be a file path"),
    top("colour: red", "unknown key 'colour'"),
    top("shots_: []", "unknown key 'shots_'"),
    # shots
    shot("seconds: 0", "shots[0].seconds: must be > 0"),
    shot("seconds: -1", "shots[0].seconds: must be > 0"),
    shot("seconds: 1e9", "shots[0].seconds: must be <= 600"),  # item 15: a number, not text
    shot("seconds: 2s", "shots[0].seconds: must be a number"),
    shot("seconds: .inf", "shots[0].seconds: must be a finite number"),
    shot("seconds: .nan", "shots[0].seconds: must be a finite number"),
    shot("seconds: 0.01", "shots[0].seconds: gets 0 frames at fps 8"),
    shot("transition: wipe", "shots[0].transition: must be one of cut, crossfade"),
    shot("transition_seconds: 0.5", "only applies to transition 'crossfade'"),
    shot("transition: crossfade\ntransition_seconds: 5", "shots[0].transition_seconds: must be <"),
    shot("transition: crossfade\ntransition_seconds: 0", "shots[0].transition_seconds: must be > 0"),
    shot("motion: {zoom: 5}", "shots[0].motion.zoom: must be between 0.5 and 2"),
    shot("motion: {pan_x: 1000}", "shots[0].motion.pan_x: must be between -512 and 512"),
    shot("motion: {rotate: 999}", "shots[0].motion.rotate: must be between -180 and 180"),
    shot("motion: fast", "shots[0].motion: must be a mapping"),
    shot("motion: {tilt: 1}", "unknown key 'tilt'"),
    shot("strength: 0", "shots[0].strength: must be > 0 and < 1"),
    shot("strength: 1", "shots[0].strength: must be > 0 and < 1"),
    shot("seed: -1", "shots[0].seed: must be between 0 and 4294967295"),
    shot("negative_prompt: 5", "shots[0].negative_prompt: must be a string"),
    shot("secs: 2", "unknown key 'secs' (allowed: prompt, seconds"),
    # documents
    storyboard("", "storyboard: is empty", id="empty file"),
    storyboard("just one line", "for one prompt per line use a .txt file", id="a plain line"),
    storyboard("42", "storyboard: must be a mapping with 'shots'", id="a number"),
    storyboard(SB + "shots: []\n", "shots: at least one shot is required", id="no shots"),
    storyboard(SB, "shots: at least one shot is required", id="shots missing"),
    storyboard(SB + "shots: hello\n", "shots: must be a list of shots", id="shots a string"),
    storyboard(SB + "shots:\n  - 1984\n", "shots[0]: must be a mapping or a prompt string (got 1984); put it in quotes", id="a number as a prompt"),
    storyboard(SB + "shots:\n  - prompt: ''\n", "shots[0].prompt: must be a non-empty string", id="empty prompt"),
    storyboard(SB + "shots:\n  - seconds: 2\n", "shots[0].prompt: must be a non-empty string", id="no prompt"),
    storyboard(SB + "shots:\n  - prompt: " + "x" * 2001 + "\n", "shots[0].prompt: must be at most 2000 characters", id="long prompt"),
    storyboard("fps: 8\nfps: 9\n" + SHOT, "duplicate key 'fps'", id="duplicate key"),
    storyboard("{not yaml: [", "storyboard: not valid YAML or JSON", id="broken flow yaml"),
    storyboard("shots:\n  - prompt: a\n   seconds: 2\n", "storyboard: not valid YAML or JSON (line", id="bad indentation"),
    storyboard("{", "storyboard: not valid JSON", name="s.json", id="broken json"),
    storyboard('{"shots": [{"prompt": "a"}], "shots": []}', "duplicate key 'shots'", name="s.json", id="json duplicate"),
    storyboard("!!python/object/apply:os.system ['touch pwned']\n", "storyboard: not valid YAML or JSON", id="python tag"),
    storyboard(deep_yaml(100_000), "nested too deeply", id="yaml 100000 levels"),  # item 7
    storyboard('{"shots": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply", name="s.json", id="json 100000 levels"),  # item 7
    storyboard(SB + "shots:\n  - prompt: a\n    motion: " + "[" * 50 + "]" * 50 + "\n", "nested too deeply (more than 20", id="50 levels in a shot"),
    storyboard(alias_bomb(), "shots[0]: must be a mapping or a prompt string (got a list)", id="yaml alias bomb"),
    storyboard(SB + "shots:\n" + "  - a\n" * 501, "at most 500 shots are allowed", id="501 shots"),
    storyboard(SB + "shots:\n" + "  - prompt: a\n    seconds: 600\n" * 7, "total length must be <= 3600", id="seven 600 s shots"),
    storyboard("x" * 2001 + "\n", "shots[0].prompt: must be at most 2000 characters (got 2001; limit max_prompt_chars) (line 1)", name="s.txt", id="txt long line"),
    storyboard("# only a comment\n\n", "shots: at least one shot is required", name="s.txt", id="txt only comments"),
    storyboard(b"\xff\xfe\x00s\x00h", "not UTF-8 text", id="not utf-8"),
    storyboard("shots: [a]\n", "unsupported file type '.doc'", name="s.doc", id="a .doc"),
    storyboard(SB.replace("32", "48") + SHOT, "width: tiny-ltx needs a multiple of 32", model="tiny-ltx", id="size for ltx"),
    storyboard("width: 512\nheight: 512\n" + SHOT, "width: cogvideox-5b-i2v makes 720×480 only", model="cogvideox-5b-i2v", id="native size only"),
    case("video", "{d}/none.yaml", "--model", "tiny", "--dry-run", phrase="storyboard: file not found", id="storyboard missing"),
    case("video", "{d}/dir.yaml", "--model", "tiny", "--dry-run", phrase="storyboard: not a file", files={"dir.yaml/x": "x"}, id="storyboard a folder"),
    storyboard(SB + "audio: notes.mp3\n" + SHOT, "audio: cannot read 'notes.mp3'", more={"notes.mp3": "la la\n"}, id="audio text named mp3"),
    storyboard(SB + "audio: pic.wav\n" + SHOT, "audio: cannot read 'pic.wav'", more={"pic.wav": PNG}, id="audio png named wav"),
]  # fmt: skip

STORY = (
    SB
    + "seed: 3\nshots:\n  - prompt: a boat\n    seconds: 1\n  - prompt: a river\n    seconds: 1\n"
)
S = "{d}/s.yaml"  # the storyboard every non-storyboard video case starts with
HELD: list = []  # claims a case holds on a folder (another run "writing" it) until it ends


def run_folder(change=None):
    """A copy of a finished tiny run (made once per module), then `change(run)`."""

    def build(path: Path, shared: dict) -> None:
        shutil.copytree(shared["run"], path)
        if change:
            change(path)

    return build


def thumbs_folder(path: Path, shared: dict) -> None:
    shutil.copytree(shared["thumbs"], path)


def busy(inner=None):
    """A folder another run holds right now (its claim is taken in this process)."""

    def build(path: Path, shared: dict) -> None:
        if inner:
            inner(path, shared)
        from pipelines.files import claim_folder

        HELD.append(claim_folder(path))

    return build


def set_manifest(value):
    def change(run: Path) -> None:
        m = run / "manifest.json"
        m.write_text(
            value if isinstance(value, str) else json.dumps(value(json.loads(m.read_text())))
        )

    return change


def without(key):
    return set_manifest(lambda m: {k: v for k, v in m.items() if k != key})


def write(name, text):
    return lambda run: (run / name).write_text(text)


def remove(name):
    return lambda run: (run / name).unlink()


def folder(name):
    return lambda path, shared: path.mkdir()


def model_index(text):
    def build(path: Path, shared: dict) -> None:
        path.mkdir()
        (path / "model_index.json").write_bytes(text if isinstance(text, bytes) else text.encode())

    return build


RUN = {"run": run_folder()}
VIDEO = ("video", S, "--model", "tiny")
DRY = (*VIDEO, "--dry-run")
OUT = (*VIDEO, "--out", "{d}/out")
VIDEO_CASES = [
    case("video", phrase="storyboard: give a storyboard file and --out DIR"),
    case("video", S, phrase="storyboard: give a storyboard file and --out DIR"),
    case("video", "--dry-run", phrase="storyboard: give a storyboard file to plan"),
    case("video", "--resume", "{d}/run", "--dry-run", phrase="drop --resume", files=RUN),
    case(*OUT, "--reroll", "1", phrase="reroll: use it with --resume DIR"),
    case("video", S, "--resume", "{d}/run", phrase="resume: give only --resume DIR", files=RUN),
    case("video", "--resume", "{d}/run", "--model", "tiny", phrase="resume: the run folder fixes --model", files=RUN),
    case("video", "--resume", "{d}/run", "--clip-frames", "9", phrase="fixes --clip-frames", files=RUN),
    case("video", "--resume", "{d}/run", "--seed", "3", phrase="seed: use it with --reroll K", files=RUN),
    case("video", "--resume", "{d}/run", "--reroll", "99", phrase="reroll: segment 99 does not exist", files=RUN),
    case("video", "--resume", "{d}/run", "--reroll", "-1", phrase="reroll: segment -1 does not exist", files=RUN),
    case("video", "--resume", "{d}/run", "--reroll", "0", "--seed", "4294967296", phrase="seed: must be from 0 to 4294967295", files=RUN),
    case(*DRY, "--clip-frames", "1", phrase="clip-frames: must be at least 2"),
    case("video", S, "--model", "tiny-ltx", "--dry-run", "--clip-frames", "10", phrase="clip-frames: tiny-ltx needs 8k+1 frames"),
    case(*DRY, "--clip-frames", "x", phrase="argument --clip-frames: invalid int value: 'x'"),
    case(*DRY, "--mode", "sideways", phrase="argument --mode: invalid choice"),
    case("video", S, "--model", "nonsense", "--dry-run", phrase="model: unknown 'nonsense'"),
    case("video", S, "--model", "random:nope", "--dry-run", phrase="model: 'random:nope' names no preset"),
    case("video", S, "--model", "tiny-image", "--mode", "continue", "--dry-run", phrase="model: tiny-image is an image model"),
    case("video", S, "--model", "tiny-ltx", "--mode", "feedback", "--dry-run", phrase="feedback mode needs an image model"),
    case("video", S, "--model", "tiny-ltx", "--image-model", "tiny-ltx", "--dry-run", phrase="image-model: tiny-ltx is a video model"),
    case(*DRY, "--seed", "-1", phrase="seed: must be between 0 and 4294967295"),
    case(*DRY, "--seed", "99999999999", phrase="seed: must be between 0 and 4294967295"),
    case(*DRY, "--batch-size", "0", phrase="batch-size: must be ≥ 1"),
    case(*DRY, "--batch-size", "x", phrase="batch-size: use 'auto' or a whole number"),
    case(*DRY, "--memory-budget", "abc", phrase="memory-budget: cannot read 'abc' as a size"),
    case(*DRY, "--memory-budget", "0", phrase="memory-budget: must be > 0"),
    case(*DRY, "--fast", "turbo", phrase="fast: unknown 'turbo'"),
    case(*DRY, "--fast", "attention:nope", phrase="fast: unknown 'attention:nope'"),
    case(*DRY, "--fast", "attention:flash,attention:sage", phrase="fast: give at most one attention"),
    case(*DRY, "--offload", "x", phrase="argument --offload: invalid choice"),
    case(*DRY, "--device", "tpu", phrase="argument --device: invalid choice"),
    case(*DRY, "--dtype", "int8", phrase="argument --dtype: invalid choice"),
    case("video", "--bogus", phrase="unrecognized arguments: --bogus"),
    case("nonsense", phrase="argument command: invalid choice"),
]  # fmt: skip

# The --out folder: each refusal both by the dry run and by the run itself (issue 16:
# the dry run refuses what the run would), before anything is loaded or written.
OUT_FOLDERS = [
    ("a file", {"out": "x"}, "is a file; give a folder"),
    ("under a file", {"f": "x"}, "is a file, so"),
    ("holding a run", {"out": run_folder()}, "already holds a run; use --resume"),
    ("holding thumbnails", {"out": thumbs_folder}, "holds thumbnails; choose another --out"),  # item 10
    ("holding another manifest", {"out/manifest.json": '{"kind": "other"}'}, "holds a manifest.json that is not a video run's"),
    ("holding a damaged manifest", {"out/manifest.json": "[1]"}, "holds a manifest.json that is not a video run's"),
    ("in use by another run", {"out": busy()}, "is being written by another run right now"),  # item 1
]  # fmt: skip
OUT_CASES = [
    case(*VIDEO, *dry, "--out", "{d}/f/out" if what == "under a file" else "{d}/out",
         phrase=phrase, files=files, id=f"video --out {what}{' --dry-run' if dry else ''}")
    for what, files, phrase in OUT_FOLDERS
    for dry in ((), ("--dry-run",))
]  # fmt: skip

RESUME = ("video", "--resume", "{d}/run")
RESUME_CASES = [
    case(*RESUME, phrase="resume: 'run' is not a run folder (no manifest.json)", files={"run": run_folder(remove("manifest.json"))}),
    case(*RESUME, phrase="resume: manifest.json is damaged", files={"run": run_folder(write("manifest.json", ""))}),
    case(*RESUME, phrase="resume: manifest.json is damaged (not a JSON object)", files={"run": run_folder(write("manifest.json", "[1]"))}),  # item 10
    case(*RESUME, phrase="resume: manifest.json is damaged (nested too deeply", files={"run": run_folder(write("manifest.json", "[" * 100_000))}),
    case(*RESUME, phrase="resume: manifest version None is not supported", files={"run": run_folder(write("manifest.json", "{}"))}),
    case(*RESUME, phrase="resume: manifest version 99 is not supported", files={"run": run_folder(set_manifest(lambda m: {**m, "version": 99}))}),
    case(*RESUME, phrase="resume: manifest.json is damaged ('segments' is missing", files={"run": run_folder(without("segments"))}),  # item 10
    case(*RESUME, phrase="resume: manifest.json is damaged ('segments' is missing", files={"run": run_folder(set_manifest(lambda m: {**m, "segments": "x"}))}),
    case(*RESUME, phrase="resume: manifest.json is damaged (it lists no segments)", files={"run": run_folder(set_manifest(lambda m: {**m, "segments": []}))}),
    case(*RESUME, phrase="resume: manifest.json is damaged (segment 0:", files={"run": run_folder(set_manifest(lambda m: {**m, "segments": [5]}))}),
    case(*RESUME, phrase="resume: manifest.json is damaged (segment 0:", files={"run": run_folder(set_manifest(lambda m: {**m, "segments": [{"index": 0}]}))}),
    case(*RESUME, phrase="resume: manifest.json is damaged ('image_model'", files={"run": run_folder(without("image_model"))}),
    case(*RESUME, phrase="resume: storyboard.json is missing", files={"run": run_folder(remove("storyboard.json"))}),
    case(*RESUME, phrase="resume: storyboard.json is damaged", files={"run": run_folder(write("storyboard.json", '{"fps": '))}),
    case(*RESUME, phrase="resume: storyboard.json is damaged (fps: must be between 1 and 60", files={"run": run_folder(write("storyboard.json", '{"fps": 0, "shots": ["a"]}'))}),
    case(*RESUME, phrase="resume: 'run' holds thumbnails, not a video run", files={"run": thumbs_folder}),  # item 10
    case(*RESUME, phrase="resume: no such run folder", files={"run": "a file"}),
    case("video", "--resume", "{d}/nowhere", phrase="resume: no such run folder"),
    case(*RESUME, phrase="is being run by another process right now", files={"run": busy(run_folder())}),  # item 1
]  # fmt: skip

IMAGE = ("image", "a lighthouse", "--model", "tiny", "--out", "{d}/out")
IMAGE_CASES = [
    case("image", "", "--out", "{d}/out", phrase="prompt: must be a non-empty string"),
    case("image", "   ", "--out", "{d}/out", phrase="prompt: must be a non-empty string"),
    case("image", "x" * 2001, "--out", "{d}/out", phrase="prompt: must be at most 2000 characters (got 2001"),
    case(*IMAGE, "--negative", "x" * 2001, phrase="negative_prompt: must be at most 2000 characters"),
    case(*IMAGE, "--width", "0", phrase="width: must be between 1 and 4096"),
    case(*IMAGE, "--width", "99999", phrase="width: must be between 1 and 4096"),
    case(*IMAGE, "--width", "33", phrase="width: tiny-image needs a multiple of 8"),
    case(*IMAGE, "--height", "-64", phrase="height: must be between 1 and 4096"),
    case(*IMAGE, "--width", "x", phrase="argument --width: invalid int value"),
    case(*IMAGE, "--steps", "0", phrase="steps: must be between 1 and 150"),
    case(*IMAGE, "--steps", "1000", phrase="steps: must be between 1 and 150"),
    case(*IMAGE, "--guidance", "-1", phrase="guidance: must be"),
    case(*IMAGE, "--guidance", "51", phrase="guidance: must be"),
    case(*IMAGE, "--guidance", "nan", phrase="guidance: must be"),
    case(*IMAGE, "--seed", "-5", phrase="seed: must be between 0 and 4294967295"),
    case(*IMAGE, "--seed", "4294967296", phrase="seed: must be between 0 and 4294967295"),
    case(*IMAGE, "--count", "0", phrase="count: must be between 1 and 16"),
    case(*IMAGE, "--count", "17", phrase="count: must be between 1 and 16"),
    case(*IMAGE, "--strength", "0", phrase="strength: must be"),
    case(*IMAGE, "--strength", "1.5", phrase="strength: must be"),
    case(*IMAGE, "--init", "{d}/missing.png", phrase="init: cannot read image 'missing.png'"),
    case(*IMAGE, "--init", "{d}/notes.png", phrase="init: cannot read image 'notes.png'", files={"notes.png": "not an image"}),
    case(*IMAGE, "--init", "{d}/half.png", phrase="init: cannot read image 'half.png'", files={"half.png": PNG[: len(PNG) // 2]}),
    case(*IMAGE, "--init", "{d}/bomb.png", phrase="init: 'bomb.png' has more than 89478485 pixels", files={"bomb.png": png_header(100_000, 100_000)}),  # item 12
    case(*IMAGE, "--init", "{d}/bomb.png", phrase="init: 'bomb.png' has more than 89478485 pixels", files={"bomb.png": png_header(10_000, 10_000)}),  # item 12: PIL only warns
    case(*IMAGE, "--init", "{d}", phrase="init: cannot read image"),
    case("image", "a", "--model", "tiny", "--out", "{d}/out", phrase="out: '", files={"out": "a file"}),  # item 16
    case("image", "a", "--model", "tiny", "--out", "{d}/f/out", phrase="is a file, so", files={"f": "a file"}),  # item 16
    case(*IMAGE[:2], "--model", "tiny-ltx", "--out", "{d}/out", phrase="model: tiny-ltx is a video model"),
    case(*IMAGE[:2], "--model", "nonsense", "--out", "{d}/out", phrase="model: unknown 'nonsense'"),
    case("image", "--out", "{d}/out", phrase="the following arguments are required: prompt"),
    case("image", "a", phrase="the following arguments are required: --out"),
]  # fmt: skip

MODEL_FOLDERS = [  # item 9: broken model folders and files name `model` and the file
    ("no index", folder("m"), "is a folder without model_index.json"),
    ("truncated index", model_index('{"_class_name": "StableDiff'), "has a model_index.json that does not read"),
    ("index a list", model_index("[1]"), "has a model_index.json that is not a JSON object"),
    ("class name a list", model_index('{"_class_name": ["a"]}'), "whose _class_name is not a name"),
    ("unknown class", model_index('{"_class_name": "FooPipeline"}'), "is a FooPipeline pipeline, which Reelchain does not run"),
    ("index not utf-8", model_index(b"\xff\xfe{"), "has a model_index.json that does not read"),
    ("deep index", model_index("[" * 100_000), "has a model_index.json that does not read (nested too deeply)"),
]  # fmt: skip
MODEL_FILES = [
    ("garbage", bytes(range(256)) * 8, "'m.safetensors' is not a safetensors checkpoint"),
    ("empty", b"", "'m.safetensors' is not a safetensors checkpoint"),
    ("truncated", (16).to_bytes(8, "little") + b'{"w": {"data_offsets": [0, 4096]}}', "'m.safetensors' is not a safetensors checkpoint"),
    ("header a list", (3).to_bytes(8, "little") + b"[1]", "'m.safetensors' is not a safetensors checkpoint"),
]  # fmt: skip
MODEL_CASES = [
    case(*command, "--model", "{d}/m", *rest, phrase="model: ", files={"m": build}, id=f"{command[0]} model folder: {what}")
    for what, build, _ in MODEL_FOLDERS
    for command, rest in ((("image", "a"), ("--out", "{d}/out")), (("thumbnails", "{d}/r.txt"), ("--out", "{d}/out")))
] + [
    case("image", "a", "--model", "{d}/m.safetensors", "--out", "{d}/out", phrase=phrase, files={"m.safetensors": data}, id=f"model file: {what}")
    for what, data, phrase in MODEL_FILES
] + [
    case("image", "a", "--model", "{d}/none.safetensors", "--out", "{d}/out", phrase="model: file not found: "),
    case("image", "a", "--model", "~nosuchuser9/m.safetensors", "--out", "{d}/out", phrase="model: file not found: '~nosuchuser9/m.safetensors'"),
    case("image", "a", "--model", "~nosuchuser9/m", "--out", "{d}/out", phrase="model: unknown '~nosuchuser9/m'"),
]  # fmt: skip
for _what, _build, _phrase in MODEL_FOLDERS:  # the exact phrase, checked for `image` only
    MODEL_CASES.append(case("image", "a", "--model", "{d}/m", "--out", "{d}/out", phrase=_phrase,
                            files={"m": _build}, id=f"model folder phrase: {_what}"))  # fmt: skip

THUMBS = ("thumbnails", "{d}/r.txt", "--model", "tiny", "--out", "{d}/out")
R = {"r.txt": "a cat\n"}
THUMB_CASES = [
    case(*THUMBS, "--preset", "cinema", phrase="preset: unknown 'cinema'", files=R),
    case(*THUMBS, "--preset", "9000x100", phrase="preset: 9000x100 out of range", files=R),
    case(*THUMBS, "--preset", "0x0", phrase="preset:", files=R),
    case(*THUMBS, "--preset", "64x", phrase="preset:", files=R),
    case(*THUMBS, "--variants", "0", phrase="variants: must be between 1 and 16", files=R),
    case(*THUMBS, "--variants", "17", phrase="variants: must be between 1 and 16", files=R),
    case(*THUMBS, "--variants", "x", phrase="argument --variants: invalid int value", files=R),
    case(*THUMBS, "--format", "gif", phrase="argument --format: invalid choice", files=R),
    case(*THUMBS, "--model", "tiny-ltx", phrase="model: tiny-ltx is a video model", files=R),
    case("thumbnails", "--out", "{d}/out", phrase="input: give a CSV, JSONL or TXT file, or --from-video PATH"),
    case("thumbnails", "{d}/none.csv", "--out", "{d}/out", phrase="input: file not found"),
    case("thumbnails", "{d}/r.xlsx", "--out", "{d}/out", phrase="input: unknown file type '.xlsx'", files={"r.xlsx": "prompt\na\n"}),
    case("thumbnails", "{d}/dir.csv", "--out", "{d}/out", phrase="input: file not found", files={"dir.csv/x": "x"}),
    case("thumbnails", "{d}/r.csv", "--out", "{d}/out", phrase="input: unknown column 'titel'", files={"r.csv": "prompt,titel\na,b\n"}),
    case("thumbnails", "{d}/r.csv", "--out", "{d}/out", phrase="input: the CSV header needs a 'prompt' column", files={"r.csv": "title\nCats\n"}),
    case("thumbnails", "{d}/r.csv", "--out", "{d}/out", phrase="input: column 'prompt' appears twice", files={"r.csv": "prompt,prompt\na,b\n"}),
    case("thumbnails", "{d}/r.txt", "--out", "{d}/out", phrase="input: no rows in 'r.txt'", files={"r.txt": "\n\n"}),
    case("thumbnails", "{d}/r.jsonl", "--out", "{d}/out", phrase="input: no rows in 'r.jsonl'", files={"r.jsonl": ""}),
    case(*THUMBS, phrase="input: 2 rows is over the limit of 1", files={"r.txt": "a\nb\n"}, env={"REELCHAIN_MAX_ROWS": "1"}),
    case(*THUMBS, phrase="input: 'r.txt' is over the limit of 10 bytes", files={"r.txt": "a cat on a mat\n"}, env={"REELCHAIN_MAX_UPLOAD_BYTES": "10"}),
    case(*THUMBS, phrase="out: '", files={**R, "out": "a file"}),
    case(*THUMBS, phrase="is not a thumbnails manifest", files={**R, "out": run_folder()}),
    case(*THUMBS, "--dry-run", phrase="is not a thumbnails manifest", files={**R, "out": run_folder()}),
    case(*THUMBS, phrase="is being written by another run right now", files={**R, "out": busy()}),  # item 1
    case(*THUMBS, "--dry-run", phrase="is being written by another run right now", files={**R, "out": busy()}),
]  # fmt: skip

FROM_VIDEO = [  # item 17: each refused by the dry run exactly as by the run
    ("no such file", "{d}/none.mp4", {}, "from-video: no such file or folder"),
    ("0 bytes", "{d}/v.mp4", {"v.mp4": b""}, "from-video: cannot read 'v.mp4'"),
    ("text named .mp4", "{d}/v.mp4", {"v.mp4": "not a video\n"}, "from-video: cannot read 'v.mp4'"),
    ("a bomb PNG named .mp4", "{d}/v.mp4", {"v.mp4": png_header(100_000, 100_000)}, "from-video: cannot read 'v.mp4'"),
    ("a folder without a video", "{d}/run", {"run/x.txt": "x"}, "from-video: no video.mp4 in"),
    ("with --model", "{d}/run/video.mp4 --model tiny", {"run": run_folder()}, "model: --from-video takes frames from the video"),
    ("with two title rows", "{d}/run -i {d}/t.txt", {"run": run_folder(), "t.txt": "One\nTwo\n"}, "input: with --from-video give one row"),
    ("with a bad title row", "{d}/run -i {d}/t.csv", {"run": run_folder(), "t.csv": "title,seed\nA,x\n"}, "input: line 2: seed: must be a whole number"),
    ("into a file", "{d}/run -o {d}/f", {"run": run_folder(), "f": "a file"}, "out: '"),
    ("into a video run", "{d}/run -o {d}/run", {"run": run_folder()}, "is not a thumbnails manifest"),
    ("into a folder in use", "{d}/run -o {d}/busy", {"run": run_folder(), "busy": busy()}, "is being written by another run"),
]  # fmt: skip


def from_video_argv(spec: str) -> list[str]:
    source, *rest = spec.split()
    argv, out, extra = ["thumbnails"], "{d}/out", []
    while rest:
        flag, value = rest.pop(0), rest.pop(0) if rest and not rest[0].startswith("--") else None
        if flag == "-i":
            argv.append(value)
        elif flag == "-o":
            out = value
        else:
            extra += [flag] + ([value] if value else [])
    return [*argv, "--from-video", source, "--out", out, "--preset", "64x64", *extra]


FROM_VIDEO_CASES = [
    case(*from_video_argv(spec), *dry, phrase=phrase, files=files, id=f"from-video {what}{' --dry-run' if dry else ''}")
    for what, spec, files, phrase in FROM_VIDEO
    for dry in ((), ("--dry-run",))
]  # fmt: skip

ENV_CASES = [  # item 16: a bad variable is named
    case(*IMAGE, phrase=f"{name}: must be a whole number > 0 (got {value!r})", env={name: value}, id=f"{name}={value}")
    for name, value in (("REELCHAIN_MAX_SIDE", "0"), ("REELCHAIN_MAX_SIDE", "abc"), ("REELCHAIN_MAX_SIDE", "1.5"),
                        ("REELCHAIN_MAX_SIDE", "-3"), ("REELCHAIN_MAX_STEPS", "nan"), ("REELCHAIN_MAX_COUNT", ""))
] + [
    case(*IMAGE, phrase="REELCHAIN_MAX_SECONDS_TOTAL: must be a number > 0", env={"REELCHAIN_MAX_SECONDS_TOTAL": v}, id=f"REELCHAIN_MAX_SECONDS_TOTAL={v}")
    for v in ("-1", "inf", "x")
] + [
    case(*THUMBS, phrase=phrase, files=R, env={name: value}, id=f"{name}={value}")
    for name, value, phrase in (
        ("REELCHAIN_BATCH_SIZE", "x", "(from REELCHAIN_BATCH_SIZE)"),
        ("REELCHAIN_BATCH_SIZE", "0", "batch-size: must be ≥ 1 (got 0) (from REELCHAIN_BATCH_SIZE)"),
        ("REELCHAIN_MEMORY_BUDGET", "lots", "memory-budget: cannot read 'lots' as a size"),
        ("REELCHAIN_FAST", "warp", "fast: unknown 'warp'"),
        ("REELCHAIN_DEVICE", "tpu", "device: unknown 'tpu' (choose one of: auto, cpu, cuda, mps) (from REELCHAIN_DEVICE)"),
        ("REELCHAIN_OFFLOAD", "x", "offload: unknown 'x'"),
        ("REELCHAIN_DTYPE", "int8", "dtype: unknown 'int8'"),
        ("REELCHAIN_MAX_PROMPT_CHARS", "0", "REELCHAIN_MAX_PROMPT_CHARS: must be a whole number > 0"),
    )
]  # fmt: skip

REFUSED = (VIDEO_CASES + OUT_CASES + RESUME_CASES + IMAGE_CASES + MODEL_CASES + THUMB_CASES
           + FROM_VIDEO_CASES + ENV_CASES + STORYBOARD_CASES)  # fmt: skip


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """What many rows start from, made once: a finished tiny run, a thumbnails folder."""
    from pipelines.chain import VideoOptions, make_video
    from pipelines.thumbnails import ThumbnailOptions, make_thumbnails

    root = tmp_path_factory.mktemp("shared")
    (root / "s.yaml").write_text(STORY)
    make_video(root / "s.yaml", root / "run", VideoOptions(model="tiny"))
    (root / "r.txt").write_text("a cat\n")
    opts = ThumbnailOptions(model="tiny", preset="64x64")
    make_thumbnails(root / "r.txt", root / "thumbs", opts, say=lambda line: None)
    return {"run": root / "run", "thumbs": root / "thumbs"}


def build_files(d: Path, files, shared: dict) -> None:
    for name, content in files:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path, shared)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@pytest.mark.parametrize("c", REFUSED)
def test_refused_with_one_line_and_nothing_written(c, cli, capsys, tmp_path, monkeypatch, shared):
    """Bad input: exit 2 (or the case's code), one stderr line with the phrase, nothing on
    stdout, and the case's folder exactly as it was (nothing at a final path)."""
    d = tmp_path / "case"
    d.mkdir()
    if not any(name == "s.yaml" for name, _ in c.files):
        (d / "s.yaml").write_text(STORY)
    try:
        build_files(d, c.files, shared)
        for name, value in c.env:
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(d)
        before = tree(d)
        argv = [a.replace("{d}", str(d)) for a in c.argv]
        try:
            code, out, err = cli(*argv)
        except SystemExit as exc:  # argparse: usage errors
            captured = capsys.readouterr()
            code, out, err = exc.code, captured.out, captured.err
        assert code == c.code, err
        assert err.count("\n") == 1 and c.phrase in err, err
        assert out == ""
        assert tree(d) == before
    finally:
        while HELD:
            HELD.pop().release()


# --------------------------------------------------------------------------- 5. faults that hold


@pytest.mark.parametrize(
    "content",
    ["[1]", '{"k": 5}', '{"k": {"base": "x"}}', "garbage", '{"k": {"nope": 1}}', "[" * 100_000],
    ids=["a list", "an entry a number", "a text field", "not JSON", "unknown field", "deep"],
)
def test_a_damaged_planner_cache_is_ignored_and_rewritten(
    cli, tmp_path, monkeypatch, caplog, content
):
    """Issue 16, item 11: a planner cache that does not read broke every generating command
    until deleted; now it is ignored with a warning naming the file, and rewritten."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "planner.json").write_text(content)
    monkeypatch.setenv("REELCHAIN_CACHE", str(cache))
    code, out, err = cli("image", "a", "--model", "tiny", "--out", tmp_path / "out", "--width", "64",
                         "--height", "64")  # fmt: skip
    assert code == 0, err
    assert f"planner cache {cache / 'planner.json'} does not read" in caplog.text
    assert isinstance(json.loads((cache / "planner.json").read_text()), dict)
    assert len(out.split()) == 1


def test_an_accepted_init_image_prints_no_warning(cli, tmp_path):
    """Issue 16, item 12: PIL's decompression-bomb warning never reaches stderr; an image
    over its threshold is refused (see the table), one under it is used quietly."""
    import warnings

    (tmp_path / "init.png").write_bytes(PNG)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, err = cli("image", "a", "--model", "tiny", "--out", tmp_path / "out",
                           "--init", tmp_path / "init.png", "--width", "64", "--height", "64")  # fmt: skip
    assert code == 0 and "Warning" not in err, err


def test_one_deeply_nested_jsonl_row_is_one_bad_row(cli, tmp_path):
    """Issue 16, item 7: a JSONL row nested 100,000 levels ended the whole batch with a
    RecursionError; now it is one bad row, reported with its line, and the others are made."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "a cat"}\n' + "[" * 100_000 + "\n" + '{"prompt": "a dog"}\n')
    code, out, err = cli("thumbnails", rows, "--out", tmp_path / "out", *SMALL)
    assert code == 1
    assert "line 2: nested too deeply" in err and len(out.split()) == 2
    statuses = {
        r["line"]: r["status"]
        for r in json.loads((tmp_path / "out" / "manifest.json").read_text())["rows"]
    }
    assert statuses == {1: "done", 2: "failed", 3: "done"}


@pytest.fixture
def small_disk(tmp_path):
    """A real small file system (tmpfs), full long before a run ends; `grow()` frees space."""
    mnt = mount_tmpfs(tmp_path / "disk", "size=60k")  # (test_chain injects ENOSPC too)

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=20m", str(mnt)], check=True)

    try:
        yield mnt, grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_with_one_line_and_the_run_resumes_the_same(cli, tmp_path, small_disk):
    """A real full disk mid-run: exit 1 with one line that names no temporary file; every
    file at a final path is whole; with space again, --resume gives the same frames."""
    mnt, grow = small_disk
    story = tmp_path / "story.yaml"
    story.write_text(KILL_STORY)
    assert cli("video", story, "--out", tmp_path / "ref", *KILL_ARGS)[0] == 0
    code, _, err = cli("video", story, "--out", mnt / "run", *KILL_ARGS)
    assert code == 1, err
    line = one_line(err)
    assert "No space left on device" in line and ".partial-" not in line, line
    whole_files(mnt / "run")
    grow()
    code, _, err = cli("video", "--resume", mnt / "run")
    assert code == 0, err
    assert np.array_equal(
        frames_of(mnt / "run" / "video.mp4"), frames_of(tmp_path / "ref" / "video.mp4")
    )
    assert not [p for p in (mnt / "run").rglob("*") if ".partial-" in p.name]


def test_a_full_disk_stops_a_thumbnails_batch_and_the_rerun_finishes_it(cli, tmp_path, small_disk):
    mnt, grow = small_disk
    rows = tmp_path / "rows.txt"
    rows.write_text("".join(f"a view number {i}\n" for i in range(20)))
    argv = ("thumbnails", rows, "--out", mnt / "out", *SMALL)
    code, _, err = cli(*argv)
    assert code == 1 and ".partial-" not in one_line(err) and "No space left" in err, err
    made = {p.name for p in (mnt / "out").glob("*.jpg")}
    assert 0 < len(made) < 20
    grow()
    code, out, err = cli(*argv)
    assert code == 0 and len(out.split()) == 20, err
    manifest = json.loads((mnt / "out" / "manifest.json").read_text())
    assert manifest["generated"] == 20 - len(made)  # the rows on disk are not made again
    assert all(r["status"] in ("done", "skipped-existing") for r in manifest["rows"])


def test_a_file_system_without_locks_still_runs(cli, tmp_path, monkeypatch):
    """Some network mounts refuse flock (ENOLCK): runs go on unclaimed, as on Windows,
    instead of every run being told another one is writing its folder."""
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    (tmp_path / "s.yaml").write_text(STORY)
    code, out, err = cli("video", tmp_path / "s.yaml", "--out", tmp_path / "run", "--model", "tiny")
    assert code == 0 and out.strip().endswith("video.mp4"), err
