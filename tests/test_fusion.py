"""Multi-view fusion: any NG view or any unusable view makes the bolt NG, with the reason."""

from __future__ import annotations

import math

from bolt_inspection.core.line.fusion import CODE_NG, CODE_OK, fuse

CAMS = (0, 1, 2, 3)


def test_all_views_below_threshold_is_ok():
    verdict = fuse({0: 0.1, 1: 0.2, 2: 0.0, 3: 0.49}, 0.5, CAMS)
    assert verdict.ok and verdict.code == CODE_OK and verdict.message == 'OK'
    assert verdict.reasons == [] and verdict.ng_views == []


def test_any_ng_view_makes_the_bolt_ng():
    verdict = fuse({0: 0.1, 1: 0.2, 2: 0.5, 3: 0.3}, 0.5, CAMS)   # p >= threshold is NG
    assert not verdict.ok and verdict.code == CODE_NG and verdict.message == 'NG'
    assert verdict.ng_views == [2]
    assert verdict.reasons == ['cam2: NG p=0.500']


def test_missing_view_is_ng_with_reason():
    verdict = fuse({0: 0.1, 1: 0.1, 3: 0.1}, 0.5, CAMS)
    assert verdict.code == CODE_NG
    assert verdict.message == 'NG: missing view cam2'
    assert verdict.p_ng[2] is None
    assert fuse({0: 0.1, 1: None, 2: 0.1, 3: 0.1}, 0.5, CAMS).message == 'NG: missing view cam1'


def test_undecodable_view_reason_and_order():
    verdict = fuse({0: 0.9, 1: 0.1}, 0.5, CAMS, {3: 'cannot decode jpeg'})
    assert verdict.message == 'NG: missing view cam2; cam3: cannot decode jpeg'
    assert verdict.reasons[-1] == 'cam0: NG p=0.900'      # failures first, then NG views


def test_failure_overrides_a_score_and_nan_is_not_ok():
    verdict = fuse({0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1}, 0.5, CAMS, {1: 'frame too small'})
    assert verdict.message == 'NG: cam1: frame too small' and verdict.p_ng[1] is None
    verdict = fuse({0: 0.1, 1: math.nan, 2: 0.1, 3: 0.1}, 0.5, CAMS)
    assert not verdict.ok and 'cam1: invalid score nan' in verdict.message


def test_bolt_level_reason_and_extra_cameras():
    verdict = fuse({}, 0.5, CAMS, extra_reasons=['inference error: boom'])
    assert verdict.message.startswith('NG: inference error: boom; missing view cam0')
    # A camera that is not expected still counts when NG, but its absence does not.
    assert fuse({0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1, 4: 0.9}, 0.5, CAMS).message == 'NG'
    assert fuse({0: 0.1, 1: 0.1}, 0.5, (0, 1)).ok
