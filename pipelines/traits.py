"""What a model's own configs say about running it: the rules only real weights need.

The registry's presets state these rules; a model from elsewhere (a hub id, a folder) gets
them from its configs here, read before anything loads, so a plan never asks a model for
what it cannot do. Tests derive the presets' rules from their published configs (the
full-size builds) with the same function, so the table and the derivation cannot drift.

Configs come as ``{"model_index": {...}, "<component>": {...}}``: a diffusers folder's
``model_index.json`` and each component's ``config.json`` / ``scheduler_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Configs = dict[str, dict]

# LTX 0.9.1+ VAEs decode at a timestep with a little noise; diffusers' LTX docs use these.
LTX_DECODE = (("decode_timestep", 0.05), ("decode_noise_scale", 0.025))
WAN_FP32 = ("vae", "image_encoder")  # diffusers' Wan docs keep these in float32
WAN22_GUIDANCE = 3.5  # Wan 2.2 I2V A14B: both experts' guidance (Wan 2.2's own config)
WAN22_BOUNDARY = 0.9  # Wan 2.2 A14B image-to-video: where the experts hand over
# LTX-2.0 (no cross-attention modulation): the pipeline's defaults are LTX-2.3's; 2.0 takes
# the legacy timestep for cross-modal attention and guides with block 29 (its docstring).
LTX2_0_CALL = (("use_cross_timestep", False), ("spatio_temporal_guidance_blocks", (29,)))
_COMPONENTS = ("transformer", "vae", "scheduler", "unet", "guider")
_CONFIG_FILES = {"scheduler": "scheduler_config.json", "guider": "guider_config.json"}


def has(configs: Configs, name: str) -> bool:
    """Whether the pipeline has component `name` (model_index lists it, not as null)."""
    entry = configs.get("model_index", {}).get(name)
    return bool(entry) and entry[0] is not None


# SkyReels-V2 diffusion forcing: noise on the overlap's clean latents (its README's 20).
SKYREELS_DF_CALL = (("addnoise_condition", 20),)


def config_traits(family: str, configs: Configs, label: str) -> dict[str, Any]:
    """Preset fields a model's configs decide, for a model of `family`. Raises ValueError
    (one line naming `model`) for a model the engine cannot run right."""
    derive = {"image": _image, "ltx": _ltx, "wan": _wan, "cogvideox": _cogvideox,
              "hunyuanvideo15": _hunyuanvideo15, "ltx2": _ltx2,
              "skyreels-df": _skyreels_df}.get(family)  # fmt: skip
    return derive(configs, label) if derive else {}


def _image(configs: Configs, label: str) -> dict[str, Any]:
    if not configs.get("model_index", {}).get("_class_name", "").startswith("Flux"):
        return {}
    out: dict[str, Any] = {"size_multiple": 16}  # 8x VAE, then 2x2 latent packing
    if configs.get("transformer", {}).get("guidance_embeds") is False:  # schnell
        out["call"] = (("max_sequence_length", 256),)
    return out


def _ltx(configs: Configs, label: str) -> dict[str, Any]:
    if configs.get("scheduler", {}).get("use_dynamic_shifting"):
        raise ValueError(
            f"model: {label} is an LTX-Video release before 0.9.5 (its scheduler needs a "
            "shift the condition pipeline does not pass); use Lightricks/LTX-Video-0.9.5 or later"
        )
    decode = configs.get("vae", {}).get("timestep_conditioning")
    return {"call": LTX_DECODE if decode else ()}


def _skyreels_df(configs: Configs, label: str) -> dict[str, Any]:
    """A SkyReels-V2 diffusion-forcing model: its VAE in float32 (as Wan's), noise on the
    overlap, and shift 5 from an image (its repos ship 8, for text-to-video)."""
    return {"call": SKYREELS_DF_CALL, "fp32": ("vae",) if has(configs, "vae") else (),
            "scheduler": (("flow_shift", 5.0),)}  # fmt: skip


def _wan(configs: Configs, label: str) -> dict[str, Any]:
    transformer = configs.get("transformer", {})
    out: dict[str, Any] = {"fp32": tuple(n for n in WAN_FP32 if has(configs, n))}
    # Wan 2.1 image-to-video reads one picture's CLIP tokens (no last frame); FLF2V two.
    one_picture = has(configs, "image_encoder") and not transformer.get("pos_embed_seq_len")
    out["conditioning"] = ("text", "first_frame") if one_picture else None
    if configs.get("vae", {}).get("z_dim") == 48:  # Wan 2.2 TI2V-5B: 16x VAE, 24 fps
        out.update(size_multiple=32, motion=(24, 24), fps=24, width=1280, height=704,
                   frames=121, steps=50, guidance=5.0)  # fmt: skip
    if configs.get("model_index", {}).get("expand_timesteps"):  # TI2V: the first frame only
        out["conditioning"] = ("text", "first_frame")
    if has(configs, "transformer_2"):  # Wan 2.2 A14B: two experts, two guidance scales
        out.update(guidance=WAN22_GUIDANCE, call=(("guidance_scale_2", WAN22_GUIDANCE),))
    return out


def _cogvideox(configs: Configs, label: str) -> dict[str, Any]:
    transformer = configs.get("transformer", {})
    rate = 16 if transformer.get("patch_size_t") else 8  # 1.5 (2-frame patches) or 1.0
    out: dict[str, Any] = {"motion": (rate, rate)}
    if transformer.get("use_learned_positional_embeddings"):
        scale = 8  # the CogVideoX VAE's spatial compression
        out.update(
            native_only=True,
            fixed_frames=True,
            frames=transformer.get("sample_frames", 49),
            width=transformer.get("sample_width", 90) * scale,
            height=transformer.get("sample_height", 60) * scale,
        )
    return out


def _hunyuanvideo15(configs: Configs, label: str) -> dict[str, Any]:
    transformer = configs.get("transformer", {})
    if transformer.get("task_type", "i2v") != "i2v":
        raise ValueError(
            f"model: {label} is a text-to-video HunyuanVideo 1.5 (task_type "
            f"{transformer['task_type']}); use an image-to-video checkpoint (480p_i2v, 720p_i2v)"
        )
    target = transformer.get("target_size", 640)
    multiple = configs.get("vae", {}).get("spatial_compression_ratio", 16)
    width, height = aspect_size(target, 1280, 720, multiple)  # its 16:9 size
    out: dict[str, Any] = {"aspect_target": target, "width": width, "height": height}
    guidance = configs.get("guider", {}).get("guidance_scale")
    if guidance is not None:  # 6, or 1 for the CFG-distilled checkpoints
        out["guidance"] = float(guidance)
    if transformer.get("use_meanflow"):  # 480p step-distilled: 8 steps, no CFG (README)
        out.update(steps=8, guidance=1.0)
    return out


def _ltx2(configs: Configs, label: str) -> dict[str, Any]:
    cross_modulation = configs.get("transformer", {}).get("cross_attn_mod")
    return {"call": LTX2_0_CALL if cross_modulation is False else ()}


def aspect_size(target: int, width: int, height: int, multiple: int) -> tuple[int, int]:
    """The (width, height) a model that makes one size per aspect ratio, about `target` px
    a side on `multiple`, makes from a width × height picture: diffusers' own choice for
    HunyuanVideo 1.5 (its buckets' ratios are rounded, so a bucket may map to a neighbour)."""
    import numpy as np
    from diffusers.pipelines.hunyuan_video1_5.image_processor import (
        generate_crop_size_list,
        get_closest_ratio,
    )

    buckets = generate_crop_size_list(target, multiple)
    ratios = np.array([round(h / w, 5) for h, w in buckets])
    (made_h, made_w), _ = get_closest_ratio(height, width, ratios, buckets)
    return made_w, made_h


def folder_configs(path: Path) -> Configs:
    """The configs of a diffusers folder (missing or unreadable ones are left out)."""
    out: Configs = {}
    files = {"model_index": "model_index.json"}
    files |= {c: f"{c}/{_CONFIG_FILES.get(c, 'config.json')}" for c in _COMPONENTS}
    for name, rel in files.items():
        try:
            data = json.loads((path / rel).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out[name] = data
    return out


def hub_configs(repo_id: str, model_index: dict) -> Configs:
    """The configs of a hub repo (from the local cache, or fetched); missing ones left out."""
    from huggingface_hub import hf_hub_download

    out: Configs = {"model_index": model_index}
    for name in _COMPONENTS:
        if not has(out, name):
            continue
        rel = f"{name}/{_CONFIG_FILES.get(name, 'config.json')}"
        try:
            data = json.loads(Path(hf_hub_download(repo_id, rel)).read_text())
        except Exception:  # noqa: BLE001 - offline or absent: the family's defaults stand
            continue
        if isinstance(data, dict):
            out[name] = data
    return out
