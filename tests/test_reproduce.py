"""``bolt-inspection reproduce --quick`` end to end, and the exact-count bolt picker."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bolt_inspection.core.study.reproduce import pick_bolts


def test_pick_bolts_hits_exact_counts():
    rng = np.random.default_rng(3)
    ng_views = {b: int(n) for b, n in enumerate(rng.choice([0, 0, 1, 2, 3, 4], size=300))}
    chosen = pick_bolts(ng_views, 33, 66, np.random.default_rng(0))
    assert len(chosen) == len(set(chosen)) == 33
    assert sum(ng_views[b] for b in chosen) == 66
    # The same generator state gives the same bolts (the study is reproducible).
    assert chosen == pick_bolts(ng_views, 33, 66, np.random.default_rng(0))
    with pytest.raises(ValueError):
        pick_bolts({0: 0, 1: 0, 2: 1}, 2, 4, np.random.default_rng(0))


def _check_level(level):
    assert set(level) == {'NG', 'OK', 'accuracy', 'roc_auc', 'confusion'}
    for cls in ('NG', 'OK'):
        assert set(level[cls]) == {'precision', 'recall', 'f1', 'support'}
        for key in ('precision', 'recall', 'f1'):
            assert 0.0 <= level[cls][key] <= 1.0
    assert 0.0 <= level['accuracy'] <= 1.0
    assert level['roc_auc'] is None or 0.0 <= level['roc_auc'] <= 1.0
    assert np.asarray(level['confusion']).shape == (2, 2)


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path, capsys):
    from bolt_inspection.cli import main

    out = tmp_path / 'study'
    assert main(['reproduce', '--out', str(out), '--quick', '--no-progress']) == 0
    printed = capsys.readouterr().out
    assert '(b) ROI model, test set' in printed and 'report:' in printed

    study = json.loads((out / 'study.json').read_text())
    data = study['dataset']
    # Half of the views NG, overall and in the test set, split by bolt.
    assert data['test']['ng_views'] == data['test']['ok_views'] == 16
    assert data['train']['ng_views'] == data['train']['ok_views']
    assert data['train']['bolts'] + data['test']['bolts'] == 24
    for kind in ('full_frame', 'roi'):
        metrics = json.loads((out / kind / 'metrics.json').read_text())
        for level in ('view', 'bolt'):
            _check_level(metrics[level])
        assert metrics['view']['NG']['support'] == metrics['view']['OK']['support'] == 16
        assert sum(map(sum, metrics['bolt']['confusion'])) == 8
        assert 0.0 <= metrics['threshold'] <= 1.0
        loc = metrics['localisation']
        assert loc['peak_in_mask'] is None or 0.0 <= loc['peak_in_mask'] <= 1.0
        if loc['energy_in_roi'] is None:
            # No energy to share out only when every NG map is flat (a 2-epoch model may see
            # no NG evidence anywhere), never silently.
            assert loc['flat_heatmaps'] == 32
        else:
            assert 0.0 <= loc['energy_in_roi'] <= 1.0
        for png in ('training_curves', 'confusion', 'gradcam_gallery'):
            assert (out / kind / f'{png}.png').stat().st_size > 1000
    assert json.loads((out / 'roi' / 'metrics.json').read_text())['localisation'][
        'energy_in_roi'] == pytest.approx(1.0)
    timing = study['stage1_timing']
    assert timing['cached_epoch_s'] > 0 and timing['recompute_epoch_s'] > 0
    # Stage 2 is timed too, on the cached outputs of the blocks it keeps frozen.
    stage2 = study['stage2_timing']
    assert stage2['stage'] == 'stage2' and stage2['cached_layer'].endswith('_pool')
    assert stage2['cached_epoch_s'] > 0 and stage2['recompute_epoch_s'] > 0
    # The paper's method by default: both models from the pretrained weights.
    for kind in ('roi', 'full_frame'):
        assert study['training'][kind]['config']['weights'] == 'hed'

    report = (out / 'report.md').read_text()
    for heading in ('## Data', '## Grad-CAM', '## Table 2', 'cached vs recomputed',
                    '### Side by side with the paper', 'VGG16 convs from HED'):
        assert heading in report
    assert 'bolt-inspection reproduce' in report and 'Wall time' in report
    cell_row = next(line for line in report.splitlines() if line.startswith('| grid cell'))
    assert cell_row.count(' grid)') == 2          # both models, each with its grid size
    ceiling_row = next(line for line in report.splitlines() if line.startswith('| best any'))
    assert len(re.findall(r'\d+\.\d%', ceiling_row)) == 2  # full frame and ROI
    # Every figure the report embeds exists, by a path relative to the report.
    figures = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', report)
    assert 'fig7_gradcam.png' in figures and len(figures) >= 4
    for figure in figures:
        assert (out / figure).is_file(), figure


def test_the_study_trains_with_the_papers_method_and_keeps_the_random_init_plan():
    from dataclasses import replace

    from bolt_inspection.core.study.reproduce import (
        ARCH_PLANS,
        PAPER_PLAN,
        QUICK_SIZES,
        RANDOM_INIT_PLAN,
        choose_plan,
        train_config,
    )
    from bolt_inspection.core.study.train import RECIPE

    # Default: VGG16 by transfer learning from the offline pretrained weights, both models.
    assert choose_plan() == PAPER_PLAN
    roi = train_config(PAPER_PLAN, use_roi=True, seed=0)
    full = train_config(PAPER_PLAN, use_roi=False, seed=0)
    for config in (roi, full):
        assert config.arch == 'vgg16' and config.weights == 'hed' and not config.from_scratch
        assert (config.epochs1, config.epochs2) == (RECIPE['epochs1'], RECIPE['epochs2'])
        assert config.lr2 == 1e-4 and config.fine_tune_blocks == RECIPE['fine_tune_blocks']
    assert tuple(roi.input_size) == RECIPE['input_size'] and tuple(full.input_size) == (256, 192)
    assert choose_plan('vgg16', 'imagenet').weights == 'imagenet'
    # The random-init variant (--random-init): VGG16-BN, all layers, its own epochs.
    assert choose_plan('vgg16_bn', 'none') == RANDOM_INIT_PLAN
    roi = train_config(RANDOM_INIT_PLAN, use_roi=True, seed=0)
    full = train_config(RANDOM_INIT_PLAN, use_roi=False, seed=0)
    assert roi.from_scratch and roi.weights == 'none' and roi.epochs2 == 0
    assert (roi.epochs1, full.epochs1) == (12, 6)
    assert roi.arch == 'vgg16_bn' and roi.augment and roi.lr_schedule == 'cosine'
    assert tuple(roi.input_size) == (112, 224) and tuple(full.input_size) == (128, 96)
    quick = replace(ARCH_PLANS['vgg16'], **QUICK_SIZES)
    config = train_config(quick, use_roi=False, seed=0)
    assert config.arch == 'vgg16' and config.epochs1 == 2 and tuple(config.input_size) == (64, 48)
    with pytest.raises(ValueError, match='use --arch vgg16'):
        choose_plan('tiny', 'hed')
