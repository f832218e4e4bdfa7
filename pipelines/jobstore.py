"""The job store: one SQLite table of the server's jobs, in the runs folder.

```
RUNS/
  jobs.sqlite3              the store (WAL mode: readers never block the worker)
  <job id>/                 each job's folder, named by the server-generated id
    manifest.json, video.mp4, segments/ ...   (a video job's folder is its run folder)
    images/ ...             (image jobs)   thumbnails/, thumbnails.zip (thumbnail jobs)
```

A job row: `id, kind, params (JSON: the request, see pipelines.requests), status, progress
(0..1), message, run_dir (relative to the runs folder), outputs (JSON: paths relative to
run_dir), attempts, created, updated`. Status moves `queued → running → done | failed |
cancelled`; a job found `running` at start was stopped under it and becomes `interrupted`
(waiting again). Attempts are counted when a job starts. Every call opens its own
connection, so any thread may use the store; the manager that runs jobs is `pipelines.jobs`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .files import atomic_path

KINDS = ("video", "image", "thumbnails")
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = frozenset({"done", "failed", "cancelled"})
WAITING = ("queued", "interrupted")  # taken by a worker, oldest first
MAX_ATTEMPTS = 3
DB_NAME = "jobs.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id       TEXT PRIMARY KEY,
    kind     TEXT NOT NULL CHECK (kind IN ('video', 'image', 'thumbnails')),
    params   TEXT NOT NULL,
    status   TEXT NOT NULL CHECK (status IN
                 ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
    progress REAL NOT NULL DEFAULT 0,
    message  TEXT NOT NULL DEFAULT '',
    run_dir  TEXT NOT NULL,
    outputs  TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0,
    created  REAL NOT NULL,
    updated  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created);
"""


class JobError(RuntimeError):
    """A job cannot do what was asked (unknown id, resume a running job, ...)."""


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    status: str
    progress: float
    message: str
    run_dir: Path  # absolute; the store keeps it relative to the runs folder
    outputs: dict[str, Any]
    attempts: int
    created: float
    updated: float

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def path(self, rel: str) -> Path:
        """An output path (relative, as stored) inside this job's folder."""
        path = (self.run_dir / rel).resolve()
        if not path.is_relative_to(self.run_dir.resolve()):
            raise JobError(f"output {rel!r} is outside the job's folder")
        return path

    def files(self, key: str) -> list[Path]:
        """Existing output files under `key` (a relative path or a list of them)."""
        value = self.outputs.get(key)
        rels = value if isinstance(value, list) else [value] if value else []
        paths = [self.path(r) for r in rels if isinstance(r, str)]
        return [p for p in paths if p.is_file()]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": round(self.progress, 4),
            "message": self.message,
            "attempts": self.attempts,
            "created": _stamp(self.created),
            "updated": _stamp(self.updated),
            "params": self.params,
            "outputs": self.outputs,
        }


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t).isoformat(timespec="seconds")


def new_job_id() -> str:
    """Sortable, readable and safe as a folder name: 20261128-221504-3f9a1c."""
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class JobStore:
    """The jobs table. Every call opens its own connection, so any thread may use it."""

    def __init__(self, runs: str | Path) -> None:
        self.root = Path(runs).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / DB_NAME
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _job(self, row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"],
            kind=row["kind"],
            params=json.loads(row["params"]),
            status=row["status"],
            progress=row["progress"],
            message=row["message"],
            run_dir=self.root / row["run_dir"],
            outputs=json.loads(row["outputs"]),
            attempts=row["attempts"],
            created=row["created"],
            updated=row["updated"],
        )

    def add(
        self,
        kind: str,
        params: Mapping[str, Any],
        files: Mapping[str, bytes | str | Path] | None = None,
    ) -> Job:
        """A new queued job; `files` (name → bytes or a file to copy) are put in its folder
        before the row exists, so a worker never sees a job without its inputs."""
        if kind not in KINDS:
            raise ValueError(f"kind: unknown {kind!r} (one of {', '.join(KINDS)})")
        job_id = new_job_id()
        folder = self.root / job_id
        folder.mkdir(parents=True)
        for name, data in (files or {}).items():
            if Path(name).name != name or name.startswith("."):
                raise ValueError(f"files: {name!r} is not a plain file name")
            with atomic_path(folder / name) as tmp:
                if isinstance(data, bytes):
                    tmp.write_bytes(data)
                else:
                    shutil.copyfile(data, tmp)
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, params, status, run_dir, created, updated)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, kind, json.dumps(dict(params)), job_id, now, now),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"job: no job {job_id!r}")
        return self._job(row)

    def list(self, limit: int = 200, kind: str | None = None) -> list[Job]:
        """Newest first."""
        query, args = "SELECT * FROM jobs", []
        if kind:
            query, args = query + " WHERE kind = ?", [kind]
        query += " ORDER BY created DESC, rowid DESC LIMIT ?"
        with self._db() as db:
            rows = db.execute(query, [*args, limit]).fetchall()
        return [self._job(r) for r in rows]

    def update(self, job_id: str, **changes: Any) -> None:
        """Set columns; `params` and `outputs` are given as dicts."""
        allowed = {"params", "status", "progress", "message", "outputs", "attempts"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"update: unknown columns {sorted(unknown)}")
        if "status" in changes and changes["status"] not in STATUSES:
            raise ValueError(f"status: unknown {changes['status']!r}")
        for key in ("params", "outputs"):
            if key in changes:
                changes[key] = json.dumps(changes[key])
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._db() as db:
            db.execute(
                f"UPDATE jobs SET {sets}, updated = ? WHERE id = ?",
                (*changes.values(), time.time(), job_id),
            )

    def move(self, job_id: str, source: Sequence[str], target: str, **changes: Any) -> bool:
        """Change status from one of `source` to `target` (and set `changes`) atomically;
        False when the job was not in a source status."""
        with self._transaction() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] not in source:
                return False
            for key in ("params", "outputs"):
                if key in changes:
                    changes[key] = json.dumps(changes[key])
            sets = "".join(f", {k} = ?" for k in changes)
            db.execute(
                f"UPDATE jobs SET status = ?{sets}, updated = ? WHERE id = ?",
                (target, *changes.values(), time.time(), job_id),
            )
        return True

    def recover(self) -> list[str]:
        """At server start: a job still `running` was stopped under it; mark it interrupted."""
        with self._transaction() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE status = 'running'")]
            db.execute(
                "UPDATE jobs SET status = 'interrupted', message = ?, updated = ?"
                " WHERE status = 'running'",
                ("the server stopped while this job ran; it continues where it stopped",
                 time.time()),
            )  # fmt: skip
        return ids

    def claim(self, max_attempts: int = MAX_ATTEMPTS) -> Job | None:
        """Take the oldest waiting job: running, one more attempt. A job that has already
        started `max_attempts` times is failed instead (it keeps stopping the server)."""
        with self._transaction() as db:
            while True:
                row = db.execute(
                    "SELECT * FROM jobs WHERE status IN ('queued', 'interrupted')"
                    " ORDER BY created, rowid LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                now = time.time()
                if row["attempts"] >= max_attempts:
                    db.execute(
                        "UPDATE jobs SET status = 'failed', message = ?, updated = ?"
                        " WHERE id = ?",
                        (f"stopped the server {row['attempts']} times; not tried again "
                         "(resume it from History to try once more)", now, row["id"]),
                    )  # fmt: skip
                    continue
                db.execute(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
                    " updated = ? WHERE id = ?",
                    (now, row["id"]),
                )
                job = self._job(row)
                job.status, job.attempts, job.updated = "running", job.attempts + 1, now
                return job

    def waiting_jobs(self, kind: str, max_attempts: int = MAX_ATTEMPTS) -> list[Job]:
        """Waiting jobs of one kind that may still start, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE status IN ('queued', 'interrupted') AND kind = ?"
                " AND attempts < ? ORDER BY created, rowid",
                (kind, max_attempts),
            ).fetchall()
        return [self._job(r) for r in rows]

    def take(self, job_id: str, max_attempts: int = MAX_ATTEMPTS) -> Job | None:
        """Take this waiting job as `claim` would (running, one more attempt); None when it
        is no longer waiting (another worker took it, it was cancelled) or may not start."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] not in WAITING or row["attempts"] >= max_attempts:
                return None
            now = time.time()
            db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated = ?"
                " WHERE id = ?",
                (now, job_id),
            )
        job = self._job(row)
        job.status, job.attempts, job.updated = "running", job.attempts + 1, now
        return job

    def waiting(self) -> int:
        """Jobs waiting for a worker."""
        with self._db() as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'interrupted')"
            ).fetchone()
        return n

    def position(self, job_id: str) -> int:
        """How many waiting jobs are ahead of this one."""
        job = self.get(job_id)
        with self._db() as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'interrupted')"
                " AND (created < ? OR (created = ? AND id < ?))",
                (job.created, job.created, job.id),
            ).fetchone()
        return n
