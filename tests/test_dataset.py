"""Dataset loading (labels.csv and OK/ + NG/ folders), bolt-wise splits and image reading."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest

from bolt_inspection.core.errors import DatasetError, ImageError
from bolt_inspection.core.vision.dataset import (
    Dataset,
    ViewRecord,
    load_dataset,
    read_image,
    split_by_bolt,
)
from bolt_inspection.core.vision.synth import generate_dataset


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp('synth') / 'ds'
    return generate_dataset(out, seed=1, bolts=12, defect_rate=0.5, size=(96, 72),
                            progress=False)


def _write(path, image=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.full((40, 30, 3), 128, np.uint8)
    assert cv2.imwrite(str(path), image)


def _records(n_ok: int, n_ng: int, views: int = 4) -> list[ViewRecord]:
    records = []
    for bolt in range(n_ok + n_ng):
        bolt_label = 'OK' if bolt < n_ok else 'NG'
        for cam in range(views):
            label = 'NG' if bolt_label == 'NG' and cam % 2 == 0 else 'OK'
            records.append(ViewRecord(str(bolt), cam, f'/x/{bolt}_{cam}.png', label,
                                      bolt_label, 'unknown', None, None))
    return records


# --- labels.csv layout --------------------------------------------------------------------------

def test_load_synthetic_dataset(synthetic):
    ds = load_dataset(synthetic)
    assert isinstance(ds, Dataset) and ds.kind == 'synthetic'
    assert len(ds.records) == 48 and len(ds.bolts()) == 12
    for bolt_id, views in ds.bolts().items():
        assert [v.cam for v in views] == [0, 1, 2, 3]
        assert len({v.bolt_label for v in views}) == 1
        assert bolt_id.isdigit()
    for r in ds.records:
        assert r.image_path.is_file() and r.mask_path.is_file()
        assert r.label in ('OK', 'NG') and len(r.thread_box) == 4
        if r.bolt_label == 'OK':
            assert r.label == 'OK' and r.defect == 'ok'
    image = read_image(ds.records[0].image_path)
    assert image.shape == (72, 96, 3) and image.dtype == np.uint8


def test_fingerprint_tracks_the_label_table(synthetic, tmp_path):
    a, b = load_dataset(synthetic), load_dataset(synthetic)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    other = generate_dataset(tmp_path / 'o', seed=2, bolts=12, size=(96, 72), progress=False)
    assert load_dataset(other).fingerprint() != a.fingerprint()


def test_labels_csv_missing_columns(tmp_path):
    (tmp_path / 'labels.csv').write_text('bolt_id,image\n1,a.png\n')
    with pytest.raises(DatasetError, match='missing column.*cam.*view_label'):
        load_dataset(tmp_path)


def test_labels_csv_referencing_missing_file(synthetic, tmp_path):
    import shutil
    copy = tmp_path / 'copy'
    shutil.copytree(synthetic, copy)
    (copy / 'images' / '000003_cam2.png').unlink()
    with pytest.raises(DatasetError, match=r'missing image images/000003_cam2\.png'):
        load_dataset(copy)


def test_labels_csv_bad_label(tmp_path):
    _write(tmp_path / 'a.png')
    (tmp_path / 'labels.csv').write_text('bolt_id,cam,view_label,image\n1,0,maybe,a.png\n')
    with pytest.raises(DatasetError, match='line 2: view_label must be OK or NG'):
        load_dataset(tmp_path)


# --- OK/ + NG/ folder layout --------------------------------------------------------------------

def test_load_folders_groups_views_by_name(tmp_path):
    for cam in range(4):
        _write(tmp_path / ('NG' if cam == 1 else 'OK') / f'bolt7_cam{cam}.png')
        _write(tmp_path / 'OK' / f'bolt8_cam{cam}.jpg')
    _write(tmp_path / 'NG' / 'loose.bmp')
    _write(tmp_path / 'OK' / 'loose.jpeg')
    (tmp_path / 'OK' / 'notes.txt').write_text('not an image')
    ds = load_dataset(tmp_path)
    assert ds.kind == 'folders'
    bolts = ds.bolts()
    assert set(bolts) == {'bolt7', 'bolt8', 'NG/loose', 'OK/loose'}
    assert [v.label for v in bolts['bolt7']] == ['OK', 'NG', 'OK', 'OK']
    assert {v.bolt_label for v in bolts['bolt7']} == {'NG'}
    assert {v.bolt_label for v in bolts['bolt8']} == {'OK'}
    assert bolts['NG/loose'][0].label == 'NG' and bolts['OK/loose'][0].label == 'OK'
    assert all(r.mask_path is None and r.thread_box is None for r in ds.records)


def test_load_folders_only_one_class(tmp_path):
    _write(tmp_path / 'NG' / 'a.png')
    ds = load_dataset(tmp_path)
    assert [r.label for r in ds.records] == ['NG']


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match='no such dataset folder'):
        load_dataset(tmp_path / 'nope')


def test_empty_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match='empty'):
        load_dataset(tmp_path)


def test_folders_without_images(tmp_path):
    (tmp_path / 'OK').mkdir()
    (tmp_path / 'NG').mkdir()
    (tmp_path / 'OK' / 'readme.txt').write_text('x')
    with pytest.raises(DatasetError, match='no images in OK/ or NG/'):
        load_dataset(tmp_path)


def test_unknown_layout(tmp_path):
    _write(tmp_path / 'a.png')
    with pytest.raises(DatasetError, match='no labels.csv and no OK/ or NG/'):
        load_dataset(tmp_path)


# --- read_image ---------------------------------------------------------------------------------

def test_read_image_formats(tmp_path):
    grey = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    cv2.imwrite(str(tmp_path / 'g.png'), grey)
    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((20, 30, 4), np.uint8))
    cv2.imwrite(str(tmp_path / 'w.png'), np.full((20, 30, 3), 65535, np.uint16))
    for name in ('g.png', 'a.png', 'w.png'):
        image = read_image(tmp_path / name)
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert read_image(tmp_path / 'w.png').max() == 255
    assert np.array_equal(read_image(tmp_path / 'g.png')[..., 1], grey)


@pytest.mark.parametrize('content', [b'', b'not a png at all', b'\x89PNG\r\n\x1a\n\x00\x00'])
def test_read_image_corrupt(tmp_path, content):
    path = tmp_path / 'broken.png'
    path.write_bytes(content)
    with pytest.raises(ImageError, match='broken.png'):
        read_image(path)


def test_read_image_missing(tmp_path):
    with pytest.raises(ImageError, match='nope.png: no such image file'):
        read_image(tmp_path / 'nope.png')


# --- split_by_bolt --------------------------------------------------------------------------

def test_split_never_leaks_a_bolt_and_is_stratified():
    records = _records(n_ok=30, n_ng=20)
    train, val = split_by_bolt(records, val_fraction=0.2, seed=3)
    assert len(train) + len(val) == len(records)
    train_bolts = {r.bolt_id for r in train}
    val_bolts = {r.bolt_id for r in val}
    assert not train_bolts & val_bolts
    per_label = Counter(r.bolt_label for r in val if r.cam == 0)
    assert per_label == {'OK': 6, 'NG': 4}
    assert all(len([r for r in val if r.bolt_id == b]) == 4 for b in val_bolts)


def test_split_is_deterministic_by_seed():
    records = _records(n_ok=30, n_ng=30)
    a = split_by_bolt(records, 0.25, seed=1)
    assert a == split_by_bolt(records, 0.25, seed=1)
    assert {r.bolt_id for r in a[1]} != {r.bolt_id for r in split_by_bolt(records, 0.25, 2)[1]}


def test_split_small_classes_get_a_validation_bolt():
    train, val = split_by_bolt(_records(n_ok=3, n_ng=2), val_fraction=0.1)
    assert Counter(r.bolt_label for r in val if r.cam == 0) == {'OK': 1, 'NG': 1}
    assert {r.bolt_id for r in train}.isdisjoint({r.bolt_id for r in val})
    train, val = split_by_bolt(_records(n_ok=3, n_ng=2), val_fraction=0.0)
    assert val == [] and len(train) == 20


def test_split_of_loaded_synthetic_data(synthetic):
    ds = load_dataset(synthetic)
    train, val = split_by_bolt(ds.records, 0.25, seed=0)
    assert {r.bolt_id for r in train}.isdisjoint({r.bolt_id for r in val})
    assert val and train


# --- the command line on bad datasets ---------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'bolt_inspection.cli', *args],
                          capture_output=True, text=True, timeout=120)


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1
    return lines[0]


def test_cli_dataset_summary(synthetic, tmp_path):
    result = _cli('dataset', str(synthetic), '--contact-sheet', str(tmp_path / 'sheet.png'))
    assert result.returncode == 0, result.stderr
    assert 'synthetic dataset, 12 bolts, 48 views' in result.stdout
    assert 'fingerprint: ' + load_dataset(synthetic).fingerprint() in result.stdout
    assert cv2.imread(str(tmp_path / 'sheet.png')) is not None


def test_cli_missing_dataset_folder(tmp_path):
    line = _one_error_line(_cli('dataset', str(tmp_path / 'nope')))
    assert 'nope: no such dataset folder' in line


def test_cli_empty_dataset_folder(tmp_path):
    (tmp_path / 'OK').mkdir()
    line = _one_error_line(_cli('dataset', str(tmp_path)))
    assert 'no images in OK/ or NG/' in line


def test_cli_unreadable_image(tmp_path):
    _write(tmp_path / 'OK' / 'good_cam0.png')
    (tmp_path / 'NG').mkdir()
    (tmp_path / 'NG' / 'bad_cam0.png').write_bytes(b'garbage, not a PNG')
    line = _one_error_line(_cli('dataset', str(tmp_path)))
    assert 'bad_cam0.png' in line and 'not a decodable image' in line


def test_contact_sheet_of_a_folder_dataset(tmp_path):
    from bolt_inspection.core.vision.synth import contact_sheet

    for cam in range(2):
        _write(tmp_path / 'data' / 'NG' / f'b1_cam{cam}.png', np.zeros((60, 80, 3), np.uint8))
        _write(tmp_path / 'data' / 'OK' / f'b2_cam{cam}.png', np.zeros((60, 80, 3), np.uint8))
    sheet_path = contact_sheet(load_dataset(tmp_path / 'data'), tmp_path / 'sheet.png',
                               tile_width=80)
    sheet = cv2.imread(str(sheet_path))
    assert sheet.shape == (2 * 64 + 4, 2 * 84 + 4, 3)   # 2 bolts x 2 cameras, 4 px gutters
    # Caption bars: red for the NG bolt's views, green for the OK one.
    assert sheet[5, 5, 2] > 100 and sheet[5, 5, 1] < 50
    assert sheet[69, 5, 1] > 80 and sheet[69, 5, 2] < 50
