"""PLC bridge node: Modbus TCP <-> ROS 2 for the sorting line.

Lifecycle: ``configure`` validates the register map (parameters default to config/plc.yaml) and
creates publishers, the verdict subscription and the /line/start and /line/stop services;
``activate`` starts the Modbus worker thread (it connects, then polls); ``deactivate`` stops it
and closes the socket; ``cleanup`` destroys the ROS entities.

All Modbus I/O happens in ONE worker thread with a synchronous pymodbus client, so no ROS
callback ever waits on the socket: the verdict callback only queues, triggers are published
from the worker the moment the counter read returns. The start/stop services wait (bounded by
the Modbus timeout) for the worker's answer in their own callback group, so with the
MultiThreadedExecutor of ``main()`` / ``bolt-inspection line`` nothing else waits for them.

Topics (nodes/topics.py): /line/trigger (std_msgs/Header, reliable depth 10; stamp = when the
bridge saw the counter change, frame_id = bolt id), /inspection/verdict (in,
bolt_inspection_msgs/Verdict, reliable depth 100), /plc/status (bolt_inspection_msgs/LineStatus,
transient local depth 1: connection, conveyor, heartbeat, inspection path, gate tally,
counters), /plc/delivery (bolt_inspection_msgs/PlcDelivery per verdict, reliable depth 100:
what was written for which bolt, acknowledged by the PLC or given up and why; the inspection log
records it per bolt), /diagnostics.

The heartbeat means "the inspection path is alive" (core.line.liveness): with ``watch_stages`` set
(the line's classifier and cameras; ``graph.line_nodes`` sets it), the bridge writes the
heartbeat only while every stage reports on /inspection/alive and every triggered bolt gets its
verdict in time. When the path dies it asks the PLC to stop the conveyor at once, writes NG for
every bolt in flight, refuses /line/start until the path is back, and says why on /plc/status.
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
from typing import Any

from bolt_inspection_msgs.msg import LineStatus, PlcDelivery
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from bolt_inspection.core.errors import ConfigError, PlcError
from bolt_inspection.core.line.liveness import PathHealth, PathWatchdog
from bolt_inspection.core.plc.bridge import (
    Backoff,
    CounterTracker,
    PendingVerdict,
    VerdictBook,
)
from bolt_inspection.core.plc.contract import (
    VERDICT_NG,
    VERDICT_OK,
    PlcConfig,
    decode_status,
    encode_verdict,
    load_plc_config,
    parse_plc_config,
)
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.lifecycle_util import (
    declare,
    destroy_entities,
    exit_main,
    key_values,
    publish_diagnostics,
)
from bolt_inspection.nodes.verdict_msg import decode_or_drop

TRIGGER_QOS = topics.TRIGGER_QOS
VERDICT_QOS = topics.VERDICT_QOS
STATUS_QOS = topics.STATUS_QOS

_WAKE = ('wake',)

# Parameter -> (description, int range, float range). Addresses get their range from
# `addressing` at configure time (plc_contract validates; descriptors can't express it).
_DESCRIPTIONS: dict[str, str] = {
    'host': 'PLC IP address (127.0.0.1 for plc-sim)',
    'port': 'PLC Modbus TCP port',
    'unit_id': 'Modbus unit (device) id',
    'timeout_s': 'Connect and per-request response timeout',
    'poll_period_s': 'bolt_counter poll period',
    'heartbeat_period_s': 'Heartbeat register write period',
    'status_period_s': 'Status / pass / reject / conveyor coil read period',
    'reconnect_min_s': 'First reconnect delay (doubles per failure)',
    'reconnect_max_s': 'Longest reconnect delay',
    'verdict_retries': 'Extra attempts for a verdict write answered with a Modbus exception',
    'verdict_max_age_s': 'A verdict not delivered within this long is given up (undelivered)',
    'max_counter_jump': 'A larger counter jump (or a decrease) = PLC restart -> resync',
    'addressing': '1: addresses are 1-based register numbers (40001 = wire 0); 0: wire '
                  'addresses',
}


# How long a lost PLC connection waits for a Ctrl-C that may be on its way (see
# _on_connection_lost) before it is logged as an error.
SHUTDOWN_GRACE_S = 0.5


class PlcBridgeNode(LifecycleNode):
    """Polls the PLC's bolt counter, triggers the cameras, writes verdicts and the heartbeat."""

    def __init__(self, node_name: str = 'plc_bridge', *, context=None,
                 parameter_overrides=None, **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        # Everything destroy_node() touches exists before the first declare: a parameter of
        # the wrong type raises there, and the context still destroys this half-built node.
        self.config: PlcConfig | None = None
        self._lock = threading.Lock()
        # Set on SIGINT / SIGTERM by node_main (lifecycle_util), before the shutdown transition.
        self.shutdown_requested = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._activated_at = 0.0
        self._entities: list = []
        self._trigger_pub = self._status_pub = self._diag_pub = self._delivery_pub = None
        self._reset_state()
        # The shipped plc.yaml is the one source of the address map; parameters override it.
        defaults = load_plc_config()[0].to_params()
        self._param_names = list(defaults)
        for name, default in defaults.items():
            description = _DESCRIPTIONS.get(name) or f'Address of {name} (see config/plc.yaml)'
            # dynamic_typing: a YAML `timeout_s: 1` (int) must not fail inside rclpy with a
            # type error; plc_contract validates every value at configure, naming the key.
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=True, dynamic_typing=True))
        declare(self, 'diagnostics_period_s', 1.0, 'Period of /diagnostics and /plc/status',
                float_range=(0.05, 60.0), read_only=True)
        self.watch_stages = [str(n) for n in declare(
            self, 'watch_stages', [''], 'Inspection stages (node names) that must report on '
            "/inspection/alive for the heartbeat to be written; [''] = none (the bridge alone)",
            read_only=True) if n]
        self.stage_timeout_s = declare(self, 'stage_timeout_s', 0.75, 'A watched stage silent '
                                       'for longer stops the heartbeat and the conveyor',
                                       float_range=(0.2, 60.0), read_only=True)
        self.verdict_timeout_s = declare(self, 'verdict_timeout_s', 3.0, 'A triggered bolt '
                                         'without a verdict for longer stops the heartbeat '
                                         'and the conveyor', float_range=(0.5, 600.0),
                                         read_only=True)
        # Every failure is reported by this node with the bolt id; pymodbus' own log lines
        # ("No response received...") would only duplicate them on stderr.
        logging.getLogger('pymodbus').setLevel(logging.CRITICAL)

    def _reset_state(self) -> None:
        cfg = self.config
        self.tracker = CounterTracker(cfg.max_counter_jump if cfg else 1000)
        self.book = VerdictBook(cfg.verdict_retries if cfg else 2,
                                cfg.verdict_max_age_s if cfg else 5.0)
        self.backoff = Backoff(cfg.reconnect_min_s if cfg else 0.2,
                               cfg.reconnect_max_s if cfg else 5.0)
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
            'exception_responses': 0, 'resyncs': 0,
        }
        self.last_error = ''
        self.next_connect_at: float | None = None   # monotonic time of the next connect try
        self.heartbeat_value = 0
        self._published_status: tuple | None = None
        stages = getattr(self, 'watch_stages', [])
        self.watchdog = PathWatchdog(stages, getattr(self, 'stage_timeout_s', 0.75),
                                     getattr(self, 'verdict_timeout_s', 3.0)) if stages else None
        self.path = PathHealth(alive=not stages, reason='' if not stages else 'starting')
        self._path_was_alive = False
        # Bolts this bridge rejected itself (path down): a verdict arriving later must not
        # turn them into a pass at the gate.
        self._rejected: deque[int] = deque(maxlen=1000)
        self.counters.update({'path_down': 0, 'rejected_in_flight': 0, 'late_for_rejected': 0})

    # -- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = {name: self.get_parameter(name).value for name in self._param_names}
        try:
            self.config = parse_plc_config(params, where='plc_bridge parameter ')
        except ConfigError as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        self._reset_state()
        self._trigger_pub = self.create_publisher(topics.TRIGGER_TYPE, topics.TRIGGER,
                                                  TRIGGER_QOS)
        self._status_pub = self.create_publisher(topics.PLC_STATUS_TYPE, topics.PLC_STATUS,
                                                 STATUS_QOS)
        self._diag_pub = self.create_publisher(topics.DIAGNOSTICS_TYPE, topics.DIAGNOSTICS,
                                               topics.DIAGNOSTICS_QOS)
        self._delivery_pub = self.create_publisher(topics.PLC_DELIVERY_TYPE, topics.PLC_DELIVERY,
                                                   topics.DELIVERY_QOS)
        services = MutuallyExclusiveCallbackGroup()
        self._entities = [
            self._trigger_pub, self._status_pub, self._diag_pub, self._delivery_pub,
            self.create_subscription(topics.VERDICT_TYPE, topics.VERDICT, self._on_verdict,
                                     VERDICT_QOS),
            self.create_subscription(topics.ALIVE_TYPE, topics.ALIVE, self._on_alive,
                                     topics.ALIVE_QOS),
            self.create_service(Trigger, topics.START_SERVICE,
                                lambda req, res: self._on_conveyor(True, res),
                                callback_group=services),
            self.create_service(Trigger, topics.STOP_SERVICE,
                                lambda req, res: self._on_conveyor(False, res),
                                callback_group=services),
            self.create_timer(self.get_parameter('diagnostics_period_s').value,
                              self._publish_diagnostics),
        ]
        c = self.config
        self.get_logger().info(
            f'PLC {c.host}:{c.port} unit {c.unit_id}, {c.addressing}-based map '
            f'{c.numbers}, poll {c.poll_period_s * 1000:.0f} ms, heartbeat '
            f'{c.heartbeat_period_s:g} s')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop.clear()
        self._activated_at = time.monotonic()
        self._worker = threading.Thread(target=self._run, name='plc_bridge-modbus', daemon=True)
        self._worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._publish_diagnostics()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        self._stop_worker()
        return super().destroy_node()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._stop.set()
        self._queue.put(_WAKE)
        worker.join(timeout=(self.config.timeout_s * 3 if self.config else 1.0) + 2.0)
        if worker.is_alive():
            self.get_logger().error('Modbus worker did not stop within its timeout')

    def _destroy_entities(self) -> None:
        destroy_entities(self, self._entities)
        self._trigger_pub = self._status_pub = self._diag_pub = self._delivery_pub = None

    # -- ROS callbacks (never touch the socket) ----------------------------------------------

    def _on_verdict(self, msg) -> None:
        # One decoder, one rule for OK (core.line.verdict): a malformed verdict is dropped and
        # counted; the bolt then reaches the gate without a verdict and the PLC rejects it.
        verdict = decode_or_drop(self, msg, self.counters, self._lock)
        if verdict is None:
            return
        with self._lock:
            self.counters['verdicts_received'] += 1
            if int(verdict.bolt_id) in self._rejected:
                self.counters['late_for_rejected'] += 1
                return
            self.book.submit(int(verdict.bolt_id), verdict.code, time.monotonic())
            if self.watchdog is not None:
                self.watchdog.answered(int(verdict.bolt_id))
        self._queue.put(_WAKE)

    def _on_alive(self, msg: Header) -> None:
        if self.watchdog is not None:
            with self._lock:
                self.watchdog.beat(msg.frame_id, time.monotonic())

    def _on_conveyor(self, on: bool, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.set_conveyor(on)
        return response

    def trigger_subscribers(self) -> int:
        """How many subscriptions /line/trigger has (start the conveyor once the cameras
        listen); 0 before configure."""
        return self._trigger_pub.get_subscription_count() if self._trigger_pub else 0

    def set_conveyor(self, on: bool) -> tuple[bool, str]:
        """Start (True) or stop (False) the conveyor, as /line/start and /line/stop do.

        Thread-safe; waits at most about twice the Modbus timeout for the PLC's answer (the
        coil is written, then read back). For in-process callers such as ``bolt-inspection
        line``, which may start the conveyor once the classifier is ready.

        Returns:
            ``(success, message)``; the message says why when it failed.
        """
        what = 'start' if on else 'stop'
        # Pressed right after activation (the lifecycle manager's start_when_up) the worker may
        # still be connecting: give it one connect timeout before refusing.
        deadline = time.monotonic() + self.config.timeout_s + 0.2
        while self._worker is not None and not self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        # Just activated, the stages' first signs of life may not have been seen yet: give
        # them one stage timeout before calling the path down (a dead path is refused later).
        settle = self._activated_at + self.stage_timeout_s + 0.2
        while (on and self._worker is not None and not self.path.alive
               and time.monotonic() < settle):
            time.sleep(0.02)
        if self._worker is None:
            ok, message = False, f'cannot {what}: plc_bridge not active'
        elif on and not self.path.alive:
            ok, message = False, f'cannot start: inspection path down ({self.path.reason})'
        elif not self.connected:
            ok, message = False, f'cannot {what}: PLC not connected ({self.last_error})'
        else:
            future: concurrent.futures.Future = concurrent.futures.Future()
            self._queue.put(('coil', on, future))
            wait = 2 * self.config.timeout_s + self.config.poll_period_s + 0.5
            try:
                ok, message = True, future.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                ok, message = False, (f'cannot {what}: no answer from the Modbus worker in '
                                      f'{wait:.1f} s')
            except PlcError as exc:
                ok, message = False, f'cannot {what}: {exc}'
        # (rclpy forbids one log call site with two severities, hence two calls.)
        if ok:
            self.get_logger().info(f'/line/{what}: {message}')
        else:
            self.get_logger().error(f'/line/{what}: {message}')
        return ok, message

    # -- the Modbus worker -------------------------------------------------------------------

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
                        with self._lock:
                            self.counters['connect_failures'] += 1
                            self.last_error = (f'cannot connect to {c.host}:{c.port}; '
                                               f'retry in {delay:.1f} s')
                        self.get_logger().error(self.last_error, throttle_duration_sec=5.0)
                        self._publish_status()
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
                        if not self.context.ok():
                            break
                        self.get_logger().error(f'Modbus worker error: {exc!r}\n'
                                                f'{traceback.format_exc()}')
                    if in_flight is not None:
                        with self._lock:
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
            with self._lock:
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
            raise PlcError(f'PLC refused the conveyor_run write ({_exc_text(rr)})')
        rr = client.read_coils(address, count=1, device_id=c.unit_id)
        if rr.isError():
            self._exception('conveyor_run read-back', rr)
            raise PlcError(f'PLC refused the conveyor_run read-back ({_exc_text(rr)})')
        running = bool(rr.bits[0])
        with self._lock:
            self.plc['conveyor_run'] = running
        self._read_status(client)
        self._publish_status()
        if running != on:
            flags = [k for k, v in decode_status(self.plc.get('status', 0)).items() if v]
            raise PlcError(f'conveyor_run reads {int(running)} after writing {int(on)} '
                           f'(PLC status: {", ".join(flags) or "none"})')
        return 'conveyor running' if on else 'conveyor stopped'

    def _next_verdict(self) -> PendingVerdict | None:
        with self._lock:
            return self.book.pop()

    def _expire_verdicts(self, now: float) -> None:
        with self._lock:
            expired = self.book.expire(now)
        for item in expired:
            reason = item.last_error or 'PLC not reachable'
            self.get_logger().error(
                f'verdict for bolt {item.bolt_id} ({"OK" if item.code == 1 else "NG"}) NOT '
                f'delivered: {reason}; the PLC rejects it (fail-safe)')
            self._publish_delivery(item, f'not delivered: {reason}')

    def _write_verdict(self, client, item: PendingVerdict) -> None:
        c = self.config
        t0 = time.perf_counter()
        rr = client.write_registers(c.registers['verdict_bolt_id'],
                                    encode_verdict(item.bolt_id, item.code), device_id=c.unit_id)
        ms = (time.perf_counter() - t0) * 1000
        if rr.isError():
            self._exception(f'verdict write for bolt {item.bolt_id}', rr)
            with self._lock:
                self.counters['verdict_write_errors'] += 1
                retry = self.book.failed(item, f'Modbus exception {_exc_text(rr)}',
                                         time.monotonic())
            if not retry:
                self.get_logger().error(
                    f'verdict for bolt {item.bolt_id} NOT delivered after {item.attempts} '
                    f'attempt(s): {_exc_text(rr)}; the PLC rejects it (fail-safe)')
                self._publish_delivery(item, f'not delivered: {_exc_text(rr)}', ms)
            return
        with self._lock:
            self.book.ack(item)
            self.counters['verdicts_written'] += 1
            self.write_ms.append(ms)
        self._publish_delivery(item, 'delivered', ms)

    def _publish_delivery(self, item: PendingVerdict, message: str,
                          write_ms: float | None = None) -> None:
        """Tell the line what became of one verdict (acknowledged by the PLC, or given up)."""
        pub = self._delivery_pub
        if pub is None:
            return
        with self._lock:
            own = item.bolt_id in self._rejected
        delivered = message == 'delivered'
        # item.attempts counts the failed requests; the one the PLC acknowledged is extra.
        requests = item.attempts + (1 if delivered else 0)
        msg = PlcDelivery(
            bolt_id=str(item.bolt_id),
            code=PlcDelivery.CODE_OK if item.code == VERDICT_OK else PlcDelivery.CODE_NG,
            source=PlcDelivery.SOURCE_BRIDGE if own else PlcDelivery.SOURCE_VERDICT,
            acknowledged=delivered, attempts=min(requests, 65535),
            write_ms=math.nan if write_ms is None else float(write_ms), detail=message)
        msg.header.stamp = self.get_clock().now().to_msg()
        pub.publish(msg)

    def _poll(self, client) -> None:
        c = self.config
        t0 = time.perf_counter()
        rr = client.read_holding_registers(c.registers['bolt_counter'], count=1,
                                           device_id=c.unit_id)
        seen = self.get_clock().now()
        ms = (time.perf_counter() - t0) * 1000
        if rr.isError():
            with self._lock:
                self.counters['poll_errors'] += 1
            self._exception('bolt_counter read', rr)
            return
        raw = rr.registers[0]
        with self._lock:
            self.counters['polls'] += 1
            self.poll_ms.append(ms)
            self.plc['bolt_counter'] = raw
            update = self.tracker.update(raw)
            self.counters['resyncs'] = self.tracker.resyncs
            self.counters['skipped_bolts'] += len(update.skipped)
            self.recent_skipped.extend(update.skipped)
            self.counters['triggers'] += len(update.new_ids)
        stamp = seen.to_msg()
        for bolt_id in update.new_ids:
            if self.watchdog is not None:
                with self._lock:
                    self.watchdog.triggered(bolt_id, time.monotonic())
            self._trigger_pub.publish(Header(stamp=stamp, frame_id=str(bolt_id)))
        if update.warning:
            self.get_logger().warning(update.warning)
        elif update.resync:
            self.get_logger().info(f'bolt_counter synchronised at {raw}')

    def _watch_path(self, client) -> None:
        """Is the inspection path alive? When it dies: stop the conveyor, reject bolts in flight.

        Runs on every turn of the worker (every poll period), so a dead stage stops the conveyor
        within ``stage_timeout_s`` plus one poll, well before the PLC's own heartbeat watchdog.
        """
        if self.watchdog is None:
            return
        now = time.monotonic()
        with self._lock:
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
                self.get_logger().info('inspection path alive: '
                                       + ', '.join(self.watchdog.stages) + '; heartbeat on')
                self._publish_status()
            return
        if not self._path_was_alive and not reject:
            return    # never up yet: no heartbeat, nothing running to stop
        self._path_was_alive = False
        with self._lock:
            self.counters['path_down'] += 1
        self.get_logger().error(
            f'inspection path down: {health.reason}; heartbeat stopped, conveyor stop '
            f'requested, {len(reject)} bolt(s) in flight rejected'
            + (f' ({", ".join(str(b) for b in reject[:10])})' if reject else ''))
        try:
            self._set_coil(client, False)
        except PlcError as exc:
            # The PLC's own watchdog stops the conveyor when the heartbeat goes stale.
            self.get_logger().error(f'conveyor stop request failed: {exc}; the stale '
                                    'heartbeat stops it')
        self._publish_status()

    def _heartbeat(self, client) -> None:
        c = self.config
        value = (self.heartbeat_value + 1) % 65536
        rr = client.write_register(c.registers['heartbeat'], value, device_id=c.unit_id)
        if rr.isError():
            with self._lock:
                self.counters['heartbeat_errors'] += 1
            self._exception('heartbeat write', rr)
            return
        self.heartbeat_value = value
        with self._lock:
            self.counters['heartbeats'] += 1

    def _read_status(self, client) -> None:
        c = self.config
        values = {}
        for name in ('status', 'pass_count', 'reject_count'):
            rr = client.read_holding_registers(c.registers[name], count=1, device_id=c.unit_id)
            if rr.isError():
                with self._lock:
                    self.counters['status_errors'] += 1
                self._exception(f'{name} read', rr)
                return
            values[name] = rr.registers[0]
        rr = client.read_coils(c.coils['conveyor_run'], count=1, device_id=c.unit_id)
        if rr.isError():
            with self._lock:
                self.counters['status_errors'] += 1
            self._exception('conveyor_run read', rr)
            return
        values['conveyor_run'] = bool(rr.bits[0])
        with self._lock:
            previous = decode_status(self.plc.get('status', 0))
            self.plc.update(values)
        flags = decode_status(values['status'])
        if flags['heartbeat_stale'] and not previous['heartbeat_stale']:
            self.get_logger().error('PLC reports a stale heartbeat: conveyor stopped by the '
                                    'PLC watchdog; call /line/start to restart')
        self._publish_status()

    def _exception(self, what: str, rr) -> None:
        text = f'{what}: Modbus exception {_exc_text(rr)}'
        with self._lock:
            self.counters['exception_responses'] += 1
            self.last_error = text
        self.get_logger().error(text, throttle_duration_sec=1.0)

    def _on_connected(self) -> None:
        c = self.config
        with self._lock:
            self.connected = True
            self.counters['connects'] += 1
            self.backoff.reset()
            reconnect = self.counters['connects'] > 1
        self.get_logger().info(f'{"re" if reconnect else ""}connected to PLC {c.host}:{c.port}')
        self._publish_status()

    def _on_connection_lost(self, exc: Exception, timeout: bool) -> float:
        with self._lock:
            self.connected = False
            self.counters['disconnects'] += 1
            if timeout:
                self.counters['timeouts'] += 1
            self.tracker.connection_lost()
            delay = self.backoff.next_delay()
            held = [item.bolt_id for item in self.book.queue]
            self.last_error = (f'{"timeout" if timeout else "connection lost"}: {exc}; '
                               f'reconnect in {delay:.1f} s')
        # Ctrl-C under launch signals every process at once: a simulated PLC launched beside
        # the bridge may close its socket first. That is the line stopping, not a fault. Under
        # load this process may see the closed socket before its own signal handler has run
        # (Python runs it in the main thread), so give the signal a moment to show.
        message = f'PLC {self.last_error}' + (f'; holding verdicts for bolts {held}'
                                              if held else '')
        if self.shutdown_requested.wait(SHUTDOWN_GRACE_S):
            self.get_logger().warning(message + '; shutting down')
        else:
            self.get_logger().error(message)
        self._publish_status()
        return delay

    # -- status and diagnostics --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot of the bridge's counters and PLC-side values (for tests and tools)."""
        with self._lock:
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

    @staticmethod
    def _summary(s: dict[str, Any]) -> tuple[int, str]:
        """The line's state for people: (level as LineStatus.LEVEL_*, one line)."""
        flags = decode_status(s['plc'].get('status', 0))
        if not s['connected']:
            wait = s['reconnect_in_s']
            state = (f'reconnecting in {wait:.0f} s' if wait is not None and wait >= 0.5
                     else 'connecting')
            # Blind while it waits: say so, with the countdown (operator page, /diagnostics).
            return LineStatus.LEVEL_ERROR, f'PLC not connected ({state}): {s["last_error"]}'
        if not s['path_alive']:
            return LineStatus.LEVEL_ERROR, (f'inspection path down: {s["path_reason"]}; '
                                            'no heartbeat')
        if flags['heartbeat_stale']:
            return LineStatus.LEVEL_ERROR, 'conveyor stopped by the PLC watchdog'
        if s['undelivered'] or s['skipped_bolts'] or s['exception_responses']:
            return LineStatus.LEVEL_WARN, (
                f'connected; {s["skipped_bolts"]} skipped bolt(s), {s["undelivered"]} '
                f'undelivered verdict(s), {s["exception_responses"]} exception response(s)')
        return LineStatus.LEVEL_OK, 'connected'

    def _line_status(self, s: dict[str, Any]) -> LineStatus:
        """/plc/status: the typed line status."""
        c = self.config
        plc = s['plc']
        level, message = self._summary(s)
        read = 'status' in plc
        flags = decode_status(plc.get('status', 0))
        wait = s['reconnect_in_s']
        msg = LineStatus(
            level=level, message=message, plc=f'{c.host}:{c.port}/{c.unit_id}',
            connected=bool(s['connected']),
            reconnect_in_s=math.nan if wait is None else float(wait),
            last_error=s['last_error'], path_alive=bool(s['path_alive']),
            path_reason=s['path_reason'] or '',
            heartbeat_healthy=bool(s['connected'] and s['path_alive']),
            plc_read=read, running=bool(plc.get('conveyor_run', False)),
            plc_status=int(plc.get('status', 0)) & 0xFFFF,
            plc_watchdog_tripped=bool(flags['heartbeat_stale']),
            bolt_counter=int(plc.get('bolt_counter', 0)) & 0xFFFF,
            pass_count=int(plc.get('pass_count', 0)) & 0xFFFF,
            reject_count=int(plc.get('reject_count', 0)) & 0xFFFF,
            last_bolt_id='' if s['last_bolt_id'] is None else str(s['last_bolt_id']),
            triggers=s['triggers'], skipped_bolts=s['skipped_bolts'],
            verdicts_written=s['verdicts_written'], undelivered_verdicts=s['undelivered'],
            bad_verdicts=s['bad_verdicts'], rejected_in_flight=s['rejected_in_flight'],
            verdicts_pending=s['verdicts_pending'])
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    def _diagnostic_status(self, s: dict[str, Any]) -> DiagnosticStatus:
        """/diagnostics: every counter and latency as KeyValues."""
        c = self.config
        plc = s['plc']
        flags = decode_status(plc.get('status', 0))
        level, message = self._summary(s)
        values = {
            'connected': s['connected'],
            'conveyor_run': plc.get('conveyor_run'),
            'bolt_counter': plc.get('bolt_counter'),
            'last_bolt_id': s['last_bolt_id'],
            'pass_count': plc.get('pass_count'),
            'reject_count': plc.get('reject_count'),
            **{f'status.{k}': v for k, v in flags.items()},
            'last_poll_latency_ms': s['last_poll_ms'],
            'poll_latency_p50_ms': s['poll_ms_p50'],
            'poll_latency_max_ms': s['poll_ms_max'],
            'verdict_write_p50_ms': s['verdict_write_ms_p50'],
            'verdict_write_max_ms': s['verdict_write_ms_max'],
            **{k: s[k] for k in self.counters},
            'undelivered_verdicts': s['undelivered'],
            'undelivered_recent': '; '.join(f'bolt {b}: {r}' for b, r in
                                            s['undelivered_recent'][-5:]),
            'skipped_recent': ' '.join(str(b) for b in s['skipped_recent'][-20:]),
            'verdicts_pending': s['verdicts_pending'],
            'last_error': s['last_error'],
            'path_alive': s['path_alive'],
            'path_reason': s['path_reason'],
            'reconnect_in_s': s['reconnect_in_s'],
        }
        return DiagnosticStatus(level=bytes([level]), name=f'{self.get_name()}: Modbus TCP',
                                message=message, hardware_id=f'{c.host}:{c.port}/{c.unit_id}',
                                values=key_values(values))

    def _publish_status(self) -> None:
        """Latch /plc/status when what an operator sees changes."""
        if self._status_pub is None:
            return
        s = self.stats()
        key = (s['connected'], s['plc'].get('status'), s['plc'].get('conveyor_run'),
               s['plc'].get('pass_count'), s['plc'].get('reject_count'), s['last_error'],
               s['path_alive'], s['path_reason'],
               None if s['reconnect_in_s'] is None else round(s['reconnect_in_s']))
        if key == self._published_status:
            return
        self._published_status = key
        self._status_pub.publish(self._line_status(s))

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.config is None:
            return
        msg = self._diagnostic_status(self.stats())
        publish_diagnostics(self, self._diag_pub, msg)
        self._publish_status()


def _exc_text(rr) -> str:
    code = getattr(rr, 'exception_code', None)
    names = {1: 'ILLEGAL FUNCTION', 2: 'ILLEGAL ADDRESS', 3: 'ILLEGAL VALUE',
             4: 'DEVICE FAILURE', 5: 'ACKNOWLEDGE', 6: 'DEVICE BUSY', 10: 'GATEWAY PATH',
             11: 'GATEWAY NO RESPONSE'}
    return f'{code} {names.get(code, "")}'.strip() if code is not None else str(rr)


def main(args=None) -> None:
    exit_main(PlcBridgeNode, args)


if __name__ == '__main__':
    main()
