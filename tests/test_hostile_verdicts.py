"""Malformed /inspection/verdict messages on a real rclpy graph (issues 17 and 18).

The verdict is a typed bolt_inspection_msgs/Verdict, but a typed message still carries whatever
its types allow. Every consumer (PLC bridge, inspection log, operator page, the run's line
driver) reads it with the one decoder in core: a malformed message is dropped, counted on
/diagnostics and never kills a callback or a thread, and the good verdicts around it are handled
as usual.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

pytest.importorskip('rclpy')

from bolt_inspection_msgs.msg import Verdict, ViewResult  # noqa: E402
from conftest import wait_matched  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from bolt_inspection.core.line.fusion import fuse  # noqa: E402
from bolt_inspection.core.line.verdict import encode_verdict  # noqa: E402
from bolt_inspection.core.log.inspection_log import read_verdicts  # noqa: E402
from bolt_inspection.nodes import topics  # noqa: E402
from bolt_inspection.nodes.executor import make_executor  # noqa: E402
from bolt_inspection.nodes.hmi_node import HmiNode  # noqa: E402
from bolt_inspection.nodes.inspection_log_node import InspectionLogNode  # noqa: E402
from bolt_inspection.nodes.lifecycle_util import bring_down, bring_up  # noqa: E402
from bolt_inspection.nodes.line_driver import LineDriver  # noqa: E402
from bolt_inspection.nodes.plc_bridge_node import PlcBridgeNode  # noqa: E402
from bolt_inspection.nodes.verdict_msg import verdict_msg  # noqa: E402

pytestmark = pytest.mark.ros
SCORED, MISSING = ViewResult.STATUS_SCORED, ViewResult.STATUS_MISSING


def _verdict(bolt: str, decision: int = Verdict.DECISION_OK, *, views=None, reason: str = '',
             threshold: float = 0.5, latency_ms: float = 120.0) -> Verdict:
    if views is None:
        views = [(0, SCORED, 0.1), (1, SCORED, 0.2)]
    return Verdict(bolt_id=bolt, decision=decision, reason=reason, threshold=threshold,
                   latency_ms=latency_ms, model_id='m1',
                   views=[ViewResult(camera=c, status=s, p_ng=p) for c, s, p in views])


NG = Verdict.DECISION_NG
# Each is one the decoder refuses; before issue 17 a malformed verdict crashed a consumer or
# was taken for something else, and a typed message can still carry all of these.
HOSTILE = [
    Verdict(bolt_id='100'),                                           # all defaults: no decision
    _verdict('101', 7),                                               # unknown decision
    _verdict('102', views=[(0, SCORED, 0.1), (1, MISSING, math.nan)]),  # OK, but cam1 missing
    _verdict('103', views=[(0, SCORED, math.nan)]),                   # OK on a NaN score
    _verdict('104', views=[(0, SCORED, 0.7)]),                        # OK above the threshold
    _verdict('105', threshold=math.nan),                              # OK without a model
    _verdict('106', NG, latency_ms=math.inf),
    _verdict('107', Verdict.DECISION_FAILSAFE_NG, reason='x' * 10_000),
    _verdict('108', NG, views=[(0, 9, 0.1)]),                         # unknown view status
    _verdict('9' * 5000, NG),
    _verdict('bolt 7', NG),
]


def _good(bolt: int, ok: bool) -> Verdict:
    fused = fuse({0: 0.1 if ok else 0.9, 1: 0.2}, 0.5, range(2))
    return verdict_msg(encode_verdict(str(bolt), fused, cams=range(2), stamp_ns=time.time_ns(),
                                      latency_ms=120.0, threshold=0.5, model_id='m1'))


def _wait(predicate, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_every_consumer_drops_counts_and_goes_on(rclpy_context, tmp_path):
    from bolt_inspection.core.plc.contract import load_plc_config
    from bolt_inspection.core.plc.server import PlcSimulator, sim_with

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
    publisher = peer.create_publisher(topics.VERDICT_TYPE, topics.VERDICT, topics.VERDICT_QOS)
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
        wait_matched([publisher], (*nodes, driver), count=4)
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
