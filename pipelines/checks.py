"""Field checks: one set of checkers for every value a user writes, whatever the face.

A check takes a value and its `Site` (the caps in force, the field's path, what the record
resolved so far) and returns the value as the engine uses it, or raises `Invalid` with the
problem in words that name the fix; the caller prefixes the field's path, so every error
is one line: ``<field>: <what is wrong and how to fix it>``. Storyboards (`storyboard.py`)
and requests (`requests.py`) are checked with these.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import Limits


class Invalid(Exception):
    """A value is wrong; the message is the problem, without the field path."""


@dataclass(frozen=True)
class Env:
    """What checks may depend on: the caps in force, the folder relative paths start from,
    and defaults the caller fills in (a model's native size)."""

    limits: Limits
    base_dir: Path
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def make(
        cls,
        base_dir: str | os.PathLike[str] | None,
        limits: Limits | None,
        defaults: Mapping[str, Any] | None = None,
    ) -> Env:
        folder = Path(os.path.abspath(base_dir)) if base_dir is not None else Path.cwd()
        return cls(limits or Limits(), folder, dict(defaults or {}))


@dataclass(frozen=True)
class Site:
    """Where a check runs: the environment, the field's path, and the values resolved so
    far in the enclosing record (plus what it inherits from its parent)."""

    env: Env
    path: str
    scope: Mapping[str, Any]


Check = Callable[[Any, Site], Any]
Bound = float | str | None  # a number, or the name of a `Limits` field


def show(value: Any) -> str:
    """A value as the user wrote it, short enough for a one-line message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, float):
        return num(value)
    return str(value)


def num(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def quote_hint(value: Any) -> str:
    """For text that YAML read as a number or a boolean (`- 1984`, `prompt: yes`)."""
    return "; put it in quotes to make it text" if isinstance(value, bool | int | float) else ""


def did_you_mean(value: Any, options: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value.strip().lower(), options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def limit_value(bound: Bound, limits: Limits) -> float | None:
    return getattr(limits, bound) if isinstance(bound, str) else bound


def number(
    lo: Bound = None,
    hi: Bound = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    multiple_of: int = 1,
) -> Check:
    """A finite number (booleans excluded) within bounds; integers also accept 30.0.

    Messages state the whole range when both ends are inclusive ("between 1 and 60") and
    otherwise the end that was crossed ("> 0"); crossing a `Limits` bound names the limit.
    """

    def check(value: Any, site: Site) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"must be {'an integer' if integer else 'a number'} (got {show(value)})")
        if not math.isfinite(value):
            raise Invalid(f"must be a finite number (got {show(value)})")
        if integer:
            if isinstance(value, float) and not value.is_integer():
                raise Invalid(f"must be an integer (got {show(value)})")
            value = int(value)
        else:
            value = float(value)
        low = limit_value(lo, site.env.limits)
        high = limit_value(hi, site.env.limits)
        too_low = low is not None and (value <= low if lo_open else value < low)
        too_high = high is not None and (value >= high if hi_open else value > high)
        if not (too_low or too_high or (multiple_of > 1 and value % multiple_of)):
            return value
        if low is not None and high is not None and lo_open == hi_open:
            rule = (
                f"> {num(low)} and < {num(high)}"
                if lo_open
                else f"between {num(low)} and {num(high)}"
            )
        elif too_low:
            rule = f"{'>' if lo_open else '>='} {num(low)}"
        else:
            rule = f"{'<' if hi_open else '<='} {num(high)}"
        if multiple_of > 1:
            rule = f"a multiple of {multiple_of} {rule}"
        note = f"; limit {hi}" if too_high and isinstance(hi, str) else ""
        raise Invalid(f"must be {rule} (got {show(value)}{note})")

    return check


def text(*, required: bool = False, max_chars: Bound = "max_prompt_chars") -> Check:
    """A string, stripped; ``required`` rejects blank ones."""

    def check(value: Any, site: Site) -> str:
        if not isinstance(value, str) or (required and not value.strip()):
            kind = "a non-empty string" if required else "a string"
            raise Invalid(f"must be {kind} (got {show(value)}){quote_hint(value)}")
        value = value.strip()
        limit = limit_value(max_chars, site.env.limits)
        if limit is not None and len(value) > limit:
            note = f"; limit {max_chars}" if isinstance(max_chars, str) else ""
            raise Invalid(f"must be at most {num(limit)} characters (got {len(value)}{note})")
        return value

    return check


def choice(options: tuple[str, ...]) -> Check:
    def check(value: Any, site: Site) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        hint = did_you_mean(value, options)
        raise Invalid(f"must be one of {', '.join(options)} (got {show(value)}){hint}")

    return check


def boolean(value: Any, site: Site) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false (got {show(value)})")
    return value


def check_value(check: Check, value: Any, name: str, limits: Limits) -> Any:
    """One value through its check, outside any record: a request's field."""
    try:
        return check(value, Site(Env.make(None, limits), name, {}))
    except Invalid as exc:
        raise ValueError(f"{name}: {exc}") from None
