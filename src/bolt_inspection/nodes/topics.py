"""The line's topic contract: names, message types and QoS profiles, in one place.

The line's own messages are typed (``bolt_inspection_msgs``): the verdict with its per-view
results, the PLC bridge's deliveries and its line status, so ``ros2 topic echo``, rqt and bag
tools show every field.

Every node, the bag tools and the tests take their QoS from here, so a publisher and its
subscribers cannot drift apart. Why each profile is what it is:

* Inspection images (``/camN/image_raw``) are RELIABLE, keep-last :data:`IMAGE_DEPTH`. A
  1280x960 bgr8 frame is 3.7 MB; Fast DDS splits it into ~57 fragments of 64 KB. Between
  processes (``ros2 launch``: one process per node) they go through shared memory — with
  ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` rmw_fastrtps ignores ``FASTDDS_BUILTIN_TRANSPORTS``
  and adds its own 512 KB-segment transport, after those of the default XML profile, so every
  node loads ``config/fastdds.xml`` (16 MB segment, ``rosenv``) — and a best-effort sample that
  loses one fragment is lost whole. Measured here (bench/transport.py): best effort delivered
  10-40% of the frames, reliable 100%; the profile halves the reliable latency. Keep-last
  bounds the writer's memory and never blocks a camera: a reader that falls
  :data:`IMAGE_DEPTH` frames behind loses the oldest, and the classifier's view timeout then
  makes that bolt NG.
* Triggers, verdicts and PLC deliveries are RELIABLE: each one is a bolt.
* Pictures for people (the Grad-CAM mosaic and per-view heatmaps) are sensor data (best
  effort): a dropped picture must never delay a verdict.
* ``/plc/status`` is latched (TRANSIENT_LOCAL, depth 1): a late subscriber sees the last state.
* ``/inspection/alive``: every inspection stage (classifier, cameras) says it can do its job,
  every :data:`ALIVE_PERIOD_S`; the PLC bridge writes the heartbeat only while all do.
"""

from __future__ import annotations

from bolt_inspection_msgs.msg import LineStatus, PlcDelivery, Verdict
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import Image
from std_msgs.msg import Header

# -- names -------------------------------------------------------------------------------------
TRIGGER = '/line/trigger'
CAMERA_PATTERN = '/cam{}/image_raw'
VERDICT = '/inspection/verdict'
GRADCAM = '/inspection/gradcam'
HEATMAP_PATTERN = '/inspection/heatmap/cam{}'
PLC_STATUS = '/plc/status'
PLC_DELIVERY = '/plc/delivery'
DIAGNOSTICS = '/diagnostics'
ALIVE = '/inspection/alive'
START_SERVICE = '/line/start'
STOP_SERVICE = '/line/stop'

# -- types -------------------------------------------------------------------------------------
TRIGGER_TYPE = Header            # stamp = trigger time (the join key), frame_id = bolt id
IMAGE_TYPE = Image               # camera views, the Grad-CAM mosaic and heatmaps
VERDICT_TYPE = Verdict           # one per triggered bolt (bolt_inspection_msgs)
PLC_STATUS_TYPE = LineStatus     # the line as the PLC bridge sees it (bolt_inspection_msgs)
PLC_DELIVERY_TYPE = PlcDelivery  # what the bridge wrote to the PLC per bolt (bolt_inspection_msgs)
ALIVE_TYPE = Header              # frame_id = the stage (node name), stamp = now
DIAGNOSTICS_TYPE = DiagnosticArray

# Type names as ``ros2 topic list -t`` and rosbag2 write them (the camera topics are Images).
TYPE_NAMES = {
    TRIGGER: 'std_msgs/msg/Header',
    VERDICT: 'bolt_inspection_msgs/msg/Verdict',
    GRADCAM: 'sensor_msgs/msg/Image',
    PLC_STATUS: 'bolt_inspection_msgs/msg/LineStatus',
    PLC_DELIVERY: 'bolt_inspection_msgs/msg/PlcDelivery',
    ALIVE: 'std_msgs/msg/Header',
    DIAGNOSTICS: 'diagnostic_msgs/msg/DiagnosticArray',
}

# -- QoS ---------------------------------------------------------------------------------------
# Frames a camera keeps for a reader that is behind (and resends to it): 4 bolts' worth at one
# view per bolt. Memory: IMAGE_DEPTH x 3.7 MB per camera at 1280x960.
IMAGE_DEPTH = 4

IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=IMAGE_DEPTH,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
"""Inspection images: every frame of every bolt, between processes too."""

PREVIEW_QOS = qos_profile_sensor_data
"""Pictures for people (Grad-CAM mosaic, heatmaps, live camera previews): may drop."""

TRIGGER_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
VERDICT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
DELIVERY_QOS = VERDICT_QOS
DIAGNOSTICS_QOS = 10
# Best effort: a sign of life is only worth its newest sample. Reliable delivery is in order, so
# one lost sample held every later one back until Fast DDS repaired it (a camera "silent" for
# 0.8 s on a loaded machine while it was publishing); a lost best-effort sample is simply
# followed by the next one ALIVE_PERIOD_S later. Depth 10: five stages share one reader.
ALIVE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
# Signs of life of an inspection stage (core.plc.liveness): a stage silent for the bridge's
# stage_timeout_s stops the PLC heartbeat (0.75 s: longer than a starved process's pause on a
# loaded 2-core machine, short enough to stop the conveyor within 1 s).
ALIVE_PERIOD_S = 0.1


def camera_topic(cam: int, pattern: str = CAMERA_PATTERN) -> str:
    """The image topic of camera ``cam`` (``pattern`` has one ``{}`` for the index)."""
    return pattern.format(int(cam))


IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


def publisher_qos(topic: str, msgtype: str) -> QoSProfile:
    """What the line publishes ``topic`` with (bag replay publishes the same way).

    Pictures for people (Grad-CAM, heatmaps) best effort; every other image — the cameras' —
    and every other message reliable. Reliable publishers also serve best-effort readers.
    """
    if msgtype in IMAGE_TYPES and topic.startswith('/inspection/'):
        return PREVIEW_QOS
    if msgtype in IMAGE_TYPES:
        return IMAGE_QOS
    return VERDICT_QOS


def subscription_qos(node, topic: str, msgtype: str) -> QoSProfile:
    """A subscription that matches ``topic``'s publishers, like ``ros2 bag record`` adapts.

    Reliable when every publisher seen so far is reliable (the line's own), best effort when
    one is not (a third-party camera driver with sensor-data QoS, the Grad-CAM previews); with
    no publisher yet, what the line publishes the topic with (:func:`publisher_qos`).
    """
    offered = publisher_qos(topic, msgtype)
    infos = node.get_publishers_info_by_topic(topic)
    if not infos:
        return offered
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(offered.depth, IMAGE_DEPTH),
                      reliability=(ReliabilityPolicy.RELIABLE if reliable
                                   else ReliabilityPolicy.BEST_EFFORT))
