"""Pure logic of the PLC bridge: counter tracking, bolt ids, verdict bookkeeping, backoff.

The bridge node only moves bytes between Modbus and ROS; every decision is made here and
unit-tested without sockets:

* :class:`CounterTracker` turns successive ``bolt_counter`` reads into new bolt ids (one trigger
  each), skipped ids (the counter moved by more than one between polls; those bolts get no
  trigger and will be rejected by the PLC's fail-safe), and resyncs (first poll, after a
  reconnect, after a PLC restart).
* Bolt id = the PLC counter value (unwrapped past 65535), so the simulator and the synthetic
  cameras agree: synthetic bolt ``n`` is ``bolt_spec(seed, n)``.
* :class:`VerdictBook` holds verdicts until the PLC acknowledged the write; every verdict ends
  either delivered or undelivered with its bolt id and reason -- none vanish.
* :class:`Backoff` is the reconnect schedule.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from bolt_inspection.core.plc.contract import REGISTER_MODULO, counter_delta, wrap16


@dataclass
class CounterUpdate:
    """What one ``bolt_counter`` read means.

    Attributes:
        new_ids: Bolts that just reached the camera station: publish one trigger each.
        skipped: Bolts that passed the camera unseen (a jump > 1, or an outage); no trigger.
        resync: This read (re)established the reference instead of counting.
        warning: Why, when something is off (restart, outage, jump); None when all is normal.
    """

    new_ids: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    resync: bool = False
    warning: str | None = None


class CounterTracker:
    """Follows the PLC's 16-bit ``bolt_counter`` and numbers bolts.

    Args:
        max_jump: A forward jump larger than this between two reads is not believed to be
            bolts (nobody feeds 1000 bolts in 20 ms): it, and any decrease, is a PLC restart
            or counter reset, and the tracker resyncs.
        trigger_latest_on_jump: On a jump of k > 1 during normal polling, the newest bolt has
            just arrived (it is the one that moved the counter last) and is triggered; the
            k-1 before it are skipped. False skips all k.
    """

    def __init__(self, max_jump: int = 1000, trigger_latest_on_jump: bool = True) -> None:
        if not 1 <= max_jump < REGISTER_MODULO:
            raise ValueError(f'max_jump must be in 1..65535, got {max_jump}')
        self.max_jump = max_jump
        self.trigger_latest_on_jump = trigger_latest_on_jump
        self.raw: int | None = None        # last counter value read
        self.bolt_id: int | None = None    # unwrapped bolt id of the last counter value
        self._after_outage = False
        self.resyncs = 0
        self.skipped_total = 0
        self.triggered_total = 0

    @property
    def synced(self) -> bool:
        return self.raw is not None

    def connection_lost(self) -> None:
        """The link dropped: the next read resyncs and reports what passed meanwhile."""
        if self.synced:
            self._after_outage = True

    def update(self, raw: int) -> CounterUpdate:
        """Feed one counter read (0..65535) and return what it means."""
        raw = wrap16(raw)
        if self.raw is None:
            self.raw, self.bolt_id = raw, raw
            self.resyncs += 1
            return CounterUpdate(resync=True)
        delta = counter_delta(self.raw, raw)
        if delta == 0:
            self._after_outage = False
            return CounterUpdate()
        if delta > self.max_jump:
            previous = self.raw
            self.raw, self.bolt_id = raw, raw
            self._after_outage = False
            self.resyncs += 1
            return CounterUpdate(resync=True, warning=(
                f'bolt_counter went from {previous} to {raw}: PLC restart or counter reset, '
                f'resynchronised (bolt ids continue from {raw})'))
        first = self.bolt_id + 1
        ids = list(range(first, first + delta))
        self.raw = raw
        self.bolt_id = ids[-1]
        if self._after_outage:
            # We cannot know when these bolts passed the camera: triggering them now would
            # photograph the wrong bolt on a real line. The PLC rejects them (no verdict).
            self._after_outage = False
            self.resyncs += 1
            self.skipped_total += len(ids)
            return CounterUpdate(skipped=ids, resync=True, warning=(
                f'{len(ids)} bolt(s) passed the camera station during the PLC outage: '
                f'{_ids_text(ids)} (no trigger; the PLC rejects them)'))
        if delta == 1:
            self.triggered_total += 1
            return CounterUpdate(new_ids=ids)
        if self.trigger_latest_on_jump:
            new, skipped = ids[-1:], ids[:-1]
        else:
            new, skipped = [], ids
        self.triggered_total += len(new)
        self.skipped_total += len(skipped)
        return CounterUpdate(new_ids=new, skipped=skipped, warning=(
            f'bolt_counter jumped by {delta} between polls: skipped bolt(s) '
            f'{_ids_text(skipped)} (no trigger; the PLC rejects them)'))


def _ids_text(ids: list[int], limit: int = 10) -> str:
    if len(ids) <= limit:
        return ', '.join(str(i) for i in ids)
    return f'{", ".join(str(i) for i in ids[:limit])}, ... ({len(ids)} in all, up to {ids[-1]})'


def parse_bolt_id(text: str) -> int:
    """Parse a bolt id (``Header.frame_id`` / ``Verdict.bolt_id``: decimal).

    Raises:
        ValueError: Not a non-negative decimal integer.
    """
    text = str(text).strip()
    if not text.isdigit():
        raise ValueError(f'bolt id must be a non-negative decimal integer, got {text!r}')
    return int(text)


@dataclass
class PendingVerdict:
    bolt_id: int
    code: int
    received: float        # when the verdict reached the bridge (monotonic seconds)
    attempts: int = 0
    last_error: str = ''


class VerdictBook:
    """Verdicts from receipt to PLC acknowledgement.

    Args:
        retries: Extra attempts after an exception response.
        max_age_s: A verdict not delivered within this long (e.g. held across an outage) is
            given up: the bolt has long reached the gate and been rejected by the fail-safe.
        keep: How many undelivered entries :attr:`undelivered` keeps for diagnostics.
    """

    def __init__(self, retries: int = 2, max_age_s: float = 5.0, keep: int = 100) -> None:
        self.retries = retries
        self.max_age_s = max_age_s
        self.queue: deque[PendingVerdict] = deque()
        self.undelivered: deque[tuple[int, str]] = deque(maxlen=keep)
        self.delivered = 0
        self.undelivered_total = 0
        self.errors = 0

    def submit(self, bolt_id: int, code: int, now: float) -> PendingVerdict:
        item = PendingVerdict(bolt_id, code, now)
        self.queue.append(item)
        return item

    def expire(self, now: float) -> list[PendingVerdict]:
        """Give up the verdicts older than ``max_age_s`` and return them (now undelivered)."""
        expired = [item for item in self.queue if now - item.received > self.max_age_s]
        for item in expired:
            self.queue.remove(item)
            self._give_up(item, item.last_error or 'PLC not reachable', now)
        return expired

    def pop(self) -> PendingVerdict | None:
        """The next verdict to write, oldest first (call :meth:`expire` before)."""
        return self.queue.popleft() if self.queue else None

    def ack(self, item: PendingVerdict) -> None:
        self.delivered += 1

    def failed(self, item: PendingVerdict, reason: str, now: float, *,
               connection_lost: bool = False) -> bool:
        """Record a failed write.

        Returns:
            True when the verdict was put back to be retried (after an exception response
            within the retry budget, or held for the reconnect), False when it is given up.
        """
        self.errors += 1
        item.attempts += 1
        item.last_error = reason
        if connection_lost:
            # Held (at the front, order kept) until the link is back or it is too old.
            self.queue.appendleft(item)
            return True
        if item.attempts <= self.retries:
            self.queue.appendleft(item)
            return True
        self._give_up(item, reason, now)
        return False

    def _give_up(self, item: PendingVerdict, reason: str, now: float) -> None:
        self.undelivered_total += 1
        age = now - item.received
        self.undelivered.append((item.bolt_id, f'{reason} (after {item.attempts} attempt(s), '
                                               f'{age:.2f} s)'))


class Backoff:
    """Reconnect delays: ``min_s, 2*min_s, 4*min_s ...`` capped at ``max_s``.

    Args:
        min_s: First delay.
        max_s: Largest delay.
        factor: Growth per failure.
    """

    def __init__(self, min_s: float, max_s: float, factor: float = 2.0) -> None:
        if min_s <= 0 or max_s < min_s or factor < 1:
            raise ValueError(f'bad backoff {min_s}..{max_s} x{factor}')
        self.min_s, self.max_s, self.factor = min_s, max_s, factor
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (call after each failed attempt)."""
        delay = min(self.max_s, self.min_s * self.factor ** self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """A connection succeeded."""
        self.failures = 0

    def schedule(self, n: int) -> list[float]:
        """The first ``n`` delays from a fresh start (for docs and tests)."""
        probe = Backoff(self.min_s, self.max_s, self.factor)
        return [probe.next_delay() for _ in range(n)]
