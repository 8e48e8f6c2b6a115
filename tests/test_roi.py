"""ROI: camera config validation, cropping, model batches, thread detection, the roi command."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from bolt_inspection.core.errors import ConfigError, ImageError
from bolt_inspection.core.vision import synth
from bolt_inspection.core.vision.roi import (
    crop_roi,
    expand_to_aspect,
    load_camera_config,
    prepare_batch,
    propose_roi,
)


def _write(tmp_path, text):
    path = tmp_path / 'cameras.yaml'
    path.write_text(text)
    return path


def test_load_camera_config(tmp_path):
    path = _write(tmp_path, 'frame_size: [640, 480]\ncameras:\n  0: {roi: [10, 20, 100, 200]}\n'
                            '  1: {roi: [0, 0, 640, 480]}\n')
    config = load_camera_config(path)
    assert config.frame_size == (640, 480)
    assert config.boxes == {0: (10, 20, 100, 200), 1: (0, 0, 640, 480)}
    assert config.cams == (0, 1)
    assert load_camera_config(_write(tmp_path, yaml.safe_dump(config.to_yaml_dict()))) == config


@pytest.mark.parametrize('text, key', [
    ('cameras: {0: {roi: [0, 0, 1, 1]}}', 'frame_size'),
    ('frame_size: [640]\ncameras: {0: {roi: [0, 0, 1, 1]}}', 'frame_size'),
    ('frame_size: [640, 480]', 'cameras'),
    ('frame_size: [640, 480]\ncameras: {0: {box: [0, 0, 1, 1]}}', 'cameras.0.roi'),
    ('frame_size: [640, 480]\ncameras: {2: {roi: [0, 0, 1]}}', 'cameras.2.roi'),
    ('frame_size: [640, 480]\ncameras: {1: {roi: [600, 0, 100, 10]}}', 'cameras.1.roi'),
    ('frame_size: [640, 480]\ncameras: {a: {roi: [0, 0, 1, 1]}}', 'cameras.a'),
])
def test_camera_config_errors_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')) as info:
        load_camera_config(_write(tmp_path, text))
    assert '\n' not in str(info.value)


def test_crop_and_prepare_batch_give_rgb_at_input_size():
    image = np.zeros((100, 200, 3), np.uint8)
    image[10:50, 20:40] = (255, 0, 0)               # a blue (BGR) patch
    crop = crop_roi(image, (20, 10, 20, 40))
    assert crop.shape == (40, 20, 3) and (crop == (255, 0, 0)).all()
    batch = prepare_batch([image, image], [(20, 10, 20, 40), None], input_size=(16, 32))
    assert batch.shape == (2, 32, 16, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0, 5, 5], [0, 0, 255])      # RGB, 0..255
    assert batch[1].max() == 255 and batch[1].min() == 0             # full frame resized


def test_grayscale_is_converted_explicitly():
    gray = np.full((40, 30), 77, np.uint8)
    batch = prepare_batch([gray, gray[..., None]], None, input_size=(30, 40))
    assert (batch == 77).all()


@pytest.mark.parametrize('image, match', [
    (np.zeros((40, 30, 3), np.float32), 'uint8'),
    (np.zeros((40, 30, 3), np.uint16), 'uint8'),
    (np.zeros((40, 30, 4), np.uint8), 'channels|HxWx3'),
    (np.zeros((40, 30, 2), np.uint8), 'HxWx3'),
    (np.zeros((0, 30, 3), np.uint8), 'empty'),
    (None, 'no image'),
    ('image.png', 'numpy array'),
])
def test_bad_images_give_clear_image_errors(image, match):
    with pytest.raises(ImageError, match=match) as info:
        prepare_batch([np.zeros((40, 30, 3), np.uint8), image], None, input_size=(8, 8))
    assert 'image 1' in str(info.value) and '\n' not in str(info.value)


def test_box_outside_the_frame_is_an_image_error():
    with pytest.raises(ImageError, match=r'not inside the 30x40 frame'):
        crop_roi(np.zeros((40, 30, 3), np.uint8), (20, 0, 20, 10), what='cam1')
    with pytest.raises(ImageError, match='2 boxes'):
        prepare_batch([np.zeros((4, 4, 3), np.uint8)], [None, None], (4, 4))


def test_expand_to_aspect_stays_in_frame_and_contains_box():
    x, y, w, h = expand_to_aspect((90, 50, 20, 20), 0.5, (100, 100))
    assert (w, h) == (20, 40) and x + w <= 100 and 0 <= y <= 50 and y + h >= 70
    assert expand_to_aspect((0, 0, 100, 100), 0.5, (100, 100))[2:] == (50, 100)


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def test_propose_roi_finds_the_thread_in_synthetic_frames():
    size = (320, 240)
    views = [synth.render_bolt(synth.bolt_spec(3, b), size) for b in range(6)]
    defaults = synth.default_roi_boxes(size)
    for cam in range(4):
        box = propose_roi([v[cam].image for v in views])
        x, y, w, h = box
        assert abs(w / h - 0.5) < 0.02
        for v in views:                                 # contains the thread of every bolt
            tx, ty, tw, th = v[cam].thread_box
            assert x <= tx + 2 and y <= ty + 2 and tx + tw <= x + w + 2 and ty + th <= y + h + 2
        assert _iou(box, defaults[cam]) > 0.7
    with pytest.raises(ImageError, match='no images'):
        propose_roi([])


def test_roi_command_prints_pasteable_yaml(tmp_path, capsys):
    from bolt_inspection.cli import main

    data = synth.generate_dataset(tmp_path / 'ds', seed=2, bolts=4, size=(320, 240),
                                  progress=False)
    assert main(['roi', '--data', str(data), '--draw', str(tmp_path / 'draw')]) == 0
    out = capsys.readouterr().out
    path = tmp_path / 'cams.yaml'
    path.write_text(out)
    config = load_camera_config(path)
    assert config.frame_size == (320, 240) and config.cams == (0, 1, 2, 3)
    assert sorted(p.name for p in (tmp_path / 'draw').iterdir()) == [
        f'roi_cam{k}.png' for k in range(4)]
