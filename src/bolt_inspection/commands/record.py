"""``bolt-inspection record``: record the line's topics to a rosbag2 MCAP bag (rosbags)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bolt_inspection.commands._common import positive_float


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'record', help='record line topics to a rosbag2 MCAP bag',
        description="Subscribe to the line's topics and write them, CDR-serialised, to a new "
                    'rosbag2 bag (MCAP storage) that `ros2 bag info/play` read; the bag carries '
                    "the definitions of the line's own message types. Default topics: "
                    '/line/trigger, /camN/image_raw, /inspection/verdict, /plc/delivery, '
                    '/plc/status.')
    parser.add_argument('--out', type=Path, required=True, help='bag directory to create')
    parser.add_argument('--topics', nargs='+', default=None, metavar='TOPIC',
                        help="topics to record (default: the line's inputs, verdicts and PLC "
                             'deliveries and status)')
    parser.add_argument('--duration', type=positive_float, default=None,
                        help='stop after this many seconds (default: until Ctrl-C)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from bolt_inspection import rosenv
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.nodes.bag_recorder import BagRecorder, resolve_topics
    from bolt_inspection.nodes.executor import make_executor

    rosenv.apply_defaults()
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f'--duration must be > 0 seconds, got {args.duration}')
    if args.out.exists():
        raise ConfigError(f'{args.out} exists already; rosbag2 bags are never overwritten')
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    recorder = None
    executor = make_executor(context)
    try:
        probe = rclpy.create_node('bag_recorder_probe', context=context)
        try:
            topics = resolve_topics(probe, args.topics)
        finally:
            probe.destroy_node()
        recorder = BagRecorder(args.out, topics, context=context)
        executor.add_node(recorder)
        print(f'recording {", ".join(topics)} to {args.out}', flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while deadline is None or time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
        except KeyboardInterrupt:
            pass
    finally:
        executor.shutdown()
        if recorder is not None:
            recorder.close()
            counts = recorder.counts
            recorder.destroy_node()
            print(f'{args.out}: ' + ', '.join(f'{t} {n}' for t, n in counts.items()))
        context.try_shutdown()
    return 0
