"""Model registry (a table), model resolution, loading and the cache of loaded pipelines.

`--model` takes a preset name (`sd-turbo`, `ltx-video`, ...), a tiny twin (`tiny`,
`tiny-<family>`), a Hugging Face repo id, a local diffusers folder, or a single
`.safetensors` file. Whatever it names resolves to a `ModelRef`: a family (which adapter
code runs it), a source, and defaults. Loading is safetensors only and never runs remote
code; loaded pipelines are cached, and image-to-image reuses text-to-image's components.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .device import Placement, apply_placement, plan_placement
from .settings import Runtime

log = logging.getLogger(__name__)

GiB = 2**30


class ModelUnavailable(RuntimeError):
    """The model exists in principle but cannot be loaded here (offline, not cached)."""


@dataclass(frozen=True)
class Family:
    """What a family of models can do; the adapters read this instead of branching on names."""

    name: str
    kind: str  # "image" | "video"
    pipeline_class: str  # diffusers class the engine calls
    twin: str  # pipelines.twins family that builds its offline twin
    size_multiple: int  # width and height must be multiples of this
    frame_step: int  # legal frame counts are frame_step*k + 1 (1 = any count)
    conditioning: tuple[
        str, ...
    ]  # text, init_image, first_frame, last_frame, frames_at_indices, video
    description: str

    def legal_frames(self, n: int) -> int:
        """The nearest legal frame count ≥ n (so a clip is never shorter than asked)."""
        if self.frame_step <= 1:
            return max(1, n)
        k = max(1, -(-(n - 1) // self.frame_step))
        return self.frame_step * k + 1

    def legal_around(self, x: float) -> tuple[int, int]:
        """The legal frame counts just below and at or above `x` (equal when `x` is legal);
        the lower one may be under the family's least legal count."""
        hi = self.legal_frames(math.ceil(x))
        return (hi if hi <= x else hi - max(1, self.frame_step)), hi

    def takes(self, what: str) -> bool:
        return what in self.conditioning


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "image", "image", "AutoPipelineForText2Image", "sd", 8, 1,
            ("text", "init_image"),
            "text-to-image and image-to-image (SD, SDXL, FLUX: any AutoPipeline model)",
        ),
        Family(
            "ltx", "video", "LTXConditionPipeline", "ltx", 32, 8,
            ("text", "first_frame", "last_frame", "frames_at_indices", "video"),
            "LTX-Video: image/video conditioning at any frame index; fast",
        ),
        Family(
            "wan", "video", "WanImageToVideoPipeline", "wan", 16, 4,
            ("text", "first_frame", "last_frame"),
            "Wan 2.x image-to-video, first-and-last-frame",
        ),
        Family(
            "svd", "video", "StableVideoDiffusionPipeline", "svd", 8, 1,
            ("first_frame",),
            "Stable Video Diffusion: motion from one image, no text",
        ),
        Family(
            "cogvideox", "video", "CogVideoXImageToVideoPipeline", "cogvideox", 16, 8,
            ("text", "first_frame"),
            "CogVideoX image-to-video",
        ),
    )
}  # fmt: skip

# Which family a diffusers `model_index.json` `_class_name` belongs to.
CLASS_TO_FAMILY = {
    "StableDiffusionPipeline": "image",
    "StableDiffusionXLPipeline": "image",
    "FluxPipeline": "image",
    "StableDiffusion3Pipeline": "image",
    "PixArtAlphaPipeline": "image",
    "PixArtSigmaPipeline": "image",
    "LTXPipeline": "ltx",
    "LTXConditionPipeline": "ltx",
    "LTXImageToVideoPipeline": "ltx",
    "WanPipeline": "wan",
    "WanImageToVideoPipeline": "wan",
    "StableVideoDiffusionPipeline": "svd",
    "CogVideoXPipeline": "cogvideox",
    "CogVideoXImageToVideoPipeline": "cogvideox",
}


@dataclass(frozen=True)
class Preset:
    """A named model with the defaults it was made for."""

    name: str
    family: str
    source: str  # hub repo id, or "twin:<family>"
    width: int
    height: int
    frames: int  # frames per clip (1 for images)
    fps: int  # the frame rate the model was trained at
    steps: int
    guidance: float
    memory_gb: float  # rough peak need at the native size, weights in half precision
    note: str = ""
    native_only: bool = False  # makes its native width × height only (a learned position table)
    conditioning: tuple[str, ...] | None = None  # None: the family's

    @property
    def is_twin(self) -> bool:
        return self.source.startswith("twin:")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("sd-turbo", "image", "stabilityai/sd-turbo", 512, 512, 1, 0, 1, 0.0, 4,
               "default for images; 1 step; runs on a laptop CPU"),
        Preset("sdxl-turbo", "image", "stabilityai/sdxl-turbo", 512, 512, 1, 0, 1, 0.0, 9,
               "better images, 1 step"),
        Preset("flux-schnell", "image", "black-forest-labs/FLUX.1-schnell", 1024, 1024, 1, 0,
               4, 0.0, 34, "best images; big"),
        Preset("ltx-video", "ltx", "Lightricks/LTX-Video-0.9.5", 768, 512, 97, 24, 40, 3.0, 20,
               "default for videos; fast; continues from frames"),
        Preset("wan-i2v-480p", "wan", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", 832, 480, 81,
               16, 40, 5.0, 48, "high quality image-to-video; no last frame",
               conditioning=("text", "first_frame")),
        Preset("wan-flf2v-720p", "wan", "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers", 1280, 720,
               81, 16, 40, 5.0, 60, "first-and-last-frame: best for keyframes mode"),
        Preset("svd-xt", "svd", "stabilityai/stable-video-diffusion-img2vid-xt", 1024, 576,
               25, 7, 25, 3.0, 12, "motion from one image, no prompt"),
        Preset("cogvideox-5b-i2v", "cogvideox", "THUDM/CogVideoX-5b-I2V", 720, 480, 49, 8, 50,
               6.0, 24, "image-to-video; 720x480 only", native_only=True),
    )
}  # fmt: skip

RANDOM_PREFIX = "random:"  # `random:<preset>`: full-size, random weights
DEFAULT_IMAGE_PRESET = "sd-turbo"
DEFAULT_VIDEO_PRESET = "ltx-video"
DEFAULT_TWIN = {"image": "tiny-image", "video": "tiny-ltx"}


def twin_presets() -> dict[str, Preset]:
    """`tiny-<family>` presets, with the twins' own small sizes and step counts."""
    from .twins import TWINS

    out = {}
    for fam in FAMILIES.values():
        info = TWINS[fam.twin]
        out[f"tiny-{fam.name}"] = Preset(
            f"tiny-{fam.name}", fam.name, f"twin:{fam.twin}", info.width, info.height,
            info.num_frames or 1, 8, info.steps, 1.0 if fam.kind == "image" else 3.0, 0.05,
            f"offline twin of {fam.pipeline_class}, random weights",
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class ModelRef:
    """A resolved `--model`: which family runs it, where it loads from, and its defaults."""

    spec: str  # what the user typed
    preset: Preset
    kind: str  # twin | random | hub | local | file

    @property
    def family(self) -> Family:
        return FAMILIES[self.preset.family]

    @property
    def label(self) -> str:
        return self.preset.name

    def takes(self, what: str) -> bool:
        """Whether this model takes a kind of conditioning: its preset's list where the
        preset narrows its family's (Wan 2.1 image-to-video has no last frame)."""
        return what in (self.preset.conditioning or self.family.conditioning)


def resolve_model(spec: str | None, task: str = "image") -> ModelRef:
    """Resolve `--model`. `task` ("image" or "video") picks the default and checks the kind."""
    if task not in ("image", "video"):
        raise ValueError(f"task: unknown {task!r}")
    spec = (spec or "").strip() or (
        DEFAULT_IMAGE_PRESET if task == "image" else DEFAULT_VIDEO_PRESET
    )
    if spec == "tiny":
        spec = DEFAULT_TWIN[task]
    if spec == "tiny-sd":
        spec = "tiny-image"
    twins = twin_presets() if spec.startswith("tiny") else {}
    if spec in twins:
        ref = ModelRef(spec, twins[spec], "twin")
    elif spec.startswith(RANDOM_PREFIX):
        ref = _random_ref(spec)
    elif spec in PRESETS:
        ref = ModelRef(spec, PRESETS[spec], "hub")
    elif spec.endswith(".safetensors"):
        path = Path(os.path.expanduser(spec))  # os.path: `~nobody/` stays as it is
        if not path.is_file():
            raise ValueError(f"model: file not found: {spec!r}")
        # The header (8-byte length, then JSON naming each tensor's byte range) must read,
        # and the data it names be there, or loading fails deep in a library.
        try:
            with open(path, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                size = path.stat().st_size
                header = json.loads(fh.read(n)) if 2 <= n <= min(size - 8, 2**27) else None
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            if 8 + n + max(ends, default=0) > size:
                header = None  # truncated
        except (OSError, ValueError, RecursionError, AttributeError, TypeError, KeyError,
                IndexError):  # fmt: skip
            header = None
        if not isinstance(header, dict):
            raise ValueError(
                f"model: {path.name!r} is not a safetensors checkpoint (its header does not "
                "read: damaged or another format); give a .safetensors file or a diffusers folder"
            )
        ref = ModelRef(
            str(path.resolve()), _inherit("image", path.stem, str(path.resolve())), "file"
        )
    elif Path(os.path.expanduser(spec)).is_dir():  # os.path: `~nobody/` stays as it is
        path = Path(os.path.expanduser(spec)).resolve()
        index = path / "model_index.json"
        if not index.is_file():
            raise ValueError(
                f"model: {spec!r} is a folder without model_index.json (not a diffusers model)"
            )
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise ValueError(
                f"model: {spec!r} has a model_index.json that does not read ({reason}); "
                "download the model again"
            ) from None
        family = _family_from_index(data, spec)
        ref = ModelRef(str(path), _inherit(family, path.name, str(path)), "local")
    elif _looks_like_repo_id(spec):
        family = _family_from_index(_fetch_model_index(spec), spec)
        ref = ModelRef(spec, _inherit(family, spec, spec), "hub")
    else:
        raise ValueError(
            f"model: unknown {spec!r} (use a preset such as {DEFAULT_IMAGE_PRESET} or "
            f"{DEFAULT_VIDEO_PRESET}, 'tiny', a hub repo id, a folder or a .safetensors file; "
            "see `python -m pipelines models`)"
        )
    return ref


def _random_ref(spec: str) -> ModelRef:
    """`random:<preset>`: the preset's full-size architecture with seeded random weights.

    Nothing is downloaded; the pictures are noise, but speed and memory are the real
    model's, so a GPU can be sized and benchmarked before any weights arrive."""
    name = spec.removeprefix(RANDOM_PREFIX)
    if name not in PRESETS:
        raise ValueError(
            f"model: {spec!r} names no preset; use {RANDOM_PREFIX}<preset> with one of "
            f"{', '.join(PRESETS)}"
        )
    base = PRESETS[name]
    preset = dataclasses.replace(
        base, name=spec, source=spec, note=f"{base.name} architecture, random weights"
    )
    return ModelRef(spec, preset, "random")


def _inherit(family: str, name: str, source: str) -> Preset:
    """Defaults for a model outside the table: those of its family's reference preset."""
    base = next(p for p in PRESETS.values() if p.family == family)
    return dataclasses.replace(
        base, name=name, source=source, note="", native_only=False, conditioning=None
    )


def _looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


def _family_from_index(index: object, spec: str) -> str:
    """The family a `model_index.json` names; one line naming `model` when it names none."""
    if not isinstance(index, dict):
        raise ValueError(
            f"model: {spec!r} has a model_index.json that is not a JSON object "
            "(download the model again)"
        )
    cls = index.get("_class_name", "")
    if not isinstance(cls, str):
        raise ValueError(
            f"model: {spec!r} has a model_index.json whose _class_name is not a name "
            f"(got {type(cls).__name__}); download the model again"
        )
    if cls not in CLASS_TO_FAMILY:
        raise ValueError(
            f"model: {spec!r} is a {cls[:80] or 'unknown'} pipeline, which Reelchain does not "
            f"run (supported: {', '.join(sorted(CLASS_TO_FAMILY))})"
        )
    return CLASS_TO_FAMILY[cls]


def _fetch_model_index(repo_id: str) -> dict:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, "model_index.json")
    except Exception as exc:  # offline, not cached, private, or missing
        raise _unavailable(repo_id, exc) from exc
    return json.loads(Path(path).read_text())


def _unavailable(spec: str, exc: BaseException) -> ModelUnavailable:
    reason = type(exc).__name__
    return ModelUnavailable(
        f"model: {spec!r} is not in the local cache and the Hugging Face hub cannot be reached "
        f"({reason}); download it on a connected machine, or use --model tiny to run offline"
    )


# ---------------------------------------------------------------------------------------
# Loading and the cache of loaded pipelines


@dataclass
class LoadedModel:
    """A pipeline ready to call, with where it runs and what it is."""

    ref: ModelRef
    pipe: object
    placement: Placement
    task: str  # text2img | img2img | video | video-first (LTX image-to-video)

    @property
    def family(self) -> Family:
        return self.ref.family


_CACHE: dict[tuple, LoadedModel] = {}
_LOCK = threading.RLock()


def _import_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def _load_from_source(ref: ModelRef, placement: Placement):
    """Build or read the family's main pipeline (text-to-image for images)."""
    fam = ref.family
    if ref.kind == "twin":
        from .twins import build_twin

        pipe = build_twin(fam.twin)
        if placement.dtype != pipe.dtype:
            pipe.to(dtype=placement.dtype)
        return pipe
    if ref.kind == "random":
        import torch

        from .fullsize import build_fullsize

        # Built where it will run (no float32 copy of a 14B model in RAM), unless offloaded.
        device = placement.device if placement.offload == "none" else torch.device("cpu")
        return build_fullsize(
            ref.spec.removeprefix(RANDOM_PREFIX), device=device, dtype=placement.dtype
        )
    cls = _import_class(fam.pipeline_class)
    if ref.kind == "file":
        return _load_single_file(ref.preset.source, placement)
    if ref.kind == "hub":
        _fetch_model_index(ref.preset.source)  # one clear line when offline and not cached
    try:
        return cls.from_pretrained(
            ref.preset.source, torch_dtype=placement.dtype, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        if ref.kind == "hub" and _is_offline_error(exc):
            raise _unavailable(ref.spec, exc) from exc
        raise ModelUnavailable(f"model: cannot load {ref.spec!r}: {exc}".splitlines()[0]) from exc


def _is_offline_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        word in text
        for word in (
            "offline",
            "connect",
            "resolve",
            "cannot find the requested files",
            "localentry",
        )
    )


def _load_single_file(path: str, placement: Placement):
    """A single checkpoint: SD 1.x/2.x or SDXL, told apart by their keys."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        keys = f.keys()
        is_xl = any(k.startswith("conditioner.embedders.1") for k in keys)
    cls = _import_class("StableDiffusionXLPipeline" if is_xl else "StableDiffusionPipeline")
    try:
        return cls.from_single_file(path, torch_dtype=placement.dtype)
    except Exception as exc:
        raise ModelUnavailable(
            f"model: cannot load single file {Path(path).name!r} ({type(exc).__name__}); "
            "single files need their base configuration cached, or use a diffusers folder"
        ) from exc


def load(ref: ModelRef, task: str, runtime: Runtime | None = None) -> LoadedModel:
    """Load (or reuse) the pipeline for `task`: text2img, img2img, video or video-first.

    img2img shares every component with text2img (`from_pipe`), and video-first (LTX's
    image-to-video class, which batches different first frames) shares with video.
    """
    runtime = runtime or Runtime()
    key = (ref.spec, ref.kind, task, runtime.device, runtime.dtype, runtime.offload, runtime.fast)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        base_task = {"img2img": "text2img", "video-first": "video"}.get(task)
        if base_task:
            base = load(ref, base_task, runtime)
            derived_cls = {
                "img2img": "AutoPipelineForImage2Image",
                "video-first": "LTXImageToVideoPipeline",
            }[task]
            pipe = _import_class(derived_cls).from_pipe(base.pipe)
            loaded = LoadedModel(ref, pipe, base.placement, task)
        else:
            need = int(ref.preset.memory_gb * GiB)
            placement = plan_placement(runtime, need)
            if ref.kind == "twin" and placement.device.type == "cpu":
                placement = dataclasses.replace(placement, dtype=_float32())
            log.info("loading %s for %s on %s", ref.label, task, placement.describe())
            pipe = _load_from_source(ref, placement)
            placement = apply_placement(pipe, placement)  # `fast`: what is switched on
            # Step bars on a terminal only: for tiny, fast calls a bar costs more than the call.
            pipe.set_progress_bar_config(
                leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty()
            )
            loaded = LoadedModel(ref, pipe, placement, task)
        _CACHE[key] = loaded
        return loaded


def _float32():
    import torch

    return torch.float32


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
    from .device import release_memory

    release_memory()


def table_rows() -> list[dict[str, str]]:
    """Rows for `python -m pipelines models` and the README."""
    rows = []
    for p in [*PRESETS.values(), *twin_presets().values()]:
        fam = FAMILIES[p.family]
        rows.append(
            {
                "preset": p.name,
                "family": p.family,
                "pipeline": fam.pipeline_class,
                "source": p.source,
                "size": f"{p.width}x{p.height}",
                "frames": "1" if fam.kind == "image" else f"{p.frames} ({_frame_rule(fam)})",
                "fps": str(p.fps or "-"),
                "steps": str(p.steps),
                "cfg": f"{p.guidance:g}",
                "conditioning": ", ".join(p.conditioning or fam.conditioning),
                "memory": f"~{p.memory_gb:g} GB" if not p.is_twin else "tiny",
            }
        )
    return rows


def _frame_rule(fam: Family) -> str:
    return "any" if fam.frame_step <= 1 else f"{fam.frame_step}k+1"
