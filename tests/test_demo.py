"""`bolt-inspection demo`: train a demo model when there is none, run the closed loop, reuse."""

from __future__ import annotations

import json

import pytest

pytest.importorskip('rclpy')

pytestmark = [pytest.mark.ros, pytest.mark.slow]
pytest_plugins = ['fixtures_ml']   # the session's tiny_artifact

TINY = ['--size', '320x240', '--arch', 'tiny', '--input-size', '32x64', '--epochs', '3',
        '--train-bolts', '20', '--rate', '120', '--gate-delay', '1.0', '--tally-period', '2']


def test_demo_trains_runs_the_closed_loop_and_reuses_the_model(ros_domain_id, tmp_path,
                                                                capfd):
    from bolt_inspection import cli
    out = tmp_path / 'demo_out'
    code = cli.main(['demo', '--out', str(out), '--bolts', '6', *TINY])
    captured = capfd.readouterr()
    assert code == 0, captured.out + captured.err
    text = captured.out
    assert 'demo model: training one (no model yet)' in text
    assert 'training set: rendering 20 synthetic bolts' in text
    assert 'demo model trained in' in text
    assert '[plc-sim] RUN' in text                      # the live tally
    assert 'sorting gate: 6 bolts sorted' in text and 'sorting accuracy' in text
    assert 'target (sorting accuracy >= 0.97' in text
    for name in ('model/model.keras', 'model/metadata.json', 'data/labels.csv',
                 'line_summary.json'):
        assert (out / name).is_file(), name
        assert str(out / name.split('/')[0]) in text    # where the artifacts are
    assert not (out / 'model.partial').exists()
    meta = json.loads((out / 'model' / 'metadata.json').read_text())
    assert meta['frame_size'] == [320, 240] and meta['input_size'] == [32, 64]
    # The line runs at the threshold calibrated for NG recall over the validation bolts, and
    # the demo says which and what recall it reached there.
    metrics = meta['metrics']
    assert metrics['threshold_target_recall'] == 0.99
    assert metrics['threshold_calibrated_on'] == 'bolt'
    assert (f'NG threshold: {meta["threshold"]:.3f}, calibrated for NG recall 0.99 over the '
            f'validation bolts: reached {metrics["threshold_recall_val"]:.3f}') in text
    assert 'calibrations' not in meta['training']
    # The drift monitor's reference of the training frames comes with the model.
    assert (out / 'model' / 'drift_reference.npz').is_file()
    summary = json.loads((out / 'line_summary.json').read_text())
    plc = summary['plc']
    assert plc['sorted'] == plc['passed'] + plc['rejected'] == 6
    assert plc['true_pass'] + plc['false_pass'] + plc['true_reject'] + plc['false_reject'] == 6
    assert plc['failsafe_rejects'] == 0 and plc['late_verdicts'] == 0, plc
    # The training bolts (seed 1) are not the line's bolts (seed 0).
    synth = json.loads((out / 'data' / 'synth.json').read_text())
    assert synth['seed'] == 1 and plc['config']['seed'] == 0

    model_time = (out / 'model' / 'model.keras').stat().st_mtime_ns
    code = cli.main(['demo', '--out', str(out), '--bolts', '2', *TINY])
    text = capfd.readouterr().out
    assert code == 0, text
    assert 'demo model: reusing' in text and 'training set:' not in text
    assert (out / 'model' / 'model.keras').stat().st_mtime_ns == model_time
    assert 'sorting gate: 2 bolts sorted' in text


def test_demo_with_a_model_for_other_frames_trains_a_new_one(tmp_path, tiny_artifact):
    import shutil

    from bolt_inspection.commands.demo import existing_model
    shutil.copytree(tiny_artifact, tmp_path / 'model')
    assert existing_model(tmp_path / 'model', (320, 240)) is None
    assert 'for 320x240 frames' in existing_model(tmp_path / 'model', (640, 480))
    assert existing_model(tmp_path / 'none', (320, 240)) == 'no model yet'
    (tmp_path / 'model' / 'model.keras').write_bytes(b'not a model')
    assert existing_model(tmp_path / 'model', (320, 240)).startswith('unusable')
