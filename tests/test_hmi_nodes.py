"""The inspection log node and the HMI node on a real rclpy graph (no model, no browser)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip('rclpy')

from bolt_inspection_msgs.msg import LineStatus, PlcDelivery  # noqa: E402
from conftest import wait_matched  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from bolt_inspection.core.line.fusion import fuse  # noqa: E402
from bolt_inspection.core.line.verdict import encode_verdict  # noqa: E402
from bolt_inspection.core.log.inspection_log import read_verdicts  # noqa: E402
from bolt_inspection.nodes import topics  # noqa: E402
from bolt_inspection.nodes.executor import make_executor  # noqa: E402
from bolt_inspection.nodes.hmi_node import HmiNode  # noqa: E402
from bolt_inspection.nodes.image_conv import bgr_to_image  # noqa: E402
from bolt_inspection.nodes.inspection_log_node import InspectionLogNode  # noqa: E402
from bolt_inspection.nodes.lifecycle_util import (  # noqa: E402
    bring_down,
    bring_up,
    ns_to_stamp,
    state_label,
)
from bolt_inspection.nodes.verdict_msg import verdict_msg  # noqa: E402

pytestmark = pytest.mark.ros
# What the classifier fuses for each kind of bolt these tests send.
SCORES = {'OK': {0: 0.1, 1: 0.2}, 'NG': {0: 0.9, 1: 0.2}, 'NG: missing view cam1': {0: 0.9}}


class Line(Node):
    """Publishes what the classifier and the PLC bridge would."""

    def __init__(self, context):
        super().__init__('fake_line', context=context)
        self.verdict = self.create_publisher(topics.VERDICT_TYPE, topics.VERDICT,
                                             topics.VERDICT_QOS)
        self.gradcam = self.create_publisher(Image, '/inspection/gradcam',
                                             qos_profile_sensor_data)
        self.delivery = self.create_publisher(topics.PLC_DELIVERY_TYPE, topics.PLC_DELIVERY,
                                              topics.DELIVERY_QOS)
        self.status = self.create_publisher(topics.PLC_STATUS_TYPE, topics.PLC_STATUS,
                                            topics.STATUS_QOS)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.cams = [self.create_publisher(Image, f'/cam{k}/image_raw', qos_profile_sensor_data)
                     for k in range(4)]

    def wait_matched(self, nodes, count=1, timeout_s=10.0):
        """Both sides of the matches between these publishers and ``nodes``."""
        wait_matched((self.verdict, self.gradcam, self.delivery, *self.cams), nodes,
                     count=count, timeout=timeout_s)

    def send_verdict(self, bolt: int, message: str, stamp_ns: int = 0, latency_ms=120.0):
        """A verdict as the classifier sends it; stamp 0 = one without its trigger stamp."""
        fused = fuse(SCORES[message], 0.5, [0, 1])
        assert fused.message == message
        self.verdict.publish(verdict_msg(encode_verdict(
            bolt, fused, cams=[0, 1], stamp_ns=stamp_ns, latency_ms=latency_ms,
            threshold=0.5, model_id='m1')))

    def send_mosaic(self, stamp_ns: int, value: int = 120):
        mosaic = np.full((64, 48, 3), value, np.uint8)
        self.gradcam.publish(bgr_to_image(mosaic, stamp=ns_to_stamp(stamp_ns),
                                          frame_id='inspection'))

    def send_views(self, stamp_ns: int, size=(320, 240)):
        for cam, pub in enumerate(self.cams):
            frame = np.full((size[1], size[0], 3), 10 * (cam + 1), np.uint8)
            pub.publish(bgr_to_image(frame, stamp=ns_to_stamp(stamp_ns),
                                     frame_id=f'cam{cam}_optical_frame'))

    def send_delivery(self, bolt: int, delivered: bool):
        self.delivery.publish(PlcDelivery(
            bolt_id=str(bolt), code=PlcDelivery.CODE_NG, source=PlcDelivery.SOURCE_VERDICT,
            acknowledged=delivered, attempts=1,
            detail='delivered' if delivered else 'not delivered: PLC not reachable'))


@pytest.fixture
def graph(rclpy_context):
    nodes = []
    executor = make_executor(num_threads=4, context=rclpy_context)

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    import threading
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield add
    for node in reversed(nodes):
        if hasattr(node, 'trigger_deactivate'):
            bring_down(node)
    executor.shutdown(timeout_sec=5.0)
    thread.join(5.0)
    for node in nodes:
        node.destroy_node()


def _until(check, what, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(what)


def test_log_node_joins_mosaics_by_trigger_stamp_and_records_delivery(graph, rclpy_context,
                                                                      tmp_path):
    db = tmp_path / 'log.db'
    log = graph(InspectionLogNode(context=rclpy_context, parameter_overrides=[
        Parameter('db_path', value=str(db)), Parameter('mosaic_wait_s', value=0.3),
        Parameter('synchronous', value='NORMAL'), Parameter('diagnostics_period_s', value=0.2)]))
    line = graph(Line(rclpy_context))
    diagnostics = []
    line.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    assert bring_up(log)
    line.wait_matched([log])
    t0 = time.time_ns() - 10**9
    stamps = {bolt: t0 + bolt * 1_000_000 for bolt in range(1, 5)}
    line.send_views(stamps[1])
    line.send_views(stamps[4])
    time.sleep(0.3)
    line.send_verdict(1, 'NG', stamps[1])            # verdict, then its mosaic
    time.sleep(0.1)
    line.send_mosaic(stamps[1], 201)
    line.send_mosaic(stamps[2], 202)                 # mosaic overtakes its verdict
    time.sleep(0.1)
    line.send_verdict(2, 'NG: missing view cam1', stamps[2])
    line.send_verdict(3, 'NG', stamps[3])            # its mosaic never comes
    line.send_verdict(4, 'OK', stamps[4])
    line.send_verdict(5, 'NG', latency_ms=250.0)     # no trigger stamp
    line.send_delivery(1, True)
    line.send_delivery(3, False)
    _until(lambda: log.counts['verdicts'] == 5 and not log._awaiting, 'verdicts not handled')
    assert log.log.flush()

    rows = {v.bolt_id: v for v in read_verdicts(db, with_images=True)}
    assert sorted(rows) == ['1', '2', '3', '4', '5']
    for bolt in range(1, 5):
        assert rows[str(bolt)].trigger_ns == stamps[bolt]           # exact join key
    assert abs(rows['5'].created_ns - rows['5'].trigger_ns - 250_000_000) < 1_000_000
    import cv2
    for bolt, value in (('1', 201), ('2', 202)):
        mosaic = rows[bolt].images[-1]
        assert mosaic.kind == 'mosaic' and mosaic.state == 'stored'
        assert cv2.imread(str(mosaic.path))[0, 0, 0] == value     # the right bolt's mosaic
    # Bolt 1's four views, cut to cameras.yaml's boxes scaled from 1280x960 to 320x240.
    crops = rows['1'].images[:-1]
    assert [(i.kind, i.cam, i.state) for i in crops] == [('crop', k, 'stored') for k in range(4)]
    from bolt_inspection.core.vision.roi import load_camera_config, scale_boxes
    shipped = load_camera_config()
    boxes = scale_boxes(shipped.boxes, shipped.frame_size, (320, 240))
    for image in crops:
        crop = cv2.imread(str(image.path))
        _, _, w, h = boxes[image.cam]
        assert crop.shape == (h, w, 3) and crop[0, 0, 0] == 10 * (image.cam + 1)
    assert [i.kind for i in rows['2'].images] == ['mosaic']     # no views were sent for it
    assert rows['3'].images == [] and rows['4'].images == []
    assert rows['2'].reasons == ['missing view cam1']
    assert rows['2'].p_ng == {0: 0.9, 1: None}
    assert rows['4'].ok and rows['4'].model_id == 'm1' and rows['4'].latency_ms == 120.0
    assert [rows[b].plc_state for b in '12345'] == ['delivered', 'pending', 'undelivered',
                                                     'pending', 'pending']
    assert log.counts['without_mosaic'] == 1 and log.counts['mosaics_joined'] == 2
    _until(lambda: any(s.name == 'inspection_log: inspection log'
                       and s.message == '5 verdicts logged'
                       for a in diagnostics for s in a.status), 'no diagnostics')


def test_log_node_refuses_an_unusable_database(graph, rclpy_context, tmp_path):
    bad = tmp_path / 'not_a.db'
    bad.write_bytes(b'this is not sqlite' * 100)
    log = graph(InspectionLogNode(context=rclpy_context, parameter_overrides=[
        Parameter('db_path', value=str(bad))]))
    assert not bring_up(log)
    assert state_label(log) == 'unconfigured'
    # The operator points it at a usable file and configures again, without a restart.
    log.set_parameters([Parameter('db_path', value=str(tmp_path / 'good.db'))])
    assert bring_up(log)
    assert (tmp_path / 'good.db').is_file()


def _post(url):
    req = urllib.request.Request(url, data=b'{}', method='POST',
                                 headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_hmi_node_shows_topics_and_calls_the_line_services(graph, rclpy_context, tmp_path):
    hmi = graph(HmiNode(context=rclpy_context, parameter_overrides=[
        Parameter('port', value=0), Parameter('log_db', value='')]))
    line = graph(Line(rclpy_context))
    assert bring_up(hmi)
    assert hmi.url.startswith('http://127.0.0.1:')
    # No PLC bridge yet: the operator is told, nothing hangs.
    status, body = _post(hmi.url + '/api/start')
    assert status == 409 and 'service /line/start not available' in body['message']

    calls = []

    def service(what):
        def handle(request, response):
            calls.append(what)
            response.success, response.message = True, f'conveyor {what}'
            return response
        return handle

    line.create_service(Trigger, '/line/start', service('running'))
    line.create_service(Trigger, '/line/stop', service('stopped'))
    _until(lambda: hmi._trigger_clients['stop'].service_is_ready(), 'service not seen')
    assert _post(hmi.url + '/api/stop') == (200, {'ok': True, 'message': 'conveyor stopped'})
    assert _post(hmi.url + '/api/start') == (200, {'ok': True, 'message': 'conveyor running'})
    assert calls == ['stopped', 'running']

    deadline = time.monotonic() + 10
    while line.verdict.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    line.send_verdict(11, 'OK')
    line.send_verdict(12, 'NG: missing view cam1')
    line.send_mosaic(1, 90)
    line.diagnostics.publish(DiagnosticArray(status=[DiagnosticStatus(
        level=DiagnosticStatus.WARN, name='cam2: camera', message='source reconnecting')]))
    line.status.publish(LineStatus(level=LineStatus.LEVEL_OK, message='connected',
                                   plc='127.0.0.1:5020/1', connected=True, path_alive=True,
                                   heartbeat_healthy=True, plc_read=True, running=True,
                                   pass_count=7, reject_count=3))

    def snapshot():
        with urllib.request.urlopen(hmi.url + '/api/state', timeout=10) as resp:
            return json.loads(resp.read())

    snap = _until(lambda: (s := snapshot())['counters']['total'] == 2
                  and 'gradcam' in s['images'] and 'cam2: camera' in s['health']
                  and 'PLC' in s['health'] and s, 'HMI state not updated')
    assert snap['counters']['ok'] == 1 and snap['counters']['ng'] == 1
    # /plc/status: the conveyor state and the gate's own tally on the page.
    plc = snap['health']['PLC']
    assert snap['running'] is True and plc['message'] == 'connected'
    assert (plc['hardware_id'], plc['values']['pass_count'], plc['values']['reject_count']) == (
        '127.0.0.1:5020/1', '7', '3')
    assert snap['latest']['bolt_id'] == '12' and snap['latest']['p_ng'] == {'0': 0.9,
                                                                              '1': None}
    assert snap['health']['cam2: camera']['level_name'] == 'WARN'
    with urllib.request.urlopen(hmi.url + '/image/gradcam.jpg', timeout=10) as resp:
        assert resp.headers['Content-Type'] == 'image/jpeg'

    # An open page (live SSE stream) does not hold up deactivation, and the port is freed.
    stream = urllib.request.urlopen(hmi.url + '/events', timeout=10)
    assert stream.readline().startswith(b'event: state')
    started = time.monotonic()
    assert hmi.trigger_deactivate() is not None and state_label(hmi) == 'inactive'
    assert time.monotonic() - started < 5.0
    stream.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(hmi.url + '/api/state', timeout=2)


def test_hmi_node_refuses_a_public_bind_without_token(graph, rclpy_context):
    hmi = graph(HmiNode(context=rclpy_context, parameter_overrides=[
        Parameter('host', value='0.0.0.0'), Parameter('port', value=0)]))
    assert not bring_up(hmi)
    assert state_label(hmi) == 'unconfigured' and hmi.server is None
    hmi.set_parameters([Parameter('host', value='127.0.0.1')])
    assert bring_up(hmi) and hmi.url.startswith('http://127.0.0.1:')


@pytest.mark.parametrize('node_cls, config', [(InspectionLogNode, 'log.yaml'),
                                              (HmiNode, 'hmi.yaml')])
def test_shipped_params_files_name_only_declared_parameters(rclpy_context, node_cls, config):
    """rclpy silently ignores an unknown key: a typo in the file would be a lost setting."""
    from bolt_inspection.core.config import load_yaml, node_parameters
    from bolt_inspection.paths import config_path

    node = node_cls(context=rclpy_context)
    try:
        params = node_parameters(load_yaml(config_path(config)), node.get_name())
        assert params
        for name, value in params.items():
            assert node.has_parameter(name), f'{config}: {name} is not a parameter of the node'
            assert node.get_parameter(name).type_ == Parameter(name, value=value).type_, name
    finally:
        node.destroy_node()


@pytest.mark.parametrize('node_cls, parameter', [
    (HmiNode, Parameter('port', value='abc')),
    (InspectionLogNode, Parameter('mosaic_wait_s', value='abc')),
    ('bolt_inspection.nodes.plc_bridge_node:PlcBridgeNode',
     Parameter('diagnostics_period_s', value='abc')),
])
def test_a_node_refused_at_construction_tears_down_cleanly(ros_domain_id, node_cls, parameter):
    """Issue 17, defect 5: a parameter of the wrong type raised inside the node's constructor,
    then the context's shutdown destroyed the half-built node and died with an AttributeError
    (a second traceback after the first)."""
    import importlib

    import rclpy

    if isinstance(node_cls, str):
        module, _, name = node_cls.partition(':')
        node_cls = getattr(importlib.import_module(module), name)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        with pytest.raises(Exception) as refused:
            node_cls(context=context, parameter_overrides=[parameter])
        assert parameter.name in str(refused.value)
        assert not isinstance(refused.value, AttributeError)
    finally:
        context.try_shutdown()              # destroys the half-built node: must not raise
