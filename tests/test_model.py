"""The flat VGG16: Keras layer names, preprocessing inside, stage freezing, weight loading."""

from __future__ import annotations

import numpy as np
import pytest

from bolt_inspection.core.errors import ModelError
from bolt_inspection.core.model.keras_backend import keras
from bolt_inspection.core.model.network import (
    build_tiny,
    build_vgg16,
    load_backbone_weights,
    set_stage,
)


@pytest.fixture(scope='module')
def vgg32():
    return build_vgg16((32, 32), 'none', dense_units=8, seed=0)


def test_vgg16_is_flat_with_keras_layer_names(vgg32):
    k = keras()
    reference = k.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    ref_names = [layer.name for layer in reference.layers[1:]]
    names = [layer.name for layer in vgg32.layers]
    assert names[names.index('block1_conv1'):names.index('block5_pool') + 1] == ref_names
    assert not any(isinstance(layer, k.Model) for layer in vgg32.layers)   # no nested model
    assert vgg32.input_shape == (None, 32, 32, 3) and vgg32.output_shape == (None, 2)
    assert vgg32.layers[-1].name == 'predictions'
    for ours, theirs in zip(ref_names, reference.layers[1:], strict=True):
        assert [w.shape for w in vgg32.get_layer(ours).weights] == \
            [w.shape for w in theirs.weights]


def test_preprocessing_is_caffe_mode_inside_the_model(vgg32):
    k = keras()
    pre = k.Model(vgg32.input, vgg32.get_layer('preprocess').output)
    rgb = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = k.applications.vgg16.preprocess_input(rgb.copy())
    np.testing.assert_allclose(pre.predict(rgb, verbose=0), expected, atol=1e-4)


def test_input_size_wh_and_minimum():
    model = build_vgg16((32, 64), 'none', head='gap', dense_units=0)
    assert model.input_shape == (None, 64, 32, 3)
    with pytest.raises(ModelError, match='at least 32x32'):
        build_vgg16((16, 32))


def test_max_pooling_head_scores_a_defect_anywhere_at_full_strength():
    model = build_vgg16((64, 64), 'none', head='gmp', dense_units=0, seed=0)
    assert model.get_layer('max_pool').output.shape == (None, 512)
    # block5_pool is 2x2 here: the head sees each channel's maximum over the four cells.
    k = keras()
    features = k.Model(model.input, model.get_layer('block5_pool').output)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    pooled = k.Model(model.input, model.get_layer('max_pool').output).predict(x, verbose=0)
    np.testing.assert_allclose(pooled, features.predict(x, verbose=0).max(axis=(1, 2)),
                               rtol=1e-6)
    with pytest.raises(ValueError, match='head must be one of'):
        build_vgg16((32, 32), 'none', head='attention')


def _train_step_changes(model, stage):
    k = keras()
    trainable = set(set_stage(model, stage))
    model.compile(optimizer=k.optimizers.SGD(0.1), loss='sparse_categorical_crossentropy')
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (4, *model.input_shape[1:])).astype(np.float32)
    model.train_on_batch(x, np.array([0, 1, 0, 1]))
    changed = set()
    for layer in model.layers:
        if any(not np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights(),
                                                         strict=True)):
            changed.add(layer.name)
    return trainable, changed


def test_stage1_freezes_every_conv_layer():
    model = build_vgg16((32, 32), 'none', dense_units=8, dropout=0.0, seed=1)
    trainable, changed = _train_step_changes(model, 'stage1')
    assert trainable == {'fc1', 'predictions'}
    assert changed == {'fc1', 'predictions'}          # conv weights bit-identical


def test_stage2_trains_block5_and_head_only():
    model = build_vgg16((32, 32), 'none', dense_units=8, dropout=0.0, seed=2)
    trainable, changed = _train_step_changes(model, 'stage2')
    expected = {'block5_conv1', 'block5_conv2', 'block5_conv3', 'fc1', 'predictions'}
    assert trainable == expected
    assert changed <= expected and 'predictions' in changed and 'block5_conv3' in changed
    assert not any(name.startswith(('block1', 'block2', 'block3', 'block4')) for name in changed)


def test_scratch_trains_everything():
    model = build_tiny((16, 16), filters=(4, 8), dense_units=4, seed=3)
    trainable, changed = _train_step_changes(model, 'scratch')
    assert trainable == {'conv1', 'last_conv', 'fc1', 'predictions'} == changed
    with pytest.raises(ValueError, match='stage'):
        set_stage(model, 'stage3')


def test_weights_copied_by_name_from_a_keras_file(tmp_path, vgg32):
    source = build_vgg16((32, 32), 'none', dense_units=8, seed=5)
    path = tmp_path / 'source.keras'
    source.save(path)
    target = build_vgg16((32, 32), 'none', dense_units=8, seed=6)
    copied = load_backbone_weights(target, path)
    assert 'block1_conv1' in copied and 'block5_conv3' in copied
    np.testing.assert_array_equal(target.get_layer('block3_conv2').get_weights()[0],
                                  source.get_layer('block3_conv2').get_weights()[0])
    # Also the Keras applications .h5 layout (weights only, names as VGG16).
    h5 = tmp_path / 'vgg16_notop.h5'
    keras().applications.VGG16(include_top=False, weights=None,
                               input_shape=(32, 32, 3)).save_weights(h5.with_suffix('.weights.h5'))
    copied = load_backbone_weights(target, h5.with_suffix('.weights.h5'))
    assert len([n for n in copied if 'conv' in n]) == 13


def test_bad_weights_are_model_errors(tmp_path, vgg32):
    with pytest.raises(ModelError, match='not found'):
        load_backbone_weights(vgg32, tmp_path / 'missing.h5')
    junk = tmp_path / 'junk.h5'
    junk.write_bytes(b'not hdf5')
    with pytest.raises(ModelError, match='cannot read weights'):
        load_backbone_weights(vgg32, junk)
    assert load_backbone_weights(vgg32, 'none') == []


def test_vgg16_bn_keeps_the_conv_names_and_freezes_its_batch_norm_in_stage1():
    model = build_vgg16((32, 32), 'none', dense_units=8, dropout=0.0, seed=7, batch_norm=True)
    k = keras()
    bn = [layer.name for layer in model.layers
          if isinstance(layer, k.layers.BatchNormalization)]
    assert len(bn) == 13 and bn[0] == 'block1_bn1' and bn[-1] == 'block5_bn3'
    # Grad-CAM's layer is still the rectified conv output, right before its batch norm.
    names = [layer.name for layer in model.layers]
    assert names[names.index('block5_conv3') + 1] == 'block5_bn3'
    assert model.get_layer('block5_conv3').get_config()['activation'] == 'relu'
    trainable, changed = _train_step_changes(model, 'stage1')
    assert trainable == changed == {'fc1', 'predictions'}     # BN weights and statistics frozen
    model = build_vgg16((32, 32), 'none', dense_units=8, dropout=0.0, seed=7, batch_norm=True)
    trainable, _ = _train_step_changes(model, 'stage2')
    assert trainable == {'block5_conv1', 'block5_conv2', 'block5_conv3', 'block5_bn1',
                         'block5_bn2', 'block5_bn3', 'fc1', 'predictions'}
