"""Classifier node: joins the views of each triggered bolt and publishes its verdict.

Inputs: /line/trigger (std_msgs/Header: stamp = join key, frame_id = bolt id) and one
sensor_msgs/Image per camera with header.stamp = the trigger stamp. Subscription callbacks only
decode the messages and hand them to the pipeline
(:class:`bolt_inspection.core.line.pipeline.InspectionPipeline`): it joins the views of each bolt,
runs the model on a worker thread (the views of one bolt in one batch, Grad-CAM from the same
pass) and hands the verdict back for publishing; the Grad-CAM mosaic (and per-view overlays)
are rendered and published afterwards by a second thread that drops the oldest picture when it
falls behind, so pictures for people never delay the next bolt's verdict. Verdicts are never
dropped.

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

import functools
import math
import time
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from bolt_inspection.core.errors import BoltInspectionError, ConfigError
from bolt_inspection.core.line.join import Bundle, ViewJoiner
from bolt_inspection.core.line.latency import LatencyStats
from bolt_inspection.core.line.pipeline import (
    InspectionPipeline,
    PipelineOutput,
)
from bolt_inspection.core.line.verdict import BOLT_ID, encode_verdict
from bolt_inspection.core.model.engine import ENGINE_CHOICES
from bolt_inspection.core.vision.drift import (
    DriftGuard,
    DriftMonitor,
)
from bolt_inspection.core.vision.drift import load_reference as load_drift_reference
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.classifier_params import DYNAMIC, ClassifierParams
from bolt_inspection.nodes.image_conv import bgr_to_image, image_to_bgr
from bolt_inspection.nodes.lifecycle_util import (
    declare,
    exit_main,
    key_values,
    live_stamp_age_s,
    ns_to_stamp,
    publish_diagnostics,
    stamp_to_ns,
)
from bolt_inspection.nodes.verdict_msg import verdict_msg

TRIGGER_QOS = topics.TRIGGER_QOS
VERDICT_QOS = topics.VERDICT_QOS
IMAGE_RELIABILITY = {'reliable': ReliabilityPolicy.RELIABLE,
                     'best_effort': ReliabilityPolicy.BEST_EFFORT}
# A live trigger heard later than this is logged: the view timeout counts from its arrival here.
SLOW_TRIGGER_S = 0.2


def default_inspector_factory(model: str, camera_config: str, engine: str = 'auto'):
    """Load the Inspector for ``model`` (imported here: TensorFlow loads only on configure)."""
    from bolt_inspection.core.line.inspector import Inspector
    cam_cfg = None
    if camera_config:
        from bolt_inspection.core.vision.roi import load_camera_config
        cam_cfg = load_camera_config(camera_config)
    return Inspector.from_artifact(model, camera_config=cam_cfg, engine=engine)


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
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.params: ClassifierParams | None = None   # validated at configure
        self.inspector = None
        self.drift = DriftGuard(None, 'off')
        self.pipeline: InspectionPipeline | None = None   # from configure on
        self.bad_triggers = 0
        self._subs = []
        self._view_subs = {}     # cam -> its image subscription, while active
        self._own_timers = []
        self._pubs = {}
        self._input_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()

    @property
    def cams(self) -> tuple[int, ...]:
        """The cameras every bolt needs (the validated ``cams``; empty before configure)."""
        return self.params.cams if self.params is not None else ()

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """The expected frame size; None accepts any (and before configure)."""
        return self.params.frame_size if self.params is not None else None

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult
        changes = {p.name: p.value for p in params if p.name in DYNAMIC}
        if self.params is not None and changes:
            try:
                updated = self.params.with_values(**changes)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.params = updated
            if 'view_timeout_s' in changes and self.pipeline is not None:
                self.pipeline.set_view_timeout(float(changes['view_timeout_s']))
            if changes.get('publish_heatmaps') and self._pubs:
                self._create_heatmap_publishers()
        self._params.update(changes)
        return SetParametersResult(successful=True)

    def _drift_guard(self, model: str) -> DriftGuard:
        """The drift monitor of this model (core.vision.drift), or an inactive one, said why."""
        policy = self.params.drift_policy
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
        bands = self.params.drift_bands()
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
        try:
            self.params = ClassifierParams.from_mapping(self._params)
        except ConfigError as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        model = self.params.model
        try:
            self.inspector = self._factory(model, self.params.camera_config)
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
        self.pipeline = InspectionPipeline(self.inspector, self.params.pipeline_settings(),
                                           _Output(self), self.drift)
        self._pubs = {
            'verdict': self.create_lifecycle_publisher(topics.VERDICT_TYPE, topics.VERDICT,
                                                       VERDICT_QOS),
            'gradcam': self.create_lifecycle_publisher(Image, topics.GRADCAM,
                                                       topics.PREVIEW_QOS),
            'diagnostics': self.create_lifecycle_publisher(DiagnosticArray, topics.DIAGNOSTICS,
                                                           topics.DIAGNOSTICS_QOS),
            'alive': self.create_lifecycle_publisher(Header, topics.ALIVE, topics.ALIVE_QOS),
        }
        if self.params.publish_heatmaps:
            self._create_heatmap_publishers()
        for warning in getattr(self.inspector, 'engine_warnings', ()):
            self.get_logger().warning(warning)
        if getattr(self.inspector, 'engine_note', ''):
            self.get_logger().info(self.inspector.engine_note)
        self.get_logger().info(f'model {self.inspector.model_id} (threshold '
                               f'{self.inspector.threshold:.3f}), cameras {list(self.cams)}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self.pipeline.start()
        p = self.params
        self._subs.append(self.create_subscription(Header, p.trigger_topic, self._on_trigger,
                                                   TRIGGER_QOS,
                                                   callback_group=self._input_group))
        image_qos = QoSProfile(history=topics.IMAGE_QOS.history, depth=topics.IMAGE_QOS.depth,
                               reliability=IMAGE_RELIABILITY[p.image_reliability])
        for cam, topic in p.camera_topics().items():
            self._view_subs[cam] = self.create_subscription(
                Image, topic, self._image_callback(cam), image_qos,
                callback_group=self._input_group)
            self._subs.append(self._view_subs[cam])
        period = min(0.05, p.view_timeout_s / 10)
        self._own_timers.append(self.create_timer(period, self._on_expire_timer,
                                              callback_group=self._timer_group))
        self._own_timers.append(self.create_timer(p.diagnostics_period_s,
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
        """Stop inputs and the pipeline; every bolt already triggered still gets its verdict."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._own_timers:
            self.destroy_timer(timer)
        self._subs, self._own_timers, self._view_subs = [], [], {}
        if self.pipeline is not None:
            self.pipeline.stop(reason)

    # -- inputs ------------------------------------------------------------------------------
    def _on_trigger(self, msg: Header) -> None:
        if not BOLT_ID.fullmatch(msg.frame_id):
            # No verdict could name this bolt; the PLC rejects a bolt without one (fail-safe).
            self.bad_triggers += 1
            self.get_logger().warning(
                f'trigger dropped: frame_id must be the decimal bolt id, got '
                f'{msg.frame_id[:40]!r} ({self.bad_triggers} so far)',
                throttle_duration_sec=5.0)
            return
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.trigger(stamp_to_ns(msg.stamp), msg.frame_id, time.monotonic())
        heard_s = live_stamp_age_s(self, stamp_to_ns(msg.stamp))
        if heard_s is not None and heard_s > SLOW_TRIGGER_S:
            self.get_logger().warning(f'bolt {msg.frame_id}: trigger heard {heard_s * 1e3:.0f} '
                                      f'ms after its stamp')

    def _image_callback(self, cam: int):
        def callback(msg: Image) -> None:
            image, failure = None, None
            try:
                image = image_to_bgr(msg, self.frame_size)
            except BoltInspectionError as exc:
                failure = str(exc)
            pipeline = self.pipeline
            if pipeline is not None:
                pipeline.view(stamp_to_ns(msg.header.stamp), cam, time.monotonic(),
                              image=image, failure=failure)
        return callback

    def _on_expire_timer(self) -> None:
        if self.pipeline is not None:
            self.pipeline.expire(time.monotonic())

    # -- what the pipeline counts and measures -----------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Verdicts, OK / NG, overloaded, errors, timed out, drift rejects, bad triggers (a
        consistent copy)."""
        counts = self.pipeline.snapshot() if self.pipeline is not None else {}
        keys = ('verdicts', 'ok', 'ng', 'overloaded', 'errors', 'timed_out', 'drift_rejects')
        out = {k: counts.get(k, 0) for k in keys}
        out['bad_triggers'] = self.bad_triggers
        return out

    @property
    def latency(self) -> LatencyStats:
        """Trigger -> verdict published, per bolt."""
        return self.pipeline.latency if self.pipeline is not None else LatencyStats()

    @property
    def join_wait(self) -> LatencyStats:
        """Trigger -> last view joined, per bolt."""
        return self.pipeline.join_wait if self.pipeline is not None else LatencyStats()

    @property
    def inspect_time(self) -> LatencyStats:
        """The Inspector's own work (ROI, model, Grad-CAM), per bolt."""
        return self.pipeline.inspect_time if self.pipeline is not None else LatencyStats()

    @property
    def joiner(self) -> ViewJoiner | None:
        return self.pipeline.joiner if self.pipeline is not None else None

    @property
    def images_dropped(self) -> int:
        """Pictures the image thread dropped because it fell behind."""
        return self.pipeline.images_dropped if self.pipeline is not None else 0

    # -- health ------------------------------------------------------------------------------
    def working(self) -> bool:
        """The pipeline's worker runs, is not stuck on one bolt for longer than ``stall_s``,
        and no camera drifted under ``drift_policy: stop``."""
        return self.pipeline is not None and self.pipeline.working()

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
        if pub is None or self.pipeline is None or not self.pipeline.active \
                or not self.working():
            return
        unheard = self.unheard_cameras()
        if unheard:
            self.get_logger().warning(
                'no publisher on ' + ', '.join(self.params.camera_topics()[c] for c in unheard)
                + ' yet: not ready to inspect',
                throttle_duration_sec=5.0)
            return
        pub.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id=self.get_name()))

    def latency_ms(self, bundle: Bundle) -> float:
        """Trigger stamp -> now on this node's clock; from the trigger's arrival for replays."""
        age_s = live_stamp_age_s(self, bundle.stamp)
        if age_s is not None:
            return age_s * 1000.0
        return (time.monotonic() - bundle.triggered_at) * 1000.0

    def _publish_verdict(self, bundle: Bundle, verdict) -> float:
        """Publish one bolt's verdict; return its latency in ms."""
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
        return latency_ms

    def _publish_images(self, bundle: Bundle, inspection) -> None:
        stamp = ns_to_stamp(bundle.stamp)
        try:
            if self.params.publish_gradcam and 'gradcam' in self._pubs:
                mosaic = self.inspector.render_mosaic(inspection, bundle.bolt_id)
                self._pubs['gradcam'].publish(bgr_to_image(mosaic, stamp=stamp,
                                                           frame_id='inspection'))
            if self.params.publish_heatmaps:
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
        values = self.pipeline.snapshot() if self.pipeline is not None else {}
        values['bad_triggers'] = self.bad_triggers
        counts = dict(values)
        values.update({'latency_p50_ms': lat['p50_ms'], 'latency_p99_ms': lat['p99_ms'],
                       'latency_mean_ms': lat['mean_ms'],
                       'join_wait_p50_ms': self.join_wait.p50(),
                       'inspect_p50_ms': self.inspect_time.p50(),
                       'model_id': self.inspector.model_id if self.inspector else '',
                       'engine': self._engine_name(),
                       'engine_fallback': '; '.join(getattr(self.inspector, 'engine_warnings',
                                                            ()))})
        drift_level, drift_message = self.drift.summary()
        values['drift'] = drift_message
        values['drift_policy'] = self.drift.policy if self.drift.active else 'off'
        for cam, state in sorted(self.drift.states().items()):
            values[f'drift_cam{cam}'] = state.level
            values.update({f'drift_cam{cam}.{k}': round(v, 3) for k, v in state.scores.items()})
        unheard = self.unheard_cameras()
        values['cameras_unheard'] = ' '.join(f'cam{c}' for c in unheard)
        degraded = counts.get('overloaded') or counts.get('errors') or unheard
        level = DiagnosticStatus.WARN if degraded or drift_level == 'warn' else DiagnosticStatus.OK
        message = (f"{counts['verdicts']} bolts, p99 {lat['p99_ms']:.0f} ms"
                   if counts.get('verdicts') else 'waiting for bolts')
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


class _Output(PipelineOutput):
    """The pipeline's results as the node's messages."""

    def __init__(self, node: ClassifierNode) -> None:
        self.node = node

    def verdict(self, bundle: Bundle, verdict) -> float:
        return self.node._publish_verdict(bundle, verdict)

    def wants_images(self) -> bool:
        p = self.node.params
        return bool(p.publish_gradcam or p.publish_heatmaps)

    def images(self, bundle: Bundle, inspection) -> None:
        self.node._publish_images(bundle, inspection)

    def log(self, level: str, text: str) -> None:
        if not self.node.context.ok():
            return
        # (rclpy forbids one log call site with two severities, hence two calls.)
        if level == 'error':
            self.node.get_logger().error(text, throttle_duration_sec=5.0)
        else:
            self.node.get_logger().warning(text, throttle_duration_sec=5.0)


def main(args=None) -> None:
    exit_main(ClassifierNode, args)


if __name__ == '__main__':
    main()
