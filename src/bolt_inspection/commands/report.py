"""``bolt-inspection report``: shift statistics from the inspection log."""

from __future__ import annotations

import argparse
import json
import re
import time

from bolt_inspection.core.log.inspection_log import DEFAULT_DB_PATH


def _time_arg(text: str) -> str:
    from bolt_inspection.core.log.shift_report import parse_time

    try:
        parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'report', help='shift statistics from the inspection log (table, CSV, NG-rate chart)',
        description='Print bolts, OK/NG, NG by reason, NG rate, latency p50/p99 and PLC '
                    'delivery for a time window of the inspection log. Percentiles are '
                    'nearest-rank. Times: ISO 8601 (local time unless a zone is given) or an '
                    'offset into the past such as -8h, -30m, -2d.')
    parser.add_argument('--db', default=DEFAULT_DB_PATH,
                        help='inspection log database (default: %(default)s)')
    parser.add_argument('--since', type=_time_arg, default='-8h',
                        help='start of the window (default: %(default)s, one shift)')
    parser.add_argument('--until', type=_time_arg, default='now',
                        help='end of the window, exclusive (default: now)')
    parser.add_argument('--csv', metavar='OUT.csv',
                        help='also write one row per verdict in the window to this CSV file')
    parser.add_argument('--plot', metavar='OUT.png',
                        help='also save a chart of the NG rate over time to this PNG')
    parser.add_argument('--json', action='store_true',
                        help='print the statistics as JSON instead of a table')
    # Let `--since -8h` through: argparse takes any '-x' token for an option unless it looks like
    # a negative number, and by default only plain numbers ('-8') do. The report has no option
    # that starts with a digit, so offsets such as -8h / -1.5d are safe to treat as values.
    parser._negative_number_matcher = re.compile(r'^-\d+(\.\d+)?[smhdw]?$')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.files import check_output_file
    from bolt_inspection.core.log.inspection_log import read_verdicts
    from bolt_inspection.core.log.shift_report import (
        format_table,
        parse_time,
        plot_ng_rate,
        shift_stats,
        write_csv,
    )

    # Outputs first: an unwritable path fails now, not after the report has been printed.
    if args.csv:
        check_output_file(args.csv, '--csv')
    if args.plot:
        check_output_file(args.plot, '--plot')
    now_ns = time.time_ns()
    since_ns = parse_time(args.since, now_ns)
    until_ns = parse_time(args.until, now_ns)
    if until_ns <= since_ns:
        raise ConfigError(f'--until {args.until!r} is not after --since {args.since!r}')
    verdicts = read_verdicts(args.db, since_ns=since_ns, until_ns=until_ns,
                             with_images=bool(args.csv))   # image paths only go to the CSV
    stats = shift_stats(verdicts, since_ns, until_ns)
    if args.json:
        print(json.dumps(stats.as_dict(), indent=2))
    else:
        print(format_table(stats))
    if args.csv:
        print(f'wrote {write_csv(verdicts, args.csv)} ({len(verdicts)} verdicts)')
    if args.plot:
        print(f'wrote {plot_ng_rate(verdicts, stats, args.plot)}')
    return 0

