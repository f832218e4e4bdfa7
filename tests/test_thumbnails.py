"""Batch thumbnails against the tiny image twin (64 px, 2 steps) and a synthetic video.

Most rows use small custom presets to stay fast; the named presets each appear once.
"""

import json
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines import frames, images, models
from pipelines.overlay import badge_area, safe_area
from pipelines.settings import Limits
from pipelines.thumbnails import ThumbnailOptions, make_thumbnails, read_rows
from pipelines.video_io import VideoWriter

SEED_ERROR = "seed: must be a whole number from 0 to 4294967295"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def manifest_rows(out):
    data = json.loads((out / "manifest.json").read_text())
    assert data["kind"] == "thumbnails"
    return {row["line"]: row for row in data["rows"]}


def exif_parameters(path):
    comment = Image.open(path).getexif().get_ifd(0x8769)[0x9286]
    return comment[8:].decode("ascii" if comment.startswith(b"ASCII") else "utf-16-be")


def inside(box, area):
    return area[0] <= box[0] and area[1] <= box[1] and box[2] <= area[2] and box[3] <= area[3]


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything loads a model or generates an image."""

    def boom(*args, **kwargs):
        raise AssertionError("no model may be loaded or called here")

    monkeypatch.setattr(models, "load", boom)
    monkeypatch.setattr(images, "generate", boom)


@pytest.fixture
def generate_spy(monkeypatch, tmp_path):
    """Record the jobs that reach the model, and check that each thumbnail (in tmp_path/out)
    is on disk as soon as its image exists, before the next one is made."""
    real = images.generate
    calls = []

    def spy(loaded, jobs, *, on_result=None, **kwargs):
        calls.append(list(jobs))
        delivered = []

        def checked(index, arr):
            on_result(index, arr)
            delivered.append(index)
            assert len(list((tmp_path / "out").glob("*-*-*.*"))) == len(delivered)

        result = real(loaded, jobs, on_result=checked, **kwargs)
        assert sorted(delivered) == list(range(len(jobs)))
        return result

    monkeypatch.setattr(images, "generate", spy)
    return calls


# --------------------------------------------------------------------------- CSV end to end

ROWS_CSV = """prompt,title,seed,preset
a lighthouse at dusk,My Best Trip Ever: Norway in 10 Days,7,youtube
a red bicycle in the rain,,,

a mountain lake,Lake,abc,
,Empty prompt,,
a city at night,Night City,3,shorts
a forest,Forest,4,banana
"a harbour, at noon",Harbour,5,square
"""


def test_csv_batch_writes_good_rows_reports_bad_ones(cli, tmp_path, generate_spy):
    rows = write(tmp_path / "rows.csv", ROWS_CSV)
    out = tmp_path / "out"
    code, stdout, err = cli(
        "thumbnails", rows, "--out", out, "--model", "tiny", "--preset", "200x120",
        "--variants", "2", "--batch-size", "2",
    )  # fmt: skip
    assert code == 1, err
    # bad rows: one line each on stderr, with their physical line numbers
    assert f"line 5: {SEED_ERROR} (got 'abc')" in err
    assert "line 6: prompt: must be a non-empty text" in err
    assert "line 8: preset: unknown 'banana'" in err
    # good rows: two variants each, exact sizes, named <line>-<variant>-<slug>
    expected = {
        "2-1-my-best-trip-ever-norway-in-10-days.jpg": (1280, 720),
        "2-2-my-best-trip-ever-norway-in-10-days.jpg": (1280, 720),
        "3-1-a-red-bicycle-in-the-rain.jpg": (200, 120),
        "3-2-a-red-bicycle-in-the-rain.jpg": (200, 120),
        "7-1-night-city.jpg": (1080, 1920),
        "7-2-night-city.jpg": (1080, 1920),
        "9-1-harbour.jpg": (1080, 1080),
        "9-2-harbour.jpg": (1080, 1080),
    }
    assert [line.rsplit("/", 1)[-1] for line in stdout.split()] == list(expected)
    for name, size in expected.items():
        path = out / name
        assert Image.open(path).size == size
        assert Image.open(path).format == "JPEG" and path.stat().st_size < 2_000_000
    params = exif_parameters(out / "2-2-my-best-trip-ever-norway-in-10-days.jpg")
    assert params.startswith("a lighthouse at dusk\n")
    assert "Seed: 8" in params and "Model: tiny-image" in params
    # one model call for all good rows: generated at the twin's ~64 px, target aspect
    [jobs] = generate_spy
    assert len(jobs) == 8
    assert {(j.width, j.height) for j in jobs} == {(88, 48), (80, 48), (48, 88), (64, 64)}
    assert max(j.width * j.height for j in jobs) <= 64 * 64 * 1.1

    man = manifest_rows(out)
    assert sorted(man) == [2, 3, 5, 6, 7, 8, 9]
    assert {line for line, r in man.items() if r["status"] == "failed"} == {5, 6, 8}
    assert man[5]["error"].startswith(SEED_ERROR) and man[5]["prompt"] == "a mountain lake"
    assert man[2]["seeds"] == [7, 8] and man[2]["status"] == "done"
    assert man[9]["prompt"] == "a harbour, at noon"
    default = zlib.crc32(b"a red bicycle in the rain")
    assert man[3]["seeds"] == [default, default + 1]
    assert man[3]["title_box"] is None
    for line in (2, 7, 9):
        tb = man[line]["title_box"]
        size = tuple(man[line]["size"])
        assert tb["safe_area"] == list(safe_area(size))
        assert inside(tb["box"], safe_area(size))
        assert not overlaps(tb["box"], badge_area(size))
        assert tb["font_size"] >= 10 and tb["lines"]
    contact = Image.open(out / "contact.jpg")
    assert contact.format == "JPEG" and contact.width > 600
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


def test_rerun_generates_nothing_and_a_changed_row_only_itself(cli, tmp_path, monkeypatch):
    rows = write(
        tmp_path / "rows.csv",
        "prompt,title\na paper boat,Boats\na tin robot,Robots\nhello,\n",
    )
    out = tmp_path / "out"
    args = ("thumbnails", rows, "--out", out, "--model", "tiny", "--preset", "128x96")
    code, first, err = cli(*args)
    assert code == 0, err
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def boom(*a, **k):
        raise AssertionError("a re-run must not generate")

    monkeypatch.setattr(images, "generate", boom)
    monkeypatch.setattr(models, "load", boom)
    code, again, err = cli(*args)
    assert code == 0, err
    assert again == first  # the same files are listed
    assert {r["status"] for r in manifest_rows(out).values()} == {"skipped-existing"}
    changed = {p.name for p in out.iterdir() if p.stat().st_mtime_ns != stamps[p.name]}
    assert changed <= {"manifest.json"}

    # A new title re-makes that row only; the replaced file goes away.
    monkeypatch.undo()
    calls = []
    real = images.generate

    def counting(loaded, jobs, **kwargs):
        calls.append(jobs)
        return real(loaded, jobs, **kwargs)

    monkeypatch.setattr(images, "generate", counting)
    write(rows, "prompt,title\na paper boat,Boats\na tin robot,Robot Wars\nhello,\n")
    code, third, err = cli(*args)
    assert code == 0, err
    assert [[j.prompt for j in jobs] for jobs in calls] == [["a tin robot"]]
    man = manifest_rows(out)
    assert [man[n]["status"] for n in (2, 3, 4)] == ["skipped-existing", "done", "skipped-existing"]
    assert (out / "3-1-robot-wars.jpg").is_file() and not (out / "3-1-robots.jpg").exists()

    # A deleted output is made again.
    (out / "2-1-boats.jpg").unlink()
    calls.clear()
    assert cli(*args)[0] == 0
    assert [[j.prompt for j in jobs] for jobs in calls] == [["a paper boat"]]


# --------------------------------------------------------------------------- JSONL and TXT


def test_jsonl_rows_png_and_broken_lines(cli, tmp_path):
    lines = [
        '{"prompt": "a neon sign", "title": "Open Late", "seed": 11}',
        "",
        '{"prompt": "a blue door", "negative_prompt": "blurry", "preset": "96x160"}',
        '{"prompt": "broken", ',
        '{"prompt": "a cat", "seed": -1}',
        '{"prompt": "a dog", "seed": "twelve"}',
        '{"prompt": "a cow", "titel": "Moo"}',
        '["a list"]',
        '{"prompt": "a fox", "seed": "12"}',
    ]
    rows = write(tmp_path / "rows.jsonl", "\n".join(lines) + "\n")
    out = tmp_path / "out"
    code, stdout, err = cli(
        "thumbnails", rows, "--out", out, "--model", "tiny", "--preset", "160x96",
        "--format", "png",
    )  # fmt: skip
    assert code == 1
    assert "line 4: not valid JSON" in err
    assert f"line 5: {SEED_ERROR} (got -1)" in err
    assert f"line 6: {SEED_ERROR} (got 'twelve')" in err
    assert "line 7: unknown key 'titel'" in err
    assert "line 8: must be a JSON object" in err
    names = [p.rsplit("/", 1)[-1] for p in stdout.split()]
    assert names == ["1-1-open-late.png", "3-1-a-blue-door.png", "9-1-a-fox.png"]
    door = Image.open(out / "3-1-a-blue-door.png")
    assert door.format == "PNG" and door.size == (96, 160)
    assert "Negative prompt: blurry" in door.text["parameters"]
    assert "Seed: 11" in Image.open(out / "1-1-open-late.png").text["parameters"]
    man = manifest_rows(out)
    assert sorted(man) == [1, 3, 4, 5, 6, 7, 8, 9]
    assert man[9]["seed"] == 12
    assert [line for line, r in man.items() if r["status"] == "failed"] == [4, 5, 6, 7, 8]


def test_txt_one_prompt_per_line_with_blank_lines_counted(cli, tmp_path):
    rows = write(tmp_path / "prompts.txt", "a green kite\n\n  \na yellow tent  \n")
    out = tmp_path / "out"
    code, stdout, err = cli(
        "thumbnails", rows, "--out", out, "--model", "tiny", "--preset", "96x96",
        "--variants", "2",
    )  # fmt: skip
    assert code == 0, err
    names = [p.rsplit("/", 1)[-1] for p in stdout.split()]
    assert names == [
        "1-1-a-green-kite.jpg",
        "1-2-a-green-kite.jpg",
        "4-1-a-yellow-tent.jpg",
        "4-2-a-yellow-tent.jpg",
    ]
    man = manifest_rows(out)
    assert man[4]["prompt"] == "a yellow tent"
    seed = zlib.crc32(b"a yellow tent")  # stable across machines and runs
    assert man[4]["seeds"] == [seed, seed + 1]
    assert f"Seed: {seed + 1}" in exif_parameters(out / "4-2-a-yellow-tent.jpg")


# --------------------------------------------------------------------------- dry run, errors


def test_dry_run_validates_only(cli, tmp_path, no_model):
    rows = write(tmp_path / "rows.csv", ROWS_CSV)
    out = tmp_path / "out"
    code, stdout, err = cli("thumbnails", rows, "--out", out, "--model", "tiny", "--dry-run")
    assert code == 1 and stdout == ""
    assert f"line 5: {SEED_ERROR} (got 'abc')" in err
    assert "line 2: ok, 1280x720 (youtube)" in err and "line 7: ok, 1080x1920 (shorts)" in err
    assert not out.exists()

    good = write(tmp_path / "good.txt", "a calm sea\n")
    code, stdout, err = cli("thumbnails", good, "--out", out, "--dry-run")
    assert code == 0 and stdout == "" and not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.csv"], "input: file not found"),
        (["rows.csv", "--preset", "cinema"], "preset: unknown 'cinema'"),
        (["rows.csv", "--preset", "9000x100"], "preset: 9000x100 out of range"),
        (["rows.csv", "--variants", "0"], "variants: must be between 1 and 16"),
        (["rows.csv", "--variants", "17"], "variants: must be between 1 and 16"),
        ([], "input: give a CSV, JSONL or TXT file, or --from-video PATH"),
        (["rows.csv", "--model", "tiny-ltx"], "model: tiny-ltx is a video model"),
        (["rows.xlsx"], "input: unknown file type '.xlsx'"),
        (["header.csv"], "input: unknown column 'titel'"),
        (["noprompt.csv"], "input: the CSV header needs a 'prompt' column"),
        (["empty.txt"], "input: no rows in 'empty.txt'"),
        (["--from-video", "nowhere.mp4"], "from-video: no such file or folder"),
    ],
)
def test_invalid_command_exits_2_with_one_line(cli, tmp_path, monkeypatch, no_model, argv, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "rows.csv", "prompt\na cat\n")
    write(tmp_path / "rows.xlsx", "prompt\na cat\n")
    write(tmp_path / "header.csv", "prompt,titel\na cat,Cats\n")
    write(tmp_path / "noprompt.csv", "title\nCats\n")
    write(tmp_path / "empty.txt", "\n\n")
    code, stdout, err = cli("thumbnails", *argv, "--out", "out")
    assert code == 2 and stdout == ""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_limits_apply_to_rows_and_variants(tmp_path):
    rows = write(tmp_path / "rows.txt", "short prompt\n" + "a very long prompt " * 5 + "\n")
    opts = ThumbnailOptions(dry_run=True, limits=Limits(max_prompt_chars=40), model="tiny")
    report = make_thumbnails(rows, tmp_path / "out", opts, say=lambda line: None)
    assert report.rows == 2 and report.files == [] and report.manifest is None
    assert report.failed == [(2, "prompt: 94 characters is over the limit of 40")]
    with pytest.raises(ValueError, match="input: 2 rows is over the limit of 1"):
        make_thumbnails(rows, tmp_path / "out", ThumbnailOptions(limits=Limits(max_rows=1)))
    with pytest.raises(ValueError, match="variants: must be a whole number from 1 to 3"):
        ThumbnailOptions(variants=4, limits=Limits(max_count=3))
    with pytest.raises(ValueError, match="format: unknown 'gif'"):
        ThumbnailOptions(format="gif")


def test_csv_line_numbers_follow_the_file(tmp_path):
    text = (
        "\ufeffPrompt,Title,\n"  # spreadsheet export: BOM, capitals, a trailing empty column
        '"a poem\nacross lines",Poem,\n'
        ",,\n"
        "a,b,c,d\n"
        "a lamp,,\n"
    )
    rows, bad = read_rows(write(tmp_path / "rows.csv", text), ThumbnailOptions())
    assert [(r.line, r.prompt, r.title) for r in rows] == [
        (2, "a poem\nacross lines", "Poem"),
        (6, "a lamp", ""),
    ]
    assert [(b.line, b.error) for b in bad] == [
        (5, "4 values for 3 columns (put values that contain commas in double quotes)")
    ]


def test_out_folder_of_a_video_run_is_refused(cli, tmp_path, no_model):
    run = tmp_path / "run"
    run.mkdir()
    write(run / "manifest.json", json.dumps({"status": "done", "segments": []}))
    rows = write(tmp_path / "rows.txt", "a cat\n")
    code, _, err = cli("thumbnails", rows, "--out", run, "--model", "tiny")
    assert code == 2 and "is not a thumbnails manifest" in err
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"


# --------------------------------------------------------------------------- from a video

W, H, FPS = 128, 96, 10


def scene(colour, i):
    """A coloured field with a sharp moving checker, so every frame has detail."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = colour
    for y in range(0, H, 16):
        for x in range(0, W, 16):
            if (x // 16 + y // 16 + i // 4) % 2 == 0:
                img[y : y + 8, x : x + 8] = 240
    return img


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder with a 3-scene video.mp4, written by the project's own encoder."""
    root = tmp_path_factory.mktemp("run")
    with VideoWriter(root / "video.mp4", FPS, W, H) as writer:
        for colour in ((200, 40, 40), (30, 50, 200), (40, 170, 60)):
            for i in range(12):
                writer.write(scene(colour, i))
    return root


def test_from_video_picks_frames_without_a_model(cli, tmp_path, run_folder, no_model):
    title = write(tmp_path / "title.txt", "Three Colours, One Video\n")
    out = tmp_path / "out"
    code, stdout, err = cli(
        "thumbnails", title, "--from-video", run_folder, "--out", out, "--variants", "3",
        "--preset", "square",
    )  # fmt: skip
    assert code == 0, err
    paths = stdout.split()
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        f"video-{i}-three-colours-one-video.jpg" for i in (1, 2, 3)
    ]
    for p in paths:
        img = Image.open(p)
        assert img.size == (1080, 1080) and img.format == "JPEG"
        assert "Source: video.mp4, Frame: " in exif_parameters(p)
    [row] = manifest_rows(out).values()
    assert row["status"] == "done" and row["line"] == 1 and row["video"] == "video.mp4"
    assert len({f["index"] for f in row["frames"]}) == 3
    box = row["title_box"]
    assert inside(box["box"], safe_area((1080, 1080)))
    assert not overlaps(box["box"], badge_area((1080, 1080)))
    assert (out / "contact.jpg").is_file()


def test_from_video_file_rerun_skips_decoding(cli, tmp_path, run_folder, monkeypatch, no_model):
    out = tmp_path / "out"
    args = ("thumbnails", "--from-video", run_folder / "video.mp4", "--out", out)
    code, stdout, err = cli(*args, "--preset", "160x90", "--variants", "2", "--format", "png")
    assert code == 0, err
    assert [Image.open(p).size for p in stdout.split()] == [(160, 90)] * 2

    def boom(*a, **k):
        raise AssertionError("a re-run must not decode the video again")

    monkeypatch.setattr(frames, "best_frames", boom)
    code, again, err = cli(*args, "--preset", "160x90", "--variants", "2", "--format", "png")
    assert code == 0 and again == stdout
    [row] = manifest_rows(out).values()
    assert row["status"] == "skipped-existing"
    code, _, err = cli(*args, "--model", "tiny")
    assert code == 2 and "model: --from-video takes frames from the video" in err


def test_a_rows_own_preset_obeys_the_caps(tmp_path, monkeypatch):
    from pipelines.settings import Limits
    from pipelines.thumbnails import ThumbnailOptions, make_thumbnails

    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,preset\na fox,128x72\na bird,1600x900\n")
    opts = ThumbnailOptions(model="tiny", preset="128x72", limits=Limits(max_side=1024))
    report = make_thumbnails(rows, tmp_path / "out", opts)
    assert [line for line, _ in report.failed] == [3]
    assert "preset: 1600x900 is over the limit of 1024" in report.failed[0][1]
    assert len(report.files) == 1
