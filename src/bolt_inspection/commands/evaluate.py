"""``bolt-inspection evaluate``: the paper's Table 2 for a model on a dataset, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from bolt_inspection.commands._common import add_model_and_data, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'evaluate',
        help='evaluate a model: Table 2 at view and bolt level, Grad-CAM localisation, report',
        description="Run a model artifact with Grad-CAM over a dataset. Prints the paper's "
                    'Table 2 (precision, recall, F1, support for NG and OK) at view level and '
                    'at bolt level (a bolt is NG if any view is), accuracy, ROC AUC and the '
                    'confusion matrix; writes OUT/metrics.json, training_curves.png, '
                    'confusion.png and gradcam_gallery.png.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_and_data(parser)
    parser.add_argument('--report', required=True, type=Path, metavar='OUT',
                        help='report directory to write')
    parser.add_argument('--batch-size', type=positive_int, default=16)
    parser.add_argument('--tolerance-px', type=int, default=4,
                        help='defect mask dilation (model-input pixels) for peak-in-mask')
    parser.add_argument('--gradcam-layer', metavar='NAME', default=None,
                        help="explain this conv layer instead of the model's own (the last "
                             'conv layer, as the paper), e.g. block4_conv3 for a finer grid')
    parser.add_argument('--cameras', type=Path, default=None,
                        help='cameras.yaml with the thread ROI boxes a full-frame model is '
                             'measured against (default: the shipped config)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.set_defaults(func=run)


def run(args) -> int:
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.core.study.evaluate import evaluate_model, format_table2

    if args.tolerance_px < 0:
        raise ConfigError(f'--tolerance-px must be >= 0, got {args.tolerance_px}')
    camera_config = None
    if args.cameras is not None:
        from bolt_inspection.core.vision.roi import load_camera_config

        camera_config = load_camera_config(args.cameras)
    result = evaluate_model(args.model, args.data, args.report, split=args.split,
                            batch_size=args.batch_size, tolerance_px=args.tolerance_px,
                            camera_config=camera_config, progress=not args.no_progress,
                            gradcam_layer=args.gradcam_layer)
    print(render_summary(result.metrics, format_table2))
    for name, path in result.files.items():
        print(f'wrote {name}: {path}')
    return 0


def render_summary(metrics: dict, format_table2) -> str:
    """The text a user reads after an evaluation."""
    m = metrics
    lines = [f'model {m.get("model_id", "?")} ({m.get("model_kind", "?")}) on '
             f'{m.get("data", "?")} [split {m.get("split", "?")}], '
             f'{m["counts"]["views"]} views / {m["counts"]["bolts"]} bolts, '
             f'threshold {m["threshold"]:.3f}']
    cal = m.get('threshold_calibration') or {}
    if cal.get('threshold_recall_val') is not None:
        lines.append(f'(the NG threshold was calibrated for NG recall '
                     f'{cal["threshold_target_recall"]:g} over the validation '
                     f'{cal["threshold_calibrated_on"]}s and reached '
                     f'{cal["threshold_recall_val"]:.3f} there)')
    lines.append('')
    lines.append(format_table2(m['view'], 'View level (one image = one sample)'))
    lines.append('')
    lines.append(format_table2(m['bolt'], 'Bolt level (NG if any of its views is NG)'))
    half = m.get('at_threshold_0.5')
    if half:
        lines.append('')
        lines.append('At threshold 0.5 (softmax argmax, as the paper): ' + '; '.join(
            f'{level} F1 NG {half[level]["NG"]["f1"]:.3f} / OK {half[level]["OK"]["f1"]:.3f}, '
            f'accuracy {half[level]["accuracy"]:.3f}' for level in ('view', 'bolt')))
    loc = m.get('localisation') or {}
    lines.append('')
    if loc.get('peak_in_mask') is not None:
        lines.append(f'Grad-CAM peak on the defect: {loc["ng_views_located"]}/'
                     f'{loc["ng_views_scored"]} NG views = {loc["peak_in_mask"]:.1%} '
                     f'(mask dilated {loc["tolerance_px"]} px)')
        if loc.get('peak_cell_in_mask') is not None:
            gw, gh = loc['grid']
            lines.append(f'Grad-CAM peak cell on the defect: {loc["ng_views_located_cell"]}/'
                         f'{loc["ng_views_scored"]} NG views = {loc["peak_cell_in_mask"]:.1%} '
                         f'(the {gw}x{gh} grid cell of {loc.get("gradcam_layer", "?")} under '
                         'the peak holds defect pixels)')
        if loc.get('peak_in_mask_ceiling') is not None:
            lines.append(f'Best any Grad-CAM on this grid could do: {loc["ng_views_reachable"]}/'
                         f'{loc["ng_views_scored"]} NG views = {loc["peak_in_mask_ceiling"]:.1%} '
                         '(a cell centre on the dilated defect)')
    else:
        lines.append('Grad-CAM peak on the defect: n/a (no NG views with a defect mask)')
    for key, text in (('energy_in_roi', 'Grad-CAM energy inside the thread ROI box'),
                      ('energy_on_thread', 'Grad-CAM energy on the coated thread')):
        if loc.get(key) is not None:
            lines.append(f'{text}: {loc[key]:.1%} (mean over views)')
    return '\n'.join(lines)
