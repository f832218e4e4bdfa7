"""Tiny twins: the real diffusers pipelines of every supported layout, shrunk to toy size.

A twin is the genuine pipeline class (``StableDiffusionPipeline``, ``LTXConditionPipeline``, ...)
assembled from tiny configs with seeded random weights and in-memory tokenizers. Nothing is
downloaded and nothing is read from disk, so the engine's whole code path (argument handling,
frame-count rules, dtype rules, save/load) runs offline on a CPU in seconds. The weights are
noise, so the pictures are noise too; only shapes, dtypes, value ranges and determinism mean
anything.

Each twin mirrors one registry preset (``TwinInfo.mirrors``) wherever a published config
switch changes which code runs: the VAE compression ratios (hence the size and frame rules),
LTX 0.9.5's timestep-conditioned VAE, CogVideoX-5B's learned position table over 49 frames,
Wan 2.1's CLIP image encoder (one picture's tokens for I2V, two for FLF2V), Wan 2.2's two
experts and their boundary, SVD's temporal decoder, FLUX-schnell's guidance-free
transformer. ``tests/test_faithful.py`` holds the table of switches and checks both the
published layout (``pipelines.fullsize``) and the twin against it.

How each twin is called (the real pipelines' argument names):

- ``sd``, ``flux``: ``prompt=``; image-to-image through the AutoPipeline's image-to-image
  class over the same components, with ``image=`` and ``strength=``.
- ``svd``: ``image=`` only (no prompt); guidance via ``min_guidance_scale`` /
  ``max_guidance_scale``.
- ``ltx``: ``conditions=[LTXVideoCondition(image=... | video=[...], frame_index=k)]`` (a list
  of images or videos in one condition: one per clip of a batch), plus ``prompt=``.
- ``wan``, ``wan-flf2v``, ``wan22``: ``image=`` (first frame) and, except ``wan``,
  ``last_image=``; ``wan-flf2v`` reads two pictures' tokens, so a call without a last frame
  fails unless the first frame is given twice (the engine's adapter does).
- ``cogvideox``: ``image=`` (first frame), ``prompt=``; 49 frames at 32x32.

Save/load: ``save_pretrained`` then ``from_pretrained`` restores every weight and config
exactly, offline (reloaded outputs can differ in the last float bits: memory-mapped weights
at 4-byte-aligned addresses round differently in CPU convolutions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import diffusers


@dataclass(frozen=True)
class TwinInfo:
    """What the engine may assume about a twin without building it.

    ``name`` is the twin (``tiny-<name>`` on the command line; ``sd`` is ``tiny-image``),
    ``family`` the engine family whose adapter runs it, and ``mirrors`` the registry preset
    whose published config it copies wherever a switch changes code paths (``None``: a
    layout no preset has yet). ``num_frames`` is a count the pipeline returns unchanged.
    For a requested ``n`` the twins return, as the real models do (the rule comes from the
    VAE's temporal compression and the pipeline code, not from the weights):

    - ``sd``, ``flux``: images, no frames.
    - ``svd``: exactly ``n``, for any ``n >= 2``. ``n == 1`` fails inside the pipeline with the
      default guidance: the per-frame ramp from ``min_guidance_scale`` (1.0) to
      ``max_guidance_scale`` collapses to 1.0, switching guidance off after the conditioning
      was already doubled for it.
    - ``ltx``: ``8 * ((n - 1) // 8) + 1``, rounded down to 8k+1 silently (8 -> 1, 10 -> 9,
      16 -> 9, 17 -> 17).
    - ``wan*``: ``4 * (n // 4) + 1`` with a logged warning unless ``n`` is already 4k+1. Not a
      plain round-down: 4k rounds *up* (8 -> 9, 12 -> 13) while 4k+2 and 4k+3 round down
      (10 -> 9, 11 -> 9).
    - ``cogvideox``: with ``L = (n - 1) // 4 + 1`` latent frames, ``4 * L - 3`` when ``L`` is
      odd and ``4 * L`` when ``L`` is even (the VAE decoder keeps the first latent frame apart
      only for odd counts). Its learned position table (CogVideoX-5B image-to-video) is only
      used at its own 49 frames and 32x32; other counts silently get a sin-cos table.

    ``size_multiple`` is the step both width and height must be multiples of.
    """

    name: str
    family: str
    pipeline_class: str
    width: int
    height: int
    num_frames: int | None
    size_multiple: int
    mirrors: str | None
    steps: int = 2


TWINS: dict[str, TwinInfo] = {
    info.name: info
    for info in (
        TwinInfo("sd", "image", "StableDiffusionPipeline", 64, 64, None, 8, "sd-turbo"),
        TwinInfo("flux", "image", "FluxPipeline", 64, 64, None, 16, "flux-schnell"),
        TwinInfo("svd", "svd", "StableVideoDiffusionPipeline", 32, 32, 9, 8, "svd-xt"),
        TwinInfo("ltx", "ltx", "LTXConditionPipeline", 32, 32, 9, 32, "ltx-video"),
        TwinInfo("wan", "wan", "WanImageToVideoPipeline", 32, 32, 9, 16, "wan-i2v-480p"),
        TwinInfo("wan-flf2v", "wan", "WanImageToVideoPipeline", 32, 32, 9, 16, "wan-flf2v-720p"),
        TwinInfo("wan22", "wan", "WanImageToVideoPipeline", 32, 32, 9, 16, None),
        TwinInfo("cogvideox", "cogvideox", "CogVideoXImageToVideoPipeline", 32, 32, 49, 16,
                 "cogvideox-5b-i2v"),
    )
}  # fmt: skip

TWIN_FAMILIES: tuple[str, ...] = tuple(TWINS)  # the twins' names

# Width of every tiny text encoder; the denoisers' text/caption inputs are sized to match.
_TEXT_DIM = 32
# CLIP text models carry a fixed position table; the SD pipeline pads prompts to this length.
_CLIP_MAX_TOKENS = 77


# --------------------------------------------------------------------------------------------
# Helpers


def _seeded(seed: int, factory: Callable[[], Any]) -> Any:
    """Build one module from a freshly seeded RNG and put it in eval mode.

    Seeding per module (not once per pipeline) keeps each module's weights independent of what
    was built before it, and eval mode switches off the text encoders' dropout, without which
    two calls with the same generator would differ.
    """
    import torch

    torch.manual_seed(seed)
    return factory().eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mute the harmless chatter of building modules from configs.

    transformers notes that it falls back to the PIL image processor when torchvision is
    missing; it says so once per process, on the first import of the processor classes, which
    the builders do. Errors still surface.
    """
    # Importing first matters: each library resets its log level when it configures its logger
    # on first import, which would undo a level set beforehand.
    import diffusers
    import transformers

    libraries = (diffusers.logging, transformers.logging)
    levels = [library.get_verbosity() for library in libraries]
    try:
        for library in libraries:
            library.set_verbosity_error()
        yield
    finally:
        for library, level in zip(libraries, levels, strict=True):
            library.set_verbosity(level)


def _clip_tokenizer() -> Any:
    """A CLIP BPE tokenizer whose vocabulary is the 256 byte-level symbols, with no merges.

    Every byte has a token in both its mid-word and end-of-word (``</w>``) form, so any text
    tokenizes, one token per byte, and nothing is ever unknown.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(tokens)},
        merges=[],
        model_max_length=_CLIP_MAX_TOKENS,
    )


def _t5_tokenizer() -> Any:
    """A T5 unigram tokenizer over printable ASCII, word-initial and word-internal forms.

    Characters outside printable ASCII map to ``<unk>`` rather than failing, which is all the
    twins need: they must accept any prompt, not understand it.
    """
    from transformers import T5Tokenizer

    chars = [chr(code) for code in range(33, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [("\u2581" + c, -1.0) for c in chars]
    pieces += [(c, -2.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _t5_encoder(vocab_size: int, *, umt5: bool = False) -> Any:
    """A two-layer T5 (or UMT5, as Wan uses) encoder producing ``_TEXT_DIM``-wide states."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(
        vocab_size=vocab_size,
        d_model=_TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return model_cls(config)


def _image_vae(**overrides: Any) -> Any:
    """An 8x image VAE (four stages, the published compression) at toy width."""
    from diffusers import AutoencoderKL

    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    return AutoencoderKL(**(config | overrides))


def _clip_text_encoder(tokenizer: Any) -> Any:
    """A two-layer CLIP text model over the twin's tokenizer, ``_TEXT_DIM`` wide."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=_CLIP_MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def _clip_image_processor(size: int) -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )


def _svd_scheduler() -> Any:
    """Stable Video Diffusion's published scheduler (EDM-style Karras sigmas, v-prediction)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )


def _wan_scheduler(flow_shift: float) -> Any:
    """Wan's published scheduler: UniPC on flow-matching sigmas, shifted per checkpoint."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=flow_shift,
        num_train_timesteps=1000,
    )


# --------------------------------------------------------------------------------------------
# Builders, one per family. Each returns the assembled pipeline; build_twin finishes it.


def _build_sd(seed: int) -> diffusers.DiffusionPipeline:
    """Stable Diffusion 1.x layout: 8x VAE, cross-attention UNet, CLIP text, PNDM scheduler."""
    from diffusers import (
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    tokenizer = _clip_tokenizer()
    unet = _seeded(
        seed,
        lambda: UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=_TEXT_DIM,
            attention_head_dim=2,
            norm_num_groups=4,
        ),
    )
    vae = _seeded(seed, _image_vae)
    text_encoder = _seeded(seed, lambda: _clip_text_encoder(tokenizer))
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_svd(seed: int) -> diffusers.DiffusionPipeline:
    """Stable Video Diffusion layout: image-only conditioning through a CLIP vision tower.

    The pipeline always resizes the conditioning image to 224 px before the vision encoder, so
    the tower must take 224 px input; a 32 px patch keeps that to 49 tokens. The spatio-temporal
    blocks use 32 normalization groups, which fixes the channel widths at multiples of 32.
    """
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = _seeded(
        seed,
        lambda: UNetSpatioTemporalConditionModel(
            sample_size=4,
            in_channels=8,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=16,
            num_attention_heads=(2, 4),
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=3 * 8,
            num_frames=9,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(32, 32, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            sample_size=32,
        ),
    )
    image_encoder = _seeded(
        seed,
        lambda: CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                image_size=224,
                patch_size=32,
                hidden_size=16,
                projection_dim=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
            )
        ),
    )
    scheduler = _svd_scheduler()
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=_clip_image_processor(224),
    )


def _build_ltx(seed: int) -> diffusers.DiffusionPipeline:
    """LTX-Video 0.9.5 layout: 32x spatial / 8x temporal VAE (4 px patches, three 2x stages)
    whose decoder is timestep-conditioned, and plain flow matching."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )

    tokenizer = _t5_tokenizer()
    transformer = _seeded(
        seed,
        lambda: LTXVideoTransformer3DModel(
            in_channels=8,
            out_channels=8,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=2,
            attention_head_dim=8,
            cross_attention_dim=16,
            num_layers=1,
            caption_channels=_TEXT_DIM,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLLTXVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, True, False),
            decoder_spatio_temporal_scaling=(True, True, True, False),
            decoder_inject_noise=(False,) * 5,
            upsample_residual=(False,) * 4,
            upsample_factor=(1,) * 4,
            patch_size=4,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
            timestep_conditioning=True,  # as LTX 0.9.1+: decoding takes a timestep and noise
        ),
    )
    text_encoder = _seeded(seed, lambda: _t5_encoder(len(tokenizer)))
    # Plain flow matching: LTXConditionPipeline passes its own timesteps (so it cannot serve a
    # dynamically shifting scheduler, which needs ``mu``), and without shifting the sigmas
    # derived from those timesteps stay consistent with them.
    scheduler = FlowMatchEulerDiscreteScheduler()
    return LTXConditionPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )


def _wan_image_encoder() -> Any:
    """Wan 2.1's CLIP vision tower at toy width (224 px input, 32 px patches: 50 tokens)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return CLIPVisionModel(
        CLIPVisionConfig(
            image_size=224,
            patch_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
        )
    )


_WAN_IMAGE_TOKENS = (224 // 32) ** 2 + 1  # patches plus the class token


def _build_wan(seed: int, layout: str) -> diffusers.DiffusionPipeline:
    """The Wan image-to-video layouts, each as published:

    - ``i2v`` (Wan 2.1 I2V 480P): one transformer, a CLIP image encoder whose tokens of one
      picture the transformer cross-attends to (so it cannot take a last frame);
    - ``flf2v`` (Wan 2.1 FLF2V 720P): the same with a learned position on the tokens of two
      pictures, the first and the last frame;
    - ``a14b`` (Wan 2.2 I2V A14B): no image encoder, two experts split at ``boundary_ratio``
      of the training timesteps (``transformer`` above it, ``transformer_2`` below), so even
      a 2-step call runs both; first and last frame reach it through the condition latents.
    """
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel

    tokenizer = _t5_tokenizer()
    image_kv = layout in ("i2v", "flf2v")

    def transformer() -> Any:
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16 + 4 + 16,  # noisy latents, frame mask, condition latents
            out_channels=16,
            text_dim=_TEXT_DIM,
            freq_dim=32,
            ffn_dim=32,
            num_layers=1,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            image_dim=16 if image_kv else None,
            added_kv_proj_dim=24 if image_kv else None,
            pos_embed_seq_len=2 * _WAN_IMAGE_TOKENS if layout == "flf2v" else None,
        )

    vae = _seeded(
        seed,
        lambda: AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        ),
    )
    text_encoder = _seeded(seed, lambda: _t5_encoder(len(tokenizer), umt5=True))
    parts: dict[str, Any] = {"transformer": _seeded(seed, transformer)}
    if image_kv:
        parts["image_encoder"] = _seeded(seed, _wan_image_encoder)
        parts["image_processor"] = _clip_image_processor(224)
    else:
        parts["transformer_2"] = _seeded(seed + 1, transformer)
        parts["boundary_ratio"] = 0.9
    shift = {"i2v": 3.0, "flf2v": 16.0, "a14b": 5.0}[layout]
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=_wan_scheduler(flow_shift=shift),
        **parts,
    )


def _build_cogvideox(seed: int) -> diffusers.DiffusionPipeline:
    """CogVideoX-5B image-to-video layout: RoPE plus a learned position table of its native
    size (here 32x32, 49 frames), so, like the published model, it makes that size only and
    keeps its table only at 49 frames."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )

    tokenizer = _t5_tokenizer()
    transformer = _seeded(
        seed,
        lambda: CogVideoXTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=8,  # noisy latents + image latents
            out_channels=4,
            time_embed_dim=8,
            text_embed_dim=_TEXT_DIM,
            num_layers=1,
            sample_width=4,  # latent units: 32 px through the 8x VAE
            sample_height=4,
            sample_frames=49,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=226,
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=True,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
            sample_height=32,
            sample_width=32,
            scaling_factor=0.7,
        ),
    )
    text_encoder = _seeded(seed, lambda: _t5_encoder(len(tokenizer)))
    scheduler = CogVideoXDDIMScheduler(
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        snr_shift_scale=1.0,
        timestep_spacing="trailing",
    )
    return CogVideoXImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def _build_flux(seed: int) -> diffusers.DiffusionPipeline:
    """FLUX.1-schnell layout: CLIP (pooled) and T5 text, a 16-channel-packed transformer with
    no guidance embedding (schnell is distilled), 8x VAE with a shift factor."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    tokenizer = _clip_tokenizer()
    tokenizer_2 = _t5_tokenizer()
    transformer = _seeded(
        seed,
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels packed 2x2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=_TEXT_DIM,
            pooled_projection_dim=_TEXT_DIM,
            guidance_embeds=False,
            axes_dims_rope=(2, 2, 4),
        ),
    )
    vae = _seeded(
        seed,
        # FLUX's VAE has no quant convs and shifts its latents.
        lambda: _image_vae(use_quant_conv=False, use_post_quant_conv=False,
                           shift_factor=0.1159, scaling_factor=0.3611),
    )  # fmt: skip
    text_encoder = _seeded(seed, lambda: _clip_text_encoder(tokenizer))
    text_encoder_2 = _seeded(seed, lambda: _t5_encoder(len(tokenizer_2)))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


_BUILDERS: dict[str, Callable[[int], diffusers.DiffusionPipeline]] = {
    "sd": _build_sd,
    "flux": _build_flux,
    "svd": _build_svd,
    "ltx": _build_ltx,
    "wan": lambda seed: _build_wan(seed, "i2v"),
    "wan-flf2v": lambda seed: _build_wan(seed, "flf2v"),
    "wan22": lambda seed: _build_wan(seed, "a14b"),
    "cogvideox": _build_cogvideox,
}


def build_twin(family: str, *, seed: int = 0) -> diffusers.DiffusionPipeline:
    """Build the twin pipeline on CPU in float32, every module in eval mode.

    The same ``seed`` gives bit-identical weights, so two twins called with the same generator
    seed return identical frames. The caller's global torch RNG state is left untouched, and
    every call builds a fresh pipeline (nothing is cached here). Progress bars are switched off;
    ``pipe.set_progress_bar_config(disable=False)`` brings them back.
    """
    builder = _BUILDERS.get(family)
    if builder is None:
        raise ValueError(
            f"unknown twin family {family!r}; choose one of: {', '.join(TWIN_FAMILIES)}"
        )
    import torch

    with torch.random.fork_rng(devices=[]), _quiet():
        pipe = builder(seed)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
