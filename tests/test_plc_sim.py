"""The line simulator: the pure conveyor model on a fake clock, then the real Modbus server."""

from __future__ import annotations

import json
import time

import pytest

from bolt_inspection import cli
from bolt_inspection.core.plc.contract import (
    SimConfig,
    decode_status,
    load_plc_config,
)
from bolt_inspection.core.plc.server import PlcSimulator, sim_with
from bolt_inspection.core.plc.sim import ConveyorModel


def truth_even_ng(n: int) -> str:
    return 'NG' if n % 2 == 0 else 'OK'


def model(**kw) -> ConveyorModel:
    config = SimConfig(**{'rate_per_min': 60.0, 'gate_delay_s': 2.0,
                          'heartbeat_timeout_s': 0.0, **kw})
    m = ConveyorModel(config, now=0.0, truth=truth_even_ng)
    m.set_running(True, 0.0)
    return m


def test_bolts_arrive_at_the_rate_and_reach_the_gate_after_the_delay():
    m = model()
    m.advance(0.99)
    assert m.counter == 0
    m.advance(1.0)
    assert m.counter == 1 and m.stats['passed'] + m.stats['rejected'] == 0
    m.write_verdict(1, 1, 1.5)             # OK within the gate delay
    events = m.advance(3.0)                # bolt 1 at the gate at 1 + 2 s
    assert [(e.bolt_id, e.passed, e.reason) for e in events] == [(1, True, 'OK')]
    assert m.counter == 3
    assert m.stats['true_pass'] == 1


def test_gate_reads_the_verdict_of_that_bolt_and_fails_safe_without_one():
    m = model()
    events = m.advance(3.5)                 # bolts 1, 2, 3 in; bolt 1 at the gate at 3.0
    m.write_verdict(2, 2, 3.5)              # NG for bolt 2 (truth NG)
    m.write_verdict(3, 1, 3.5)              # OK for bolt 3 (truth OK)
    events += m.advance(5.5)                # bolts 2, 3 at the gate
    assert [(e.bolt_id, e.passed, e.reason) for e in events] == [
        (1, False, 'failsafe'), (2, False, 'NG'), (3, True, 'OK')]
    s = m.summary()
    assert s['failsafe_rejects'] == 1 and s['failsafe_bolt_ids'] == [1]
    assert s['false_reject'] == 1            # bolt 1 was OK but got no verdict
    assert s['true_reject'] == 1 and s['true_pass'] == 1
    assert s['accuracy'] == pytest.approx(2 / 3, abs=1e-3)
    assert decode_status(m.status_word())['failsafe_reject']


def test_latest_verdict_wins_and_late_and_unknown_verdicts_are_counted():
    m = model()
    m.advance(1.0)
    m.write_verdict(1, 1, 1.1)
    m.write_verdict(1, 2, 1.2)              # the classifier changed its mind: NG
    m.advance(3.0)
    assert m.events[-1].reason == 'NG'
    m.write_verdict(1, 1, 3.1)              # after bolt 1 was sorted: late
    m.write_verdict(99, 1, 3.1)             # a bolt that never came: unknown
    s = m.summary()
    assert s['late_verdicts'] == 1 and s['late_verdict_bolt_ids'] == [1]
    assert s['unknown_verdicts'] == 1
    assert s['verdict_latency_ms']['n'] == 1
    assert s['verdict_latency_ms']['p50'] == pytest.approx(100.0, abs=0.5)
    assert not m.write_verdict(1, 7, 3.2) and s['invalid_verdicts'] == 0
    assert m.stats['invalid_verdicts'] == 1


def test_stopped_conveyor_freezes_bolts_in_place():
    m = model()
    m.advance(1.5)                           # bolt 1 half a second past the camera
    m.set_running(False, 1.5)
    m.advance(100.0)
    assert m.counter == 1 and not m.events   # nothing moved while stopped
    m.set_running(True, 100.0)
    m.advance(101.49)
    assert not m.events
    m.advance(101.5)                         # 1.5 s more travel: bolt 1 at the gate
    assert [e.bolt_id for e in m.events] == [1]


def test_stale_heartbeat_stops_the_conveyor():
    m = model(heartbeat_timeout_s=1.5)
    m.write_heartbeat(1, 0.5)
    m.write_heartbeat(1, 1.5)                # same value: not a beat
    m.advance(1.9)
    assert m.running
    m.advance(2.1)                           # last change at 0.5 + 1.5 = 2.0
    assert not m.running and m.heartbeat_stale
    assert decode_status(m.status_word()) == {'running': False, 'heartbeat_stale': True,
                                              'failsafe_reject': False, 'done': False}
    assert m.counter == 2                    # bolt 2 arrived at 2.0, before the trip
    m.set_running(True, 5.0)                 # restart clears the flag, watchdog restarts
    assert m.running and not m.heartbeat_stale


def test_finite_scenario_ends_done_and_every_bolt_is_sorted_once():
    m = model(bolts=5, rate_per_min=600.0, gate_delay_s=0.3)
    for t in range(1, 200):
        m.advance(t * 0.01)
        for n in range(1, m.counter + 1):
            if n not in m.verdicts and n in m.camera_times:
                m.write_verdict(n, 1 if truth_even_ng(n) == 'OK' else 2, t * 0.01)
    s = m.summary()
    assert s['done'] and not m.running
    assert s['bolts_in'] == s['sorted'] == s['passed'] + s['rejected'] == 5
    assert s['accuracy'] == 1.0 and s['failsafe_rejects'] == 0
    assert sorted(e.bolt_id for e in m.events) == [1, 2, 3, 4, 5]


def test_registers_wrap_at_16_bits():
    m = model(rate_per_min=60000.0, gate_delay_s=0.0)
    m.advance(65.537)                        # 65537 bolts at 1 ms each
    assert m.counter == 65537
    assert m.registers()['bolt_counter'] == 1
    assert m.registers()['reject_count'] == 1


# -- the Modbus server ---------------------------------------------------------------------

@pytest.fixture
def simulator():
    plc, sim = load_plc_config()
    sim = sim_with(sim, rate_per_min=1200.0, gate_delay_s=0.2, heartbeat_timeout_s=0.0)
    with PlcSimulator(plc, sim, host='127.0.0.1', port=0, truth=truth_even_ng) as s:
        yield s


@pytest.fixture
def client(simulator):
    from pymodbus.client import ModbusTcpClient
    c = ModbusTcpClient('127.0.0.1', port=simulator.port, timeout=1.0, retries=0)
    assert c.connect()
    yield c
    c.close()


def test_server_serves_the_contract_over_modbus_tcp(simulator, client):
    import time
    regs = simulator.plc.registers
    assert simulator.port > 0
    assert client.write_coil(simulator.plc.coils['conveyor_run'], True).isError() is False
    time.sleep(0.2)                              # 1200/min: a bolt every 50 ms
    counter = client.read_holding_registers(regs['bolt_counter'], count=1).registers[0]
    assert counter >= 2
    assert client.read_coils(simulator.plc.coils['conveyor_run'], count=1).bits[0] is True
    status = client.read_holding_registers(regs['status'], count=1).registers[0]
    assert decode_status(status)['running']
    # One request writes the verdict pair; the gate uses it.
    rr = client.write_registers(regs['verdict_bolt_id'], [counter, 1])
    assert not rr.isError()
    assert client.read_holding_registers(regs['verdict_bolt_id'], count=2).registers == \
        [counter, 1]
    time.sleep(0.3)
    events = {e.bolt_id: e for e in simulator.model.events}
    assert events[counter].reason == 'OK' and events[counter].passed
    passed = client.read_holding_registers(regs['pass_count'], count=1).registers[0]
    assert passed == simulator.summary()['passed'] >= 1


def test_server_refuses_what_a_plc_would_refuse(simulator, client):
    regs = simulator.plc.registers
    rr = client.write_register(regs['bolt_counter'], 5)      # PLC-owned: read-only
    assert rr.isError() and rr.exception_code == 2
    rr = client.read_holding_registers(max(regs.values()) + 10, count=1)   # not in the map
    assert rr.isError() and rr.exception_code == 2
    rr = client.write_registers(regs['verdict_bolt_id'], [1, 3])           # bad verdict code
    assert rr.isError() and rr.exception_code == 3
    simulator.inject_exception(6)                                          # DEVICE BUSY once
    assert client.write_registers(regs['verdict_bolt_id'], [1, 1]).exception_code == 6
    assert not client.write_registers(regs['verdict_bolt_id'], [1, 1]).isError()


def test_a_verdict_written_by_halves_is_refused_like_a_bad_pair(simulator, client):
    """Issue 17, defect 6: FC6 (write single register) and a one-register FC16 reached the
    verdict registers without the checks the pair write gets: any code was stored, nothing was
    counted. The contract writes bolt id and code together; anything else is refused."""
    regs = simulator.plc.registers
    for address, value in ((regs['verdict_code'], 7), (regs['verdict_code'], 1),
                           (regs['verdict_bolt_id'], 5)):
        rr = client.write_register(address, value)                     # FC6
        assert rr.isError() and rr.exception_code == 3, (address, value)
        rr = client.write_registers(address, [value])                  # FC16, one register
        assert rr.isError() and rr.exception_code == 3, (address, value)
    assert client.read_holding_registers(regs['verdict_bolt_id'], count=2).registers == [0, 0]
    assert simulator.summary()['invalid_verdicts'] == 6
    assert simulator.summary()['verdicts'] == 0
    rr = client.write_registers(regs['verdict_bolt_id'], [5, 2])       # the pair: accepted
    assert not rr.isError()
    assert client.read_holding_registers(regs['verdict_bolt_id'], count=2).registers == [5, 2]


def test_suspend_drops_connections_and_resume_serves_the_same_state(simulator, client):
    from pymodbus.exceptions import ModbusException
    simulator.set_running(True)
    simulator.suspend()
    with pytest.raises(ModbusException):   # connection reset or no answer
        client.read_holding_registers(simulator.plc.registers['bolt_counter'], count=1)
    client.close()
    simulator.resume()
    assert client.connect()
    rr = client.read_holding_registers(simulator.plc.registers['status'], count=1)
    assert decode_status(rr.registers[0])['running']   # the PLC kept running meanwhile


def test_cli_runs_a_finite_scenario_and_writes_the_summary(tmp_path, capsys):
    out = tmp_path / 'summary.json'
    code = cli.main(['plc-sim', '--port', '0', '--rate', '1200', '--gate-delay', '0.1',
                     '--bolts', '4', '--start', '--heartbeat-timeout', '0',
                     '--summary', str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    # Nobody sent verdicts: every bolt was rejected by the fail-safe, exactly once.
    assert summary['bolts_in'] == summary['sorted'] == summary['rejected'] == 4
    assert summary['failsafe_rejects'] == 4 and summary['passed'] == 0
    assert summary['done'] is True
    assert 'Modbus TCP on 127.0.0.1:' in capsys.readouterr().out


def test_cli_rejects_a_bad_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(['plc-sim', '--defect-rate', '2'])
    assert 'expected a number in [0, 1]' in capsys.readouterr().err


def test_from_config_applies_overrides_for_in_process_use():
    with PlcSimulator.from_config(port=0, rate_per_min=30.0, bolts=None) as s:
        assert s.sim.rate_per_min == 30.0 and s.port > 0 and s.serving
    assert not s.serving


def test_cli_port_in_use_is_a_one_line_error(simulator, capsys):
    assert cli.main(['plc-sim', '--port', str(simulator.port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: plc-sim cannot listen on 127.0.0.1:{simulator.port}')
    assert '\n' not in err


def test_cli_writes_the_summary_on_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    out = tmp_path / 'summary.json'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'bolt_inspection.cli', 'plc-sim', '--port', '0', '--start',
         '--rate', '600', '--summary', str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    try:
        assert 'Modbus TCP on 127.0.0.1:' in proc.stdout.readline()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(out.read_text())
    assert summary['bolts_in'] >= 1 and summary['running'] is False
