"""``bolt-inspection line``: the whole inspection line composed in one process.

The node list comes from :func:`bolt_inspection.graph.line_nodes` (the same function the launch
file calls) and every node's parameters from the same params file (``config/line.yaml``). All
nodes run in one multi-threaded executor (:mod:`bolt_inspection.nodes.executor`); the lifecycle
nodes are configured and activated in order.

Who triggers the bolts:

* default — the CLOSED LOOP: an in-process line PLC simulator
  (:class:`bolt_inspection.core.plc.server.PlcSimulator`, Modbus TCP on 127.0.0.1, a free port)
  whose
  conveyor brings ``--bolts`` bolts to the cameras at ``--rate`` per minute; the PLC bridge turns
  its counter into ``/line/trigger`` and writes every verdict back; the simulated sorting gate
  passes or rejects each bolt ``--gate-delay`` s later and scores the sort against the synthetic
  scenario's truth (the cameras' seed and defect rate).
* ``--plc-host/--plc-port`` (or ``--plc``) — a real (or separately started) PLC; no simulator.
* ``--no-plc`` — no PLC at all: this command triggers the bolts itself.
* ``--source bag`` — the recorded triggers.

It prints a live tally every ``--tally-period`` s and a summary at the end (optionally as JSON).
"""

from __future__ import annotations

import argparse
import importlib
import math
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bolt_inspection import paths
from bolt_inspection.commands._common import (
    fraction,
    non_negative_float,
    positive_float,
    positive_int,
    size_wh,
)
from bolt_inspection.core.config import load_yaml, node_parameters
from bolt_inspection.core.errors import ConfigError
from bolt_inspection.core.line.latency import percentile
from bolt_inspection.graph import (  # noqa: F401 - node_parameter_values: re-exported
    SOURCES,
    NodeSpec,
    drives_triggers,
    line_nodes,
    node_parameter_values,
)


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


@dataclass
class LineSummary:
    """What a user checks after a run."""

    triggered: int
    verdicts: int
    ok: int
    ng: int
    ng_with_reason: int
    mean_ms: float
    p99_ms: float
    max_ms: float
    agreement: float | None = None
    compared: int = 0
    missing_ids: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skipped_ids: list[str] = field(default_factory=list)
    bad_verdicts: int = 0

    def lines(self) -> list[str]:
        out = [f'bolts triggered: {self.triggered}, verdicts: {self.verdicts} '
               f'(OK {self.ok}, NG {self.ng}, of which {self.ng_with_reason} NG with a reason)',
               f'trigger -> verdict latency: mean {self.mean_ms:.1f} ms, '
               f'p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms']
        if self.skipped:
            shown = ', '.join(self.skipped_ids[:10]) + (', ...' if self.skipped > 10 or
                                                       not self.skipped_ids else '')
            out.append(f'skipped by the PLC bridge: {self.skipped} bolts ({shown}): no trigger, '
                       'no verdict; the PLC rejects them (fail-safe)')
        if self.bad_verdicts:
            out.append(f'{self.bad_verdicts} malformed verdict messages dropped (their bolts '
                       'get no verdict: the PLC rejects them)')
        if self.agreement is not None:
            out.append(f'agreement with ground truth: {self.agreement:.1%} '
                       f'of {self.compared} bolts')
        for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:5]:
            out.append(f'  {n} x {reason}')
        if self.missing_ids:
            out.append(f'NO verdict for {len(self.missing_ids)} bolts: '
                       + ', '.join(self.missing_ids[:10]))
        return out


def summarize(records, triggered_ids: list[str],
              truth: Mapping[str, str] | None = None, *, skipped_ids=(),
              skipped: int | None = None, bad_verdicts: int = 0) -> LineSummary:
    """Summarise verdict records (``bolt_id``, ``ok``, ``message``, ``latency_ms``).

    Args:
        records: The decoded verdicts (:class:`bolt_inspection.nodes.line_driver.VerdictRecord`).
        triggered_ids: The bolts triggered.
        truth: Bolt id -> 'OK'/'NG' when known.
        skipped_ids: Bolts the PLC bridge saw pass unseen (a counter jump or an outage).
        skipped: How many there were (default ``len(skipped_ids)``; the bridge names only its
            last 200).
        bad_verdicts: Malformed verdict messages the driver dropped.
    """
    first = {}
    for rec in records:
        first.setdefault(rec.bolt_id, rec)
    latencies = [r.latency_ms for r in first.values() if r.latency_ms is not None]
    ok = sum(1 for r in first.values() if r.ok)
    agreement, compared = None, 0
    if truth:
        pairs = [(('OK' if r.ok else 'NG'), truth[b]) for b, r in first.items() if b in truth]
        compared = len(pairs)
        agreement = sum(a == b for a, b in pairs) / compared if compared else None
    return LineSummary(
        triggered=len(triggered_ids), verdicts=len(first), ok=ok, ng=len(first) - ok,
        ng_with_reason=sum(1 for r in first.values() if r.message.startswith('NG:')),
        mean_ms=sum(latencies) / len(latencies) if latencies else math.nan,
        p99_ms=percentile(latencies, 99), max_ms=max(latencies) if latencies else math.nan,
        agreement=agreement, compared=compared,
        reasons=dict(Counter(r.message for r in first.values() if r.message.startswith('NG:'))),
        missing_ids=[b for b in triggered_ids if b not in first],
        skipped=len(skipped_ids) if skipped is None else int(skipped),
        skipped_ids=[str(b) for b in skipped_ids],
        bad_verdicts=int(bad_verdicts))


def _load_class(path: str):
    module, _, name = path.partition(':')
    return getattr(importlib.import_module(module), name)


class ComposedLine:
    """The line's nodes in one process, on one multi-threaded executor.

    Args:
        specs: The node list (:func:`bolt_inspection.graph.line_nodes`).
        config: The params-file mapping.
        context: The rclpy Context.
        overrides: Node name -> parameter overrides on top of everything else.
        node_kwargs: Node name -> extra constructor keyword arguments (tests inject fakes).
    """

    def __init__(self, specs: list[NodeSpec], config: Mapping[str, Any], *, context,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 node_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        from bolt_inspection.nodes.executor import make_executor
        from bolt_inspection.nodes.lifecycle_util import to_parameters
        self.specs = list(specs)
        self.context = context
        self.parameters = {s.name: node_parameter_values(s, config, (overrides or {}).get(s.name))
                           for s in self.specs}
        self.nodes = {}
        for spec in self.specs:
            cls = _load_class(spec.node_class)
            kwargs = dict((node_kwargs or {}).get(spec.name, {}))
            self.nodes[spec.name] = cls(spec.name, context=context,
                                        parameter_overrides=to_parameters(
                                            self.parameters[spec.name]), **kwargs)
        # Cameras publish from their trigger callbacks and the classifier decodes in its
        # subscription callbacks: enough threads that four cameras run at once.
        self.executor = make_executor(context, num_threads=max(4, len(self.nodes) + 2))
        for node in self.nodes.values():
            self.executor.add_node(node)
        self._thread: threading.Thread | None = None

    def add_node(self, node) -> None:
        """Add a helper node (e.g. the line driver) to the executor."""
        self.executor.add_node(node)
        self.nodes[node.get_name()] = node

    def start(self) -> None:
        """Spin, then configure and activate the lifecycle nodes in order.

        Raises:
            ConfigError: A node failed to configure or activate (its log line says why).
        """
        from bolt_inspection.nodes.lifecycle_util import bring_up
        self._thread = threading.Thread(target=self.executor.spin, name='line-executor',
                                        daemon=True)
        self._thread.start()
        for spec in self.specs:
            if spec.lifecycle and not bring_up(self.nodes[spec.name]):
                raise ConfigError(f'node {spec.name} failed to configure/activate '
                                  '(see its log line above)')

    def stop(self) -> None:
        """Deactivate in reverse start order (the classifier last, so bolts in flight still get
        their verdicts) and destroy every node."""
        from bolt_inspection.nodes.lifecycle_util import bring_down
        for spec in reversed(self.specs):
            node = self.nodes.get(spec.name)
            if spec.lifecycle and node is not None:
                try:
                    bring_down(node)
                except Exception as exc:  # noqa: BLE001 - keep shutting the others down
                    node.get_logger().warning(f'shutdown: {exc}')
        self.executor.shutdown(timeout_sec=5.0)
        if self._thread is not None:
            # Destroying nodes under a still-spinning executor thread can abort the process.
            self._thread.join(timeout=5.0)
        for node in self.nodes.values():
            node.destroy_node()


def cli_overrides(args: argparse.Namespace, specs: list[NodeSpec]) -> dict[str, dict]:
    """Per-node overrides from the command-line options."""
    out: dict[str, dict] = {}
    for spec in specs:
        values: dict[str, Any] = {}
        if spec.executable == 'camera_node':
            if args.size:
                values['size'] = list(args.size)
            if args.seed is not None:
                values['seed'] = args.seed
            if args.defect_rate is not None:
                values['defect_rate'] = args.defect_rate
        if spec.executable == 'classifier_node':
            if args.size:
                values['frame_size'] = list(args.size)
            if args.view_timeout is not None:
                values['view_timeout_s'] = args.view_timeout
        out[spec.name] = values
    return out


def ground_truth(line: ComposedLine, bolt_ids: list[str]) -> dict[str, str] | None:
    """Known labels of the triggered bolts: synthetic bolts from their spec, a dataset folder's
    bolts from its labels.csv; None when the cameras see unknown bolts."""
    cams = [s for s in line.specs if s.executable == 'camera_node']
    if not cams:
        return None
    params = line.parameters[cams[0].name]
    source = params.get('source', 'synthetic')
    if source == 'synthetic':
        from bolt_inspection.core.vision.synth import bolt_spec
        seed, rate = int(params.get('seed', 0)), float(params.get('defect_rate', 0.5))
        return {b: bolt_spec(seed, int(b), rate).label for b in bolt_ids}
    folder = Path(str(params.get('folder', '')))
    if source == 'folder' and (folder / 'labels.csv').is_file():
        from bolt_inspection.core.vision.dataset import load_dataset
        labels = {b: views[0].bolt_label
                  for b, views in load_dataset(folder).bolts().items() if views}
        # Only bolts the folder has under that id: the others are replayed in folder order.
        truth = {b: labels[str(int(b))] for b in bolt_ids
                 if b.isdigit() and str(int(b)) in labels}
        return truth or None
    return None


def drive(line: ComposedLine, driver, *, bolts: int, rate_per_min: float, first_bolt: int,
          timeout_s: float, grace_s: float = 3.0) -> list[str]:
    """Trigger ``bolts`` bolts at ``rate_per_min``, then wait for their verdicts.

    Ctrl-C stops triggering; the bolts already triggered still get ``grace_s`` to be answered
    (a second Ctrl-C skips that). Sets ``driver.interrupted``.
    """
    period = 60.0 / rate_per_min
    ids: list[str] = []
    start = time.monotonic()
    driver.interrupted = False
    try:
        for i in range(bolts):
            due = start + i * period
            time.sleep(max(0.0, due - time.monotonic()))
            driver.trigger(first_bolt + i)
            ids.append(str(first_bolt + i))
        driver.wait_for_verdicts(len(ids), timeout_s=timeout_s)
    except KeyboardInterrupt:
        driver.interrupted = True
        print(f'interrupted: no more triggers; waiting up to {grace_s:.0f} s for the bolts in '
              'flight', flush=True)
        try:
            driver.wait_for_verdicts(len(ids), timeout_s=grace_s)
        except KeyboardInterrupt:
            pass
    return ids


def follow(line: ComposedLine, driver, *, bolts: int, grace_s: float,
           drain_s: float = 0.0) -> list[str]:
    """Let the line's own trigger source run: a bag player to its end, or the PLC bridge until
    ``bolts`` verdicts arrived; Ctrl-C stops either. Returns the bolt ids triggered."""
    player = line.nodes.get('bag_player')
    driver.interrupted = False
    plc = 'plc_bridge' in line.nodes
    if plc:
        # The bridge connects in its worker after activation; retry until the PLC answers.
        deadline = time.monotonic() + 15.0
        while True:
            ok, message = driver.call_trigger_service('/line/start')
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f'conveyor start: {"ok" if ok else "FAILED"} {message}'.rstrip(), flush=True)
    print('triggers come from ' + ('the bag' if player is not None else 'the PLC')
          + ' (Ctrl-C to stop)', flush=True)
    try:
        if player is not None:
            while not player.done.wait(0.2):
                pass
        else:
            bridge = line.nodes.get('plc_bridge')
            # A bolt the bridge saw skipped (counter jump) gets no trigger and no verdict:
            # the PLC rejects it; count it as done rather than wait for it forever.
            while len(driver.verdicts()) + driver.bad_verdicts + _skipped(bridge) < bolts:
                time.sleep(0.2)
            # The inspected bolts are still on the belt between the cameras and the gate.
            time.sleep(drain_s)
    except KeyboardInterrupt:
        driver.interrupted = True
        print('interrupted: stopping the line', flush=True)
    try:
        if plc:
            # Stop feeding bolts; the ones on the belt still get their verdicts.
            ok, message = driver.call_trigger_service('/line/stop', timeout_s=5.0)
            print(f'conveyor stop: {"ok" if ok else "FAILED"} {message}'.rstrip(), flush=True)
        driver.wait_for_verdicts(len(driver.triggered_ids()), timeout_s=grace_s)
    except KeyboardInterrupt:
        pass
    return driver.triggered_ids()


def plc_mode(args: argparse.Namespace, source: str) -> str:
    """Who triggers the bolts: 'sim' (default), 'external', 'none' (--no-plc) or 'bag'.

    Raises:
        ConfigError: --no-plc together with an external PLC option.
    """
    external = bool(args.plc or args.plc_host or args.plc_port)
    if args.no_plc and external:
        raise ConfigError('--no-plc contradicts --plc/--plc-host/--plc-port')
    if args.plc_port and not 0 < args.plc_port <= 65535:
        raise ConfigError(f'--plc-port: expected 1..65535, got {args.plc_port}')
    if source == 'bag':
        return 'bag'
    if args.no_plc:
        return 'none'
    return 'external' if external else 'sim'


def scenario_truth(params: Mapping[str, Any]):
    """``bolt id -> 'OK'/'NG'`` for the simulator's scoring, from a camera's parameters:
    the synthetic scenario, a dataset folder's labels.csv, else None (sorts not scored)."""
    source = params.get('source', 'synthetic')
    if source == 'synthetic':
        return 'auto'
    folder = Path(str(params.get('folder', '')))
    if source == 'folder' and (folder / 'labels.csv').is_file():
        from bolt_inspection.core.vision.dataset import load_dataset
        labels = {int(b): views[0].bolt_label
                  for b, views in load_dataset(folder).bolts().items() if views and b.isdigit()}
        return labels.get
    return None


def start_simulator(args: argparse.Namespace, camera_params: Mapping[str, Any]):
    """The in-process line PLC of the closed loop, on 127.0.0.1 at a free port.

    Its scenario (seed, defect rate) is the cameras', so it scores each sort against the truth
    of the very bolts the cameras rendered.
    """
    from bolt_inspection.core.plc.server import PlcSimulator
    if not (math.isfinite(args.rate) and args.rate > 0):
        raise ConfigError(f'--rate must be > 0 bolts per minute, got {args.rate}')
    overrides = {'rate_per_min': float(args.rate), 'bolts': int(args.bolts),
                 'seed': int(camera_params.get('seed', 0)),
                 'defect_rate': float(camera_params.get('defect_rate', 0.5))}
    if args.gate_delay is not None:
        overrides['gate_delay_s'] = float(args.gate_delay)
    return PlcSimulator.from_config(host='127.0.0.1', port=0,
                                    truth=scenario_truth(camera_params), **overrides).start()


def verdict_tally(driver) -> str:
    """Verdicts seen so far, as the live tally's second half."""
    summary = summarize(driver.verdicts(), [])
    text = f'verdicts {summary.verdicts} (OK {summary.ok} NG {summary.ng})'
    if summary.verdicts and not math.isnan(summary.mean_ms):
        text += f' latency mean {summary.mean_ms:.0f} ms max {summary.max_ms:.0f} ms'
    return text


def gate_lines(sim: Mapping[str, Any]) -> list[str]:
    """The sorting gate's scored tally (a simulator summary) for the final summary."""
    out = [f'sorting gate: {sim["sorted"]} bolts sorted (passed {sim["passed"]}, rejected '
           f'{sim["rejected"]}); fail-safe rejects (no verdict at the gate) '
           f'{sim["failsafe_rejects"]}, late verdicts {sim["late_verdicts"]}, still on the '
           f'belt {sim["in_transit"]}']
    if sim.get('scored'):
        out.append(f'  vs truth: true pass {sim["true_pass"]}, false pass {sim["false_pass"]}, '
                   f'true reject {sim["true_reject"]}, false reject {sim["false_reject"]} -> '
                   f'sorting accuracy {sim["accuracy"]:.1%} of {sim["scored"]} bolts')
    lat = sim.get('verdict_latency_ms') or {}
    if lat.get('n'):
        out.append(f'  camera station -> verdict at the PLC: p50 {lat["p50"]} ms, p95 '
                   f'{lat["p95"]} ms, max {lat["max"]} ms (gate at '
                   f'{sim["config"]["gate_delay_s"] * 1000:.0f} ms)')
    if sim.get('failsafe_bolt_ids'):
        out.append('  fail-safe rejected bolts: '
                   + ', '.join(str(b) for b in sim['failsafe_bolt_ids'][:10]))
    if sim.get('late_verdict_bolt_ids'):
        out.append('  late verdicts for bolts: '
                   + ', '.join(str(b) for b in sim['late_verdict_bolt_ids'][:10]))
    return out


def closed_loop(driver, sim, *, grace_s: float, tally_s: float = 5.0,
                stall_s: float = 30.0) -> str:
    """Run the simulated conveyor until every bolt of its scenario has been sorted.

    Presses start once (``/line/start`` through the bridge, as an operator would) and prints a
    live tally every ``tally_s`` seconds. A conveyor that stops (the operator's Stop on the HMI,
    or the PLC watchdog) stays stopped until the operator starts it again: this runner never
    overrides a stop, and a stopped conveyor is not a stall. Ctrl-C: the bolts already inspected
    get their verdicts and ride on to the gate, then ``/line/stop`` (a second Ctrl-C skips the
    wait).

    Returns:
        'done' (all sorted), 'interrupted' (Ctrl-C), 'stalled' (the conveyor ran but no bolt
        moved for ``stall_s``) or 'no-start' (the PLC never started).
    """
    deadline = time.monotonic() + 15.0
    while True:  # the bridge connects in its worker after activation
        ok, message = driver.call_trigger_service('/line/start')
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(f'conveyor start: {"ok" if ok else "FAILED"} {message}'.rstrip(), flush=True)
    if not ok:
        return 'no-start'
    print(f'closed loop: PLC simulator at {sim.host}:{sim.port}, '
          f'{sim.sim.rate_per_min:g} bolts/min, gate delay {sim.sim.gate_delay_s:g} s, '
          f'{sim.sim.bolts} bolts (Ctrl-C to stop)', flush=True)
    outcome = 'done'
    next_tally = time.monotonic() + tally_s
    last_progress, progress_at = None, time.monotonic()
    stopped = False
    try:
        while True:
            state = sim.summary()
            if state['done']:
                break
            now = time.monotonic()
            progress = (state['bolts_in'], state['sorted'])
            if not state['running']:
                if not stopped:
                    why = ('the PLC watchdog (heartbeat stale)' if state.get('heartbeat_stale')
                           else 'a Stop (operator or PLC)')
                    print(f'conveyor stopped by {why}; waiting for Start from the operator '
                          '(HMI or /line/start); Ctrl-C ends the run', flush=True)
                stopped = True
                progress_at = now          # waiting for the operator is not a stall
            elif stopped:
                stopped = False
                print('conveyor running again', flush=True)
            if progress != last_progress:
                last_progress, progress_at = progress, now
            elif now - progress_at > stall_s:
                print(f'error: no bolt moved for {stall_s:.0f} s; stopping', flush=True)
                outcome = 'stalled'
                break
            if tally_s and now >= next_tally:
                print(f'{sim.summary_line()} | {verdict_tally(driver)}', flush=True)
                next_tally += tally_s
            time.sleep(0.1)
    except KeyboardInterrupt:
        outcome = 'interrupted'
        driver.interrupted = True
        print('interrupted: the inspected bolts ride on to the gate, then the conveyor stops '
              '(Ctrl-C again to stop at once)', flush=True)
        try:
            driver.wait_for_verdicts(len(driver.triggered_ids()), timeout_s=grace_s)
            time.sleep(sim.sim.gate_delay_s + 0.3)
        except KeyboardInterrupt:
            pass
    try:
        ok, message = driver.call_trigger_service('/line/stop', timeout_s=5.0)
        print(f'conveyor stop: {"ok" if ok else "FAILED"} {message}'.rstrip(), flush=True)
    except KeyboardInterrupt:
        pass
    return outcome


def _skipped(bridge) -> int:
    counters = getattr(bridge, 'counters', None) or {}
    return int(counters.get('skipped_bolts', 0))


def _skipped_ids(bridge) -> list[str]:
    """The bolts the PLC bridge saw pass unseen, as ids (the last 200 it keeps)."""
    return [str(b) for b in list(getattr(bridge, 'recent_skipped', ()))]


def wait_for_subscribers(publisher, count: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def write_summary(path: Path, *, mode: str, summary: LineSummary, sim: dict | None,
                  breakdown: dict | None) -> Path:
    """The final summary as JSON: the line's verdicts and the sorting gate's scored tally."""
    import dataclasses
    import json

    from bolt_inspection.core.files import atomic_output
    path = Path(path)

    def clean(value):  # JSON has no NaN
        return None if isinstance(value, float) and math.isnan(value) else value
    line = {k: clean(v) for k, v in dataclasses.asdict(summary).items()}
    text = json.dumps({'mode': mode, 'line': line, 'plc': sim,
                       'latency_breakdown_ms': breakdown}, indent=2) + '\n'
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding='utf-8')
    return path


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from bolt_inspection import rosenv
    from bolt_inspection.core.files import check_output_file
    from bolt_inspection.nodes.line_driver import LineDriver

    rosenv.apply_defaults()
    if not (math.isfinite(args.rate) and args.rate > 0):    # also for callers without argparse
        raise ConfigError(f'--rate must be > 0 bolts per minute, got {args.rate}')
    if args.summary_out:
        check_output_file(args.summary_out, '--summary-out')   # now, not after the run
    params_file = args.params_file or paths.config_path('line.yaml')
    config = load_yaml(params_file)
    source = args.source or node_parameters(config, 'cam0').get('source', 'synthetic')
    mode = plc_mode(args, source)
    processes = getattr(args, 'processes', False)
    if processes and mode not in ('sim', 'none'):
        raise ConfigError('--processes runs the closed loop or --no-plc; for an external PLC or '
                          'a bag use `ros2 launch bolt_inspection line.launch.py`')
    sim = None
    if mode == 'sim':
        # The cameras' scenario (params file + options) is the simulator's scenario.
        probe = line_nodes(source=source, model=args.model or '', folder=args.folder or '',
                           device=args.device or '')
        cam = next(s for s in probe if s.executable == 'camera_node')
        cam_params = node_parameter_values(cam, config, cli_overrides(args, [cam])[cam.name])
        sim = start_simulator(args, cam_params)
    specs = line_nodes(source=source, model=args.model or '', bag=args.bag or '',
                       folder=args.folder or '', device=args.device or '',
                       plc=mode in ('sim', 'external'),
                       plc_host='127.0.0.1' if sim else args.plc_host,
                       plc_port=sim.port if sim else args.plc_port,
                       log=getattr(args, 'log', False), hmi=getattr(args, 'hmi', False),
                       manager=processes)
    context = rclpy.Context()
    # Ctrl-C stays a KeyboardInterrupt in this thread, so the nodes are shut down in order.
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    line = None
    try:
        if processes:
            from bolt_inspection.runtime.processes import LaunchedLine
            log_dir = args.log_dir or (Path.home() / '.ros' / 'log' / 'bolt_inspection'
                                       / time.strftime('%Y-%m-%d-%H-%M-%S'))
            print(f'one process per node; logs in {log_dir}', flush=True)
            line = LaunchedLine(specs, params_file, context=context,
                                overrides=cli_overrides(args, specs), log_dir=log_dir)
        else:
            line = ComposedLine(specs, config, context=context,
                                overrides=cli_overrides(args, specs))
        driver = LineDriver('line_driver', context=context)
        line.add_node(driver)
        line.start()
        timeout = float(line.parameters['classifier'].get('view_timeout_s', 1.0)) + 15.0
        print(f'line up: {", ".join(s.name for s in specs)} (params {params_file})',
              flush=True)
        view_timeout = float(line.parameters['classifier'].get('view_timeout_s', 1.0))
        outcome = 'done'
        # The cameras, the classifier and the driver itself listen to /line/trigger.
        listeners = 1 + sum(s.executable in ('camera_node', 'classifier_node') for s in specs)
        if mode == 'sim':
            wait_for_subscribers(driver.trigger_pub, listeners)
            time.sleep(0.5)  # subscriber side of the match (best-effort images)
            outcome = closed_loop(driver, sim, grace_s=view_timeout + 2.0,
                                  tally_s=args.tally_period,
                                  stall_s=max(30.0, 3 * 60.0 / args.rate + 20.0))
            ids = driver.triggered_ids()
        elif drives_triggers(specs):
            ids = follow(line, driver, bolts=args.bolts, grace_s=view_timeout + 2.0,
                         drain_s=max(0.0, args.drain))
        else:
            wait_for_subscribers(driver.trigger_pub, listeners)
            time.sleep(0.5)  # subscriber side of the match (best-effort images)
            ids = drive(line, driver, bolts=args.bolts, rate_per_min=args.rate,
                        first_bolt=args.first_bolt, timeout_s=timeout,
                        grace_s=view_timeout + 2.0)
        summary = summarize(driver.verdicts(), ids, ground_truth(line, ids),
                            skipped_ids=_skipped_ids(line.nodes.get('plc_bridge')),
                            skipped=_skipped(line.nodes.get('plc_bridge')),
                            bad_verdicts=driver.bad_verdicts)
        print('--- summary ---')
        for text in summary.lines():
            print(text)
        classifier = line.nodes.get('classifier')
        breakdown = None
        if classifier is not None and classifier.join_wait.count:
            breakdown = {'join_wait_p50': classifier.join_wait.p50(),
                         'join_wait_p99': classifier.join_wait.p99(),
                         'inspection_p50': classifier.inspect_time.p50(),
                         'inspection_p99': classifier.inspect_time.p99()}
            print(f'  of which: trigger -> all views joined p50 {classifier.join_wait.p50():.1f} '
                  f'ms (p99 {classifier.join_wait.p99():.1f}), inspection (ROI + model + '
                  f'Grad-CAM) p50 {classifier.inspect_time.p50():.1f} ms '
                  f'(p99 {classifier.inspect_time.p99():.1f})')
        sim_summary = sim.summary() if sim is not None else None
        if sim_summary is not None:
            for text in gate_lines(sim_summary):
                print(text)
        if args.summary_out:
            path = write_summary(args.summary_out, mode=mode, summary=summary, sim=sim_summary,
                                 breakdown=breakdown)
            print(f'summary written to {path}')
        if getattr(driver, 'interrupted', False) or outcome == 'interrupted':
            return 130
        if outcome != 'done':
            return 1
        return 0 if not summary.missing_ids else 1
    except KeyboardInterrupt:
        print('interrupted', flush=True)
        return 130
    finally:
        if line is not None:
            line.stop()
        context.try_shutdown()
        if sim is not None:
            sim.stop()
