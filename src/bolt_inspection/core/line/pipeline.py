"""The classifier's pipeline without ROS: one verdict for every triggered bolt, pictures after.

:class:`InspectionPipeline` joins the views of each triggered bolt
(:class:`~bolt_inspection.core.line.join.ViewJoiner`), queues the complete (or timed-out) bolts
for ONE inference worker thread, which inspects the views in one batch
(:class:`~bolt_inspection.core.line.inspector.Inspector`: model + Grad-CAM from the same pass),
adds the drift guard's reasons and hands the verdict to its :class:`PipelineOutput`. Pictures
(the Grad-CAM mosaic, per-view overlays) go to a second thread with a queue of
:data:`IMAGE_QUEUE` bolts that drops the oldest when it falls behind: pictures for people never
delay the next bolt's verdict. Verdicts are never dropped: a view that misses its timeout, a frame
that could not be decoded, an inference error, a full queue, or a stop with bolts in flight all
give NG with the reason.

Thread-safe: triggers, views and the expiry tick may come from parallel callbacks. The counters
are kept under the pipeline's lock (:meth:`InspectionPipeline.snapshot`). The classifier node
holds the parameters, converts messages and publishes what the output is handed.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass

from bolt_inspection.core.errors import BoltInspectionError
from bolt_inspection.core.line.fusion import fuse, with_reasons
from bolt_inspection.core.line.join import Bundle, ViewJoiner
from bolt_inspection.core.line.latency import LatencyStats
from bolt_inspection.core.vision.drift import DriftGuard

# Bolts whose pictures wait for the image thread; a newer bolt pushes out the oldest.
IMAGE_QUEUE = 2


@dataclass(frozen=True)
class PipelineSettings:
    """How the pipeline runs (the classifier node's parameters of the same names).

    Attributes:
        cams: Camera indices every bolt needs.
        view_timeout_s: A view later than this after its trigger makes the bolt NG.
        queue_size: Bolts waiting for inference; beyond that a bolt is NG 'overloaded'.
        max_pending: Bolts waiting for their views at once.
        stall_s: The worker busy on one bolt for longer is stalled (:meth:`working` is False).
    """

    cams: tuple[int, ...] = (0, 1, 2, 3)
    view_timeout_s: float = 0.8
    queue_size: int = 4
    max_pending: int = 64
    stall_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.cams:
            raise ValueError('cams: at least one camera')
        if not (self.view_timeout_s > 0 and self.stall_s > 0):
            raise ValueError(f'view_timeout_s and stall_s must be > 0, got '
                             f'{self.view_timeout_s} and {self.stall_s}')
        if self.queue_size < 1 or self.max_pending < 1:
            raise ValueError(f'queue_size and max_pending must be >= 1, got {self.queue_size} '
                             f'and {self.max_pending}')


class PipelineOutput:
    """Where the pipeline's results go (the classifier node publishes them)."""

    def verdict(self, bundle: Bundle, verdict) -> float:
        """Send the fused verdict of ``bundle``; return its latency in ms (for the stats)."""
        raise NotImplementedError

    def wants_images(self) -> bool:
        """Whether pictures are wanted at all (checked per bolt: a parameter may change)."""
        return False

    def images(self, bundle: Bundle, inspection) -> None:
        """Render and send the pictures of one inspected bolt (the image thread)."""

    def log(self, level: str, text: str) -> None:
        """A log line; ``level`` is 'warning' or 'error'."""


@dataclass
class _ImageJob:
    bundle: Bundle
    inspection: object


class InspectionPipeline:
    """Join, inspect, decide, for every triggered bolt (see the module docstring).

    Args:
        inspector: An :class:`~bolt_inspection.core.line.inspector.Inspector` (or any object
            with ``inspect(views, failures)``, ``threshold`` and ``model_id``).
        settings: The pipeline's settings.
        output: Where verdicts, pictures and log lines go.
        drift: The camera drift guard (its reasons make a bolt NG); off when None.
    """

    def __init__(self, inspector, settings: PipelineSettings, output: PipelineOutput,
                 drift: DriftGuard | None = None) -> None:
        self.inspector = inspector
        self.settings = settings
        self.output = output
        self.drift = drift or DriftGuard(None, 'off')
        self.joiner = ViewJoiner(settings.cams, settings.view_timeout_s,
                                 max_pending=settings.max_pending)
        self.latency = LatencyStats()
        # Where the time goes: trigger -> last view joined, and the Inspector's own work.
        self.join_wait = LatencyStats()
        self.inspect_time = LatencyStats()
        self.counts = {'verdicts': 0, 'ok': 0, 'ng': 0, 'overloaded': 0, 'errors': 0,
                       'timed_out': 0, 'drift_rejects': 0}
        self.images_dropped = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[Bundle | None] = queue.Queue(maxsize=settings.queue_size)
        self._worker: threading.Thread | None = None
        self._busy_since: float | None = None   # the worker's current bolt started then
        self._images: collections.deque[_ImageJob] = collections.deque(maxlen=IMAGE_QUEUE)
        self._images_cv = threading.Condition()
        self._images_stop = False
        self._image_worker: threading.Thread | None = None
        self._active = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._active

    def start(self) -> None:
        """Start the inference and image threads; inputs are accepted from now on."""
        if self._active:
            return
        with self._images_cv:
            self._images.clear()
            self._images_stop = False
        self._worker = threading.Thread(target=self._work, name='classifier-worker',
                                        daemon=True)
        self._worker.start()
        self._image_worker = threading.Thread(target=self._image_work, name='classifier-images',
                                              daemon=True)
        self._image_worker.start()
        with self._lock:
            self._active = True

    def stop(self, reason: str) -> None:
        """Stop taking inputs, finish the queued bolts, and answer every bolt still waiting for
        views with NG ``reason``: no triggered bolt goes without a verdict."""
        with self._lock:
            if not self._active:
                return
            self._active = False
        # The worker finishes the bolts already queued (they have all their views), then exits.
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        # Then the image thread: it renders what is queued (at most IMAGE_QUEUE bolts) and exits.
        with self._images_cv:
            self._images_stop = True
            self._images_cv.notify_all()
        if self._image_worker is not None:
            self._image_worker.join(timeout=10.0)
            self._image_worker = None
        with self._lock:
            leftovers = self.joiner.flush(time.monotonic())
        # An input that was being handled while we stopped may have queued a bolt after the
        # worker's stop sentinel: answer it too.
        while True:
            try:
                bundle = self._queue.get_nowait()
            except queue.Empty:
                break
            if bundle is not None:
                leftovers.append(bundle)
        for bundle in leftovers:
            self.fail(bundle, reason)

    def set_view_timeout(self, seconds: float) -> None:
        with self._lock:
            self.joiner.timeout_s = float(seconds)

    # -- inputs (any thread) -----------------------------------------------------------------

    def trigger(self, stamp_ns: int, bolt_id: str, now: float) -> None:
        """A bolt reached the cameras: its views are due within the view timeout."""
        with self._lock:
            if not self._active:
                return
            bundles = self.joiner.add_trigger(stamp_ns, bolt_id, now)
        self._dispatch(bundles)

    def view(self, stamp_ns: int, cam: int, now: float, image=None,
             failure: str | None = None) -> None:
        """One camera's frame (``image``) or why there is none (``failure``)."""
        if image is not None and self.drift.active:
            self.drift.observe(cam, image)   # here, in parallel: not on the worker
        with self._lock:
            if not self._active:
                return
            bundles = self.joiner.add_view(stamp_ns, cam, now, image=image, failure=failure)
            late = list(self.joiner.late)
            self.joiner.late.clear()
        for view in late:   # late, not lost: say so (the bolt already went NG without it)
            self.output.log('warning', f'bolt {view.bolt_id}: cam{view.cam} frame arrived '
                                       f'{view.delay_s:.2f} s after the trigger, past the view '
                                       f'timeout {self.joiner.timeout_s:.2f} s (the bolt went '
                                       f'NG without it)')
        self._dispatch(bundles)

    def expire(self, now: float) -> None:
        """Bolts whose views are overdue go on without them (NG 'missing view')."""
        with self._lock:
            bundles = self.joiner.expire(now)
            self.counts['timed_out'] += len(bundles)
        self._dispatch(bundles)

    def _dispatch(self, bundles: list[Bundle]) -> None:
        for bundle in bundles:
            try:
                self._queue.put_nowait(bundle)
            except queue.Full:
                self._count('overloaded')
                self.fail(bundle, 'overloaded')

    # -- health ------------------------------------------------------------------------------

    def working(self) -> bool:
        """The worker runs, is not stuck on one bolt for longer than ``stall_s``, and no camera
        drifted under ``drift_policy: stop``."""
        worker, busy = self._worker, self._busy_since
        if worker is None or not worker.is_alive() or self.drift.stop_line():
            return False
        return busy is None or time.monotonic() - busy <= self.settings.stall_s

    def snapshot(self) -> dict:
        """The counters and queue state, consistent with each other."""
        with self._lock:
            out = dict(self.counts)
            out.update({'queue_depth': self._queue.qsize(), 'pending_bolts': self.joiner.pending,
                        'stale_views': self.joiner.stats.stale,
                        'duplicate_views': self.joiner.stats.duplicate_views,
                        'mosaics_dropped': self.images_dropped})
        return out

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    # -- the inference worker ----------------------------------------------------------------

    def _work(self) -> None:
        while True:
            bundle = self._queue.get()
            if bundle is None:
                return
            self._busy_since = time.monotonic()
            try:
                self._process(bundle)
            except Exception as exc:  # noqa: BLE001 - a verdict must go out whatever happened
                self.output.log('error', f'bolt {bundle.bolt_id}: {type(exc).__name__}: {exc}')
                self.fail(bundle, f'internal error: {type(exc).__name__}')
            finally:
                self._busy_since = None

    def _process(self, bundle: Bundle) -> None:
        inspector = self.inspector
        views = {cam: bundle.views.get(cam) for cam in self.settings.cams}
        inspection = None
        try:
            self.join_wait.add((bundle.completed_at - bundle.triggered_at) * 1000.0)
            start = time.perf_counter()
            inspection = inspector.inspect(views, dict(bundle.failures))
            self.inspect_time.add((time.perf_counter() - start) * 1000.0)
            # A camera out of its training band: never pass this bolt on a blind model.
            verdict = with_reasons(inspection.verdict, self.drift.bolt_reasons())
            if verdict is not inspection.verdict:
                self._count('drift_rejects')
        except BoltInspectionError as exc:
            verdict = fuse({}, inspector.threshold, bundle.missing, bundle.failures,
                           extra_reasons=[str(exc)])
            self._count('errors')
        except Exception as exc:  # noqa: BLE001 - a broken model gives NG, not a dead node
            self._count('errors')
            self.output.log('error', f'bolt {bundle.bolt_id}: inference failed: '
                                     f'{type(exc).__name__}: {exc}')
            verdict = fuse({}, inspector.threshold, bundle.missing, bundle.failures,
                           extra_reasons=[f'inference error: {type(exc).__name__}'])
        self._emit(bundle, verdict)
        # The verdict is out: nothing after this may turn into a second verdict for the bolt.
        try:
            if inspection is not None and self.output.wants_images():
                self._queue_images(bundle, inspection)
        except Exception as exc:  # noqa: BLE001 - pictures are for people
            self.output.log('warning', f'bolt {bundle.bolt_id}: no pictures: '
                                       f'{type(exc).__name__}: {exc}')

    def fail(self, bundle: Bundle, reason: str) -> None:
        """NG ``reason`` for ``bundle`` without inspecting it; only the views that really are
        missing are reported as such."""
        threshold = self.inspector.threshold if self.inspector is not None else float('nan')
        verdict = fuse({}, threshold, bundle.missing, bundle.failures, extra_reasons=[reason])
        self._emit(bundle, verdict)

    def _emit(self, bundle: Bundle, verdict) -> None:
        latency_ms = self.output.verdict(bundle, verdict)
        with self._lock:
            self.counts['verdicts'] += 1
            self.counts['ok' if verdict.ok else 'ng'] += 1
        try:
            self.latency.add(float(latency_ms))
        except (TypeError, ValueError) as exc:   # the verdict is out; only the stats suffer
            self.output.log('warning', f'bolt {bundle.bolt_id}: latency {latency_ms!r} not '
                                       f'counted: {exc}')

    # -- the image thread --------------------------------------------------------------------

    def _queue_images(self, bundle: Bundle, inspection) -> None:
        """Hand a bolt's pictures to the image thread; when it is behind, drop the oldest."""
        with self._images_cv:
            if len(self._images) == self._images.maxlen:
                self.images_dropped += 1
            self._images.append(_ImageJob(bundle, inspection))
            self._images_cv.notify()

    def _image_work(self) -> None:
        while True:
            with self._images_cv:
                while not self._images and not self._images_stop:
                    self._images_cv.wait()
                if not self._images:
                    return
                job = self._images.popleft()
            self.output.images(job.bundle, job.inspection)
