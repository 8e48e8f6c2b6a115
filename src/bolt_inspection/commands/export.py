"""``bolt-inspection export``: the fast inference engines of an existing model artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

from bolt_inspection.commands._common import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'export',
        help='export a model to OpenVINO (f32/bf16/INT8) and check it against TensorFlow',
        description='Convert the network up to its Grad-CAM layer to OpenVINO, quantise it to '
                    'INT8 with NNCF on calibration views (training views of --data), and '
                    'compare every engine with the TensorFlow reference on held-out views '
                    '(decision, Grad-CAM peak cell, heatmap correlation, NG recall). Writes '
                    'MODEL/engines/ (manifest with hashes and the calibration set hash); '
                    'model.keras and metadata.json are not changed. Training does this at '
                    'its end; use this for older artifacts. --status says which engine the '
                    'line would run and why.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--model', required=True, type=Path, help='model artifact directory')
    parser.add_argument('--data', type=Path,
                        help='labelled dataset: calibration from its training bolts and '
                             "validation from its validation bolts when it is the model's "
                             'training set, else half of the bolts each')
    parser.add_argument('--calibration-views', type=positive_int, default=300,
                        help='views NNCF calibrates INT8 on')
    parser.add_argument('--validation-views', type=positive_int, default=400,
                        help='held-out views the engines are compared on')
    parser.add_argument('--seed', type=int, default=0, help='draws the views')
    parser.add_argument('--status', action='store_true',
                        help="only report the model's export and which engine 'auto' picks")
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.set_defaults(func=run)


def run(args) -> int:
    from bolt_inspection.core.errors import ConfigError

    if args.status:
        return status(args.model)
    if args.data is None:
        raise ConfigError('export needs --data DATASET (calibration and validation views), '
                          'or --status')
    from bolt_inspection.core.model.artifact import load_artifact
    from bolt_inspection.core.model.export import dataset_views, export_artifact
    from bolt_inspection.core.vision.dataset import load_dataset

    artifact = load_artifact(args.model)
    calibration, validation, labels, sources = dataset_views(
        artifact, load_dataset(args.data), max_calibration=args.calibration_views,
        max_validation=args.validation_views, seed=args.seed, progress=not args.no_progress)
    export_artifact(args.model, calibration, validation, labels,
                    calibration_source=sources[0], validation_source=sources[1],
                    seed=args.seed, progress=not args.no_progress,
                    log=lambda line: print(line, flush=True))
    return status(args.model)


def status(model: Path) -> int:
    """Print the export's state and the engine 'auto' picks (with the reasons)."""
    from bolt_inspection.core.model.artifact import load_artifact
    from bolt_inspection.core.model.engine import load_engine

    artifact = load_artifact(model)
    selection = load_engine(artifact, 'auto')
    print(f'model {artifact.model_id}: auto runs {selection.engine.name}')
    for name, check in selection.checks.items():
        if check is None:
            continue
        print(f'  {name}: decision {check["decision_agreement"]:.4f}, peak cell '
              f'{check["peak_cell_agreement"]:.4f}, heatmap corr '
              f'{check["heatmap_corr_mean"]:.4f}'
              + (f', NG recall {check["ng_recall"]:.3f} (reference '
                 f'{check["ng_recall_reference"]:.3f})' if 'ng_recall' in check else '')
              + f' over {check["views"]} held-out views at threshold {check["threshold"]:.3f}'
              + ('' if check['passes'] else ' - FAILS: ' + '; '.join(check['failures'])))
    for warning in selection.warnings:
        print(f'warning: {warning}')
    return 0
