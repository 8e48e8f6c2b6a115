"""sensor_msgs/Image <-> numpy, with cv_bridge when it is importable.

cv_bridge is not on PyPI, so outside a ROS 2 install the package's own converter handles the
8-bit encodings a colour camera delivers (bgr8, rgb8, bgra8, mono8). Everything that comes out of
:func:`image_to_bgr` is a contiguous HxWx3 uint8 BGR array, which is what ``core`` expects; every
frame that cannot be turned into one raises :class:`ImageError` with a one-line reason that the
classifier puts into the NG verdict (``camK: <reason>``).
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import Image

from bolt_inspection.core.errors import ImageError

try:  # pragma: no cover - only inside a ROS 2 install
    from cv_bridge import CvBridge, CvBridgeError
except ImportError:  # the PyPI wheels carry no cv_bridge
    CvBridge = None
    CvBridgeError = Exception

# encoding -> channels; all 8-bit.
CHANNELS = {'bgr8': 3, 'rgb8': 3, 'bgra8': 4, 'rgba8': 4, 'mono8': 1}
SUPPORTED = ('bgr8', 'rgb8', 'bgra8', 'mono8')

_bridge = CvBridge() if CvBridge is not None else None


def _check_layout(msg: Image) -> int:
    encoding = msg.encoding
    if encoding not in SUPPORTED:
        raise ImageError(f'unsupported encoding {encoding or "(empty)"!r}; '
                         f'expected one of {", ".join(SUPPORTED)}')
    channels = CHANNELS[encoding]
    if msg.height <= 0 or msg.width <= 0:
        raise ImageError(f'empty image {msg.width}x{msg.height}')
    if msg.step < msg.width * channels:
        raise ImageError(f'step {msg.step} < width {msg.width} x {channels} channels')
    if len(msg.data) != msg.step * msg.height:
        raise ImageError(f'{len(msg.data)} data bytes, expected step {msg.step} x height '
                         f'{msg.height} = {msg.step * msg.height}')
    return channels


def image_to_bgr(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an Image message into an HxWx3 uint8 BGR array.

    Args:
        msg: The message.
        expected_size: ``(width, height)`` the frame must have, or None for any size.

    Raises:
        ImageError: Unsupported encoding, inconsistent size/step/data, or a frame size other
            than ``expected_size``.
    """
    channels = _check_layout(msg)
    if expected_size and tuple(expected_size) != (msg.width, msg.height):
        raise ImageError(f'frame {msg.width}x{msg.height}, expected '
                         f'{expected_size[0]}x{expected_size[1]}')
    if _bridge is not None:  # pragma: no cover - only inside a ROS 2 install
        try:
            return np.ascontiguousarray(_bridge.imgmsg_to_cv2(msg, desired_encoding='bgr8'))
        except CvBridgeError as exc:
            raise ImageError(str(exc).splitlines()[0]) from None
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    rows = buf.reshape(msg.height, msg.step)[:, :msg.width * channels]
    img = rows.reshape(msg.height, msg.width, channels)
    if msg.encoding == 'bgr8':
        return np.ascontiguousarray(img)
    if msg.encoding == 'rgb8':
        return np.ascontiguousarray(img[:, :, ::-1])
    if msg.encoding == 'bgra8':
        return np.ascontiguousarray(img[:, :, :3])
    return np.ascontiguousarray(np.repeat(img, 3, axis=2))  # mono8


def bgr_to_image(image: np.ndarray, *, stamp=None, frame_id: str = '',
                 encoding: str = 'bgr8') -> Image:
    """Wrap a uint8 array into an Image message (no copy beyond the one rclpy needs).

    Args:
        image: HxWx3 (bgr8/rgb8), HxWx4 (bgra8) or HxW / HxWx1 (mono8) uint8 array.
        stamp: A ``builtin_interfaces/Time`` for ``header.stamp`` (left zero when None).
        frame_id: ``header.frame_id``.
        encoding: The encoding the array is in.

    Raises:
        ImageError: The array's dtype or shape does not fit ``encoding``.
    """
    if encoding not in CHANNELS:
        raise ImageError(f'unsupported encoding {encoding!r}')
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ImageError(f'expected a uint8 image, got {arr.dtype}')
    channels = CHANNELS[encoding]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ImageError(f'array of shape {arr.shape} does not fit encoding {encoding}')
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    # An array.array('B') is stored as is by the generated setter, also when
    # ROS_PYTHON_CHECK_FIELDS=1 (bytes would then be checked value by value in Python: 240 ms
    # instead of 0.1 ms at 1280x960); without checks it costs the same as tobytes() (0.2 ms).
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(arr).data.cast('B'))
    msg.data = data
    return msg
