"""Plain stand-ins for bolt_inspection_msgs/Verdict (core has no ROS), shared by the verdict
codec's tests (test_verdict.py) and its fuzzing (test_fuzz.py).

``Msg()`` is a valid OK verdict of 4 views; :func:`wire` is what ``nodes/verdict_msg.py`` puts
on the wire for a decoded verdict (``None`` numbers travel as NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Time:
    sec: object = 0
    nanosec: object = 0


@dataclass
class Header:
    stamp: Time = field(default_factory=Time)
    frame_id: str = ''


@dataclass
class View:
    camera: object = 0
    status: object = 1
    p_ng: object = 0.1
    detail: object = ''


@dataclass
class Msg:
    """Duck-typed bolt_inspection_msgs/Verdict; by default a valid OK verdict of 4 views."""

    header: Header = field(default_factory=lambda: Header(Time(1_700_000_000, 5)))
    bolt_id: object = '7'
    decision: object = 1
    reason: object = ''
    views: object = field(default_factory=lambda: [View(c, 1, 0.1) for c in range(4)])
    threshold: object = 0.5
    model_id: object = 'model-1'
    latency_ms: object = 120.0


def nan(value):
    """A float field's wire value: NaN for "not given"."""
    return math.nan if value is None else value


def wire(verdict) -> Msg:
    """What nodes/verdict_msg.py puts on the wire, as a plain object."""
    return Msg(header=Header(Time(verdict.stamp_ns // 10**9, verdict.stamp_ns % 10**9)),
               bolt_id=verdict.bolt_id, decision=int(verdict.decision), reason=verdict.reason,
               views=[View(v.camera, int(v.status), nan(v.p_ng), v.detail)
                      for v in verdict.views],
               threshold=nan(verdict.threshold), model_id=verdict.model_id,
               latency_ms=nan(verdict.latency_ms))
