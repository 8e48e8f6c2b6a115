"""rosbag2 files (MCAP) read and written with the ``rosbags`` library — the files ``ros2 bag``
reads — holding CDR-serialised messages exactly as they went over DDS.

No rclpy here: the recorder (``bolt-inspection record``) hands in the raw CDR bytes its
subscriptions receive, and the player (:mod:`bolt_inspection.nodes.bag_player`) publishes the raw
bytes it reads back, so header stamps (the join key) come back unchanged.

The line's own types (``bolt_inspection_msgs``) are not in rosbags' built-in type stores: they
are registered from the installed ``.msg`` files, and every bag written here carries the full
definition of each topic's type (and its RIHS01 type hash, the one rclpy and ``ros2 bag``
compute). A reader needs nothing but the bag: ``rosbags.highlevel.AnyReader`` or ``ros2 bag
info`` read the definitions from the MCAP file itself.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bolt_inspection.core.errors import ConfigError

INTERFACE_PACKAGE = 'bolt_inspection_msgs'
# The line's topics and their types (DESIGN.md, nodes/topics.py). Other topics are recorded with
# the type the ROS graph reports for them.
LINE_TOPICS = {
    '/line/trigger': 'std_msgs/msg/Header',
    '/cam0/image_raw': 'sensor_msgs/msg/Image',
    '/cam1/image_raw': 'sensor_msgs/msg/Image',
    '/cam2/image_raw': 'sensor_msgs/msg/Image',
    '/cam3/image_raw': 'sensor_msgs/msg/Image',
    '/inspection/verdict': 'bolt_inspection_msgs/msg/Verdict',
    '/plc/delivery': 'bolt_inspection_msgs/msg/PlcDelivery',
    '/plc/status': 'bolt_inspection_msgs/msg/LineStatus',
}
# What a replay feeds into a line: the inputs, never the outputs it would then produce again.
REPLAY_TOPICS = ('/line/trigger', '/cam0/image_raw', '/cam1/image_raw', '/cam2/image_raw',
                 '/cam3/image_raw')


def interface_dir(package: str = INTERFACE_PACKAGE) -> Path:
    """The installed ``share/<package>/msg`` folder of an interface package.

    Found through the ament index when ``AMENT_PREFIX_PATH`` is set (a sourced ROS workspace),
    else beside the generated Python module: rosidl installs ``<prefix>/lib/pythonX.Y/
    site-packages/<package>`` and ``<prefix>/share/<package>/msg`` (a venv, a colcon install).

    Raises:
        ConfigError: The package is not installed.
    """
    candidates = []
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / 'share' / package / 'msg')
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).resolve().parents[4] / 'share' / package / 'msg')
    for folder in candidates:
        if any(folder.glob('*.msg')):
            return folder
    raise ConfigError(f'{package} is not installed (no share/{package}/msg/*.msg found); '
                      '`make venv` builds it, or colcon in a ROS workspace')


def interface_definitions(package: str = INTERFACE_PACKAGE) -> dict[str, str]:
    """``{'<package>/msg/<Name>': <.msg text>}`` of an installed interface package."""
    return {f'{package}/msg/{path.stem}': path.read_text()
            for path in sorted(interface_dir(package).glob('*.msg'))}


@functools.cache
def _typestore():
    """rosbags' ROS 2 Kilted types plus the line's own, registered from their .msg files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name, text in interface_definitions().items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


@dataclass
class BagMessage:
    """One message of a bag: topic, type, receive time (ns) and CDR bytes."""

    topic: str
    msgtype: str
    timestamp: int
    data: bytes


class BagWriter:
    """Write CDR messages to a new rosbag2 MCAP bag directory.

    Args:
        path: The bag directory to create (must not exist).

    Raises:
        ConfigError: ``path`` exists already.
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        self.path = Path(path)
        if self.path.exists():
            raise ConfigError(f'{self.path} exists already; rosbag2 bags are never overwritten')
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST,
                              storage_plugin=StoragePlugin.MCAP)
        self._typestore = _typestore()
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self._writer.open()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic before writing to it (idempotent)."""
        if topic in self._connections:
            return
        if msgtype not in self._typestore.types:
            raise ConfigError(f'{topic}: message type {msgtype} is unknown to rosbags')
        self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                               typestore=self._typestore)
        self.counts[topic] = 0

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        """Append one CDR-serialised message received at ``timestamp_ns``."""
        self._writer.write(self._connections[topic], int(timestamp_ns), bytes(data))
        self.counts[topic] += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_reader(path: str | Path):
    from rosbags.rosbag2 import Reader
    path = Path(path)
    if not (path / 'metadata.yaml').is_file():
        raise ConfigError(f'{path}: not a rosbag2 bag (no metadata.yaml)')
    reader = Reader(path)
    try:
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types; one line for the user
        raise ConfigError(f'{path}: cannot open bag: {exc}') from None
    return reader


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """Return ``{topic: (msgtype, message count)}`` of a bag."""
    reader = _open_reader(path)
    try:
        return {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}
    finally:
        reader.close()


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Yield the bag's messages in receive-time order, optionally only some topics.

    Raises:
        ConfigError: Not a bag, or none of ``topics`` is in it.
    """
    reader = _open_reader(path)
    try:
        wanted = set(topics) if topics else None
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            have = ', '.join(sorted(reader.topics)) or 'none'
            raise ConfigError(f'{path}: none of the topics {sorted(wanted or [])} in the bag '
                              f'(it has: {have})')
        for conn, timestamp, data in reader.messages(connections=connections):
            yield BagMessage(conn.topic, conn.msgtype, int(timestamp), bytes(data))
    finally:
        reader.close()


def deserialize(message: BagMessage):
    """Decode a bag message with rosbags' typestore (for inspection in tests and tools)."""
    return _typestore().deserialize_cdr(message.data, message.msgtype)
