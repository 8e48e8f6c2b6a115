"""Inference engines (issue 19): the fast path gives the reference's verdicts and Grad-CAM.

Tiny models made here (STYLE rule 7): the shared tiny artifact trained on synthetic bolts is
copied per test before its engines are exported, so no other test sees an export.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures_ml import TINY_INPUT_SIZE, render_views, tiny_artifact  # noqa: F401

from bolt_inspection.core.errors import ConfigError
from bolt_inspection.core.line.inspector import Inspector
from bolt_inspection.core.model import engine as eng
from bolt_inspection.core.model.artifact import load_artifact, save_artifact
from bolt_inspection.core.model.export import export_after_training, export_artifact, views_sha256
from bolt_inspection.core.model.gradcam import GradCAM
from bolt_inspection.core.vision import synth
from bolt_inspection.core.vision.roi import prepare_batch

pytest.importorskip('openvino')
pytest.importorskip('nncf')

FRAME = (320, 240)


def _crops(seed: int, bolts) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 ROI crops at the tiny input and their labels (1 = NG)."""
    frames, cams, labels = render_views(seed, bolts, FRAME)
    boxes = synth.default_roi_boxes(FRAME)
    x = prepare_batch(frames, [boxes[c] for c in cams], TINY_INPUT_SIZE)
    return np.clip(np.round(x), 0, 255).astype(np.uint8), np.asarray(labels)


@pytest.fixture(scope='module')
def views():
    """Calibration views (training seed 0) and held-out views (seed 5, other bolts)."""
    calibration, _ = _crops(0, range(40))
    held_out, labels = _crops(5, range(100, 160))
    return calibration, held_out, labels


@pytest.fixture(scope='module')
def exported(tiny_artifact, views, tmp_path_factory):  # noqa: F811
    """A copy of the tiny artifact with its engines exported (module scope: do not modify)."""
    path = tmp_path_factory.mktemp('exported') / 'model'
    shutil.copytree(tiny_artifact, path)
    calibration, held_out, labels = views
    export_artifact(path, calibration, held_out, labels, progress=False)
    return path


@pytest.fixture
def copy_of(tmp_path):
    def make(source):
        target = tmp_path / 'model'
        shutil.copytree(source, target)
        return target
    return make


def _bolts(seed: int, ids):
    """Frames of whole bolts: {cam: BGR frame} per bolt."""
    out = []
    for bolt_id in ids:
        spec = synth.bolt_spec(seed, int(bolt_id))
        out.append({cam: view.image for cam, view in enumerate(synth.render_bolt(spec, FRAME))})
    return out


def test_the_fast_engine_gives_the_references_verdicts_and_heatmaps(exported):
    """What a plant engineer checks before switching: same OK/NG, same place on the heatmap."""
    fast = Inspector.from_artifact(exported)                  # 'auto'
    reference = Inspector.from_artifact(exported, engine='tf')
    assert fast.engine.name == 'openvino-int8' and fast.engine_warnings == []
    assert fast.model_id.endswith('/openvino-int8') and reference.model_id.endswith('/tf')
    decisions, peaks, corrs = [], [], []
    for views in _bolts(7, range(200, 240)):
        a, b = reference.inspect(views), fast.inspect(views)
        assert a.verdict.ok == b.verdict.ok
        for cam in reference.cams:
            decisions.append((a.p_ng[cam] >= reference.threshold)
                             == (b.p_ng[cam] >= fast.threshold))
        cmp = eng.compare_views(
            np.stack([[1 - a.p_ng[c], a.p_ng[c]] for c in reference.cams]),
            np.stack([a.heatmaps[c] for c in reference.cams]),
            np.stack([[1 - b.p_ng[c], b.p_ng[c]] for c in reference.cams]),
            np.stack([b.heatmaps[c] for c in reference.cams]), 1, fast.engine.grid_hw)
        peaks += list(cmp['peak_same'])
        corrs += list(cmp['corr'])
        assert b.heatmaps[0].shape == a.heatmaps[0].shape and b.heatmaps[0].max() <= 1.0
    assert np.mean(decisions) >= 0.995
    assert np.mean(peaks) >= 0.99
    assert np.mean(corrs) >= 0.98


def test_the_head_and_grad_cam_on_the_activation_equal_the_full_reference():
    """The split is exact in f32: the tail on TensorFlow's own activation = GradCAM (Eq. 2-4)."""
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.model.network import build_tiny

    rng = np.random.default_rng(1)
    batch = rng.uniform(0, 255, (5, 64, 32, 3)).astype(np.float32)
    for head, dense in (('flatten', 8), ('gap', 0), ('gmp', 4)):
        model = build_tiny(TINY_INPUT_SIZE, filters=(4, 8), head=head, dense_units=dense, seed=3)
        reference = GradCAM(model, 'last_conv')
        tail = eng.GradCamTail(reference)
        activation = keras().Model(model.input, model.get_layer('last_conv').output)(batch)
        probs, heat = tail(np.asarray(activation))
        ref_probs, ref_heat = reference(batch)
        np.testing.assert_allclose(probs, ref_probs, atol=1e-6)
        np.testing.assert_allclose(heat, ref_heat, atol=1e-5)


def test_the_export_records_what_it_was_made_from(exported, views):
    manifest = json.loads((exported / 'engines' / 'manifest.json').read_text())
    artifact = load_artifact(exported)
    calibration, held_out, labels = views
    assert manifest['model_id'] == artifact.model_id
    assert manifest['calibration']['sha256'] == views_sha256(calibration)
    assert manifest['calibration']['views'] == len(calibration)
    assert manifest['validation']['views'] == len(held_out)
    assert manifest['validation']['ng_views'] == int(labels.sum())
    assert {'backbone.xml', 'backbone.bin', 'backbone_int8.xml', 'backbone_int8.bin',
            'validation.npz', 'probe.npz'} <= set(manifest['files'])
    for name, check in manifest['engines'].items():
        assert check['validation']['passes'], (name, check['validation']['failures'])
        assert check['validation']['ng_recall'] >= check['validation']['ng_recall_reference']
    # The INT8 weights really are smaller than the f32 ones (the quantised model, not a copy).
    folder = exported / 'engines'
    assert (folder / 'backbone_int8.bin').stat().st_size < (folder / 'backbone.bin').stat().st_size


def test_a_missing_export_runs_the_reference_with_a_warning(tiny_artifact):  # noqa: F811
    for requested in ('auto', 'openvino-int8'):
        inspector = Inspector.from_artifact(tiny_artifact, engine=requested)
        assert inspector.engine.name == 'tf'
        assert inspector.model_id.endswith('/tf')
        assert any('no engine export' in w for w in inspector.engine_warnings)
    assert Inspector.from_artifact(tiny_artifact, engine='tf').engine_warnings == []


def test_a_stale_export_is_not_used(exported, copy_of):
    """The model was retrained in place: the old export must not explain the new weights."""
    path = copy_of(exported)
    artifact = load_artifact(path)
    model = artifact.model
    model.set_weights([w * 1.01 for w in model.get_weights()])
    save_artifact(model, artifact.metadata, path)
    inspector = Inspector.from_artifact(path)
    assert inspector.engine.name == 'tf'
    assert any('stale' in w for w in inspector.engine_warnings)


def test_a_corrupt_export_file_falls_back_instead_of_crashing(exported, copy_of):
    path = copy_of(exported)
    weights = path / 'engines' / 'backbone_int8.bin'
    weights.write_bytes(weights.read_bytes()[:100])
    inspector = Inspector.from_artifact(path, engine='openvino-int8')
    assert inspector.engine.name == 'tf'
    assert any('corrupt' in w for w in inspector.engine_warnings)


def test_an_engine_that_disagrees_with_the_reference_is_refused(exported, copy_of, views):
    """Wrong weights behind valid hashes (a swapped IR): the load-time probe catches it."""
    path = copy_of(exported)
    artifact = load_artifact(path)
    broken = path.parent / 'broken'
    shutil.copytree(path, broken)
    model = load_artifact(broken).model
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    save_artifact(model, artifact.metadata, broken)
    calibration, held_out, labels = views
    export_artifact(broken, calibration, held_out[:16], labels[:16], progress=False,
                    engines=('openvino-int8',))
    # Put the other model's INT8 backbone into this artifact and re-sign the manifest, as a
    # careless copy between machines would: hashes match, answers do not.
    for name in ('backbone_int8.xml', 'backbone_int8.bin'):
        shutil.copy(broken / 'engines' / name, path / 'engines' / name)
    manifest_path = path / 'engines' / 'manifest.json'
    manifest = json.loads(manifest_path.read_text())
    for name in ('backbone_int8.xml', 'backbone_int8.bin'):
        manifest['files'][name] = eng.file_sha256(path / 'engines' / name)
    manifest_path.write_text(json.dumps(manifest))
    inspector = Inspector.from_artifact(path, engine='openvino-int8')
    assert inspector.engine.name == 'tf'
    assert any('disagrees with the reference' in w for w in inspector.engine_warnings)


def test_a_failed_validation_keeps_auto_on_the_reference(exported, copy_of):
    """An engine whose stored agreement misses the criteria is never picked by 'auto'."""
    path = copy_of(exported)
    data = dict(np.load(path / 'engines' / 'validation.npz'))
    for key in ('p_openvino_int8', 'p_openvino_bf16'):
        data[key] = 1.0 - data['p_ref']          # every decision flipped
    _resign(path, data)
    inspector = Inspector.from_artifact(path)
    assert inspector.engine.name == 'tf'
    assert any('failed validation' in w and 'decision_agreement' in w
               for w in inspector.engine_warnings)


def _resign(path, data):
    np.savez_compressed(path / 'engines' / 'validation.npz', **data)
    manifest_path = path / 'engines' / 'manifest.json'
    manifest = json.loads(manifest_path.read_text())
    manifest['files']['validation.npz'] = eng.file_sha256(path / 'engines' / 'validation.npz')
    manifest_path.write_text(json.dumps(manifest))


def test_an_engine_that_shifts_probabilities_runs_at_its_own_threshold(exported, copy_of):
    """bf16 lowers every NG probability a little: at a low calibrated threshold a few decisions
    flip and the engine fails validation. At its own, slightly lower threshold (from the stored
    validation data) it agrees with the reference again, keeps the NG recall, and runs."""
    path = copy_of(exported)
    threshold = load_artifact(path).metadata.threshold
    data = dict(np.load(path / 'engines' / 'validation.npz'))
    n = len(data['p_ref'])
    data['p_ref'] = np.linspace(0.0, 1.0, n)
    data['labels'] = (data['p_ref'] >= threshold).astype(np.int64)
    data['p_openvino_bf16'] = np.clip(data['p_ref'] - 0.08, 0.0, 1.0)
    _resign(path, data)
    inspector = Inspector.from_artifact(path, engine='openvino-bf16')
    assert inspector.engine.name == 'openvino-bf16', inspector.engine_warnings
    assert threshold - 0.09 < inspector.threshold < threshold
    assert 'own NG threshold' in inspector.engine_note
    # The reference keeps the model's threshold.
    assert Inspector.from_artifact(path, engine='tf').threshold == threshold


def test_engine_threshold_recovers_a_shift_and_never_trades_ng_recall():
    p_ref = np.linspace(0.0, 1.0, 400)
    labels = (p_ref >= 0.13).astype(int)
    same, corr = np.ones(400, bool), np.ones(400)
    shifted = np.clip(p_ref - 0.02, 0, 1)
    plain = eng.agreement(p_ref, shifted, same, corr, 0.13, labels)
    assert not plain['passes'] and plain['ng_recall'] < 1.0
    check = eng.recalibrated_agreement(p_ref, shifted, same, corr, 0.13, labels)
    assert check['passes'] and check['recalibrated']
    assert check['ng_recall'] == check['ng_recall_reference'] == 1.0
    assert 0.105 <= check['engine_threshold'] <= 0.111
    assert check['failures_at_threshold'] == plain['failures']
    # Agreeing engines keep the reference's threshold; noise no threshold can fix stays failed.
    assert eng.engine_threshold(p_ref, p_ref, 0.13, labels) == 0.13
    noise = np.random.default_rng(0).uniform(0, 1, 400)
    failed = eng.recalibrated_agreement(p_ref, noise, same, corr, 0.13, labels)
    assert not failed['passes'] and not failed['recalibrated']


def test_an_unknown_engine_is_one_clear_error(tiny_artifact):  # noqa: F811
    with pytest.raises(ConfigError, match='not one of auto, tf, openvino'):
        Inspector.from_artifact(tiny_artifact, engine='tensorrt')


def test_a_failed_export_after_training_is_a_warning(tiny_artifact, copy_of):  # noqa: F811
    path = copy_of(tiny_artifact)
    lines = []
    wrong_size = np.zeros((4, 10, 10, 3), np.uint8)
    assert export_after_training(path, wrong_size, log=lines.append) is None
    assert any(line.startswith('warning: engine export failed') for line in lines)
    assert not (path / 'engines').exists()
    assert Inspector.from_artifact(path).engine.name == 'tf'


def test_agreement_flags_each_criterion():
    p_ref = np.linspace(0, 1, 200)
    same = np.ones(200, bool)
    corr = np.ones(200)
    good = eng.agreement(p_ref, p_ref, same, corr, 0.5, labels=(p_ref > 0.5).astype(int))
    assert good['passes'] and good['decision_agreement'] == 1.0
    flipped = p_ref.copy()
    flipped[p_ref >= 0.5] = 0.0                   # misses every NG view
    bad = eng.agreement(p_ref, flipped, same, corr, 0.5, labels=(p_ref >= 0.5).astype(int))
    assert not bad['passes']
    assert any('decision_agreement' in f for f in bad['failures'])
    assert any('NG recall' in f for f in bad['failures'])
    off = eng.agreement(p_ref, p_ref, np.zeros(200, bool), corr * 0.5, 0.5)
    assert {f.split()[0] for f in off['failures']} == {'peak_cell_agreement',
                                                        'heatmap_corr_mean'}


def test_the_export_command_on_an_older_artifact(tiny_artifact, copy_of, tmp_path, capsys):  # noqa: F811
    from bolt_inspection.cli import main

    path = copy_of(tiny_artifact)
    data = tmp_path / 'data'
    assert main(['synth', '--out', str(data), '--bolts', '16', '--seed', '9', '--size',
                 f'{FRAME[0]}x{FRAME[1]}']) == 0
    capsys.readouterr()
    assert main(['export', '--model', str(path)]) == 2
    assert capsys.readouterr().err.strip().startswith('error: export needs --data')
    assert main(['export', '--model', str(path), '--data', str(data), '--no-progress']) == 0
    printed = capsys.readouterr().out
    assert f'model {load_artifact(path).model_id}: auto runs openvino-' in printed
    manifest = json.loads((path / 'engines' / 'manifest.json').read_text())
    assert manifest['calibration']['source'].startswith('half of the bolts of')
    assert manifest['validation']['views'] == 32
    assert main(['export', '--model', str(path), '--status']) == 0
    assert 'auto runs openvino-' in capsys.readouterr().out


def test_views_on_the_threshold_are_ties_but_ng_recall_counts_them():
    """Training calibrates the threshold on the views the export validates on: one view sits on
    it, others within float noise. Their decisions are ties (not counted in the agreement); an
    NG view among them still counts for NG recall."""
    t = 0.1294
    p_ref = np.concatenate([np.linspace(0.0, 0.1, 100), [t, t - 0.0004, t - 0.0004],
                            np.linspace(0.2, 1.0, 97)])
    labels = (p_ref >= t).astype(int)
    p = p_ref.copy()
    p[100], p[101], p[102] = t - 0.005, t + 0.001, t + 0.004   # the ties flip both ways
    same, corr = np.ones(200, bool), np.ones(200)
    plain = eng.agreement(p_ref, p, same, corr, t, labels)
    assert plain['decision_ties'] == 3 and plain['decision_agreement'] == 1.0
    assert not plain['passes'] and any('NG recall' in f for f in plain['failures'])
    check = eng.recalibrated_agreement(p_ref, p, same, corr, t, labels)
    assert check['passes'] and check['recalibrated'] and check['engine_threshold'] < t
    assert check['ng_recall'] == check['ng_recall_reference']
