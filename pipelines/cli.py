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

from .settings import EXIT_INVALID, Limits, OneLineParser, add_runtime_flags, runtime_from_args

EXIT_OK, EXIT_FAILED = 0, 1


def add_request_args(p: argparse.ArgumentParser, cls: type) -> None:
    """A request's fields as the command's arguments: its positional one, then a `--flag`
    for each, with the field's help and choices (the UI offers the same fields)."""
    import dataclasses

    from .requests import fields_of

    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, kind, spec in fields_of(cls):
        if not spec.cli:
            continue
        parse = {int: int, float: float}.get(kind, Path if kind is Path else str)
        if spec.positional:
            optional = defaults[name] is None
            p.add_argument(name, nargs="?" if optional else None, help=spec.help,
                           type=Path if optional else parse)  # fmt: skip
            continue
        flags = [f"--{name.replace('_', '-')}", *spec.aliases]
        if spec.repeat:  # `--lora A --lora B`
            p.add_argument(*flags[::-1], dest=name, action="append", default=None,
                           metavar=spec.metavar, help=spec.help)  # fmt: skip
            continue
        p.add_argument(*flags, dest=name, type=parse, default=None, help=spec.help,
                       choices=spec.choices or None, metavar=spec.metavar)  # fmt: skip


def request_from_args(cls: type, args: argparse.Namespace):
    """The request the command's arguments make (a flag not given: the field's default)."""
    from .requests import fields_of

    given = {n: getattr(args, n) for n, _, spec in fields_of(cls) if spec.cli}
    given = {n: tuple(v) if isinstance(v, list) else v for n, v in given.items()}
    return cls(**{n: v for n, v in given.items() if v is not None})


def build_parser() -> argparse.ArgumentParser:
    from .requests import ImageRequest, ThumbnailRequest, VideoRequest

    parser = OneLineParser(
        prog="python -m pipelines",
        description="Reelchain: long videos from short generations, images and thumbnails.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("image", help="text-to-image or image-to-image")
    add_request_args(p, ImageRequest)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_runtime_flags(p)
    p.set_defaults(run=_cmd_image)

    p = sub.add_parser("video", help="a storyboard into one video (or --resume a run)")
    add_request_args(p, VideoRequest)
    p.add_argument("--out", type=Path, help="run folder")
    p.add_argument("--resume", type=Path, metavar="DIR", help="finish an interrupted run")
    p.add_argument("--reroll", type=int, metavar="K",
                   help="with --resume: redo segment K (--seed: its new seed)")  # fmt: skip
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
    add_request_args(p, ThumbnailRequest)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dry-run", action="store_true", help="only validate the input")
    add_runtime_flags(p)
    p.set_defaults(run=_cmd_thumbnails)

    p = sub.add_parser("models", help="list the model presets and which fit this machine")
    add_runtime_flags(p)
    p.set_defaults(run=_cmd_models)
    p = sub.add_parser("export", help="a finished run's timeline for an editor")
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a finished run folder")
    p.add_argument("--format", default="otio", choices=("otio", "edl", "fcpxml"))
    p.add_argument("--out", type=Path, help="the file to write (default: in the run folder)")
    p.set_defaults(run=_cmd_export)
    return parser


def _cmd_image(args: argparse.Namespace) -> int:
    from .files import check_writable_folder
    from .images import make_images
    from .requests import ImageRequest

    limits = Limits.from_env()
    req = request_from_args(ImageRequest, args).checked(limits)  # loads nothing
    runtime = runtime_from_args(args)
    check_writable_folder(args.out)  # before a model is loaded, not after
    _start_cluster(runtime)
    for r in make_images(req, args.out, runtime=runtime, limits=limits):
        print(r.path)
    return EXIT_OK


def _cmd_video(args: argparse.Namespace) -> int:
    from .requests import VideoRequest

    runtime = runtime_from_args(args)
    if args.resume and args.dry_run:
        raise ValueError("dry-run: it plans a new run from a storyboard; drop --resume")
    if args.reroll is not None and not args.resume:
        raise ValueError("reroll: use it with --resume DIR")
    if args.json and not args.dry_run:
        raise ValueError("json: it prints the plan; use it with --dry-run")
    if args.resume:
        return _resume(args, runtime)
    if not args.storyboard:
        if args.dry_run:
            raise ValueError("storyboard: give a storyboard file to plan")
        raise ValueError("storyboard: give a storyboard file and --out DIR (or --resume DIR)")
    req = request_from_args(VideoRequest, args).checked(Limits.from_env(), runtime=runtime)
    if args.dry_run:
        from .chain import new_run_folder, plan_request

        text = plan_request(req, Limits.from_env(), as_json=args.json, runtime=runtime)
        if args.out:  # the run this plans could go there (nothing is written)
            new_run_folder(args.out, claim=False)
        print(text)
        return EXIT_OK
    if not args.out:
        raise ValueError("storyboard: give a storyboard file and --out DIR (or --resume DIR)")
    from .chain import make_request

    _start_cluster(runtime)
    print(make_request(req, args.out, Limits.from_env(), runtime=runtime).video)
    return EXIT_OK


def _resume(args: argparse.Namespace, runtime) -> int:
    """`video --resume DIR [--reroll K [--seed S]]`: the run folder fixes everything else."""
    from .chain import resume_video
    from .requests import VideoRequest, fields_of

    if args.storyboard or args.out:
        raise ValueError("resume: give only --resume DIR (the run folder holds the storyboard)")
    fixed = [f"--{n.replace('_', '-')}" for n, _, spec in fields_of(VideoRequest)
             if spec.cli and not spec.positional and n != "seed"
             and getattr(args, n) is not None]  # fmt: skip
    if fixed:
        raise ValueError(f"resume: the run folder fixes {', '.join(fixed)}; drop them")
    _start_cluster(runtime)
    result = resume_video(args.resume, reroll=args.reroll, seed=args.seed, runtime=runtime)
    print(result.video)
    return EXIT_OK


def _cmd_thumbnails(args: argparse.Namespace) -> int:
    from .requests import ThumbnailRequest
    from .thumbnails import make_thumbnails

    req = request_from_args(ThumbnailRequest, args)
    opts = req.options(Limits.from_env(), dry_run=args.dry_run)
    runtime = runtime_from_args(args)
    if not args.dry_run:
        _start_cluster(runtime)
    report = make_thumbnails(req.input, args.out, opts, runtime=runtime)
    for path in report.files:
        print(path)
    return EXIT_OK if not report.failed else EXIT_FAILED


def _start_cluster(runtime) -> None:
    """`--ray ADDRESS`: start the workers before anything is written, so that a bad address
    or worker count is refused first (exit 2); the run then uses this pool."""
    if runtime.ray:
        from .scale import pool_for

        pool_for(runtime)


def _cmd_export(args: argparse.Namespace) -> int:
    from .timeline import export

    print(export(args.run_dir, args.format, args.out))
    return EXIT_OK


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
