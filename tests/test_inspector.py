"""Inspector: one bolt's views -> crops, one batched Grad-CAM pass, fused verdict; never raises."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_ml import TINY_FRAME_SIZE, TINY_INPUT_SIZE, tiny_artifact  # noqa: F401

from bolt_inspection.core.errors import ModelError
from bolt_inspection.core.line.inspector import Inspector
from bolt_inspection.core.model.artifact import load_artifact
from bolt_inspection.core.vision import synth
from bolt_inspection.core.vision.roi import CameraConfig, prepare_batch


@pytest.fixture(scope='module')
def inspector(tiny_artifact):  # noqa: F811
    return Inspector.from_artifact(tiny_artifact)


def _views(bolt_id=5, seed=0):
    spec = synth.bolt_spec(seed, bolt_id)
    return {cam: view.image for cam, view in enumerate(synth.render_bolt(spec, TINY_FRAME_SIZE))}


def test_inspect_four_views(inspector, tiny_artifact):  # noqa: F811
    views = _views()
    result = inspector.inspect(views)
    assert inspector.cams == (0, 1, 2, 3)
    assert inspector.gradcam.score == 'logit'     # the loaded model's logits are reachable
    assert set(result.p_ng) == {0, 1, 2, 3} and all(0 <= p <= 1 for p in result.p_ng.values())
    assert set(result.timings_ms) == {'roi', 'inference', 'fusion'}
    width, height = TINY_INPUT_SIZE
    for cam in range(4):
        assert result.crops[cam].shape == (height, width, 3)
        assert result.heatmaps[cam].shape == (height, width)
        assert 0.0 <= result.heatmaps[cam].min() and result.heatmaps[cam].max() <= 1.0
    # Same numbers as the plain model on the same crops, and the fusion rule applied.
    artifact = load_artifact(tiny_artifact)
    boxes = artifact.metadata.roi_boxes
    batch = prepare_batch([views[c] for c in range(4)], [boxes[c] for c in range(4)],
                          TINY_INPUT_SIZE)
    expected = artifact.model.predict(batch, verbose=0)[:, 1]
    np.testing.assert_allclose([result.p_ng[c] for c in range(4)], expected, atol=1e-5)
    is_ng = any(p >= inspector.threshold for p in expected)
    assert result.verdict.ok is (not is_ng)
    assert result.verdict.message == ('NG' if is_ng else 'OK')
    assert result.verdict.code == (2 if is_ng else 1)


def test_missing_bad_and_failed_views_make_ng_with_reasons(inspector):
    views = _views()
    views[2] = None
    views[1] = views[1][:100]                                   # wrong size
    views[3] = np.zeros((240, 320, 3), np.float32)              # wrong dtype
    result = inspector.inspect(views, failures={0: 'cannot decode image'})
    assert not result.verdict.ok and result.verdict.code == 2
    message = result.verdict.message
    assert message.startswith('NG: cam0: cannot decode image; ')
    assert 'cam1: frame is 320x100, the ROI boxes are for 320x240' in message
    assert 'missing view cam2' in message and 'cam3: ' in message and 'uint8' in message
    assert all(p is None for p in result.p_ng.values())
    only_missing = inspector.inspect({**_views(), 2: None})
    assert only_missing.verdict.message == 'NG: missing view cam2'
    assert inspector.inspect({}).verdict.message.startswith('NG: missing view cam0')


def test_inference_error_is_ng_not_an_exception(inspector, monkeypatch):
    def boom(batch):
        raise RuntimeError('out of memory\nsecond line')

    monkeypatch.setattr(inspector, 'gradcam', boom)
    result = inspector.inspect(_views())
    assert not result.verdict.ok
    assert result.verdict.message == 'NG: inference error: RuntimeError: out of memory second line'
    assert result.p_ng == {0: None, 1: None, 2: None, 3: None}
    # Not even a malformed call raises.
    broken = inspector.inspect(None, failures={'x': 'y'})
    assert broken.verdict.message.startswith('NG: inference error: ')


def test_mosaic(inspector):
    result = inspector.inspect({**_views(), 1: None})
    image = inspector.render_mosaic(result, 42)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.flags['C_CONTIGUOUS']
    assert image[5, 5, 2] > image[5, 5, 1]                       # red NG banner


def test_camera_config_override_and_load_errors(tiny_artifact, tmp_path):  # noqa: F811
    boxes = {cam: (0, 0, 320, 240) for cam in (0, 1)}
    inspector = Inspector.from_artifact(tiny_artifact, CameraConfig((320, 240), boxes))
    assert inspector.cams == (0, 1)
    result = inspector.inspect(_views())        # views 2, 3 are extra: no box -> reported
    assert 'cam2: no ROI box configured' in result.verdict.message
    with pytest.raises(ModelError):
        Inspector.from_artifact(tmp_path / 'missing')


def test_warm_up_and_speed(inspector):
    assert inspector.warm_up() >= 0
    result = inspector.inspect(_views(7))
    assert result.timings_ms['inference'] < 5000


def _same(a, b):
    assert a.verdict == b.verdict and a.p_ng == b.p_ng
    assert set(a.crops) == set(b.crops) and set(a.heatmaps) == set(b.heatmaps)
    for cam in a.crops:
        assert np.array_equal(a.crops[cam], b.crops[cam])
    for cam in a.heatmaps:
        np.testing.assert_array_equal(a.heatmaps[cam], b.heatmaps[cam])


def test_consecutive_bolts_are_independent_of_the_reused_batch(tiny_artifact):  # noqa: F811
    reused = Inspector.from_artifact(tiny_artifact)
    bolts = [_views(3), {**_views(4), 2: None}, _views(5)]   # 4, 3 then 4 views again
    results = [reused.inspect(views) for views in bolts]
    snapshots = [(dict(r.p_ng), {c: h.copy() for c, h in r.heatmaps.items()}) for r in results]
    for views, result in zip(bolts, results, strict=True):
        _same(result, Inspector.from_artifact(tiny_artifact).inspect(views))
    # Later bolts did not change earlier results, and no result points into the batch buffer.
    for result, (p_ng, heatmaps) in zip(results, snapshots, strict=True):
        assert result.p_ng == p_ng
        for cam, heatmap in heatmaps.items():
            np.testing.assert_array_equal(result.heatmaps[cam], heatmap)
        for array in [*result.crops.values(), *result.heatmaps.values()]:
            assert not np.shares_memory(array, reused._batch)
    # The batch is the RGB float32 crops of the last bolt.
    np.testing.assert_array_equal(reused._batch[0], results[2].crops[0][:, :, ::-1])
    assert reused._batch.dtype == np.float32
