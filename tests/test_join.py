"""ExactTime join of trigger + camera views, with timeout (core, no ROS)."""

from __future__ import annotations

import pytest

from bolt_inspection.core.line.join import ViewJoiner
from bolt_inspection.core.line.latency import LatencyStats, percentile

CAMS = (0, 1, 2, 3)


def test_complete_bolt_is_handed_out_once_all_views_arrive():
    j = ViewJoiner(CAMS, timeout_s=0.5)
    assert j.add_trigger(100, '7', now=0.0) == []
    for cam in (0, 1, 2):
        assert j.add_view(100, cam, now=0.01, image=f'img{cam}') == []
    [bundle] = j.add_view(100, 3, now=0.02, image='img3')
    assert bundle.bolt_id == '7' and bundle.stamp == 100 and bundle.complete
    assert bundle.views == {0: 'img0', 1: 'img1', 2: 'img2', 3: 'img3'}
    assert j.pending == 0
    # Nothing left to time out: exactly one bundle per trigger.
    assert j.expire(now=10.0) == []


def test_missing_camera_times_out_with_its_index():
    j = ViewJoiner(CAMS, timeout_s=0.5)
    j.add_trigger(1, '1', now=0.0)
    for cam in (0, 1, 3):
        j.add_view(1, cam, now=0.1, image=cam)
    assert j.expire(now=0.4) == []
    [bundle] = j.expire(now=0.5)
    assert bundle.missing == (2,) and set(bundle.views) == {0, 1, 3}
    assert j.stats.timed_out == 1
    # A late view for an expired stamp is dropped, never joined into a second bundle.
    assert j.add_view(1, 2, now=0.6, image=2) == []
    assert j.stats.stale == 1 and j.orphans == 0
    # ... and reported as late, not lost: which bolt, which camera, how long after the trigger.
    [late] = j.late
    assert (late.bolt_id, late.cam, late.delay_s) == ('1', 2, pytest.approx(0.6))
    j.add_view(1, 0, now=0.7, image=0)                 # a duplicate of a view it had: not late
    assert len(j.late) == 1 and j.stats.stale == 2


def test_views_before_trigger_are_kept_until_it_arrives():
    j = ViewJoiner(CAMS, timeout_s=0.5)
    for cam in CAMS:
        assert j.add_view(5, cam, now=0.0, image=cam) == []
    assert j.orphans == 4
    [bundle] = j.add_trigger(5, '42', now=0.1)
    assert bundle.complete and bundle.bolt_id == '42' and j.orphans == 0


def test_early_views_expire_when_no_trigger_comes():
    j = ViewJoiner(CAMS, timeout_s=0.5)
    j.add_view(9, 0, now=0.0, image='x')
    assert j.expire(now=0.6) == []
    assert j.orphans == 0 and j.stats.orphans_dropped == 1


def test_failures_count_as_delivered_views():
    j = ViewJoiner(CAMS, timeout_s=0.5)
    j.add_trigger(3, '3', now=0.0)
    for cam in (0, 1, 2):
        j.add_view(3, cam, now=0.0, image=cam)
    [bundle] = j.add_view(3, 3, now=0.0, failure='unsupported encoding 16UC1')
    assert bundle.failures == {3: 'unsupported encoding 16UC1'} and bundle.missing == ()


def test_duplicates_and_unknown_cameras_are_ignored():
    j = ViewJoiner(CAMS, timeout_s=0.5)
    j.add_trigger(3, '3', now=0.0)
    assert j.add_trigger(3, '3', now=0.0) == []
    j.add_view(3, 0, now=0.0, image='first')
    j.add_view(3, 0, now=0.0, image='second')
    j.add_view(3, 7, now=0.0, image='other rig')
    [bundle] = j.expire(now=1.0)
    assert bundle.views == {0: 'first'} and bundle.missing == (1, 2, 3)
    assert j.stats.duplicate_triggers == 1 and j.stats.duplicate_views == 1
    assert j.stats.unknown_cams == 1
    # A replayed trigger for a handed-out stamp does not start a second bolt.
    assert j.add_trigger(3, '3', now=2.0) == [] and j.pending == 0


def test_memory_is_bounded_and_oldest_bolt_is_flushed_not_lost():
    j = ViewJoiner(CAMS, timeout_s=100.0, max_pending=3, max_orphans=5)
    out = []
    for stamp in range(10):
        out += j.add_trigger(stamp, str(stamp), now=0.0)
    assert j.pending == 3
    assert [b.bolt_id for b in out] == [str(s) for s in range(7)]
    assert all(b.missing == CAMS for b in out)
    for stamp in range(100, 120):
        j.add_view(stamp, 0, now=0.0, image=None)
    assert j.orphans == 5
    rest = j.flush(now=1.0)
    assert [b.bolt_id for b in rest] == ['7', '8', '9'] and j.orphans == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        ViewJoiner((), timeout_s=1.0)
    with pytest.raises(ValueError):
        ViewJoiner(CAMS, timeout_s=0)


def test_latency_stats():
    stats = LatencyStats(window=100)
    for v in range(1, 101):
        stats.add(v)
    summary = stats.summary()
    assert summary['count'] == 100 and summary['mean_ms'] == pytest.approx(50.5)
    assert summary['p99_ms'] == 100 and summary['max_ms'] == 100
    assert percentile([], 50) != percentile([], 50)  # NaN when empty
