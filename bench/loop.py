"""The closed loop: PLC simulator -> bridge -> cameras -> classifier -> bridge -> verdict regs.

This process runs the PLC simulator (``core.plc.server.PlcSimulator``, a real Modbus TCP server on
127.0.0.1) and steps the conveyor rate. The line (``graph.line_nodes``: 4 synthetic cameras +
classifier + PLC bridge) runs in one of two shapes (``--shape``):

* ``composed`` — one child process (``loop.py line ...``) with every node on one executor, like
  ``bolt-inspection line --plc``;
* ``processes`` — one process per node from the installed executables plus the lifecycle
  manager, exactly as ``ros2 launch bolt_inspection line.launch.py`` starts them
  (``runtime.processes.ProcessLine``); the verdicts are observed by a probe node in this
  process. CPU and peak RSS are summed over the node processes.

For each rate the simulator gets a fresh conveyor program (a PLC reset: the bridge sees its
counter restart and resyncs, no reconnect), presses start, feeds ``rate * duration`` bolts and
waits until every bolt passed the gate. Measured per step: bolt at camera -> verdict registers
written (the simulator's own clock: the whole loop), late verdicts and fail-safe rejects at the
gate, and on the line side every verdict's message (missing view / overloaded = dropped) and the
classifier's trigger -> publish latency; CPU of both processes over the step (from /proc); the
line's peak RSS; the bridge's Modbus poll and verdict-write round trips.

A rate is *sustained* when every bolt got its verdict before the gate with no late verdict, no
fail-safe reject, no dropped view and no 'overloaded' bolt.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import common

SHAPES = ('composed', 'processes')

HERE = Path(__file__).resolve().parent


def _clock_ticks() -> int:
    return os.sysconf('SC_CLK_TCK')


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process in seconds (from /proc/<pid>/stat)."""
    try:
        text = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    fields = text.rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# The line process


def verdict_event(msg) -> dict:
    """One /inspection/verdict as an event line: bolt, message, latency (read by
    core.line.verdict)."""
    from bolt_inspection.core.line.verdict import VerdictDecodeError, decode_verdict
    try:
        verdict = decode_verdict(msg)
    except VerdictDecodeError as exc:
        return {'bolt': str(msg.bolt_id)[:20], 'message': f'malformed: {exc}',
                'latency_ms': float('nan')}
    latency = verdict.latency_ms
    return {'bolt': verdict.bolt_id, 'message': verdict.message,
            'latency_ms': float('nan') if latency is None else latency,
            'model_id': verdict.model_id}


def line_child(args) -> int:
    domain = common.setup_env()
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from bolt_inspection import paths
    from bolt_inspection.core.config import load_yaml
    from bolt_inspection.graph import NodeSpec, line_nodes
    from bolt_inspection.nodes import topics
    from bolt_inspection.nodes.plc_bridge_node import VERDICT_QOS
    from bolt_inspection.runtime.composed import ComposedLine

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    events = open(args.events, 'a', buffering=1, encoding='utf-8')  # noqa: SIM115 - long-lived

    def emit(**record) -> None:
        events.write(json.dumps(record) + '\n')

    bridge_params = {'host': '127.0.0.1', 'port': int(args.port)}
    if 'plc' in inspect.signature(line_nodes).parameters:
        # The product's own composition (what `bolt-inspection line --plc` runs).
        specs = line_nodes(source='synthetic', model=str(args.artifact), plc=True,
                           plc_host='127.0.0.1', plc_port=int(args.port))
    else:
        specs = line_nodes(source='synthetic', model=str(args.artifact))
    if not any(s.executable == 'plc_bridge_node' for s in specs):
        specs.append(NodeSpec('plc_bridge', 'plc_bridge_node',
                              'bolt_inspection.nodes.plc_bridge_node:PlcBridgeNode',
                              parameters=bridge_params))
    overrides = {s.name: {'size': list(args.frame_size), 'prefetch': not args.no_prefetch}
                 for s in specs if s.executable == 'camera_node'}
    overrides['classifier'] = {'frame_size': list(args.frame_size)}
    if args.engine:
        overrides['classifier']['engine'] = args.engine
    overrides.update({s.name: dict(bridge_params) for s in specs
                      if s.executable == 'plc_bridge_node'})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain,
               signal_handler_options=SignalHandlerOptions.NO)
    t_start = time.perf_counter()
    line = None
    out: dict = {'role': 'line', 'pid': os.getpid()}
    try:
        line = ComposedLine(specs, load_yaml(paths.config_path('line.yaml')), context=context,
                            overrides=overrides)
        peer = rclpy.create_node('bench_verdict_probe', context=context)

        def on_verdict(msg) -> None:
            emit(t=time.time(), **verdict_event(msg))
        peer.create_subscription(topics.VERDICT_TYPE, topics.VERDICT, on_verdict, VERDICT_QOS)
        line.add_node(peer)
        line.start()
        bridge = next(n for s, n in zip(line.specs, [line.nodes[s.name] for s in line.specs],
                                        strict=True) if s.executable == 'plc_bridge_node')
        emit(t=time.time(), event='ready', bring_up_s=time.perf_counter() - t_start)
        while not stop.wait(0.2):
            pass
        classifier = line.nodes['classifier']
        out['classifier_counts'] = dict(classifier.counts)
        out['classifier_latency_ms'] = classifier.latency.samples
        if classifier.joiner is not None:
            out['join_stats'] = {'stale_views': classifier.joiner.stats.stale,
                                 'duplicate_views': classifier.joiner.stats.duplicate_views}
        out['camera_errors'] = {s.name: line.nodes[s.name].errors for s in line.specs
                                if s.executable == 'camera_node'}
        # Mosaics are rendered on the classifier's image thread, which drops the oldest when
        # behind; the cameras' prefetch misses say how often a trigger had to render.
        out['mosaics_dropped'] = getattr(classifier, 'images_dropped', None)
        sources = {s.name: line.nodes[s.name].source for s in line.specs
                   if s.executable == 'camera_node'}
        out['camera_prefetch'] = {name: {'hits': getattr(src, 'prefetch_hits', None),
                                         'misses': getattr(src, 'prefetch_misses', None)}
                                  for name, src in sources.items() if src is not None}
        stats = bridge.stats()
        out['bridge_stats'] = {k: v for k, v in stats.items() if not isinstance(v, (list, dict))}
        out['modbus_poll_ms'] = list(bridge.poll_ms)
        out['modbus_write_ms'] = list(bridge.write_ms)
    finally:
        if line is not None:
            line.stop()
        context.try_shutdown()
        out['process'] = common.self_usage(time.perf_counter() - t_start)
        common.write_json(Path(args.out), out)
        events.close()
    return 0


# ------------------------------------------------------------------------------------------
# The PLC side (this process) and the rate ladder


def read_events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding='utf-8').splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue   # a line being written right now
    return out


def conveyor_class():
    """ConveyorModel that also remembers camera time and first verdict write of EVERY bolt.

    The model's own ``verdict_latencies`` only holds verdicts that beat the gate; a late verdict
    must count in the p99 too (it is the worst case, not a missing sample).
    """
    from bolt_inspection.core.plc.contract import wrap16
    from bolt_inspection.core.plc.sim import ConveyorModel

    class BenchConveyor(ConveyorModel):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.bench_camera: dict[int, float] = {}
            self.bench_written: dict[int, float] = {}

        def _travel_until(self, start, end):
            events = super()._travel_until(start, end)
            for key, when in self.camera_times.items():
                self.bench_camera.setdefault(key, when)
            return events

        def write_verdict(self, bolt_reg, code, now):
            self.bench_written.setdefault(wrap16(bolt_reg), now)
            return super().write_verdict(bolt_reg, code, now)

        def bench_latencies(self) -> tuple[list[float], int]:
            """Camera -> first verdict write of every bolt; and how many got none."""
            lat = [self.bench_written[k] - t for k, t in self.bench_camera.items()
                   if k in self.bench_written]
            return lat, len(self.bench_camera) - len(lat)

    return BenchConveyor


class ComposedLineChild:
    """The line composed in one child process (``loop.py line``)."""

    def __init__(self, artifact: Path, port: int, out_dir: Path, frame_size, prefetch: bool,
                 prefix: str = 'loop', engine: str | None = None) -> None:
        self.events_path = out_dir / f'{prefix}_events.jsonl'
        self.line_json = out_dir / f'{prefix}_line_process.json'
        self.stderr_path = out_dir / f'{prefix}_line_stderr.log'
        for p in (self.events_path, self.line_json):
            p.unlink(missing_ok=True)
        self.cmd = [sys.executable, str(HERE / 'loop.py'), 'line', '--port', str(port),
                    '--artifact', str(artifact), '--events', str(self.events_path),
                    '--out', str(self.line_json), '--frame-size', str(frame_size[0]),
                    str(frame_size[1])]
        if not prefetch:
            self.cmd.append('--no-prefetch')
        if engine:
            self.cmd += ['--engine', engine]
        self.child: subprocess.Popen | None = None

    def start(self) -> None:
        self.child = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=open(  # noqa: SIM115
            self.stderr_path, 'w'), env=os.environ.copy())

    def ready(self) -> float | None:
        ready = [e for e in read_events(self.events_path) if e.get('event') == 'ready']
        return ready[0]['bring_up_s'] if ready else None

    def alive(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def pids(self) -> list[int]:
        return [self.child.pid] if self.child is not None else []

    def stop(self) -> None:
        if self.alive():
            self.child.send_signal(signal.SIGINT)
            try:
                self.child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.child.kill()

    def details(self) -> dict:
        """The classifier's and bridge's own counters (written by the child at exit)."""
        if not self.line_json.is_file():
            return {}
        line_out = json.loads(self.line_json.read_text())
        return {'line_process': line_out.get('process'),
                'bridge_stats': line_out.get('bridge_stats'),
                'modbus_poll_ms': common.stats(line_out.get('modbus_poll_ms', [])),
                'modbus_write_ms': common.stats(line_out.get('modbus_write_ms', [])),
                'classifier_counts': line_out.get('classifier_counts'),
                'join_stats': line_out.get('join_stats'),
                'camera_errors': line_out.get('camera_errors'),
                'mosaics_dropped': line_out.get('mosaics_dropped'),
                'camera_prefetch': line_out.get('camera_prefetch')}


class ProcessesLine:
    """One process per node, as ``ros2 launch`` starts the line, and a verdict probe here."""

    def __init__(self, artifact: Path, port: int, out_dir: Path, frame_size, prefetch: bool,
                 prefix: str = 'loop_processes', engine: str | None = None) -> None:
        from bolt_inspection import paths
        from bolt_inspection.graph import line_nodes
        from bolt_inspection.runtime.processes import ProcessLine
        self.events_path = out_dir / f'{prefix}_events.jsonl'
        self.events_path.unlink(missing_ok=True)
        self.stderr_path = out_dir / f'{prefix}_logs'
        specs = line_nodes(source='synthetic', model=str(artifact), plc=True,
                           plc_host='127.0.0.1', plc_port=int(port), manager=True)
        overrides = {s.name: {'size': list(frame_size), 'prefetch': bool(prefetch)}
                     for s in specs if s.executable == 'camera_node'}
        overrides['classifier'] = {'frame_size': list(frame_size)}
        if engine:
            overrides['classifier']['engine'] = engine
        self.line = ProcessLine(specs, paths.config_path('line.yaml'), self.stderr_path,
                                overrides=overrides)
        self.cmd = ' ; '.join(' '.join(c) for c in self.line.commands().values())
        self._t0 = 0.0
        self._probe = None

    def start(self) -> None:
        import rclpy

        from bolt_inspection.nodes import topics
        from bolt_inspection.nodes.executor import make_executor
        self._t0 = time.perf_counter()
        self.line.start()
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=int(os.environ['ROS_DOMAIN_ID']))
        node = rclpy.create_node('bench_verdict_probe', context=context)
        events = open(self.events_path, 'a', buffering=1, encoding='utf-8')  # noqa: SIM115

        def on_verdict(msg) -> None:
            events.write(json.dumps({'t': time.time(), **verdict_event(msg)}) + '\n')
        node.create_subscription(topics.VERDICT_TYPE, topics.VERDICT, on_verdict,
                                 topics.VERDICT_QOS)
        executor = make_executor(context, num_threads=2)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        self._probe = (context, node, executor, thread, events)

    def ready(self) -> float | None:
        manager = self.line.processes['lifecycle_manager'].log_text()
        return time.perf_counter() - self._t0 if 'line up:' in manager else None

    def alive(self) -> bool:
        return not self.line.dead()

    def pids(self) -> list[int]:
        return [p.popen.pid for p in self.line.processes.values()]

    def stop(self) -> None:
        # Summed over the node processes, read while they still exist.
        self.usage = {'cpu_s': _cpu_of(self.pids()), 'peak_rss_mb': _rss_of(self.pids()),
                      'wall_s': time.perf_counter() - self._t0, 'processes': len(self.pids())}
        codes = self.line.stop()
        if self._probe is not None:
            context, node, executor, thread, events = self._probe
            executor.shutdown()
            thread.join(timeout=5.0)
            node.destroy_node()
            context.try_shutdown()
            events.close()
        self.exit_codes = codes

    def details(self) -> dict:
        return {'exit_codes': getattr(self, 'exit_codes', None),
                'line_process': getattr(self, 'usage', None),
                'processes': {name: p.popen.pid for name, p in self.line.processes.items()}}


def _cpu_of(pids: list[int]) -> float:
    return sum(proc_cpu_s(pid) or 0.0 for pid in pids)


def _rss_of(pids: list[int]) -> float | None:
    values = [common.vm_hwm_mb(pid) for pid in pids]
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def run_ladder(artifact: Path, rates: list[float], *, step_s: float, out_dir: Path,
               frame_size=common.FRAME_SIZE, gate_delay_s: float | None = None,
               capacity_gate_s: float = 4.0, latency_rate: float | None = None,
               confirm_s: float = 0.0, stop_on_fail: bool = True,
               startup_timeout_s: float = 240.0, prefetch: bool = True,
               shape: str = 'composed', engine: str | None = None,
               prefix: str | None = None) -> dict:
    """Run the closed loop at each rate; optionally confirm the best rate for ``confirm_s``.

    The first step (``latency_rate``, well below capacity) uses the configured gate delay
    (config/plc.yaml): the whole-loop latency and whether verdicts beat the configured gate.
    The rate ladder and the confirmation run use ``capacity_gate_s``: with a gate that far
    downstream a verdict is only late when the line falls behind, so the ladder measures
    throughput capacity rather than single-bolt latency. ``shape`` is the line's process
    layout (see the module docstring); ``engine`` the classifier's ``engine`` parameter
    (issue 19); ``prefix`` names the step files (several runs in one folder).
    """
    from bolt_inspection.core.plc.contract import load_plc_config
    from bolt_inspection.core.plc.server import PlcSimulator, sim_with

    common.setup_env()
    out_dir.mkdir(parents=True, exist_ok=True)
    plc, sim_cfg = load_plc_config()
    gate = sim_cfg.gate_delay_s if gate_delay_s is None else gate_delay_s
    capacity_gate = max(gate, capacity_gate_s)
    port = free_port()
    # The conveyor stays stopped until a step starts: bolts only flow once the line is up.
    sim = PlcSimulator(plc, sim_with(sim_cfg, bolts=1, gate_delay_s=gate), host='127.0.0.1',
                       port=port).start()
    t_all = time.perf_counter()
    line_cls = {'composed': ComposedLineChild, 'processes': ProcessesLine}[shape]
    extra = {'engine': engine} | ({'prefix': prefix} if prefix else {})
    child = line_cls(artifact, port, out_dir, frame_size, prefetch, **extra)
    events_path = child.events_path
    child.start()
    steps = []
    result: dict = {'shape': shape, 'port': port, 'gate_delay_s': gate,
                    'capacity_gate_s': capacity_gate, 'step_s': step_s,
                    'line_cmd': child.cmd if isinstance(child.cmd, str) else ' '.join(child.cmd),
                    'prefetch': bool(prefetch)}
    try:
        deadline = time.monotonic() + startup_timeout_s
        while (bring_up_s := child.ready()) is None:
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f'the line did not come up; see {child.stderr_path}')
            time.sleep(0.2)
        result['line_bring_up_s'] = bring_up_s
        time.sleep(1.0)   # the bridge connects and polls

        def step(rate: float, seconds: float, kind: str, gate_s: float) -> dict:
            bolts = max(3, int(round(rate * seconds / 60.0)))
            cfg = sim_with(sim_cfg, rate_per_min=rate, bolts=bolts, gate_delay_s=gate_s)
            with sim.lock:
                sim.model = conveyor_class()(cfg, sim.clock(), truth=sim.model.truth)
            time.sleep(max(0.5, 3 * plc.poll_period_s))   # the bridge resyncs to counter 0
            cpu_line0, cpu_sim0 = _cpu_of(child.pids()), common.self_usage()['cpu_s']
            t0_wall, t0 = time.time(), time.perf_counter()
            sim.set_running(True)
            timeout = bolts * 60.0 / rate + gate_s + 30.0
            while not sim.summary()['done'] and time.perf_counter() - t0 < timeout:
                if not child.alive():
                    raise RuntimeError(f'the line died; see {child.stderr_path}')
                time.sleep(0.1)
            time.sleep(0.3)   # the last verdict event reaches the events file
            wall = time.perf_counter() - t0
            cpu_line = _cpu_of(child.pids()) - cpu_line0
            cpu_sim = common.self_usage()['cpu_s'] - cpu_sim0
            with sim.lock:
                model = sim.model
                summary = model.summary()
                lat, no_verdict = model.bench_latencies()
            t1_wall = time.time()
            ev = [e for e in read_events(events_path)
                  if 'bolt' in e and t0_wall - 1.0 <= e['t'] <= t1_wall]
            dropped = sum('missing view' in e['message'] for e in ev)
            overloaded = sum('overloaded' in e['message'] for e in ev)
            other_fail = sum(e['message'].startswith('NG:') and 'missing view' not in
                             e['message'] and 'overloaded' not in e['message'] for e in ev)
            ok = (summary['done'] and summary['late_verdicts'] == 0
                  and summary['failsafe_rejects'] == 0 and dropped == 0 and overloaded == 0
                  and summary['sorted'] == bolts)
            rec = {
                'kind': kind, 'rate_per_min': rate, 'gate_delay_s': gate_s, 'bolts': bolts,
                'wall_s': wall,
                'sustained': bool(ok), 'sorted': summary['sorted'],
                'late_verdicts': summary['late_verdicts'],
                'failsafe_rejects': summary['failsafe_rejects'],
                'dropped_view_bolts': dropped, 'overloaded_bolts': overloaded,
                'other_ng_with_reason': other_fail, 'verdict_events': len(ev),
                'heartbeat_trips': summary['heartbeat_trips'],
                'accuracy_vs_truth': summary['accuracy'],
                'loop_latency_ms': common.stats(lat, 1e3), 'bolts_without_verdict': no_verdict,
                'classifier_latency_ms': common.stats(
                    [e['latency_ms'] for e in ev if e.get('latency_ms') is not None]),
                'loop_latency_samples_ms': [x * 1e3 for x in lat],
                'cpu_cores_line': cpu_line / wall if wall else None,
                'cpu_cores_plc_sim': cpu_sim / wall if wall else None,
                'line_peak_rss_mb': _rss_of(child.pids()),
                'model_ids': sorted({e.get('model_id', '') for e in ev}),
            }
            common.log(f'loop {kind} {rate:.1f}/min x{bolts}: loop p50 '
                       f'{rec["loop_latency_ms"]["p50"]} p99 {rec["loop_latency_ms"]["p99"]} ms, '
                       f'late {rec["late_verdicts"]} failsafe {rec["failsafe_rejects"]} dropped '
                       f'{dropped} overloaded {overloaded} -> '
                       f'{"sustained" if ok else "NOT sustained"}')
            return rec

        if latency_rate:
            steps.append(step(latency_rate, step_s, 'latency', gate))
        for rate in rates:
            steps.append(step(rate, step_s, 'ladder', capacity_gate))
            if not steps[-1]['sustained'] and stop_on_fail:
                break
        good = [s for s in steps if s['sustained'] and s['kind'] == 'ladder']
        if confirm_s > 0 and good:
            best = max(s['rate_per_min'] for s in good)
            steps.append(step(best, confirm_s, 'confirm', capacity_gate))
    finally:
        result['line_peak_rss_mb_before_exit'] = _rss_of(child.pids())
        child.stop()
        sim.stop()
    result['steps'] = steps
    confirmed = [s for s in steps if s['kind'] == 'confirm']
    good = [s for s in steps if s['sustained'] and s['kind'] != 'latency']
    if confirmed:
        result['max_sustained_per_min'] = (confirmed[0]['rate_per_min']
                                           if confirmed[0]['sustained'] else None)
    else:
        result['max_sustained_per_min'] = max((s['rate_per_min'] for s in good), default=None)
    result['best_step'] = (max(good, key=lambda s: (s['kind'] == 'confirm', s['rate_per_min']))
                           if good else (steps[0] if steps else None))
    result.update(child.details())
    result['plc_sim_process'] = common.self_usage(time.perf_counter() - t_all)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='role', required=True)
    line = sub.add_parser('line', help='(internal) the line process')
    line.add_argument('--port', type=int, required=True)
    line.add_argument('--artifact', type=Path, required=True)
    line.add_argument('--events', type=Path, required=True)
    line.add_argument('--out', type=Path, required=True)
    line.add_argument('--frame-size', type=int, nargs=2, default=list(common.FRAME_SIZE))
    line.add_argument('--no-prefetch', action='store_true')
    line.add_argument('--engine', default=None)
    ladder = sub.add_parser('ladder', help='run the closed loop at increasing rates')
    ladder.add_argument('--model-kind', choices=sorted(common.MODEL_KINDS), default='demo')
    ladder.add_argument('--rates', type=float, nargs='+', required=True,
                        help='bolts per minute, in increasing order')
    ladder.add_argument('--step-s', type=float, default=30.0)
    ladder.add_argument('--confirm-s', type=float, default=0.0)
    ladder.add_argument('--latency-rate', type=float, default=None,
                        help='first run a step at this rate with the configured gate delay')
    ladder.add_argument('--keep-going', action='store_true',
                        help='run every rate even after one is not sustained')
    ladder.add_argument('--capacity-gate-s', type=float, default=4.0,
                        help='gate delay of the ladder and confirmation steps')
    ladder.add_argument('--frame-size', type=int, nargs=2, default=list(common.FRAME_SIZE))
    ladder.add_argument('--no-prefetch', action='store_true',
                        help='synthetic cameras render each frame on the trigger')
    ladder.add_argument('--shape', choices=SHAPES, default='composed',
                        help='the line in one process, or one process per node (ros2 launch)')
    ladder.add_argument('--artifact', type=Path,
                        help='this model instead of a random-init --model-kind one')
    ladder.add_argument('--engine', default=None,
                        help="the classifier's engine parameter (default: its 'auto')")
    ladder.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    if args.role == 'line':
        return line_child(args)
    common.setup_env()
    arch, input_size = common.MODEL_KINDS[args.model_kind]
    artifact = args.artifact or common.make_artifact(
        args.out.parent / 'models' / f'{args.model_kind}_{args.frame_size[0]}x'
        f'{args.frame_size[1]}', arch, input_size, tuple(args.frame_size))
    result = run_ladder(artifact, args.rates, step_s=args.step_s, out_dir=args.out.parent,
                        frame_size=tuple(args.frame_size), confirm_s=args.confirm_s,
                        latency_rate=args.latency_rate, capacity_gate_s=args.capacity_gate_s,
                        stop_on_fail=not args.keep_going, prefetch=not args.no_prefetch,
                        shape=args.shape, engine=args.engine,
                        prefix=args.out.stem if args.artifact else None)
    if args.artifact:
        input_size = json.loads((args.artifact / 'metadata.json').read_text())['input_size']
    result.update({'model_kind': args.model_kind, 'input_size': list(input_size),
                   'artifact': str(artifact), 'engine_requested': args.engine})
    common.write_json(args.out, result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
