"""Shared ML fixtures: a tiny trained model artifact any test can inspect bolts with.

``tiny_artifact`` (session scope) is a model directory made by :func:`make_tiny_artifact`:
a small CNN (input 32x64, Grad-CAM layer ``last_conv``) trained for a few seconds on synthetic
bolts rendered at 320x240, with the synthetic rig's default ROI boxes for 320x240 frames stored
in its metadata. Feed it 320x240 BGR frames from ``synth.render_bolt(spec, TINY_FRAME_SIZE)``.

Use it from any test module with ``from fixtures_ml import tiny_artifact  # noqa: F401`` (or
via ``tests/conftest.py``: ``from fixtures_ml import *  # noqa: F401,F403``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY_FRAME_SIZE = (320, 240)
TINY_INPUT_SIZE = (32, 64)
TINY_GRADCAM_LAYER = 'last_conv'
TINY_BOLTS = 64


def render_views(seed: int, bolt_ids, size=TINY_FRAME_SIZE):
    """Render synthetic bolts: returns ``(frames, cams, view_labels)`` lists (label 1 = NG)."""
    from bolt_inspection.core.vision import synth

    frames, cams, labels = [], [], []
    for bolt_id in bolt_ids:
        spec = synth.bolt_spec(seed, int(bolt_id))
        for cam, view in enumerate(synth.render_bolt(spec, size)):
            frames.append(view.image)
            cams.append(cam)
            labels.append(1 if view.defect_visible else 0)
    return frames, cams, labels


def make_tiny_artifact(out_dir, seed: int = 0, bolts: int = TINY_BOLTS,
                       epochs: int = 40, frame_size=TINY_FRAME_SIZE) -> Path:
    """Train a tiny CNN on synthetic ROI crops for a few seconds and save it as an artifact.

    Args:
        out_dir: Where to write ``model.keras`` + ``metadata.json``.
        seed: Synthetic dataset and weight-init seed (same seed -> same data and init).
        bolts: Number of synthetic bolts (4 views each).
        epochs: Training epochs (8 steps each at the default size).
        frame_size: Camera frame ``(width, height)`` the model is for (its ROI boxes).

    Returns:
        ``out_dir`` as a Path.
    """
    from bolt_inspection.core.model.artifact import ModelMetadata, save_artifact
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.model.network import build_tiny
    from bolt_inspection.core.model.threshold import calibrate_threshold
    from bolt_inspection.core.vision import synth
    from bolt_inspection.core.vision.roi import prepare_batch

    boxes = synth.default_roi_boxes(tuple(frame_size))
    frames, cams, labels = render_views(seed, range(bolts), tuple(frame_size))
    x = prepare_batch(frames, [boxes[c] for c in cams], TINY_INPUT_SIZE)
    y = np.asarray(labels, np.int64)
    k = keras()
    model = build_tiny(TINY_INPUT_SIZE, filters=(8, 16, 32), last_conv_name=TINY_GRADCAM_LAYER,
                       seed=seed)
    model.compile(optimizer=k.optimizers.Adam(3e-3), loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])
    n_ng = max(1, int(y.sum()))
    n_ok = max(1, int(len(y) - y.sum()))
    class_weight = {0: len(y) / (2.0 * n_ok), 1: len(y) / (2.0 * n_ng)}
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True,
                        class_weight=class_weight)
    p_ng = model.predict(x, verbose=0)[:, 1]
    # Calibrated on its own training views for 90% NG recall: a toy, not a line model.
    threshold = calibrate_threshold(p_ng, y, 0.9) if y.any() else 0.5
    accuracy = float(((p_ng >= threshold) == (y == 1)).mean())
    metadata = ModelMetadata(
        classes=('OK', 'NG'), input_size=TINY_INPUT_SIZE, roi_boxes=boxes, threshold=threshold,
        gradcam_layer=TINY_GRADCAM_LAYER, dataset_fingerprint=f'synthetic-tiny-seed{seed}',
        training={'arch': 'tiny', 'epochs': epochs, 'bolts': bolts, 'seed': seed},
        metrics={'train_accuracy_at_threshold': accuracy}, frame_size=tuple(frame_size))
    hist = {key: [float(v) for v in values] for key, values in history.history.items()}
    return save_artifact(model, metadata, out_dir, history=hist)


# Test modules import this fixture (or name this module in pytest_plugins); pytest then holds
# one session-scoped definition per importing module. The cache makes them share one build.
_BUILT: dict[str, Path] = {}


@pytest.fixture(scope='session')
def tiny_artifact(tmp_path_factory) -> Path:
    """A tiny trained model directory (see the module docstring); built once per session."""
    path = _BUILT.get('tiny')
    if path is None or not (path / 'model.keras').is_file():
        path = make_tiny_artifact(tmp_path_factory.mktemp('tiny_model') / 'model')
        _BUILT['tiny'] = path
    return path


LINE_FRAME_SIZE = (1280, 960)   # the shipped params' camera frames (config/line.yaml)


@pytest.fixture(scope='session')
def tiny_artifact_1280(tmp_path_factory) -> Path:
    """A tiny trained model for the shipped 1280x960 frames (ROI boxes for that size)."""
    path = _BUILT.get('tiny_1280')
    if path is None or not (path / 'model.keras').is_file():
        path = make_tiny_artifact(tmp_path_factory.mktemp('tiny_model_1280') / 'model',
                                  frame_size=LINE_FRAME_SIZE)
        _BUILT['tiny_1280'] = path
    return path
