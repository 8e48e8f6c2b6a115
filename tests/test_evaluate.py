"""Evaluation: metrics and Grad-CAM localisation on numbers built by hand, then the evaluate and
gradcam commands on a tiny trained model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from fixtures_ml import TINY_FRAME_SIZE, tiny_artifact  # noqa: F401 (fixture)
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from bolt_inspection.core.model.gradcam import heatmap_peak
from bolt_inspection.core.study.evaluate import (
    LocalisationTally,
    PeakCheck,
    ViewPrediction,
    bolt_scores,
    check_peak,
    compute_metrics,
    energy_share,
    format_table2,
    level_metrics,
    localisation_ceiling,
    peak_cell_in_mask,
    peak_in_mask,
    peak_reachable,
    reachable_peaks,
    write_metrics,
    write_predictions,
)


def fixed_confusion():
    """TP(NG->NG)=64, FN(NG->OK)=2, FP(OK->NG)=3, TN(OK->OK)=63: close to the paper's Table 2."""
    truth = ['NG'] * 66 + ['OK'] * 66
    scores = [0.9] * 64 + [0.1] * 2 + [0.8] * 3 + [0.2] * 63
    return truth, scores


def test_level_metrics_match_hand_count_and_sklearn():
    truth, scores = fixed_confusion()
    m = level_metrics(truth, scores, threshold=0.5)
    assert m['confusion'] == [[64, 2], [3, 63]]
    # Hand count, NG positive.
    assert m['NG']['precision'] == pytest.approx(64 / 67)
    assert m['NG']['recall'] == pytest.approx(64 / 66)
    assert m['OK']['precision'] == pytest.approx(63 / 65)
    assert m['OK']['recall'] == pytest.approx(63 / 66)
    assert m['NG']['support'] == 66 and m['OK']['support'] == 66
    assert m['accuracy'] == pytest.approx(127 / 132)
    pred = ['NG' if s >= 0.5 else 'OK' for s in scores]
    for cls in ('NG', 'OK'):
        assert m[cls]['precision'] == pytest.approx(precision_score(truth, pred, pos_label=cls))
        assert m[cls]['recall'] == pytest.approx(recall_score(truth, pred, pos_label=cls))
        assert m[cls]['f1'] == pytest.approx(f1_score(truth, pred, pos_label=cls))
    assert m['roc_auc'] == pytest.approx(
        roc_auc_score([t == 'NG' for t in truth], scores))


def test_threshold_is_inclusive_and_auc_undefined_for_one_class():
    m = level_metrics(['NG', 'NG'], [0.5, 0.49], threshold=0.5)
    assert m['confusion'] == [[1, 1], [0, 0]]
    assert m['roc_auc'] is None
    assert m['OK']['precision'] == 0.0  # never predicted correctly, no division error


def test_bolt_is_ng_if_any_view_is_ng():
    views = [
        # bolt 1: defective, defect visible on cam2 only, detected there
        *(ViewPrediction('1', c, 'NG' if c == 2 else 'OK', 'NG', p)
          for c, p in enumerate([0.1, 0.2, 0.7, 0.1])),
        # bolt 2: good, one view falsely over threshold -> bolt false reject
        *(ViewPrediction('2', c, 'OK', 'OK', p) for c, p in enumerate([0.1, 0.6, 0.1, 0.1])),
        # bolt 3: good, all clear
        *(ViewPrediction('3', c, 'OK', 'OK', 0.05) for c in range(4)),
        # bolt 4: defective, missed on every view
        *(ViewPrediction('4', c, 'NG', 'NG', 0.3) for c in range(4)),
    ]
    ids, labels, scores = bolt_scores(views)
    assert ids == ['1', '2', '3', '4']
    assert labels == ['NG', 'OK', 'OK', 'NG']
    assert scores == [0.7, 0.6, 0.05, 0.3]
    m = compute_metrics(views, threshold=0.5)
    assert m['bolt']['confusion'] == [[1, 1], [1, 1]]
    assert m['bolt']['NG']['support'] == 2 and m['bolt']['OK']['support'] == 2
    # Views: NG views = bolt1 cam2 (hit) + 4 of bolt 4 (missed); one OK view of bolt 2 rejected.
    assert m['view']['confusion'] == [[1, 4], [1, 10]]
    assert m['counts'] == {'views': 16, 'bolts': 4}


def test_metrics_json_structure(tmp_path):
    truth, scores = fixed_confusion()
    views = [ViewPrediction(str(i), 0, t, t, s)
             for i, (t, s) in enumerate(zip(truth, scores, strict=True))]
    m = compute_metrics(views, threshold=0.5)
    m['localisation'] = LocalisationTally().summary()
    path = write_metrics(m, tmp_path / 'out' / 'metrics.json')
    data = json.loads(path.read_text())
    for level in ('view', 'bolt'):
        assert set(data[level]) == {'NG', 'OK', 'accuracy', 'roc_auc', 'confusion'}
        for cls in ('NG', 'OK'):
            assert set(data[level][cls]) == {'precision', 'recall', 'f1', 'support'}
        assert np.asarray(data[level]['confusion']).shape == (2, 2)
    assert data['threshold'] == 0.5
    assert data['confusion_axes'] == {'rows': 'true label', 'columns': 'predicted label',
                                      'order': ['NG', 'OK']}
    assert 'peak_in_mask' in data['localisation']


def test_table2_text_has_paper_layout():
    truth, scores = fixed_confusion()
    text = format_table2(level_metrics(truth, scores, 0.5), 'view level')
    lines = text.splitlines()
    assert lines[1].split() == ['precision', 'recall', 'F1-score', 'support']
    assert lines[2].startswith('Defective (NG)') and lines[2].split()[-1] == '66'
    assert lines[3].startswith('Non-defective (OK)')
    assert lines[2].split()[-2] == '0.962'  # F1_NG = 2*64 / (2*64 + 2 + 3)
    assert 'true NG' in text and 'pred OK' in text


def test_peak_inside_mask_is_located_outside_is_not():
    frame = (200, 100)  # w, h
    roi = (50, 0, 100, 100)  # the model input is this 100x100 box, resized to 50x50
    mask = np.zeros((100, 200), np.uint8)
    mask[40:50, 110:120] = 255  # defect at frame x 110..119, y 40..49 -> ROI x 60..69
    heat_in = np.zeros((50, 50), np.float32)
    heat_in[22, 32] = 1.0  # model pixel (32, 22) -> ROI (64, 44) -> frame (114, 44): inside
    heat_out = np.zeros((50, 50), np.float32)
    heat_out[5, 5] = 1.0  # far away
    assert peak_in_mask(heat_in, mask, roi, input_size=(50, 50), tolerance_px=0) is True
    assert peak_in_mask(heat_out, mask, roi, input_size=(50, 50), tolerance_px=4) is False
    # Full-frame model (region = whole frame), same mask.
    full = (0, 0) + frame
    heat_full = np.zeros((50, 100), np.float32)
    heat_full[22, 57] = 1.0  # -> frame (114, 44)
    assert peak_in_mask(heat_full, mask, full, tolerance_px=0) is True
    # No defect pixel inside the region: nothing to locate.
    assert peak_in_mask(heat_in, np.zeros_like(mask), roi) is None

    tally = LocalisationTally(tolerance_px=0)
    kw = dict(region=roi, roi_box=roi, thread_box=None, input_size=(50, 50))
    tally.add(heat_in, label='NG', mask=mask, defect='foreign', **kw)
    tally.add(heat_out, label='NG', mask=mask, defect='foreign', **kw)
    tally.add(heat_out, label='OK', mask=None, **kw)
    tally.add(np.zeros((50, 50)), label='NG', mask=mask, defect='short', **kw)
    s = tally.summary()
    assert s['peak_in_mask'] == pytest.approx(1 / 3)
    assert s['ng_views_scored'] == 3 and s['flat_heatmaps'] == 1
    assert s['peak_in_mask_by_defect']['foreign'] == {'located': 1, 'scored': 2}


def test_peak_cell_separates_a_coarse_grid_from_looking_elsewhere():
    # A 64x128 input over a 4x8 Grad-CAM grid (16 px cells); a 5 px spot in cell (row 2, col 1).
    box = (0, 0, 64, 128)
    mask = np.zeros((128, 64), np.uint8)
    mask[34:39, 18:23] = 255
    grid = np.zeros((8, 4), np.float32)
    grid[2, 1] = 1.0
    right_cell = cv2.resize(grid, (64, 128), interpolation=cv2.INTER_LINEAR)
    # Its peak is at the cell centre (y 40, x 24), beside the spot: a pixel-level miss.
    assert peak_in_mask(right_cell, mask, box, tolerance_px=0) is False
    assert peak_cell_in_mask(right_cell, mask, box, (4, 8)) is True
    grid[2, 1], grid[6, 3] = 0.0, 1.0
    other_cell = cv2.resize(grid, (64, 128), interpolation=cv2.INTER_LINEAR)
    assert peak_cell_in_mask(other_cell, mask, box, (4, 8)) is False
    assert peak_cell_in_mask(np.zeros((128, 64)), mask, box, (4, 8)) is False
    assert peak_cell_in_mask(right_cell, np.zeros_like(mask), box, (4, 8)) is None
    # At grid resolution the cells are read directly.
    assert peak_cell_in_mask(grid, mask, box, (4, 8)) is False
    grid[2, 1] = 2.0
    assert peak_cell_in_mask(grid, mask, box, (4, 8)) is True

    tally = LocalisationTally(tolerance_px=0, grid_wh=(4, 8))
    kw = dict(region=box, roi_box=box, thread_box=None, mask=mask, label='NG', defect='foreign')
    near = tally.add(right_cell, **kw)
    far = tally.add(other_cell, **kw)
    assert (near.located, near.located_cell, near.defect_px) == (False, True, 25)
    assert 0 < near.distance_px < 4                   # a pixel or two beside the spot
    assert far.located_cell is False and far.distance_px > 50
    s = tally.summary()
    assert s['peak_in_mask'] == 0.0 and s['peak_cell_in_mask'] == 0.5
    assert s['ng_views_located_cell'] == 1 and s['grid'] == [4, 8]
    assert s['peak_in_mask_by_defect']['foreign'] == {'located': 0, 'scored': 2,
                                                      'located_cell': 1, 'reachable': 0}
    # No cell centre of this grid lies on the spot: no model could have located it exactly.
    assert near.reachable is False and s['peak_in_mask_ceiling'] == 0.0


def upsampled(grid: np.ndarray, size_wh=(64, 128)) -> np.ndarray:
    """A Grad-CAM grid upsampled the way GradCAM does (bilinear, half-pixel centres)."""
    return cv2.resize(grid.astype(np.float32), size_wh, interpolation=cv2.INTER_LINEAR)


def test_peak_of_a_border_cell_is_its_centre_not_the_image_edge():
    grid = np.zeros((8, 4), np.float32)
    grid[0, 0] = 1.0                   # hottest cell: the top-left corner
    grid[1, 1] = 0.5
    heat = upsampled(grid)
    # Bilinear upsampling clamps at the border: the heatmap is flat from the cell centre
    # (7.5, 7.5) out to the corner, and argmax's first index would be the corner pixel.
    assert heat[0, 0] == heat.max() and np.unravel_index(heat.argmax(), heat.shape) == (0, 0)
    assert heatmap_peak(heat) == (7, 7)
    # A 4 px spot on that cell's centre is found; with the corner as the peak it was missed.
    mask = np.zeros((128, 64), np.uint8)
    mask[6:10, 6:10] = 255
    assert peak_in_mask(heat, mask, (0, 0, 64, 128), tolerance_px=0) is True
    grid[0, 0], grid[0, 2] = 0.0, 1.0  # top edge, third column: centre (7.5, 39.5)
    heat = upsampled(grid)
    assert np.unravel_index(heat.argmax(), heat.shape)[0] == 0
    row, col = heatmap_peak(heat)
    assert row == 7 and col in (39, 40)
    grid[0, 2], grid[3, 3] = 0.0, 1.0  # right edge, row 3: centre (55.5, 55.5)
    row, col = heatmap_peak(upsampled(grid))
    assert row in (55, 56) and col == 56
    # An exact tie of two neighbouring cells resolves on the first cell's centre.
    grid[:] = 0.0
    grid[4, 1] = grid[4, 2] = 1.0
    assert heatmap_peak(upsampled(grid)) == (71, 24)
    assert heatmap_peak(np.zeros((8, 8))) is None
    assert heatmap_peak(np.full((8, 8), np.nan)) is None


def random_grids(rng, shape_hw, n):
    """Grad-CAM-like grids: plain random, peaked, hot on the top/left border, tied cells."""
    gh, gw = shape_hw
    for k in range(n):
        grid = rng.random(shape_hw).astype(np.float32)
        if k % 5 == 1:
            grid **= 6
        elif k % 5 == 2:
            grid[0, rng.integers(gw)] = 2.0
        elif k % 5 == 3:
            grid[rng.integers(gh), 0] = 2.0
        elif k % 5 == 4 and gw > 1:
            r, c = rng.integers(gh), rng.integers(gw - 1)
            grid[r, c] = grid[r, c + 1] = 2.0
        yield grid


def test_reachable_peaks_are_the_pixels_around_the_cell_centres():
    reach = reachable_peaks((4, 8), (64, 128))
    assert reach.shape == (128, 64)
    # Centres at 16 i + 7.5: the two pixels either side, the inner one on the border.
    rows = [7, 23, 24, 39, 40, 55, 56, 71, 72, 87, 88, 103, 104, 120]
    cols = [7, 23, 24, 39, 40, 56]
    assert sorted(set(np.nonzero(reach)[0])) == rows
    assert sorted(set(np.nonzero(reach)[1])) == cols
    assert reach.sum() == len(rows) * len(cols) == 84
    # Whatever the grid, its upsampled peak is in the set: upsampled by OpenCV as the
    # evaluation does, or by TensorFlow as GradCAM does, also at sizes the grid does not divide.
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for (w, h), (gw, gh) in (((64, 128), (4, 8)), ((100, 200), (6, 12)), ((83, 117), (5, 7)),
                             ((16, 32), (1, 2))):
        reach = reachable_peaks((gw, gh), (w, h))
        for i, grid in enumerate(random_grids(rng, (gh, gw), 100)):
            assert reach[heatmap_peak(upsampled(grid, (w, h)))], (w, h, grid)
            if i % 10 == 0:
                tf_heat = tf.image.resize(grid[None, ..., None], (h, w), method='bilinear')
                assert reach[heatmap_peak(tf_heat.numpy()[0, ..., 0])], (w, h, grid)


def test_ceiling_bounds_every_model_and_depends_on_the_grid():
    box = (0, 0, 64, 128)
    between = np.zeros((128, 64), np.uint8)
    between[10:14, 10:14] = 255   # a 4 px spot between the centres of 16 px cells (7.5, 23.5)
    on_centre = np.zeros((128, 64), np.uint8)
    on_centre[38:42, 22:26] = 255  # on the centre (39.5, 23.5) of cell (row 2, col 1)
    assert peak_reachable(between, box, (64, 128), (4, 8), tolerance_px=0) is False
    assert peak_reachable(on_centre, box, (64, 128), (4, 8), tolerance_px=0) is True
    # Twice the grid (8 px cells) has a centre at (11.5, 11.5): now reachable.
    assert peak_reachable(between, box, (64, 128), (8, 16), tolerance_px=0) is True
    assert peak_reachable(np.zeros_like(between), box, (64, 128), (4, 8)) is None
    views = [(between, box), (on_centre, box), (np.zeros_like(between), box)]
    assert localisation_ceiling(views, (64, 128), (4, 8), tolerance_px=0) == (1, 2)
    # ... and the spot on a 16 px centre lies between the 8 px ones (35.5 / 43.5): a finer
    # grid is not always better for a given spot, which is why the bench sweeps input sizes.
    assert peak_reachable(on_centre, box, (64, 128), (8, 16), tolerance_px=0) is False
    assert localisation_ceiling(views, (64, 128), (8, 16), tolerance_px=0) == (1, 2)
    # An upper bound: whatever the heatmap, a located view is a reachable one. Each spot is
    # put near the heatmap's own peak, so that every case is a located one.
    rng = np.random.default_rng(1)
    for grid in random_grids(rng, (8, 4), 100):
        heat = upsampled(grid)
        row, col = np.clip(np.array(heatmap_peak(heat)) + rng.integers(-2, 3, 2), 1, [126, 62])
        mask = np.zeros((128, 64), np.uint8)
        mask[row - 1:row + 2, col - 1:col + 2] = 255
        assert peak_in_mask(heat, mask, box, tolerance_px=2) is True
        assert peak_reachable(mask, box, (64, 128), (4, 8), tolerance_px=2) is True
        # check_peak (what the evaluation records) makes the same two calls in one pass.
        check = check_peak(heat, mask, box, (64, 128), tolerance_px=2, grid_wh=(4, 8))
        assert (check.located, check.reachable) == (True, True)


def test_tolerance_catches_a_peak_next_to_a_thin_defect():
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 30] = 255  # a one-pixel-wide gap in the coating
    heat = np.zeros((64, 64), np.float32)
    heat[20, 33] = 1.0  # three pixels beside it
    box = (0, 0, 64, 64)
    assert peak_in_mask(heat, mask, box, tolerance_px=0) is False
    assert peak_in_mask(heat, mask, box, tolerance_px=4) is True


def test_energy_share_inside_roi():
    frame_region = (0, 0, 400, 200)
    heat = np.zeros((20, 40), np.float32)
    heat[:, 10:20] = 1.0  # frame x 100..199: all energy on the left-centre band
    assert energy_share(heat, frame_region, (100, 0, 100, 200)) == pytest.approx(1.0)
    assert energy_share(heat, frame_region, (200, 0, 200, 200)) == pytest.approx(0.0)
    assert energy_share(heat, frame_region, (150, 0, 250, 200)) == pytest.approx(0.5)
    assert energy_share(np.zeros((20, 40)), frame_region, (0, 0, 10, 10)) is None


# --------------------------------------------------------------------------- the CLI

@pytest.fixture(scope='module')
def tiny_dataset(tmp_path_factory):
    from bolt_inspection.core.vision import synth

    return synth.generate_dataset(tmp_path_factory.mktemp('eval_data'), seed=11, bolts=6,
                                  size=TINY_FRAME_SIZE, distractor=True, progress=False)


def _cli(argv, capsys):
    from bolt_inspection.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_evaluate_cli_writes_report(tiny_artifact, tiny_dataset, tmp_path, capsys):  # noqa: F811
    report = tmp_path / 'report'
    code, out, err = _cli(['evaluate', '--model', str(tiny_artifact), '--data',
                           str(tiny_dataset), '--report', str(report), '--no-progress'], capsys)
    assert code == 0, err
    assert 'Defective (NG)' in out and 'Bolt level' in out and 'ROC AUC' in out
    data = json.loads((report / 'metrics.json').read_text())
    assert data['counts'] == {'views': 24, 'bolts': 6}
    assert data['split'] == 'all'  # not the model's training data
    n_ng = data['view']['NG']['support']
    assert n_ng + data['view']['OK']['support'] == 24
    assert sum(map(sum, data['view']['confusion'])) == 24
    loc = data['localisation']
    assert loc['ng_views_scored'] + loc['ng_views_without_mask'] == n_ng
    assert loc['energy_in_roi'] == pytest.approx(1.0)  # an ROI model sees only its ROI
    assert 0.0 <= loc['energy_on_thread'] <= 1.0
    for name in ('training_curves', 'confusion', 'gradcam_gallery'):
        assert (report / f'{name}.png').stat().st_size > 1000
    assert loc['gradcam_layer'] == 'last_conv'
    # The grid's ceiling bounds what this model scored, and the CLI says both.
    assert loc['ng_views_located'] <= loc['ng_views_reachable'] <= loc['ng_views_scored']
    assert f'Best any Grad-CAM on this grid could do: {loc["ng_views_reachable"]}/' in out

    # An earlier conv layer, for diagnosis: same predictions, a grid twice as fine.
    code, out, err = _cli(['evaluate', '--model', str(tiny_artifact), '--data',
                           str(tiny_dataset), '--report', str(tmp_path / 'conv2'),
                           '--gradcam-layer', 'conv2', '--no-progress'], capsys)
    assert code == 0, err
    finer = json.loads((tmp_path / 'conv2' / 'metrics.json').read_text())
    assert finer['view'] == data['view']
    assert finer['localisation']['grid'] == [2 * v for v in loc['grid']]
    assert finer['localisation']['gradcam_layer'] == 'conv2'
    code, _, err = _cli(['evaluate', '--model', str(tiny_artifact), '--data', str(tiny_dataset),
                         '--report', str(tmp_path / 'bad'), '--gradcam-layer', 'fc9'], capsys)
    assert code == 2 and "'fc9' not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'bad').exists()              # no empty report left behind


@pytest.mark.slow
def test_gradcam_cli_writes_overlays(tiny_artifact, tiny_dataset, tmp_path, capsys):  # noqa: F811
    import cv2

    images = sorted((tiny_dataset / 'images').glob('*_cam*.png'))[:3]
    code, out, err = _cli(['gradcam', '--model', str(tiny_artifact), '--images',
                           *map(str, images), '--out', str(tmp_path / 'cams')], capsys)
    assert code == 0, err
    assert out.count('p_ng=') == 3
    overlay = cv2.imread(str(tmp_path / 'cams' / f'{images[0].stem}_gradcam.png'))
    assert overlay is not None and overlay.shape[0] > overlay.shape[1]  # the tall ROI crop
    # A frame without _cam<k> in its name needs --cam for an ROI model.
    odd = tmp_path / 'frame.png'
    odd.write_bytes(images[0].read_bytes())
    code, _, err = _cli(['gradcam', '--model', str(tiny_artifact), '--images', str(odd),
                         '--out', str(tmp_path / 'cams')], capsys)
    assert code == 2 and '--cam' in err and len(err.strip().splitlines()) == 1


def test_evaluate_cli_bad_inputs(tmp_path, capsys):
    from bolt_inspection.core.model.artifact import ModelMetadata

    # A model directory whose metadata is valid: the data is checked before the model loads.
    model_dir = tmp_path / 'model'
    model_dir.mkdir()
    (model_dir / 'metadata.json').write_text(json.dumps(ModelMetadata().to_json()))
    (tmp_path / 'empty').mkdir()
    code, _, err = _cli(['evaluate', '--model', str(tmp_path / 'nope'), '--data',
                         str(tmp_path / 'empty'), '--report', str(tmp_path / 'r')], capsys)
    assert code == 2
    assert err.startswith('error: ') and 'nope' in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(['evaluate', '--model', str(model_dir), '--data',
                         str(tmp_path / 'empty'), '--report', str(tmp_path / 'r')], capsys)
    assert code == 2
    assert err.startswith('error: ') and 'empty' in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'r' / 'metrics.json').exists()
    code, _, err = _cli(['evaluate', '--model', str(model_dir), '--data',
                         str(tmp_path / 'missing'), '--report', str(tmp_path / 'r')], capsys)
    assert code == 2 and 'missing' in err and len(err.strip().splitlines()) == 1


def test_split_auto_uses_validation_bolts_of_the_training_dataset(tiny_dataset):
    from types import SimpleNamespace

    from bolt_inspection.core.study.evaluate import select_records
    from bolt_inspection.core.vision.dataset import load_dataset, split_by_bolt

    dataset = load_dataset(tiny_dataset)
    trained_here = SimpleNamespace(dataset_fingerprint=dataset.fingerprint(),
                                   training={'config': {'val_fraction': 0.34, 'seed': 3}})
    records, used = select_records(dataset, trained_here, 'auto')
    assert used == 'val'
    assert records == split_by_bolt(dataset.records, 0.34, 3)[1]
    assert 0 < len(records) < len(dataset.records)
    elsewhere = SimpleNamespace(dataset_fingerprint='other', training={})
    records, used = select_records(dataset, elsewhere, 'auto')
    assert used == 'all' and len(records) == 24


def test_predictions_csv_says_where_each_ng_peak_fell(tmp_path):
    import csv

    views = [ViewPrediction('1', 0, 'NG', 'NG', 0.9, 'foreign',
                            PeakCheck(False, True, 2.5, 25, True)),
             ViewPrediction('1', 1, 'OK', 'NG', 0.2, 'foreign'),
             ViewPrediction('2', 0, 'OK', 'OK', 0.6, 'ok')]
    rows = list(csv.DictReader(write_predictions(views, 0.5, tmp_path / 'p.csv').open()))
    assert [r['predicted'] for r in rows] == ['NG', 'OK', 'NG']
    assert (rows[0]['peak_located'], rows[0]['peak_cell_located'],
            rows[0]['peak_to_defect_px'], rows[0]['defect_px'],
            rows[0]['peak_reachable']) == ('0', '1', '2.5', '25', '1')
    assert rows[1]['peak_located'] == rows[2]['defect_px'] == rows[2]['peak_reachable'] == ''
