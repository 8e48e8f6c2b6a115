"""The one verdict encoder/decoder (core.line.verdict) of the typed bolt_inspection_msgs/Verdict:
what
the classifier sends reads back the same, the rule for OK, and hostile messages (issues 17, 18).

Core has no ROS: the messages here are plain objects with the fields of Verdict.msg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from verdict_fakes import Header, Msg, Time, View, wire

from bolt_inspection.core.line.fusion import fuse
from bolt_inspection.core.line.verdict import (
    MAX_REASON_CHARS,
    Decision,
    VerdictDecodeError,
    ViewStatus,
    decode_verdict,
    encode_verdict,
)

NAN = math.nan


STAMP = 1_700_000_000_123_456_789


def test_what_the_classifier_sends_decodes_to_the_same_verdict():
    ok = fuse({0: 0.1, 1: 0.2, 2: 0.05, 3: 0.3}, 0.5, range(4))
    sent = encode_verdict('17', ok, cams=range(4), stamp_ns=STAMP, latency_ms=231.5,
                          threshold=0.5, model_id='abc123')
    verdict = decode_verdict(wire(sent))
    assert verdict == sent
    assert verdict.decision is Decision.OK and verdict.ok and verdict.code == 1
    assert verdict.bolt_id == '17' and verdict.message == 'OK' and verdict.reasons == ()
    assert verdict.stamp_ns == STAMP                       # the trigger stamp travels along
    assert verdict.p_ng == {0: 0.1, 1: 0.2, 2: 0.05, 3: 0.3}
    assert {v.status for v in verdict.views} == {ViewStatus.SCORED}
    assert (verdict.latency_ms, verdict.threshold, verdict.model_id) == (231.5, 0.5, 'abc123')

    ng = fuse({0: 0.9, 1: 0.2, 2: 0.1, 3: 0.1}, 0.5, range(4))
    verdict = decode_verdict(wire(encode_verdict('18', ng, cams=range(4), stamp_ns=STAMP,
                                                 latency_ms=200.0, threshold=0.5,
                                                 model_id='m')))
    assert verdict.decision is Decision.NG and verdict.code == 2 and verdict.message == 'NG'
    assert verdict.reasons == ('cam0: NG p=0.900',)        # which view the model found NG

    failsafe = fuse({0: 0.1, 1: 0.1}, 0.5, range(4), {2: 'cannot decode'},
                    extra_reasons=['overloaded'])
    sent = encode_verdict('19', failsafe, cams=range(4), stamp_ns=STAMP, latency_ms=800.0,
                          threshold=NAN, model_id='')
    verdict = decode_verdict(wire(sent))
    assert verdict == sent
    assert verdict.decision is Decision.FAILSAFE_NG and not verdict.ok
    assert verdict.reasons == ('overloaded', 'cam2: cannot decode', 'missing view cam3')
    assert verdict.message == 'NG: overloaded; cam2: cannot decode; missing view cam3'
    assert [(v.camera, v.status, v.p_ng) for v in verdict.views] == [
        (0, ViewStatus.SCORED, 0.1), (1, ViewStatus.SCORED, 0.1),
        (2, ViewStatus.CORRUPT, None), (3, ViewStatus.MISSING, None)]
    assert verdict.views[2].detail == 'cannot decode'
    assert verdict.threshold is None                       # no model loaded: NaN on the wire

    # A fail-safe NG reads like fusion's message; a view found NG shows in its score.
    both = fuse({0: 0.9, 1: 0.1, 2: 0.1}, 0.5, range(4))
    verdict = decode_verdict(wire(encode_verdict('20', both, cams=range(4), stamp_ns=STAMP,
                                                 latency_ms=1.0, threshold=0.5, model_id='m')))
    assert verdict.message == both.message == 'NG: missing view cam3'
    assert verdict.p_ng[0] == 0.9


def test_views_of_a_bolt_that_was_not_inferred_say_so():
    # The classifier's overload path: the views arrived but the bolt never reached the model.
    fused = fuse({}, 0.5, [], extra_reasons=['overloaded'])
    verdict = encode_verdict('5', fused, cams=range(4), stamp_ns=STAMP, latency_ms=1.0,
                             threshold=0.5, model_id='m')
    assert [v.status for v in verdict.views] == [ViewStatus.NOT_SCORED] * 4
    assert decode_verdict(wire(verdict)).reasons == ('overloaded',)


@pytest.mark.parametrize('change, what', [
    ({'reason': 'cam1: looks odd'}, 'gives a reason'),
    ({'threshold': NAN}, 'no threshold'),
    ({'views': []}, 'no views'),
    ({'views': [View(0, 1, 0.1), View(1, 2, NAN)]}, 'cam1 is missing'),
    ({'views': [View(0, 1, 0.1), View(1, 3, NAN, 'bad frame')]}, 'cam1 is corrupt'),
    ({'views': [View(0, 1, 0.1), View(1, 4, NAN)]}, 'cam1 is not_scored'),
    ({'views': [View(0, 1, 0.5)]}, 'p_ng 0.5 >= threshold'),
])
def test_ok_only_when_its_own_views_say_ok(change, what):
    assert decode_verdict(Msg()).ok
    with pytest.raises(VerdictDecodeError, match=what):
        decode_verdict(Msg(**change))
    # The same content as NG is fine: NG never passes a bolt.
    assert decode_verdict(Msg(decision=2, **change)).decision is Decision.NG


@pytest.mark.parametrize('decision', [0, 4, 255, -1, True, 1.0, '1', None])
def test_unknown_decisions_are_refused(decision):
    with pytest.raises(VerdictDecodeError):
        decode_verdict(Msg(decision=decision))


def test_failsafe_needs_a_reason():
    with pytest.raises(VerdictDecodeError, match='no reason'):
        decode_verdict(Msg(decision=3, reason=' ;  ; '))
    assert decode_verdict(Msg(decision=3, reason='missing view cam1')).reasons == (
        'missing view cam1',)


@pytest.mark.parametrize('change, what', [
    ({'views': [View(0, 1, NAN)]}, 'no p_ng'),
    ({'views': [View(0, 1, math.inf)]}, 'outside'),
    ({'views': [View(0, 1, 1.5)]}, 'outside'),
    ({'views': [View(0, 1, -0.1)]}, 'outside'),
    ({'views': [View(0, 1, 10**400)]}, 'out of range'),
    ({'views': [View(0, 1, '0.1')]}, 'must be a number'),
    ({'threshold': math.inf}, 'outside'),
    ({'threshold': 2.0}, 'outside'),
    ({'latency_ms': math.inf}, 'outside'),
    ({'latency_ms': -math.inf}, 'outside'),
    ({'latency_ms': -5.0}, 'outside'),
    ({'latency_ms': 1e300}, 'outside'),
    ({'reason': 'x' * 10_000, 'decision': 3}, f'longer than {MAX_REASON_CHARS}'),
    ({'model_id': 'm' * 300}, 'longer than 256'),
    ({'views': [View(0, 3, NAN, 'd' * 300)], 'decision': 3, 'reason': 'x'}, 'longer than'),
    ({'views': [View(0, 1, 0.1), View(0, 1, 0.2)]}, 'given twice'),
    ({'views': [View(256, 1, 0.1)]}, 'outside 0..255'),
    ({'views': [View(-1, 1, 0.1)]}, 'outside 0..255'),
    ({'views': [View(0, 0, 0.1)]}, 'unknown status'),
    ({'views': [View(0, 9, 0.1)]}, 'unknown status'),
    ({'views': (View(c % 256, 1, 0.1) for c in range(10**9))}, 'more than 256|given twice'),
    ({'views': 5}, 'not a list'),
    ({'views': [object()]}, 'no field'),
    ({'model_id': b'm'}, 'must be text'),
    ({'reason': None}, 'must be text'),
    ({'header': Header(Time(-1, 0))}, 'not a valid time'),
    ({'header': Header(Time(1, 10**9))}, 'not a valid time'),
    ({'header': None}, 'no field'),
])
def test_hostile_fields_are_refused_in_one_short_line(change, what):
    with pytest.raises(VerdictDecodeError, match=what) as info:
        decode_verdict(Msg(**change))
    assert '\n' not in str(info.value) and len(str(info.value)) < 200


def test_nan_means_not_given():
    verdict = decode_verdict(Msg(decision=2, threshold=NAN, latency_ms=NAN,
                                 views=[View(0, 2, 0.7)]))       # p_ng of an unscored view
    assert (verdict.threshold, verdict.latency_ms, verdict.p_ng) == (None, None, {0: None})


@pytest.mark.parametrize('bolt_id', ['', '-1', '1.0', ' 7', '7 ', '٣', '²', '1' * 21,
                                     '9' * 5000, 'bolt7', None, 7])
def test_bolt_id_must_be_decimal_digits(bolt_id):
    with pytest.raises(VerdictDecodeError) as info:
        decode_verdict(Msg(bolt_id=bolt_id))
    assert len(str(info.value)) < 200


def test_missing_fields():
    with pytest.raises(VerdictDecodeError, match='no field'):
        decode_verdict(object())


def test_text_never_carries_control_characters():
    verdict = decode_verdict(Msg(decision=3, reason='cam1: bad\nframe\x00; missing view cam2',
                                 model_id='m\x1b[31m'))
    assert verdict.reasons == ('cam1: bad frame', 'missing view cam2')
    assert verdict.model_id == 'm [31m'


def test_encoder_refuses_what_must_never_be_published():
    ok = fuse({0: 0.1, 1: 0.1}, 0.5, (0, 1))
    with pytest.raises(ValueError, match='decimal'):
        encode_verdict('12a', ok, cams=(0, 1), stamp_ns=1, latency_ms=1.0, threshold=0.5,
                       model_id='m')
    # An OK that the line's cameras contradict (cam2 and cam3 never scored).
    with pytest.raises(ValueError, match='cam2 is not_scored'):
        encode_verdict('12', ok, cams=range(4), stamp_ns=1, latency_ms=1.0, threshold=0.5,
                       model_id='m')
    with pytest.raises(ValueError, match='no threshold'):
        encode_verdict('12', ok, cams=(0, 1), stamp_ns=1, latency_ms=1.0, threshold=NAN,
                       model_id='m')


@dataclass
class Fused:
    """A fusion result as a buggy model could make it (core.line.fusion never scores 2.0)."""

    ok: bool
    message: str
    p_ng: dict
    reasons: list = field(default_factory=list)


def test_encoder_output_always_decodes():
    # Numbers it cannot stand behind become "not given", a score that is no probability makes
    # its view corrupt, text becomes printable and bounded.
    fused = Fused(False, 'NG: ' + 'x' * 3000 + '; ' + 'y' * 3000 + '; bad\nline',
                  {0: math.inf, 1: 2.0})
    verdict = encode_verdict('12', fused, cams=range(2), stamp_ns=-5, latency_ms=math.inf,
                             threshold=-1.0, model_id='m\nx' + 'z' * 1000)
    assert [v.status for v in verdict.views] == [ViewStatus.CORRUPT] * 2
    assert verdict.views[0].detail == 'invalid score'
    assert (verdict.latency_ms, verdict.threshold, verdict.stamp_ns) == (None, None, 0)
    assert len(verdict.reason) <= MAX_REASON_CHARS and verdict.reasons[-1].endswith('...')
    assert verdict.model_id.startswith('m x') and len(verdict.model_id) == 256
    assert decode_verdict(wire(verdict)) == verdict
