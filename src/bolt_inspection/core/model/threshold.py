"""Decision threshold calibration: reach a target NG recall on validation data.

On the line a missed defect (an NG bolt sorted as OK) costs far more than a false reject, so the
threshold on the NG probability is not 0.5 but the *highest* value that still catches at least
``target_recall`` of the NG validation views. Highest, because among all thresholds reaching the
recall it rejects the fewest OK bolts.

The trainer caps it at 0.5 (``at_most``): calibration exists to buy recall with false rejects,
never the other way round. A confident model's weakest NG validation bolts may all score 0.98;
the highest threshold reaching the recall is then 0.98, with no margin at all for the next NG bolt
that scores 0.9, which the softmax's own argmax rule would have rejected.

A view is NG when ``p_ng >= threshold``.
"""

from __future__ import annotations

import math

import numpy as np


def calibrate_threshold(p_ng, y_true, target_recall: float = 0.99,
                        at_most: float | None = None) -> float:
    """The highest threshold whose NG recall on ``(p_ng, y_true)`` is >= ``target_recall``.

    With ``n`` NG views, at least ``k = ceil(target_recall * n)`` of them must score
    ``>= threshold``, so the answer is the k-th highest NG score.

    Args:
        p_ng: NG probabilities, shape ``(N,)``.
        y_true: True labels: 1/True/'NG' = NG, 0/False/'OK' = OK.
        target_recall: In (0, 1].
        at_most: Cap: the threshold never exceeds it (the trainer passes 0.5, the argmax rule).

    Returns:
        The threshold, a value of ``p_ng`` (so it is reproducible bit for bit) or ``at_most``.

    Edge cases:
        * no NG view at all: nothing to calibrate on -> 0.5 (the argmax rule); the caller
          should warn (:func:`train` records it in the metadata);
        * ``target_recall`` so high that only a threshold of 0 reaches it cannot happen: the
          lowest NG score always reaches recall 1.0;
        * ties: every view with the threshold's score counts as NG, so recall can only be
          higher than computed, never lower.

    Raises:
        ValueError: Mismatched lengths, NaN scores, or a target outside (0, 1].
    """
    scores = np.asarray(p_ng, dtype=np.float64).ravel()
    labels = _as_ng(y_true)
    if scores.shape != labels.shape:
        raise ValueError(f'{scores.size} scores but {labels.size} labels')
    if not 0.0 < float(target_recall) <= 1.0:
        raise ValueError(f'target_recall must be in (0, 1], got {target_recall}')
    if np.isnan(scores).any():
        raise ValueError('scores contain NaN')
    ng_scores = np.sort(scores[labels])[::-1]
    if ng_scores.size == 0:
        return 0.5
    # The small epsilon guards against 0.99 * 100 = 98.99999999999999 -> 99 views, not 100.
    k = max(1, math.ceil(float(target_recall) * ng_scores.size - 1e-9))
    threshold = float(ng_scores[k - 1])
    return threshold if at_most is None else min(threshold, float(at_most))


def bolt_sorting_threshold(p_by_bolt: dict[str, float],
                           truth: dict[str, str]) -> tuple[float, float]:
    """The view threshold that sorts the most bolts right, for the sorting gate.

    A bolt is NG when its highest view score reaches the threshold; per-view false alarms
    compound over the four views, so a threshold calibrated per view rejects too many OK bolts.
    The candidate cuts lie between consecutive bolt scores, plus 0 (reject all) and just above
    the highest score (pass all; never 1.0 itself, which a saturated softmax reaches). Of the
    cuts with the best bolt accuracy, the middle one in order is returned.

    Args:
        p_by_bolt: Highest view NG probability per bolt id.
        truth: Bolt label per bolt id ('OK' / 'NG').

    Returns:
        ``(threshold, bolt accuracy at it)``.

    Raises:
        ValueError: No bolts, a bolt without a label, or only one class (every cut would sort
            the bolts alike: there is nothing to learn the threshold from).
    """
    if not p_by_bolt:
        raise ValueError('no bolts to calibrate on')
    missing = set(p_by_bolt) - set(truth)
    if missing:
        raise ValueError(f'{len(missing)} bolt(s) without a label, e.g. {sorted(missing)[0]}')
    classes = {truth[b] for b in p_by_bolt}
    if classes != {'NG', 'OK'}:
        raise ValueError(f'only {"/".join(sorted(classes))} bolts: sorting needs NG and OK bolts')
    scores = sorted(set(p_by_bolt.values()))
    cuts = [0.0] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)] + [
        math.nextafter(scores[-1], math.inf)]

    def accuracy(t: float) -> float:
        return sum((p >= t) == (truth[b] == 'NG') for b, p in p_by_bolt.items()) / len(p_by_bolt)
    by_cut = {t: accuracy(t) for t in cuts}
    best = max(by_cut.values())
    good = [t for t in cuts if by_cut[t] == best]
    return good[len(good) // 2], best


def recall_at(p_ng, y_true, threshold: float) -> float:
    """NG recall of the rule ``p_ng >= threshold`` (nan when there is no NG view)."""
    scores = np.asarray(p_ng, dtype=np.float64).ravel()
    labels = _as_ng(y_true)
    if not labels.any():
        return float('nan')
    return float((scores[labels] >= threshold).mean())


def _as_ng(y_true) -> np.ndarray:
    values = np.asarray(y_true).ravel()
    if values.dtype.kind in 'USO':
        return np.array([str(v).upper() == 'NG' for v in values], dtype=bool)
    return values.astype(bool)
