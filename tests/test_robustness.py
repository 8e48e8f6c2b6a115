"""The drift evaluation: targets on hand-made rows, then `bolt-inspection robustness` on a tiny
model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_ml import TINY_FRAME_SIZE, tiny_artifact  # noqa: F401 (fixture)

from bolt_inspection.core.study.robustness import _warp_mask, check_targets, format_targets


def _row(family, severity, recall, f1, ng=100):
    missed = round((1 - recall) * ng)
    return {'family': family, 'severity': severity, 'bolt_ng_recall': recall,
            'bolt_f1_ng': f1, 'ng_bolts': ng, 'ng_bolts_missed': missed}


def test_targets_name_the_worst_family_at_moderate_drift():
    rows = [_row('clean', 0.0, 1.0, 0.995), _row('exposure', 1.0, 0.99, 0.99),
            _row('defocus', 1.0, 0.98, 0.97), _row('defocus', 2.0, 0.5, 0.6)]
    verdict = check_targets(rows)
    assert verdict['clean_recall']['met']
    assert verdict['drift_recall'] == {'target': 0.99, 'severity': 1.0, 'value': 0.98,
                                       'worst': 'defocus', 'met': False}
    assert verdict['f1_loss']['worst'] == 'defocus'
    assert verdict['f1_loss']['value'] == pytest.approx(0.025) and not verdict['f1_loss']['met']
    assert not verdict['met']          # severity 2 is reported, not judged
    text = '\n'.join(format_targets(verdict))
    assert 'NOT MET (worst defocus 0.980)' in text and 'clean: MET (1.000)' in text
    ok = check_targets(rows[:2])
    assert ok['met'] and ok['f1_loss']['value'] == pytest.approx(0.005)
    # Without a moderate severity the drift targets are not measured, so not met.
    only_severe = check_targets([rows[0], rows[3]])
    assert only_severe['drift_recall'] is None and not only_severe['met']


def test_pose_drift_moves_the_defect_mask_with_the_frame():
    mask = np.zeros((240, 320), np.uint8)
    mask[100:110, 150:160] = 255
    moved = _warp_mask(mask, 'pose', 2.0, (0, 7))
    assert moved.shape == mask.shape and moved.any()
    assert not np.array_equal(moved, mask)
    centre = np.argwhere(moved).mean(axis=0)
    assert np.abs(centre - (104.5, 154.5)).max() < 0.06 * 320     # a bump, not a new place
    assert _warp_mask(mask, 'exposure', 2.0, (0, 7)) is mask       # pixels stay put


@pytest.fixture(scope='module')
def held_out(tmp_path_factory):
    from bolt_inspection.core.vision import synth

    return synth.generate_dataset(tmp_path_factory.mktemp('drift_data'), seed=21, bolts=6,
                                  size=TINY_FRAME_SIZE, progress=False)


@pytest.mark.slow
def test_robustness_cli_reports_every_family_and_severity(tiny_artifact, held_out,  # noqa: F811
                                                         tmp_path, capsys):
    from bolt_inspection.cli import main

    out = tmp_path / 'drift'
    code = main(['robustness', '--model', str(tiny_artifact), '--data', str(held_out),
                 '--out', str(out), '--families', 'exposure,pose', '--severities', '1,2',
                 '--no-progress'])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads((out / 'robustness.json').read_text())
    assert [(r['family'], r['severity']) for r in result['rows']] == [
        ('clean', 0.0), ('exposure', 1.0), ('exposure', 2.0), ('pose', 1.0), ('pose', 2.0)]
    assert result['counts']['bolts'] == 6 and result['counts']['views'] == 24
    assert result['split'] == 'all'
    meta = json.loads((tiny_artifact / 'metadata.json').read_text())
    assert result['threshold'] == meta['threshold']     # the model's calibrated threshold
    for row in result['rows']:
        assert 0.0 <= row['bolt_ng_recall'] <= 1.0 and row['ng_bolts'] == result['rows'][0][
            'ng_bolts']
        assert row['peak_in_mask'] is None or 0.0 <= row['peak_in_mask'] <= 1.0
    assert 'target bolt NG recall >= 0.99 under drift of severity 1' in captured.out
    assert '| pose | 2 |' in captured.out
    assert (out / 'robustness.png').stat().st_size > 5000
    assert (out / 'robustness.md').read_text().count('\n| ') == 6   # header + 5 rows

    # The same drifted images for the same seed: a second run gives the same numbers; another
    # model's results can be drawn beside.
    code = main(['robustness', '--model', str(tiny_artifact), '--data', str(held_out),
                 '--out', str(tmp_path / 'again'), '--families', 'pose', '--severities', '2',
                 '--no-progress', '--compare', str(out / 'robustness.json')])
    assert code == 0
    again = json.loads((tmp_path / 'again' / 'robustness.json').read_text())
    assert {**again['rows'][1], 'seconds': 0} == {**result['rows'][4], 'seconds': 0}
    code = main(['robustness', '--model', str(tiny_artifact), '--data', str(held_out),
                 '--out', str(tmp_path / 'three'), '--families', 'noise', '--severities', '1',
                 '--bolts', '3', '--no-progress'])
    assert code == 0
    three = json.loads((tmp_path / 'three' / 'robustness.json').read_text())
    assert three['counts'] == {'views': 12, 'bolts': 3, 'ng_bolts': three['rows'][0]['ng_bolts']}


def test_robustness_cli_bad_inputs(tmp_path, capsys):
    from bolt_inspection.cli import main

    with pytest.raises(SystemExit) as exc:
        main(['robustness', '--model', str(tmp_path), '--data', str(tmp_path), '--out',
              str(tmp_path / 'o'), '--families', 'fog'])
    assert exc.value.code == 2 and 'unknown drift family fog' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(['robustness', '--model', str(tmp_path), '--data', str(tmp_path), '--out',
              str(tmp_path / 'o'), '--severities', '0,1'])
    assert exc.value.code == 2 and 'severities must be in (0, 10]' in capsys.readouterr().err
    code = main(['robustness', '--model', str(tmp_path / 'none'), '--data', str(tmp_path),
                 '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err
    assert code == 2 and 'model directory not found' in err and len(err.strip().splitlines()) == 1
