"""``bolt-inspection plc-sim``: a simulated line PLC (Modbus TCP server + conveyor model)."""

from __future__ import annotations

from pathlib import Path

from bolt_inspection.commands._common import fraction, non_negative_float, positive_float


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'plc-sim', help='run a simulated line PLC (Modbus TCP server) that sorts and scores bolts',
        description='A real Modbus TCP server implementing the register map of config/plc.yaml '
                    'with a '
                    'conveyor model: bolts reach the camera station (bolt_counter++) and the '
                    'sorting gate GATE_DELAY s later, where the latest verdict for that bolt '
                    'decides (no verdict -> reject, fail-safe). A stale heartbeat stops the '
                    'conveyor. Synthetic bolts are scored against the truth. Ctrl-C stops it and '
                    'writes the summary.')
    parser.add_argument('--config', default=None,
                        help='plc.yaml to read (default: the shipped config/plc.yaml)')
    parser.add_argument('--host', default=None, help='bind address (default from config: '
                        '127.0.0.1)')
    parser.add_argument('--port', type=int, default=None, help='TCP port (default from config: '
                        '5020; 0 = any free port)')
    parser.add_argument('--rate', type=positive_float, default=None,
                        help='bolts per minute while the conveyor runs (default 60)')
    parser.add_argument('--gate-delay', type=non_negative_float, default=None,
                        help='seconds of travel from the camera station to the gate (default 2.0)')
    parser.add_argument('--seed', type=int, default=None, help='synthetic scenario seed')
    parser.add_argument('--defect-rate', type=fraction, default=None,
                        help='synthetic scenario defect rate (default 0.5)')
    parser.add_argument('--bolts', type=int, default=None,
                        help='stop after this many bolts have been sorted (0 = endless)')
    parser.add_argument('--heartbeat-timeout', type=non_negative_float, default=None,
                        help='stale heartbeat for this long stops the conveyor (0 = off)')
    parser.add_argument('--start', action='store_true',
                        help='start the conveyor at once (else wait for /line/start)')
    parser.add_argument('--summary', metavar='OUT.json', default=None, type=Path,
                        help='write the JSON summary here at exit')
    parser.add_argument('--quiet', action='store_true', help='no running summary lines')
    parser.set_defaults(func=run)


def run(args) -> int:
    import signal
    import sys
    import threading
    import time

    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.files import check_output_file
    from bolt_inspection.core.plc.contract import load_plc_config
    from bolt_inspection.core.plc.server import PlcSimulator, sim_with

    if args.summary:
        check_output_file(args.summary, '--summary')   # now, not when the run ends
    plc, sim = load_plc_config(args.config)
    if args.bolts is not None and args.bolts < 0:
        raise ConfigError(f'--bolts: expected a number >= 0, got {args.bolts}')
    if args.port is not None and not 0 <= args.port <= 65535:
        raise ConfigError(f'--port: expected 0..65535, got {args.port}')
    sim = sim_with(sim, rate_per_min=args.rate, gate_delay_s=args.gate_delay, seed=args.seed,
                   defect_rate=args.defect_rate, bolts=args.bolts,
                   heartbeat_timeout_s=args.heartbeat_timeout)
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    simulator = PlcSimulator(plc, sim, host=args.host, port=args.port).start()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        truth = 'scored against the synthetic truth' if simulator.model.truth else 'truth unknown'
        print(f'plc-sim: Modbus TCP on {simulator.host}:{simulator.port} unit any, '
              f'{sim.rate_per_min:g} bolts/min, gate delay {sim.gate_delay_s:g} s, '
              f'heartbeat timeout {sim.heartbeat_timeout_s:g} s, seed {sim.seed} ({truth})',
              flush=True)
        if args.start:
            simulator.set_running(True)
        period = sim.summary_period_s or 5.0
        next_print = time.monotonic() + period
        while not stop.wait(0.2):
            if sim.bolts and simulator.summary()['done']:
                break
            if not args.quiet and time.monotonic() >= next_print:
                print(simulator.summary_line(), flush=True)
                next_print += period
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        simulator.stop()
        print(simulator.summary_line(), flush=True)
        if args.summary:
            path = simulator.write_summary(args.summary)
            print(f'plc-sim: summary written to {path}', file=sys.stderr)
    return 0

