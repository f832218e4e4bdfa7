"""The run folder: everything a video run makes, written so that nothing is ever lost.

```
RUN/
  storyboard.json     the resolved storyboard (every default filled in)
  manifest.json       run options, the plan, and each segment's status, seed, drift, file
  keyframes/shot-000.png
  segments/seg-000.mp4          written the moment the segment is finished
  segments/seg-000-tail-0.png   what the next segment is conditioned on, lossless
  video.mp4, poster.jpg
```
Every file goes through `files.atomic_path`, and the manifest is rewritten (atomically)
after each segment, so a killed run leaves finished segments and a manifest that says
exactly which ones they are.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .files import atomic_path, read_json, write_json

MANIFEST_VERSION = 1


@dataclass
class RunFolder:
    root: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def storyboard_path(self) -> Path:
        return self.root / "storyboard.json"

    def keyframe(self, shot: int) -> Path:
        return self.root / "keyframes" / f"shot-{shot:03d}.png"

    def segment(self, index: int) -> Path:
        return self.root / "segments" / f"seg-{index:03d}.mp4"

    def tail(self, index: int, i: int) -> Path:
        return self.root / "segments" / f"seg-{index:03d}-tail-{i}.png"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def load_manifest(self) -> dict[str, Any]:
        try:
            data = read_json(self.manifest_path)
        except FileNotFoundError:
            raise ValueError(
                f"resume: {self.root.name!r} is not a run folder (no manifest.json)"
            ) from None
        except ValueError as exc:
            raise ValueError(f"resume: manifest.json is damaged ({exc})") from None
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"resume: manifest version {data.get('version')!r} is not supported")
        return data

    def save_manifest(self, manifest: dict[str, Any]) -> None:
        with self._lock:
            write_json(self.manifest_path, manifest)


def save_png(array: np.ndarray, path: Path) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def load_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
