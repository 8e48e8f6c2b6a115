"""``bolt-inspection roi``: propose per-camera ROI boxes (thread detection) from images."""

from __future__ import annotations

import argparse
from pathlib import Path

from bolt_inspection.commands._common import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        'roi', help='propose per-camera ROI boxes around the coated thread from images',
        description='Detect the bolt thread in a few frames of each camera (vertical-gradient '
                    'energy profiles), grow the box by a margin to the 1:2 (w:h) aspect and '
                    'print the boxes as YAML ready to paste into config/cameras.yaml.')
    parser.add_argument('--data', type=Path, required=True,
                        help='dataset folder (labels.csv or OK/ + NG/ with <bolt>_cam<k> names)')
    parser.add_argument('--draw', type=Path, default=None, metavar='OUT',
                        help='also write one PNG per camera with the proposed box drawn')
    parser.add_argument('--frames', type=positive_int, default=8,
                        help='frames per camera to use (default 8)')
    parser.add_argument('--margin', type=float, default=0.1,
                        help='relative growth around the detected thread (default 0.1)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from bolt_inspection.core.errors import ConfigError, DatasetError
    from bolt_inspection.core.vision.dataset import load_dataset, read_image
    from bolt_inspection.core.vision.roi import CameraConfig, draw_boxes, propose_roi

    if not 0.0 <= args.margin <= 2.0:
        raise ConfigError(f'--margin must be in [0, 2], got {args.margin}')
    dataset = load_dataset(args.data)
    by_cam: dict[int, list] = {}
    for record in dataset.records:
        by_cam.setdefault(record.cam, []).append(record)
    boxes = {}
    frame_size = None
    frames_of = {}
    for cam, records in sorted(by_cam.items()):
        # Spread the chosen frames over the dataset: different bolts, different poses.
        step = max(1, len(records) // args.frames)
        frames = [read_image(r.image_path) for r in records[::step][:args.frames]]
        size = (frames[0].shape[1], frames[0].shape[0])
        if frame_size is None:
            frame_size = size
        elif size != frame_size:
            raise DatasetError(f'camera {cam} frames are {size[0]}x{size[1]}, camera '
                               f'{min(by_cam)} frames {frame_size[0]}x{frame_size[1]}')
        boxes[cam] = propose_roi(frames, margin=args.margin)
        frames_of[cam] = frames[0]
    assert frame_size is not None
    config = CameraConfig(frame_size=frame_size, boxes=boxes)
    print(f'# proposed by bolt-inspection roi from {dataset.root}')
    print(yaml.safe_dump(config.to_yaml_dict(), default_flow_style=None, sort_keys=False),
          end='')
    if args.draw is not None:
        import cv2

        args.draw.mkdir(parents=True, exist_ok=True)
        for cam, frame in frames_of.items():
            out = args.draw / f'roi_cam{cam}.png'
            if not cv2.imwrite(str(out), draw_boxes(frame, [boxes[cam]])):
                raise DatasetError(f'{out}: cannot write image')
    return 0
