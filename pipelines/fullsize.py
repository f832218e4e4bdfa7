"""Full-size twins: every registry preset at its published architecture, with random weights.

A full-size build is the genuine pipeline class (``StableDiffusionPipeline``, ``FluxPipeline``,
``WanImageToVideoPipeline``, ...) assembled from the published configs of each preset's
checkpoint, with seeded random weights and the in-memory tokenizers of :mod:`pipelines.twins`.
Nothing is downloaded and nothing is read from disk, yet every layer has its real width and
depth, so a GPU benchmark measures real speed and real memory, and capacity planning (what
fits on which card, at which size, in which precision) needs no checkpoint at all. The
pictures are noise; only shapes, dtypes, timings and memory are meaningful.

``parameter_counts`` builds the same modules on the meta device (no memory) and counts
parameters per component; ``tests/test_fullsize.py`` holds them to the published figures
(its sources are cited there; the measured table is in ``benchmarks/README.md``).

Where the builds differ from the published checkpoints:

- Tokenizers are the twins' byte-level CLIP and character-level T5 tokenizers (a few hundred
  tokens), and for FramePack the twin's byte-level Llama 3 one, which makes HunyuanVideo's
  system template the same 95 tokens as Llama 3 does. Token ids stay far below every model's
  vocabulary, so embedding tables keep their full published size and sequence lengths keep
  their published padding (77 for CLIP, 226 to 512 for T5); only the tokenization of a
  prompt differs. The CLIP text configs take their
  special-token ids from these tokenizers, so the pooled output is read at the end-of-text
  token as the published models do.
- ``sdxl-turbo`` has no invisible-watermark post-processing (``add_watermarker=False``),
  and ``sd-turbo`` no safety checker.
- Weights are random: a Flux, Wan or CogVideoX denoiser of noise produces noise, but costs
  the same FLOPs and bytes as the real one.

The CogVideoX-5B-I2V transformer has a learned positional table for 49 frames at 720x480
and, like the published model, runs only at that size. The FLF2V transformer expects image
tokens for both a first and a last frame: call it with ``image=`` and ``last_image=``.

Building: every module is constructed directly on ``device`` with ``torch.get_default_dtype``
set to ``dtype`` for the duration, so a 16B transformer is created in bfloat16 on the GPU
with no float32 copy anywhere (peak memory is the final size plus the odd single tensor in
transit). Buffers that a module computes in ``__init__`` (rotary tables, CLIP position ids,
sin-cos tables) are computed for real. Afterwards each module gets what
``from_pretrained(torch_dtype=dtype)`` and ``.to(device)`` would give it: the few tensors
that modules create on the CPU regardless (SVD's ``mix_factor``) moved to ``device``, every
checkpointed floating tensor in ``dtype``, and the parameters a class keeps in float32
(diffusers' ``_keep_in_fp32_modules`` at half precision, e.g. Wan's time embedder and norms;
transformers' ``_keep_in_fp32_modules`` at float16 only, e.g. T5's ``wo`` projections) in
float32. Setting the default dtype is process-global: do not build from two threads at once.
``device="meta"`` builds the whole pipeline instantly without weights, for inspecting
configs, shapes and dtypes.

``tests/test_fullsize.py`` runs sd-turbo (float32) and ltx-video (bfloat16) as one-step
calls of ``layers=1`` builds at 32 to 64 px (build and call times: ``benchmarks/README.md``).

``layers`` caps the number of repeated blocks of every big component while keeping every
width, so a real-width model fits a CPU test:

- DiT transformers (Flux, LTX, Wan, SkyReels, CogVideoX, FramePack): ``num_layers``; Flux
  and FramePack also ``num_single_layers``.
- UNets: ``transformer_layers_per_block`` where it exceeds 1 (SDXL's 2 and 10); the SD 2.1
  and SVD UNets have one transformer layer per block and stay whole, as do ResNet depths.
- Text encoders (CLIP, T5, UMT5, Llama, Qwen, Gemma) and vision towers (CLIP ViT-H, SigLIP):
  their layer counts.
- VAEs: never reduced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .twins import (
    _SKYREELS_DF_SHIFT,
    _clip_image_processor,
    _clip_tokenizer,
    _llama3_tokenizer,
    _quiet,
    _seeded,
    _svd_scheduler,
    _t5_tokenizer,
    _wan_scheduler,
)

if TYPE_CHECKING:
    import diffusers
    import torch

FULLSIZE_PRESETS: tuple[str, ...] = (
    "sd-turbo",
    "sdxl-turbo",
    "flux-schnell",
    "ltx-video",
    "wan-i2v-480p",
    "wan-flf2v-720p",
    "svd-xt",
    "cogvideox-5b-i2v",
    "wan2.2-ti2v-5b",
    "wan2.2-i2v-a14b",
    "hunyuanvideo-1.5-i2v",
    "ltx-2",
    "skyreels-v2-df-1.3b",
    "skyreels-v2-df-14b",
    "framepack-f1",
)


@dataclass
class _Recipe:
    """How to assemble one preset: the pipeline class and a factory per constructor argument.

    ``modules`` are the ``torch.nn.Module`` components, built on the target device in the
    target dtype and counted by ``parameter_counts``; ``parts`` (tokenizers, schedulers, image
    processors) are built on the CPU in float32, as ``from_pretrained`` would; ``fixed`` are
    plain constructor arguments.
    """

    pipeline: str
    modules: dict[str, Callable[[], Any]]
    parts: dict[str, Callable[[], Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)


def _cap(count: int, layers: int | None) -> int:
    return count if layers is None else min(count, layers)


# --------------------------------------------------------------------------------------------
# Shared components


def _clip_text(
    tokenizer: Any,
    *,
    hidden: int,
    layers: int,
    heads: int,
    act: str,
    projection_dim: int,
    with_projection: bool = False,
) -> Any:
    """A CLIP text tower (``CLIPTextModel``, or ``...WithProjection`` for SDXL's second)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _clip_l(tokenizer: Any, layers: int | None) -> Any:
    """OpenAI CLIP ViT-L/14 text tower: SDXL's first encoder and Flux's pooled encoder."""
    return _clip_text(
        tokenizer,
        hidden=768,
        layers=_cap(12, layers),
        heads=12,
        act="quick_gelu",
        projection_dim=768,
    )


def _t5_xxl(layers: int | None, *, umt5: bool = False) -> Any:
    """The T5 v1.1 XXL encoder (google/t5-v1_1-xxl), or UMT5-XXL's (google/umt5-xxl) for Wan.

    Both: d_model 4096, 64 heads of 64, gated-GELU feed-forward of 10240, 24 layers, 32
    relative-position buckets. UMT5 differs in its 256384-token vocabulary and a relative
    position bias in every layer rather than only the first.
    """
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(
        vocab_size=256384 if umt5 else 32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=_cap(24, layers),
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return model_cls(config)


def _vit_h(layers: int | None, *, with_projection: bool) -> Any:
    """OpenCLIP ViT-H/14 image tower (laion2B): 1280 wide, 32 layers, 224 px, 14 px patches."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=_cap(32, layers),
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        hidden_act="gelu",
        projection_dim=1024,
    )
    return (CLIPVisionModelWithProjection if with_projection else CLIPVisionModel)(config)


def _sd_vae(**overrides: Any) -> Any:
    """The Stable Diffusion KL autoencoder layout (8x, 128-256-512-512); overrides per model."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        **overrides,
    )


def _wan_recipe(layers: int | None, *, flow_shift: float, pos_embed_seq_len: int | None) -> _Recipe:
    """Wan 2.1 image-to-video 14B: one transformer with CLIP image cross-attention."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    def transformer() -> Any:
        # Defaults are the 14B layout (40 layers, 40 heads of 128, ffn 13824, text_dim 4096,
        # freq_dim 256, qk rms_norm_across_heads, cross_attn_norm, rope_max_seq_len 1024).
        # Image-to-video adds the image channels, the CLIP projection and per-block image k/v.
        return WanTransformer3DModel(
            in_channels=16 + 4 + 16,  # noisy latents, frame mask, condition latents
            num_layers=_cap(40, layers),
            image_dim=1280,
            added_kv_proj_dim=5120,
            pos_embed_seq_len=pos_embed_seq_len,
        )

    return _Recipe(
        "WanImageToVideoPipeline",
        modules={
            "transformer": transformer,
            # Defaults are the Wan 2.1 VAE (base_dim 96, z_dim 16, dim_mult 1-2-4-4).
            "vae": AutoencoderKLWan,
            "text_encoder": lambda: _t5_xxl(layers, umt5=True),
            "image_encoder": lambda: _vit_h(layers, with_projection=False),
        },
        parts={
            "tokenizer": _t5_tokenizer,
            "image_processor": lambda: _clip_image_processor(224),
            "scheduler": lambda: _wan_scheduler(flow_shift),
        },
        fixed={"transformer_2": None},
    )


# --------------------------------------------------------------------------------------------
# Recipes, one per preset. Each takes ``layers`` and returns factories; nothing is built here.


def _sd_turbo(layers: int | None) -> _Recipe:
    """stabilityai/sd-turbo: the Stable Diffusion 2.1 architecture, distilled for 512 px."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    tokenizer = _clip_tokenizer()

    def unet() -> Any:
        # Defaults give SD's blocks (320-640-1280-1280, CrossAttn x3 + plain, 2 layers each).
        return UNet2DConditionModel(
            sample_size=64,
            attention_head_dim=(5, 10, 20, 20),
            cross_attention_dim=1024,
            use_linear_projection=True,
        )

    return _Recipe(
        "StableDiffusionPipeline",
        modules={
            "unet": unet,
            "vae": lambda: _sd_vae(sample_size=768),
            # OpenCLIP ViT-H/14 text tower without its last layer, as SD 2.x ships it.
            "text_encoder": lambda: _clip_text(
                tokenizer,
                hidden=1024,
                layers=_cap(23, layers),
                heads=16,
                act="gelu",
                projection_dim=512,
            ),
        },
        parts={
            "tokenizer": lambda: tokenizer,
            "scheduler": lambda: EulerDiscreteScheduler(
                beta_start=0.00085,
                beta_end=0.012,
                beta_schedule="scaled_linear",
                steps_offset=1,
                timestep_spacing="trailing",
            ),
        },
        fixed={"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
    )


def _sdxl_turbo(layers: int | None) -> _Recipe:
    """stabilityai/sdxl-turbo: the SDXL base architecture, distilled for 512 px."""
    from diffusers import EulerAncestralDiscreteScheduler, UNet2DConditionModel

    tokenizer, tokenizer_2 = _clip_tokenizer(), _clip_tokenizer()

    def unet() -> Any:
        return UNet2DConditionModel(
            sample_size=64,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, _cap(2, layers), _cap(10, layers)),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,  # 1280 pooled + 6 x 256 time ids
        )

    return _Recipe(
        "StableDiffusionXLPipeline",
        modules={
            "unet": unet,
            "vae": lambda: _sd_vae(sample_size=1024, scaling_factor=0.13025),
            "text_encoder": lambda: _clip_l(tokenizer, layers),
            # OpenCLIP ViT-bigG/14 text tower with its projection.
            "text_encoder_2": lambda: _clip_text(
                tokenizer_2,
                hidden=1280,
                layers=_cap(32, layers),
                heads=20,
                act="gelu",
                projection_dim=1280,
                with_projection=True,
            ),
        },
        parts={
            "tokenizer": lambda: tokenizer,
            "tokenizer_2": lambda: tokenizer_2,
            "scheduler": lambda: EulerAncestralDiscreteScheduler(
                beta_start=0.00085,
                beta_end=0.012,
                beta_schedule="scaled_linear",
                steps_offset=1,
                timestep_spacing="trailing",
            ),
        },
        fixed={"add_watermarker": False},
    )


def _flux_schnell(layers: int | None) -> _Recipe:
    """black-forest-labs/FLUX.1-schnell: 12B rectified-flow transformer, CLIP-L + T5-XXL."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    tokenizer = _clip_tokenizer()

    def transformer() -> Any:
        # Defaults are FLUX.1-schnell (19 double + 38 single blocks, 24 heads of 128, joint
        # attention 4096, pooled 768, no guidance embedding, rope axes 16-56-56).
        return FluxTransformer2DModel(
            num_layers=_cap(19, layers), num_single_layers=_cap(38, layers)
        )

    return _Recipe(
        "FluxPipeline",
        modules={
            "transformer": transformer,
            "vae": lambda: _sd_vae(
                sample_size=1024,
                latent_channels=16,
                scaling_factor=0.3611,
                shift_factor=0.1159,
                use_quant_conv=False,
                use_post_quant_conv=False,
            ),
            "text_encoder": lambda: _clip_l(tokenizer, layers),
            "text_encoder_2": lambda: _t5_xxl(layers),
        },
        parts={
            "tokenizer": lambda: tokenizer,
            "tokenizer_2": _t5_tokenizer,
            # Defaults are schnell's: shift 1.0, no dynamic shifting.
            "scheduler": FlowMatchEulerDiscreteScheduler,
        },
    )


def _ltx_video(layers: int | None) -> _Recipe:
    """Lightricks/LTX-Video-0.9.5: the 2B transformer with the 0.9.5 VAE."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXVideoTransformer3DModel,
    )

    def vae() -> Any:
        # The 0.9.5 VAE (diffusers' convert_ltx_to_diffusers.py): a wider, deeper encoder with
        # separate spatial/temporal downsampling, and a timestep-conditioned decoder with
        # residual depth-to-space upsampling and no noise injection.
        return AutoencoderKLLTXVideo(
            block_out_channels=(128, 256, 512, 1024, 2048),
            down_block_types=("LTXVideo095DownBlock3D",) * 4,
            decoder_block_out_channels=(256, 512, 1024),
            layers_per_block=(4, 6, 6, 2, 2),
            decoder_layers_per_block=(5, 5, 5, 5),
            spatio_temporal_scaling=(True, True, True, True),
            decoder_spatio_temporal_scaling=(True, True, True),
            decoder_inject_noise=(False, False, False, False),
            downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
            upsample_residual=(True, True, True),
            upsample_factor=(2, 2, 2),
            timestep_conditioning=True,
            spatial_compression_ratio=32,
            temporal_compression_ratio=8,
        )

    return _Recipe(
        "LTXConditionPipeline",
        modules={
            # Defaults are the 2B transformer (28 layers, 32 heads of 64, cross-attention 2048,
            # captions 4096), which 0.9.0 to 0.9.5 share.
            "transformer": lambda: LTXVideoTransformer3DModel(num_layers=_cap(28, layers)),
            "vae": vae,
            "text_encoder": lambda: _t5_xxl(layers),
        },
        parts={
            "tokenizer": _t5_tokenizer,
            # 0.9.5 ships plain flow matching (no dynamic shifting): the defaults.
            "scheduler": FlowMatchEulerDiscreteScheduler,
        },
    )


def _wan_i2v_480p(layers: int | None) -> _Recipe:
    """Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (flow shift 3.0, as converted)."""
    return _wan_recipe(layers, flow_shift=3.0, pos_embed_seq_len=None)


def _wan_flf2v_720p(layers: int | None) -> _Recipe:
    """Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers: a learned position table over 2 x 257 image
    tokens (first and last frame), flow shift 16.0."""
    return _wan_recipe(layers, flow_shift=16.0, pos_embed_seq_len=2 * 257)


def _svd_xt(layers: int | None) -> _Recipe:
    """stabilityai/stable-video-diffusion-img2vid-xt: 25-frame image-to-video UNet."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        UNetSpatioTemporalConditionModel,
    )

    return _Recipe(
        "StableVideoDiffusionPipeline",
        modules={
            # Defaults are SVD's UNet (320-640-1280-1280, heads 5-10-20-20, cross-attention
            # 1024, 25 frames); the checkpoint adds only its 96-latent (768 px) sample size.
            "unet": lambda: UNetSpatioTemporalConditionModel(sample_size=96),
            "vae": lambda: AutoencoderKLTemporalDecoder(
                down_block_types=("DownEncoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512),
                layers_per_block=2,
                sample_size=768,
            ),
            "image_encoder": lambda: _vit_h(layers, with_projection=True),
        },
        parts={
            "feature_extractor": lambda: _clip_image_processor(224),
            "scheduler": _svd_scheduler,
        },
    )


def _cogvideox_5b_i2v(layers: int | None) -> _Recipe:
    """THUDM/CogVideoX-5b-I2V: 5B transformer, RoPE plus a learned 720x480 position table."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXTransformer3DModel,
    )

    def transformer() -> Any:
        # Defaults cover the rest (heads of 64, time embedding 512, text 4096, patch 2,
        # 49 frames at 60x90 latents, 226 text tokens).
        return CogVideoXTransformer3DModel(
            num_attention_heads=48,
            num_layers=_cap(42, layers),
            in_channels=16 + 16,  # noisy latents + image latents
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=True,
        )

    return _Recipe(
        "CogVideoXImageToVideoPipeline",
        modules={
            "transformer": transformer,
            # Defaults are the CogVideoX VAE; the 5B models scale latents by 0.7.
            "vae": lambda: AutoencoderKLCogVideoX(scaling_factor=0.7),
            "text_encoder": lambda: _t5_xxl(layers),
        },
        parts={
            "tokenizer": _t5_tokenizer,
            "scheduler": lambda: CogVideoXDDIMScheduler(
                clip_sample=False,
                prediction_type="v_prediction",
                rescale_betas_zero_snr=True,
                snr_shift_scale=1.0,
                timestep_spacing="trailing",
            ),
        },
    )


def _wan22_ti2v_5b(layers: int | None) -> _Recipe:
    """Wan-AI/Wan2.2-TI2V-5B-Diffusers: a 5B transformer over the 48-channel latents of the
    Wan 2.2 VAE (16x spatial with 2x2 patches, residual), the first frame as the clean first
    latent frame (``expand_timesteps``), no image encoder."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    def vae() -> Any:
        # Wan2.2_VAE: base 160 (decoder 256), 48 latents. The published per-channel latent
        # statistics are not architecture: zeros and ones here.
        return AutoencoderKLWan(
            base_dim=160, decoder_base_dim=256, z_dim=48, in_channels=12, out_channels=12,
            is_residual=True, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
            latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
        )  # fmt: skip

    return _Recipe(
        "WanImageToVideoPipeline",
        modules={
            "transformer": lambda: WanTransformer3DModel(
                in_channels=48,
                out_channels=48,
                num_attention_heads=24,
                ffn_dim=14336,
                num_layers=_cap(30, layers),
            ),  # fmt: skip
            "vae": vae,
            "text_encoder": lambda: _t5_xxl(layers, umt5=True),
        },
        parts={"tokenizer": _t5_tokenizer, "scheduler": lambda: _wan_scheduler(5.0)},
        fixed={
            "transformer_2": None,
            "image_encoder": None,
            "image_processor": None,
            "expand_timesteps": True,
        },  # fmt: skip
    )


def _wan22_i2v_a14b(layers: int | None) -> _Recipe:
    """Wan-AI/Wan2.2-I2V-A14B-Diffusers: two 14B experts (high noise above the boundary,
    low noise below), the image by channel concatenation (no CLIP), the Wan 2.1 VAE."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    def expert() -> Any:  # the 14B defaults; image-to-video's 36 input channels
        return WanTransformer3DModel(in_channels=16 + 4 + 16, num_layers=_cap(40, layers))

    return _Recipe(
        "WanImageToVideoPipeline",
        modules={
            "transformer": expert,
            "transformer_2": expert,
            "vae": AutoencoderKLWan,
            "text_encoder": lambda: _t5_xxl(layers, umt5=True),
        },
        # flow shift 3.0 as converted (Wan 2.2's own sampler uses 5.0).
        parts={"tokenizer": _t5_tokenizer, "scheduler": lambda: _wan_scheduler(3.0)},
        fixed={"image_encoder": None, "image_processor": None, "boundary_ratio": 0.9},
    )


def _qwen25_vl_7b_text(layers: int | None) -> Any:
    """Qwen2.5-VL-7B-Instruct's language model (no vision tower, no LM head), HunyuanVideo
    1.5's text encoder: 3584 wide, 28 layers, 28 heads over 4 key/value heads."""
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    return Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944,
            num_hidden_layers=_cap(28, layers), num_attention_heads=28,
            num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
            rope_scaling={"type": "mrope", "rope_type": "default",
                          "mrope_section": [16, 24, 24]},
            rope_theta=1000000.0, bos_token_id=None, eos_token_id=None,
        )
    )  # fmt: skip


def _siglip_so400m(layers: int | None, image_size: int) -> Any:
    """SigLIP so400m/14 vision tower (1152 wide, 27 layers) at `image_size` px."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    return SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=_cap(27, layers),
            num_attention_heads=16, image_size=image_size, patch_size=14,
        )
    )  # fmt: skip


def _hunyuanvideo15_i2v(layers: int | None) -> _Recipe:
    """hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v: the 8.3B transformer
    (task i2v, target size 640), the 16x/4x VAE, Qwen2.5-VL-7B text, byT5-small glyph text
    (Glyph-SDXL-v2), SigLIP so400m/14 at 384 px (729 image tokens), CFG 6 through its guider."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import ByT5Tokenizer, SiglipImageProcessor, T5Config, T5EncoderModel

    def byt5() -> Any:  # google/byt5-small's encoder
        return T5EncoderModel(T5Config(
            vocab_size=384, d_model=1472, d_kv=64, d_ff=3584, num_layers=_cap(12, layers),
            num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        ))  # fmt: skip

    from .twins import _qwen_tokenizer

    return _Recipe(
        "HunyuanVideo15ImageToVideoPipeline",
        modules={
            "transformer": lambda: HunyuanVideo15Transformer3DModel(
                num_layers=_cap(54, layers), target_size=640, task_type="i2v"
            ),
            "vae": AutoencoderKLHunyuanVideo15,
            "text_encoder": lambda: _qwen25_vl_7b_text(layers),
            "text_encoder_2": byt5,
            "image_encoder": lambda: _siglip_so400m(layers, 384),
        },
        parts={
            "tokenizer": _qwen_tokenizer,
            "tokenizer_2": ByT5Tokenizer,
            "scheduler": lambda: FlowMatchEulerDiscreteScheduler(shift=5.0),
            "guider": lambda: ClassifierFreeGuidance(guidance_scale=6.0),
            "feature_extractor": lambda: SiglipImageProcessor(size={"height": 384, "width": 384}),
        },
    )


def _gemma3_12b(layers: int | None) -> Any:
    """google/gemma-3-12b: 3840 wide, 48 layers (16 heads of 256 over 8 key/value heads),
    a 262k vocabulary, and its SigLIP so400m/14 vision tower at 896 px; LTX-2 reads the
    hidden states of every layer as its prompt."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    text = Gemma3TextConfig(
        vocab_size=262208, hidden_size=3840, intermediate_size=15360,
        num_hidden_layers=_cap(48, layers), num_attention_heads=16, num_key_value_heads=8,
        head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
        max_position_embeddings=131072, rope_theta=1000000.0,
    )  # fmt: skip
    vision = SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=_cap(27, layers),
        num_attention_heads=16, image_size=896, patch_size=14, vision_use_head=False,
    )  # fmt: skip
    return Gemma3ForConditionalGeneration(
        Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256)
    )


def _ltx_2(layers: int | None) -> _Recipe:
    """Lightricks/LTX-2 (2.0): the 19B audio-video transformer (48 layers; video 32 heads of
    128, audio 32 of 64), text connectors over Gemma 3 12B's 49 hidden states, the 32x/8x
    video VAE, the audio VAE (16 kHz mels) and the vocoder (24 kHz stereo)."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder

    from .twins import _gemma_tokenizer

    depth = _cap(48, layers)
    return _Recipe(
        "LTX2ConditionPipeline",
        modules={
            # Defaults are LTX-2.0's but for what diffusers' conversion sets.
            "transformer": lambda: LTX2VideoTransformer3DModel(
                num_layers=depth, gated_attn=False, cross_attn_mod=False,
                audio_gated_attn=False, audio_cross_attn_mod=False, caption_channels=3840,
                rope_double_precision=True, rope_type="split",
            ),
            "connectors": lambda: LTX2TextConnectors(
                caption_channels=3840, text_proj_in_factor=depth + 1,
                video_connector_num_attention_heads=30, video_connector_attention_head_dim=128,
                video_connector_num_layers=2, video_connector_num_learnable_registers=128,
                audio_connector_num_attention_heads=30, audio_connector_attention_head_dim=128,
                audio_connector_num_layers=2, audio_connector_num_learnable_registers=128,
                connector_rope_base_seq_len=4096, rope_double_precision=True,
                rope_type="split", per_modality_projections=False, proj_bias=False,
            ),
            "vae": lambda: AutoencoderKLLTX2Video(
                decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8
            ),
            "audio_vae": lambda: AutoencoderKLLTX2Audio(
                base_channels=128, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=2,
                attn_resolutions=None, in_channels=2, resolution=256, latent_channels=8,
                norm_type="pixel", causality_axis="height", dropout=0.0,
                mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160,
                is_causal=True, mel_bins=64, double_z=True,
            ),
            "vocoder": lambda: LTX2Vocoder(
                in_channels=128, hidden_channels=1024, out_channels=2,
                upsample_kernel_sizes=[16, 15, 8, 4, 4], upsample_factors=[6, 5, 2, 2, 2],
                resnet_kernel_sizes=[3, 7, 11], resnet_dilations=[[1, 3, 5]] * 3,
                act_fn="leaky_relu", leaky_relu_negative_slope=0.1, antialias=False,
                final_act_fn="tanh", final_bias=True, output_sampling_rate=24000,
            ),
            "text_encoder": lambda: _gemma3_12b(layers),
        },
        parts={
            "tokenizer": _gemma_tokenizer,
            "scheduler": lambda: FlowMatchEulerDiscreteScheduler(
                use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1,
            ),
        },
    )  # fmt: skip


def _skyreels_df(layers: int | None, *, heads: int, ffn: int, depth: int, fps: bool) -> _Recipe:
    """A SkyReels-V2 diffusion-forcing checkpoint (diffusers' convert_skyreelsv2_to_diffusers.py):
    Wan 2.1's text-to-video transformer (heads of 128, text 4096, 16 input channels, no image
    encoder), with the fps embedding where ``fps`` (``inject_sample_info``: the 1.3B only),
    one frame per causal block; the Wan 2.1 VAE and UMT5-XXL."""
    from diffusers import AutoencoderKLWan, SkyReelsV2Transformer3DModel

    return _Recipe(
        "SkyReelsV2DiffusionForcingImageToVideoPipeline",
        modules={
            "transformer": lambda: SkyReelsV2Transformer3DModel(
                num_attention_heads=heads, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=ffn,
                num_layers=_cap(depth, layers), cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
                added_kv_proj_dim=None, inject_sample_info=fps, num_frame_per_block=1,
            ),
            "vae": AutoencoderKLWan,
            "text_encoder": lambda: _t5_xxl(layers, umt5=True),
        },
        parts={"tokenizer": _t5_tokenizer, "scheduler": lambda: _wan_scheduler(_SKYREELS_DF_SHIFT)},
    )  # fmt: skip


def _skyreels_v2_df_1_3b(layers: int | None) -> _Recipe:
    """Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers: 30 layers, 12 heads, ffn 8960, fps embedding."""
    return _skyreels_df(layers, heads=12, ffn=8960, depth=30, fps=True)


def _skyreels_v2_df_14b(layers: int | None) -> _Recipe:
    """Skywork/SkyReels-V2-DF-14B-540P-Diffusers: 40 layers, 40 heads, ffn 13824, no fps
    embedding (its ``fps`` argument changes nothing)."""
    return _skyreels_df(layers, heads=40, ffn=13824, depth=40, fps=False)


def _llama3_8b_text(layers: int | None) -> Any:
    """HunyuanVideo's text encoder, the language model of xtuner/llava-llama-3-8b-v1_1 (Llama 3
    8B: 4096 wide, 32 layers, 32 heads over 8 key/value heads, 128320 tokens), no LM head."""
    from transformers import LlamaConfig, LlamaModel

    return LlamaModel(LlamaConfig(
        vocab_size=128320, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=_cap(32, layers), num_attention_heads=32, num_key_value_heads=8,
        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
    ))  # fmt: skip


def _framepack_f1(layers: int | None) -> _Recipe:
    """FramePack F1 as diffusers composes it: lllyasviel/FramePack_F1_I2V_HY_20250503's
    transformer (HunyuanVideo's 20 dual- and 40 single-stream blocks of 24 heads of 128, plus
    the clean-latent embedders and a SigLIP projection), the rest of
    hunyuanvideo-community/HunyuanVideo (its VAE, Llama 3 8B and CLIP-L text, shift 7) and
    lllyasviel/flux_redux_bfl's SigLIP so400m/14 at 384 px (729 image tokens)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackTransformer3DModel,
    )
    from transformers import SiglipImageProcessor

    tokenizer_2 = _clip_tokenizer()
    return _Recipe(
        "HunyuanVideoFramepackPipeline",
        modules={
            # Defaults are HunyuanVideo's (text 4096, pooled 768, rope axes 16-56-56).
            "transformer": lambda: HunyuanVideoFramepackTransformer3DModel(
                num_layers=_cap(20, layers), num_single_layers=_cap(40, layers),
                image_condition_type=None, has_image_proj=True, image_proj_dim=1152,
                has_clean_x_embedder=True,
            ),
            "vae": AutoencoderKLHunyuanVideo,  # defaults: HunyuanVideo's 8x/4x, 16 latents
            "text_encoder": lambda: _llama3_8b_text(layers),
            "text_encoder_2": lambda: _clip_l(tokenizer_2, layers),
            "image_encoder": lambda: _siglip_so400m(layers, 384),
        },
        parts={
            "tokenizer": _llama3_tokenizer,
            "tokenizer_2": lambda: tokenizer_2,
            "scheduler": lambda: FlowMatchEulerDiscreteScheduler(shift=7.0),
            "feature_extractor": lambda: SiglipImageProcessor(size={"height": 384, "width": 384}),
        },
    )  # fmt: skip


_RECIPES: dict[str, Callable[[int | None], _Recipe]] = {
    "sd-turbo": _sd_turbo,
    "sdxl-turbo": _sdxl_turbo,
    "flux-schnell": _flux_schnell,
    "ltx-video": _ltx_video,
    "wan-i2v-480p": _wan_i2v_480p,
    "wan-flf2v-720p": _wan_flf2v_720p,
    "svd-xt": _svd_xt,
    "cogvideox-5b-i2v": _cogvideox_5b_i2v,
    "wan2.2-ti2v-5b": _wan22_ti2v_5b,
    "wan2.2-i2v-a14b": _wan22_i2v_a14b,
    "hunyuanvideo-1.5-i2v": _hunyuanvideo15_i2v,
    "ltx-2": _ltx_2,
    "skyreels-v2-df-1.3b": _skyreels_v2_df_1_3b,
    "skyreels-v2-df-14b": _skyreels_v2_df_14b,
    "framepack-f1": _framepack_f1,
}


# --------------------------------------------------------------------------------------------
# Building


def _recipe(preset: str, layers: int | None) -> _Recipe:
    recipe_fn = _RECIPES.get(preset)
    if recipe_fn is None:
        raise ValueError(
            f"unknown full-size preset {preset!r}; choose one of: {', '.join(FULLSIZE_PRESETS)}"
        )
    if layers is not None and (
        isinstance(layers, bool) or not isinstance(layers, int) or layers < 1
    ):
        raise ValueError(f"layers must be a positive integer or None, not {layers!r}")
    return recipe_fn(layers)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _fork_rng(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Leave the caller's RNG state alone: the CPU's, and the target accelerator's."""
    import torch

    if device.type in ("cpu", "meta"):
        return torch.random.fork_rng(devices=[])
    index = device.index
    if index is None:
        current = getattr(getattr(torch, device.type, None), "current_device", None)
        index = current() if current is not None else 0
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def _as_loaded(module: Any, device: torch.device, dtype: torch.dtype) -> None:
    """Give ``module`` the devices and dtypes ``from_pretrained(torch_dtype=dtype)`` would.

    Everything goes to ``device``: a few tensors are created on the CPU whatever the default
    device (SVD's ``mix_factor`` parameters use the legacy ``torch.Tensor`` constructor).
    Loading casts every checkpointed floating tensor (parameters and persistent buffers) to
    ``dtype``, including the few a class creates with an explicit dtype (LTX's float32
    ``timestep_scale_multiplier``, CogVideoX's float64 positional table); buffers computed at
    runtime keep theirs. Tensors under a submodule the class keeps in float32 become float32:
    diffusers keeps its ``_keep_in_fp32_modules`` for float16 and bfloat16, transformers its
    ``_keep_in_fp32_modules`` for float16 only and its ``_keep_in_fp32_modules_strict`` for
    both.
    """
    import torch

    half = dtype in (torch.float16, torch.bfloat16)
    keep: set[str] = set()
    if half and hasattr(module, "_keep_in_fp32_modules_strict"):  # transformers
        keep |= set(module._keep_in_fp32_modules_strict or ())
        if dtype == torch.float16:
            keep |= set(module._keep_in_fp32_modules or ())
    elif half:  # diffusers
        keep |= set(getattr(module, "_keep_in_fp32_modules", None) or ())

    moved: dict[int, torch.nn.Parameter] = {}  # tied parameters stay tied
    with torch.no_grad():
        for prefix, sub in module.named_modules():
            path = set(prefix.split(".")) if prefix else set()
            for name, param in sub.named_parameters(recurse=False):
                target = param.dtype
                if param.is_floating_point():
                    target = torch.float32 if (path | {name}) & keep else dtype
                if param.device.type == device.type:
                    param.data = param.data.to(device=device, dtype=target)
                elif id(param) not in moved:  # .data cannot change the device type
                    data = param.data.to(device=device, dtype=target)
                    moved[id(param)] = torch.nn.Parameter(data, param.requires_grad)
                if id(param) in moved:
                    sub._parameters[name] = moved[id(param)]
            for name, buffer in sub.named_buffers(recurse=False):
                target = buffer.dtype
                if buffer.is_floating_point() and (path | {name}) & keep:
                    target = torch.float32
                elif buffer.is_floating_point() and name not in sub._non_persistent_buffers_set:
                    target = dtype
                sub._buffers[name] = buffer.to(device=device, dtype=target)


def build_fullsize(
    preset: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    layers: int | None = None,
    seed: int = 0,
) -> diffusers.DiffusionPipeline:
    """Build ``preset``'s pipeline at full published size with seeded random weights.

    Every module is created directly on ``device`` in ``dtype`` (float32 when None) and put in
    eval mode; tokenizers, schedulers and image processors are the same on every device. The
    same ``seed`` on the same device gives identical weights; the caller's RNG state (CPU and
    the target accelerator) is left untouched. ``layers`` caps the repeated blocks of every big
    component (see the module docstring). Progress bars are off. Raises ``ValueError`` for an
    unknown preset, a ``layers`` below 1 or a non-floating ``dtype``.
    """
    import diffusers
    import torch

    recipe = _recipe(preset, layers)
    target = torch.device(device)
    dtype = torch.float32 if dtype is None else dtype
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, not {dtype}")

    with _fork_rng(target), _quiet():
        with _default_dtype(dtype), target:
            modules = {name: _seeded(seed, factory) for name, factory in recipe.modules.items()}
        for module in modules.values():
            _as_loaded(module, target, dtype)
        parts = {name: factory() for name, factory in recipe.parts.items()}
        pipe = getattr(diffusers, recipe.pipeline)(**modules, **parts, **recipe.fixed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(preset: str, layers: int | None = None) -> dict[str, int]:
    """Parameters per module component of ``preset``, built on the meta device.

    Instant and allocation-free: no weights exist, only shapes. Keys are the pipeline's
    component names (``unet`` or ``transformer``, ``vae``, ``text_encoder``, ...), in build
    order. Buffers, such as CogVideoX-5B-I2V's learned positional table, are not counted.
    """
    import torch

    recipe = _recipe(preset, layers)
    with _quiet(), torch.device("meta"):
        return {
            name: sum(p.numel() for p in factory().parameters())
            for name, factory in recipe.modules.items()
        }
