"""The drift evaluation: a model on held-out bolts after camera drift, family by family.

A line's images change over the years (lamps, dust, a bumped camera, JPEG streams); the model
was measured only on images rendered like its training set. :func:`evaluate_drift` takes a
held-out labelled dataset, transforms every frame with
:func:`bolt_inspection.core.vision.drift.apply_drift` at graded severities per drift family
(exposure,
white balance, defocus, noise, pose, JPEG; severity 1 = the moderate drift a line sees between
two maintenance visits), runs the model with Grad-CAM at its stored (calibrated) threshold and
reports per family and severity: bolt NG recall (the safety metric), bolt and view F1 NG, view
NG recall and where Grad-CAM peaks (peak in the defect mask, warped with the frame for pose).

Every view draws its drift direction (darker or brighter, warmer or cooler, which way the camera
turned) from a generator seeded by ``(seed, view index)``, so the severities of a family differ
only in strength and two models see the same drifted images. Pure core: no ROS; TensorFlow
only through the artifact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bolt_inspection.core.vision.drift import DRIFT_FAMILIES, apply_drift

#: Severities evaluated by default: mild, moderate (the issue's targets), severe.
SEVERITIES = (0.5, 1.0, 2.0)
#: Targets of issue 21 on held-out bolts: bolt NG recall clean and under moderate drift, and the
#: largest bolt F1 NG loss against clean.
TARGETS = {'clean_recall': 0.995, 'drift_recall': 0.99, 'drift_severity': 1.0, 'f1_loss': 0.02}


def _first_bolts(records: list, bolts: int | None) -> list:
    if not bolts:
        return records
    keep = sorted({r.bolt_id for r in records}, key=lambda b: (len(str(b)), str(b)))[:bolts]
    keep_set = set(keep)
    return [r for r in records if r.bolt_id in keep_set]


def _warp_mask(mask: np.ndarray, family: str, severity: float, seed) -> np.ndarray:
    """The defect mask moved with its frame (pose drift only; the rest leave pixels in place)."""
    if family != 'pose' or severity == 0:
        return mask
    moved = apply_drift(np.repeat(mask[:, :, None], 3, axis=2), family, severity,
                        np.random.default_rng(seed))
    return (moved[:, :, 0] > 127).astype(np.uint8) * 255


def condition_row(family: str, severity: float, metrics: dict, seconds: float) -> dict:
    """One line of the drift table from the output of
    :func:`~bolt_inspection.core.study.evaluate.compute_metrics` plus its localisation block."""
    loc = metrics.get('localisation') or {}
    bolt, view = metrics['bolt'], metrics['view']
    ng_bolts = bolt['NG']['support']
    missed = bolt['confusion'][0][1]
    return {
        'family': family, 'severity': float(severity),
        'bolt_ng_recall': bolt['NG']['recall'], 'bolt_f1_ng': bolt['NG']['f1'],
        'bolt_ok_recall': bolt['OK']['recall'], 'ng_bolts': ng_bolts, 'ng_bolts_missed': missed,
        'ok_bolts_rejected': bolt['confusion'][1][0],
        'view_ng_recall': view['NG']['recall'], 'view_f1_ng': view['NG']['f1'],
        'view_auc': view['roc_auc'],
        'peak_in_mask': loc.get('peak_in_mask'), 'ng_views_scored': loc.get('ng_views_scored'),
        'ng_views_located': loc.get('ng_views_located'), 'seconds': seconds,
    }


def evaluate_drift(model_path, data_path, *, families: Sequence[str] = DRIFT_FAMILIES,
                   severities: Sequence[float] = SEVERITIES, split: str = 'all',
                   bolts: int | None = None, batch_size: int = 16, tolerance_px: int = 4,
                   seed: int = 0, progress: bool = True, log=None) -> dict:
    """Evaluate a model on a held-out set, clean and after each drift family and severity.

    Args:
        model_path: Model artifact directory (its stored threshold is used).
        data_path: Labelled dataset with defect masks (``bolt-inspection synth`` output), bolts
            the model never saw (another seed).
        families: Drift families (:data:`bolt_inspection.core.vision.drift.DRIFT_FAMILIES`).
        severities: Severities > 0 (1 = moderate).
        split: Which views (:func:`bolt_inspection.core.study.evaluate.select_records`).
        bolts: Only the first ``bolts`` bolts (by id); None = all.
        batch_size: Views per forward pass.
        tolerance_px: Mask dilation of the peak-in-mask test (model-input pixels).
        seed: Seed of the per-view drift directions.
        progress: Progress bars.
        log: Where a line per condition goes.

    Returns:
        ``{'rows': [...], 'targets': {...}, 'model', 'data', 'threshold', 'counts', ...}``:
        one row per condition (the clean one first, family ``'clean'``), see
        :func:`condition_row`, and the verdict on :data:`TARGETS` (:func:`check_targets`).

    Raises:
        ModelError: The artifact cannot be loaded.
        DatasetError: The dataset is missing or empty.
        ValueError: An unknown family or a severity <= 0.
    """
    from tqdm import tqdm

    from bolt_inspection.core.model.artifact import model_boxes
    from bolt_inspection.core.model.gradcam import GradCAM
    from bolt_inspection.core.study.evaluate import (
        LocalisationTally,
        ViewPrediction,
        _read_mask,
        compute_metrics,
        load_model_and_views,
        run_gradcam,
    )
    from bolt_inspection.core.vision.dataset import read_image

    bad = [f for f in families if f not in DRIFT_FAMILIES]
    if bad:
        raise ValueError(f'unknown drift famil{"ies" if len(bad) > 1 else "y"} '
                         f'{", ".join(bad)} (one of {", ".join(DRIFT_FAMILIES)})')
    if any(not (s > 0 and math.isfinite(s)) for s in severities):
        raise ValueError(f'severities must be finite and > 0, got {list(severities)}')
    say = log or (lambda line: None)
    artifact, dataset, records, split_used = load_model_and_views(model_path, data_path, split)
    meta = artifact.metadata
    records = _first_bolts(records, bolts)
    explainer = GradCAM(artifact.model, layer_name=meta.gradcam_layer,
                        class_index=meta.ng_index)
    input_size = tuple(meta.input_size)
    frames = [read_image(r.image_path) for r in tqdm(records, desc='reading views',
                                                       unit='view', disable=not progress,
                                                       leave=False)]
    masks = [_read_mask(r) if r.label == 'NG' else None for r in records]
    conditions = [('clean', 0.0)] + [(f, float(s)) for f in families for s in severities]
    rows = []
    for family, severity in conditions:
        start = time.perf_counter()
        tally = LocalisationTally(tolerance_px=tolerance_px, grid_wh=explainer.grid_hw[::-1])
        predictions = []
        bar = tqdm(total=len(records), desc=f'{family} {severity:g}', unit='view',
                   disable=not progress, leave=False)
        for lo in range(0, len(records), batch_size):
            idx = range(lo, min(lo + batch_size, len(records)))
            images = [frames[i] if family == 'clean' else
                      apply_drift(frames[i], family, severity, np.random.default_rng((seed, i)))
                      for i in idx]
            p_ng, heatmaps, regions = run_gradcam(artifact, images, [records[i].cam for i in idx],
                                                  batch_size=batch_size, explainer=explainer)
            for i, p, heat, region in zip(idx, p_ng, heatmaps, regions, strict=True):
                rec = records[i]
                frame = (frames[i].shape[1], frames[i].shape[0])
                boxes = model_boxes(meta, frame)
                roi_box = None if not boxes or rec.cam not in boxes else tuple(boxes[rec.cam])
                mask = masks[i]
                if mask is not None and family != 'clean':
                    mask = _warp_mask(mask, family, severity, (seed, i))
                check = tally.add(heat, label=rec.label, region=region, roi_box=roi_box,
                                  thread_box=None, mask=mask, input_size=input_size,
                                  defect=rec.defect)
                predictions.append(ViewPrediction(str(rec.bolt_id), int(rec.cam), rec.label,
                                                  rec.bolt_label, float(p), rec.defect, check))
            bar.update(len(idx))
        bar.close()
        metrics = compute_metrics(predictions, meta.threshold)
        metrics['localisation'] = tally.summary()
        row = condition_row(family, severity, metrics, time.perf_counter() - start)
        rows.append(row)
        say(format_row(row))
    result = {
        'model': str(model_path), 'model_id': artifact.model_id, 'data': str(data_path),
        'dataset_fingerprint': dataset.fingerprint(), 'split': split_used,
        'threshold': float(meta.threshold),
        'threshold_recall_val': (meta.metrics or {}).get('threshold_recall_val'),
        'counts': {'views': len(records), 'bolts': len({r.bolt_id for r in records}),
                   'ng_bolts': rows[0]['ng_bolts']},
        'families': list(families), 'severities': [float(s) for s in severities],
        'seed': seed, 'tolerance_px': tolerance_px, 'rows': rows,
    }
    result['targets'] = check_targets(rows)
    return result


def check_targets(rows: Sequence[dict], targets: dict | None = None) -> dict:
    """Issue 21's targets on these rows: bolt NG recall clean >= 0.995; at the moderate
    severity of every family >= 0.99 and bolt F1 NG at most 0.02 below clean.

    Returns:
        ``{'clean_recall': {...'met'}, 'drift_recall': {...}, 'f1_loss': {...}, 'met': bool}``
        with the measured values (worst family named); a family not evaluated at the moderate
        severity makes the drift targets ``None`` (not measured).
    """
    t = {**TARGETS, **(targets or {})}
    clean = next(r for r in rows if r['family'] == 'clean')
    moderate = [r for r in rows if r['family'] != 'clean' and
                math.isclose(r['severity'], t['drift_severity'])]
    out: dict = {'clean_recall': {'target': t['clean_recall'], 'value': clean['bolt_ng_recall'],
                                  'met': clean['bolt_ng_recall'] >= t['clean_recall']}}
    if moderate:
        worst = min(moderate, key=lambda r: r['bolt_ng_recall'])
        loss = max(moderate, key=lambda r: clean['bolt_f1_ng'] - r['bolt_f1_ng'])
        out['drift_recall'] = {'target': t['drift_recall'], 'severity': t['drift_severity'],
                               'value': worst['bolt_ng_recall'], 'worst': worst['family'],
                               'met': worst['bolt_ng_recall'] >= t['drift_recall']}
        f1_loss = clean['bolt_f1_ng'] - loss['bolt_f1_ng']
        out['f1_loss'] = {'target': t['f1_loss'], 'severity': t['drift_severity'],
                          'value': f1_loss, 'worst': loss['family'],
                          'met': f1_loss <= t['f1_loss'] + 1e-12}
    else:
        out['drift_recall'] = out['f1_loss'] = None
    out['met'] = all(v is not None and v['met'] for v in
                     (out['clean_recall'], out['drift_recall'], out['f1_loss']))
    return out


TABLE_HEADER = ('| drift | severity | bolt NG recall (missed / NG bolts) | bolt F1 NG | '
                'OK bolts rejected | view NG recall | view F1 NG | peak in mask |\n'
                '|---|---:|---:|---:|---:|---:|---:|---:|')


def format_row(row: dict) -> str:
    """One markdown table row (see :data:`TABLE_HEADER`)."""
    peak = ('n/a' if row['peak_in_mask'] is None else
            f'{row["peak_in_mask"]:.1%} ({row["ng_views_located"]}/{row["ng_views_scored"]})')
    return (f'| {row["family"]} | {row["severity"]:g} | {row["bolt_ng_recall"]:.3f} '
            f'({row["ng_bolts_missed"]}/{row["ng_bolts"]}) | {row["bolt_f1_ng"]:.3f} | '
            f'{row["ok_bolts_rejected"]} | {row["view_ng_recall"]:.3f} | '
            f'{row["view_f1_ng"]:.3f} | {peak} |')


def format_targets(targets: dict) -> list[str]:
    """The targets' verdict in words, one line each."""
    def word(met):
        return 'MET' if met else 'NOT MET'

    c = targets['clean_recall']
    lines = [f'target bolt NG recall >= {c["target"]} clean: {word(c["met"])} '
             f'({c["value"]:.3f})']
    d, f = targets['drift_recall'], targets['f1_loss']
    if d is None:
        lines.append('drift targets: not measured (no family at severity '
                     f'{TARGETS["drift_severity"]:g})')
        return lines
    lines.append(f'target bolt NG recall >= {d["target"]} under drift of severity '
                 f'{d["severity"]:g}, every family: {word(d["met"])} (worst {d["worst"]} '
                 f'{d["value"]:.3f})')
    lines.append(f'target bolt F1 NG loss <= {f["target"]} against clean at severity '
                 f'{f["severity"]:g}: {word(f["met"])} (worst {f["worst"]} {f["value"]:+.3f})')
    return lines


def plot_drift(result: dict, out_png: str | Path, *, title: str = '',
               others: Sequence[tuple[str, dict]] = ()) -> Path:
    """Bolt NG recall, bolt F1 NG, view NG recall and Grad-CAM peak-in-mask against severity,
    one line per family (severity 0 = clean), with the targets dashed.

    Args:
        result: :func:`evaluate_drift`'s output.
        out_png: The PNG to write.
        title: Figure title.
        others: ``(label, result)`` of other models to draw beside it (dotted, same colours).
    """
    from bolt_inspection.core.study.figures import _pyplot

    plt = _pyplot()
    panels = (('bolt_ng_recall', 'bolt NG recall'), ('bolt_f1_ng', 'bolt F1 NG'),
              ('view_ng_recall', 'view NG recall'), ('peak_in_mask', 'Grad-CAM peak in mask'))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    models = [('', result, '-')] + [(label, other, ':') for label, other in others]
    for ax, (key, name) in zip(axes, panels, strict=True):
        for label, res, style in models:
            clean = next(r for r in res['rows'] if r['family'] == 'clean')
            for n, family in enumerate(res['families']):
                pts = [(0.0, clean[key])] + [(r['severity'], r[key]) for r in res['rows']
                                            if r['family'] == family]
                pts = [(s, v) for s, v in pts if v is not None]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                legend = family if style == '-' else (
                    f'{label} (dotted, same colours)' if n == 0 else None)
                ax.plot(xs, ys, style, marker='o', ms=3, color=colours[n % len(colours)],
                        label=legend)
        if key == 'bolt_ng_recall':
            ax.axhline(TARGETS['drift_recall'], ls='--', color='k', lw=0.8)
            ax.axvline(TARGETS['drift_severity'], ls='--', color='grey', lw=0.6)
        ax.set_title(name)
        ax.set_xlabel('drift severity (0 clean, 1 moderate, 2 severe)')
        ax.set_ylim(top=1.005)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc='lower left')
    fig.suptitle(title or f'{result["model"]} on {result["counts"]["bolts"]} held-out bolts, '
                 f'threshold {result["threshold"]:.3f}')
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
