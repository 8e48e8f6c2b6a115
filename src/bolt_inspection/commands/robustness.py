"""``bolt-inspection robustness``: a model on held-out bolts after graded camera drift."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bolt_inspection.commands._common import add_model_and_data, positive_int


def _severities(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected numbers such as 0.5,1,2, got {text!r}') \
            from None
    if not values or any(not 0 < v <= 10 for v in values):
        raise argparse.ArgumentTypeError(f'severities must be in (0, 10], got {text!r}')
    return values


def _families(text: str) -> list[str]:
    from bolt_inspection.core.vision.drift import DRIFT_FAMILIES

    values = [v.strip() for v in text.split(',') if v.strip()]
    bad = [v for v in values if v not in DRIFT_FAMILIES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f'unknown drift family {", ".join(bad) or repr(text)} '
                                         f'(one of {", ".join(DRIFT_FAMILIES)})')
    return values


def register(subparsers) -> None:
    from bolt_inspection.core.study.robustness import SEVERITIES
    from bolt_inspection.core.vision.drift import DRIFT_FAMILIES

    parser = subparsers.add_parser(
        'robustness', help='evaluate a model under graded camera drift, family by family',
        description='Transform every frame of a held-out labelled dataset with camera drift '
                    '(exposure, white balance, defocus, sensor noise, pose, JPEG) at graded '
                    'severities (1 = the moderate drift a line sees between maintenance '
                    'visits), run the model at its calibrated threshold with Grad-CAM, and '
                    'report per family and severity the bolt NG recall (the safety metric), '
                    'bolt and view F1 NG, view NG recall and Grad-CAM peak-in-mask, against '
                    'the targets bolt NG recall >= 0.995 clean and >= 0.99 at severity 1 with '
                    'a bolt F1 loss <= 0.02. Writes OUT/robustness.json, OUT/robustness.md and '
                    'OUT/robustness.png.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_and_data(parser)
    parser.set_defaults(split='all')
    parser.add_argument('--out', type=Path, required=True, help='report directory to write')
    parser.add_argument('--families', type=_families, default=list(DRIFT_FAMILIES),
                        help='comma-separated drift families')
    parser.add_argument('--severities', type=_severities, default=list(SEVERITIES),
                        help='comma-separated severities (1 = moderate, 2 = severe)')
    parser.add_argument('--bolts', type=positive_int, default=None,
                        help='only the first N bolts of the dataset (default all)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the drift directions')
    parser.add_argument('--batch-size', type=positive_int, default=16)
    parser.add_argument('--compare', type=Path, default=None, metavar='JSON',
                        help="another model's robustness.json to draw beside this one")
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.files import check_output_dir
    from bolt_inspection.core.study.robustness import (
        TABLE_HEADER,
        evaluate_drift,
        format_row,
        format_targets,
        plot_drift,
    )

    out = check_output_dir(args.out, '--out')
    out.mkdir(parents=True, exist_ok=True)
    others = []
    if args.compare is not None:
        try:
            other = json.loads(args.compare.read_text())
            other['rows']
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f'--compare {args.compare}: not a robustness.json '
                              f'({str(exc)[:80]})') from None
        others.append((Path(other.get('model', 'other')).name, other))
    shown = []

    def log(line):      # the table grows on stderr as the conditions finish
        if not shown:
            print(TABLE_HEADER.split('\n')[0], file=sys.stderr)
            shown.append(True)
        print(line, file=sys.stderr, flush=True)

    result = evaluate_drift(args.model, args.data, families=args.families,
                            severities=args.severities, split=args.split, bolts=args.bolts,
                            batch_size=args.batch_size, seed=args.seed,
                            progress=not args.no_progress, log=log)
    c = result['counts']
    recall = result['threshold_recall_val']
    head = (f'model {result["model_id"]} at its threshold {result["threshold"]:.3f}'
            + ('' if recall is None else f' (validation NG recall {recall:.3f})')
            + f' on {c["bolts"]} bolts / {c["views"]} views ({c["ng_bolts"]} NG bolts) of '
              f'{result["data"]}')
    table = '\n'.join([TABLE_HEADER] + [format_row(r) for r in result['rows']])
    verdict = format_targets(result['targets'])
    (out / 'robustness.json').write_text(json.dumps(result, indent=2) + '\n')
    (out / 'robustness.md').write_text('\n'.join([head, '', table, ''] + verdict) + '\n')
    png = plot_drift(result, out / 'robustness.png', others=others)
    print(head)
    print(table)
    print('\n'.join(verdict))
    for name in ('robustness.json', 'robustness.md'):
        print(f'wrote {out / name}')
    print(f'wrote {png}')
    return 0
