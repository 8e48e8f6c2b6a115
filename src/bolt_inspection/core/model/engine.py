"""Inference engines: how the network runs beneath the Inspector, with the same answers.

Every engine is a callable with :class:`~bolt_inspection.core.model.gradcam.GradCAM`'s contract: a
float32 RGB batch ``(N, h, w, 3)`` in, ``(probs (N, n_classes), heatmaps (N, h, w))`` out, one
pass for both. Two kinds:

* :class:`ReferenceEngine` (``'tf'``) - the Keras model under TensorFlow, Grad-CAM by
  :class:`~bolt_inspection.core.model.gradcam.GradCAM`. The reference every other engine is held
  to.
* :class:`SplitEngine` (``'openvino-f32'``, ``'openvino-bf16'``, ``'openvino-int8'``) - the
  backbone, from the input up to the explained conv layer (``block5_conv3``), runs in OpenVINO
  (f32, f32 weights with bf16 arithmetic, or the NNCF INT8 model calibrated on training
  views); the rest of the network runs in a small TensorFlow function on that activation
  (:class:`GradCamTail`): the head's forward pass, the gradient of the NG logit with respect to
  the activation and Eq. 2-4, the same code as the reference (``GradCAM._scores`` and
  ``GradCAM._heatmaps``). Grad-CAM keeps its meaning exactly; only the activation it is computed
  on comes from another runtime.

The OpenVINO files live in the model artifact (``<model>/engines/``, written by
:func:`bolt_inspection.core.model.export.export_artifact` at the end of training or by
``bolt-inspection export``) with a manifest: the model id they were made from, the files'
hashes, the calibration set's hash, and how well each engine agreed with the reference on
held-out views (decision, Grad-CAM peak cell, heatmap correlation, NG recall; per view in
``validation.npz`` so agreement is recomputed at the artifact's current threshold).

:func:`load_engine` picks the engine: ``'auto'`` takes the fastest engine that passed
:data:`CRITERIA` (INT8, then bf16 when the CPU computes bf16 natively), otherwise the
reference. A missing, stale (other model id), corrupt (hash) or failing export, a missing
``openvino`` package, or an engine that disagrees with the reference on the probe views at load
time all give the reference plus a warning saying why: never a crash, never a silent wrong
answer.

Environment: ``BOLT_OV_THREADS`` - OpenVINO's inference threads (default ``min(4, cores)``,
as :mod:`bolt_inspection.core.model.keras_backend` sizes TensorFlow's).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bolt_inspection.core.errors import ConfigError, ImageError
from bolt_inspection.core.files import file_sha256

#: Engines an artifact can run on; ``'tf'`` is the reference.
ENGINES = ('tf', 'openvino-f32', 'openvino-bf16', 'openvino-int8')
#: What the ``engine`` parameter accepts.
ENGINE_CHOICES = ('auto', *ENGINES)
#: What ``'auto'`` tries, fastest first. ``openvino-f32`` is not faster than TensorFlow here
#: (it exists to show the conversion itself is exact), so only an explicit request gets it.
AUTO_ORDER = ('openvino-int8', 'openvino-bf16')
#: OpenVINO precision hint and IR file of each split engine.
SPLIT_ENGINES = {
    'openvino-f32': ('f32', 'backbone.xml'),
    'openvino-bf16': ('bf16', 'backbone.xml'),
    'openvino-int8': ('f32', 'backbone_int8.xml'),
}
EXPORT_DIR = 'engines'
MANIFEST_FILE = 'manifest.json'
VALIDATION_FILE = 'validation.npz'
PROBE_FILE = 'probe.npz'
EXPORT_FORMAT = 1
#: What an engine must reach against the reference on held-out views (issue 19).
CRITERIA = {'decision_agreement': 0.995, 'peak_cell_agreement': 0.99,
            'heatmap_corr_mean': 0.98}
#: Two heatmap cells within this fraction of the reference's maximum are both its peak (a tie
#: the reference itself cannot break; see :func:`compare_views`).
PEAK_TIE = 0.01
#: A view whose reference NG probability is within this of the threshold is a tie: its decision
#: is not counted in the decision agreement (training calibrates the threshold on the very
#: views the export validates on, so some sit on it). NG recall still counts every NG view.
DECISION_TIE = 0.005
#: Load-time check on the probe views (chosen far from the threshold at export).
PROBE_MAX_P_DIFF = 0.1
PROBE_MIN_CORR = 0.95

_CORE_LOCK = threading.Lock()
_CORE: dict[str, Any] = {}


def check_engine_name(name: str) -> str:
    """Return ``name`` if it is an engine choice.

    Raises:
        ConfigError: Unknown engine (the message lists the choices).
    """
    if name not in ENGINE_CHOICES:
        raise ConfigError(f'engine {name!r} is not one of {", ".join(ENGINE_CHOICES)}')
    return name


def _threads() -> int:
    text = os.environ.get('BOLT_OV_THREADS', '').strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return min(4, os.cpu_count() or 1)


def openvino_core():
    """The process's one ``openvino.Core`` (raises ImportError without the package)."""
    with _CORE_LOCK:
        if 'core' not in _CORE:
            import openvino

            _CORE['core'] = openvino.Core()
            _CORE['version'] = openvino.get_version()
        return _CORE['core']


def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's CPU optimisation capabilities (e.g. ``'BF16'``, ``'INT8'``); () if none."""
    try:
        return tuple(openvino_core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))
    except Exception:  # noqa: BLE001 - no openvino, or no CPU plugin: no capability
        return ()


# --------------------------------------------------------------------------------------------
# Engines


class Engine:
    """An explained forward pass: ``engine(batch) -> (probs, heatmaps)`` (GradCAM's contract).

    Attributes:
        name: One of :data:`ENGINES`.
        model: The Keras model (the reference; also what a plain forward pass uses).
        input_hw: ``(h, w)`` of the input.
        grid_hw: ``(h, w)`` of the explained layer's feature maps.
        last_ms: Time of the last call's parts (``'backbone'``, ``'head'``, ``'total'``).
        gradcam: The model's reference :class:`GradCAM` (what the explanation means: layer,
            class, :attr:`score`); calling it runs TensorFlow.
    """

    name = 'engine'
    gradcam: Any = None

    @property
    def score(self) -> str:
        """What Grad-CAM differentiates: ``'logit'`` or ``'probability'`` (as GradCAM)."""
        return self.gradcam.score

    def __init__(self, model, input_hw, grid_hw):
        self.model = model
        self.input_hw = tuple(input_hw)
        self.grid_hw = tuple(grid_hw)
        self.last_ms: dict[str, float] = {}

    def _check(self, batch) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (*self.input_hw, 3):
            raise ImageError(f'engine batch shape {batch.shape} does not match the model input '
                             f'(N, {self.input_hw[0]}, {self.input_hw[1]}, 3)')
        return batch

    def _empty(self) -> tuple[np.ndarray, np.ndarray]:
        n_out = int(self.model.output_shape[-1])
        return np.zeros((0, n_out), np.float32), np.zeros((0, *self.input_hw), np.float32)

    def describe(self) -> dict[str, Any]:
        """What runs: name, precision, runtime details (for diagnostics and reports)."""
        return {'engine': self.name}


class ReferenceEngine(Engine):
    """The Keras model under TensorFlow with :class:`GradCAM`: the reference (``'tf'``)."""

    name = 'tf'

    def __init__(self, model, layer_name: str, class_index: int):
        from bolt_inspection.core.model.gradcam import GradCAM

        self.gradcam = GradCAM(model, layer_name, class_index=class_index)
        super().__init__(model, self.gradcam.input_hw, self.gradcam.grid_hw)

    def __call__(self, batch) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        out = self.gradcam(batch)
        self.last_ms = {'total': (time.perf_counter() - start) * 1000.0}
        return out

    def describe(self) -> dict[str, Any]:
        from bolt_inspection.core.model.keras_backend import tf
        return {'engine': self.name, 'runtime': f'tensorflow {tf().__version__}',
                'precision': 'f32'}


class GradCamTail:
    """The network after the explained layer, with Grad-CAM, as one small TensorFlow function.

    Given the activation ``A`` of the explained layer (from any engine), returns the class
    probabilities and the heatmaps exactly as :class:`GradCAM` computes them from the full
    model: the head (pooling, batch norm, dense layers: whatever follows the layer in the
    model) runs forward, the NG logit is differentiated with respect to ``A`` (Eq. 2), and
    Eq. 3-4 plus the upsampling use ``GradCAM``'s own code.

    Args:
        gradcam: The reference :class:`GradCAM` of the model (its head output and score
            definition are reused).

    Raises:
        ModelError: The layers after the explained layer depend on anything else than its
            output (e.g. a skip connection from earlier layers).
    """

    def __init__(self, gradcam):
        from bolt_inspection.core.errors import ModelError
        from bolt_inspection.core.model.keras_backend import keras, tf

        k, t = keras(), tf()
        self.gradcam = gradcam
        target = gradcam.model.get_layer(gradcam.layer_name)
        head_output = gradcam._grad_model.outputs[1]
        try:
            self.model = k.Model(target.output, head_output, name='gradcam_tail')
        except Exception as exc:  # noqa: BLE001 - Keras raises several types for a bad cut
            raise ModelError(f'the layers after {gradcam.layer_name!r} do not form a head of '
                             f'its output alone ({type(exc).__name__}); no split engine') from None
        self.conv_shape = tuple(int(v) for v in target.output.shape[1:])
        self._fn = t.function(self._compute,
                              input_signature=[t.TensorSpec([None, *self.conv_shape],
                                                            t.float32)],
                              reduce_retracing=True)

    def _compute(self, conv):
        from bolt_inspection.core.model.keras_backend import tf

        t = tf()
        ref = self.gradcam
        with t.GradientTape() as tape:
            tape.watch(conv)
            logits, probs = ref._scores(self.model(conv, training=False))
            score = t.reduce_sum(logits[:, ref.class_index])
        grads = tape.gradient(score, conv)
        return probs, ref._heatmaps(conv, grads)

    def __call__(self, conv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from bolt_inspection.core.model.keras_backend import tf

        probs, cams = self._fn(tf().constant(np.asarray(conv, np.float32)))
        return probs.numpy(), cams.numpy()


class OpenVinoBackbone:
    """A compiled OpenVINO model (image batch -> activation), safe to call from several threads.

    Args:
        xml_path: The IR (``.xml`` beside its ``.bin``).
        precision: OpenVINO's ``INFERENCE_PRECISION_HINT`` (``'f32'`` or ``'bf16'``).
        threads: Inference threads (default ``BOLT_OV_THREADS`` or ``min(4, cores)``).
    """

    def __init__(self, xml_path: Path, precision: str = 'f32', threads: int | None = None):
        core = openvino_core()
        self.threads = int(threads or _threads())
        self.precision = precision
        self.compiled = core.compile_model(
            core.read_model(str(xml_path)), 'CPU',
            {'INFERENCE_PRECISION_HINT': precision, 'PERFORMANCE_HINT': 'LATENCY',
             'INFERENCE_NUM_THREADS': self.threads})
        # One infer request per concurrent caller (a request is not thread-safe).
        self._requests: queue.SimpleQueue = queue.SimpleQueue()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            result = request.infer({0: batch})
            return np.asarray(result[0], dtype=np.float32)
        finally:
            self._requests.put(request)


class SplitEngine(Engine):
    """Backbone in a fast runtime, head + Grad-CAM in :class:`GradCamTail` (see module doc).

    Args:
        name: The engine's name (one of :data:`ENGINES`).
        backbone: ``batch -> activation of the explained layer`` (e.g. :class:`OpenVinoBackbone`).
        tail: The model's :class:`GradCamTail`.
        info: Extra facts for :meth:`describe`.
    """

    def __init__(self, name: str, backbone, tail: GradCamTail, info: dict | None = None):
        ref = tail.gradcam
        super().__init__(ref.model, ref.input_hw, ref.grid_hw)
        self.gradcam = ref
        self.name = name
        self.backbone = backbone
        self.tail = tail
        self.info = dict(info or {})

    def __call__(self, batch) -> tuple[np.ndarray, np.ndarray]:
        batch = self._check(batch)
        if batch.shape[0] == 0:
            return self._empty()
        t0 = time.perf_counter()
        conv = self.backbone(batch)
        if conv.shape[1:] != self.tail.conv_shape:
            raise ImageError(f'{self.name}: backbone output {conv.shape[1:]} is not the explained '
                             f"layer's {self.tail.conv_shape}")
        t1 = time.perf_counter()
        probs, cams = self.tail(conv)
        t2 = time.perf_counter()
        self.last_ms = {'backbone': (t1 - t0) * 1000.0, 'head': (t2 - t1) * 1000.0,
                        'total': (t2 - t0) * 1000.0}
        return probs, cams

    def describe(self) -> dict[str, Any]:
        return {'engine': self.name, **self.info}


# --------------------------------------------------------------------------------------------
# Agreement with the reference


def compare_views(ref_probs: np.ndarray, ref_heat: np.ndarray, probs: np.ndarray,
                  heat: np.ndarray, ng_index: int, grid_hw: tuple[int, int]) -> dict[str, Any]:
    """Per-view comparison of an engine's outputs with the reference's.

    Returns:
        ``p_ref``, ``p`` (NG probabilities), ``peak_same`` (the engine's Grad-CAM peak falls in
        the reference's peak cell, or on a cell the reference rates within :data:`PEAK_TIE` of
        its maximum: a tie the reference cannot break either; two maps without a peak agree),
        ``peak_same_strict`` (the same cell, ties not forgiven), ``corr`` (Pearson correlation of
        the two heatmaps; two flat maps: 1 if equal, else 0) - arrays of one entry per view.
    """
    from bolt_inspection.core.model.gradcam import heatmap_peak

    n = len(ref_probs)
    peak_same = np.zeros(n, bool)
    strict = np.zeros(n, bool)
    corr = np.zeros(n, np.float64)
    for i in range(n):
        a = np.asarray(ref_heat[i], np.float64)
        b = np.asarray(heat[i], np.float64)
        peak_a, peak_b = heatmap_peak(a), heatmap_peak(b)
        strict[i] = _cell(peak_a, a.shape, grid_hw) == _cell(peak_b, b.shape, grid_hw)
        peak_same[i] = strict[i] or (peak_a is not None and peak_b is not None
                                     and a[peak_b] >= (1.0 - PEAK_TIE) * a.max())
        sa, sb = a.std(), b.std()
        if sa < 1e-12 or sb < 1e-12:
            corr[i] = 1.0 if (sa < 1e-12 and sb < 1e-12 and np.allclose(a, b, atol=1e-6)) else 0.0
        else:
            corr[i] = float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))
    return {'p_ref': np.asarray(ref_probs, np.float64)[:, ng_index],
            'p': np.asarray(probs, np.float64)[:, ng_index], 'peak_same': peak_same,
            'peak_same_strict': strict, 'corr': corr}


def _cell(peak, shape, grid_hw):
    if peak is None:
        return None
    return (peak[0] * grid_hw[0] // shape[0], peak[1] * grid_hw[1] // shape[1])


def agreement(p_ref: np.ndarray, p: np.ndarray, peak_same: np.ndarray, corr: np.ndarray,
              threshold: float, labels: np.ndarray | None = None,
              peak_strict: np.ndarray | None = None,
              engine_threshold: float | None = None) -> dict[str, Any]:
    """How an engine agrees with the reference over views, and whether it passes CRITERIA.

    Args:
        p_ref, p: NG probabilities of the reference and the engine.
        peak_same, corr: From :func:`compare_views`.
        threshold: The NG threshold the reference's decisions are taken at.
        labels: 1 = NG, 0 = OK, -1 = unknown per view (optional): adds NG recall of both.
        peak_strict: ``peak_same_strict`` of :func:`compare_views` (optional, reported only).
        engine_threshold: The engine's own threshold (:func:`engine_threshold`); default
            ``threshold``.

    Returns:
        ``views``, ``decision_agreement`` (over the views that are no tie, see
        :data:`DECISION_TIE`; ``decision_ties`` how many were), ``peak_cell_agreement``,
        ``heatmap_corr_mean``, ``heatmap_corr_p01`` (1st percentile), ``p_ng_abs_diff_max``
        and ``_median``, with labels ``ng_recall_reference`` / ``ng_recall``, and ``passes`` +
        ``failures`` (why not).
    """
    p_ref, p = np.asarray(p_ref, np.float64), np.asarray(p, np.float64)
    t_eng = float(threshold if engine_threshold is None else engine_threshold)
    n = len(p_ref)
    out: dict[str, Any] = {'views': int(n), 'threshold': float(threshold),
                           'engine_threshold': t_eng}
    if n == 0:
        return {**out, 'passes': False, 'failures': ['no validation views']}
    diff = np.abs(p - p_ref)
    decided = np.abs(p_ref - threshold) > DECISION_TIE
    out.update({
        'decision_agreement': float(np.mean(((p_ref >= threshold) == (p >= t_eng))[decided]))
        if decided.any() else 1.0,
        'decision_ties': int(n - decided.sum()),
        'peak_cell_agreement': float(np.mean(peak_same)),
        'heatmap_corr_mean': float(np.mean(corr)),
        'heatmap_corr_p01': float(np.percentile(corr, 1)),
        'p_ng_abs_diff_median': float(np.median(diff)),
        'p_ng_abs_diff_max': float(diff.max()),
    })
    if peak_strict is not None:
        out['peak_cell_agreement_strict'] = float(np.mean(peak_strict))
    failures = [f'{key} {out[key]:.4f} < {goal}' for key, goal in CRITERIA.items()
                if out[key] < goal]
    if labels is not None:
        labels = np.asarray(labels)
        ng = labels == 1
        if ng.any():
            out['ng_views'] = int(ng.sum())
            out['ng_recall_reference'] = float(np.mean(p_ref[ng] >= threshold))
            out['ng_recall'] = float(np.mean(p[ng] >= t_eng))
            if out['ng_recall'] < out['ng_recall_reference']:
                failures.append(f'NG recall {out["ng_recall"]:.4f} < the reference\'s '
                                f'{out["ng_recall_reference"]:.4f}')
    out['passes'] = not failures
    out['failures'] = failures
    return out


def engine_threshold(p_ref: np.ndarray, p: np.ndarray, threshold: float,
                     labels: np.ndarray | None = None) -> float:
    """The engine's own NG threshold: where its decisions best reproduce the reference's at
    ``threshold`` on the validation views.

    A lower-precision engine shifts every NG probability a little; near a low, recall-calibrated
    threshold that flips a few decisions. Among the thresholds that keep the engine's NG recall
    at least the reference's (when labels are known), the one with the highest decision
    agreement wins; ``threshold`` itself when it is among the best, else the lowest of the best
    (the cautious side: more NG, never fewer).
    """
    p_ref, p = np.asarray(p_ref, np.float64), np.asarray(p, np.float64)
    if len(p) == 0:
        return float(threshold)
    candidates = np.unique(np.concatenate([[threshold], p]))
    reference = p_ref >= threshold
    decisions = p[None, :] >= candidates[:, None]
    agree = (decisions == reference[None, :]).mean(axis=1)
    if labels is not None and (np.asarray(labels) == 1).any():
        ng = np.asarray(labels) == 1
        agree[decisions[:, ng].mean(axis=1) < reference[ng].mean()] = -1.0
    best = agree.max()
    at_threshold = agree[np.searchsorted(candidates, threshold)]
    if at_threshold >= best:
        return float(threshold)
    return float(candidates[np.argmax(agree >= best)])


# --------------------------------------------------------------------------------------------
# The export in an artifact


def export_dir(artifact_path: str | Path) -> Path:
    """Where an artifact's engine files live."""
    return Path(artifact_path) / EXPORT_DIR


def read_export(artifact) -> tuple[dict | None, str]:
    """The artifact's engine manifest, checked; ``(manifest, '')`` or ``(None, why not)``.

    Checks: the manifest exists and parses, it was made from this ``model.keras`` (model id),
    for this Grad-CAM layer and input size, and every file it lists has its recorded hash.
    """
    folder = export_dir(artifact.path)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return None, (f'no engine export in {folder} (make one: bolt-inspection export '
                      f'--model {artifact.path} --data DATASET)')
    try:
        manifest = json.loads(path.read_text(encoding='utf-8'))
        if not isinstance(manifest, dict):
            raise ValueError('not a JSON object')
        source = manifest['model_id']
        files = dict(manifest['files'])
        manifest['engines'] = dict(manifest['engines'])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f'{path}: unreadable engine manifest ({type(exc).__name__}: {exc})'
    if manifest.get('format_version') != EXPORT_FORMAT:
        return None, (f'{path}: export format {manifest.get("format_version")!r}, this version '
                      f'reads {EXPORT_FORMAT}; export again')
    if source != artifact.model_id:
        return None, (f'stale engine export: made from model {source}, the artifact holds '
                      f'{artifact.model_id} (export again)')
    meta = artifact.metadata
    if (manifest.get('gradcam_layer') != meta.gradcam_layer
            or list(manifest.get('input_size', [])) != list(meta.input_size)):
        return None, 'stale engine export: Grad-CAM layer or input size differ from metadata'
    for name, digest in files.items():
        file = folder / name
        if not file.is_file():
            return None, f'engine export incomplete: {file} is missing'
        if file_sha256(file) != digest:
            return None, f'engine export corrupt: {file} does not match its hash'
    return manifest, ''


def validation_agreement(artifact, manifest: dict, name: str,
                         threshold: float | None = None, recalibrate: bool = True) -> dict | None:
    """Recompute an engine's agreement at ``threshold`` (default: the artifact's current one);
    ``None`` when the export has no validation data for it.

    An engine that misses the criteria at the reference's threshold is checked once more at its
    own threshold (:func:`engine_threshold`, from the same stored validation data, so the export
    and every load agree on it); the result says which (``engine_threshold``,
    ``recalibrated``).
    """
    path = export_dir(artifact.path) / VALIDATION_FILE
    threshold = float(artifact.metadata.threshold if threshold is None else threshold)
    try:
        data = np.load(path)
        key = name.replace('-', '_')
        args = (data['p_ref'], data[f'p_{key}'], data[f'peak_same_{key}'], data[f'corr_{key}'],
                threshold, data['labels'] if 'labels' in data else None,
                data.get(f'peak_strict_{key}'))
    except (OSError, KeyError, ValueError):
        return None
    return recalibrated_agreement(*args) if recalibrate else agreement(*args)


def recalibrated_agreement(p_ref, p, peak_same, corr, threshold, labels=None,
                           peak_strict=None) -> dict[str, Any]:
    """:func:`agreement` at ``threshold``; when that fails, at the engine's own threshold if
    that passes (``recalibrated`` True, the failures at ``threshold`` kept in
    ``failures_at_threshold``)."""
    labels = labels if labels is not None and (np.asarray(labels) >= 0).any() else None
    check = agreement(p_ref, p, peak_same, corr, threshold, labels, peak_strict)
    check['recalibrated'] = False
    if check['passes']:
        return check
    own = engine_threshold(p_ref, p, threshold, labels)
    if own == threshold:
        return check
    again = agreement(p_ref, p, peak_same, corr, threshold, labels, peak_strict, own)
    if not again['passes']:
        return check
    return {**again, 'recalibrated': True, 'failures_at_threshold': check['failures']}


@dataclass
class EngineSelection:
    """What :func:`load_engine` chose and why.

    Attributes:
        engine: The engine to run.
        requested: What was asked for (``'auto'`` or an engine name).
        warnings: One line per reason the requested / preferred engine is not running.
        checks: Engine -> agreement at the current threshold (from the export's validation).
        threshold: The NG threshold to run the chosen engine at: the reference's, or the
            engine's own when it was recalibrated (:func:`recalibrated_agreement`).
        note: One line saying so when the engine runs at its own threshold.
    """

    engine: Engine
    requested: str
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    note: str = ''


def build_split_engine(artifact, manifest: dict, name: str, reference: ReferenceEngine,
                       tail: GradCamTail | None = None,
                       threads: int | None = None) -> SplitEngine:
    """Compile one split engine from the artifact's export (no checks; may raise)."""
    precision, default_ir = SPLIT_ENGINES[name]
    entry = manifest['engines'][name]
    xml = export_dir(artifact.path) / entry.get('ir', default_ir)
    backbone = OpenVinoBackbone(xml, entry.get('precision_hint', precision), threads)
    info = {'runtime': f'openvino {_CORE.get("version", "?")}',
            'precision': {'openvino-int8': 'int8', 'openvino-bf16': 'bf16'}.get(name, 'f32'),
            'ir': str(Path(EXPORT_DIR) / entry.get('ir', default_ir)),
            'threads': backbone.threads, 'head': 'tensorflow'}
    return SplitEngine(name, backbone, tail or GradCamTail(reference.gradcam), info)


def probe_check(engine: Engine, reference: Engine, views: np.ndarray, threshold: float,
                ng_index: int) -> str:
    """'' when ``engine`` matches the reference on ``views``; else why not (one line)."""
    batch = np.ascontiguousarray(views, dtype=np.float32)
    ref_probs, ref_heat = reference(batch)
    probs, heat = engine(batch)
    cmp = compare_views(ref_probs, ref_heat, probs, heat, ng_index, reference.grid_hw)
    decisions = (cmp['p_ref'] >= threshold) == (cmp['p'] >= threshold)
    diff = float(np.max(np.abs(cmp['p'] - cmp['p_ref'])))
    corr = float(np.min(cmp['corr']))
    if not decisions.all() or diff > PROBE_MAX_P_DIFF or corr < PROBE_MIN_CORR:
        return (f'{engine.name} disagrees with the reference on the probe views (decisions '
                f'{int(decisions.sum())}/{len(decisions)}, max |dp| {diff:.3f}, min heatmap '
                f'corr {corr:.3f})')
    return ''


def load_engine(artifact, requested: str = 'auto', *, threshold: float | None = None,
                threads: int | None = None, probe: bool = True) -> EngineSelection:
    """Choose and build the engine of an artifact; falls back to the reference, never raises
    for a missing or bad export.

    Args:
        artifact: A loaded :class:`~bolt_inspection.core.model.artifact.ModelArtifact`.
        requested: ``'auto'`` or one of :data:`ENGINES`.
        threshold: The NG threshold the decisions are taken at (default: the artifact's).
        threads: OpenVINO inference threads (default ``BOLT_OV_THREADS`` / ``min(4, cores)``).
        probe: Check the engine against the reference on the export's probe views.

    Raises:
        ConfigError: ``requested`` is not an engine choice.
    """
    check_engine_name(requested)
    meta = artifact.metadata
    threshold = float(meta.threshold if threshold is None else threshold)
    reference = ReferenceEngine(artifact.model, meta.gradcam_layer, meta.ng_index)
    selection = EngineSelection(reference, requested, threshold=threshold)
    if requested == 'tf':
        return selection
    manifest, problem = read_export(artifact)
    if manifest is None:
        selection.warnings.append(f'{problem}; running the TensorFlow reference')
        return selection
    if requested == 'auto':
        candidates = [n for n in AUTO_ORDER if n in manifest['engines']]
        if 'openvino-bf16' in candidates and 'BF16' not in cpu_capabilities():
            candidates.remove('openvino-bf16')   # it would run as f32: slower than TF here
    else:
        candidates = [requested]
    reasons = []
    tail = None
    for name in candidates:
        if name not in manifest['engines']:
            reasons.append(f'{name} is not in the export')
            continue
        check = validation_agreement(artifact, manifest, name, threshold)
        selection.checks[name] = check
        if check is None:
            reasons.append(f'{name}: no validation data in the export')
            continue
        if not check['passes']:
            reasons.append(f'{name} failed validation at threshold {threshold:.3f}: '
                           + '; '.join(check['failures']))
            continue
        try:
            tail = tail or GradCamTail(reference.gradcam)
            engine = build_split_engine(artifact, manifest, name, reference, tail, threads)
            if probe:
                why = _probe(artifact, engine, reference, threshold)
                if why:
                    reasons.append(why)
                    continue
        except Exception as exc:  # noqa: BLE001 - no openvino, bad IR, plugin error: fall back
            text = ' '.join(str(exc).split())[:160]
            reasons.append(f'{name} cannot run: {type(exc).__name__}: {text}')
            continue
        selection.engine = engine
        if check.get('recalibrated'):
            selection.threshold = check['engine_threshold']
            selection.note = (f'{name} runs at its own NG threshold '
                              f"{selection.threshold:.4f} (the reference's {threshold:.4f}: "
                              f'{"; ".join(check["failures_at_threshold"])}); there it agrees '
                              f'with the reference on {check["decision_agreement"]:.4f} of '
                              f'the validation views'
                              + (f', NG recall {check["ng_recall"]:.4f} (reference '
                                 f'{check["ng_recall_reference"]:.4f})'
                                 if 'ng_recall' in check else ''))
        break
    if selection.engine is reference:
        what = 'no engine of the export' if requested == 'auto' else f'engine {requested}'
        selection.warnings.append(f'{what} usable ({"; ".join(reasons) or "none exported"}); '
                                  'running the TensorFlow reference')
    return selection


def _probe(artifact, engine: Engine, reference: Engine, threshold: float) -> str:
    path = export_dir(artifact.path) / PROBE_FILE
    try:
        views = np.load(path)['views']
    except (OSError, KeyError, ValueError):
        return f'{engine.name}: the export has no probe views ({path})'
    return probe_check(engine, reference, views, threshold, artifact.metadata.ng_index)
