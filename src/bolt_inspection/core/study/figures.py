"""Figures for evaluation reports (matplotlib, Agg backend, PNG files).

* :func:`plot_training_curves` - the paper's Fig. 5: accuracy and loss against epoch, both
  training stages on one axis, training and validation curves.
* :func:`plot_confusion` - view- and bolt-level confusion matrices side by side.
* :func:`plot_gradcam_gallery` - NG views with the Grad-CAM overlay, the true defect outline and
  the heatmap peak (green title: peak inside the defect, red: outside).
* :func:`plot_side_by_side` - the paper's Fig. 7: the same views explained by a full-frame model
  (left) and by an ROI model (right).

The functions take plain arrays, so they are usable for any model and tested without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bolt_inspection.core.model.gradcam import heatmap_peak

Box = tuple[int, int, int, int]


def _pyplot():
    import matplotlib

    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass
class HeatmapView:
    """One image region and the Grad-CAM heatmap a model produced for it.

    Attributes:
        image_bgr: The region the model saw (an ROI crop, or the full frame), BGR uint8.
        heatmap: 2-D heatmap in [0, 1] at any resolution (stretched over ``image_bgr``).
        mask: Defect mask of the same region (non-zero = defect), or None.
        title: Caption (e.g. bolt, camera, p_ng).
        hit: Whether the heatmap peak is inside the defect (colours the caption), or None.
        boxes: Boxes (x, y, w, h) in ``image_bgr`` pixels to outline, e.g. the ROI in a frame.
    """

    image_bgr: np.ndarray
    heatmap: np.ndarray
    mask: np.ndarray | None = None
    title: str = ''
    hit: bool | None = None
    boxes: Sequence[Box] = field(default_factory=tuple)


def _draw_view(ax, view: HeatmapView, alpha: float = 0.45) -> None:
    image = np.asarray(view.image_bgr)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    rgb = image[..., ::-1]
    h, w = rgb.shape[:2]
    heat = cv2.resize(np.asarray(view.heatmap, dtype=np.float32), (w, h),
                      interpolation=cv2.INTER_LINEAR)
    ax.imshow(rgb, interpolation='bilinear')
    ax.imshow(heat, cmap='jet', alpha=alpha, vmin=0.0, vmax=1.0, interpolation='bilinear')
    if view.mask is not None and np.any(view.mask):
        ax.contour((np.asarray(view.mask) > 0).astype(float), levels=[0.5], colors='white',
                   linewidths=1.2)
    for (x, y, bw, bh) in view.boxes:
        ax.add_patch(_rect(x, y, bw, bh))
    peak = heatmap_peak(heat)
    if peak is not None:
        row, col = peak
        ax.plot([col], [row], marker='X', markersize=11, markerfacecolor='white',
                markeredgecolor='black', markeredgewidth=1.2)
    # Markers and boxes at the border must not widen the axes beyond the image.
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    color = {True: 'tab:green', False: 'tab:red'}.get(view.hit, 'black')
    ax.set_title(view.title, fontsize=9, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def _rect(x, y, w, h):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor='lime', linewidth=1.5, linestyle='--')


def plot_gradcam_gallery(views: Sequence[HeatmapView], out_png: str | Path, *,
                         title: str = 'Grad-CAM of NG views', columns: int = 6) -> Path:
    """A grid of Grad-CAM overlays with the defect outline (white) and the peak (X).

    Args:
        views: The views to show (a gallery of ~12-24 reads well).
        out_png: Output path.
        title: Figure title.
        columns: Views per row.

    Returns:
        The PNG path.
    """
    plt = _pyplot()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(views))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    aspect = 2.0
    if views:
        h, w = np.asarray(views[0].image_bgr).shape[:2]
        aspect = h / max(w, 1)
    cell_w = 2.2
    fig, axes = plt.subplots(rows, cols, figsize=(cell_w * cols, cell_w * aspect * rows + 0.9),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis('off')
    for ax, view in zip(axes.ravel(), views, strict=False):
        ax.axis('on')
        _draw_view(ax, view)
    if not views:
        axes[0, 0].text(0.5, 0.5, 'no NG views to show', ha='center', va='center')
    fig.suptitle(f'{title}\nwhite outline: true defect, X: heatmap peak; '
                 'caption green = peak on the defect, red = not', fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_side_by_side(pairs: Sequence[tuple[HeatmapView, HeatmapView]], out_png: str | Path, *,
                      left_title: str = 'full frame, no ROI',
                      right_title: str = 'ROI crop') -> Path:
    """The paper's Fig. 7: each row is one view, explained by two models.

    Args:
        pairs: ``(full_frame_view, roi_view)`` per row; the left one typically has the ROI box
            in ``boxes`` so one sees whether the heat lies on the thread.
        out_png: Output path.
        left_title: Heading of the left column.
        right_title: Heading of the right column.

    Returns:
        The PNG path.
    """
    plt = _pyplot()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(pairs))
    if pairs:
        lh, lw = np.asarray(pairs[0][0].image_bgr).shape[:2]
        rh, rw = np.asarray(pairs[0][1].image_bgr).shape[:2]
    else:
        lh, lw, rh, rw = 3, 4, 2, 1
    row_h = 3.0
    widths = [row_h * lw / lh, row_h * rw / rh]
    fig, axes = plt.subplots(n, 2, figsize=(sum(widths) + 0.6, row_h * n + 0.9),
                             gridspec_kw={'width_ratios': widths}, squeeze=False)
    for i, (left, right) in enumerate(pairs):
        _draw_view(axes[i, 0], left)
        _draw_view(axes[i, 1], right)
    if not pairs:
        for ax in axes.ravel():
            ax.axis('off')
    fig.suptitle(f'Grad-CAM: {left_title} (left) vs {right_title} (right)\n'
                 'green dashed box: thread ROI, white outline: true defect, X: heatmap peak',
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_confusion(levels: dict, out_png: str | Path, *, title: str = '') -> Path:
    """Confusion matrices (rows true, columns predicted, order NG, OK), one panel per level.

    Args:
        levels: ``{'view': level_metrics, 'bolt': level_metrics}`` (any subset), as in
            metrics.json.
        out_png: Output path.
        title: Figure title.
    """
    plt = _pyplot()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    names = [k for k in ('view', 'bolt') if k in levels] or list(levels)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        matrix = np.asarray(levels[name]['confusion'], dtype=float)
        rows = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
        ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f'{int(matrix[i, j])}\n({share[i, j]:.0%})', ha='center',
                        va='center', fontsize=12,
                        color='white' if share[i, j] > 0.6 else 'black')
        ax.set_xticks([0, 1], ['NG', 'OK'])
        ax.set_yticks([0, 1], ['NG', 'OK'])
        ax.set_xlabel('predicted')
        ax.set_ylabel('true')
        acc = levels[name].get('accuracy')
        ax.set_title(f'{name} level' + (f' (accuracy {acc:.3f})' if acc is not None else ''),
                     fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def normalise_history(history) -> list[tuple[str, dict[str, list[float]]]]:
    """Bring a training history into ``[(stage_name, {metric: [per-epoch values]})]``.

    Accepts a flat Keras ``History.history`` dict, a dict of stage name -> such dict, or a list
    of ``{'name': ..., 'history': {...}}`` / plain dicts.
    """
    if not history:
        return []
    if isinstance(history, dict):
        if all(isinstance(v, list) for v in history.values()):
            return [('training', history)]
        out = []
        for name, value in history.items():
            if isinstance(value, dict) and isinstance(value.get('history'), dict):
                value = value['history']
            if isinstance(value, dict) and any(isinstance(v, list) for v in value.values()):
                out.append((str(name), {k: v for k, v in value.items() if isinstance(v, list)}))
        return out
    out = []
    for i, item in enumerate(history):
        if isinstance(item, dict) and isinstance(item.get('history'), dict):
            out.append((str(item.get('name', item.get('stage', f'stage {i + 1}'))),
                        item['history']))
        elif isinstance(item, dict):
            out.append((f'stage {i + 1}', {k: v for k, v in item.items()
                                           if isinstance(v, list)}))
    return out


def plot_training_curves(history, out_png: str | Path, *, title: str = '') -> Path:
    """The paper's Fig. 5: accuracy (left) and loss (right) against epoch.

    Stages follow each other on the epoch axis, separated by a dotted line. Training curves
    are solid, validation (``val_*``) dashed.
    """
    plt = _pyplot()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    stages = normalise_history(history)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    colors = ['tab:blue', 'tab:orange', 'tab:purple', 'tab:brown']
    start = 0
    for s, (name, hist) in enumerate(stages):
        n = max((len(v) for v in hist.values()), default=0)
        epochs = np.arange(start + 1, start + n + 1)
        for ax, key in zip(axes, ('accuracy', 'loss'), strict=True):
            for prefix, style in (('', '-'), ('val_', '--')):
                values = hist.get(prefix + key)
                if key == 'accuracy' and values is None:
                    values = hist.get(prefix + 'acc')
                if values:
                    ax.plot(epochs[:len(values)], values, style, color=colors[s % len(colors)],
                            marker='o' if n <= 20 else None, markersize=3,
                            label=f'{name} {"validation" if prefix else "training"}')
        if s and n:
            for ax in axes:
                ax.axvline(start + 0.5, color='grey', linestyle=':', linewidth=1)
        start += n
    from matplotlib.ticker import MaxNLocator

    for ax, key in zip(axes, ('accuracy', 'loss'), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel('epoch')
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, 'no training history in the artifact', ha='center',
                    va='center', transform=ax.transAxes)
    axes[0].set_ylim(-0.02, 1.02)
    fig.suptitle(title or 'Training curves (paper Fig. 5)', fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
