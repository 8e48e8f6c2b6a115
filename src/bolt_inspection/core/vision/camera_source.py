"""Where a camera node's frames come from: the synthetic rig, a dataset folder, or a real device.

Every source answers :meth:`FrameSource.grab` with one HxWx3 uint8 BGR frame for a bolt id and
reports its :attr:`FrameSource.state` (``closed``, ``open``, ``reconnecting``) and
:attr:`FrameSource.last_error` for /diagnostics. No ROS here; the camera node only calls these.

* :class:`SyntheticSource` renders view ``cam`` of bolt ``n`` of the synthetic rig
  (``core.vision.synth.bolt_spec(seed, n)``), so the same bolt id always gives the same image.
  After
  serving bolt ``n`` it renders bolt ``n + 1`` on a background thread (the line's bolt ids are
  sequential), so the next trigger usually finds its frame ready instead of rendering it then.
* :class:`FolderSource` replays a dataset folder, one bolt per trigger: the bolt of that id when
  the folder has it (``images/<id:06d>_cam<k>.png``, the layout ``bolt-inspection synth`` writes),
  otherwise the next one in order; a plain folder of images is replayed in sorted order.
* :class:`DeviceSource` wraps ``cv2.VideoCapture`` (device index, video file, RTSP URL or GStreamer
  pipeline). Live sources are read by a thread that keeps only the newest frame, so a trigger gets
  the frame of *now*, not one that sat in the driver's buffer. When the device drops, it is
  reopened with exponential backoff; a video file is reopened at its end, i.e. it loops.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bolt_inspection.core.errors import ConfigError, ImageError

SOURCES = ('synthetic', 'folder', 'device')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


@dataclass
class CameraSourceConfig:
    """Everything a camera needs to open its source (filled from the node's parameters).

    Attributes:
        source: 'synthetic', 'folder' or 'device'.
        cam: This camera's index (view number) in the rig, 0..n_cams-1.
        n_cams: Cameras around the bolt.
        size: Frame size ``(width, height)`` for synthetic frames; for folder/device frames of
            another size are resized to it when ``resize`` is set.
        seed: Synthetic scenario seed (bolt n is ``bolt_spec(seed, n, defect_rate)``).
        defect_rate: Fraction of synthetic bolts with a defect.
        distractor: Draw the label-correlated background distractor (synthetic).
        folder: Dataset folder for the 'folder' source.
        device: Device spec for the 'device' source: an index ('0'), a file, a URL or a
            GStreamer pipeline (contains '!').
        resize: Resize folder/device frames to ``size``.
        reconnect_min_s: First reconnect delay after a device drops.
        reconnect_max_s: Longest reconnect delay (the delay doubles up to this).
        prefetch: Synthetic: render bolt n+1 in the background after serving bolt n.
        prefetch_on_grab: With ``prefetch``, start that render right after the grab. False:
            only when :meth:`SyntheticSource.prefetch_next` is called (the camera node calls it
            when the classifier's verdict arrives, so the render does not compete with the
            inference for the CPU).
    """

    source: str = 'synthetic'
    cam: int = 0
    n_cams: int = 4
    size: tuple[int, int] = (1280, 960)
    seed: int = 0
    defect_rate: float = 0.5
    distractor: bool = False
    folder: str = ''
    device: str = ''
    resize: bool = False
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    prefetch: bool = True
    prefetch_on_grab: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` with one line naming the first bad field."""
        if self.source not in SOURCES:
            raise ConfigError(f'source {self.source!r}: expected one of {", ".join(SOURCES)}')
        if not 0 <= self.cam < self.n_cams:
            raise ConfigError(f'camera index {self.cam} outside 0..{self.n_cams - 1}')
        w, h = self.size
        if not (8 <= w <= 8192 and 8 <= h <= 8192):
            raise ConfigError(f'size {w}x{h} out of range 8..8192 per side')
        if not 0.0 <= self.defect_rate <= 1.0:
            raise ConfigError(f'defect_rate {self.defect_rate} outside [0, 1]')
        if self.source == 'folder' and not self.folder:
            raise ConfigError('source folder needs the folder parameter (a dataset directory)')
        if self.source == 'device' and not self.device:
            raise ConfigError('source device needs the device parameter (index, file, URL or '
                              'GStreamer pipeline)')
        if self.reconnect_min_s <= 0 or self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError('reconnect delays must satisfy 0 < reconnect_min_s <= '
                              'reconnect_max_s')


class FrameSource:
    """Base class: ``open`` / ``grab(bolt_id)`` / ``close`` plus state for diagnostics."""

    kind = 'base'

    def __init__(self, config: CameraSourceConfig) -> None:
        self.config = config
        self.state = 'closed'
        self.last_error = ''
        self.frames = 0

    def open(self) -> None:
        """Open the source. Raises ConfigError/ImageError with one line when it cannot."""
        self.state = 'open'

    def grab(self, bolt_id: str | int) -> np.ndarray:
        """Return the frame for ``bolt_id`` (HxWx3 uint8 BGR). Raises ImageError on failure."""
        raise NotImplementedError

    def close(self) -> None:
        self.state = 'closed'

    def describe(self) -> str:
        return self.kind

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        if self.config.resize and (frame.shape[1], frame.shape[0]) != tuple(self.config.size):
            frame = cv2.resize(frame, tuple(self.config.size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame)


def parse_bolt_number(bolt_id: str | int) -> int:
    """Return the integer bolt number of a bolt id (a decimal string); ImageError otherwise."""
    try:
        return int(str(bolt_id).strip())
    except ValueError:
        raise ImageError(f'bolt id {bolt_id!r} is not a decimal number') from None


class _Prefetch:
    """One background render of one frame; ``key`` says exactly which frame it is."""

    def __init__(self, key: tuple, render: Callable[[], np.ndarray]) -> None:
        self.key = key
        self.frame: np.ndarray | None = None
        self.error: BaseException | None = None
        # Daemon: a process that exits mid-render must not wait for it; close() joins it.
        self.thread = threading.Thread(target=self._run, args=(render,),
                                       name=f'synthetic-prefetch-cam{key[1]}', daemon=True)
        self.thread.start()

    def _run(self, render: Callable[[], np.ndarray]) -> None:
        try:
            self.frame = render()
        except Exception as exc:  # noqa: BLE001 - handed to grab(), which renders again
            self.error = exc


class SyntheticSource(FrameSource):
    """Render view ``cam`` of synthetic bolt ``int(bolt_id)``.

    With ``config.prefetch`` (the default) every grab of bolt ``n`` starts rendering bolt
    ``n + 1`` on a background thread. A grab uses that frame only when it is the very frame
    asked for (same bolt number, camera, size, seed, ...), waiting for it if it is still being
    rendered; any other id is rendered on the spot, so the frame for a bolt id is always that
    bolt's render, whatever order the triggers come in. :meth:`close` joins the background
    renders.

    Attributes:
        prefetch_hits: Grabs served from a prefetched frame.
        prefetch_misses: Grabs rendered on the spot (first bolt, skipped or repeated ids).
    """

    kind = 'synthetic'

    def __init__(self, config: CameraSourceConfig) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._pending: _Prefetch | None = None
        # Prefetches nobody wants any more (the line skipped an id); joined on close.
        self._stale: list[_Prefetch] = []
        self.prefetch_hits = 0
        self.prefetch_misses = 0
        self._last_number: int | None = None

    def open(self) -> None:
        # Imported here so folder/device cameras do not pay for the renderer.
        from bolt_inspection.core.vision import synth
        self._synth = synth
        super().open()
        # The renderer's first call pays for its caches (~0.5 s at 1280x960); pay it here, at
        # configure time, not on the first bolt (which would then miss its view timeout).
        # It also starts prefetching bolt 1.
        self.grab(0)
        self.prefetch_next()
        self.frames = 0
        self.prefetch_hits = self.prefetch_misses = 0

    def _key(self, number: int) -> tuple:
        cfg = self.config
        return (number, cfg.cam, tuple(cfg.size), cfg.n_cams, cfg.seed, cfg.defect_rate,
                cfg.distractor)

    def _render(self, key: tuple) -> np.ndarray:
        number, cam, size, n_cams, seed, defect_rate, distractor = key
        spec = self._synth.bolt_spec(seed, number, defect_rate)
        return self._synth.render_view(spec, cam, size, n_cams=n_cams,
                                       distractor=distractor).image

    def grab(self, bolt_id: str | int) -> np.ndarray:
        if self.state != 'open':
            raise ImageError('synthetic source is not open')
        key = self._key(parse_bolt_number(bolt_id))
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None and pending.key != key:
                self._stale.append(pending)
                pending = None
        frame = None
        if pending is not None:
            pending.thread.join()
            if pending.error is None:
                frame = pending.frame
            else:
                self.last_error = f'prefetch of bolt {key[0]} failed: {pending.error}'
        if frame is None:
            self.prefetch_misses += 1
            frame = self._render(key)
        else:
            self.prefetch_hits += 1
        self.frames += 1
        self._last_number = key[0]
        if self.config.prefetch and self.config.prefetch_on_grab:
            self._start_prefetch(self._key(key[0] + 1))
        return frame

    def prefetch_next(self) -> None:
        """Start rendering the bolt after the last one served (no-op without ``prefetch``).

        Idempotent: a render of that frame already running or done is kept.
        """
        if self.config.prefetch and self._last_number is not None:
            self._start_prefetch(self._key(self._last_number + 1))

    def _start_prefetch(self, key: tuple) -> None:
        with self._lock:
            if self.state != 'open':
                return
            self._stale = [p for p in self._stale if p.thread.is_alive()]
            if self._pending is not None:
                if self._pending.key == key:
                    return
                self._stale.append(self._pending)
            self._pending = _Prefetch(key, lambda: self._render(key))

    def close(self) -> None:
        with self._lock:
            super().close()
            threads = self._stale + ([self._pending] if self._pending is not None else [])
            self._pending, self._stale = None, []
        # At most one render each (~0.1-0.2 s at 1280x960): wait, so no thread outlives us.
        for prefetch in threads:
            prefetch.thread.join()

    def describe(self) -> str:
        c = self.config
        return f'synthetic seed={c.seed} defect_rate={c.defect_rate} {c.size[0]}x{c.size[1]}'


_VIEW_NAME = re.compile(r'^(?P<bolt>\d+)_cam(?P<cam>\d+)$')


class FolderSource(FrameSource):
    """Replay a dataset folder, one bolt per trigger."""

    kind = 'folder'

    def __init__(self, config: CameraSourceConfig) -> None:
        super().__init__(config)
        self._by_bolt: dict[int, Path] = {}
        self._order: list[Path] = []
        self._next = 0

    def open(self) -> None:
        root = Path(self.config.folder).expanduser()
        if not root.is_dir():
            raise ConfigError(f'{root}: dataset folder does not exist')
        images = root / 'images' if (root / 'images').is_dir() else root
        for path in sorted(images.glob('*')):
            match = _VIEW_NAME.match(path.stem)
            if match and path.suffix.lower() in IMAGE_SUFFIXES:
                if int(match['cam']) == self.config.cam:
                    self._by_bolt[int(match['bolt'])] = path
        if self._by_bolt:
            self._order = [self._by_bolt[k] for k in sorted(self._by_bolt)]
        else:
            # Keras layout (DIR/OK/*.png, DIR/NG/*.png) or a flat folder: every image is a view.
            self._order = sorted(p for p in root.rglob('*')
                                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._order:
            raise ConfigError(f'{root}: no images for camera {self.config.cam}')
        super().open()

    def path_for(self, bolt_id: str | int) -> Path:
        """The file replayed for ``bolt_id``: that bolt if present, else the next in order."""
        try:
            number = int(str(bolt_id).strip())
        except ValueError:
            number = None
        if number is not None and number in self._by_bolt:
            return self._by_bolt[number]
        path = self._order[self._next % len(self._order)]
        self._next += 1
        return path

    def grab(self, bolt_id: str | int) -> np.ndarray:
        if self.state != 'open':
            raise ImageError('folder source is not open')
        path = self.path_for(bolt_id)
        try:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        except cv2.error as exc:     # e.g. more pixels than OpenCV decodes
            frame = None
            reason = ' '.join(str(exc).split()).split(') ', 1)[-1][:120]
        else:
            reason = ''
        if frame is None:
            self.last_error = f'{path}: cannot decode image' + (f' ({reason})' if reason else '')
            raise ImageError(self.last_error)
        self.frames += 1
        return self._fit(frame)

    def describe(self) -> str:
        return f'folder {self.config.folder} ({len(self._order)} views)'


@dataclass
class _Backoff:
    min_s: float
    max_s: float
    delay: float = field(init=False)
    next_try: float = 0.0

    def __post_init__(self) -> None:
        self.delay = self.min_s

    def failed(self, now: float) -> None:
        self.next_try = now + self.delay
        self.delay = min(self.delay * 2, self.max_s)

    def reset(self) -> None:
        self.delay = self.min_s
        self.next_try = 0.0


def parse_device(spec: str) -> tuple[int | str, int]:
    """Turn a device spec into ``(VideoCapture argument, API preference)``.

    ``'0'`` -> device index 0; a spec with ``!`` -> a GStreamer pipeline; anything else (a file,
    ``rtsp://...``, ``http://...``) -> passed to OpenCV as is.
    """
    text = spec.strip()
    if re.fullmatch(r'\d+', text):
        return int(text), cv2.CAP_ANY
    if '!' in text:
        return text, cv2.CAP_GSTREAMER
    return text, cv2.CAP_ANY


class DeviceSource(FrameSource):
    """OpenCV VideoCapture with latest-frame grabbing and reconnect-with-backoff.

    Args:
        config: The camera config (``device`` holds the spec).
        clock: Monotonic clock in seconds (tests pass a fake one).
        capture_factory: ``(arg, api) -> VideoCapture``-like object (tests may pass a fake).
        threaded: Read live sources continuously in a thread and keep the newest frame. None
            decides from the spec: a regular file is read on demand, one frame per grab.
    """

    kind = 'device'

    def __init__(self, config: CameraSourceConfig, *, clock: Callable[[], float] = time.monotonic,
                 capture_factory: Callable | None = None, threaded: bool | None = None) -> None:
        super().__init__(config)
        self._clock = clock
        self._factory = capture_factory or (lambda arg, api: cv2.VideoCapture(arg, api))
        self._arg, self._api = parse_device(config.device)
        self._is_file = isinstance(self._arg, str) and Path(self._arg).expanduser().is_file()
        self._threaded = (not self._is_file) if threaded is None else threaded
        self._cap = None
        self._backoff = _Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._lock = threading.Lock()
        self._latest: np.ndarray | None = None
        self._latest_seq = 0
        self._taken_seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reconnects = 0

    def open(self) -> None:
        """Open the device once; a device that cannot be opened at all is a config error."""
        if not self._connect():
            raise ConfigError(f'cannot open video source {self.config.device!r}')
        self._backoff.reset()
        if self._threaded:
            self._stop.clear()
            self._thread = threading.Thread(target=self._reader, name='camera-reader',
                                            daemon=True)
            self._thread.start()

    def _connect(self) -> bool:
        self._release()
        cap = self._factory(self._arg, self._api)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            self.state = 'reconnecting'
            self.last_error = f'cannot open {self.config.device!r}'
            return False
        self._cap = cap
        self.state = 'open'
        return True

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _dropped(self, why: str) -> None:
        self._release()
        self.state = 'reconnecting'
        self.last_error = why
        self._backoff.failed(self._clock())

    def _try_reconnect(self) -> bool:
        if self._clock() < self._backoff.next_try:
            return False
        if self._connect():
            self.reconnects += 1
            self._backoff.reset()
            return True
        self._backoff.failed(self._clock())
        return False

    def _read_one(self) -> np.ndarray | None:
        """Read the next frame, reconnecting as needed; None when no frame is available."""
        if self._cap is None and not self._try_reconnect():
            return None
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if self._is_file:
            # End of a video file: reopen and start over (a file 'drops' only if it vanished).
            if self._connect():
                ok, frame = self._cap.read()
                if ok and frame is not None:
                    return frame
        self._dropped(f'{self.config.device!r}: no frame (device dropped)')
        return None

    def _reader(self) -> None:
        while not self._stop.is_set():
            frame = self._read_one()
            if frame is None:
                self._stop.wait(0.05)
                continue
            with self._lock:
                self._latest = frame
                self._latest_seq += 1

    def grab(self, bolt_id: str | int = '') -> np.ndarray:
        if self.state == 'closed':
            raise ImageError('device source is not open')
        if self._threaded:
            with self._lock:
                frame, seq = self._latest, self._latest_seq
            if frame is None or seq == self._taken_seq or self.state != 'open':
                raise ImageError(f'no new frame from {self.config.device!r} ({self.state}'
                                 + (f': {self.last_error})' if self.last_error else ')'))
            self._taken_seq = seq
        else:
            frame = self._read_one()
            if frame is None:
                raise ImageError(f'no frame from {self.config.device!r} ({self.state}: '
                                 f'{self.last_error})')
        self.frames += 1
        return self._fit(frame)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._release()
        super().close()

    def describe(self) -> str:
        return f'device {self.config.device}'


def make_source(config: CameraSourceConfig, **kw) -> FrameSource:
    """Validate ``config`` and build (not open) its source."""
    config.validate()
    if config.source == 'synthetic':
        return SyntheticSource(config)
    if config.source == 'folder':
        return FolderSource(config)
    return DeviceSource(config, **kw)
