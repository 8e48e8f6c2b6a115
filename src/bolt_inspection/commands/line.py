"""``bolt-inspection line``: the whole inspection line, by default the closed loop with an
in-process PLC simulator; the options become :class:`bolt_inspection.runtime.line.LineOptions`
and :func:`bolt_inspection.runtime.line.run_line` runs them (see there for who triggers the
bolts in each mode). It prints a live tally every ``--tally-period`` s and a summary at the end
(optionally as JSON).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bolt_inspection.commands._common import (
    fraction,
    non_negative_float,
    positive_float,
    positive_int,
    size_wh,
)
from bolt_inspection.graph import SOURCES


def add_line_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bolt-inspection line`` (``demo`` passes them through)."""
    parser.add_argument('--params-file', type=Path, default=None,
                        help='params file (default: share/bolt_inspection/config/line.yaml)')
    parser.add_argument('--model', help='model artifact directory (classifier "model")')
    parser.add_argument('--source', choices=SOURCES, default=None,
                        help="camera source (default: the params file's, i.e. synthetic)")
    parser.add_argument('--bag', help='bag directory for --source bag')
    parser.add_argument('--folder', help='dataset folder for --source folder')
    parser.add_argument('--device', help='device spec for --source device ({} = camera index)')
    parser.add_argument('--bolts', type=positive_int, default=20,
                        help='bolts to run: the simulated conveyor feeds this many and the run '
                             'ends when all are sorted at the gate (external PLC: verdicts to '
                             'wait for; --no-plc: bolts to trigger); default 20')
    parser.add_argument('--rate', type=positive_float, default=60.0,
                        help='bolts per minute (the conveyor rate, or the trigger rate with '
                             '--no-plc); default 60')
    parser.add_argument('--gate-delay', type=non_negative_float, default=None,
                        help="seconds of conveyor travel camera station -> sorting gate "
                             "(simulator; default: plc.yaml's, 2.0)")
    parser.add_argument('--first-bolt', type=int, default=1,
                        help='id of the first bolt with --no-plc (a PLC numbers its bolts from '
                             '1 itself)')
    parser.add_argument('--size', type=size_wh, default=None,
                        help='camera frame size WxH (cameras "size" and classifier "frame_size")')
    parser.add_argument('--seed', type=int, default=None,
                        help='synthetic scenario seed (cameras and simulator)')
    parser.add_argument('--defect-rate', type=fraction, default=None,
                        help='synthetic defect rate (cameras and simulator)')
    parser.add_argument('--view-timeout', type=positive_float, default=None,
                        help='classifier view_timeout_s')
    plc = parser.add_argument_group('PLC (default: the closed loop with an in-process simulator)')
    plc.add_argument('--plc-host', default='',
                     help='use the EXTERNAL PLC at this host (no simulator; port from plc.yaml '
                          'unless --plc-port)')
    plc.add_argument('--plc-port', type=int, default=0,
                     help='use the EXTERNAL PLC at this port (no simulator; host from plc.yaml '
                          'unless --plc-host)')
    plc.add_argument('--plc', action='store_true',
                     help="use the EXTERNAL PLC at plc.yaml's host and port (no simulator)")
    plc.add_argument('--no-plc', action='store_true',
                     help='no PLC and no bridge: this command triggers --bolts bolts at --rate '
                          'itself (the open loop)')
    plc.add_argument('--drain', type=non_negative_float, default=3.0,
                     help='external PLC: seconds the conveyor keeps running after the last '
                          'verdict so inspected bolts reach the sorting gate (default 3)')
    parser.add_argument('--log', action='store_true',
                        help='add the inspection log node (config/log.yaml: every verdict into '
                             'SQLite, NG evidence as PNG)')
    parser.add_argument('--hmi', action='store_true',
                        help='add the operator web page (config/hmi.yaml: 127.0.0.1:8080)')
    parser.add_argument('--tally-period', type=non_negative_float, default=5.0,
                        help='seconds between live tally lines (0 = none); default 5')
    parser.add_argument('--summary-out', type=Path, default=None, metavar='OUT.json',
                        help='also write the final summary (line + sorting gate tally) as JSON')
    parser.add_argument('--processes', action='store_true',
                        help='one process per node, started as `ros2 launch` starts them (the '
                             'node executables, the lifecycle manager); their logs go to '
                             '--log-dir. Default: every node composed in this process')
    parser.add_argument('--log-dir', type=Path, default=None,
                        help='--processes: where each node writes its log (default '
                             '~/.ros/log/bolt_inspection/<time>)')


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'line', help='run the closed inspection loop: PLC simulator + bridge + cameras + '
                     'classifier',
        description="Run the line's node graph (the launch file's node list) in one process "
                    'from the same params file. By default the loop is closed by an in-process '
                    'line PLC simulator on 127.0.0.1 (Modbus TCP, a free port): its conveyor '
                    'brings --bolts synthetic bolts to the cameras at --rate per minute, the '
                    'PLC bridge triggers the cameras and writes each verdict back, and the '
                    'sorting gate --gate-delay s later passes or rejects the bolt (no verdict '
                    'yet -> reject) and is scored against the scenario truth. Prints a live '
                    'tally, and a summary when every bolt has been sorted or on Ctrl-C.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_line_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bolt_inspection.runtime.line import LineOptions, run_line
    return run_line(LineOptions.from_namespace(args))
