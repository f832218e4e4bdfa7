"""Thumbnail finishing: fit images to platform sizes, draw titles, save with metadata.

Everything here is model-free and deterministic, so a batch of generated (or extracted)
images becomes upload-ready thumbnails without a GPU:

* `fit_to` covers and centre-crops, because platforms reject or letterbox wrong sizes and a
  stretched face is worse than a trimmed edge.
* `draw_title` fits a bold title into the safe area, away from the corner where the player
  paints its duration badge, with an outline and a soft shadow so it reads on any frame.
* `save_image` keeps JPEGs under the upload limit (YouTube: 2 MB) and carries the
  generation parameters in the file, the way common image tools read them back.
"""

from __future__ import annotations

import functools
import io
import math
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from PIL.PngImagePlugin import PngInfo

from pipelines.files import atomic_path, write_bytes

THUMBNAIL_SIZES: dict[str, tuple[int, int]] = {  # the `preset` names of thumbnail sizes
    "youtube": (1280, 720),
    "shorts": (1080, 1920),
    "square": (1080, 1080),
}

FONT_FILE = "DejaVuSans-Bold.ttf"

_MIN_SIDE, _MAX_SIDE = 64, 4096
_SAFE_MARGIN = 0.05  # share of each side kept clear of text
_BADGE_W, _BADGE_H = 0.22, 0.14  # bottom-right share the player covers with its badge
_TITLE_HEIGHT_SHARE = 0.38  # a title may use at most this share of the image height
_MAX_FONT_SHARE = 0.15  # of the shorter side: bigger looks shouty and crowds the picture
_MIN_FONT_SHARE = 0.05  # of the shorter side: below this a title is unreadable in a feed
_FLOOR_FONT = 6  # absolute floor, only reached on tiny images
_ELLIPSIS = "\u2026"
# JPEG quality ladder: 95..40 keeps artefacts invisible; the tail below 40 exists because the
# output size must stay exact (no downscaling), so very noisy images trade quality instead.
_JPEG_QUALITIES = (*range(95, 35, -5), 35, 30, 25, 20, 15, 10)
_EXIF_LIMIT = 65_000  # a JPEG APP1 segment holds at most 65,533 bytes


# --------------------------------------------------------------------------- sizes


def parse_preset(value: str) -> tuple[int, int]:
    """Turn a preset name or "WxH" into a (width, height) pair.

    Bounds (64..4096 per side) stop typos such as "12800x720" from allocating huge images.
    """
    text = str(value).strip().lower()
    if text in THUMBNAIL_SIZES:
        return THUMBNAIL_SIZES[text]
    match = re.fullmatch(r"(\d+)\s*[x\u00d7]\s*(\d+)", text)
    if not match:
        raise ValueError(
            f"preset: unknown {value!r} (use youtube, shorts, square or WxH such as 1280x720)"
        )
    width, height = int(match.group(1)), int(match.group(2))
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise ValueError(
            f"preset: {width}x{height} out of range (each side must be {_MIN_SIDE}..{_MAX_SIDE})"
        )
    return width, height


def generation_size(
    target: tuple[int, int], *, base: int = 512, multiple: int = 8, max_side: int | None = None
) -> tuple[int, int]:
    """A size to generate at: about `base`*`base` pixels with the target's aspect ratio.

    Image models degrade away from the pixel count they were trained at (duplicated
    subjects when too large, mush when too small), and their latent grids need each side
    to be a multiple of the downsampling factor (8 for most VAEs). Generating at the
    target's aspect ratio means `fit_to` later only scales, never crops away the subject.
    """
    tw, th = target
    if tw <= 0 or th <= 0:
        raise ValueError(f"target: sides must be positive, got {tw}x{th}")
    if multiple < 1:
        raise ValueError(f"multiple: must be at least 1, got {multiple}")
    if base < multiple:
        raise ValueError(f"base: must be at least multiple ({multiple}), got {base}")
    if max_side is not None and max_side < multiple:
        raise ValueError(f"max_side: must be at least multiple ({multiple}), got {max_side}")
    aspect = tw / th
    width, height = base * math.sqrt(aspect), base / math.sqrt(aspect)
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = width * scale, height * scale

    def snap(v: float) -> int:
        snapped = max(multiple, round(v / multiple) * multiple)
        if max_side is not None:
            while snapped > max_side:
                snapped -= multiple
        return snapped

    return snap(width), snap(height)


def fit_to(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Scale to cover `target`, then centre-crop to exactly `target` (never stretch).

    The crop box is computed in source coordinates with the target's aspect ratio and
    resampled in one Lanczos pass, so there is no double resampling and no rounding drift.
    """
    tw, th = target
    if tw <= 0 or th <= 0:
        raise ValueError(f"target: sides must be positive, got {tw}x{th}")
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    sw, sh = image.size
    scale = max(tw / sw, th / sh)
    crop_w, crop_h = tw / scale, th / scale
    left, top = (sw - crop_w) / 2, (sh - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    return image.resize((tw, th), Image.Resampling.LANCZOS, box=box)


def safe_area(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) inside a 5% margin: players and feeds crop or round edges."""
    width, height = size
    mx, my = math.ceil(width * _SAFE_MARGIN), math.ceil(height * _SAFE_MARGIN)
    return mx, my, width - mx, height - my


def badge_area(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Bottom-right corner (22% x 14%) where players draw the duration badge over the image."""
    width, height = size
    return (
        width - math.ceil(width * _BADGE_W),
        height - math.ceil(height * _BADGE_H),
        width,
        height,
    )


# --------------------------------------------------------------------------- fonts


def font_path() -> Path:
    """The bundled bold font; shipped with the code so renders match on every machine."""
    return Path(__file__).resolve().parent.parent / "assets" / "fonts" / FONT_FILE


@functools.lru_cache(maxsize=256)
def _font(size: int) -> ImageFont.FreeTypeFont:
    path = font_path()
    if not path.is_file():
        raise FileNotFoundError(f"font: bundled font missing at '{path}' (restore assets/fonts)")
    return ImageFont.truetype(str(path), size)


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[ImageFont.FreeTypeFont, bytes]:
    """A basic-layout font plus the rendering of its .notdef glyph.

    Basic layout maps one character to one glyph (no shaping, no dotted circles), so a
    character the font lacks renders exactly as .notdef; U+F0000 (private use) is never
    in the font and gives that reference.
    """
    font = ImageFont.truetype(str(font_path()), 32, layout_engine=ImageFont.Layout.BASIC)
    return font, _glyph_key(font, "\U000f0000")


def _glyph_key(font: ImageFont.FreeTypeFont, ch: str) -> bytes:
    mask = font.getmask(ch)
    return repr(mask.size).encode() + np.asarray(mask).tobytes()


@functools.lru_cache(maxsize=8192)
def has_glyph(ch: str) -> bool:
    """Whether the bundled font draws `ch` (instead of an empty box)."""
    font, notdef = _probe()
    return _glyph_key(font, ch) != notdef


def _clean_text(text: str) -> tuple[list[str], list[str]]:
    """Paragraphs with whitespace collapsed and undrawable characters removed.

    Missing characters are dropped rather than drawn as boxes: "Trip 🚀" reads better as
    "Trip" than with a box. Invisible format marks (joiners, variation selectors) the font
    lacks are dropped silently; visible ones are reported.
    """
    missing: list[str] = []
    paragraphs: list[str] = []
    for raw in text.splitlines():
        kept = []
        for ch in raw:
            if ch.isspace():
                kept.append(" ")
            elif has_glyph(ch):
                kept.append(ch)
            elif unicodedata.category(ch) not in ("Cf", "Mn", "Me", "Cc") and ch not in missing:
                missing.append(ch)
        paragraph = " ".join("".join(kept).split())
        if paragraph:
            paragraphs.append(paragraph)
    return paragraphs, missing


# --------------------------------------------------------------------------- titles


@dataclass
class TitleBox:
    """What `draw_title` drew: the lines, the font size and the ink box (with outline)."""

    lines: list[str]
    font_size: int
    box: tuple[int, int, int, int]  # left, top, right, bottom; right/bottom exclusive
    missing_chars: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    lines: list[str]
    size: int
    region: tuple[int, int, int, int]
    align: str  # "center" or "left"
    valign: str  # "top", "center" or "bottom"


def _stroke(size: int) -> int:
    return max(1, round(size * 0.09))


def _shadow(size: int) -> tuple[int, float]:
    """Shadow offset and blur radius for a font size."""
    return max(1, round(size * 0.04)), max(1.0, size * 0.03)


def _pitch(size: int) -> int:
    return round(size * 1.1) + _stroke(size)


def _line_box(font: ImageFont.FreeTypeFont, text: str, stroke: int) -> tuple[int, int, int, int]:
    return font.getbbox(text, stroke_width=stroke, anchor="ls")


def _width(font: ImageFont.FreeTypeFont, text: str, stroke: int) -> int:
    left, _, right, _ = _line_box(font, text, stroke)
    return right - left


def _break_word(word: str, font: ImageFont.FreeTypeFont, stroke: int, width: int) -> list[str]:
    """Split an overlong word into line-sized pieces, after a hyphen where there is one."""
    pieces, current = [], ""
    for ch in word:
        if current and _width(font, current + ch, stroke) > width:
            cut = current.rfind("-") + 1
            if 0 < cut < len(current):
                pieces.append(current[:cut])
                current = current[cut:] + ch
            else:
                pieces.append(current)
                current = ch
        else:
            current += ch
    pieces.append(current)
    return pieces


def _wrap(
    paragraphs: list[str], font: ImageFont.FreeTypeFont, stroke: int, width: int
) -> list[str]:
    """Greedy word wrap; a word wider than the line is broken between characters."""
    lines: list[str] = []
    for paragraph in paragraphs:
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if _width(font, candidate, stroke) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            if _width(font, word, stroke) <= width:
                current = word
            else:
                *full, current = _break_word(word, font, stroke, width)
                lines.extend(full)
        if current:
            lines.append(current)
    return lines


def _block(lines: list[str], size: int) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """Block width and height, and each line's ink box relative to its own baseline."""
    font, stroke, pitch = _font(size), _stroke(size), _pitch(size)
    boxes = [_line_box(font, line, stroke) for line in lines]
    width = max(r - left for left, _, r, _ in boxes)
    top = min(t + i * pitch for i, (_, t, _, _) in enumerate(boxes))
    bottom = max(b + i * pitch for i, (_, _, _, b) in enumerate(boxes))
    return width, bottom - top, boxes


def _inner(region: tuple[int, int, int, int], size: int) -> tuple[int, int]:
    """Room left in a region once the shadow's spill is reserved on every side."""
    offset, radius = _shadow(size)
    spill = offset + math.ceil(2 * radius)
    return region[2] - region[0] - 2 * spill, region[3] - region[1] - 2 * spill


def _truncate(lines: list[str], keep: int, size: int, width: int) -> list[str]:
    """First `keep` lines, the last one ending in an ellipsis when text was cut."""
    if len(lines) <= keep:
        return lines
    font, stroke = _font(size), _stroke(size)
    kept = lines[:keep]
    last = kept[-1]
    words = last.split(" ")
    while len(words) > 1 and _width(font, " ".join(words) + _ELLIPSIS, stroke) > width:
        words.pop()
    last = " ".join(words)
    while last and _width(font, last.rstrip(" ,.;:-") + _ELLIPSIS, stroke) > width:
        last = last[:-1]
    kept[-1] = last.rstrip(" ,.;:-\u2013\u2014") + _ELLIPSIS
    return kept


def _attempt(
    paragraphs: list[str], size: int, region: tuple[int, int, int, int], max_lines: int, cut: bool
) -> list[str] | None:
    width, height = _inner(region, size)
    if width <= 0 or height <= 0:
        return None
    font, stroke = _font(size), _stroke(size)
    lines = _wrap(paragraphs, font, stroke, width)
    if any(_width(font, line, stroke) > width for line in lines):
        return None  # a single character is wider than the region
    if not cut:
        if len(lines) > max_lines:
            return None
        block_w, block_h, _ = _block(lines, size)
        return lines if block_w <= width and block_h <= height else None
    for keep in range(min(max_lines, len(lines)), 0, -1):
        candidate = _truncate(lines, keep, size, width)
        block_w, block_h, _ = _block(candidate, size)
        if block_w <= width and block_h <= height:
            return candidate
    return None


def _balance(
    paragraphs: list[str], lines: list[str], size: int, region: tuple[int, int, int, int]
) -> list[str]:
    """Re-wrap at the narrowest width that keeps the same line count.

    Greedy wrapping fills early lines and strands a word or two on the last one; titles
    read (and sit) better with lines of similar length.
    """
    if len(lines) < 2:
        return lines
    font, stroke = _font(size), _stroke(size)
    hi = _inner(region, size)[0]
    # Never narrower than the widest word: a narrower width would break words apart.
    widest = max((_width(font, w, stroke) for p in paragraphs for w in p.split()), default=1)
    lo = min(widest, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_wrap(paragraphs, font, stroke, mid)) <= len(lines):
            hi = mid
        else:
            lo = mid + 1
    balanced = _wrap(paragraphs, font, stroke, hi)
    if len(balanced) != len(lines) or _block(balanced, size)[0] > _inner(region, size)[0]:
        return lines
    return balanced


def _fit(
    paragraphs: list[str],
    region: tuple[int, int, int, int],
    image_size: tuple[int, int],
    max_lines: int,
) -> tuple[list[str], int] | None:
    """Largest font size whose wrapped text fits; else the minimum size, truncated."""
    short = min(image_size)
    min_size = max(10, round(short * _MIN_FONT_SHARE))
    max_size = max(min_size, round(short * _MAX_FONT_SHARE))
    best: tuple[list[str], int] | None = None
    lo, hi = min_size, max_size
    while lo <= hi:  # fitting shrinks monotonically with size, so bisect
        mid = (lo + hi) // 2
        lines = _attempt(paragraphs, mid, region, max_lines, cut=False)
        if lines is not None:
            best, lo = (lines, mid), mid + 1
        else:
            hi = mid - 1
    if best is not None:
        return _balance(paragraphs, best[0], best[1], region), best[1]
    for size in range(min_size, _FLOOR_FONT - 1, -1):
        lines = _attempt(paragraphs, size, region, max_lines, cut=True)
        if lines is not None:
            return lines, size
    return None


def _plans(
    size: tuple[int, int], position: str
) -> list[tuple[tuple[int, int, int, int], str, str]]:
    """Candidate (region, align, valign) triples for a title position."""
    width, height = size
    sl, st, sr, sb = safe_area(size)
    bl, bt, _, _ = badge_area(size)
    max_h = round(height * _TITLE_HEIGHT_SHARE)
    gap = max(2, round(width * 0.01))
    if position == "top":
        return [((sl, st, sr, min(sb, st + max_h)), "center", "top")]
    if position == "center":
        top = max(st, (height - max_h) // 2)
        return [((sl, top, sr, min(sb, top + max_h)), "center", "center")]
    # Bottom: either full width just above the badge, or beside it down to the safe edge.
    above = min(sb, bt - gap)
    beside = min(sr, bl - gap)
    return [
        ((sl, max(st, above - max_h), sr, above), "center", "bottom"),
        ((sl, max(st, sb - max_h), beside, sb), "left", "bottom"),
    ]


def _layout(plan: _Plan) -> tuple[list[tuple[int, int]], tuple[int, int, int, int]]:
    """Anchor points (left, baseline) of each line and the block's ink box."""
    size = plan.size
    offset, radius = _shadow(size)
    spill = offset + math.ceil(2 * radius)
    left, top, right, bottom = plan.region
    left, top, right, bottom = left + spill, top + spill, right - spill, bottom - spill
    pitch = _pitch(size)
    _, block_h, boxes = _block(plan.lines, size)
    first_top = min(t + i * pitch for i, (_, t, _, _) in enumerate(boxes))
    if plan.valign == "top":
        y0 = top - first_top
    elif plan.valign == "center":
        y0 = top + (bottom - top - block_h) // 2 - first_top
    else:
        y0 = bottom - block_h - first_top
    anchors, ink = [], []
    for i, (bl, bt, br, bb) in enumerate(boxes):
        line_w = br - bl
        x = left - bl if plan.align == "left" else left + (right - left - line_w) // 2 - bl
        y = y0 + i * pitch
        anchors.append((x, y))
        ink.append((x + bl, y + bt, x + br, y + bb))
    box = (
        min(b[0] for b in ink),
        min(b[1] for b in ink),
        max(b[2] for b in ink),
        max(b[3] for b in ink),
    )
    return anchors, box


def draw_title(
    image: Image.Image, title: str, *, max_lines: int = 3, position: str = "bottom"
) -> tuple[Image.Image, TitleBox]:
    """Draw `title` in bold white with a dark outline and soft shadow; return a new image.

    The font size is the largest that fits (at most `max_lines` lines, within the safe area
    and a 38% height share); below the minimum readable size the text is truncated with an
    ellipsis instead. Text never enters the duration-badge corner. Characters the font lacks
    are dropped with a warning and listed in `missing_chars`.
    """
    if max_lines < 1:
        raise ValueError(f"max_lines: must be at least 1, got {max_lines}")
    if position not in ("top", "center", "bottom"):
        raise ValueError(f"position: unknown {position!r} (use top, center or bottom)")
    if not title or not title.strip():
        raise ValueError("title: empty (pass the text to draw, or skip draw_title)")
    keep_alpha = image.mode == "RGBA"
    canvas = image.convert("RGBA")  # always a copy: the caller's image is never touched
    paragraphs, missing = _clean_text(title)
    if missing:
        warnings.warn(
            f"title: font {FONT_FILE} lacks {''.join(missing)!r} "
            f"({', '.join(f'U+{ord(c):04X}' for c in missing)}); dropped from the title",
            stacklevel=2,
        )
    plan: _Plan | None = None
    if paragraphs:
        for region, align, valign in _plans(canvas.size, position):
            fitted = _fit(paragraphs, region, canvas.size, max_lines)
            if fitted is not None and (plan is None or fitted[1] > plan.size):
                plan = _Plan(fitted[0], fitted[1], region, align, valign)
    if plan is None:
        if paragraphs:
            warnings.warn(f"title: no room to draw on a {canvas.size} image", stacklevel=2)
        out = canvas if keep_alpha else canvas.convert("RGB")
        return out, TitleBox([], 0, (0, 0, 0, 0), missing)

    anchors, box = _layout(plan)
    font, stroke = _font(plan.size), _stroke(plan.size)
    offset, radius = _shadow(plan.size)
    shadow = Image.new("L", canvas.size, 0)
    shadow_draw = ImageDraw.Draw(shadow)
    for (x, y), line in zip(anchors, plan.lines, strict=True):
        shadow_draw.text(
            (x + offset, y + offset),
            line,
            font=font,
            fill=255,
            anchor="ls",
            stroke_width=stroke,
            stroke_fill=255,
        )
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius)).point(lambda v: v * 7 // 10)
    canvas = Image.composite(Image.new("RGBA", canvas.size, (0, 0, 0, 255)), canvas, shadow)
    draw = ImageDraw.Draw(canvas)
    for (x, y), line in zip(anchors, plan.lines, strict=True):
        draw.text(
            (x, y),
            line,
            font=font,
            fill=(255, 255, 255, 255),
            anchor="ls",
            stroke_width=stroke,
            stroke_fill=(12, 12, 12, 255),
        )
    out = canvas if keep_alpha else canvas.convert("RGB")
    return out, TitleBox(list(plan.lines), plan.size, box, missing)


# --------------------------------------------------------------------------- files


def _user_comment(text: str) -> bytes:
    """EXIF UserComment: 8-byte charset code, then the text (UTF-16 big-endian as the
    EXIF block Pillow writes is big-endian; readers such as piexif expect exactly this)."""
    if text.isascii():
        return b"ASCII\x00\x00\x00" + text.encode("ascii")
    return b"UNICODE\x00" + text.encode("utf-16-be")


def _jpeg_exif(parameters: str | None) -> bytes:
    exif = Image.Exif()
    exif[0x0131] = "Reelchain"  # Software
    if parameters:
        exif[0x010E] = parameters.encode("ascii", "replace").decode("ascii")  # ImageDescription
        exif.get_ifd(0x8769)[0x9286] = _user_comment(parameters)  # Exif IFD: UserComment
    data = exif.tobytes()
    if len(data) > _EXIF_LIMIT:
        raise ValueError(
            f"parameters: {len(parameters or '')} characters do not fit JPEG EXIF "
            "(shorten them or save as png)"
        )
    return data


def save_image(
    image: Image.Image,
    path: str | Path,
    *,
    fmt: str,
    parameters: str | None = None,
    max_bytes: int = 2_000_000,
) -> Path:
    """Write `image` atomically as "jpg" or "png", carrying `parameters` in the file.

    JPEG: quality steps down 95, 90, ... 40, then 35 ... 10 until the file is under
    `max_bytes` (platform upload limits; the pixel size is never changed). Parameters go
    into EXIF UserComment and ImageDescription. PNG: lossless with a `parameters` text
    chunk; `max_bytes` only triggers a warning since PNG has no quality to trade.
    """
    kind = fmt.lower().lstrip(".")
    if kind == "jpeg":
        kind = "jpg"
    if kind not in ("jpg", "png"):
        raise ValueError(f"fmt: unknown {fmt!r} (use jpg or png)")
    path = Path(path)
    if kind == "png":
        info = PngInfo()
        if parameters:
            info.add_text("parameters", parameters)
        buffer = io.BytesIO()
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            image = image.convert("RGB")
        image.save(buffer, format="PNG", pnginfo=info, optimize=False, compress_level=6)
        if buffer.tell() > max_bytes:
            warnings.warn(
                f"save_image: {path.name} is {buffer.tell()} bytes, over {max_bytes} "
                "(use fmt='jpg' to stay under upload limits)",
                stacklevel=2,
            )
        return write_bytes(path, buffer.getvalue())

    if image.mode != "RGB":
        flat = Image.new("RGB", image.size, (255, 255, 255))
        rgba = image.convert("RGBA")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    exif = _jpeg_exif(parameters)

    def encode(quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, optimize=True, exif=exif)
        return buffer.getvalue()

    # Size falls as quality falls, so bisecting the ladder finds the same step as walking
    # it in order (the highest quality that fits) with about four encodes instead of 17.
    best = encode(_JPEG_QUALITIES[0])
    if len(best) <= max_bytes:
        return write_bytes(path, best)
    lo, hi, found = 1, len(_JPEG_QUALITIES) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = encode(_JPEG_QUALITIES[mid])
        if len(data) <= max_bytes:
            found, hi = data, mid - 1
        else:
            lo = mid + 1
    if found is not None:
        return write_bytes(path, found)
    raise ValueError(
        f"max_bytes: {path.name} stays over {max_bytes} bytes even at JPEG quality "
        f"{_JPEG_QUALITIES[-1]} (raise max_bytes or use a smaller size)"
    )


def contact_sheet(paths: list[Path], out: Path, *, columns: int = 4, cell_width: int = 320) -> Path:
    """A JPEG grid of `paths` (aspect kept), each labelled with its file name.

    One glance over a batch beats opening dozens of files; rows take the height of their
    tallest image so portrait and landscape thumbnails mix without wasted space.
    """
    if not paths:
        raise ValueError("paths: empty (give at least one image for the contact sheet)")
    if columns < 1:
        raise ValueError(f"columns: must be at least 1, got {columns}")
    if cell_width < 32:
        raise ValueError(f"cell_width: must be at least 32, got {cell_width}")
    paths = [Path(p) for p in paths]
    sizes: list[tuple[int, int]] = []
    for path in paths:  # headers only: sizes for the layout without decoding pixels
        try:
            with Image.open(path) as im:
                w, h = im.size
        except (OSError, ValueError) as exc:
            raise ValueError(f"contact_sheet: cannot read '{path.name}': {exc}") from exc
        scale = min(cell_width / w, 2 * cell_width / h)  # very tall images: cap at 2:1
        sizes.append((max(1, round(w * scale)), max(1, round(h * scale))))

    pad = max(4, cell_width // 40)
    font = _font(max(10, cell_width // 22))
    ascent, descent = font.getmetrics()
    label_h = ascent + descent + pad
    rows = [sizes[i : i + columns] for i in range(0, len(sizes), columns)]
    row_heights = [max(h for _, h in row) + label_h for row in rows]
    sheet_w = min(columns, len(paths)) * (cell_width + pad) + pad
    sheet_h = sum(row_heights) + pad * (len(rows) + 1)
    sheet = Image.new("RGB", (sheet_w, sheet_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for r, row_height in enumerate(row_heights):
        for c in range(len(rows[r])):
            index = r * columns + c
            w, h = sizes[index]
            x = pad + c * (cell_width + pad)
            with Image.open(paths[index]) as im:
                im.draft("RGB", (w, h))  # JPEG: decode at reduced scale, saves memory
                thumb = im.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
            sheet.paste(thumb, (x + (cell_width - w) // 2, y + (row_height - label_h - h) // 2))
            label = "".join(ch if has_glyph(ch) else "?" for ch in paths[index].name)
            if font.getlength(label) > cell_width:
                while label and font.getlength(label + _ELLIPSIS) > cell_width:
                    label = label[:-1]
                label += _ELLIPSIS
            draw.text((x, y + row_height - label_h + pad // 2), label, font=font, fill=(230,) * 3)
        y += row_height + pad
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="JPEG", quality=88, optimize=True)
    return Path(out)
