"""``bolt-inspection play``: publish a bag's topics back with their original header stamps."""

from __future__ import annotations

import argparse
from pathlib import Path

from bolt_inspection.commands._common import non_negative_float, positive_float


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'play', help='replay a rosbag2 bag (original stamps)',
        description='Publish the messages of a rosbag2 bag (MCAP or sqlite3) with their '
                    'original header stamps, paced by their recorded times. Default topics: '
                    'the line inputs (/line/trigger and /camN/image_raw).')
    parser.add_argument('bag', type=Path, help='bag directory')
    parser.add_argument('--rate', type=positive_float, default=1.0,
                        help='speed factor (default 1.0)')
    parser.add_argument('--loop', action='store_true', help='start over at the end')
    parser.add_argument('--topics', nargs='+', default=None, metavar='TOPIC',
                        help="topics to play ('*' = all; default: trigger + camera images)")
    parser.add_argument('--start-delay', type=non_negative_float, default=1.0,
                        help='seconds to wait for subscribers before the first message')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from bolt_inspection import bags, rosenv
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.nodes.bag_player import BagPlayer
    from bolt_inspection.nodes.executor import make_executor
    from bolt_inspection.nodes.lifecycle_util import bring_down, bring_up

    rosenv.apply_defaults()
    if not 0.01 <= args.rate <= 100:
        raise ConfigError(f'--rate must be in 0.01..100, got {args.rate}')
    available = bags.bag_topics(args.bag)  # one-line ConfigError if it is not a bag
    topics = args.topics or [t for t in bags.REPLAY_TOPICS if t in available] or ['*']
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    player = BagPlayer(context=context, parameter_overrides=[
        Parameter('bag', value=str(args.bag)), Parameter('rate', value=float(args.rate)),
        Parameter('loop', value=bool(args.loop)), Parameter('topics', value=list(topics)),
        Parameter('start_delay_s', value=float(args.start_delay))])
    executor = make_executor(context)
    executor.add_node(player)
    try:
        if not bring_up(player):
            raise ConfigError(f'cannot play {args.bag} (see the log line above)')
        try:
            while not player.done.is_set():
                executor.spin_once(timeout_sec=0.1)
        except KeyboardInterrupt:
            pass
        print(f'{args.bag}: published {player.played} messages')
    finally:
        bring_down(player)
        executor.shutdown()
        player.destroy_node()
        context.try_shutdown()
    return 0
