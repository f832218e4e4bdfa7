"""Storyboards: the plan for one long video, parsed and checked before any GPU work starts.

A storyboard is a list of shots (prompt + seconds) plus global settings. It is the only
input a user writes by hand, and a mistake in it is expensive when found an hour into a
render, so this module is strict: every problem becomes a one-line `StoryboardError` (a
`ValueError`) of the form ``<field path>: <what is wrong and how to fix it>``, raised while
parsing, before a model is loaded.

Accepted input
--------------
* YAML (``.yaml``/``.yml``) or JSON (``.json``): a mapping of settings with ``shots:``.
  A top-level *list* is also accepted and taken as the shots, with every setting at its
  default. Each shot is a mapping or a plain prompt string (which gets the default
  ``seconds``).
* TXT (``.txt``): one shot per non-empty line, 2 seconds each; lines starting with ``#`` are
  comments; every setting takes its default.
* Text pasted into the UI: YAML or JSON, detected automatically (`parse_storyboard`).

``null`` (an empty YAML value) means "use the default" for every field; only ``prompt`` and
``shots`` have none. Duplicate keys are errors rather than "last one wins".

Resolved form
-------------
Parsing yields frozen dataclasses with every default filled in: per-shot seeds
(storyboard seed + shot index, wrapped into 0..2**32-1), per-shot negative prompts
(inherited from the global one), an absolute audio path, and ``transition_seconds`` of 0.0
for cuts. `Storyboard.to_dict` of that is what a run saves as storyboard.json, and
`Storyboard.from_dict` reads it back to an equal object, so a resumed run renders exactly
the plan it started with.

Bounds
------
Fixed: width/height a multiple of 8 from 32 up (the twins' size; a real model checks its own
size rule); interpolate 1..8; seed 0..2**32-1; steps 1..1000; guidance 0..100; motion zoom 0.5..2, pan -512..512 px/frame, rotate -180..180
degrees/frame; strength 0 < s < 1; model name 1..200 characters. The rest come from
`Limits` (a deployment may tighten them): fps 1..max_fps, sides up to max_side, prompts and
negative prompts up to max_prompt_chars, shots 1..max_shots, seconds per shot in
(0, max_shot_seconds], total seconds up to max_seconds_total. An error caused by a limit
names it, so an operator can tell a policy from a typo.

Crossfades: ``transition_seconds`` must be > 0 and shorter than both shots it joins, the
last shot cannot crossfade, and a shot's incoming and outgoing crossfades together must be
shorter than the shot (some of it has to be shown unblended). Every shot must get at least
one output frame at the storyboard's fps.

Model-specific rules (a model's own size multiple, its frame limits) are checked where the
model is known, not here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import yaml

from .checks import (
    Check,
    Env,
    Invalid,
    Site,
    boolean,
    choice,
    did_you_mean,
    num,
    number,
    quote_hint,
    show,
    text,
)
from .settings import Limits  # one set of caps for every face

MODES = ("continue", "keyframes", "feedback")
CONTINUITY = ("none", "previous", "reference")
LORAS_MODES = ("add", "replace")
LORA_MODELS = ("image", "video")
AUDIO_MIXES = ("mix", "replace")
MAX_DUCK_DB = 60.0
MAX_CARD_SECONDS = 60.0
TRANSITIONS = ("cut", "crossfade")
FORMATS = ("mp4", "webm", "gif")
SUFFIXES = {".json": "json", ".txt": "txt", ".yaml": "yaml", ".yml": "yaml"}
PARSE_FORMATS = ("yaml", "json", "txt")

DEFAULT_SHOT_SECONDS = 2.0
DEFAULT_CROSSFADE_SECONDS = 0.5
SEED_MAX = 2**32 - 1
MIN_SIDE = 32  # the tiny twins run at 32 px; real models are checked by their own size rule
SIDE_MULTIPLE = 8
MAX_INTERPOLATE = 8
MAX_GUIDANCE = 100.0
MAX_PAN = 512.0
MAX_ROTATE = 180.0
MAX_MODEL_CHARS = 200
MAX_DEPTH = 20  # nesting a storyboard may have (it needs 4: settings, shots, a shot, motion)
_TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels; a storyboard needs 4)"


class StoryboardError(ValueError):
    """One storyboard problem: ``path`` is the field ("shots[2].seconds", or "storyboard"
    for the document as a whole) so a UI can point at it; ``problem`` says what to fix."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path or "storyboard"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Motion:
    """Camera motion per output frame, used by feedback mode (ignored by the others)."""

    zoom: float = 1.0
    pan_x: float = 0.0
    pan_y: float = 0.0
    rotate: float = 0.0


@dataclass(frozen=True)
class LoraUse:
    """A LoRA file, how strongly it applies, and which of the run's models it patches: the
    image model (keyframes, and every frame in feedback mode) or the video model."""

    # `file`, not `path`: gradio_client takes any {"path": text} in an API answer for a file
    # to download, and the job API answers with the storyboard.
    file: str
    scale: float = 1.0
    model: str = "image"


@dataclass(frozen=True)
class Card:
    """A title card before the video, or an end card after it."""

    text: str
    seconds: float = 2.0
    background: str = "black"  # a colour name or #rrggbb, first_frame or last_frame


@dataclass(frozen=True)
class Shot:
    """One resolved shot. ``transition`` is how this shot hands over to the next one;
    ``transition_seconds`` is 0.0 for a cut. ``motion`` and ``strength`` are only read in
    feedback mode but always present, so switching mode needs no re-parse."""

    prompt: str
    seconds: float
    negative_prompt: str
    seed: int
    transition: str
    transition_seconds: float
    motion: Motion
    strength: float
    image: str | None = None  # a picture that is this shot's first frame (its keyframe)
    caption: str | None = None  # burned in under the shot, and in the .srt
    loras: tuple[LoraUse, ...] = ()  # resolved: the storyboard's plus (or instead of) its own
    loras_mode: str = "replace"  # as resolved, `loras` is the whole list


@dataclass(frozen=True)
class Storyboard:
    """A fully resolved, validated storyboard. Build it with `load_storyboard`,
    `parse_storyboard` or `Storyboard.from_dict`; direct construction skips validation."""

    mode: str
    fps: int
    width: int
    height: int
    seed: int
    model: str | None
    negative_prompt: str
    audio: str | None
    interpolate: int
    color_match: bool
    steps: int | None
    guidance: float | None
    format: str
    # Keyword-only, so that they may stand before `shots` (the field table's order).
    loras: tuple[LoraUse, ...] = dc_field(default=(), kw_only=True)
    # none | previous | reference: later keyframes from earlier ones, or from `reference`
    continuity: str = dc_field(default="none", kw_only=True)
    reference: str | None = dc_field(default=None, kw_only=True)
    continuity_strength: float = dc_field(default=0.5, kw_only=True)  # how much carries on
    title: Card | None = dc_field(default=None, kw_only=True)
    end_card: Card | None = dc_field(default=None, kw_only=True)
    voice: str | None = dc_field(default=None, kw_only=True)  # the music ducks under it
    duck_db: float = dc_field(default=12.0, kw_only=True)
    music_fade: float = dc_field(default=1.0, kw_only=True)  # seconds, with finishing
    # With a model that makes sound (LTX-2): `audio` mixed with it, or in its place.
    audio_mix: str = dc_field(default="mix", kw_only=True)
    shots: tuple[Shot, ...]

    @property
    def finishing(self) -> bool:
        """Whether anything is added after the stitch (otherwise the stitch is the video)."""
        return bool(self.title or self.end_card or self.voice
                    or any(shot.caption for shot in self.shots))  # fmt: skip

    @property
    def total_seconds(self) -> float:
        return math.fsum(shot.seconds for shot in self.shots)

    @property
    def total_frames(self) -> int:
        return round(self.fps * self.total_seconds)

    def shot_frames(self) -> list[int]:
        """Output frames per shot.

        Shot k ends at frame round(fps * (seconds of shots 0..k)); rounding the cumulative
        boundaries rather than each shot keeps the per-shot counts summing to
        `total_frames` exactly, so audio and shot starts never drift over a long video.
        """
        seconds = [shot.seconds for shot in self.shots]
        ends = [round(self.fps * math.fsum(seconds[: k + 1])) for k in range(len(seconds))]
        return [end - start for start, end in zip([0, *ends[:-1]], ends, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """The resolved storyboard as plain JSON-ready data (what storyboard.json holds)."""
        data = dataclasses.asdict(self)
        data["shots"] = list(data["shots"])
        for record in (data, *data["shots"]):
            record["loras"] = list(record["loras"])
        return data

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        limits: Limits | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> Storyboard:
        """Validate and resolve already-loaded data (a mapping, or a list of shots).

        ``base_dir`` is the folder a relative ``audio`` path is taken from (default: the
        current directory).
        """
        return _build(data, Env.make(base_dir, limits, defaults))

    def replace(self, *, limits: Limits | None = None, **changes: Any) -> Storyboard:
        """A copy with top-level fields changed (CLI overrides such as mode or model),
        validated again.

        Shots whose seed or negative prompt was inherited follow a changed ``seed`` or
        ``negative_prompt``: a shot counts as inheriting when its value equals what the
        default would give, since the resolved form keeps no other record of it.
        """
        data = self.to_dict()
        if isinstance(changes.get("shots"), list | tuple):
            changes["shots"] = [
                dataclasses.asdict(s) if isinstance(s, Shot) else s for s in changes["shots"]
            ]
        elif "shots" not in changes:
            for index, shot in enumerate(data["shots"]):
                if "seed" in changes and shot["seed"] == _shot_seed(self.seed, index):
                    shot["seed"] = None
                if "negative_prompt" in changes and shot["negative_prompt"] == self.negative_prompt:
                    shot["negative_prompt"] = None
                if "loras" in changes:  # shots that added to the old list add to the new
                    old = data["loras"]
                    if shot["loras"][: len(old)] == old:
                        shot["loras"] = [*changes["loras"], *shot["loras"][len(old) :]]
        data.update(changes)
        return _build(data, Env.make(None, limits))


@dataclass(frozen=True)
class StoryboardSource:
    """A storyboard's text, its format, and the folder its relative paths start from."""

    text: str
    fmt: str | None
    base_dir: Path | None

    def parse(
        self, *, limits: Limits | None = None, defaults: Mapping[str, Any] | None = None
    ) -> Storyboard:
        return parse_storyboard(
            self.text, base_dir=self.base_dir, limits=limits, fmt=self.fmt, defaults=defaults
        )


# Storyboard keys that name files. The look's (start pictures, the reference, LoRAs) come
# to a server as uploads, kept in the job's folder; music is an upload of its own.
LOOK_FILE_FIELDS = ("reference", "loras")
FILE_FIELDS = ("audio", "voice", *LOOK_FILE_FIELDS)
SHOT_FILE_FIELDS = ("image", "loras")


def map_look_files(data: Mapping[str, Any], rename: Callable[[str], str | None]) -> dict:
    """A copy of a resolved storyboard's data with `rename` applied to each file of its look
    (`LOOK_FILE_FIELDS`, and `SHOT_FILE_FIELDS` in every shot): names in a job's folder to
    paths, or back; `rename` giving None drops the file (a LoRA naming it goes too)."""

    def mapped(holder: dict, fields: tuple[str, ...]) -> None:
        for key in fields:
            value = holder.get(key)
            if isinstance(value, str) and value:
                holder[key] = rename(value)
            elif isinstance(value, list):
                loras = [dict(lo, file=rename(lo["file"])) for lo in value]
                holder[key] = [lo for lo in loras if lo["file"] is not None]

    out = copy.deepcopy(dict(data))
    mapped(out, LOOK_FILE_FIELDS)
    for shot in out.get("shots", []):
        mapped(shot, SHOT_FILE_FIELDS)
    return out


def named_files(text: str) -> list[str]:
    """The fields of a storyboard's text that name files (`audio`, `shots[2].image`, ...):
    a server refuses those before reading any of them."""
    data = _load_data(text, None)
    if isinstance(data, list | tuple):
        data = {"shots": data}
    if not isinstance(data, Mapping):
        return []
    named = [k for k in FILE_FIELDS if data.get(k)]
    shots = data.get("shots")
    for index, shot in enumerate(shots if isinstance(shots, list | tuple) else []):
        if isinstance(shot, Mapping):
            named += [f"shots[{index}].{k}" for k in SHOT_FILE_FIELDS if shot.get(k)]
    return named


def read_storyboard_file(path: str | os.PathLike[str]) -> StoryboardSource:
    """Read a storyboard file once; its suffix picks the format, its folder anchors ``audio``."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        allowed = ", ".join(SUFFIXES)
        raise StoryboardError(
            "", f"unsupported file type {path.suffix or '(none)'!r} (allowed: {allowed})"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise StoryboardError("", f"file not found: {str(path)!r}") from None
    except IsADirectoryError:
        raise StoryboardError("", f"not a file: {str(path)!r}") from None
    except UnicodeDecodeError:
        raise StoryboardError("", f"cannot read {str(path)!r}: not UTF-8 text") from None
    except OSError as exc:
        raise StoryboardError("", f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return StoryboardSource(text, fmt, Path(os.path.abspath(path)).parent)


def load_storyboard(
    path: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Storyboard:
    """Read and parse a storyboard file.

    ``defaults`` replace the built-in defaults of top-level keys the file leaves out.
    """
    return read_storyboard_file(path).parse(limits=limits, defaults=defaults)


def parse_storyboard(
    text: str,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    limits: Limits | None = None,
    fmt: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Storyboard:
    """Parse storyboard text; ``fmt`` is "yaml", "json", "txt", or None to detect.

    Detection: text starting with ``{`` or ``[`` is read as JSON first (and, since JSON is
    YAML, as YAML if that fails, which admits YAML flow style); when both fail the JSON
    error is reported, as that is what the author meant. Anything else is YAML.
    """
    if fmt is not None and fmt not in PARSE_FORMATS:
        raise ValueError(f"fmt: must be one of {', '.join(PARSE_FORMATS)} or None (got {fmt!r})")
    env = Env.make(base_dir, limits, defaults)
    text = text.removeprefix("\ufeff")
    if fmt == "txt":
        return _parse_txt(text, env)
    return _build(_load_data(text, fmt), env)


# --- reading text -----------------------------------------------------------------------


def _load_data(text: str, fmt: str | None) -> Any:
    """The document's data, refused (one line) when it does not read or is nested past
    `MAX_DEPTH` (the parsers recurse per level: 100,000 levels would exhaust the stack)."""
    try:
        data = _parse_text(text, fmt)
    except RecursionError:
        raise StoryboardError("", _TOO_DEEP) from None
    if _depth(data) > MAX_DEPTH:
        raise StoryboardError("", _TOO_DEEP)
    return data


def _depth(data: Any) -> int:
    """How deeply lists and mappings nest in `data`. Iterative (no recursion to exhaust) and
    once per object: YAML aliases share objects, and walking every path through nine levels
    of nine aliases ("billion laughs") would take 9**9 steps."""
    depth: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        value, children_done = stack.pop()
        if not isinstance(value, Mapping | list | tuple) or id(value) in depth:
            continue
        children = list(value.values()) if isinstance(value, Mapping) else list(value)
        if children_done:
            depth[id(value)] = 1 + max((depth.get(id(c), 0) for c in children), default=0)
            if depth[id(value)] > MAX_DEPTH:
                return depth[id(value)]
        else:
            stack.append((value, True))
            stack.extend((c, False) for c in children)
    return depth.get(id(data), 0)


def _parse_text(text: str, fmt: str | None) -> Any:
    if not text.strip():
        raise StoryboardError("", "is empty (expected a mapping with 'shots', or a list of shots)")
    if fmt == "json" or (fmt is None and text.lstrip()[0] in "{["):
        try:
            return json.loads(text, object_pairs_hook=_json_object)
        except json.JSONDecodeError as exc:
            json_error = StoryboardError(
                "", f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            )
        if fmt == "json":
            raise json_error
        try:
            return _load_yaml(text)
        except StoryboardError:
            raise json_error from None
    return _load_yaml(text)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StoryboardError("", f"duplicate key {key!r}")
        result[key] = value
    return result


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (YAML's default keeps the last) and
    reads numbers the way people write them: YAML 1.1 wants a dot in a float, so `1e9`
    would be the string '1e9'; here, as in YAML 1.2 and JSON, it is the number 1e9."""


# YAML 1.2's float syntax (the core schema) next to SafeLoader's own (YAML 1.1): exponents
# without a dot, an optional sign on the exponent.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    # Only the mapping's own keys count: a key that overrides one merged in with `<<` is
    # the point of a merge, not a duplicate.
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise StoryboardError("", f"not valid YAML or JSON ({where}{problem})") from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise StoryboardError("", f"not valid YAML or JSON ({problem})") from None


def _parse_txt(text: str, env: Env) -> Storyboard:
    """One shot per line; errors about a shot also give its line number in the file."""
    shots: list[dict[str, Any]] = []
    line_numbers: list[int] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            shots.append({"prompt": prompt, "seconds": DEFAULT_SHOT_SECONDS})
            line_numbers.append(line_number)
    try:
        return _build({"shots": shots}, env)
    except StoryboardError as exc:
        match = re.match(r"shots\[(\d+)\]", exc.path)
        if match is None:
            raise
        line = line_numbers[int(match[1])]
        raise StoryboardError(exc.path, f"{exc.problem} (line {line})") from None


# --- field checks -----------------------------------------------------------------------


_REQUIRED = object()


@dataclass(frozen=True)
class _Field:
    """One key of a record: how to check it, and its default (a value, or ``derive``
    computing it from the record's scope). ``missing`` is the problem when it is required."""

    name: str
    check: Check
    default: Any = _REQUIRED
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    missing: str = "is required"


def _file(value: Any, site: Site) -> str:
    """An existing file, relative to the storyboard's folder; resolved to an absolute path
    so the resolved storyboard no longer depends on where it was read from."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a file path (got {show(value)})")
    try:
        path = Path(value.strip()).expanduser()
    except RuntimeError:  # `~someone/...` for a user this machine does not have
        raise Invalid(f"no such user's home folder in {value!r}; write the full path") from None
    if not path.is_absolute():
        path = site.env.base_dir / path
    if not path.exists():
        raise Invalid(f"file not found: {value!r}")
    if not path.is_file():
        raise Invalid(f"not a file: {value!r}")
    return os.path.normpath(path)


_audio = _file  # read as audio where the model is known (`chain.check_storyboard`)


def _picture(value: Any, site: Site) -> str:
    """An existing file that opens as a picture of sane size (a decompression bomb is
    refused before it is decoded)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = _file(value, site)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise Invalid(f"{value!r} has too many pixels to be a picture to start from") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise Invalid(f"{value!r} is not a picture (use a PNG, JPEG or WebP)") from None
    return path


_LORA_FIELDS = (
    _Field("file", _file, missing="is required (a .safetensors file)"),
    _Field("scale", number(-4, 4), 1.0),
    _Field("model", choice(LORA_MODELS), "image"),
)


def _loras(value: Any, site: Site) -> tuple[LoraUse, ...]:
    """LoRA files: mappings `{file, scale, model}` or `FILE[:SCALE]` strings; each must be a
    readable safetensors file holding LoRA weights."""
    from .lora import Lora, check_lora

    if not isinstance(value, list | tuple):
        raise Invalid(f"must be a list of LoRAs (got {show(value)})")
    out = []
    for index, item in enumerate(value):
        path = f"{site.path}[{index}]"
        if isinstance(item, str):
            name, _, scale = item.rpartition(":")
            item = {"file": name, "scale": float(scale)} if _is_number(scale) and name else {
                "file": item}  # fmt: skip
        use = LoraUse(**_parse_record(item, _LORA_FIELDS, path, site.env))
        try:
            check_lora(Lora(use.file, use.scale), path)
        except ValueError as exc:
            raise StoryboardError(path, str(exc).partition(": ")[2]) from None
        out.append(use)
    return tuple(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _card(value: Any, site: Site) -> Card:
    """A card: its text alone, or `{text, seconds, background}`."""
    from PIL import ImageColor

    if isinstance(value, str):
        value = {"text": value}
    card = Card(**_parse_record(value, _CARD_FIELDS, site.path, site.env))
    if card.background not in ("first_frame", "last_frame"):
        try:
            ImageColor.getrgb(card.background)
        except ValueError:
            raise StoryboardError(
                f"{site.path}.background",
                f"{card.background!r} is not a colour (use a name, #rrggbb, first_frame or "
                "last_frame)",
            ) from None
    return card


def _record(fields: tuple[_Field, ...], build: Callable[..., Any]) -> Check:
    def check(value: Any, site: Site) -> Any:
        return build(**_parse_record(value, fields, site.path, site.env))

    return check


def _shots(value: Any, site: Site) -> tuple[Shot, ...]:
    if not isinstance(value, list | tuple):
        raise Invalid(f"must be a list of shots (got {show(value)})")
    if not value:
        raise Invalid("at least one shot is required")
    limit = site.env.limits.max_shots
    if len(value) > limit:
        raise Invalid(f"at most {limit} shots are allowed (got {len(value)}; limit max_shots)")
    shots = []
    for index, item in enumerate(value):
        path = f"shots[{index}]"
        if isinstance(item, str):
            item = {"prompt": item}
        elif not isinstance(item, Mapping):
            raise StoryboardError(
                path, f"must be a mapping or a prompt string (got {show(item)}){quote_hint(item)}"
            )
        inherited = {
            "index": index,
            "storyboard_seed": site.scope["seed"],
            "storyboard_negative_prompt": site.scope["negative_prompt"],
        }
        values = _parse_record(item, _SHOT_FIELDS, path, site.env, inherited)
        own = values["loras"] or ()
        if values["loras_mode"] == "add":
            own = (*site.scope["loras"], *own)
        values.update(loras=tuple(own), loras_mode="replace")  # resolved: the whole list
        shots.append(Shot(**values))
    return tuple(shots)


def _shot_seed(storyboard_seed: int, index: int) -> int:
    return (storyboard_seed + index) % (SEED_MAX + 1)


# --- the schema -------------------------------------------------------------------------

_MOTION_FIELDS = (
    _Field("zoom", number(0.5, 2.0), Motion.zoom),
    _Field("pan_x", number(-MAX_PAN, MAX_PAN), Motion.pan_x),
    _Field("pan_y", number(-MAX_PAN, MAX_PAN), Motion.pan_y),
    _Field("rotate", number(-MAX_ROTATE, MAX_ROTATE), Motion.rotate),
)

_SHOT_FIELDS = (
    _Field("prompt", text(required=True), missing="must be a non-empty string"),
    _Field("seconds", number(0, "max_shot_seconds", lo_open=True), DEFAULT_SHOT_SECONDS),
    _Field("negative_prompt", text(), derive=lambda s: s["storyboard_negative_prompt"]),
    _Field(
        "seed",
        number(0, SEED_MAX, integer=True),
        derive=lambda s: _shot_seed(s["storyboard_seed"], s["index"]),
    ),
    _Field("transition", choice(TRANSITIONS), "cut"),
    # Range rules depend on the neighbouring shots: see _check_shots.
    _Field(
        "transition_seconds",
        number(),
        derive=lambda s: DEFAULT_CROSSFADE_SECONDS if s["transition"] == "crossfade" else 0.0,
    ),
    _Field("motion", _record(_MOTION_FIELDS, Motion), Motion()),
    _Field("strength", number(0, 1, lo_open=True, hi_open=True), 0.45),
    _Field("image", _picture, None),
    _Field("caption", text(), None),
    _Field("loras", _loras, None),
    _Field("loras_mode", choice(LORAS_MODES), "add"),
)

_CARD_FIELDS = (
    _Field("text", text(required=True), missing="must be non-empty text"),
    _Field("seconds", number(0, MAX_CARD_SECONDS, lo_open=True), Card.seconds),
    _Field("background", text(required=True), Card.background),
)

_SIDE = number(MIN_SIDE, "max_side", integer=True, multiple_of=SIDE_MULTIPLE)

# Order matters where a default is derived: seed and negative_prompt precede shots.
_STORYBOARD_FIELDS = (
    _Field("mode", choice(MODES), "continue"),
    _Field("fps", number(1, "max_fps", integer=True), 8),
    _Field("width", _SIDE, 256),
    _Field("height", _SIDE, 256),
    _Field("seed", number(0, SEED_MAX, integer=True), 0),
    _Field("model", text(required=True, max_chars=MAX_MODEL_CHARS), None),
    _Field("negative_prompt", text(), ""),
    _Field("audio", _audio, None),
    _Field("interpolate", number(1, MAX_INTERPOLATE, integer=True), 2),
    _Field("color_match", boolean, True),
    _Field("steps", number(1, "max_steps", integer=True), None),
    _Field("guidance", number(0, MAX_GUIDANCE), None),
    _Field("format", choice(FORMATS), "mp4"),
    _Field("loras", _loras, ()),
    _Field("continuity", choice(CONTINUITY), "none"),
    _Field("reference", _picture, None),
    _Field("continuity_strength", number(0, 1, lo_open=True, hi_open=True), 0.5),
    _Field("title", _card, None),
    _Field("end_card", _card, None),
    _Field("voice", _file, None),
    _Field("duck_db", number(0, MAX_DUCK_DB), 12.0),
    _Field("music_fade", number(0, 60), 1.0),
    _Field("audio_mix", choice(AUDIO_MIXES), "mix"),
    _Field("shots", _shots, missing="at least one shot is required"),
)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _parse_record(
    raw: Any,
    fields: tuple[_Field, ...],
    path: str,
    env: Env,
    inherited: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a mapping against a field table: unknown keys, then each field in order."""
    if not isinstance(raw, Mapping):
        raise StoryboardError(path, f"must be a mapping (got {show(raw)})")
    names = [f.name for f in fields]
    for key in raw:
        if key not in names:
            hint = did_you_mean(key, names)
            raise StoryboardError(
                path, f"unknown key {show(key)} (allowed: {', '.join(names)}){hint}"
            )
    scope = dict(inherited or {})
    resolved: dict[str, Any] = {}
    for field in fields:
        field_path = _join(path, field.name)
        value = raw.get(field.name)
        if value is not None:
            try:
                value = field.check(value, Site(env, field_path, scope))
            except Invalid as exc:
                raise StoryboardError(field_path, str(exc)) from None
        elif field.derive is not None:
            value = field.derive(scope)
        elif field.default is _REQUIRED:
            raise StoryboardError(field_path, field.missing)
        else:
            value = field.default
        resolved[field.name] = scope[field.name] = value
    return resolved


def _build(data: Any, env: Env) -> Storyboard:
    if data is None:
        raise StoryboardError("", "is empty (expected a mapping with 'shots', or a list of shots)")
    if isinstance(data, list | tuple):
        data = {"shots": data}
    if not isinstance(data, Mapping):
        hint = "; for one prompt per line use a .txt file" if isinstance(data, str) else ""
        raise StoryboardError(
            "", f"must be a mapping with 'shots', or a list of shots (got {show(data)}){hint}"
        )
    # Caller defaults (a model's native size and fps) fill keys the author left out,
    # and are validated like the author's own values.
    data = {**env.defaults, **{k: v for k, v in data.items() if v is not None}}
    storyboard = Storyboard(**_parse_record(data, _STORYBOARD_FIELDS, "", env))
    _check_shots(storyboard, env.limits)
    return storyboard


def _check_continuity(storyboard: Storyboard) -> None:
    """`continuity: reference` needs its picture; a picture needs that continuity."""
    if storyboard.continuity == "reference" and storyboard.reference is None:
        raise StoryboardError("reference", "continuity: reference needs a picture here")
    if storyboard.reference is not None and storyboard.continuity != "reference":
        raise StoryboardError(
            "reference", "only applies to continuity: reference; set it or remove reference"
        )


def _check_shots(storyboard: Storyboard, limits: Limits) -> None:
    """Rules that span shots: crossfades against their neighbours, total length, frames."""
    _check_continuity(storyboard)
    shots = storyboard.shots
    for index, shot in enumerate(shots):
        path = f"shots[{index}]"
        fade = shot.transition_seconds
        if shot.transition == "cut":
            if fade:
                raise StoryboardError(
                    f"{path}.transition_seconds",
                    f"only applies to transition 'crossfade' (got {num(fade)} on a cut); "
                    "set transition: crossfade or remove it",
                )
            continue
        if index == len(shots) - 1:
            raise StoryboardError(
                f"{path}.transition",
                "the last shot has no next shot to crossfade into; use 'cut'",
            )
        shorter = min(shot.seconds, shots[index + 1].seconds)
        if fade <= 0:
            raise StoryboardError(f"{path}.transition_seconds", f"must be > 0 (got {num(fade)})")
        if fade >= shorter:
            raise StoryboardError(
                f"{path}.transition_seconds",
                f"must be < {num(shorter)}, the shorter of shots[{index}] and "
                f"shots[{index + 1}] (got {num(fade)})",
            )
    for index in range(1, len(shots)):
        fade_in, fade_out = shots[index - 1].transition_seconds, shots[index].transition_seconds
        if fade_in and fade_out and fade_in + fade_out >= shots[index].seconds:
            raise StoryboardError(
                f"shots[{index}].seconds",
                f"must be longer than its crossfades in and out together "
                f"({num(fade_in)} + {num(fade_out)}) (got {num(shots[index].seconds)})",
            )
    total = storyboard.total_seconds
    if total > limits.max_seconds_total:
        raise StoryboardError(
            "shots",
            f"total length must be <= {num(limits.max_seconds_total)} seconds "
            f"(got {num(total)}; limit max_seconds_total)",
        )
    for index, frames in enumerate(storyboard.shot_frames()):
        if frames < 1:
            raise StoryboardError(
                f"shots[{index}].seconds",
                f"gets 0 frames at fps {storyboard.fps} (got {num(shots[index].seconds)}); "
                "raise seconds or fps",
            )
