"""``bolt-inspection dataset``: check a dataset folder and summarise it before training on it."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from bolt_inspection.commands._common import fraction


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'dataset', help='check and summarise a dataset folder (labels.csv or OK/ + NG/)',
        description='Load a dataset (a synthetic folder with labels.csv, or DIR/OK/*.png + '
                    'DIR/NG/*.png), decode every image, and print bolts and views per class, '
                    'the bolt-wise train/validation split and the dataset fingerprint.')
    parser.add_argument('path', type=Path, help='dataset folder')
    parser.add_argument('--val-fraction', type=fraction, default=0.2,
                        help='validation fraction of bolts for the split shown (default 0.2)')
    parser.add_argument('--seed', type=int, default=0, help='split seed (default 0)')
    parser.add_argument('--contact-sheet', type=Path, default=None, metavar='PNG',
                        help='also write a contact sheet of the first bolts to this PNG')
    parser.add_argument('--no-decode', action='store_true',
                        help='skip decoding every image (faster; only the file list is checked)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bolt_inspection.core.vision.dataset import load_dataset, read_image, split_by_bolt

    dataset = load_dataset(args.path)
    sizes: Counter = Counter()
    if not args.no_decode:
        from tqdm import tqdm
        for record in tqdm(dataset.records, desc='decoding', unit='img', leave=False):
            image = read_image(record.image_path)
            sizes[f'{image.shape[1]}x{image.shape[0]}'] += 1
    bolts = dataset.bolts()
    per_bolt = Counter(views[0].bolt_label for views in bolts.values())
    per_view = Counter(r.label for r in dataset.records)
    per_defect = Counter(views[0].defect for views in bolts.values())
    train, val = split_by_bolt(dataset.records, args.val_fraction, args.seed)
    print(f'{dataset.root}: {dataset.kind} dataset, {len(bolts)} bolts, '
          f'{len(dataset.records)} views')
    print(f'bolts: OK {per_bolt["OK"]}, NG {per_bolt["NG"]}  ('
          + ', '.join(f'{d} {n}' for d, n in sorted(per_defect.items())) + ')')
    print(f'views: OK {per_view["OK"]}, NG {per_view["NG"]}')
    if sizes:
        print('image sizes: ' + ', '.join(f'{s} ({n})' for s, n in sizes.most_common()))
    print(f'split by bolt (val {args.val_fraction:g}, seed {args.seed}): train {len(train)} '
          f'views / {len({r.bolt_id for r in train})} bolts, val {len(val)} views / '
          f'{len({r.bolt_id for r in val})} bolts')
    print(f'fingerprint: {dataset.fingerprint()}')
    if args.contact_sheet is not None:
        from bolt_inspection.core.vision.synth import contact_sheet
        path = contact_sheet(dataset, args.contact_sheet, roi_boxes=_synthetic_boxes(dataset))
        print(f'contact sheet: {path}')
    return 0


def _synthetic_boxes(dataset) -> dict | None:
    """The rig's ROI boxes when the dataset says it came from the synthetic rig."""
    import json

    from bolt_inspection.core.vision.synth import default_roi_boxes

    meta = dataset.root / 'synth.json'
    if not meta.is_file():
        return None
    try:
        info = json.loads(meta.read_text(encoding='utf-8'))
        return default_roi_boxes(tuple(info['size']), int(info['n_cams']))
    except (ValueError, KeyError, TypeError):
        return None   # a hand-edited synth.json only costs the boxes on the sheet
