"""Classifier node: joins the views of each triggered bolt and publishes its verdict.

Inputs: /line/trigger (std_msgs/Header: stamp = join key, frame_id = bolt id) and one
sensor_msgs/Image per camera with header.stamp = the trigger stamp. Subscription callbacks only
decode and join (:class:`bolt_inspection.core.line.join.ViewJoiner`); a worker thread runs the
model (the views of one bolt in one batch, Grad-CAM from the same pass, via
:class:`bolt_inspection.core.line.inspector.Inspector`) and publishes the verdict. The Grad-CAM
mosaic
(and per-view overlays) are rendered and published afterwards by a second thread with a queue of
:data:`IMAGE_QUEUE` bolts: when it falls behind it drops the oldest mosaic, so pictures for people
never delay the next bolt's verdict. Verdicts are never dropped.

Every triggered bolt gets exactly one /inspection/verdict (bolt_inspection_msgs/Verdict: the
trigger stamp, bolt id, decision OK / NG / fail-safe NG with the reason, each view's NG
probability and status, threshold, model id, latency; built by core.line.verdict's encoder). A view
that misses its timeout, a frame that cannot be decoded, an inference error, a full queue, or a
deactivation with bolts in flight all give NG with the reason, never silence.

Lifecycle: ``configure`` loads the model (a failure logs one line and returns FAILURE),
``activate`` subscribes and starts the worker, ``deactivate`` answers the bolts in flight and
stops, ``cleanup`` drops the model.
"""

from __future__ import annotations

import collections
import functools
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from bolt_inspection.core.errors import BoltInspectionError
from bolt_inspection.core.line.fusion import fuse, with_reasons
from bolt_inspection.core.line.join import Bundle, ViewJoiner
from bolt_inspection.core.line.latency import LatencyStats
from bolt_inspection.core.line.verdict import BOLT_ID, encode_verdict
from bolt_inspection.core.model.engine import ENGINE_CHOICES
from bolt_inspection.core.vision.drift import (
    DRIFT_POLICIES,
    DriftBands,
    DriftGuard,
    DriftMonitor,
)
from bolt_inspection.core.vision.drift import load_reference as load_drift_reference
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.image_conv import bgr_to_image, image_to_bgr
from bolt_inspection.nodes.lifecycle_util import (
    declare,
    exit_main,
    key_values,
    ns_to_stamp,
    publish_diagnostics,
    stamp_to_ns,
)
from bolt_inspection.nodes.verdict_msg import verdict_msg

TRIGGER_QOS = topics.TRIGGER_QOS
VERDICT_QOS = topics.VERDICT_QOS
IMAGE_RELIABILITY = {'reliable': ReliabilityPolicy.RELIABLE,
                     'best_effort': ReliabilityPolicy.BEST_EFFORT}
# Bolts whose mosaic waits for the image thread; a newer bolt pushes out the oldest.
IMAGE_QUEUE = 2
# A trigger stamp further in the past than this is a replayed one: latency is then measured from
# the trigger's arrival here instead.
_MAX_STAMP_AGE_S = 60.0


def default_inspector_factory(model: str, camera_config: str, engine: str = 'auto'):
    """Load the Inspector for ``model`` (imported here: TensorFlow loads only on configure)."""
    from bolt_inspection.core.line.inspector import Inspector
    cam_cfg = None
    if camera_config:
        from bolt_inspection.core.vision.roi import load_camera_config
        cam_cfg = load_camera_config(camera_config)
    return Inspector.from_artifact(model, camera_config=cam_cfg, engine=engine)


@dataclass
class _Job:
    bundle: Bundle
    stamp_ns: int


@dataclass
class _ImageJob:
    bundle: Bundle
    inspection: object


def build_verdict_msg(bolt_id: str, verdict, *, cams, stamp_ns: int, latency_ms: float,
                      threshold: float, model_id: str):
    """Build the /inspection/verdict message of one bolt with the one encoder (core.line.verdict).

    Args:
        verdict: The fused :class:`bolt_inspection.core.line.fusion.BoltVerdict`.

    Raises:
        ValueError: ``bolt_id`` is not decimal (the trigger callback refuses such bolts), or an
            OK that its views contradict.
    """
    return verdict_msg(encode_verdict(
        bolt_id, verdict, cams=cams, stamp_ns=stamp_ns, latency_ms=latency_ms,
        threshold=threshold, model_id=model_id))


class ClassifierNode(LifecycleNode):
    """Joins camera views per bolt, runs the Inspector in a worker, publishes verdicts."""

    def __init__(self, node_name: str = 'classifier', *, context=None, parameter_overrides=None,
                 inspector_factory: Callable[[str, str], object] | None = None, **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        p = self._params = {}
        p['model'] = declare(self, 'model', '', 'Model artifact directory (model.keras + '
                             'metadata.json); read on configure')
        p['camera_config'] = declare(self, 'camera_config', '', "cameras.yaml with ROI boxes; "
                                     "'' = the artifact's own", read_only=True)
        p['cams'] = declare(self, 'cams', [0, 1, 2, 3], 'Camera indices every bolt needs',
                            read_only=True)
        p['camera_topic'] = declare(self, 'camera_topic', '/cam{}/image_raw', 'Camera topic '
                                    'pattern; {} = camera index', read_only=True)
        p['trigger_topic'] = declare(self, 'trigger_topic', '/line/trigger', 'Trigger topic',
                                     read_only=True)
        p['view_timeout_s'] = declare(self, 'view_timeout_s', 0.8, 'A view later than this '
                                      'after its trigger makes the bolt NG (missing view)',
                                      float_range=(0.01, 30.0))
        p['queue_size'] = declare(self, 'queue_size', 4, 'Bolts waiting for inference; beyond '
                                  "that a bolt is NG 'overloaded'", int_range=(1, 256),
                                  read_only=True)
        p['max_pending'] = declare(self, 'max_pending', 64, 'Bolts waiting for views at once',
                                   int_range=(1, 4096), read_only=True)
        p['frame_size'] = declare(self, 'frame_size', [0, 0], 'Expected frame [width, height];'
                                  ' [0, 0] accepts any size', read_only=True)
        p['publish_gradcam'] = declare(self, 'publish_gradcam', True, 'Publish the 2x2 '
                                       'Grad-CAM mosaic on /inspection/gradcam')
        p['publish_heatmaps'] = declare(self, 'publish_heatmaps', False, 'Publish per-view '
                                        'overlays on /inspection/heatmap/camN')
        p['image_reliability'] = declare(
            self, 'image_reliability', 'reliable', 'QoS reliability of the camera '
            "subscriptions: 'reliable' (every frame, also between processes) or 'best_effort' "
            '(for a third-party camera driver that publishes sensor-data QoS, which a reliable '
            'subscription does not match)', read_only=True, constraints='reliable | best_effort')
        p['diagnostics_period_s'] = declare(self, 'diagnostics_period_s', 1.0, 'Period of '
                                            '/diagnostics', float_range=(0.1, 60.0),
                                            read_only=True)
        p['drift_policy'] = declare(
            self, 'drift_policy', 'reject', 'A camera whose images left their training band '
            "(core.vision.drift; needs the artifact's drift_reference.npz): 'reject' its bolts "
            "(fail-safe NG), 'stop' the line as well, 'warn' on /diagnostics only, or 'off'",
            read_only=True, constraints='reject | stop | warn | off')
        p['drift_window'] = declare(self, 'drift_window', 8, 'Bolts whose image statistics '
                                    'are combined (median) before judging drift',
                                    int_range=(1, 1000), read_only=True)
        p['drift_warn_z'] = declare(self, 'drift_warn_z', 5.0, 'Drift WARN: robust z of '
                                    'exposure, contrast, colour or focus',
                                    float_range=(0.5, 1000.0), read_only=True)
        p['drift_error_z'] = declare(self, 'drift_error_z', 8.0, 'Drift ERROR (policy applies)',
                                     float_range=(0.5, 1000.0), read_only=True)
        p['drift_warn_shift'] = declare(self, 'drift_warn_shift', 0.01, 'Drift WARN: scene '
                                        'shift, fraction of the frame',
                                        float_range=(0.001, 1.0), read_only=True)
        p['drift_error_shift'] = declare(self, 'drift_error_shift', 0.015, 'Drift ERROR: scene '
                                         'shift, fraction of the frame',
                                         float_range=(0.001, 1.0), read_only=True)
        p['stall_s'] = declare(self, 'stall_s', 5.0, 'The worker busy on one bolt for longer '
                               'is stalled: no more signs of life on /inspection/alive, so '
                               'the PLC bridge stops the heartbeat', float_range=(0.5, 600.0),
                               read_only=True)
        p['engine'] = declare(
            self, 'engine', 'auto', "How the network runs: 'auto' (the fastest engine of the "
            "model's export that matched the TensorFlow reference, else 'tf'), 'tf' (the "
            "reference), 'openvino-int8', 'openvino-bf16' or 'openvino-f32'; a missing or "
            "stale export falls back to 'tf' with a warning", read_only=True,
            constraints=' | '.join(ENGINE_CHOICES))
        # Injected factories (tests) keep their (model, camera_config) signature.
        self._factory = inspector_factory or functools.partial(default_inspector_factory,
                                                               engine=p['engine'])
        self.cams = tuple(int(c) for c in p['cams'])
        size = [int(v) for v in p['frame_size']]
        self.frame_size = tuple(size) if len(size) == 2 and min(size) > 0 else None
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.inspector = None
        self.drift = DriftGuard(None, 'off')
        self.joiner: ViewJoiner | None = None
        self.latency = LatencyStats()
        # Where the time goes: trigger -> last view joined, and the Inspector's own work.
        self.join_wait = LatencyStats()
        self.inspect_time = LatencyStats()
        self.counts = {'verdicts': 0, 'ok': 0, 'ng': 0, 'overloaded': 0, 'errors': 0,
                       'timed_out': 0, 'bad_triggers': 0, 'drift_rejects': 0}
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=p['queue_size'])
        self._worker: threading.Thread | None = None
        self._busy_since: float | None = None   # the worker's current bolt started then
        # Mosaic/overlay rendering, off the inference worker (see the module docstring).
        self._images: collections.deque[_ImageJob] = collections.deque(maxlen=IMAGE_QUEUE)
        self._images_cv = threading.Condition()
        self._images_stop = False
        self._image_worker: threading.Thread | None = None
        self.images_dropped = 0
        self._active = False
        self._subs = []
        self._view_subs = {}     # cam -> its image subscription, while active
        self._own_timers = []
        self._pubs = {}
        self._input_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult
        for param in params:
            if param.name == 'view_timeout_s' and self.joiner is not None:
                self.joiner.timeout_s = float(param.value)
            if param.name in ('publish_gradcam', 'publish_heatmaps', 'model', 'view_timeout_s'):
                self._params[param.name] = param.value
            if param.name == 'publish_heatmaps' and param.value and self._pubs:
                self._create_heatmap_publishers()
        return SetParametersResult(successful=True)

    def _drift_guard(self, model: str) -> DriftGuard:
        """The drift monitor of this model (core.vision.drift), or an inactive one, said why."""
        p = self._params
        policy = p['drift_policy']
        if policy == 'off':
            return DriftGuard(None, 'off')
        reference = load_drift_reference(model)
        boxes = getattr(self.inspector, 'boxes', {})
        frame = getattr(self.inspector, 'frame_size', None)
        why = ''
        if reference is None:
            why = (f'{model} has no drift reference (bolt-inspection drift-reference --model '
                   'M --data D adds one)')
        elif reference.frame_size and frame and tuple(reference.frame_size) != tuple(frame):
            why = (f'drift reference is for {reference.frame_size[0]}x'
                   f'{reference.frame_size[1]} frames, the model for {frame[0]}x{frame[1]}')
        if why:
            self.get_logger().warning(f'drift monitoring off: {why}')
            return DriftGuard(None, policy)
        bands = DriftBands(window=p['drift_window'], warn_z=p['drift_warn_z'],
                           error_z=p['drift_error_z'], warn_shift=p['drift_warn_shift'],
                           error_shift=p['drift_error_shift'])
        self.get_logger().info(f'drift monitoring: policy {policy}, window {bands.window} bolts')
        return DriftGuard(DriftMonitor(reference, boxes, bands), policy)

    def _create_heatmap_publishers(self) -> None:
        """/inspection/heatmap/camN, only once someone turns ``publish_heatmaps`` on."""
        for cam in self.cams:
            if f'heatmap{cam}' not in self._pubs:
                self._pubs[f'heatmap{cam}'] = self.create_publisher(
                    Image, topics.HEATMAP_PATTERN.format(cam), topics.PREVIEW_QOS)

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._params['image_reliability'] not in IMAGE_RELIABILITY:
            self.get_logger().error(f"image_reliability {self._params['image_reliability']!r}: "
                                    f"expected {' or '.join(IMAGE_RELIABILITY)}")
            return TransitionCallbackReturn.FAILURE
        if self._params['drift_policy'] not in DRIFT_POLICIES:
            self.get_logger().error(f"drift_policy {self._params['drift_policy']!r}: expected "
                                    f"{' | '.join(DRIFT_POLICIES)}")
            return TransitionCallbackReturn.FAILURE
        if self._params['engine'] not in ENGINE_CHOICES:
            self.get_logger().error(f"engine {self._params['engine']!r}: expected one of "
                                    f"{', '.join(ENGINE_CHOICES)}")
            return TransitionCallbackReturn.FAILURE
        model = self._params['model']
        if not model:
            self.get_logger().error('no model: set the "model" parameter to an artifact '
                                    'directory (bolt-inspection train --out DIR)')
            return TransitionCallbackReturn.FAILURE
        try:
            self.inspector = self._factory(model, self._params['camera_config'])
        except BoltInspectionError as exc:
            where = '' if model in str(exc) else f' {model}'
            self.get_logger().error(f'cannot load model{where}: {exc}')
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - any load failure must leave us unconfigured
            first = str(exc).splitlines()[0] if str(exc) else ''
            self.get_logger().error(f'cannot load model {model}: {type(exc).__name__}: {first}')
            return TransitionCallbackReturn.FAILURE
        model_cams = tuple(getattr(self.inspector, 'cams', self.cams))
        if set(model_cams) != set(self.cams):
            # Every bolt would be NG ('missing view' or 'no ROI box'): refuse, say why.
            self.get_logger().error(f"cams {list(self.cams)} do not match the model's cameras "
                                    f'{sorted(model_cams)} ({model})')
            self.inspector = None
            return TransitionCallbackReturn.FAILURE
        warm_up = getattr(self.inspector, 'warm_up', None)
        if warm_up is not None:
            # The first forward pass traces the graph; do it now, not on the first bolt.
            try:
                self.get_logger().info(f'model warm-up {warm_up():.0f} ms')
            except Exception as exc:  # noqa: BLE001 - a model that cannot run is not loaded
                self.get_logger().error(f'model {model} cannot run: {type(exc).__name__}: '
                                        f'{str(exc).splitlines()[0] if str(exc) else ""}')
                self.inspector = None
                return TransitionCallbackReturn.FAILURE
        try:
            self.drift = self._drift_guard(model)
        except (BoltInspectionError, ValueError) as exc:
            self.get_logger().error(f'drift monitoring: {exc}')
            self.inspector = None
            return TransitionCallbackReturn.FAILURE
        self.joiner = ViewJoiner(self.cams, self._params['view_timeout_s'],
                                 max_pending=self._params['max_pending'])
        self._pubs = {
            'verdict': self.create_lifecycle_publisher(topics.VERDICT_TYPE, topics.VERDICT,
                                                       VERDICT_QOS),
            'gradcam': self.create_lifecycle_publisher(Image, topics.GRADCAM,
                                                       topics.PREVIEW_QOS),
            'diagnostics': self.create_lifecycle_publisher(DiagnosticArray, topics.DIAGNOSTICS,
                                                           topics.DIAGNOSTICS_QOS),
            'alive': self.create_lifecycle_publisher(Header, topics.ALIVE, topics.ALIVE_QOS),
        }
        if self._params['publish_heatmaps']:
            self._create_heatmap_publishers()
        for warning in getattr(self.inspector, 'engine_warnings', ()):
            self.get_logger().warning(warning)
        self.get_logger().info(f'model {self.inspector.model_id} (threshold '
                               f'{self.inspector.threshold:.3f}), cameras {list(self.cams)}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._active = True
        self._worker = threading.Thread(target=self._work, name='classifier-worker',
                                        daemon=True)
        self._worker.start()
        with self._images_cv:
            self._images.clear()
            self._images_stop = False
        self._image_worker = threading.Thread(target=self._image_work, name='classifier-images',
                                              daemon=True)
        self._image_worker.start()
        p = self._params
        self._subs.append(self.create_subscription(Header, p['trigger_topic'], self._on_trigger,
                                                   TRIGGER_QOS,
                                                   callback_group=self._input_group))
        image_qos = QoSProfile(history=topics.IMAGE_QOS.history, depth=topics.IMAGE_QOS.depth,
                               reliability=IMAGE_RELIABILITY[p['image_reliability']])
        for cam in self.cams:
            self._view_subs[cam] = self.create_subscription(
                Image, topics.camera_topic(cam, p['camera_topic']), self._image_callback(cam),
                image_qos, callback_group=self._input_group)
            self._subs.append(self._view_subs[cam])
        period = min(0.05, p['view_timeout_s'] / 10)
        self._own_timers.append(self.create_timer(period, self._on_expire_timer,
                                              callback_group=self._timer_group))
        self._own_timers.append(self.create_timer(p['diagnostics_period_s'],
                                              self._publish_diagnostics,
                                              callback_group=self._timer_group))
        self._own_timers.append(self.create_timer(topics.ALIVE_PERIOD_S, self._publish_alive,
                                              callback_group=self._timer_group))
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop('classifier deactivated')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop('classifier cleaned up')
        for name, pub in self._pubs.items():
            if name.startswith('heatmap'):
                self.destroy_publisher(pub)
            else:
                self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self.inspector = None
        self.joiner = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop('classifier shut down')
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        # Destroyed while active (no deactivate/shutdown transition, e.g. a test tearing down):
        # still answer the bolts in flight and join both threads instead of leaking them.
        try:
            self._stop('classifier shut down')
        except Exception as exc:  # noqa: BLE001 - destroying must go on (context may be gone)
            self.get_logger().warning(f'stopping the classifier on destroy: '
                                      f'{type(exc).__name__}: {exc}')
        return super().destroy_node()

    def _stop(self, reason: str) -> None:
        """Stop inputs and the worker; every bolt already triggered still gets its verdict."""
        if not self._active:
            return
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._own_timers:
            self.destroy_timer(timer)
        self._subs, self._own_timers, self._view_subs = [], [], {}
        with self._lock:
            self._active = False
        # The worker finishes the bolts already queued (they have all their views), then exits.
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        # Then the image thread: it renders what is queued (at most IMAGE_QUEUE mosaics) while
        # the publishers are still active, and exits; nothing can queue more now.
        with self._images_cv:
            self._images_stop = True
            self._images_cv.notify_all()
        if self._image_worker is not None:
            self._image_worker.join(timeout=10.0)
            self._image_worker = None
        with self._lock:
            leftovers = self.joiner.flush(time.monotonic()) if self.joiner else []
        # A callback that was running while we stopped may have queued a bolt after the worker's
        # stop sentinel: answer it too, so no triggered bolt goes without a verdict.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                leftovers.append(job.bundle)
        for bundle in leftovers:
            self._publish_failure(bundle, reason)

    # -- inputs ------------------------------------------------------------------------------
    def _on_trigger(self, msg: Header) -> None:
        if not BOLT_ID.fullmatch(msg.frame_id):
            # No verdict could name this bolt; the PLC rejects a bolt without one (fail-safe).
            self.counts['bad_triggers'] += 1
            self.get_logger().warning(
                f'trigger dropped: frame_id must be the decimal bolt id, got '
                f'{msg.frame_id[:40]!r} ({self.counts["bad_triggers"]} so far)',
                throttle_duration_sec=5.0)
            return
        with self._lock:
            if self.joiner is None or not self._active:
                return
            bundles = self.joiner.add_trigger(stamp_to_ns(msg.stamp), msg.frame_id,
                                              time.monotonic())
        self._dispatch(bundles)

    def _image_callback(self, cam: int):
        def callback(msg: Image) -> None:
            image, failure = None, None
            try:
                image = image_to_bgr(msg, self.frame_size)
            except BoltInspectionError as exc:
                failure = str(exc)
            if image is not None and self.drift.active:
                self.drift.observe(cam, image)   # here, in parallel: not on the worker
            with self._lock:
                if self.joiner is None or not self._active:
                    return
                bundles = self.joiner.add_view(stamp_to_ns(msg.header.stamp), cam,
                                               time.monotonic(), image=image, failure=failure)
            self._dispatch(bundles)
        return callback

    def _on_expire_timer(self) -> None:
        with self._lock:
            if self.joiner is None:
                return
            bundles = self.joiner.expire(time.monotonic())
        self.counts['timed_out'] += len(bundles)
        self._dispatch(bundles)

    def _dispatch(self, bundles: list[Bundle]) -> None:
        for bundle in bundles:
            try:
                self._queue.put_nowait(_Job(bundle, bundle.stamp))
            except queue.Full:
                self.counts['overloaded'] += 1
                self._publish_failure(bundle, 'overloaded')

    # -- inference ---------------------------------------------------------------------------
    def working(self) -> bool:
        """The worker runs, is not stuck on one bolt for longer than ``stall_s``, and no camera
        drifted under ``drift_policy: stop``."""
        worker, busy = self._worker, self._busy_since
        if worker is None or not worker.is_alive() or self.drift.stop_line():
            return False
        return busy is None or time.monotonic() - busy <= self._params['stall_s']

    def unheard_cameras(self) -> list[int]:
        """Cameras whose image topic has no matched publisher yet (DDS discovery between
        processes takes a moment, and a camera process may be gone)."""
        return [cam for cam, sub in list(self._view_subs.items())
                if sub.get_publisher_count() == 0]

    def _publish_alive(self) -> None:
        # A sign of life only while this stage can inspect: the PLC heartbeat depends on it.
        # That includes hearing every camera: the bridge does not start the conveyor until
        # it does, so the first bolts after Start are not rejected for views still in discovery.
        pub = self._pubs.get('alive')
        if pub is None or not self._active or not self.working():
            return
        unheard = self.unheard_cameras()
        if unheard:
            self.get_logger().warning(
                'no publisher on ' + ', '.join(topics.camera_topic(c, self._params[
                    'camera_topic']) for c in unheard) + ' yet: not ready to inspect',
                throttle_duration_sec=5.0)
            return
        pub.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id=self.get_name()))

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._busy_since = time.monotonic()
            try:
                self._process(job.bundle)
            except Exception as exc:  # noqa: BLE001 - a verdict must go out whatever happened
                self.get_logger().error(f'bolt {job.bundle.bolt_id}: {type(exc).__name__}: '
                                        f'{exc}')
                self._publish_failure(job.bundle, f'internal error: {type(exc).__name__}')
            finally:
                self._busy_since = None

    def _process(self, bundle: Bundle) -> None:
        inspector = self.inspector
        views = {cam: bundle.views.get(cam) for cam in self.cams}
        inspection = None
        try:
            self.join_wait.add((bundle.completed_at - bundle.triggered_at) * 1000.0)
            start = time.perf_counter()
            inspection = inspector.inspect(views, dict(bundle.failures))
            self.inspect_time.add((time.perf_counter() - start) * 1000.0)
            # A camera out of its training band: never pass this bolt on a blind model.
            verdict = with_reasons(inspection.verdict, self.drift.bolt_reasons())
            if verdict is not inspection.verdict:
                self.counts['drift_rejects'] += 1
        except BoltInspectionError as exc:
            verdict = fuse({}, inspector.threshold, bundle.missing, bundle.failures,
                           extra_reasons=[str(exc)])
            self.counts['errors'] += 1
        except Exception as exc:  # noqa: BLE001 - a broken model gives NG, not a dead node
            self.counts['errors'] += 1
            self.get_logger().error(f'bolt {bundle.bolt_id}: inference failed: '
                                    f'{type(exc).__name__}: {exc}', throttle_duration_sec=5.0)
            verdict = fuse({}, inspector.threshold, bundle.missing, bundle.failures,
                           extra_reasons=[f'inference error: {type(exc).__name__}'])
        self._publish_verdict(bundle, verdict)
        if inspection is not None and (self._params['publish_gradcam']
                                       or self._params['publish_heatmaps']):
            self._queue_images(bundle, inspection)

    def _queue_images(self, bundle: Bundle, inspection) -> None:
        """Hand a bolt's pictures to the image thread; when it is behind, drop the oldest."""
        with self._images_cv:
            if len(self._images) == self._images.maxlen:
                self.images_dropped += 1
            self._images.append(_ImageJob(bundle, inspection))
            self._images_cv.notify()

    def _image_work(self) -> None:
        while True:
            with self._images_cv:
                while not self._images and not self._images_stop:
                    self._images_cv.wait()
                if not self._images:
                    return
                job = self._images.popleft()
            self._publish_images(job.bundle, job.inspection)

    def _publish_failure(self, bundle: Bundle, reason: str) -> None:
        threshold = self.inspector.threshold if self.inspector is not None else float('nan')
        # Only the views that really are missing are reported as such; the others were fine.
        verdict = fuse({}, threshold, bundle.missing, bundle.failures, extra_reasons=[reason])
        self._publish_verdict(bundle, verdict)

    def latency_ms(self, bundle: Bundle) -> float:
        """Trigger stamp -> now on this node's clock; from the trigger's arrival for replays."""
        now_ns = self.get_clock().now().nanoseconds
        age_s = (now_ns - bundle.stamp) / 1e9
        if 0.0 <= age_s <= _MAX_STAMP_AGE_S:
            return age_s * 1000.0
        return (time.monotonic() - bundle.triggered_at) * 1000.0

    def _publish_verdict(self, bundle: Bundle, verdict) -> None:
        latency_ms = self.latency_ms(bundle)
        inspector = self.inspector
        msg = build_verdict_msg(
            bundle.bolt_id, verdict, cams=self.cams, stamp_ns=bundle.stamp,
            latency_ms=latency_ms,
            threshold=inspector.threshold if inspector is not None else math.nan,
            model_id=inspector.model_id if inspector is not None else '')
        pub = self._pubs.get('verdict')
        if pub is not None and self.context.ok():
            pub.publish(msg)
        self.latency.add(latency_ms)
        self.counts['verdicts'] += 1
        self.counts['ok' if verdict.ok else 'ng'] += 1

    def _publish_images(self, bundle: Bundle, inspection) -> None:
        stamp = ns_to_stamp(bundle.stamp)
        try:
            if self._params['publish_gradcam'] and 'gradcam' in self._pubs:
                mosaic = self.inspector.render_mosaic(inspection, bundle.bolt_id)
                self._pubs['gradcam'].publish(bgr_to_image(mosaic, stamp=stamp,
                                                           frame_id='inspection'))
            if self._params['publish_heatmaps']:
                from bolt_inspection.core.model.gradcam import overlay
                for cam, heatmap in (inspection.heatmaps or {}).items():
                    crop = (inspection.crops or {}).get(cam)
                    pub = self._pubs.get(f'heatmap{cam}')
                    if crop is None or heatmap is None or pub is None:
                        continue
                    pub.publish(bgr_to_image(overlay(crop, heatmap), stamp=stamp,
                                             frame_id=f'cam{cam}_optical_frame'))
        except Exception as exc:  # noqa: BLE001 - images are for people; the verdict went out
            self.get_logger().warning(f'bolt {bundle.bolt_id}: cannot render Grad-CAM: {exc}',
                                      throttle_duration_sec=5.0)

    # -- health ------------------------------------------------------------------------------
    def _engine_name(self) -> str:
        engine = getattr(self.inspector, 'engine', None)
        return getattr(engine, 'name', '') if engine is not None else ''

    def _publish_diagnostics(self) -> None:
        pub = self._pubs.get('diagnostics')
        if pub is None:
            return
        lat = self.latency.summary()
        joiner = self.joiner
        values = dict(self.counts)
        values.update({'latency_p50_ms': lat['p50_ms'], 'latency_p99_ms': lat['p99_ms'],
                       'latency_mean_ms': lat['mean_ms'], 'queue_depth': self._queue.qsize(),
                       'join_wait_p50_ms': self.join_wait.p50(),
                       'inspect_p50_ms': self.inspect_time.p50(),
                       'pending_bolts': joiner.pending if joiner else 0,
                       'mosaics_dropped': self.images_dropped,
                       'model_id': self.inspector.model_id if self.inspector else '',
                       'engine': self._engine_name(),
                       'engine_fallback': '; '.join(getattr(self.inspector, 'engine_warnings',
                                                            ()))})
        if joiner is not None:
            values.update({'stale_views': joiner.stats.stale,
                           'duplicate_views': joiner.stats.duplicate_views})
        drift_level, drift_message = self.drift.summary()
        values['drift'] = drift_message
        values['drift_policy'] = self.drift.policy if self.drift.active else 'off'
        for cam, state in sorted(self.drift.states().items()):
            values[f'drift_cam{cam}'] = state.level
            values.update({f'drift_cam{cam}.{k}': round(v, 3) for k, v in state.scores.items()})
        unheard = self.unheard_cameras()
        values['cameras_unheard'] = ' '.join(f'cam{c}' for c in unheard)
        degraded = self.counts['overloaded'] or self.counts['errors'] or unheard
        level = DiagnosticStatus.WARN if degraded or drift_level == 'warn' else DiagnosticStatus.OK
        message = (f"{self.counts['verdicts']} bolts, p99 {lat['p99_ms']:.0f} ms"
                   if self.counts['verdicts'] else 'waiting for bolts')
        if unheard:
            message = f"not hearing {values['cameras_unheard']}; {message}"
        if drift_level != 'ok':
            # The operator page shows this: which camera drifted, how, and what the line does.
            action = {'reject': 'its bolts are rejected', 'stop': 'the line is stopped',
                      'warn': 'warning only'}[self.drift.policy]
            message = f'DRIFT {drift_message} ({action}); {message}'
            if drift_level == 'error':
                level = DiagnosticStatus.ERROR
        status = DiagnosticStatus(level=level, name=f'{self.get_name()}: classifier',
                                  hardware_id='classifier', message=message,
                                  values=key_values(values))
        publish_diagnostics(self, pub, status)


def main(args=None) -> None:
    exit_main(ClassifierNode, args)


if __name__ == '__main__':
    main()
