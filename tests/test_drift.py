"""core.vision.drift: image statistics, the training reference, the monitor and the drift
families."""

from __future__ import annotations

import numpy as np
import pytest

from bolt_inspection.core.errors import ModelError
from bolt_inspection.core.line.fusion import fuse, with_reasons
from bolt_inspection.core.vision import synth
from bolt_inspection.core.vision.drift import (
    DRIFT_FAMILIES,
    DriftBands,
    DriftGuard,
    DriftMonitor,
    DriftReference,
    apply_drift,
    load_reference,
    view_stats,
)

SIZE = (320, 240)
BOXES = synth.default_roi_boxes(SIZE)


@pytest.fixture(scope='module')
def reference():
    views = [(cam, v.image) for b in range(40)
             for cam, v in enumerate(synth.render_bolt(synth.bolt_spec(1, b), SIZE))]
    return DriftReference.from_views(views, BOXES)


@pytest.fixture(scope='module')
def clean_frames():
    """Views of an unseen seed: cam -> frames."""
    frames = {cam: [] for cam in range(4)}
    for b in range(16):
        for cam, v in enumerate(synth.render_bolt(synth.bolt_spec(9, b), SIZE)):
            frames[cam].append(v.image)
    return frames


def test_stats_move_the_way_the_camera_does():
    frame = synth.render_view(synth.bolt_spec(1, 3), 1, SIZE).image
    base = view_stats(frame, BOXES[1], template=None)
    brighter = view_stats(np.clip(frame * 1.3, 0, 255).astype(np.uint8), BOXES[1])
    blurred = view_stats(apply_drift(frame, 'defocus', 2.0), BOXES[1])
    warm = view_stats(np.clip(frame * [0.8, 1.0, 1.2], 0, 255).astype(np.uint8), BOXES[1])
    assert brighter['brightness'] > base['brightness'] + 10
    assert blurred['focus'] < base['focus'] - 0.3
    assert warm['red_blue'] > base['red_blue'] + 0.2
    assert base['shift'] == 0.0                     # no template: not measured


def test_clean_bolts_of_an_unseen_seed_raise_no_alarm(reference, clean_frames):
    monitor = DriftMonitor(reference, BOXES)
    for i in range(16):
        for cam in range(4):
            state = monitor.add(cam, clean_frames[cam][i])
            assert state.level == 'ok', state
    assert monitor.state(0).bolts == monitor.bands.window


@pytest.mark.parametrize('family, expected', [('defocus', 'focus'), ('pose', 'alignment'),
                                              ('exposure', 'exposure')])
def test_moderate_drift_is_flagged_within_ten_bolts(reference, clean_frames, family, expected):
    monitor = DriftMonitor(reference, BOXES)
    flagged = None
    for i in range(10):
        state = monitor.add(2, apply_drift(clean_frames[2][i], family, 1.5,
                                           np.random.default_rng(4)))
        if state.level != 'ok' and flagged is None:
            flagged = i + 1
    assert flagged is not None and flagged <= 10, state
    assert state.reason.startswith('cam2: ') and expected in state.reason


def test_the_guard_rejects_stops_or_only_warns(reference, clean_frames):
    bands = DriftBands(window=3)
    frames = [apply_drift(f, 'defocus', 3.0) for f in clean_frames[0][:3]]
    for policy, reasons, stop in (('reject', True, False), ('stop', True, True),
                                  ('warn', False, False)):
        guard = DriftGuard(DriftMonitor(reference, BOXES, bands), policy)
        for frame in frames:
            guard.observe(0, frame)
        assert guard.states()[0].level == 'error'
        assert bool(guard.bolt_reasons()) is reasons and guard.stop_line() is stop
        assert guard.summary()[0] == 'error'
    off = DriftGuard(DriftMonitor(reference, BOXES, bands), 'off')
    assert not off.active and off.observe(0, frames[0]) is None and off.bolt_reasons() == []
    assert guard.observe(7, frames[0]) is None          # a camera the reference does not know
    with pytest.raises(ValueError, match='drift policy'):
        DriftGuard(None, 'sometimes')


def test_a_drift_reason_turns_an_ok_bolt_into_a_fail_safe_ng():
    verdict = fuse({0: 0.1, 1: 0.2}, 0.5, [0, 1])
    assert verdict.ok
    rejected = with_reasons(verdict, ['drift cam1: focus 9.0 sigma below training'])
    assert not rejected.ok and rejected.code == 2
    assert rejected.message == 'NG: drift cam1: focus 9.0 sigma below training'
    assert rejected.p_ng == verdict.p_ng
    assert with_reasons(verdict, []) is verdict


def test_reference_round_trip_and_bad_files(reference, tmp_path):
    path = reference.save(tmp_path / 'drift_reference.npz')
    loaded = load_reference(tmp_path)
    assert loaded.frame_size == SIZE and loaded.views == reference.views
    assert all(loaded.median[c] == pytest.approx(reference.median[c]) for c in reference.median)
    assert np.allclose(loaded.templates[3], reference.templates[3])
    assert load_reference(tmp_path / 'none') is None     # an older artifact: monitoring off
    path.write_bytes(b'not a zip')
    with pytest.raises(ModelError, match='not a drift reference'):
        load_reference(tmp_path)
    with pytest.raises(ValueError, match='at least 5'):
        DriftReference.from_views([(0, np.zeros((24, 32, 3), np.uint8))] * 3, {})


def test_drift_families_are_graded_and_checked():
    frame = synth.render_view(synth.bolt_spec(1, 3), 0, SIZE).image
    for family in DRIFT_FAMILIES:
        mild = apply_drift(frame, family, 0.5, np.random.default_rng(1))
        strong = apply_drift(frame, family, 2.0, np.random.default_rng(1))
        assert mild.shape == frame.shape and mild.dtype == np.uint8
        d_mild = np.abs(mild.astype(int) - frame).mean()
        d_strong = np.abs(strong.astype(int) - frame).mean()
        assert 0 < d_mild < d_strong, family
    assert np.array_equal(apply_drift(frame, 'noise', 0.0), frame)
    with pytest.raises(ValueError, match='drift family'):
        apply_drift(frame, 'rain', 1.0)
    with pytest.raises(ValueError, match='>= 0'):
        apply_drift(frame, 'noise', -1.0)
