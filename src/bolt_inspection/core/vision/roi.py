"""Region of interest: crop each camera frame to the coated thread, then resize for the model.

The paper's first model looked at the jig, lights and camera instead of the thread; cropping to the
coating (their ROI, 425 x 840 px) fixed it. Each camera has one fixed box (``config/cameras.yaml``)
because the bolt hangs by its head at a known place in every frame.

Boxes are ``(x, y, w, h)`` in pixels of the full frame; sizes are ``(width, height)`` everywhere,
as OpenCV has them. :func:`prepare_batch` returns RGB float32 in 0..255: the VGG16 "caffe"
preprocessing (RGB->BGR, ImageNet mean subtraction) is a layer *inside* the model
(:class:`bolt_inspection.core.model.network.VggPreprocess`), so a saved model takes plain pixels
and nobody can forget or double the preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bolt_inspection import paths
from bolt_inspection.core.config import load_yaml
from bolt_inspection.core.errors import ConfigError, ImageError

Box = tuple[int, int, int, int]


@dataclass
class CameraConfig:
    """Per-camera ROI boxes for frames of one size.

    Attributes:
        frame_size: ``(width, height)`` of every camera frame the boxes refer to.
        boxes: Camera index -> ``(x, y, w, h)`` box of the coated thread in that camera's frame.
    """

    frame_size: tuple[int, int]
    boxes: dict[int, Box] = field(default_factory=dict)

    @property
    def cams(self) -> tuple[int, ...]:
        """The configured camera indices, sorted."""
        return tuple(sorted(self.boxes))

    def to_yaml_dict(self) -> dict[str, Any]:
        """The mapping :func:`load_camera_config` reads (for writing ``cameras.yaml``)."""
        return {
            'frame_size': [int(v) for v in self.frame_size],
            'cameras': {int(cam): {'roi': [int(v) for v in box]}
                        for cam, box in sorted(self.boxes.items())},
        }


def _int_list(value: Any, length: int, key: str, path: Path) -> list[int]:
    if (not isinstance(value, (list, tuple)) or len(value) != length
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f'{path}: {key} must be a list of {length} integers, got {value!r}')
    return [int(v) for v in value]


def load_camera_config(path: str | Path | None = None) -> CameraConfig:
    """Read the per-camera ROI boxes.

    The file looks like::

        frame_size: [1280, 960]       # width, height of every camera frame
        cameras:
          0: {roi: [x, y, w, h]}
          1: {roi: [x, y, w, h]}

    Args:
        path: The YAML file; the shipped ``config/cameras.yaml`` when omitted.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file is missing or malformed; the message names the offending key.
    """
    path = Path(path) if path is not None else paths.config_path('cameras.yaml')
    data = load_yaml(path)
    if 'frame_size' not in data:
        raise ConfigError(f'{path}: missing key frame_size ([width, height])')
    width, height = _int_list(data['frame_size'], 2, 'frame_size', path)
    if width <= 0 or height <= 0:
        raise ConfigError(f'{path}: frame_size must be positive, got {[width, height]}')
    cameras = data.get('cameras')
    if not isinstance(cameras, dict) or not cameras:
        raise ConfigError(f'{path}: cameras must be a non-empty mapping of camera index -> roi')
    boxes: dict[int, Box] = {}
    for cam, entry in cameras.items():
        try:
            index = int(cam)
        except (TypeError, ValueError):
            raise ConfigError(f'{path}: cameras.{cam}: camera keys must be integers') from None
        if not isinstance(entry, dict) or 'roi' not in entry:
            raise ConfigError(f'{path}: cameras.{cam}.roi missing (expected [x, y, w, h])')
        x, y, w, h = _int_list(entry['roi'], 4, f'cameras.{cam}.roi', path)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise ConfigError(f'{path}: cameras.{cam}.roi {[x, y, w, h]} is not inside the '
                              f'{width}x{height} frame')
        boxes[index] = (x, y, w, h)
    return CameraConfig(frame_size=(width, height), boxes=boxes)


def scale_boxes(boxes: dict[int, Box], from_size: tuple[int, int],
                to_size: tuple[int, int]) -> dict[int, Box]:
    """Scale boxes given for frames of ``from_size`` to frames of ``to_size`` (both ``(w, h)``)."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    out = {}
    for cam, (x, y, w, h) in boxes.items():
        x0, y0 = int(round(x * sx)), int(round(y * sy))
        x1 = min(to_size[0], int(round((x + w) * sx)))
        y1 = min(to_size[1], int(round((y + h) * sy)))
        out[cam] = (x0, y0, max(1, x1 - x0), max(1, y1 - y0))
    return out


def as_bgr(image: Any, what: str = 'image') -> np.ndarray:
    """Check that ``image`` is an 8-bit colour frame and return it as HxWx3 BGR.

    Grayscale (HxW or HxWx1 uint8) is converted explicitly with OpenCV; anything else is refused.

    Raises:
        ImageError: Not an array, not uint8, empty, or not 1 or 3 channels.
    """
    if image is None:
        raise ImageError(f'{what}: no image')
    if not isinstance(image, np.ndarray):
        raise ImageError(f'{what}: expected a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise ImageError(f'{what}: expected 8-bit pixels (uint8), got {image.dtype}')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        if image.size == 0:
            raise ImageError(f'{what}: empty image')
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        shape = 'x'.join(str(s) for s in image.shape)
        raise ImageError(f'{what}: expected HxWx3 BGR or HxW grayscale, got shape {shape}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f'{what}: empty image')
    return image


def crop_roi(image: np.ndarray, box: Box | None, what: str = 'image') -> np.ndarray:
    """Crop ``image`` to ``box``.

    Args:
        image: HxWx3 BGR uint8 frame (grayscale is converted to BGR).
        box: ``(x, y, w, h)``; ``None`` returns the whole frame.
        what: How to name the image in error messages (e.g. ``'cam2'``).

    Returns:
        A view into ``image`` (no copy) of shape ``(h, w, 3)``.

    Raises:
        ImageError: A bad image, or a box that is not entirely inside the frame.
    """
    image = as_bgr(image, what)
    if box is None:
        return image
    x, y, w, h = (int(v) for v in box)
    height, width = image.shape[:2]
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ImageError(f'{what}: ROI box {[x, y, w, h]} is not inside the {width}x{height} '
                         'frame (wrong camera resolution or cameras.yaml?)')
    return image[y:y + h, x:x + w]


def resize_bgr(image: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Resize a BGR crop to ``input_size`` ``(w, h)`` (area interpolation when shrinking)."""
    width, height = int(input_size[0]), int(input_size[1])
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = image.shape[1] >= width and image.shape[0] >= height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def prepare_batch(images: Sequence[np.ndarray], boxes: Sequence[Box | None] | None = None,
                  input_size: tuple[int, int] = (112, 224)) -> np.ndarray:
    """Crop, resize and stack frames into one model input batch.

    Args:
        images: BGR uint8 frames (HxWx3; HxW grayscale is converted).
        boxes: One ROI box per image, ``None`` for the whole frame; ``None`` = all whole frames.
        input_size: Model input ``(width, height)``.

    Returns:
        float32 array ``(N, height, width, 3)``, **RGB**, values 0..255 (the model subtracts the
        ImageNet mean itself).

    Raises:
        ImageError: Bad dtype / channels, or a box outside its frame; names the image index.
    """
    if boxes is None:
        boxes = [None] * len(images)
    if len(boxes) != len(images):
        raise ImageError(f'prepare_batch: {len(images)} images but {len(boxes)} boxes')
    width, height = int(input_size[0]), int(input_size[1])
    batch = np.empty((len(images), height, width, 3), np.float32)
    for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
        crop = resize_bgr(crop_roi(image, box, what=f'image {i}'), (width, height))
        batch[i] = crop[:, :, ::-1]
    return batch


def expand_to_aspect(box: Box, aspect_wh: float, frame_size: tuple[int, int],
                     margin: float = 0.0) -> Box:
    """Grow ``box`` about its centre by ``margin`` and to the aspect ``w / h``, inside the frame.

    The box only grows (never cuts into the detected region) unless the frame is too small.
    """
    x, y, w, h = box
    cx, cy = x + w / 2.0, y + h / 2.0
    w, h = w * (1.0 + margin), h * (1.0 + margin)
    if w / h < aspect_wh:
        w = h * aspect_wh
    else:
        h = w / aspect_wh
    fw, fh = frame_size
    if w > fw:
        w, h = fw, fw / aspect_wh
    if h > fh:
        h, w = fh, fh * aspect_wh
    w, h = int(round(w)), int(round(h))
    x0 = int(round(min(max(cx - w / 2.0, 0), fw - w)))
    y0 = int(round(min(max(cy - h / 2.0, 0), fh - h)))
    return (x0, y0, w, h)


def _span(profile: np.ndarray, fraction: float, max_gap: int) -> tuple[int, int]:
    """The strongest run of a smoothed profile above ``fraction`` of its peak (above median).

    Runs closer than ``max_gap`` are merged (the smooth coating band between the thread's bare
    ends must not split the thread); of the merged runs, the one with the most energy wins (an
    edge elsewhere, e.g. the jig or a lamp, is smaller than the bolt).
    """
    kernel = max(3, profile.size // 60) | 1
    smooth = np.convolve(profile, np.ones(kernel) / kernel, mode='same')
    floor = float(np.percentile(smooth, 10))
    peak = float(smooth.max())
    if peak <= floor:
        return 0, profile.size - 1
    above = np.flatnonzero(smooth >= floor + fraction * (peak - floor))
    runs = np.split(above, np.flatnonzero(np.diff(above) > max_gap) + 1)
    best = max(runs, key=lambda run: float(smooth[run[0]:run[-1] + 1].sum()))
    return int(best[0]), int(best[-1])


def propose_roi(images: Sequence[np.ndarray], aspect_wh: float = 0.5, margin: float = 0.1,
                fraction: float = 0.3) -> Box:
    """Propose an ROI box for one camera from a few of its frames (thread detection).

    The thread is where the frame has the most *vertical* intensity change: its flanks are a
    dense stack of near-horizontal edges, and the coating band changes colour against bare steel.
    Background, jig and lights are either flat or change between bolts less than the thread
    does. The method: Sobel-y energy averaged over the frames, profiled over columns (the bolt
    column) and, within those columns, over rows (the thread's length); each profile is cut at
    ``fraction`` of its peak above the median. The box is then grown by ``margin`` and to the
    paper's 1:2 (w:h) aspect.

    Args:
        images: Frames of ONE camera, same size (a few bolts are enough; more is steadier).
        aspect_wh: Width / height of the returned box (0.5 = the paper's 425 x 840).
        margin: Relative growth around the detected thread (pose jitter between bolts).
        fraction: Threshold of the energy profiles, relative to their peak.

    Returns:
        ``(x, y, w, h)`` inside the frame.

    Raises:
        ImageError: No frames, bad frames, or frames of different sizes.
    """
    if not images:
        raise ImageError('propose_roi: no images')
    energy_y = energy = None
    for i, image in enumerate(images):
        gray = cv2.cvtColor(as_bgr(image, f'image {i}'), cv2.COLOR_BGR2GRAY).astype(np.float32)
        gy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
        gx = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3))
        if energy is None:
            energy_y, energy = gy, gx + gy
        elif energy.shape != gy.shape:
            raise ImageError(f'propose_roi: image {i} is {gy.shape[1]}x{gy.shape[0]}, the first '
                             f'is {energy.shape[1]}x{energy.shape[0]}')
        else:
            energy_y += gy
            energy += gx + gy
    assert energy is not None and energy_y is not None
    height, width = energy.shape
    # Rails, shelves and lamp rings are long horizontal edges spanning most of the frame: they
    # have a high row median, the thread's short edges do not. Remove each row's median energy.
    energy_y = np.maximum(energy_y - np.median(energy_y, axis=1, keepdims=True), 0.0)
    energy = np.maximum(energy - np.median(energy, axis=1, keepdims=True), 0.0)
    # Columns: the thread's flanks are a dense stack of horizontal edges (vertical gradient).
    x0, x1 = _span(energy_y.sum(axis=0), fraction, max_gap=max(2, width // 100))
    # Rows, inside those columns: all edges (the coated band is smooth, but its silhouette
    # against the background is not), gaps of a few percent of the height bridged.
    y0, y1 = _span(energy[:, x0:x1 + 1].sum(axis=1), fraction / 2,
                   max_gap=max(2, height // 25))
    box = (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
    return expand_to_aspect(box, aspect_wh, (width, height), margin)


def draw_boxes(image: np.ndarray, boxes: Sequence[Box], color=(0, 255, 255),
               thickness: int = 2) -> np.ndarray:
    """Return a copy of ``image`` with ``boxes`` drawn on it."""
    out = as_bgr(image).copy()
    for x, y, w, h in boxes:
        cv2.rectangle(out, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), color, thickness)
    return out
