"""The line as users launch it: one process per node, the shipped params, 1280x960 frames.

``bolt_inspection.runtime.processes.ProcessLine`` starts every node from its installed
executable with the command line launch_ros builds for ``launch/line.launch.py`` (the
lifecycle manager brings them up in order, the PLC simulator is a node of its own and the
manager presses Start once the line is up). The closed loop runs a few dozen bolts; the test
checks what a controls engineer checks after a shift: every bolt got all four views and a
verdict, the sorting gate sorted every bolt by its verdict (no fail-safe reject, no late
verdict), the verdicts are the model's on the very frames the cameras rendered, and Ctrl-C
(SIGINT to every process, as launch does) ends every process cleanly.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

pytest.importorskip('rclpy')

from bolt_inspection import graph, paths  # noqa: E402
from bolt_inspection.runtime.processes import ProcessLine  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
pytest_plugins = ['fixtures_ml']
BOLTS = 32
RATE_PER_MIN = 60.0
SEED = 0            # config/line.yaml's cameras and config/plc.yaml's simulator
# What a clean shutdown must not print (the classifier used to publish after its context died).
BAD_LOG_LINES = ('Traceback', 'Failed to publish', 'context is invalid', '[ERROR]')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _observer(context):
    """A verdict / trigger probe in this process, spinning in a thread."""
    from bolt_inspection.nodes.executor import make_executor
    from bolt_inspection.nodes.line_driver import LineDriver
    driver = LineDriver('mp_observer', context=context)
    executor = make_executor(context, num_threads=2)
    executor.add_node(driver)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    return driver, executor, thread


def _reference_decisions(artifact, bolt_ids):
    """The model's decision and p_ng on the frames the synthetic cameras render (in process)."""
    from bolt_inspection.core.line.inspector import Inspector
    from bolt_inspection.core.vision import synth
    inspector = Inspector.from_artifact(artifact)
    out = {}
    for bolt_id in bolt_ids:
        spec = synth.bolt_spec(SEED, int(bolt_id), 0.5)
        views = {cam: synth.render_view(spec, cam, (1280, 960)).image for cam in range(4)}
        inspection = inspector.inspect(views)
        out[bolt_id] = (inspection.verdict.ok, dict(inspection.p_ng), inspector.threshold)
    return out


def test_the_launched_line_sorts_every_bolt_and_shuts_down_cleanly(rclpy_context, tmp_path,
                                                                   tiny_artifact_1280):
    port = _free_port()
    specs = graph.line_nodes(model=str(tiny_artifact_1280), plc=True, plc_sim=True,
                             plc_host='127.0.0.1', plc_port=port, manager=True)
    assert [s.name for s in specs] == ['plc_sim', 'classifier', 'cam0', 'cam1', 'cam2', 'cam3',
                                       'plc_bridge', 'lifecycle_manager']
    summary_path = tmp_path / 'plc_sim_summary.json'
    line = ProcessLine(specs, paths.config_path('line.yaml'), tmp_path / 'logs',
                       overrides={'plc_sim': {'bolts': BOLTS, 'rate_per_min': RATE_PER_MIN,
                                              'summary_out': str(summary_path)}})
    commands = line.commands()
    for spec in specs:   # launch_ros's command line: <prefix>/lib/<package>/<exe>, the params
        cmd = commands[spec.name]
        assert cmd[0].endswith(f'/lib/bolt_inspection/{spec.executable}')
        assert cmd[1:4] == ['--ros-args', '-r', f'__node:={spec.name}']
        assert cmd[cmd.index(str(paths.config_path('line.yaml'))) - 1] == '--params-file'
    driver, executor, thread = _observer(rclpy_context)
    codes = None
    started = time.monotonic()
    try:
        line.start()
        # Startup (model load, discovery) + BOLTS at RATE_PER_MIN + the gate delay.
        deadline = time.monotonic() + 60.0 + BOLTS * 60.0 / RATE_PER_MIN
        while len(driver.verdicts()) < BOLTS and time.monotonic() < deadline:
            assert not line.dead(), f'a node died: {line.dead()}'
            time.sleep(0.5)
        time.sleep(3.0)   # the last bolts ride on to the sorting gate (2 s)
    finally:
        codes = line.stop()
        executor.shutdown()
        thread.join(timeout=5.0)
        driver.destroy_node()
    elapsed = time.monotonic() - started
    logs = {name: proc.log_text() for name, proc in line.processes.items()}

    # Ctrl-C: every process exits 0 on SIGINT alone, and says nothing alarming on the way out.
    assert codes == dict.fromkeys(codes, 0), codes
    assert all(p.signals == ['SIGINT'] for p in line.processes.values())
    for name, text in logs.items():
        for bad in BAD_LOG_LINES:
            assert bad not in text, f'{name}: {bad!r} in its log:\n{text[-2000:]}'
    assert 'line up: 6 nodes active' in logs['lifecycle_manager']

    # Every bolt: one verdict, all four views (no fail-safe 'missing view').
    verdicts = {}
    for record in driver.verdicts():
        assert record.bolt_id not in verdicts, f'two verdicts for bolt {record.bolt_id}'
        verdicts[record.bolt_id] = record
    ids = [str(i) for i in range(1, BOLTS + 1)]
    assert sorted(verdicts, key=int) == ids
    reasons = [f'bolt {b}: {r.message}' for b, r in verdicts.items()
               if r.message.startswith('NG:')]
    # What the nodes said about late frames and triggers (camera: 'frame out ... after the
    # trigger'; classifier: 'trigger heard ...', 'frame arrived ...'): late, slow or lost.
    late = [line for text in logs.values() for line in text.splitlines()
            if any(key in line for key in ('frame arrived', 'frame out', 'trigger heard'))]
    assert reasons == [], (reasons, late or 'no late frame or trigger logged: lost, not late')

    # The gate sorted every bolt by its verdict: no fail-safe reject, no late verdict.
    sim = json.loads(summary_path.read_text())
    assert sim['bolts_in'] == sim['sorted'] == BOLTS and sim['in_transit'] == 0, sim
    assert sim['failsafe_rejects'] == 0 and sim['late_verdicts'] == 0, sim
    assert sim['passed'] == sum(r.ok for r in verdicts.values())
    assert sim['rejected'] == sum(not r.ok for r in verdicts.values())

    # The verdicts are the model's on the frames the cameras rendered: nothing was lost,
    # resized or mixed up between processes.
    reference = _reference_decisions(tiny_artifact_1280, ids)
    for bolt_id, record in verdicts.items():
        ok, p_ng, threshold = reference[bolt_id]
        for cam, p in p_ng.items():
            assert record.p_ng[cam] == pytest.approx(p, abs=2e-3), bolt_id
        if all(abs(p - threshold) > 2e-3 for p in p_ng.values()):
            assert record.ok == ok, bolt_id
    latencies = [r.latency_ms for r in verdicts.values() if r.latency_ms is not None]
    print(f'{BOLTS} bolts in {elapsed:.0f} s, trigger -> verdict max {max(latencies):.0f} ms, '
          f'gate accuracy vs truth {sim["accuracy"]}')


def test_line_command_runs_the_closed_loop_one_process_per_node(ros_domain_id, tiny_artifact,
                                                                tmp_path, capfd):
    """`bolt-inspection line --processes`: the launch shape without launch_ros (PyPI)."""
    from bolt_inspection import cli
    summary = tmp_path / 'summary.json'
    code = cli.main(['line', '--processes', '--log-dir', str(tmp_path / 'logs'), '--model',
                     str(tiny_artifact), '--size', '320x240', '--bolts', '6', '--rate', '120',
                     '--summary-out', str(summary)])
    out = capfd.readouterr().out
    assert code == 0, out
    assert 'one process per node' in out and 'line up: classifier, cam0' in out
    plc = json.loads(summary.read_text())['plc']
    assert plc['sorted'] == 6 and plc['failsafe_rejects'] == 0 and plc['late_verdicts'] == 0
    logs = {p.stem for p in (tmp_path / 'logs').glob('*.log')}
    assert logs == {'classifier', 'cam0', 'cam1', 'cam2', 'cam3', 'plc_bridge',
                    'lifecycle_manager'}
    assert cli.main(['line', '--processes', '--plc', '--model', str(tiny_artifact)]) == 2
    assert 'error: --processes runs the closed loop or --no-plc' in capfd.readouterr().err


def test_a_killed_classifier_stops_the_conveyor_and_its_bolts_are_rejected(ros_domain_id,
                                                                            tmp_path,
                                                                            tiny_artifact):
    """kill -9 of the classifier mid-run: the PLC bridge sees the path die, the conveyor stops
    within 1 s, every bolt in flight gets NG; once the classifier is back (respawned, brought up
    by the lifecycle manager) the operator restarts and the line sorts on."""
    import os
    import signal

    from bolt_inspection.core.plc.contract import VERDICT_NG
    from bolt_inspection.core.plc.server import PlcSimulator
    sim = PlcSimulator.from_config(host='127.0.0.1', port=0, rate_per_min=120.0,
                                   gate_delay_s=2.0, bolts=0, seed=SEED).start()
    specs = graph.line_nodes(model=str(tiny_artifact), plc=True, plc_host='127.0.0.1',
                             plc_port=sim.port, manager=True)
    overrides = {s.name: {'size': [320, 240]} for s in specs if s.executable == 'camera_node'}
    overrides['classifier'] = {'frame_size': [320, 240]}
    line = ProcessLine(specs, paths.config_path('line.yaml'), tmp_path / 'logs',
                       overrides=overrides)

    def wait_for(condition, what, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f'timed out: {what}'
            time.sleep(0.01)

    def log(name):
        return line.processes[name].log_text()
    try:
        line.start()
        wait_for(lambda: 'line up:' in log('lifecycle_manager'), 'line up', 120.0)
        wait_for(lambda: 'heartbeat on' in log('plc_bridge'), 'path alive')
        sim.set_running(True)                      # the operator presses Start
        wait_for(lambda: sim.summary()['verdicts'] >= 4, 'first verdicts')
        with sim.lock:
            answered = set(sim.model.verdicts)
        os.kill(line.processes['classifier'].popen.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: not sim.summary()['running'], 'conveyor stop', 5.0)
        stop_s = time.monotonic() - killed
        assert stop_s < 1.0, f'conveyor stopped {stop_s:.2f} s after the kill'
        # Every bolt past the camera and not yet sorted has a verdict; the ones the classifier
        # had not answered are NG (the bridge's), so none passes the gate uninspected.
        time.sleep(0.5)
        with sim.lock:
            in_flight = [b.bolt_id for b in sim.model.in_transit]
            written = dict(sim.model.verdicts)
        orphans = [b for b in in_flight if b not in answered]
        assert orphans, 'the kill should catch bolts in flight'
        assert all(written.get(b, (None,))[0] == VERDICT_NG for b in orphans), (orphans, written)
        assert 'inspection path down: classifier silent' in log('plc_bridge')

        line.restart('classifier')                 # launch's respawn
        wait_for(lambda: log('plc_bridge').count('heartbeat on') >= 2, 'path back', 120.0)
        sim.set_running(True)
        before = sim.summary()['sorted']
        wait_for(lambda: sim.summary()['sorted'] >= before + len(in_flight) + 4, 'sorting on')
        events = {e.bolt_id: e for e in list(sim.model.events)}
        assert all(events[b].reason == 'NG' and not events[b].passed for b in orphans)
        summary = sim.summary()
        assert summary['failsafe_rejects'] == 0 and summary['late_verdicts'] == 0, summary
    finally:
        codes = line.stop()
        sim.stop()
    assert set(codes.values()) == {0}, codes
    print(f'conveyor stopped {stop_s * 1000:.0f} ms after kill -9 of the classifier; '
          f'{len(orphans)} bolts in flight rejected')
