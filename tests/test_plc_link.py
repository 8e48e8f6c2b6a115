"""core.plc.link.PlcLink against the simulated PLC over real Modbus TCP, without ROS.

What the PLC bridge node relies on: every counted bolt becomes one trigger, every verdict
reaches the gate, Start / Stop move the conveyor coil, a dead inspection path stops the
conveyor and rejects the bolts in flight, a vanished PLC is reconnected to, and a lost
connection during shutdown is no error.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import wait_for

from bolt_inspection.core.plc.contract import (
    VERDICT_NG,
    VERDICT_OK,
    load_plc_config,
    parse_plc_config,
)
from bolt_inspection.core.plc.link import LinkEvents, PlcLink
from bolt_inspection.core.plc.server import PlcSimulator, sim_with

# Generous timeout_s: other jobs load this 2-core machine (see test_plc_bridge.FAST).
FAST = {'poll_period_s': 0.01, 'heartbeat_period_s': 0.1, 'status_period_s': 0.1,
        'timeout_s': 1.0, 'reconnect_min_s': 0.05, 'reconnect_max_s': 0.2}


def truth_even_ng(n: int) -> str:
    return 'NG' if n % 2 == 0 else 'OK'


class Recorder(LinkEvents):
    """What the bridge node would publish and log; optionally answers every trigger."""

    def __init__(self) -> None:
        self.triggers: list[int] = []
        self.deliveries: list[tuple[int, int, str, bool]] = []
        self.logs: list[tuple[str, str]] = []
        self.link: PlcLink | None = None    # set: answer each trigger by the truth

    def triggered(self, bolt_ids):
        self.triggers.extend(bolt_ids)
        if self.link is not None:
            for bolt_id in bolt_ids:
                ok = truth_even_ng(bolt_id) == 'OK'
                self.link.submit(bolt_id, VERDICT_OK if ok else VERDICT_NG)

    def delivered(self, item, message, write_ms, own):
        self.deliveries.append((item.bolt_id, item.code, message, own))

    def log(self, level, text):
        self.logs.append((level, text))


@pytest.fixture
def rig():
    made = []

    def make(*, answer=True, stages=(), shutdown=None, **sim_kw):
        plc, sim = load_plc_config()
        sim = sim_with(sim, **{'rate_per_min': 240.0, 'gate_delay_s': 1.0,
                               'heartbeat_timeout_s': 2.0, **sim_kw})
        server = PlcSimulator(plc, sim, host='127.0.0.1', port=0, truth=truth_even_ng).start()
        config = parse_plc_config({**plc.to_params(), **FAST, 'host': '127.0.0.1',
                                   'port': server.port})
        events = Recorder()
        link = PlcLink(config, stages=stages, stage_timeout_s=0.3, verdict_timeout_s=1.0,
                       events=events, shutdown_requested=shutdown)
        if answer:
            events.link = link
        made.append((server, link))
        link.start()
        # Answered once: the server has taken the connection in (connected alone is the
        # client's side of the handshake; a suspend before the server registered it misses it).
        assert wait_for(lambda: link.stats()['polls'] >= 1), link.stats()['last_error']
        return server, link, events
    yield make
    for server, link in made:
        link.stop()
        server.stop()


def test_every_counted_bolt_is_triggered_once_and_sorted_by_its_verdict(rig):
    server, link, events = rig(bolts=6)
    assert link.set_conveyor(True) == (True, 'conveyor running')
    assert wait_for(lambda: server.summary()['done'], timeout=10.0), server.summary()
    assert events.triggers == [1, 2, 3, 4, 5, 6]
    summary = server.summary()
    assert summary['sorted'] == 6 and summary['accuracy'] == 1.0
    assert summary['failsafe_rejects'] == 0 and summary['late_verdicts'] == 0
    assert sorted(b for b, _, message, _ in events.deliveries if message == 'delivered') == \
        [1, 2, 3, 4, 5, 6]
    stats = link.stats()
    assert stats['verdicts_written'] == 6 and stats['undelivered'] == 0
    assert not [text for level, text in events.logs if level == 'error']


def test_start_and_stop_move_the_coil_and_a_stopped_link_refuses(rig):
    server, link, _ = rig(answer=False)
    assert link.set_conveyor(True) == (True, 'conveyor running')
    assert server.registers()['conveyor_run'] == 1
    assert link.set_conveyor(False) == (True, 'conveyor stopped')
    assert server.registers()['conveyor_run'] == 0
    link.stop()
    ok, message = link.set_conveyor(True)
    assert not ok and 'not running' in message


def test_a_dead_stage_stops_the_conveyor_and_rejects_the_bolts_in_flight(rig):
    server, link, events = rig(answer=False, stages=['classifier'])
    ok, message = link.set_conveyor(True)
    assert not ok and 'inspection path down' in message and 'classifier' in message
    beating = threading.Event()

    def classifier():
        while not beating.is_set():
            link.beat('classifier')
            time.sleep(0.05)
    thread = threading.Thread(target=classifier, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: link.path.alive)
        assert link.set_conveyor(True)[0]
        assert wait_for(lambda: len(events.triggers) >= 2)   # never answered: in flight
    finally:
        beating.set()
        thread.join()
    # Silent for the stage timeout: conveyor stopped, the unanswered bolts rejected as NG.
    assert wait_for(lambda: not link.path.alive and 'classifier silent' in link.path.reason)
    assert wait_for(lambda: server.registers()['conveyor_run'] == 0)
    # Every triggered bolt was unanswered: each is written NG by the link itself.
    assert wait_for(lambda: {b for b, _, _, own in events.deliveries if own} >= set(
        events.triggers))
    assert all(code == VERDICT_NG and message == 'delivered'
               for _, code, message, own in events.deliveries if own), events.deliveries
    # A late verdict for a rejected bolt never turns it into a pass.
    assert link.submit(events.triggers[0], VERDICT_OK) is False
    assert link.stats()['late_for_rejected'] == 1
    assert any(level == 'error' and 'inspection path down' in text
               for level, text in events.logs)


def test_a_vanished_plc_is_reconnected_and_reported(rig):
    server, link, events = rig(answer=False)
    server.suspend()
    assert wait_for(lambda: not link.stats()['connected'], timeout=3.0), link.stats()
    assert wait_for(lambda: any(level == 'error' and text.startswith(('PLC connection lost',
                                                                      'PLC timeout'))
                                for level, text in events.logs)), events.logs
    server.resume()
    assert wait_for(lambda: link.stats()['connected'], timeout=3.0)
    stats = link.stats()
    assert stats['disconnects'] >= 1 and stats['connects'] >= 2


def test_a_plc_gone_during_shutdown_is_a_warning_not_an_error(rig):
    shutdown = threading.Event()
    server, link, events = rig(answer=False, shutdown=shutdown)
    shutdown.set()            # Ctrl-C: every process of the line is being stopped
    server.suspend()
    assert wait_for(lambda: not link.stats()['connected'], timeout=3.0), link.stats()
    assert wait_for(lambda: any('shutting down' in text for _, text in events.logs))
    assert not [text for level, text in events.logs if level == 'error' and 'PLC' in text]


def test_a_modbus_exception_is_retried_then_given_up_with_the_bolt_id(rig):
    server, link, events = rig(answer=False)
    server.inject_exception(4, count=3)      # DEVICE FAILURE on every attempt (1 + 2 retries)
    link.submit(6, VERDICT_NG)
    assert wait_for(lambda: link.stats()['undelivered'] == 1)
    bolt, code, message, own = events.deliveries[-1]
    assert (bolt, code, own) == (6, VERDICT_NG, False) and 'DEVICE FAILURE' in message
    assert link.stats()['connected']
