"""FramePack sections, one call each, so that each section is a segment of the run folder.

diffusers' `HunyuanVideoFramepackPipeline` makes every section of a video inside one call
and keeps its history latents to itself: a call killed an hour in loses them all. Here a
call makes one section of FramePack F1 (the forward, "vanilla" order) from a `SectionState`
kept beside the previous segment: the start picture's latent and the last history latents
(16 at 4x, 2 at 2x and 1 at full rate). The sampling is the pipeline's own (its encoders,
transformer, scheduler shift and decode); only the loop over sections lives here.
Classifier-free guidance is FramePack's distilled one (`guidance_scale`), as its demos run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .clips import ClipItem

HISTORY = (16, 2, 1)  # history latents FramePack reads at 4x, 2x and full rate, oldest first
LATENT_STEP = 4  # frames per latent frame (the HunyuanVideo VAE's temporal compression)


@dataclass(frozen=True, eq=False)
class SectionState:
    """What the next section needs: float32 latents, kept exactly (safetensors)."""

    image: np.ndarray  # (1, C, 1, h, w): the shot's start picture
    history: np.ndarray  # (1, C, ≥19, h, w): the last history latents (zeros before the start)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        from .files import atomic_path

        # Contiguous: safetensors writes a strided array's memory as if it were not.
        arrays = {"image": self.image, "history": self.history}
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))

    @classmethod
    def load(cls, path: Path) -> SectionState:
        from safetensors.numpy import load_file

        data = load_file(str(path))
        return cls(image=data["image"], history=data["history"])


def readable_state(path: Path) -> bool:
    """Whether a kept state loads (a resume makes its segment again where it does not)."""
    try:
        SectionState.load(path)
    except Exception:  # missing, truncated, or not safetensors
        return False
    return True


def window_of(job: ClipItem) -> int:
    """Latent frames the section makes: a shot's first decodes 4w + 1 frames, a later one
    8w - 3 (the previous section's latents again, then its own)."""
    if job.history is None:
        return (job.num_frames - 1) // LATENT_STEP
    return (job.num_frames + 3) // (2 * LATENT_STEP)


def make_section(
    pipe, job: ClipItem, cancel: threading.Event | None = None
) -> tuple[np.ndarray, SectionState]:
    """One section: its frames, float32 (F, H, W, 3) in [0, 1], and the state after it.
    Afterwards, as after a pipeline call, offloaded models go back and caches are reset."""
    try:
        return _section(pipe, job, cancel)
    finally:
        pipe.maybe_free_model_hooks()


def _section(
    pipe, job: ClipItem, cancel: threading.Event | None
) -> tuple[np.ndarray, SectionState]:
    import torch

    device = pipe._execution_device
    dtype = pipe.transformer.dtype
    generator = torch.Generator("cpu").manual_seed(job.seed)
    text = pipe.encode_prompt(prompt=[job.prompt], device=device, max_sequence_length=256)
    text = [t.to(dtype) for t in text]
    picture = pipe.video_processor.preprocess(job.first, job.height, job.width)
    image_embeds = pipe.encode_image(picture, device=device).to(dtype)
    if job.history is None:  # F1 starts its history with the picture, after empty latents
        image = pipe.prepare_image_latents(picture, torch.float32, device, generator)
        empty = torch.zeros_like(image).repeat(1, 1, sum(HISTORY), 1, 1)
        history = torch.cat([empty, image], dim=2)
    else:
        image = torch.tensor(job.history.image, device=device)  # a copy: Ray's are read-only
        history = torch.tensor(job.history.history, device=device)
    window = window_of(job)
    latents = _denoise(pipe, job, window, text, image_embeds, image, history, generator, cancel)
    history = torch.cat([history, latents], dim=2)
    # A shot's first section shows its picture and itself; a later one the previous
    # section again (to blend over) and itself.
    shown = (
        torch.cat([image, latents], dim=2) if job.history is None else history[:, :, -2 * window :]
    )
    frames = _decode(pipe, shown)
    keep = history[:, :, -max(sum(HISTORY), window) :]
    state = SectionState(image=image.float().cpu().numpy(), history=keep.float().cpu().numpy())
    return frames, state


def _denoise(pipe, job, window, text, image_embeds, image, history, generator, cancel):
    """FramePack F1's sampling of one section: clean latents (the start picture and the
    newest history latent) and the 2x and 4x history at their places before the window."""
    import torch
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (
        calculate_shift,
        retrieve_timesteps,
    )

    from .clips import Cancelled

    device, dtype = image.device, pipe.transformer.dtype
    prompt_embeds, pooled, mask = text
    parts = torch.arange(1 + sum(HISTORY) + window).split([1, *HISTORY, window])
    at_prefix, at_4x, at_2x, at_1x, at_window = parts
    h4, h2, h1 = history[:, :, -sum(HISTORY) :].split(list(HISTORY), dim=2)
    clean = torch.cat([image, h1], dim=2).to(dtype)
    latents = pipe.prepare_latents(1, pipe.transformer.config.in_channels, job.height, job.width,
                                   (window - 1) * LATENT_STEP + 1, torch.float32, device, generator)  # fmt: skip
    seq_len = (
        latents.shape[2]
        * latents.shape[3]
        * latents.shape[4]
        / pipe.transformer.config.patch_size**2
    )
    cfg = pipe.scheduler.config
    mu = calculate_shift(seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                         cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))  # fmt: skip
    sigmas = np.linspace(1.0, 0.0, job.steps + 1)[:-1]
    timesteps, _ = retrieve_timesteps(
        pipe.scheduler, job.steps, device, sigmas=sigmas, mu=min(mu, np.log(7.0))
    )
    guidance = torch.tensor([job.guidance * 1000.0], dtype=dtype, device=device)
    for t in timesteps:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        with pipe.transformer.cache_context("cond"):  # the first-block cache's state (`--fast`)
            noise = pipe.transformer(
                hidden_states=latents.to(dtype), timestep=t.expand(1), encoder_hidden_states=prompt_embeds,
                encoder_attention_mask=mask, pooled_projections=pooled, image_embeds=image_embeds,
                indices_latents=at_window, guidance=guidance, latents_clean=clean,
                indices_latents_clean=torch.cat([at_prefix, at_1x]), latents_history_2x=h2.to(dtype),
                indices_latents_history_2x=at_2x, latents_history_4x=h4.to(dtype),
                indices_latents_history_4x=at_4x, return_dict=False,
            )[0]  # fmt: skip
        latents = pipe.scheduler.step(noise.float(), t, latents, return_dict=False)[0]
    return latents


def _decode(pipe, latents) -> np.ndarray:
    """Latents to frames with the pipeline's VAE and post-processing."""
    vae = pipe.vae
    video = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    frames = pipe.video_processor.postprocess_video(video, output_type="np")
    return np.asarray(frames[0], dtype=np.float32)
