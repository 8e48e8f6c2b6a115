"""Running the line: :class:`LineOptions` and :func:`run_line`, which ``bolt-inspection line``,
``demo``, the bench and the tests call.

The node list comes from :func:`bolt_inspection.graph.line_nodes` (the same function the launch
file calls) and every node's parameters from the same params file (``config/line.yaml``), with
the options on top. The nodes run composed in this process
(:class:`~bolt_inspection.runtime.composed.ComposedLine`) or one process per node
(:class:`~bolt_inspection.runtime.processes.LaunchedLine`, ``processes=True``).

Who triggers the bolts (:func:`plc_mode`):

* ``'sim'`` (default) — the CLOSED LOOP: an in-process line PLC simulator
  (:class:`bolt_inspection.core.plc.server.PlcSimulator`, Modbus TCP on 127.0.0.1, a free port)
  whose conveyor brings ``bolts`` bolts to the cameras at ``rate`` per minute; the PLC bridge
  turns its counter into ``/line/trigger`` and writes every verdict back; the simulated sorting
  gate passes or rejects each bolt ``gate_delay`` s later and scores the sort against the
  synthetic scenario's truth (:func:`closed_loop`).
* ``'external'`` — a real (or separately started) PLC at ``plc_host``/``plc_port``
  (:func:`follow`).
* ``'none'`` — no PLC at all: this runner triggers the bolts itself (:func:`drive`).
* ``'bag'`` — the recorded triggers (:func:`follow`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bolt_inspection import paths
from bolt_inspection.core.config import load_yaml, node_parameters
from bolt_inspection.core.errors import ConfigError
from bolt_inspection.graph import NodeSpec, drives_triggers, line_nodes, node_parameter_values
from bolt_inspection.runtime.composed import ComposedLine, wait_for_subscribers
from bolt_inspection.runtime.summary import (
    gate_lines,
    summarize,
    verdict_tally,
    write_summary,
)


@dataclass
class LineOptions:
    """How to run the line; the fields are ``bolt-inspection line``'s options (its ``--help``
    says what each does). ``None`` means "the params file's value"."""

    params_file: Path | None = None
    model: str | None = None
    source: str | None = None
    bag: str | None = None
    folder: str | None = None
    device: str | None = None
    bolts: int = 20
    rate: float = 60.0
    gate_delay: float | None = None
    first_bolt: int = 1
    size: tuple[int, int] | None = None
    seed: int | None = None
    defect_rate: float | None = None
    view_timeout: float | None = None
    plc_host: str = ''
    plc_port: int = 0
    plc: bool = False
    no_plc: bool = False
    drain: float = 3.0
    log: bool = False
    hmi: bool = False
    tally_period: float = 5.0
    summary_out: Path | None = None
    processes: bool = False
    log_dir: Path | None = None

    @classmethod
    def from_namespace(cls, namespace) -> LineOptions:
        """The options from an argparse namespace (other attributes are ignored)."""
        return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)
                      if hasattr(namespace, f.name)})


def node_overrides(options: LineOptions, specs: list[NodeSpec]) -> dict[str, dict]:
    """Per-node overrides from the command-line options."""
    out: dict[str, dict] = {}
    for spec in specs:
        values: dict[str, Any] = {}
        if spec.executable == 'camera_node':
            if options.size:
                values['size'] = list(options.size)
            if options.seed is not None:
                values['seed'] = options.seed
            if options.defect_rate is not None:
                values['defect_rate'] = options.defect_rate
        if spec.executable == 'classifier_node':
            if options.size:
                values['frame_size'] = list(options.size)
            if options.view_timeout is not None:
                values['view_timeout_s'] = options.view_timeout
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
        # Count every bolt from the first: the driver hears the bridge's triggers and the
        # classifier's verdicts before the conveyor starts.
        _wait_until_heard(driver)
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


def _wait_until_heard(driver) -> None:
    if not driver.hears_the_line():
        print('warning: the run summary may miss the first bolts (trigger or verdict topic not '
              'matched yet)', flush=True)


def plc_mode(options: LineOptions, source: str) -> str:
    """Who triggers the bolts: 'sim' (default), 'external', 'none' (--no-plc) or 'bag'.

    Raises:
        ConfigError: --no-plc together with an external PLC option.
    """
    external = bool(options.plc or options.plc_host or options.plc_port)
    if options.no_plc and external:
        raise ConfigError('--no-plc contradicts --plc/--plc-host/--plc-port')
    if options.plc_port and not 0 < options.plc_port <= 65535:
        raise ConfigError(f'--plc-port: expected 1..65535, got {options.plc_port}')
    if source == 'bag':
        return 'bag'
    if options.no_plc:
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


def start_simulator(options: LineOptions, camera_params: Mapping[str, Any]):
    """The in-process line PLC of the closed loop, on 127.0.0.1 at a free port.

    Its scenario (seed, defect rate) is the cameras', so it scores each sort against the truth
    of the very bolts the cameras rendered.
    """
    from bolt_inspection.core.plc.server import PlcSimulator
    if not (math.isfinite(options.rate) and options.rate > 0):
        raise ConfigError(f'--rate must be > 0 bolts per minute, got {options.rate}')
    overrides = {'rate_per_min': float(options.rate), 'bolts': int(options.bolts),
                 'seed': int(camera_params.get('seed', 0)),
                 'defect_rate': float(camera_params.get('defect_rate', 0.5))}
    if options.gate_delay is not None:
        overrides['gate_delay_s'] = float(options.gate_delay)
    return PlcSimulator.from_config(host='127.0.0.1', port=0,
                                    truth=scenario_truth(camera_params), **overrides).start()


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


def run_line(options: LineOptions) -> int:
    """Bring the line up, run it in its mode until done or Ctrl-C, print (and write) the summary,
    shut every node down in order.

    Returns:
        The exit status: 0 every triggered bolt got its verdict (and the closed loop sorted
        them all), 1 not, 130 interrupted.

    Raises:
        ConfigError: Contradicting or out-of-range options, a bad params file, a node that
            failed to come up.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from bolt_inspection import rosenv
    from bolt_inspection.core.files import check_output_file
    from bolt_inspection.nodes.line_driver import LineDriver

    rosenv.apply_defaults()
    if not (math.isfinite(options.rate) and options.rate > 0):
        raise ConfigError(f'--rate must be > 0 bolts per minute, got {options.rate}')
    if options.summary_out:
        check_output_file(options.summary_out, '--summary-out')   # now, not after the run
    params_file = options.params_file or paths.config_path('line.yaml')
    config = load_yaml(params_file)
    source = options.source or node_parameters(config, 'cam0').get('source', 'synthetic')
    mode = plc_mode(options, source)
    processes = options.processes
    if processes and mode not in ('sim', 'none'):
        raise ConfigError('--processes runs the closed loop or --no-plc; for an external PLC or '
                          'a bag use `ros2 launch bolt_inspection line.launch.py`')
    sim = None
    if mode == 'sim':
        # The cameras' scenario (params file + options) is the simulator's scenario.
        probe = line_nodes(source=source, model=options.model or '', folder=options.folder or '',
                           device=options.device or '')
        cam = next(s for s in probe if s.executable == 'camera_node')
        cam_params = node_parameter_values(cam, config, node_overrides(options, [cam])[cam.name])
        sim = start_simulator(options, cam_params)
    specs = line_nodes(source=source, model=options.model or '', bag=options.bag or '',
                       folder=options.folder or '', device=options.device or '',
                       plc=mode in ('sim', 'external'),
                       plc_host='127.0.0.1' if sim else options.plc_host,
                       plc_port=sim.port if sim else options.plc_port,
                       log=options.log, hmi=options.hmi,
                       manager=processes)
    context = rclpy.Context()
    # Ctrl-C stays a KeyboardInterrupt in this thread, so the nodes are shut down in order.
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    line = None
    try:
        if processes:
            from bolt_inspection.runtime.processes import LaunchedLine
            log_dir = options.log_dir or (Path.home() / '.ros' / 'log' / 'bolt_inspection'
                                       / time.strftime('%Y-%m-%d-%H-%M-%S'))
            print(f'one process per node; logs in {log_dir}', flush=True)
            line = LaunchedLine(specs, params_file, context=context,
                                overrides=node_overrides(options, specs), log_dir=log_dir)
        else:
            line = ComposedLine(specs, config, context=context,
                                overrides=node_overrides(options, specs))
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
            # The bridge refuses Start until every stage hears its inputs; the driver must hear
            # the triggers and verdicts too, or the summary misses the first bolts.
            _wait_until_heard(driver)
            outcome = closed_loop(driver, sim, grace_s=view_timeout + 2.0,
                                  tally_s=options.tally_period,
                                  stall_s=max(30.0, 3 * 60.0 / options.rate + 20.0))
            ids = driver.triggered_ids()
        elif drives_triggers(specs):
            ids = follow(line, driver, bolts=options.bolts, grace_s=view_timeout + 2.0,
                         drain_s=max(0.0, options.drain))
        else:
            wait_for_subscribers(driver.trigger_pub, listeners)
            time.sleep(0.5)  # subscriber side of the match (best-effort images)
            ids = drive(line, driver, bolts=options.bolts, rate_per_min=options.rate,
                        first_bolt=options.first_bolt, timeout_s=timeout,
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
        if options.summary_out:
            path = write_summary(options.summary_out, mode=mode, summary=summary, sim=sim_summary,
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
