"""The line simulator's conveyor model: pure, time-stepped, no sockets.

A bolt hangs from the conveyor. While the conveyor runs, bolts reach the camera station every
``60 / rate_per_min`` seconds of conveyor travel (the PLC's ``bolt_counter`` increments), and
reach the sorting gate ``gate_delay_s`` of travel later. Travel time only passes while the
conveyor runs: stopping the line freezes every bolt where it is, like a real chain conveyor.

At the gate the PLC program reads the latest verdict written for *that* bolt id: OK -> pass,
NG -> reject, none yet -> reject (fail-safe; counted as late/missing). A verdict written after
its bolt has been sorted is counted as late. A heartbeat that does not change for
``heartbeat_timeout_s`` stops the conveyor (the PLC's watchdog on the PC).

For synthetic scenarios the model knows the truth (``truth(n)`` -> 'OK'/'NG', by default
``bolt_spec(seed, n, defect_rate).label``) and scores every sort against it.

Every method takes ``now`` (seconds, any monotonic clock) so tests drive it with a fake clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bolt_inspection.core.plc.contract import (
    VERDICT_CODES,
    VERDICT_NG,
    VERDICT_OK,
    SimConfig,
    encode_status,
    wrap16,
)


def synthetic_truth(seed: int, defect_rate: float) -> Callable[[int], str] | None:
    """Return ``n -> bolt_spec(seed, n, defect_rate).label``, or None without core.vision.synth."""
    try:
        from bolt_inspection.core.vision.synth import bolt_spec
    except ImportError:
        return None
    return lambda n: bolt_spec(seed, n, defect_rate).label


@dataclass
class SortEvent:
    """One bolt leaving the sorting gate."""

    bolt_id: int
    passed: bool
    reason: str            # 'OK' | 'NG' | 'failsafe' (no verdict at the gate)
    truth: str | None      # 'OK' / 'NG' when the scenario knows it
    time: float


@dataclass
class _Bolt:
    bolt_id: int
    at_camera_travel: float     # conveyor travel time when it reached the camera
    at_camera_time: float       # wall time when it reached the camera


class ConveyorModel:
    """The PLC program of the simulated line.

    Args:
        config: Rates, gate delay and watchdog timeout.
        now: The current time of the caller's clock.
        truth: ``bolt id -> 'OK' | 'NG'``; None = unknown (sorts are not scored).
        keep_events: How many recent sort events :attr:`events` keeps.
    """

    def __init__(self, config: SimConfig, now: float = 0.0,
                 truth: Callable[[int], str] | None = None, keep_events: int = 1000) -> None:
        self.config = config
        self.truth = truth
        self.period = 60.0 / config.rate_per_min
        self.now = now
        self.running = False
        self.heartbeat_stale = False
        self.travel = 0.0               # conveyor travel time; advances only while running
        self.next_arrival = self.period
        self.counter = 0                # bolts that reached the camera (unwrapped)
        self.heartbeat = 0
        self.last_heartbeat_change = now
        self.in_transit: deque[_Bolt] = deque()
        self.verdicts: dict[int, tuple[int, float]] = {}   # bolt id (16 bit) -> (code, time)
        self.camera_times: dict[int, float] = {}           # bolt id (16 bit) -> camera time
        self.events: deque[SortEvent] = deque(maxlen=keep_events)
        self.stats = {
            'bolts_in': 0, 'passed': 0, 'rejected': 0, 'failsafe_rejects': 0,
            'true_pass': 0, 'false_pass': 0, 'true_reject': 0, 'false_reject': 0,
            'verdicts': 0, 'late_verdicts': 0, 'unknown_verdicts': 0, 'invalid_verdicts': 0,
            'heartbeat_trips': 0, 'starts': 0, 'stops': 0,
        }
        self.failsafe_ids: list[int] = []
        self.late_ids: list[int] = []
        self.verdict_latencies: list[float] = []   # camera -> verdict write, seconds

    # -- inputs from the PC ----------------------------------------------------------------

    def set_running(self, on: bool, now: float) -> None:
        """The conveyor_run coil was written."""
        self.advance(now)
        on = bool(on)
        if on and not self.running:
            if self.done:
                return   # the scenario is over; nothing more to feed
            self.stats['starts'] += 1
            self.heartbeat_stale = False
            # The watchdog starts counting at the start: a PC that never beats stops the line.
            self.last_heartbeat_change = now
        elif not on and self.running:
            self.stats['stops'] += 1
        self.running = on

    def write_heartbeat(self, value: int, now: float) -> None:
        """The heartbeat register was written."""
        self.advance(now)
        if wrap16(value) != self.heartbeat:
            self.heartbeat = wrap16(value)
            self.last_heartbeat_change = now

    def write_verdict(self, bolt_reg: int, code: int, now: float) -> bool:
        """``verdict_bolt_id`` and ``verdict_code`` were written together.

        Returns:
            False when ``code`` is not 1 or 2 (the PLC refuses it; the gate fails safe).
        """
        self.advance(now)
        if code not in VERDICT_CODES:
            self.stats['invalid_verdicts'] += 1
            return False
        bolt_reg = wrap16(bolt_reg)
        self.stats['verdicts'] += 1
        if bolt_reg in self.camera_times:
            if bolt_reg not in self.verdicts:
                self.verdict_latencies.append(now - self.camera_times[bolt_reg])
            self.verdicts[bolt_reg] = (code, now)
        elif self._already_sorted(bolt_reg):
            self.stats['late_verdicts'] += 1
            self.late_ids.append(bolt_reg)
        else:
            self.stats['unknown_verdicts'] += 1
        return True

    def refuse_verdict(self, now: float) -> None:
        """A write touched only one of the two verdict registers: refused, counted as invalid
        (the bolt's gate decision is unchanged: no verdict -> fail-safe reject)."""
        self.advance(now)
        self.stats['invalid_verdicts'] += 1

    # -- time ------------------------------------------------------------------------------

    def advance(self, now: float) -> list[SortEvent]:
        """Run the PLC program up to ``now``; return the bolts sorted meanwhile."""
        sorted_now: list[SortEvent] = []
        if now <= self.now:
            return sorted_now
        start = self.now
        if self.running:
            timeout = self.config.heartbeat_timeout_s
            trip = self.last_heartbeat_change + timeout if timeout > 0 else None
            stop_at = now if trip is None or trip >= now else max(trip, start)
            sorted_now += self._travel_until(start, stop_at)
            if stop_at < now:
                self.running = False
                self.heartbeat_stale = True
                self.stats['heartbeat_trips'] += 1
                self.stats['stops'] += 1
        self.now = now
        return sorted_now

    def _travel_until(self, start: float, end: float) -> list[SortEvent]:
        """Move the conveyor from wall time ``start`` to ``end`` (running all the way)."""
        out: list[SortEvent] = []
        travel_end = self.travel + (end - start)
        gate = self.config.gate_delay_s
        while True:
            next_gate = (self.in_transit[0].at_camera_travel + gate
                         if self.in_transit else float('inf'))
            feeding = self.config.bolts == 0 or self.counter < self.config.bolts
            next_arr = self.next_arrival if feeding else float('inf')
            step = min(next_gate, next_arr)
            if step > travel_end:
                break
            when = start + (step - self.travel)
            self.travel = step
            if next_gate <= next_arr:
                out.append(self._sort(self.in_transit.popleft(), when))
            else:
                self.counter += 1
                self.stats['bolts_in'] += 1
                self.in_transit.append(_Bolt(self.counter, step, when))
                self.camera_times[wrap16(self.counter)] = when
                # A new bolt with the same 16-bit id replaces a stale verdict of bolt n-65536.
                self.verdicts.pop(wrap16(self.counter), None)
                self.next_arrival += self.period
        self.travel = travel_end
        if self.done:
            self.running = False
        return out

    def _sort(self, bolt: _Bolt, when: float) -> SortEvent:
        key = wrap16(bolt.bolt_id)
        verdict = self.verdicts.pop(key, None)
        self.camera_times.pop(key, None)
        truth = self.truth(bolt.bolt_id) if self.truth else None
        if verdict is None:
            passed, reason = False, 'failsafe'
            self.stats['failsafe_rejects'] += 1
            self.failsafe_ids.append(bolt.bolt_id)
        else:
            passed = verdict[0] == VERDICT_OK
            reason = VERDICT_CODES[verdict[0]]
        self.stats['passed' if passed else 'rejected'] += 1
        if truth is not None:
            if passed:
                self.stats['true_pass' if truth == 'OK' else 'false_pass'] += 1
            else:
                self.stats['true_reject' if truth == 'NG' else 'false_reject'] += 1
        event = SortEvent(bolt.bolt_id, passed, reason, truth, when)
        self.events.append(event)
        return event

    def _already_sorted(self, bolt_reg: int) -> bool:
        # A bolt id at or below the counter that is no longer in transit has passed the gate.
        if self.counter == 0:
            return False
        behind = (wrap16(self.counter) - bolt_reg) % 65536
        return behind < self.counter

    # -- outputs to the PC -----------------------------------------------------------------

    @property
    def done(self) -> bool:
        """All bolts of a finite scenario have been sorted."""
        return (self.config.bolts > 0 and self.counter >= self.config.bolts
                and not self.in_transit)

    def status_word(self) -> int:
        """The ``status`` register."""
        return encode_status(running=self.running, heartbeat_stale=self.heartbeat_stale,
                             failsafe_reject=self.stats['failsafe_rejects'] > 0, done=self.done)

    def registers(self) -> dict[str, int]:
        """The PLC-owned registers (16-bit values) and the coil state."""
        return {
            'bolt_counter': wrap16(self.counter),
            'status': self.status_word(),
            'pass_count': wrap16(self.stats['passed']),
            'reject_count': wrap16(self.stats['rejected']),
            'conveyor_run': int(self.running),
        }

    def summary(self) -> dict:
        """The tally: counts, accuracy against the truth, verdict latency, outage bolts."""
        s = dict(self.stats)
        sorted_total = s['passed'] + s['rejected']
        scored = s['true_pass'] + s['false_pass'] + s['true_reject'] + s['false_reject']
        lat = sorted(self.verdict_latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None

        s.update({
            'sorted': sorted_total,
            'in_transit': len(self.in_transit),
            'running': self.running,
            'heartbeat_stale': self.heartbeat_stale,
            'done': self.done,
            'scored': scored,
            'accuracy': round((s['true_pass'] + s['true_reject']) / scored, 4) if scored else None,
            'verdict_latency_ms': {'n': len(lat), 'p50': pct(0.5), 'p95': pct(0.95),
                                   'max': round(lat[-1] * 1000, 1) if lat else None},
            'failsafe_bolt_ids': self.failsafe_ids[-200:],
            'late_verdict_bolt_ids': self.late_ids[-200:],
            'config': {'rate_per_min': self.config.rate_per_min,
                       'gate_delay_s': self.config.gate_delay_s,
                       'heartbeat_timeout_s': self.config.heartbeat_timeout_s,
                       'seed': self.config.seed, 'defect_rate': self.config.defect_rate,
                       'bolts': self.config.bolts, 'truth_known': self.truth is not None},
        })
        return s

    def summary_line(self) -> str:
        """One running-summary line for the console."""
        s = self.summary()
        acc = f'{s["accuracy"]:.3f}' if s['accuracy'] is not None else 'n/a'
        state = 'RUN' if self.running else ('STALE' if self.heartbeat_stale else 'STOP')
        return (f'[plc-sim] {state} in={s["bolts_in"]} sorted={s["sorted"]} '
                f'pass={s["passed"]} reject={s["rejected"]} failsafe={s["failsafe_rejects"]} '
                f'late={s["late_verdicts"]} false_pass={s["false_pass"]} '
                f'false_reject={s["false_reject"]} acc={acc}')


__all__ = ['ConveyorModel', 'SortEvent', 'synthetic_truth', 'VERDICT_OK', 'VERDICT_NG']
