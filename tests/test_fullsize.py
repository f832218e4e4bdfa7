"""Full-size builds have the published architectures, and really run at their real widths."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.fullsize import FULLSIZE_PRESETS, build_fullsize, parameter_counts
from pipelines.models import PRESETS

M = 10**6
B = 10**9

# Published parameter counts per component. "F32 file" is a published float32 safetensors
# file's size / 4 and "BF16 shards" the published bfloat16 shards' total / 2 (headers are a
# fraction of a MB); sizes as listed on the Hugging Face hub repos named. The two ViT-H/14
# and the OpenCLIP-H text figures are open_clip's published tower sizes, not file sizes.
PUBLISHED: dict[str, dict[str, float]] = {
    "sd-turbo": {
        "unet": 865.9 * M,  # stabilityai/sd-turbo unet F32 file 3.46 GB (SD 2.x UNet)
        # open_clip's ViT-H-14 text tower is 354.0M; SD 2.x drops 1 of its 24 layers (12.6M)
        # and the 1024 x 1024 projection.
        "text_encoder": 340.4 * M,
        "vae": 83.65 * M,  # the SD VAE: sdxl-turbo vae F32 file 334,643,268 B (same layout)
    },
    "sdxl-turbo": {  # stabilityai/sdxl-turbo F32 files, exact byte counts
        "unet": 2.5675 * B,  # 10,270,077,736 B
        "text_encoder": 123.07 * M,  # 492,265,168 B (CLIP ViT-L/14 text)
        "text_encoder_2": 694.68 * M,  # 2,778,702,264 B (OpenCLIP bigG text + projection)
        "vae": 83.66 * M,  # 334,643,268 B
    },
    "flux-schnell": {
        "transformer": 11.89 * B,  # FLUX.1-schnell transformer BF16 shards 9.96+9.95+3.87 GB
        "text_encoder": 123.0 * M,  # the same CLIP-L as distributed as clip_l, FP16 246 MB
        "text_encoder_2": 4.76 * B,  # text_encoder_2 BF16 shards 4.99+4.53 GB (T5 v1.1 XXL)
        "vae": 83.8 * M,  # the original FLUX.1 ae.safetensors, F32 335 MB
    },
    "ltx-video": {
        # ltx-video-2b-v0.9.safetensors (F32 9.37 GB) less its 0.9.0 VAE (F32 1.68 GB).
        "transformer": 1.92 * B,
        "vae": 1.245 * B,  # 0.9.5/0.9.7 VAE (same config): LTX-Video-0.9.7 vae BF16 2.49 GB
        "text_encoder": 4.76 * B,  # T5 v1.1 XXL encoder, as for Flux
    },
    "wan-i2v-480p": {
        # Wan2.1-I2V-14B-480P-Diffusers transformer: 14 F32 shards, about 65.6 GB in all.
        "transformer": 16.4 * B,
        "vae": 127.0 * M,  # Wan2_1_VAE_fp32.safetensors, 508 MB
        "text_encoder": 5.68 * B,  # UMT5-XXL encoder: umt5_xxl_enc_fp32 22.7 GB, bf16 11.4 GB
        # OpenCLIP ViT-H/14 image tower, 632.1M; the repo's CLIPVisionModel has no projection.
        "image_encoder": 631.0 * M,
    },
    "wan-flf2v-720p": {
        "transformer": 16.4 * B,  # the I2V layout plus a 514 x 1280 image position table
        "vae": 127.0 * M,
        "text_encoder": 5.68 * B,
        "image_encoder": 631.0 * M,
    },
    "svd-xt": {
        "unet": 1.525 * B,  # stable-video-diffusion-img2vid-xt unet F32 6.1 GB, FP16 3.05 GB
        "image_encoder": 632.1 * M,  # OpenCLIP ViT-H/14 image tower with projection
    },
    "cogvideox-5b-i2v": {
        # CogVideoX-5b-I2V transformer BF16 shards 4.99+4.99+1.27 GB = 5.625B tensors, of
        # which 54.6M are the learned positional table (a buffer, not a parameter).
        "transformer": 5.57 * B,
        "vae": 215.6 * M,  # vae F32 862 MB
        "text_encoder": 4.76 * B,  # text_encoder BF16 shards 4.99+4.53 GB
    },
}


def rounded(figure: float, step: float) -> tuple[float, float]:
    """A model card's figure given to `step` (\"14B\": 14e9 to the nearest 1e9): the
    tolerance is half a step."""
    return figure, step / 2 / figure


# Published only as a model card's rounded figure: (figure, relative tolerance).
ROUNDED: dict[str, dict[str, tuple[float, float]]] = {
    "wan2.2-ti2v-5b": {
        "transformer": rounded(5 * B, 1 * B),  # "TI2V-5B"
    },
    "wan2.2-i2v-a14b": {  # "A14B": 14B active a step, one expert at a time
        "transformer": rounded(14 * B, 1 * B),
        "transformer_2": rounded(14 * B, 1 * B),
    },
    "hunyuanvideo-1.5-i2v": {
        "transformer": rounded(8.3 * B, 0.1 * B),  # HunyuanVideo-1.5 README: "8.3B"
    },
    "ltx-2": {
        "transformer": rounded(19 * B, 1 * B),  # checkpoint "ltx-2-19b-dev"
        "text_encoder": rounded(12 * B, 1 * B),  # Gemma 3 "12B", vision tower included
    },
    "skyreels-v2-df-14b": {
        "transformer": rounded(14 * B, 1 * B),  # "DF-14B": Wan 2.1 T2V 14B's layout
    },
    "framepack-f1": {
        # FramePack's "13B": HunyuanVideo's transformer plus its history embedders and
        # SigLIP projection.
        "transformer": rounded(13 * B, 1 * B),
        # llava-llama-3-8b's language model without its LM head: "7.5B".
        "text_encoder": rounded(7.5 * B, 0.1 * B),
    },
}
PUBLISHED |= {
    "wan2.2-ti2v-5b": {"text_encoder": 5.68 * B},  # UMT5-XXL encoder, as for Wan 2.1
    "wan2.2-i2v-a14b": {"vae": 127.0 * M, "text_encoder": 5.68 * B},  # the Wan 2.1 VAE
    "hunyuanvideo-1.5-i2v": {},
    "ltx-2": {},
    "skyreels-v2-df-1.3b": {
        # Wan2.1-T2V-1.3B's transformer (wan2.1_t2v_1.3B_fp16 2.84 GB: 1.419B; the "1.3B" of
        # the name undercounts) plus the fps embedding of inject_sample_info: a 2 x 1536 table
        # and a SiLU-gated 1536 -> 1536 -> 9216 projection, 16.5M.
        "transformer": 1.419 * B + 16.5 * M,
        "vae": 127.0 * M,
        "text_encoder": 5.68 * B,
    },
    "skyreels-v2-df-14b": {"vae": 127.0 * M, "text_encoder": 5.68 * B},
    "framepack-f1": {
        "vae": 246.5 * M,  # HunyuanVideo's VAE: hunyuan_video_vae_bf16 493 MB
        "text_encoder_2": 123.07 * M,  # CLIP ViT-L/14 text, as sdxl-turbo's text_encoder
        # lllyasviel/flux_redux_bfl's SigLIP so400m/14-384 vision tower with its pooling head.
        "image_encoder": 428.2 * M,
    },
}

PIPELINES = {
    "sd-turbo": "StableDiffusionPipeline",
    "sdxl-turbo": "StableDiffusionXLPipeline",
    "flux-schnell": "FluxPipeline",
    "ltx-video": "LTXConditionPipeline",
    "wan-i2v-480p": "WanImageToVideoPipeline",
    "wan-flf2v-720p": "WanImageToVideoPipeline",
    "svd-xt": "StableVideoDiffusionPipeline",
    "cogvideox-5b-i2v": "CogVideoXImageToVideoPipeline",
    "wan2.2-ti2v-5b": "WanImageToVideoPipeline",
    "wan2.2-i2v-a14b": "WanImageToVideoPipeline",
    "hunyuanvideo-1.5-i2v": "HunyuanVideo15ImageToVideoPipeline",
    "ltx-2": "LTX2ConditionPipeline",
    "skyreels-v2-df-1.3b": "SkyReelsV2DiffusionForcingImageToVideoPipeline",
    "skyreels-v2-df-14b": "SkyReelsV2DiffusionForcingImageToVideoPipeline",
    "framepack-f1": "HunyuanVideoFramepackPipeline",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _modules(pipe) -> dict[str, torch.nn.Module]:
    return {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


# ---------------------------------------------------------------------------- registry


def test_every_registry_preset_has_a_fullsize_build():
    assert tuple(PRESETS) == FULLSIZE_PRESETS
    assert set(PUBLISHED) == set(PIPELINES) == set(FULLSIZE_PRESETS)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError) as excinfo:
        build_fullsize("sd-tubro")
    assert str(excinfo.value) == (
        "unknown full-size preset 'sd-tubro'; choose one of: sd-turbo, sdxl-turbo, "
        "flux-schnell, ltx-video, wan-i2v-480p, wan-flf2v-720p, svd-xt, cogvideox-5b-i2v, "
        "wan2.2-ti2v-5b, wan2.2-i2v-a14b, hunyuanvideo-1.5-i2v, ltx-2, skyreels-v2-df-1.3b, "
        "skyreels-v2-df-14b, framepack-f1"
    )
    with pytest.raises(ValueError, match="unknown full-size preset"):
        parameter_counts("tiny-ltx")


@pytest.mark.parametrize("layers", [0, -1, 1.5, True])
def test_layers_must_be_a_positive_integer(layers):
    with pytest.raises(ValueError, match="layers"):
        parameter_counts("ltx-video", layers=layers)


def test_dtype_must_be_floating_point():
    with pytest.raises(ValueError, match="floating"):
        build_fullsize("ltx-video", device="meta", dtype=torch.int8)


# ---------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("preset", FULLSIZE_PRESETS)
def test_parameter_counts_match_the_published_models(preset):
    counts = parameter_counts(preset)
    assert set(PUBLISHED[preset]) <= set(counts)
    for component, published in PUBLISHED[preset].items():
        assert counts[component] == pytest.approx(published, rel=0.02), component
    for component, (figure, rel) in ROUNDED.get(preset, {}).items():
        assert counts[component] == pytest.approx(figure, rel=rel), component


def test_layers_caps_depth_and_keeps_widths():
    full, one = parameter_counts("flux-schnell"), parameter_counts("flux-schnell", layers=1)
    assert one["vae"] == full["vae"]  # VAEs are never reduced
    # T5-XXL: one layer (4096 wide, gated FFN 10240, 64 heads) plus the 32128 x 4096 table.
    t5_layer = 4 * 4096 * 4096 + 3 * 4096 * 10240 + 2 * 4096
    assert one["text_encoder_2"] == 32128 * 4096 + 32 * 64 + t5_layer + 4096
    assert full["text_encoder_2"] == one["text_encoder_2"] + 23 * t5_layer
    assert one["transformer"] < full["transformer"] / 20
    # SD 2.1's UNet has one transformer layer per block: nothing to cap. SDXL's 2 and 10 are.
    assert parameter_counts("sd-turbo", layers=1)["unet"] == parameter_counts("sd-turbo")["unet"]
    assert parameter_counts("svd-xt", layers=1)["unet"] == parameter_counts("svd-xt")["unet"]
    sdxl = parameter_counts("sdxl-turbo", layers=2)["unet"]
    assert parameter_counts("sdxl-turbo", layers=1)["unet"] < sdxl < 0.5 * 2.5675 * B
    # A cap at or above the real depth changes nothing.
    assert parameter_counts("wan-i2v-480p", layers=40) == parameter_counts("wan-i2v-480p")


# ---------------------------------------------------------------------------- meta builds


@pytest.mark.parametrize("preset", FULLSIZE_PRESETS)
def test_meta_build_is_the_real_pipeline_in_bfloat16(preset):
    """On the meta device a full build is instant: the whole pipeline, shapes and dtypes."""
    pipe = build_fullsize(preset, device="meta", dtype=torch.bfloat16)
    assert type(pipe).__name__ == PIPELINES[preset]
    modules = _modules(pipe)
    counts = parameter_counts(preset)
    assert set(modules) == set(counts)
    for name, module in modules.items():
        assert sum(p.numel() for p in module.parameters()) == counts[name], name
        assert not module.training
        params = list(module.parameters())
        # Everything on the device, even tensors a module creates on the CPU regardless.
        assert {t.device.type for t in [*params, *module.buffers()]} == {"meta"}, name
        # Only Wan and SkyReels (built on it) keep some parameters (time embedder, norms) in
        # float32 at half precision.
        kept = [p for p in params if p.dtype == torch.float32]
        assert all(p.dtype == torch.bfloat16 for p in params if p.dtype != torch.float32)
        wan = preset.startswith(("wan", "skyreels")) and name in ("transformer", "transformer_2")
        assert bool(kept) == wan, name


def test_half_precision_keeps_what_from_pretrained_keeps_in_float32():
    wan = build_fullsize("wan-i2v-480p", device="meta", dtype=torch.bfloat16)
    embedder = wan.transformer.condition_embedder
    assert embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert embedder.time_proj.weight.dtype == torch.bfloat16
    assert wan.transformer.blocks[0].norm2.weight.dtype == torch.float32
    assert wan.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    # T5's feed-forward output projections stay float32 at float16, not at bfloat16.
    for dtype, wo_dtype in ((torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16)):
        ltx = build_fullsize("ltx-video", device="meta", dtype=dtype)
        ffn = ltx.text_encoder.encoder.block[0].layer[1].DenseReluDense
        assert (ffn.wi_0.weight.dtype, ffn.wo.weight.dtype) == (dtype, wo_dtype)
        assert ltx.text_encoder.shared.weight is ltx.text_encoder.encoder.embed_tokens.weight
        # A parameter created with an explicit float32 is cast, as loading would.
        assert ltx.vae.decoder.timestep_scale_multiplier.dtype == dtype
    cog = build_fullsize("cogvideox-5b-i2v", device="meta", dtype=torch.bfloat16)
    assert cog.transformer.patch_embed.pos_embedding.dtype == torch.bfloat16  # not float64
    assert cog.transformer.patch_embed.pos_embedding.shape == (1, 226 + 13 * 30 * 45, 3072)


def test_build_restores_the_default_dtype():
    before = torch.get_default_dtype()
    build_fullsize("sdxl-turbo", device="meta", dtype=torch.float16)
    assert torch.get_default_dtype() == before


# ---------------------------------------------------------------------------- real builds


@pytest.mark.slow
def test_sd_turbo_runs_at_full_width_and_the_seed_sets_the_weights():
    """The whole SD 2.1 UNet (layers does not shrink it) and a one-layer 1024-wide encoder."""
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    pipe = build_fullsize("sd-turbo", layers=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert pipe.text_encoder.config.num_hidden_layers == 1
    assert pipe.text_encoder.config.hidden_size == 1024
    assert sum(p.numel() for p in pipe.unet.parameters()) == parameter_counts("sd-turbo")["unet"]
    for name, module in _modules(pipe).items():
        assert not module.training, name
        assert {(p.device.type, p.dtype) for p in module.parameters()} == {("cpu", torch.float32)}
    del module  # the UNet: keep no reference past the rebuild below

    images = pipe(
        prompt="a red kite over the dunes",
        width=64,
        height=64,
        num_inference_steps=1,
        guidance_scale=0.0,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()
    assert 0.0 <= images.min() <= images.max() <= 1.0

    picks = {
        "unet": "conv_in.weight",
        "vae": "decoder.conv_out.weight",
        "text_encoder": "embeddings.token_embedding.weight",
    }
    first = {name: pipe.components[name].get_parameter(p).clone() for name, p in picks.items()}
    del pipe, images
    gc.collect()
    again = build_fullsize("sd-turbo", layers=1, seed=0)
    for name, param in picks.items():
        assert torch.equal(again.components[name].get_parameter(param), first[name]), name


@pytest.mark.slow
def test_ltx_video_runs_in_bfloat16_with_its_full_size_vae():
    """A one-layer 2048-wide transformer, a one-layer T5-XXL and the whole 0.9.5 VAE.

    Built in bfloat16 (as a GPU benchmark would) to halve the memory: 3.4 GB of weights.
    """
    pipe = build_fullsize("ltx-video", layers=1, dtype=torch.bfloat16)
    assert pipe.transformer.config.num_layers == 1
    assert pipe.transformer.proj_in.out_features == 2048  # 32 heads of 64
    assert pipe.text_encoder.config.num_layers == 1
    assert sum(p.numel() for p in pipe.vae.parameters()) == parameter_counts("ltx-video")["vae"]
    for module in _modules(pipe).values():
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}

    frames = pipe(
        prompt="a red kite over the dunes",
        image=Image.new("RGB", (32, 32), (200, 40, 90)),
        width=32,
        height=32,
        num_frames=9,
        num_inference_steps=1,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    ).frames
    frames = np.asarray(frames)
    assert frames.shape == (1, 9, 32, 32, 3)
    assert np.isfinite(frames).all()
