"""The experience store: an append-only, schema-versioned decision and feedback log.

Embedded default: SQLite in WAL mode (one file, no server, readers never block the writer,
several processes can share it), written through a group-commit thread. PostgreSQL is
supported through the same class for many writers across hosts. A call that logs decisions
or feedback returns only after the transaction committed:

* SQLite ``durability="normal"`` (default): ``synchronous=NORMAL``; a committed transaction
  survives a crash of the process (kill -9) — the WAL is in the OS page cache — but an OS
  crash or power loss can drop the last commits.
* SQLite ``durability="full"``: ``synchronous=FULL``; every group commit is fsynced, so it
  also survives power loss (about 1 ms more per commit on this machine's disk).
* PostgreSQL: the server's ``synchronous_commit`` (on by default: fsynced WAL).

Decisions and feedback tables reject UPDATE and DELETE with triggers: the log is append-only.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import orjson

from rlops_plugin.errors import ConfigError, RLOpsError
from rlops_plugin.experience.records import SESSION_PREFIX, DecisionBatch, FeedbackEvent, InteractionRecord
from rlops_plugin.experience.writer import GroupCommitWriter, WriteJob

SCHEMA_VERSION = 1
DURABILITY = ("normal", "full")


class StoreError(RLOpsError):
    """The experience store cannot be opened or written."""


class _Dialect:
    """SQL differences between SQLite and PostgreSQL."""

    name = "sqlite"
    param = "?"
    blob = "BLOB"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    batch_seq = "INTEGER PRIMARY KEY"  # rowid: monotonic because rows are never deleted (append-only)
    real = "REAL"

    def q(self, sql: str) -> str:
        """Rewrite ``?`` placeholders for this dialect."""
        return sql if self.param == "?" else sql.replace("?", self.param)

    def append_only(self, table: str) -> list[str]:
        return [
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
        ]


class _PostgresDialect(_Dialect):
    name = "postgresql"
    param = "%s"
    blob = "BYTEA"
    serial = "BIGSERIAL PRIMARY KEY"
    batch_seq = "BIGSERIAL PRIMARY KEY"
    real = "DOUBLE PRECISION"

    def append_only(self, table: str) -> list[str]:
        return [
            "CREATE OR REPLACE FUNCTION rlops_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$ LANGUAGE plpgsql",
            f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION rlops_append_only()",
        ]


def _schema(d: _Dialect) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS rlops_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS rlops_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS decision_batches (
            seq {d.batch_seq}, batch_id TEXT NOT NULL UNIQUE, ts {d.real} NOT NULL, model TEXT NOT NULL,
            n INTEGER NOT NULL, obs_dim INTEGER NOT NULL, action_dim INTEGER NOT NULL,
            n_actions INTEGER NOT NULL, obs {d.blob} NOT NULL, actions {d.blob} NOT NULL,
            propensities {d.blob} NOT NULL, probs {d.blob}, decided_by {d.blob} NOT NULL,
            policies TEXT NOT NULL, extra TEXT NOT NULL, shadow_policy TEXT, shadow_probs {d.blob})""",
        f"""CREATE TABLE IF NOT EXISTS feedback (
            seq {d.serial}, idempotency_key TEXT NOT NULL UNIQUE, decision_id TEXT NOT NULL,
            batch_id TEXT NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, value {d.real},
            action TEXT, payload TEXT, event_ts {d.real} NOT NULL, received_ts {d.real} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS feedback_batch ON feedback (batch_id)",
        f"""CREATE TABLE IF NOT EXISTS logger_events (
            ce_id TEXT NOT NULL, ce_type TEXT NOT NULL, ts {d.real} NOT NULL, model TEXT NOT NULL,
            body {d.blob} NOT NULL, PRIMARY KEY (ce_id, ce_type))""",
        f"""CREATE TABLE IF NOT EXISTS interactions (
            seq {d.serial}, interaction_id TEXT NOT NULL UNIQUE, ts {d.real} NOT NULL, model TEXT NOT NULL,
            session_id TEXT, policy_version TEXT NOT NULL, n INTEGER NOT NULL, record TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS interactions_session ON interactions (session_id)",
        f"""CREATE TABLE IF NOT EXISTS predict_keys (
            key TEXT PRIMARY KEY, batch_id TEXT NOT NULL, ts {d.real} NOT NULL)""",
        *d.append_only("predict_keys"),
        f"""CREATE TABLE IF NOT EXISTS quarantine (
            seq {d.serial}, ts {d.real} NOT NULL, source TEXT NOT NULL, ref TEXT NOT NULL, reason TEXT NOT NULL,
            body {d.blob} NOT NULL, UNIQUE (source, ref))""",
        *d.append_only("quarantine"),
        *d.append_only("interactions"),
        *d.append_only("decision_batches"),
        *d.append_only("feedback"),
    ]


class ExperienceStore:
    """Append-only decision and feedback log over SQLite or PostgreSQL."""

    def __init__(self, url: str, durability: str = "normal", max_queue: int = 10_000,
                 inline_commits: bool | None = None, busy_timeout_s: float = 30.0) -> None:
        if durability not in DURABILITY:
            raise ConfigError(f"durability must be one of {DURABILITY}, got {durability!r}")
        self.url = url
        self.durability = durability
        parsed = urlparse(url)
        if parsed.scheme in ("postgresql", "postgres"):
            self.dialect: _Dialect = _PostgresDialect()
        elif parsed.scheme in ("sqlite", ""):
            self.dialect = _Dialect()
            self.path = Path(_sqlite_path(url))
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            raise ConfigError(f"store URL {url!r}: use a file path, sqlite:///PATH or postgresql://...")
        self._local = threading.local()
        if not busy_timeout_s > 0:
            raise ConfigError(f"busy_timeout_s must be positive, got {busy_timeout_s}")
        self.busy_ms = int(busy_timeout_s * 1000)
        self._write_conn = self._connect(self.busy_ms)
        self._init_schema(self._write_conn)
        self.inline_commits = (self.dialect.name == "sqlite" and durability == "normal"
                               if inline_commits is None else inline_commits)
        self._write_lock = threading.Lock()
        self._inline_conn = self._connect(busy_ms=INLINE_BUSY_MS) if self.inline_commits else None
        self._writer = GroupCommitWriter(self._locked_write, max_queue=max_queue)

    # ----- connections -----------------------------------------------------------
    def _connect(self, busy_ms: int = 30_000) -> Any:
        if self.dialect.name == "postgresql":
            try:
                import psycopg
            except ImportError as exc:
                raise StoreError("PostgreSQL stores need psycopg: pip install 'rlops-plugin[postgres]'") from exc
            try:
                return psycopg.connect(self.url, autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to {self.url}: {exc}") from exc
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.durability.upper()}")
        conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        return conn

    def _reader(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _init_schema(self, conn: Any) -> None:
        d = self.dialect
        with _transaction(conn, d):
            if d.name == "postgresql":
                conn.execute("SELECT pg_advisory_xact_lock(7265766)")
            for statement in _schema(d):
                conn.execute(statement)
            row = conn.execute(d.q("SELECT value FROM rlops_meta WHERE key = ?"), ("schema_version",)).fetchone()
            if row is None:
                conn.execute(d.q("INSERT INTO rlops_meta (key, value) VALUES (?, ?)"),
                             ("schema_version", str(SCHEMA_VERSION)))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.url}: store schema version {row[0]}, this rlops reads version "
                                 f"{SCHEMA_VERSION}; use a matching rlops-plugin release")

    # ----- writing ---------------------------------------------------------------
    def log_decisions(self, batch: DecisionBatch, timeout: float = 60.0) -> None:
        """Append a decision batch; returns once it is committed."""
        self._writer.submit("decisions", [batch]).result(timeout)

    async def log_decisions_async(self, batch: DecisionBatch) -> None:
        """Async variant for the server's event loop.

        With SQLite and ``normal`` durability a commit costs ~50 us, less than handing it to the
        writer thread and back, so it runs inline; otherwise (fsync per commit, PostgreSQL
        round trips) the writer thread group-commits while the event loop serves other requests.
        """
        await self._commit_async("decisions", [batch])

    async def _commit_async(self, kind: str, items: list[Any]) -> Any:
        """Commit on the event loop when that is cheap and cannot stall it, else through the writer thread.

        The inline attempt never waits: it skips when the writer holds the connection and gives up after
        ``INLINE_BUSY_MS`` when another process holds SQLite's lock; the writer thread then waits for the
        lock off the loop (health checks and other requests keep being served) and any store error
        reaches the caller as a ``StoreError`` (503, nothing acknowledged).
        """
        if self._inline_conn is not None and self._write_lock.acquire(blocking=False):
            try:
                return self._guarded(lambda: self._write_jobs([WriteJob(kind, items)], self._inline_conn))[0]
            except StoreError as exc:
                if not _busy(exc):
                    raise
            finally:
                self._write_lock.release()
        return await asyncio.wrap_future(self._writer.submit(kind, items))

    async def log_decisions_keyed_async(self, batch: DecisionBatch, key: str) -> str:
        """Append ``batch`` under idempotency ``key`` unless the key was used: the id of the batch that holds it.

        The key and the batch commit in one transaction, so a retried request (same key) finds the first
        attempt's batch and logs nothing new, even when both attempts race.
        """
        return (await self._commit_async("decisions_keyed", [(batch, key)]))[0]

    def log_interactions(self, records: Sequence[InteractionRecord], timeout: float = 60.0) -> None:
        """Append agent interactions; returns once they are committed."""
        self._writer.submit("interactions", list(records)).result(timeout)

    async def log_interactions_async(self, records: Sequence[InteractionRecord]) -> None:
        """Async variant for the agent server (inline commit for SQLite ``normal``, as for decisions)."""
        await self._commit_async("interactions", list(records))

    def log_decisions_if_absent(self, batch: DecisionBatch, timeout: float = 60.0) -> None:
        """Append a batch unless one with its id exists (re-delivered logger events)."""
        self._writer.submit("decisions_if_absent", [batch]).result(timeout)

    def add_feedback(self, events: Sequence[FeedbackEvent], timeout: float = 60.0) -> list[str]:
        """Append feedback events; per event ``"accepted"``, ``"duplicate"`` (the same feedback again) or
        ``"conflict"`` (its idempotency key already names other feedback, which stands), after commit."""
        return self._writer.submit("feedback", list(events)).result(timeout)

    async def add_feedback_async(self, events: Sequence[FeedbackEvent]) -> list[str]:
        """Async variant of :meth:`add_feedback`."""
        return await asyncio.wrap_future(self._writer.submit("feedback", list(events)))

    def add_logger_events(self, events: Sequence[tuple[str, str, str, bytes]], timeout: float = 60.0) -> list[str]:
        """Store KServe logger CloudEvents ``(ce_id, ce_type, model, body)``; duplicates are ignored."""
        return self._writer.submit("logger", list(events)).result(timeout)

    def quarantine(self, source: str, ref: str, reason: str, body: bytes, timeout: float = 60.0) -> str:
        """Keep input that failed validation (never learned from) with the reason: ``"quarantined"``/``"duplicate"``."""
        return self._writer.submit("quarantine", [(source, ref, reason, body)]).result(timeout)[0]

    def _locked_write(self, jobs: list[WriteJob]) -> list[Any]:
        with self._write_lock:
            return self._guarded(lambda: self._write_jobs(jobs, self._write_conn))

    def _guarded(self, write: Any) -> Any:
        """Run a write; a database error (disk full, lock held, connection lost) becomes a ``StoreError``."""
        try:
            return write()
        except StoreError:
            raise
        except _database_errors() as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    def _write_jobs(self, jobs: list[WriteJob], conn: Any) -> list[Any]:
        d = self.dialect
        if len(jobs) == 1 and jobs[0].kind == "decisions" and len(jobs[0].items) == 1:
            conn.execute(d.q(_INSERT_BATCH), _batch_row(jobs[0].items[0]))  # one statement: its own transaction
            return [None]
        results: list[Any] = []
        with _transaction(conn, d):
            for job in jobs:
                if job.kind == "decisions":
                    conn.cursor().executemany(d.q(_INSERT_BATCH), [_batch_row(b) for b in job.items])
                    results.append(None)
                elif job.kind == "decisions_if_absent":
                    for b in job.items:
                        conn.execute(d.q(_INSERT_BATCH + " ON CONFLICT (batch_id) DO NOTHING"), _batch_row(b))
                    results.append(None)
                elif job.kind == "interactions":
                    conn.cursor().executemany(d.q(_INSERT_INTERACTION), [_interaction_row(r) for r in job.items])
                    results.append(None)
                elif job.kind == "feedback":
                    results.append([self._insert_feedback(conn, e) for e in job.items])
                elif job.kind == "logger":
                    results.append([self._insert_logger(conn, e) for e in job.items])
                elif job.kind == "decisions_keyed":
                    results.append([self._insert_keyed(conn, b, key) for b, key in job.items])
                elif job.kind == "quarantine":
                    results.append(["quarantined" if conn.execute(d.q(_INSERT_QUARANTINE), (time.time(), *e)).rowcount
                                    == 1 else "duplicate" for e in job.items])
                else:
                    raise StoreError(f"unknown write kind {job.kind!r}")
        return results

    def _insert_feedback(self, conn: Any, e: FeedbackEvent) -> str:
        d = self.dialect
        cur = conn.execute(d.q(_INSERT_FEEDBACK), (
            e.idempotency_key, e.decision_id, e.batch_id, e.index, e.kind, e.value,
            _json_or_none(e.action), _json_or_none(e.payload), e.event_ts, e.received_ts))
        if cur.rowcount == 1:
            return "accepted"
        stored = conn.execute(d.q("SELECT decision_id, kind, value, action, payload FROM feedback "
                                  "WHERE idempotency_key = ?"), (e.idempotency_key,)).fetchone()
        if stored is not None and tuple(stored) != (e.decision_id, e.kind, e.value, _json_or_none(e.action),
                                                    _json_or_none(e.payload)):
            return "conflict"  # the key names other feedback: the stored one stands, the caller is told
        conn.execute(d.q(_BUMP_COUNTER), ("feedback_duplicates",))
        return "duplicate"

    def _insert_keyed(self, conn: Any, batch: DecisionBatch, key: str) -> str:
        d = self.dialect
        if conn.execute(d.q(_INSERT_PREDICT_KEY), (key, batch.batch_id, batch.ts)).rowcount == 1:
            conn.execute(d.q(_INSERT_BATCH), _batch_row(batch))
            return batch.batch_id
        return str(conn.execute(d.q("SELECT batch_id FROM predict_keys WHERE key = ?"), (key,)).fetchone()[0])

    def _insert_logger(self, conn: Any, event: tuple[str, str, str, bytes]) -> str:
        cur = conn.execute(self.dialect.q(_INSERT_LOGGER), (event[0], event[1], time.time(), event[2], event[3]))
        return "accepted" if cur.rowcount == 1 else "duplicate"

    # ----- reading ---------------------------------------------------------------
    def iter_batches(self, model: str | None = None, since_seq: int = 0, until_seq: int | None = None,
                     chunk: int = 1000) -> Iterator[tuple[int, DecisionBatch]]:
        """Yield ``(seq, batch)`` in append order, ``chunk`` rows at a time (bounded memory)."""
        d = self.dialect
        conn = self._reader()
        last = since_seq
        while True:
            sql = f"SELECT {_BATCH_COLUMNS} FROM decision_batches WHERE seq > ?"
            args: list[Any] = [last]
            if model is not None:
                sql += " AND model = ?"
                args.append(model)
            if until_seq is not None:
                sql += " AND seq <= ?"
                args.append(until_seq)
            rows = conn.execute(d.q(sql + f" ORDER BY seq LIMIT {int(chunk)}"), args).fetchall()
            if not rows:
                return
            for row in rows:
                yield int(row[0]), _row_batch(row)
            last = int(rows[-1][0])

    def get_batches(self, batch_ids: Sequence[str]) -> dict[str, DecisionBatch]:
        """Batches by id (missing ids are absent from the result)."""
        d = self.dialect
        out: dict[str, DecisionBatch] = {}
        ids = list(dict.fromkeys(batch_ids))
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            rows = self._reader().execute(
                d.q(f"SELECT {_BATCH_COLUMNS} FROM decision_batches WHERE batch_id IN ({marks})"), part).fetchall()
            for row in rows:
                batch = _row_batch(row)
                out[batch.batch_id] = batch
        return out

    def feedback_rows(self, since_seq: int = 0) -> list[dict[str, Any]]:
        """All feedback events after ``since_seq`` as dicts, in append order."""
        rows = self._reader().execute(self.dialect.q(
            "SELECT seq, idempotency_key, decision_id, batch_id, idx, kind, value, action, payload, event_ts, "
            "received_ts FROM feedback WHERE seq > ? ORDER BY seq"), (since_seq,)).fetchall()
        keys = ("seq", "idempotency_key", "decision_id", "batch_id", "idx", "kind", "value", "action", "payload",
                "event_ts", "received_ts")
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["action"] = None if item["action"] is None else json.loads(item["action"])
            item["payload"] = None if item["payload"] is None else json.loads(item["payload"])
            out.append(item)
        return out

    def iter_interactions(self, model: str | None = None, since_seq: int = 0, until_seq: int | None = None,
                          session_id: str | None = None, chunk: int = 1000) -> Iterator[tuple[int, InteractionRecord]]:
        """Yield ``(seq, interaction)`` in append order, ``chunk`` rows at a time."""
        conn = self._reader()
        last = since_seq
        while True:
            sql = "SELECT seq, record FROM interactions WHERE seq > ?"
            args: list[Any] = [last]
            for column, value in (("model", model), ("session_id", session_id)):
                if value is not None:
                    sql += f" AND {column} = ?"
                    args.append(value)
            if until_seq is not None:
                sql += " AND seq <= ?"
                args.append(until_seq)
            rows = conn.execute(self.dialect.q(sql + f" ORDER BY seq LIMIT {int(chunk)}"), args).fetchall()
            if not rows:
                return
            for seq, record in rows:
                yield int(seq), InteractionRecord.from_json(orjson.loads(record))
            last = int(rows[-1][0])

    def get_interactions(self, interaction_ids: Sequence[str]) -> dict[str, InteractionRecord]:
        """Interactions by id (missing ids are absent from the result)."""
        out: dict[str, InteractionRecord] = {}
        ids = list(dict.fromkeys(interaction_ids))
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            rows = self._reader().execute(self.dialect.q(
                f"SELECT record FROM interactions WHERE interaction_id IN ({marks})"), part).fetchall()
            for (record,) in rows:
                item = InteractionRecord.from_json(orjson.loads(record))
                out[item.interaction_id] = item
        return out

    def session_index(self) -> dict[str, float]:
        """``session_id -> ts of its first interaction``: what session-level feedback joins to."""
        rows = self._reader().execute(
            "SELECT session_id, MIN(ts) FROM interactions WHERE session_id IS NOT NULL GROUP BY session_id").fetchall()
        return {r[0]: float(r[1]) for r in rows}

    def logger_pair(self, ce_id: str) -> dict[str, bytes]:
        """``{ce_type: body}`` of the logger events with id ``ce_id`` (an indexed lookup: the table's primary key)."""
        rows = self._reader().execute(self.dialect.q("SELECT ce_type, body FROM logger_events WHERE ce_id = ?"),
                                      (ce_id,)).fetchall()
        return {r[0]: bytes(r[1]) for r in rows}

    def quarantined(self) -> list[dict[str, Any]]:
        """Quarantined input, oldest first: ``{"ts", "source", "ref", "reason", "body"}``."""
        rows = self._reader().execute("SELECT ts, source, ref, reason, body FROM quarantine ORDER BY seq").fetchall()
        return [{"ts": float(r[0]), "source": r[1], "ref": r[2], "reason": r[3], "body": bytes(r[4])} for r in rows]

    def logger_events(self) -> list[tuple[str, str, str, bytes]]:
        """Stored KServe logger events ``(ce_id, ce_type, model, body)``."""
        rows = self._reader().execute("SELECT ce_id, ce_type, model, body FROM logger_events ORDER BY ts").fetchall()
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def batch_index(self) -> dict[str, tuple[float, int]]:
        """``batch_id -> (ts, n)`` for every batch and interaction (``n`` choices): what the feedback join needs.

        Session feedback (``session:<id>``) maps to the session's first interaction, with ``n`` 1.
        """
        conn = self._reader()
        rows = conn.execute("SELECT batch_id, ts, n FROM decision_batches").fetchall()
        rows += conn.execute("SELECT interaction_id, ts, n FROM interactions").fetchall()
        index = {r[0]: (float(r[1]), int(r[2])) for r in rows}
        index.update({SESSION_PREFIX + sid: (ts, 1) for sid, ts in self.session_index().items()})
        return index

    def stats(self) -> dict[str, int]:
        """Counts of batches, decisions, feedback events and collapsed duplicates."""
        conn = self._reader()
        batches, decisions = conn.execute("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM decision_batches").fetchone()
        (feedback,) = conn.execute("SELECT COUNT(*) FROM feedback").fetchone()
        (interactions,) = conn.execute("SELECT COUNT(*) FROM interactions").fetchone()
        (quarantined,) = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()
        dup = conn.execute(self.dialect.q("SELECT value FROM rlops_counters WHERE name = ?"),
                           ("feedback_duplicates",)).fetchone()
        return {"batches": int(batches), "decisions": int(decisions), "interactions": int(interactions),
                "feedback_events": int(feedback), "quarantined": int(quarantined),
                "feedback_duplicates": int(dup[0]) if dup else 0}

    def max_seq(self) -> int:
        """Highest decision-batch sequence number (0 when empty)."""
        (value,) = self._reader().execute("SELECT COALESCE(MAX(seq), 0) FROM decision_batches").fetchone()
        return int(value)

    def max_interaction_seq(self) -> int:
        """Highest interaction sequence number (0 when empty): where an agent's canary starts reading."""
        (value,) = self._reader().execute("SELECT COALESCE(MAX(seq), 0) FROM interactions").fetchone()
        return int(value)

    def close(self) -> None:
        """Flush queued writes and close connections."""
        self._writer.close()
        self._write_conn.close()
        if self._inline_conn is not None:
            self._inline_conn.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> ExperienceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(url: str | Path, durability: str = "normal", busy_timeout_s: float = 30.0) -> ExperienceStore:
    """Open (creating if needed) the store at a path, ``sqlite:///PATH`` or ``postgresql://...``.

    ``busy_timeout_s``: how long a write waits for a SQLite lock another process holds before it fails
    (a 503 for the request; nothing acknowledged)."""
    return ExperienceStore(str(url), durability=durability, busy_timeout_s=busy_timeout_s)


# ----- SQL and row encoding -----------------------------------------------------------
_BATCH_COLUMNS = ("seq, batch_id, ts, model, n, obs_dim, action_dim, n_actions, obs, actions, propensities, probs, "
                  "decided_by, policies, extra, shadow_policy, shadow_probs")
_INSERT_BATCH = ("INSERT INTO decision_batches (batch_id, ts, model, n, obs_dim, action_dim, n_actions, obs, actions, "
                 "propensities, probs, decided_by, policies, extra, shadow_policy, shadow_probs) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_FEEDBACK = ("INSERT INTO feedback (idempotency_key, decision_id, batch_id, idx, kind, value, action, payload, "
                    "event_ts, received_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (idempotency_key) DO NOTHING")
_INSERT_INTERACTION = ("INSERT INTO interactions (interaction_id, ts, model, session_id, policy_version, n, record) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_LOGGER = ("INSERT INTO logger_events (ce_id, ce_type, ts, model, body) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT (ce_id, ce_type) DO NOTHING")
_INSERT_PREDICT_KEY = "INSERT INTO predict_keys (key, batch_id, ts) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING"
_INSERT_QUARANTINE = ("INSERT INTO quarantine (ts, source, ref, reason, body) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (source, ref) DO NOTHING")
_BUMP_COUNTER = ("INSERT INTO rlops_counters (name, value) VALUES (?, 1) "
                 "ON CONFLICT (name) DO UPDATE SET value = rlops_counters.value + 1")


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _batch_row(b: DecisionBatch) -> tuple[Any, ...]:
    obs = np.ascontiguousarray(b.obs, dtype=np.float32)
    discrete = b.actions.ndim == 1
    actions = np.ascontiguousarray(b.actions, dtype=np.int64 if discrete else np.float32)
    n_actions = int(b.probs.shape[1]) if b.probs is not None else 0
    return (
        b.batch_id, float(b.ts), b.model, b.n, int(obs.shape[1]), 0 if discrete else int(actions.shape[1]),
        n_actions, obs.tobytes(), actions.tobytes(),
        np.ascontiguousarray(b.propensities, dtype=np.float64).tobytes(),
        None if b.probs is None else np.ascontiguousarray(b.probs, dtype=np.float64).tobytes(),
        np.ascontiguousarray(b.decided_by, dtype=np.uint8).tobytes(),
        orjson.dumps(b.policies).decode(), orjson.dumps(b.extra, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
        b.shadow_policy,
        None if b.shadow_probs is None else np.ascontiguousarray(b.shadow_probs, dtype=np.float64).tobytes(),
    )


def _interaction_row(r: InteractionRecord) -> tuple[Any, ...]:
    try:
        record = orjson.dumps(r.to_json(), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:  # an integer beyond 64 bits (a client's metadata, a model-written argument): kept as text
        record = orjson.dumps(_big_ints_as_text(r.to_json()), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return (r.interaction_id, float(r.ts), r.model, r.session_id, r.policy_version, r.n, record)


def _big_ints_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 64):
        return str(value)
    if isinstance(value, dict):
        return {k: _big_ints_as_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_big_ints_as_text(v) for v in value]
    return value


def _row_batch(row: Sequence[Any]) -> DecisionBatch:
    (_seq, batch_id, ts, model, n, obs_dim, action_dim, n_actions, obs, actions, props, probs, decided_by,
     policies, extra, shadow_policy, shadow_probs) = row
    n = int(n)
    act = np.frombuffer(bytes(actions), dtype=np.int64 if action_dim == 0 else np.float32)
    return DecisionBatch(
        batch_id=batch_id, ts=float(ts), model=model,
        obs=np.frombuffer(bytes(obs), dtype=np.float32).reshape(n, int(obs_dim)),
        actions=act if action_dim == 0 else act.reshape(n, int(action_dim)),
        propensities=np.frombuffer(bytes(props), dtype=np.float64),
        probs=None if probs is None else np.frombuffer(bytes(probs), dtype=np.float64).reshape(n, int(n_actions)),
        decided_by=np.frombuffer(bytes(decided_by), dtype=np.uint8),
        policies=json.loads(policies), extra=json.loads(extra), shadow_policy=shadow_policy,
        shadow_probs=None if shadow_probs is None
        else np.frombuffer(bytes(shadow_probs), dtype=np.float64).reshape(n, int(n_actions)),
    )


def _sqlite_path(url: str) -> str:
    """SQLAlchemy convention: ``sqlite:///rel.db`` is relative, ``sqlite:////abs.db`` absolute."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    if url.startswith("sqlite:"):
        raise ConfigError(f"store URL {url!r}: write sqlite:///relative.db or sqlite:////absolute.db")
    return url


class _transaction:
    """BEGIN/COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: Any, dialect: _Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE" if self.dialect.name == "sqlite" else "BEGIN")

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except Exception:  # a failed COMMIT (disk full) must not leave the transaction open
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - SQLite may have rolled back already (SQLITE_FULL); nothing is open
            pass


INLINE_BUSY_MS = 20
"""How long an on-loop commit waits for a SQLite lock held by another process before the writer thread takes over."""


def _busy(exc: StoreError) -> bool:
    """True for a store error that only says another connection holds the lock (worth waiting for off the loop)."""
    text = str(exc.__cause__ or exc).lower()
    return "locked" in text or "busy" in text


def _database_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    try:
        import psycopg
    except ImportError:
        return errors
    return (*errors, psycopg.Error)
