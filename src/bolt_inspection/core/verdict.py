"""The verdict on the wire: one encoder, one decoder and one rule for OK.

Every consumer of ``/inspection/verdict`` (the PLC bridge, the inspection log, the operator page,
the run summary) decodes it with :func:`decode_verdict_status` and nothing else, so they all
agree on what a message means, and a malformed one is refused the same way everywhere: the
decoder raises :class:`VerdictDecodeError` (one short line that never quotes a huge payload)
and the consumer drops the message, counts it and warns. Dropping is safe: a bolt whose verdict
never reaches the PLC is rejected at the sorting gate (fail-safe).

Wire format (DESIGN.md; a later issue replaces it with the typed
``bolt_inspection_msgs/msg/Verdict``, and this module is the one seam where that happens):
``diagnostic_msgs/msg/DiagnosticStatus`` with

* ``level`` 0 (OK) for an OK bolt, 2 (ERROR) for an NG bolt (1, WARN, is read as NG too);
* ``name`` ``'bolt_inspection/verdict'``;
* ``hardware_id`` the bolt id, 1 to 20 ASCII decimal digits;
* ``message`` ``'OK'``, ``'NG'`` (the model found a defect) or ``'NG: <reason>; <reason>'``
  (fail-safe NG: the bolt could not be inspected fully);
* ``values`` KeyValues ``p_ng_cam<K>`` (``'0.1234'`` or ``'n/a'``), ``latency_ms``,
  ``threshold`` (``'n/a'`` or ``'nan'`` when no model was loaded) and ``model_id``; each is
  optional, unknown keys are ignored.

The rule for OK: a bolt is OK only when the level is OK *and* the message is exactly ``'OK'``.
A message whose level and text disagree is malformed, not OK.

This module is pure Python (no rclpy): the nodes hand it the message object (it only reads the
attributes above) and turn :class:`VerdictWire` into a ``DiagnosticStatus``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

VERDICT_NAME = 'bolt_inspection/verdict'
LEVEL_OK = 0
LEVEL_WARN = 1
LEVEL_ERROR = 2

# Bounds of a well-formed message. They are far above anything the classifier sends and keep
# a hostile one from costing memory or time in any consumer.
MAX_BOLT_ID_DIGITS = 20
MAX_MESSAGE_CHARS = 4096
MAX_VALUES = 64
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 256
MAX_CAM = 255
MAX_LATENCY_MS = 86_400_000.0           # one day
NOT_AVAILABLE = 'n/a'

# A bolt id on the wire (verdicts, deliveries): 1-20 ASCII digits; use with fullmatch.
BOLT_ID = re.compile(f'[0-9]{{1,{MAX_BOLT_ID_DIGITS}}}')
_CAM_KEY = re.compile(r'p_ng_cam([0-9]{1,3})')
# A plain decimal number as the encoder writes it: no '_', 'inf', hex or surrounding blanks.
_NUMBER = re.compile(r'-?[0-9]{1,12}(\.[0-9]{1,12})?([eE][-+]?[0-9]{1,3})?')
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')


class VerdictDecodeError(ValueError):
    """A verdict message is malformed; the message says what, in one short line."""


class Decision(enum.Enum):
    """What the line does with a bolt."""

    OK = 'OK'
    NG = 'NG'                       # the model found a defect
    FAILSAFE_NG = 'fail-safe NG'    # the bolt could not be inspected fully


@dataclass(frozen=True)
class Verdict:
    """One decoded, validated verdict.

    Attributes:
        bolt_id: The bolt id (decimal digits).
        decision: OK, NG or fail-safe NG.
        reasons: Why a fail-safe NG bolt is NG (empty otherwise).
        p_ng: Camera -> NG probability in [0, 1]; None = that view had no score.
        latency_ms: Trigger -> verdict at the classifier; None when not given.
        threshold: The NG threshold in force; None when not given (no model loaded).
        model_id: The model that decided ('' when not given).
    """

    bolt_id: str
    decision: Decision
    reasons: tuple[str, ...] = ()
    p_ng: Mapping[int, float | None] = field(default_factory=dict)
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
    def message(self) -> str:
        """``'OK'``, ``'NG'`` or ``'NG: <reason>; <reason>'``."""
        if self.decision is Decision.FAILSAFE_NG:
            return 'NG: ' + '; '.join(self.reasons)
        return self.decision.value


@dataclass(frozen=True)
class VerdictWire:
    """The fields of one ``/inspection/verdict`` message, as plain Python values."""

    level: int
    name: str
    message: str
    hardware_id: str
    values: tuple[tuple[str, str], ...]


# -- encoding ---------------------------------------------------------------------------------

def _format(value: float | None, low: float, high: float) -> str:
    if value is None:
        return NOT_AVAILABLE
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        return NOT_AVAILABLE
    return f'{value:.4f}'


def encode_verdict_status(bolt_id: str | int, ok: bool, message: str,
                          p_ng: Mapping[int, float | None], *, cams: Iterable[int],
                          latency_ms: float | None, threshold: float | None,
                          model_id: str) -> VerdictWire:
    """Build the wire fields of one bolt's verdict (what the classifier publishes).

    Args:
        bolt_id: The bolt id (decimal).
        ok: The fused decision (:class:`bolt_inspection.core.fusion.BoltVerdict` ``ok``).
        message: Its message: ``'OK'``, ``'NG'`` or ``'NG: <reasons>'``.
        p_ng: Camera -> NG probability (None = no score).
        cams: The cameras every bolt has; each gets a ``p_ng_camK`` value.
        latency_ms: Trigger -> verdict.
        threshold: The NG threshold (None or NaN = no model).
        model_id: The model's id.

    Returns:
        The fields; numbers that are missing, non-finite or out of range are written ``'n/a'``,
        so whatever this returns, :func:`decode_verdict_status` accepts.

    Raises:
        ValueError: ``bolt_id`` is not decimal, or ``ok`` and ``message`` disagree (a bug in
            the caller: it must never be published).
    """
    bolt = str(bolt_id).strip()
    if not BOLT_ID.fullmatch(bolt):
        raise ValueError(f'bolt id must be 1-{MAX_BOLT_ID_DIGITS} decimal digits, got '
                         f'{_show(bolt)}')
    message = str(message)
    if ok != (message == 'OK') or not (message in ('OK', 'NG') or message.startswith('NG: ')):
        raise ValueError(f'verdict ok={ok} contradicts message {_show(message)}')
    if message.startswith('NG: '):
        # Written as the decoder reads it: reasons without control characters, never none.
        reasons = [r.strip() for r in _CONTROL.sub(' ', message[4:]).split(';') if r.strip()]
        message = 'NG: ' + '; '.join(reasons or ['no reason given'])
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS - 3].rstrip(' ;') + '...'
    values = [(f'p_ng_cam{int(c)}', _format(p_ng.get(int(c)), 0.0, 1.0))
              for c in sorted({int(c) for c in cams} | {int(c) for c in p_ng})
              if 0 <= int(c) <= MAX_CAM]
    values += [('latency_ms', _format(latency_ms, 0.0, MAX_LATENCY_MS)),
               ('threshold', _format(threshold, 0.0, 1.0)),
               ('model_id', _CONTROL.sub(' ', str(model_id))[:MAX_VALUE_CHARS])]
    return VerdictWire(level=LEVEL_OK if ok else LEVEL_ERROR, name=VERDICT_NAME,
                       message=message, hardware_id=bolt, values=tuple(values))


# -- decoding ---------------------------------------------------------------------------------

def _show(text: Any, limit: int = 40) -> str:
    """A short, printable rendering of untrusted text for an error message."""
    if not isinstance(text, str):
        return f'<{type(text).__name__}>'
    shown = _CONTROL.sub('?', text[:limit])
    return repr(shown) + (f' (+{len(text) - limit} chars)' if len(text) > limit else '')


def _level(value: Any) -> int:
    """``DiagnosticStatus.level``: rclpy gives the ``byte`` field as 1-byte ``bytes``."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 1:
            raise VerdictDecodeError(f'level must be one byte, got {len(value)}')
        return value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise VerdictDecodeError(f'level must be an integer, got {_show(value)}')
    return value


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise VerdictDecodeError(f'{what} must be text, got {_show(value)}')
    if len(value) > limit:
        raise VerdictDecodeError(f'{what} longer than {limit} characters ({len(value)})')
    return value


def _number(text: str, key: str, low: float, high: float, *, nan_is_none: bool = False,
            ) -> float | None:
    if text == NOT_AVAILABLE or (nan_is_none and text == 'nan'):
        return None
    if not _NUMBER.fullmatch(text):
        raise VerdictDecodeError(f'{key} is not a number: {_show(text)}')
    value = float(text)
    if not math.isfinite(value) or not low <= value <= high:
        raise VerdictDecodeError(f'{key} {value:g} outside [{low:g}, {high:g}]')
    return value


def decode_verdict_fields(level: Any, message: Any, hardware_id: Any,
                          values: Iterable[tuple[Any, Any]]) -> Verdict:
    """Decode and validate the fields of one verdict message.

    Args:
        level: ``DiagnosticStatus.level`` (int, or the 1-byte ``bytes`` rclpy gives).
        message: ``DiagnosticStatus.message``.
        hardware_id: ``DiagnosticStatus.hardware_id`` (the bolt id).
        values: ``(key, value)`` pairs of its KeyValues.

    Raises:
        VerdictDecodeError: Anything malformed: a bolt id that is not 1-20 decimal digits, a
            message other than OK / NG / 'NG: <reasons>', a level that contradicts it, a
            number that is not a plain finite decimal in range, a camera index above 255,
            a repeated key, wrong types, or more than the bounds above allow.
    """
    level = _level(level)
    message = _text(message, 'message', MAX_MESSAGE_CHARS)
    bolt = _text(hardware_id, 'bolt id', MAX_BOLT_ID_DIGITS + 1)
    if not BOLT_ID.fullmatch(bolt):
        raise VerdictDecodeError(f'bolt id must be 1-{MAX_BOLT_ID_DIGITS} decimal digits, '
                                 f'got {_show(bolt)}')
    reasons: tuple[str, ...] = ()
    if message == 'OK':
        decision = Decision.OK
    elif message == 'NG':
        decision = Decision.NG
    elif message.startswith('NG:'):
        decision = Decision.FAILSAFE_NG
        reasons = tuple(r.strip() for r in _CONTROL.sub(' ', message[3:]).split(';')
                        if r.strip())
        if not reasons:
            raise VerdictDecodeError("fail-safe NG message 'NG:' gives no reason")
    else:
        raise VerdictDecodeError(f"message must be 'OK', 'NG' or 'NG: <reasons>', got "
                                 f'{_show(message)}')
    if decision is Decision.OK and level != LEVEL_OK:
        raise VerdictDecodeError(f"message 'OK' contradicts level {level} (not OK)")
    if decision is not Decision.OK and level not in (LEVEL_WARN, LEVEL_ERROR):
        raise VerdictDecodeError(f'NG message contradicts level {level} (expected 1 or 2)')

    pairs: dict[str, str] = {}
    for count, pair in enumerate(values, 1):
        if count > MAX_VALUES:
            raise VerdictDecodeError(f'more than {MAX_VALUES} values')
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise VerdictDecodeError('a value is not a (key, value) pair') from None
        key = _text(key, 'a key', MAX_KEY_CHARS)
        value = _text(value, f'value of {_show(key)}', MAX_VALUE_CHARS)
        if key in pairs:
            raise VerdictDecodeError(f'key {_show(key)} given twice')
        pairs[key] = value

    p_ng: dict[int, float | None] = {}
    latency_ms = threshold = None
    model_id = ''
    for key, value in pairs.items():
        if key.startswith('p_ng_cam'):
            match = _CAM_KEY.fullmatch(key)
            if match is None or int(match.group(1)) > MAX_CAM:
                raise VerdictDecodeError(f'bad camera key {_show(key)} (p_ng_cam0..'
                                         f'p_ng_cam{MAX_CAM})')
            p_ng[int(match.group(1))] = _number(value, key, 0.0, 1.0)
        elif key == 'latency_ms':
            latency_ms = _number(value, key, 0.0, MAX_LATENCY_MS)
        elif key == 'threshold':
            threshold = _number(value, key, 0.0, 1.0, nan_is_none=True)
        elif key == 'model_id':
            model_id = _CONTROL.sub(' ', value)
    return Verdict(bolt_id=bolt, decision=decision, reasons=reasons, p_ng=p_ng,
                   latency_ms=latency_ms, threshold=threshold, model_id=model_id)


def decode_verdict_status(status: Any) -> Verdict:
    """Decode an ``/inspection/verdict`` message (any object with the DiagnosticStatus fields
    ``level``, ``message``, ``hardware_id`` and ``values`` of ``key``/``value`` items).

    Raises:
        VerdictDecodeError: See :func:`decode_verdict_fields`; also a missing field.
    """
    try:
        level, message = status.level, status.message
        hardware_id, items = status.hardware_id, status.values
        pairs = [(item.key, item.value) for item in _bounded(items)]
    except AttributeError as exc:
        raise VerdictDecodeError(f'not a verdict message: no field {exc.name!r}') from None
    except TypeError:
        raise VerdictDecodeError('not a verdict message: values is not a list') from None
    return decode_verdict_fields(level, message, hardware_id, pairs)


def _bounded(items: Iterable[Any]) -> Iterable[Any]:
    for count, item in enumerate(items, 1):
        if count > MAX_VALUES:
            raise VerdictDecodeError(f'more than {MAX_VALUES} values')
        yield item
