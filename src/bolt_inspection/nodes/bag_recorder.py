"""Bag recorder node: subscribes to topics as raw CDR and writes them to a rosbag2 MCAP bag."""

from __future__ import annotations

import threading
import time

from rclpy.node import Node

from bolt_inspection import bags
from bolt_inspection.core.errors import ConfigError
from bolt_inspection.nodes import topics as line_topics


class BagRecorder(Node):
    """Records ``topics`` ({topic: msgtype}) into a new bag at ``out``.

    Each topic is subscribed with QoS that matches its publishers (reliable for the line's
    cameras and messages, best effort for the Grad-CAM previews or a best-effort camera driver;
    ``nodes/topics.py``), so every frame the line publishes is recorded. Messages are written with
    their receive time; the header stamps inside the CDR bytes are untouched.
    """

    def __init__(self, out, topics: dict[str, str], node_name: str = 'bag_recorder', *,
                 context=None, **kw) -> None:
        super().__init__(node_name, context=context, **kw)
        self.writer = bags.BagWriter(out)
        self._lock = threading.Lock()
        self._closed = False
        for topic, msgtype in topics.items():
            self.add_topic(topic, msgtype)

    def add_topic(self, topic: str, msgtype: str) -> None:
        from bolt_inspection.nodes.bag_player import message_class
        self.writer.add_topic(topic, msgtype)
        qos = line_topics.subscription_qos(self, topic, msgtype)
        self.create_subscription(message_class(msgtype), topic,
                                 lambda data, t=topic: self._on_message(t, data), qos, raw=True)

    def _on_message(self, topic: str, data: bytes) -> None:
        now = self.get_clock().now().nanoseconds
        with self._lock:
            if not self._closed:
                self.writer.write(topic, now, data)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.writer.counts)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.writer.close()


def resolve_topics(node: Node, topics: list[str] | None, wait_s: float = 2.0) -> dict[str, str]:
    """Map the topics to record to their types: the line's known topics, else the ROS graph's."""
    wanted = list(topics) if topics else list(bags.LINE_TOPICS)
    resolved = {t: bags.LINE_TOPICS[t] for t in wanted if t in bags.LINE_TOPICS}
    unknown = [t for t in wanted if t not in resolved]
    deadline = time.monotonic() + wait_s
    while unknown:
        graph = dict(node.get_topic_names_and_types())
        for topic in list(unknown):
            if graph.get(topic):
                resolved[topic] = graph[topic][0]
                unknown.remove(topic)
        if not unknown or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if unknown:
        raise ConfigError(f'cannot find the type of {", ".join(unknown)}: nobody publishes it '
                          f'(known line topics: {", ".join(bags.LINE_TOPICS)})')
    return resolved
