"""Exact-stamp join of the camera views of one bolt (message_filters ExactTime semantics).

The classifier receives one trigger per bolt on ``/line/trigger`` and one image per camera on
``/camN/image_raw``, every image stamped with the trigger's stamp. :class:`ViewJoiner` pairs them
up by that stamp and hands back one :class:`Bundle` per triggered bolt, exactly once:

* as soon as every expected camera delivered a view (an image or a decoding failure), or
* when :meth:`ViewJoiner.expire` is called ``timeout_s`` after the trigger arrived, with the
  cameras that stayed silent listed in :attr:`Bundle.missing`.

Views may arrive before their trigger (the cameras and the classifier subscribe to the same
trigger and DDS gives no ordering across topics); they wait in a small buffer for up to
``timeout_s``. Duplicated views are ignored, and views or triggers for a stamp that was already
handed out (late, or a replayed message) are dropped and counted, never joined twice. Memory is
bounded: at most ``max_pending`` bolts wait at once; the oldest one is flushed, with its missing
views, when a new trigger would exceed that.

No ROS here: stamps are integer nanoseconds and the clock is whatever monotonic seconds the
caller passes as ``now``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Bundle:
    """The views of one triggered bolt, as far as they arrived.

    Attributes:
        stamp: The trigger stamp in nanoseconds (the join key).
        bolt_id: The bolt id from the trigger (decimal string).
        views: Camera index -> image for every camera that delivered a decodable frame.
        failures: Camera index -> one-line reason for cameras whose frame could not be used.
        missing: Cameras that delivered nothing before the timeout, in ascending order.
        triggered_at: The caller's clock (seconds) when the trigger arrived.
        completed_at: The caller's clock when the bundle was handed out.
    """

    stamp: int
    bolt_id: str
    views: dict[int, Any] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    missing: tuple[int, ...] = ()
    triggered_at: float = 0.0
    completed_at: float = 0.0

    @property
    def complete(self) -> bool:
        """True when every expected camera delivered a view or a failure."""
        return not self.missing


@dataclass
class JoinStats:
    """Counters a node publishes on /diagnostics."""

    triggers: int = 0
    complete: int = 0
    timed_out: int = 0
    evicted: int = 0
    duplicate_views: int = 0
    duplicate_triggers: int = 0
    stale: int = 0
    orphans_dropped: int = 0
    unknown_cams: int = 0


@dataclass(frozen=True)
class LateView:
    """A view that arrived after its bolt went on without it (the bolt was NG 'missing view').

    It tells an operator the frame was late, not lost: ``delay_s`` after the trigger."""

    bolt_id: str
    cam: int
    delay_s: float


@dataclass
class _Pending:
    bolt_id: str
    triggered_at: float
    views: dict[int, Any] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


class ViewJoiner:
    """Join triggers and per-camera views by exact stamp, with a per-bolt timeout.

    Args:
        cams: The camera indices every bolt needs, e.g. ``(0, 1, 2, 3)``.
        timeout_s: How long after its trigger a bolt waits for missing views, and how long a
            view that arrived before its trigger waits for it.
        max_pending: Most bolts waiting at once; the oldest is flushed beyond that.
        max_orphans: Most early views buffered at once; the oldest is dropped beyond that.
        history: How many handed-out stamps are remembered to reject late duplicates.

    Not thread safe: the caller serialises calls (the classifier node holds a lock).
    """

    def __init__(self, cams: Iterable[int], timeout_s: float, *, max_pending: int = 64,
                 max_orphans: int = 256, history: int = 1024) -> None:
        self.cams = tuple(sorted({int(c) for c in cams}))
        if not self.cams:
            raise ValueError('ViewJoiner needs at least one camera')
        if timeout_s <= 0:
            raise ValueError(f'timeout_s must be > 0, got {timeout_s}')
        self.timeout_s = float(timeout_s)
        self.max_pending = max(1, int(max_pending))
        self.max_orphans = max(1, int(max_orphans))
        self.stats = JoinStats()
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        # (stamp, cam) -> (arrival time, image, failure) for views seen before their trigger.
        self._orphans: OrderedDict[tuple[int, int], tuple[float, Any, str | None]] = OrderedDict()
        self._done: deque[int] = deque(maxlen=max(1, int(history)))
        # Handed-out stamp -> (bolt id, trigger time, cameras it went on without).
        self._done_info: dict[int, tuple[str, float, tuple[int, ...]]] = {}
        self.late: deque[LateView] = deque(maxlen=64)   # for the caller to report, then clear

    @property
    def pending(self) -> int:
        """Number of triggered bolts still waiting for views."""
        return len(self._pending)

    @property
    def orphans(self) -> int:
        """Number of views buffered before their trigger."""
        return len(self._orphans)

    def add_trigger(self, stamp: int, bolt_id: str, now: float) -> list[Bundle]:
        """Register a triggered bolt; returns bundles completed or evicted by it."""
        stamp = int(stamp)
        if stamp in self._done_info:
            self.stats.stale += 1
            return []
        if stamp in self._pending:
            self.stats.duplicate_triggers += 1
            return []
        self.stats.triggers += 1
        out: list[Bundle] = []
        while len(self._pending) >= self.max_pending:
            old_stamp = next(iter(self._pending))
            self.stats.evicted += 1
            out.append(self._finish(old_stamp, now))
        entry = _Pending(bolt_id=str(bolt_id), triggered_at=now)
        self._pending[stamp] = entry
        for cam in self.cams:
            early = self._orphans.pop((stamp, cam), None)
            if early is not None:
                _, image, failure = early
                self._store(entry, cam, image, failure)
        if self._is_complete(entry):
            self.stats.complete += 1
            out.append(self._finish(stamp, now))
        return out

    def add_view(self, stamp: int, cam: int, now: float, image: Any = None,
                 failure: str | None = None) -> list[Bundle]:
        """Register one camera's view (an image, or a failure reason); returns completed bundles.

        Args:
            stamp: The image header stamp in nanoseconds.
            cam: The camera index.
            now: The caller's clock in seconds.
            image: The decoded image (ignored when ``failure`` is given).
            failure: Why the frame could not be used, e.g. ``'unsupported encoding 16UC1'``.
        """
        stamp, cam = int(stamp), int(cam)
        if cam not in self.cams:
            self.stats.unknown_cams += 1
            return []
        done = self._done_info.get(stamp)
        if done is not None:
            self.stats.stale += 1
            bolt_id, triggered_at, missing = done
            if cam in missing:
                self.late.append(LateView(bolt_id, cam, now - triggered_at))
            return []
        entry = self._pending.get(stamp)
        if entry is None:
            key = (stamp, cam)
            if key in self._orphans:
                self.stats.duplicate_views += 1
                return []
            self._orphans[key] = (now, image, failure)
            while len(self._orphans) > self.max_orphans:
                self._orphans.popitem(last=False)
                self.stats.orphans_dropped += 1
            return []
        if cam in entry.views or cam in entry.failures:
            self.stats.duplicate_views += 1
            return []
        self._store(entry, cam, image, failure)
        if self._is_complete(entry):
            self.stats.complete += 1
            return [self._finish(stamp, now)]
        return []

    def expire(self, now: float) -> list[Bundle]:
        """Hand out bolts whose timeout passed (with their missing cameras); drop old orphans."""
        out = []
        for stamp, entry in list(self._pending.items()):
            if now - entry.triggered_at >= self.timeout_s:
                self.stats.timed_out += 1
                out.append(self._finish(stamp, now))
        for key, (arrived, _, _) in list(self._orphans.items()):
            if now - arrived >= self.timeout_s:
                del self._orphans[key]
                self.stats.orphans_dropped += 1
        return out

    def flush(self, now: float) -> list[Bundle]:
        """Hand out every pending bolt now (e.g. on shutdown) and forget buffered views."""
        out = [self._finish(stamp, now) for stamp in list(self._pending)]
        self._orphans.clear()
        return out

    def _store(self, entry: _Pending, cam: int, image: Any, failure: str | None) -> None:
        if failure is not None:
            entry.failures[cam] = str(failure)
        else:
            entry.views[cam] = image

    def _is_complete(self, entry: _Pending) -> bool:
        return len(entry.views) + len(entry.failures) == len(self.cams)

    def _finish(self, stamp: int, now: float) -> Bundle:
        entry = self._pending.pop(stamp)
        missing = tuple(c for c in self.cams if c not in entry.views and c not in entry.failures)
        if len(self._done) == self._done.maxlen:
            self._done_info.pop(self._done[0], None)
        self._done.append(stamp)
        self._done_info[stamp] = (entry.bolt_id, entry.triggered_at, missing)
        return Bundle(stamp=stamp, bolt_id=entry.bolt_id, views=dict(entry.views),
                      failures=dict(entry.failures), missing=missing,
                      triggered_at=entry.triggered_at, completed_at=now)
