"""Tiny twins: the real diffusers pipelines of every supported family, shrunk to toy size.

A twin is the genuine pipeline class (``StableDiffusionPipeline``, ``LTXConditionPipeline``, ...)
assembled from tiny configs with seeded random weights and in-memory tokenizers. Nothing is
downloaded and nothing is read from disk, so the engine's whole code path (argument handling,
frame-count rules, ``from_pipe`` derivations, save/load) runs offline on a CPU in seconds.
The weights are noise, so the pictures are noise too; only shapes, dtypes, value ranges and
determinism are meaningful.

The twins follow the published checkpoints wherever that changes behaviour the engine can
observe: the same VAE compression ratios (hence the same size and frame rules), the same
scheduler families, the same optional components.

=============  ==============================  =======  ======  ===========  =======
family         pipeline                        size     frames  2-step call  build
=============  ==============================  =======  ======  ===========  =======
``sd``         StableDiffusionPipeline         64x64    --      0.02 s       0.02 s
``svd``        StableVideoDiffusionPipeline    32x32    9       0.05 s       0.04 s
``ltx``        LTXConditionPipeline            32x32    9       0.02 s       0.01 s
``wan``        WanImageToVideoPipeline         32x32    9       0.07 s       0.02 s
``cogvideox``  CogVideoXImageToVideoPipeline   32x32    9       0.03 s       0.02 s
=============  ==============================  =======  ======  ===========  =======

Measured 2026-11-28 on 2 cores CPU (torch 2.13, diffusers 0.42.1): medians of warm calls at
the default size with ``num_inference_steps=2, output_type="np"``. The first build in a
process also pays about 2 s for importing diffusers and transformers, and a pipeline's first
call a little warm-up. One intra-op thread (``torch.set_num_threads(1)``) is as fast within
1.5x, and far safer on a shared machine: with two OpenMP threads contending with other
processes for the two cores, the same sd call was measured at 0.5-6 s.

How each twin is called (the real pipelines' argument names):

- ``sd``: ``prompt=``; img2img through ``AutoPipelineForImage2Image.from_pipe(twin)`` with
  ``image=`` and ``strength=``.
- ``svd``: ``image=`` only (no prompt); guidance via ``min_guidance_scale`` /
  ``max_guidance_scale``.
- ``ltx``: ``conditions=[LTXVideoCondition(image=... | video=[...], frame_index=k)]``, or the
  shorthand ``image=`` / ``video=`` with ``frame_index=`` (lists allowed), plus ``prompt=``.
  ``LTXImageToVideoPipeline.from_pipe(twin)`` gives plain first-frame ``image=`` calls.
  diffusers logs a "timesteps were passed without sigmas" warning on every call; harmless.
- ``wan``: ``image=`` (first frame) and optionally ``last_image=`` (last frame), ``prompt=``.
- ``cogvideox``: ``image=`` (first frame), ``prompt=``.

Save/load: ``save_pretrained`` then ``from_pretrained`` restores every weight and config
exactly, offline. Outputs of a reloaded pipeline can still differ from the in-memory twin in
the last float bits (up to ~1e-5): diffusers leaves safetensors weights memory-mapped at
4-byte-aligned addresses, and CPU convolution kernels round differently on misaligned data.
Two reloads of the same directory agree bit for bit, and so does a reload whose parameters
are copied into fresh memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import diffusers

TWIN_FAMILIES: tuple[str, ...] = ("sd", "svd", "ltx", "wan", "cogvideox")


@dataclass(frozen=True)
class TwinInfo:
    """What the engine may assume about a family's twin without building it.

    ``num_frames`` is a count the pipeline returns unchanged. Other requests are not always
    honoured. For a requested ``n`` the twins return (as the real models do, because the rule
    comes from the VAE's temporal compression and the pipeline code, not from the weights):

    - ``sd``: images, no frames.
    - ``svd``: exactly ``n``, for any ``n >= 2``. ``n == 1`` fails inside the pipeline with the
      default guidance: the per-frame ramp from ``min_guidance_scale`` (1.0) to
      ``max_guidance_scale`` collapses to 1.0, switching guidance off after the conditioning
      was already doubled for it.
    - ``ltx``: ``8 * ((n - 1) // 8) + 1``, rounded down to 8k+1 silently (8 -> 1, 10 -> 9,
      16 -> 9, 17 -> 17).
    - ``wan``: ``4 * (n // 4) + 1`` with a logged warning unless ``n`` is already 4k+1. Not a
      plain round-down: 4k rounds *up* (8 -> 9, 12 -> 13) while 4k+2 and 4k+3 round down
      (10 -> 9, 11 -> 9).
    - ``cogvideox``: with ``L = (n - 1) // 4 + 1`` latent frames, ``4 * L - 3`` when ``L`` is
      odd and ``4 * L`` when ``L`` is even, because the VAE decoder keeps the first latent
      frame apart only for odd counts (8 -> 8, 9 -> 9, 12 -> 9, 13 -> 16, 17 -> 17). No
      warning. Asking for 8k+1 gets exactly that.

    ``size_multiple`` is the step both width and height must be multiples of: the sd, svd, ltx
    and wan pipelines reject other sizes up front, cogvideox fails on them mid-call. The
    cogvideox twin also caps each side at 256 px (its RoPE grid).
    """

    family: str
    pipeline_class: str
    width: int
    height: int
    num_frames: int | None
    size_multiple: int
    steps: int = 2


TWINS: dict[str, TwinInfo] = {
    info.family: info
    for info in (
        TwinInfo("sd", "StableDiffusionPipeline", 64, 64, None, size_multiple=8),
        TwinInfo("svd", "StableVideoDiffusionPipeline", 32, 32, 9, size_multiple=8),
        TwinInfo("ltx", "LTXConditionPipeline", 32, 32, 9, size_multiple=32),
        TwinInfo("wan", "WanImageToVideoPipeline", 32, 32, 9, size_multiple=16),
        TwinInfo("cogvideox", "CogVideoXImageToVideoPipeline", 32, 32, 9, size_multiple=16),
    )
}

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
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

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
    vae = _seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=64,
        ),
    )
    text_encoder = _seeded(
        seed,
        lambda: CLIPTextModel(
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
        ),
    )
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
    """LTX-Video layout: 32x spatial / 8x temporal VAE (4 px patches, three 2x stages)."""
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


def _build_wan(seed: int) -> diffusers.DiffusionPipeline:
    """Wan 2.2 A14B image-to-video layout: two experts, no image encoder.

    Without a CLIP image encoder the first and last frames reach the model only through the
    VAE-encoded condition latents, so one twin serves both ``image=`` and
    ``image=..., last_image=...``; the Wan 2.1 layout needs a different transformer for each.
    ``transformer`` denoises steps at or above ``boundary_ratio`` of the training timesteps and
    ``transformer_2`` the rest, so even a 2-step call runs both.
    """
    from diffusers import (
        AutoencoderKLWan,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )

    tokenizer = _t5_tokenizer()

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
    scheduler = _wan_scheduler(flow_shift=5.0)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=_seeded(seed, transformer),
        transformer_2=_seeded(seed + 1, transformer),
        boundary_ratio=0.9,
    )


def _build_cogvideox(seed: int) -> diffusers.DiffusionPipeline:
    """CogVideoX 1.5 image-to-video layout: RoPE, 2-frame temporal patches, ``ofs`` embedding.

    The 1.5 layout (rather than 1.0's learned positional table) accepts any size that is a
    multiple of 16, up to the ``sample_width``/``sample_height`` RoPE grid (256 px here).
    """
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDPMScheduler,
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
            ofs_embed_dim=8,
            text_embed_dim=_TEXT_DIM,
            num_layers=1,
            sample_width=32,
            sample_height=32,
            sample_frames=9,
            patch_size=2,
            patch_size_t=2,
            temporal_compression_ratio=4,
            max_text_seq_length=226,
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=False,
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
            invert_scale_latents=True,
        ),
    )
    text_encoder = _seeded(seed, lambda: _t5_encoder(len(tokenizer)))
    scheduler = CogVideoXDPMScheduler(
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
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


_BUILDERS: dict[str, Callable[[int], diffusers.DiffusionPipeline]] = {
    "sd": _build_sd,
    "svd": _build_svd,
    "ltx": _build_ltx,
    "wan": _build_wan,
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
