"""Multi-view fusion: one verdict per bolt from its camera views.

The four cameras together see the whole circumference, so a defect may be visible in only one
view. The rule is therefore conservative:

* a bolt is NG if ANY view's NG probability is >= the threshold;
* a view that is missing, undecodable, or has no valid score makes the bolt NG too, with the
  reason in the message (``'NG: missing view cam2'``) — never a silent OK;
* only a bolt whose every expected view was scored below the threshold is OK.

The message is ``'OK'``, ``'NG'`` (the model found a defect) or ``'NG: <reasons>'`` (the bolt
could not be inspected fully; the reasons are joined with ``'; '``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CODE_OK = 1
CODE_NG = 2


@dataclass
class BoltVerdict:
    """The verdict on one bolt.

    Attributes:
        ok: True only when every expected view was scored below the threshold.
        code: The PLC verdict code: 1 = OK, 2 = NG.
        message: ``'OK'`` | ``'NG'`` | ``'NG: <reason>; <reason>'``.
        p_ng: Camera -> NG probability (``None`` = no score for that view).
        reasons: Why the bolt is NG: failures first (``'missing view cam2'``,
            ``'cam1: <why>'``), then views classified NG (``'cam3: NG p=0.91'``).
        ng_views: Cameras whose score was >= the threshold.
        failures: Camera -> why its view could not be used (a given failure, or a score that
            is not a number).
        missing: Expected cameras that delivered no view (and have no failure).
    """

    ok: bool
    code: int
    message: str
    p_ng: dict[int, float | None]
    reasons: list[str] = field(default_factory=list)
    ng_views: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)


def fuse(p_ng: Mapping[int, float | None], threshold: float, expected_cams: Iterable[int],
         failures: Mapping[int, str] | None = None, *,
         extra_reasons: Iterable[str] = ()) -> BoltVerdict:
    """Fuse per-view NG probabilities into a bolt verdict.

    Args:
        p_ng: Camera -> NG probability (or ``None`` when the view has no score).
        threshold: A view is NG when ``p_ng >= threshold``.
        expected_cams: Cameras that must have a view; a missing one is a failure.
        failures: Camera -> why that view could not be used (e.g. ``'cannot decode'``);
            reported as ``'camK: <why>'``.
        extra_reasons: Bolt-level failures (e.g. ``'inference error: ...'``); any makes it NG.

    Returns:
        The :class:`BoltVerdict`. Views of cameras not in ``expected_cams`` still count when
        they are NG (conservative), but their absence is not a failure.
    """
    failures = dict(failures or {})
    expected = sorted({int(c) for c in expected_cams})
    cams = sorted(set(expected) | {int(c) for c in p_ng} | set(failures))
    scores: dict[int, float | None] = {}
    failure_reasons: list[str] = list(extra_reasons)
    ng_reasons: list[str] = []
    ng_views: list[int] = []
    missing: list[int] = []
    for cam in cams:
        value = p_ng.get(cam)
        score = None if value is None else float(value)
        if score is not None and not math.isfinite(score):
            failures.setdefault(cam, f'invalid score {score}')
            score = None
        scores[cam] = score
        if cam in failures:
            failure_reasons.append(f'cam{cam}: {failures[cam]}')
            scores[cam] = None
        elif score is None:
            if cam in expected:
                failure_reasons.append(f'missing view cam{cam}')
                missing.append(cam)
        elif score >= threshold:
            ng_views.append(cam)
            ng_reasons.append(f'cam{cam}: NG p={score:.3f}')
    ok = not failure_reasons and not ng_views
    if ok:
        message = 'OK'
    elif failure_reasons:
        message = 'NG: ' + '; '.join(failure_reasons)
    else:
        message = 'NG'
    return BoltVerdict(ok=ok, code=CODE_OK if ok else CODE_NG, message=message, p_ng=scores,
                       reasons=failure_reasons + ng_reasons, ng_views=ng_views,
                       failures={c: failures[c] for c in cams if c in failures},
                       missing=missing)


def with_reasons(verdict: BoltVerdict, reasons: Iterable[str]) -> BoltVerdict:
    """``verdict`` made fail-safe NG by bolt-level ``reasons`` (e.g. a drifted camera), scores,
    NG views and view failures kept; unchanged when there are none.
    """
    reasons = [str(r) for r in reasons if str(r)]
    if not reasons:
        return verdict
    all_reasons = reasons + [r for r in verdict.reasons if r not in reasons]
    return BoltVerdict(ok=False, code=CODE_NG, message='NG: ' + '; '.join(all_reasons),
                       p_ng=dict(verdict.p_ng), reasons=all_reasons,
                       ng_views=list(verdict.ng_views), failures=dict(verdict.failures),
                       missing=list(verdict.missing))
