"""The CLI as a hostile or careless user meets it: bad input, damaged run folders, SIGKILL at
sixteen moments, a full disk, races. Issue 16's cases, kept as a suite.

Most cases are rows of tables run in-process (`cli` fixture): the input, the exit code, a
phrase the one stderr line must contain, and that nothing is left at a final path. Kills
and races run in forked children of `tests/harness.py` (real SIGKILL, real processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

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


# --------------------------------------------------------------------------- 1. races

STORY_A = "fps: 8\nwidth: 32\nheight: 32\nseed: 1\nshots:\n  - prompt: race a\n    seconds: 1\n"
STORY_B = (
    "fps: 8\nwidth: 32\nheight: 32\nseed: 2\nshots:\n  - prompt: race b one\n    seconds: 1\n"
    "  - prompt: race b two\n    seconds: 1\n"
)
RACES = 4  # each race: two processes released together by a barrier


def race_results(tmp_path: Path) -> list[dict]:
    """Two `video` runs of different storyboards into one --out, RACES times, then two
    resumes of one folder: each pair released together by a barrier."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(STORY_A)
    b.write_text(STORY_B)
    tasks = [
        {"kind": "race", "argvs": [["video", str(story), "--out", str(tmp_path / f"run{i}"),
                                    "--model", "tiny"] for story in (a, b)]}
        for i in range(RACES)
    ]  # fmt: skip
    tasks.append({"kind": "race", "argvs": [["video", "--resume", str(tmp_path / "run0")]] * 2})
    return harness(tasks)


def test_two_runs_into_one_folder_at_once_one_is_refused_never_mixed(tmp_path):
    """Issue 16, item 1: two `video` runs into the same --out released together. Exactly one
    runs; the other gets one line naming the folder, exit 2; the folder holds one run's
    storyboard, manifest and video, never a mix. Two resumes of one folder: the same."""
    results = race_results(tmp_path)
    for i, race in enumerate(results[:RACES]):
        out, runs = tmp_path / f"run{i}", race["runs"]
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
    resumes = results[RACES]["runs"]
    assert sorted(r["code"] for r in resumes) == [0, 2], resumes
    line = one_line(next(r for r in resumes if r["code"])["err"])
    assert "being run by another process" in line, line


# --------------------------------------------------------------------------- 2. SIGKILL

# Two shots; the first is three clips, each continuing from the last frame of the one
# before (its tail PNG), the second crossfades in: segments 0 → 1 → 2, and 3 on its own.
# With --batch-size 1 the calls are seg 0, seg 3 (one wave), seg 1, seg 2.
KILL_STORY = """\
fps: 8
width: 32
height: 32
seed: 5
interpolate: 1
shots:
  - prompt: a long river journey
    seconds: 3
    transition: crossfade
    transition_seconds: 0.5
  - prompt: the sea at dusk
    seconds: 1
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


def whole_files(run: Path) -> dict[str, int]:
    """Every file at a final path reads whole (a half-written one would not); returns the
    segments the manifest calls done, with their files' mtimes."""
    for path in run.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".mp4":
            assert len(frames_of(path)) > 0, path
        elif path.suffix in (".png", ".jpg"):
            from PIL import Image

            with Image.open(path) as im:
                im.load()
    manifest = run / "manifest.json"
    if not manifest.is_file():
        return {}
    segments = json.loads(manifest.read_text())["segments"]
    return {
        s["file"]: (run / s["file"]).stat().st_mtime_ns for s in segments if s["status"] == "done"
    }


def test_sigkill_at_sixteen_moments_then_resume_gives_the_same_frames(tmp_path):
    """A run killed at any of sixteen moments leaves only whole files at final paths; the
    resume (or, killed before its manifest existed, the same command again) makes only what
    is missing and gives a video frame-identical to an uninterrupted run, with no leftovers."""
    story = tmp_path / "story.yaml"
    story.write_text(KILL_STORY)
    argv = lambda out: ["video", str(story), "--out", str(out), *KILL_ARGS]  # noqa: E731
    runs = {name: tmp_path / f"kill{i:02d}" for i, name in enumerate(KILL_POINTS)}
    tasks = [{"kind": "run", "argv": argv(tmp_path / "ref")}]
    tasks += [{"kind": "kill", "argv": argv(runs[n]), "at": at} for n, at in KILL_POINTS.items()]
    ref, *killed = harness(tasks, warm=("tiny-ltx", "tiny-image"))
    assert ref["code"] == 0, ref["err"]
    reference = frames_of(tmp_path / "ref" / "video.mp4")
    finished = {}
    for name, result in zip(KILL_POINTS, killed, strict=True):
        assert result["signal"] == 9, f"{name}: the kill point was not reached: {result}"
        finished[name] = whole_files(runs[name])
    resumed = harness([{"kind": "resume", "argv": argv(runs[n]), "out": str(runs[n])}
                       for n in KILL_POINTS])  # fmt: skip
    for name, result in zip(KILL_POINTS, resumed, strict=True):
        run = runs[name]
        assert result["code"] == 0, f"{name}: {result['err']}"
        assert np.array_equal(frames_of(run / "video.mp4"), reference), name
        for file, mtime in finished[name].items():  # finished segments are not made again
            assert (run / file).stat().st_mtime_ns == mtime, f"{name}: {file} was made again"
        assert not [p for p in run.rglob("*") if ".partial-" in p.name], name


def test_damaged_tails_and_segments_are_made_again_on_resume(tmp_path):
    """Issue 16, items 3 and 4: a finished segment's missing or damaged tail PNG, or a
    truncated segment file, no longer blocks every resume: the segment is made again with
    its own seed (so the same frames), and the video is frame-identical to an uninterrupted
    run. The run is killed in the third video call (segments 0 and 3 done, 1 and 2 not)."""
    story = tmp_path / "story.yaml"
    story.write_text(KILL_STORY)
    argv = lambda out: ["video", str(story), "--out", str(out), *KILL_ARGS]  # noqa: E731
    damage = {
        "missing tail": [{"kind": "unlink", "path": "segments/seg-000-tail-0.png"}],
        "truncated tail": [{"kind": "truncate", "path": "segments/seg-000-tail-0.png"}],
        "truncated segment": [{"kind": "truncate", "path": "segments/seg-000.mp4"}],
        "truncated last segment": [{"kind": "truncate", "path": "segments/seg-003.mp4"}],
        "missing segment and tail": [{"kind": "unlink", "path": "segments/seg-000.mp4"},
                                     {"kind": "unlink", "path": "segments/seg-000-tail-0.png"}],
        "truncated keyframe": [{"kind": "truncate", "path": "keyframes/shot-000.png"}],
    }  # fmt: skip
    third_call = {"call": "pipelines.clips:_call", "nth": 3}
    tasks: list[dict] = [{"kind": "run", "argv": argv(tmp_path / "ref")}]
    for i, ops in enumerate(damage.values()):
        run = tmp_path / f"damaged{i}"
        tasks.append({"kind": "kill", "argv": argv(run), "at": third_call})
        tasks += [{**op, "path": str(run / op["path"])} for op in ops]
        tasks.append({"kind": "resume", "argv": argv(run), "out": str(run)})
    results = [r for r in harness(tasks) if r]
    assert results[0]["code"] == 0, results[0]["err"]
    reference = frames_of(tmp_path / "ref" / "video.mp4")
    for i, name in enumerate(damage):
        kill, resume = results[1 + 2 * i : 3 + 2 * i]
        assert kill["signal"] == 9, f"{name}: {kill}"
        assert resume["code"] == 0, f"{name}: {resume['err']}"
        assert np.array_equal(frames_of(tmp_path / f"damaged{i}" / "video.mp4"), reference), name


# --------------------------------------------------------------------------- 3. thumbnails

ROWS = "a lighthouse\na harbour\na forest\na desert\na glacier\n"
SMALL = ("--model", "tiny", "--preset", "64x64")


def test_a_killed_thumbnails_batch_keeps_its_finished_rows_and_no_partial_file(tmp_path):
    """Issue 16, item 5: killed while writing row 4 (the manifest is saved at most once a
    second, so it still calls rows 1-3 pending), a batch run again makes rows 4 and 5 only:
    rows 1-3 are on disk, carrying their fingerprints; row 4's `.partial-` file is gone."""
    rows = tmp_path / "rows.txt"
    rows.write_text(ROWS)
    out = tmp_path / "out"
    argv = ["thumbnails", str(rows), "--out", str(out), *SMALL]
    at = {"replace": "4-1-a-desert.jpg", "when": "before"}
    kill, again = harness([{"kind": "kill", "argv": argv, "at": at}, {"kind": "run", "argv": argv}])
    assert kill["signal"] == 9, kill
    assert again["code"] == 0, again["err"]
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
    code, _, err = cli("thumbnails", rows, "--out", out, *SMALL)
    assert code == 0, err
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


def test_two_thumbnails_batches_into_one_folder_at_once_one_is_refused(tmp_path):
    """Issue 16, item 1, for thumbnails: two batches into one --out released together,
    twice: one runs, the other is refused with one line (exit 2); the manifest is one's."""
    rows_a, rows_b = tmp_path / "a.txt", tmp_path / "b.txt"
    rows_a.write_text("a lighthouse\na harbour\n")
    rows_b.write_text("a forest\n")
    argvs = lambda out: [["thumbnails", str(rows), "--out", str(out), *SMALL]  # noqa: E731
                         for rows in (rows_a, rows_b)]  # fmt: skip
    outs = [tmp_path / "out0", tmp_path / "out1"]
    for out, race in zip(outs, harness([{"kind": "race", "argvs": argvs(o)} for o in outs]),
                         strict=True):  # fmt: skip
        runs = race["runs"]
        assert sorted(r["code"] for r in runs) == [0, 2], runs
        line = one_line(next(r for r in runs if r["code"])["err"])
        assert "being written by another run" in line and str(out) in line, line
        manifest = json.loads((out / "manifest.json").read_text())
        winner = rows_a if len(manifest["rows"]) == 2 else rows_b
        assert manifest["input"] == winner.name
        assert all(r["status"] == "done" for r in manifest["rows"])
