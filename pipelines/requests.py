"""Requests: what a face asks the engine for, one typed object per kind.

`VideoRequest`, `ImageRequest` and `ThumbnailRequest` are shared by the CLI, the web UI, the
API and the job store. Each field carries its check, its help and where it shows
(`Option`): the CLI's flags and the UI's inputs are derived from the fields, so the faces
offer the same options by construction, and adding an option is adding a field.

`checked(limits)` checks every field, fills in what the model and the storyboard decide,
and returns the request as it will run; it raises one `ValueError` naming the field and the
fix. `to_json()`/`from_json()` are what the job store keeps. Each face reads
`Limits.from_env()` once, at its edge, and passes it in.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import Check, check_value, number, text
from .settings import Limits
from .storyboard import CONTINUITY, MIN_SIDE, MODES, SEED_MAX

THUMBNAIL_FORMATS = ("jpg", "png")
AUDIO_SUFFIXES = (".mp3", ".wav", ".ogg", ".m4a", ".aac", ".flac")
ROWS_SUFFIXES = (".csv", ".jsonl", ".txt")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LORA_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class Option:
    """How a request field is checked and shown."""

    help: str
    check: Check | None = None
    choices: tuple[str, ...] = ()
    cli: bool = True  # a `--flag` of the command (or its positional argument)
    ui: bool = True  # an input of the page and a parameter of the API
    positional: bool = False  # the command's positional argument
    aliases: tuple[str, ...] = ()  # older flag spellings the CLI keeps
    repeat: bool = False  # a list: the flag may be given more than once
    metavar: str | None = None  # how the CLI's help writes the flag's value


def option(default: Any, help: str, check: Check | None = None, **how: Any) -> Any:
    """A request field: its default, its help, its check, and how the faces show it."""
    return field(default=default, metadata={"option": Option(help, check, **how)})


def fields_of(cls: type) -> list[tuple[str, type, Option]]:
    """(name, type without None, option) for every field of a request class, in order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        kinds = [
            t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None)
        ]
        out.append((f.name, kinds[0], spec))
    return out


class Request:
    """What the three request kinds share: field checks and the job store's form."""

    def check_fields(self, limits: Limits) -> dict[str, Any]:
        """Every given field through its check (None means: decided later); the values."""
        values = {}
        for name, _kind, spec in fields_of(type(self)):
            value = getattr(self, name)
            if value is not None and spec.check is not None:
                value = check_value(spec.check, value, name, limits)
            if value is not None and spec.choices and value not in spec.choices:
                raise ValueError(
                    f"{name}: unknown {value!r} (choose one of: {', '.join(spec.choices)})"
                )
            values[name] = value
        return values

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_json(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_SIDE = number(MIN_SIDE, "max_side", integer=True)
_SEED = number(0, SEED_MAX, integer=True)
_STEPS = number(1, "max_steps", integer=True)


@dataclass(frozen=True)
class VideoRequest(Request):
    """A storyboard into one video. None: the storyboard's value, then the model's."""

    # A file (CLI), YAML or JSON text (the page, the API), or once checked the resolved
    # storyboard as plain JSON (what the job store keeps).
    storyboard: Any = option(None, "a YAML, JSON or TXT storyboard file", positional=True,
                             ui=False)  # fmt: skip
    model: str | None = option(None, "video model: auto (the best this GPU runs), a preset, "
                               "tiny, random:<preset>, a hub id or a folder (see `python -m "
                               "pipelines models`)")  # fmt: skip
    mode: str | None = option(None, "how shots are chained", choices=MODES)
    fps: int | None = option(None, "output frames per second", number(1, "max_fps", integer=True))
    width: int | None = option(None, "width in pixels", _SIDE)
    height: int | None = option(None, "height in pixels", _SIDE)
    seed: int | None = option(None, "the storyboard's seed (shots count on from it)", _SEED)
    steps: int | None = option(None, "denoising steps of each clip", _STEPS)
    negative_prompt: str | None = option(None, "what every shot should avoid", text())
    # A file on this machine (CLI), or the name of the upload in the job's folder (UI, API).
    audio: str | None = option(None, "music for the video (replaces the storyboard's)")
    image_model: str | None = option(None, "the keyframe model (and every frame's in feedback "
                                     "mode); default sd-turbo, or the tiny twin")  # fmt: skip
    # Files on this machine (CLI), or uploads' names in the job's folder (UI, API); each is
    # checked (a picture, a safetensors LoRA) when the storyboard is read.
    loras: tuple[str, ...] | None = option(None, "LoRAs for the keyframe model, over the "
                                           "storyboard's: PATH or PATH:SCALE (again for more)",
                                           repeat=True, aliases=("--lora",),
                                           metavar="PATH[:SCALE]")  # fmt: skip
    lora_scale: float | None = option(None, "how strongly the uploaded LoRAs apply",
                                      number(-4, 4), cli=False)  # fmt: skip
    images: tuple[str, ...] | None = option(None, "a picture as a shot's first frame, "
                                            "SHOT:PATH with shots counted from 1 (again for "
                                            "more)", repeat=True, aliases=("--image",),
                                            metavar="SHOT:PATH")  # fmt: skip
    continuity: str | None = option(None, "one look across shots: later keyframes start from "
                                    "the previous shot's or from the reference picture",
                                    choices=CONTINUITY)  # fmt: skip
    reference: str | None = option(None, "the picture every keyframe starts from (sets "
                                   "continuity: reference)")  # fmt: skip
    continuity_strength: float | None = option(None, "how much of the previous keyframe or the "
                                               "reference carries on (0 to 1)",
                                               number(0, 1, lo_open=True, hi_open=True))  # fmt: skip
    # Checked against the model (its legal clip lengths) when the storyboard is read.
    clip_frames: int | None = option(None, "frames per clip (default: the model's)",
                                     number(None, None, integer=True))  # fmt: skip

    def checked(self, limits: Limits, *, runtime=None, files: bool = True) -> VideoRequest:
        """The request as it will run: fields checked, the storyboard resolved (its values,
        the model's defaults for what it leaves out, these fields over both). `files`:
        whether the storyboard may name files on this machine (the CLI; on the server,
        music comes as an upload)."""
        return _video_checked(self, limits, runtime, files)

    def options(self, limits: Limits):
        """The engine's run options for this request."""
        from .chain import VideoOptions

        shared = [f.name for f in dataclasses.fields(VideoOptions) if hasattr(self, f.name)]
        return VideoOptions(**{n: getattr(self, n) for n in shared}, limits=limits)

    def summary(self) -> dict[str, Any]:
        """What History shows of a checked request: length, frames, shots."""
        sb = self.storyboard if isinstance(self.storyboard, dict) else {}
        shots = sb.get("shots") or []
        seconds = sum(s.get("seconds", 0) for s in shots)
        return {"seconds": seconds, "frames": round((self.fps or 0) * seconds),
                "shots": len(shots)}  # fmt: skip


@dataclass(frozen=True)
class ImageRequest(Request):
    """Text-to-image, or image-to-image from `init_image`. None: the model's value."""

    prompt: str = option("", "what to draw", text(required=True), positional=True)
    count: int = option(1, "images to make (seeds seed, seed+1, ...)",
                        number(1, "max_count", integer=True))  # fmt: skip
    model: str | None = option(None, "image model: a preset, tiny, random:<preset>, a hub id, "
                               "a folder or a .safetensors file")  # fmt: skip
    seed: int = option(0, "seed of the first image", _SEED)
    width: int | None = option(None, "width in pixels", number(1, "max_side", integer=True))
    height: int | None = option(None, "height in pixels", number(1, "max_side", integer=True))
    steps: int | None = option(None, "denoising steps", _STEPS)
    guidance: float | None = option(None, "guidance scale (0 turns it off)", number(0, 50))
    negative_prompt: str = option("", "what to avoid", text(), aliases=("--negative",))
    init_image: Path | None = option(None, "start from this picture (image-to-image)",
                                     ui=False, aliases=("--init",))  # fmt: skip
    strength: float = option(0.6, "with an init image: how far to move from it",
                             number(0, 1, lo_open=True), ui=False)  # fmt: skip
    # Files on this machine (CLI), or uploads' names in the job's folder (UI, API).
    loras: tuple[str, ...] = option((), "a LoRA for the image model, PATH or PATH:SCALE (again "
                                    "for more)", repeat=True,
                                    aliases=("--lora",), metavar="PATH[:SCALE]")  # fmt: skip
    lora_scale: float | None = option(None, "how strongly the uploaded LoRAs apply",
                                      number(-4, 4), cli=False)  # fmt: skip

    def checked(self, limits: Limits) -> ImageRequest:
        """The request as it will run: fields checked, the model resolved, what it decides
        (size, steps, guidance) filled in; an init image must read."""
        from .images import image_defaults, read_init_image
        from .models import resolve_model

        values = self.check_fields(limits)
        ref = resolve_model(self.model, "image")
        if ref.family.kind != "image":
            raise ValueError(
                f"model: {ref.label} is a video model; use an image preset such as sd-turbo or tiny"
            )
        req = dataclasses.replace(self, **{**values, "model": ref.spec})
        req = dataclasses.replace(req, **image_defaults(req, ref, limits))
        if req.init_image is not None:
            read_init_image(Path(req.init_image), req.width, req.height)
        return dataclasses.replace(req, loras=_checked_loras(req.loras))


@dataclass(frozen=True)
class ThumbnailRequest(Request):
    """Rows (a CSV, JSONL or TXT file) or a video's frames into titled thumbnails."""

    input: Path | None = option(None, "a CSV, JSONL or TXT file of rows", positional=True,
                                ui=False)  # fmt: skip
    preset: str = option("youtube", "youtube, shorts, square or WxH; a row's preset wins")
    variants: int = option(1, "images per row (or frames from a video)",
                           number(1, "max_count", integer=True))  # fmt: skip
    model: str | None = option(None, "image model (default: sd-turbo, or the tiny twin)")
    format: str = option("jpg", "jpg (kept under 2 MB) or png", choices=THUMBNAIL_FORMATS)
    from_video: Path | None = option(None, "pick frames from a run folder or a video file",
                                     ui=False)  # fmt: skip
    # Files on this machine (CLI), or uploads' names in the job's folder (UI, API).
    loras: tuple[str, ...] = option((), "a LoRA for the image model, PATH or PATH:SCALE (again "
                                    "for more)", repeat=True,
                                    aliases=("--lora",), metavar="PATH[:SCALE]")  # fmt: skip
    lora_scale: float | None = option(None, "how strongly the uploaded LoRAs apply",
                                      number(-4, 4), cli=False)  # fmt: skip

    def options(self, limits: Limits, *, dry_run: bool = False):
        """The engine's options for this request, checked (one line naming the field)."""
        from .thumbnails import ThumbnailOptions

        self.check_fields(limits)
        _checked_loras(self.loras)
        shared = [f.name for f in dataclasses.fields(ThumbnailOptions) if hasattr(self, f.name)]
        return ThumbnailOptions(**{n: getattr(self, n) for n in shared}, dry_run=dry_run,
                                limits=limits)  # fmt: skip


def _checked_loras(loras) -> tuple[str, ...]:
    """`PATH[:SCALE]` LoRAs, each checked (safetensors, readable, LoRA weights), with
    absolute paths."""
    from .lora import parse_lora

    return tuple(f"{lora.path}:{lora.scale:g}" for lora in map(parse_lora, loras or ()))


def _video_checked(req: VideoRequest, limits: Limits, runtime, files: bool) -> VideoRequest:
    from .chain import read_request

    req.check_fields(limits)
    sb, models = read_request(req, limits, runtime=runtime, files=files)
    return dataclasses.replace(
        req,
        storyboard=json.loads(json.dumps(sb.to_dict())),  # resolved, as plain JSON
        model=(models.video or models.image).spec,
        mode=sb.mode,
        image_model=models.image.spec,
        fps=sb.fps,
        width=sb.width,
        height=sb.height,
        steps=sb.steps,
        negative_prompt=sb.negative_prompt,
        seed=sb.seed,
    )


def check_upload(path: str | Path, suffixes: Sequence[str], limits: Limits, name: str) -> str:
    """An uploaded file's suffix, once its type and size pass; the job stores it under a
    name the server chooses (`audio.mp3`, `rows.csv`), never the uploader's."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise ValueError(
            f"{name}: {suffix or 'no'} file type is not accepted (use {', '.join(suffixes)})"
        )
    if not path.is_file():
        raise ValueError(f"{name}: the upload did not arrive; try again")
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise ValueError(f"{name}: {size} bytes is over the limit of {limits.max_upload_bytes}")
    return suffix


def check_audio(path: str | Path, limits: Limits) -> str:
    """A music upload's suffix, once its type and size pass and it decodes as audio: a text
    file named `.mp3` is refused with the request, not when its job runs."""
    from .video_io import audio_duration

    suffix = check_upload(path, AUDIO_SUFFIXES, limits, "audio")
    try:
        audio_duration(Path(path))
    except ValueError as exc:  # "audio: cannot read '<upload name>': no audio stream"
        reason = str(exc).rpartition(": ")[2]
        raise ValueError(f"audio: the upload is not music Reelchain can read ({reason})") from None
    return suffix


def look_uploads(
    values: dict[str, Any], scale: float | None, limits: Limits
) -> tuple[dict[str, Any], dict[str, str]]:
    """A video request's uploaded LoRAs, start pictures and reference picture (their type
    and size checked): the request fields that point at the uploads, and the name each
    upload is kept under in the job's folder (the server's choice, never the uploader's).
    A start picture goes to the shot its file name numbers (`2.png`: shot 2), the others
    to the shots in order."""
    fields: dict[str, Any] = {}
    loras, names = lora_uploads(values, scale, limits)
    if loras:
        fields["loras"] = loras
    pictures = _numbered(_upload_paths(values.get("images")))
    for k, path in pictures:
        names[path] = f"shot-{k}" + check_upload(path, PICTURE_SUFFIXES, limits, "images")
    if pictures:
        fields["images"] = tuple(f"{k}:{path}" for k, path in pictures)
    reference = _upload_paths(values.get("reference"))
    if reference:
        names[reference[0]] = "reference" + check_upload(
            reference[0], PICTURE_SUFFIXES, limits, "reference"
        )
        fields["reference"] = reference[0]
    return fields, names


def lora_uploads(
    values: dict[str, Any], scale: float | None, limits: Limits
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Uploaded LoRAs (type and size checked): `PATH:SCALE` for the request, and the name
    each is kept under in the job's folder (`lora-1.safetensors`, ...)."""
    paths = _upload_paths(values.get("loras"))
    names: dict[str, str] = {}
    for path in paths:
        suffix = check_upload(path, LORA_SUFFIXES, limits, "loras")
        names[path] = _lora_name(Path(path).stem, suffix, set(names.values()))
    return tuple(f"{path}:{1.0 if scale is None else scale:g}" for path in paths), names


def _lora_name(stem: str, suffix: str, taken: set[str]) -> str:
    """An uploaded LoRA's name in the job's folder: its own name made safe (letters,
    digits, `_`, `-`), since `<lora:name:scale>` in the images' parameters names it."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", stem)[:60].strip("-") or "lora"
    name, n = base + suffix, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}{suffix}"
    return name


def renamed_loras(loras, names: dict[str, str]) -> list[str]:
    """Checked `PATH:SCALE` LoRAs with each uploaded file's path put as its name in the
    job's folder (what the job store keeps)."""
    by_path = {os.path.realpath(p): n for p, n in names.items()}
    out = []
    for spec in loras or ():
        path, _, scale = str(spec).rpartition(":")
        out.append(f"{by_path.get(os.path.realpath(path), path)}:{scale}")
    return out


def loras_in_folder(params: dict[str, Any], root: Path) -> dict[str, Any]:
    """A stored request's params with its LoRAs' names in the job's folder made paths."""
    names = params.get("loras") or ()
    return {**params, "loras": [s if os.path.isabs(s) else str(root / s) for s in names]}


def _upload_paths(value: Any) -> list[str]:
    """An upload input's file paths (one file, several, or none)."""
    if value in (None, "", [], ()):
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [str(Path(getattr(v, "path", v) if not isinstance(v, dict) else v["path"]))
            for v in items]  # fmt: skip


def _numbered(paths: list[str]) -> list[tuple[int, str]]:
    """(shot, path) pairs: the number in a file's name, else the next shot without one."""
    shots: dict[int, str] = {}
    for path in paths:
        match = re.search(r"(\d+)", Path(path).stem)
        if match and int(match[1]) >= 1 and int(match[1]) not in shots:
            shots[int(match[1])] = path
    free = (k for k in itertools.count(1) if k not in shots)
    numbered = set(shots.values())
    shots |= {next(free): path for path in paths if path not in numbered}
    return sorted(shots.items())
