"""The inspection of one bolt: ROI crops -> one batched forward pass with Grad-CAM -> fusion.

This is what the classifier node and the evaluation call. :meth:`Inspector.inspect` never
raises because of a view: a missing, undecodable or wrong-size view becomes a failure reason
and makes the bolt NG; an exception inside inference makes the bolt NG with the reason
``'inference error: ...'``. A silent OK is impossible by construction (see
:mod:`bolt_inspection.core.line.fusion`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bolt_inspection.core.errors import BoltInspectionError, ImageError
from bolt_inspection.core.line.fusion import BoltVerdict, fuse
from bolt_inspection.core.model.artifact import ModelArtifact, load_artifact
from bolt_inspection.core.vision.roi import Box, CameraConfig, crop_roi, resize_bgr

DEFAULT_CAMS = (0, 1, 2, 3)


@dataclass
class Inspection:
    """The result of inspecting one bolt.

    Attributes:
        verdict: The fused bolt verdict.
        p_ng: Camera -> NG probability (``None`` when the view could not be scored).
        crops: Camera -> the BGR uint8 crop the model saw (at the model input size).
        heatmaps: Camera -> Grad-CAM heatmap (float32, model input size, in [0, 1]).
        timings_ms: ``'roi'``, ``'inference'`` (forward pass + Grad-CAM), ``'fusion'``.
    """

    verdict: BoltVerdict
    p_ng: dict[int, float | None]
    crops: dict[int, np.ndarray] = field(default_factory=dict)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)


def _one_line(exc: BaseException) -> str:
    text = ' '.join(str(exc).split())
    text = text[:160] + '...' if len(text) > 160 else text
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


class Inspector:
    """Classifies the views of a bolt with a trained model and explains it with Grad-CAM.

    Args:
        artifact: A loaded model artifact.
        camera_config: ROI boxes to use instead of the ones stored with the model (same frame
            size expected). Ignored when the model was trained on full frames.
        threshold: Override the artifact's calibrated threshold.
        engine: How the network runs: ``'auto'`` (the fastest validated engine of the
            artifact's export, else the TensorFlow reference) or one of
            :data:`bolt_inspection.core.model.engine.ENGINES` (see :func:`~bolt_inspection.core.
            engine.load_engine`: a missing or bad export falls back to ``'tf'``).

    Attributes:
        threshold: NG probability threshold.
        model_id: The artifact's short hash and the engine, ``'<hash>/<engine>'``.
        cams: The cameras every bolt must have.
        engine: The engine that runs the network and Grad-CAM.
        engine_warnings: Why the requested (or preferred) engine is not the one running.
    """

    def __init__(self, artifact: ModelArtifact, camera_config: CameraConfig | None = None,
                 threshold: float | None = None, engine: str = 'auto'):
        from bolt_inspection.core.model.engine import load_engine

        meta = artifact.metadata
        self.artifact = artifact
        self.metadata = meta
        self.threshold = float(meta.threshold if threshold is None else threshold)
        self.input_size = tuple(meta.input_size)
        self.ng_index = meta.ng_index
        self.boxes: dict[int, Box | None]
        self.frame_size: tuple[int, int] | None
        if meta.roi_boxes is None:
            cams = camera_config.cams if camera_config is not None else DEFAULT_CAMS
            self.boxes = {cam: None for cam in cams}
            self.frame_size = None
        elif camera_config is not None:
            self.boxes = dict(camera_config.boxes)
            self.frame_size = tuple(camera_config.frame_size)
        else:
            self.boxes = dict(meta.roi_boxes)
            self.frame_size = tuple(meta.frame_size) if meta.frame_size else None
        self.cams = tuple(sorted(self.boxes))
        selection = load_engine(artifact, engine, threshold=self.threshold)
        self.engine_requested = engine
        self.engine_warnings = list(selection.warnings)
        # A recalibrated engine decides at its own threshold (stored with its export).
        self.engine_note = selection.note
        if selection.threshold is not None:
            self.threshold = float(selection.threshold)
        self.use_engine(selection.engine)
        # The model batch, reused bolt after bolt (one float32 (n, h, w, 3) array instead of two
        # fresh ones per bolt). Only the inference pass reads it: results never point into it.
        self._batch: np.ndarray | None = None
        self._batch_lock = threading.Lock()

    @classmethod
    def from_artifact(cls, path: str | Path, camera_config: CameraConfig | None = None,
                      threshold: float | None = None, engine: str = 'auto') -> Inspector:
        """Load a model directory and build an inspector.

        Raises:
            ModelError: The artifact is missing, corrupt or inconsistent.
            ConfigError: ``engine`` is not an engine choice.
        """
        return cls(load_artifact(path), camera_config, threshold, engine)

    def use_engine(self, engine) -> None:
        """Run bolts on ``engine`` from now on (an
        :class:`~bolt_inspection.core.model.engine.Engine` of this artifact); ``model_id`` says
        which."""
        self.engine = engine
        self.gradcam = engine   # the name the rest of the code base knows it by
        self.model_id = f'{self.artifact.model_id}/{engine.name}'

    def warm_up(self) -> float:
        """Run one dummy batch so the first bolt does not pay for graph tracing; returns ms."""
        start = time.perf_counter()
        width, height = self.input_size
        self.gradcam(np.zeros((len(self.cams) or 1, height, width, 3), np.float32))
        return (time.perf_counter() - start) * 1000.0

    def _crop(self, cam: int, image: np.ndarray) -> np.ndarray:
        what = f'cam{cam}'
        if self.frame_size is not None and isinstance(image, np.ndarray) and image.ndim >= 2:
            height, width = image.shape[:2]
            if (width, height) != self.frame_size:
                raise ImageError(f'frame is {width}x{height}, the ROI boxes are for '
                                 f'{self.frame_size[0]}x{self.frame_size[1]}')
        crop = crop_roi(image, self.boxes.get(cam), what=what)
        return np.ascontiguousarray(resize_bgr(crop, self.input_size))

    def _fill_batch(self, crops: list[np.ndarray], out: np.ndarray | None) -> np.ndarray:
        """The model batch (RGB float32) of ``crops``, written into ``out`` when it fits."""
        width, height = self.input_size
        shape = (max(len(crops), len(self.cams)), height, width, 3)
        if out is None or out.shape[0] < len(crops) or out.shape[1:] != shape[1:]:
            out = np.empty(shape, np.float32)
        for i, crop in enumerate(crops):
            # cvtColor + one contiguous cast is ~8x faster than casting the strided [..., ::-1].
            np.copyto(out[i], cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), casting='unsafe')
        return out

    def inspect(self, views: Mapping[int, np.ndarray | None],
                failures: Mapping[int, str] | None = None) -> Inspection:
        """Inspect one bolt.

        Args:
            views: Camera -> BGR uint8 frame (``None`` or absent = missing view).
            failures: Camera -> why its view is unusable (e.g. a decode error upstream).

        Returns:
            The :class:`Inspection`; never raises for bad input.
        """
        t0 = time.perf_counter()
        crops: dict[int, np.ndarray] = {}
        p_ng: dict[int, float | None] = {}
        heatmaps: dict[int, np.ndarray] = {}
        extra: list[str] = []
        timings = {'roi': 0.0, 'inference': 0.0, 'fusion': 0.0}
        inference_failed = False
        reasons: dict[int, str] = {}
        try:
            reasons.update({int(c): str(why) for c, why in (failures or {}).items()})
            views = {int(cam): image for cam, image in views.items()}
            for cam in sorted(set(self.cams) | set(views)):
                image = views.get(cam)
                if cam in reasons or image is None:
                    continue
                if cam not in self.boxes:
                    reasons[cam] = f'no ROI box configured for camera {cam}'
                    continue
                try:
                    crops[cam] = self._crop(cam, image)
                except BoltInspectionError as exc:
                    reasons[cam] = str(exc).removeprefix(f'cam{cam}: ')
            t1 = time.perf_counter()
            timings['roi'] = (t1 - t0) * 1000.0
            order = sorted(crops)
            if order:
                try:
                    # Another thread inside inspect() holds the shared batch: use a fresh one
                    # rather than wait for (or overwrite) it.
                    shared = self._batch_lock.acquire(blocking=False)
                    try:
                        batch = self._fill_batch([crops[c] for c in order],
                                                 self._batch if shared else None)
                        if shared:
                            self._batch = batch
                        probs, cams = self.gradcam(batch[:len(order)])
                    finally:
                        if shared:
                            self._batch_lock.release()
                    for i, cam in enumerate(order):
                        value = float(probs[i, self.ng_index])
                        p_ng[cam] = value
                        heatmaps[cam] = cams[i]
                except Exception as exc:  # noqa: BLE001 - any inference failure -> NG, no crash
                    extra.append(f'inference error: {_one_line(exc)}')
                    inference_failed = True
                    p_ng = {}
                    heatmaps = {}
            t2 = time.perf_counter()
            timings['inference'] = (t2 - t1) * 1000.0
        except Exception as exc:  # noqa: BLE001 - a malformed views mapping must not crash
            extra.append(f'inference error: {_one_line(exc)}')
            inference_failed = True
            t2 = time.perf_counter()
        # Views that were there but not scored because inference failed are not "missing":
        # the bolt-level reason already says why.
        expected = [c for c in self.cams if not (inference_failed and c in crops)]
        verdict = fuse(p_ng, self.threshold, expected, reasons, extra_reasons=extra)
        timings['fusion'] = (time.perf_counter() - t2) * 1000.0
        scores = {cam: verdict.p_ng.get(cam) for cam in sorted(set(self.cams) | set(verdict.p_ng))}
        return Inspection(verdict=verdict, p_ng=scores, crops=crops,
                          heatmaps=heatmaps, timings_ms=timings)

    def render_mosaic(self, inspection: Inspection, bolt_id) -> np.ndarray:
        """The 2x2 bgr8 mosaic (crops, Grad-CAM, banner) for ``/inspection/gradcam``."""
        from bolt_inspection.core.model.gradcam import mosaic

        cams = list(self.cams[:4])
        verdict = inspection.verdict
        labels = []
        for cam in cams:
            p = inspection.p_ng.get(cam)
            if p is not None:
                labels.append(f'cam{cam} p_ng {p:.2f}')
                continue
            # Say why on the tile itself: an operator looks at the picture, not the log.
            why = 'no score'
            for reason in verdict.reasons:
                if reason == f'missing view cam{cam}':
                    why = 'missing'
                elif reason.startswith(f'cam{cam}: '):
                    why = reason[len(f'cam{cam}: '):]
            labels.append(f'cam{cam}: {why}'[:24])
        head = 'OK' if verdict.ok else 'NG'
        banner = f'{head}  bolt {bolt_id}'
        failures = [r for r in verdict.reasons if ': NG p=' not in r]
        if failures:
            banner += '\n' + '; '.join(failures)[:120]
        width, height = self.input_size
        tile = (max(160, int(round(width * 320.0 / height))), 320)
        return mosaic([inspection.crops.get(c) for c in cams],
                      [inspection.heatmaps.get(c) for c in cams], banner, verdict.ok, labels,
                      tile_size=tile)

