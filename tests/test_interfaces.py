"""bolt_inspection_msgs, the line's typed interfaces (issue 18): what was built is what the .msg
files say, every message crosses DDS and a bag unchanged, a bag carries its own definitions, and
core's constants are the messages' constants."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
msgs = pytest.importorskip('bolt_inspection_msgs.msg')

from bolt_inspection import bags  # noqa: E402
from bolt_inspection.core.line import verdict as core_verdict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MSG_DIR = ROOT / 'bolt_inspection_msgs' / 'msg'
NAMES = ('Verdict', 'ViewResult', 'PlcDelivery', 'LineStatus')
# .msg type -> the type name rosidl's Python classes report.
PRIMITIVES = {'bool': 'boolean', 'float32': 'float', 'float64': 'double', 'string': 'string',
              **{f'{s}int{n}': f'{s}int{n}' for s in ('', 'u') for n in (8, 16, 32, 64)}}


def _parse(name: str) -> tuple[dict[str, str], dict[str, int]]:
    """Fields (name -> rosidl type name) and constants of one .msg file, in file order."""
    fields, constants = {}, {}
    for line in (MSG_DIR / f'{name}.msg').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        kind, rest = line.split(None, 1)
        if '=' in rest:
            key, value = (t.strip() for t in rest.split('=', 1))
            constants[key] = int(value)
            continue
        array = kind.endswith('[]')
        base = kind.removesuffix('[]')
        if base in PRIMITIVES:
            base = PRIMITIVES[base]
        elif '/' not in base:
            base = f'bolt_inspection_msgs/{base}'
        fields[rest] = f'sequence<{base}>' if array else base
    return fields, constants


@pytest.mark.parametrize('name', NAMES)
def test_the_built_classes_match_the_msg_files(name):
    """What `ros2 interface show` would print: the generated class's fields and constants."""
    cls = getattr(msgs, name)
    fields, constants = _parse(name)
    assert cls.get_fields_and_field_types() == fields
    assert list(cls.get_fields_and_field_types()) == list(fields)        # order too
    built = getattr(type(cls), f'_Metaclass_{name}__constants')
    assert built == constants
    for key, value in constants.items():
        assert getattr(cls, key) == value, key


def test_core_speaks_the_messages_constants():
    """core.line.verdict has no ROS; its enums and bounds must be the .msg constants."""
    v, view = msgs.Verdict, msgs.ViewResult
    assert {d.name: d.value for d in core_verdict.Decision} == {
        'OK': v.DECISION_OK, 'NG': v.DECISION_NG, 'FAILSAFE_NG': v.DECISION_FAILSAFE_NG}
    assert {s.name: s.value for s in core_verdict.ViewStatus} == {
        'SCORED': view.STATUS_SCORED, 'MISSING': view.STATUS_MISSING,
        'CORRUPT': view.STATUS_CORRUPT, 'NOT_SCORED': view.STATUS_NOT_SCORED}
    assert core_verdict.MAX_REASON_CHARS == v.MAX_REASON_CHARS
    assert core_verdict.MAX_MODEL_ID_CHARS == v.MAX_MODEL_ID_CHARS
    assert core_verdict.MAX_DETAIL_CHARS == view.MAX_DETAIL_CHARS
    from bolt_inspection.core.plc.contract import VERDICT_NG, VERDICT_OK
    assert (msgs.PlcDelivery.CODE_OK, msgs.PlcDelivery.CODE_NG) == (VERDICT_OK, VERDICT_NG)
    from diagnostic_msgs.msg import DiagnosticStatus
    s = msgs.LineStatus
    assert [bytes([s.LEVEL_OK]), bytes([s.LEVEL_WARN]), bytes([s.LEVEL_ERROR])] == [
        DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR]


def _samples() -> dict[str, object]:
    """One message of each type with every field away from its default."""
    view = msgs.ViewResult(camera=3, status=msgs.ViewResult.STATUS_CORRUPT, p_ng=math.nan,
                           detail='frame 32x96, expected 64x48')
    verdict = msgs.Verdict(
        bolt_id='18446744073709551617', decision=msgs.Verdict.DECISION_FAILSAFE_NG,
        reason='cam3: frame 32x96, expected 64x48; überlastet',
        views=[msgs.ViewResult(camera=0, status=1, p_ng=0.125), view],
        threshold=0.375, model_id='vgg16-abc', latency_ms=231.5)
    verdict.header.stamp.sec, verdict.header.stamp.nanosec = 1_700_000_000, 999_999_999
    delivery = msgs.PlcDelivery(bolt_id='42', code=msgs.PlcDelivery.CODE_NG,
                                source=msgs.PlcDelivery.SOURCE_BRIDGE, acknowledged=True,
                                attempts=3, write_ms=4.25, detail='delivered')
    delivery.header.stamp.sec = 5
    status = msgs.LineStatus(
        level=msgs.LineStatus.LEVEL_WARN, message='connected; 1 skipped bolt(s)',
        plc='127.0.0.1:5020/1', connected=True, reconnect_in_s=math.nan, last_error='x',
        path_alive=True, path_reason='', heartbeat_healthy=True, plc_read=True, running=True,
        plc_status=0x8001, plc_watchdog_tripped=False, bolt_counter=65535, pass_count=7,
        reject_count=3, last_bolt_id='65536', triggers=2**63, skipped_bolts=1,
        verdicts_written=9, undelivered_verdicts=2, bad_verdicts=4, rejected_in_flight=5,
        verdicts_pending=6)
    return {'Verdict': verdict, 'ViewResult': view, 'PlcDelivery': delivery,
            'LineStatus': status}


def _plain(value):
    """A message as nested plain values (NaN made comparable)."""
    if hasattr(value, 'get_fields_and_field_types'):
        return {k: _plain(getattr(value, k)) for k in value.get_fields_and_field_types()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return 'NaN'
    return value


def _rosbags_plain(value):
    """A rosbags-deserialised message as nested plain values."""
    if hasattr(value, '__dataclass_fields__'):
        return {k: _rosbags_plain(getattr(value, k)) for k in value.__dataclass_fields__
                if not k.isupper() and k != '__msgtype__'}
    if isinstance(value, (list, tuple)):
        return [_rosbags_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return 'NaN'
    return value


@pytest.mark.ros
def test_every_message_crosses_dds_unchanged(rclpy_context):
    import rclpy

    from bolt_inspection.nodes.executor import make_executor

    node = rclpy.create_node('interface_probe', context=rclpy_context)
    executor = make_executor(rclpy_context)
    executor.add_node(node)
    received: dict[str, list] = {name: [] for name in NAMES}
    samples = _samples()
    pubs = {}
    for name, msg in samples.items():
        topic = f'/interface_test/{name.lower()}'
        node.create_subscription(type(msg), topic, received[name].append, 10)
        pubs[name] = node.create_publisher(type(msg), topic, 10)
    try:
        deadline = time.monotonic() + 20
        while not all(received.values()) and time.monotonic() < deadline:
            for name, msg in samples.items():
                if not received[name]:
                    pubs[name].publish(msg)
            executor.spin_once(timeout_sec=0.1)
        for name, msg in samples.items():
            assert received[name], f'{name} never arrived'
            assert _plain(received[name][0]) == _plain(msg), name
        # The type hash rclpy announces is the one the bag writer stores (RIHS01).
        for name in NAMES:
            info = node.get_publishers_info_by_topic(f'/interface_test/{name.lower()}')[0]
            assert str(info.topic_type_hash) == bags._typestore().hash_rihs01(
                f'bolt_inspection_msgs/msg/{name}'), name
    finally:
        executor.shutdown()
        node.destroy_node()


def test_every_message_goes_through_a_bag_and_a_fresh_reader_needs_only_the_bag(tmp_path):
    """Written with rclpy's serialiser, read back with rosbags' AnyReader, which starts from an
    empty type store and registers only the definitions the MCAP file carries."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.highlevel import AnyReader

    samples = _samples()
    out = tmp_path / 'bag'
    with bags.BagWriter(out) as writer:
        for n, (name, msg) in enumerate(samples.items()):
            writer.add_topic(f'/t/{name}', f'bolt_inspection_msgs/msg/{name}')
            writer.write(f'/t/{name}', 1000 + n, serialize_message(msg))
    mcap = next(out.glob('*.mcap')).read_bytes()
    for name in NAMES:
        assert f'bolt_inspection_msgs/msg/{name}'.encode() in mcap
    assert b'uint8 DECISION_FAILSAFE_NG=3' in mcap and b'string path_reason' in mcap
    with AnyReader([out]) as reader:
        assert {c.msgtype for c in reader.connections} == {
            f'bolt_inspection_msgs/msg/{n}' for n in NAMES}
        for connection, _, data in reader.messages():
            name = connection.msgtype.rsplit('/', 1)[1]
            msg = reader.deserialize(data, connection.msgtype)
            assert _rosbags_plain(msg) == _plain(samples[name]), name
    # And rclpy reads what the bag holds.
    for message in bags.read_messages(out):
        name = message.msgtype.rsplit('/', 1)[1]
        cls = getattr(msgs, name)
        assert _plain(deserialize_message(message.data, cls)) == _plain(samples[name])
        assert _rosbags_plain(bags.deserialize(message)) == _plain(samples[name])


@pytest.mark.ros
@pytest.mark.slow
def test_a_recorded_bag_is_read_by_a_process_that_has_only_the_bag(ros_domain_id, tmp_path):
    """`bolt-inspection record` of live typed topics; another Python process with nothing but
    rosbags reads every field back from the MCAP's own definitions."""
    import threading

    import rclpy

    from bolt_inspection import cli
    from bolt_inspection.nodes import topics

    samples = _samples()
    recorded = tmp_path / 'recorded'
    codes = {}
    recorder = threading.Thread(target=lambda: codes.setdefault('record', cli.main(
        ['record', '--out', str(recorded), '--topics', topics.VERDICT, topics.PLC_DELIVERY,
         topics.PLC_STATUS, '--duration', '6'])))
    recorder.start()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = rclpy.create_node('record_source', context=context)
    try:
        verdicts = node.create_publisher(topics.VERDICT_TYPE, topics.VERDICT,
                                         topics.VERDICT_QOS)
        deliveries = node.create_publisher(topics.PLC_DELIVERY_TYPE, topics.PLC_DELIVERY,
                                           topics.DELIVERY_QOS)
        status = node.create_publisher(topics.PLC_STATUS_TYPE, topics.PLC_STATUS,
                                       topics.VERDICT_QOS)
        deadline = time.monotonic() + 5
        while (verdicts.get_subscription_count() < 1 or deliveries.get_subscription_count() < 1
               or status.get_subscription_count() < 1):
            assert time.monotonic() < deadline, 'the recorder never subscribed'
            time.sleep(0.05)
        time.sleep(0.5)
        verdicts.publish(samples['Verdict'])
        deliveries.publish(samples['PlcDelivery'])
        status.publish(samples['LineStatus'])
        recorder.join(timeout=20)
    finally:
        node.destroy_node()
        context.try_shutdown()
    assert codes == {'record': 0}
    reader = """
import json, math, sys
from pathlib import Path
from rosbags.highlevel import AnyReader

def plain(v):
    if hasattr(v, '__dataclass_fields__'):
        return {k: plain(getattr(v, k)) for k in v.__dataclass_fields__
                if not k.isupper() and k != '__msgtype__'}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, 'tolist'):
        return v.tolist()
    return 'NaN' if isinstance(v, float) and math.isnan(v) else v

out = {}
with AnyReader([Path(sys.argv[1])]) as reader:
    for conn, _, data in reader.messages():
        out[conn.msgtype] = plain(reader.deserialize(data, conn.msgtype))
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, '-c', reader, str(recorded)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    import json
    read = json.loads(result.stdout)
    for name in ('Verdict', 'PlcDelivery', 'LineStatus'):
        assert read[f'bolt_inspection_msgs/msg/{name}'] == _plain(samples[name]), name
    # metadata.yaml names each topic's type hash, the one rclpy announces for the type.
    import yaml
    info = yaml.safe_load((recorded / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    hashes = {t['topic_metadata']['type']: t['topic_metadata']['type_description_hash']
              for t in info['topics_with_message_count']}
    assert hashes == {f'bolt_inspection_msgs/msg/{name}': bags._typestore().hash_rihs01(
        f'bolt_inspection_msgs/msg/{name}') for name in ('Verdict', 'PlcDelivery', 'LineStatus')}
