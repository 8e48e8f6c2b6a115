"""Malformed /inspection/verdict messages on a real rclpy graph (issue 17, defect 1).

Every consumer (PLC bridge, inspection log, operator page, the run's line driver) decodes the
verdict with the one decoder in core: a malformed message is dropped, counted on /diagnostics
and never kills a callback or a thread, and the good verdicts around it are handled as usual.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from bolt_inspection.core.inspection_log import read_verdicts  # noqa: E402
from bolt_inspection.core.verdict import encode_verdict_status  # noqa: E402
from bolt_inspection.nodes.executor import make_executor  # noqa: E402
from bolt_inspection.nodes.hmi_node import HmiNode  # noqa: E402
from bolt_inspection.nodes.inspection_log_node import InspectionLogNode  # noqa: E402
from bolt_inspection.nodes.lifecycle_util import bring_down, bring_up  # noqa: E402
from bolt_inspection.nodes.line_driver import LineDriver  # noqa: E402
from bolt_inspection.nodes.plc_bridge_node import PlcBridgeNode  # noqa: E402
from bolt_inspection.nodes.verdict_msg import verdict_msg  # noqa: E402

pytestmark = pytest.mark.ros
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def _status(level: int, message: str, bolt: str, **values) -> DiagnosticStatus:
    return DiagnosticStatus(level=bytes([level]), name='bolt_inspection/verdict',
                            message=message, hardware_id=bolt,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])


# What the audit sent (issue 17): each crashed a consumer or was taken for something else.
HOSTILE = [
    _status(2, 'NG', '101', **{'p_ng_cam' + '9' * 4301: '0.5'}),    # int() past 4300 digits
    _status(0, 'OK', '102', latency_ms='inf'),
    _status(2, 'NG', '103', latency_ms='9' * 5000),
    _status(0, 'NG', '104'),                                         # level says OK, text NG
    _status(2, 'OK', '105'),                                         # level says NG, text OK
    _status(0, 'OK but cam2 missing', '106'),                         # the bridge took it as OK
    _status(2, 'NG', '9' * 5000),
    _status(2, 'NG', 'bolt 7'),
]


def _good(bolt: int, ok: bool) -> DiagnosticStatus:
    wire = encode_verdict_status(str(bolt), ok, 'OK' if ok else 'NG',
                                 {0: 0.1 if ok else 0.9, 1: 0.2}, cams=range(2),
                                 latency_ms=120.0, threshold=0.5, model_id='m1')
    return verdict_msg(wire)


def _wait(predicate, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_every_consumer_drops_counts_and_goes_on(rclpy_context, tmp_path):
    from bolt_inspection.core.plc_contract import load_plc_config
    from bolt_inspection.plc_server import PlcSimulator, sim_with

    plc, sim_cfg = load_plc_config()
    sim = PlcSimulator(plc, sim_with(sim_cfg, heartbeat_timeout_s=0.0), host='127.0.0.1',
                       port=0, truth=None).start()
    params = {'diagnostics_period_s': 0.2}
    bridge = PlcBridgeNode(context=rclpy_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in {**params, 'port': sim.port, 'timeout_s': 1.0,
                                           'poll_period_s': 0.05}.items()])
    log = InspectionLogNode(context=rclpy_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in {**params, 'db_path': str(tmp_path / 'log.db'),
                                           'store_crops': False, 'mosaic_wait_s': 0.0}.items()])
    hmi = HmiNode(context=rclpy_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in {**params, 'port': 0, 'log_db': ''}.items()])
    driver = LineDriver('probe', context=rclpy_context)
    peer = driver  # the driver's node also publishes the verdicts
    publisher = peer.create_publisher(DiagnosticStatus, '/inspection/verdict', RELIABLE)
    diagnostics: dict[str, dict[str, str]] = {}
    peer.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda m: diagnostics.update({s.name: {kv.key: kv.value for kv in s.values}
                                      for s in m.status}), 10)
    nodes = (bridge, log, hmi)
    executor = make_executor(rclpy_context, num_threads=6)
    for node in (*nodes, driver):
        executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        for node in nodes:
            assert bring_up(node), node.get_name()
        # The driver and the three consumers.
        assert _wait(lambda: publisher.get_subscription_count() >= 4)
        time.sleep(0.3)
        for msg in HOSTILE:
            publisher.publish(msg)
        publisher.publish(_good(1, True))
        publisher.publish(_good(2, False))

        assert _wait(lambda: len(driver.verdicts()) == 2), driver.verdicts()
        assert _wait(lambda: bridge.counters['verdicts_written'] == 2), bridge.counters
        assert _wait(lambda: hmi.state.snapshot()['counters']['total'] == 2)
        assert log.log.flush(10.0)
        assert _wait(lambda: len(read_verdicts(tmp_path / 'log.db')) == 2)

        bad = len(HOSTILE)
        assert [(r.bolt_id, r.ok) for r in driver.verdicts()] == [('1', True), ('2', False)]
        assert driver.bad_verdicts == bad
        rows = read_verdicts(tmp_path / 'log.db')
        assert [(r.bolt_id, r.code) for r in rows] == [('1', 1), ('2', 2)]
        snap = hmi.state.snapshot()
        assert [v['bolt_id'] for v in snap['verdicts']] == ['2', '1']
        assert snap['counters']['bad_verdicts'] == bad
        # Only the two good verdicts reached the PLC; the rest: fail-safe reject at the gate.
        assert sim.model.stats['verdicts'] + sim.model.stats['invalid_verdicts'] == 2

        # Visible in each node's diagnostics.
        def counted() -> bool:
            found = {name: values.get('bad_verdicts') for name, values in diagnostics.items()}
            return sorted(v for v in found.values() if v is not None) == [str(bad)] * 3
        assert _wait(counted, 5.0), diagnostics
        assert spin.is_alive()
        assert executor.callback_errors == 0, executor.last_callback_error
    finally:
        for node in nodes:
            bring_down(node)
        executor.shutdown(timeout_sec=5.0)
        spin.join(timeout=5.0)
        for node in (*nodes, driver):
            node.destroy_node()
        sim.stop()
