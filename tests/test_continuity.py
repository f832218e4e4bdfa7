"""Creators' storyboard fields on the twins: LoRAs per storyboard and per shot, a picture to
start a shot from, one look across shots (continuity, measured per cut), and finishing
(cards, captions with an .srt, a voice over ducked music) after the stitch."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_lora, write_tone
from PIL import Image

from pipelines.chain import VideoOptions, make_video, read_request
from pipelines.keyframes import start_picture
from pipelines.requests import VideoRequest
from pipelines.runs import load_png
from pipelines.settings import Limits
from pipelines.storyboard import Storyboard, parse_storyboard
from pipelines.video_io import probe

pytestmark = pytest.mark.usefixtures("one_thread")

HEAD = "fps: 8\nwidth: 32\nheight: 32\nseed: 4\n"
PROMPTS = ["a red paper boat on a rainy street", "a green forest at noon",
           "a violet night sky over the sea", "a yellow desert at dawn"]  # fmt: skip


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    made = {k: make_lora("sd", d / k, seed=n) for n, k in enumerate("ab", start=1)}
    return made | {"ltx": make_lora("ltx", d / "ltx", seed=3)}


def story_text(body: str, shots: list[str]) -> str:
    """A storyboard: `body`'s fields, then one half-second shot per entry of `shots` (each
    the shot's extra YAML lines)."""
    return HEAD + body + "shots:\n" + "".join(f"  - prompt: {p}\n    seconds: 0.5\n{x}"
                                              for p, x in zip(PROMPTS[: len(shots)], shots, strict=True))  # fmt: skip


def story(tmp_path, body: str, shots: list[str], name: str = "story.yaml"):
    path = tmp_path / name
    path.write_text(story_text(body, shots))
    return path


def run(tmp_path, path, out: str, mode: str = "keyframes"):
    return make_video(path, tmp_path / out, VideoOptions(model="tiny", mode=mode))


def keyframes(result) -> list[np.ndarray]:
    n = len(json.loads((result.run_dir / "storyboard.json").read_text())["shots"])
    return [load_png(result.run_dir / "keyframes" / f"shot-{k:03d}.png") for k in range(n)]


def test_loras_per_storyboard_and_shot_switch_like_separate_runs(tmp_path, loras):
    a, b = loras["a"], loras["b"]
    mixed = story(tmp_path, f"loras: ['{a}:0.8']\n",
                  ["", f"    loras: [{{file: '{b}'}}]\n    loras_mode: replace\n", ""])  # fmt: skip
    only_a = story(tmp_path, f"loras: ['{a}:0.8']\n", ["", "", ""], "a.yaml")
    only_b = story(tmp_path, f"loras: ['{b}']\n", ["", "", ""], "b.yaml")
    plain = story(tmp_path, "", ["", "", ""], "plain.yaml")
    got = keyframes(run(tmp_path, mixed, "mixed"))
    with_a, with_b = keyframes(run(tmp_path, only_a, "a")), keyframes(run(tmp_path, only_b, "b"))
    none = keyframes(run(tmp_path, plain, "plain"))
    assert np.array_equal(got[0], with_a[0]) and np.array_equal(got[2], with_a[2])
    assert np.array_equal(got[1], with_b[1])
    assert not np.array_equal(got[0], none[0]) and not np.array_equal(got[1], none[1])
    # What a resume reads back is the same storyboard: the LoRAs are kept with each shot.
    saved = json.loads((tmp_path / "mixed" / "storyboard.json").read_text())
    assert [[lo["scale"] for lo in s["loras"]] for s in saved["shots"]] == [[0.8], [1.0], [0.8]]
    assert Storyboard.from_dict(saved) == Storyboard.from_dict(saved).replace()


def test_the_cli_lora_replaces_the_storyboards_for_the_shots_that_inherit(tmp_path, loras):
    a, b = loras["a"], loras["b"]
    sb = parse_storyboard(
        HEAD + f"loras: ['{a}']\nshots:\n  - one\n  - prompt: two\n    loras: ['{b}:0.5']\n"
    )
    changed = sb.replace(loras=[f"{b}:0.3"])
    assert [[(lo.file, lo.scale) for lo in s.loras] for s in changed.shots] == [
        [(str(b), 0.3)],
        [(str(b), 0.3), (str(b), 0.5)],
    ]


def exif_rotated(path, colour_top, colour_bottom):
    """A 40×20 picture stored sideways with EXIF orientation 6 (shown rotated 90° right)."""
    upright = Image.new("RGB", (40, 20), colour_top)
    upright.paste(colour_bottom, (0, 10, 40, 20))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a phone writes
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif)
    return path


@pytest.mark.parametrize("mode", ["continue", "keyframes"])
def test_a_start_picture_is_the_shots_first_frame(tmp_path, mode):
    pic = exif_rotated(tmp_path / "phone.jpg", (230, 30, 30), (30, 30, 230))
    path = story(tmp_path, "", [f"    image: {pic.name}\n", ""])
    result = run(tmp_path, path, "run", mode)
    expected = start_picture(str(pic), (32, 32))
    assert np.array_equal(keyframes(result)[0], expected)
    assert expected[2, 16, 0] > 150 and expected[29, 16, 2] > 150  # upright: red over blue
    # The keyframe is what the shot's first clip starts from (the twins' random weights do
    # not copy it into their first frame; real image-to-video models do).
    assert probe(result.video).frames == 8


def test_continuity_lowers_the_drift_between_keyframes(tmp_path):
    ref = tmp_path / "look.png"
    Image.new("RGB", (32, 32), (40, 90, 160)).save(ref)
    drift = {}
    for how, body in [("none", ""), ("previous", "continuity: previous\n"),
                      ("reference", f"continuity: reference\nreference: {ref.name}\n")]:  # fmt: skip
        result = run(tmp_path, story(tmp_path, body, ["", "", "", ""], f"{how}.yaml"), how)
        cuts = json.loads((result.run_dir / "manifest.json").read_text())["cuts"]
        assert [c["cut"] for c in cuts] == [1, 2, 3]
        drift[how] = np.mean([c["after"]["color"] for c in cuts])
        assert all(c["after"]["color"] <= c["before"]["color"] + 1e-6 for c in cuts)
    assert drift["previous"] < drift["none"] and drift["reference"] < drift["none"]


def test_finishing_fields_add_cards_captions_and_a_ducked_voice(tmp_path):
    write_tone(tmp_path / "music.wav", 4.0, rate=8000)
    write_tone(tmp_path / "voice.wav", 1.0, rate=8000)
    body = ("audio: music.wav\nvoice: voice.wav\nduck_db: 18\n"
            "title: {text: Boat, seconds: 0.5}\nend_card: {text: End, seconds: 0.25}\n")  # fmt: skip
    path = story(tmp_path, body, ["    caption: Rain.\n", "", ""])
    result = run(tmp_path, path, "run", "continue")
    root = result.run_dir
    stitched, final = probe(root / "stitched.mp4"), probe(root / "video.mp4")
    assert stitched.frames == 12 and final.frames == 12 + 4 + 2  # title 0.5 s, end 0.25 s
    assert final.has_audio and abs(final.audio_duration - final.duration) < 0.1
    srt = (root / "video.srt").read_text()
    assert "00:00:00,500 --> 00:00:01,000" in srt and "Rain." in srt  # after the title
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["video"] == "video.mp4" and manifest["stitched"] == "stitched.mp4"
    assert result.frames == 18


def test_without_finishing_fields_the_stitch_is_the_video(tmp_path):
    result = run(tmp_path, story(tmp_path, "", ["", ""]), "run", "continue")
    assert not (result.run_dir / "stitched.mp4").exists()
    assert "stitched" not in json.loads((result.run_dir / "manifest.json").read_text())


def test_bad_fields_are_one_line_before_any_generation(tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "x.bin").write_bytes(b"\0" * 16)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 Mpx: a decompression bomb
    long = " ".join(["many words in a caption that goes on"] * 4)
    cases = [
        ("", ["    image: notes.txt\n"], "shots[0].image: 'notes.txt' is not a picture"),
        ("", ["    image: bomb.png\n"], "shots[0].image: 'bomb.png' has too many pixels"),
        ("loras: [x.bin]\n", [""], "loras[0]: 'x.bin' is not a .safetensors file"),
        ("", [f"    caption: {long}\n"], "shots[0].caption: wraps to"),
        ("voice: notes.txt\n", [""], "voice: "),
        ("continuity: reference\n", [""], "reference: continuity: reference needs a picture"),
        ("title: {text: Hi, background: blurple}\n", [""], "title.background: 'blurple'"),
    ]
    for k, (body, shots, error) in enumerate(cases):
        path = story(tmp_path, body, shots, f"bad{k}.yaml")
        out = subprocess.run(
            [sys.executable, "-m", "pipelines", "video", str(path), "--model", "tiny",
             "--out", str(tmp_path / f"run{k}")],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 2, (error, out.stderr)
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith(f"error: {error}"), out.stderr
        assert not (tmp_path / f"run{k}").exists()


def test_the_server_refuses_storyboards_that_name_files(tmp_path):
    for text, field in [
        ("shots:\n  - prompt: a\n    image: /etc/hostname\n", "shots[0].image"),
        ("reference: /nowhere.png\ncontinuity: reference\nshots: [a]\n", "reference"),
        ("voice: /etc/hostname\nshots: [a]\n", "voice"),
        ("loras: [/nowhere.safetensors]\nshots: [a]\n", "loras"),
    ]:
        with pytest.raises(ValueError, match=rf"^{field.replace('[', '.').replace(']', '.')}: "
                           "a storyboard sent to the server cannot name a file"):  # fmt: skip
            read_request(VideoRequest(text, model="tiny"), Limits(), files=False)


def test_the_web_api_takes_start_pictures_a_reference_and_loras_as_uploads(tmp_path, loras):
    from conftest import Server
    from gradio_client import handle_file

    pic = tmp_path / "2.png"
    Image.new("RGB", (32, 32), (20, 200, 60)).save(pic)
    ref = tmp_path / "look.png"
    Image.new("RGB", (32, 32), (40, 90, 160)).save(ref)
    text = story_text("", ["", ""])
    server = Server(tmp_path / "runs").start()
    try:
        client = server.client()
        client.predict(text, mode="keyframes", images=[handle_file(pic)],
                       reference=handle_file(ref), loras=[handle_file(loras["a"])],
                       lora_scale=0.5, api_name="/video")  # fmt: skip
        job = client.predict(api_name="/jobs")[0]
    finally:
        server.stop()
    root = tmp_path / "runs" / job["id"]
    assert job["status"] == "done"
    assert sorted(p.name for p in root.iterdir() if p.suffix in (".png", ".safetensors")) == [
        "pytorch_lora_weights.safetensors", "reference.png", "shot-2.png"
    ]  # fmt: skip
    assert np.array_equal(
        load_png(root / "keyframes" / "shot-001.png"), np.asarray(Image.open(pic))
    )
    sb = job["params"]["storyboard"]
    assert sb["continuity"] == "reference" and sb["reference"] == "reference.png"
    assert sb["shots"][1]["image"] == "shot-2.png"
    assert [lo["file"] for lo in sb["shots"][0]["loras"]] == ["pytorch_lora_weights.safetensors"]
    assert sb["shots"][0]["loras"][0]["scale"] == 0.5


def test_a_lora_for_another_model_is_refused_before_any_keyframe(tmp_path, loras):
    """A video model's LoRA given to shot 2's keyframes (the image model): refused in one
    line naming it before shot 1's keyframe is made."""
    path = story(tmp_path, "", ["", f"    loras: ['{loras['ltx']}']\n"])
    with pytest.raises(ValueError, match=r"^lora: 'pytorch_lora_weights' does not fit tiny-image"):
        run(tmp_path, path, "run")
    assert not list((tmp_path / "run").glob("keyframes/*.png"))


def test_the_image_and_thumbnail_apis_take_lora_uploads(tmp_path, loras):
    from conftest import Server
    from gradio_client import handle_file

    server = Server(tmp_path / "runs").start()
    try:
        client = server.client()
        plain, _ = client.predict("a lighthouse", seed=3, api_name="/image")
        styled, details = client.predict("a lighthouse", seed=3, loras=[handle_file(loras["a"])],
                                         lora_scale=0.5, api_name="/image")  # fmt: skip
        thumbs, _, report = client.predict("prompt\na kite\n", preset="128x72",
                                           loras=[handle_file(loras["b"])], api_name="/thumbnails")  # fmt: skip
        jobs = client.predict(api_name="/jobs")
    finally:
        server.stop()
    a, b = (np.asarray(Image.open(x[0]["image"])) for x in (plain, styled))
    assert not np.array_equal(a, b)  # the LoRA changed the picture
    assert "<lora:pytorch_lora_weights:0.5>" in details[0]["parameters"]
    assert len(thumbs) == 1 and "1 thumbnail(s)" in report
    by_kind = {j["kind"]: j for j in jobs if j["params"].get("loras")}
    name = "pytorch_lora_weights.safetensors"  # the upload's own name, made safe
    assert by_kind["image"]["params"]["loras"] == [f"{name}:0.5"]
    assert by_kind["thumbnails"]["params"]["loras"] == [f"{name}:1"]
    for job in by_kind.values():
        assert (tmp_path / "runs" / job["id"] / name).is_file()
