"""How soon after an NG verdict is published does it survive kill -9 of the inspection log node?

For each delay D and trial: start ``python -m bolt_inspection.nodes.inspection_log_node`` as its
own process, publish a trigger and then an NG verdict for one bolt (as the line does), sleep D,
SIGKILL the node, and check whether the bolt's row is in the database. Prints, per delay, how
many of the trials kept the row.

    python bench/log_kill.py --delays 0.005,0.01,0.02,0.05,0.1,0.25 --trials 5
    python bench/log_kill.py --node-src /path/to/other/checkout/src   # an older node, same run
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import setup_env  # noqa: E402


def trial(context, delay_s: float, work: Path, n: int, node_src: str | None) -> bool:
    import rclpy

    from bolt_inspection.core.line.fusion import fuse
    from bolt_inspection.core.line.verdict import encode_verdict
    from bolt_inspection.core.log.inspection_log import read_verdicts
    from bolt_inspection.nodes import topics
    from bolt_inspection.nodes.verdict_msg import verdict_msg

    db = work / f'trial{n}.db'
    node = rclpy.create_node(f'kill_bench_{n}', context=context)
    verdicts = node.create_publisher(topics.VERDICT_TYPE, topics.VERDICT, topics.VERDICT_QOS)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'bolt_inspection.nodes.inspection_log_node', '--ros-args',
         '-p', f'db_path:={db}', '-p', 'store_crops:=false', '-p', 'autostart:=true',
         '--log-level', 'warn'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **({'PYTHONPATH': node_src} if node_src else {})})
    try:
        while verdicts.get_subscription_count() < 1:
            time.sleep(0.02)
        time.sleep(0.5)
        verdicts.publish(verdict_msg(encode_verdict(
            7, fuse({0: 0.9}, 0.5, [0]), cams=[0], stamp_ns=time.time_ns() - 100_000_000,
            latency_ms=100.0, threshold=0.5, model_id='bench')))
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        node.destroy_node()
    return db.is_file() and any(r.bolt_id == '7' for r in read_verdicts(db))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--delays', default='0.005,0.01,0.02,0.05,0.1,0.25',
                        help='seconds from the publish to the kill, comma-separated')
    parser.add_argument('--trials', type=int, default=5)
    parser.add_argument('--node-src', default=None,
                        help='run the log node from this source tree (PYTHONPATH) to compare '
                             'another version in the same run')
    args = parser.parse_args()
    domain = setup_env()
    import rclpy
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    n = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for delay in (float(d) for d in args.delays.split(',')):
                kept = 0
                for _ in range(args.trials):
                    n += 1
                    kept += trial(context, delay, Path(tmp), n, args.node_src)
                print(f'kill {delay * 1000:.0f} ms after the NG verdict: row kept in '
                      f'{kept}/{args.trials} trials', flush=True)
    finally:
        context.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
