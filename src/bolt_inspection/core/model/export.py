"""Export a model artifact's backbone to OpenVINO (f32 and NNCF INT8) and validate the engines.

:func:`export_artifact` writes ``<model>/engines/``:

* ``backbone.xml/.bin`` - the network from the input up to the Grad-CAM layer, converted by
  ``openvino.convert_model`` from the Keras model, f32 weights (the ``openvino-f32`` and
  ``openvino-bf16`` engines; bf16 is a runtime precision hint);
* ``backbone_int8.xml/.bin`` - the same, quantised by NNCF post-training quantisation
  (``nncf.quantize``) on calibration views: ROI crops of training views at the model input, as
  the Inspector feeds them;
* ``validation.npz`` - per held-out view: the reference's and each engine's NG probability,
  whether the Grad-CAM peak fell in the same grid cell, the heatmap correlation, the label;
* ``probe.npz`` - four held-out views far from the threshold, on which
  :func:`~bolt_inspection.core.model.engine.load_engine` checks the engine at every load;
* ``manifest.json`` - the model id it was made from, each file's SHA-256, the calibration
  set's SHA-256 and size, library versions, each engine's agreement with the reference and the
  export machine's timings (informative).

The directory is written beside the old one and swapped in at the end, so a failed export
leaves the previous one (or none) in place. The export never changes ``model.keras`` or
``metadata.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bolt_inspection.core.errors import DatasetError, ModelError
from bolt_inspection.core.model import engine as eng

#: What an export makes by default.
DEFAULT_ENGINES = ('openvino-f32', 'openvino-bf16', 'openvino-int8')
#: NNCF's default calibration subset size.
CALIBRATION_VIEWS = 300


def views_sha256(views: np.ndarray) -> str:
    """SHA-256 of a uint8 view array (shape and bytes): the calibration set's identity."""
    arr = np.ascontiguousarray(views)
    digest = hashlib.sha256(f'{arr.dtype}{arr.shape}'.encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def load_crops(records, metadata, progress: bool = True, desc: str = 'views') -> np.ndarray:
    """ROI crops of dataset views at the model input, RGB uint8 ``(N, h, w, 3)``.

    The same crop and resize as :meth:`Inspector._crop` (the artifact's ROI boxes, scaled to the
    frame size when the dataset's frames differ), so calibration sees what the line sees.

    Raises:
        DatasetError: An image cannot be read or its camera has no ROI box.
    """
    import cv2
    from tqdm import tqdm

    from bolt_inspection.core.errors import ImageError
    from bolt_inspection.core.model.artifact import model_boxes
    from bolt_inspection.core.vision.dataset import read_image
    from bolt_inspection.core.vision.roi import crop_roi, resize_bgr

    width, height = metadata.input_size
    out = np.empty((len(records), height, width, 3), np.uint8)
    for i, record in enumerate(tqdm(records, desc=desc, unit='view', disable=not progress,
                                    leave=False)):
        try:
            image = read_image(record.image_path)
            boxes = model_boxes(metadata, (image.shape[1], image.shape[0]))
            box = None
            if boxes is not None:
                if record.cam not in boxes:
                    raise DatasetError(f'{record.image_path}: camera {record.cam} has no ROI '
                                       f'box in the model (has {sorted(boxes)})')
                box = boxes[record.cam]
            crop = resize_bgr(crop_roi(image, box, what=str(record.image_path)), (width, height))
        except ImageError as exc:
            raise DatasetError(str(exc)) from None
        out[i] = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    return out


def _run(engine, views: np.ndarray, batch_size: int, progress: bool, desc: str):
    from tqdm import tqdm

    probs, heat = [], []
    for start in tqdm(range(0, len(views), batch_size), desc=desc, unit='batch',
                      disable=not progress, leave=False):
        p, h = engine(views[start:start + batch_size].astype(np.float32))
        probs.append(p)
        heat.append(h)
    return np.concatenate(probs), np.concatenate(heat)


def _timings(engines: dict, views: np.ndarray, rounds: int = 5) -> dict[str, float]:
    """Median ms of one 4-view batch per engine, interleaved (informative: this machine)."""
    batch = np.ascontiguousarray(views[:4], dtype=np.float32)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        engine(batch)
    for _ in range(rounds):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            engine(batch)
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: float(np.median(v)) for name, v in times.items()}


def _quantize(ov_model, views: np.ndarray, progress: bool) -> tuple[Any, list[str]]:
    """NNCF post-training INT8 quantisation; returns the model and the convolutions kept f32.

    The first convolution (3 input channels of raw pixels) and the last one (whose output is
    the activation Grad-CAM explains) stay in f32: they are a small share of the work and
    carry most of INT8's error into the decision and the heatmap.
    """
    import nncf

    if not progress:
        import logging
        nncf.set_log_level(logging.ERROR)
    convs = [op.get_friendly_name() for op in ov_model.get_ordered_ops()
             if op.get_type_name() == 'Convolution']
    keep = [convs[0], convs[-1]] if len(convs) > 2 else []
    data = nncf.Dataset([views[i:i + 1].astype(np.float32) for i in range(len(views))])
    quantized = nncf.quantize(ov_model, data, subset_size=len(views),
                              ignored_scope=nncf.IgnoredScope(names=keep) if keep else None)
    return quantized, keep


def _pick_probe(cmp: dict[str, dict], threshold: float, n: int = 4) -> np.ndarray:
    """Indices of views far from the threshold on which every engine agrees closely."""
    p_ref = next(iter(cmp.values()))['p_ref']
    good = np.ones(len(p_ref), bool)
    for c in cmp.values():
        good &= ((c['p_ref'] >= threshold) == (c['p'] >= threshold)) & (c['corr'] >= 0.99)
        good &= np.abs(c['p'] - c['p_ref']) <= eng.PROBE_MAX_P_DIFF / 2
    margin = np.abs(p_ref - threshold)
    order = [i for i in np.argsort(-margin) if good[i]] or list(np.argsort(-margin))
    ng = [i for i in order if p_ref[i] >= threshold][:n // 2]
    ok = [i for i in order if p_ref[i] < threshold][:n - len(ng)]
    picked = ng + ok
    picked += [i for i in order if i not in picked][:n - len(picked)]
    return np.asarray(sorted(picked), int)


def export_artifact(artifact_dir: str | Path, calibration_views: np.ndarray,
                    validation_views: np.ndarray | None = None,
                    validation_labels: Sequence[int] | None = None, *,
                    engines: Sequence[str] = DEFAULT_ENGINES,
                    calibration_source: str = '', validation_source: str = '',
                    max_calibration: int = CALIBRATION_VIEWS, batch_size: int = 8,
                    seed: int = 0, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export and validate the fast engines of a model artifact.

    Args:
        artifact_dir: The model directory (``model.keras`` + ``metadata.json``).
        calibration_views: RGB uint8 ``(N, h, w, 3)`` crops at the model input, from the
            training views (at most ``max_calibration`` are drawn, seeded).
        validation_views: Held-out crops the engines are compared on against the reference;
            ``None`` = the calibration views (said so in the manifest).
        validation_labels: 1 = NG, 0 = OK per validation view (adds NG recall to the check).
        engines: Which of :data:`bolt_inspection.core.model.engine.SPLIT_ENGINES` to export.
        calibration_source, validation_source: Where the views came from (for the manifest).
        max_calibration: Calibration views used (NNCF's default subset is 300).
        batch_size: Views per pass during validation.
        seed: Draws the calibration subset.
        progress: Progress bars.
        log: Where progress lines go (default: stderr when ``progress``).

    Returns:
        The manifest (also written to ``<artifact>/engines/manifest.json``).

    Raises:
        ModelError: The artifact cannot be loaded, or its network cannot be split at the
            Grad-CAM layer, or OpenVINO / NNCF are not installed.
        DatasetError: No or malformed calibration views.
    """
    from bolt_inspection.core.model.artifact import load_artifact

    say = log or ((lambda line: print(line, file=sys.stderr, flush=True)) if progress
                  else (lambda line: None))
    unknown = [name for name in engines if name not in eng.SPLIT_ENGINES]
    if unknown or not engines:
        raise ModelError(f'cannot export {unknown or "no engine"}: choose from '
                         f'{", ".join(eng.SPLIT_ENGINES)}')
    artifact = load_artifact(artifact_dir)
    meta = artifact.metadata
    width, height = meta.input_size
    calibration_views = _check_views(calibration_views, (height, width), 'calibration views')
    if validation_views is None:
        validation_views, validation_labels = calibration_views, None
        validation_source = 'the calibration views (no held-out views given)'
    validation_views = _check_views(validation_views, (height, width), 'validation views')
    labels = (np.full(len(validation_views), -1, np.int64) if validation_labels is None
              else np.asarray(validation_labels, np.int64))
    if len(labels) != len(validation_views):
        raise DatasetError(f'{len(labels)} validation labels for {len(validation_views)} views')
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise ModelError(f'engine export needs openvino and nncf ({exc}); '
                         'pip install -r requirements.txt') from None
    from bolt_inspection.core.model.keras_backend import keras, tf, versions

    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    if len(calibration_views) > max_calibration:
        pick = np.sort(rng.choice(len(calibration_views), max_calibration, replace=False))
        calibration_views = calibration_views[pick]
    reference = eng.ReferenceEngine(artifact.model, meta.gradcam_layer, meta.ng_index)
    tail = eng.GradCamTail(reference.gradcam)   # fails early for a model that cannot split
    k, t = keras(), tf()
    backbone = k.Model(artifact.model.input,
                       artifact.model.get_layer(meta.gradcam_layer).output)
    forward = t.function(lambda x: backbone(x, training=False),
                         input_signature=[t.TensorSpec([None, height, width, 3], t.float32)])
    say(f'export: converting {meta.gradcam_layer} backbone of {artifact.model_id} to OpenVINO')
    final = eng.export_dir(artifact.path)
    work = final.with_name(f'{eng.EXPORT_DIR}.tmp-{os.getpid()}')
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        ov_model = ov.convert_model(forward)
        ov.save_model(ov_model, str(work / 'backbone.xml'), compress_to_fp16=False)
        timings: dict[str, float] = {}
        if 'openvino-int8' in engines:
            say(f'export: INT8 post-training quantisation on {len(calibration_views)} '
                'calibration views (NNCF)')
            t0 = time.perf_counter()
            quantized, kept_f32 = _quantize(ov_model, calibration_views, progress)
            timings['quantize_s'] = time.perf_counter() - t0
            ov.save_model(quantized, str(work / 'backbone_int8.xml'), compress_to_fp16=False)
        manifest: dict[str, Any] = {
            'format_version': eng.EXPORT_FORMAT, 'model_id': artifact.model_id,
            'gradcam_layer': meta.gradcam_layer, 'input_size': list(meta.input_size),
            'created': time.strftime('%Y-%m-%d %H:%M:%S %z'),
            'versions': {**versions(), 'openvino': ov.get_version(),
                         'nncf': nncf.__version__},
            'calibration': {'views': int(len(calibration_views)),
                            'sha256': views_sha256(calibration_views),
                            'source': calibration_source or 'given views', 'seed': seed},
            'criteria': dict(eng.CRITERIA), 'engines': {},
        }
        manifest['files'] = {}   # filled below; read_export checks them
        say(f'export: validating {", ".join(engines)} against the TensorFlow reference on '
            f'{len(validation_views)} views')
        ref_probs, ref_heat = _run(reference, validation_views, batch_size, progress,
                                   'reference')
        built = {}
        arrays: dict[str, np.ndarray] = {'labels': labels}
        cmp = {}
        for name in engines:
            precision, ir = eng.SPLIT_ENGINES[name]
            built[name] = eng.SplitEngine(name, eng.OpenVinoBackbone(work / ir, precision),
                                          tail)
            probs, heat = _run(built[name], validation_views, batch_size, progress, name)
            cmp[name] = eng.compare_views(ref_probs, ref_heat, probs, heat, meta.ng_index,
                                          reference.grid_hw)
            key = name.replace('-', '_')
            arrays['p_ref'] = cmp[name]['p_ref']
            arrays[f'p_{key}'] = cmp[name]['p']
            arrays[f'peak_same_{key}'] = cmp[name]['peak_same']
            arrays[f'corr_{key}'] = cmp[name]['corr']
            arrays[f'peak_strict_{key}'] = cmp[name]['peak_same_strict']
            # At the model's threshold, or (recalibrated) at the engine's own: the same rule
            # load_engine applies to the stored arrays, so the two agree.
            check = eng.recalibrated_agreement(
                cmp[name]['p_ref'], cmp[name]['p'], cmp[name]['peak_same'], cmp[name]['corr'],
                meta.threshold, labels, cmp[name]['peak_same_strict'])
            manifest['engines'][name] = {'ir': ir, 'precision_hint': precision,
                                         'threshold': check['engine_threshold'],
                                         'validation': check}
            if name == 'openvino-int8':
                manifest['engines'][name]['kept_f32'] = kept_f32
            own = (f' at its own threshold {check["engine_threshold"]:.4f} (the model\'s '
                   f'{meta.threshold:.4f}: {"; ".join(check["failures_at_threshold"])})'
                   if check['recalibrated'] else '')
            say(f'export: {name}: decision {check["decision_agreement"]:.4f}, peak cell '
                f'{check["peak_cell_agreement"]:.4f}, heatmap corr '
                f'{check["heatmap_corr_mean"]:.4f}, max |dp| {check["p_ng_abs_diff_max"]:.4f}'
                f'{own} -> '
                f'{"passes" if check["passes"] else "FAILS: " + "; ".join(check["failures"])}')
        np.savez_compressed(work / eng.VALIDATION_FILE, **arrays)
        probe = _pick_probe(cmp, meta.threshold)
        np.savez_compressed(work / eng.PROBE_FILE, views=validation_views[probe])
        timings.update({f'{name}_batch4_ms': ms for name, ms in _timings(
            {'tf': reference, **built}, validation_views).items()})
        manifest['validation'] = {'views': int(len(validation_views)),
                                  'ng_views': int((labels == 1).sum()),
                                  'source': validation_source or 'given views',
                                  'threshold': float(meta.threshold),
                                  'probe_views': probe.tolist()}
        manifest['timings'] = {**timings, 'load_avg': list(os.getloadavg()),
                               'export_s': time.perf_counter() - t_start}
        manifest['files'] = {f.name: eng.file_sha256(f) for f in sorted(work.iterdir())}
        (work / eng.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + '\n')
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = final.with_name(f'{eng.EXPORT_DIR}.old-{os.getpid()}')
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    say(f'export: {final} ({time.perf_counter() - t_start:.0f} s); batch of 4: '
        + ', '.join(f'{k.removesuffix("_batch4_ms")} {v:.0f} ms' for k, v in timings.items()
                    if k.endswith('_batch4_ms')))
    return manifest


def _check_views(views, hw: tuple[int, int], what: str) -> np.ndarray:
    arr = np.asarray(views)
    if arr.ndim != 4 or arr.shape[1:] != (*hw, 3) or len(arr) == 0:
        raise DatasetError(f'{what}: expected RGB crops (N, {hw[0]}, {hw[1]}, 3), got shape '
                           f'{arr.shape}')
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr


def export_after_training(artifact_dir: str | Path, train_views: np.ndarray,
                          val_views: np.ndarray | None = None,
                          val_labels: Sequence[int] | None = None, *,
                          engines: Sequence[str] = DEFAULT_ENGINES, progress: bool = True,
                          log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The end-of-training hook: export, and on any failure say why and go on.

    A model without an export still runs (the TensorFlow reference, with a warning), so a
    failed export must not lose the training that came before it.

    Returns:
        The manifest, or ``None`` when the export failed (the reason went to ``log``).
    """
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        return export_artifact(artifact_dir, train_views, val_views, val_labels,
                               engines=engines, calibration_source='training views',
                               validation_source='validation views', log=say,
                               progress=progress)
    except Exception as exc:  # noqa: BLE001 - training's artifact is saved; say why, go on
        text = ' '.join(str(exc).split())[:200]
        say(f'warning: engine export failed ({type(exc).__name__}: {text}); the model runs on '
            f'the TensorFlow reference until `bolt-inspection export --model {artifact_dir} '
            '--data DATASET` succeeds')
        return None


def dataset_views(artifact, dataset, *, max_calibration: int = CALIBRATION_VIEWS,
                  max_validation: int = 400, seed: int = 0, progress: bool = True):
    """Calibration and validation crops for an existing artifact from a labelled dataset.

    On the model's own training dataset (same fingerprint) calibration comes from its training
    bolts and validation from its validation bolts; on another dataset the bolts are split in
    half. Both are drawn with ``seed``.

    Returns:
        ``(calibration_views, validation_views, validation_labels, sources)``.
    """
    from bolt_inspection.core.vision.dataset import split_by_bolt

    meta = artifact.metadata
    records = list(dataset.records)
    same = bool(meta.dataset_fingerprint) and meta.dataset_fingerprint == dataset.fingerprint()
    if same:
        config = (meta.training or {}).get('config', {})
        train, val = split_by_bolt(records, float(config.get('val_fraction', 0.2)),
                                   int(config.get('seed', 0)))
        sources = ('training views of the training dataset', 'its validation views')
    else:
        train, val = split_by_bolt(records, 0.5, seed)
        sources = (f'half of the bolts of {dataset.root}', 'the other half')
    if not train or not val:
        raise DatasetError(f'{dataset.root}: too few bolts to draw calibration and validation '
                           'views')
    rng = np.random.default_rng(seed)

    def draw(items, n):
        if len(items) <= n:
            return list(items)
        return [items[i] for i in np.sort(rng.choice(len(items), n, replace=False))]

    train, val = draw(train, max_calibration), draw(val, max_validation)
    labels = np.array([1 if r.label == 'NG' else 0 for r in val], np.int64)
    return (load_crops(train, meta, progress, 'calibration views'),
            load_crops(val, meta, progress, 'validation views'), labels,
            (f'{sources[0]} ({dataset.root})', sources[1]))
