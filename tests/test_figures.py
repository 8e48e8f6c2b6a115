"""Report figures are written, are real PNGs of a sensible size, and accept every history shape."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bolt_inspection.core.study.figures import (
    HeatmapView,
    normalise_history,
    plot_confusion,
    plot_gradcam_gallery,
    plot_side_by_side,
    plot_training_curves,
)


def _png_shape(path):
    image = cv2.imread(str(path))
    assert image is not None, f'{path} is not a readable image'
    return image.shape


def _views(n, hw=(80, 40)):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = rng.integers(0, 255, hw + (3,), dtype=np.uint8)
        heat = np.zeros((8, 4), np.float32)
        heat[i % 8, i % 4] = 1.0
        mask = np.zeros(hw, np.uint8)
        mask[30:40, 10:20] = 255
        out.append(HeatmapView(image, heat, mask, f'bolt {i} cam{i % 4} p=0.9', hit=i % 2 == 0))
    return out


def test_gallery_and_side_by_side(tmp_path):
    path = plot_gradcam_gallery(_views(7), tmp_path / 'gallery.png')
    h, w, _ = _png_shape(path)
    assert w > 400 and h > 200
    frame = np.full((96, 128, 3), 90, np.uint8)
    left = HeatmapView(frame, np.eye(6, 8, dtype=np.float32), None, 'full frame',
                       boxes=[(44, 8, 40, 80)])
    pairs = [(left, v) for v in _views(3)]
    path = plot_side_by_side(pairs, tmp_path / 'fig7.png')
    h, w, _ = _png_shape(path)
    assert h > w  # three rows of image pairs
    # An empty gallery still gives a PNG that says so rather than crashing.
    assert _png_shape(plot_gradcam_gallery([], tmp_path / 'empty.png'))


def test_confusion_png(tmp_path):
    level = {'confusion': [[64, 2], [3, 63]], 'accuracy': 127 / 132}
    path = plot_confusion({'view': level, 'bolt': level}, tmp_path / 'confusion.png')
    h, w, _ = _png_shape(path)
    assert w > h  # two panels side by side


@pytest.mark.parametrize('history', [
    {'accuracy': [0.5, 0.7], 'loss': [0.7, 0.5], 'val_accuracy': [0.5, 0.6],
     'val_loss': [0.7, 0.6]},
    {'stage1': {'accuracy': [0.5, 0.7], 'loss': [0.7, 0.5]},
     'stage2': {'accuracy': [0.8, 0.9, 0.95], 'loss': [0.4, 0.3, 0.2]}},
    [{'name': 'head', 'history': {'accuracy': [0.5], 'loss': [0.7]}},
     {'name': 'fine-tune', 'history': {'accuracy': [0.8], 'loss': [0.4]}}],
])
def test_training_curves_accept_history_shapes(tmp_path, history):
    stages = normalise_history(history)
    assert stages and all('loss' in h for _, h in stages)
    assert _png_shape(plot_training_curves(history, tmp_path / 'curves.png'))


def test_training_curves_without_history(tmp_path):
    assert normalise_history(None) == []
    assert _png_shape(plot_training_curves({}, tmp_path / 'curves.png'))
