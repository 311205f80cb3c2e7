"""The host's durable state: one SQLite file (WAL, one writer) holding instances, history,
inboxes, in-flight activities, timers, timer-trigger schedules and Event Grid subscriptions.

Every state change that must survive `kill -9` is one transaction, so a restart sees either
the whole change or none of it.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MARKER = "fedfunc-host-state"
VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, execution INTEGER NOT NULL, status TEXT NOT NULL,
  input TEXT, output TEXT, custom_status TEXT, created TEXT NOT NULL, updated TEXT NOT NULL,
  parent_id TEXT, parent_execution INTEGER, parent_task INTEGER, engine TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
  instance_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
  PRIMARY KEY (instance_id, seq));
CREATE TABLE IF NOT EXISTS inbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, execution INTEGER,
  event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox (instance_id, seq);
CREATE TABLE IF NOT EXISTS activities (
  instance_id TEXT NOT NULL, execution INTEGER NOT NULL, task_id INTEGER NOT NULL,
  name TEXT NOT NULL, input TEXT, PRIMARY KEY (instance_id, execution, task_id));
CREATE TABLE IF NOT EXISTS timers (
  instance_id TEXT NOT NULL, execution INTEGER NOT NULL, timer_id INTEGER NOT NULL,
  fire_at REAL NOT NULL, fire_at_iso TEXT NOT NULL, PRIMARY KEY (instance_id, execution, timer_id));
CREATE INDEX IF NOT EXISTS timers_due ON timers (fire_at);
CREATE TABLE IF NOT EXISTS schedules (function TEXT PRIMARY KEY, next_due REAL NOT NULL);
CREATE TABLE IF NOT EXISTS eg_subscriptions (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS eg_seen (
  subscription TEXT NOT NULL, blob TEXT NOT NULL, etag TEXT NOT NULL,
  PRIMARY KEY (subscription, blob));
CREATE TABLE IF NOT EXISTS eg_outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, subscription TEXT NOT NULL, function TEXT NOT NULL,
  event TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL);
"""


class StateError(RuntimeError):
    """The state file cannot be used (corrupt, foreign or from another version)."""


class Store:
    """A single SQLite connection guarded by a lock: the host's only writer."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state file {self.path} is not a fedfunc host state database: {exc}") from exc
        if existed:
            self._check_marker(tables)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('marker', ?), ('version', ?)", (MARKER, VERSION))

    def _check_marker(self, tables: set[str]) -> None:
        if "meta" not in tables:
            raise StateError(f"state file {self.path} is not a fedfunc host state database "
                             f"(no 'meta' table; it holds {sorted(tables) or 'nothing readable'})")
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("marker") != MARKER:
            raise StateError(f"state file {self.path} belongs to something else (marker {meta.get('marker')!r})")
        if meta.get("version") != VERSION:
            raise StateError(f"state file {self.path} has schema version {meta.get('version')!r}; "
                             f"this host reads version {VERSION}")
        problem = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise StateError(f"state file {self.path} is corrupt: {problem}")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
