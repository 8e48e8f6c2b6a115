"""``bench/run.py --smoke``: the benchmark runs end to end and writes what the README table needs.

Structure and sanity only (every number present and positive, the closed loop sorted every
bolt); no performance targets: those are the benchmark's job, on a quiet machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow]
ros = pytest.mark.ros


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')
    # 215-232: ROS 2's other safe range on Linux; the suite's own fixtures use 1-100.
    env = {**os.environ, 'BENCH_ROS_DOMAIN_ID': str(215 + (os.getpid() + 9) % 18),
           'BOLT_TF_INTRA_THREADS': '1'}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / 'run.py'), '--smoke', '--out',
                           str(out)], env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / 'bench.json').read_text()), proc.stdout, wall


@ros
def test_smoke_run_writes_json_table_and_plots(smoke):
    out, result, stdout, wall = smoke
    assert result['mode'] == 'smoke' and result['errors'] == []
    assert set(result['sections']) == {'latency', 'loop', 'loop_processes', 'training',
                                       'scaling'}
    assert result['machine']['nproc'] >= 1 and result['machine']['versions']['python']
    for name in ('latency.png', 'loop.png', 'loop_processes.png', 'training.png', 'scaling.png',
                 'RESULTS.md'):
        assert (out / name).stat().st_size > 1000, name
    # The markdown table is printed and names the machine and the command.
    assert '| CPU |' in stdout and 'bench/run.py --smoke' in stdout
    assert '### 1. Decision latency' in stdout and '### 6. Scaling' in stdout
    # Generous: the smoke configuration takes ~40 s on a loaded 2-core machine.
    assert wall < 180


@ros
def test_latency_section_pairs_line_and_raw_model_per_bolt(smoke):
    run = smoke[1]['sections']['latency']['tiny']
    assert run['bolts_measured'] == run['bolts_requested'] > 0
    for key in ('latency_published_ms', 'raw_gradcam_ms', 'raw_inspect_ms'):
        assert run[key]['n'] == run['bolts_measured']
        assert _positive(run[key]['p50']) and run[key]['p99'] >= run[key]['p50']
    # The line can never be faster than the model pass inside it.
    assert run['latency_published_ms']['p50'] > run['stages_ms']['inference_gradcam']['p50']
    assert _positive(run['overhead_ratio_p50'])
    for stage in ('trigger_to_camera', 'camera_grab', 'decode', 'roi', 'inference_gradcam',
                  'verdict_publish', 'worker_busy', 'mosaic_render',
                  'mosaic_published_after_verdict'):
        assert run['stages_ms'][stage]['n'] == run['bolts_measured'], stage
    assert run['verdict_messages'].get('NO VERDICT', 0) == 0
    # The raw pass ran with the line idle: every bolt's mosaic and prefetch renders finished.
    assert run['raw_pass_settle']['timed_out'] == 0
    assert run['raw_pass_settle']['wait_ms']['n'] == run['bolts_measured']


@ros
def test_latency_section_compares_camera_prefetch_on_and_off(smoke):
    latency = smoke[1]['sections']['latency']
    on, off = latency['tiny'], latency['tiny_no_prefetch']
    assert on['prefetch'] is True and off['prefetch'] is False
    assert off['bolts_measured'] == off['bolts_requested'] > 0
    # Sequential bolt ids: after the warm-up every view comes from the background render.
    views = on['bolts_measured'] * len(on['cams'])
    assert on['camera_views_from_prefetch'] == {'views': views, 'of': views}
    assert off['camera_views_from_prefetch']['views'] == 0
    assert all(c['hits'] == 0 for c in off['camera_prefetch_counts'].values())
    assert off['stages_ms']['camera_grab']['n'] == off['bolts_measured']
    # The table names the comparison run; the targets only the product's configuration.
    stdout = smoke[2]
    assert 'tiny (no prefetch)' in stdout
    targets = stdout.split('### Targets', 1)[1].split('###', 1)[0]
    assert 'no prefetch' not in targets


@ros
def test_loop_section_sorts_every_bolt_and_reports_both_processes(smoke):
    loop = smoke[1]['sections']['loop']
    step = loop['steps'][0]
    assert step['sorted'] == step['bolts'] > 0
    assert step['loop_latency_ms']['n'] == step['bolts'] and step['bolts_without_verdict'] == 0
    assert _positive(step['loop_latency_ms']['p50'])
    for proc in ('line_process', 'plc_sim_process'):
        assert _positive(loop[proc]['peak_rss_mb']) and _positive(loop[proc]['cpu_s'])
    assert loop['line_process']['pid'] != loop['plc_sim_process']['pid']
    assert _positive(loop['modbus_poll_ms']['p50'])
    # The line's background work is accounted for: prefetch hits/misses, dropped mosaics.
    assert loop['prefetch'] is True and loop['mosaics_dropped'] is not None
    assert sum(c['hits'] for c in loop['camera_prefetch'].values()) > 0


@ros
def test_loop_runs_both_line_shapes_on_the_same_rates(smoke):
    """One process per node (as ros2 launch runs the line) beside the composed line."""
    sections = smoke[1]['sections']
    composed, processes = sections['loop'], sections['loop_processes']
    assert composed['shape'] == 'composed' and processes['shape'] == 'processes'
    assert processes['rates_requested'] == composed['rates_requested']
    step = processes['steps'][0]
    assert step['sorted'] == step['bolts'] > 0 and step['dropped_view_bolts'] == 0
    assert step['late_verdicts'] == step['failsafe_rejects'] == 0
    assert _positive(step['loop_latency_ms']['p50']) and _positive(step['line_peak_rss_mb'])
    # Every node process exited 0 on SIGINT, the lifecycle manager included.
    assert processes['exit_codes'] and set(processes['exit_codes'].values()) == {0}
    assert 'lifecycle_manager' in processes['exit_codes']
    assert 'one process per node' in smoke[2]


@ros
def test_training_and_scaling_sections(smoke):
    sections = smoke[1]['sections']
    stage1 = sections['training']['stage1']
    assert _positive(stage1['cached_epoch_s']) and _positive(stage1['recompute_epoch_s'])
    assert stage1['speedup'] == pytest.approx(stage1['recompute_epoch_s']
                                              / stage1['cached_epoch_s'])
    configs = sections['scaling']['configs']
    assert {c['cams'] for c in configs.values()} == {1, 2, 4, 8}
    assert {tuple(c['input_size']) for c in configs.values()} == {(128, 256), (224, 224),
                                                                  (224, 448)}
    assert all(_positive(c['throughput_bolts_per_min']) for c in configs.values())
    # The worker alone (mosaic on the image thread) is faster than inspect + mosaic serially.
    assert all(c['throughput_bolts_per_min'] >= c['throughput_one_core_bolts_per_min']
               for c in configs.values())


def test_classifier_bench_smoke_reports_every_test_set(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / 'classifier.py'), '--smoke',
                           '--out', str(tmp_path)], capture_output=True, text=True, timeout=240,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / 'classifier.json').read_text())
    row = result['tests']['held-out bolts']
    assert row['views'] == 4 * result['mode']['test_bolts'] == 24
    for rule in ('calibrated', 'at_0.5'):
        for level in ('view', 'bolt'):
            block = row[rule][level]
            assert 0.0 <= block['f1_ng'] <= 1.0 and 0.0 <= block['f1_ok'] <= 1.0
            assert sum(map(sum, block['confusion'])) == (24 if level == 'view' else 6)
    # Every test view is counted once in the per-kind tally, NG views under their defect.
    assert sum(v['n'] for v in row['defect_recall'].values()) == 24
    assert 0.0 <= row['peak_in_mask'] <= 1.0
    # The peak's cell is a coarser target than the dilated mask around a point inside it.
    (gw, gh), (w, h) = row['grid'], result['mode']['input']
    assert 0 < gw < w and 0 < gh < h and w // gw == h // gh          # one cell per stride
    assert row['ng_views_located_cell'] >= 0 and 0.0 <= row['peak_cell_in_mask'] <= 1.0
    by_size = row['located_by_size'].values()
    assert sum(v['n'] for v in by_size) == row['ng_views_scored']
    assert sum(v['located'] for v in by_size) == row['ng_views_located']
    assert sum(v['located_cell'] for v in by_size) == row['ng_views_located_cell']
    assert (tmp_path / 'defect_recall.png').stat().st_size > 5000
    # No model beats the ceiling of its own grid; the sweep covers the model's input size.
    assert row['ng_views_located'] <= row['ng_views_reachable'] <= row['ng_views_scored']
    assert sum(v['reachable'] for v in by_size) == row['ng_views_reachable']
    sweep = {tuple(r['input']): r for r in result['ceiling_by_input']}
    assert all(r['scored'] == row['ng_views_scored'] and 0.0 <= r['ceiling'] <= 1.0
               for r in sweep.values())
    assert sweep[(224, 448)]['grid'] == [14, 28]
    assert (tmp_path / 'localisation_ceiling.png').stat().st_size > 5000
    assert 'by input size' in (tmp_path / 'RESULTS.md').read_text()
    text = (tmp_path / 'RESULTS.md').read_text()
    assert '| held-out bolts, threshold ' in text and ' | 24 (' in text and 'Targets:' in text
    # --model evaluates a trained artifact again without training: same numbers.
    again = tmp_path / 'again'
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / 'classifier.py'), '--smoke',
                           '--out', str(again), '--model', str(tmp_path / 'model')],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'no training' in proc.stderr and not (again / 'model').exists()
    second = json.loads((again / 'classifier.json').read_text())
    assert second['tests']['held-out bolts']['calibrated'] == row['calibrated']
    assert second['mode']['arch'] == 'tiny' and second['mode']['epochs'] == 1


def test_classifier_bench_summary_at_threshold_half_has_one_row(tmp_path):
    # evaluate writes no separate argmax block when the stored threshold already is 0.5.
    sys.path.insert(0, str(ROOT / 'bench'))
    try:
        import classifier
    finally:
        sys.path.remove(str(ROOT / 'bench'))
    block = {'NG': {'f1': 0.99, 'recall': 0.9}, 'OK': {'f1': 0.98, 'recall': 1.0},
             'roc_auc': 0.995, 'confusion': [[9, 1], [0, 10]]}
    metrics = {'counts': {'views': 20, 'bolts': 5}, 'threshold': 0.5, 'view': block,
               'bolt': block, 'localisation': {
                   'peak_in_mask': 0.9, 'ng_views_located': 9, 'ng_views_scored': 10,
                   'peak_in_mask_by_defect': {}}}
    predictions = tmp_path / 'predictions.csv'
    predictions.write_text('bolt_id,cam,view_label,bolt_label,defect,p_ng,predicted\n'
                           '1,0,NG,NG,short,0.7,NG\n1,1,NG,NG,short,0.4,OK\n'
                           '2,0,OK,OK,ok,0.1,OK\n')
    row = classifier.summarise(metrics, predictions)
    assert row['at_0.5'] == row['calibrated']
    assert row['defect_recall'] == {'OK views': {'right': 1, 'n': 1},
                                    'short': {'right': 1, 'n': 2}}
    result = {'mode': {'arch': 'tiny', 'input': [16, 32], 'epochs': 1, 'train_bolts': 4},
              'train': {'views': 16}, 'command': 'x', 'wall_s': 60, 'machine': {},
              'date': 'today', 'train_s': 30, 'threshold': 0.5, 'tests': {'set': row}}
    text = classifier.results_md(result)
    assert text.count('| set, threshold') == 1 and '| set, threshold 0.500 | 20 (10/10) |' in text


def test_classifier_bench_bins_peaks_by_defect_area(tmp_path):
    sys.path.insert(0, str(ROOT / 'bench'))
    try:
        import classifier
    finally:
        sys.path.remove(str(ROOT / 'bench'))
    predictions = tmp_path / 'predictions.csv'
    predictions.write_text(
        'bolt_id,cam,view_label,bolt_label,defect,p_ng,predicted,peak_located,'
        'peak_cell_located,peak_to_defect_px,defect_px,peak_reachable\n'
        '1,0,NG,NG,foreign,0.9,NG,0,1,9.0,12,0\n'       # 12 px < 256/8; missed by 9 <= 16 px
        '1,1,NG,NG,foreign,0.9,NG,0,0,40.0,20,1\n'      # looked two cells away
        '1,2,NG,NG,foreign,0.9,NG,0,0,inf,31,0\n'       # all-zero heatmap: no peak at all
        '2,0,NG,NG,insufficient,0.8,NG,1,1,0.0,32,1\n'  # exactly 1/8 cell: the middle bin
        '2,1,NG,NG,insufficient,0.8,NG,0,1,12.0,100,1\n'
        '3,0,NG,NG,no_coating,1.0,NG,1,1,0.0,256,1\n'   # exactly one cell: the top bin
        '4,0,OK,OK,ok,0.1,OK,,,,,\n')
    bins = classifier.localisation_by_size(predictions, 16 * 16)
    assert bins == {
        'under 1/8 cell': {'n': 3, 'located': 0, 'located_cell': 1, 'misses_within_a_cell': 1,
                           'reachable': 1},
        '1/8 to 1 cell': {'n': 2, 'located': 1, 'located_cell': 2, 'misses_within_a_cell': 1,
                          'reachable': 2},
        '1 cell or more': {'n': 1, 'located': 1, 'located_cell': 1, 'misses_within_a_cell': 0,
                           'reachable': 1}}
