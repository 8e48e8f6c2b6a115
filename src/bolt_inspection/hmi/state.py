"""What the operator page shows, kept up to date by plain method calls (no ROS, no web).

A thin ``hmi_node`` converts ``/inspection/verdict``, ``/inspection/gradcam``, ``/camN/image_raw``,
``/diagnostics`` and ``/plc/status`` messages into calls on :class:`HmiState` from its executor
threads; the web app (:mod:`bolt_inspection.hmi.app`) reads :meth:`HmiState.snapshot` and
:meth:`HmiState.jpeg`. A lock makes the two sides safe to run in different threads; every change
bumps :attr:`HmiState.version`, which the app polls to push updates.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bolt_inspection.core.line.verdict import Verdict
from bolt_inspection.core.log.shift_report import percentile

IMAGE_NAMES = ('gradcam', 'cam0', 'cam1', 'cam2', 'cam3')
LEVEL_NAMES = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}


@dataclass
class VerdictView:
    """One verdict as listed on the page."""

    bolt_id: str
    ok: bool
    message: str
    p_ng: dict[int, float | None]
    latency_ms: float | None
    time_ns: int

    def as_dict(self) -> dict[str, Any]:
        return {'bolt_id': self.bolt_id, 'ok': self.ok, 'verdict': 'OK' if self.ok else 'NG',
                'message': self.message,
                'p_ng': {str(k): v for k, v in sorted(self.p_ng.items())},
                'latency_ms': self.latency_ms, 'time_ns': self.time_ns,
                'time': time.strftime('%H:%M:%S', time.localtime(self.time_ns / 1e9))}


@dataclass
class _Image:
    bgr: np.ndarray
    version: int
    jpeg: bytes | None = None


@dataclass
class _Health:
    level: int
    message: str
    hardware_id: str
    values: dict[str, str]
    time_s: float
    expires: bool = True


def diagnostic_level(level) -> int:
    """DiagnosticStatus.level as an int (rclpy gives the ``byte`` field as ``bytes``)."""
    if isinstance(level, (bytes, bytearray)):
        return level[0] if level else 0
    return int(level)


@dataclass
class HmiState:
    """Thread-safe state of the operator page.

    Args:
        history: Verdicts listed on the page (the issue asks for the last 50).
        throughput_window_s: Throughput counts the verdicts of this many last seconds.
        latency_window: p99 latency over this many last verdicts.
        stale_after_s: A health entry not refreshed for this long shows as STALE.
        jpeg_quality: JPEG quality of the images sent to the browser.
        clock: Monotonic seconds (injectable for tests).
        wall_ns: Wall-clock nanoseconds (injectable for tests).
    """

    history: int = 50
    throughput_window_s: float = 60.0
    latency_window: int = 1000
    stale_after_s: float = 5.0
    jpeg_quality: int = 85
    clock: Callable[[], float] = time.monotonic
    wall_ns: Callable[[], int] = time.time_ns
    version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._verdicts: deque[VerdictView] = deque(maxlen=self.history)
        self._recent_times: deque[float] = deque()
        self._latencies: deque[float] = deque(maxlen=self.latency_window)
        self._images: dict[str, _Image] = {}
        self._health: dict[str, _Health] = {}
        self._counts = {'total': 0, 'ok': 0, 'ng': 0}
        self._bad_verdicts = 0
        self._running: bool | None = None
        self._started_s = self.clock()

    # -- inputs (node side) -----------------------------------------------------------------

    def on_verdict(self, bolt_id, ok: bool, message: str,
                   p_ng: Mapping[int, float | None] | None = None,
                   latency_ms: float | None = None, time_ns: int | None = None) -> None:
        """A verdict was published (``/inspection/verdict``)."""
        view = VerdictView(str(bolt_id), bool(ok), str(message), dict(p_ng or {}),
                           None if latency_ms is None else float(latency_ms),
                           self.wall_ns() if time_ns is None else int(time_ns))
        now = self.clock()
        with self._lock:
            self._verdicts.append(view)
            self._counts['total'] += 1
            self._counts['ok' if view.ok else 'ng'] += 1
            self._recent_times.append(now)
            if view.latency_ms is not None:
                self._latencies.append(view.latency_ms)
            self.version += 1

    def on_image(self, name: str, bgr: np.ndarray) -> None:
        """A new mosaic (``'gradcam'``) or camera view (``'cam0'``..``'cam3'``) arrived."""
        if name not in IMAGE_NAMES:
            raise ValueError(f'image name must be one of {IMAGE_NAMES}, got {name!r}')
        with self._lock:
            self.version += 1
            # Encoding waits until a browser asks: at line rate most frames are never viewed.
            self._images[name] = _Image(bgr, self.version)

    def on_status(self, name: str, level, message: str, hardware_id: str = '',
                  values: Mapping[str, str] | None = None, *, expires: bool = True) -> None:
        """A health status arrived (one entry of a ``/diagnostics`` array).

        Args:
            level: 0 OK, 1 WARN, 2 ERROR, 3 STALE (int, or the ``bytes`` rclpy gives).
            expires: Show STALE when not refreshed within ``stale_after_s`` (periodic
                publishers); False for latched, publish-on-change topics.
        """
        with self._lock:
            self._health[str(name)] = _Health(diagnostic_level(level), str(message),
                                              str(hardware_id), dict(values or {}),
                                              self.clock(), expires)
            self.version += 1

    def on_verdict_message(self, verdict: Verdict, time_ns: int | None = None) -> None:
        """A decoded ``/inspection/verdict`` (:func:`bolt_inspection.core.line.verdict.
        decode_verdict`: OK only when the decision and the views say OK)."""
        self.on_verdict(verdict.bolt_id, verdict.ok, verdict.message, verdict.p_ng,
                        verdict.latency_ms, time_ns)

    def on_bad_verdict(self) -> None:
        """A malformed verdict message was dropped (counted on the page's health line)."""
        with self._lock:
            self._bad_verdicts += 1
            self.version += 1

    def on_plc_status(self, level, message: str, hardware_id: str = '',
                      values: Mapping[str, str] | None = None, *,
                      running: bool | None = None) -> None:
        """``/plc/status`` (latched, published on change): PLC health and conveyor state.

        Args:
            running: The conveyor as the PLC last reported it (None = not read yet).
        """
        self.on_running(running)
        self.on_status('PLC', level, message, hardware_id, dict(values or {}), expires=False)

    def on_running(self, running: bool | None) -> None:
        """Conveyor state as reported by the PLC (None = unknown)."""
        with self._lock:
            if running != self._running:
                self._running = running
                self.version += 1

    def reset_counters(self) -> None:
        """Start the counters from zero (e.g. at a shift change)."""
        with self._lock:
            self._counts = {'total': 0, 'ok': 0, 'ng': 0}
            self._recent_times.clear()
            self._latencies.clear()
            self._started_s = self.clock()
            self.version += 1

    # -- outputs (web side) -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows except image pixels, as JSON-ready data."""
        now = self.clock()
        with self._lock:
            while self._recent_times and now - self._recent_times[0] > self.throughput_window_s:
                self._recent_times.popleft()
            counts = dict(self._counts)
            window = min(self.throughput_window_s, max(now - self._started_s, 1e-9))
            latencies = list(self._latencies)
            health = {}
            for name, h in sorted(self._health.items()):
                age = now - h.time_s
                level = 3 if h.expires and age > self.stale_after_s else h.level
                health[name] = {'level': level, 'level_name': LEVEL_NAMES.get(level, str(level)),
                                'message': h.message if level != 3 or h.level == 3
                                else f'no update for {age:.0f} s (last: {h.message})',
                                'hardware_id': h.hardware_id, 'values': h.values,
                                'age_s': round(age, 1)}
            snap = {
                'version': self.version,
                'counters': {
                    **counts,
                    'ng_rate': counts['ng'] / counts['total'] if counts['total'] else None,
                    'throughput_per_min': 60.0 * len(self._recent_times) / window
                    if counts['total'] else 0.0,
                    'latency_p99_ms': percentile(latencies, 99) if latencies else None,
                    'bad_verdicts': self._bad_verdicts,
                },
                'latest': self._verdicts[-1].as_dict() if self._verdicts else None,
                'verdicts': [v.as_dict() for v in reversed(self._verdicts)],
                'images': {name: img.version for name, img in self._images.items()},
                'health': health,
                'running': self._running,
            }
        return snap

    def jpeg(self, name: str) -> tuple[bytes, int] | None:
        """The latest image ``name`` as JPEG bytes and its version; None if none yet."""
        with self._lock:
            image = self._images.get(name)
            if image is None:
                return None
            if image.jpeg is not None:
                return image.jpeg, image.version
            bgr, version = image.bgr, image.version
        data = encode_jpeg(bgr, self.jpeg_quality)      # outside the lock: ~10 ms per frame
        with self._lock:
            if self._images.get(name) is image:
                image.jpeg = data
        return data, version


def encode_jpeg(bgr: np.ndarray, quality: int = 85) -> bytes:
    """BGR (or grey) uint8 image -> JPEG bytes."""
    import cv2

    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(bgr),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f'cannot encode image of shape {bgr.shape} as JPEG')
    return buf.tobytes()
