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
Wan 2.1's CLIP image encoder (one picture's tokens for I2V, two for FLF2V), Wan 2.2 A14B's
two experts and their boundary, Wan 2.2 TI2V's 16x VAE and expanded timesteps, HunyuanVideo
1.5's image-to-video transformer and its aspect buckets, LTX-2.0's transformer (no
cross-attention modulation) and its audio path, SkyReels-V2 DF-1.3B's fps embedding and
image-encoder-free 16-channel transformer, FramePack F1's history-latent embedders, SigLIP
image projection and Llama 3 prompt template, SVD's temporal decoder, FLUX-schnell's
guidance-free transformer. ``tests/test_faithful.py`` holds the table of switches and checks both the
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
- ``wan22-ti2v``: ``image=``, ``prompt=``; sizes on multiples of 32 (``last_image=`` is
  accepted and ignored, as by the published model).
- ``hunyuanvideo15``: ``image=`` (a PIL picture), ``prompt=``; no ``height``/``width`` (the
  size is the aspect bucket of the picture: 32x32 for a square one) and no
  ``guidance_scale`` (``pipe.guider = pipe.guider.new(guidance_scale=...)``); no step
  callbacks.
- ``ltx2``: ``conditions=[LTX2VideoCondition(frames=image | [frames], index=0)]`` and
  ``frame_rate=``; 64x64 by default (its 32x VAE's reflect-padded decoder needs 2x2
  latents); the output has ``.audio``, a (batch, 2, samples) waveform at the vocoder's
  ``output_sampling_rate``. One generator and one set of conditions serve a whole batch.
- ``skyreels-df``: ``image=`` (first frame), ``prompt=``, ``fps=`` (only 16 and anything else
  are told apart: the fps embedding has two rows); ``base_num_frames`` defaults to 97, so a
  longer ``num_frames`` needs ``overlap_history=``. Continuing from frames is
  ``SkyReelsV2DiffusionForcingVideoToVideoPipeline(**pipe.components)`` with ``video=[frames]``,
  ``overlap_history=`` (how many of the last given frames condition the window) and
  ``base_num_frames=``; its output is the given frames followed by ``num_frames`` new ones,
  the first ``overlap_history`` of which re-decode the given frames' tail. Passing
  ``causal_block_size=`` rewrites ``transformer.config.num_frame_per_block`` for good.
- ``framepack``: ``image=``, ``prompt=``, ``latent_window_size=`` (9 as published) and
  ``sampling_type="vanilla"`` (F1 predicts forward; the default ``"inverted_anti_drifting"``
  is the original FramePack's); ``guidance_scale`` is the distilled guidance embedding
  (classifier-free guidance only with ``true_cfg_scale > 1`` and a negative prompt). Its
  prompt goes through Llama 3's system template, whose 95 tokens ``crop_start`` removes: the
  twin's tokenizer makes exactly 95 of them too. Right padding is required (the transformer
  keeps the first ``sum(mask)`` text tokens of a one-prompt batch).

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
    layout no preset has yet). ``num_frames`` is a count the pipeline returns unchanged
    (but for ``framepack``, see below).
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
    - ``hunyuanvideo15``: ``4 * ((n - 1) // 4) + 1``, silently; ``ltx2``:
      ``8 * ((n - 1) // 8) + 1``, silently; ``skyreels-df``: as ``wan*``.
    - ``framepack`` (either sampling type): whole sections of ``4 * w`` frames (``w`` the
      ``latent_window_size``) after the first frame, ``4 * w * k + 1`` for
      ``k = ceil(n / (4 * (w - 1) + 1))`` sections. They are counted in windows of
      ``4 * (w - 1) + 1`` frames (33 for ``w = 9``) but each adds ``4 * w`` (36), so no count
      comes back unchanged: 1 to 33 give 37, 34 to 66 give 73. Its ``num_frames`` here is what
      one section returns.
    - ``cogvideox``: with ``L = (n - 1) // 4 + 1`` latent frames, ``4 * L - 3`` when ``L`` is
      odd and ``4 * L`` when ``L`` is even (the VAE decoder keeps the first latent frame apart
      only for odd counts). Its learned position table (CogVideoX-5B image-to-video) is only
      used at its own 49 frames and 32x32; other counts silently get a sin-cos table.

    ``size_multiple`` is the step both width and height must be multiples of;
    ``aspect_target`` (HunyuanVideo 1.5) the side its aspect buckets are sized around.
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
    aspect_target: int = 0  # makes one size per aspect ratio, about this many px a side


TWINS: dict[str, TwinInfo] = {
    info.name: info
    for info in (
        TwinInfo("sd", "image", "StableDiffusionPipeline", 64, 64, None, 8, "sd-turbo"),
        TwinInfo("flux", "image", "FluxPipeline", 64, 64, None, 16, "flux-schnell"),
        TwinInfo("svd", "svd", "StableVideoDiffusionPipeline", 32, 32, 9, 8, "svd-xt"),
        TwinInfo("ltx", "ltx", "LTXConditionPipeline", 32, 32, 9, 32, "ltx-video"),
        TwinInfo("wan", "wan", "WanImageToVideoPipeline", 32, 32, 9, 16, "wan-i2v-480p"),
        TwinInfo("wan-flf2v", "wan", "WanImageToVideoPipeline", 32, 32, 9, 16, "wan-flf2v-720p"),
        TwinInfo("wan22", "wan", "WanImageToVideoPipeline", 32, 32, 9, 16, "wan2.2-i2v-a14b"),
        TwinInfo("cogvideox", "cogvideox", "CogVideoXImageToVideoPipeline", 32, 32, 49, 16,
                 "cogvideox-5b-i2v"),
        TwinInfo(name="wan22-ti2v", family="wan", pipeline_class="WanImageToVideoPipeline",
                 width=32, height=32, num_frames=9, size_multiple=32, mirrors="wan2.2-ti2v-5b"),
        TwinInfo(name="hunyuanvideo15", family="hunyuanvideo15",
                 pipeline_class="HunyuanVideo15ImageToVideoPipeline", width=32, height=32,
                 num_frames=9, size_multiple=16, mirrors="hunyuanvideo-1.5-i2v",
                 aspect_target=32),
        # 64 px: the 32x VAE's latents must be at least 2x2 for its reflect-padded decoder.
        TwinInfo(name="ltx2", family="ltx2", pipeline_class="LTX2ConditionPipeline", width=64,
                 height=64, num_frames=9, size_multiple=32, mirrors="ltx-2"),
        TwinInfo(name="skyreels-df", family="skyreels-df",
                 pipeline_class="SkyReelsV2DiffusionForcingImageToVideoPipeline", width=32,
                 height=32, num_frames=17, size_multiple=16, mirrors="skyreels-v2-df-1.3b"),
        TwinInfo(name="framepack", family="framepack",
                 pipeline_class="HunyuanVideoFramepackPipeline", width=32, height=32,
                 num_frames=37, size_multiple=16, mirrors="framepack-f1"),
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


def _t5_encoder(vocab_size: int, *, umt5: bool = False, d_model: int = _TEXT_DIM) -> Any:
    """A two-layer T5 (or UMT5, as Wan uses) encoder producing ``d_model``-wide states."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(
        vocab_size=vocab_size,
        d_model=d_model,
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


def _wan_vae(**overrides: Any) -> Any:
    """Wan 2.1's VAE (8x spatial, 4x temporal, 16 latent channels) at toy width."""
    from diffusers import AutoencoderKLWan

    config = dict(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )  # fmt: skip
    return AutoencoderKLWan(**(config | overrides))


def _build_wan(seed: int, layout: str) -> diffusers.DiffusionPipeline:
    """The Wan image-to-video layouts, each as published:

    - ``i2v`` (Wan 2.1 I2V 480P): one transformer, a CLIP image encoder whose tokens of one
      picture the transformer cross-attends to (so it cannot take a last frame);
    - ``flf2v`` (Wan 2.1 FLF2V 720P): the same with a learned position on the tokens of two
      pictures, the first and the last frame;
    - ``a14b`` (Wan 2.2 I2V A14B): no image encoder, two experts split at ``boundary_ratio``
      of the training timesteps (``transformer`` above it, ``transformer_2`` below), so even
      a 2-step call runs both; first and last frame reach it through the condition latents;
    - ``ti2v`` (Wan 2.2 TI2V 5B): one transformer over the 48-channel latents of a 16x VAE
      with 2x2 patches (sizes on multiples of 32), ``expand_timesteps``: the first frame's
      latents replace the first latent frame at timestep 0 (a last frame is ignored).
    """
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    tokenizer = _t5_tokenizer()
    image_kv = layout in ("i2v", "flf2v")
    channels = (48, 48) if layout == "ti2v" else (16 + 4 + 16, 16)  # in: latents, mask, cond

    def transformer() -> Any:
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=channels[0],
            out_channels=channels[1],
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

    vae_config: dict[str, Any] = {}
    if layout == "ti2v":  # Wan 2.2's VAE: 2x2 pixel patches in, 48 latent channels
        vae_config = dict(
            z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
            scale_factor_spatial=16, scale_factor_temporal=4, latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
        )  # fmt: skip
    vae = _seeded(seed, lambda: _wan_vae(**vae_config))
    text_encoder = _seeded(seed, lambda: _t5_encoder(len(tokenizer), umt5=True))
    parts: dict[str, Any] = {"transformer": _seeded(seed, transformer)}
    if image_kv:
        parts["image_encoder"] = _seeded(seed, _wan_image_encoder)
        parts["image_processor"] = _clip_image_processor(224)
    elif layout == "a14b":
        parts["transformer_2"] = _seeded(seed + 1, transformer)
        parts["boundary_ratio"] = 0.9
    else:
        parts["expand_timesteps"] = True
    shift = {"i2v": 3.0, "flf2v": 16.0, "a14b": 5.0, "ti2v": 5.0}[layout]
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=_wan_scheduler(flow_shift=shift),
        **parts,
    )


# SkyReels-V2's own diffusion-forcing sampler shifts by 8.0 (generate_video_df.py); diffusers'
# docs set 5.0 for image-to-video on the loaded scheduler, as the preset does.
_SKYREELS_DF_SHIFT = 8.0


def _build_skyreels_df(seed: int) -> diffusers.DiffusionPipeline:
    """SkyReels-V2 diffusion forcing layout (DF-1.3B-540P): Wan 2.1's text-to-video
    transformer, 16 input channels (a first frame or the frames continued from enter as
    clean latent frames, not as extra channels), no image encoder or image key/values, the fps
    embedding (``inject_sample_info``), one frame per causal block; Wan 2.1's VAE and UMT5.
    The same components build the video-to-video pipeline that continues from frames."""
    from diffusers import (
        SkyReelsV2DiffusionForcingImageToVideoPipeline,
        SkyReelsV2Transformer3DModel,
    )

    tokenizer = _t5_tokenizer()
    transformer = _seeded(seed, lambda: SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=_TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=1,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", image_dim=None,
        added_kv_proj_dim=None, inject_sample_info=True, num_frame_per_block=1,
    ))  # fmt: skip
    return SkyReelsV2DiffusionForcingImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: _t5_encoder(len(tokenizer), umt5=True)),
        transformer=transformer,
        vae=_seeded(seed, _wan_vae),
        scheduler=_wan_scheduler(flow_shift=_SKYREELS_DF_SHIFT),
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


def _qwen_tokenizer() -> Any:
    """A Qwen2 byte-level BPE tokenizer (256 byte symbols, no merges) with a ChatML template,
    which HunyuanVideo 1.5 applies to every prompt before its text encoder reads it."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    marks = ["<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate([*alphabet, "<|endoftext|>", *marks])}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=2048)
    tokenizer.add_special_tokens({"additional_special_tokens": marks})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


def _build_hunyuanvideo15(seed: int) -> diffusers.DiffusionPipeline:
    """HunyuanVideo 1.5 image-to-video (480p) layout: the i2v transformer (condition latents
    and a mask beside the noisy ones, SigLIP image tokens), a 16x spatial / 4x temporal VAE,
    Qwen2.5-VL text and byT5 glyph text, classifier-free guidance through its guider. The
    pipeline takes no size: it picks the bucket of the image's aspect ratio near its
    transformer's ``target_size`` (here 32 px: 32x32 for a square picture)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15ImageToVideoPipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import (
        ByT5Tokenizer,
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLTextModel,
        SiglipImageProcessor,
    )

    tokenizer, tokenizer_2 = _qwen_tokenizer(), ByT5Tokenizer()
    text_config = Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
        rope_scaling={"type": "default", "rope_type": "default", "mrope_section": [1, 1, 2]},
        bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    transformer = _seeded(seed, lambda: HunyuanVideo15Transformer3DModel(
        in_channels=4 + 4 + 1, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        num_layers=1, num_refiner_layers=1, mlp_ratio=2.0, text_embed_dim=16,
        text_embed_2_dim=32, image_embed_dim=12, rope_axes_dim=(2, 2, 4),
        target_size=TWINS["hunyuanvideo15"].aspect_target, task_type="i2v",
    ))  # fmt: skip
    vae = _seeded(seed, lambda: AutoencoderKLHunyuanVideo15(
        latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1,
        spatial_compression_ratio=16, temporal_compression_ratio=4,
        downsample_match_channel=False, upsample_match_channel=False,
    ))  # fmt: skip
    return HunyuanVideo15ImageToVideoPipeline(
        text_encoder=_seeded(seed, lambda: Qwen2_5_VLTextModel(text_config)),
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=_seeded(seed, lambda: _t5_encoder(len(tokenizer_2), d_model=32)),
        tokenizer_2=tokenizer_2,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
        image_encoder=_seeded(seed, _siglip),
        feature_extractor=SiglipImageProcessor(size={"height": 16, "width": 16}),
    )


def _gemma_tokenizer() -> Any:
    """A Gemma tokenizer over printable ASCII, one token a character (no merges)."""
    from transformers import GemmaTokenizer

    chars = [chr(code) for code in range(32, 127)]
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {token: i for i, token in enumerate([*specials, *chars, "\u2581"])}
    return GemmaTokenizer(vocab=vocab, merges=[])


def _gemma3(vocab_size: int, layers: int) -> Any:
    """Gemma 3 (text and its SigLIP vision tower), as LTX-2's text encoder, at toy width."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    text = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=_LTX2_TEXT_DIM, intermediate_size=32,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        max_position_embeddings=1024, sliding_window=64, pad_token_id=0, eos_token_id=1,
        bos_token_id=2,
    )  # fmt: skip
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, image_size=28, patch_size=14)  # fmt: skip
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=vocab_size - 1)  # fmt: skip
    return Gemma3ForConditionalGeneration(config)


_LTX2_TEXT_DIM = 16  # Gemma's width; LTX-2's connectors read all its layers' states at once
_LTX2_TEXT_LAYERS = 2


def _ltx2_audio() -> dict[str, Any]:
    """LTX-2's audio path: a mel VAE (16 kHz, hop 160) and a vocoder whose upsampling (160x)
    turns mel frames back into 16 kHz samples, so a clip's audio lasts as long as its video."""
    from diffusers import AutoencoderKLLTX2Audio
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    return {
        "audio_vae": lambda: AutoencoderKLLTX2Audio(
            base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1,
            attn_resolutions=None, in_channels=2, resolution=32, latent_channels=2,
            norm_type="pixel", causality_axis="height", dropout=0.0,
            mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160,
            is_causal=True, mel_bins=8,
        ),
        "vocoder": lambda: LTX2Vocoder(
            in_channels=2 * 8, hidden_channels=32, out_channels=2,
            upsample_kernel_sizes=[16, 10, 8], upsample_factors=[8, 5, 4],
            resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
            leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
        ),
    }  # fmt: skip


def _build_ltx2(seed: int) -> diffusers.DiffusionPipeline:
    """LTX-2.0 layout: the audio-video transformer without LTX-2.3's gated attention and
    cross-attention modulation, a 32x spatial / 8x temporal video VAE that is not
    timestep-conditioned, text connectors over every Gemma 3 layer, and the audio VAE and
    vocoder (each call returns a soundtrack with its frames)."""
    from diffusers import (
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2ConditionPipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    tokenizer = _gemma_tokenizer()
    dim, layers = _LTX2_TEXT_DIM, _LTX2_TEXT_LAYERS
    factories: dict[str, Callable[[], Any]] = {
        "transformer": lambda: LTX2VideoTransformer3DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
            cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
            audio_num_attention_heads=2, audio_attention_head_dim=4,
            audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
            caption_channels=dim, rope_double_precision=False, rope_type="split",
            gated_attn=False, cross_attn_mod=False, audio_gated_attn=False,
            audio_cross_attn_mod=False,
        ),
        "connectors": lambda: LTX2TextConnectors(
            caption_channels=dim, text_proj_in_factor=layers + 1,
            video_connector_num_attention_heads=4, video_connector_attention_head_dim=4,
            video_connector_num_layers=1, video_connector_num_learnable_registers=None,
            audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=4,
            audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
            connector_rope_base_seq_len=32, rope_double_precision=False, rope_type="split",
        ),
        "vae": lambda: AutoencoderKLLTX2Video(
            latent_channels=4, block_out_channels=(8, 16, 32, 64),
            decoder_block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1), decoder_inject_noise=(False,) * 4,
            timestep_conditioning=False, decoder_causal=False, spatial_compression_ratio=32,
            temporal_compression_ratio=8,
        ),
        "text_encoder": lambda: _gemma3(len(tokenizer), layers),
        **_ltx2_audio(),
    }  # fmt: skip
    modules = {name: _seeded(seed, factory) for name, factory in factories.items()}
    return LTX2ConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), tokenizer=tokenizer, **modules
    )


# Llama 3's pre-tokenizer split (contractions, words with one leading non-letter, up to three
# digits, punctuation runs, newlines, spaces), ahead of its byte-level BPE.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPECIALS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<pad>",
)  # fmt: skip


def _llama3_tokenizer() -> Any:
    """A Llama 3 byte-level BPE tokenizer (256 byte symbols, the split and header tokens of
    Llama 3, a leading ``<|begin_of_text|>``, right padding) whose merges make every piece of
    HunyuanVideo's prompt template one token, as Llama 3's 128k vocabulary does: the system
    part is 95 tokens, the ``crop_start`` the pipeline ships with, so the crop leaves exactly
    the prompt. Other text falls back to bytes, so any prompt tokenizes."""
    import re

    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (
        DEFAULT_PROMPT_TEMPLATE,
    )
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    texts = re.split("|".join(map(re.escape, (*_LLAMA3_SPECIALS, "{}"))),
                     DEFAULT_PROMPT_TEMPLATE["template"])  # fmt: skip
    # Word-initial pieces ("Ġthe") first: their chains start with a symbol only a word's first
    # can be, so no other merge can split them; then the few others ("system", "ĊĊ").
    words = sorted({w for text in texts for w, _ in split.pre_tokenize_str(text)},
                   key=lambda w: (not w.startswith("\u0120"), w))  # fmt: skip
    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges: list[tuple[str, str]] = []
    for word in words:
        for i in range(1, len(word)):
            if word[: i + 1] not in vocab:
                merges.append((word[:i], word[i]))
                vocab[word[: i + 1]] = len(vocab)
    backend = Tokenizer(BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer, backend.decoder = split, decoders.ByteLevel()
    backend.add_special_tokens(list(_LLAMA3_SPECIALS))
    bos = _LLAMA3_SPECIALS[0]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, backend.token_to_id(bos))],
    )  # fmt: skip
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token="<|end_of_text|>", pad_token="<pad>",
        padding_side="right", model_max_length=8192,
    )  # fmt: skip


def _siglip(image_size: int = 16) -> Any:
    """A one-layer SigLIP vision tower, 12 wide (4 px patches), as HunyuanVideo 1.5 and
    FramePack read image tokens from."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    return SiglipVisionModel(SiglipVisionConfig(
        hidden_size=12, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        image_size=image_size, patch_size=4,
    ))  # fmt: skip


def _build_framepack(seed: int) -> diffusers.DiffusionPipeline:
    """FramePack F1 layout: HunyuanVideo's dual- and single-stream transformer with FramePack's
    clean-latent patch embedders (the first frame and the latest latent frame at 1x, the two
    before at 2x and sixteen older at 4x compression) and a SigLIP image projection,
    guidance-distilled (a guidance embedding); HunyuanVideo's 8x/4x VAE with 16 latent
    channels; Llama 3 text (the hidden states two layers from the end, the system template
    cropped away) and CLIP-L pooled text; shift-7 flow matching."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackPipeline,
        HunyuanVideoFramepackTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel, SiglipImageProcessor

    tokenizer, tokenizer_2 = _llama3_tokenizer(), _clip_tokenizer()
    llama = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        rope_theta=500000.0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    factories: dict[str, Callable[[], Any]] = {
        "transformer": lambda: HunyuanVideoFramepackTransformer3DModel(
            in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=8,
            num_layers=1, num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0,
            patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
            pooled_projection_dim=_TEXT_DIM, rope_axes_dim=(2, 2, 4),
            image_condition_type=None, has_image_proj=True, image_proj_dim=12,
            has_clean_x_embedder=True,
        ),
        "vae": lambda: AutoencoderKLHunyuanVideo(
            latent_channels=16, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4,
        ),
        "text_encoder": lambda: LlamaModel(llama),
        "text_encoder_2": lambda: _clip_text_encoder(tokenizer_2),
        "image_encoder": _siglip,
    }  # fmt: skip
    modules = {name: _seeded(seed, factory) for name, factory in factories.items()}
    return HunyuanVideoFramepackPipeline(
        tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        feature_extractor=SiglipImageProcessor(size={"height": 16, "width": 16}), **modules,
    )  # fmt: skip


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
    "wan22-ti2v": lambda seed: _build_wan(seed, "ti2v"),
    "hunyuanvideo15": lambda seed: _build_hunyuanvideo15(seed),
    "ltx2": lambda seed: _build_ltx2(seed),
    "cogvideox": _build_cogvideox,
    "skyreels-df": _build_skyreels_df,
    "framepack": _build_framepack,
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
