"""``bolt-inspection reproduce``: re-run the paper's study on synthetic bolts, write report.md."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bolt_inspection.commands._common import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'reproduce',
        help="reproduce the paper's study (full frame vs ROI, Grad-CAM, Table 2) on synthetic "
             'bolts',
        description="Render a synthetic dataset of the paper's size (652 views, half NG; test "
                    '132 = 66 NG / 66 OK, split by bolt) with the label-correlated background '
                    'distractor on; train (a) a full-frame model and (b) an ROI model with the '
                    "paper's method (VGG16, transfer learning from the pretrained weights "
                    '--weights, default hed: offline); evaluate both on the held-out bolts; '
                    'write DIR/report.md with the Fig. 7-style Grad-CAM comparison, '
                    "localisation numbers, Table 2 beside the paper's and the cached-vs-"
                    'recomputed epoch times. --random-init: VGG16-BN from random init instead '
                    '(the study before pretrained weights were available offline). --quick is '
                    'a CI-sized run of 1-2 minutes.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', required=True, type=Path, metavar='DIR',
                        help='output directory (data, models, figures, report.md)')
    parser.add_argument('--quick', action='store_true',
                        help='a few dozen small bolts, tiny inputs, 2 epochs (CI smoke run)')
    parser.add_argument('--seed', type=int, default=0, help='dataset, split and init seed')
    parser.add_argument('--epochs', type=positive_int, default=None,
                        help='stage-1 epochs of both models (default 15); from random init: '
                             'training epochs (vgg16_bn 12 for the ROI model and 6 for the '
                             'full-frame one; vgg16 12; tiny 60); quick 2')
    parser.add_argument('--weights', default='hed',
                        help="the pretrained VGG16 weights of the paper's transfer learning: "
                             'hed (offline), imagenet (downloaded by Keras) or PATH; none = '
                             'random init (with --arch)')
    parser.add_argument('--arch', choices=('vgg16', 'vgg16_bn', 'tiny'), default=None,
                        help='network: vgg16 (default; the only one with pretrained weights); '
                             'with --weights none also vgg16_bn (VGG16 + batch norm, trains '
                             'from random init on a CPU) or tiny (a small CNN)')
    parser.add_argument('--random-init', action='store_true',
                        help='the random-init variant: VGG16-BN from random init, all layers '
                             '(same as --weights none --arch vgg16_bn)')
    parser.add_argument('--no-progress', action='store_true', help='no progress output')
    parser.set_defaults(func=run)


def run(args) -> int:
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.model.weights import check_weights_option
    from bolt_inspection.core.study.reproduce import run_study

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f'{args.out}: exists and is not a directory')
    weights = 'none' if args.random_init else check_weights_option(args.weights)
    if args.random_init and args.weights != 'hed':
        raise ConfigError('--random-init trains from random init: drop --weights')
    arch = args.arch or ('vgg16_bn' if weights == 'none' else 'vgg16')
    if weights != 'none' and arch != 'vgg16':
        raise ConfigError(f'--arch {arch} trains from random init: add --weights none')
    command = 'bolt-inspection ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]) \
        if Path(sys.argv[0]).name.startswith('bolt-inspection') else \
        f'bolt-inspection reproduce --out {shlex.quote(str(args.out))}' + \
        (' --quick' if args.quick else '') + f' --seed {args.seed}' + \
        (f' --epochs {args.epochs}' if args.epochs else '') + \
        (f' --arch {arch}' if arch != 'vgg16' else '') + \
        (f' --weights {weights}' if weights != 'hed' else '')
    result = run_study(args.out, quick=args.quick, seed=args.seed, epochs=args.epochs,
                       arch=arch, weights=weights, progress=not args.no_progress,
                       command=command)
    m = result.metrics
    roi, full = m['roi'], m['full_frame']

    def f1(x, level):
        return f'F1 NG {x[level]["NG"]["f1"]:.3f} / OK {x[level]["OK"]["f1"]:.3f}'

    def loc(x):
        value = x['localisation']['peak_in_mask']
        return 'n/a' if value is None else f'{value:.1%}'

    print(f'(b) ROI model, test set: view {f1(roi, "view")}; bolt {f1(roi, "bolt")}')
    print(f'(a) full-frame model:    view {f1(full, "view")}; bolt {f1(full, "bolt")}')
    print(f'Grad-CAM peak on the defect: ROI {loc(roi)}, full frame {loc(full)}; energy in the '
          f'thread ROI: full frame {full["localisation"]["energy_in_roi"] or 0:.1%}')
    for stage in ('stage1', 'stage2'):
        t = m.get(f'{stage}_timing') or {}
        if t.get('speedup'):
            print(f'{stage} epoch: cached {t["cached_epoch_s"]:.3f} s vs recomputed '
                  f'{t["recompute_epoch_s"]:.3f} s ({t["speedup"]:.1f}x)')
    print(f'wall time {m["wall_time_s"] / 60:.1f} min; report: {result.report}')
    return 0
