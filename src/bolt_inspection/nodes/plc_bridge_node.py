"""PLC bridge node: Modbus TCP <-> ROS 2 for the sorting line.

Lifecycle: ``configure`` validates the register map (parameters default to config/plc.yaml) and
creates publishers, the verdict subscription and the /line/start and /line/stop services;
``activate`` starts the Modbus worker thread (it connects, then polls); ``deactivate`` stops it
and closes the socket; ``cleanup`` destroys the ROS entities.

The Modbus client is :class:`bolt_inspection.core.plc.link.PlcLink`: all Modbus I/O in ONE
worker thread, so no ROS callback ever waits on the socket. This node holds the parameters,
hands verdicts and signs of life to the link, publishes the triggers the moment the link reads
a new count, and turns the link's state into /plc/status and /diagnostics. The start/stop
services wait (bounded by the Modbus timeout) for the link's answer in their own callback group,
so with the MultiThreadedExecutor of ``main()`` / ``bolt-inspection line`` nothing else waits
for them.

Topics (nodes/topics.py): /line/trigger (std_msgs/Header, reliable depth 10; stamp = when the
bridge saw the counter change, frame_id = bolt id), /inspection/verdict (in,
bolt_inspection_msgs/Verdict, reliable depth 100), /plc/status (bolt_inspection_msgs/LineStatus,
transient local depth 1: connection, conveyor, heartbeat, inspection path, gate tally,
counters), /plc/delivery (bolt_inspection_msgs/PlcDelivery per verdict, reliable depth 100:
what was written for which bolt, acknowledged by the PLC or given up and why; the inspection log
records it per bolt), /diagnostics.

The heartbeat means "the inspection path is alive" (core.plc.liveness): with ``watch_stages`` set
(the line's classifier and cameras; ``graph.line_nodes`` sets it), the bridge writes the
heartbeat only while every stage reports on /inspection/alive and every triggered bolt gets its
verdict in time. When the path dies it asks the PLC to stop the conveyor at once, writes NG for
every bolt in flight, refuses /line/start until the path is back, and says why on /plc/status.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from bolt_inspection_msgs.msg import LineStatus, PlcDelivery
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from bolt_inspection.core.errors import ConfigError
from bolt_inspection.core.plc.bridge import PendingVerdict
from bolt_inspection.core.plc.contract import (
    VERDICT_OK,
    PlcConfig,
    decode_status,
    load_plc_config,
    parse_plc_config,
)
from bolt_inspection.core.plc.link import LinkEvents, PlcLink
from bolt_inspection.core.plc.liveness import PathHealth
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

# Parameter -> description. Addresses get their range from `addressing` at configure time
# (core.plc.contract validates; descriptors can't express it).
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


class PlcBridgeNode(LifecycleNode):
    """Polls the PLC's bolt counter, triggers the cameras, writes verdicts and the heartbeat
    (through :class:`~bolt_inspection.core.plc.link.PlcLink`)."""

    def __init__(self, node_name: str = 'plc_bridge', *, context=None,
                 parameter_overrides=None, **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        # Everything destroy_node() touches exists before the first declare: a parameter of
        # the wrong type raises there, and the context still destroys this half-built node.
        self.config: PlcConfig | None = None
        self.link: PlcLink | None = None
        # Set on SIGINT / SIGTERM by node_main (lifecycle_util), before the shutdown transition.
        self.shutdown_requested = threading.Event()
        self._entities: list = []
        self._trigger_pub = self._status_pub = self._diag_pub = self._delivery_pub = None
        self._published_status: tuple | None = None
        # The shipped plc.yaml is the one source of the address map; parameters override it.
        defaults = load_plc_config()[0].to_params()
        self._param_names = list(defaults)
        for name, default in defaults.items():
            description = _DESCRIPTIONS.get(name) or f'Address of {name} (see config/plc.yaml)'
            # dynamic_typing: a YAML `timeout_s: 1` (int) must not fail inside rclpy with a
            # type error; core.plc.contract validates every value at configure, naming the key.
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

    # -- what the link says (its worker thread) ----------------------------------------------

    class _Events(LinkEvents):
        def __init__(self, node: PlcBridgeNode) -> None:
            self.node = node

        def triggered(self, bolt_ids: list[int]) -> None:
            pub = self.node._trigger_pub
            if pub is None or not self.node.context.ok():
                return
            stamp = self.node.get_clock().now().to_msg()
            for bolt_id in bolt_ids:
                pub.publish(Header(stamp=stamp, frame_id=str(bolt_id)))

        def delivered(self, item: PendingVerdict, message: str, write_ms: float | None,
                      own: bool) -> None:
            self.node._publish_delivery(item, message, write_ms, own)

        def status_changed(self) -> None:
            if self.node.context.ok():
                self.node._publish_status()

        def log(self, level: str, text: str) -> None:
            if not self.node.context.ok():
                return
            # (rclpy forbids one log call site with two severities, hence three calls; the
            # link throttles what needs throttling.)
            logger = self.node.get_logger()
            if level == 'error':
                logger.error(text)
            elif level == 'warning':
                logger.warning(text)
            else:
                logger.info(text)

    # -- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = {name: self.get_parameter(name).value for name in self._param_names}
        try:
            self.config = parse_plc_config(params, where='plc_bridge parameter ')
        except ConfigError as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        self.link = PlcLink(self.config, stages=self.watch_stages,
                            stage_timeout_s=self.stage_timeout_s,
                            verdict_timeout_s=self.verdict_timeout_s,
                            events=self._Events(self),
                            shutdown_requested=self.shutdown_requested)
        self._published_status = None
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
        self.link.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_link()
        self._publish_diagnostics()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_link()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_link()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        self._stop_link()
        return super().destroy_node()

    def _stop_link(self) -> None:
        if self.link is not None:
            self.link.stop()

    def _destroy_entities(self) -> None:
        destroy_entities(self, self._entities)
        self._trigger_pub = self._status_pub = self._diag_pub = self._delivery_pub = None

    # -- ROS callbacks (never touch the socket) ----------------------------------------------

    def _on_verdict(self, msg) -> None:
        # One decoder, one rule for OK (core.line.verdict): a malformed verdict is dropped and
        # counted; the bolt then reaches the gate without a verdict and the PLC rejects it.
        link = self.link
        verdict = decode_or_drop(self, msg, link.counters, link.lock)
        if verdict is not None:
            link.submit(int(verdict.bolt_id), verdict.code)

    def _on_alive(self, msg: Header) -> None:
        self.link.beat(msg.frame_id, trigger_listeners=self.trigger_subscribers())

    def _on_conveyor(self, on: bool, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.set_conveyor(on)
        return response

    # -- for in-process callers and tests ----------------------------------------------------

    @property
    def counters(self) -> dict[str, int]:
        """The link's counters (live; copy under ``link.lock`` or use :meth:`stats`)."""
        return self.link.counters if self.link is not None else {}

    @property
    def path(self) -> PathHealth:
        """Is the inspection path alive, and if not why (the link's watchdog)."""
        return self.link.path if self.link is not None else PathHealth(False, 'not configured')

    @property
    def poll_ms(self):
        return self.link.poll_ms

    @property
    def write_ms(self):
        return self.link.write_ms

    @property
    def recent_skipped(self):
        return self.link.recent_skipped if self.link is not None else ()

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
        if self.link is None or not self.link.running:
            ok, message = False, f'cannot {what}: plc_bridge not active'
        else:
            ok, message = self.link.set_conveyor(on)
        # (rclpy forbids one log call site with two severities, hence two calls.)
        if ok:
            self.get_logger().info(f'/line/{what}: {message}')
        else:
            self.get_logger().error(f'/line/{what}: {message}')
        return ok, message

    def stats(self) -> dict[str, Any]:
        """A snapshot of the link's counters and PLC-side values (for tests and tools)."""
        return self.link.stats()

    # -- status and diagnostics --------------------------------------------------------------

    def _publish_delivery(self, item: PendingVerdict, message: str, write_ms: float | None,
                          own: bool) -> None:
        """Tell the line what became of one verdict (acknowledged by the PLC, or given up)."""
        pub = self._delivery_pub
        if pub is None or not self.context.ok():
            return
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
        if self._status_pub is None or self.link is None:
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
        if self._diag_pub is None or self.link is None:
            return
        msg = self._diagnostic_status(self.stats())
        publish_diagnostics(self, self._diag_pub, msg)
        self._publish_status()


def main(args=None) -> None:
    exit_main(PlcBridgeNode, args)


if __name__ == '__main__':
    main()
