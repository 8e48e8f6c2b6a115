"""Shared helpers of the benchmarks: environment, statistics, process usage, model artifacts.

Every benchmark process calls :func:`setup_env` first: discovery stays on this machine
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) and a private ``ROS_DOMAIN_ID`` is used, so a
benchmark never talks to a real line or to another engineer's tests. Domain ids 215-232 are the
range ROS 2 documents as safe on Linux and the test suite's fixtures do not use them.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bolt_inspection.core import sysinfo
from bolt_inspection.core.study.train import RECIPE

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / 'bench_out'
FRAME_SIZE = (1280, 960)           # the synthetic rig's camera frames (config/line.yaml)
# The default model's input and head (core.study.train.RECIPE): what `train` and the demo produce.
DEMO_INPUT = tuple(RECIPE['input_size'])
DEMO_HEAD = (RECIPE['head'], RECIPE['dense_units'])


def setup_env(domain_id: int | None = None) -> int:
    """Keep ROS on localhost and on a private domain; returns the domain id.

    ``BENCH_ROS_DOMAIN_ID`` overrides the default (the tests pass their fixture's id). A
    ``ROS_DOMAIN_ID`` already in the shell is deliberately NOT used: it may be a running line's.
    """
    if domain_id is None:
        text = os.environ.get('BENCH_ROS_DOMAIN_ID', '').strip()
        domain_id = int(text) if text else 215 + os.getpid() % 18
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    os.environ['BENCH_ROS_DOMAIN_ID'] = str(domain_id)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    return domain_id


def stats(values, scale: float = 1.0) -> dict[str, float | int | None]:
    """``n``, ``p50``, ``p99``, ``mean``, ``min``, ``max`` of ``values`` (times ``scale``).

    Percentiles use numpy's 'higher' method (as core.line.latency does): p99 of 200 samples is the
    second-worst observation, never an interpolation below it.
    """
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], float) * scale
    if arr.size == 0:
        return {'n': 0, 'p50': None, 'p99': None, 'mean': None, 'min': None, 'max': None}
    return {'n': int(arr.size),
            'p50': float(np.percentile(arr, 50, method='higher')),
            'p99': float(np.percentile(arr, 99, method='higher')),
            'mean': float(arr.mean()), 'min': float(arr.min()), 'max': float(arr.max())}


def vm_hwm_mb(pid: int | str = 'self') -> float | None:
    """Peak resident set size (VmHWM) of a live process in MiB, from /proc."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def self_usage(wall_s: float | None = None) -> dict[str, Any]:
    """CPU seconds (user, system), peak RSS and, given the wall time, the average CPU load."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    out = {'pid': os.getpid(), 'cpu_user_s': ru.ru_utime, 'cpu_sys_s': ru.ru_stime,
           'cpu_s': cpu, 'peak_rss_mb': vm_hwm_mb() or ru.ru_maxrss / 1024.0}
    if wall_s:
        out['wall_s'] = wall_s
        out['cpu_cores_avg'] = cpu / wall_s
    return out


class CpuWindow:
    """CPU seconds this process spends between :meth:`start` and :meth:`stop`."""

    def start(self) -> CpuWindow:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu0, self._t0 = ru.ru_utime + ru.ru_stime, time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime - self._cpu0
        wall = time.perf_counter() - self._t0
        return {'cpu_s': cpu, 'wall_s': wall, 'cpu_cores_avg': cpu / wall if wall else 0.0}


def machine() -> dict[str, Any]:
    """The machine and software the numbers were measured on."""
    cpu, mem_gb = sysinfo.cpu_model(), sysinfo.memory_gb()
    versions = {'python': platform.python_version()}
    for name in ('tensorflow', 'keras', 'numpy', 'cv2', 'pymodbus', 'rclpy'):
        try:
            module = __import__(name)
            versions[name] = getattr(module, '__version__', 'installed')
        except Exception:  # noqa: BLE001 - a missing library is just not listed
            continue
    return {'nproc': os.cpu_count(), 'cpu': cpu, 'ram_gb': mem_gb,
            'load_avg': [round(x, 2) for x in os.getloadavg()],
            'platform': platform.platform(), 'versions': versions,
            'tf_intra_threads': os.environ.get('BOLT_TF_INTRA_THREADS', 'default'),
            'rmw': os.environ.get('RMW_IMPLEMENTATION', 'default')}


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=_jsonable) + '\n', encoding='utf-8')
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


MODEL_KINDS = {
    # name: (architecture, input (w, h)); random init is fine for timing.
    'demo': ('vgg16', DEMO_INPUT),
    'vgg16_224': ('vgg16', (224, 224)),
    'tiny': ('tiny', (32, 64)),
}


def make_artifact(out_dir: Path, arch: str = 'vgg16', input_size=DEMO_INPUT,
                  frame_size=FRAME_SIZE, seed: int = 0) -> Path:
    """Save a randomly initialised model as an artifact the Inspector loads (timing only).

    The ROI boxes are the synthetic rig's for ``frame_size``, as a trained model stores them.
    """
    from bolt_inspection.core.model.artifact import ModelMetadata, save_artifact
    from bolt_inspection.core.model.network import build_tiny, build_vgg16
    from bolt_inspection.core.vision import synth

    out_dir = Path(out_dir)
    if (out_dir / 'metadata.json').is_file() and (out_dir / 'model.keras').is_file():
        meta = json.loads((out_dir / 'metadata.json').read_text())
        if (list(meta.get('input_size', [])) == list(input_size)
                and list(meta.get('frame_size') or []) == list(frame_size)):
            return out_dir
    if arch == 'vgg16':
        model = build_vgg16(tuple(input_size), weights='none', seed=seed, head=DEMO_HEAD[0],
                            dense_units=DEMO_HEAD[1])
        layer = 'block5_conv3'
    else:
        model = build_tiny(tuple(input_size), filters=(8, 16, 32), seed=seed)
        layer = 'last_conv'
    meta = ModelMetadata(classes=('OK', 'NG'), input_size=tuple(input_size),
                         roi_boxes=synth.default_roi_boxes(tuple(frame_size)), threshold=0.5,
                         gradcam_layer=layer, dataset_fingerprint='bench-random-init',
                         training={'arch': arch, 'weights': 'random init (timing only)'},
                         frame_size=tuple(frame_size))
    return save_artifact(model, meta, out_dir)


def log(text: str) -> None:
    print(f'[bench {time.strftime("%H:%M:%S")}] {text}', file=sys.stderr, flush=True)
