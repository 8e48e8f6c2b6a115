"""``/inspection/verdict`` (``bolt_inspection_msgs/msg/Verdict``) <-> :mod:`bolt_inspection.core.
verdict`, for every node.

The rules live in core (:func:`~bolt_inspection.core.line.verdict.encode_verdict`,
:func:`~bolt_inspection.core.line.verdict.decode_verdict`); this module only converts between the
validated :class:`~bolt_inspection.core.line.verdict.Verdict` and the ROS message, and gives every
consumer the same way to drop a malformed one: a throttled warning and a counter that the node
shows on /diagnostics.
"""

from __future__ import annotations

import math
import threading
from collections.abc import MutableMapping

from bolt_inspection_msgs.msg import Verdict as VerdictMsg
from bolt_inspection_msgs.msg import ViewResult as ViewResultMsg

from bolt_inspection.core.line.verdict import Verdict, VerdictDecodeError, decode_verdict
from bolt_inspection.nodes.lifecycle_util import ns_to_stamp

BAD_VERDICTS = 'bad_verdicts'


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def verdict_msg(verdict: Verdict) -> VerdictMsg:
    """The ROS message of a verdict made by
    :func:`bolt_inspection.core.line.verdict.encode_verdict`."""
    msg = VerdictMsg(bolt_id=verdict.bolt_id, decision=int(verdict.decision),
                     reason=verdict.reason, threshold=_nan(verdict.threshold),
                     model_id=verdict.model_id, latency_ms=_nan(verdict.latency_ms),
                     views=[ViewResultMsg(camera=v.camera, status=int(v.status),
                                          p_ng=_nan(v.p_ng), detail=v.detail)
                            for v in verdict.views])
    msg.header.stamp = ns_to_stamp(verdict.stamp_ns)
    return msg


def decode_or_drop(node, msg, counters: MutableMapping[str, int],
                   lock: threading.Lock | None = None) -> Verdict | None:
    """Decode one verdict message; a malformed one is counted, warned about, and dropped.

    Args:
        node: The consuming node (for its logger).
        msg: The received message.
        counters: The node's counters; ``counters['bad_verdicts']`` is incremented.
        lock: Held while counting, when the node's callbacks run in parallel.

    Returns:
        The verdict, or None when the message was dropped.
    """
    try:
        return decode_verdict(msg)
    except VerdictDecodeError as exc:
        if lock is not None:
            with lock:
                counters[BAD_VERDICTS] = counters.get(BAD_VERDICTS, 0) + 1
        else:
            counters[BAD_VERDICTS] = counters.get(BAD_VERDICTS, 0) + 1
        node.get_logger().warning(
            f'malformed /inspection/verdict dropped ({counters[BAD_VERDICTS]} so far): {exc}',
            throttle_duration_sec=5.0)
        return None
