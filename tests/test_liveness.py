"""core.plc.liveness: when the PLC heartbeat must stop (fake clock, no ROS)."""

from __future__ import annotations

import pytest

from bolt_inspection.core.plc.liveness import PathWatchdog

STAGES = ('classifier', 'cam0', 'cam1')


def _all_beat(dog, now):
    for stage in STAGES:
        dog.beat(stage, now)


def test_not_alive_until_every_stage_has_reported():
    dog = PathWatchdog(STAGES, stage_timeout_s=0.5)
    health = dog.check(0.0)
    assert not health.alive
    assert health.reason == ('no sign of life from classifier; no sign of life from cam0; '
                             'no sign of life from cam1')
    _all_beat(dog, 0.1)
    assert dog.check(0.2).alive
    assert not dog.beat('plc_bridge', 0.2)          # not a required stage: ignored


def test_a_silent_stage_kills_the_path_and_its_return_revives_it():
    dog = PathWatchdog(STAGES, stage_timeout_s=0.5)
    _all_beat(dog, 0.0)
    for t in (0.2, 0.4, 0.6, 0.8):                  # the classifier's process died at 0.0
        dog.beat('cam0', t)
        dog.beat('cam1', t)
    assert dog.check(0.5).alive                      # exactly at the timeout: still alive
    health = dog.check(0.8)
    assert not health.alive and health.reason == 'classifier silent for 0.8 s'
    dog.beat('classifier', 0.9)                      # restarted
    assert dog.check(0.95).alive


def test_an_overdue_bolt_is_reported_once_and_the_rest_in_flight_can_be_handed_over():
    dog = PathWatchdog(STAGES, stage_timeout_s=10.0, verdict_timeout_s=2.0)
    _all_beat(dog, 0.0)
    dog.triggered(7, 0.0)
    dog.triggered(8, 1.0)
    dog.triggered(9, 1.5)
    dog.answered(8)
    assert dog.check(2.0).alive                      # bolt 7 is due, not late
    health = dog.check(2.1)
    assert not health.alive and health.overdue == (7,)
    assert health.reason == 'no verdict within 2 s for bolt 7'
    assert dog.check(2.2).alive                      # reported once; 9 is not due yet
    assert dog.in_flight() == [9]
    assert dog.forget_in_flight() == [9] and dog.in_flight() == []
    dog.answered(123)                                # a verdict for an unknown bolt: ignored


@pytest.mark.parametrize('kwargs', [{'stage_timeout_s': 0}, {'verdict_timeout_s': -1.0}])
def test_timeouts_must_be_positive(kwargs):
    with pytest.raises(ValueError, match='must be > 0'):
        PathWatchdog(STAGES, **kwargs)


def test_the_path_is_not_alive_until_the_trigger_reaches_every_stage():
    """DDS matches the two ends of /line/trigger separately: every stage may hear the bridge
    before the bridge's publisher has matched them all, and a trigger sent then is lost."""
    dog = PathWatchdog(STAGES, stage_timeout_s=0.5)
    _all_beat(dog, 0.0)
    assert dog.check(0.1).alive                      # not reported: signs of life decide
    dog.listeners(2)
    health = dog.check(0.1)
    assert not health.alive and health.reason == 'the trigger reaches 2 of 3 stages'
    dog.listeners(4)                                 # a third party listens too: fine
    assert dog.check(0.1).alive
