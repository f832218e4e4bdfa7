"""The run folder: everything a video run makes, written so that nothing is ever lost.

```
RUN/
  storyboard.json     the resolved storyboard (every default filled in)
  manifest.json       run options, the plan, and each segment's status, seed, drift, file
  keyframes/shot-000.png
  segments/seg-000.mp4          written the moment the segment is finished
  segments/seg-000-tail-0.png   what the next segment is conditioned on, lossless
  segments/seg-000-state.safetensors  FramePack: the history latents the next section reads
  segments/seg-000.wav          LTX-2: the clip's own sound
  video.mp4, poster.jpg
```
Every file goes through `files.atomic_path`, and the manifest is rewritten (atomically)
after each segment, so a killed run leaves finished segments and a manifest that says
exactly which ones they are. A run claims its folder for its whole life (`files.claim_folder`),
so two runs never write into one folder at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .files import FolderClaim, atomic_path, claim_folder, read_json, write_json

# 2: clips made at each model's motion rate, a shot's files retimed as one stream (cut
# tails, crossfades inside a shot's share). A version 1 run was planned for slow motion.
MANIFEST_VERSION = 2
THUMBNAILS_KIND = "thumbnails"  # the `kind` of a thumbnails batch's manifest.json


@dataclass
class RunFolder:
    root: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _claim: FolderClaim | None = field(default=None, repr=False)

    def claim(self) -> bool:
        """Claim the folder (made if needed) for this run's life; False while another run
        holds it. The claim goes with `release()` or with this object."""
        if self._claim is None:
            self._claim = claim_folder(self.root)
        return self._claim is not None

    def release(self) -> None:
        if self._claim is not None:
            self._claim.release()
            self._claim = None

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

    def state(self, index: int) -> Path:
        """What a section leaves for the next (FramePack's history latents)."""
        return self.root / "segments" / f"seg-{index:03d}-state.safetensors"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def load_manifest(self) -> dict[str, Any]:
        """The manifest of a video run, checked enough to resume from; one line otherwise."""
        try:
            data = read_json(self.manifest_path)
        except FileNotFoundError:
            raise ValueError(
                f"resume: {self.root.name!r} is not a run folder (no manifest.json)"
            ) from None
        except (ValueError, OSError) as exc:
            raise ValueError(f"resume: manifest.json is damaged ({exc})") from None
        if isinstance(data, dict) and data.get("kind") == THUMBNAILS_KIND:
            raise ValueError(
                f"resume: {self.root.name!r} holds thumbnails, not a video run; a thumbnails "
                "batch continues when you run the same `thumbnails` command again"
            )
        if not isinstance(data, dict):
            raise ValueError("resume: manifest.json is damaged (not a JSON object)")
        if data.get("version") == 1:
            raise ValueError(
                "resume: this run was planned by an earlier Reelchain, whose clips played in "
                "slow motion; make it again from its storyboard.json with another --out"
            )
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"resume: manifest version {data.get('version')!r} is not supported")
        for key, kinds in (("segments", list), ("image_model", str), ("model", (str, type(None)))):
            if not isinstance(data.get(key), kinds):
                raise ValueError(f"resume: manifest.json is damaged ({key!r} is missing or wrong)")
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


def readable_png(path: Path) -> bool:
    """Whether a PNG the run wrote is there and decodes whole (a truncated one does not)."""
    try:
        load_png(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    return True


def decoded_frames(path: Path) -> int:
    """Frames a video file decodes to; -1 when it does not open (missing, not a video).

    Decoded, not read from the header: a truncated file can keep a header that promises
    every frame."""
    import av

    try:
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    except (av.error.FFmpegError, OSError, ValueError, IndexError):
        return -1
