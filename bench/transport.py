"""Camera -> classifier transport between processes, options side by side (issue 15).

Four camera processes each publish ``--frames`` frames at ``--rate`` Hz (the line's camera
station at that many bolts per second) to one reader process with four subscriptions, as
``ros2 launch`` runs the line. Each option is one way to carry the frames:

* ``raw_best_effort`` — sensor_msgs/Image 1280x960 bgr8, sensor-data QoS (best effort, depth 5):
  what the line did before issue 15;
* ``raw_best_effort_large_data`` — the same with ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``
  exported (ignored: with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` rmw_fastrtps turns the
  builtin transports off and adds its own shared-memory + UDP transports, after those of the
  default XML profile);
* ``raw_reliable`` — the same Image, RELIABLE keep-last 4 (``nodes/topics.py`` IMAGE_QOS, the
  choice), on rmw_fastrtps's own transports (shared memory with a 512 KB segment);
* ``raw_reliable_profile`` — the same with ``config/fastdds.xml`` (what every node loads): a
  16 MB shared-memory segment that holds whole frames;
* ``png_best_effort`` / ``png_reliable`` — sensor_msgs/CompressedImage, lossless PNG (level 1)
  encoded in the camera and decoded in the reader;
* ``roi_best_effort`` / ``roi_reliable`` — only the camera's ROI box as a raw Image (the crop
  kept in the camera node).

Per option: frames delivered of those sent, publish -> decoded latency (p50 / p99, same clock),
and the CPU a camera spends per frame (render excluded) and the reader per frame.

    python bench/transport.py --out bench_out/transport          # ~3 min
    python bench/transport.py --frames 20 --options raw_best_effort,raw_reliable

Writes ``transport.json``, ``transport.md`` and ``transport.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

from bolt_inspection import rosenv  # noqa: E402

PROFILE = rosenv.FASTDDS_PROFILE
NO_PROFILE = {PROFILE: None}       # rmw_fastrtps's own transports (512 KB shared-memory segment)
OPTIONS = {
    # name: (payload, reliable, environment: value None = unset)
    'raw_best_effort': ('raw', False, NO_PROFILE),
    'raw_best_effort_large_data': ('raw', False, {**NO_PROFILE,
                                                  'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'}),
    'raw_reliable': ('raw', True, NO_PROFILE),
    'raw_reliable_profile': ('raw', True, {PROFILE: rosenv.fastdds_profile()}),
    'png_best_effort': ('png', False, NO_PROFILE),
    'png_reliable': ('png', True, NO_PROFILE),
    'roi_best_effort': ('roi', False, NO_PROFILE),
    'roi_reliable': ('roi', True, NO_PROFILE),
}
CAMS = (0, 1, 2, 3)


def _qos(reliable: bool):
    from bolt_inspection.nodes import topics
    return topics.IMAGE_QOS if reliable else topics.PREVIEW_QOS


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def camera(cam: int, payload: str, reliable: bool, frames: int, rate: float, size, start: float,
           out: Path) -> None:
    """One camera process: render one view, then publish it ``frames`` times at ``rate``."""
    import cv2
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image

    from bolt_inspection.core.vision import synth
    from bolt_inspection.nodes.image_conv import bgr_to_image
    from bolt_inspection.nodes.lifecycle_util import ns_to_stamp

    rclpy.init()
    node = rclpy.create_node(f'bench_cam{cam}')
    frame = synth.render_view(synth.bolt_spec(0, 1), cam, tuple(size)).image
    if payload == 'roi':
        x, y, w, h = synth.default_roi_boxes(tuple(size))[cam]
        frame = frame[y:y + h, x:x + w].copy()
    msg_type = CompressedImage if payload == 'png' else Image
    pub = node.create_publisher(msg_type, f'/cam{cam}/image_raw', _qos(reliable))
    time.sleep(max(0.0, start - time.time()))
    cpu0, sent, nbytes = _cpu_s(), 0, int(frame.nbytes)
    for i in range(frames):
        time.sleep(max(0.0, start + i / rate - time.time()))
        stamp = ns_to_stamp(time.time_ns())
        if payload == 'png':
            ok, buf = cv2.imencode('.png', frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            msg = CompressedImage(format='bgr8; png compressed bgr8', data=buf.tobytes())
            msg.header.stamp = stamp
            nbytes = int(buf.size)
        else:
            msg = bgr_to_image(frame, stamp=stamp)
        msg.header.frame_id = str(i)
        pub.publish(msg)
        sent += 1
    cpu = _cpu_s() - cpu0
    time.sleep(2.0)   # let a reliable writer finish its resends before the process goes
    common.write_json(out, {'cam': cam, 'sent': sent, 'cpu_ms_per_frame': 1000 * cpu / sent,
                            'bytes': nbytes})
    node.destroy_node()
    rclpy.shutdown()


def reader(payload: str, reliable: bool, frames: int, rate: float, out: Path) -> None:
    """The classifier's side: four subscriptions, decode every frame, record its latency."""
    import cv2
    import numpy as np
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image

    from bolt_inspection.nodes.image_conv import image_to_bgr
    from bolt_inspection.nodes.lifecycle_util import stamp_to_ns

    rclpy.init()
    node = rclpy.create_node('bench_reader')
    got: dict[int, dict[str, float]] = {c: {} for c in CAMS}

    def callback(cam):
        def on_frame(msg):
            if payload == 'png':
                image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
                assert image is not None
            else:
                image_to_bgr(msg)
            got[cam][msg.header.frame_id] = (time.time_ns() - stamp_to_ns(msg.header.stamp)) / 1e6
        return on_frame

    msg_type = CompressedImage if payload == 'png' else Image
    for cam in CAMS:
        node.create_subscription(msg_type, f'/cam{cam}/image_raw', callback(cam), _qos(reliable))
    cpu0 = _cpu_s()
    deadline = time.time() + frames / rate + 12.0
    while time.time() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    received = sum(len(v) for v in got.values())
    common.write_json(out, {'received': {c: len(v) for c, v in got.items()},
                            'latency_ms': [v for c in CAMS for v in got[c].values()],
                            'cpu_ms_per_frame': 1000 * (_cpu_s() - cpu0) / max(1, received)})
    node.destroy_node()
    rclpy.shutdown()


def run_option(name: str, frames: int, rate: float, size, out_dir: Path) -> dict:
    """Start the reader and the four cameras of one option; gather their numbers."""
    payload, reliable, extra_env = OPTIONS[name]
    env = {**os.environ, **extra_env}
    env = {key: value for key, value in env.items() if value is not None}
    work = out_dir / name
    work.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, __file__, '--role']
    common_args = ['--payload', payload, '--frames', str(frames), '--rate', str(rate),
                   '--size', f'{size[0]}x{size[1]}'] + (['--reliable'] if reliable else [])
    # Discovery and the one-off render happen before the first frame is due.
    start = time.time() + 6.0
    procs = [subprocess.Popen(base + ['reader', '--result', str(work / 'reader.json')]
                              + common_args, env=env)]
    procs += [subprocess.Popen(base + ['camera', '--cam', str(cam), '--start', str(start),
                                       '--result', str(work / f'cam{cam}.json')] + common_args,
                               env=env) for cam in CAMS]
    for proc in procs:
        proc.wait(timeout=frames / rate + 60.0)
    rd = json.loads((work / 'reader.json').read_text())
    cams = [json.loads((work / f'cam{c}.json').read_text()) for c in CAMS]
    sent = sum(c['sent'] for c in cams)
    received = sum(rd['received'].values())
    lat = common.stats(rd['latency_ms'])
    return {'option': name, 'payload': payload, 'reliable': reliable, 'env': extra_env,
            'sent': sent, 'received': received, 'delivered': received / sent if sent else 0.0,
            'per_camera': rd['received'], 'latency_ms': lat,
            'camera_cpu_ms_per_frame': sum(c['cpu_ms_per_frame'] for c in cams) / len(cams),
            'reader_cpu_ms_per_frame': rd['cpu_ms_per_frame'], 'frame_bytes': cams[0]['bytes']}


def table(rows: list[dict], frames: int, rate: float, size) -> str:
    lines = [f'{len(CAMS)} camera processes x {frames} frames at {rate:g} Hz, {size[0]}x{size[1]} '
             'frames, one reader process, `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` '
             '(rmw_fastrtps: shared memory + UDPv4)', '',
             '| option | payload | QoS | message bytes | delivered | latency p50 / p99 ms | '
             'camera CPU ms/frame | reader CPU ms/frame |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for r in rows:
        lat = r['latency_ms']
        lat_text = (f"{lat['p50']:.1f} / {lat['p99']:.1f}" if lat['n'] else 'n/a')
        lines.append(f"| {r['option']} | {r['payload']} | "
                     f"{'reliable' if r['reliable'] else 'best effort'} | {r['frame_bytes']:,} | "
                     f"{r['received']}/{r['sent']} ({r['delivered']:.0%}) | {lat_text} | "
                     f"{r['camera_cpu_ms_per_frame']:.1f} | {r['reader_cpu_ms_per_frame']:.1f} |")
    return '\n'.join(lines) + '\n'


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = [r['option'] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    ax1.barh(names, [100 * r['delivered'] for r in rows],
             color=['tab:green' if r['delivered'] >= 1.0 else 'tab:red' for r in rows])
    ax1.set_xlabel('frames delivered (%)')
    ax1.set_xlim(0, 105)
    ax1.invert_yaxis()
    p50 = [r['latency_ms']['p50'] or 0 for r in rows]
    p99 = [r['latency_ms']['p99'] or 0 for r in rows]
    ax2.barh(names, p99, color='tab:orange', label='p99')
    ax2.barh(names, p50, color='tab:blue', label='p50')
    ax2.set_xlabel('publish -> decoded in the reader (ms)')
    ax2.invert_yaxis()
    ax2.set_yticklabels([])
    ax2.legend(loc='lower right')
    fig.suptitle('Camera -> classifier between processes (bench/transport.py)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=common.DEFAULT_OUT / 'transport')
    parser.add_argument('--frames', type=int, default=40, help='frames per camera per option')
    parser.add_argument('--rate', type=float, default=4.0,
                        help='frames per second per camera (4 = 240 bolts/min)')
    parser.add_argument('--size', default='1280x960')
    parser.add_argument('--options', default=','.join(OPTIONS))
    # internal: one process of an option
    parser.add_argument('--role', choices=('camera', 'reader'), help=argparse.SUPPRESS)
    parser.add_argument('--cam', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--payload', default='raw', help=argparse.SUPPRESS)
    parser.add_argument('--reliable', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--start', type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument('--result', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split('x'))
    if args.role == 'camera':
        camera(args.cam, args.payload, args.reliable, args.frames, args.rate, size, args.start,
               args.result)
        return 0
    if args.role == 'reader':
        reader(args.payload, args.reliable, args.frames, args.rate, args.result)
        return 0
    common.setup_env()
    names = [n.strip() for n in args.options.split(',') if n.strip()]
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        parser.error(f'unknown option(s) {unknown}; choose from {", ".join(OPTIONS)}')
    rows = []
    for name in names:
        common.log(f'transport {name}: {len(CAMS)} x {args.frames} frames at {args.rate:g} Hz')
        rows.append(run_option(name, args.frames, args.rate, size, args.out))
        r = rows[-1]
        common.log(f"  delivered {r['received']}/{r['sent']}, latency p50 "
                   f"{r['latency_ms']['p50']} p99 {r['latency_ms']['p99']} ms")
    text = table(rows, args.frames, args.rate, size)
    common.write_json(args.out / 'transport.json', {'machine': common.machine(), 'rows': rows,
                                                    'frames': args.frames, 'rate': args.rate,
                                                    'size': size})
    (args.out / 'transport.md').write_text(text, encoding='utf-8')
    plot(rows, args.out / 'transport.png')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
