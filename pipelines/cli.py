"""`python -m pipelines`: the batch command line.

Exit codes: 0 success, 1 runtime failure, 2 invalid input. Every failure is one line on
stderr that names the problem (and, for input, the field and the fix). Progress bars go
to stderr too, so stdout carries only results (paths), one per line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix (exit code 2 as before)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(
            EXIT_INVALID,
            f"error: {message} (see `{self.prog} --help`)\n",
        )


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    """The device and memory knobs, shared by every command and by `app.py`; each falls back
    to its `REELCHAIN_*` environment variable."""
    g = p.add_argument_group("memory and device")
    g.add_argument("--batch-size", default=None, help="auto (default) or a whole number")
    g.add_argument("--memory-budget", default=None, help="cap on memory to plan for, e.g. 12GB")
    g.add_argument(
        "--offload", default=None, choices=("auto", "none", "model", "group", "sequential")
    )
    g.add_argument("--dtype", default=None, choices=("auto", "float32", "float16", "bfloat16"))
    g.add_argument("--device", default=None, choices=("auto", "cpu", "cuda", "mps"))
    g.add_argument(
        "--fast",
        default=None,
        metavar="LIST",
        help="opt-in fast paths, comma-separated: cache, compile, attention:<backend> "
        "(e.g. attention:flash); off by default, not yet measured on a GPU",
    )


def runtime_from_args(args: argparse.Namespace):
    from .settings import Runtime

    return Runtime.from_options(
        device=args.device,
        dtype=args.dtype,
        offload=args.offload,
        batch_size=args.batch_size,
        memory_budget=args.memory_budget,
        fast=args.fast,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m pipelines",
        description="Reelchain: long videos from short generations, images and thumbnails.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("image", help="text-to-image or image-to-image")
    p.add_argument("prompt")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--model",
        default=None,
        help="preset, tiny, random:<preset>, hub id, folder or .safetensors",
    )
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--negative", default="")
    p.add_argument("--init", type=Path, help="start from this image (image-to-image)")
    p.add_argument("--strength", type=float, default=0.6, help="how far to move from --init")
    add_runtime_flags(p)
    p.set_defaults(run=_cmd_image)

    p = sub.add_parser("video", help="a storyboard into one video (or --resume a run)")
    p.add_argument("storyboard", nargs="?", type=Path, help="YAML, JSON or TXT storyboard")
    p.add_argument("--out", type=Path, help="run folder")
    p.add_argument(
        "--model",
        default=None,
        help="preset, auto (the best this GPU runs; the default on a GPU, ltx-video on a "
        "CPU), tiny, random:<preset>, hub id or folder",
    )
    p.add_argument("--mode", choices=("continue", "keyframes", "feedback"))
    p.add_argument("--image-model", help="keyframes model (default: sd-turbo, or the tiny twin)")
    p.add_argument("--clip-frames", type=int, help="frames per clip (default: the model's)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="finish an interrupted run")
    p.add_argument("--reroll", type=int, metavar="K", help="with --resume: redo segment K")
    p.add_argument("--seed", type=int, help="the storyboard's seed; with --reroll: the new seed")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the storyboard and print the plan (calls, frames); load nothing",
    )
    p.add_argument("--json", action="store_true",
                   help="with --dry-run: the plan as one JSON object (segments, totals)")  # fmt: skip
    add_runtime_flags(p)
    p.set_defaults(run=_cmd_video)

    p = sub.add_parser("thumbnails", help="batch thumbnails from a CSV/JSONL/TXT or a video")
    p.add_argument("input", nargs="?", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", default=None)
    p.add_argument("--preset", default="youtube", help="youtube, shorts, square or WxH")
    p.add_argument("--variants", type=int, default=1)
    p.add_argument("--format", default="jpg", choices=("jpg", "png"))
    p.add_argument("--from-video", type=Path, help="pick frames from a run folder or video")
    p.add_argument("--dry-run", action="store_true", help="only validate the input")
    add_runtime_flags(p)
    p.set_defaults(run=_cmd_thumbnails)

    p = sub.add_parser("models", help="list the model presets and which fit this machine")
    add_runtime_flags(p)
    p.set_defaults(run=_cmd_models)
    return parser


def _cmd_image(args: argparse.Namespace) -> int:
    from .files import check_writable_folder
    from .images import make_images
    from .settings import ImageRequest, Limits

    req = ImageRequest(
        prompt=args.prompt,
        negative_prompt=args.negative,
        width=args.width,
        height=args.height,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        count=args.count,
        init_image=args.init,
        strength=args.strength,
        limits=Limits.from_env(),
    )
    runtime = runtime_from_args(args)
    check_writable_folder(args.out)  # before a model is loaded, not after
    for r in make_images(req, args.out, model=args.model, runtime=runtime):
        print(r.path)
    return EXIT_OK


def _cmd_video(args: argparse.Namespace) -> int:
    from .chain import VideoOptions, make_video, resume_video

    runtime = runtime_from_args(args)
    if args.resume and args.dry_run:
        raise ValueError("dry-run: it plans a new run from a storyboard; drop --resume")
    if args.reroll is not None and not args.resume:
        raise ValueError("reroll: use it with --resume DIR")
    if args.json and not args.dry_run:
        raise ValueError("json: it prints the plan; use it with --dry-run")
    if args.resume:
        if args.storyboard or args.out:
            raise ValueError("resume: give only --resume DIR (the run folder holds the storyboard)")
        fixed = [f"--{n.replace('_', '-')}" for n in ("model", "mode", "image_model", "clip_frames")
                 if getattr(args, n) is not None]  # fmt: skip
        if fixed:
            raise ValueError(f"resume: the run folder fixes {', '.join(fixed)}; drop them")
        result = resume_video(args.resume, reroll=args.reroll, seed=args.seed, runtime=runtime)
    else:
        _check_image_model(args.image_model)
        opts = VideoOptions(model=args.model, mode=args.mode, image_model=args.image_model,
                            clip_frames=args.clip_frames, seed=args.seed)  # fmt: skip
        if args.dry_run:
            from .chain import new_run_folder, plan_text

            if not args.storyboard:
                raise ValueError("storyboard: give a storyboard file to plan")
            text = plan_text(
                args.storyboard, opts, as_json=args.json, fast=runtime.fast, runtime=runtime
            )
            if args.out:  # the run this plans could go there (nothing is written)
                new_run_folder(args.out, claim=False)
            print(text)
            return EXIT_OK
        if not args.storyboard or not args.out:
            raise ValueError("storyboard: give a storyboard file and --out DIR (or --resume DIR)")
        result = make_video(args.storyboard, args.out, opts, runtime=runtime)
    print(result.video)
    return EXIT_OK


def _check_image_model(spec: str | None) -> None:
    """Keyframes are text-to-image: a video model given as --image-model cannot make them."""
    if spec is None:
        return
    from .models import resolve_model

    ref = resolve_model(spec, "image")
    if ref.family.kind != "image":
        raise ValueError(
            f"image-model: {ref.label} is a video model; keyframes need an image model such "
            "as sd-turbo or tiny"
        )


def _cmd_thumbnails(args: argparse.Namespace) -> int:
    from .thumbnails import ThumbnailOptions, make_thumbnails

    opts = ThumbnailOptions(
        model=args.model,
        preset=args.preset,
        variants=args.variants,
        format=args.format,
        from_video=args.from_video,
        dry_run=args.dry_run,
    )
    report = make_thumbnails(args.input, args.out, opts, runtime=runtime_from_args(args))
    for path in report.files:
        print(path)
    return EXIT_OK if not report.failed else EXIT_FAILED


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import fits_here, table_rows

    here, machine = fits_here(runtime_from_args(args))
    rows = [r | {"here": here.get(r["preset"], "yes")} for r in table_rows()]
    cols = ["preset", "family", "size", "frames", "motion", "fps", "steps", "cfg", "memory",
            "here"]  # fmt: skip
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
    print(f"\n{machine}")
    print("\nsources: " + ", ".join(f"{r['preset']}={r['source']}" for r in rows))
    print("random:<preset>: the preset's full-size architecture with random weights (no "
          "download), for sizing a GPU")  # fmt: skip
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        _quiet_libraries()
    return _run(args.run, args)


def _quiet_libraries() -> None:
    for name in ("diffusers", "transformers"):
        try:
            mod = __import__(name)
            mod.utils.logging.set_verbosity_error()
        except (ImportError, AttributeError):
            pass


def _run(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from .batching import OutOfMemory
    from .models import ModelUnavailable

    try:
        return fn(args)
    except ValueError as exc:
        _say(f"error: {exc}")
        return EXIT_INVALID
    except (ModelUnavailable, OutOfMemory) as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say(
            "interrupted: finished work is kept; resume with `python -m pipelines video --resume DIR`"
        )
        return 130
    except OSError as exc:  # the file as the user knows it, never a temporary name
        from .files import describe_os_error

        _say(f"error: {describe_os_error(exc)}")
        return EXIT_FAILED
    except Exception as exc:  # a bug or a library failure: one line, details with -v
        logging.getLogger(__name__).debug("failure", exc_info=True)
        if args.verbose:
            raise
        _say(
            f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (rerun with -v for details)"
        )
        return EXIT_FAILED


def _say(line: str) -> None:
    print(line.splitlines()[0] if line else line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
