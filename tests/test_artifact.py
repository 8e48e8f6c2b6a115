"""Model artifacts: round trip, and every corrupt or mismatched directory is a one-line error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bolt_inspection.core.errors import ModelError
from bolt_inspection.core.model.artifact import (
    ModelMetadata,
    load_artifact,
    read_metadata,
    save_artifact,
)
from bolt_inspection.core.model.network import build_tiny


def _metadata(**overrides):
    values = dict(input_size=(16, 24), roi_boxes={0: (1, 2, 30, 60), 3: (5, 6, 30, 60)},
                  threshold=0.37, gradcam_layer='last_conv', dataset_fingerprint='abc',
                  training={'config': {'seed': 3}}, metrics={'view': {'accuracy': 0.9}},
                  frame_size=(320, 240))
    values.update(overrides)
    return ModelMetadata(**values)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    model = build_tiny((16, 24), filters=(4, 8), seed=0)
    path = save_artifact(model, _metadata(), tmp_path_factory.mktemp('art') / 'model',
                         history={'stage1': {'loss': [0.7, 0.5]}})
    return model, path


def test_round_trip_keeps_metadata_and_predictions(saved):
    model, path = saved
    artifact = load_artifact(path)
    meta = artifact.metadata
    assert meta.input_size == (16, 24) and meta.classes == ('OK', 'NG') and meta.ng_index == 1
    assert meta.roi_boxes == {0: (1, 2, 30, 60), 3: (5, 6, 30, 60)}
    assert meta.frame_size == (320, 240) and meta.threshold == 0.37
    assert meta.training['history'] == {'stage1': {'loss': [0.7, 0.5]}}
    assert meta.versions['keras'] and meta.versions['tensorflow']
    assert len(artifact.model_id) == 12 and artifact.model_id == meta.model_id
    assert json.loads((path / 'history.json').read_text()) == {'stage1': {'loss': [0.7, 0.5]}}
    x = np.random.default_rng(0).uniform(0, 255, (3, 24, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(artifact.model.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


def test_full_frame_model_has_no_boxes(tmp_path):
    model = build_tiny((16, 24), filters=(4,), seed=0)
    path = save_artifact(model, _metadata(roi_boxes=None, frame_size=None), tmp_path / 'm')
    assert load_artifact(path).metadata.roi_boxes is None


def _copy(saved, tmp_path):
    return shutil.copytree(saved[1], tmp_path / 'copy')


def _assert_one_line(exc_info, *parts):
    text = str(exc_info.value)
    assert '\n' not in text
    for part in parts:
        assert part in text


def test_missing_directory_and_files(saved, tmp_path):
    with pytest.raises(ModelError) as info:
        load_artifact(tmp_path / 'nope')
    _assert_one_line(info, 'not found')
    path = _copy(saved, tmp_path)
    (path / 'model.keras').unlink()
    with pytest.raises(ModelError) as info:
        load_artifact(path)
    _assert_one_line(info, 'no model.keras')
    (path / 'metadata.json').unlink()
    with pytest.raises(ModelError) as info:
        load_artifact(path)
    _assert_one_line(info, 'no metadata.json')


def test_corrupt_model_file(saved, tmp_path):
    path = _copy(saved, tmp_path)
    (path / 'model.keras').write_bytes(b'PK\x03\x04 this is not a keras zip')
    with pytest.raises(ModelError) as info:
        load_artifact(path)
    _assert_one_line(info, 'does not match metadata model_id')
    meta = json.loads((path / 'metadata.json').read_text())
    meta['model_id'] = ''                      # no hash to compare: the loader itself must fail
    (path / 'metadata.json').write_text(json.dumps(meta))
    with pytest.raises(ModelError) as info:
        load_artifact(path)
    _assert_one_line(info, 'cannot load model')


def test_bad_json_and_missing_fields(saved, tmp_path):
    path = _copy(saved, tmp_path)
    meta_path = path / 'metadata.json'
    good = json.loads(meta_path.read_text())
    meta_path.write_text('{"classes": [')
    with pytest.raises(ModelError) as info:
        load_artifact(path)
    _assert_one_line(info, 'invalid JSON')
    for field in ('threshold', 'input_size', 'gradcam_layer'):
        broken = dict(good)
        del broken[field]
        meta_path.write_text(json.dumps(broken))
        with pytest.raises(ModelError) as info:
            read_metadata(path)
        _assert_one_line(info, f'missing field {field}')
    meta_path.write_text(json.dumps({**good, 'threshold': 1.5}))
    with pytest.raises(ModelError) as info:
        read_metadata(path)
    _assert_one_line(info, 'threshold')


@pytest.mark.parametrize('change, message', [
    ({'input_size': [24, 16]}, 'does not match metadata input_size 24x16'),
    ({'classes': ['OK', 'NG', 'maybe']}, 'does not match the 3 classes'),
    ({'gradcam_layer': 'block5_conv3'}, "gradcam_layer 'block5_conv3' is not a layer"),
    ({'gradcam_layer': 'predictions'}, 'not a 2-D feature map'),
])
def test_metadata_that_does_not_match_the_model(saved, tmp_path, change, message):
    path = _copy(saved, tmp_path)
    meta_path = path / 'metadata.json'
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), **change}))
    with pytest.raises(ModelError) as info:
        load_artifact(path)
    _assert_one_line(info, message)


def test_save_refuses_metadata_that_does_not_fit(tmp_path):
    model = build_tiny((16, 24), filters=(4,), seed=0)
    with pytest.raises(ModelError, match='input_size'):
        save_artifact(model, _metadata(input_size=(24, 24)), tmp_path / 'm')
    assert not (tmp_path / 'm').exists()
