"""The PC's end of the PLC contract: one Modbus TCP client and the worker thread that drives it.

:class:`PlcLink` does all Modbus I/O in ONE worker thread with a synchronous pymodbus client,
so its callers never wait on the socket:

* it connects, and reconnects with exponential backoff (:class:`~.bridge.Backoff`) after a lost
  connection or a timeout;
* it polls ``bolt_counter`` every ``poll_period_s`` and turns each new count into a trigger
  (:class:`~.bridge.CounterTracker`: wrap-around, jumps, PLC restarts);
* it writes every submitted verdict (``verdict_bolt_id`` + ``verdict``), retrying a Modbus
  exception and giving up, so the PLC rejects the bolt, once a verdict is too old
  (:class:`~.bridge.VerdictBook`);
* it writes the heartbeat only while the inspection path is alive
  (:class:`~bolt_inspection.core.plc.liveness.PathWatchdog`); when the path dies it asks the PLC
  to stop the conveyor at once and writes NG for every bolt in flight;
* it reads the status word, the gate counters and the conveyor coil every ``status_period_s``;
* :meth:`PlcLink.set_conveyor` (Start / Stop) is answered by the worker through a future.

The owner (the PLC bridge node) hears from the link through :class:`LinkEvents`, called from the
worker thread: the bolts to trigger, what became of each verdict, a changed status, log lines.
No ROS here: ``tests/test_plc_link.py`` runs it against the simulated PLC
(:mod:`bolt_inspection.core.plc.server`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable
from typing import Any

from bolt_inspection.core.errors import PlcError
from bolt_inspection.core.plc.bridge import Backoff, CounterTracker, PendingVerdict, VerdictBook
from bolt_inspection.core.plc.contract import VERDICT_NG, PlcConfig, decode_status, encode_verdict
from bolt_inspection.core.plc.liveness import PathHealth, PathWatchdog

_WAKE = ('wake',)
#: How long a lost connection waits for a shutdown that may be on its way before it is logged
#: as an error (Ctrl-C under launch signals every process at once: a simulated PLC launched
#: beside the bridge may close its socket before this process has handled its own signal).
SHUTDOWN_GRACE_S = 0.5


class LinkEvents:
    """What a :class:`PlcLink` tells its owner, from its worker thread. The defaults do
    nothing; the PLC bridge node publishes and logs."""

    def triggered(self, bolt_ids: list[int]) -> None:
        """New bolts reached the camera station (trigger them now)."""

    def delivered(self, item: PendingVerdict, message: str, write_ms: float | None,
                  own: bool) -> None:
        """A verdict was acknowledged by the PLC (``message == 'delivered'``) or given up
        (``'not delivered: why'``); ``own``: an NG this link wrote itself (path down)."""

    def status_changed(self) -> None:
        """Something an operator sees may have changed (connection, PLC status, path)."""

    def log(self, level: str, text: str) -> None:
        """A log line; ``level`` is 'info', 'warning' or 'error'."""


def exception_text(rr) -> str:
    """A Modbus exception response as '2 ILLEGAL ADDRESS'."""
    code = getattr(rr, 'exception_code', None)
    names = {1: 'ILLEGAL FUNCTION', 2: 'ILLEGAL ADDRESS', 3: 'ILLEGAL VALUE',
             4: 'DEVICE FAILURE', 5: 'ACKNOWLEDGE', 6: 'DEVICE BUSY', 10: 'GATEWAY PATH',
             11: 'GATEWAY NO RESPONSE'}
    return f'{code} {names.get(code, "")}'.strip() if code is not None else str(rr)


class PlcLink:
    """The Modbus TCP link to the line PLC (see the module docstring).

    Args:
        config: The validated register map and timings (:func:`~.contract.parse_plc_config`).
        stages: Inspection stages that must report (:meth:`beat`) for the heartbeat to be
            written; empty = the link alone decides.
        stage_timeout_s: A stage silent for longer is dead (path down).
        verdict_timeout_s: A triggered bolt without a verdict for longer is overdue (path down).
        events: Who hears about triggers, deliveries, status and log lines.
        shutdown_requested: Set when the process is being stopped: a lost connection then is
            the line stopping, logged as a warning, not an error.

    Attributes:
        lock: Guards ``counters`` and the link's state; hold it to count with the link.
        counters: Every count the diagnostics show.
    """

    def __init__(self, config: PlcConfig, *, stages: Iterable[str] = (),
                 stage_timeout_s: float = 0.75, verdict_timeout_s: float = 3.0,
                 events: LinkEvents | None = None,
                 shutdown_requested: threading.Event | None = None) -> None:
        self.config = config
        self.events = events or LinkEvents()
        self.shutdown_requested = shutdown_requested or threading.Event()
        self.lock = threading.Lock()
        self.tracker = CounterTracker(config.max_counter_jump)
        self.book = VerdictBook(config.verdict_retries, config.verdict_max_age_s)
        self.backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self.connected = False
        self.plc: dict[str, Any] = {}      # last PLC-side values read
        self.poll_ms: deque[float] = deque(maxlen=500)
        self.write_ms: deque[float] = deque(maxlen=500)
        self.recent_skipped: deque[int] = deque(maxlen=200)
        self.counters = {
            'polls': 0, 'poll_errors': 0, 'triggers': 0, 'skipped_bolts': 0,
            'verdicts_received': 0, 'verdicts_written': 0, 'verdict_write_errors': 0,
            'bad_verdicts': 0, 'heartbeats': 0, 'heartbeat_errors': 0, 'status_errors': 0,
            'connects': 0, 'connect_failures': 0, 'disconnects': 0, 'timeouts': 0,
            'exception_responses': 0, 'resyncs': 0, 'path_down': 0, 'rejected_in_flight': 0,
            'late_for_rejected': 0,
        }
        self.last_error = ''
        self.next_connect_at: float | None = None   # monotonic time of the next connect try
        self.heartbeat_value = 0
        stages = [str(s) for s in stages]
        self.watchdog = (PathWatchdog(stages, stage_timeout_s, verdict_timeout_s)
                         if stages else None)
        self.path = PathHealth(alive=not stages, reason='' if not stages else 'starting')
        self._path_was_alive = False
        # Bolts this link rejected itself (path down): a verdict arriving later must not turn
        # them into a pass at the gate.
        self._rejected: deque[int] = deque(maxlen=1000)
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._started_at = 0.0
        self._logged_at: dict[str, float] = {}
        # Every failure is reported by the link with the bolt id; pymodbus' own log lines
        # ("No response received...") would only duplicate them on stderr.
        logging.getLogger('pymodbus').setLevel(logging.CRITICAL)

    # -- the owner's side (any thread) -------------------------------------------------------

    @property
    def running(self) -> bool:
        """The worker thread runs (between :meth:`start` and :meth:`stop`)."""
        return self._worker is not None

    def start(self) -> None:
        """Start the worker: it connects, then polls."""
        if self._worker is not None:
            return
        self._stop.clear()
        self._started_at = time.monotonic()
        self._worker = threading.Thread(target=self._run, name='plc-link-modbus', daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop the worker and close the socket; bounded by a few Modbus timeouts."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._stop.set()
        self._queue.put(_WAKE)
        worker.join(timeout=self.config.timeout_s * 3 + 2.0)
        if worker.is_alive():
            self._log('error', 'Modbus worker did not stop within its timeout')

    def submit(self, bolt_id: int, code: int) -> bool:
        """Queue the verdict of ``bolt_id`` for the PLC. False (and counted) when the link
        already rejected that bolt itself: a late verdict never turns it into a pass."""
        with self.lock:
            self.counters['verdicts_received'] += 1
            if bolt_id in self._rejected:
                self.counters['late_for_rejected'] += 1
                return False
            self.book.submit(bolt_id, code, time.monotonic())
            if self.watchdog is not None:
                self.watchdog.answered(bolt_id)
        self._queue.put(_WAKE)
        return True

    def beat(self, stage: str, trigger_listeners: int | None = None) -> None:
        """A sign of life from an inspection stage, with (when known) how many subscriptions
        the trigger publisher has matched (the path needs one per stage)."""
        if self.watchdog is not None:
            with self.lock:
                self.watchdog.beat(stage, time.monotonic())
                if trigger_listeners is not None:
                    self.watchdog.listeners(trigger_listeners)

    def set_conveyor(self, on: bool) -> tuple[bool, str]:
        """Start (True) or stop (False) the conveyor: the coil is written, then read back.

        Thread-safe; waits at most about twice the Modbus timeout for the PLC's answer.
        Returns ``(success, message)``; the message says why when it failed.
        """
        what = 'start' if on else 'stop'
        c = self.config
        # Pressed right after start (a lifecycle manager's start_when_up) the worker may still
        # be connecting: give it one connect timeout before refusing.
        deadline = time.monotonic() + c.timeout_s + 0.2
        while self._worker is not None and not self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        # Just started, the stages' first signs of life may not have been seen yet: give them
        # one stage timeout before calling the path down (a dead path is refused later).
        stage_timeout = self.watchdog.stage_timeout_s if self.watchdog else 0.0
        settle = self._started_at + stage_timeout + 0.2
        while (on and self._worker is not None and not self.path.alive
               and time.monotonic() < settle):
            time.sleep(0.02)
        if self._worker is None:
            return False, f'cannot {what}: PLC link not running'
        if on and not self.path.alive:
            return False, f'cannot start: inspection path down ({self.path.reason})'
        if not self.connected:
            return False, f'cannot {what}: PLC not connected ({self.last_error})'
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(('coil', on, future))
        wait = 2 * c.timeout_s + c.poll_period_s + 0.5
        try:
            return True, future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            return False, f'cannot {what}: no answer from the Modbus worker in {wait:.1f} s'
        except PlcError as exc:
            return False, f'cannot {what}: {exc}'

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters and PLC-side values (diagnostics, status, tests)."""
        with self.lock:
            poll = sorted(self.poll_ms)
            write = sorted(self.write_ms)
            out = dict(self.counters)
            out.update({
                'connected': self.connected,
                'last_poll_ms': self.poll_ms[-1] if self.poll_ms else None,
                'poll_ms_p50': poll[len(poll) // 2] if poll else None,
                'poll_ms_max': poll[-1] if poll else None,
                'verdict_write_ms_last': self.write_ms[-1] if self.write_ms else None,
                'verdict_write_ms_p50': write[len(write) // 2] if write else None,
                'verdict_write_ms_max': write[-1] if write else None,
                'undelivered': self.book.undelivered_total,
                'undelivered_recent': list(self.book.undelivered),
                'verdicts_pending': len(self.book.queue),
                'skipped_recent': list(self.recent_skipped),
                'last_bolt_id': self.tracker.bolt_id,
                'last_error': self.last_error,
                'plc': dict(self.plc),
                'path_alive': self.path.alive,
                'path_reason': self.path.reason,
                'reconnect_in_s': (None if self.connected or self.next_connect_at is None
                                   else max(0.0, self.next_connect_at - time.monotonic())),
            })
        return out

    # -- the worker --------------------------------------------------------------------------

    def _log(self, level: str, text: str, throttle_s: float = 0.0, key: str = '') -> None:
        """Log through the owner; at most once per ``throttle_s`` for one ``key``."""
        if throttle_s:
            now = time.monotonic()
            if now - self._logged_at.get(key, -math.inf) < throttle_s:
                return
            self._logged_at[key] = now
        self.events.log(level, text)

    def _run(self) -> None:
        from pymodbus.client import ModbusTcpClient
        from pymodbus.exceptions import ModbusException, ModbusIOException

        c = self.config
        client = ModbusTcpClient(c.host, port=c.port, timeout=c.timeout_s, retries=0)
        next_connect = 0.0
        due = {'poll': 0.0, 'heartbeat': 0.0, 'status': 0.0}
        in_flight: PendingVerdict | None = None
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                self._expire_verdicts(now)
                if not self.connected:
                    if now < next_connect:
                        self._wait(next_connect - now, refuse='PLC not connected')
                        continue
                    if client.connect():
                        self._on_connected()
                        due = dict.fromkeys(due, 0.0)
                    else:
                        delay = self.backoff.next_delay()
                        next_connect = time.monotonic() + delay
                        self.next_connect_at = next_connect
                        with self.lock:
                            self.counters['connect_failures'] += 1
                            self.last_error = (f'cannot connect to {c.host}:{c.port}; '
                                               f'retry in {delay:.1f} s')
                        self._log('error', self.last_error, throttle_s=5.0, key='connect')
                        self.events.status_changed()
                        continue
                try:
                    self._watch_path(client)
                    self._drain_commands(client)
                    while (in_flight := self._next_verdict()) is not None:
                        self._write_verdict(client, in_flight)
                        in_flight = None
                    now = time.monotonic()
                    if now >= due['poll']:
                        due['poll'] = now + c.poll_period_s
                        self._poll(client)
                    if now >= due['heartbeat'] and self.path.alive:
                        due['heartbeat'] = now + c.heartbeat_period_s
                        self._heartbeat(client)
                    if now >= due['status']:
                        due['status'] = now + c.status_period_s
                        self._read_status(client)
                except Exception as exc:
                    expected = isinstance(exc, (ModbusException, OSError))
                    if not expected:
                        # A bug must not silently kill the line's PLC link: log it loudly,
                        # drop the connection and carry on like after a connection loss.
                        if self._stop.is_set():
                            break
                        self._log('error', f'Modbus worker error: {exc!r}\n'
                                           f'{traceback.format_exc()}')
                    if in_flight is not None:
                        with self.lock:
                            self.book.failed(in_flight, f'connection lost ({exc})',
                                             time.monotonic(), connection_lost=True)
                        in_flight = None
                    client.close()
                    delay = self._on_connection_lost(exc, isinstance(exc, ModbusIOException))
                    next_connect = time.monotonic() + delay
                    self.next_connect_at = next_connect
                    continue
                self._wait(max(0.0, min(due.values()) - time.monotonic()))
        finally:
            client.close()
            with self.lock:
                self.connected = False

    def _wait(self, seconds: float, refuse: str | None = None) -> None:
        """Sleep until the next due time or a queued verdict/command, whichever is first."""
        try:
            item = self._queue.get(timeout=max(0.0, seconds))
        except queue.Empty:
            return
        if item is not _WAKE:
            if refuse is not None:
                item[2].set_exception(PlcError(refuse))
            else:
                self._queue.put(item)   # handled by _drain_commands on the next turn

    def _drain_commands(self, client) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _WAKE:
                continue
            _, on, future = item
            try:
                future.set_result(self._set_coil(client, on))
            except PlcError as exc:
                future.set_exception(exc)
            except BaseException as exc:
                future.set_exception(PlcError(f'connection lost ({exc})'))
                raise

    def _set_coil(self, client, on: bool) -> str:
        c = self.config
        address = c.coils['conveyor_run']
        rr = client.write_coil(address, on, device_id=c.unit_id)
        if rr.isError():
            self._exception('conveyor_run write', rr)
            raise PlcError(f'PLC refused the conveyor_run write ({exception_text(rr)})')
        rr = client.read_coils(address, count=1, device_id=c.unit_id)
        if rr.isError():
            self._exception('conveyor_run read-back', rr)
            raise PlcError(f'PLC refused the conveyor_run read-back ({exception_text(rr)})')
        running = bool(rr.bits[0])
        with self.lock:
            self.plc['conveyor_run'] = running
        self._read_status(client)
        self.events.status_changed()
        if running != on:
            flags = [k for k, v in decode_status(self.plc.get('status', 0)).items() if v]
            raise PlcError(f'conveyor_run reads {int(running)} after writing {int(on)} '
                           f'(PLC status: {", ".join(flags) or "none"})')
        return 'conveyor running' if on else 'conveyor stopped'

    def _next_verdict(self) -> PendingVerdict | None:
        with self.lock:
            return self.book.pop()

    def _expire_verdicts(self, now: float) -> None:
        with self.lock:
            expired = self.book.expire(now)
        for item in expired:
            reason = item.last_error or 'PLC not reachable'
            self._log('error', f'verdict for bolt {item.bolt_id} '
                               f'({"OK" if item.code == 1 else "NG"}) NOT delivered: {reason}; '
                               'the PLC rejects it (fail-safe)')
            self._delivered(item, f'not delivered: {reason}')

    def _delivered(self, item: PendingVerdict, message: str,
                   write_ms: float | None = None) -> None:
        with self.lock:
            own = item.bolt_id in self._rejected
        self.events.delivered(item, message, write_ms, own)

    def _write_verdict(self, client, item: PendingVerdict) -> None:
        c = self.config
        t0 = time.perf_counter()
        rr = client.write_registers(c.registers['verdict_bolt_id'],
                                    encode_verdict(item.bolt_id, item.code), device_id=c.unit_id)
        ms = (time.perf_counter() - t0) * 1000
        if rr.isError():
            self._exception(f'verdict write for bolt {item.bolt_id}', rr)
            with self.lock:
                self.counters['verdict_write_errors'] += 1
                retry = self.book.failed(item, f'Modbus exception {exception_text(rr)}',
                                         time.monotonic())
            if not retry:
                self._log('error', f'verdict for bolt {item.bolt_id} NOT delivered after '
                                   f'{item.attempts} attempt(s): {exception_text(rr)}; the PLC '
                                   'rejects it (fail-safe)')
                self._delivered(item, f'not delivered: {exception_text(rr)}', ms)
            return
        with self.lock:
            self.book.ack(item)
            self.counters['verdicts_written'] += 1
            self.write_ms.append(ms)
        self._delivered(item, 'delivered', ms)

    def _poll(self, client) -> None:
        c = self.config
        t0 = time.perf_counter()
        rr = client.read_holding_registers(c.registers['bolt_counter'], count=1,
                                           device_id=c.unit_id)
        ms = (time.perf_counter() - t0) * 1000
        if rr.isError():
            with self.lock:
                self.counters['poll_errors'] += 1
            self._exception('bolt_counter read', rr)
            return
        raw = rr.registers[0]
        with self.lock:
            self.counters['polls'] += 1
            self.poll_ms.append(ms)
            self.plc['bolt_counter'] = raw
            update = self.tracker.update(raw)
            self.counters['resyncs'] = self.tracker.resyncs
            self.counters['skipped_bolts'] += len(update.skipped)
            self.recent_skipped.extend(update.skipped)
            self.counters['triggers'] += len(update.new_ids)
            if self.watchdog is not None:
                now = time.monotonic()
                for bolt_id in update.new_ids:
                    self.watchdog.triggered(bolt_id, now)
        if update.new_ids:
            self.events.triggered(list(update.new_ids))
        if update.warning:
            self._log('warning', update.warning)
        elif update.resync:
            self._log('info', f'bolt_counter synchronised at {raw}')

    def _watch_path(self, client) -> None:
        """Is the inspection path alive? When it dies: stop the conveyor, reject bolts in flight.

        Runs on every turn of the worker (every poll period), so a dead stage stops the conveyor
        within ``stage_timeout_s`` plus one poll, well before the PLC's own heartbeat watchdog.
        """
        if self.watchdog is None:
            return
        now = time.monotonic()
        with self.lock:
            health = self.watchdog.check(now)
            reject = list(health.overdue)
            if not health.alive and self._path_was_alive:
                reject += self.watchdog.forget_in_flight()
            for bolt_id in reject:
                self.book.submit(bolt_id, VERDICT_NG, now)
                self._rejected.append(bolt_id)
            self.counters['rejected_in_flight'] += len(reject)
            self.path = health
        if health.alive:
            if not self._path_was_alive:
                self._path_was_alive = True
                self._log('info', 'inspection path alive: ' + ', '.join(self.watchdog.stages)
                          + '; heartbeat on')
                self.events.status_changed()
            return
        if not self._path_was_alive and not reject:
            return    # never up yet: no heartbeat, nothing running to stop
        self._path_was_alive = False
        with self.lock:
            self.counters['path_down'] += 1
        self._log('error', f'inspection path down: {health.reason}; heartbeat stopped, conveyor '
                           f'stop requested, {len(reject)} bolt(s) in flight rejected'
                  + (f' ({", ".join(str(b) for b in reject[:10])})' if reject else ''))
        try:
            self._set_coil(client, False)
        except PlcError as exc:
            # The PLC's own watchdog stops the conveyor when the heartbeat goes stale.
            self._log('error', f'conveyor stop request failed: {exc}; the stale heartbeat '
                               'stops it')
        self.events.status_changed()

    def _heartbeat(self, client) -> None:
        c = self.config
        value = (self.heartbeat_value + 1) % 65536
        rr = client.write_register(c.registers['heartbeat'], value, device_id=c.unit_id)
        if rr.isError():
            with self.lock:
                self.counters['heartbeat_errors'] += 1
            self._exception('heartbeat write', rr)
            return
        self.heartbeat_value = value
        with self.lock:
            self.counters['heartbeats'] += 1

    def _read_status(self, client) -> None:
        c = self.config
        values = {}
        for name in ('status', 'pass_count', 'reject_count'):
            rr = client.read_holding_registers(c.registers[name], count=1, device_id=c.unit_id)
            if rr.isError():
                with self.lock:
                    self.counters['status_errors'] += 1
                self._exception(f'{name} read', rr)
                return
            values[name] = rr.registers[0]
        rr = client.read_coils(c.coils['conveyor_run'], count=1, device_id=c.unit_id)
        if rr.isError():
            with self.lock:
                self.counters['status_errors'] += 1
            self._exception('conveyor_run read', rr)
            return
        values['conveyor_run'] = bool(rr.bits[0])
        with self.lock:
            previous = decode_status(self.plc.get('status', 0))
            self.plc.update(values)
        flags = decode_status(values['status'])
        if flags['heartbeat_stale'] and not previous['heartbeat_stale']:
            self._log('error', 'PLC reports a stale heartbeat: conveyor stopped by the PLC '
                               'watchdog; call /line/start to restart')
        self.events.status_changed()

    def _exception(self, what: str, rr) -> None:
        text = f'{what}: Modbus exception {exception_text(rr)}'
        with self.lock:
            self.counters['exception_responses'] += 1
            self.last_error = text
        self._log('error', text, throttle_s=1.0, key=what)

    def _on_connected(self) -> None:
        c = self.config
        with self.lock:
            self.connected = True
            self.counters['connects'] += 1
            self.backoff.reset()
            reconnect = self.counters['connects'] > 1
        self._log('info', f'{"re" if reconnect else ""}connected to PLC {c.host}:{c.port}')
        self.events.status_changed()

    def _on_connection_lost(self, exc: Exception, timeout: bool) -> float:
        with self.lock:
            self.connected = False
            self.counters['disconnects'] += 1
            if timeout:
                self.counters['timeouts'] += 1
            self.tracker.connection_lost()
            delay = self.backoff.next_delay()
            held = [item.bolt_id for item in self.book.queue]
            self.last_error = (f'{"timeout" if timeout else "connection lost"}: {exc}; '
                               f'reconnect in {delay:.1f} s')
        message = f'PLC {self.last_error}' + (f'; holding verdicts for bolts {held}'
                                              if held else '')
        # A lost connection while the process is being stopped is the line stopping, not a
        # fault; under load the closed socket may arrive before the stop signal was handled.
        if self.shutdown_requested.wait(SHUTDOWN_GRACE_S):
            self._log('warning', message + '; shutting down')
        else:
            self._log('error', message)
        self.events.status_changed()
        return delay

