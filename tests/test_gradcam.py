"""Grad-CAM: the paper's Eq. 2-4 against a hand computation, one forward pass, drawing helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bolt_inspection.core.errors import ImageError, ModelError
from bolt_inspection.core.model.gradcam import GradCAM, mosaic, overlay
from bolt_inspection.core.model.keras_backend import keras


def _flatten_model(seed=0, size=8, filters=4):
    """Input -> conv 'feat' (ReLU) -> Flatten -> Dense(2, softmax): logits are linear in A."""
    k = keras()
    k.utils.set_random_seed(seed)
    inputs = k.Input((size, size, 3))
    feat = k.layers.Conv2D(filters, 3, padding='same', activation='relu', name='feat')(inputs)
    x = k.layers.Flatten()(feat)
    out = k.layers.Dense(2, activation='softmax', name='predictions')(x)
    return k.Model(inputs, out)


def _hand_gradcam_linear_head(model, batch, class_index):
    """Eq. 2-4 by hand: for logits z = flatten(A) @ W + b, d z_c / d A_ij^k = W[(i,j,k), c]."""
    k = keras()
    feat = k.Model(model.input, model.get_layer('feat').output).predict(batch, verbose=0)
    kernel, _ = model.get_layer('predictions').get_weights()
    n, h, w, depth = feat.shape
    grads = kernel[:, class_index].reshape(h, w, depth)            # same for every image
    alpha = grads.mean(axis=(0, 1))                               # Eq. 2: a_k^c
    cams = np.maximum((feat * alpha).sum(axis=-1), 0.0)           # Eq. 3-4
    peak = cams.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cams / np.where(peak > 0, peak, 1.0), 0.0)


def test_gradcam_matches_hand_computation_of_eq_2_to_4():
    model = _flatten_model()
    batch = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32) / 255
    for class_index in (0, 1):
        probs, heat = GradCAM(model, 'feat', class_index=class_index)(batch)
        expected = _hand_gradcam_linear_head(model, batch, class_index)
        assert heat.shape == (3, 8, 8)
        np.testing.assert_allclose(heat, expected, atol=1e-5)


def test_gradcam_matches_independent_gradient_tape_with_upsampling():
    """A pooled model (8x8 input, 4x4 maps): compare with an independent tape + tf resize."""
    k = keras()
    from bolt_inspection.core.model.keras_backend import tf

    k.utils.set_random_seed(1)
    inputs = k.Input((8, 8, 3))
    x = k.layers.Conv2D(4, 3, padding='same', activation='relu')(inputs)
    x = k.layers.MaxPooling2D(2)(x)
    feat = k.layers.Conv2D(6, 3, padding='same', activation='relu', name='feat')(x)
    x = k.layers.GlobalAveragePooling2D()(feat)
    x = k.layers.Dense(5, activation='relu')(x)
    out = k.layers.Dense(2, activation='softmax', name='predictions')(x)
    model = k.Model(inputs, out)
    batch = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)

    # Independent: split the model at 'feat' and differentiate the logit w.r.t. the map itself.
    to_feat = k.Model(model.input, model.get_layer('feat').output)
    maps = tf().Variable(to_feat(batch))
    with tf().GradientTape() as tape:
        y = k.layers.GlobalAveragePooling2D()(maps)
        y = model.layers[-2](y)
        dense = model.layers[-1]
        logit = tf().matmul(y, dense.kernel) + dense.bias
        score = tf().reduce_sum(logit[:, 1])
    grads = tape.gradient(score, maps).numpy()
    alpha = grads.mean(axis=(1, 2))
    cam = np.maximum(np.einsum('nijk,nk->nij', maps.numpy(), alpha), 0)
    cam = tf().image.resize(cam[..., None], (8, 8), method='bilinear').numpy()[..., 0]
    peak = cam.max(axis=(1, 2), keepdims=True)
    expected = np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0)

    gradcam = GradCAM(model, 'feat', class_index=1)
    assert gradcam.score == 'logit' and gradcam.grid_hw == (4, 4)
    _, heat = gradcam(batch)
    np.testing.assert_allclose(heat, expected, atol=1e-5)


def test_probabilities_come_from_the_same_pass_and_equal_predict():
    model = _flatten_model(seed=3)
    batch = np.random.default_rng(3).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    probs, heat = GradCAM(model, 'feat')(batch)
    np.testing.assert_allclose(probs, model.predict(batch, verbose=0), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert heat.min() >= 0.0 and heat.max() <= 1.0


def test_batched_equals_one_view_at_a_time():
    model = _flatten_model(seed=4)
    batch = np.random.default_rng(4).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    gradcam = GradCAM(model, 'feat')
    probs, heat = gradcam(batch)
    for i in range(4):
        p1, h1 = gradcam(batch[i:i + 1])
        np.testing.assert_allclose(p1[0], probs[i], atol=1e-6)
        np.testing.assert_allclose(h1[0], heat[i], atol=1e-5)


def test_all_zero_map_stays_zero_without_nan():
    model = _flatten_model(seed=5)
    conv = model.get_layer('feat')
    kernel, bias = conv.get_weights()
    conv.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])   # A^k == 0 everywhere
    probs, heat = GradCAM(model, 'feat')(np.ones((2, 8, 8, 3), np.float32))
    assert np.isfinite(heat).all() and np.isfinite(probs).all()
    assert (heat == 0).all()


def test_bad_layer_and_bad_batch_are_clear_errors():
    model = _flatten_model()
    with pytest.raises(ModelError, match='nope'):
        GradCAM(model, 'nope')
    with pytest.raises(ModelError, match='feature maps'):
        GradCAM(model, 'predictions')
    with pytest.raises(ImageError, match='does not match'):
        GradCAM(model, 'feat')(np.zeros((1, 9, 8, 3), np.float32))


def test_overlay_is_jet_and_resized():
    image = np.full((40, 20, 3), 100, np.uint8)
    heat = np.zeros((8, 4), np.float32)
    heat[:4] = 1.0                                   # top half hot
    out = overlay(image, heat, alpha=1.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    jet = cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_JET)[0]
    np.testing.assert_array_equal(out[2, 10], jet[1])   # hot = JET's red end
    np.testing.assert_array_equal(out[-2, 10], jet[0])  # cold = JET's blue end


def test_mosaic_layout_banner_colour_and_placeholders():
    crop = np.full((64, 32, 3), 200, np.uint8)
    ok = mosaic([crop, crop, crop, crop], [np.zeros((64, 32))] * 4, 'OK  bolt 1', True,
                ['cam0', 'cam1', 'cam2', 'cam3'], tile_size=(100, 200))
    ng = mosaic([crop, None, crop], None, 'NG  bolt 2\nmissing view cam1', False,
                tile_size=(100, 200))
    assert ok.dtype == np.uint8 and ok.flags['C_CONTIGUOUS']
    assert ok.shape[1] == 200 and ok.shape[0] > 400          # 2x2 tiles under a banner
    banner_ok = ok[: ok.shape[0] - 400].reshape(-1, 3)
    banner_ng = ng[: ng.shape[0] - 400].reshape(-1, 3)
    # The banner background dominates: green for OK, red for NG (BGR).
    assert np.median(banner_ok[:, 1]) > np.median(banner_ok[:, 2])
    assert np.median(banner_ng[:, 2]) > np.median(banner_ng[:, 1])
    missing_tile = ng[ng.shape[0] - 400: ng.shape[0] - 200, 100:]
    assert np.median(missing_tile) == 110                     # grey placeholder
