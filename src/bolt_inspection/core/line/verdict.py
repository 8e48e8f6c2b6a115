"""The verdict on one bolt: one encoder, one decoder and one rule for OK.

Every consumer of ``/inspection/verdict`` (the PLC bridge, the inspection log, the operator page,
the run summary) reads it with :func:`decode_verdict` and nothing else, so they all agree on what
a message means, and a malformed one is refused the same way everywhere: the decoder raises
:class:`VerdictDecodeError` (one short line that never quotes a huge payload) and the consumer
drops the message, counts it and warns. Dropping is safe: a bolt whose verdict never reaches the
PLC is rejected at the sorting gate (fail-safe).

The wire type is ``bolt_inspection_msgs/msg/Verdict`` with ``ViewResult`` per camera (the
``.msg`` files in ``bolt_inspection_msgs/msg/`` say what each field means). A typed message
still carries anything its types allow, so the decoder checks:

* ``bolt_id``: 1 to 20 ASCII decimal digits;
* ``decision``: one of :class:`Decision` (0, the default, is no decision);
* ``reason``: at most :data:`MAX_REASON_CHARS`; required for fail-safe NG, empty for OK;
* ``views``: at most one per camera, a known :class:`ViewStatus`, a scored view's ``p_ng``
  finite in [0, 1], ``detail`` at most :data:`MAX_DETAIL_CHARS`;
* ``threshold`` in [0, 1] or NaN (no model), ``latency_ms`` in [0, one day] or NaN (unknown),
  never infinite; ``model_id`` at most :data:`MAX_MODEL_ID_CHARS`;
* the header stamp (the trigger stamp) is a valid time.

The rule for OK: a bolt is OK only when the decision is :attr:`Decision.OK` *and* the message
agrees with it: no reason, a threshold, at least one view, and every view scored below the
threshold. An OK that its own views contradict is malformed, not OK.

This module is pure Python (no rclpy): :func:`decode_verdict` reads the attributes of any object
shaped like the message, and :mod:`bolt_inspection.nodes.verdict_msg` turns a :class:`Verdict`
into the ROS message. The numbers of :class:`Decision` and :class:`ViewStatus` are the ``.msg``
constants (``tests/test_interfaces.py`` checks that they agree).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Bounds of a well-formed message (the same numbers are constants of the .msg files). They are
# far above anything the classifier sends and keep a hostile one from costing memory or time in
# any consumer.
MAX_BOLT_ID_DIGITS = 20
MAX_REASON_CHARS = 4096
MAX_MODEL_ID_CHARS = 256
MAX_DETAIL_CHARS = 256
MAX_CAM = 255                           # ViewResult.camera is a uint8
MAX_VIEWS = MAX_CAM + 1                 # one per camera
MAX_LATENCY_MS = 86_400_000.0           # one day

# A bolt id on the wire (triggers, verdicts, deliveries): 1-20 ASCII digits; use with fullmatch.
BOLT_ID = re.compile(f'[0-9]{{1,{MAX_BOLT_ID_DIGITS}}}')
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')


class VerdictDecodeError(ValueError):
    """A verdict message is malformed; the message says what, in one short line."""


class Decision(enum.IntEnum):
    """What the line does with a bolt (``Verdict.DECISION_*``)."""

    OK = 1             # every view scored below the threshold: the bolt passes
    NG = 2             # the model found a defect
    FAILSAFE_NG = 3    # the bolt could not be inspected fully


class ViewStatus(enum.IntEnum):
    """What became of one camera's view (``ViewResult.STATUS_*``)."""

    SCORED = 1         # the model scored it
    MISSING = 2        # no frame within the view timeout (late or lost)
    CORRUPT = 3        # a frame came but could not be used
    NOT_SCORED = 4     # usable, but the bolt was not inferred (overload, inference error)


@dataclass(frozen=True)
class ViewResult:
    """One camera's view of a bolt.

    Attributes:
        camera: The camera index (0-255).
        status: What became of the view.
        p_ng: The NG probability in [0, 1] of a scored view; None otherwise.
        detail: Why the view has no score ('' when scored).
    """

    camera: int
    status: ViewStatus
    p_ng: float | None = None
    detail: str = ''


@dataclass(frozen=True)
class Verdict:
    """One validated verdict.

    Attributes:
        bolt_id: The bolt id (decimal digits).
        decision: OK, NG or fail-safe NG.
        reasons: Why the bolt is NG: for fail-safe NG why it could not be inspected fully
            (``'missing view cam2'``), for NG the views the model found NG
            (``'cam3: NG p=0.912'``); empty for OK.
        views: One result per camera, in ascending camera order.
        stamp_ns: The trigger stamp in nanoseconds (0 = not given).
        latency_ms: Trigger -> verdict at the classifier; None when unknown.
        threshold: The NG threshold in force; None when no model was loaded.
        model_id: The model that decided ('' when none).
    """

    bolt_id: str
    decision: Decision
    reasons: tuple[str, ...] = ()
    views: tuple[ViewResult, ...] = ()
    stamp_ns: int = 0
    latency_ms: float | None = None
    threshold: float | None = None
    model_id: str = ''

    @property
    def ok(self) -> bool:
        """True only for an OK decision."""
        return self.decision is Decision.OK

    @property
    def code(self) -> int:
        """The PLC verdict code: 1 = OK, 2 = NG."""
        return 1 if self.ok else 2

    @property
    def reason(self) -> str:
        """The reasons as the message carries them: ``'; '``-separated."""
        return '; '.join(self.reasons)

    @property
    def message(self) -> str:
        """``'OK'``, ``'NG'`` or ``'NG: <reason>; <reason>'`` (fail-safe), for people."""
        if self.decision is Decision.FAILSAFE_NG:
            return 'NG: ' + self.reason
        return self.decision.name

    @property
    def p_ng(self) -> dict[int, float | None]:
        """Camera -> NG probability (None = that view has no score)."""
        return {view.camera: view.p_ng for view in self.views}


# -- helpers ----------------------------------------------------------------------------------

def _show(text: Any, limit: int = 40) -> str:
    """A short, printable rendering of untrusted text for an error message."""
    if not isinstance(text, str):
        return f'<{type(text).__name__}>'
    shown = _CONTROL.sub('?', text[:limit])
    return repr(shown) + (f' (+{len(text) - limit} chars)' if len(text) > limit else '')


def _clean(text: Any, limit: int) -> str:
    """Printable one-line text of at most ``limit`` characters."""
    text = _CONTROL.sub(' ', str(text)).strip()
    return text if len(text) <= limit else text[:limit - 3].rstrip() + '...'


def _finite(value: Any, low: float, high: float) -> float | None:
    """``value`` as a float when it is a finite number in [low, high], else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and low <= value <= high else None


def _split_reasons(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in _CONTROL.sub(' ', text).split(';') if r.strip())


def _join_reasons(reasons: Iterable[Any]) -> tuple[str, ...]:
    """Reasons as the decoder will read them back, their joined text within the bound."""
    out: list[str] = []
    length = -2
    for reason in reasons:
        for part in _split_reasons(str(reason)):
            if length + 2 + len(part) > MAX_REASON_CHARS:
                room = MAX_REASON_CHARS - length - 2 - 3
                if room > 0:
                    out.append(part[:room].rstrip() + '...')
                return tuple(out)
            out.append(part)
            length += 2 + len(part)
    return tuple(out)


# -- encoding ---------------------------------------------------------------------------------

def encode_verdict(bolt_id: str | int, fused: Any, *, cams: Iterable[int], stamp_ns: int,
                   latency_ms: float | None, threshold: float | None,
                   model_id: str) -> Verdict:
    """Build one bolt's verdict from the fusion's result (what the classifier publishes).

    Args:
        bolt_id: The bolt id (decimal).
        fused: The fused decision, a :class:`bolt_inspection.core.line.fusion.BoltVerdict` (read:
            ``ok``, ``message``, ``reasons``, ``p_ng``, ``failures``, ``missing``). A fail-safe
            NG gives the reasons of its message, an NG the views found NG.
        cams: The cameras every bolt has; each gets a view result.
        stamp_ns: The trigger stamp in nanoseconds.
        latency_ms: Trigger -> verdict.
        threshold: The NG threshold (None or NaN = no model).
        model_id: The model's id.

    Returns:
        The verdict. Numbers that are missing, non-finite or out of range become None, a score
        that is not a probability makes its view corrupt, text is made printable and cut to its
        bound: whatever this returns, :func:`decode_verdict` accepts on the wire.

    Raises:
        ValueError: ``bolt_id`` is not decimal, or an OK decision that its views contradict (a
            bug in the caller: it must never be published).
    """
    bolt = str(bolt_id).strip()
    if not BOLT_ID.fullmatch(bolt):
        raise ValueError(f'bolt id must be 1-{MAX_BOLT_ID_DIGITS} decimal digits, got '
                         f'{_show(bolt)}')
    message = str(fused.message)
    if fused.ok:
        decision = Decision.OK
    elif message.startswith('NG:'):
        decision = Decision.FAILSAFE_NG
    else:
        decision = Decision.NG
    p_ng: Mapping[int, Any] = fused.p_ng
    failures: Mapping[int, Any] = getattr(fused, 'failures', {}) or {}
    missing = {int(c) for c in getattr(fused, 'missing', ()) or ()}
    views = []
    for cam in sorted({int(c) for c in cams} | {int(c) for c in p_ng}
                      | {int(c) for c in failures} | missing):
        if not 0 <= cam <= MAX_CAM:
            continue
        raw = p_ng.get(cam)
        if cam in failures:
            view = ViewResult(cam, ViewStatus.CORRUPT,
                              detail=_clean(failures[cam], MAX_DETAIL_CHARS))
        elif raw is not None:
            score = _finite(raw, 0.0, 1.0)
            view = (ViewResult(cam, ViewStatus.SCORED, score) if score is not None else
                    ViewResult(cam, ViewStatus.CORRUPT, detail='invalid score'))
        elif cam in missing:
            view = ViewResult(cam, ViewStatus.MISSING, detail='no frame in time')
        else:
            view = ViewResult(cam, ViewStatus.NOT_SCORED, detail='not inferred')
        views.append(view)
    if decision is Decision.OK:
        reasons: tuple[str, ...] = ()
    elif decision is Decision.FAILSAFE_NG:
        # Why it could not be inspected, as fusion says it (the views' scores are in views).
        reasons = _join_reasons([message[3:]])
    else:
        reasons = _join_reasons(fused.reasons)     # the views the model found NG
    if decision is Decision.FAILSAFE_NG and not reasons:
        reasons = ('no reason given',)
    verdict = Verdict(bolt_id=bolt, decision=decision, reasons=reasons, views=tuple(views),
                      stamp_ns=max(0, int(stamp_ns)),
                      latency_ms=_finite(latency_ms, 0.0, MAX_LATENCY_MS),
                      threshold=_finite(threshold, 0.0, 1.0),
                      model_id=_clean(model_id, MAX_MODEL_ID_CHARS))
    contradiction = _ok_contradiction(verdict)
    if contradiction:
        raise ValueError(f'bolt {bolt}: OK verdict contradicted: {contradiction}')
    return verdict


def _ok_contradiction(verdict: Verdict) -> str:
    """Why an OK decision is not backed by its own fields ('' when it is, or not OK)."""
    if verdict.decision is not Decision.OK:
        return ''
    if verdict.reasons:
        return 'it gives a reason'
    if verdict.threshold is None:
        return 'no threshold'
    if not verdict.views:
        return 'no views'
    for view in verdict.views:
        if view.status is not ViewStatus.SCORED:
            return f'view cam{view.camera} is {view.status.name.lower()}'
        if view.p_ng is None or view.p_ng >= verdict.threshold:
            return f'view cam{view.camera} p_ng {view.p_ng} >= threshold {verdict.threshold}'
    return ''


# -- decoding ---------------------------------------------------------------------------------

def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise VerdictDecodeError(f'{what} must be text, got {_show(value)}')
    if len(value) > limit:
        raise VerdictDecodeError(f'{what} longer than {limit} characters ({len(value)})')
    return value


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise VerdictDecodeError(f'{what} must be an integer, got {_show(value)}')
    return value


def _number(value: Any, what: str, low: float, high: float) -> float | None:
    """A float field: NaN = not given (None); anything else finite and in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VerdictDecodeError(f'{what} must be a number, got {_show(value)}')
    try:
        number = float(value)
    except OverflowError:
        raise VerdictDecodeError(f'{what} is out of range') from None
    if math.isnan(number):
        return None
    if not math.isfinite(number) or not low <= number <= high:
        raise VerdictDecodeError(f'{what} {number:g} outside [{low:g}, {high:g}]')
    return number


def _enum(kind: type[enum.IntEnum], value: Any, what: str):
    value = _integer(value, what)
    try:
        return kind(value)
    except ValueError:
        known = ', '.join(f'{m.value} {m.name}' for m in kind)
        raise VerdictDecodeError(f'unknown {what} {value} (known: {known})') from None


def _stamp_ns(header: Any) -> int:
    stamp = header.stamp
    sec = _integer(stamp.sec, 'stamp sec')
    nanosec = _integer(stamp.nanosec, 'stamp nanosec')
    if sec < 0 or not 0 <= nanosec < 1_000_000_000:
        raise VerdictDecodeError(f'stamp {sec}.{nanosec:09d} is not a valid time')
    return sec * 1_000_000_000 + nanosec


def _view(item: Any) -> ViewResult:
    camera = _integer(item.camera, 'view camera')
    if not 0 <= camera <= MAX_CAM:
        raise VerdictDecodeError(f'view camera {camera} outside 0..{MAX_CAM}')
    status = _enum(ViewStatus, item.status, f'status of view cam{camera}')
    detail = _clean(_text(item.detail, f'detail of view cam{camera}', MAX_DETAIL_CHARS),
                    MAX_DETAIL_CHARS)
    if status is not ViewStatus.SCORED:
        return ViewResult(camera, status, None, detail)   # p_ng means nothing here
    p_ng = _number(item.p_ng, f'p_ng of view cam{camera}', 0.0, 1.0)
    if p_ng is None:
        raise VerdictDecodeError(f'scored view cam{camera} has no p_ng (NaN)')
    return ViewResult(camera, status, p_ng, detail)


def decode_verdict(msg: Any) -> Verdict:
    """Decode and validate an ``/inspection/verdict`` message.

    Args:
        msg: A ``bolt_inspection_msgs/msg/Verdict``, or any object with its fields.

    Returns:
        The :class:`Verdict`, views sorted by camera.

    Raises:
        VerdictDecodeError: Anything malformed (module docstring): a bolt id that is not 1-20
            decimal digits, an unknown decision or view status, a number that is not finite or
            out of range, a camera given twice, text past its bound, wrong types, a missing
            field, or an OK that its fields contradict.
    """
    try:
        bolt = _text(msg.bolt_id, 'bolt id', MAX_BOLT_ID_DIGITS + 1)
        if not BOLT_ID.fullmatch(bolt):
            raise VerdictDecodeError(f'bolt id must be 1-{MAX_BOLT_ID_DIGITS} decimal digits, '
                                     f'got {_show(bolt)}')
        decision = _enum(Decision, msg.decision, 'decision')
        reasons = _split_reasons(_text(msg.reason, 'reason', MAX_REASON_CHARS))
        views: dict[int, ViewResult] = {}
        for count, item in enumerate(msg.views, 1):
            if count > MAX_VIEWS:
                raise VerdictDecodeError(f'more than {MAX_VIEWS} views')
            view = _view(item)
            if view.camera in views:
                raise VerdictDecodeError(f'view cam{view.camera} given twice')
            views[view.camera] = view
        threshold = _number(msg.threshold, 'threshold', 0.0, 1.0)
        latency_ms = _number(msg.latency_ms, 'latency_ms', 0.0, MAX_LATENCY_MS)
        model_id = _clean(_text(msg.model_id, 'model_id', MAX_MODEL_ID_CHARS),
                          MAX_MODEL_ID_CHARS)
        stamp_ns = _stamp_ns(msg.header)
    except AttributeError as exc:
        raise VerdictDecodeError(f'not a verdict message: no field {exc.name!r}') from None
    except TypeError:
        raise VerdictDecodeError('not a verdict message: views is not a list') from None
    if decision is Decision.FAILSAFE_NG and not reasons:
        raise VerdictDecodeError('fail-safe NG gives no reason')
    verdict = Verdict(bolt_id=bolt, decision=decision, reasons=reasons,
                      views=tuple(views[c] for c in sorted(views)), stamp_ns=stamp_ns,
                      latency_ms=latency_ms, threshold=threshold, model_id=model_id)
    contradiction = _ok_contradiction(verdict)
    if contradiction:
        raise VerdictDecodeError(f'OK contradicted: {contradiction}')
    return verdict
