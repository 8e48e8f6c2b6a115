"""Property-based fuzzing (hypothesis) of every message decoder and of the Modbus register
decoding (issue 17): arbitrary strings, huge and non-finite numbers, missing keys, wrong types.

The property everywhere: no uncaught exception. A decoder returns a valid value or raises its
one specific error; a node callback drops a bad message and counts it, and handles a good one.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bolt_inspection.core.plc_bridge_logic import CounterTracker, parse_bolt_id
from bolt_inspection.core.plc_contract import (
    REGISTER_MODULO,
    counter_delta,
    decode_status,
    decode_verdict,
    encode_verdict,
)
from bolt_inspection.core.verdict import (
    MAX_CAM,
    Decision,
    Verdict,
    VerdictDecodeError,
    decode_verdict_status,
    encode_verdict_status,
)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies --------------------------------------------------------------------------------

NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=1).map(lambda v: f'{v:.4f}'),
    st.integers().map(str),
    st.integers(min_value=4000, max_value=6000).map(lambda n: '9' * n),   # past int()'s limit
    st.sampled_from(['n/a', 'nan', 'inf', '-inf', 'Infinity', '1e400', '-0', '1_0', ' 0.5',
                     '0x10', '½', '٣', '', '0.5\n', '1e-400', '+1']),
)
KEY = st.one_of(
    st.sampled_from(['latency_ms', 'threshold', 'model_id', 'p_ng_cam', 'p_ng_cam-1']),
    st.integers(min_value=0, max_value=10**6).map(lambda k: f'p_ng_cam{k}'),
    st.integers(min_value=4000, max_value=5000).map(lambda n: 'p_ng_cam' + '7' * n),
    st.text(max_size=80),
)
TEXT = st.one_of(st.text(max_size=200), st.sampled_from(['OK', 'NG', 'NG:', 'NG: ', 'OK ',
                                                         'NG: missing view cam1', 'ok']),
                 st.integers(min_value=4301, max_value=6000).map(lambda n: 'NG: ' + 'x' * n))
BOLT = st.one_of(st.integers(min_value=0, max_value=10**25).map(str), st.text(max_size=30),
                 st.integers(min_value=4000, max_value=5000).map(lambda n: '9' * n))
ANY = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=4),
                st.lists(st.integers(), max_size=3))


@dataclass
class KV:
    key: object
    value: object


@dataclass
class Status:
    level: object = 0
    message: object = 'OK'
    hardware_id: object = '1'
    name: str = 'bolt_inspection/verdict'
    values: object = field(default_factory=list)


PAIRS = st.lists(st.tuples(KEY, NUMBER_TEXT | st.text(max_size=40)), max_size=12)
STATUS = st.builds(
    Status,
    level=st.one_of(st.integers(min_value=0, max_value=255), st.binary(min_size=0, max_size=3),
                    ANY),
    message=st.one_of(TEXT, ANY),
    hardware_id=st.one_of(BOLT, ANY),
    values=st.one_of(PAIRS.map(lambda ps: [KV(k, v) for k, v in ps]),
                     st.lists(st.builds(KV, ANY, ANY), max_size=3), ANY),
)


def _check(verdict: Verdict) -> None:
    assert verdict.bolt_id.isascii() and verdict.bolt_id.isdigit()
    assert len(verdict.bolt_id) <= 20
    assert isinstance(verdict.decision, Decision)
    assert verdict.ok == (verdict.decision is Decision.OK) == (verdict.code == 1)
    assert verdict.message in ('OK', 'NG') or verdict.message.startswith('NG: ')
    for cam, p in verdict.p_ng.items():
        assert 0 <= cam <= MAX_CAM and (p is None or (math.isfinite(p) and 0 <= p <= 1))
    for value in (verdict.latency_ms, verdict.threshold):
        assert value is None or math.isfinite(value)
    assert all('\n' not in r and r for r in verdict.reasons)


# -- the verdict decoder -----------------------------------------------------------------------

@FUZZ
@given(STATUS)
def test_the_verdict_decoder_returns_a_valid_verdict_or_its_one_error(status):
    try:
        verdict = decode_verdict_status(status)
    except VerdictDecodeError as exc:
        assert '\n' not in str(exc) and len(str(exc)) < 300
        return
    _check(verdict)
    level = status.level[0] if isinstance(status.level, bytes) else status.level
    assert verdict.ok == (level == 0 and status.message == 'OK')     # the one rule for OK


@FUZZ
@given(bolt=st.integers(min_value=0, max_value=10**19), ok=st.booleans(),
       reasons=st.lists(st.text(min_size=1, max_size=30), max_size=4),
       p_ng=st.dictionaries(st.integers(min_value=0, max_value=300),
                            st.none() | st.floats(allow_nan=True, allow_infinity=True),
                            max_size=6),
       latency=st.none() | st.floats(allow_nan=True, allow_infinity=True),
       threshold=st.none() | st.floats(allow_nan=True, allow_infinity=True),
       model_id=st.text(max_size=300))
def test_what_the_encoder_writes_the_decoder_reads_back(bolt, ok, reasons, p_ng, latency,
                                                        threshold, model_id):
    reasons = [r for r in reasons if r.strip(' ;\r\n\t\x00')]
    message = 'OK' if ok else ('NG: ' + '; '.join(reasons) if reasons else 'NG')
    wire = encode_verdict_status(bolt, ok, message, p_ng, cams=range(4), latency_ms=latency,
                                 threshold=threshold, model_id=model_id)
    verdict = decode_verdict_status(Status(wire.level, wire.message, wire.hardware_id,
                                           values=[KV(k, v) for k, v in wire.values]))
    _check(verdict)
    assert verdict.bolt_id == str(bolt) and verdict.ok == ok
    for cam in range(4):
        sent = p_ng.get(cam)
        got = verdict.p_ng[cam]
        if sent is None or not math.isfinite(sent) or not 0 <= sent <= 1:
            assert got is None
        else:
            assert got == pytest.approx(sent, abs=6e-5)


# -- the consumers: real nodes, real messages --------------------------------------------------

@pytest.fixture(scope='module')
def consumers(tmp_path_factory):
    """The verdict consumers, configured (no spinning: the callbacks are called directly)."""
    rclpy = pytest.importorskip('rclpy')
    from conftest import next_domain_id
    from rclpy.parameter import Parameter

    from bolt_inspection.nodes.hmi_node import HmiNode
    from bolt_inspection.nodes.inspection_log_node import InspectionLogNode
    from bolt_inspection.nodes.lifecycle_util import bring_down, bring_up
    from bolt_inspection.nodes.line_driver import LineDriver
    from bolt_inspection.nodes.plc_bridge_node import PlcBridgeNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain_id())
    tmp = tmp_path_factory.mktemp('fuzz')
    bridge = PlcBridgeNode(context=context)
    log = InspectionLogNode(context=context, parameter_overrides=[
        Parameter('db_path', value=str(tmp / 'log.db')), Parameter('store_crops', value=False),
        Parameter('synchronous', value='OFF')])
    hmi = HmiNode(context=context, parameter_overrides=[Parameter('port', value=0),
                                                        Parameter('log_db', value='')])
    driver = LineDriver('fuzz_driver', context=context)
    bridge.trigger_configure()            # configured, not active: no Modbus worker
    assert bring_up(log) and bring_up(hmi)
    yield {'bridge': bridge, 'log': log, 'hmi': hmi, 'driver': driver}
    bring_down(hmi)
    bring_down(log)
    for node in (bridge, log, hmi, driver):
        node.destroy_node()
    context.try_shutdown()


def _ros_status(level: int, message: str, hardware_id: str, pairs):
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    return DiagnosticStatus(level=bytes([level]), message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in pairs])


ROS_TEXT = st.text(alphabet=st.characters(exclude_categories=('Cs',)), max_size=60)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(level=st.integers(min_value=0, max_value=255), message=TEXT | ROS_TEXT, bolt=BOLT,
       pairs=st.lists(st.tuples(KEY, NUMBER_TEXT), max_size=8))
def test_every_consumer_drops_and_counts_what_the_decoder_refuses(consumers, level, message,
                                                                  bolt, pairs):
    assume('\x00' not in message + bolt + ''.join(k + v for k, v in pairs))  # C strings in ROS
    msg = _ros_status(level, message, bolt, pairs)
    try:
        decode_verdict_status(msg)
        bad = 0
    except VerdictDecodeError:
        bad = 1
    bridge, log, hmi, driver = (consumers[k] for k in ('bridge', 'log', 'hmi', 'driver'))
    before = (bridge.counters['bad_verdicts'], log.counts['bad_verdicts'],
              hmi.counters['bad_verdicts'], driver.bad_verdicts,
              bridge.counters['verdicts_received'], log.counts['verdicts'],
              hmi.state.snapshot()['counters']['total'], len(driver.verdicts()))
    for callback in (bridge._on_verdict, log._on_verdict, hmi._on_verdict, driver._on_verdict):
        callback(msg)
    after = (bridge.counters['bad_verdicts'], log.counts['bad_verdicts'],
             hmi.counters['bad_verdicts'], driver.bad_verdicts,
             bridge.counters['verdicts_received'], log.counts['verdicts'],
             hmi.state.snapshot()['counters']['total'], len(driver.verdicts()))
    assert [a - b for a, b in zip(after, before, strict=True)] == [bad] * 4 + [1 - bad] * 4
    assert log.log.stats()['alive']


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(level=st.integers(min_value=0, max_value=255), bolt=BOLT, name=ROS_TEXT,
       message=ROS_TEXT, pairs=st.lists(st.tuples(ROS_TEXT, ROS_TEXT), max_size=6))
def test_deliveries_triggers_status_and_diagnostics_never_raise(consumers, level, bolt, name,
                                                                message, pairs):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Header

    assume('\x00' not in bolt + name + message + ''.join(k + v for k, v in pairs))
    status = _ros_status(level, message, bolt, pairs)
    status.name = name
    log, hmi, driver = consumers['log'], consumers['hmi'], consumers['driver']
    before = (log.counts['bad_deliveries'], log.counts['deliveries'])
    log._on_delivery(status)
    good = bolt.isascii() and bolt.isdigit() and len(bolt) <= 20
    assert (log.counts['bad_deliveries'] - before[0], log.counts['deliveries'] - before[1]) == \
        ((0, 1) if good else (1, 0))
    log._on_trigger(Header(frame_id=bolt))
    driver._on_trigger(Header(frame_id=bolt))
    hmi._on_plc_status(status)
    hmi._on_diagnostics(DiagnosticArray(status=[status]))
    snap = hmi.state.snapshot()
    assert name in snap['health'] or name == 'PLC'
    assert log.log.stats()['alive']


@settings(max_examples=200, deadline=None)
@given(encoding=st.sampled_from(['bgr8', 'rgb8', 'bgra8', 'mono8', 'rgba8', '16UC1', '', 'x']),
       width=st.integers(min_value=0, max_value=2**32 - 1),
       height=st.integers(min_value=0, max_value=2**32 - 1),
       step=st.integers(min_value=0, max_value=2**32 - 1), data=st.binary(max_size=600))
def test_the_image_decoder_returns_bgr_or_an_image_error(encoding, width, height, step, data):
    pytest.importorskip('rclpy')
    from sensor_msgs.msg import Image

    from bolt_inspection.core.errors import ImageError
    from bolt_inspection.nodes.image_conv import image_to_bgr

    msg = Image(encoding=encoding, width=width, height=height, step=step, data=data)
    try:
        bgr = image_to_bgr(msg)
    except ImageError:
        return
    assert bgr.shape == (height, width, 3) and bgr.dtype.name == 'uint8'


# -- Modbus registers --------------------------------------------------------------------------

@FUZZ
@given(st.lists(st.integers(min_value=-(2**70), max_value=2**70), min_size=1, max_size=60),
       st.integers(min_value=1, max_value=65535), st.booleans())
def test_any_counter_sequence_numbers_bolts_consistently(raws, max_jump, latest):
    tracker = CounterTracker(max_jump=max_jump, trigger_latest_on_jump=latest)
    previous_id = None
    for raw in raws:
        update = tracker.update(raw)
        ids = sorted(update.new_ids + update.skipped)
        assert len(ids) <= max_jump and len(set(ids)) == len(ids)
        if ids and previous_id is not None and not update.resync:
            assert ids[0] == previous_id + 1
        assert 0 <= tracker.raw < REGISTER_MODULO
        previous_id = tracker.bolt_id


@FUZZ
@given(st.integers(min_value=-(2**70), max_value=2**70),
       st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=4),
       st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=40) | BOLT)
def test_register_decoders_return_or_raise_value_error(word, registers, previous, text):
    flags = decode_status(word)
    assert set(flags.values()) <= {True, False}
    assert 0 <= counter_delta(previous, word) < REGISTER_MODULO
    try:
        bolt, code = decode_verdict(registers)
        assert code in (1, 2) and encode_verdict(bolt, code)[1] == code
    except ValueError:
        pass
    try:
        assert parse_bolt_id(text) >= 0
    except ValueError:
        pass


@pytest.fixture(scope='module')
def sim():
    from bolt_inspection.core.plc_contract import load_plc_config
    from bolt_inspection.plc_server import PlcSimulator

    plc, sim_config = load_plc_config()
    return PlcSimulator(plc, sim_config, host='127.0.0.1', port=0, truth=None)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fc=st.sampled_from([1, 3, 5, 6, 15, 16, 22, 23]),
       address=st.integers(min_value=0, max_value=12), count=st.integers(min_value=1, max_value=8),
       values=st.lists(st.integers(min_value=0, max_value=65535) | st.booleans(), min_size=8,
                       max_size=8))
def test_the_simulated_plc_decodes_any_request(sim, fc, address, count, values):
    """The PLC side of the register decoding: any request on the configured map is served or
    refused with a Modbus exception; a verdict is stored only as a whole, valid pair."""
    registers = [0] * (count + 16)
    writes = values[:count] if fc in (5, 6, 15, 16, 22, 23) else None
    before = dict(sim.model.verdicts)
    result = asyncio.run(sim._action(fc, address, address, count, registers, writes))
    assert result is None or int(result) in (2, 3, 4, 6)
    for bolt, (code, _) in sim.model.verdicts.items():
        assert code in (1, 2) and 0 <= bolt < REGISTER_MODULO
    regs = sim.plc.registers
    span = range(address, address + count)
    half = (regs['verdict_bolt_id'] in span) != (regs['verdict_code'] in span)
    if half and fc in (6, 16, 22, 23):
        assert result is not None and sim.model.verdicts == before
