"""LoRAs: small weight patches creators already have, switched per shot.

A `Lora` is a safetensors file and a scale. `use_loras(loaded, loras)` makes exactly those
LoRAs active on a loaded pipeline: each file is loaded once as a named peft adapter (the
name comes from the file's path, size and time, so an edited file loads anew) and later
calls only switch adapters and scales, never reload the model. An empty list switches them
all off. Checks raise one `ValueError` naming `lora` and the file: not safetensors, missing,
unreadable, or made for another model (none of its layers fit).
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from .models import LoadedModel

MAX_SCALE = 4.0  # beyond this a LoRA only breaks the picture


@dataclass(frozen=True)
class Lora:
    """A LoRA file and how strongly it applies (0: not at all)."""

    path: str
    scale: float = 1.0

    @property
    def name(self) -> str:
        return Path(self.path).stem

    def a1111(self) -> str:
        """As A1111-style prompts and parameters write it: `<lora:name:scale>`."""
        return f"<lora:{self.name}:{self.scale:g}>"


def parse_lora(text: str, field: str = "lora") -> Lora:
    """`PATH` or `PATH:SCALE` (the CLI's `--lora`), checked."""
    path, scale = text, 1.0
    match = re.fullmatch(r"(.+):([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", text.strip())
    if match:
        path, scale = match[1], float(match[2])
    return check_lora(Lora(path, scale), field)


def check_lora(lora: Lora, field: str = "lora") -> Lora:
    """A LoRA that exists, is safetensors and reads, with a sane scale; its path made
    absolute (so a run folder's record does not depend on where it was started)."""
    path = Path(str(lora.path)).expanduser()
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{field}: {path.name!r} is not a .safetensors file (only those load)")
    if not path.is_file():
        raise ValueError(f"{field}: file not found: {str(lora.path)!r}")
    if not (math.isfinite(lora.scale) and abs(lora.scale) <= MAX_SCALE):
        raise ValueError(f"{field}: scale must be from -{MAX_SCALE:g} to {MAX_SCALE:g}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem
        raise ValueError(f"{field}: cannot read {path.name!r} ({type(exc).__name__})") from None
    if not any("lora" in k for k in keys):
        raise ValueError(f"{field}: {path.name!r} holds no LoRA weights")
    return Lora(str(path.resolve()), float(lora.scale))


def loras_for(uses, model: str) -> tuple[Lora, ...]:
    """The LoRAs of a storyboard's list (`storyboard.LoraUse`) that patch `model`: the
    run's `image` model or its `video` model."""
    return tuple(Lora(u.file, u.scale) for u in uses if u.model == model)


def adapter_name(lora: Lora) -> str:
    """A stable adapter name for a file as it is now."""
    stat = Path(lora.path).stat()
    key = f"{lora.path}|{stat.st_size}|{stat.st_mtime_ns}"
    return "lora_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def _adapters(pipe) -> set[str]:
    getter = getattr(pipe, "get_list_adapters", None)
    return {n for names in (getter() if getter else {}).values() for n in names}


def use_loras(loaded: LoadedModel, loras: tuple[Lora, ...]) -> None:
    """Make exactly `loras` active on `loaded` (none: every adapter off)."""
    pipe = loaded.pipe
    present = _adapters(pipe)
    if not loras:
        if present:
            pipe.disable_lora()
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise ValueError(f"lora: {loaded.ref.label} takes no LoRA")
    names = []
    for lora in loras:
        name = adapter_name(lora)
        if name not in present:
            _load(loaded, lora, name)
            present.add(name)
        names.append(name)
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])


def _load(loaded: LoadedModel, lora: Lora, name: str) -> None:
    """Load one file as adapter `name`, or say in one line that it is not for this model."""
    pipe = loaded.pipe
    wrong = ValueError(
        f"lora: {lora.name!r} does not fit {loaded.ref.label} (made for another model: "
        "none of its layers match)"
    )
    try:
        with warnings.catch_warnings():  # peft warns of a second adapter: that is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            pipe.load_lora_weights(lora.path, adapter_name=name)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise wrong from exc
    if name not in _adapters(pipe):
        raise wrong
