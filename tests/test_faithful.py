"""Each twin has its preset's structural switches, as published.

The table lists, per preset, the config switches that change which code runs (the VAE's
timestep conditioning, a learned position table and its frame count, an image encoder, a
second expert, the text length a transformer was distilled for). Both the published
layout (the full-size build, from the published configs) and the twin must have them.
"""

import pytest
import torch

from pipelines.fullsize import build_fullsize
from pipelines.models import PRESETS, pipe_configs, twin_configs
from pipelines.twins import TWINS

# preset -> {switch: published value}. "c.key": a config value; "c.key?": whether it is set;
# "c": whether the pipeline has component c; "c.class": the component's class.
SWITCHES = {
    "sd-turbo": {"class": "StableDiffusionPipeline", "unet.class": "UNet2DConditionModel"},
    "flux-schnell": {"class": "FluxPipeline", "transformer.guidance_embeds": False},
    "ltx-video": {
        "class": "LTXConditionPipeline",
        "vae.timestep_conditioning": True,
        "scheduler.use_dynamic_shifting": False,
    },
    "wan-i2v-480p": {
        "class": "WanImageToVideoPipeline",
        "image_encoder": True,
        "transformer_2": False,
        "transformer.image_dim?": True,
        "transformer.pos_embed_seq_len?": False,
    },
    "wan-flf2v-720p": {
        "class": "WanImageToVideoPipeline",
        "image_encoder": True,
        "transformer_2": False,
        "transformer.pos_embed_seq_len?": True,
    },
    "svd-xt": {
        "class": "StableVideoDiffusionPipeline",
        "vae.class": "AutoencoderKLTemporalDecoder",
        "image_encoder": True,
    },
    "cogvideox-5b-i2v": {
        "class": "CogVideoXImageToVideoPipeline",
        "transformer.use_learned_positional_embeddings": True,
        "transformer.use_rotary_positional_embeddings": True,
        "transformer.sample_frames": 49,
        "transformer.patch_size_t?": False,
        "transformer.ofs_embed_dim?": False,
    },
}

MIRRORS = {info.mirrors: name for name, info in TWINS.items() if info.mirrors}


def switch(configs: dict, name: str):
    index = configs["model_index"]
    if name == "class":
        return index["_class_name"]
    component, _, key = name.partition(".")
    if not key:
        entry = index.get(component)
        return bool(entry) and entry[0] is not None
    if key == "class":
        return index[component][1]
    if key.endswith("?"):
        return configs[component].get(key[:-1]) is not None
    return configs[component].get(key)


def test_every_preset_has_a_row_and_a_twin():
    assert set(SWITCHES) == set(PRESETS) - {"sdxl-turbo"}  # SDXL: no twin yet (see README)
    assert set(SWITCHES) <= set(MIRRORS)


@pytest.mark.parametrize("preset", sorted(SWITCHES))
def test_the_published_layout_has_the_switches(preset):
    configs = pipe_configs(build_fullsize(preset, device="meta", dtype=torch.bfloat16))
    assert {name: switch(configs, name) for name in SWITCHES[preset]} == SWITCHES[preset]


@pytest.mark.parametrize("preset", sorted(SWITCHES))
def test_the_twin_has_the_switches(preset):
    configs = twin_configs(MIRRORS[preset])
    assert {name: switch(configs, name) for name in SWITCHES[preset]} == SWITCHES[preset]


def test_the_wan_22_twin_has_two_experts_and_a_boundary():
    configs = twin_configs("wan22")
    assert switch(configs, "transformer_2") and not switch(configs, "image_encoder")
    assert configs["model_index"]["boundary_ratio"] == 0.9
