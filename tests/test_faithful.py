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
    "wan2.2-ti2v-5b": {
        "class": "WanImageToVideoPipeline",
        "model_index.expand_timesteps": True,  # the first frame as latent frame 0, no last
        "vae.z_dim": 48,  # 16x VAE with 2x2 patches: sizes on multiples of 32
        "vae.patch_size": 2,
        "vae.scale_factor_spatial": 16,
        "image_encoder": False,
        "transformer_2": False,
        "transformer.in_channels": 48,
    },
    "wan2.2-i2v-a14b": {
        "class": "WanImageToVideoPipeline",
        "transformer_2": True,
        "model_index.boundary_ratio": 0.9,
        "image_encoder": False,
        "transformer.image_dim?": False,
        "transformer.in_channels": 36,  # noisy latents, mask, first (and last) frame
        "model_index.expand_timesteps": False,
    },
    "hunyuanvideo-1.5-i2v": {
        "class": "HunyuanVideo15ImageToVideoPipeline",
        "transformer.task_type": "i2v",
        "transformer.use_meanflow": False,
        "vae.spatial_compression_ratio": 16,
        "vae.temporal_compression_ratio": 4,
        "guider.class": "ClassifierFreeGuidance",
        "image_encoder.class": "SiglipVisionModel",
        "text_encoder.class": "Qwen2_5_VLTextModel",
    },
    "ltx-2": {
        "class": "LTX2ConditionPipeline",
        "transformer.cross_attn_mod": False,  # LTX-2.0: its own cross-timestep and STG block
        "transformer.gated_attn": False,
        "vae.timestep_conditioning": False,
        "vae.spatial_compression_ratio": 32,
        "vae.temporal_compression_ratio": 8,
        "text_encoder.class": "Gemma3ForConditionalGeneration",  # image condition CRF 33
        "audio_vae": True,
        "vocoder": True,
    },
    # diffusers' convert_skyreelsv2_to_diffusers.py: Wan 2.1's text-to-video transformer
    # with the fps embedding on the 1.3B only, the Wan 2.1 VAE (8x, 4x), no image encoder.
    "skyreels-v2-df-1.3b": {
        "class": "SkyReelsV2DiffusionForcingImageToVideoPipeline",
        "transformer.inject_sample_info": True,  # fps=16 and other rates condition apart
        "transformer.num_frame_per_block": 1,  # causal blocks only when asked (ar_step)
        "transformer.in_channels": 16,  # a first frame enters as a clean latent frame
        "transformer.image_dim?": False,
        "transformer.added_kv_proj_dim?": False,
        "image_encoder": False,
        "vae.z_dim": 16,
        "vae.temperal_downsample": [False, True, True],  # 4x temporal, 8x spatial
        "scheduler.use_flow_sigmas": True,
        "scheduler.flow_shift": 8.0,  # SkyReels' DF sampler's; the preset sets 5.0 on load
    },
    "skyreels-v2-df-14b": {
        "class": "SkyReelsV2DiffusionForcingImageToVideoPipeline",
        "transformer.inject_sample_info": False,  # no fps embedding: `fps` changes nothing
        "transformer.num_frame_per_block": 1,
        "transformer.in_channels": 16,
        "transformer.image_dim?": False,
        "transformer.added_kv_proj_dim?": False,
        "image_encoder": False,
        "vae.z_dim": 16,
        "vae.temperal_downsample": [False, True, True],
        "scheduler.use_flow_sigmas": True,
        "scheduler.flow_shift": 8.0,
    },
    # lllyasviel/FramePack_F1_I2V_HY_20250503's transformer config; the rest as
    # hunyuanvideo-community/HunyuanVideo and lllyasviel/flux_redux_bfl publish it.
    "framepack-f1": {
        "class": "HunyuanVideoFramepackPipeline",
        "transformer.has_clean_x_embedder": True,  # history latents at 1x, 2x and 4x
        "transformer.has_image_proj": True,  # SigLIP tokens beside the text
        "transformer.image_condition_type?": False,
        "transformer.guidance_embeds": True,  # guidance-distilled
        "transformer.in_channels": 16,
        "transformer.patch_size": 2,
        "vae.latent_channels": 16,
        "vae.spatial_compression_ratio": 8,
        "vae.temporal_compression_ratio": 4,
        "scheduler.shift": 7.0,
        "scheduler.use_dynamic_shifting": False,
        "text_encoder.class": "LlamaModel",
        "text_encoder_2.class": "CLIPTextModel",
        "image_encoder.class": "SiglipVisionModel",
    },
}

# Presets whose structural switches no twin mirrors yet: their published layout is checked.
NO_TWIN = {"skyreels-v2-df-14b"}  # the 1.3B's twin, with the fps embedding the 14B lacks

MIRRORS = {info.mirrors: name for name, info in TWINS.items() if info.mirrors}


def switch(configs: dict, name: str):
    index = configs["model_index"]
    if name == "class":
        return index["_class_name"]
    component, _, key = name.partition(".")
    if component == "model_index":
        return bool(index.get(key)) if key == "expand_timesteps" else index.get(key)
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
    assert set(SWITCHES) - NO_TWIN <= set(MIRRORS)
    assert not NO_TWIN & set(MIRRORS)


@pytest.mark.parametrize("preset", sorted(SWITCHES))
def test_the_published_layout_has_the_switches(preset):
    configs = pipe_configs(build_fullsize(preset, device="meta", dtype=torch.bfloat16))
    assert {name: switch(configs, name) for name in SWITCHES[preset]} == SWITCHES[preset]


@pytest.mark.parametrize("preset", sorted(set(SWITCHES) - NO_TWIN))
def test_the_twin_has_the_switches(preset):
    configs = twin_configs(MIRRORS[preset])
    assert {name: switch(configs, name) for name in SWITCHES[preset]} == SWITCHES[preset]


def test_the_hunyuanvideo_15_twin_picks_its_size_as_the_preset_does():
    """The twin's buckets are sized around its own small target; the rule is the same."""
    from pipelines.traits import aspect_size

    configs = twin_configs("hunyuanvideo15")
    assert configs["transformer"]["target_size"] == TWINS["hunyuanvideo15"].aspect_target
    assert aspect_size(32, 32, 32, 16) == (32, 32)
    assert aspect_size(640, 1280, 720, 16) == (848, 480) == (
        PRESETS["hunyuanvideo-1.5-i2v"].width, PRESETS["hunyuanvideo-1.5-i2v"].height)  # fmt: skip


@pytest.mark.parametrize("published", [True, False])
def test_ltx_2s_vocoder_says_its_rate_truly(published):
    """Mel frames a second times the vocoder's upsampling is the rate it declares, in the
    published layout and the twin alike: a clip's soundtrack lasts as long as its frames."""
    import math

    configs = (
        pipe_configs(build_fullsize("ltx-2", device="meta", dtype=torch.bfloat16))
        if published
        else twin_configs("ltx2")
    )
    audio, vocoder = configs["audio_vae"], configs["vocoder"]
    mels_a_second = audio["sample_rate"] / audio["mel_hop_length"]
    assert mels_a_second * math.prod(vocoder["upsample_factors"]) == vocoder["output_sampling_rate"]


@pytest.mark.parametrize("published", [True, False])
def test_framepack_reads_its_encoders_at_their_widths(published):
    """The transformer's projections take the widths of the encoders beside it: Llama's
    hidden states, CLIP's pooled output and SigLIP's image tokens."""
    configs = (
        pipe_configs(build_fullsize("framepack-f1", device="meta", dtype=torch.bfloat16))
        if published
        else twin_configs("framepack")
    )
    transformer = configs["transformer"]
    assert transformer["text_embed_dim"] == configs["text_encoder"]["hidden_size"]
    assert transformer["pooled_projection_dim"] == configs["text_encoder_2"]["hidden_size"]
    assert transformer["image_proj_dim"] == configs["image_encoder"]["hidden_size"]
