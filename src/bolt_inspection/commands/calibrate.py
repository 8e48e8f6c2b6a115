"""``bolt-inspection calibrate``: set a trained model's NG threshold again on labelled data."""

from __future__ import annotations

import argparse

from bolt_inspection.commands._common import add_model_and_data, fraction
from bolt_inspection.core.study.train import CALIBRATE_ON, CALIBRATION_RULES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'calibrate',
        help="calibrate a trained model's NG threshold again (no retraining)",
        description='Run a model artifact over labelled views and store a new NG threshold, '
                    'at most 0.5: the highest that reaches --target-recall over the NG bolts '
                    '(or views), or with --rule sorting the one that sorts the most bolts '
                    'right. The model file is unchanged; metadata.json keeps the old '
                    'threshold under training.calibrations.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_and_data(parser)
    parser.add_argument('--target-recall', type=fraction, default=None,
                        help='NG recall the threshold must reach (rule recall; default 0.99)')
    parser.add_argument('--calibrate-on', choices=CALIBRATE_ON, default='bolt',
                        help='count the recall over NG bolts (as the gate sorts) or NG views')
    parser.add_argument('--rule', choices=CALIBRATION_RULES, default='recall',
                        help='reach --target-recall, or take the best bolt sorting accuracy '
                             '(bolts only)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the new threshold without writing it')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args) -> int:
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.study.train import recalibrate
    from bolt_inspection.core.vision.dataset import load_dataset

    if args.rule == 'sorting' and args.target_recall is not None:
        raise ConfigError('--target-recall belongs to --rule recall; --rule sorting takes the '
                          'best bolt accuracy')
    target = 0.99 if args.target_recall is None else args.target_recall
    record = recalibrate(args.model, load_dataset(args.data), target_recall=target,
                         calibrate_on=args.calibrate_on, rule=args.rule, split=args.split,
                         progress=not args.no_progress, write=not args.dry_run)
    unit = record['calibrated_on']
    print(f'threshold ({record["rule"]} rule) {record["previous_threshold"]:.4f} -> '
          f'{record["threshold"]:.4f} '
          f'({"not written, --dry-run" if args.dry_run else "written to " + str(args.model)}): '
          f'NG recall {record["ng_recall"]:.3f}, OK passed {record["ok_recall"]:.3f} and '
          f'accuracy {record["accuracy"]:.3f} over '
          f'{record["bolts"] if unit == "bolt" else record["views"]} {unit}s of the '
          f'{record["split"]} split ({record["views"]} views)')
    return 0
