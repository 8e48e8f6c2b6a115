"""Camera and classifier nodes as real rclpy nodes on a private domain (fake model, no TF)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip('rclpy')

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from bolt_inspection.core.errors import ModelError  # noqa: E402
from bolt_inspection.core.fusion import fuse  # noqa: E402
from bolt_inspection.nodes.camera_node import CameraNode  # noqa: E402
from bolt_inspection.nodes.classifier_node import ClassifierNode  # noqa: E402
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
    """Nodes + a MultiThreadedExecutor spinning in a thread + a probe publishing frames."""

    def __init__(self, context, nodes):
        self.context = context
        self.driver = LineDriver('probe', context=context, keep_gradcam=5)
        self.cam_pubs = {c: self.driver.create_publisher(Image, f'/cam{c}/image_raw',
                                                         qos_profile_sensor_data)
                         for c in CAMS}
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.nodes = list(nodes) + [self.driver]
        for node in self.nodes:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait_matched(self, node_count=1, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() >= node_count for p in self.cam_pubs.values()) \
                    and self.driver.trigger_pub.get_subscription_count() >= node_count:
                # Matching is seen by the publisher first; give the subscriber side a moment,
                # best-effort frames sent before it matched are lost.
                time.sleep(0.3)
                return
            time.sleep(0.05)
        raise AssertionError('subscribers did not match')

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
        time.sleep(0.05)  # a camera's pace; sensor-data QoS keeps only the last 5 frames
        return stamp

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
    rig.bolt(1, level=10)                       # OK
    rig.bolt(2, level=250)                      # NG by the model
    rig.bolt(3, level=10, skip=(2,))            # camera 2 silent
    rig.bolt(4, level=10, bad={1: wrong_encoding})
    rig.bolt(5, level=10, bad={3: wrong_size})
    rig.bolt(6, level=10)                       # the node is alive after all that
    verdicts = {v.bolt_id: v for v in rig.driver.wait_for_verdicts(6, timeout_s=10)}
    assert sorted(verdicts, key=int) == ['1', '2', '3', '4', '5', '6']
    assert verdicts['1'].ok and verdicts['1'].message == 'OK'
    assert not verdicts['2'].ok and verdicts['2'].message == 'NG'
    assert verdicts['3'].message == 'NG: missing view cam2'
    assert verdicts['4'].message.startswith("NG: cam1: unsupported encoding '16UC1'")
    assert verdicts['5'].message == 'NG: cam3: frame 32x96, expected 64x48'
    assert verdicts['6'].ok
    values = verdicts['2'].values
    assert float(values['p_ng_cam0']) == pytest.approx(250 / 255, abs=1e-3)
    assert values['model_id'] == 'fake-model' and float(values['threshold']) == 0.5
    assert 0 < float(values['latency_ms']) < 5000
    assert verdicts['3'].values['p_ng_cam2'] == 'n/a'
    time.sleep(0.3)
    assert len(rig.driver.verdicts()) == 6, 'exactly one verdict per bolt'
    assert rig.driver.state.gradcam and rig.driver.state.gradcam[-1].encoding == 'bgr8'


def test_model_that_fails_to_load_leaves_node_unconfigured(rclpy_context, caplog):
    def broken(model, cfg):
        raise ModelError(f'{model}: metadata.json missing')
    node = ClassifierNode('classifier', context=rclpy_context, inspector_factory=broken,
                          parameter_overrides=[Parameter('model', value='/tmp/nope')])
    assert not bring_up(node)
    assert state_label(node) == 'unconfigured'
    node.destroy_node()


def test_overload_gives_ng_overloaded_never_silence(rclpy_context, rig_factory):
    node = _classifier(rclpy_context, FakeInspector(delay_s=0.3), queue_size=1)
    assert bring_up(node)
    rig = rig_factory([node])
    rig.wait_matched()
    for bolt in range(6):
        rig.bolt(bolt)
    verdicts = rig.driver.wait_for_verdicts(6, timeout_s=10)
    assert sorted(int(v.bolt_id) for v in verdicts) == list(range(6))
    assert any(v.message == 'NG: overloaded' for v in verdicts), [v.message for v in verdicts]
    assert any(v.ok for v in verdicts)


def test_classifier_restart_mid_run_recovers(rclpy_context, rig_factory):
    node = _classifier(rclpy_context)
    assert bring_up(node)
    rig = rig_factory([node])
    rig.wait_matched()
    rig.bolt(1)
    assert len(rig.driver.wait_for_verdicts(1, timeout_s=5)) == 1
    bring_down(node)
    assert state_label(node) == 'unconfigured'
    assert bring_up(node)
    rig.wait_matched()
    for bolt in (2, 3):
        rig.bolt(bolt)
    verdicts = rig.driver.wait_for_verdicts(3, timeout_s=5)
    assert [v.bolt_id for v in verdicts] == ['1', '2', '3'] and all(v.ok for v in verdicts)


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
    while rig.driver.trigger_pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    stamp = rig.driver.trigger(7)
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got, 'no frame for the trigger'
    msg = got[0]
    assert msg.header.stamp == ns_to_stamp(stamp)
    assert msg.header.frame_id == 'cam1_optical_frame'
    assert (msg.width, msg.height, msg.encoding) == (40, 30, 'bgr8')
    assert msg.data[0] == 99


def test_camera_node_with_bad_source_fails_configure(rclpy_context):
    cam = CameraNode('cam0', context=rclpy_context, parameter_overrides=[
        Parameter('source', value='folder'), Parameter('folder', value='/nonexistent/dir')])
    assert not bring_up(cam)
    assert state_label(cam) == 'unconfigured'
    cam.destroy_node()
