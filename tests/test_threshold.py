"""Threshold calibration: the highest threshold that reaches the target NG recall."""

from __future__ import annotations

import numpy as np
import pytest

from bolt_inspection.core.model.threshold import calibrate_threshold, recall_at


def test_reaches_target_recall_and_is_the_highest_such_threshold():
    rng = np.random.default_rng(0)
    ng = rng.beta(5, 2, 200)          # NG views mostly high, a tail of low scores
    ok = rng.beta(2, 5, 300)
    scores = np.concatenate([ng, ok])
    labels = np.r_[np.ones(200), np.zeros(300)]
    for target in (0.9, 0.95, 0.99, 1.0):
        t = calibrate_threshold(scores, labels, target)
        assert recall_at(scores, labels, t) >= target
        higher = np.nextafter(t, 1.0)
        assert recall_at(scores, labels, higher) < target     # nothing higher reaches it
    assert calibrate_threshold(scores, labels, 1.0) == pytest.approx(ng.min())


def test_exact_count_and_string_labels():
    scores = [0.9, 0.8, 0.7, 0.6, 0.1, 0.2]
    labels = ['NG', 'NG', 'NG', 'NG', 'OK', 'OK']
    assert calibrate_threshold(scores, labels, 0.75) == 0.7    # 3 of 4 NG
    assert calibrate_threshold(scores, labels, 0.76) == 0.6    # needs all 4
    # 0.99 of 100 NG views: 99 views, not 100 (floating point 0.99 * 100 = 98.99999...)
    ng = np.linspace(1.0, 0.01, 100)
    assert calibrate_threshold(ng, np.ones(100), 0.99) == ng[98]


def test_ties_only_raise_recall():
    scores = [0.5, 0.5, 0.5, 0.2]
    labels = [1, 1, 1, 0]
    t = calibrate_threshold(scores, labels, 0.5)
    assert t == 0.5 and recall_at(scores, labels, t) == 1.0


def test_edge_cases():
    assert calibrate_threshold([0.1, 0.3], [0, 0], 0.99) == 0.5   # no NG: argmax rule
    with pytest.raises(ValueError, match='labels'):
        calibrate_threshold([0.1], [1, 0], 0.9)
    with pytest.raises(ValueError, match='target_recall'):
        calibrate_threshold([0.1], [1], 0.0)
    with pytest.raises(ValueError, match='NaN'):
        calibrate_threshold([np.nan], [1], 0.9)


def test_bolt_threshold_sorts_the_most_bolts_right():
    from bolt_inspection.core.model.threshold import bolt_sorting_threshold as bolt_threshold

    # Per bolt: the highest view score. A view threshold of 0.5 would reject OK bolt 'c'
    # (one noisy view at 0.6); the best bolt-level cut lies between 0.6 and 0.9.
    p = {'a': 0.95, 'b': 0.9, 'c': 0.6, 'd': 0.1, 'e': 0.05}
    truth = {'a': 'NG', 'b': 'NG', 'c': 'OK', 'd': 'OK', 'e': 'OK'}
    threshold, acc = bolt_threshold(p, truth)
    assert acc == 1.0 and 0.6 < threshold <= 0.9
    # Not separable: the best cut still gets 4 of 5 right.
    threshold, acc = bolt_threshold({**p, 'c': 0.97}, truth)
    assert acc == 0.8
    with pytest.raises(ValueError, match='without a label'):
        bolt_threshold({'z': 0.5}, truth)
    # Saturated NG scores: the cut sits between the classes, not at 1.0 (where an NG bolt
    # scoring 0.9999 tomorrow would pass).
    threshold, acc = bolt_threshold({'a': 1.0, 'b': 1.0, 'd': 0.3, 'e': 0.1}, truth)
    assert acc == 1.0 and 0.3 < threshold < 1.0
    # One class only: every cut sorts the bolts alike, so there is no threshold to learn.
    for only in ('OK', 'NG'):
        with pytest.raises(ValueError, match='needs NG and OK'):
            bolt_threshold({b: p[b] for b in p if truth[b] == only}, truth)


def test_the_cap_keeps_the_argmax_margin_for_a_confident_model():
    # Every NG validation score is high: uncapped, the threshold sits right under the weakest
    # of them (0.98), and an NG bolt scoring 0.9 next week would pass. Capped, 0.5 holds.
    ng = np.array([0.999, 0.995, 0.99, 0.985, 0.98])
    scores = np.concatenate([ng, [0.01, 0.02, 0.03]])
    labels = [1] * 5 + [0] * 3
    assert calibrate_threshold(scores, labels, 0.99) == 0.98
    assert calibrate_threshold(scores, labels, 0.99, at_most=0.5) == 0.5
    # A weak model still gets the lower threshold its recall needs.
    assert calibrate_threshold([0.3, 0.2, 0.1], [1, 1, 0], 0.99, at_most=0.5) == 0.2
