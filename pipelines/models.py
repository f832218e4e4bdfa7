"""Model registry (a table), model resolution, loading and the cache of loaded pipelines.

`--model` takes a preset name (`sd-turbo`, `ltx-video`, ...), a tiny twin (`tiny`,
`tiny-<family>`), a Hugging Face repo id, a local diffusers folder, or a single
`.safetensors` file. Whatever it names resolves to a `ModelRef`: a family (which adapter
code runs it), a source, and defaults. Loading is safetensors only and never runs remote
code; loaded pipelines are cached, and image-to-image reuses text-to-image's components.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .device import Placement, apply_placement, choose_offload, plan_placement
from .settings import Runtime
from .traits import (
    LTX2_0_CALL,
    LTX_DECODE,
    SKYREELS_DF_CALL,
    WAN22_BOUNDARY,
    WAN22_GUIDANCE,
    WAN_FP32,
    Configs,
    config_traits,
    folder_configs,
    hub_configs,
)

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
    text_mask: bool = False  # its denoiser attends to text under a float attention mask
    sound: bool = False  # it makes a soundtrack with its frames
    # It continues a shot from its own state (FramePack's history latents), one section
    # per call, instead of from frames; the state is kept beside each segment.
    sections: bool = False

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
            "LTX-Video: image/video conditioning at any frame index; fast", text_mask=True,
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
        Family(
            name="hunyuanvideo15", kind="video",
            pipeline_class="HunyuanVideo15ImageToVideoPipeline", twin="hunyuanvideo15",
            size_multiple=16, frame_step=4, conditioning=("text", "first_frame"),
            description="HunyuanVideo 1.5 image-to-video: its size from the picture's aspect",
        ),
        Family(
            name="ltx2", kind="video", pipeline_class="LTX2ConditionPipeline", twin="ltx2",
            size_multiple=32, frame_step=8, conditioning=("text", "first_frame", "video"),
            description="LTX-2: video with its own soundtrack; continues from frames",
            text_mask=True, sound=True,
        ),
        Family(
            name="skyreels-df", kind="video",
            pipeline_class="SkyReelsV2DiffusionForcingImageToVideoPipeline", twin="skyreels-df",
            size_multiple=16, frame_step=4, conditioning=("text", "first_frame", "video"),
            description="SkyReels-V2 diffusion forcing: extends video over overlapping windows",
        ),
        Family(
            name="framepack", kind="video", pipeline_class="HunyuanVideoFramepackPipeline",
            twin="framepack", size_multiple=16, frame_step=4,
            conditioning=("text", "first_frame"),
            description="FramePack F1: next-section prediction over fixed-size history latents",
            sections=True,
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
    "HunyuanVideo15Pipeline": "hunyuanvideo15",  # refused unless its transformer is i2v
    "HunyuanVideo15ImageToVideoPipeline": "hunyuanvideo15",
    "LTX2Pipeline": "ltx2",
    "LTX2ImageToVideoPipeline": "ltx2",
    "LTX2ConditionPipeline": "ltx2",
    "SkyReelsV2DiffusionForcingPipeline": "skyreels-df",
    "SkyReelsV2DiffusionForcingImageToVideoPipeline": "skyreels-df",
    "SkyReelsV2DiffusionForcingVideoToVideoPipeline": "skyreels-df",
    "HunyuanVideoFramepackPipeline": "framepack",
}


# The negative prompt of Wan's model cards and diffusers' Wan examples (the English of the
# one Wan's own code uses): Wan was trained to steer away from these.
WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, "
    "images, static, overall gray, worst quality, low quality, JPEG compression residue, ugly, "
    "incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, "
    "misshapen limbs, fused fingers, still picture, messy background, three legs, many people "
    "in the background, walking backwards"
)


FRAMEPACK_F1_PARTS = (
    ("transformer", "HunyuanVideoFramepackTransformer3DModel",
     "lllyasviel/FramePack_F1_I2V_HY_20250503", ""),
    ("image_encoder", "SiglipVisionModel", "lllyasviel/flux_redux_bfl", "image_encoder"),
    ("feature_extractor", "SiglipImageProcessor", "lllyasviel/flux_redux_bfl",
     "feature_extractor"),
    # Llama 3's byte-level tokenizer as its own file says: read as the Llama class its
    # model index names, transformers 5 rebuilds its pre-tokenizer (other token ids).
    ("tokenizer", "AutoTokenizer", "hunyuanvideo-community/HunyuanVideo", "tokenizer"),
)  # fmt: skip


# The negative prompt of diffusers' LTX-2 examples.
LTX2_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"


@dataclass(frozen=True)
class Preset:
    """A named model with the defaults it was made for, and the rules only real weights show
    (the frame rate its motion was trained at, dtype rules, decode settings)."""

    name: str
    family: str
    source: str  # hub repo id, or "twin:<twin>"
    width: int
    height: int
    frames: int  # frames per clip (1 for images)
    fps: int  # the storyboard's default frame rate
    steps: int
    guidance: float
    memory_gb: float  # rough peak need at the native size, weights in half precision
    note: str = ""
    native_only: bool = False  # makes its native width × height only (a learned position table)
    conditioning: tuple[str, ...] | None = None  # None: the family's
    # Frame rates its frames carry motion at: (lo, hi) for models told the rate (LTX, SVD),
    # (r, r) for those that always make r (Wan, CogVideoX); None for image models.
    motion: tuple[int, int] | None = None
    fixed_frames: bool = False  # clips of exactly `frames` (a learned table over time too)
    size_multiple: int | None = None  # None: the family's
    negative_prompt: str = ""  # used where the storyboard or request gives none
    call: tuple[tuple[str, Any], ...] = ()  # further pipeline arguments, as the model card
    variant: str | None = None  # a half-precision weight variant the repo ships ("fp16")
    largest_gb: float = 0.0  # the largest single component in 16-bit (sizes model offload)
    fp32: tuple[str, ...] = ()  # components kept in float32 whatever the dtype
    # Makes one size per aspect ratio, about this many pixels a side, and picks it from the
    # first frame (HunyuanVideo 1.5's buckets); 0: any size on its multiple.
    aspect_target: int = 0
    # Frames a continuing clip shares with the previous one (0: the family's frame step + 1):
    # SkyReels-V2's `overlap_history`.
    overlap: int = 0
    # Scheduler settings of the model card, set on the loaded scheduler.
    scheduler: tuple[tuple[str, Any], ...] = ()
    # Components loaded from other repos: (component, class, repo, subfolder) (FramePack F1's
    # transformer and image encoder are published apart from HunyuanVideo).
    parts: tuple[tuple[str, str, str, str], ...] = ()

    @property
    def is_twin(self) -> bool:
        return self.source.startswith("twin:")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="sd-turbo", family="image", source="stabilityai/sd-turbo", width=512,
            height=512, frames=1, fps=0, steps=1, guidance=0.0, memory_gb=4,
            note="default for images; 1 step; runs on a laptop CPU", variant="fp16",
            largest_gb=1.7,
        ),
        Preset(
            name="sdxl-turbo", family="image", source="stabilityai/sdxl-turbo", width=512,
            height=512, frames=1, fps=0, steps=1, guidance=0.0, memory_gb=9,
            note="better images, 1 step", variant="fp16", largest_gb=5.1,
        ),
        Preset(
            name="flux-schnell", family="image", source="black-forest-labs/FLUX.1-schnell",
            width=1024, height=1024, frames=1, fps=0, steps=4, guidance=0.0, memory_gb=34,
            note="best images; big", size_multiple=16, call=(("max_sequence_length", 256),),
            largest_gb=23.8,
        ),
        Preset(
            name="ltx-video", family="ltx", source="Lightricks/LTX-Video-0.9.5", width=768,
            height=512, frames=161, fps=24, steps=40, guidance=3.0, memory_gb=20,
            note="default for videos; fast; continues from frames", motion=(24, 30),
            call=LTX_DECODE, largest_gb=9.5,
        ),
        Preset(
            name="wan-i2v-480p", family="wan", source="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
            width=832, height=480, frames=81, fps=16, steps=40, guidance=5.0, memory_gb=48,
            note="high quality image-to-video; no last frame",
            conditioning=("text", "first_frame"), motion=(16, 16),
            negative_prompt=WAN_NEGATIVE_PROMPT, largest_gb=32.8, fp32=WAN_FP32,
        ),
        Preset(
            name="wan-flf2v-720p", family="wan",
            source="Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers", width=1280, height=720, frames=81,
            fps=16, steps=40, guidance=5.0, memory_gb=60,
            note="first-and-last-frame: best for keyframes mode", motion=(16, 16),
            negative_prompt=WAN_NEGATIVE_PROMPT, largest_gb=32.8, fp32=WAN_FP32,
        ),
        Preset(
            name="svd-xt", family="svd", source="stabilityai/stable-video-diffusion-img2vid-xt",
            width=1024, height=576, frames=25, fps=7, steps=25, guidance=3.0, memory_gb=12,
            note="motion from one image, no prompt", motion=(7, 30), variant="fp16",
            largest_gb=3.1,
        ),
        Preset(
            name="cogvideox-5b-i2v", family="cogvideox", source="THUDM/CogVideoX-5b-I2V",
            width=720, height=480, frames=49, fps=8, steps=50, guidance=6.0, memory_gb=24,
            note="image-to-video; 720x480 and 49 frames only", native_only=True, motion=(8, 8),
            fixed_frames=True, largest_gb=11.3,
        ),
        # Wan 2.2's own configs (wan/configs/wan_ti2v_5B.py, wan_i2v_A14B.py); memory: bf16
        # weights (VAE in float32) plus activations at the native size.
        Preset(
            name="wan2.2-ti2v-5b", family="wan", source="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            width=1280, height=704, frames=121, fps=24, steps=50, guidance=5.0, memory_gb=28,
            note="720p at 24 fps; first frame only", conditioning=("text", "first_frame"),
            motion=(24, 24), size_multiple=32, negative_prompt=WAN_NEGATIVE_PROMPT,
            largest_gb=11.4, fp32=("vae",),
        ),
        Preset(
            name="wan2.2-i2v-a14b", family="wan", source="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
            width=1280, height=720, frames=81, fps=16, steps=40, guidance=WAN22_GUIDANCE,
            memory_gb=82, note="two 14B experts; first and last frame", motion=(16, 16),
            negative_prompt=WAN_NEGATIVE_PROMPT, call=(("guidance_scale_2", WAN22_GUIDANCE),),
            largest_gb=28.6, fp32=("vae",),
        ),
        # README of Tencent-Hunyuan/HunyuanVideo-1.5: 480p I2V, CFG 6, shift 5, 50 steps.
        Preset(
            name="hunyuanvideo-1.5-i2v", family="hunyuanvideo15",
            source="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v", width=848,
            height=480, frames=121, fps=24, steps=50, guidance=6.0, memory_gb=40,
            note="size from the keyframe's aspect (one per aspect)", motion=(24, 24),
            largest_gb=16.7, aspect_target=640,
        ),
        # diffusers' LTX-2 docs: 768x512, 121 frames, 24 fps, 30 steps, guidance 3.
        Preset(
            name="ltx-2", family="ltx2", source="Lightricks/LTX-2", width=768, height=512,
            frames=121, fps=24, steps=30, guidance=3.0, memory_gb=70,
            note="video with its own soundtrack; continues from frames", motion=(24, 50),
            negative_prompt=LTX2_NEGATIVE_PROMPT, call=LTX2_0_CALL, largest_gb=37.8,
        ),
        # SkyReels-V2 README and diffusers' docs: diffusion forcing at 540P, 97-frame windows
        # overlapping by 17 frames, noise 20 on the overlap, 30 steps, guidance 5 and shift 5
        # from an image; 24 fps.
        Preset(
            name="skyreels-v2-df-1.3b", family="skyreels-df",
            source="Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers", width=960, height=544,
            frames=97, fps=24, steps=30, guidance=5.0, memory_gb=16,
            note="long video by overlapping windows; small", motion=(24, 24), overlap=17,
            negative_prompt=WAN_NEGATIVE_PROMPT, call=SKYREELS_DF_CALL, largest_gb=11.4,
            fp32=("vae",), scheduler=(("flow_shift", 5.0),),
        ),
        Preset(
            name="skyreels-v2-df-14b", family="skyreels-df",
            source="Skywork/SkyReels-V2-DF-14B-540P-Diffusers", width=960, height=544,
            frames=97, fps=24, steps=30, guidance=5.0, memory_gb=44,
            note="long video by overlapping windows", motion=(24, 24), overlap=17,
            negative_prompt=WAN_NEGATIVE_PROMPT, call=SKYREELS_DF_CALL, largest_gb=28.6,
            fp32=("vae",), scheduler=(("flow_shift", 5.0),),
        ),
        # FramePack F1 (lllyasviel/FramePack demo_gradio_f1.py): 25 steps, distilled guidance
        # 10, 9-latent sections (36 new frames, 1.2 s at 30 fps), sizes
        # from 640-pixel buckets; diffusers' docs compose it from three repos.
        Preset(
            name="framepack-f1", family="framepack", source="hunyuanvideo-community/HunyuanVideo",
            width=832, height=480, frames=69, fps=30, steps=25, guidance=10.0, memory_gb=46,
            note="minutes of video in fixed memory: 1.2 s sections", motion=(30, 30),
            call=(("latent_window_size", 9),), largest_gb=25.6, parts=FRAMEPACK_F1_PARTS,
        ),
    )
}  # fmt: skip

RANDOM_PREFIX = "random:"  # `random:<preset>`: full-size, random weights
DEFAULT_IMAGE_PRESET = "sd-turbo"
DEFAULT_VIDEO_PRESET = "ltx-video"
DEFAULT_TWIN = {"image": "tiny-image", "video": "tiny-ltx"}


def twin_presets() -> dict[str, Preset]:
    """`tiny-<twin>` presets: the preset each twin mirrors (its motion rate, frame and dtype
    rules, call arguments), at the twin's own small size and step count. A twin that mirrors
    no preset yet takes its rules from its own configs, as a hub model would."""
    from .twins import TWINS

    out = {}
    for info in TWINS.values():
        name = "tiny-image" if info.name == "sd" else f"tiny-{info.name}"
        source = f"twin:{info.name}"
        if info.mirrors:
            base = PRESETS[info.mirrors]
        else:
            base = _inherit(info.family, name, source, twin_configs(info.name))
        kind = FAMILIES[info.family].kind
        out[name] = dataclasses.replace(
            base, name=name, source=source, width=info.width, height=info.height,
            frames=info.num_frames or 1, steps=info.steps, aspect_target=info.aspect_target,
            guidance=1.0 if kind == "image" else 3.0, memory_gb=0.05, largest_gb=0.01,
            variant=None, note=f"offline twin of {info.mirrors or info.pipeline_class}", parts=(),
        )  # fmt: skip
    return out


@functools.cache
def twin_configs(name: str) -> dict[str, dict]:
    """A twin's configs in the shape of a diffusers folder's (see `pipe_configs`)."""
    from .twins import build_twin

    return pipe_configs(build_twin(name))


def pipe_configs(pipe) -> dict[str, dict]:
    """{"model_index": the pipeline's config, <component>: its config} of a built pipeline,
    the shape `folder_configs` reads from disk."""
    out = {"model_index": {"_class_name": type(pipe).__name__, **dict(pipe.config)}}
    for name, component in pipe.components.items():
        config = getattr(component, "config", None)
        if config is not None:
            out[name] = config.to_dict() if hasattr(config, "to_dict") else dict(config)
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

    @property
    def size_multiple(self) -> int:
        return self.preset.size_multiple or self.family.size_multiple

    def legal_frames(self, n: int) -> int:
        """The nearest legal clip length ≥ n; a fixed-length model's own length always."""
        return self.preset.frames if self.preset.fixed_frames else self.family.legal_frames(n)

    def legal_around(self, x: float) -> tuple[int, int]:
        """The legal clip lengths just below and at or above `x` (see `Family.legal_around`)."""
        if self.preset.fixed_frames:
            return self.preset.frames, self.preset.frames
        return self.family.legal_around(x)

    def section_window(self, clip_frames: int | None = None) -> int:
        """Latent frames per section of a family that makes sections (FramePack's
        `latent_window_size`): the preset's, or the one whose later sections are about
        `clip_frames` long (8w - 3 frames)."""
        if clip_frames:
            return max(2, (clip_frames + 3) // 8)
        return int(dict(self.preset.call).get("latent_window_size", 9))

    @property
    def frame_rule(self) -> str:
        if self.preset.fixed_frames:
            return f"{self.preset.frames} only"
        if self.family.sections:
            return "a section: 8k-3"
        step = self.family.frame_step
        return "any" if step <= 1 else f"{step}k+1"


def resolve_model(
    spec: str | None, task: str = "image", runtime: Runtime | None = None
) -> ModelRef:
    """Resolve `--model`. `task` ("image" or "video") picks the default and checks the kind.
    `auto` (and no model at all for a video on a machine with a GPU) picks the best preset
    that fits the device `runtime` names (`resolve_auto`)."""
    if task not in ("image", "video"):
        raise ValueError(f"task: unknown {task!r}")
    spec = (spec or "").strip()
    if spec == AUTO or (not spec and task == "video" and _has_gpu(runtime)):
        return resolve_auto(task, runtime)
    spec = spec or (DEFAULT_IMAGE_PRESET if task == "image" else DEFAULT_VIDEO_PRESET)
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
            str(path.resolve()), _inherit("image", path.stem, str(path.resolve()), {}), "file"
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
        configs = folder_configs(path)
        ref = ModelRef(str(path), _inherit(family, path.name, str(path), configs), "local")
    elif _looks_like_repo_id(spec):
        model_index = _fetch_model_index(spec)
        family = _family_from_index(model_index, spec)
        configs = hub_configs(spec, model_index)
        ref = ModelRef(spec, _inherit(family, spec, spec, configs), "hub")
    else:
        raise ValueError(
            f"model: unknown {spec!r} (use a preset such as {DEFAULT_IMAGE_PRESET} or "
            f"{DEFAULT_VIDEO_PRESET}, 'tiny', a hub repo id, a folder or a .safetensors file; "
            "see `python -m pipelines models`)"
        )
    return ref


# ---------------------------------------------------------------------------------------
# `--model auto`: the best video preset this machine runs

AUTO = "auto"
# Video presets from best to least good: newest generation first, then size and what each
# can be conditioned on (a judgement from the models' published comparisons).
AUTO_ORDER = (
    "wan2.2-i2v-a14b",
    "hunyuanvideo-1.5-i2v",
    "ltx-2",
    "framepack-f1",
    "skyreels-v2-df-14b",
    "wan2.2-ti2v-5b",
    "wan-flf2v-720p",
    "wan-i2v-480p",
    "ltx-video",
    "skyreels-v2-df-1.3b",
    "cogvideox-5b-i2v",
    "svd-xt",
)
# Offload modes `auto` accepts for each `--offload`: streaming layers (group, sequential)
# runs anything, but many times slower, so `auto` does not choose it by itself.
_ACCEPTS = {"auto": ("none", "model"), "none": ("none",), "model": ("none", "model"),
            "group": ("none", "model", "group"), "sequential": ("none", "model", "group")}  # fmt: skip


@dataclass(frozen=True)
class AutoChoice:
    """The preset `auto` picks, the offload it runs with, and the line that says why."""

    preset: str
    offload: str
    line: str


def offload_for(p: Preset, free: int, device, pref: str = "auto") -> str:
    """The offload the engine gives preset `p` with `free` bytes on `device`."""
    import torch

    need, largest = int(p.memory_gb * GiB), int(p.largest_gb * GiB)
    return choose_offload(need, free, pref, torch.device(device), largest)


def choose_auto(free: int, device="cuda", pref: str = "auto") -> AutoChoice:
    """The best preset of `AUTO_ORDER` that runs in `free` bytes whole or with model offload
    (any, with group or sequential offload asked for); failing all, the lightest with group
    offload."""
    gb = f"{free / GiB:.0f} GB free on {device}"
    for name in AUTO_ORDER:
        p = PRESETS[name]
        mode = offload_for(p, free, device)
        if mode in _ACCEPTS[pref]:
            mode = mode if pref == "auto" else pref
            how = {"none": "it fits whole", "model": "with model offload: its largest part, "
                   f"~{p.largest_gb:g} GB, on the GPU in turn"}.get(mode, f"with {mode} offload")  # fmt: skip
            line = (f"model auto: {name}, the best video model for {gb} (~{p.memory_gb:g} GB "
                    f"at {p.width}×{p.height}; {how})")  # fmt: skip
            return AutoChoice(name, mode, line)
    name = min(AUTO_ORDER, key=lambda n: PRESETS[n].memory_gb)
    line = (f"model auto: {name} with group offload (slow): no video model fits {gb}, even with "
            "model offload")  # fmt: skip
    return AutoChoice(name, "group", line)


def resolve_auto(task: str, runtime: Runtime | None = None) -> ModelRef:
    """`--model auto` on this machine: on a CPU the tiny twins (real models need a GPU);
    on a GPU the best video preset its free memory runs (`choose_auto`), or the default
    image preset. Says which, and why, in one line on stderr."""
    from .device import free_memory, pick_device

    runtime = runtime or Runtime.from_options()
    device = pick_device(runtime.device)
    if device.type == "cpu":
        name = DEFAULT_TWIN[task]
        _say(f"model auto: {name}, the offline tiny twin: no GPU here, and real models need "
             "one (their pictures are noise; name a preset to run a real model)")  # fmt: skip
        return ModelRef(name, twin_presets()[name], "twin")
    if task == "image":
        _say(f"model auto: {DEFAULT_IMAGE_PRESET}, the default image model")
        return ModelRef(DEFAULT_IMAGE_PRESET, PRESETS[DEFAULT_IMAGE_PRESET], "hub")
    choice = choose_auto(free_memory(device, runtime.memory_budget), device.type, runtime.offload)
    _say(choice.line)
    return ModelRef(choice.preset, PRESETS[choice.preset], "hub")


def fits_here(runtime: Runtime | None = None) -> tuple[dict[str, str], str]:
    """For `python -m pipelines models`: how each real preset would run on this machine
    (whole, model offload, group offload, or no GPU), and a line on the machine and what
    `auto` picks on it."""
    from .device import free_memory, pick_device

    runtime = runtime or Runtime.from_options()
    device = pick_device(runtime.device)
    if device.type == "cpu":
        return {n: "no GPU" for n in PRESETS}, "this machine: no GPU; auto means the tiny twins"
    free = free_memory(device, runtime.memory_budget)
    names = {"none": "whole", "model": "model offload", "group": "group offload (slow)"}
    here = {n: names.get(offload_for(p, free, device.type), "?") for n, p in PRESETS.items()}
    choice = choose_auto(free, device.type, runtime.offload)
    here[choice.preset] += " ← auto"
    return here, f"this machine: {device.type}, {free / GiB:.1f} GB free; {choice.line}"


def _has_gpu(runtime: Runtime | None) -> bool:
    from .device import pick_device

    return pick_device((runtime or Runtime.from_options()).device).type != "cpu"


def _say(line: str) -> None:
    """One line on stderr that does not break a running progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


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


def _inherit(family: str, name: str, source: str, configs: Configs) -> Preset:
    """Defaults for a model outside the table: its family's reference preset, with the
    rules its own configs decide (`traits.config_traits`) in place of the preset's."""
    base = next(p for p in PRESETS.values() if p.family == family)
    plain = dataclasses.replace(
        base, name=name, source=source, note="", native_only=False, conditioning=None,
        fixed_frames=False, size_multiple=None, call=(), variant=None, parts=(), scheduler=(),
    )  # fmt: skip
    return dataclasses.replace(plain, **config_traits(family, configs, name))


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
    own_placement: Placement  # a derived model reads its base's (see `placement`)
    task: str  # text2img | img2img | video
    shares: LoadedModel | None = None  # the model whose very components this one runs

    @property
    def family(self) -> Family:
        return self.ref.family

    @property
    def placement(self) -> Placement:
        return self.shares.placement if self.shares is not None else self.own_placement

    def place(self, placement: Placement) -> None:
        """Record a new placement (a rung of the out-of-memory ladder moved the weights):
        one record for every pipeline that runs these components."""
        if self.shares is not None:
            self.shares.place(placement)
        else:
            self.own_placement = placement


_CACHE: dict[tuple, LoadedModel] = {}
_LOCK = threading.RLock()


def _import_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def _load_from_source(ref: ModelRef, placement: Placement):
    """Build or read the family's main pipeline (text-to-image for images), every component
    in the placement's dtype except those the preset keeps in float32."""
    import torch

    keep = ref.preset.fp32
    if ref.kind == "twin":
        from .twins import build_twin

        pipe = build_twin(ref.preset.source.removeprefix("twin:"))
        cast_components(pipe, placement.dtype, keep=keep)
        return pipe
    if ref.kind == "random":
        from .fullsize import build_fullsize

        # Built where it will run (no float32 copy of a 14B model in RAM), unless offloaded.
        device = placement.device if placement.offload == "none" else torch.device("cpu")
        pipe = build_fullsize(
            ref.spec.removeprefix(RANDOM_PREFIX), device=device, dtype=placement.dtype
        )
        cast_components(pipe, torch.float32, only=keep)
        return pipe
    if ref.kind == "file":
        return _load_single_file(ref.preset.source, placement)
    if ref.kind == "hub":
        _fetch_model_index(ref.preset.source)  # one clear line when offline and not cached
    dtype = {"default": placement.dtype} | {name: torch.float32 for name in keep}
    try:
        return _from_pretrained(ref, dtype, half=placement.dtype != torch.float32)
    except (OSError, ValueError) as exc:
        if ref.kind == "hub" and _is_offline_error(exc):
            raise _unavailable(ref.spec, exc) from exc
        raise ModelUnavailable(f"model: cannot load {ref.spec!r}: {exc}".splitlines()[0]) from exc


def _from_pretrained(ref: ModelRef, dtype: dict, *, half: bool):
    """`from_pretrained`, safetensors only, with the repo's half-precision weight variant
    where it ships one and the model runs in half precision (half the download); a cache
    that holds only the full weights is read as it is."""
    cls = _import_class(ref.family.pipeline_class)
    variant = ref.preset.variant if half else None
    parts = _load_parts(ref.preset, dtype)
    try:
        return cls.from_pretrained(
            ref.preset.source, torch_dtype=dtype, use_safetensors=True, variant=variant, **parts
        )
    except (OSError, ValueError):
        if variant is None:
            raise
        log.info("%s: no %s weights here; loading the full ones", ref.label, variant)
        return cls.from_pretrained(
            ref.preset.source, torch_dtype=dtype, use_safetensors=True, **parts
        )


def _load_parts(preset: Preset, dtype: dict) -> dict:
    """The components a preset takes from other repos (`Preset.parts`), safetensors only,
    each in its dtype (processors have none)."""
    import diffusers
    import torch
    import transformers

    out = {}
    for name, cls_name, repo, subfolder in preset.parts:
        cls = getattr(diffusers, cls_name, None) or getattr(transformers, cls_name)
        kw: dict = {"subfolder": subfolder} if subfolder else {}
        if issubclass(cls, torch.nn.Module):
            kw |= {"torch_dtype": dtype.get(name, dtype["default"]), "use_safetensors": True}
        out[name] = cls.from_pretrained(repo, **kw)
    return out


def set_scheduler(pipe, preset: Preset) -> None:
    """The model card's scheduler settings (`Preset.scheduler`), on a scheduler of the same
    class (SkyReels-V2 image-to-video: shift 5)."""
    if preset.scheduler and getattr(pipe, "scheduler", None) is not None:
        config = dict(pipe.scheduler.config) | dict(preset.scheduler)
        pipe.scheduler = type(pipe.scheduler).from_config(config)


def cast_components(
    pipe, dtype, *, keep: tuple[str, ...] = (), only: tuple[str, ...] | None = None
):
    """Cast a pipeline's modules to `dtype` one by one: all but `keep`, or just `only`.
    (`pipe.to(dtype=...)` would also cast the modules a model must keep in float32.)"""
    import torch

    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module) or name in keep:
            continue
        if (only is None or name in only) and getattr(component, "dtype", dtype) != dtype:
            component.to(dtype=dtype)


def derive_pipe(auto_class: str, base):
    """The pipeline of another task (e.g. image-to-image) over `base`'s very components.

    diffusers' `from_pipe` casts the shared components to float32 unless given a dtype, and
    given one it casts float32-kept modules too; building the task's class from the
    components changes no weight. Progress-bar settings carry over."""
    from diffusers.pipelines import auto_pipeline

    mapping = {"AutoPipelineForImage2Image": auto_pipeline.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING}
    cls = auto_pipeline._get_task_class(mapping[auto_class], type(base).__name__)
    expected, optional = cls._get_signature_keys(cls)
    parts = {k: v for k, v in base.components.items() if k in expected}
    parts |= {k: base.config[k] for k in optional if k in base.config}
    pipe = cls(**parts)
    pipe.set_progress_bar_config(**getattr(base, "_progress_bar_config", {}))
    return pipe


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
    """Load (or reuse) the pipeline for `task`: text2img, img2img or video.

    img2img shares every component with text2img, as they are (`derive_pipe`).
    """
    runtime = runtime or Runtime()
    key = (ref.spec, ref.kind, task, runtime.device, runtime.dtype, runtime.offload, runtime.fast)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if task == "img2img":
            base = load(ref, "text2img", runtime)
            pipe = derive_pipe("AutoPipelineForImage2Image", base.pipe)
            loaded = LoadedModel(ref, pipe, base.placement, task, shares=base)
        else:
            p = ref.preset
            placement = plan_placement(runtime, int(p.memory_gb * GiB), int(p.largest_gb * GiB))
            log.info("loading %s for %s on %s", ref.label, task, placement.describe())
            pipe = _load_from_source(ref, placement)
            _complete_config(pipe)
            set_scheduler(pipe, p)
            placement = apply_placement(pipe, placement)  # `fast`: what is switched on
            # Step bars on a terminal only: for tiny, fast calls a bar costs more than the call.
            pipe.set_progress_bar_config(
                leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty()
            )
            loaded = LoadedModel(ref, pipe, placement, task)
        _CACHE[key] = loaded
        return loaded


def _complete_config(pipe) -> None:
    """Pipeline settings a repo may leave out: Wan 2.2 A14B's expert boundary (without it
    diffusers runs the high-noise expert alone)."""
    if (
        getattr(pipe, "transformer_2", None) is not None
        and pipe.config.get("boundary_ratio") is None
    ):
        pipe.register_to_config(boundary_ratio=WAN22_BOUNDARY)


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
    from .device import release_memory

    release_memory()


def table_rows() -> list[dict[str, str]]:
    """Rows for `python -m pipelines models` and the README."""
    rows = []
    for p in [*PRESETS.values(), *twin_presets().values()]:
        ref = ModelRef(p.name, p, "twin" if p.is_twin else "hub")
        fam = ref.family
        rows.append(
            {
                "preset": p.name,
                "family": p.family,
                "pipeline": fam.pipeline_class,
                "source": _sources(p),
                "size": f"{p.width}x{p.height}",
                "frames": "1" if fam.kind == "image" else f"{p.frames} ({ref.frame_rule})",
                "motion": _motion(p.motion),
                "fps": str(p.fps or "-"),
                "steps": str(p.steps),
                "cfg": f"{p.guidance:g}",
                "conditioning": ", ".join(p.conditioning or fam.conditioning),
                "memory": f"~{p.memory_gb:g} GB" if not p.is_twin else "tiny",
            }
        )
    return rows


def _sources(p: Preset) -> str:
    """Where a preset loads from: its repo, and the repos of parts published apart."""
    apart = [f"{name} from {repo}" for name, _, repo, _ in p.parts if repo != p.source]
    return " + ".join([p.source, *dict.fromkeys(apart)])


def _motion(motion: tuple[int, int] | None) -> str:
    """The frame rate a model's frames carry motion at, as the table shows it."""
    if motion is None:
        return "-"
    lo, hi = motion
    return f"{lo} fps" if lo == hi else f"{lo}–{hi} fps"


def preset_kwargs(loaded: LoadedModel, negatives: list[str]) -> dict:
    """What a model's preset adds to every call, where its pipeline takes it: the model
    card's settings (`Preset.call`) and its negative prompt for jobs that give none."""
    takes = call_parameters(type(loaded.pipe))
    p = loaded.ref.preset
    kw = {name: value for name, value in p.call if name in takes}
    if p.negative_prompt and "negative_prompt" in takes:
        kw["negative_prompt"] = [n or p.negative_prompt for n in negatives]
    return kw


@functools.cache
def call_parameters(pipe_class: type) -> frozenset[str]:
    """The argument names a pipeline class's `__call__` takes."""
    import inspect

    return frozenset(inspect.signature(pipe_class.__call__).parameters)


def check_fast(ref: ModelRef, fast: tuple[str, ...]) -> None:
    """Refuse, before any work, an attention backend the model's attention masks rule out:
    LTX masks its text tokens with a float bias, which flash, sage and the variable-length
    kernels cannot take (the call would fail at its first step)."""
    from .device import attention_takes_float_mask

    if not ref.family.text_mask:
        return
    for item in fast:
        kind, _, backend = item.partition(":")
        if kind == "attention" and not attention_takes_float_mask(backend):
            raise ValueError(
                f"fast: attention:{backend} cannot take the text attention mask {ref.label} "
                "uses; use attention:_native_cudnn, attention:_native_efficient or "
                "attention:xformers"
            )
