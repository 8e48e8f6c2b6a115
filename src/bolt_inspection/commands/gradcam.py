"""``bolt-inspection gradcam``: Grad-CAM overlays for any images."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bolt_inspection.commands._common import positive_int

_CAM_RE = re.compile(r'_cam(\d+)(?:\D|$)')


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'gradcam',
        help='write Grad-CAM overlays (and NG probabilities) for images',
        description='Run a model artifact on images and write, for each, the model input region '
                    'with the Grad-CAM heatmap (JET) and its peak. Full camera frames are '
                    "cropped with the artifact's ROI boxes when it has them; the camera index "
                    'comes from a "_cam<k>" in the file name or from --cam.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--model', required=True, type=Path, help='model artifact directory')
    parser.add_argument('--images', required=True, nargs='+', type=Path, metavar='IMG',
                        help='image files (PNG/JPEG)')
    parser.add_argument('--out', required=True, type=Path, help='output directory')
    parser.add_argument('--cam', type=int, default=None,
                        help='camera index for images whose name has no _cam<k>')
    parser.add_argument('--no-crop', action='store_true',
                        help='images are already ROI crops: do not crop them again')
    parser.add_argument('--alpha', type=float, default=0.4, help='heatmap opacity')
    parser.add_argument('--batch-size', type=positive_int, default=16)
    parser.set_defaults(func=run)


def camera_of(path: Path, default: int | None) -> int | None:
    """Camera index from a ``..._cam<k>...`` file name, else ``default``."""
    match = _CAM_RE.search(path.stem)
    return int(match.group(1)) if match else default


def run(args) -> int:
    import cv2
    import numpy as np

    from bolt_inspection.core.errors import ConfigError, ImageError
    from bolt_inspection.core.files import atomic_output, check_output_dir
    from bolt_inspection.core.model.artifact import load_artifact, read_metadata
    from bolt_inspection.core.model.gradcam import heatmap_peak, overlay
    from bolt_inspection.core.study.evaluate import run_gradcam
    from bolt_inspection.core.vision.dataset import read_image

    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f'--alpha must be in [0, 1], got {args.alpha}')
    check_output_dir(args.out, '--out')      # before the model is loaded and run
    meta = read_metadata(args.model)
    for path in args.images:
        if not path.is_file():
            raise ImageError(f'{path}: no such image file')
    cams = []
    for path in args.images:
        cam = camera_of(path, args.cam)
        if meta.roi_boxes and not args.no_crop:
            if cam is None:
                raise ConfigError(f'{path}: no _cam<k> in the file name; pass --cam K '
                                  '(the model crops each camera with its own ROI box)')
            if cam not in meta.roi_boxes:
                raise ConfigError(f'{path}: camera {cam} has no ROI box in the model '
                                  f'(cameras {sorted(meta.roi_boxes)})')
        cams.append(cam if cam is not None else 0)
    artifact = load_artifact(args.model)
    if args.no_crop:
        artifact.metadata.roi_boxes = None
    args.out.mkdir(parents=True, exist_ok=True)
    threshold = artifact.metadata.threshold
    images = [read_image(p) for p in args.images]
    p_ng, heatmaps, regions = run_gradcam(artifact, images, cams, batch_size=args.batch_size,
                                          progress=len(images) > args.batch_size)
    for path, image, p, heat, region in zip(args.images, images, p_ng, heatmaps, regions,
                                            strict=True):
        x, y, w, h = region
        crop = np.ascontiguousarray(image[y:y + h, x:x + w])
        out = overlay(crop, heat, alpha=args.alpha)
        big = cv2.resize(np.asarray(heat, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        peak = heatmap_peak(big)
        if peak is not None:
            row, col = peak
            size = max(9, min(w, h) // 20)  # small: it must not hide what it points at
            cv2.drawMarker(out, (int(col), int(row)), (0, 0, 0), cv2.MARKER_TILTED_CROSS,
                           size, max(3, size // 4))
            cv2.drawMarker(out, (int(col), int(row)), (255, 255, 255),
                           cv2.MARKER_TILTED_CROSS, size, max(1, size // 8))
        verdict = 'NG' if p >= threshold else 'OK'
        target = args.out / f'{path.stem}_gradcam.png'
        with atomic_output(target) as tmp:
            if not cv2.imwrite(str(tmp), out):
                raise ImageError(f'{target}: cannot write the overlay')
        print(f'{path}: p_ng={p:.3f} -> {verdict} (threshold {threshold:.3f}), wrote {target}')
    return 0
