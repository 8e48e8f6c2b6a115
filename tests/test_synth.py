"""The synthetic bolt rig: scenario purity, determinism, ground truth and the synth command."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest

from bolt_inspection.core.vision import synth
from bolt_inspection.core.vision.dataset import load_dataset
from bolt_inspection.core.vision.synth import (
    DEFECTS,
    BoltSpec,
    bolt_spec,
    default_roi_boxes,
    generate_dataset,
    render_bolt,
    render_view,
)

SMALL = (320, 240)


def _spec_with(defect: str, seed: int = 11, max_severity: float = 1.0) -> BoltSpec:
    """The first bolt of ``seed`` with the given defect (and severity at most max_severity)."""
    for bolt_id in range(2000):
        spec = bolt_spec(seed, bolt_id, defect_rate=0.0 if defect == 'ok' else 1.0)
        if spec.defect == defect and spec.severity <= max_severity:
            return spec
    raise AssertionError(f'no {defect} bolt found')


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'bolt_inspection.cli', *args],
                          capture_output=True, text=True, timeout=120)


# --- the scenario -----------------------------------------------------------------------------

def test_bolt_spec_is_a_pure_function_of_its_arguments():
    a = [bolt_spec(7, n, 0.4) for n in range(50)]
    b = [bolt_spec(7, n, 0.4) for n in reversed(range(50))][::-1]
    assert a == b
    # Another seed is another scenario.
    assert [s.defect for s in a] != [bolt_spec(8, n, 0.4).defect for n in range(50)]


def test_bolt_spec_fields_and_label():
    for n in range(200):
        spec = bolt_spec(1, n)
        assert spec.bolt_id == n
        assert spec.defect in DEFECTS
        assert 0.0 <= spec.severity <= 1.0
        assert spec.label == ('OK' if spec.defect == 'ok' else 'NG')
        json.dumps(spec.params)   # plain data, so other processes can log and compare it


def test_class_balance_follows_defect_rate():
    specs = [bolt_spec(3, n, defect_rate=0.3) for n in range(1000)]
    ng = sum(s.label == 'NG' for s in specs)
    assert 250 <= ng <= 350                      # 300 expected, sd ~14.5
    per_defect = Counter(s.defect for s in specs if s.label == 'NG')
    assert set(per_defect) == set(DEFECTS[1:])
    assert min(per_defect.values()) >= ng / 4 * 0.6
    assert all(s.label == 'OK' for s in (bolt_spec(3, n, 0.0) for n in range(100)))
    assert all(s.label == 'NG' for s in (bolt_spec(3, n, 1.0) for n in range(100)))


def test_raising_defect_rate_only_turns_ok_bolts_into_ng():
    for n in range(300):
        if bolt_spec(4, n, 0.2).label == 'NG':
            assert bolt_spec(4, n, 0.6).label == 'NG'


def test_specs_respect_the_coating_specification():
    for n in range(300):
        spec = bolt_spec(2, n, 0.5)
        p = spec.params
        assert 2.0 <= p['band_start_mm'] <= 2.3
        if spec.defect == 'short':
            assert 10.0 <= p['band_len_mm'] < 16.0
        else:
            assert 16.0 <= p['band_len_mm'] <= 17.0
        assert p['coated'] == (spec.defect != 'no_coating')
    hard_short = _spec_with('short', max_severity=0.1)
    # Hard, but at least 1 mm under the specification (see bolt_spec).
    assert 14.5 <= hard_short.params['band_len_mm'] <= 15.0


# --- rendering --------------------------------------------------------------------------------

def test_render_view_is_deterministic_and_seed_dependent():
    spec = bolt_spec(5, 17, 1.0)
    a = render_view(spec, 1, SMALL)
    b = render_view(spec, 1, SMALL)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()
    other = render_view(bolt_spec(6, 17, 1.0), 1, SMALL)
    assert other.image.tobytes() != a.image.tobytes()
    assert render_view(spec, 2, SMALL).image.tobytes() != a.image.tobytes()


def test_rendered_view_format():
    view = render_view(bolt_spec(0, 0), 0, (200, 150))
    assert view.image.shape == (150, 200, 3) and view.image.dtype == np.uint8
    assert view.mask.shape == (150, 200) and view.mask.dtype == np.uint8
    assert set(np.unique(view.mask)) <= {0, 255}
    assert len(render_bolt(bolt_spec(0, 0), (200, 150), n_cams=3)) == 3
    with pytest.raises(ValueError):
        render_view(bolt_spec(0, 0), 4, SMALL)


def test_masks_lie_in_thread_box_and_roi_and_match_visibility():
    boxes = default_roi_boxes(SMALL)
    seen_visible = 0
    for n in range(40):
        spec = bolt_spec(9, n, 0.9)
        for cam, view in enumerate(render_bolt(spec, SMALL)):
            assert view.defect_visible == bool(view.mask.any())
            if spec.defect == 'ok':
                assert not view.defect_visible
            x, y, w, h = view.thread_box
            rx, ry, rw, rh = boxes[cam]
            assert rx <= x and ry <= y and x + w <= rx + rw and y + h <= ry + rh
            ys, xs = np.nonzero(view.mask)
            if len(xs):
                seen_visible += 1
                assert x <= xs.min() and xs.max() < x + w
                assert y <= ys.min() and ys.max() < y + h
    assert seen_visible > 20


@pytest.mark.parametrize('defect', ['no_coating', 'short'])
def test_band_defects_are_visible_in_every_view(defect):
    for seed in (1, 2, 3):
        spec = _spec_with(defect, seed=seed, max_severity=0.15 if defect == 'short' else 1.0)
        assert all(v.defect_visible for v in render_bolt(spec, SMALL))


@pytest.mark.parametrize('defect', ['insufficient', 'foreign'])
def test_local_defects_are_visible_in_some_views_only(defect):
    counts = []
    for n in range(400):
        spec = bolt_spec(21, n, 1.0)
        if spec.defect != defect:
            continue
        counts.append(sum(v.defect_visible for v in render_bolt(spec, (160, 120))))
        if len(counts) == 12:
            break
    assert min(counts) >= 1          # every NG bolt shows its defect to some camera
    assert min(counts) < 4           # ... and some bolts hide it from some cameras


def test_defect_changes_the_pixels_where_the_mask_says():
    spec = _spec_with('foreign')
    clean = BoltSpec(spec.bolt_id, 'ok', 0.0, {**spec.params, 'particles': []})
    visible = 0
    for cam in range(4):
        view = render_view(spec, cam, (640, 480))
        ref = render_view(clean, cam, (640, 480))
        diff = cv2.absdiff(view.image, ref.image).max(axis=2) > 40
        if view.defect_visible:
            visible += 1
            inside = diff[view.mask > 0].mean()
            assert inside > 0.5
            assert diff[view.mask == 0].mean() < 0.01
        else:
            assert diff.mean() < 0.01
    assert visible >= 1


def test_default_roi_boxes_scale_with_size_and_stay_in_frame():
    full = default_roi_boxes()
    half = default_roi_boxes((640, 480))
    assert set(full) == {0, 1, 2, 3}
    for cam, (x, y, w, h) in full.items():
        assert 0 <= x and 0 <= y and x + w <= 1280 and y + h <= 960
        assert 1.8 <= h / w <= 2.2          # about the paper's 425 x 840
        hx, hy, hw, hh = half[cam]
        assert abs(hx - x / 2) <= 1 and abs(hw - w / 2) <= 1 and abs(hh - h / 2) <= 1


def test_cameras_yaml_matches_default_roi_boxes():
    from bolt_inspection import paths
    from bolt_inspection.core.config import load_yaml

    data = load_yaml(paths.config_path('cameras.yaml'))
    assert data['frame_size'] == [1280, 960]
    boxes = default_roi_boxes((1280, 960))
    assert {int(k): tuple(v['roi']) for k, v in data['cameras'].items()} == boxes


def test_distractor_is_label_correlated_and_outside_every_roi():
    boxes = default_roi_boxes(SMALL)
    lit = Counter()
    for n in range(300):
        spec = bolt_spec(13, n, 0.5)
        lit[spec.label, spec.params['distractor_on']] += 1
    p_ng = lit['NG', True] / (lit['NG', True] + lit['NG', False])
    p_ok = lit['OK', True] / (lit['OK', True] + lit['OK', False])
    assert p_ng > 0.8 and p_ok < 0.2
    on = next(s for s in (bolt_spec(13, n) for n in range(50)) if s.params['distractor_on'])
    for cam in range(4):
        with_lamp = render_view(on, cam, SMALL, distractor=True).image
        without = render_view(on, cam, SMALL).image
        changed = cv2.absdiff(with_lamp, without).max(axis=2) > 0
        assert changed.any()
        x, y, w, h = boxes[cam]
        assert not changed[y:y + h, x:x + w].any()


def test_render_speed_full_frame():
    import time

    spec = _spec_with('insufficient')
    render_view(spec, 0)                      # warm the background cache
    start = time.perf_counter()
    for cam in range(4):
        render_view(spec, cam, distractor=True)
    per_view = (time.perf_counter() - start) / 4
    assert per_view < 0.25                    # ~20 ms on an idle core; generous for shared CI


# --- datasets on disk and the command ---------------------------------------------------------

def test_generate_dataset_writes_consistent_files(tmp_path):
    out = generate_dataset(tmp_path / 'ds', seed=2, bolts=5, defect_rate=0.6, size=SMALL,
                           progress=False, first_bolt_id=10)
    meta = json.loads((out / 'synth.json').read_text())
    assert meta['seed'] == 2 and meta['size'] == [320, 240] and meta['n_cams'] == 4
    with open(out / 'labels.csv', newline='') as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(synth.LABEL_COLUMNS)
    assert len(rows) == 20
    assert {int(r['bolt_id']) for r in rows} == set(range(10, 15))
    for r in rows:
        spec = bolt_spec(2, int(r['bolt_id']), 0.6)
        assert r['defect'] == spec.defect and r['bolt_label'] == spec.label
        image = cv2.imread(str(out / r['image']))
        mask = cv2.imread(str(out / r['mask']), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (240, 320, 3)
        assert (r['view_label'] == 'NG') == bool(mask.any())
        view = render_view(spec, int(r['cam']), SMALL)
        assert np.array_equal(image, view.image)   # PNG is lossless: the files are the render


def test_synth_cli_same_seed_same_bytes(tmp_path):
    for name in ('a', 'b'):
        result = _cli('synth', '--out', str(tmp_path / name), '--bolts', '3', '--seed', '4',
                      '--size', '160x120', '--defect-rate', '0.5', '--no-progress',
                      '--contact-sheet', '--distractor')
        assert result.returncode == 0, result.stderr
    assert 'bolts: OK' in result.stdout and 'views: NG' in result.stdout
    for f in sorted((tmp_path / 'a' / 'images').iterdir()):
        assert f.read_bytes() == (tmp_path / 'b' / 'images' / f.name).read_bytes()
    assert (tmp_path / 'a' / 'labels.csv').read_bytes() == \
        (tmp_path / 'b' / 'labels.csv').read_bytes()
    sheet = cv2.imread(str(tmp_path / 'a' / 'contact_sheet.png'))
    assert sheet is not None and sheet.shape[0] > 3 * 100
    ds = load_dataset(tmp_path / 'a')
    assert ds.kind == 'synthetic' and len(ds.bolts()) == 3


@pytest.mark.parametrize('args, message', [
    (['--size', '12by34'], 'WIDTHxHEIGHT'),
    (['--size', '2x2'], 'out of range'),
    (['--bolts', '0'], '> 0'),
    (['--defect-rate', '1.5'], '[0, 1]'),
])
def test_synth_cli_rejects_bad_arguments(tmp_path, args, message):
    result = _cli('synth', '--out', str(tmp_path / 'x'), *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'x').exists()


def test_synth_cli_output_path_is_a_file(tmp_path):
    target = tmp_path / 'file.txt'
    target.write_text('x')
    result = _cli('synth', '--out', str(target), '--bolts', '1', '--size', '64x48')
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'not a folder' in lines[0]
