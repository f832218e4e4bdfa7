"""Runs CLI commands in forked children of one warmed-up process: for real SIGKILLs at exact
moments and for races of two processes released together by a barrier.

    python tests/harness.py < spec.json > results.json

The spec: `{"warm": [model specs], "tasks": [task, ...]}`. Each task runs in its own child
(forked after torch and the tiny models are loaded, with one torch thread, so every run
makes the same bits), one task after another:

- `{"kind": "run", "argv": [...]}`: `python -m pipelines ARGV`;
- `{"kind": "resume", "argv": [...], "out": DIR}`: `video --resume DIR` when DIR holds a
  manifest, else ARGV again (a run killed before its manifest existed is started again);
- `{"kind": "kill", "argv": [...], "at": {...}}`: ARGV, SIGKILLed by itself at a moment:
  `{"replace": "segments/seg-001.mp4", "when": "before" | "after", "nth": 1}` (around the
  atomic rename that puts that file in place; "before" leaves the written temporary file)
  or `{"call": "pipelines.clips:_call", "nth": 2}` (on entering the n-th call);
- `{"kind": "race", "argvs": [[...], [...]]}`: one child per argv, released together; a
  child that gets as far as writing its first manifest.json (so it holds the folder's
  claim) waits there until the others have ended, so the race is decided by the claim,
  never by which child happens to finish first;
- `{"kind": "unlink", "path": P}`, `{"kind": "truncate", "path": P}` (to half its bytes):
  damage done in between, in the harness itself.

Each result: `{"code": exit code or null, "signal": number or null, "out", "err"}` (a race:
`{"runs": [result, ...]}`). Not a test module: tests/test_hardening.py drives it.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _warm(specs: list[str]) -> None:
    import torch

    from pipelines.models import load, resolve_model

    torch.set_num_threads(1)
    for spec in specs:
        ref = resolve_model(spec, "video" if "ltx" in spec or "wan" in spec else "image")
        load(ref, "video" if ref.family.kind == "video" else "text2img")


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(at: dict) -> None:
    """Patch the moment `at` to SIGKILL this process (a child: nothing else runs in it)."""
    nth = at.get("nth", 1)
    seen = {"n": 0}
    if "replace" in at:
        real = os.replace
        target = at["replace"]

        def replace(src, dst, *args, **kwargs):
            if str(dst).endswith(target):
                seen["n"] += 1
                if seen["n"] == nth and at.get("when", "after") == "before":
                    _kill_self()
                real(src, dst, *args, **kwargs)
                if seen["n"] == nth:
                    _kill_self()
                return None
            return real(src, dst, *args, **kwargs)

        os.replace = replace
        return
    module_name, _, attr = at["call"].partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    real_fn = getattr(owner, name)

    def call(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] == nth:
            _kill_self()
        return real_fn(*args, **kwargs)

    setattr(owner, name, call)


def _hold_until_others_end(ended, others: int) -> None:
    """Patch os.replace: the first manifest.json put in place waits (30 s at most) until
    `others` racers have ended."""
    real = os.replace
    held = {"done": False}

    def replace(src, dst, *args, **kwargs):
        if not held["done"] and str(dst).endswith("manifest.json"):
            held["done"] = True
            deadline = time.monotonic() + 30
            while ended.value < others and time.monotonic() < deadline:
                time.sleep(0.02)
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def _child(argv: list[str], at: dict | None, logs: Path, race=None) -> None:
    """In the forked child: output to files, arm the kill, wait for the barrier, run."""
    out = open(logs / "out", "w", buffering=1)  # noqa: SIM115 - closed by os._exit
    err = open(logs / "err", "w", buffering=1)  # noqa: SIM115
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout, sys.stderr = out, err
    code = 1
    try:
        from pipelines.cli import main

        if at:
            _arm(at)
        if race is not None:
            barrier, ended, others = race
            _hold_until_others_end(ended, others)
            barrier.wait(30)
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - reported as the child's output
        print(f"harness: {type(exc).__name__}: {exc}", file=err)
    finally:
        out.flush()
        err.flush()
        if race is not None:
            with race[1].get_lock():
                race[1].value += 1
        os._exit(code)


def _result(pid: int, logs: Path) -> dict:
    _, status = os.waitpid(pid, 0)
    return {
        "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "out": (logs / "out").read_text(),
        "err": (logs / "err").read_text(),
    }


def _fork(argv: list[str], at: dict | None = None, race=None) -> tuple[int, Path]:
    logs = Path(tempfile.mkdtemp(prefix="harness-"))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(argv, at, logs, race)
    return pid, logs


def run_task(task: dict) -> dict:
    kind = task["kind"]
    if kind == "unlink":
        Path(task["path"]).unlink()
        return {}
    if kind == "truncate":
        path = Path(task["path"])
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return {}
    if kind == "race":
        fork, n = multiprocessing.get_context("fork"), len(task["argvs"])
        race = (fork.Barrier(n), fork.Value("i", 0), n - 1)
        children = [_fork(argv, race=race) for argv in task["argvs"]]
        return {"runs": [_result(pid, logs) for pid, logs in children]}
    argv = task["argv"]
    if kind == "resume" and (Path(task["out"]) / "manifest.json").is_file():
        argv = ["video", "--resume", task["out"]]
    pid, logs = _fork(argv, task.get("at") if kind == "kill" else None)
    return {**_result(pid, logs), "argv": argv}


def main() -> int:
    spec = json.load(sys.stdin)
    os.chdir(spec.get("cwd", ROOT))
    _warm(spec.get("warm", []))
    results = [run_task(task) for task in spec["tasks"]]
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
