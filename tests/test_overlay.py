import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.files import slug
from pipelines.overlay import (
    THUMBNAIL_SIZES,
    TitleBox,
    badge_area,
    contact_sheet,
    draw_title,
    fit_to,
    generation_size,
    parse_preset,
    safe_area,
    save_image,
)

TARGETS = [
    THUMBNAIL_SIZES["youtube"],
    THUMBNAIL_SIZES["shorts"],
    THUMBNAIL_SIZES["square"],
    (1600, 900),
]


def gradient(size):
    w, h = size
    x = np.linspace(0, 255, w)[None, :]
    y = np.linspace(0, 255, h)[:, None]
    rgb = np.stack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)), np.full((h, w), 90)], 2)
    return Image.fromarray(rgb.astype(np.uint8))


def inside(box, area):
    return area[0] <= box[0] and area[1] <= box[1] and box[2] <= area[2] and box[3] <= area[3]


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def changed(before, after):
    return np.any(np.asarray(before.convert("RGB")) != np.asarray(after.convert("RGB")), axis=2)


# --------------------------------------------------------------------------- presets


def test_parse_preset_names_and_sizes():
    assert parse_preset("youtube") == (1280, 720)
    assert parse_preset(" Shorts ") == (1080, 1920)
    assert parse_preset("square") == (1080, 1080)
    assert parse_preset("1600x900") == (1600, 900)
    assert parse_preset("64X4096") == (64, 4096)


@pytest.mark.parametrize("bad", ["cinema", "", "16:9", "1280x", "x720", "-5x100"])
def test_parse_preset_unknown(bad):
    with pytest.raises(ValueError, match=r"preset: unknown .*use youtube, shorts, square or WxH"):
        parse_preset(bad)


@pytest.mark.parametrize("bad", ["63x100", "100x4097", "0x0", "12800x720"])
def test_parse_preset_out_of_range(bad):
    with pytest.raises(ValueError, match=r"preset: .* out of range \(each side must be 64..4096\)"):
        parse_preset(bad)


def test_generation_size_keeps_aspect_and_multiples():
    assert generation_size((1080, 1080)) == (512, 512)
    for target in TARGETS:
        w, h = generation_size(target)
        assert w % 8 == 0 and h % 8 == 0
        assert abs(w * h - 512 * 512) / (512 * 512) < 0.05
        assert abs(w / h - target[0] / target[1]) < 0.03
    assert generation_size((1280, 720)) == (680, 384)
    assert generation_size((1080, 1920)) == (384, 680)
    w, h = generation_size((1280, 720), base=1024, multiple=64, max_side=1024)
    assert w <= 1024 and w % 64 == 0 and h % 64 == 0
    with pytest.raises(ValueError, match="multiple"):
        generation_size((100, 100), multiple=0)


# --------------------------------------------------------------------------- fit_to


def disc(size, diameter):
    w, h = size
    img = Image.new("RGB", size, (0, 0, 0))
    r = diameter / 2
    ImageDraw.Draw(img).ellipse((w / 2 - r, h / 2 - r, w / 2 + r, h / 2 + r), fill=(255, 255, 255))
    return img


def ink_box(img):
    ys, xs = np.nonzero(np.asarray(img.convert("L")) > 128)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("source", [(400, 400), (300, 600), (900, 500)])
@pytest.mark.parametrize("target", TARGETS)
def test_fit_to_exact_size_without_stretching(source, target):
    img = disc(source, 100)
    out = fit_to(img, target)
    assert out.size == target
    left, top, right, bottom = ink_box(out)
    scale = max(target[0] / source[0], target[1] / source[1])
    width, height = right - left, bottom - top
    assert abs(width - height) <= max(2, 0.01 * width)  # the circle stays round
    assert abs(width - 100 * scale) <= 0.02 * 100 * scale + 2
    assert abs((left + right) / 2 - target[0] / 2) <= scale + 1  # centred crop
    assert abs((top + bottom) / 2 - target[1] / 2) <= scale + 1
    assert img.size == source  # input untouched


def test_fit_to_converts_palette_images():
    out = fit_to(Image.new("P", (200, 100)), (64, 64))
    assert out.size == (64, 64) and out.mode == "RGB"


# --------------------------------------------------------------------------- titles


def test_safe_and_badge_areas():
    assert safe_area((1280, 720)) == (64, 36, 1216, 684)
    left, top, right, bottom = badge_area((1280, 720))
    assert (right, bottom) == (1280, 720)
    assert right - left >= 0.22 * 1280 and bottom - top >= 0.14 * 720


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "title",
    [
        "How I Built a 10-Minute AI Film in One Weekend",
        "Short",
        "Pneumonoultramicroscopicsilicovolcanoconiosis explained",
    ],
)
def test_draw_title_stays_in_safe_area_and_off_the_badge(target, title):
    img = gradient(target)
    before = np.asarray(img).copy()
    out, box = draw_title(img, title)
    assert isinstance(box, TitleBox)
    assert out is not img and out.size == target and out.mode == "RGB"
    assert np.array_equal(np.asarray(img), before)  # input untouched
    assert 1 <= len(box.lines) <= 3
    assert inside(box.box, safe_area(target))
    assert not overlaps(box.box, badge_area(target))
    # Every changed pixel (text, outline and shadow) is in the safe area, off the badge.
    mask = changed(img, out)
    ys, xs = np.nonzero(mask)
    assert inside((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), safe_area(target))
    bl, bt, br, bb = badge_area(target)
    assert not mask[bt:bb, bl:br].any()


@pytest.mark.parametrize("target", TARGETS)
def test_title_box_holds_text_and_outline(target):
    # On mid-grey the soft shadow never gets near black or white, so the extremes are ink.
    img = Image.new("RGB", target, (128, 128, 128))
    out, box = draw_title(img, "Every pixel of ink inside the box")
    grey = np.asarray(out.convert("L"))
    ys, xs = np.nonzero((grey < 25) | (grey > 240))
    left, top, right, bottom = box.box
    assert left <= xs.min() and xs.max() < right
    assert top <= ys.min() and ys.max() < bottom


def test_long_titles_shrink_then_get_an_ellipsis():
    img = gradient((1280, 720))
    _, short = draw_title(img, "Big news")
    _, medium = draw_title(img, "Ten things nobody tells you about making long videos with AI")
    _, huge = draw_title(img, " ".join(["endless"] * 200))
    assert short.font_size > medium.font_size >= huge.font_size
    assert len(medium.lines) <= 3 and not medium.lines[-1].endswith("\u2026")
    assert len(huge.lines) == 3 and huge.lines[-1].endswith("\u2026")
    assert huge.font_size >= 0.05 * 720 - 1  # truncated at the minimum readable size
    _, one = draw_title(img, " ".join(["endless"] * 50), max_lines=1)
    assert len(one.lines) == 1 and one.lines[0].endswith("\u2026")


def test_overlong_word_is_broken_not_overflowing():
    img = gradient((1080, 1080))
    _, box = draw_title(img, "A" * 80)
    assert len(box.lines) >= 2
    assert inside(box.box, safe_area(img.size))


@pytest.mark.parametrize("position", ["top", "center"])
def test_other_positions(position):
    img = gradient((1280, 720))
    _, box = draw_title(img, "Sunrise over the harbour", position=position)
    assert inside(box.box, safe_area(img.size))
    assert not overlaps(box.box, badge_area(img.size))
    if position == "top":
        assert box.box[1] < 720 * 0.2
    else:
        assert abs((box.box[1] + box.box[3]) / 2 - 360) < 720 * 0.1


def test_missing_characters_warn_and_do_not_crash():
    img = gradient((1280, 720))
    with pytest.warns(UserWarning, match=r"lacks .*U\+1F680.*U\+4E2D"):
        _, box = draw_title(img, "Launch day \U0001f680 \u4e2d")
    assert box.missing_chars == ["\U0001f680", "\u4e2d"]
    assert " ".join(box.lines) == "Launch day"
    with pytest.warns(UserWarning, match="lacks"):
        out, box = draw_title(img, "\u4e2d\u6587\u6807\u9898")
    assert box.lines == [] and box.font_size == 0 and out.size == img.size


def test_supported_symbols_do_not_warn():
    img = gradient((1280, 720))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, box = draw_title(img, "Caf\u00e9 \u2192 \u041c\u043e\u0441\u043a\u0432\u0430 \u2605")
    assert box.missing_chars == []


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0), (128, 128, 128)])
def test_title_reads_on_any_background(background):
    img = Image.new("RGB", (1280, 720), background)
    out, box = draw_title(img, "Readable everywhere")
    left, top, right, bottom = box.box
    region = np.asarray(out.convert("L"))[top:bottom, left:right]
    # White letters with a dark outline: both extremes are present in the text box.
    assert (region > 230).mean() > 0.05
    assert (region < 40).mean() > 0.05


def test_alpha_and_grey_inputs():
    out, _ = draw_title(Image.new("RGBA", (640, 360), (10, 20, 30, 128)), "Alpha")
    assert out.mode == "RGBA"
    out, _ = draw_title(Image.new("L", (640, 360), 200), "Grey")
    assert out.mode == "RGB"


def test_tiny_image_still_draws_inside_safe_area():
    img = gradient((64, 64))
    _, box = draw_title(img, "A fairly long title for a tiny image")
    assert box.lines and inside(box.box, safe_area(img.size))
    assert not overlaps(box.box, badge_area(img.size))


def test_draw_title_rejects_bad_arguments():
    img = gradient((320, 180))
    with pytest.raises(ValueError, match="position"):
        draw_title(img, "x", position="left")
    with pytest.raises(ValueError, match="title"):
        draw_title(img, "   ")
    with pytest.raises(ValueError, match="max_lines"):
        draw_title(img, "x", max_lines=0)


# --------------------------------------------------------------------------- files

PARAMS = "a lighthouse at dusk\nNegative prompt: fog\nSteps: 20, Seed: 5, Size: 1280x720"


def test_jpeg_noise_is_under_limit_at_exact_size_with_exif(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (1920, 1080, 3), dtype=np.uint8)
    start = time.monotonic()
    path = save_image(Image.fromarray(noise), tmp_path / "noise.jpg", fmt="jpg", parameters=PARAMS)
    assert time.monotonic() - start < 10
    assert path == tmp_path / "noise.jpg"
    assert path.stat().st_size < 2_000_000
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (1080, 1920)
        exif = im.getexif()
        assert exif[0x010E] == PARAMS
        assert exif.get_ifd(0x8769)[0x9286] == b"ASCII\x00\x00\x00" + PARAMS.encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.jpg"]  # no temp files left


def test_jpeg_quality_steps_below_40_rather_than_resizing(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (1920, 1080, 3), dtype=np.uint8)
    path = save_image(Image.fromarray(noise), tmp_path / "n.jpg", fmt="jpg", max_bytes=600_000)
    assert path.stat().st_size <= 600_000
    with Image.open(path) as im:
        assert im.size == (1080, 1920)


def test_jpeg_unicode_parameters_and_high_quality_for_plain_images(tmp_path):
    text = "caf\u00e9 at night \u2605"
    path = save_image(gradient((1280, 720)), tmp_path / "g.jpg", fmt="jpeg", parameters=text)
    with Image.open(path) as im:
        comment = im.getexif().get_ifd(0x8769)[0x9286]
        assert comment[:8] == b"UNICODE\x00" and comment[8:].decode("utf-16-be") == text
        assert im.mode == "RGB"


def test_jpeg_impossible_limit_is_an_error(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="max_bytes"):
        save_image(Image.fromarray(noise), tmp_path / "n.jpg", fmt="jpg", max_bytes=1000)
    assert not list(tmp_path.iterdir())


def test_png_has_parameters_text_chunk(tmp_path):
    path = save_image(gradient((320, 180)), tmp_path / "t.png", fmt="png", parameters=PARAMS)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.text["parameters"] == PARAMS
    assert b"tEXtparameters\x00" in path.read_bytes()


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=r"fmt: unknown 'webp' \(use jpg or png\)"):
        save_image(gradient((64, 64)), tmp_path / "x.webp", fmt="webp")


def test_contact_sheet_is_a_labelled_jpeg_grid(tmp_path):
    paths = []
    for i, size in enumerate([(1280, 720), (1080, 1920), (1080, 1080), (1600, 900), (300, 900)]):
        paths.append(save_image(gradient(size), tmp_path / f"thumb-{i}.png", fmt="png"))
    out = contact_sheet(paths, tmp_path / "sheet.jpg", columns=2, cell_width=200)
    with Image.open(out) as im:
        assert im.format == "JPEG"
        assert im.width == 2 * (200 + 5) + 5  # two columns with padding
        assert im.height > 3 * 100  # three rows
    with pytest.raises(ValueError, match="paths: empty"):
        contact_sheet([], tmp_path / "none.jpg")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read 'bad.png'"):
        contact_sheet([tmp_path / "bad.png"], tmp_path / "bad.jpg")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello-world"),
        ("Caf\u00e9 Cr\u00e8me Br\u00fbl\u00e9e", "cafe-creme-brulee"),
        ("../../etc/passwd", "etc-passwd"),
        ("  Multiple   spaces\tand\nlines ", "multiple-spaces-and-lines"),
        ("", "untitled"),
        ("\U0001f680\U0001f680 \u4e2d\u6587", "untitled"),
        ("CON", "con-1"),
        ("Top 10: AI Videos (2025)", "top-10-ai-videos-2025"),
    ],
)
def test_slug(text, expected):
    assert slug(text) == expected


def test_slug_cuts_at_word_boundary():
    s = slug("the quick brown fox jumps over the lazy dog again and again", max_len=20)
    assert s == "the-quick-brown-fox"
    assert slug("a" * 100, max_len=10) == "a" * 10
    with pytest.raises(ValueError, match="max_len"):
        slug("x", max_len=0)


def test_balanced_titles_never_break_a_word():
    from PIL import Image

    from pipelines.overlay import draw_title

    _, box = draw_title(Image.new("RGB", (1080, 1920), (40, 90, 160)), "Night City")
    assert " ".join(box.lines).split() == ["Night", "City"]
