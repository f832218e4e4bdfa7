"""Batch thumbnails: rows of prompts, or the best frames of a video, into upload-ready images.

`python -m pipelines thumbnails rows.csv --out DIR` reads a CSV, JSONL or TXT file, makes
`--variants` images per row through the batch planner, fits each one to the platform size
(cropped, never stretched), draws the row's title, and saves JPEGs under 2 MB (or PNGs) that
carry their generation parameters. `manifest.json` lists every input row by its line number,
so a channel owner can see what happened to each one:

* a bad row (empty prompt, bad seed, unknown preset, broken JSON ...) is reported on stderr
  with its line number and skipped; the other rows still finish and the command exits 1;
* every thumbnail is written the moment its image exists, and the manifest is rewritten as
  rows finish, so an interrupted batch keeps its work;
* a re-run skips rows whose inputs and options are unchanged (a fingerprint in the manifest)
  and whose files are still there, so fixing one bad row costs one row of generation.

`--from-video` makes the same thumbnails from the best frames of a video, with no model.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from . import __version__, frames, images, models, overlay
from .batching import Planner
from .files import (
    FolderClaim,
    check_writable_folder,
    claim_folder,
    folder_busy,
    read_json,
    remove_partials,
    slug,
    write_json,
)
from .lora import parse_lora
from .settings import Limits, Runtime

FORMATS = ("jpg", "png")
INPUT_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
ROW_KEYS = ("prompt", "title", "negative_prompt", "seed", "preset")
SEED_MAX = 2**32 - 1
VIDEO_NAMES = ("video.mp4", "video.webm", "video.gif")  # what a run folder holds

MANIFEST = "manifest.json"
CONTACT = "contact.jpg"
MANIFEST_KIND = "thumbnails"
MANIFEST_VERSION = 1
DONE = ("done", "skipped-existing")  # statuses whose files are finished
_SAVE_EVERY_S = 1.0  # rewrite the manifest at most this often while rows finish
_OUR_NAME = re.compile(r"(\d+|video)-\d+-[a-z0-9-]+\.(jpg|png)")  # names this module writes


# --------------------------------------------------------------------------- options, report


@dataclass(frozen=True)
class ThumbnailOptions:
    """What to make; one object for the CLI, the web UI and the Python API."""

    model: str | None = None  # image preset, tiny, hub id, folder or .safetensors
    preset: str = "youtube"  # youtube | shorts | square | WxH; a row's `preset` wins
    variants: int = 1  # images per row (seeds seed, seed+1, ...), or frames from a video
    format: str = "jpg"  # jpg (kept under 2 MB) | png
    from_video: Path | None = None  # a run folder or a video file: its frames, no model
    loras: tuple[str, ...] = ()  # `PATH[:SCALE]` LoRAs for the image model
    dry_run: bool = False  # validate the input only; load nothing, write nothing
    limits: Limits = field(default_factory=Limits.from_env, compare=False, repr=False)

    def __post_init__(self) -> None:
        fmt = str(self.format).lower().lstrip(".")
        fmt = "jpg" if fmt == "jpeg" else fmt
        if fmt not in FORMATS:
            raise ValueError(f"format: unknown {self.format!r} (use jpg or png)")
        object.__setattr__(self, "format", fmt)
        preset_size(self.preset, self.limits)  # one line naming the preset and the fix
        most = self.limits.max_count
        v = self.variants
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
            raise ValueError(f"variants: must be a whole number from 1 to {most} (got {v!r})")
        if self.from_video is not None:
            object.__setattr__(self, "from_video", Path(self.from_video))

    @property
    def size(self) -> tuple[int, int]:
        return overlay.parse_preset(self.preset)


@dataclass
class ThumbnailReport:
    """What a batch made. `failed` holds (line, message); line 0 stands for the video."""

    files: list[Path]  # every finished thumbnail of this input, made now or before
    failed: list[tuple[int, str]]
    manifest: Path | None  # None on a dry run
    contact: Path | None  # None on a dry run or when nothing was made
    rows: int  # input rows read, bad ones included
    generated: int  # images made by the model (or frames taken) in this run


def make_thumbnails(
    input_path: str | Path | None,
    out_dir: str | Path | None,
    opts: ThumbnailOptions | None = None,
    *,
    runtime: Runtime | None = None,
    planner: Planner | None = None,
    say: Callable[[str], None] | None = None,
) -> ThumbnailReport:
    """The `thumbnails` command: rows (or a video's frames) into thumbnails in `out_dir`.

    Whole-command problems (missing input, unknown preset, a video model) raise ValueError;
    a bad row is reported through `say` (one line each, default stderr) and in the report.
    With `from_video`, an optional input file supplies the title (and preset) from its row.
    A dry run refuses what the run would, `out_dir` included (None: no folder to check).
    The run claims `out_dir` for its life: a second batch into it at once is refused.
    """
    opts = opts or ThumbnailOptions()
    say = say or _say
    input_path = Path(input_path) if input_path is not None else None
    if out_dir is None and not opts.dry_run:
        raise ValueError("out: give a folder for the thumbnails")
    out = Path(out_dir) if out_dir is not None else None
    if opts.from_video is not None:
        return _from_video(input_path, out, opts, say)
    if input_path is None:
        raise ValueError("input: give a CSV, JSONL or TXT file, or --from-video PATH")
    return _from_rows(input_path, out, opts, runtime=runtime, planner=planner, say=say)


def _say(line: str) -> None:
    """One line on stderr that does not break a running progress bar."""
    tqdm.write(line, file=sys.stderr)


# --------------------------------------------------------------------------- reading rows


@dataclass(frozen=True)
class Row:
    """One valid input row with every default resolved."""

    line: int  # 1-based physical line in the input file
    prompt: str
    title: str
    negative_prompt: str
    seed: int
    preset: str  # as written in the row, or the command's
    size: tuple[int, int]


@dataclass(frozen=True)
class BadRow:
    line: int
    error: str
    values: dict[str, str] = field(default_factory=dict)  # what could be read, for the manifest


def read_rows(
    path: Path, opts: ThumbnailOptions, *, need_prompt: bool = True
) -> tuple[list[Row], list[BadRow]]:
    """Valid rows and bad rows of a CSV, JSONL or TXT file, each with its line number.

    Only whole-file problems raise (missing file, unknown type, a CSV header without
    `prompt`, too many rows); a bad row is returned so that the others can still run.
    Without `need_prompt` (titles for video frames) a TXT line is a title, not a prompt.
    """
    kind = INPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"input: unknown file type {path.suffix or path.name!r} (use .csv, .jsonl or .txt)"
        )
    if not path.is_file():
        raise ValueError(f"input: file not found: '{path}'")
    limit = opts.limits.max_upload_bytes
    if path.stat().st_size > limit:
        raise ValueError(f"input: '{path.name}' is over the limit of {limit} bytes (split it)")
    lines = _decoded_lines(path.read_bytes())
    if kind == "csv":
        entries = _csv_entries(lines, need_prompt)
    elif kind == "jsonl":
        entries = _jsonl_entries(lines)
    else:
        entries = _txt_entries(lines, "prompt" if need_prompt else "title")
    if not entries:
        raise ValueError(f"input: no rows in '{path.name}'")
    if len(entries) > opts.limits.max_rows:
        raise ValueError(
            f"input: {len(entries)} rows is over the limit of {opts.limits.max_rows} "
            "(split the file)"
        )
    rows, bad = [], []
    for line, values in sorted(entries, key=lambda e: e[0]):
        if isinstance(values, str):
            bad.append(BadRow(line, values))
            continue
        try:
            rows.append(_check_row(line, values, opts, need_prompt))
        except ValueError as exc:
            shown = {k: str(v)[:200] for k, v in values.items() if k in ROW_KEYS and v is not None}
            bad.append(BadRow(line, str(exc), shown))
    return rows, bad


_NOT_UTF8 = "not UTF-8 text (save the file as UTF-8)"


def _decoded_lines(data: bytes) -> list[tuple[int, str | None]]:
    """(line number, text) per physical line; None for a line that is not UTF-8.

    Decoding line by line keeps one bad line from sinking the whole file.
    """
    out: list[tuple[int, str | None]] = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            out.append((n, None))
            continue
        out.append((n, text.removeprefix("\ufeff") if n == 1 else text))
    return out


def _csv_entries(
    lines: list[tuple[int, str | None]], need_prompt: bool
) -> list[tuple[int, dict[str, str] | str]]:
    """Rows of a CSV with a header, keyed by column; a row's line is where its record starts."""
    entries: list[tuple[int, dict[str, str] | str]] = [
        (n, _NOT_UTF8) for n, t in lines if t is None
    ]
    reader = csv.reader(("" if t is None else t) + "\n" for _, t in lines)
    header: list[str] | None = None
    consumed = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            entries.append((reader.line_num, f"unreadable CSV ({exc})"))
            consumed = reader.line_num
            continue
        start, consumed = consumed + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue  # blank lines (and spreadsheets' ",,,") are skipped but still counted
        if header is None:
            header = _csv_header(record, need_prompt)
            continue
        if len(record) > len(header):
            entries.append(
                (
                    start,
                    f"{len(record)} values for {len(header)} columns "
                    "(put values that contain commas in double quotes)",
                )
            )
            continue
        entries.append((start, {k: v for k, v in zip(header, record, strict=False) if k}))
    return entries


def _csv_header(record: list[str], need_prompt: bool) -> list[str]:
    """Column names, lower-cased; empty names (trailing commas) are ignored columns."""
    header = [cell.strip().lower() for cell in record]
    known = ", ".join(ROW_KEYS)
    for name in header:
        if name and name not in ROW_KEYS:
            raise ValueError(f"input: unknown column {name!r} in the CSV header (use: {known})")
        if name and header.count(name) > 1:
            raise ValueError(f"input: column {name!r} appears twice in the CSV header")
    if need_prompt and "prompt" not in header:
        raise ValueError(f"input: the CSV header needs a 'prompt' column (columns: {known})")
    return header


def _txt_entries(
    lines: list[tuple[int, str | None]], key: str
) -> list[tuple[int, dict[str, str] | str]]:
    """One value (a prompt, or a title for video frames) per non-blank line."""
    return [
        (n, _NOT_UTF8 if text is None else {key: text.strip()})
        for n, text in lines
        if text is None or text.strip()
    ]


def _jsonl_entries(lines: list[tuple[int, str | None]]) -> list[tuple[int, dict[str, Any] | str]]:
    """One JSON object per non-blank line; a broken line is a bad row, not a broken file."""
    entries: list[tuple[int, dict[str, Any] | str]] = []
    for n, text in lines:
        if text is None:
            entries.append((n, _NOT_UTF8))
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            entries.append((n, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except RecursionError:  # one bad row, not the end of the batch
            entries.append((n, 'nested too deeply; a row is one object such as {"prompt": "..."}'))
            continue
        if not isinstance(value, dict):
            entries.append((n, 'must be a JSON object such as {"prompt": "..."}'))
            continue
        unknown = [k for k in value if k not in ROW_KEYS]
        if unknown:
            entries.append((n, f"unknown key {unknown[0]!r} (use: {', '.join(ROW_KEYS)})"))
            continue
        entries.append((n, value))
    return entries


def _check_row(line: int, values: dict[str, Any], opts: ThumbnailOptions, need_prompt: bool) -> Row:
    """A `Row` from raw values, or ValueError naming the field and the fix."""
    limits = opts.limits
    prompt = _text(values, "prompt")
    prompt = limits.check_prompt(prompt) if need_prompt else prompt.strip()
    title = _text(values, "title").strip()
    negative = _text(values, "negative_prompt").strip()
    for name, text in (("title", title), ("negative_prompt", negative)):
        if len(text) > limits.max_prompt_chars:
            raise ValueError(
                f"{name}: {len(text)} characters is over the limit of {limits.max_prompt_chars}"
            )
    preset = _text(values, "preset").strip() or opts.preset
    size = preset_size(preset, limits)
    return Row(line, prompt, title, negative, _seed(values.get("seed"), prompt), preset, size)


def preset_size(preset: str, limits: Limits) -> tuple[int, int]:
    """A preset's exact size, within the caps (a row's own preset too)."""
    width, height = overlay.parse_preset(preset)
    if max(width, height) > limits.max_side:
        raise ValueError(
            f"preset: {width}x{height} is over the limit of {limits.max_side} pixels a side"
        )
    return width, height


def _text(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key}: must be text (got {value!r}; put it in double quotes)")
    return value


def _seed(value: Any, prompt: str) -> int:
    """The row's seed; a blank one is a stable hash of the prompt, so re-runs reproduce."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_seed(prompt)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        seed = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seed = value
    else:
        seed = -1
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed: must be a whole number from 0 to {SEED_MAX} (got {value!r})")
    return seed


def default_seed(prompt: str) -> int:
    """CRC-32 of the prompt: the same on every machine and Python (unlike `hash`)."""
    return zlib.crc32(prompt.encode("utf-8"))


# --------------------------------------------------------------------------- rows to images


@dataclass
class _Work:
    """One valid row on its way to files, with its manifest entry."""

    row: Row
    generation_size: tuple[int, int]
    seeds: list[int]
    names: list[str]
    fingerprint: str
    entry: dict[str, Any]
    written: int = 0
    notes: set[str] = field(default_factory=set)


def _from_rows(
    input_path: Path,
    out: Path | None,
    opts: ThumbnailOptions,
    *,
    runtime: Runtime | None,
    planner: Planner | None,
    say: Callable[[str], None],
) -> ThumbnailReport:
    """Check the model, the rows and the folder (bad rows reported at once), then make the
    thumbnails in the claimed folder; a dry run stops after the checks."""
    ref = _image_model(opts.model)
    rows, bad = read_rows(input_path, opts)
    previous = _previous(out) if out is not None else []
    for b in bad:
        say(f"line {b.line}: {b.error}")
    preset = ref.preset
    base = round(math.sqrt(preset.width * preset.height))  # the pixel count it was made for
    work = [_plan_row(row, opts, ref, base) for row in rows]
    if opts.dry_run:
        _check_free(out)
        for w in work:
            say(_summary(w, opts))
        say(f"dry run: {len(rows) + len(bad)} rows, {len(rows)} ok, {len(bad)} bad")
        failed = [(b.line, b.error) for b in bad]
        return ThumbnailReport([], failed, None, None, len(rows) + len(bad), 0)
    assert out is not None
    claim = _claim(out)
    try:
        previous = _previous(out)  # again, now that no other batch can write it
        return _make_rows(input_path, out, opts, ref, work, bad, previous, runtime, planner, say)
    finally:
        claim.release()


def _make_rows(
    input_path: Path,
    out: Path,
    opts: ThumbnailOptions,
    ref: models.ModelRef,
    work: list[_Work],
    bad: list[BadRow],
    previous: list[dict[str, Any]],
    runtime: Runtime | None,
    planner: Planner | None,
    say: Callable[[str], None],
) -> ThumbnailReport:
    """Rows into thumbnails: finished rows of an earlier run are kept, the rest made in
    planned batches, each thumbnail written the moment its image exists."""
    failed = [(b.line, b.error) for b in bad]
    earlier = _rows_by_line(previous)
    kept = [e for e in previous if "video" in e]  # a --from-video entry stays listed
    entries = [w.entry for w in work] + [_bad_entry(b) for b in bad] + kept
    manifest = _Manifest(out / MANIFEST, _head(opts, input_path.name, None, ref), entries)
    todo = []
    for w in work:
        if _reusable(earlier.get(w.row.line), w, out):
            old = earlier.get(w.row.line) or {}
            w.entry.update(status="skipped-existing", files=w.names, title_box=old.get("title_box"))
        else:
            todo.append(w)
    manifest.save(force=True)
    generated = 0
    if todo:
        generated = _generate_rows(out, opts, ref, todo, earlier, manifest, failed, runtime,
                                   planner, say)  # fmt: skip
    shown = [out / n for e in manifest.entries if e["status"] in DONE for n in e["files"]]
    contact = _contact(shown, out, previous_files=_previous_files(previous), say=say)
    manifest.finish(contact, generated)
    failed.sort(key=lambda f: f[0])
    files = [out / n for w in work if w.entry["status"] in DONE for n in w.entry["files"]]
    return ThumbnailReport(files, failed, manifest.path, contact, len(work) + len(bad), generated)


def _generate_rows(
    out: Path,
    opts: ThumbnailOptions,
    ref: models.ModelRef,
    todo: list[_Work],
    earlier: dict[int | None, dict[str, Any]],
    manifest: _Manifest,
    failed: list[tuple[int, str]],
    runtime: Runtime | None,
    planner: Planner | None,
    say: Callable[[str], None],
) -> int:
    """Generate the rows' images in planned batches; each thumbnail is written as soon as its
    image exists, and carries its row's fingerprint (so a killed batch knows it is done)."""
    preset = ref.preset
    loras = tuple(parse_lora(text) for text in opts.loras)
    jobs = [
        images.ImageItem(
            prompt=w.row.prompt,
            negative_prompt=w.row.negative_prompt,
            width=w.generation_size[0],
            height=w.generation_size[1],
            steps=preset.steps,
            guidance=preset.guidance,
            seed=seed,
            loras=loras,
        )
        for w in todo
        for seed in w.seeds
    ]
    owners = [(w, i) for w in todo for i in range(len(w.seeds))]
    generated = 0
    from .scale import maker_for

    maker = maker_for(ref, "image", runtime or Runtime())
    sampler = maker.sampler
    bar = tqdm(total=len(jobs), desc="thumbnails", unit="img", file=sys.stderr, leave=False)

    def write(index: int, arr) -> None:
        nonlocal generated
        generated += 1
        bar.update()
        w, i = owners[index]
        if w.entry["status"] == "failed":
            return  # an earlier variant of this row failed; the row is already reported
        params = _with_fingerprint(images.a1111_parameters(jobs[index], ref.label, sampler),
                                   w.fingerprint)  # fmt: skip
        try:
            box, notes = _finish(
                images.to_pil(arr), w.row.size, w.row.title, out / w.names[i], opts, params
            )
        except ValueError as exc:
            w.entry.update(status="failed", error=str(exc))
            failed.append((w.row.line, str(exc)))
            say(f"line {w.row.line}: {exc}")
            manifest.save(force=True)
            return
        for note in notes - w.notes:
            say(f"line {w.row.line}: {note}")
        w.notes |= notes
        w.written += 1
        w.entry["title_box"] = box
        if w.written == len(w.names):
            w.entry.update(status="done", files=w.names)
            _remove_replaced(earlier.get(w.row.line), w.names, out)
            manifest.save()

    try:
        maker.run(jobs, planner=planner, on_result=write)
    finally:
        bar.close()
        manifest.save(force=True)
    return generated


def _image_model(spec: str | None) -> models.ModelRef:
    ref = models.resolve_model(spec, "image")
    if ref.family.kind != "image":
        raise ValueError(
            f"model: {ref.label} is a video model; use an image preset such as sd-turbo or "
            "tiny (or --from-video to take frames from a video)"
        )
    return ref


def _plan_row(row: Row, opts: ThumbnailOptions, ref: models.ModelRef, base: int) -> _Work:
    """Generation size, seeds, file names and fingerprint of one row."""
    gen = overlay.generation_size(
        row.size, base=base, multiple=ref.family.size_multiple, max_side=opts.limits.max_side
    )
    seeds = [(row.seed + i) % 2**32 for i in range(opts.variants)]
    label = slug(row.title or row.prompt)
    names = [f"{row.line}-{i}-{label}.{opts.format}" for i in range(1, opts.variants + 1)]
    fp = fingerprint(
        prompt=row.prompt,
        title=row.title,
        negative_prompt=row.negative_prompt,
        seed=row.seed,
        preset=row.preset,
        size=row.size,
        variants=opts.variants,
        format=opts.format,
        model=ref.preset.source,
        steps=ref.preset.steps,
        guidance=ref.preset.guidance,
        generation_size=gen,
        **({"loras": list(opts.loras)} if opts.loras else {}),  # none: as before LoRAs existed
    )
    entry = {
        "line": row.line,
        "status": "pending",
        "prompt": row.prompt,
        "title": row.title,
        "negative_prompt": row.negative_prompt,
        "seed": row.seed,
        "seeds": seeds,
        "preset": row.preset,
        "size": list(row.size),
        "generation_size": list(gen),
        "files": [],
        "title_box": None,
        "fingerprint": fp,
        "error": None,
    }
    return _Work(row, gen, seeds, names, fp, entry)


def fingerprint(**fields: Any) -> str:
    """A short hash of everything that decides a row's pixels and file names."""
    blob = json.dumps({"v": MANIFEST_VERSION, **fields}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _summary(w: _Work, opts: ThumbnailOptions) -> str:
    row = w.row
    seeds = f"seed {w.seeds[0]}" if len(w.seeds) == 1 else f"seeds {w.seeds[0]}..{w.seeds[-1]}"
    title = f", title {row.title!r}" if row.title else ""
    return (
        f"line {row.line}: ok, {row.size[0]}x{row.size[1]} ({row.preset}), "
        f"{opts.variants} x {opts.format}, {seeds}{title}"
    )


def _finish(
    image: Image.Image,
    size: tuple[int, int],
    title: str,
    path: Path,
    opts: ThumbnailOptions,
    parameters: str,
) -> tuple[dict[str, Any] | None, set[str]]:
    """Fit, draw the title, save. Returns where the title went and notes for the user.

    Notes (a glyph the font lacks, a PNG over the upload limit) come from the overlay's
    warnings, turned into one line each instead of Python warning noise.
    """
    image = overlay.fit_to(image, size)
    box = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if title:
            image, drawn = overlay.draw_title(image, title)
            box = {
                "lines": drawn.lines,
                "font_size": drawn.font_size,
                "box": list(drawn.box),
                "safe_area": list(overlay.safe_area(size)),
                "badge_area": list(overlay.badge_area(size)),
                "missing_chars": drawn.missing_chars,
            }
        overlay.save_image(image, path, fmt=opts.format, parameters=parameters)
    return box, {str(w.message).splitlines()[0] for w in caught}


# --------------------------------------------------------------------------- video frames


def _from_video(
    input_path: Path | None, out: Path | None, opts: ThumbnailOptions, say: Callable[[str], None]
) -> ThumbnailReport:
    """Thumbnails from the `variants` best frames of a video; no model is resolved or loaded.

    Everything is checked (the video decodes, the folder takes thumbnails) before anything is
    written; the folder's other rows stay in its manifest."""
    if opts.model:
        raise ValueError("model: --from-video takes frames from the video; drop --model")
    source = Path(opts.from_video)  # type: ignore[arg-type]
    video = _video_file(source)
    title, preset, size, line = _video_title(input_path, opts)
    if out is not None:
        _previous(out)  # refuses a folder that holds another tool's manifest
    if opts.dry_run:
        from .video_io import probe

        _check_free(out)
        frames.check_video(video)  # what best_frames would refuse
        info = probe(video)
        title_note = f", title {title!r}" if title else ""
        say(
            f"dry run: {video.name} ({info.width}x{info.height}, {info.duration:.1f} s): "
            f"{opts.variants} frames to {size[0]}x{size[1]} ({preset}){title_note}"
        )
        return ThumbnailReport([], [], None, None, 1, 0)
    assert out is not None
    label = slug(title or (source.name if source.is_dir() else video.stem))
    names = [f"video-{i}-{label}.{opts.format}" for i in range(1, opts.variants + 1)]
    stat = video.stat()
    fp = fingerprint(video=video.name, bytes=stat.st_size, mtime_ns=stat.st_mtime_ns,
                     title=title, preset=preset, size=size, variants=opts.variants,
                     format=opts.format)  # fmt: skip
    entry: dict[str, Any] = {
        "line": line, "status": "pending", "video": video.name, "title": title,
        "preset": preset, "size": list(size), "frames": [], "files": [], "title_box": None,
        "fingerprint": fp, "error": None,
    }  # fmt: skip
    head = _head(opts, input_path.name if input_path else None, video.name, None)
    claim = _claim(out)
    try:
        previous = _previous(out)
        return _make_video_thumbnails(video, out, opts, entry, names, head, previous, say)
    finally:
        claim.release()


def _make_video_thumbnails(
    video: Path,
    out: Path,
    opts: ThumbnailOptions,
    entry: dict[str, Any],
    names: list[str],
    head: dict[str, Any],
    previous: list[dict[str, Any]],
    say: Callable[[str], None],
) -> ThumbnailReport:
    """Pick the frames (the video is read before anything is written), then save them."""
    old = next((e for e in previous if "video" in e), None)
    size = tuple(entry["size"])
    failed: list[tuple[int, str]] = []
    generated = 0
    rows = [e for e in previous if "video" not in e]  # the folder's rows batch stays listed
    manifest = _Manifest(out / MANIFEST, head, [entry, *rows])
    if old is not None and _video_reusable(old, entry["fingerprint"], names, out, size):
        entry.update(status="skipped-existing", files=old["files"],
                     frames=old.get("frames", []), title_box=old.get("title_box"))  # fmt: skip
    else:
        picked = frames.best_frames(video, opts.variants)
        if len(picked) < opts.variants:
            say(f"{video.name}: only {len(picked)} usable frames for {opts.variants} variants")
        names = names[: len(picked)]
        manifest.save(force=True)
        for (score, rgb), name in tqdm(list(zip(picked, names, strict=True)), desc="thumbnails",
                                       unit="img", file=sys.stderr, leave=False):  # fmt: skip
            params = _with_fingerprint(_frame_parameters(video.name, score, size),
                                       entry["fingerprint"])  # fmt: skip
            try:
                box, notes = _finish(Image.fromarray(rgb), size, entry["title"], out / name, opts,
                                     params)  # fmt: skip
            except ValueError as exc:
                entry.update(status="failed", error=str(exc))
                failed.append((0, str(exc)))
                say(f"{video.name}: {exc}")
                break
            for note in notes:
                say(f"{video.name}: {note}")
            generated += 1
            entry["title_box"] = box
            entry["frames"].append({"index": score.index, "time": round(score.time, 3),
                                    "score": round(score.score, 3)})  # fmt: skip
        if entry["status"] != "failed":
            entry.update(status="done", files=names)
            _remove_replaced(old, names, out)
    files = [out / n for e in manifest.entries if e["status"] in DONE for n in e["files"]]
    contact = _contact(files, out, previous_files=_previous_files(previous), say=say)
    manifest.finish(contact, generated)
    mine = [out / n for n in entry["files"]] if entry["status"] in DONE else []
    return ThumbnailReport(mine, failed, manifest.path, contact, 1, generated)


def _video_title(
    input_path: Path | None, opts: ThumbnailOptions
) -> tuple[str, str, tuple[int, int], int | None]:
    """Title, preset, size and line for video frames: from the input's one row, if given.

    There is no `--title` flag; a one-line TXT (or a one-row CSV/JSONL with `title` and
    maybe `preset`) carries it, so the same input format serves both kinds of thumbnails.
    """
    if input_path is None:
        return "", opts.preset, opts.size, None
    rows, bad = read_rows(input_path, opts, need_prompt=False)
    if bad:
        raise ValueError(f"input: line {bad[0].line}: {bad[0].error}")
    if len(rows) > 1:
        raise ValueError(
            f"input: with --from-video give one row (its title labels the frames); got {len(rows)}"
        )
    row = rows[0]
    return row.title, row.preset, row.size, row.line


def _video_file(source: Path) -> Path:
    """The video in a run folder (its manifest names it), or `source` itself."""
    if source.is_dir():
        names = list(VIDEO_NAMES)
        try:
            named = read_json(source / MANIFEST).get("video")
            if isinstance(named, str):
                names.insert(0, Path(named).name)
        except (OSError, ValueError, AttributeError):
            pass
        for name in names:
            if (source / name).is_file():
                return source / name
        raise ValueError(
            f"from-video: no video.mp4 in '{source}' (give a finished run folder or a video file)"
        )
    if not source.is_file():
        raise ValueError(f"from-video: no such file or folder '{source}'")
    return source


def _frame_parameters(video: str, score: frames.FrameScore, size: tuple[int, int]) -> str:
    """Where the frame came from, in the same `key: value` style as generated images."""
    return (
        f"Frame {score.index} of {video}\n"
        f"Source: {video}, Frame: {score.index}, Time: {score.time:.2f}s, "
        f"Size: {size[0]}x{size[1]}, Version: reelchain {__version__}"
    )


# --------------------------------------------------------------------------- manifest, files


@dataclass
class _Manifest:
    """manifest.json, rewritten atomically as rows finish (at most once a second)."""

    path: Path
    head: dict[str, Any]
    entries: list[dict[str, Any]]
    _saved_at: float = 0.0

    def __post_init__(self) -> None:
        self.entries.sort(key=lambda e: (e["line"] is None, e["line"] or 0))

    def save(self, *, force: bool = False, **extra: Any) -> None:
        now = time.monotonic()
        if not force and now - self._saved_at < _SAVE_EVERY_S:
            return
        counts = {s: sum(e["status"] == s for e in self.entries) for s in _STATUSES}
        write_json(self.path, {**self.head, **extra, "counts": counts, "rows": self.entries})
        self._saved_at = now

    def finish(self, contact: Path | None, generated: int) -> None:
        self.save(force=True, contact=contact.name if contact else None, generated=generated)


_STATUSES = ("done", "skipped-existing", "failed", "pending")


def _head(opts: ThumbnailOptions, input_name: str | None, video: str | None, ref) -> dict[str, Any]:
    return {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "input": input_name,
        "video": video,
        "model": ref.label if ref else None,
        "model_source": ref.preset.source if ref else None,
        "preset": opts.preset,
        "variants": opts.variants,
        "format": opts.format,
    }


def _bad_entry(bad: BadRow) -> dict[str, Any]:
    return {"line": bad.line, "status": "failed", "error": bad.error, "files": [], **bad.values}


def _previous(out: Path | None) -> list[dict[str, Any]]:
    """The entries of an earlier run's manifest in `out`; refuses another tool's manifest.

    A video run folder also has a manifest.json, and overwriting it would break its resume.
    """
    if out is None:
        return []
    path = out / MANIFEST
    if not path.exists():
        return []
    try:
        data = read_json(path)
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise ValueError(
            f"out: '{out}' holds a manifest.json that is not a thumbnails manifest "
            "(a video run folder?); choose another --out folder"
        )
    rows = data.get("rows")
    entries = [e for e in rows if isinstance(e, dict)] if isinstance(rows, list) else []
    return sorted(entries, key=lambda e: (e.get("line") is None, e.get("line") or 0))


def _rows_by_line(entries: list[dict[str, Any]]) -> dict[int | None, dict[str, Any]]:
    """The rows batch's entries by line (a --from-video entry is not a row)."""
    return {e.get("line"): e for e in entries if "video" not in e}


def _check_free(out: Path | None) -> None:
    """What the run would refuse about `out`, checked without writing (a dry run)."""
    if out is None:
        return
    check_writable_folder(out)
    _previous(out)
    if folder_busy(out):
        raise ValueError(_busy(out))


def _claim(out: Path) -> FolderClaim:
    """Claim `out` (made if needed) for this batch's life, and remove what a killed batch
    left half-written; refused (one line) while another run writes into it."""
    check_writable_folder(out)
    claim = claim_folder(out)
    if claim is None:
        raise ValueError(_busy(out))
    remove_partials(out)
    return claim


def _busy(out: Path) -> str:
    return (
        f"out: '{out}' is being written by another run right now; wait for it to end, or "
        "choose another --out"
    )


def _reusable(old: dict[str, Any] | None, w: _Work, out: Path) -> bool:
    """An earlier run made exactly this row (same fingerprint) and its files are intact.

    The manifest is saved at most once a second, so a killed batch may have finished rows
    it never recorded: a row whose files are all there and carry its fingerprint is done.
    """
    if (
        old
        and old.get("fingerprint") == w.fingerprint
        and old.get("status") in DONE
        and old.get("files") == w.names
        and _files_ok(w.names, out, w.row.size)
    ):
        return True
    return all(_file_fingerprint(out / n, w.row.size) == w.fingerprint for n in w.names)


def _video_reusable(
    old: dict[str, Any], fp: str, names: list[str], out: Path, size: tuple[int, int]
) -> bool:
    """Like `_reusable`; a video may have given fewer frames than variants, so a prefix."""
    if old.get("fingerprint") != fp or old.get("status") not in DONE:
        return False
    files = old.get("files")
    return bool(files) and files == names[: len(files)] and _files_ok(files, out, size)


def _files_ok(names: list[str], out: Path, size: tuple[int, int]) -> bool:
    """Every file exists and is an image of the right size (the header is enough)."""
    for name in names:
        try:
            with Image.open(out / name) as im:
                if im.size != tuple(size):
                    return False
        except (OSError, ValueError, Image.DecompressionBombError):
            return False
    return True


_FINGERPRINT = re.compile(r"Fingerprint: ([0-9a-f]{16})\s*$")


def _with_fingerprint(parameters: str, fp: str) -> str:
    """The parameters a thumbnail carries, ending with its row's fingerprint."""
    return f"{parameters}, Fingerprint: {fp}"


def _file_fingerprint(path: Path, size: tuple[int, int]) -> str | None:
    """The fingerprint a finished thumbnail carries (PNG text, JPEG ImageDescription), if
    the file is there, of the right size, and whole (it was written atomically)."""
    try:
        with Image.open(path) as im:
            if im.size != tuple(size):
                return None
            text = im.info.get("parameters") or im.getexif().get(0x010E) or ""
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    m = _FINGERPRINT.search(str(text))
    return m[1] if m else None


def _remove_replaced(old: dict[str, Any] | None, keep: list[str], out: Path) -> None:
    """Delete a row's files from an earlier run that the new ones replace (new title, format).

    Only names this module writes are touched, so a file the user put there is never lost.
    """
    for name in (old or {}).get("files") or []:
        if isinstance(name, str) and name not in keep and _OUR_NAME.fullmatch(name):
            (out / name).unlink(missing_ok=True)


def _previous_files(previous: list[dict[str, Any]]) -> list[str]:
    return [name for e in previous if e.get("status") in DONE for name in e.get("files") or []]


def _contact(
    files: list[Path], out: Path, *, previous_files: list[str], say: Callable[[str], None]
) -> Path | None:
    """contact.jpg of every finished thumbnail; kept as is when the set of files is unchanged.

    Many files get more, narrower columns so the sheet stays under JPEG's 65,535-pixel side.
    """
    path = out / CONTACT
    if not files:
        path.unlink(missing_ok=True)
        return None
    if path.is_file() and [f.name for f in files] == previous_files and _all_older(files, path):
        return path
    columns = max(4, math.ceil(math.sqrt(len(files))))
    cell = max(48, min(320, 6400 // columns))
    try:
        return overlay.contact_sheet(files, path, columns=columns, cell_width=cell)
    except (ValueError, OSError) as exc:
        say(f"contact sheet: not written ({exc})")
        return None


def _all_older(files: list[Path], than: Path) -> bool:
    newest = max(f.stat().st_mtime_ns for f in files)
    return newest <= than.stat().st_mtime_ns
