"""HMI node: the operator web page (aiohttp, own thread) fed from the line's topics.

A thin adapter: messages become calls on :class:`bolt_inspection.hmi.state.HmiState`; the page,
its Server-Sent Events and the Start / Stop endpoints are :mod:`bolt_inspection.hmi.app`.

Inputs: /inspection/verdict (bolt_inspection_msgs/Verdict, reliable depth 100),
/inspection/gradcam (mosaic, sensor data), /camN/image_raw (latest views, sensor data),
/diagnostics, /plc/status (bolt_inspection_msgs/LineStatus, transient local).
Start / Stop call the PLC bridge's /line/start and /line/stop (std_srvs/Trigger) with
``call_async`` awaited on the web server's event loop, so no executor thread ever waits on them.

Lifecycle: ``configure`` checks the parameters (a non-loopback ``host`` needs a ``token``) and
creates the state and the service clients; ``activate`` binds the port and subscribes;
``deactivate`` stops the server; ``cleanup`` drops the state.
"""

from __future__ import annotations

import asyncio

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from bolt_inspection.core.errors import BoltInspectionError
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.lifecycle_util import (
    declare,
    destroy_entities,
    exit_main,
    key_values,
    publish_diagnostics,
)
from bolt_inspection.nodes.verdict_msg import BAD_VERDICTS, decode_or_drop

VERDICT_QOS = topics.VERDICT_QOS
STATUS_QOS = topics.STATUS_QOS


class HmiNode(LifecycleNode):
    """Serves the operator page and turns its Start / Stop buttons into service calls."""

    def __init__(self, node_name: str = 'hmi', *, context=None, parameter_overrides=None,
                 **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        # Everything destroy_node() touches exists before the first declare: a parameter of
        # the wrong type raises there, and the context still destroys this half-built node.
        self.state = None
        self.server = None
        self.config = None
        self.url = ''
        self._trigger_clients: dict[str, object] = {}
        self._entities: list = []
        self._diag_pub = None
        self._group = ReentrantCallbackGroup()
        self.dropped_images = 0
        self.counters = {BAD_VERDICTS: 0}
        p = self._params = {}
        # host, port and token are writable: a refused bind is fixed by setting them and
        # configuring again (`ros2 lifecycle set /hmi configure`), no restart needed.
        p['host'] = declare(self, 'host', '127.0.0.1', 'Bind address; anything but loopback '
                            'requires token; read on configure')
        p['port'] = declare(self, 'port', 8080, 'TCP port (0 = any free port); read on '
                            'configure', int_range=(0, 65535))
        p['token'] = declare(self, 'token', '', 'Secret for Start/Stop (X-HMI-Token); required '
                             'when host is not loopback; read on configure')
        p['allowed_hosts'] = declare(self, 'allowed_hosts', '', 'More names the page may be '
                                     'reached by, comma-separated (localhost, loopback and '
                                     'host always are); any other Host is refused (DNS '
                                     'rebinding); read on configure')
        p['log_db'] = declare(self, 'log_db', '~/.ros/bolt_inspection/inspection.db',
                              "Inspection log whose stored images a clicked bolt shows ('' = "
                              'none)', read_only=True)
        p['log_image_dir'] = declare(self, 'log_image_dir', '', "The log's image folder ('' = "
                                     'beside the database)', read_only=True)
        p['jpeg_quality'] = declare(self, 'jpeg_quality', 85, 'JPEG quality of page images',
                                    int_range=(10, 100), read_only=True)
        p['control_timeout_s'] = declare(self, 'control_timeout_s', 10.0, 'Give up on a '
                                         'Start/Stop call after this long',
                                         float_range=(0.5, 120.0), read_only=True)
        p['cams'] = declare(self, 'cams', [0, 1, 2, 3], 'Cameras whose latest view is shown',
                            read_only=True)
        p['camera_topic'] = declare(self, 'camera_topic', '/cam{}/image_raw', 'Camera topic '
                                    'pattern; {} = camera index', read_only=True)
        p['start_service'] = declare(self, 'start_service', '/line/start', 'std_srvs/Trigger '
                                     'behind the Start button', read_only=True)
        p['stop_service'] = declare(self, 'stop_service', '/line/stop', 'std_srvs/Trigger '
                                    'behind the Stop button', read_only=True)
        p['stale_after_s'] = declare(self, 'stale_after_s', 5.0, 'A /diagnostics entry not '
                                     'refreshed for this long shows STALE',
                                     float_range=(0.5, 600.0), read_only=True)
        p['diagnostics_period_s'] = declare(self, 'diagnostics_period_s', 1.0, 'Period of '
                                            '/diagnostics', float_range=(0.1, 60.0),
                                            read_only=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from bolt_inspection.hmi.app import HmiConfig, check_bind
        from bolt_inspection.hmi.state import HmiState

        p = self._params
        for name in ('host', 'port', 'token', 'allowed_hosts'):
            p[name] = self.get_parameter(name).value
        self.config = HmiConfig(host=p['host'], port=int(p['port']), token=p['token'],
                                allowed_hosts=p['allowed_hosts'],
                                log_db=p['log_db'], log_image_dir=p['log_image_dir'],
                                jpeg_quality=int(p['jpeg_quality']),
                                control_timeout_s=float(p['control_timeout_s']))
        try:
            check_bind(self.config.host, self.config.token)
        except BoltInspectionError as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        if self.config.log_db:
            from pathlib import Path
            self.config.log_db = str(Path(self.config.log_db).expanduser())
        self.state = HmiState(jpeg_quality=self.config.jpeg_quality,
                              stale_after_s=float(p['stale_after_s']))
        self._trigger_clients = {
            'start': self.create_client(Trigger, p['start_service'], callback_group=self._group),
            'stop': self.create_client(Trigger, p['stop_service'], callback_group=self._group),
        }
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, '/diagnostics', 10)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from bolt_inspection.hmi.app import HmiServer, create_app

        # 50 ms: a verdict reaches the screen well within the line's 0.9 s budget; a snapshot
        # costs microseconds, so checking 20 times a second per open page is cheap.
        app = create_app(self.state, on_start=self._start, on_stop=self._stop,
                         config=self.config, poll_s=0.05)
        server = HmiServer(app, self.config.host, self.config.port)
        try:
            server.start()
        except BoltInspectionError as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        self.server, self.url = server, server.url
        p = self._params
        g = self._group
        self._entities = [
            self.create_subscription(topics.VERDICT_TYPE, topics.VERDICT, self._on_verdict,
                                     VERDICT_QOS, callback_group=g),
            self.create_subscription(Image, '/inspection/gradcam', self._image('gradcam'),
                                     qos_profile_sensor_data, callback_group=g),
            self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10,
                                     callback_group=g),
            self.create_subscription(topics.PLC_STATUS_TYPE, topics.PLC_STATUS,
                                     self._on_plc_status, STATUS_QOS, callback_group=g),
            self.create_timer(p['diagnostics_period_s'], self._publish_diagnostics),
        ]
        for cam in p['cams']:
            self._entities.append(self.create_subscription(
                Image, p['camera_topic'].format(cam), self._image(f'cam{cam}'),
                qos_profile_sensor_data, callback_group=g))
        self.get_logger().info(f'operator page at {self.url}/')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        for client in self._trigger_clients.values():
            self.destroy_client(client)
        self._trigger_clients = {}
        if self._diag_pub is not None:
            self.destroy_lifecycle_publisher(self._diag_pub)
            self._diag_pub = None
        self.state = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        self._stop_serving()
        return super().destroy_node()

    def _stop_serving(self) -> None:
        destroy_entities(self, self._entities)
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    # -- Start / Stop (run on the web server's event loop) -----------------------------------
    async def _start(self) -> tuple[bool, str]:
        return await self._call('start')

    async def _stop(self) -> tuple[bool, str]:
        return await self._call('stop')

    async def _call(self, what: str) -> tuple[bool, str]:
        client = self._trigger_clients.get(what)
        name = self._params[f'{what}_service']
        if client is None or not client.service_is_ready():
            return False, f'service {name} not available (is the PLC bridge running?)'
        loop = asyncio.get_running_loop()
        answer: asyncio.Future = loop.create_future()

        def transfer(ros_future) -> None:
            if answer.done():
                return                   # timed out and cancelled by the web app
            exc = ros_future.exception()
            if exc is not None:
                answer.set_exception(exc)
            else:
                answer.set_result(ros_future.result())

        # The response arrives in an executor thread; hand it to the event loop's thread.
        ros_future = client.call_async(Trigger.Request())
        ros_future.add_done_callback(lambda f: loop.call_soon_threadsafe(transfer, f))
        try:
            response = await answer
        except asyncio.CancelledError:
            client.remove_pending_request(ros_future)
            raise
        return bool(response.success), str(response.message)

    # -- topic inputs ------------------------------------------------------------------------
    def _on_verdict(self, msg) -> None:
        state = self.state
        if state is None:
            return
        verdict = decode_or_drop(self, msg, self.counters)
        if verdict is None:
            state.on_bad_verdict()
        else:
            state.on_verdict_message(verdict)

    def _image(self, name: str):
        from bolt_inspection.nodes.image_conv import image_to_bgr

        def callback(msg: Image) -> None:
            state = self.state
            if state is None:
                return
            try:
                state.on_image(name, image_to_bgr(msg))
            except BoltInspectionError as exc:
                self.dropped_images += 1
                self.get_logger().warning(f'{name}: image not shown: {exc}',
                                          throttle_duration_sec=10.0)
        return callback

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        state = self.state
        if state is None:
            return
        for status in msg.status:
            state.on_status(status.name, status.level, status.message, status.hardware_id,
                            {kv.key: kv.value for kv in status.values})

    def _on_plc_status(self, msg) -> None:
        state = self.state
        if state is None:
            return
        # What the page lists under the PLC's health line; the gate's tally only once read.
        values = {'connected': msg.connected, 'path_alive': msg.path_alive,
                  'heartbeat_healthy': msg.heartbeat_healthy, 'triggers': msg.triggers,
                  'skipped_bolts': msg.skipped_bolts,
                  'undelivered_verdicts': msg.undelivered_verdicts}
        if msg.plc_read:
            values.update(pass_count=msg.pass_count, reject_count=msg.reject_count,
                          running=msg.running)
        state.on_plc_status(msg.level, msg.message, msg.plc,
                            {k: str(v) for k, v in values.items()},
                            running=msg.running if msg.plc_read else None)

    # -- health ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.server is None:
            return
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f'{self.get_name()}: operator page',
            hardware_id=self.url, message=f'serving {self.url}/',
            values=key_values({'url': self.url, 'dropped_images': self.dropped_images,
                               'bad_verdicts': self.counters[BAD_VERDICTS],
                               'token_required': bool(self.config.token)}))
        publish_diagnostics(self, self._diag_pub, status)


def main(args=None) -> None:
    exit_main(HmiNode, args)


if __name__ == '__main__':
    main()
