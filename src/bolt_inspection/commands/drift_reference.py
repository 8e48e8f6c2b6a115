"""``bolt-inspection drift-reference``: store a model's camera drift reference with it."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'drift-reference',
        help='store what the training images looked like in a model artifact (drift monitor)',
        description="Measure the training frames' exposure, contrast, colour balance, focus and "
                    'scene template per camera and store them as drift_reference.npz in the '
                    'model artifact; the classifier then watches every camera against them '
                    '(drift_policy). Training stores one itself; this adds one to an older '
                    'artifact.')
    parser.add_argument('--model', required=True, help='model artifact directory')
    parser.add_argument('--data', required=True,
                        help='the dataset the model was trained on (labels.csv layout)')
    parser.add_argument('--views-per-cam', type=int, default=400,
                        help='views read per camera, spread over the dataset')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.model.artifact import read_metadata
    from bolt_inspection.core.vision.dataset import load_dataset
    from bolt_inspection.core.vision.drift import REFERENCE_FILE, reference_from_dataset

    if args.views_per_cam < 5:
        raise ConfigError(f'--views-per-cam: at least 5, got {args.views_per_cam}')
    meta = read_metadata(args.model)
    boxes = dict(meta.roi_boxes) if meta.roi_boxes else {}
    try:
        reference = reference_from_dataset(load_dataset(args.data), boxes,
                                           max_views_per_cam=args.views_per_cam,
                                           progress=not args.no_progress)
    except ValueError as exc:
        raise ConfigError(f'{args.data}: {exc}') from None
    if meta.frame_size and reference.frame_size and \
            tuple(meta.frame_size) != tuple(reference.frame_size):
        raise ConfigError(f'{args.data} has {reference.frame_size[0]}x{reference.frame_size[1]}'
                          f' frames, the model {meta.frame_size[0]}x{meta.frame_size[1]}')
    path = reference.save(Path(args.model) / REFERENCE_FILE)
    cams = ', '.join(f'cam{c} ({n} views)' for c, n in sorted(reference.views.items()))
    print(f'drift reference written to {path}: {cams}')
    return 0
