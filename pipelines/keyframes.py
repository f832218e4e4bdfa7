"""Keyframes: each shot's first picture, made before any clip.

A shot's keyframe is its `image:` (fitted to the video's size, EXIF orientation respected)
or made by the image model with the shot's prompt and LoRAs: from the text alone
(`continuity: none`), or image-to-image from the previous shot's keyframe (`previous`) or
from the storyboard's `reference` picture, so subject and palette carry across cuts
(`continuity_strength`: how much carries). With `color_match`, a carried keyframe's colours
are matched to what it carries from, across shots as within them.

Each keyframe is written as soon as it exists, so a resumed run makes only the missing
ones. The manifest's `cuts` records, per cut, the drift between consecutive keyframes as
made (`before` the colour match) and as kept (`after`): continuity's effect is measured.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from . import drift
from .clips import Cancelled
from .images import ImageItem
from .lora import loras_for, use_loras
from .models import ModelRef
from .overlay import fit_to, generation_size
from .runs import load_png, save_png


def make_keyframes(ctx: Any) -> None:
    """Every missing keyframe of the run `ctx` (chain's context): given pictures first,
    then the generated ones (one at a time with `continuity: previous`, each starting from
    the one before it; otherwise in one batch)."""
    sb, run = ctx.sb, ctx.run
    missing = [k for k in range(len(sb.shots)) if not run.keyframe(k).is_file()]
    if missing:
        check_loras(ctx)
    raw: dict[int, np.ndarray] = {}
    for k in missing:
        if sb.shots[k].image:
            save_png(start_picture(sb.shots[k].image, (sb.width, sb.height)), run.keyframe(k))
    todo = [k for k in missing if not sb.shots[k].image]
    groups = [[k] for k in todo] if sb.continuity == "previous" else [todo] if todo else []
    with tqdm(total=len(todo), desc="keyframes", file=sys.stderr, leave=False) as bar:
        for group in groups:
            _generate(ctx, group, raw, bar)
    if len(sb.shots) > 1:
        ctx.manifest["cuts"] = _cut_drift(ctx, raw)


def check_loras(ctx: Any) -> None:
    """Every LoRA of the run loaded onto its model before any picture is made, so that one
    made for another model is refused (one line) before the first keyframe, not at its
    shot. On Ray the workers load them at their first call instead."""
    if ctx.pool is not None:
        return
    for target, ref, task in (("image", ctx.models.image, "text2img"),
                              ("video", ctx.models.video, "video")):  # fmt: skip
        found = [lo for shot in ctx.sb.shots for lo in loras_for(shot.loras, target)]
        if ref is not None and found:
            loaded = ctx.load(ref, task)
            use_loras(loaded, tuple(dict.fromkeys(found)))
            use_loras(loaded, ())


def start_picture(path: str, size: tuple[int, int]) -> np.ndarray:
    """A picture as a shot's first frame: upright (EXIF), RGB, scaled and centre-cropped to
    the video's size (never stretched)."""
    with Image.open(path) as im:
        picture = ImageOps.exif_transpose(im).convert("RGB")
    return np.asarray(fit_to(picture, size))


def keyframe_size(ref: ModelRef, width: int, height: int) -> tuple[int, int]:
    """The size an image model makes a keyframe of a width × height video at: about its
    native pixel count, the video's aspect ratio, sides on its size multiple (an image
    model asked for far more pixels than it was trained at repeats its subject)."""
    base = round((ref.preset.width * ref.preset.height) ** 0.5)
    return generation_size((width, height), base=base, multiple=ref.size_multiple)


def _anchors(ctx: Any, ks: list[int]) -> dict[int, np.ndarray | None]:
    """What each shot's keyframe carries on from, at the video's size: the reference
    picture (read once), the previous shot's keyframe, or nothing."""
    sb = ctx.sb
    if sb.continuity == "reference":
        reference = start_picture(sb.reference, (sb.width, sb.height))
        return dict.fromkeys(ks, reference)
    if sb.continuity == "previous":
        return {k: load_png(ctx.run.keyframe(k - 1)) if k > 0 else None for k in ks}
    return dict.fromkeys(ks)


def _generate(ctx: Any, ks: list[int], raw: dict[int, np.ndarray], bar) -> None:
    """Shots `ks`' keyframes through the image model (one batch where their settings
    agree), each colour-matched to its anchor and written as it arrives."""
    sb, ref = ctx.sb, ctx.models.image
    p = ref.preset
    steps = sb.steps if (sb.steps and ctx.models.video is None) else p.steps
    guidance = p.guidance if (sb.guidance is None or ctx.models.video) else sb.guidance
    size = keyframe_size(ref, sb.width, sb.height)
    anchors = _anchors(ctx, ks)
    items = []
    for k in ks:
        shot, anchor = sb.shots[k], anchors[k]
        init = None if anchor is None else fit_to(Image.fromarray(anchor), size)
        items.append(ImageItem(shot.prompt, shot.negative_prompt, *size, steps, guidance,
                               shot.seed, init=init, strength=1 - sb.continuity_strength,
                               loras=loras_for(shot.loras, "image")))  # fmt: skip

    def deliver(i: int, arr: np.ndarray) -> None:
        k = ks[i]
        picture = np.asarray(fit_to(Image.fromarray(drift.to_uint8(arr)), (sb.width, sb.height)))
        raw[k] = picture
        if anchors[k] is not None and sb.color_match:
            picture = drift.match_colors(picture, anchors[k])
        save_png(picture, ctx.run.keyframe(k))
        bar.update(1)
        if ctx.cancel is not None and ctx.cancel.is_set():
            raise Cancelled("cancelled")  # finished keyframes are on disk already

    ctx.images(ref, items, on_result=deliver)


def _cut_drift(ctx: Any, raw: dict[int, np.ndarray]) -> list[dict[str, Any]]:
    """Per cut, the drift of a keyframe from the one before: as made (before the colour
    match; kept from an earlier call for keyframes made then) and as kept (after)."""
    run = ctx.run
    earlier = {c["cut"]: c.get("before") for c in ctx.manifest.get("cuts", [])}
    kept = [load_png(run.keyframe(k)) for k in range(len(ctx.sb.shots))]
    cuts = []
    for k in range(1, len(kept)):
        after = drift.measure(kept[k], kept[k - 1]).as_dict()
        if k in raw or k - 1 in raw:
            before = drift.measure(raw.get(k, kept[k]), raw.get(k - 1, kept[k - 1])).as_dict()
        else:
            before = earlier.get(k) or after
        cuts.append({"cut": k, "before": before, "after": after})
    return cuts
