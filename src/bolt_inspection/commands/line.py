"""``bolt-inspection line``: the whole inspection line composed in one process.

The node list comes from :func:`bolt_inspection.graph.line_nodes` (the same function the launch
file calls) and every node's parameters from the same params file (``config/line.yaml``). All
nodes run in one MultiThreadedExecutor; the lifecycle nodes are configured and activated in
order. Until a PLC bridge drives ``/line/trigger``, this command triggers ``--bolts`` bolts at
``--rate`` bolts per minute itself, then prints a summary: bolts, OK/NG, latency, and for
synthetic bolts the agreement with the ground truth.
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
from bolt_inspection.commands._common import fraction, positive_int, size_wh
from bolt_inspection.core.config import load_yaml, node_parameters
from bolt_inspection.core.errors import ConfigError
from bolt_inspection.core.latency import percentile
from bolt_inspection.graph import SOURCES, NodeSpec, drives_triggers, line_nodes


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'line', help='run the inspection line (cameras + classifier) in one process',
        description="Run the line's node graph (the launch file's node list) in one process "
                    'from the same params file, trigger bolts and print a summary.')
    parser.add_argument('--params-file', type=Path, default=None,
                        help='params file (default: share/bolt_inspection/config/line.yaml)')
    parser.add_argument('--model', help='model artifact directory (classifier "model")')
    parser.add_argument('--source', choices=SOURCES, default=None,
                        help="camera source (default: the params file's, i.e. synthetic)")
    parser.add_argument('--bag', help='bag directory for --source bag')
    parser.add_argument('--folder', help='dataset folder for --source folder')
    parser.add_argument('--device', help='device spec for --source device ({} = camera index)')
    parser.add_argument('--bolts', type=positive_int, default=20,
                        help='bolts to trigger (with --plc: verdicts to wait for); default 20')
    parser.add_argument('--rate', type=float, default=60.0, help='bolts per minute (default 60)')
    parser.add_argument('--first-bolt', type=int, default=1, help='id of the first bolt')
    parser.add_argument('--size', type=size_wh, default=None,
                        help='camera frame size WxH (cameras "size" and classifier "frame_size")')
    parser.add_argument('--seed', type=int, default=None, help='synthetic scenario seed')
    parser.add_argument('--defect-rate', type=fraction, default=None,
                        help='synthetic defect rate')
    parser.add_argument('--view-timeout', type=float, default=None,
                        help='classifier view_timeout_s')
    parser.add_argument('--plc', action='store_true',
                        help='add the PLC bridge (config/plc.yaml): the PLC triggers the bolts; '
                             'runs until --bolts verdicts or Ctrl-C')
    parser.add_argument('--plc-host', default='', help='PLC host (default: plc.yaml)')
    parser.add_argument('--plc-port', type=int, default=0, help='PLC port (default: plc.yaml)')
    parser.add_argument('--drain', type=float, default=3.0,
                        help='with --plc: seconds the conveyor keeps running after the last '
                             'verdict so inspected bolts reach the sorting gate (default 3)')
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

    def lines(self) -> list[str]:
        out = [f'bolts triggered: {self.triggered}, verdicts: {self.verdicts} '
               f'(OK {self.ok}, NG {self.ng}, of which {self.ng_with_reason} NG with a reason)',
               f'trigger -> verdict latency: mean {self.mean_ms:.1f} ms, '
               f'p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms']
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
              truth: Mapping[str, str] | None = None) -> LineSummary:
    """Summarise verdict records (``bolt_id``, ``ok``, ``message``, ``latency_ms``)."""
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
        missing_ids=[b for b in triggered_ids if b not in first])


def node_parameter_values(spec: NodeSpec, config: Mapping[str, Any],
                          extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters a node gets: its params files, the line's file, the spec, then ``extra``."""
    values: dict[str, Any] = {}
    for name in spec.params_files:
        values.update(node_parameters(load_yaml(paths.config_path(name)), spec.name))
    values.update(node_parameters(config, spec.name))
    values.update(spec.parameters)
    values.update(extra or {})
    return values


def _load_class(path: str):
    module, _, name = path.partition(':')
    return getattr(importlib.import_module(module), name)


class ComposedLine:
    """The line's nodes in one process, on one MultiThreadedExecutor.

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
        from rclpy.executors import MultiThreadedExecutor

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
        self.executor = MultiThreadedExecutor(num_threads=max(4, len(self.nodes) + 2),
                                              context=context)
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
        from bolt_inspection.core.synth import bolt_spec
        seed, rate = int(params.get('seed', 0)), float(params.get('defect_rate', 0.5))
        return {b: bolt_spec(seed, int(b), rate).label for b in bolt_ids}
    folder = Path(str(params.get('folder', '')))
    if source == 'folder' and (folder / 'labels.csv').is_file():
        from bolt_inspection.core.dataset import load_dataset
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
            while len(driver.verdicts()) < bolts:
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


def wait_for_subscribers(publisher, count: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from bolt_inspection import rosenv
    from bolt_inspection.nodes.line_driver import LineDriver

    rosenv.apply_defaults()
    if args.rate <= 0:
        raise ConfigError(f'--rate must be > 0 bolts per minute, got {args.rate}')
    params_file = args.params_file or paths.config_path('line.yaml')
    config = load_yaml(params_file)
    source = args.source or node_parameters(config, 'cam0').get('source', 'synthetic')
    specs = line_nodes(source=source, model=args.model or '', bag=args.bag or '',
                       folder=args.folder or '', device=args.device or '', plc=args.plc,
                       plc_host=args.plc_host, plc_port=args.plc_port)
    context = rclpy.Context()
    # Ctrl-C stays a KeyboardInterrupt in this thread, so the nodes are shut down in order.
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    line = None
    try:
        line = ComposedLine(specs, config, context=context,
                            overrides=cli_overrides(args, specs))
        driver = LineDriver('line_driver', context=context)
        line.add_node(driver)
        line.start()
        timeout = float(line.parameters['classifier'].get('view_timeout_s', 1.0)) + 15.0
        print(f'line up: {", ".join(s.name for s in specs)} (params {params_file})',
              flush=True)
        view_timeout = float(line.parameters['classifier'].get('view_timeout_s', 1.0))
        if drives_triggers(specs):
            ids = follow(line, driver, bolts=args.bolts, grace_s=view_timeout + 2.0,
                         drain_s=max(0.0, args.drain))
        else:
            wait_for_subscribers(driver.trigger_pub, len(specs))
            time.sleep(0.5)  # subscriber side of the match (best-effort images)
            ids = drive(line, driver, bolts=args.bolts, rate_per_min=args.rate,
                        first_bolt=args.first_bolt, timeout_s=timeout,
                        grace_s=view_timeout + 2.0)
        summary = summarize(driver.verdicts(), ids, ground_truth(line, ids))
        for text in summary.lines():
            print(text)
        classifier = line.nodes.get('classifier')
        if classifier is not None and classifier.join_wait.count:
            print(f'  of which: trigger -> all views joined p50 {classifier.join_wait.p50():.1f} '
                  f'ms (p99 {classifier.join_wait.p99():.1f}), inspection (ROI + model + '
                  f'Grad-CAM) p50 {classifier.inspect_time.p50():.1f} ms '
                  f'(p99 {classifier.inspect_time.p99():.1f})')
        if getattr(driver, 'interrupted', False):
            return 130
        return 0 if not summary.missing_ids else 1
    except KeyboardInterrupt:
        print('interrupted', flush=True)
        return 130
    finally:
        if line is not None:
            line.stop()
        context.try_shutdown()
