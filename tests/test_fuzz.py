"""Property-based fuzzing (hypothesis) of every message decoder and of the Modbus register
decoding (issues 17, 18): typed messages carrying whatever their types allow (NaN and infinite
numbers, 10 KB strings, unknown decision and status constants, non-decimal bolt ids), and plain
objects with missing fields and wrong types.

The property everywhere: no uncaught exception. A decoder returns a valid value or raises its
one specific error; a node callback drops a bad message and counts it, and handles a good one.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from verdict_fakes import Header, Msg, Time, View, wire

from bolt_inspection.core.line.fusion import fuse
from bolt_inspection.core.line.verdict import (
    MAX_CAM,
    Decision,
    Verdict,
    VerdictDecodeError,
    ViewStatus,
    decode_verdict,
    encode_verdict,
)
from bolt_inspection.core.plc.bridge import CounterTracker, parse_bolt_id
from bolt_inspection.core.plc.contract import REGISTER_MODULO, counter_delta, decode_status
from bolt_inspection.core.plc.contract import decode_verdict as decode_registers
from bolt_inspection.core.plc.contract import encode_verdict as encode_registers

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies --------------------------------------------------------------------------------

# What a float64 field of a typed message can carry: anything, NaN and infinities included.
FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                  st.floats(min_value=0, max_value=1),
                  st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]))
TEXT = st.one_of(st.text(max_size=200),
                 st.sampled_from(['', 'OK', 'NG', ';', ' ; ; ', 'missing view cam1', '\x1b[2J']),
                 st.integers(min_value=4090, max_value=12_000).map(lambda n: 'x' * n))
BOLT = st.one_of(st.integers(min_value=0, max_value=10**25).map(str), st.text(max_size=30),
                 st.integers(min_value=4000, max_value=5000).map(lambda n: '9' * n))
ANY = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=4),
                st.lists(st.integers(), max_size=3))
DECISION = st.one_of(st.integers(min_value=0, max_value=255), st.sampled_from([1, 2, 3]))


# What the ROS types allow (no NUL in a C string, no lone surrogates), nothing more.
ROS_TEXT = st.text(alphabet=st.characters(exclude_categories=('Cs',), exclude_characters='\x00'),
                   max_size=60)
ROS_LONG_TEXT = ROS_TEXT | st.integers(min_value=4090, max_value=12_000).map(lambda n: 'r' * n)
ROS_BOLT = st.one_of(st.integers(min_value=0, max_value=10**25).map(str), ROS_TEXT)
UINT8 = st.integers(min_value=0, max_value=255)
ROS_VIEW = st.tuples(UINT8, st.integers(min_value=0, max_value=6) | UINT8, FLOAT,
                     ROS_TEXT | st.just('d' * 300))
# Per field, what a hostile or buggy publisher can put there within the types.
HOSTILE = {
    'bolt_id': ROS_BOLT | st.integers(min_value=4000, max_value=5000).map(lambda n: '9' * n),
    'decision': UINT8,
    'reason': ROS_LONG_TEXT,
    'views': st.lists(ROS_VIEW, max_size=6),
    'threshold': FLOAT,
    'model_id': ROS_TEXT | st.just('m' * 300),
    'latency_ms': FLOAT,
    'sec': st.integers(min_value=-2**31, max_value=2**31 - 1),
}
REASON = st.from_regex(r'[a-z0-9 :=.]{0,30}[a-z]', fullmatch=True)


@st.composite
def verdict_fields(draw, wrong_types: bool = False) -> dict:
    """The fields of a verdict: a well-formed one with up to two fields made hostile (and, for
    plain objects, of any type)."""
    decision = draw(st.sampled_from([1, 2, 3]))
    threshold = draw(st.floats(min_value=0.05, max_value=1.0))
    cams = draw(st.lists(UINT8, min_size=1, max_size=6, unique=True))
    if decision == 1:
        p_ng = st.floats(min_value=0.0, max_value=threshold, exclude_max=True)
        views = [(c, 1, draw(p_ng), '') for c in cams]
    else:
        views = [(c, draw(st.integers(min_value=1, max_value=4)),
                  draw(st.floats(min_value=0.0, max_value=1.0)), draw(ROS_TEXT)) for c in cams]
    fields = {
        'bolt_id': str(draw(st.integers(min_value=0, max_value=10**20 - 1))),
        'decision': decision,
        'reason': '' if decision == 1 else draw(REASON),
        'views': views,
        'threshold': threshold,
        'model_id': draw(ROS_TEXT),
        'latency_ms': draw(st.floats(min_value=0.0, max_value=1e6) | st.just(math.nan)),
        'sec': draw(st.integers(min_value=0, max_value=2**31 - 1)),
    }
    for name in draw(st.lists(st.sampled_from(sorted(HOSTILE)), max_size=2, unique=True)):
        fields[name] = draw(HOSTILE[name] | ANY if wrong_types else HOSTILE[name])
    return fields


def _duck(fields: dict) -> Msg:
    views = fields['views']
    if isinstance(views, list):
        views = [View(*v) if isinstance(v, tuple) else v for v in views]
    return Msg(header=Header(Time(fields['sec'], 0)), views=views,
               **{k: v for k, v in fields.items() if k not in ('sec', 'views')})


MSG = verdict_fields(wrong_types=True).map(_duck) | st.builds(
    Msg, header=st.builds(Header, st.builds(Time, ANY, ANY)) | ANY, bolt_id=ANY, decision=ANY,
    reason=ANY, views=st.lists(st.builds(View, ANY, ANY, ANY, ANY), max_size=3) | ANY,
    threshold=ANY, model_id=ANY, latency_ms=ANY)


def _check(verdict: Verdict) -> None:
    assert verdict.bolt_id.isascii() and verdict.bolt_id.isdigit()
    assert len(verdict.bolt_id) <= 20
    assert isinstance(verdict.decision, Decision)
    assert verdict.ok == (verdict.decision is Decision.OK) == (verdict.code == 1)
    assert verdict.message in ('OK', 'NG') or verdict.message.startswith('NG: ')
    cams = [v.camera for v in verdict.views]
    assert cams == sorted(set(cams))
    for view in verdict.views:
        assert 0 <= view.camera <= MAX_CAM and isinstance(view.status, ViewStatus)
        assert (view.p_ng is None) == (view.status is not ViewStatus.SCORED)
        assert view.p_ng is None or (math.isfinite(view.p_ng) and 0 <= view.p_ng <= 1)
    for value in (verdict.latency_ms, verdict.threshold):
        assert value is None or math.isfinite(value)
    assert all(r and not any(ord(c) < 32 for c in r) for r in verdict.reasons)
    if verdict.ok:      # the one rule for OK
        assert verdict.views and not verdict.reasons and verdict.threshold is not None
        assert all(v.p_ng is not None and v.p_ng < verdict.threshold for v in verdict.views)


# -- the verdict decoder -----------------------------------------------------------------------

@FUZZ
@given(MSG)
def test_the_verdict_decoder_returns_a_valid_verdict_or_its_one_error(msg):
    try:
        verdict = decode_verdict(msg)
    except VerdictDecodeError as exc:
        assert '\n' not in str(exc) and len(str(exc)) < 300
        event('refused')
        return
    event(f'accepted {verdict.decision.name}')
    _check(verdict)
    assert verdict.ok == (msg.decision == 1)


@FUZZ
@given(bolt=st.integers(min_value=0, max_value=10**19),
       p_ng=st.dictionaries(st.integers(min_value=0, max_value=300),
                            st.none() | st.floats(allow_nan=True, allow_infinity=True),
                            max_size=6)
       | st.fixed_dictionaries({c: st.floats(min_value=0, max_value=1) for c in range(4)}),
       failures=st.dictionaries(st.integers(min_value=0, max_value=6), st.text(max_size=300),
                                max_size=3) | st.just({}),
       extra=st.just([]) | st.lists(st.text(max_size=3000), max_size=3),
       threshold=st.floats(allow_nan=True, allow_infinity=True) | st.floats(0.0, 1.0),
       stamp=st.integers(min_value=-10**20, max_value=2**62),
       latency=st.none() | st.floats(allow_nan=True, allow_infinity=True),
       model_id=st.text(max_size=300))
def test_what_the_encoder_writes_the_decoder_reads_back(bolt, p_ng, failures, extra,
                                                        threshold, stamp, latency, model_id):
    fused = fuse(p_ng, threshold, range(4), failures, extra_reasons=extra)
    try:
        verdict = encode_verdict(bolt, fused, cams=range(4), stamp_ns=stamp,
                                 latency_ms=latency, threshold=threshold, model_id=model_id)
    except ValueError:
        # An OK under a threshold that is no probability (NaN lets every score pass): never
        # published; the classifier then sends a fail-safe NG.
        assert fused.ok and not 0 <= threshold <= 1
        event('OK refused by the encoder')
        return
    event(f'encoded {verdict.decision.name}')
    assert decode_verdict(wire(verdict)) == verdict
    _check(verdict)
    assert verdict.bolt_id == str(bolt) and verdict.ok == fused.ok
    for cam in range(4):
        sent = p_ng.get(cam)
        if cam in failures or sent is None or not math.isfinite(sent) or not 0 <= sent <= 1:
            assert verdict.p_ng[cam] is None
        else:
            assert verdict.p_ng[cam] == sent


# -- the consumers: real nodes, real typed messages --------------------------------------------

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


def _ros_verdict(fields: dict):
    from bolt_inspection_msgs.msg import Verdict as VerdictMsg
    from bolt_inspection_msgs.msg import ViewResult

    msg = VerdictMsg(views=[ViewResult(camera=c, status=kind, p_ng=p, detail=d)
                            for c, kind, p, d in fields['views']],
                     **{k: v for k, v in fields.items() if k not in ('sec', 'views')})
    msg.header.stamp.sec = fields['sec']
    return msg


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=verdict_fields())
def test_every_consumer_drops_and_counts_what_the_decoder_refuses(consumers, fields):
    msg = _ros_verdict(fields)
    try:
        decode_verdict(msg)
        bad = 0
    except VerdictDecodeError:
        bad = 1
    event('refused' if bad else 'accepted')
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
@given(bolt=ROS_BOLT, acknowledged=st.booleans(), code=UINT8, source=UINT8,
       write_ms=FLOAT, level=UINT8, name=ROS_TEXT, message=ROS_TEXT,
       pairs=st.lists(st.tuples(ROS_TEXT, ROS_TEXT), max_size=6),
       numbers=st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=6,
                        max_size=6),
       flags=st.lists(st.booleans(), min_size=6, max_size=6), wait=FLOAT)
def test_deliveries_triggers_status_and_diagnostics_never_raise(
        consumers, bolt, acknowledged, code, source, write_ms, level, name, message, pairs,
        numbers, flags, wait):
    from bolt_inspection_msgs.msg import LineStatus, PlcDelivery
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from std_msgs.msg import Header as HeaderMsg

    log, hmi, driver = consumers['log'], consumers['hmi'], consumers['driver']
    before = (log.counts['bad_deliveries'], log.counts['deliveries'])
    log._on_delivery(PlcDelivery(bolt_id=bolt, acknowledged=acknowledged, code=code,
                                 source=source, write_ms=write_ms, detail=message))
    good = bolt.isascii() and bolt.isdigit() and len(bolt) <= 20
    assert (log.counts['bad_deliveries'] - before[0], log.counts['deliveries'] - before[1]) == \
        ((0, 1) if good else (1, 0))
    driver._on_trigger(HeaderMsg(frame_id=bolt))
    status = LineStatus(level=level, message=message, plc=name, connected=flags[0],
                        path_alive=flags[1], heartbeat_healthy=flags[2], plc_read=flags[3],
                        running=flags[4], plc_watchdog_tripped=flags[5], reconnect_in_s=wait,
                        path_reason=message, last_error=name, last_bolt_id=bolt,
                        triggers=numbers[0], skipped_bolts=numbers[1],
                        verdicts_written=numbers[2], undelivered_verdicts=numbers[3],
                        bad_verdicts=numbers[4], rejected_in_flight=numbers[5],
                        pass_count=numbers[0] % 65536, reject_count=numbers[1] % 65536)
    hmi._on_plc_status(status)
    snap = hmi.state.snapshot()
    assert snap['health']['PLC']['message'] == message
    assert snap['running'] == (flags[4] if flags[3] else None)
    diagnostic = DiagnosticStatus(level=bytes([level]), name=name, message=message,
                                  hardware_id=bolt,
                                  values=[KeyValue(key=k, value=v) for k, v in pairs])
    hmi._on_diagnostics(DiagnosticArray(status=[diagnostic]))
    assert name in hmi.state.snapshot()['health'] or name == 'PLC'
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
        bolt, code = decode_registers(registers)
        assert code in (1, 2) and encode_registers(bolt, code)[1] == code
    except ValueError:
        pass
    try:
        assert parse_bolt_id(text) >= 0
    except ValueError:
        pass


@pytest.fixture(scope='module')
def sim():
    from bolt_inspection.core.plc.contract import load_plc_config
    from bolt_inspection.core.plc.server import PlcSimulator

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
