"""``/inspection/verdict`` <-> :mod:`bolt_inspection.core.verdict`, for every node.

The encoding and the validation live in core (:func:`~bolt_inspection.core.verdict.
encode_verdict_status`, :func:`~bolt_inspection.core.verdict.decode_verdict_status`); this
module only builds the ROS message and gives every consumer the same way to drop a malformed
one: a throttled warning and a counter that the node shows on /diagnostics.

When the typed ``bolt_inspection_msgs/msg/Verdict`` replaces DiagnosticStatus, the message type
here and the decoder in core change; the consumers do not.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from bolt_inspection.core.verdict import (
    Verdict,
    VerdictDecodeError,
    VerdictWire,
    decode_verdict_status,
)

VERDICT_TYPE = DiagnosticStatus
BAD_VERDICTS = 'bad_verdicts'


def verdict_msg(wire: VerdictWire) -> DiagnosticStatus:
    """The ROS message for :func:`bolt_inspection.core.verdict.encode_verdict_status`'s fields."""
    return DiagnosticStatus(level=bytes([wire.level]), name=wire.name, message=wire.message,
                            hardware_id=wire.hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in wire.values])


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
        return decode_verdict_status(msg)
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
