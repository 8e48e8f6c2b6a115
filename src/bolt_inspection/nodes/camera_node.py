"""Camera node: one view of every triggered bolt on /camN/image_raw.

Lifecycle: ``configure`` opens the source (synthetic rig, dataset folder or OpenCV device),
``activate`` subscribes to /line/trigger (or starts the free-run timer), ``deactivate`` stops
publishing, ``cleanup`` releases the source. Each image carries ``header.stamp`` = the trigger's
stamp, which is the classifier's join key, and ``header.frame_id`` = this camera's frame.
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from bolt_inspection.core.errors import BoltInspectionError
from bolt_inspection.core.vision.camera_source import CameraSourceConfig, FrameSource, make_source
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.image_conv import bgr_to_image
from bolt_inspection.nodes.lifecycle_util import (
    declare,
    exit_main,
    key_values,
    live_stamp_age_s,
    publish_diagnostics,
    stamp_to_ns,
)

# A frame published later than this after its trigger is logged with where the time went (the
# classifier's view timeout, 0.8 s by default, turns a much later one into a 'missing view').
SLOW_CAPTURE_S = 0.3


class CameraNode(LifecycleNode):
    """Publishes one frame per trigger (or at ``rate_hz`` in free-run mode)."""

    def __init__(self, node_name: str = 'cam0', *, context=None, parameter_overrides=None,
                 **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        p = self._params = {}
        p['camera_index'] = declare(self, 'camera_index', 0, 'View number of this camera in '
                                    'the rig (0..n_cams-1)', read_only=True, int_range=(0, 15))
        p['n_cams'] = declare(self, 'n_cams', 4, 'Cameras around the bolt', read_only=True,
                              int_range=(1, 16))
        p['source'] = declare(self, 'source', 'synthetic', 'Frame source', read_only=True,
                              constraints='synthetic | folder | device')
        p['seed'] = declare(self, 'seed', 0, 'Synthetic scenario seed (bolt n = '
                            'bolt_spec(seed, n))', read_only=True)
        p['size'] = declare(self, 'size', [1280, 960], 'Frame size [width, height]',
                            read_only=True)
        p['defect_rate'] = declare(self, 'defect_rate', 0.5, 'Fraction of synthetic bolts with '
                                   'a defect', float_range=(0.0, 1.0), read_only=True)
        p['distractor'] = declare(self, 'distractor', False, 'Draw the label-correlated '
                                  'background distractor (synthetic)', read_only=True)
        p['folder'] = declare(self, 'folder', '', 'Dataset folder (source folder)',
                              read_only=True)
        p['device'] = declare(self, 'device', '', 'OpenCV source: index, file, RTSP URL or '
                              'GStreamer pipeline (source device)', read_only=True)
        p['resize'] = declare(self, 'resize', False, 'Resize folder/device frames to size',
                              read_only=True)
        p['reconnect_max_s'] = declare(self, 'reconnect_max_s', 10.0, 'Longest delay between '
                                       'reconnect attempts of a dropped device',
                                       float_range=(0.1, 300.0), read_only=True)
        p['prefetch'] = declare(self, 'prefetch', True, 'Synthetic source: render the next '
                                'bolt id in the background after each frame', read_only=True)
        p['prefetch_after_topic'] = declare(
            self, 'prefetch_after_topic', '/inspection/verdict', 'Synthetic source with '
            'prefetch: start the next render when a verdict arrives here, so it does not '
            "compete with the inference for the CPU; '' = right after each frame",
            read_only=True)
        p['free_run'] = declare(self, 'free_run', False, 'Publish at rate_hz without triggers '
                                '(bench-top setup)', read_only=True)
        p['rate_hz'] = declare(self, 'rate_hz', 5.0, 'Free-run frame rate',
                               float_range=(0.1, 120.0), read_only=True)
        p['frame_id'] = declare(self, 'frame_id', '', "Camera frame for header.frame_id; '' = "
                                'camN_optical_frame', read_only=True)
        p['trigger_topic'] = declare(self, 'trigger_topic', '/line/trigger', 'Trigger topic',
                                     read_only=True)
        p['image_topic'] = declare(self, 'image_topic', '', "Output topic; '' = "
                                   '/camN/image_raw', read_only=True)
        p['diagnostics_period_s'] = declare(self, 'diagnostics_period_s', 1.0, 'Period of '
                                            '/diagnostics', float_range=(0.1, 60.0),
                                            read_only=True)
        cam = p['camera_index']
        self.frame_id = p['frame_id'] or f'cam{cam}_optical_frame'
        self.image_topic = p['image_topic'] or f'/cam{cam}/image_raw'
        self.source: FrameSource | None = None
        self._pub = None
        self._diag_pub = None
        self._alive_pub = None
        self._trigger_sub = None
        self._verdict_sub = None
        self._own_timers = []
        self._lock = threading.Lock()
        self._group = MutuallyExclusiveCallbackGroup()
        self.published = 0
        self.errors = 0
        self.last_error = ''
        self._free_run_count = 0
        self._rate_window: list[float] = []

    def source_config(self) -> CameraSourceConfig:
        p = self._params
        size = tuple(int(v) for v in p['size'])
        return CameraSourceConfig(
            source=p['source'], cam=p['camera_index'], n_cams=p['n_cams'],
            size=size if len(size) == 2 else (0, 0), seed=p['seed'],
            defect_rate=p['defect_rate'], distractor=p['distractor'], folder=p['folder'],
            device=p['device'], resize=p['resize'],
            reconnect_max_s=max(0.5, p['reconnect_max_s']), prefetch=p['prefetch'],
            prefetch_on_grab=not p['prefetch_after_topic'])

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.source = make_source(self.source_config())
            self.source.open()
        except BoltInspectionError as exc:
            self.get_logger().error(f'cannot open camera source: {exc}')
            self.source = None
            return TransitionCallbackReturn.FAILURE
        # Reliable: every frame reaches the classifier, also between processes (topics.py).
        self._pub = self.create_lifecycle_publisher(Image, self.image_topic, topics.IMAGE_QOS)
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, topics.DIAGNOSTICS,
                                                         topics.DIAGNOSTICS_QOS)
        self._alive_pub = self.create_lifecycle_publisher(Header, topics.ALIVE,
                                                          topics.ALIVE_QOS)
        self.get_logger().info(f'{self.source.describe()} -> {self.image_topic}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self._params
        if p['free_run']:
            self._own_timers.append(self.create_timer(1.0 / p['rate_hz'], self._on_free_run,
                                                  callback_group=self._group))
        else:
            self._trigger_sub = self.create_subscription(
                Header, p['trigger_topic'], self._on_trigger, topics.TRIGGER_QOS,
                callback_group=self._group)
        self._own_timers.append(self.create_timer(p['diagnostics_period_s'],
                                              self._publish_diagnostics))
        self._own_timers.append(self.create_timer(topics.ALIVE_PERIOD_S, self._publish_alive))
        if p['prefetch'] and p['prefetch_after_topic'] and hasattr(self.source, 'prefetch_next'):
            self._verdict_sub = self.create_subscription(
                topics.VERDICT_TYPE, p['prefetch_after_topic'], self._on_verdict,
                topics.VERDICT_QOS)
        return super().on_activate(state)

    def _on_verdict(self, msg) -> None:
        # The classifier is done with a bolt: the CPU is free to draw the next one.
        source = self.source
        if source is not None:
            source.prefetch_next()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_inputs(self) -> None:
        for name in ('_trigger_sub', '_verdict_sub'):
            sub = getattr(self, name)
            if sub is not None:
                self.destroy_subscription(sub)
                setattr(self, name, None)
        for timer in self._own_timers:
            self.destroy_timer(timer)
        self._own_timers = []

    def _release(self) -> None:
        with self._lock:  # not while a trigger callback is grabbing from the source
            if self.source is not None:
                self.source.close()
                self.source = None
            for pub in (self._pub, self._diag_pub, self._alive_pub):
                if pub is not None:
                    self.destroy_lifecycle_publisher(pub)
            self._pub = self._diag_pub = self._alive_pub = None

    # -- frames ------------------------------------------------------------------------------
    def _on_trigger(self, msg: Header) -> None:
        heard_ns = self.get_clock().now().nanoseconds
        self.capture(msg.stamp, msg.frame_id)
        self._check_capture_time(msg, heard_ns)

    def _check_capture_time(self, msg: Header, heard_ns: int) -> None:
        stamp_ns = stamp_to_ns(msg.stamp)
        out_s = live_stamp_age_s(self, stamp_ns)
        if out_s is not None and out_s > SLOW_CAPTURE_S:
            heard_ms = (heard_ns - stamp_ns) * 1e-6
            self.get_logger().warning(
                f'bolt {msg.frame_id}: frame out {out_s * 1e3:.0f} ms after the trigger '
                f'(trigger heard after {heard_ms:.0f} ms, grab and publish '
                f'{out_s * 1e3 - heard_ms:.0f} ms; {self._source_stats()})')

    def _source_stats(self) -> str:
        source = self.source
        if source is None:
            return 'source closed'
        hits = getattr(source, 'prefetch_hits', None)
        if hits is None:
            return source.describe()
        return f'prefetch hits {hits}, misses {source.prefetch_misses}'

    def _on_free_run(self) -> None:
        self._free_run_count += 1
        self.capture(self.get_clock().now().to_msg(), str(self._free_run_count))

    def capture(self, stamp, bolt_id: str) -> bool:
        """Grab the frame for ``bolt_id`` and publish it stamped ``stamp``; False on failure."""
        with self._lock:
            source, pub = self.source, self._pub
            if source is None or pub is None:
                return False
            try:
                frame = source.grab(bolt_id)
                msg = bgr_to_image(frame, stamp=stamp, frame_id=self.frame_id)
            except BoltInspectionError as exc:
                # No image: the classifier's view timeout turns this bolt NG 'missing view'.
                self.errors += 1
                self.last_error = f'bolt {bolt_id}: {exc}'
                self.get_logger().warning(self.last_error, throttle_duration_sec=2.0)
                return False
            pub.publish(msg)
            self.published += 1
            now = time.monotonic()
            self._rate_window = [t for t in self._rate_window if now - t < 10.0] + [now]
            return True

    def _publish_alive(self) -> None:
        # A sign of life only while the source is open, (when triggered) a trigger publisher
        # is matched and the image publisher has matched a reader: a camera that cannot grab,
        # cannot hear the trigger or whose frames reach nobody is a dead stage, and the PLC
        # bridge stops the heartbeat (core.plc.liveness) and does not start the conveyor. DDS
        # matches each end of a topic on its own: the classifier may hear this camera before
        # this camera's publisher has matched the classifier, and a frame published then is lost.
        source, pub, trigger, frames = self.source, self._alive_pub, self._trigger_sub, self._pub
        if source is None or pub is None or source.state != 'open':
            return
        if trigger is not None and trigger.get_publisher_count() == 0:
            return
        if frames is None or frames.get_subscription_count() == 0:
            return
        pub.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id=self.get_name()))

    def frame_rate(self) -> float:
        window = self._rate_window
        if len(window) < 2:
            return 0.0
        return (len(window) - 1) / max(1e-6, window[-1] - window[0])

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        source = self.source
        state = source.state if source is not None else 'closed'
        last_error = self.last_error or (source.last_error if source is not None else '')
        ok = state == 'open'
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
            name=f'{self.get_name()}: camera', hardware_id=self.frame_id,
            message=f'source {state}' if ok else f'source {state}: {last_error}',
            values=key_values({'source': self._params['source'], 'state': state,
                               'frame_rate_hz': self.frame_rate(), 'published': self.published,
                               'errors': self.errors, 'last_error': last_error}))
        publish_diagnostics(self, self._diag_pub, status)


def main(args=None) -> None:
    exit_main(CameraNode, args)


if __name__ == '__main__':
    main()
