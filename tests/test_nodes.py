"""Camera and classifier nodes as real rclpy nodes on a private domain (fake model, no TF)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from conftest import wait_for, wait_matched  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from bolt_inspection.core.errors import ConfigError, ModelError  # noqa: E402
from bolt_inspection.core.line.fusion import fuse  # noqa: E402
from bolt_inspection.nodes import topics  # noqa: E402
from bolt_inspection.nodes.camera_node import CameraNode  # noqa: E402
from bolt_inspection.nodes.classifier_node import ClassifierNode  # noqa: E402
from bolt_inspection.nodes.executor import make_executor  # noqa: E402
from bolt_inspection.nodes.image_conv import bgr_to_image  # noqa: E402
from bolt_inspection.nodes.lifecycle_util import (  # noqa: E402
    bring_down,
    bring_up,
    ns_to_stamp,
    state_label,
)
from bolt_inspection.nodes.line_driver import LineDriver  # noqa: E402

pytestmark = pytest.mark.ros
CAMS = (0, 1, 2, 3)


class FakeInspection:
    def __init__(self, verdict, p_ng):
        self.verdict, self.p_ng = verdict, p_ng
        self.crops, self.heatmaps, self.timings_ms = {}, {}, {}


class FakeInspector:
    """Inspector-compatible: p_ng of a view = its mean grey level / 255."""

    threshold, model_id, cams = 0.5, 'fake-model', CAMS

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s

    def inspect(self, views, failures=None):
        time.sleep(self.delay_s)
        p_ng = {c: float(v.mean()) / 255 for c, v in views.items() if v is not None}
        verdict = fuse(p_ng, self.threshold, self.cams, failures or {})
        return FakeInspection(verdict, verdict.p_ng)

    def render_mosaic(self, inspection, bolt_id):
        return np.zeros((48, 64, 3), np.uint8)


class Rig:
    """Nodes + the project's executor spinning in a thread + a probe publishing frames."""

    def __init__(self, context, nodes):
        self.context = context
        self.driver = LineDriver('probe', context=context, keep_gradcam=5)
        # What the line's cameras offer (nodes/topics.py): reliable, keep-last.
        self.cam_pubs = {c: self.driver.create_publisher(Image, f'/cam{c}/image_raw',
                                                         topics.IMAGE_QOS)
                         for c in CAMS}
        self.executor = make_executor(num_threads=4, context=context)
        self.nodes = list(nodes) + [self.driver]
        for node in self.nodes:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait_matched(self, node_count=1, timeout=5.0):
        """The probe's trigger and image publishers matched by the nodes, both sides."""
        wait_matched([*self.cam_pubs.values(), self.driver.trigger_pub], self.nodes,
                     count=node_count, timeout=timeout)

    def bolt(self, bolt_id, level=10, skip=(), bad=None):
        """Trigger a bolt and publish its views (uniform grey ``level``)."""
        stamp = self.driver.trigger(bolt_id)
        for cam in CAMS:
            if cam in skip:
                continue
            msg = bgr_to_image(np.full((48, 64, 3), level, np.uint8), stamp=ns_to_stamp(stamp),
                               frame_id=f'cam{cam}_optical_frame')
            if bad and cam in bad:
                bad[cam](msg)
            self.cam_pubs[cam].publish(msg)
        time.sleep(0.05)  # a camera's pace; keep-last QoS keeps only the last few frames
        return stamp

    def wait(self, first, count, timeout_s=10.0):
        """Verdicts of bolts first..first+count-1, each exactly once.

        Another test process may share the domain id (conftest spreads ids by pid), so verdicts
        of bolts this test did not trigger are ignored; the bolt ids used here are unusual.
        """
        wanted = {str(b) for b in range(first, first + count)}
        deadline = time.monotonic() + timeout_s
        while True:
            ours = [v for v in self.driver.verdicts() if v.bolt_id in wanted]
            if len(ours) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        by_id = {v.bolt_id: v for v in ours}
        assert len(by_id) == len(ours), 'a bolt got more than one verdict'
        return by_id

    def close(self):
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()


def _classifier(context, inspector=None, **params):
    defaults = {'model': '/nonexistent/fake', 'view_timeout_s': 0.5}
    defaults.update(params)
    overrides = [Parameter(k, value=v) for k, v in defaults.items()]
    inspector = inspector or FakeInspector()
    return ClassifierNode('classifier', context=context, parameter_overrides=overrides,
                          inspector_factory=lambda model, cfg: inspector)


@pytest.fixture
def rig_factory(rclpy_context):
    rigs = []

    def make(nodes):
        rig = Rig(rclpy_context, nodes)
        rigs.append(rig)
        return rig
    yield make
    for rig in rigs:
        rig.close()


def test_classifier_one_verdict_per_bolt_with_reasons(rclpy_context, rig_factory):
    node = _classifier(rclpy_context, frame_size=[64, 48])
    assert bring_up(node)
    rig = rig_factory([node])
    rig.wait_matched()

    def wrong_encoding(msg):
        msg.encoding = '16UC1'

    def wrong_size(msg):
        msg.width, msg.height, msg.step = 32, 96, 96
    stamp = rig.bolt(8001, level=10)               # OK
    rig.bolt(8002, level=250)                      # NG by the model
    rig.bolt(8003, level=10, skip=(2,))            # camera 2 silent
    rig.bolt(8004, level=10, bad={1: wrong_encoding})
    rig.bolt(8005, level=10, bad={3: wrong_size})
    rig.bolt(8006, level=10)                       # the node is alive after all that
    verdicts = rig.wait(8001, 6)
    assert sorted(verdicts) == [str(b) for b in range(8001, 8007)]
    assert verdicts['8001'].ok and verdicts['8001'].message == 'OK'
    assert not verdicts['8002'].ok and verdicts['8002'].message == 'NG'
    assert verdicts['8003'].message == 'NG: missing view cam2'
    assert verdicts['8004'].message.startswith("NG: cam1: unsupported encoding '16UC1'")
    assert verdicts['8005'].message == 'NG: cam3: frame 32x96, expected 64x48'
    assert verdicts['8006'].ok
    # The typed verdict: the trigger stamp, every view's score and status, the model.
    from bolt_inspection.core.line.verdict import ViewStatus
    assert verdicts['8001'].verdict.stamp_ns == stamp
    ng = verdicts['8002'].verdict
    assert ng.p_ng[0] == pytest.approx(250 / 255, abs=1e-6)
    assert ng.reasons[0] == 'cam0: NG p=0.980'
    assert (ng.model_id, ng.threshold) == ('fake-model', 0.5) and 0 < ng.latency_ms < 5000
    missing = verdicts['8003'].verdict.views[2]
    assert (missing.camera, missing.status, missing.p_ng) == (2, ViewStatus.MISSING, None)
    corrupt = verdicts['8004'].verdict.views[1]
    assert corrupt.status is ViewStatus.CORRUPT
    assert corrupt.detail.startswith("unsupported encoding '16UC1'")
    assert [v.status for v in verdicts['8004'].verdict.views].count(ViewStatus.SCORED) == 3
    time.sleep(0.3)
    rig.wait(8001, 6)  # still exactly one verdict per bolt
    assert rig.driver.state.gradcam and rig.driver.state.gradcam[-1].encoding == 'bgr8'


def test_classifier_subscribes_reliable_unless_told_otherwise(rclpy_context, rig_factory):
    """A best-effort camera (a third-party driver with sensor-data QoS) does not match the
    classifier's reliable subscription; image_reliability:=best_effort lets it in."""
    node = _classifier(rclpy_context, frame_size=[64, 48])
    assert bring_up(node)
    rig = rig_factory([node])
    be_pub = rig.driver.create_publisher(Image, '/cam0/image_raw', qos_profile_sensor_data)
    rig.wait_matched()
    time.sleep(0.5)
    assert be_pub.get_subscription_count() == 0          # reliable reader, best-effort writer
    node.trigger_deactivate()
    node.trigger_cleanup()
    node.destroy_node()
    tolerant = _classifier(rclpy_context, frame_size=[64, 48], image_reliability='best_effort')
    assert bring_up(tolerant)
    rig.executor.add_node(tolerant)
    deadline = time.monotonic() + 5.0
    while be_pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert be_pub.get_subscription_count() == 1
    bogus = _classifier(rclpy_context, image_reliability='sometimes')
    assert not bring_up(bogus)                             # one log line, stays unconfigured
    bogus.destroy_node()


def test_model_that_fails_to_load_leaves_node_unconfigured(rclpy_context, capfd):
    def broken(model, cfg):
        raise ModelError(f'{model}: metadata.json missing')
    node = ClassifierNode('classifier', context=rclpy_context, inspector_factory=broken,
                          parameter_overrides=[Parameter('model', value='/tmp/nope')])
    assert not bring_up(node)
    assert state_label(node) == 'unconfigured'
    assert not bring_up(node)  # trying again fails the same way, no loop, no traceback
    node.destroy_node()
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if 'cannot load model' in line]
    assert len(lines) == 2 and '/tmp/nope: metadata.json missing' in lines[0]
    assert 'Traceback' not in err


def test_real_loader_reports_a_missing_artifact_in_one_line(rclpy_context, capfd, tmp_path):
    node = ClassifierNode('classifier', context=rclpy_context, parameter_overrides=[
        Parameter('model', value=str(tmp_path / 'no_model'))])
    assert not bring_up(node)
    node.destroy_node()
    err = capfd.readouterr().err
    assert 'Traceback' not in err
    assert len([line for line in err.splitlines() if 'cannot load model' in line]) == 1


def test_classifier_diagnostics_report_latency_and_queue(rclpy_context, rig_factory):
    from diagnostic_msgs.msg import DiagnosticArray
    node = _classifier(rclpy_context, diagnostics_period_s=0.2)
    assert bring_up(node)
    rig = rig_factory([node])
    arrays = []
    rig.driver.create_subscription(DiagnosticArray, '/diagnostics', arrays.append, 10)
    rig.wait_matched()
    rig.bolt(8301)
    rig.wait(8301, 1)
    deadline = time.monotonic() + 5
    values = {}
    while time.monotonic() < deadline:
        for array in list(arrays):
            for status in array.status:
                kv = {v.key: v.value for v in status.values}
                if status.name == 'classifier: classifier' and kv.get('verdicts', '0') != '0':
                    values = kv
        if values:
            break
        time.sleep(0.05)
    assert values, 'no classifier diagnostics after a verdict'
    assert float(values['latency_p99_ms']) > 0 and values['queue_depth'] == '0'
    assert values['model_id'] == 'fake-model'


def test_overload_gives_ng_overloaded_never_silence(rclpy_context, rig_factory):
    node = _classifier(rclpy_context, FakeInspector(delay_s=0.3), queue_size=1)
    assert bring_up(node)
    rig = rig_factory([node])
    rig.wait_matched()
    for bolt in range(8101, 8107):
        rig.bolt(bolt)
    verdicts = list(rig.wait(8101, 6).values())
    assert sorted(int(v.bolt_id) for v in verdicts) == list(range(8101, 8107))
    assert any(v.message == 'NG: overloaded' for v in verdicts), [v.message for v in verdicts]
    assert any(v.ok for v in verdicts)


class NanThresholdInspector(FakeInspector):
    """A broken artifact: its threshold is NaN, so fusion finds every view below it."""

    threshold = math.nan


def test_an_ok_the_encoder_cannot_stand_behind_goes_out_as_failsafe_ng(rclpy_context,
                                                                      rig_factory):
    node = _classifier(rclpy_context, NanThresholdInspector())
    assert bring_up(node)
    rig = rig_factory([node])
    rig.wait_matched()
    rig.bolt(8151, level=10)
    verdict = rig.wait(8151, 1)['8151']
    assert not verdict.ok and verdict.message == 'NG: internal error: ValueError'
    assert verdict.verdict.threshold is None


def test_classifier_restart_mid_run_recovers(rclpy_context, rig_factory):
    node = _classifier(rclpy_context)
    assert bring_up(node)
    rig = rig_factory([node])
    rig.wait_matched()
    rig.bolt(8201)
    assert len(rig.wait(8201, 1)) == 1
    bring_down(node)
    assert state_label(node) == 'unconfigured'
    assert bring_up(node)
    rig.wait_matched()
    for bolt in (8202, 8203):
        rig.bolt(bolt)
    verdicts = rig.wait(8201, 3)
    assert sorted(verdicts) == ['8201', '8202', '8203']
    assert all(v.ok for v in verdicts.values())


def test_camera_node_publishes_trigger_stamped_frames(rclpy_context, rig_factory, tmp_path):
    import cv2
    (tmp_path / 'images').mkdir()
    cv2.imwrite(str(tmp_path / 'images' / '000007_cam1.png'), np.full((30, 40, 3), 99, np.uint8))
    cam = CameraNode('cam1', context=rclpy_context, parameter_overrides=[
        Parameter('camera_index', value=1), Parameter('source', value='folder'),
        Parameter('folder', value=str(tmp_path))])
    assert bring_up(cam)
    rig = rig_factory([cam])
    got = []
    rig.driver.create_subscription(Image, '/cam1/image_raw', got.append,
                                   qos_profile_sensor_data)
    deadline = time.monotonic() + 5
    wait_matched([rig.driver.trigger_pub], [cam])
    stamp = rig.driver.trigger(7)
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got, 'no frame for the trigger'
    msg = got[0]
    assert msg.header.stamp == ns_to_stamp(stamp)
    assert msg.header.frame_id == 'cam1_optical_frame'
    assert (msg.width, msg.height, msg.encoding) == (40, 30, 'bgr8')
    assert msg.data[0] == 99


def test_synthetic_camera_prefetches_the_next_bolt_and_cleans_up(rclpy_context):
    from diagnostic_msgs.msg import DiagnosticStatus

    # (prefetch, prefetch_after_topic): after each verdict (default), after each frame, off.
    for prefetch, after in ((True, '/inspection/verdict'), (True, ''), (False, '')):
        cam = CameraNode('cam2', context=rclpy_context, parameter_overrides=[
            Parameter('camera_index', value=2), Parameter('size', value=[160, 120]),
            Parameter('prefetch', value=prefetch),
            Parameter('prefetch_after_topic', value=after)])
        assert bring_up(cam)
        assert cam.capture(ns_to_stamp(1), '1')     # bolt 1 was prefetched at configure
        if after:
            assert cam._verdict_sub is not None
            cam._on_verdict(DiagnosticStatus(hardware_id='1'))   # what the subscription calls
        assert cam.capture(ns_to_stamp(2), '2')
        assert cam.source.prefetch_hits == (2 if prefetch else 0)
        bring_down(cam)
        assert cam._verdict_sub is None
        cam.destroy_node()
    # Cleanup closed the source, which joined any render nobody asked for.
    assert not [t for t in threading.enumerate() if t.name.startswith('synthetic-prefetch')]


def test_late_frames_and_triggers_are_logged_with_where_the_time_went(rclpy_context, capfd):
    """A frame that leaves its camera late, or a trigger the classifier hears late, is logged:
    the classifier's view timeout would turn it into a bare 'missing view' otherwise. Replayed
    triggers (old stamps) are not 'late'."""
    from std_msgs.msg import Header
    cam = CameraNode('cam2', context=rclpy_context, parameter_overrides=[
        Parameter('camera_index', value=2), Parameter('size', value=[160, 120])])
    classifier = ClassifierNode('classifier', context=rclpy_context)
    assert bring_up(cam)
    now = cam.get_clock().now().nanoseconds
    for bolt, age_s in (('1', 0.0), ('2', 0.5), ('3', 3600.0)):
        trigger = Header(stamp=ns_to_stamp(now - int(age_s * 1e9)), frame_id=bolt)
        cam._on_trigger(trigger)
        classifier._on_trigger(trigger)
    err = capfd.readouterr().err
    assert cam.published == 3
    assert 'bolt 1:' not in err and 'bolt 3:' not in err, err
    assert '[cam2]: bolt 2: frame out 5' in err and 'trigger heard after 5' in err, err
    assert 'prefetch hits' in err
    assert '[classifier]: bolt 2: trigger heard 5' in err, err
    bring_down(cam)
    cam.destroy_node()
    classifier.destroy_node()


def test_camera_node_with_bad_source_fails_configure(rclpy_context):
    cam = CameraNode('cam0', context=rclpy_context, parameter_overrides=[
        Parameter('source', value='folder'), Parameter('folder', value='/nonexistent/dir')])
    assert not bring_up(cam)
    assert state_label(cam) == 'unconfigured'
    cam.destroy_node()


def test_camera_free_run_publishes_without_triggers(rclpy_context, rig_factory, tmp_path):
    import cv2
    cv2.imwrite(str(tmp_path / 'a.png'), np.full((30, 40, 3), 5, np.uint8))
    cam = CameraNode('cam0', context=rclpy_context, parameter_overrides=[
        Parameter('source', value='folder'), Parameter('folder', value=str(tmp_path)),
        Parameter('free_run', value=True), Parameter('rate_hz', value=20.0)])
    got = []
    rig = rig_factory([cam])
    rig.driver.create_subscription(Image, '/cam0/image_raw', got.append,
                                   qos_profile_sensor_data)
    assert bring_up(cam)
    deadline = time.monotonic() + 5
    while len(got) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(got) >= 5
    assert got[-1].header.stamp != got[0].header.stamp
    assert cam.frame_rate() > 5


def test_camera_node_device_source_and_diagnostics(rclpy_context, rig_factory, tmp_path):
    import cv2
    from diagnostic_msgs.msg import DiagnosticArray
    video = tmp_path / 'bench.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    for k in range(3):
        writer.write(np.full((48, 64, 3), 60 * k, np.uint8))
    writer.release()
    cam = CameraNode('cam3', context=rclpy_context, parameter_overrides=[
        Parameter('camera_index', value=3), Parameter('source', value='device'),
        Parameter('device', value=str(video)), Parameter('diagnostics_period_s', value=0.2)])
    assert bring_up(cam)
    rig = rig_factory([cam])
    frames, arrays = [], []
    rig.driver.create_subscription(Image, '/cam3/image_raw', frames.append,
                                   qos_profile_sensor_data)
    rig.driver.create_subscription(DiagnosticArray, '/diagnostics', arrays.append, 10)
    wait_matched([rig.driver.trigger_pub], rig.nodes)
    deadline = time.monotonic() + 5
    for bolt in range(8401, 8405):
        rig.driver.trigger(bolt)
        time.sleep(0.05)
    while (len(frames) < 4 or not arrays) and time.monotonic() < deadline:
        time.sleep(0.05)
    # One frame per trigger; the 3-frame file loops, so the 4th trigger gets frame 0 again.
    assert np.allclose([f.data[0] for f in frames[:4]], [0, 60, 120, 0], atol=6)  # MJPG
    status = next(s for a in arrays for s in a.status if s.name == 'cam3: camera')
    values = {v.key: v.value for v in status.values}
    assert values['source'] == 'device' and values['state'] == 'open'
    assert 'frame_rate_hz' in values and status.hardware_id == 'cam3_optical_frame'


def test_deactivation_answers_the_bolts_in_flight(rclpy_context, rig_factory):
    node = _classifier(rclpy_context, view_timeout_s=5.0)
    assert bring_up(node)
    rig = rig_factory([node])
    rig.wait_matched()
    rig.bolt(8501, skip=(2, 3))                    # waits for two views that will not come
    time.sleep(0.3)
    bring_down(node)
    verdict = rig.wait(8501, 1, timeout_s=3)['8501']
    assert verdict.message == ('NG: classifier deactivated; missing view cam2; '
                               'missing view cam3')


class BlockingMosaicInspector(FakeInspector):
    """Its mosaic waits for ``release``; records which bolt, on what thread, when."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.rendered = []          # (bolt_id, thread name, verdicts published before it)
        self.published = []         # bolt ids, in the order their verdicts were published

    def render_mosaic(self, inspection, bolt_id):
        self.rendered.append((str(bolt_id), threading.current_thread().name,
                              list(self.published)))
        self.release.wait(10.0)
        return super().render_mosaic(inspection, bolt_id)


def _image_threads():
    return [t for t in threading.enumerate() if t.name == 'classifier-images']


def test_slow_mosaics_never_delay_verdicts_and_drop_the_oldest(rclpy_context, rig_factory):
    inspector = BlockingMosaicInspector()
    node = _classifier(rclpy_context, inspector)
    publish_verdict = node._publish_verdict

    def recording_publish_verdict(bundle, verdict, *args):
        latency_ms = publish_verdict(bundle, verdict, *args)
        inspector.published.append(bundle.bolt_id)
        return latency_ms
    node._publish_verdict = recording_publish_verdict
    assert bring_up(node)
    rig = rig_factory([node])
    rig.wait_matched()
    for bolt in range(8601, 8605):
        rig.bolt(bolt)
    # The first mosaic is stuck, yet every verdict goes out.
    verdicts = rig.wait(8601, 4, timeout_s=5)
    assert sorted(verdicts) == ['8601', '8602', '8603', '8604']
    assert inspector.rendered
    inspector.release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and inspector.rendered[-1][0] != '8604':
        time.sleep(0.05)
    rendered = [bolt for bolt, _, _ in inspector.rendered]
    # Two waiting places: while the first mosaic was stuck (8601's, unless the machine delayed
    # the image thread), the oldest waiting ones were pushed out; the newest is always shown.
    assert rendered[-1] == '8604' and rendered == sorted(rendered), rendered
    assert node.images_dropped >= 1 and len(rendered) + node.images_dropped == 4
    for bolt, thread, published_before in inspector.rendered:
        assert thread == 'classifier-images' and bolt in published_before
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(rig.driver.state.gradcam) < len(rendered):
        time.sleep(0.05)
    assert len(rig.driver.state.gradcam) == len(rendered)
    bring_down(node)
    assert not _image_threads()


def test_deactivation_joins_the_image_thread(rclpy_context, rig_factory):
    inspector = BlockingMosaicInspector()
    node = _classifier(rclpy_context, inspector)
    assert bring_up(node)
    assert len(_image_threads()) == 1
    rig = rig_factory([node])
    rig.wait_matched()
    rig.bolt(8701)
    assert rig.wait(8701, 1, timeout_s=5)['8701'].ok
    threading.Timer(0.3, inspector.release.set).start()
    bring_down(node)                 # waits for the mosaic in progress, then the thread ends
    assert not _image_threads()
    assert [bolt for bolt, _, _ in inspector.rendered] == ['8701']


def test_cameras_that_do_not_match_the_model_fail_configure(rclpy_context, capfd):
    node = _classifier(rclpy_context, cams=[0, 1])
    assert not bring_up(node)
    node.destroy_node()
    assert "cams [0, 1] do not match the model's cameras [0, 1, 2, 3]" in capfd.readouterr().err


def test_node_executable_with_a_bad_source_stays_unconfigured(ros_domain_id, tmp_path):
    import signal
    import subprocess
    import sys
    code = ('import sys; from bolt_inspection.nodes.camera_node import main; '
            'sys.argv = ["camera_node"] + sys.argv[1:]; main()')
    proc = subprocess.Popen(
        [sys.executable, '-c', code, '--ros-args', '-r', '__node:=cam2', '-p', 'source:=folder',
         '-p', f'folder:={tmp_path / "missing"}', '-p', 'autostart:=true'],
        stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if 'staying' in line or not line:
                break
        assert proc.poll() is None, 'the node must stay alive, unconfigured'
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = ''.join(lines)
    assert 'cannot open camera source' in err and 'missing' in err and '[cam2]' in err
    assert 'staying unconfigured' in err and 'ros2 lifecycle set /cam2 configure' in err
    assert 'Traceback' not in err + proc.stderr.read()


def test_node_executable_waits_for_its_manager_and_rejects_a_bad_parameter(ros_domain_id):
    """Without autostart a node waits, unconfigured, for the lifecycle manager (or `ros2
    lifecycle set`) and exits 0 on Ctrl-C; a parameter of the wrong type is one line, exit 2."""
    import signal
    import subprocess
    import sys

    from lifecycle_msgs.srv import GetState
    code = ('import sys; from bolt_inspection.nodes.camera_node import main; '
            'sys.argv = ["camera_node"] + sys.argv[1:]; main()')
    proc = subprocess.Popen([sys.executable, '-c', code, '--ros-args', '-r', '__node:=cam1'],
                            stderr=subprocess.PIPE, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = rclpy.create_node('lifecycle_probe', context=context)
    try:
        client = node.create_client(GetState, '/cam1/get_state')
        # Generous: the node process imports TensorFlow-free code, but the machine is shared.
        assert client.wait_for_service(timeout_sec=60.0), 'the node never offered get_state'
        future = client.call_async(GetState.Request())
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.spin_until_future_complete(future, timeout_sec=30.0)
        assert future.done(), 'get_state did not answer'
        assert future.result().current_state.label == 'unconfigured'
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert 'Traceback' not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
        context.try_shutdown()
    bad = subprocess.run([sys.executable, '-c', code, '--ros-args', '-r', '__node:=cam1',
                          '-p', 'rate_hz:=fast'], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith('error: CameraNode: ') and 'rate_hz' in lines[-1]
    assert 'Traceback' not in bad.stderr


def test_record_names_topics_nobody_publishes(rclpy_context, tmp_path):
    from bolt_inspection.nodes.bag_recorder import resolve_topics
    node = rclpy.create_node('probe', context=rclpy_context)
    try:
        assert resolve_topics(node, ['/line/trigger']) == {'/line/trigger': 'std_msgs/msg/Header'}
        with pytest.raises(ConfigError, match='cannot find the type of /nobody/here'):
            resolve_topics(node, ['/nobody/here'], wait_s=0.3)
    finally:
        node.destroy_node()


def test_classifier_configures_after_the_model_parameter_is_fixed(rclpy_context):
    def loader(model, cfg):
        if model != '/models/good':
            raise ModelError(f'{model}: model directory not found')
        return FakeInspector()
    node = ClassifierNode('classifier', context=rclpy_context, inspector_factory=loader,
                          parameter_overrides=[Parameter('model', value='/models/typo')])
    assert not bring_up(node) and state_label(node) == 'unconfigured'
    node.set_parameters([Parameter('model', value='/models/good')])
    assert bring_up(node) and state_label(node) == 'active'
    bring_down(node)
    node.destroy_node()


def test_a_drifted_camera_rejects_its_bolts_instead_of_passing_them(rclpy_context, rig_factory,
                                                                     tmp_path):
    """drift_policy reject: once a camera's images leave their training band, its bolts are
    fail-safe NG with the drift as the reason, although the model scores them OK."""
    from diagnostic_msgs.msg import DiagnosticArray

    from bolt_inspection.core.vision.drift import REFERENCE_FILE, DriftReference
    training = [(cam, np.full((48, 64, 3), level, np.uint8))
                for cam in CAMS for level in (9, 10, 11, 10, 9, 11)]
    model = tmp_path / 'model'
    model.mkdir()
    DriftReference.from_views(training, {}).save(model / REFERENCE_FILE)
    node = _classifier(rclpy_context, frame_size=[64, 48], model=str(model), drift_window=2)
    assert bring_up(node) and node.drift.active
    rig = rig_factory([node])
    arrays = []
    rig.driver.create_subscription(DiagnosticArray, '/diagnostics', arrays.append, 10)
    rig.wait_matched()
    rig.bolt(9101, level=10)
    rig.bolt(9102, level=10)
    for bolt in range(9103, 9107):          # the lamp got brighter: p_ng 0.39, OK by the model
        rig.bolt(bolt, level=100)
    verdicts = rig.wait(9101, 6)
    assert verdicts['9101'].message == verdicts['9102'].message == 'OK'
    last = verdicts['9106']
    assert not last.ok and last.message.startswith('NG: drift cam0: exposure')
    assert last.p_ng[0] == pytest.approx(100 / 255, abs=1e-3)
    assert node.counts['drift_rejects'] >= 1
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not any(
            'DRIFT' in s.message for a in arrays for s in a.status):
        time.sleep(0.1)
    status = [s for a in arrays for s in a.status if 'DRIFT' in s.message][-1]
    assert 'its bolts are rejected' in status.message


def test_a_camera_gives_no_sign_of_life_until_its_frames_reach_a_reader(rclpy_context):
    """A camera that hears the trigger but whose image publisher has not matched a reader yet
    is not alive: a frame it published then would be lost (DDS matches each end of a topic on
    its own, so the classifier may hear the camera before the camera's publisher matched it;
    CI saw one bolt 'NG: missing view cam0; missing view cam1; missing view cam3')."""
    from rclpy.node import Node
    from std_msgs.msg import Header

    cam = CameraNode('cam2', context=rclpy_context, parameter_overrides=[
        Parameter('camera_index', value=2), Parameter('size', value=[160, 120])])
    probe = Node('alive_probe', context=rclpy_context)
    heard: list[float] = []
    probe.create_subscription(Header, topics.ALIVE,
                              lambda m: m.frame_id == 'cam2' and heard.append(time.monotonic()),
                              topics.ALIVE_QOS)
    probe.create_publisher(Header, topics.TRIGGER, topics.TRIGGER_QOS)
    executor = make_executor(num_threads=2, context=rclpy_context)
    for node in (cam, probe):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert bring_up(cam)
        assert wait_for(lambda: cam._trigger_sub.get_publisher_count() > 0), 'no trigger'
        time.sleep(1.0)   # several alive periods
        assert heard == [], 'cam2 alive while its frames reach nobody'
        probe.create_subscription(Image, '/cam2/image_raw', lambda m: None, topics.IMAGE_QOS)
        assert wait_for(lambda: heard), 'cam2 not alive once a reader is matched'
    finally:
        executor.shutdown()
        thread.join(timeout=5.0)
        for node in (cam, probe):
            node.destroy_node()


def test_stages_give_no_sign_of_life_until_their_inputs_are_matched(rclpy_context):
    """The PLC bridge starts the conveyor only once every stage reports alive (core.plc.liveness).
    Between processes DDS discovery takes a moment: a classifier that does not hear a camera
    yet, or a camera that does not hear the trigger yet, must not report alive, or the first
    bolts after Start lose views (CI saw 'NG: missing view cam1' on the launched line)."""
    from rclpy.node import Node
    from std_msgs.msg import Header

    classifier = _classifier(rclpy_context, frame_size=[64, 48])
    cam = CameraNode('cam1', context=rclpy_context, parameter_overrides=[
        Parameter('camera_index', value=1), Parameter('size', value=[160, 120])])
    probe = Node('alive_probe', context=rclpy_context)
    heard: dict[str, float] = {}
    probe.create_subscription(Header, topics.ALIVE,
                              lambda m: heard.__setitem__(m.frame_id, time.monotonic()),
                              topics.ALIVE_QOS)
    executor = make_executor(num_threads=3, context=rclpy_context)
    for node in (classifier, cam, probe):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert bring_up(classifier) and bring_up(cam)
        time.sleep(1.0)   # several alive periods
        assert 'cam1' not in heard, 'cam1 alive before anyone publishes the trigger'
        # cam1 publishes /cam1/image_raw; the other three cameras are unheard.
        assert classifier.unheard_cameras() == [0, 2, 3]
        assert 'classifier' not in heard, 'classifier alive while cam0, cam2, cam3 are unheard'

        probe.create_publisher(Header, topics.TRIGGER, topics.TRIGGER_QOS)
        images = [probe.create_publisher(Image, f'/cam{c}/image_raw', topics.IMAGE_QOS)
                  for c in (0, 2, 3)]
        deadline = time.monotonic() + 5.0
        while len(heard) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {'cam1', 'classifier'} <= set(heard), heard
        assert classifier.unheard_cameras() == []

        # A camera that goes away (its publisher destroyed) silences the classifier again.
        probe.destroy_publisher(images[0])
        deadline = time.monotonic() + 5.0
        while classifier.unheard_cameras() != [0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert classifier.unheard_cameras() == [0]
        time.sleep(0.3)
        since = time.monotonic()
        time.sleep(0.6)
        assert heard['classifier'] < since, 'classifier alive while cam0 is gone'
    finally:
        executor.shutdown()
        thread.join(timeout=5.0)
        for node in (classifier, cam, probe):
            node.destroy_node()
