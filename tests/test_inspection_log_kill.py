"""kill -9 of the inspection log node: an NG verdict acknowledged on the topic is not lost.

The node runs as its own process (``python -m bolt_inspection.nodes.inspection_log_node``, as
the launch file starts it); this test publishes verdicts like the classifier, then kills
the node with SIGKILL shortly after the last one and reads the database. Issue 17: the node held
an NG verdict back for up to ``mosaic_wait_s`` (1 s) waiting for its Grad-CAM mosaic, so a crash
in that second lost the bolt's row (the audit lost 2 of 86). Now every verdict is committed as it
arrives and the mosaic is added to its row later.

Reliable QoS acknowledges a sample only on the writer's next heartbeat (Fast DDS: every 3 s),
long after the node took it; ``wait_for_all_acked`` therefore cannot show the window. The test
kills :data:`KILL_AFTER_PUBLISH_S` after the last publish instead, well inside the old 1 s hold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip('rclpy')

from bolt_inspection.core.line.fusion import fuse  # noqa: E402
from bolt_inspection.core.line.verdict import encode_verdict  # noqa: E402
from bolt_inspection.core.log.inspection_log import read_verdicts  # noqa: E402
from bolt_inspection.nodes import topics  # noqa: E402
from bolt_inspection.nodes.verdict_msg import verdict_msg  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
# Delivery + the node's callback + one fsync'ed commit; the old code held NG rows for 1 s.
KILL_AFTER_PUBLISH_S = 0.25


def _start_log_node(db) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, '-m', 'bolt_inspection.nodes.inspection_log_node', '--ros-args',
         '-p', f'db_path:={db}', '-p', 'store_crops:=false', '-p', 'mosaic_wait_s:=1.0',
         '-p', 'autostart:=true', '--log-level', 'warn'],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def test_a_received_ng_verdict_survives_kill_9(rclpy_context, tmp_path):
    import rclpy

    db = tmp_path / 'inspection.db'
    node = rclpy.create_node('kill_probe', context=rclpy_context)
    verdicts = node.create_publisher(topics.VERDICT_TYPE, topics.VERDICT, topics.VERDICT_QOS)
    proc = _start_log_node(db)
    try:
        deadline = time.monotonic() + 60.0
        while verdicts.get_subscription_count() < 1:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, 'the log node never subscribed'
            time.sleep(0.05)
        time.sleep(0.5)
        bolts = range(1, 21)
        for bolt in bolts:
            ok = bolt % 2 == 1                     # the last one, 20, is NG
            stamp = time.time_ns()
            time.sleep(0.02)
            verdicts.publish(verdict_msg(encode_verdict(
                bolt, fuse({0: 0.1 if ok else 0.9}, 0.5, [0]), cams=[0], stamp_ns=stamp,
                latency_ms=100.0, threshold=0.5, model_id='kill')))
            time.sleep(0.03)
        time.sleep(KILL_AFTER_PUBLISH_S)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()
        node.destroy_node()
    rows = read_verdicts(db)
    logged = {int(r.bolt_id): r.code for r in rows}
    lost = [b for b in bolts if b not in logged]
    assert lost == [], f'verdicts lost by kill -9: {lost}'
    assert logged[20] == 2
