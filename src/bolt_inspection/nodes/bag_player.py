"""Bag player node: publishes a rosbag2 bag's topics back with their original header stamps.

The CDR bytes from the bag are published as they are (``Publisher.publish(bytes)``), so every
header stamp — the classifier's join key — is exactly the recorded one. Messages are paced by
their recorded receive times divided by ``rate``; ``loop`` starts over at the end. Lifecycle:
``configure`` opens the bag and creates the publishers, ``activate`` starts playing.
"""

from __future__ import annotations

import importlib
import threading
import time

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from bolt_inspection import bags
from bolt_inspection.core.errors import BoltInspectionError
from bolt_inspection.nodes import topics as line_topics
from bolt_inspection.nodes.lifecycle_util import declare, exit_main


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


class BagPlayer(LifecycleNode):
    """Replays a bag's topics (by default the line's inputs: trigger and camera images)."""

    def __init__(self, node_name: str = 'bag_player', *, context=None, parameter_overrides=None,
                 **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        self.bag = declare(self, 'bag', '', 'rosbag2 bag directory to play', read_only=True)
        self.rate = declare(self, 'rate', 1.0, 'Playback speed factor',
                            float_range=(0.01, 100.0), read_only=True)
        self.loop = declare(self, 'loop', False, 'Start over at the end', read_only=True)
        self.topics = declare(self, 'topics', list(bags.REPLAY_TOPICS), "Topics to play; ['*'] "
                              '= every topic in the bag', read_only=True)
        self.start_delay_s = declare(self, 'start_delay_s', 0.5, 'Wait after activation so '
                                     'subscribers match before the first message',
                                     float_range=(0.0, 60.0), read_only=True)
        self.wait_for_subscribers_s = declare(
            self, 'wait_for_subscribers_s', 5.0, 'After start_delay_s, wait up to this long '
            'until every played topic has a subscriber', float_range=(0.0, 300.0),
            read_only=True)
        self._bag_pubs = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.done = threading.Event()
        self.played = 0

    def selected_topics(self) -> dict[str, str]:
        available = {t: mt for t, (mt, _) in bags.bag_topics(self.bag).items()}
        if list(self.topics) == ['*']:
            return available
        return {t: mt for t, mt in available.items() if t in set(self.topics)}

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self.bag:
            self.get_logger().error('no bag: set the "bag" parameter to a rosbag2 directory')
            return TransitionCallbackReturn.FAILURE
        try:
            topics = self.selected_topics()
            if not topics:
                raise BoltInspectionError(f'{self.bag}: none of {list(self.topics)} in the bag')
            for topic, msgtype in topics.items():
                self._bag_pubs[topic] = self.create_lifecycle_publisher(
                    message_class(msgtype), topic, line_topics.publisher_qos(topic, msgtype))
        except (BoltInspectionError, ImportError, AttributeError, ValueError) as exc:
            self.get_logger().error(f'cannot play bag: {exc}')
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f'{self.bag}: {", ".join(sorted(topics))} at x{self.rate}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._stop.clear()
        self.done.clear()
        self._thread = threading.Thread(target=self._play, name='bag-player', daemon=True)
        self._thread.start()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        for pub in self._bag_pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._bag_pubs = {}
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        return TransitionCallbackReturn.SUCCESS

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _wait_for_subscribers(self) -> None:
        deadline = time.monotonic() + self.wait_for_subscribers_s
        while time.monotonic() < deadline:
            if all(pub.get_subscription_count() > 0 for pub in self._bag_pubs.values()):
                # The publisher sees the match first; let the subscriber side catch up, or
                # the first best-effort images are lost.
                self._stop.wait(0.3)
                return
            if self._stop.wait(0.05):
                return
        idle = [t for t, pub in self._bag_pubs.items() if pub.get_subscription_count() == 0]
        self.get_logger().warning(f'playing although nobody subscribes to {", ".join(idle)}')

    def _play(self) -> None:
        if self._stop.wait(self.start_delay_s):
            return
        self._wait_for_subscribers()
        try:
            while not self._stop.is_set():
                self._play_once()
                if not self.loop:
                    break
        except BoltInspectionError as exc:
            self.get_logger().error(f'bag playback stopped: {exc}')
        finally:
            self.done.set()

    def _play_once(self) -> None:
        start_wall = time.monotonic()
        first = None
        for message in bags.read_messages(self.bag, self._bag_pubs):
            if first is None:
                first = message.timestamp
            due = start_wall + (message.timestamp - first) / 1e9 / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set():
                return
            self._bag_pubs[message.topic].publish(message.data)
            self.played += 1


def main(args=None) -> None:
    exit_main(BagPlayer, args)


if __name__ == '__main__':
    main()
