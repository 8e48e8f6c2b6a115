"""Line driver: publishes /line/trigger like the PLC bridge would, and collects the verdicts.

Used by ``bolt-inspection line`` until the PLC bridge drives the triggers, and by the tests as a
probe. It is a plain node (no hardware, no model), so it needs no lifecycle.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from bolt_inspection.core.line.verdict import Decision, Verdict
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.lifecycle_util import stamp_to_ns
from bolt_inspection.nodes.verdict_msg import BAD_VERDICTS, decode_or_drop

TRIGGER_QOS = topics.TRIGGER_QOS
VERDICT_QOS = topics.VERDICT_QOS


@dataclass
class VerdictRecord:
    """One received verdict, as a user would read it."""

    bolt_id: str
    ok: bool
    message: str
    verdict: Verdict
    received_ns: int
    trigger_ns: int | None = None
    decision: Decision | None = None

    @property
    def p_ng(self) -> dict[int, float | None]:
        """Camera -> NG probability as the classifier sent it (None = no score)."""
        return self.verdict.p_ng

    @property
    def latency_ms(self) -> float | None:
        """Trigger stamp -> verdict received here (same clock: same machine)."""
        if self.trigger_ns is None:
            return None
        return (self.received_ns - self.trigger_ns) / 1e6


@dataclass
class DriverState:
    # bolt id -> trigger time ns: the stamp of our own triggers, the arrival of observed ones
    triggers: dict[str, int] = field(default_factory=dict)
    verdicts: list[VerdictRecord] = field(default_factory=list)
    gradcam: list[Image] = field(default_factory=list)


class LineDriver(Node):
    """Triggers bolts and records verdicts (and, optionally, the Grad-CAM mosaics).

    Args:
        keep_gradcam: How many of the latest /inspection/gradcam images to keep (0 = do not
            subscribe).
    """

    def __init__(self, node_name: str = 'line_driver', *, context=None,
                 trigger_topic: str = '/line/trigger', keep_gradcam: int = 0, **kw) -> None:
        super().__init__(node_name, context=context, **kw)
        self.state = DriverState()
        self.interrupted = False  # set by runtime.line.drive on Ctrl-C
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._keep_gradcam = keep_gradcam
        self.counters = {BAD_VERDICTS: 0}
        self.trigger_pub = self.create_publisher(Header, trigger_topic, TRIGGER_QOS)
        # Triggers from someone else (PLC bridge, bag player) are timed from their arrival here:
        # a replayed trigger's stamp is from the recording.
        self._trigger_sub = self.create_subscription(Header, trigger_topic, self._on_trigger,
                                                     TRIGGER_QOS)
        self._verdict_sub = self.create_subscription(topics.VERDICT_TYPE, topics.VERDICT,
                                                     self._on_verdict, VERDICT_QOS)
        if keep_gradcam:
            self.create_subscription(Image, topics.GRADCAM, self._on_gradcam,
                                     topics.PREVIEW_QOS)

    def call_trigger_service(self, name: str, timeout_s: float = 10.0) -> tuple[bool, str]:
        """Call a std_srvs/Trigger service (e.g. the PLC bridge's /line/start).

        The executor spinning this node must run in another thread.
        """
        from std_srvs.srv import Trigger
        client = self.create_client(Trigger, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return False, f'service {name} not available'
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done():
                return False, f'service {name} did not answer within {timeout_s:.0f} s'
            result = future.result()
            return bool(result.success), str(result.message)
        finally:
            self.destroy_client(client)

    def trigger(self, bolt_id: int | str) -> int:
        """Publish one trigger for ``bolt_id`` stamped now; returns the stamp in ns."""
        msg = Header()
        msg.stamp = self.get_clock().now().to_msg()
        msg.frame_id = str(bolt_id)
        stamp = stamp_to_ns(msg.stamp)
        with self._lock:
            self.state.triggers[msg.frame_id] = stamp
        self.trigger_pub.publish(msg)
        return stamp

    def _on_trigger(self, msg: Header) -> None:
        now = self.get_clock().now().nanoseconds
        with self._lock:
            self.state.triggers.setdefault(msg.frame_id, now)

    def hears_the_line(self, timeout_s: float = 10.0) -> bool:
        """Wait until this driver's trigger and verdict subscriptions are matched (someone
        publishes both), so it counts every bolt from the first; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while (self._trigger_sub.get_publisher_count() < 1
               or self._verdict_sub.get_publisher_count() < 1):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def triggered_ids(self) -> list[str]:
        """Bolt ids triggered so far (by this driver or observed on the trigger topic)."""
        with self._lock:
            return list(self.state.triggers)

    @property
    def bad_verdicts(self) -> int:
        """Malformed verdict messages dropped (core.line.verdict's decoder refused them)."""
        return self.counters[BAD_VERDICTS]

    def _on_verdict(self, msg) -> None:
        now = self.get_clock().now().nanoseconds
        verdict = decode_or_drop(self, msg, self.counters, self._lock)
        if verdict is None:
            return
        with self._cond:
            record = VerdictRecord(bolt_id=verdict.bolt_id, ok=verdict.ok,
                                   message=verdict.message,
                                   verdict=verdict,
                                   received_ns=now,
                                   trigger_ns=self.state.triggers.get(verdict.bolt_id),
                                   decision=verdict.decision)
            self.state.verdicts.append(record)
            self._cond.notify_all()

    def _on_gradcam(self, msg: Image) -> None:
        with self._lock:
            self.state.gradcam.append(msg)
            del self.state.gradcam[:-self._keep_gradcam]

    def verdicts(self) -> list[VerdictRecord]:
        with self._lock:
            return list(self.state.verdicts)

    def wait_for_verdicts(self, count: int, timeout_s: float) -> list[VerdictRecord]:
        """Block until ``count`` verdicts arrived (or the timeout passed); returns them."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.state.verdicts) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.state.verdicts)
