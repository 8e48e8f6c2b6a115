"""``bolt-inspection synth``: render a labelled synthetic dataset of coated bolts."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from bolt_inspection.commands._common import fraction, positive_int, size_wh


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'synth', help='render a labelled synthetic dataset of coated bolts (4 views each)',
        description='Render N synthetic M10 bolts with anti-loosening coating, four camera '
                    'views each, with per-view defect masks and labels.csv. Deterministic '
                    'for a given --seed.')
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.add_argument('--bolts', type=positive_int, default=100, help='number of bolts '
                        '(default 100)')
    parser.add_argument('--seed', type=int, default=0, help='scenario seed (default 0)')
    parser.add_argument('--defect-rate', type=fraction, default=0.5,
                        help='probability that a bolt is NG (default 0.5)')
    parser.add_argument('--size', type=size_wh, default=(1280, 960), metavar='WxH',
                        help='camera frame size (default 1280x960)')
    parser.add_argument('--first-bolt-id', type=int, default=0, metavar='N',
                        help='number of the first bolt (default 0)')
    parser.add_argument('--cams', type=positive_int, default=4, help='cameras per bolt '
                        '(default 4)')
    parser.add_argument('--distractor', action='store_true',
                        help='add a label-correlated status lamp outside the thread ROI '
                             "(to reproduce the paper's Grad-CAM finding)")
    parser.add_argument('--contact-sheet', action='store_true',
                        help='also write contact_sheet.png: all views with masks and ROI boxes')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bolt_inspection.core.errors import DatasetError
    from bolt_inspection.core.vision.dataset import load_dataset
    from bolt_inspection.core.vision.synth import generate_dataset

    if args.first_bolt_id < 0:
        raise DatasetError(f'--first-bolt-id must be >= 0, got {args.first_bolt_id}')
    if args.out.exists() and not args.out.is_dir():
        raise DatasetError(f'{args.out}: exists and is not a folder')
    start = time.perf_counter()
    try:
        out = generate_dataset(args.out, seed=args.seed, bolts=args.bolts,
                               defect_rate=args.defect_rate, size=args.size,
                               distractor=args.distractor, first_bolt_id=args.first_bolt_id,
                               n_cams=args.cams, progress=not args.no_progress)
    except OSError as exc:
        raise DatasetError(f'{args.out}: cannot write dataset ({exc})') from None
    elapsed = time.perf_counter() - start
    dataset = load_dataset(out)
    bolts = dataset.bolts()
    per_defect = Counter(views[0].defect for views in bolts.values())
    per_bolt = Counter(views[0].bolt_label for views in bolts.values())
    per_view = Counter(r.label for r in dataset.records)
    n_views = len(dataset.records)
    w, h = args.size
    print(f'wrote {len(bolts)} bolts x {args.cams} views ({n_views} images, {w}x{h}) to {out} '
          f'in {elapsed:.1f} s ({1000 * elapsed / max(1, n_views):.0f} ms/view)')
    print(f'bolts: OK {per_bolt["OK"]}, NG {per_bolt["NG"]}  ('
          + ', '.join(f'{d} {per_defect[d]}' for d in sorted(per_defect)) + ')')
    print(f'views: NG {per_view["NG"]}, OK {per_view["OK"]}  (a view is NG when its bolt\'s '
          'defect is visible in it)')
    print(f'labels: {out / "labels.csv"}  images: {out / "images"}  masks: {out / "masks"}')
    if args.contact_sheet:
        from bolt_inspection.core.vision.synth import contact_sheet, default_roi_boxes
        sheet_path = contact_sheet(dataset, out / 'contact_sheet.png',
                                   roi_boxes=default_roi_boxes(args.size, args.cams))
        print(f'contact sheet: {sheet_path}')
    return 0
