"""The one verdict encoder/decoder (core.verdict): the wire format, the rule for OK, and the
hostile payloads of the black-box audit (issue 17)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bolt_inspection.core.fusion import fuse
from bolt_inspection.core.verdict import (
    Decision,
    VerdictDecodeError,
    decode_verdict_fields,
    decode_verdict_status,
    encode_verdict_status,
)


@dataclass
class KV:
    key: str
    value: str


@dataclass
class Status:
    """Duck-typed DiagnosticStatus (core has no ROS)."""

    level: object = 0
    message: object = 'OK'
    hardware_id: object = '7'
    name: str = 'bolt_inspection/verdict'
    values: list = field(default_factory=list)


def status(wire) -> Status:
    return Status(level=wire.level, message=wire.message, hardware_id=wire.hardware_id,
                  values=[KV(k, v) for k, v in wire.values])


def test_what_the_classifier_sends_decodes_to_the_same_verdict():
    ok = fuse({0: 0.1, 1: 0.2, 2: 0.05, 3: 0.3}, 0.5, range(4))
    wire = encode_verdict_status('17', ok.ok, ok.message, ok.p_ng, cams=range(4),
                                 latency_ms=231.5, threshold=0.5, model_id='abc123')
    verdict = decode_verdict_status(status(wire))
    assert verdict.decision is Decision.OK and verdict.ok and verdict.code == 1
    assert verdict.bolt_id == '17' and verdict.message == 'OK'
    assert verdict.p_ng == {0: 0.1, 1: 0.2, 2: 0.05, 3: 0.3}
    assert (verdict.latency_ms, verdict.threshold, verdict.model_id) == (231.5, 0.5, 'abc123')

    ng = fuse({0: 0.9, 1: 0.2, 2: 0.1, 3: 0.1}, 0.5, range(4))
    verdict = decode_verdict_status(status(encode_verdict_status(
        '18', ng.ok, ng.message, ng.p_ng, cams=range(4), latency_ms=200.0, threshold=0.5,
        model_id='m')))
    assert verdict.decision is Decision.NG and verdict.code == 2 and verdict.reasons == ()

    failsafe = fuse({0: 0.1, 1: 0.1}, 0.5, range(4), {2: 'cannot decode'})
    wire = encode_verdict_status('19', failsafe.ok, failsafe.message, failsafe.p_ng,
                                 cams=range(4), latency_ms=800.0, threshold=float('nan'),
                                 model_id='')
    verdict = decode_verdict_status(status(wire))
    assert verdict.decision is Decision.FAILSAFE_NG and not verdict.ok
    assert verdict.reasons == ('cam2: cannot decode', 'missing view cam3')
    assert verdict.message == 'NG: cam2: cannot decode; missing view cam3'
    assert verdict.p_ng == {0: 0.1, 1: 0.1, 2: None, 3: None}
    assert verdict.threshold is None                  # no model loaded: NaN -> 'n/a'


def test_ok_only_when_level_and_message_both_say_ok():
    assert decode_verdict_fields(0, 'OK', '1', []).ok
    assert decode_verdict_fields(b'\x00', 'OK', '1', []).ok            # rclpy's byte level
    assert decode_verdict_fields(2, 'NG', '1', []).decision is Decision.NG
    assert decode_verdict_fields(1, 'NG', '1', []).decision is Decision.NG
    for level, message in ((2, 'OK'), (0, 'NG'), (0, 'NG: missing view cam1'), (3, 'OK'),
                           (0, 'OK '), (0, 'OKAY'), (0, 'ok'), (2, 'garbled'), (2, 'NG:'),
                           (2, 'NG: ;  ; ')):
        with pytest.raises(VerdictDecodeError):
            decode_verdict_fields(level, message, '1', [])


@pytest.mark.parametrize('values, what', [
    ([('p_ng_cam' + '9' * 5000, '0.5')], 'longer than 64'),       # int() > 4300 digits
    ([('p_ng_cam' + '9' * 50, '0.5')], 'bad camera key'),
    ([('p_ng_cam0', '9' * 5000)], 'longer than'),
    ([('latency_ms', 'inf')], 'not a number'),
    ([('latency_ms', '1e400')], 'outside'),
    ([('latency_ms', '-5')], 'outside'),
    ([('latency_ms', 'nan')], 'not a number'),
    ([('p_ng_cam0', '1.5')], 'outside'),
    ([('p_ng_cam0', '1_0')], 'not a number'),
    ([('p_ng_cam0', ' 0.5')], 'not a number'),
    ([('p_ng_cam256', '0.5')], 'bad camera key'),
    ([('p_ng_cam', '0.5')], 'bad camera key'),
    ([('threshold', '0x1')], 'not a number'),
    ([('latency_ms', '1'), ('latency_ms', '2')], 'given twice'),
    ([(f'k{i}', '1') for i in range(65)], 'more than 64'),
    ([(5, '1')], 'must be text'),
    ([('model_id', None)], 'must be text'),
    ([('x',)], r'not a \(key, value\) pair'),
])
def test_hostile_values_are_refused_in_one_short_line(values, what):
    with pytest.raises(VerdictDecodeError, match=what) as info:
        decode_verdict_fields(2, 'NG', '5', values)
    assert '\n' not in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize('hardware_id', ['', '-1', '1.0', ' 7', '7 ', '٣', '²', '1' * 21,
                                         '9' * 5000, 'bolt7', None, 7])
def test_bolt_id_must_be_decimal_digits(hardware_id):
    with pytest.raises(VerdictDecodeError) as info:
        decode_verdict_fields(0, 'OK', hardware_id, [])
    assert len(str(info.value)) < 200


def test_missing_fields_and_wrong_types():
    with pytest.raises(VerdictDecodeError, match='no field'):
        decode_verdict_status(object())
    with pytest.raises(VerdictDecodeError, match='not a list'):
        decode_verdict_status(Status(values=5))
    with pytest.raises(VerdictDecodeError):
        decode_verdict_status(Status(level='0'))
    with pytest.raises(VerdictDecodeError):
        decode_verdict_status(Status(level=b'\x00\x00'))
    with pytest.raises(VerdictDecodeError):
        decode_verdict_status(Status(message=b'OK'))
    with pytest.raises(VerdictDecodeError, match='more than 64'):
        decode_verdict_status(Status(values=(KV(f'k{i}', '1') for i in range(10**9))))
    # Unknown keys are ignored, known ones are optional.
    verdict = decode_verdict_status(Status(values=[KV('colour', 'blue')]))
    assert verdict.ok and verdict.p_ng == {} and verdict.latency_ms is None


def test_reasons_never_carry_control_characters():
    verdict = decode_verdict_fields(2, 'NG: cam1: bad\nframe\x00; missing view cam2', '3', [])
    assert verdict.reasons == ('cam1: bad frame', 'missing view cam2')


def test_encoder_refuses_what_must_never_be_published():
    with pytest.raises(ValueError):
        encode_verdict_status('12a', True, 'OK', {}, cams=(), latency_ms=1.0, threshold=0.5,
                              model_id='m')
    with pytest.raises(ValueError):
        encode_verdict_status('12', True, 'NG', {}, cams=(), latency_ms=1.0, threshold=0.5,
                              model_id='m')
    # Numbers it cannot stand behind become 'n/a', so the decoder always accepts its output.
    wire = encode_verdict_status('12', False, 'NG', {0: float('inf'), 1: 2.0}, cams=range(2),
                                 latency_ms=float('inf'), threshold=-1.0, model_id='m\nx')
    assert dict(wire.values) == {'p_ng_cam0': 'n/a', 'p_ng_cam1': 'n/a', 'latency_ms': 'n/a',
                                 'threshold': 'n/a', 'model_id': 'm x'}
    assert decode_verdict_status(status(wire)).decision is Decision.NG
