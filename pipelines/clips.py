"""Image-to-video adapters: one table entry per family, one batched entry point.

Every family takes a first frame; some also take a last frame or a run of conditioning
frames (to continue a clip with overlap). The adapter turns `ClipItem`s into the family's
pipeline arguments, so the chaining modes never branch on model names. Each clip has its
own seeded generator, so a clip is the same alone or in a batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .batching import Planner, cost_key, group_indices, ladder_for, run_group
from .device import reset_fast_state
from .images import native_only_message
from .lora import Lora, use_loras
from .models import LoadedModel, call_parameters, preset_kwargs
from .settings import Runtime


class _PipelineOwnTimesteps(logging.Filter):
    """LTX's condition pipeline hands the flow-match scheduler its own timesteps, and the
    scheduler warns about that on every call; the schedule is the pipeline's design, not
    ours, so that one warning is dropped (every other passes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "were passed without `sigmas`" not in record.getMessage()


logging.getLogger("diffusers.schedulers.scheduling_flow_match_euler_discrete").addFilter(
    _PipelineOwnTimesteps()
)


@dataclass(frozen=True, eq=False)
class ClipItem:
    """One clip: the frames it starts from (and ends on), what it shows, how long it is."""

    prompt: str
    first: Image.Image
    num_frames: int
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    fps: int = 8
    negative_prompt: str = ""
    last: Image.Image | None = None  # end on this frame (first-and-last-frame families)
    last_index: int | None = None  # where `last` goes (None: the last frame; LTX: any)
    video: tuple[Image.Image, ...] | None = None  # continue from these frames (overlap)
    loras: tuple[Lora, ...] = ()  # active for this clip (a batch shares one set)
    # Continue from the previous section's state (FramePack: a `framepack.SectionState`).
    history: Any = None

    @property
    def conditioning(self) -> str:
        return "video" if self.video else "first+last" if self.last is not None else "first"

    @property
    def batch_key(self) -> tuple:
        return (self.width, self.height, self.num_frames, self.steps, self.guidance,
                self.fps, self.conditioning, len(self.video or ()), self.last_index,
                self.loras, self.history is None)  # fmt: skip


class Cancelled(RuntimeError):
    """The user asked to stop; finished work is kept."""


@dataclass(frozen=True)
class Adapter:
    """How a family is called. `batchable(pipe, job)`: different first frames in one call."""

    batchable: Callable[[object, ClipItem], bool]
    kwargs: Callable[[list[ClipItem]], dict]
    # Around each call, for what arguments alone cannot say (None: nothing).
    around: Callable[[object, list[ClipItem]], contextlib.AbstractContextManager] | None = None
    # The pipeline a batch calls, and how many frames its output shows before the clip
    # (None: the loaded one, none).
    pipe: Callable[[object, list[ClipItem]], tuple[object, int]] | None = None
    # A family that runs its own loop around the pipeline's parts (FramePack's sections):
    # one clip's frames and what it leaves for the next (None: the pipeline's call).
    run: Callable[[object, ClipItem, threading.Event | None], tuple[np.ndarray, Any]] | None = None


def _text(jobs: list[ClipItem]) -> dict:
    kw: dict = {"prompt": [j.prompt for j in jobs]}
    if any(j.negative_prompt for j in jobs):
        kw["negative_prompt"] = [j.negative_prompt for j in jobs]
    return kw


def _one_or_many(items: list) -> object:
    """A condition for one clip, or the list of each clip's (LTX batches them this way)."""
    return items[0] if len(items) == 1 else items


def _ltx_kwargs(jobs: list[ClipItem]) -> dict:
    """Every LTX clip goes through the condition pipeline, whatever it starts from: one way
    of sampling for all the clips of a shot (schedule, text length, conditioning noise),
    and decode noise drawn from per-clip generators, which any device takes."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    job = jobs[0]
    if job.video:
        start = LTXVideoCondition(video=_one_or_many([list(j.video) for j in jobs]), frame_index=0)
    else:
        start = LTXVideoCondition(image=_one_or_many([j.first for j in jobs]), frame_index=0)
    conditions = [start]
    if job.last is not None:
        end = _one_or_many([j.last for j in jobs])
        at = job.num_frames - 1 if job.last_index is None else job.last_index
        conditions.append(LTXVideoCondition(image=end, frame_index=at))
    return _text(jobs) | {"frame_rate": job.fps, "conditions": conditions}


def _transformer_config(pipe):
    return getattr(getattr(pipe, "transformer", None), "config", None)


def _image_token_sets(pipe) -> int:
    """How many pictures' CLIP tokens a Wan 2.1 transformer reads: 0 without an image
    encoder (Wan 2.2, other families), 1 for image-to-video, 2 for first-and-last-frame
    (its image tokens carry a learned position per picture)."""
    if getattr(pipe, "image_encoder", None) is None or not hasattr(pipe, "encode_image"):
        return 0
    config = _transformer_config(pipe)
    return 2 if config is not None and config.get("pos_embed_seq_len") else 1


def _takes_last(pipe) -> bool:
    """False for Wan 2.1 image-to-video (the pipeline encodes the first and last frame as two
    pictures' tokens, and its transformer reads one: the call fails) and for Wan 2.2 TI2V
    (`expand_timesteps`: only the first frame is pinned; a last one is silently ignored)."""
    expands = bool(getattr(pipe, "config", {}).get("expand_timesteps"))
    return _image_token_sets(pipe) != 1 and not expands


def _wan_kwargs(jobs: list[ClipItem]) -> dict:
    job = jobs[0]
    kw = _text(jobs) | {"image": job.first}
    if job.last is not None:
        kw["last_image"] = job.last
    return kw


@contextlib.contextmanager
def _wan_image_tokens(pipe, jobs: list[ClipItem]) -> Iterator[None]:
    """Wan first-and-last-frame models (FLF2V) read the CLIP tokens of two images, and the
    pipeline encodes only one when there is no last frame (the call then fails). A clip
    without a last frame gives its first frame's tokens twice: only the first frame is
    pinned in the latents, and the picture's content conditions both slots."""
    if _image_token_sets(pipe) != 2 or jobs[0].last is not None:
        yield
        return
    encode = pipe.encode_image

    def twice(image, device=None):
        return encode(image if isinstance(image, list) else [image, image], device)

    pipe.encode_image = twice
    try:
        yield
    finally:
        del pipe.encode_image


def _svd_kwargs(jobs: list[ClipItem]) -> dict:
    job = jobs[0]
    return {
        "image": [j.first for j in jobs],
        "fps": job.fps,  # diffusers passes fps - 1, what SVD was conditioned on
        "min_guidance_scale": min(1.0, job.guidance),
        "max_guidance_scale": job.guidance,
        "decode_chunk_size": job.num_frames,  # one clip per chunk: the decoder is temporal
    }


def _cog_kwargs(jobs: list[ClipItem]) -> dict:
    return _text(jobs) | {"image": [j.first for j in jobs]}


def _hunyuan15_kwargs(jobs: list[ClipItem]) -> dict:
    """HunyuanVideo 1.5 takes no size: it makes the size of its aspect bucket for the first
    frame, which the storyboard check holds to one the model makes (requested = written)."""
    return _text(jobs) | {"image": jobs[0].first}


@contextlib.contextmanager
def _guider_scale(pipe, jobs: list[ClipItem]) -> Iterator[None]:
    """HunyuanVideo 1.5 takes no guidance argument: classifier-free guidance is its guider's.
    The job's guidance goes into a guider of the same kind for the call, then the loaded
    one is put back."""
    guider = pipe.guider
    if guider.guidance_scale == jobs[0].guidance:
        yield
        return
    pipe.guider = guider.new(guidance_scale=jobs[0].guidance)
    try:
        yield
    finally:
        pipe.guider = guider


def _ltx2_kwargs(jobs: list[ClipItem]) -> dict:
    """LTX-2 starts a clip from its first frame, or from the previous clip's last frames
    (a video condition at latent index 0), and is told the rate its motion is made at."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    job = jobs[0]
    frames = list(job.video) if job.video else job.first
    return _text(jobs) | {
        "conditions": [LTX2VideoCondition(frames=frames, index=0)],
        "frame_rate": job.fps,
    }


def _skyreels_kwargs(jobs: list[ClipItem]) -> dict:
    """SkyReels-V2 diffusion forcing, one window per call: from a picture (image-to-video),
    or from the previous window's last frames (`overlap_history` of them, video-to-video);
    its frame-rate embedding is told the rate (16 fps or not)."""
    job = jobs[0]
    kw = _text(jobs) | {"base_num_frames": job.num_frames, "fps": job.fps}
    if job.video:
        return kw | {"video": list(job.video), "overlap_history": len(job.video)}
    return kw | {"image": job.first}


_V2V: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # image-to-video -> video-to-video


def _skyreels_pipe(pipe, jobs: list[ClipItem]) -> tuple[object, int]:
    """Continuing from frames runs the video-to-video pipeline over the very same
    components; its output shows the frames it was given before the new window."""
    if not jobs[0].video:
        return pipe, 0
    from diffusers import SkyReelsV2DiffusionForcingVideoToVideoPipeline as V2V

    v2v = _V2V.get(pipe)
    if v2v is None or v2v.transformer is not pipe.transformer:
        v2v = _V2V[pipe] = V2V(**pipe.components)
        v2v.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return v2v, len(jobs[0].video)


@contextlib.contextmanager
def _seeded_global_rng(pipe, jobs: list[ClipItem]) -> Iterator[None]:
    """SkyReels' noise on the overlap (`addnoise_condition`) is drawn from torch's global
    generator, not the call's: seeded from the clip's seed for the call (then put back), so
    a window is the same alone, in a resumed run or on another worker."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(jobs[0].seed)
        yield


def _framepack_run(pipe, job: ClipItem, cancel: threading.Event | None):
    from .framepack import make_section

    return make_section(pipe, job, cancel)


ADAPTERS: dict[str, Adapter] = {
    "ltx": Adapter(batchable=lambda pipe, j: True, kwargs=_ltx_kwargs),
    # Wan repeats one conditioning image over the batch: one clip per call.
    "wan": Adapter(batchable=lambda pipe, j: False, kwargs=_wan_kwargs, around=_wan_image_tokens),
    "svd": Adapter(batchable=lambda pipe, j: True, kwargs=_svd_kwargs),
    "cogvideox": Adapter(batchable=lambda pipe, j: True, kwargs=_cog_kwargs),
    # One picture per call (HunyuanVideo 1.5 takes a single image; LTX-2 applies its
    # conditions and a single generator to the whole batch).
    "hunyuanvideo15": Adapter(
        batchable=lambda pipe, j: False, kwargs=_hunyuan15_kwargs, around=_guider_scale
    ),
    "ltx2": Adapter(batchable=lambda pipe, j: False, kwargs=_ltx2_kwargs),
    # One window per call (its image-to-video path batches last frames along the batch).
    "skyreels-df": Adapter(
        batchable=lambda pipe, j: False,
        kwargs=_skyreels_kwargs,
        around=_seeded_global_rng,
        pipe=_skyreels_pipe,
    ),
    "framepack": Adapter(batchable=lambda pipe, j: False, kwargs=_text, run=_framepack_run),
}


@dataclass(frozen=True)
class ClipAudio:
    """A clip's soundtrack, for families that make one (LTX-2): float32 samples in [-1, 1]
    shaped (channels, samples), at `rate` samples a second, starting with the clip's
    first frame."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[-1] / self.rate


def check_job(loaded: LoadedModel, job: ClipItem) -> None:
    ref = loaded.ref
    if loaded.family.name not in ADAPTERS:
        raise ValueError(f"model: {ref.label} is not an image-to-video model")
    if job.last is not None and not (ref.takes("last_frame") and _takes_last(loaded.pipe)):
        raise ValueError(
            f"model: {ref.label} cannot end a clip on a given last frame; use --mode "
            "continue, or a first-and-last-frame model (wan2.2-i2v-a14b, wan-flf2v-720p, "
            "ltx-video)"
        )
    if job.last_index not in (None, job.num_frames - 1) and not ref.takes("frames_at_indices"):
        raise ValueError(f"model: {ref.label} ends a clip on a given frame at its end only")
    if job.video and not ref.takes("video"):
        raise ValueError(f"model: {ref.label} cannot continue from several frames")
    native = _native_size(loaded.pipe)
    if native and native != (job.width, job.height):
        raise ValueError(native_only_message(ref.label, *native, job.width, job.height))
    if ref.legal_frames(job.num_frames) != job.num_frames:
        raise ValueError(
            f"frames: {ref.label} needs {ref.frame_rule} frames per clip "
            f"(got {job.num_frames}; use {ref.legal_frames(job.num_frames)})"
        )


def _native_size(pipe) -> tuple[int, int] | None:
    """(width, height) a denoiser is fixed to, or None: CogVideoX 1.0 image-to-video adds a
    learned position table of its native size, and the pipeline refuses any other."""
    config = _transformer_config(pipe)
    if config is None or not config.get("use_learned_positional_embeddings"):
        return None
    scale = getattr(pipe, "vae_scale_factor_spatial", 8)
    return config["sample_width"] * scale, config["sample_height"] * scale


def generate_clips(
    loaded: LoadedModel,
    jobs: list[ClipItem],
    *,
    runtime: Runtime | None = None,
    planner: Planner | None = None,
    cancel: threading.Event | None = None,
    on_result: Callable[[int, np.ndarray], None] | None = None,
    on_extra: Callable[[int, Any], None] | None = None,
) -> list[np.ndarray]:
    """Make every clip; returns float32 (frames, H, W, 3) arrays in [0, 1], in job order.

    Compatible jobs (same size, frames, steps, conditioning) run together in batches
    sized by the planner; `on_result` fires as each clip exists, and just before it
    `on_extra` with what the clip leaves besides its frames, where the family leaves
    something (LTX-2: its soundtrack, a `ClipAudio`; FramePack: a `SectionState`).
    """
    runtime = runtime or Runtime()
    planner = planner or Planner(runtime)
    adapter = ADAPTERS.get(loaded.family.name)
    for job in jobs:
        check_job(loaded, job)
    out: list[np.ndarray | None] = [None] * len(jobs)
    index = {id(job): i for i, job in enumerate(jobs)}
    for idxs in group_indices(jobs, lambda job: job.batch_key):
        first = jobs[idxs[0]]
        key = cost_key(loaded, first.width, first.height, first.steps, first.num_frames)

        def call(batch: list[ClipItem]) -> list[np.ndarray]:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if on_extra is None:
                return _call(loaded, batch, adapter, cancel)

            def keep(job: ClipItem, extra: Any) -> None:
                on_extra(index[id(job)], extra)

            return _call(loaded, batch, adapter, cancel, on_extra=keep)

        run_group(
            jobs,
            idxs,
            out,
            call,
            on_result=on_result,
            planner=planner,
            key=key,
            device=loaded.placement.device,
            savers=ladder_for(loaded),
            max_batch=None if adapter.batchable(loaded.pipe, first) else 1,
            on_failure=lambda: reset_fast_state(loaded.pipe),
        )
    return out  # type: ignore[return-value]


# Arguments not every pipeline takes: HunyuanVideo 1.5 makes its size from the image and
# guides through its guider.
_IF_TAKEN = ("height", "width", "guidance_scale")


def _call(
    loaded: LoadedModel,
    batch: list[ClipItem],
    adapter: Adapter,
    cancel: threading.Event | None,
    on_extra: Callable[[ClipItem, Any], None] | None = None,
) -> list[np.ndarray]:
    import torch

    job = batch[0]
    if adapter.run is not None:
        return _run_own(loaded, batch, adapter, cancel, on_extra)
    pipe, lead = adapter.pipe(loaded.pipe, batch) if adapter.pipe else (loaded.pipe, 0)
    takes = call_parameters(type(pipe))
    gens = [torch.Generator("cpu").manual_seed(j.seed) for j in batch]
    kwargs = adapter.kwargs(batch) | preset_kwargs(loaded, [j.negative_prompt for j in batch])
    kwargs |= {
        "height": job.height,
        "width": job.width,
        "num_frames": job.num_frames,
        "num_inference_steps": job.steps,
        # One clip: a single generator (the same numbers as a list of one, and the only
        # form every pipeline takes); several: one per clip, so each is the same alone.
        "generator": gens[0] if len(gens) == 1 else gens,
        "output_type": "np",
    }
    if "max_guidance_scale" not in kwargs:
        kwargs["guidance_scale"] = job.guidance
    kwargs = {k: v for k, v in kwargs.items() if k not in _IF_TAKEN or k in takes}
    stop = contextlib.nullcontext()
    if cancel is not None and "callback_on_step_end" in takes:
        kwargs["callback_on_step_end"] = _stop_on(cancel)
    elif cancel is not None:
        stop = _stop_denoisers(pipe, cancel)
    use_loras(loaded, job.loras)
    around = adapter.around(pipe, batch) if adapter.around else contextlib.nullcontext()
    with torch.inference_mode(), around, stop:
        output = pipe(**kwargs)
    frames = np.asarray(output.frames, dtype=np.float32)[:, lead:]
    _check_shape(loaded, frames, len(batch), job)
    if on_extra is not None and getattr(output, "audio", None) is not None:
        for each, audio in zip(batch, _soundtracks(pipe, output.audio), strict=True):
            on_extra(each, audio)
    return [frames[i] for i in range(len(batch))]


def _run_own(
    loaded: LoadedModel,
    batch: list[ClipItem],
    adapter: Adapter,
    cancel: threading.Event | None,
    on_extra: Callable[[ClipItem, Any], None] | None,
) -> list[np.ndarray]:
    """A family's own loop (`Adapter.run`), one clip at a time."""
    import torch

    use_loras(loaded, batch[0].loras)
    out = []
    for job in batch:
        with torch.inference_mode():
            frames, extra = adapter.run(loaded.pipe, job, cancel)
        _check_shape(loaded, frames[None], 1, job)
        if on_extra is not None:
            on_extra(job, extra)
        out.append(frames)
    return out


def _check_shape(loaded: LoadedModel, frames: np.ndarray, clips: int, job: ClipItem) -> None:
    """(clips, F, H, W, 3) at the job's size, or one line naming the model."""
    if frames.shape[:1] + frames.shape[2:4] != (clips, job.height, job.width):
        raise RuntimeError(f"{loaded.ref.label} returned frames of shape {frames.shape}")


def _soundtracks(pipe, audio) -> list[ClipAudio]:
    """Each clip's soundtrack from a pipeline's (batch, channels, samples) waveform, at its
    vocoder's output rate."""
    rate = int(pipe.vocoder.config.output_sampling_rate)
    waves = audio.float().cpu().numpy() if hasattr(audio, "cpu") else np.asarray(audio)
    return [ClipAudio(np.clip(w, -1.0, 1.0).astype(np.float32), rate) for w in waves]


def _stop_on(cancel: threading.Event) -> Callable:
    """A step callback that stops the call at the end of the step the user cancelled in.
    It raises rather than setting the pipeline's interrupt flag, which not every family's
    loop reads (SVD's runs on to the end)."""

    def on_step(pipe, step, timestep, callback_kwargs):
        if cancel.is_set():
            raise Cancelled("cancelled")
        return callback_kwargs

    return on_step


@contextlib.contextmanager
def _stop_denoisers(pipe, cancel: threading.Event) -> Iterator[None]:
    """Cancel for pipelines without step callbacks (HunyuanVideo 1.5): the next pass of a
    denoiser after the user cancelled raises instead of running. Hooks on the modules, on
    for this call only."""
    from .device import denoisers

    def check(module, args):
        if cancel.is_set():
            raise Cancelled("cancelled")

    hooks = [m.register_forward_pre_hook(check) for m in denoisers(pipe).values()]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
