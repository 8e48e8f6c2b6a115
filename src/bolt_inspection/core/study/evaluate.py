"""Evaluation of a bolt classifier: the paper's Table 2 at view and bolt level, and Grad-CAM
localisation.

Everything here works on plain numbers (per-view NG probabilities, labels, heatmaps, masks), so it
is tested without a model. :func:`evaluate_model` is the one function that runs a model artifact
over a dataset and feeds the rest.

Conventions (the paper's Table 2, Eqs. 5-7):

* NG (defective) is the positive class. A view is predicted NG when ``p_ng >= threshold``.
* A bolt is predicted NG when ANY of its views is (the line's fusion rule); its truth is the bolt
  label, and its score for ROC AUC is the maximum view ``p_ng``.
* Confusion matrices are ``[[NG->NG, NG->OK], [OK->NG, OK->OK]]``: rows are the TRUE label,
  columns the PREDICTED label, both in the order :data:`CLASS_ORDER` = ``('NG', 'OK')``.
  So ``confusion[0][0]`` is the number of correctly rejected defective items.

Localisation (the paper's "95% of the 66 NG test images had their defect located"):

* *peak in mask*: for each NG view, the heatmap's peak (:func:`heatmap_peak`) is compared with
  the true defect mask cropped with the same box the model input was cut from (the ROI box, or the
  whole frame for a full-frame model) and resampled to the heatmap grid. The mask is dilated by
  ``tolerance_px`` pixels of the model input (default 4): Grad-CAM of ``block5_conv3`` has one
  cell per 16 input pixels, so its upsampled peak cannot be placed more precisely than that, and a
  thin gap in the coating would otherwise be missed by a peak one pixel beside it. A view whose
  heatmap is all zero counts as a miss; an NG view without any mask pixel is left out and counted.
* *peak cell in mask*: the same test at the heatmap's own resolution: whether the Grad-CAM grid
  cell that holds the peak contains any defect pixel. It separates the two ways of missing: a
  peak in the right cell but beside a spot smaller than the cell (a limit of the grid, 4x8 cells
  at 64x128) from a peak in another cell (the model looked elsewhere).
* *ceiling*: whether ANY Grad-CAM on that grid could have put its peak on the (dilated) defect.
  An upsampled grid peaks at a cell centre, so a spot far from every centre cannot be hit by any
  model at this input size (:func:`peak_reachable`, :func:`localisation_ceiling`).
* *energy in ROI*: the share of heatmap mass (sum of the [0, 1] heatmap) inside the camera's ROI
  box. For a full-frame model this is what shows whether it looks at the thread or at the
  background; for an ROI model it is 1 by construction (its input IS the ROI box).
* *energy on thread*: the share inside the view's own coated-thread box (``thread_box`` from the
  dataset, tighter than the ROI box), meaningful for both kinds of model.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bolt_inspection.core.model.artifact import model_boxes
from bolt_inspection.core.model.gradcam import heatmap_peak

CLASS_ORDER = ('NG', 'OK')
CONFUSION_AXES = {
    'rows': 'true label',
    'columns': 'predicted label',
    'order': list(CLASS_ORDER),
}

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PeakCheck:
    """Where one NG view's Grad-CAM peak fell, relative to its defect.

    Attributes:
        located: The peak is inside the defect mask dilated by the tolerance
            (:func:`peak_in_mask`).
        located_cell: The grid cell under the peak holds defect pixels
            (:func:`peak_cell_in_mask`); None without a grid.
        distance_px: From the peak to the nearest defect pixel, in model-input pixels (0 on it;
            inf for an all-zero heatmap, which has no peak).
        defect_px: Model-input pixels the defect touches (area resampling, then > 0: a defect
            thinner than a pixel still counts one), i.e. its size as the model sees it.
        reachable: Some Grad-CAM on this grid could have put its peak on the defect
            (:func:`peak_reachable`); None without a grid.
    """

    located: bool
    located_cell: bool | None
    distance_px: float
    defect_px: int
    reachable: bool | None = None


@dataclass(frozen=True)
class ViewPrediction:
    """One evaluated view.

    Attributes:
        bolt_id: Bolt the view belongs to.
        cam: Camera index.
        label: True VIEW label, 'OK' or 'NG' (NG only when the defect is visible in this view).
        bolt_label: True BOLT label, 'OK' or 'NG'.
        p_ng: The model's NG probability for the view.
        defect: Defect kind of the bolt ('ok', 'insufficient', ...), '' when unknown.
        peak: Where the Grad-CAM peak fell, for an NG view with a defect mask.
    """

    bolt_id: str
    cam: int
    label: str
    bolt_label: str
    p_ng: float
    defect: str = ''
    peak: PeakCheck | None = None


def _check_labels(labels: Iterable[str]) -> list[str]:
    out = [str(x) for x in labels]
    bad = sorted(set(out) - set(CLASS_ORDER))
    if bad:
        raise ValueError(f'labels must be OK or NG, got {bad}')
    return out


def level_metrics(y_true: Sequence[str], scores: Sequence[float], threshold: float) -> dict:
    """Table 2 metrics for one level (views or bolts).

    Args:
        y_true: True labels, 'OK' / 'NG'.
        scores: NG scores in [0, 1]; an item is predicted NG when ``score >= threshold``.
        threshold: Decision threshold on the NG score.

    Returns:
        ``{'NG': {'precision', 'recall', 'f1', 'support'}, 'OK': {...}, 'accuracy', 'roc_auc',
        'confusion'}``. ``roc_auc`` is None when only one class is present (undefined);
        precision of a class never predicted is 0 (scikit-learn's ``zero_division=0``).
        ``confusion`` follows :data:`CONFUSION_AXES`.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true = _check_labels(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if len(y_true) != len(scores):
        raise ValueError(f'{len(y_true)} labels but {len(scores)} scores')
    if len(y_true) == 0:
        raise ValueError('nothing to evaluate: no items')
    y_pred = np.where(scores >= threshold, 'NG', 'OK')
    labels = list(CLASS_ORDER)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    out: dict = {}
    for i, name in enumerate(labels):
        out[name] = {
            'precision': float(precision[i]),
            'recall': float(recall[i]),
            'f1': float(f1[i]),
            'support': int(support[i]),
        }
    out['accuracy'] = float(accuracy_score(y_true, y_pred))
    truth_ng = np.asarray(y_true) == 'NG'
    if truth_ng.all() or not truth_ng.any():
        out['roc_auc'] = None
    else:
        out['roc_auc'] = float(roc_auc_score(truth_ng.astype(int), scores))
    out['confusion'] = confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist()
    return out


def bolt_scores(predictions: Sequence[ViewPrediction]) -> tuple[list[str], list[str], list[float]]:
    """Aggregate views to bolts: score = max view p_ng, truth = the bolt label.

    Returns:
        ``(bolt_ids, bolt_labels, bolt_scores)`` in first-seen bolt order. A bolt is predicted NG
        at threshold t exactly when its score >= t, i.e. when any view is NG.

    Raises:
        ValueError: when views of one bolt disagree on the bolt label.
    """
    scores: dict[str, float] = {}
    labels: dict[str, str] = {}
    for p in predictions:
        p_ng = float(p.p_ng)
        if math.isnan(p_ng):
            raise ValueError(f'bolt {p.bolt_id} cam{p.cam}: p_ng is NaN')
        if p.bolt_id in labels and labels[p.bolt_id] != p.bolt_label:
            raise ValueError(f'bolt {p.bolt_id}: views disagree on the bolt label')
        labels[p.bolt_id] = p.bolt_label
        scores[p.bolt_id] = max(scores.get(p.bolt_id, -math.inf), p_ng)
    ids = list(labels)
    return ids, [labels[b] for b in ids], [scores[b] for b in ids]


def compute_metrics(predictions: Sequence[ViewPrediction], threshold: float) -> dict:
    """The ``metrics.json`` body: ``{'view': {...}, 'bolt': {...}, 'threshold': t,
    'confusion_axes': {...}, 'counts': {...}}``; see :func:`level_metrics`."""
    if not predictions:
        raise ValueError('nothing to evaluate: no predictions')
    view = level_metrics([p.label for p in predictions], [p.p_ng for p in predictions],
                         threshold)
    _, bolt_labels, scores = bolt_scores(predictions)
    bolt = level_metrics(bolt_labels, scores, threshold)
    return {
        'view': view,
        'bolt': bolt,
        'threshold': float(threshold),
        'confusion_axes': dict(CONFUSION_AXES),
        'counts': {'views': len(predictions), 'bolts': len(bolt_labels)},
    }


# --------------------------------------------------------------------------- Table 2 printing

def format_table2(level: dict, title: str) -> str:
    """Plain aligned text in the paper's Table 2 layout, plus accuracy, AUC and confusion."""
    lines = [title, f'{"":<20}{"precision":>10}{"recall":>10}{"F1-score":>10}{"support":>10}']
    names = {'NG': 'Defective (NG)', 'OK': 'Non-defective (OK)'}
    for cls in CLASS_ORDER:
        m = level[cls]
        lines.append(f'{names[cls]:<20}{m["precision"]:>10.3f}{m["recall"]:>10.3f}'
                     f'{m["f1"]:>10.3f}{m["support"]:>10d}')
    auc = level.get('roc_auc')
    auc_text = 'n/a (one class only)' if auc is None else f'{auc:.3f}'
    lines.append(f'accuracy {level["accuracy"]:.3f}   ROC AUC {auc_text}')
    (a, b), (c, d) = level['confusion']
    width = max(6, *(len(str(v)) for v in (a, b, c, d)))
    lines.append('confusion (rows = true, columns = predicted):')
    lines.append(f'{"":<12}{"pred NG":>{width + 3}}{"pred OK":>{width + 3}}')
    lines.append(f'{"true NG":<12}{a:>{width + 3}}{b:>{width + 3}}')
    lines.append(f'{"true OK":<12}{c:>{width + 3}}{d:>{width + 3}}')
    return '\n'.join(lines)


def markdown_table2(level: dict) -> str:
    """The same table as GitHub markdown (used in report.md)."""
    rows = ['| | precision | recall | F1-score | support |', '|---|---:|---:|---:|---:|']
    names = {'NG': 'Defective (NG)', 'OK': 'Non-defective (OK)'}
    for cls in CLASS_ORDER:
        m = level[cls]
        rows.append(f'| {names[cls]} | {m["precision"]:.3f} | {m["recall"]:.3f} | '
                    f'{m["f1"]:.3f} | {m["support"]} |')
    auc = level.get('roc_auc')
    (a, b), (c, d) = level['confusion']
    rows.append('')
    rows.append(f'Accuracy {level["accuracy"]:.3f}, ROC AUC '
                f'{"n/a" if auc is None else f"{auc:.3f}"}. Confusion (rows true, columns '
                f'predicted, order NG, OK): [[{a}, {b}], [{c}, {d}]].')
    return '\n'.join(rows)


# --------------------------------------------------------------------------- localisation

def region_box(roi_boxes: dict | None, cam: int, frame_size: tuple[int, int]) -> Box:
    """The frame region (x, y, w, h) a model input was cut from: the camera's ROI box, or the
    whole frame (``frame_size`` = (w, h)) for a full-frame model."""
    if roi_boxes:
        box = roi_boxes.get(cam, roi_boxes.get(str(cam)))
        if box is None:
            raise ValueError(f'no ROI box for cam{cam}')
        return tuple(int(v) for v in box)
    return (0, 0, int(frame_size[0]), int(frame_size[1]))


def crop_region(arr: np.ndarray, box: Box) -> np.ndarray:
    """Crop with zero padding where the box leaves the array (the ROI box may touch the edge)."""
    x, y, w, h = box
    out = np.zeros((h, w) + arr.shape[2:], dtype=arr.dtype)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, arr.shape[1]), min(y + h, arr.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = arr[y0:y1, x0:x1]
    return out


def mask_on_grid(mask: np.ndarray, region: Box, grid_wh: tuple[int, int],
                 tolerance_px: int = 0) -> np.ndarray:
    """The defect mask cropped to ``region`` and resampled onto a ``grid_wh`` = (w, h) grid.

    Area resampling followed by ``> 0`` keeps a defect that is thinner than one grid cell;
    then the mask is dilated by ``tolerance_px`` grid pixels (elliptic kernel).
    """
    crop = crop_region((np.asarray(mask) > 0).astype(np.float32), region)
    small = cv2.resize(crop, grid_wh, interpolation=cv2.INTER_AREA) > 0
    if tolerance_px > 0:
        k = 2 * int(tolerance_px) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        small = cv2.dilate(small.astype(np.uint8), kernel) > 0
    return small


def _on_grid(heatmap: np.ndarray, grid_wh: tuple[int, int] | None) -> np.ndarray:
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f'heatmap must be 2-D, got shape {heatmap.shape}')
    if grid_wh is not None and heatmap.shape[::-1] != tuple(grid_wh):
        heatmap = cv2.resize(heatmap, tuple(grid_wh), interpolation=cv2.INTER_LINEAR)
    return heatmap


def _peak_lines(cells: int, length: int) -> list[int]:
    """Rows (or columns) of ``length`` pixels on which the peak of ``cells`` upsampled cells
    can fall: the two pixels either side of each interior cell centre, the inner one of a
    border cell's (see :func:`heatmap_peak`)."""
    if cells == 1:
        return [(length - 1) // 2]
    centres = (np.arange(cells) + 0.5) * length / cells - 0.5
    lines = {math.floor(centres[0]), math.ceil(centres[-1])}
    for centre in centres[1:-1]:
        lines |= {math.floor(centre), math.ceil(centre)}
    return sorted(lines)


def reachable_peaks(grid_wh: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Where, on a ``input_size`` = (w, h) input, the peak of a Grad-CAM on ``grid_wh`` can fall.

    Between cell centres a bilinearly upsampled grid is bilinear, so its maximum is at a cell
    centre (not necessarily the hottest cell's: the pixels sampled around a centre also weigh
    its neighbours), and the best pixel is one of the pixels around that centre. That is the
    same set for any model, as long as the heatmap was upsampled bilinearly from ``grid_wh``
    to ``input_size`` (as :class:`GradCAM` does) and holds no exact tie between cells.

    Returns:
        Boolean (h, w) array, True where a peak can fall.
    """
    gw, gh = int(grid_wh[0]), int(grid_wh[1])
    width, height = int(input_size[0]), int(input_size[1])
    reach = np.zeros((height, width), dtype=bool)
    reach[np.ix_(_peak_lines(gh, height), _peak_lines(gw, width))] = True
    return reach


def peak_reachable(mask: np.ndarray, region: Box, input_size: tuple[int, int],
                   grid_wh: tuple[int, int], tolerance_px: int = 4,
                   reach: np.ndarray | None = None) -> bool | None:
    """Whether ANY Grad-CAM on ``grid_wh`` could put its peak inside the (dilated) defect mask.

    The ceiling of :func:`peak_in_mask` for one view: a defect smaller than a grid cell that
    lies away from every cell centre cannot be hit by any model at this input size (for a
    heatmap given at ``input_size`` or at the grid, see :func:`reachable_peaks`). None when
    the mask has no pixel inside the region. ``reach`` is :func:`reachable_peaks` (computed
    once and passed in when many views are checked).
    """
    size = (int(input_size[0]), int(input_size[1]))
    if not mask_on_grid(mask, region, size, 0).any():
        return None
    if reach is None:
        reach = reachable_peaks(grid_wh, size)
    return bool((reach & mask_on_grid(mask, region, size, tolerance_px)).any())


def peak_in_mask(heatmap: np.ndarray, mask: np.ndarray, region: Box,
                 input_size: tuple[int, int] | None = None, tolerance_px: int = 4) -> bool | None:
    """Whether the heatmap's peak falls inside the (dilated) defect mask.

    Args:
        heatmap: 2-D Grad-CAM heatmap of one model input (any resolution).
        mask: Full-frame defect mask (non-zero = defect).
        region: Frame box the model input was cut from (see :func:`region_box`).
        input_size: Model input (w, h); the heatmap is resampled to it so ``tolerance_px`` means
            model-input pixels. None: work on the heatmap's own grid.
        tolerance_px: Mask dilation in model-input pixels.

    Returns:
        True / False, or None when the mask has no pixel inside the region (nothing to locate).
        An all-zero heatmap has no peak and gives False.
    """
    heat = _on_grid(heatmap, input_size)
    grid = (heat.shape[1], heat.shape[0])
    target = mask_on_grid(mask, region, grid, tolerance_px)
    if not mask_on_grid(mask, region, grid, 0).any():
        return None
    peak = heatmap_peak(heat)
    return peak is not None and bool(target[peak])


def localisation_ceiling(views: Iterable[tuple[np.ndarray, Box]], input_size: tuple[int, int],
                         grid_wh: tuple[int, int], tolerance_px: int = 4) -> tuple[int, int]:
    """The best peak-in-mask any Grad-CAM on ``grid_wh`` could score on a set of NG views.

    Needs no model: it tells, before training, whether an input size can reach a localisation
    target at all (VGG16's ``block5_conv3`` has one cell per 16 input pixels).

    Args:
        views: ``(full-frame defect mask, region box the model input is cut from)`` per NG view.
        input_size: Model input (w, h).
        grid_wh: Grad-CAM grid (w, h).
        tolerance_px: Mask dilation in model-input pixels, as for :func:`peak_in_mask`.

    Returns:
        ``(reachable, scored)``: views some peak could locate, and views with a defect inside
        their region.
    """
    reach = reachable_peaks(grid_wh, input_size)
    reachable = scored = 0
    for mask, region in views:
        hit = peak_reachable(mask, region, input_size, grid_wh, tolerance_px, reach)
        if hit is not None:
            scored += 1
            reachable += hit
    return reachable, scored


def peak_cell_in_mask(heatmap: np.ndarray, mask: np.ndarray, region: Box,
                      grid_wh: tuple[int, int]) -> bool | None:
    """Whether the Grad-CAM cell holding the heatmap's peak contains any defect pixel.

    The peak is the same point :func:`peak_in_mask` tests (the X of the Grad-CAM gallery); only
    the target is coarser: the whole grid cell under it.

    Args:
        heatmap: 2-D heatmap of one model input, at grid resolution or upsampled from it.
        mask: Full-frame defect mask (non-zero = defect).
        region: Frame box the model input was cut from.
        grid_wh: The Grad-CAM layer's grid (w, h), e.g. (4, 8) for ``block5_conv3`` at 64x128.

    Returns:
        True / False, or None when the mask has no pixel inside the region. An all-zero heatmap
        gives False.
    """
    cells = mask_on_grid(mask, region, tuple(grid_wh), 0)
    if not cells.any():
        return None
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f'heatmap must be 2-D, got shape {heat.shape}')
    peak = heatmap_peak(heat)
    if peak is None:
        return False
    gw, gh = int(grid_wh[0]), int(grid_wh[1])
    return bool(cells[peak[0] * gh // heat.shape[0], peak[1] * gw // heat.shape[1]])


def check_peak(heatmap: np.ndarray, mask: np.ndarray, region: Box, input_size: tuple[int, int],
               tolerance_px: int = 4, grid_wh: tuple[int, int] | None = None,
               reach: np.ndarray | None = None) -> PeakCheck | None:
    """All the localisation facts of one NG view (None when the mask misses the region).

    ``input_size`` is the model input (w, h): distances and areas are counted on it. ``reach``
    is :func:`reachable_peaks` of ``grid_wh`` (computed here when not given).
    """
    # The same tests as peak_in_mask and peak_reachable, with each mask and the peak made once.
    size = (int(input_size[0]), int(input_size[1]))
    defect = mask_on_grid(mask, region, size, 0)
    if not defect.any():
        return None
    target = mask_on_grid(mask, region, size, tolerance_px)
    heat = _on_grid(heatmap, size)
    peak = heatmap_peak(heat)
    located = peak is not None and bool(target[peak])
    if peak is None:
        distance = math.inf
    else:
        ys, xs = np.nonzero(defect)
        distance = float(np.min(np.hypot(ys - peak[0], xs - peak[1])))
    cell = reachable = None
    if grid_wh is not None:
        cell = peak_cell_in_mask(heat, mask, region, grid_wh)
        if reach is None:
            reach = reachable_peaks(grid_wh, size)
        reachable = bool((reach & target).any())
    return PeakCheck(located, cell, distance, int(defect.sum()), reachable)


def energy_share(heatmap: np.ndarray, region: Box, inner: Box) -> float | None:
    """Share of heatmap mass (sum of values) inside ``inner``, both boxes in frame pixels.

    The heatmap covers ``region``; ``inner`` is clipped to it. None for an all-zero heatmap.
    """
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = float(heat.sum())
    if not math.isfinite(total) or total <= 0:
        return None
    rx, ry, rw, rh = region
    hh, hw = heat.shape
    ix, iy, iw, ih = inner
    # Frame box -> heatmap cells, rounding outward so a box never shrinks to nothing.
    x0 = math.floor((ix - rx) * hw / rw)
    x1 = math.ceil((ix + iw - rx) * hw / rw)
    y0 = math.floor((iy - ry) * hh / rh)
    y1 = math.ceil((iy + ih - ry) * hh / rh)
    x0, x1 = max(0, x0), min(hw, x1)
    y0, y1 = max(0, y0), min(hh, y1)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(heat[y0:y1, x0:x1].sum() / total)


@dataclass
class LocalisationTally:
    """Accumulates localisation results view by view (so heatmaps need not all be kept).

    ``grid_wh`` is the Grad-CAM layer's grid (w, h); with it the peak is also tested at cell
    level (:func:`peak_cell_in_mask`), and each view is checked for whether any model could
    have located it at this grid (:func:`peak_reachable`: the ceiling of peak-in-mask).
    """

    tolerance_px: int = 4
    grid_wh: tuple[int, int] | None = None
    hits: int = 0
    misses: int = 0
    cell_hits: int = 0
    reachable: int = 0
    no_mask: int = 0
    flat: int = 0
    by_defect: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))
    roi_shares: list = field(default_factory=list)
    thread_shares: list = field(default_factory=list)
    ng_roi_shares: list = field(default_factory=list)
    _reach: dict = field(default_factory=dict, init=False, repr=False)

    def add(self, heatmap: np.ndarray, *, label: str, region: Box, roi_box: Box | None,
            thread_box: Box | None, mask: np.ndarray | None, input_size=None,
            defect: str = '') -> PeakCheck | None:
        """Add one view; returns where its peak fell (None if not an NG view with a mask)."""
        heat = np.asarray(heatmap, dtype=np.float32)
        if heat.max() <= 0:
            self.flat += 1
        if roi_box is not None:
            share = energy_share(heat, region, roi_box)
            if share is not None:
                self.roi_shares.append(share)
                if label == 'NG':
                    self.ng_roi_shares.append(share)
        if thread_box is not None:
            share = energy_share(heat, region, thread_box)
            if share is not None:
                self.thread_shares.append(share)
        if label != 'NG':
            return None
        if mask is None:
            self.no_mask += 1
            return None
        size = input_size or (heat.shape[1], heat.shape[0])
        reach = None
        if self.grid_wh is not None:
            key = (tuple(self.grid_wh), tuple(size))
            if key not in self._reach:
                self._reach[key] = reachable_peaks(self.grid_wh, size)
            reach = self._reach[key]
        check = check_peak(heat, mask, region, size, self.tolerance_px, self.grid_wh, reach)
        if check is None:
            self.no_mask += 1
            return None
        counts = self.by_defect[defect or 'unknown']
        counts[0 if check.located else 1] += 1
        if check.located:
            self.hits += 1
        else:
            self.misses += 1
        if check.located_cell:
            self.cell_hits += 1
            counts[2] += 1
        if check.reachable:
            self.reachable += 1
            counts[3] += 1
        return check

    def summary(self) -> dict:
        """The ``localisation`` block of metrics.json."""
        n = self.hits + self.misses

        def mean(values):
            return float(np.mean(values)) if values else None

        return {
            'peak_in_mask': (self.hits / n) if n else None,
            'ng_views_scored': n,
            'ng_views_located': self.hits,
            'ng_views_without_mask': self.no_mask,
            'flat_heatmaps': self.flat,
            'tolerance_px': self.tolerance_px,
            'energy_in_roi': mean(self.roi_shares),
            'energy_in_roi_ng_views': mean(self.ng_roi_shares),
            'energy_on_thread': mean(self.thread_shares),
            'peak_in_mask_by_defect': {
                k: {'located': v[0], 'scored': v[0] + v[1]}
                | ({'located_cell': v[2], 'reachable': v[3]} if self.grid_wh is not None
                   else {})
                for k, v in sorted(self.by_defect.items())
            },
            'grid': None if self.grid_wh is None else list(self.grid_wh),
            'peak_cell_in_mask': (self.cell_hits / n) if n and self.grid_wh else None,
            'ng_views_located_cell': self.cell_hits if self.grid_wh else None,
            # The best peak-in-mask any Grad-CAM on this grid could reach on these views.
            'peak_in_mask_ceiling': (self.reachable / n) if n and self.grid_wh else None,
            'ng_views_reachable': self.reachable if self.grid_wh else None,
        }


def write_metrics(metrics: dict, path: str | Path) -> Path:
    """Write metrics.json (sorted keys, indent 2) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + '\n')
    return path


# --------------------------------------------------------------------------- running a model

@dataclass
class EvalResult:
    """What :func:`evaluate_model` measured and wrote.

    Attributes:
        metrics: The metrics.json body.
        predictions: One entry per evaluated view.
        gallery: NG views (model-input region, heatmap, mask) kept for figures.
        files: Name -> path of every file written.
    """

    metrics: dict
    predictions: list[ViewPrediction]
    gallery: list = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def reference_boxes(frame_size: tuple[int, int], camera_config=None) -> dict[int, Box] | None:
    """Thread ROI boxes for ``frame_size`` from a camera config (default config/cameras.yaml).

    Used to measure where a FULL-FRAME model looks. None when no config can be read.
    """
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.vision.roi import load_camera_config, scale_boxes

    try:
        config = camera_config or load_camera_config()
    except ConfigError:
        return None
    return scale_boxes(dict(config.boxes), tuple(config.frame_size), tuple(frame_size))


def load_model_and_views(model_path, data_path, split: str = 'auto'):
    """The artifact, the dataset and the views to evaluate (:func:`select_records`), checked in
    the order that fails fastest: a bad model before any image is read, then an empty dataset.

    Returns:
        ``(artifact, dataset, records, split_used)``.
    """
    from bolt_inspection.core.errors import DatasetError
    from bolt_inspection.core.model.artifact import load_artifact, read_metadata
    from bolt_inspection.core.vision.dataset import load_dataset

    read_metadata(model_path)
    dataset = load_dataset(data_path)
    if not dataset.records:
        raise DatasetError(f'{data_path}: no images')
    artifact = load_artifact(model_path)
    records, split_used = select_records(dataset, artifact.metadata, split)
    return artifact, dataset, records, split_used


def select_records(dataset, metadata, split: str = 'auto') -> tuple[list, str]:
    """Pick the views to evaluate.

    ``'all'``: every view. ``'val'``: the validation bolts of the model's own training split
    (``split_by_bolt`` with the artifact's ``val_fraction`` and ``seed``). ``'auto'``: ``'val'``
    when the dataset is the one the model was trained on (same fingerprint) - evaluating on
    training bolts would flatter the model - and ``'all'`` otherwise (a held-out test set).

    Returns:
        ``(records, split_used)``.
    """
    from bolt_inspection.core.errors import DatasetError
    from bolt_inspection.core.vision.dataset import split_by_bolt

    if split not in ('auto', 'val', 'all'):
        raise ValueError(f"split must be 'auto', 'val' or 'all', got {split!r}")
    if split == 'auto':
        same = bool(metadata.dataset_fingerprint) and (
            metadata.dataset_fingerprint == dataset.fingerprint())
        split = 'val' if same else 'all'
    if split == 'all':
        return list(dataset.records), 'all'
    training = metadata.training or {}
    config = training.get('config', training)
    val_fraction = float(config.get('val_fraction', 0.2))
    seed = int(config.get('seed', 0))
    _, val = split_by_bolt(dataset.records, val_fraction=val_fraction, seed=seed)
    if not val:
        raise DatasetError(f'{dataset.root}: the validation split is empty '
                           f'(val_fraction {val_fraction}); use --split all')
    return list(val), 'val'


def _read_mask(record) -> np.ndarray | None:
    from bolt_inspection.core.errors import ImageError

    if record.mask_path is None:
        return None
    mask = cv2.imread(str(record.mask_path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ImageError(f'{record.mask_path}: cannot read the defect mask')
    return mask


def run_gradcam(artifact, images: Sequence[np.ndarray], cams: Sequence[int],
                batch_size: int = 16, progress: bool = False, desc: str = 'grad-cam',
                explainer=None):
    """Run an artifact with Grad-CAM over frames, in batches.

    Args:
        artifact: A loaded :class:`~bolt_inspection.core.model.artifact.ModelArtifact`.
        images: Full camera frames (BGR uint8); all the same size.
        cams: Camera index of each frame (selects its ROI box).
        batch_size: Views per forward pass.
        progress: Show a tqdm bar.
        desc: Bar label.
        explainer: A :class:`~bolt_inspection.core.model.gradcam.GradCAM` of the artifact's model
        to
            reuse across calls (building one traces a new TensorFlow graph).

    Returns:
        ``(p_ng (N,), heatmaps list of 2-D arrays, regions list of boxes)``.
    """
    from tqdm import tqdm

    from bolt_inspection.core.model.gradcam import GradCAM
    from bolt_inspection.core.vision.roi import prepare_batch

    meta = artifact.metadata
    cam_layer = explainer or GradCAM(artifact.model, layer_name=meta.gradcam_layer,
                                     class_index=meta.ng_index)
    p_ng: list[float] = []
    heatmaps: list[np.ndarray] = []
    regions: list[Box] = []
    bar = tqdm(total=len(images), desc=desc, unit='view', disable=not progress, leave=False)
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        chunk_cams = cams[start:start + batch_size]
        boxes_list = []
        for image, cam in zip(chunk, chunk_cams, strict=True):
            frame = (image.shape[1], image.shape[0])
            boxes = model_boxes(meta, frame)
            boxes_list.append(None if boxes is None else region_box(boxes, cam, frame))
            regions.append(region_box(boxes, cam, frame))
        batch = prepare_batch(list(chunk), boxes_list, tuple(meta.input_size))
        probs, heat = cam_layer(batch)
        p_ng.extend(float(p) for p in np.asarray(probs)[:, meta.ng_index])
        heatmaps.extend(np.asarray(h, dtype=np.float32) for h in heat)
        bar.update(len(chunk))
    bar.close()
    return np.asarray(p_ng, dtype=np.float64), heatmaps, regions


def evaluate_model(model_path, data_path, out_dir, *, split: str = 'auto', batch_size: int = 16,
                   tolerance_px: int = 4, gallery_size: int = 18, camera_config=None,
                   progress: bool = True, title: str = '',
                   gradcam_layer: str | None = None) -> EvalResult:
    """Evaluate a model artifact on a dataset and write ``out_dir/metrics.json`` and PNGs.

    Args:
        model_path: Model artifact directory.
        data_path: Dataset directory (labels.csv layout, or OK/ and NG/ folders).
        out_dir: Report directory (created).
        split: ``'auto'``, ``'val'`` or ``'all'``; see :func:`select_records`.
        batch_size: Views per forward pass.
        tolerance_px: Mask dilation for the peak-in-mask test (model-input pixels).
        gallery_size: NG views in the Grad-CAM gallery.
        camera_config: ROI boxes to measure a full-frame model against (default
            config/cameras.yaml).
        progress: Show progress bars.
        title: Figure title prefix.
        gradcam_layer: Explain this conv layer instead of the artifact's own Grad-CAM layer
            (the last conv layer, as the paper): a diagnosis of where the localisation is lost.

    Returns:
        An :class:`EvalResult`.

    Raises:
        ModelError: The model directory is missing or unusable, or has no conv layer
            ``gradcam_layer``.
        DatasetError: The dataset is missing or empty.
    """
    from bolt_inspection.core.model.artifact import HISTORY_FILE
    from bolt_inspection.core.study.figures import (
        HeatmapView,
        plot_confusion,
        plot_gradcam_gallery,
        plot_training_curves,
    )
    from bolt_inspection.core.vision.dataset import read_image

    artifact, dataset, records, split_used = load_model_and_views(model_path, data_path, split)
    meta = artifact.metadata
    from bolt_inspection.core.model.gradcam import GradCAM

    layer = gradcam_layer or meta.gradcam_layer
    explainer = GradCAM(artifact.model, layer_name=layer, class_index=meta.ng_index)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    predictions: list[ViewPrediction] = []
    ng_views: list[tuple] = []
    input_size = tuple(meta.input_size)
    from tqdm import tqdm

    tally = LocalisationTally(tolerance_px=tolerance_px, grid_wh=explainer.grid_hw[::-1])
    bar = tqdm(total=len(records), desc='evaluate', unit='view', disable=not progress)
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        images = [read_image(r.image_path) for r in chunk]
        p_ng, heatmaps, regions = run_gradcam(artifact, images, [r.cam for r in chunk],
                                              batch_size=batch_size, explainer=explainer)
        for rec, image, p, heat, region in zip(chunk, images, p_ng, heatmaps, regions,
                                               strict=True):
            frame = (image.shape[1], image.shape[0])
            roi = model_boxes(meta, frame) or reference_boxes(frame, camera_config)
            roi_box = None if not roi or rec.cam not in roi else tuple(roi[rec.cam])
            mask = _read_mask(rec) if rec.label == 'NG' else None
            check = tally.add(heat, label=rec.label, region=region, roi_box=roi_box,
                              thread_box=tuple(rec.thread_box) if rec.thread_box else None,
                              mask=mask, input_size=input_size, defect=rec.defect)
            predictions.append(ViewPrediction(str(rec.bolt_id), int(rec.cam), rec.label,
                                              rec.bolt_label, float(p), rec.defect, check))
            if rec.label == 'NG':
                crop = cv2.resize(crop_region(image, region), _display_size(region),
                                  interpolation=cv2.INTER_AREA)
                # Area resampling then > 0: a thin gap must stay visible when shrunk.
                mask_crop = None if mask is None else (cv2.resize(
                    (crop_region(mask, region) > 0).astype(np.float32), _display_size(region),
                    interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
                boxes = [] if meta.roi_boxes or roi_box is None else [
                    _box_in_display(roi_box, region)]
                ng_views.append(HeatmapView(
                    crop, heat, mask_crop, f'bolt {rec.bolt_id} cam{rec.cam} p={p:.2f}',
                    hit=None if check is None else check.located, boxes=boxes))
        bar.update(len(chunk))
    bar.close()

    metrics = compute_metrics(predictions, meta.threshold)
    metrics['localisation'] = tally.summary()
    metrics['localisation']['gradcam_layer'] = layer
    if meta.threshold != 0.5:
        # The paper's Table 2 is the softmax argmax, i.e. threshold 0.5; the stored threshold is
        # calibrated for NG recall. Both are reported so the two can be compared.
        at_half = compute_metrics(predictions, 0.5)
        metrics['at_threshold_0.5'] = {'view': at_half['view'], 'bolt': at_half['bolt']}
    stored = meta.metrics or {}
    # The threshold policy: the line runs at the threshold calibrated for NG recall on the
    # validation bolts; what it was calibrated for and reached there is shown with the test.
    metrics['threshold_calibration'] = {
        key: stored.get(key) for key in ('threshold_target_recall', 'threshold_calibrated_on',
                                         'threshold_recall_val')}
    metrics['model_id'] = artifact.model_id
    metrics['model'] = str(Path(model_path))
    metrics['model_kind'] = 'roi' if meta.roi_boxes else 'full_frame'
    metrics['data'] = str(Path(data_path))
    metrics['dataset_fingerprint'] = dataset.fingerprint()
    metrics['split'] = split_used
    files = {'metrics': write_metrics(metrics, out_dir / 'metrics.json'),
             'predictions': write_predictions(predictions, meta.threshold,
                                              out_dir / 'predictions.csv')}

    history = (meta.training or {}).get('history')
    if not history and (Path(model_path) / HISTORY_FILE).is_file():
        history = json.loads((Path(model_path) / HISTORY_FILE).read_text())
    prefix = f'{title}: ' if title else ''
    files['training_curves'] = plot_training_curves(
        history, out_dir / 'training_curves.png', title=f'{prefix}training curves (Fig. 5)')
    files['confusion'] = plot_confusion(
        {'view': metrics['view'], 'bolt': metrics['bolt']}, out_dir / 'confusion.png',
        title=f'{prefix}threshold {meta.threshold:.3f}, split {split_used}')
    gallery = pick_gallery(ng_views, gallery_size)
    loc = metrics['localisation']
    share = '' if loc['peak_in_mask'] is None else (
        f' - peak on defect {loc["ng_views_located"]}/{loc["ng_views_scored"]}')
    of_layer = '' if layer == meta.gradcam_layer else f' ({layer})'
    files['gradcam_gallery'] = plot_gradcam_gallery(
        gallery, out_dir / 'gradcam_gallery.png',
        title=f'{prefix}Grad-CAM{of_layer} of NG views{share}')
    return EvalResult(metrics=metrics, predictions=predictions, gallery=ng_views, files=files)


def write_predictions(predictions: Sequence[ViewPrediction], threshold: float,
                      path: str | Path) -> Path:
    """One row per view: bolt, camera, truth, p_ng and the decision at ``threshold``, and for
    an NG view with a defect mask where its Grad-CAM peak fell (:class:`PeakCheck`; empty
    cells otherwise)."""
    import csv

    def flag(value):
        return '' if value is None else int(value)

    path = Path(path)
    with open(path, 'w', newline='', encoding='utf-8') as fh:
        writer = csv.writer(fh)
        writer.writerow(['bolt_id', 'cam', 'view_label', 'bolt_label', 'defect', 'p_ng',
                         'predicted', 'peak_located', 'peak_cell_located', 'peak_to_defect_px',
                         'defect_px', 'peak_reachable'])
        for p in predictions:
            peak = p.peak
            writer.writerow([p.bolt_id, p.cam, p.label, p.bolt_label, p.defect,
                             f'{p.p_ng:.6f}', 'NG' if p.p_ng >= threshold else 'OK',
                             *(('',) * 5 if peak is None else (
                                 flag(peak.located), flag(peak.located_cell),
                                 f'{peak.distance_px:.1f}', peak.defect_px,
                                 flag(peak.reachable)))])
    return path


def _display_size(region: Box, longest: int = 320) -> tuple[int, int]:
    """A figure-friendly (w, h) for a region: longest side ``longest`` px, aspect kept."""
    _, _, w, h = region
    scale = longest / max(w, h)
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def _box_in_display(box: Box, region: Box, longest: int = 320) -> Box:
    rx, ry, rw, rh = region
    scale = longest / max(rw, rh)
    x, y, w, h = box
    return (int(round((x - rx) * scale)), int(round((y - ry) * scale)),
            int(round(w * scale)), int(round(h * scale)))


def pick_gallery(views: Sequence, size: int) -> list:
    """Up to ``size`` views, evenly spread, misses and hits both shown in proportion (at least
    a few misses when there are any: they are what an engineer needs to see)."""
    if len(views) <= size:
        return list(views)
    misses = [v for v in views if v.hit is False]
    others = [v for v in views if v.hit is not False]
    n_miss = min(len(misses), max(round(size * len(misses) / len(views)), min(4, len(misses))))

    def spread(items, n):
        if n <= 0:
            return []
        idx = np.linspace(0, len(items) - 1, n).round().astype(int)
        return [items[i] for i in dict.fromkeys(idx)]

    return spread(misses, n_miss) + spread(others, size - n_miss)
