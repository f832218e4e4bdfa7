"""Reelchain: long videos from short generations.

The Python API (the CLI and the web UI call the same functions, with the same requests):

    from pathlib import Path
    from pipelines import Limits, VideoRequest, make_request
    limits = Limits()
    req = VideoRequest(Path("story.yaml"), model="tiny", fps=12).checked(limits)
    result = make_request(req, "runs/boat", limits)

Names load lazily, so `import pipelines` stays light (no torch until it is needed).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "make_video": "chain",
    "resume_video": "chain",
    "VideoOptions": "chain",
    "VideoResult": "chain",
    "make_images": "images",
    "make_thumbnails": "thumbnails",
    "ThumbnailOptions": "thumbnails",
    "load_storyboard": "storyboard",
    "parse_storyboard": "storyboard",
    "Storyboard": "storyboard",
    "VideoRequest": "requests",
    "ImageRequest": "requests",
    "ThumbnailRequest": "requests",
    "make_request": "chain",
    "plan_request": "chain",
    "Limits": "settings",
    "Runtime": "settings",
    "resolve_model": "models",
    "finish": "finishing",
    "Finishing": "finishing",
    "Title": "finishing",
    "Caption": "finishing",
    "write_timelines": "timeline",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
