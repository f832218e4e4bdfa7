"""Text-to-image and image-to-image, with the metadata creators' tools read.

Every image is a PNG with a `parameters` text chunk in the A1111 style (prompt, negative
prompt, steps, sampler, CFG scale, seed, size, model) plus a JSON sidecar with the same
and the package versions, device and dtype. Each image has its own seed (seed, seed+1,
...), drawn from its own generator, so an image is the same whether it ran alone or in a
batch of any size.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, PngImagePlugin

from . import __version__
from .batching import Planner, cost_key, group_indices, ladder_for, run_group
from .device import reset_fast_state
from .files import atomic_path, slug, write_json
from .lora import Lora, parse_lora, use_loras
from .models import LoadedModel, ModelRef, call_parameters, load, preset_kwargs, resolve_model
from .requests import ImageRequest
from .settings import Limits, Runtime
from .traits import aspect_size

if TYPE_CHECKING:
    from .scale import Maker

log = logging.getLogger(__name__)

SAMPLER_NAMES = {  # diffusers scheduler class → the name A1111-style readers expect
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "LCMScheduler": "LCM",
    "FlowMatchEulerDiscreteScheduler": "Euler (flow)",
}


@dataclass(frozen=True)
class ImageItem:
    """One image to make: what the batcher sees. Jobs with equal `batch_key` batch together."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    init: Image.Image | None = None
    strength: float = 0.6
    loras: tuple[Lora, ...] = ()  # active for this image (a batch shares one set)

    def __post_init__(self) -> None:
        if self.init is not None:  # so the sidecar records the steps that run
            object.__setattr__(self, "steps", img2img_steps(self.steps, self.strength))

    @property
    def batch_key(self) -> tuple:
        return (
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.init is not None,
            self.strength,
            self.loras,
        )


@dataclass(frozen=True)
class ImageResult:
    path: Path
    sidecar: Path
    seed: int
    width: int
    height: int
    parameters: str


def check_size(ref: ModelRef, width: int, height: int) -> None:
    p = ref.preset
    if p.native_only and (width, height) != (p.width, p.height):
        raise ValueError(native_only_message(ref.label, p.width, p.height, width, height))
    m = ref.size_multiple
    for name, v in (("width", width), ("height", height)):
        if v % m:
            lower, upper = max(m, v - v % m), v - v % m + m
            raise ValueError(
                f"{name}: {ref.label} needs a multiple of {m} (got {v}; use {lower} or {upper})"
            )
    made = aspect_size(p.aspect_target, width, height, m) if p.aspect_target else None
    if made and made != (width, height):  # the size it would pick from such a first frame
        raise ValueError(
            f"width: {ref.label} makes one size per aspect ratio, about {p.aspect_target}² "
            f"pixels (got {width}×{height}, which it would make {made[0]}×{made[1]}); set "
            f"width: {made[0]} and height: {made[1]}"
        )


def img2img_steps(steps: int, strength: float) -> int:
    """Steps for image-to-image: diffusers runs int(steps × strength) of them, and none at
    all is an error inside the pipeline (sd-turbo's 1 step at strength 0.6, say); so at least
    enough that one step runs."""
    while int(steps * strength) < 1:
        steps += 1
    return steps


def native_only_message(label: str, w: int, h: int, width: int, height: int) -> str:
    return (
        f"width: {label} makes {w}×{h} only (got {width}×{height}); set width: {w} and "
        f"height: {h}, or pick another model"
    )


def image_defaults(req: ImageRequest, ref: ModelRef, limits: Limits) -> dict[str, Any]:
    """What the model decides of a request (size, steps, guidance), checked against it."""
    p = ref.preset
    width, height = req.width or p.width, req.height or p.height
    for name, v in (("width", width), ("height", height)):  # a preset's size obeys the caps too
        if v > limits.max_side:
            raise ValueError(
                f"{name}: {ref.label} makes {v} px, over the limit of {limits.max_side}; "
                f"set a smaller {name}"
            )
    check_size(ref, width, height)
    steps = req.steps or p.steps
    if steps > limits.max_steps:
        raise ValueError(f"steps: must be from 1 to {limits.max_steps} (got {steps})")
    guidance = p.guidance if req.guidance is None else req.guidance
    return {"width": width, "height": height, "steps": steps, "guidance": guidance}


def read_init_image(path: Path, width: int, height: int) -> Image.Image:
    """The `--init` image at the generation size; one `init:` line for a file that is not an
    image, or one whose pixel count is a decompression bomb's (checked from the header,
    before anything is decoded; PIL's own bomb warning is not passed on to the user)."""
    import warnings

    most = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's threshold for its bomb warning
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > most:
                    raise Image.DecompressionBombError(name)
                im.load()
                img = im.convert("RGB")
    except Image.DecompressionBombError:
        raise ValueError(
            f"init: {name!r} has more than {most} pixels (the limit; a decompression bomb?); "
            "use a smaller image"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"init: cannot read image {name!r} ({exc})") from None
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    return img


def generate(
    loaded_t2i: LoadedModel,
    items: list[ImageItem],
    *,
    runtime: Runtime | None = None,
    planner: Planner | None = None,
    on_result=None,
) -> list[np.ndarray]:
    """Run image items through the batcher; returns float32 HxWx3 arrays in [0, 1], in order.

    Items with init images go through image-to-image (same components, `from_pipe`).
    """
    runtime = runtime or Runtime()
    planner = planner or Planner(runtime)
    out: list[np.ndarray | None] = [None] * len(items)
    for idxs in group_indices(items, lambda item: item.batch_key):
        has_init = items[idxs[0]].init is not None
        loaded = load(loaded_t2i.ref, "img2img", runtime) if has_init else loaded_t2i
        first = items[idxs[0]]
        key = cost_key(loaded, first.width, first.height, first.steps)
        run_group(
            items,
            idxs,
            out,
            lambda batch, loaded=loaded: _call_image_pipe(loaded, batch),
            on_result=on_result,
            planner=planner,
            key=key,
            device=loaded.placement.device,
            savers=ladder_for(loaded),
            on_failure=lambda loaded=loaded: reset_fast_state(loaded.pipe),
        )
    return out  # type: ignore[return-value]


def _call_image_pipe(loaded: LoadedModel, batch: list[ImageItem]) -> list[np.ndarray]:
    import torch

    first = batch[0]
    kwargs = dict(
        prompt=[j.prompt for j in batch],
        num_inference_steps=first.steps,
        guidance_scale=first.guidance,
        generator=[torch.Generator("cpu").manual_seed(j.seed) for j in batch],
        output_type="np",
    )
    kwargs |= preset_kwargs(loaded, [j.negative_prompt for j in batch])
    if any(j.negative_prompt for j in batch) and first.guidance > 1:
        kwargs["negative_prompt"] = [j.negative_prompt for j in batch]
    if first.init is not None:
        kwargs.update(image=[j.init for j in batch], strength=first.strength)
    # FLUX image-to-image takes a size too (without it, its default 1024 px).
    if first.init is None or {"width", "height"} <= call_parameters(type(loaded.pipe)):
        kwargs.update(width=first.width, height=first.height)
    use_loras(loaded, first.loras)
    with torch.inference_mode():
        images = loaded.pipe(**kwargs).images
    return [np.asarray(img, dtype=np.float32) for img in images]


def a1111_parameters(item: ImageItem, model_label: str, sampler: str) -> str:
    """The `parameters` text A1111, ComfyUI readers and image hosts parse."""
    lines = [" ".join([item.prompt, *(lora.a1111() for lora in item.loras)])]
    if item.negative_prompt:
        lines.append(f"Negative prompt: {item.negative_prompt}")
    fields = [
        ("Steps", item.steps),
        ("Sampler", sampler),
        ("CFG scale", f"{item.guidance:g}"),
        ("Seed", item.seed),
        ("Size", f"{item.width}x{item.height}"),
        ("Model", model_label),
    ]
    if item.init is not None:
        fields.append(("Denoising strength", f"{item.strength:g}"))
    fields.append(("Version", f"reelchain {__version__}"))
    lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    return "\n".join(lines)


def sampler_name(pipe) -> str:
    name = type(getattr(pipe, "scheduler", None)).__name__
    return SAMPLER_NAMES.get(name, name.removesuffix("Scheduler"))


def package_versions() -> dict[str, str]:
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"reelchain": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def to_pil(arr: np.ndarray) -> Image.Image:
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float32), nan=0.0)
    return Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))


def save_png(image: Image.Image, path: Path, parameters: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


@dataclass
class ImageOrder:
    """One request's images, made ready to run: its model, its `ImageItem`s (seed, seed+1,
    ...) and the folder they go to. Orders with the same `batch_key` can share one
    `generate` call; each image is still written to its own order's folder."""

    req: ImageRequest
    ref: ModelRef
    items: list[ImageItem]
    out_dir: Path
    init: Image.Image | None = None

    @property
    def batch_key(self) -> tuple | None:
        """Same model, size, steps and guidance; None for an order with an init image."""
        if self.init is not None:
            return None
        return (self.ref.spec, self.ref.kind, *self.items[0].batch_key)


def plan_images(req: ImageRequest, out_dir: str | Path) -> ImageOrder:
    """A checked request's image items (seed, seed+1, ...); nothing runs yet."""
    ref = resolve_model(req.model, "image")
    init = read_init_image(req.init_image, req.width, req.height) if req.init_image else None
    loras = tuple(parse_lora(text) for text in req.loras)
    items = [
        ImageItem(req.prompt, req.negative_prompt, req.width, req.height, req.steps,
                 req.guidance, (req.seed + i) % 2**32, init, req.strength, loras)
        for i in range(req.count)
    ]  # fmt: skip
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"out: {str(out_dir)!r} is a file; give a folder for the images")
    return ImageOrder(req, ref, items, Path(out_dir), init)


def write_image(order: ImageOrder, index: int, arr: np.ndarray, maker: Maker) -> ImageResult:
    """Write image `index` of an order: the PNG with its `parameters` chunk, and its sidecar."""
    item, ref, req = order.items[index], order.ref, order.req
    sampler = maker.sampler
    params = a1111_parameters(item, ref.label, sampler)
    path = order.out_dir / f"{slug(req.prompt)}-{item.seed}.png"
    save_png(to_pil(arr), path, params)
    sidecar = path.with_suffix(".json")
    write_json(
        sidecar,
        {
            "file": path.name,
            "prompt": item.prompt,
            "negative_prompt": item.negative_prompt,
            "seed": item.seed,
            "steps": item.steps,
            "guidance": item.guidance,
            "sampler": sampler,
            "width": item.width,
            "height": item.height,
            "model": ref.label,
            "model_source": ref.preset.source,
            "init_image": Path(req.init_image).name if req.init_image else None,
            "strength": item.strength if order.init is not None else None,
            "parameters": params,
            "loras": [{"file": Path(lo.path).name, "scale": lo.scale} for lo in item.loras],
            "placement": maker.placement,
            "versions": package_versions(),
        },
    )
    return ImageResult(path, sidecar, item.seed, item.width, item.height, params)


def make_images(
    req: ImageRequest,
    out_dir: str | Path,
    *,
    runtime: Runtime | None = None,
    planner: Planner | None = None,
    limits: Limits | None = None,
) -> list[ImageResult]:
    """The `image` command: check, generate `count` images, write PNGs and sidecars."""
    runtime = runtime or Runtime()
    order = plan_images(req.checked(limits or Limits()), out_dir)
    from .scale import maker_for

    maker = maker_for(order.ref, "image", runtime)
    results: list[ImageResult | None] = [None] * len(order.items)

    def write(i: int, arr: np.ndarray) -> None:
        results[i] = write_image(order, i, arr, maker)

    maker.run(order.items, planner=planner, on_result=write)
    return results  # type: ignore[return-value]
