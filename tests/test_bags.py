"""rosbag2 MCAP bags: writer/reader round trip, and the replay regression (same verdicts)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('rosbags')

from conftest import wait_matched  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from bolt_inspection import bags  # noqa: E402
from bolt_inspection.core.errors import ConfigError  # noqa: E402

# The tiny model is trained once per session however many modules use it: registered as a
# plugin, not imported into each module (an imported fixture is a new fixture per module).
pytest_plugins = ['fixtures_ml']
ROOT = Path(__file__).resolve().parents[1]


def test_bag_round_trip_keeps_bytes_order_and_stamps(tmp_path):
    out = tmp_path / 'bag'
    with bags.BagWriter(out) as writer:
        writer.add_topic('/line/trigger', 'std_msgs/msg/Header')
        for n in range(3):
            msg = Header(frame_id=str(n))
            msg.stamp.sec, msg.stamp.nanosec = 100 + n, 7
            writer.write('/line/trigger', 1_000 + n, serialize_message(msg))
    assert 'mcap' in (out / 'metadata.yaml').read_text()
    assert bags.bag_topics(out) == {'/line/trigger': ('std_msgs/msg/Header', 3)}
    messages = list(bags.read_messages(out))
    assert [m.timestamp for m in messages] == [1000, 1001, 1002]
    decoded = [deserialize_message(m.data, Header) for m in messages]
    assert [(h.frame_id, h.stamp.sec, h.stamp.nanosec) for h in decoded] == [
        ('0', 100, 7), ('1', 101, 7), ('2', 102, 7)]
    assert bags.deserialize(messages[0]).frame_id == '0'  # rosbags reads what rclpy wrote


def test_bag_errors_are_one_line(tmp_path):
    (tmp_path / 'exists').mkdir()
    with pytest.raises(ConfigError, match='exists already'):
        bags.BagWriter(tmp_path / 'exists')
    with pytest.raises(ConfigError, match='not a rosbag2 bag'):
        bags.bag_topics(tmp_path / 'exists')
    with bags.BagWriter(tmp_path / 'b') as writer:
        writer.add_topic('/line/trigger', 'std_msgs/msg/Header')
        writer.write('/line/trigger', 1, serialize_message(Header()))
        with pytest.raises(ConfigError, match='unknown to rosbags'):
            writer.add_topic('/x', 'nope_msgs/msg/Nope')
    with pytest.raises(ConfigError, match='none of the topics'):
        list(bags.read_messages(tmp_path / 'b', ['/cam0/image_raw']))


@pytest.mark.ros
@pytest.mark.slow
def test_replayed_bag_gives_the_same_verdicts(rclpy_context, tiny_artifact, tmp_path):
    from bolt_inspection_msgs.msg import Verdict
    from fixtures_ml import TINY_FRAME_SIZE

    from bolt_inspection.core.config import load_yaml
    from bolt_inspection.graph import line_nodes
    from bolt_inspection.nodes.bag_recorder import BagRecorder
    from bolt_inspection.nodes.line_driver import LineDriver
    from bolt_inspection.runtime.composed import ComposedLine
    from bolt_inspection.runtime.line import drive

    config = load_yaml(ROOT / 'config' / 'line.yaml')
    classifier = {'frame_size': list(TINY_FRAME_SIZE), 'view_timeout_s': 0.5}
    first, count = 7501, 6
    wanted = {str(b) for b in range(first, first + count)}

    # 1. A synthetic run, recorded.
    specs = line_nodes(source='synthetic', model=str(tiny_artifact))
    overrides = {s.name: {'size': list(TINY_FRAME_SIZE)} for s in specs[1:]}
    overrides['classifier'] = classifier
    line = ComposedLine(specs, config, context=rclpy_context, overrides=overrides)
    driver = LineDriver('probe', context=rclpy_context)
    recorder = BagRecorder(tmp_path / 'run', dict(bags.LINE_TOPICS), context=rclpy_context)
    line.add_node(driver)
    line.add_node(recorder)
    try:
        line.start()
        images = [p for node in line.nodes.values() for p in node.publishers
                  if p.topic_name.endswith('/image_raw')]
        wait_matched([driver.trigger_pub], list(line.nodes.values()), count=len(specs) + 1)
        wait_matched(images, list(line.nodes.values()))
        drive(line, driver, bolts=count, rate_per_min=600, first_bolt=first, timeout_s=10)
        time.sleep(0.5)
    finally:
        recorder.close()
        line.stop()
    recorded = {}
    for message in bags.read_messages(tmp_path / 'run', ['/inspection/verdict']):
        verdict = deserialize_message(message.data, Verdict)
        if verdict.bolt_id in wanted:
            recorded[verdict.bolt_id] = (verdict.decision, verdict.reason)
    assert sorted(recorded) == sorted(wanted)
    topics = bags.bag_topics(tmp_path / 'run')
    assert all(topics[f'/cam{c}/image_raw'][1] >= count for c in range(4))

    # 2. Its inputs replayed into a fresh classifier.
    specs = line_nodes(source='bag', bag=str(tmp_path / 'run'), model=str(tiny_artifact))
    replay = ComposedLine(specs, config, context=rclpy_context,
                          overrides={'classifier': classifier})
    probe = LineDriver('replay_probe', context=rclpy_context)
    replay.add_node(probe)
    try:
        replay.start()
        assert replay.nodes['bag_player'].done.wait(20)
        deadline = time.monotonic() + 10
        while len({r.bolt_id for r in probe.verdicts()} & wanted) < count:
            assert time.monotonic() < deadline, 'replay verdicts missing'
            time.sleep(0.05)
    finally:
        replay.stop()
    replayed = {r.bolt_id: (int(r.decision), r.verdict.reason) for r in probe.verdicts()
                if r.bolt_id in wanted}
    assert replayed == recorded


@pytest.mark.ros
@pytest.mark.slow
def test_play_and_record_commands_round_trip_stamps(ros_domain_id, tmp_path):
    import threading

    from bolt_inspection import cli

    source = tmp_path / 'triggers'
    with bags.BagWriter(source) as writer:
        writer.add_topic('/line/trigger', 'std_msgs/msg/Header')
        for n in range(5):
            msg = Header(frame_id=str(7700 + n))
            msg.stamp.sec, msg.stamp.nanosec = 1000 + n, 123
            writer.write('/line/trigger', n * 50_000_000, serialize_message(msg))
    recorded = tmp_path / 'recorded'
    codes = {}
    recorder = threading.Thread(target=lambda: codes.setdefault('record', cli.main(
        ['record', '--out', str(recorded), '--topics', '/line/trigger', '--duration', '6'])))
    recorder.start()
    time.sleep(1.0)
    # The player waits until the recorder's subscription matched before the first message.
    codes['play'] = cli.main(['play', str(source), '--rate', '2', '--start-delay', '0.5'])
    recorder.join(timeout=20)
    assert codes == {'record': 0, 'play': 0}
    headers = [deserialize_message(m.data, Header) for m in bags.read_messages(recorded)]
    # Only our bolts: another test process may share the domain id and trigger its own.
    headers = [h for h in headers if h.frame_id.startswith('770')]
    assert [(h.frame_id, h.stamp.sec, h.stamp.nanosec) for h in headers] == [
        (str(7700 + n), 1000 + n, 123) for n in range(5)]


def test_play_rejects_what_is_not_a_bag(tmp_path, capsys):
    from bolt_inspection import cli
    assert cli.main(['play', str(tmp_path)]) == 2
    assert 'not a rosbag2 bag' in capsys.readouterr().err
