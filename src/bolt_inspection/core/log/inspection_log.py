"""Traceability log of every verdict: SQLite (WAL) rows plus PNG evidence for NG bolts.

One :class:`InspectionLog` per database is the only writer. It owns a writer thread and the only
read-write connection; callers (the classifier or a log node callback) hand it a
:class:`VerdictRecord` and return at once. A thread instead of synchronous writes because the
verdict path has a 0.9 s budget and, for an NG bolt, encoding four ROI crops and a mosaic as PNG
plus an fsync'ed commit costs tens of milliseconds; SQLite allows one writer anyway, so one thread
that owns the connection serialises writes without locks and drains bursts in one transaction.
Readers (report, HMI) open their own read-only connections with :func:`connect_readonly`; WAL
lets them read while the writer commits.

Crash safety, by construction rather than by clean-up code:

* A verdict row is committed first, in its own transaction, before any of its pictures is
  encoded: a verdict that reached the log survives a kill -9 a few milliseconds later (the
  evidence images can be lost, the verdict cannot). Its image rows are committed with it, in
  state ``writing``, naming the files about to be written.
* An image is then written to ``<name>.tmp``, fsync'ed and ``os.replace``'d into place, and only
  then is its row set to ``stored``: a ``stored`` row always has its complete file.
* Pruning commits ``state = 'pruned'`` *before* unlinking, so the same holds while pruning.
* A kill in between leaves ``writing`` rows (and ``pruned`` rows whose file still exists); the
  log settles them when it is opened again. SQLite's journal makes each batch all-or-nothing.

The log deletes only files it wrote and recorded: the paths in its own image rows (and their
``.tmp``), and only when they resolve inside ``image_dir`` without passing through a symlink.
It never scans the folder, so a user's files and another log's evidence in a shared folder are
safe. Files are named with a random per-process tag, so two logs sharing a folder never write
the same name.

Rows are never deleted by the log: disk use is bounded by pruning the oldest image files once
their total passes ``max_image_bytes``; the verdict rows stay, their image rows say ``pruned``.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import queue
import secrets
import sqlite3
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from bolt_inspection.core.errors import BoltInspectionError
from bolt_inspection.core.line.verdict import Verdict

_LOG = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DELIVERY_STATES = ('pending', 'delivered', 'undelivered')
IMAGE_STATES = ('writing', 'stored', 'pruned', 'failed')
DEFAULT_MAX_IMAGE_BYTES = 2 * 1024**3
# ~/.ros is where ROS 2 tools keep per-user state and logs; config/log.yaml says the same.
DEFAULT_DB_PATH = '~/.ros/bolt_inspection/inspection.db'

_SCHEMA_V1 = """
CREATE TABLE verdicts (
    id          INTEGER PRIMARY KEY,
    bolt_id     TEXT    NOT NULL,
    trigger_ns  INTEGER NOT NULL,
    created_ns  INTEGER NOT NULL,
    code        INTEGER NOT NULL CHECK (code IN (1, 2)),
    message     TEXT    NOT NULL,
    reasons     TEXT    NOT NULL DEFAULT '[]',
    p_ng        TEXT    NOT NULL DEFAULT '{}',
    threshold   REAL,
    latency_ms  REAL,
    model_id    TEXT    NOT NULL DEFAULT '',
    plc_state   TEXT    NOT NULL DEFAULT 'pending'
                CHECK (plc_state IN ('pending', 'delivered', 'undelivered')),
    plc_ns      INTEGER
);
CREATE INDEX verdicts_created ON verdicts (created_ns);
CREATE INDEX verdicts_bolt ON verdicts (bolt_id);
CREATE TABLE images (
    id          INTEGER PRIMARY KEY,
    verdict_id  INTEGER NOT NULL REFERENCES verdicts (id),
    kind        TEXT    NOT NULL CHECK (kind IN ('crop', 'mosaic')),
    cam         INTEGER,
    path        TEXT    NOT NULL,
    bytes       INTEGER NOT NULL DEFAULT 0,
    state       TEXT    NOT NULL DEFAULT 'stored'
                CHECK (state IN ('stored', 'pruned', 'failed'))
);
CREATE INDEX images_verdict ON images (verdict_id);
CREATE INDEX images_stored ON images (state, id);
"""

# Version 2: image rows are committed with their verdict, in state 'writing', before the file is
# written (issue 17). SQLite cannot alter a CHECK constraint, so the table is rebuilt.
_V1_TO_V2 = """
CREATE TABLE images_v2 (
    id          INTEGER PRIMARY KEY,
    verdict_id  INTEGER NOT NULL REFERENCES verdicts (id),
    kind        TEXT    NOT NULL CHECK (kind IN ('crop', 'mosaic')),
    cam         INTEGER,
    path        TEXT    NOT NULL,
    bytes       INTEGER NOT NULL DEFAULT 0,
    state       TEXT    NOT NULL DEFAULT 'stored'
                CHECK (state IN ('writing', 'stored', 'pruned', 'failed'))
);
INSERT INTO images_v2 (id, verdict_id, kind, cam, path, bytes, state)
    SELECT id, verdict_id, kind, cam, path, bytes, state FROM images;
DROP TABLE images;
ALTER TABLE images_v2 RENAME TO images;
CREATE INDEX images_verdict ON images (verdict_id);
CREATE INDEX images_stored ON images (state, id);
"""

# Migrations from version N to N + 1, applied in order inside one transaction each. Version 0 is
# an empty file. Never edit a migration once released: databases in the field were made by it.
_MIGRATIONS: dict[int, str] = {0: _SCHEMA_V1, 1: _V1_TO_V2}


# Verdicts whose pictures wait for the writer; past this, record() waits (backpressure).
_MAX_PENDING = 64


@dataclass
class _PlannedImage:
    kind: str
    cam: int | None
    rel: str
    pixels: np.ndarray


@dataclass
class _ImageJob:
    bolt_id: str
    images: list[tuple[int, _PlannedImage]]     # (image row id, what to write)


class LogError(BoltInspectionError):
    """The inspection log database is missing, unreadable, or not an inspection log."""


@dataclass
class VerdictRecord:
    """One bolt's verdict as the log stores it.

    Attributes:
        bolt_id: The bolt id (decimal string from the trigger's ``frame_id``).
        trigger_ns: Trigger stamp in nanoseconds (the join key of the four views).
        code: 1 = OK, 2 = NG (the PLC verdict code).
        message: ``'OK'``, ``'NG'`` or ``'NG: <reason>'`` as published.
        p_ng: NG probability per camera; ``None`` for a view that was missing or undecodable.
        threshold: The decision threshold in force.
        latency_ms: Trigger to verdict, milliseconds.
        model_id: Identifier of the model that decided.
        reasons: Why the bolt is NG beyond the classifier (missing view, decode error, ...).
        plc_state: ``'pending'`` until the PLC bridge reports delivery.
        crops: ROI crop per camera (BGR uint8), stored as PNG for NG bolts.
        mosaic: The Grad-CAM mosaic (BGR uint8), stored as PNG for NG bolts.
        created_ns: Wall-clock time of the verdict; ``time.time_ns()`` when omitted.
    """

    bolt_id: str
    trigger_ns: int
    code: int
    message: str
    p_ng: Mapping[int, float | None] = field(default_factory=dict)
    threshold: float | None = None
    latency_ms: float | None = None
    model_id: str = ''
    reasons: list[str] = field(default_factory=list)
    plc_state: str = 'pending'
    crops: Mapping[int, np.ndarray] = field(default_factory=dict)
    mosaic: np.ndarray | None = None
    created_ns: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == 1

    @classmethod
    def from_inspection(cls, bolt_id, trigger_ns: int, inspection: Any, *, threshold: float,
                        model_id: str, latency_ms: float | None = None,
                        mosaic: np.ndarray | None = None) -> VerdictRecord:
        """Build a record from a :class:`bolt_inspection.core.line.inspector.Inspection`.

        Duck-typed (``inspection.verdict.code/message/reasons``, ``.p_ng``, ``.crops``) so this
        module does not import the ML stack.
        """
        verdict = inspection.verdict
        return cls(bolt_id=str(bolt_id), trigger_ns=int(trigger_ns), code=int(verdict.code),
                   message=str(verdict.message), p_ng=dict(inspection.p_ng),
                   threshold=float(threshold), latency_ms=latency_ms, model_id=str(model_id),
                   reasons=list(verdict.reasons), crops=dict(inspection.crops), mosaic=mosaic)


    @classmethod
    def from_verdict(cls, verdict: Verdict, *, trigger_ns: int,
                     created_ns: int | None = None) -> VerdictRecord:
        """Build a record from a decoded ``/inspection/verdict``
        (:func:`bolt_inspection.core.line.verdict.decode_verdict`), for a log node that only
        sees the topic."""
        return cls(bolt_id=verdict.bolt_id, trigger_ns=int(trigger_ns), code=verdict.code,
                   message=verdict.message, p_ng=dict(verdict.p_ng),
                   threshold=verdict.threshold, latency_ms=verdict.latency_ms,
                   model_id=verdict.model_id, reasons=list(verdict.reasons),
                   created_ns=created_ns)


@dataclass(frozen=True)
class LoggedImage:
    """One stored (or pruned) evidence image of a logged verdict."""

    kind: str            # 'crop' | 'mosaic'
    cam: int | None      # camera of a crop; None for the mosaic
    path: Path           # absolute path (may no longer exist when state is 'pruned')
    bytes: int
    state: str           # 'stored' | 'pruned' | 'failed'


@dataclass(frozen=True)
class LoggedVerdict:
    """A verdict row as read back from the log."""

    id: int
    bolt_id: str
    trigger_ns: int
    created_ns: int
    code: int
    message: str
    reasons: list[str]
    p_ng: dict[int, float | None]
    threshold: float | None
    latency_ms: float | None
    model_id: str
    plc_state: str
    images: list[LoggedImage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code == 1


def default_image_dir(db_path: str | os.PathLike) -> Path:
    """``/x/inspection.db`` keeps its images in ``/x/inspection_images/``."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.stem + '_images')


def _validate_record(record: VerdictRecord) -> None:
    if record.code not in (1, 2):
        raise ValueError(f'verdict code must be 1 (OK) or 2 (NG), got {record.code!r}')
    if record.plc_state not in DELIVERY_STATES:
        raise ValueError(f'plc_state must be one of {DELIVERY_STATES}, got {record.plc_state!r}')
    if not str(record.bolt_id):
        raise ValueError('bolt_id must not be empty')


def _json_p_ng(p_ng: Mapping[int, float | None]) -> str:
    out = {}
    for cam, value in sorted(p_ng.items()):
        if value is None or not math.isfinite(float(value)):
            out[str(int(cam))] = None
        else:
            out[str(int(cam))] = float(value)
    return json.dumps(out)


def _encode_png(image: np.ndarray) -> bytes:
    import cv2  # imported here: opening a log for reading should not need OpenCV

    ok, buf = cv2.imencode('.png', np.ascontiguousarray(image))
    if not ok:
        raise ValueError(f'cannot encode image of shape {image.shape} as PNG')
    return buf.tobytes()


def _write_atomic(path: Path, data: bytes, *, fsync: bool) -> None:
    """Write ``data`` to ``path`` so a reader (or a crash) never sees a partial file."""
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute('PRAGMA user_version').fetchone()[0]
    if version > SCHEMA_VERSION:
        raise LogError(f'database schema version {version} is newer than this software '
                       f'(supports {SCHEMA_VERSION}); upgrade bolt_inspection')
    while version < SCHEMA_VERSION:
        script = _MIGRATIONS[version]
        # executescript commits first; BEGIN IMMEDIATE makes the DDL and the version bump atomic.
        conn.executescript(f'BEGIN IMMEDIATE; {script}; PRAGMA user_version = {version + 1}; '
                           'COMMIT;')
        version += 1


class InspectionLog:
    """The single writer of an inspection log database.

    Example::

        log = InspectionLog('~/.ros/bolt_inspection/inspection.db')
        log.record(VerdictRecord(bolt_id='17', trigger_ns=t, code=2, message='NG', ...))
        log.set_delivery('17', 'delivered')
        log.close()

    Args:
        path: The SQLite database file (created with its directory if missing).
        image_dir: Where evidence PNGs go; ``<db stem>_images/`` beside the database by default.
        max_image_bytes: Prune the oldest images once stored images exceed this many bytes.
        store_ok_images: Also keep crops and mosaic of OK bolts (off: NG evidence is what matters).
        synchronous: SQLite ``synchronous`` pragma. ``'FULL'`` (default) fsyncs every commit so a
            verdict sent to the PLC survives a power cut; ``'NORMAL'`` survives process kills only.
        queue_size: Records waiting for the writer; ``record`` blocks when full (backpressure
            instead of unbounded memory when the disk stalls).

    Raises:
        LogError: The database cannot be opened or has a newer schema.
    """

    def __init__(self, path: str | os.PathLike, image_dir: str | os.PathLike | None = None,
                 max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES, *, store_ok_images: bool = False,
                 synchronous: str = 'FULL', queue_size: int = 1000):
        if max_image_bytes < 0:
            raise ValueError(f'max_image_bytes must be >= 0, got {max_image_bytes}')
        if synchronous.upper() not in ('OFF', 'NORMAL', 'FULL', 'EXTRA'):
            raise ValueError(f'synchronous must be OFF/NORMAL/FULL/EXTRA, got {synchronous!r}')
        self.path = Path(path).expanduser()
        self.image_dir = (Path(image_dir).expanduser() if image_dir is not None
                          else default_image_dir(self.path))
        self.max_image_bytes = int(max_image_bytes)
        self.store_ok_images = store_ok_images
        self._synchronous = synchronous.upper()
        self._fsync_files = self._synchronous in ('FULL', 'EXTRA')
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stats = {'written': 0, 'images_written': 0, 'images_pruned': 0,
                       'errors': 0, 'last_error': ''}
        # Deliveries reported before the verdict reached the log (separate topics, no ordering).
        self._early_delivery: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._seq = 0
        self._tag = secrets.token_hex(3)     # names never collide with another log's
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.image_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogError(f'{self.path}: cannot open inspection log ({exc})') from None
        self._lock_file = self._take_writer_lock()
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise LogError(f'{self.path}: cannot open inspection log ({exc})') from None
        try:
            _migrate(conn)
            self._image_bytes = self._sweep(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._lock_file.close()
            raise LogError(f'{self.path}: not a usable inspection log ({exc})') from None
        except BaseException:
            conn.close()
            self._lock_file.close()
            raise
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(conn,), daemon=True,
                                        name='inspection-log-writer')
        self._thread.start()
        atexit.register(self.close)

    # -- public API (any thread) ------------------------------------------------------------

    def record(self, record: VerdictRecord) -> None:
        """Queue a verdict for writing; returns without waiting for the disk.

        Raises:
            ValueError: The record is malformed (bad code, bad delivery state, empty bolt id).
            RuntimeError: The log was closed.
        """
        _validate_record(record)
        if record.created_ns is None:
            record.created_ns = time.time_ns()
        self._put(('record', record))

    def add_images(self, bolt_id, trigger_ns: int, *,
                   crops: Mapping[int, np.ndarray] | None = None,
                   mosaic: np.ndarray | None = None) -> None:
        """Add evidence pictures to a verdict already recorded (the latest one of ``bolt_id``
        with this ``trigger_ns``), e.g. the Grad-CAM mosaic that arrives after its verdict.

        Kept only where :meth:`record` would have kept them (NG, or ``store_ok_images``).
        """
        if not crops and mosaic is None:
            return
        self._put(('images', str(bolt_id), int(trigger_ns), dict(crops or {}), mosaic))

    def set_delivery(self, bolt_id, state: str, when_ns: int | None = None) -> None:
        """Set the PLC delivery state of the latest verdict of ``bolt_id``.

        Applied in order after any verdict queued before it. If the verdict has not been logged
        yet (the PLC bridge was faster than the log), the state is kept and applied on insert.
        """
        if state not in DELIVERY_STATES:
            raise ValueError(f'delivery state must be one of {DELIVERY_STATES}, got {state!r}')
        self._put(('delivery', str(bolt_id), state, when_ns or time.time_ns()))

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything queued so far is committed. Returns False on timeout."""
        done = threading.Event()
        self._put(('flush', done))
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, stop the writer thread and close the database.

        Also runs at interpreter exit (the writer is a daemon thread, so without this a node
        that forgot to close would lose the verdicts still queued).
        """
        if self._closed:
            return
        atexit.unregister(self.close)
        if self._thread.is_alive():
            self._put(('stop',))
            self._thread.join(timeout)
        self._closed = True

    def stats(self) -> dict[str, Any]:
        """Health counters: rows written, images written/pruned, stored image bytes, errors."""
        with self._lock:
            out = dict(self._stats)
            out['image_bytes'] = self._image_bytes
        out['queued'] = self._queue.qsize()
        out['alive'] = self._thread.is_alive()
        return out

    def __enter__(self) -> InspectionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writer thread ----------------------------------------------------------------------

    def _put(self, item: tuple) -> None:
        if self._closed:
            raise RuntimeError('inspection log is closed')
        if not self._thread.is_alive():
            # Without this a dead writer would make record() block forever on a full queue.
            raise RuntimeError(f'inspection log writer stopped: {self._stats["last_error"]}')
        self._queue.put(item)

    def _take_writer_lock(self):
        """Hold ``<db>.writer.lock`` for the log's lifetime: a second writer is refused.

        Two writers would each sweep and prune the other's fresh images. The OS drops the lock
        when the process dies, so a killed writer never blocks the next one.
        """
        import fcntl

        lock_path = self.path.with_name(self.path.name + '.writer.lock')
        fh = open(lock_path, 'a+')  # noqa: SIM115 - held open until close()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or 'another process'
            fh.close()
            raise LogError(f'{self.path}: already open for writing by {holder}; '
                           'one writer per inspection log') from None
        fh.seek(0)
        fh.truncate()
        fh.write(f'pid {os.getpid()}\n')
        fh.flush()
        return fh

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=10.0)
        conn.execute('PRAGMA journal_mode = WAL')
        conn.execute(f'PRAGMA synchronous = {self._synchronous}')
        conn.execute('PRAGMA foreign_keys = ON')
        return conn

    # -- files the log owns ---------------------------------------------------------------

    def _own_file(self, rel: str) -> Path | None:
        """``image_dir / rel`` if it is a path this log may write or delete, else None.

        ``rel`` comes from the database: it must stay inside ``image_dir`` and no component
        below it may be a symlink (a planted link must not lead the log out of its folder).
        """
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or any(p in ('..', '.', '') for p in parts):
            return None
        path = self.image_dir
        for part in parts:
            path = path / part
            if path.is_symlink():
                return None
        return path

    def _unlink_own(self, rel: str) -> bool:
        """Delete the recorded file ``rel`` (and its ``.tmp``); only a regular file of ours."""
        path = self._own_file(rel)
        if path is None:
            self._error(f'not deleting {rel!r}', ValueError('path leaves the image folder'))
            return False
        removed = False
        for target in (path, path.with_name(path.name + '.tmp')):
            try:
                if stat.S_ISREG(os.lstat(target).st_mode):
                    os.unlink(target)
                    removed = True
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._error(f'deleting {rel}', exc)
        return removed

    def _sweep(self, conn: sqlite3.Connection) -> int:
        """Settle what a crash left; return the bytes of stored images.

        Only rows of this database are looked at: an image still ``writing`` becomes ``stored``
        when its file is complete (it was renamed into place) and ``failed`` otherwise; a
        ``pruned`` image whose file is still there is deleted. No directory is scanned.
        """
        settled = removed = 0
        writing = conn.execute("SELECT id, path FROM images WHERE state = 'writing'").fetchall()
        updates = []
        for image_id, rel in writing:
            path = self._own_file(rel)
            size = None
            if path is not None:
                tmp = path.with_name(path.name + '.tmp')
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)
                if path.is_file() and not path.is_symlink():
                    size = path.stat().st_size
            updates.append(('stored' if size else 'failed', size or 0, image_id))
            settled += 1
        for (rel,) in conn.execute("SELECT path FROM images WHERE state = 'pruned'"):
            path = self._own_file(rel)
            if path is not None and (path.is_file() or path.with_name(path.name + '.tmp')
                                     .is_file()):
                removed += self._unlink_own(rel)
        if updates:
            conn.execute('BEGIN IMMEDIATE')
            conn.executemany('UPDATE images SET state = ?, bytes = ? WHERE id = ?', updates)
            conn.execute('COMMIT')
        if settled or removed:
            _LOG.info('%s: settled %d image(s) a crash left half-written, removed %d pruned '
                      'file(s)', self.image_dir, settled, removed)
        total = conn.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM images WHERE state = 'stored'").fetchone()[0]
        return int(total)

    # -- writer thread ----------------------------------------------------------------------

    def _run(self, conn: sqlite3.Connection) -> None:
        pending: deque[_ImageJob] = deque()   # committed 'writing' rows whose files are due
        try:
            stop = False
            while not stop:
                # New verdicts first: they become durable before older pictures are encoded.
                # With pictures waiting, only look at the queue; else wait for work. Past
                # _MAX_PENDING the queue waits, so record() blocks (backpressure).
                batch = []
                if len(pending) < _MAX_PENDING:
                    try:
                        batch.append(self._queue.get(block=not pending))
                    except queue.Empty:
                        pass
                while batch and len(batch) < 256:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                events = [item[1] for item in batch if item[0] == 'flush']
                stop = any(item[0] == 'stop' for item in batch)
                work = [item for item in batch if item[0] in ('record', 'delivery', 'images')]
                if work:
                    pending.extend(self._guarded(conn, self._write_batch, work) or ())
                if pending and not (events or stop):
                    job = pending.popleft()
                    self._guarded(conn, self._store_images, [job])
                elif pending:
                    # flush()/close(): everything queued so far, pictures included.
                    jobs = list(pending)
                    pending.clear()
                    self._guarded(conn, self._store_images, jobs)
                for event in events:
                    event.set()
        finally:
            conn.close()
            self._lock_file.close()      # releases the writer lock

    def _guarded(self, conn: sqlite3.Connection, step, arg):
        """``step(conn, arg)`` then prune; an unexpected error is logged, not raised."""
        try:
            result = step(conn, arg)
            self._prune(conn)
            return result
        except Exception as exc:  # noqa: BLE001 - keep logging the next bolts
            # A bug or an odd record must not kill the only writer; counted and logged,
            # visible in stats() for the node's diagnostics.
            self._error('unexpected error in writer', exc)
            if conn.in_transaction:
                conn.rollback()
            return None

    def _error(self, what: str, exc: BaseException) -> None:
        _LOG.error('inspection log %s: %s: %s', self.path, what, exc)
        with self._lock:
            self._stats['errors'] += 1
            self._stats['last_error'] = f'{what}: {exc}'

    def _plan_images(self, bolt_id: str, created_ns: int, crops, mosaic) -> list[_PlannedImage]:
        """Name the evidence files of one verdict (nothing is written yet)."""
        images: list[tuple[str, int | None, np.ndarray]] = [
            ('crop', int(cam), crop) for cam, crop in sorted((crops or {}).items())
            if crop is not None]
        if mosaic is not None:
            images.append(('mosaic', None, mosaic))
        if not images:
            return []
        day = time.strftime('%Y-%m-%d', time.localtime(created_ns / 1e9))
        safe_bolt = ''.join(c if c.isalnum() or c in '-_' else '_' for c in bolt_id)[:40]
        self._seq += 1
        stem = f'{created_ns}_{self._tag}{self._seq:04d}_bolt{safe_bolt}'
        return [_PlannedImage(kind, cam, f'{day}/{stem}_{"mosaic" if cam is None else f"cam{cam}"}'
                                         '.png', image)
                for kind, cam, image in images]

    def _write_batch(self, conn: sqlite3.Connection, work: list[tuple]) -> list[_ImageJob]:
        """Commit the verdict rows, deliveries and 'writing' image rows of a batch at once."""
        jobs: list[_ImageJob] = []
        written = 0
        try:
            conn.execute('BEGIN IMMEDIATE')
            for item in work:
                if item[0] == 'record':
                    record: VerdictRecord = item[1]
                    state, plc_ns = record.plc_state, None
                    early = self._early_delivery.pop(record.bolt_id, None)
                    if early is not None:
                        state, plc_ns = early
                    cur = conn.execute(
                        'INSERT INTO verdicts (bolt_id, trigger_ns, created_ns, code, message, '
                        'reasons, p_ng, threshold, latency_ms, model_id, plc_state, plc_ns) '
                        'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                        (record.bolt_id, int(record.trigger_ns), int(record.created_ns),
                         int(record.code), record.message, json.dumps(list(record.reasons)),
                         _json_p_ng(record.p_ng),
                         None if record.threshold is None else float(record.threshold),
                         None if record.latency_ms is None else float(record.latency_ms),
                         record.model_id, state, plc_ns))
                    written += 1
                    if record.ok and not self.store_ok_images:
                        continue
                    planned = self._plan_images(record.bolt_id, int(record.created_ns),
                                                record.crops, record.mosaic)
                    jobs += self._insert_planned(conn, cur.lastrowid, record.bolt_id, planned)
                elif item[0] == 'images':
                    _, bolt_id, trigger_ns, crops, mosaic = item
                    row = conn.execute(
                        'SELECT id, created_ns, code FROM verdicts WHERE bolt_id = ? AND '
                        'trigger_ns = ? ORDER BY id DESC LIMIT 1',
                        (bolt_id, int(trigger_ns))).fetchone()
                    if row is None:
                        self._error(f'bolt {bolt_id}: images for a verdict not in the log',
                                    LookupError(f'trigger {trigger_ns}'))
                        continue
                    if row[2] == 1 and not self.store_ok_images:
                        continue
                    planned = self._plan_images(bolt_id, int(row[1]), crops, mosaic)
                    jobs += self._insert_planned(conn, row[0], bolt_id, planned)
                else:
                    _, bolt_id, state, when_ns = item
                    cur = conn.execute(
                        'UPDATE verdicts SET plc_state = ?, plc_ns = ? WHERE id = '
                        '(SELECT MAX(id) FROM verdicts WHERE bolt_id = ?)',
                        (state, when_ns, bolt_id))
                    if cur.rowcount == 0:
                        self._early_delivery[bolt_id] = (state, when_ns)
                        while len(self._early_delivery) > 1000:
                            self._early_delivery.popitem(last=False)
            conn.execute('COMMIT')
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            self._error(f'writing {len(work)} queued items (dropped)', exc)
            return []
        with self._lock:
            self._stats['written'] += written
        return jobs

    @staticmethod
    def _insert_planned(conn: sqlite3.Connection, verdict_id: int, bolt_id: str,
                        planned: list[_PlannedImage]) -> list[_ImageJob]:
        if not planned:
            return []
        ids = []
        for image in planned:
            cur = conn.execute(
                "INSERT INTO images (verdict_id, kind, cam, path, bytes, state) "
                "VALUES (?, ?, ?, ?, 0, 'writing')", (verdict_id, image.kind, image.cam,
                                                      image.rel))
            ids.append(cur.lastrowid)
        return [_ImageJob(bolt_id, list(zip(ids, planned, strict=True)))]

    def _store_images(self, conn: sqlite3.Connection, jobs: list[_ImageJob]) -> None:
        """Write the files of committed 'writing' rows, then commit them stored or failed."""
        updates = []
        new_bytes = images_written = 0
        for job in jobs:
            for image_id, image in job.images:
                path = self._own_file(image.rel)
                try:
                    if path is None:
                        raise ValueError('path leaves the image folder')
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if self._own_file(image.rel) is None:
                        raise ValueError('the day folder is a symlink')
                    data = _encode_png(image.pixels)
                    _write_atomic(path, data, fsync=self._fsync_files)
                    updates.append(('stored', len(data), image_id))
                    new_bytes += len(data)
                    images_written += 1
                except Exception as exc:  # noqa: BLE001 - OSError, cv2.error, ValueError
                    # The verdict row matters more than its pictures: a 'failed' image row.
                    self._error(f'bolt {job.bolt_id}: writing {image.rel}', exc)
                    updates.append(('failed', 0, image_id))
        try:
            conn.execute('BEGIN IMMEDIATE')
            conn.executemany('UPDATE images SET state = ?, bytes = ? WHERE id = ?', updates)
            conn.execute('COMMIT')
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            # The rows stay 'writing'; the next open settles them from the files.
            self._error(f'recording {len(updates)} written image(s)', exc)
            return
        with self._lock:
            self._image_bytes += new_bytes
            self._stats['images_written'] += images_written

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Mark the oldest images pruned (committed first), then delete their files."""
        if self._image_bytes <= self.max_image_bytes:
            return
        excess = self._image_bytes - self.max_image_bytes
        victims = []
        freed = 0
        rows = conn.execute(
            "SELECT id, path, bytes FROM images WHERE state = 'stored' ORDER BY id")
        for image_id, rel, nbytes in rows:
            if freed >= excess:
                break
            victims.append((image_id, rel))
            freed += nbytes
        if not victims:
            return
        try:
            conn.execute('BEGIN IMMEDIATE')
            conn.executemany("UPDATE images SET state = 'pruned' WHERE id = ?",
                             [(v[0],) for v in victims])
            conn.execute('COMMIT')
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            self._error('pruning images', exc)
            return
        for _, rel in victims:
            # Row says pruned; a file that cannot be deleted now is deleted at the next open.
            self._unlink_own(rel)
        with self._lock:
            self._image_bytes -= freed
            self._stats['images_pruned'] += len(victims)


# -- readers ---------------------------------------------------------------------------------

def connect_readonly(path: str | os.PathLike) -> sqlite3.Connection:
    """Open an inspection log for reading only (safe while the writer runs).

    Raises:
        LogError: The file does not exist or is not an inspection log.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LogError(f'{path}: no such inspection log')
    try:
        conn = sqlite3.connect(f'file:{quote(str(path.resolve()))}?mode=ro', uri=True,
                               timeout=10.0)
        version = conn.execute('PRAGMA user_version').fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise LogError(f'{path}: not an inspection log ({exc})') from None
    if version < 1 or not {'verdicts', 'images'} <= tables:
        conn.close()
        raise LogError(f'{path}: not an inspection log (no verdicts table)')
    if version > SCHEMA_VERSION:
        conn.close()
        raise LogError(f'{path}: schema version {version} is newer than this software '
                       f'(supports {SCHEMA_VERSION}); upgrade bolt_inspection')
    return conn


def _row_to_verdict(row: tuple) -> LoggedVerdict:
    (vid, bolt_id, trigger_ns, created_ns, code, message, reasons, p_ng, threshold,
     latency_ms, model_id, plc_state) = row
    return LoggedVerdict(
        id=vid, bolt_id=bolt_id, trigger_ns=trigger_ns, created_ns=created_ns, code=code,
        message=message, reasons=json.loads(reasons),
        p_ng={int(k): v for k, v in json.loads(p_ng).items()}, threshold=threshold,
        latency_ms=latency_ms, model_id=model_id, plc_state=plc_state)


_VERDICT_COLUMNS = ('id, bolt_id, trigger_ns, created_ns, code, message, reasons, p_ng, '
                    'threshold, latency_ms, model_id, plc_state')


def read_verdicts(path: str | os.PathLike, *, since_ns: int | None = None,
                  until_ns: int | None = None, limit: int | None = None,
                  newest_first: bool = False, with_images: bool = False,
                  image_dir: str | os.PathLike | None = None,
                  bolt_id: str | None = None) -> list[LoggedVerdict]:
    """Read logged verdicts with ``since_ns <= created_ns < until_ns``.

    Args:
        path: The database.
        since_ns: Earliest creation time (wall clock, ns); no lower bound when None.
        until_ns: End of the window (exclusive); no upper bound when None.
        limit: At most this many rows (the newest ones when ``newest_first``).
        newest_first: Order by creation time descending instead of ascending.
        with_images: Also read each verdict's image rows.
        image_dir: The log's image directory, to make image paths absolute; default beside
            the database.
        bolt_id: Only the verdicts of this bolt.

    Raises:
        LogError: See :func:`connect_readonly`.
    """
    clauses, params = [], []
    if since_ns is not None:
        clauses.append('created_ns >= ?')
        params.append(int(since_ns))
    if until_ns is not None:
        clauses.append('created_ns < ?')
        params.append(int(until_ns))
    if bolt_id is not None:
        clauses.append('bolt_id = ?')
        params.append(str(bolt_id))
    sql = f'SELECT {_VERDICT_COLUMNS} FROM verdicts'
    if clauses:
        sql += ' WHERE ' + ' AND '.join(clauses)
    sql += ' ORDER BY created_ns DESC, id DESC' if newest_first else ' ORDER BY created_ns, id'
    if limit is not None:
        sql += ' LIMIT ?'
        params.append(int(limit))
    conn = connect_readonly(path)
    try:
        verdicts = [_row_to_verdict(row) for row in conn.execute(sql, params)]
        if with_images and verdicts:
            base = Path(image_dir) if image_dir is not None else default_image_dir(path)
            by_id = {v.id: v for v in verdicts}
            images: dict[int, list[LoggedImage]] = {}
            ids = list(by_id)
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ','.join('?' * len(chunk))
                for vid, kind, cam, rel, nbytes, state in conn.execute(
                        f'SELECT verdict_id, kind, cam, path, bytes, state FROM images '
                        f'WHERE verdict_id IN ({marks}) ORDER BY id', chunk):
                    images.setdefault(vid, []).append(
                        LoggedImage(kind, cam, (base / rel).expanduser(), nbytes, state))
            verdicts = [LoggedVerdict(**{**v.__dict__, 'images': images.get(v.id, [])})
                        for v in verdicts]
        return verdicts
    except sqlite3.DatabaseError as exc:
        raise LogError(f'{path}: cannot read inspection log ({exc})') from None
    finally:
        conn.close()


def read_verdict(path: str | os.PathLike, verdict_id: int, *,
                 image_dir: str | os.PathLike | None = None) -> LoggedVerdict | None:
    """Read one verdict (with its images) by row id; None if there is no such row."""
    conn = connect_readonly(path)
    try:
        row = conn.execute(f'SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE id = ?',
                           (int(verdict_id),)).fetchone()
        if row is None:
            return None
        verdict = _row_to_verdict(row)
        base = Path(image_dir) if image_dir is not None else default_image_dir(path)
        images = [LoggedImage(kind, cam, (base / rel).expanduser(), nbytes, state)
                  for kind, cam, rel, nbytes, state in conn.execute(
                      'SELECT kind, cam, path, bytes, state FROM images WHERE verdict_id = ? '
                      'ORDER BY id', (verdict.id,))]
        return LoggedVerdict(**{**verdict.__dict__, 'images': images})
    finally:
        conn.close()
